"""SMTP AUTH OAUTHBEARER / XOAUTH2 against aiosmtpd standing for Postfix + Dovecot's oauth2 passdb.

The token source is :class:`tests.support.tokens.StaticTokens` (our own
TokenSource protocol with fixed tokens); the server is a real aiosmtpd
whose OAuth2 mechanisms answer as Dovecot does (:mod:`tests.support.oauth_smtpd`).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from smtp_probe.probe.credentials import TokenError
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.spec import ProbeSpec
from smtp_probe.report import render_json, render_nagios, render_text
from tests.support.loopback_routes import loopback_probe, run
from tests.support.loopback_smtpd import LOOPBACK, smtpd
from tests.support.oauth_smtpd import REFUSED, OAuthBehaviour, listener
from tests.support.tokens import CANARY, StaticTokens, token_forms

USER = "probe@example.test"
STALE = "ya29.stale-token"
NEXT = "ya29.next-token"
XOAUTH2_REFUSAL = f"{REFUSED} (token refused: status 401, schemes bearer, scope mail)"
OAUTHBEARER_REFUSAL = f"{REFUSED} (token refused: status invalid_token)"
ONLY_XOAUTH2 = ["OAUTHBEARER"]
"""``auth_exclude_mechanism`` for a server that offers XOAUTH2 but not OAUTHBEARER."""


def oauth_probe(port: int, source: StaticTokens, *, timeout: float = 5.0) -> ProbeSpec:
    spec = loopback_probe(port, username=USER, timeout=timeout)
    return replace(spec, smtp=replace(spec.smtp, oauth=source))


def run_against(
    behaviour: OAuthBehaviour, source: StaticTokens, *, exclude: list[str] | None = None
) -> RunResult:
    with smtpd(behaviour, auth_require_tls=False, auth_exclude_mechanism=exclude or []) as port:
        return run(oauth_probe(port, source))


def sent_lines(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines]


def test_oauthbearer_is_used_when_offered_and_carries_user_host_and_port() -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY})
    with smtpd(behaviour, auth_require_tls=False) as port:
        result = run(oauth_probe(port, StaticTokens()))

    assert result.outcome is Outcome.SENT, result.error
    [attempt] = behaviour.attempts
    assert (attempt.mechanism, attempt.user, attempt.token) == ("OAUTHBEARER", USER, CANARY)
    assert attempt.fields == {"host": LOOPBACK, "port": str(port)}
    assert attempt.initial_response_inline
    assert "AUTH OAUTHBEARER ********" in sent_lines(result)
    assert "oauth: token from static (cached, expires in 59m)" in sent_lines(result)
    assert Stage.AUTH in result.smtp.stage_seconds


def test_xoauth2_is_used_when_the_server_offers_no_oauthbearer() -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY})
    result = run_against(behaviour, StaticTokens(), exclude=ONLY_XOAUTH2)

    assert result.outcome is Outcome.SENT, result.error
    assert [(a.mechanism, a.user, a.token) for a in behaviour.attempts] == [
        ("XOAUTH2", USER, CANARY)
    ]
    assert "AUTH XOAUTH2 ********" in sent_lines(result)


@pytest.mark.parametrize(
    ("exclude", "acknowledgement", "challenge", "reason"),
    [
        pytest.param(
            ONLY_XOAUTH2,
            b"",
            '334 {"status":"401","schemes":"bearer","scope":"mail"}',
            XOAUTH2_REFUSAL,
            id="xoauth2",
        ),
        pytest.param(
            [], b"\x01", '334 {"status":"invalid_token"}', OAUTHBEARER_REFUSAL, id="oauthbearer"
        ),
    ],
)
def test_a_refused_fresh_token_fails_at_auth_with_the_decoded_challenge_and_no_retry(
    exclude: list[str], acknowledgement: bytes, challenge: str, reason: str
) -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY})
    source = StaticTokens([STALE, CANARY], fresh=True)
    result = run_against(behaviour, source, exclude=exclude)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.AUTH
    assert result.error == reason
    assert result.smtp.reply_code == 535
    [attempt] = behaviour.attempts
    assert attempt.acknowledgement == acknowledgement
    assert challenge in sent_lines(result)
    assert source.rejected == []
    assert source.token_calls == 1


def test_a_refused_cached_token_is_rejected_and_auth_retried_once_with_a_new_one() -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY})
    source = StaticTokens([STALE, CANARY])
    result = run_against(behaviour, source)

    assert result.outcome is Outcome.SENT, result.error
    assert [a.token for a in behaviour.attempts] == [STALE, CANARY]
    assert source.rejected == [STALE]
    assert source.token_calls == 2
    assert "oauth: the cached token from static was refused; trying once more with a new one" in (
        sent_lines(result)
    )
    assert "oauth: token from static (fresh, expires in 59m)" in sent_lines(result)


def test_the_retry_happens_once_only() -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY})
    source = StaticTokens([STALE, "ya29.also-refused"])
    result = run_against(behaviour, source, exclude=ONLY_XOAUTH2)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.AUTH
    assert result.error == XOAUTH2_REFUSAL
    assert [a.token for a in behaviour.attempts] == [STALE, "ya29.also-refused"]
    assert source.rejected == [STALE]


def test_a_new_token_that_cannot_be_had_after_a_refusal_fails_at_oauth() -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY})
    source = StaticTokens([STALE])  # nothing to replace it with: the source fails
    result = run_against(behaviour, source)

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.OAUTH
    assert result.error == "static: no more tokens"
    assert result.smtp.reply_code == 535, "the refusal that led there is kept"
    assert behaviour.messages == []


def test_a_temporary_failure_is_not_blamed_on_the_token() -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY}, temporary=True)
    source = StaticTokens([CANARY, "ya29.other"])
    result = run_against(behaviour, source)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.AUTH
    assert result.error == "454 4.7.0 Temporary authentication failure"
    assert len(behaviour.attempts) == 1
    assert source.rejected == []


def test_a_token_too_long_for_the_auth_line_follows_an_empty_334() -> None:
    # Entra ID access tokens run to a few kilobytes; RFC 4954 keeps the AUTH line
    # within 512 octets. (aiosmtpd reads lines of up to 1001: the token stays below.)
    long_token = "eyJ0eXAiOiJKV1Qi." + "x" * 600
    behaviour = OAuthBehaviour(user=USER, tokens={long_token})
    result = run_against(behaviour, StaticTokens([long_token]), exclude=ONLY_XOAUTH2)

    assert result.outcome is Outcome.SENT, result.error
    [attempt] = behaviour.attempts
    assert attempt.token == long_token
    assert not attempt.initial_response_inline
    lines = sent_lines(result)
    assert lines[lines.index("AUTH XOAUTH2") + 2] == "********"


def test_a_server_offering_neither_mechanism_fails_at_auth_naming_what_it_offers() -> None:
    behaviour = OAuthBehaviour(user=USER, tokens={CANARY})
    result = run_against(behaviour, StaticTokens(), exclude=["XOAUTH2", "OAUTHBEARER"])

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.AUTH
    assert result.error == "server offers neither OAUTHBEARER nor XOAUTH2 (AUTH LOGIN PLAIN)"
    assert behaviour.attempts == []


def test_a_token_that_cannot_be_had_fails_at_oauth_before_connecting() -> None:
    source = StaticTokens(error=TokenError("invalid_client (HTTP 401)", "invalid_client"))
    with listener() as (port, connections):
        result = run(oauth_probe(port, source))
        made = connections()

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.OAUTH
    assert result.error == "static: invalid_client (HTTP 401)"
    assert made == 0, "the SMTP server was contacted"
    assert "FAILED at oauth: static: invalid_client (HTTP 401)" in sent_lines(result)


def test_a_token_source_that_hangs_past_the_run_deadline_fails_at_oauth_by_the_deadline() -> None:
    source = StaticTokens(block=True, obey_timeout=False)
    try:
        with listener() as (port, connections):
            result = run(oauth_probe(port, source, timeout=0.5))
            made = connections()
    finally:
        source.release()

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.OAUTH
    assert result.error.startswith("static: no token within 0.5s (the run deadline)")
    assert result.duration_seconds < 0.5 + 1.0
    assert made == 0


@pytest.mark.parametrize(
    ("accepted", "exclude"),
    [
        pytest.param({CANARY}, [], id="oauthbearer-accepted"),
        pytest.param({CANARY}, ONLY_XOAUTH2, id="xoauth2-accepted"),
        pytest.param({NEXT}, [], id="oauthbearer-refused-then-retried"),
        pytest.param({NEXT}, ONLY_XOAUTH2, id="xoauth2-refused-then-retried"),
        pytest.param(set[str](), ONLY_XOAUTH2, id="xoauth2-refused"),
    ],
)
def test_the_token_appears_in_no_output_in_any_form(accepted: set[str], exclude: list[str]) -> None:
    behaviour = OAuthBehaviour(user=USER, tokens=accepted)
    with smtpd(behaviour, auth_require_tls=False, auth_exclude_mechanism=exclude) as port:
        result = run(oauth_probe(port, StaticTokens([CANARY, NEXT])))

    assert behaviour.attempts[0].token == CANARY, "the canary was not even sent"
    assert result.success is bool(accepted)
    outputs = [
        "\n".join(result.transcript.render()),
        render_text(result, colour=False, verbose=True),
        render_json(result),
        render_nagios(result),
        json.dumps(result.error),
    ]
    for form in token_forms(CANARY, user=USER, host=LOOPBACK, port=port):
        for output in outputs:
            assert form not in output
