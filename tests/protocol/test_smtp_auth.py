"""SMTP AUTH against aiosmtpd: success, refusal at stage auth, and no password in the transcript."""

from __future__ import annotations

import json

import pytest

from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.spec import ProbeSpec
from smtp_probe.report import render_json, render_text
from tests.support.leaks import password_forms
from tests.support.loopback_routes import loopback_probe, run
from tests.support.loopback_smtpd import Authenticator, Behaviour, smtpd

USER = "probe-user"
PASSWORD = "correct horse battery"  # noqa: S105 - the test server's own user


def auth_probe(port: int, password: str) -> ProbeSpec:
    return loopback_probe(port, username=USER, password=password)


def run_against(authenticator: Authenticator, password: str, **smtp_kwargs: object) -> RunResult:
    with smtpd(
        Behaviour(), authenticator=authenticator, auth_require_tls=False, **smtp_kwargs
    ) as port:
        return run(auth_probe(port, password))


def test_auth_plain_with_the_right_password_logs_in_and_sends() -> None:
    authenticator = Authenticator(USER, PASSWORD)
    result = run_against(authenticator, PASSWORD)

    assert result.outcome is Outcome.SENT, result.error
    assert authenticator.attempts == [(USER, PASSWORD)]
    assert "AUTH PLAIN ********" in [line.text for line in result.transcript.lines]
    assert Stage.AUTH in result.smtp.stage_seconds


def test_auth_login_is_used_when_the_server_offers_no_plain() -> None:
    authenticator = Authenticator(USER, PASSWORD)
    result = run_against(authenticator, PASSWORD, auth_exclude_mechanism=["PLAIN"])

    assert result.outcome is Outcome.SENT, result.error
    assert authenticator.attempts == [(USER, PASSWORD)]
    assert "AUTH LOGIN ********" in [line.text for line in result.transcript.lines]


def test_wrong_password_fails_at_stage_auth_with_535() -> None:
    result = run_against(Authenticator(USER, PASSWORD), "not the password")

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.AUTH
    assert result.smtp.reply_code == 535


def test_server_without_auth_fails_at_stage_auth_and_hints_at_starttls() -> None:
    # aiosmtpd offers AUTH only inside TLS unless told otherwise.
    with smtpd(Behaviour(), authenticator=Authenticator(USER, PASSWORD)) as port:
        result = run(auth_probe(port, PASSWORD))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.AUTH
    assert "offers no AUTH" in result.error
    assert "STARTTLS" in result.error


@pytest.mark.parametrize(
    ("password", "mechanisms_excluded"),
    [
        pytest.param(PASSWORD, [], id="plain-accepted"),
        pytest.param("wrong-but-secret", [], id="plain-refused"),
        pytest.param(PASSWORD, ["PLAIN"], id="login-accepted"),
        pytest.param("wrong-but-secret", ["PLAIN"], id="login-refused"),
    ],
)
def test_transcript_and_outputs_never_contain_the_password_in_any_form(
    password: str, mechanisms_excluded: list[str]
) -> None:
    result = run_against(
        Authenticator(USER, PASSWORD), password, auth_exclude_mechanism=mechanisms_excluded
    )

    outputs = [
        "\n".join(result.transcript.render()),
        render_text(result, colour=False, verbose=True),
        render_json(result),
        json.dumps(result.error),
    ]
    for form in password_forms(USER, password):
        for output in outputs:
            assert form not in output
