"""PIPELINING (RFC 2920) against the real Postfix: the group on the wire and each refusal's stage.

Postfix offers ``PIPELINING`` on every listener, so each run sends ``MAIL``,
``RCPT`` and ``DATA`` in one write and Postfix answers the three together.
The policy stack runs with ``smtpd_forbid_unauth_pipelining = yes`` (the
Postfix 3.10 default, set for 3.7 too): its tests in
``test_policy_checks.py`` and ``test_smuggling.py`` pipeline the same way
and are not refused for it.
"""

from __future__ import annotations

import asyncio

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec, TlsMode
from smtp_probe.probe.transcript import Direction
from tests.support.mailstack import DEFER_450, REJECT_550, MailStack
from tests.support.routes import probe, smtp_server

_WIRE = {
    Direction.SENT: ">",
    Direction.SENT_TLS: ">",
    Direction.RECEIVED: "<",
    Direction.RECEIVED_TLS: "<",
}


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def transaction(result: RunResult) -> list[str]:
    """Commands (``>``) and replies (``<``) from ``MAIL FROM`` on, in order; notes left out."""
    lines = [
        f"{_WIRE[line.direction]} {line.text}"
        for line in result.transcript.lines
        if line.direction in _WIRE
    ]
    return lines[next(i for i, line in enumerate(lines) if line.startswith("> MAIL FROM:")) :]


def notes(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines if line.direction is Direction.NOTE]


def test_postfix_gets_the_group_in_one_write_and_delivers(stack: MailStack) -> None:
    result = run(probe(stack))

    assert result.outcome is Outcome.DELIVERED, result.error
    lines = transaction(result)
    assert [line[:6] for line in lines[:6]] == [
        "> MAIL",
        "> RCPT",
        "> DATA",
        "< 250 ",
        "< 250 ",
        "< 354 ",
    ]
    assert lines[6].startswith("> [message: ")
    # What Postfix logs for a client that sends ahead where RFC 2920 does not allow it.
    assert "improper command pipelining" not in stack.postfix_log()


def test_mail_refused_by_postfix_is_blamed_on_mail_from(stack: MailStack) -> None:
    """The submission port without STARTTLS: Postfix refuses MAIL (and so RCPT and DATA) with 530."""
    smtp = smtp_server(stack, "submission", tls=TlsMode.NONE, username=None, password=None)

    result = run(probe(stack, smtp=smtp))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.MAIL_FROM
    assert result.smtp.reply_code == 530
    assert [line[:5] for line in transaction(result)[3:6]] == ["< 530"] * 3
    assert "the reply to DATA follows from the mail_from reply" in notes(result)


def test_rcpt_refused_by_postfix_stays_rcpt_to_after_the_data_reply(stack: MailStack) -> None:
    result = run(probe(stack, to=REJECT_550))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 550
    lines = transaction(result)
    assert lines[4].startswith("< 550 5.1.1 <reject550@example.test>")
    assert lines[5] == "< 554 5.5.1 Error: no valid recipients"
    assert "the reply to DATA follows from the rcpt_to reply" in notes(result)


def test_rcpt_deferred_by_postfix_is_a_4xx_at_rcpt_to(stack: MailStack) -> None:
    result = run(probe(stack, to=DEFER_450))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 450
    assert transaction(result)[5] == "< 554 5.5.1 Error: no valid recipients"
