"""The SMTP leg against real servers on 127.0.0.1: each failure lands on its own stage."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time

from smtp_probe.probe.message import PROBE_HEADER, TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec, SmtpServer, TlsMode
from smtp_probe.probe.transcript import Direction
from tests.support.loopback_smtpd import (
    LOOPBACK,
    Behaviour,
    closed_port,
    greeting_server,
    silent_listener,
    smtpd,
)

SENDER = "probe@sender.test"
RECIPIENT = "sink@rcpt.test"


def plain_spec(
    port: int, *, host: str = LOOPBACK, timeout: float = 5.0, command_timeout: float = 30.0
) -> ProbeSpec:
    """An SMTP-only probe (no mailbox) without TLS, so the run stops after the 250."""
    return ProbeSpec(
        name="proto",
        smtp=SmtpServer(
            host=host, port=port, tls=TlsMode.NONE, helo="probe.test", timeout=command_timeout
        ),
        mail_from=SENDER,
        rcpt_to=RECIPIENT,
        timeout=timeout,
    )


def run(spec: ProbeSpec, signer: TokenSigner | None = None) -> RunResult:
    return asyncio.run(run_probe(spec, signer=signer or TokenSigner()))


def test_accepted_message_is_outcome_sent_with_the_queue_id_from_the_250() -> None:
    with smtpd(Behaviour(data_reply="250 2.0.0 Ok: queued as ABC123")) as port:
        result = run(plain_spec(port))

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
        result = run(plain_spec(port), signer)

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
        result = run(plain_spec(port))

    timed = set(result.smtp.stage_seconds)
    reached = {
        Stage.DNS,
        Stage.CONNECT,
        Stage.BANNER,
        Stage.EHLO,
        Stage.MAIL_FROM,
        Stage.RCPT_TO,
        Stage.DATA,
    }
    assert timed == reached
    assert all(seconds >= 0 for seconds in result.smtp.stage_seconds.values())


def test_transcript_reads_like_the_telnet_session() -> None:
    with smtpd(Behaviour()) as port:
        result = run(plain_spec(port))

    lines = result.transcript.lines
    sent = [line.text for line in lines if line.direction is Direction.SENT]
    received = [line.text for line in lines if line.direction is Direction.RECEIVED]
    assert lines[0].direction is Direction.NOTE
    assert lines[0].text.startswith("connecting to")
    assert received[0].startswith("220 ")
    commands = ["EHLO probe.test", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>", "DATA"]
    assert [text for text in sent if text in commands] == commands
    assert "250 2.0.0 Ok: queued as ABC123" in received


def test_data_rejected_with_554_fails_at_stage_data_with_the_reply_code() -> None:
    with smtpd(Behaviour(data_reply="554 5.7.1 Message rejected as spam")) as port:
        result = run(plain_spec(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DATA
    assert result.smtp.reply_code == 554
    assert "Message rejected as spam" in result.error
    assert result.smtp.queue_id is None


def test_mail_from_rejected_with_553_fails_at_stage_mail_from() -> None:
    with smtpd(Behaviour(mail_reply="553 5.7.1 Sender address rejected")) as port:
        result = run(plain_spec(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.MAIL_FROM
    assert result.smtp.reply_code == 553


def test_rcpt_to_rejected_with_550_fails_at_stage_rcpt_to() -> None:
    with smtpd(Behaviour(rcpt_reply="550 5.1.1 User unknown")) as port:
        result = run(plain_spec(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 550
    assert "User unknown" in result.error


def test_ehlo_refused_fails_at_stage_ehlo() -> None:
    with smtpd(Behaviour(ehlo_reply="550 5.7.1 Go away")) as port:
        result = run(plain_spec(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.EHLO
    assert result.smtp.reply_code == 550


def test_greeting_with_554_fails_at_stage_banner_with_the_code() -> None:
    async def scenario() -> RunResult:
        async with greeting_server("554 5.3.2 Service not available") as port:
            return await run_probe(plain_spec(port), signer=TokenSigner())

    result = asyncio.run(scenario())

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.BANNER
    assert result.smtp.reply_code == 554


def test_silent_server_fails_at_stage_banner_when_the_run_deadline_passes() -> None:
    with silent_listener() as port:
        started = time.monotonic()
        result = run(plain_spec(port, timeout=1.5, command_timeout=30.0))
        elapsed = time.monotonic() - started

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.BANNER
    assert 1.4 <= elapsed < 3.5
    assert 1.4 <= result.duration_seconds < 3.5


def test_silent_server_fails_at_stage_banner_after_the_command_timeout() -> None:
    with silent_listener() as port:
        result = run(plain_spec(port, timeout=10.0, command_timeout=1.0))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.BANNER
    assert "220" in result.error
    assert 0.9 <= result.duration_seconds < 3.0


def test_refused_connection_fails_at_stage_connect() -> None:
    with closed_port() as port:
        result = run(plain_spec(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.CONNECT
    assert "refused" in result.error


def test_malformed_host_name_fails_at_stage_dns_not_as_an_internal_error() -> None:
    """Resolved without any query leaving the machine: the name is refused locally."""
    result = run(plain_spec(25, host="bad..name"))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DNS


def test_failure_is_written_to_the_transcript_as_a_note() -> None:
    with smtpd(Behaviour(rcpt_reply="550 5.1.1 User unknown")) as port:
        result = run(plain_spec(port))

    notes = [line.render() for line in result.transcript.lines if line.text.startswith("FAILED")]
    assert len(notes) == 1
    assert "FAILED at rcpt_to" in notes[0]
    assert " === " in notes[0]
