"""SMTP PIPELINING (RFC 2920) against servers on 127.0.0.1: the wire order and who is blamed.

A server whose EHLO offers ``PIPELINING`` gets ``MAIL``, ``RCPT`` and
``DATA`` in one write; each reply is read in order and a refusal is the
failure of its own stage. aiosmtpd (with ``PIPELINING`` added to its EHLO)
answers each pipelined command as it reads it; the small server of
:mod:`tests.support.pipelining_smtpd` answers only once it holds the whole
group, as Postfix does, and can leave the ``DATA`` reply out for good.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Expectation
from smtp_probe.probe.transcript import Direction
from tests.support.loopback_routes import RECIPIENT, SENDER, loopback_probe, run
from tests.support.loopback_smtpd import Behaviour, smtpd
from tests.support.pipelining_smtpd import Pipelining, pipelining_smtpd
from tests.support.throttling_smtpd import SENDER_THREAD_LIMIT, Throttling

GROUP = [f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>", "DATA"]


def wire(result: RunResult) -> list[str]:
    """The transcript's commands (``>``) and replies (``<``) in order, notes left out."""
    marks = {Direction.SENT: ">", Direction.RECEIVED: "<"}
    return [
        f"{marks[line.direction]} {line.text}"
        for line in result.transcript.lines
        if line.direction in marks
    ]


def notes(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines if line.direction is Direction.NOTE]


def after_ehlo(result: RunResult) -> list[str]:
    """The wire from the transaction's first command on."""
    lines = wire(result)
    return lines[next(i for i, line in enumerate(lines) if line.startswith("> MAIL FROM:")) :]


def run_against(
    server: Pipelining, *, timeout: float = 5.0, command_timeout: float = 5.0
) -> tuple[RunResult, float]:
    """One probe through ``server`` with these deadlines; its result and the seconds it took."""

    async def scenario() -> tuple[RunResult, float]:
        async with pipelining_smtpd(server) as port:
            probe = loopback_probe(port, timeout=timeout, command_timeout=command_timeout)
            started = time.monotonic()
            result = await run_probe(probe, signer=TokenSigner())
            return result, time.monotonic() - started

    return asyncio.run(scenario())


def test_the_three_commands_go_out_before_any_reply_and_the_message_after_354() -> None:
    handler = Behaviour(offer_pipelining=True)
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    lines = after_ehlo(result)
    assert lines[:3] == [f"> {command}" for command in GROUP]
    assert [line[:5] for line in lines[3:6]] == ["< 250", "< 250", "< 354"]
    assert lines[6].startswith("> [message: ")
    assert lines[7:9] == ["> .", "< 250 2.0.0 Ok: queued as ABC123"]
    assert len(handler.messages) == 1
    assert set(result.smtp.stage_seconds) >= {Stage.MAIL_FROM, Stage.RCPT_TO, Stage.DATA}


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    with smtpd(Behaviour()) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    lines = after_ehlo(result)
    assert [line[:6] for line in lines[:6]] == [
        "> MAIL",
        "< 250 ",
        "> RCPT",
        "< 250 ",
        "> DATA",
        "< 354 ",
    ]


def test_a_server_that_answers_only_the_whole_group_gets_it_in_one_write() -> None:
    """Postfix's way: the replies come once the server holds MAIL, RCPT and DATA.

    A client that waited for each reply would time out at mail_from here.
    """
    server = Pipelining()

    result, _ = run_against(server, command_timeout=2.0)

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.queue_id == "PIPE1"
    assert server.commands[1:4] == GROUP
    assert len(server.messages) == 1


def test_mail_refused_is_blamed_on_mail_from_with_its_code_and_the_later_replies_shown() -> None:
    handler = Behaviour(offer_pipelining=True, mail_reply="550 5.7.1 Sender rejected")
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.MAIL_FROM
    assert result.smtp.reply_code == 550
    assert "550 5.7.1 Sender rejected" in (result.error or "")
    lines = after_ehlo(result)
    assert lines[:4] == [*(f"> {command}" for command in GROUP), "< 550 5.7.1 Sender rejected"]
    # aiosmtpd answers RCPT and DATA without a sender with 503: shown, not blamed.
    assert [line[:5] for line in lines[4:6]] == ["< 503", "< 503"]
    assert "the reply to DATA follows from the mail_from reply" in notes(result)
    assert handler.data_commands == 1
    assert handler.messages == []


def test_rcpt_refused_is_blamed_on_rcpt_to_though_data_was_refused_after_it() -> None:
    handler = Behaviour(offer_pipelining=True, rcpt_reply="550 5.1.1 <sink@rcpt.test>: unknown")
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 550
    lines = after_ehlo(result)
    assert lines[3][:5] == "< 250"
    assert lines[4] == "< 550 5.1.1 <sink@rcpt.test>: unknown"
    assert lines[5].startswith("< 503")
    assert "the reply to DATA follows from the rcpt_to reply" in notes(result)
    assert any(note.startswith("FAILED at rcpt_to: server replied 550") for note in notes(result))


def test_data_refused_is_blamed_on_data() -> None:
    handler = Behaviour(offer_pipelining=True, data_command_reply="554 5.7.1 Not now")
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DATA
    assert result.smtp.reply_code == 554
    assert after_ehlo(result)[3:6] == ["< 250 2.1.0 Ok", "< 250 2.1.5 Ok", "< 554 5.7.1 Not now"]
    assert handler.messages == []


def test_a_throttling_rcpt_reply_in_a_group_is_throttled_at_rcpt_to() -> None:
    handler = Throttling(offer_pipelining=True, stage="rcpt", reply=SENDER_THREAD_LIMIT)
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.THROTTLED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 452


def test_a_354_after_a_refused_rcpt_is_ended_with_a_lone_dot_and_nothing_is_delivered() -> None:
    server = Pipelining(rcpt_reply="550 5.1.1 unknown user")

    result, _ = run_against(server)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 550
    assert server.messages == [b".\r\n"]
    assert "the server took DATA all the same: ending it with a lone '.'" in notes(result)


def test_no_reply_to_data_fails_at_data_within_the_command_timeout() -> None:
    server = Pipelining(answer_data=False)

    result, took = run_against(server, timeout=10.0, command_timeout=0.5)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DATA
    assert "no answer within 0.5s" in (result.error or "")
    assert took < 3.0
    assert after_ehlo(result)[3:5] == ["< 250 2.1.0 Ok", "< 250 2.1.5 Ok"]


def test_no_reply_to_data_ends_at_the_run_deadline() -> None:
    server = Pipelining(answer_data=False)

    result, took = run_against(server, timeout=1.0, command_timeout=30.0)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DATA
    assert "before the run deadline" in (result.error or "")
    assert took < 2.5


def test_dsn_parameters_refused_in_a_group_are_sent_again_without_them() -> None:
    handler = Behaviour(offer_pipelining=True, offer_dsn=True, refuse_dsn_parameters=True)
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    assert handler.mail_options == [[]]
    assert handler.rcpt_options == [[]]
    assert len(handler.messages) == 1
    lines = after_ehlo(result)
    assert lines[0] == f"> MAIL FROM:<{SENDER}> RET=HDRS ENVID={result.run_id}"
    assert lines[3].startswith("< 555")
    assert f"> MAIL FROM:<{SENDER}>" in lines


def test_an_expected_refusal_at_rcpt_never_pipelines_data() -> None:
    """With no mailbox the session stops after the last expected stage: DATA is never sent."""
    handler = Behaviour(offer_pipelining=True)
    with smtpd(handler) as port:
        spec = dataclasses.replace(loopback_probe(port), expect=Expectation((Stage.RCPT_TO,)))
        result = run(spec)

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert result.stage is Stage.RCPT_TO
    assert handler.data_commands == 0
    lines = after_ehlo(result)
    assert lines[:2] == [f"> {GROUP[0]}", f"> {GROUP[1]}"]
    assert "> RSET" in lines
    assert handler.messages == []


def test_an_expected_refusal_through_data_stops_after_354_without_the_message() -> None:
    handler = Behaviour(offer_pipelining=True)
    with smtpd(handler) as port:
        spec = dataclasses.replace(
            loopback_probe(port), expect=Expectation((Stage.MAIL_FROM, Stage.RCPT_TO, Stage.DATA))
        )
        result = run(spec)

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert result.stage is Stage.DATA
    assert after_ehlo(result)[:3] == [f"> {command}" for command in GROUP]
    assert handler.messages == []


def test_an_expected_refusal_at_rcpt_in_a_group_is_rejected() -> None:
    handler = Behaviour(offer_pipelining=True, rcpt_reply="554 5.7.1 Relay access denied")
    with smtpd(handler) as port:
        spec = dataclasses.replace(
            loopback_probe(port), expect=Expectation((Stage.MAIL_FROM, Stage.RCPT_TO, Stage.DATA))
        )
        result = run(spec)

    assert result.outcome is Outcome.REJECTED, result.error
    assert result.smtp.reply_code == 554
    assert "refused as expected at rcpt_to: 554 5.7.1 Relay access denied" in [
        note.removeprefix("=== ") for note in notes(result)
    ]


def test_non_ascii_addresses_go_with_smtputf8_where_offered() -> None:
    handler = Behaviour(offer_pipelining=True)
    with smtpd(handler) as port:  # aiosmtpd's controller offers SMTPUTF8
        spec = dataclasses.replace(
            loopback_probe(port), mail_from="prøbe@exämple.test", rcpt_to="sïnk@rcpt.test"
        )
        result = run(spec)

    assert result.outcome is Outcome.SENT, result.error
    assert handler.mail_from == ["prøbe@exämple.test"]
    assert handler.rcpt_to == ["sïnk@rcpt.test"]
    assert after_ehlo(result)[0] == "> MAIL FROM:<prøbe@exämple.test> BODY=8BITMIME SMTPUTF8"
    [raw] = handler.messages
    assert "From: prøbe@exämple.test".encode() in raw


def test_non_ascii_addresses_fail_at_mail_from_where_smtputf8_is_not_offered() -> None:
    handler = Behaviour(offer_pipelining=True)
    with smtpd(handler, enable_SMTPUTF8=False) as port:
        spec = dataclasses.replace(loopback_probe(port), mail_from="prøbe@exämple.test")
        result = run(spec)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.MAIL_FROM
    assert "SMTPUTF8" in (result.error or "")
    assert handler.mail_from == []


def test_a_refusal_stays_the_verdict_when_a_later_reply_never_comes() -> None:
    server = Pipelining(mail_reply="550 5.7.1 Sender rejected", answer_data=False)

    result, _ = run_against(server, timeout=10.0, command_timeout=0.5)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.MAIL_FROM
    assert result.smtp.reply_code == 550
    assert any(note.startswith("no reply to DATA") for note in notes(result))
    # The connection was hung up on, not reused for a QUIT whose reply could be DATA's.
    assert "QUIT" not in server.commands
