"""The SMTP leg against real servers on 127.0.0.1: each failure lands on its own stage."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time

import pytest

from smtp_probe.probe.message import PROBE_HEADER, TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.transcript import Direction
from tests.support.loopback_routes import RECIPIENT, SENDER, loopback_probe, run
from tests.support.loopback_smtpd import (
    Behaviour,
    closed_port,
    greeting_server,
    silent_listener,
    smtpd,
)
from tests.support.results import PLAIN_STAGES


def test_accepted_message_is_outcome_sent_with_the_queue_id_from_the_250() -> None:
    with smtpd(Behaviour(data_reply="250 2.0.0 Ok: queued as ABC123")) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT
    assert result.success
    assert result.stage is None
    assert result.smtp.reply_code == 250
    assert result.smtp.queue_id == "ABC123"
    assert result.smtp.accepted_at is not None


def test_accepted_message_reaches_the_server_with_envelope_and_a_verifiable_token() -> None:
    signer = TokenSigner()
    handler = Behaviour()
    with smtpd(handler) as port:
        result = run(loopback_probe(port), signer)

    assert result.outcome is Outcome.SENT
    assert handler.mail_from == [SENDER]
    assert handler.rcpt_to == [RECIPIENT]
    [raw] = handler.messages
    message = email.message_from_bytes(raw, policy=email.policy.default)
    token = signer.verify("proto", str(message[PROBE_HEADER]))
    assert token is not None
    assert token.run_id == result.run_id


def test_accepted_message_has_timings_for_every_stage_it_went_through() -> None:
    with smtpd(Behaviour()) as port:
        result = run(loopback_probe(port))

    assert set(result.smtp.stage_seconds) == set(PLAIN_STAGES)
    assert all(seconds >= 0 for seconds in result.smtp.stage_seconds.values())


def test_transcript_reads_like_the_telnet_session() -> None:
    with smtpd(Behaviour()) as port:
        result = run(loopback_probe(port))

    lines = result.transcript.lines
    sent = [line.text for line in lines if line.direction is Direction.SENT]
    received = [line.text for line in lines if line.direction is Direction.RECEIVED]
    assert lines[0].direction is Direction.NOTE
    assert lines[0].text.startswith("connecting to")
    assert received[0].startswith("220 ")
    commands = ["EHLO probe.test", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>", "DATA"]
    assert [text for text in sent if text in commands] == commands
    assert "250 2.0.0 Ok: queued as ABC123" in received


@pytest.mark.parametrize(
    ("handler", "stage", "code", "says"),
    [
        pytest.param(
            Behaviour(ehlo_reply="550 5.7.1 Go away"), Stage.EHLO, 550, "Go away", id="ehlo"
        ),
        pytest.param(
            Behaviour(mail_reply="553 5.7.1 Sender address rejected"),
            Stage.MAIL_FROM,
            553,
            "Sender address rejected",
            id="mail_from",
        ),
        pytest.param(
            Behaviour(rcpt_reply="550 5.1.1 User unknown"),
            Stage.RCPT_TO,
            550,
            "User unknown",
            id="rcpt_to",
        ),
        pytest.param(
            Behaviour(data_reply="554 5.7.1 Message rejected as spam"),
            Stage.DATA,
            554,
            "Message rejected as spam",
            id="data",
        ),
    ],
)
def test_refusal_fails_at_its_stage_with_the_reply_code_and_text(
    handler: Behaviour, stage: Stage, code: int, says: str
) -> None:
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is stage
    assert result.smtp.reply_code == code
    assert says in result.error
    assert result.smtp.queue_id is None


def test_greeting_with_554_fails_at_stage_banner_with_the_code() -> None:
    async def scenario() -> RunResult:
        async with greeting_server("554 5.3.2 Service not available") as port:
            return await run_probe(loopback_probe(port), signer=TokenSigner())

    result = asyncio.run(scenario())

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.BANNER
    assert result.smtp.reply_code == 554


@pytest.mark.parametrize(
    ("run_timeout", "command_timeout", "says"),
    [
        pytest.param(10.0, 1.0, "no 220 greeting before the timeout", id="command-timeout"),
        pytest.param(1.5, 30.0, "no answer before the run deadline", id="run-deadline"),
    ],
)
def test_silent_server_fails_at_stage_banner_on_time(
    run_timeout: float, command_timeout: float, says: str
) -> None:
    """Whichever limit comes first ends the wait for the 220: the reply's or the run's."""
    with silent_listener() as port:
        started = time.monotonic()
        result = run(loopback_probe(port, timeout=run_timeout, command_timeout=command_timeout))
        elapsed = time.monotonic() - started

    limit = min(run_timeout, command_timeout)
    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.BANNER
    assert says in result.error
    assert limit - 0.1 <= elapsed < limit + 2.0
    assert limit - 0.1 <= result.duration_seconds < limit + 2.0


def test_refused_connection_fails_at_stage_connect() -> None:
    with closed_port() as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.CONNECT
    assert "refused" in result.error


def test_malformed_host_name_fails_at_stage_dns_not_as_an_internal_error() -> None:
    """Resolved without any query leaving the machine: the name is refused locally."""
    result = run(loopback_probe(25, host="bad..name"))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DNS


def test_failure_is_written_to_the_transcript_as_a_note() -> None:
    with smtpd(Behaviour(rcpt_reply="550 5.1.1 User unknown")) as port:
        result = run(loopback_probe(port))

    notes = [line.render() for line in result.transcript.lines if line.text.startswith("FAILED")]
    assert len(notes) == 1
    assert "FAILED at rcpt_to" in notes[0]
    assert " === " in notes[0]
