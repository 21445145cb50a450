"""Probes that expect a refusal, against aiosmtpd on 127.0.0.1: refused, accepted, refused wrongly.

aiosmtpd stands in for a receiving MTA whose policy answers the test
chooses (a ``554`` at RCPT like Postfix's ``reject_unauth_destination``,
AUTH offered in the clear or only after TLS like ``smtpd_tls_auth_only``);
the real Postfix cases are in ``tests/e2e/test_policy_checks.py``.
"""

from __future__ import annotations

import dataclasses

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from smtp_probe.probe.expect import BUILT_IN
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.spec import Expectation, PolicyCheck, ProbeSpec, TlsMode
from smtp_probe.probe.transcript import Direction
from tests.support.loopback_routes import RECIPIENT, SENDER, loopback_probe, run
from tests.support.loopback_smtpd import Authenticator, Behaviour, closed_port, smtpd

RELAY_DENIED = "554 5.7.1 <sink@rcpt.test>: Relay access denied"
USER = "alice"
PASSWORD = "s3cret-Pa55"  # noqa: S105 - the test server's


def expecting(
    port: int,
    expect: Expectation | None = None,
    *,
    check: PolicyCheck | None = None,
    **probe: object,
) -> ProbeSpec:
    """A loopback probe with ``check`` and ``expect`` (the check's built-in one by default)."""
    spec = loopback_probe(port, **probe)  # type: ignore[arg-type]
    chosen = expect if expect is not None else BUILT_IN.get(check) if check else None
    return dataclasses.replace(spec, check=check, expect=chosen)


def sent(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines if line.direction is Direction.SENT]


def received(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines if line.direction is Direction.RECEIVED]


def notes(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines if line.direction is Direction.NOTE]


def test_open_relay_refused_at_rcpt_is_rejected_a_success_with_the_refusal_as_evidence() -> None:
    handler = Behaviour(rcpt_reply=RELAY_DENIED)
    with smtpd(handler) as port:
        result = run(expecting(port, check=PolicyCheck.OPEN_RELAY))

    assert result.outcome is Outcome.REJECTED
    assert result.success
    assert result.stage is None
    assert result.error == ""
    assert result.policy_check == "open_relay"
    assert result.smtp.reply_code == 554
    assert f"RCPT TO:<{RECIPIENT}>" in sent(result)
    assert RELAY_DENIED in received(result)
    assert f"refused as expected at rcpt_to: {RELAY_DENIED}" in notes(result)
    assert not any(note.startswith("FAILED") for note in notes(result))
    assert handler.messages == []


def test_open_relay_accepted_without_a_mailbox_stops_after_rcpt_to_never_sending_data() -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        result = run(expecting(port, Expectation((Stage.MAIL_FROM, Stage.RCPT_TO))))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert not result.success
    assert result.stage is Stage.RCPT_TO
    assert result.policy_check == "expect"
    assert "accepted at rcpt_to" in result.error
    assert "DATA" not in sent(result)
    assert sent(result)[-2:] == ["RSET", "QUIT"]
    assert handler.rcpt_to == [RECIPIENT]
    assert handler.messages == []


def test_an_acceptance_through_data_stops_at_the_354_and_the_message_is_never_sent() -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        result = run(expecting(port, check=PolicyCheck.OPEN_RELAY))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert result.stage is Stage.DATA
    assert result.smtp.reply_code == 354
    assert result.smtp.accepted_at is None
    assert sent(result)[-1] == "DATA"
    assert "stopping after data: closing without sending the message" in notes(result)
    assert any(note.startswith("ACCEPTED UNEXPECTEDLY") for note in notes(result))
    assert handler.messages == []


def test_open_relay_never_logs_in_even_when_the_server_has_credentials() -> None:
    authenticator = Authenticator(USER, PASSWORD)
    handler = Behaviour(rcpt_reply=RELAY_DENIED)
    with smtpd(handler, authenticator=authenticator, auth_require_tls=False) as port:
        spec = expecting(port, check=PolicyCheck.OPEN_RELAY, username=USER, password=PASSWORD)
        result = run(spec)

    assert result.outcome is Outcome.REJECTED
    assert authenticator.attempts == []
    assert not any(text.startswith("AUTH") for text in sent(result))


def test_sender_mismatch_logs_in_and_is_rejected_at_mail_from() -> None:
    authenticator = Authenticator(USER, PASSWORD)
    refusal = f"553 5.7.1 <{SENDER}>: Sender address rejected: not owned by user {USER}"
    handler = Behaviour(mail_reply=refusal)
    with smtpd(handler, authenticator=authenticator, auth_require_tls=False) as port:
        spec = expecting(port, check=PolicyCheck.SENDER_MISMATCH, username=USER, password=PASSWORD)
        result = run(spec)

    assert result.outcome is Outcome.REJECTED
    assert result.policy_check == "sender_mismatch"
    assert authenticator.attempts == [(USER, PASSWORD)]
    assert f"refused as expected at mail_from: {refusal}" in notes(result)
    assert PASSWORD not in "\n".join(result.transcript.render())


def test_a_refusal_at_another_stage_is_send_failed_saying_what_was_expected() -> None:
    handler = Behaviour(mail_reply="550 5.7.1 Client host rejected: go away")
    with smtpd(handler) as port:
        result = run(expecting(port, Expectation((Stage.RCPT_TO,), ("550",))))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.MAIL_FROM
    assert result.error == (
        "expected a refusal at rcpt_to (550); got 550 5.7.1 Client host rejected: go away "
        "at mail_from"
    )
    assert any(note.startswith("FAILED at mail_from: expected") for note in notes(result))


def test_a_refusal_with_another_code_is_send_failed() -> None:
    handler = Behaviour(rcpt_reply="450 4.7.1 <sink@rcpt.test>: try again later")
    with smtpd(handler) as port:
        result = run(expecting(port, Expectation((Stage.RCPT_TO,), ("5xx",))))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert "expected a refusal at rcpt_to (5xx); got 450 4.7.1" in result.error


def test_code_patterns_pick_the_refusal_that_counts() -> None:
    handler = Behaviour(rcpt_reply="551 5.7.1 not here")
    with smtpd(handler) as port:
        matching = run(expecting(port, Expectation((Stage.RCPT_TO,), ("554", "55x"))))
        other = run(expecting(port, Expectation((Stage.RCPT_TO,), ("554", "550"))))

    assert matching.outcome is Outcome.REJECTED
    assert other.outcome is Outcome.SEND_FAILED


def test_a_refusal_of_the_data_command_counts_at_data() -> None:
    """Postfix's ``smtpd_data_restrictions`` refuse there (no message is ever sent)."""
    handler = Behaviour(data_command_reply="554 5.7.1 no data today")
    with smtpd(handler) as port:
        result = run(expecting(port, Expectation((Stage.DATA,))))

    assert result.outcome is Outcome.REJECTED
    assert "refused as expected at data: 554 5.7.1 no data today" in notes(result)
    assert handler.messages == []


def test_auth_requires_tls_passes_when_auth_is_only_offered_inside_tls() -> None:
    """The default of aiosmtpd (``auth_require_tls``) is Postfix's ``smtpd_tls_auth_only = yes``."""
    authenticator = Authenticator(USER, PASSWORD)
    with smtpd(Behaviour(), authenticator=authenticator) as port:
        spec = expecting(
            port,
            check=PolicyCheck.AUTH_REQUIRES_TLS,
            username=USER,
            password=PASSWORD,
            tls=TlsMode.STARTTLS,
        )
        result = run(spec)

    assert result.outcome is Outcome.REJECTED, result.transcript.render()
    assert result.policy_check == "auth_requires_tls"
    assert "STARTTLS" not in sent(result)
    assert "AUTH PLAIN ********" in sent(result)
    [refusal] = [text for text in received(result) if text.startswith("538")]
    assert f"refused as expected at auth: {refusal}" in notes(result)
    assert authenticator.attempts == []
    transcript = "\n".join(result.transcript.render())
    assert PASSWORD not in transcript
    assert "smtp-probe-dummy" not in transcript


def test_auth_requires_tls_fails_at_ehlo_when_auth_is_offered_in_the_clear() -> None:
    authenticator = Authenticator(USER, PASSWORD)
    with smtpd(Behaviour(), authenticator=authenticator, auth_require_tls=False) as port:
        result = run(expecting(port, check=PolicyCheck.AUTH_REQUIRES_TLS))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert result.stage is Stage.EHLO
    assert result.error == "the EHLO before STARTTLS offers AUTH"
    assert any(
        text.startswith("250-AUTH") or text.startswith("250 AUTH") for text in received(result)
    )
    assert not any(text.startswith("AUTH") for text in sent(result))
    assert authenticator.attempts == []


class _HiddenAuth(Behaviour):
    """A server that hides AUTH from its EHLO but still checks credentials sent in the clear."""

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        replies = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [line for line in replies if "AUTH" not in line]


def test_auth_requires_tls_fails_at_auth_when_a_dummy_login_in_the_clear_is_checked() -> None:
    authenticator = Authenticator(USER, PASSWORD)
    with smtpd(_HiddenAuth(), authenticator=authenticator, auth_require_tls=False) as port:
        result = run(expecting(port, check=PolicyCheck.AUTH_REQUIRES_TLS))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY
    assert result.stage is Stage.AUTH
    assert "AUTH in the clear was processed (535" in result.error
    [(login, password)] = authenticator.attempts
    assert login == "smtp-probe-dummy"
    assert password not in "\n".join(result.transcript.render())


@pytest.mark.parametrize(
    ("check", "expect"),
    [
        (PolicyCheck.OPEN_RELAY, None),
        (None, Expectation((Stage.RCPT_TO,), ("550",))),
    ],
)
def test_a_dead_server_is_send_failed_at_connect_not_a_pass(
    check: PolicyCheck | None, expect: Expectation | None
) -> None:
    with closed_port() as port:
        result = run(expecting(port, expect, check=check))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.CONNECT
    assert result.error.startswith("expected a refusal at ")
    assert "at connect" in result.error


def test_a_delivery_probe_has_no_policy_check() -> None:
    with smtpd(Behaviour()) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT
    assert result.policy_check is None
    assert result.transcript.lines  # a plain run keeps its transcript
    assert SENDER in "\n".join(sent(result))
