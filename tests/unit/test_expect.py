"""probe/expect.py: the verdicts of an expecting run, read off what the SMTP leg saw."""

from __future__ import annotations

import dataclasses

import pytest

from smtp_probe.probe.expect import (
    AUTH_IN_CLEAR_REFUSALS,
    BUILT_IN,
    accepted,
    auth_in_clear,
    describe,
    refused,
    server_for,
    stop_after,
)
from smtp_probe.probe.result import Outcome, SmtpReport, Stage
from smtp_probe.probe.spec import (
    Expectation,
    Mailbox,
    PolicyCheck,
    ProbeSpec,
    SmtpServer,
    TlsMode,
)
from smtp_probe.secret import Secret

RELAY = Expectation((Stage.MAIL_FROM, Stage.RCPT_TO, Stage.DATA))
AUTH = BUILT_IN[PolicyCheck.AUTH_REQUIRES_TLS]


def report(*stages: Stage, code: int = 250, reply: str = "2.0.0 Ok") -> SmtpReport:
    return SmtpReport(reply_code=code, reply=reply, stage_seconds=dict.fromkeys(stages, 0.01))


def spec(check: PolicyCheck | None, *, mailbox: bool = False) -> ProbeSpec:
    server = SmtpServer(
        "mx.example.test", 587, TlsMode.STARTTLS, username="u", password=Secret("p")
    )
    box = Mailbox("imap.example.test", 993, "u", password=Secret("p")) if mailbox else None
    return ProbeSpec(
        "p", server, "a@outside.example", "b@elsewhere.example", mailbox=box, check=check,
        expect=BUILT_IN.get(check) if check else None,
    )  # fmt: skip


def test_the_expected_refusal_is_rejected_with_no_stage_and_no_reason() -> None:
    verdict = refused(RELAY, Stage.RCPT_TO, 554, "server replied 554", report(code=554,
                      reply="5.7.1 Relay access denied"))  # fmt: skip
    assert (verdict.outcome, verdict.stage, verdict.reason) == (Outcome.REJECTED, None, "")
    assert verdict.note == "refused as expected at rcpt_to: 554 5.7.1 Relay access denied"


def test_a_refusal_after_every_expected_stage_passed_leaves_the_acceptance_the_verdict() -> None:
    """A probe with a mailbox sends on: a later refusal does not undo the acceptance."""
    only_rcpt = Expectation((Stage.RCPT_TO,))
    verdict = refused(only_rcpt, Stage.DATA, 554, "server replied 554", report(code=554))
    assert verdict.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert verdict.stage is Stage.RCPT_TO


def test_a_failure_with_no_reply_is_send_failed_with_its_reason() -> None:
    verdict = refused(RELAY, Stage.CONNECT, None, "cannot connect: connection refused", report())
    assert verdict.outcome is Outcome.SEND_FAILED
    assert verdict.stage is Stage.CONNECT
    assert verdict.reason == (
        "expected a refusal at mail_from, rcpt_to or data (5xx); "
        "got cannot connect: connection refused at connect"
    )


def test_acceptance_is_blamed_on_the_last_expected_stage_reached() -> None:
    reached = report(Stage.CONNECT, Stage.BANNER, Stage.EHLO, Stage.MAIL_FROM, Stage.RCPT_TO)
    verdict = accepted(RELAY, reached)
    assert verdict.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert verdict.stage is Stage.RCPT_TO


def test_acceptance_that_never_came_to_an_expected_stage_says_so() -> None:
    verdict = accepted(Expectation((Stage.AUTH,)), report(Stage.EHLO, Stage.MAIL_FROM))
    assert verdict.stage is Stage.MAIL_FROM
    assert verdict.reason == "never refused: the session never came to auth (5xx)"


@pytest.mark.parametrize("code", [235, 334, 535])
def test_auth_in_clear_processed_is_accepted_unexpectedly_at_auth(code: int) -> None:
    verdict = auth_in_clear(AUTH, False, code, "whatever")
    assert (verdict.outcome, verdict.stage) == (Outcome.ACCEPTED_UNEXPECTEDLY, Stage.AUTH)


@pytest.mark.parametrize("code", [int(c) for c in AUTH_IN_CLEAR_REFUSALS])
def test_auth_in_clear_refused_is_rejected(code: int) -> None:
    assert auth_in_clear(AUTH, False, code, "no").outcome is Outcome.REJECTED


def test_auth_offered_in_the_clear_fails_at_ehlo_whatever_the_auth_reply() -> None:
    verdict = auth_in_clear(AUTH, True, None, "")
    assert (verdict.outcome, verdict.stage) == (Outcome.ACCEPTED_UNEXPECTEDLY, Stage.EHLO)


def test_another_auth_reply_is_send_failed() -> None:
    verdict = auth_in_clear(AUTH, False, 454, "4.7.0 Temporary authentication failure")
    assert verdict.outcome is Outcome.SEND_FAILED
    assert verdict.reason == (
        f"expected a refusal at {describe(AUTH)}; got 454 4.7.0 Temporary authentication "
        "failure at auth"
    )


def test_each_check_talks_to_the_server_its_own_way() -> None:
    assert server_for(spec(PolicyCheck.OPEN_RELAY)).username is None
    assert server_for(spec(PolicyCheck.OPEN_RELAY)).password is None
    clear = server_for(spec(PolicyCheck.AUTH_REQUIRES_TLS))
    assert (clear.tls, clear.username, clear.password) == (TlsMode.NONE, None, None)
    mismatch = spec(PolicyCheck.SENDER_MISMATCH)
    assert server_for(mismatch) is mismatch.smtp


def test_only_a_run_without_a_mailbox_stops_after_the_last_expected_stage() -> None:
    assert stop_after(spec(PolicyCheck.OPEN_RELAY)) is Stage.DATA
    assert stop_after(spec(PolicyCheck.OPEN_RELAY, mailbox=True)) is None
    assert stop_after(spec(None)) is None
    unordered = dataclasses.replace(
        spec(None), expect=Expectation((Stage.RCPT_TO, Stage.MAIL_FROM))
    )
    assert stop_after(unordered) is Stage.RCPT_TO
