"""IMAP AUTHENTICATE OAUTHBEARER / XOAUTH2 against pymap standing for Dovecot's oauth2 passdb.

Runs use a one-shot watcher (``check``) unless they say "persistent" (the
daemon's, which logs in again on every reconnect). The SMTP side is
aiosmtpd taking the same tokens (:mod:`tests.support.oauth_smtpd`) and
delivering into the pymap mailbox (:mod:`tests.support.oauth_imapd`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

import pytest

from smtp_probe.probe.credentials import TokenError
from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.probe.transcript import Transcript
from smtp_probe.report import render_json, render_nagios, render_text
from tests.support.loopback_smtpd import LOOPBACK, smtpd
from tests.support.oauth_imapd import USER, OAuthImapd, oauth_imapd
from tests.support.oauth_smtpd import OAuthBehaviour, listener
from tests.support.tokens import CANARY, StaticTokens, token_forms
from tests.support.waiting import eventually

STALE = "ya29.stale-token"
BOTH = ("XOAUTH2", "OAUTHBEARER")


def mailbox(port: int, source: StaticTokens) -> Mailbox:
    return Mailbox(host=LOOPBACK, port=port, username=USER, oauth=source, tls=TlsMode.NONE)


def probe(
    smtp_port: int,
    box: Mailbox,
    smtp_source: StaticTokens | None = None,
    *,
    timeout: float = 5.0,
) -> ProbeSpec:
    return ProbeSpec(
        name="oauth",
        smtp=SmtpServer(
            host=LOOPBACK,
            port=smtp_port,
            tls=TlsMode.NONE,
            username=USER if smtp_source else None,
            oauth=smtp_source,
        ),
        mail_from="probe@sender.test",
        rcpt_to=USER,
        mailbox=box,
        timeout=timeout,
    )


def run(spec: ProbeSpec, watcher: MailboxWatcher | None = None) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner(), watcher=watcher))


def lines(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines]


def run_against_mailbox(imapd: OAuthImapd, source: StaticTokens) -> tuple[RunResult, int]:
    """A run whose SMTP server is a listener that must not be contacted unless IMAP logs in."""
    with listener() as (smtp_port, connections):
        result = run(probe(smtp_port, mailbox(imapd.port, source), timeout=2.0))
        return result, connections()


@pytest.mark.parametrize(
    ("smtp_excluded", "imap_offered", "smtp_mechanism", "imap_mechanism"),
    [
        pytest.param([], BOTH, "OAUTHBEARER", "OAUTHBEARER", id="oauthbearer"),
        pytest.param(["OAUTHBEARER"], ("XOAUTH2",), "XOAUTH2", "XOAUTH2", id="xoauth2"),
    ],
)
def test_a_run_with_oauth_on_both_legs_is_delivered(
    smtp_excluded: list[str],
    imap_offered: Sequence[str],
    smtp_mechanism: str,
    imap_mechanism: str,
) -> None:
    source = StaticTokens(client="idp")
    with oauth_imapd({CANARY}, mechanisms=imap_offered) as imapd:
        behaviour = OAuthBehaviour(user=USER, tokens={CANARY}, deliver=imapd.deliver)
        with smtpd(
            behaviour, auth_require_tls=False, auth_exclude_mechanism=smtp_excluded
        ) as smtp_port:
            result = run(probe(smtp_port, mailbox(imapd.port, source), source))
        left = imapd.message_count()

    assert result.outcome is Outcome.DELIVERED, result.error
    assert [(a.mechanism, a.token) for a in behaviour.attempts] == [(smtp_mechanism, CANARY)]
    [attempt] = imapd.attempts
    assert (attempt.mechanism, attempt.user, attempt.token) == (imap_mechanism, USER, CANARY)
    if imap_mechanism == "OAUTHBEARER":
        assert attempt.fields == {"host": LOOPBACK, "port": str(imapd.port)}
    assert source.token_calls == 1, "one source for both legs is asked once per run"
    assert f"AUTHENTICATE {imap_mechanism} ********" in lines(result)
    assert "oauth: token from idp (cached, expires in 59m)" in lines(result)
    assert left == 0, "the probe message was not cleaned up"


@pytest.mark.parametrize(
    ("offered", "acknowledgement", "challenge", "summary"),
    [
        pytest.param(
            ("XOAUTH2",),
            b"",
            '+ {"status":"401","schemes":"bearer","scope":"mail"}',
            "status 401, schemes bearer, scope mail",
            id="xoauth2",
        ),
        pytest.param(
            BOTH, b"\x01", '+ {"status":"invalid_token"}', "status invalid_token", id="oauthbearer"
        ),
    ],
)
def test_a_refused_fresh_token_fails_at_imap_login_with_the_decoded_challenge_and_sends_nothing(
    offered: Sequence[str], acknowledgement: bytes, challenge: str, summary: str
) -> None:
    source = StaticTokens([STALE, CANARY], fresh=True)
    with oauth_imapd({CANARY}, mechanisms=offered) as imapd:
        result, smtp_connections = run_against_mailbox(imapd, source)
        attempts = imapd.attempts

    mechanism = attempts[0].mechanism
    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.IMAP_LOGIN
    assert result.error == (
        f"AUTHENTICATE {mechanism} refused: [AUTHENTICATIONFAILED] Invalid authentication "
        f"credentials. (token refused: {summary})"
    )
    assert [a.acknowledgement for a in attempts] == [acknowledgement]
    assert challenge in lines(result)
    assert source.rejected == []
    assert smtp_connections == 0


def test_a_refused_cached_token_is_rejected_and_the_login_retried_once() -> None:
    source = StaticTokens([STALE, CANARY])
    with oauth_imapd({CANARY}) as imapd:
        transcript = Transcript()
        watcher = MailboxWatcher(mailbox(imapd.port, source), TokenSigner())

        async def start() -> None:
            try:
                await watcher.start(transcript, time.monotonic() + 3)
            finally:
                await watcher.close()

        asyncio.run(start())
        tokens = [a.token for a in imapd.attempts]

    assert tokens == [STALE, CANARY]
    assert source.rejected == [STALE]
    texts = [line.text for line in transcript.lines]
    assert "imap: the cached token from static was refused; trying once more with a new one" in (
        texts
    )
    assert any(text.startswith("OK ") and "Authentication successful" in text for text in texts)


def test_the_login_retry_happens_once_only() -> None:
    source = StaticTokens([STALE, "ya29.also-refused"])
    with oauth_imapd({CANARY}) as imapd:
        result, smtp_connections = run_against_mailbox(imapd, source)
        tokens = [a.token for a in imapd.attempts]

    assert result.stage is Stage.IMAP_LOGIN
    assert tokens == [STALE, "ya29.also-refused"]
    assert smtp_connections == 0


def test_unavailable_is_reported_as_a_temporary_failure_and_not_retried() -> None:
    source = StaticTokens([CANARY, "ya29.other"])
    with oauth_imapd({CANARY}, temporary=True) as imapd:
        result, _ = run_against_mailbox(imapd, source)
        attempts = len(imapd.attempts)

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.IMAP_LOGIN
    assert "[UNAVAILABLE]" in result.error
    assert "temporary" in result.error
    assert attempts == 1
    assert source.rejected == []


def test_a_server_without_an_oauth_mechanism_fails_at_imap_login_naming_what_it_offers() -> None:
    with oauth_imapd({CANARY}, mechanisms=()) as imapd:
        result, _ = run_against_mailbox(imapd, StaticTokens())

    assert result.stage is Stage.IMAP_LOGIN
    assert result.error == (
        "server offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2 (it offers AUTH=PLAIN, AUTH=LOGIN)"
    )


def test_a_mailbox_token_that_cannot_be_had_fails_the_run_at_oauth_before_any_connection() -> None:
    source = StaticTokens(error=TokenError("invalid_grant (HTTP 400)", "invalid_grant"))
    with listener() as (imap_port, imap_connections), listener() as (smtp_port, smtp_connections):
        result = run(probe(smtp_port, mailbox(imap_port, source)))
        made = imap_connections() + smtp_connections()

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.OAUTH
    assert result.error == "static: invalid_grant (HTTP 400)"
    assert made == 0


def test_a_persistent_watcher_asks_the_source_at_every_login() -> None:
    source = StaticTokens()
    with oauth_imapd({CANARY}) as imapd:

        async def scenario() -> int:
            watcher = MailboxWatcher(mailbox(imapd.port, source), TokenSigner(), persistent=True)
            try:
                await watcher.start(Transcript(), time.monotonic() + 3)
                imapd.drop_connections()
                await eventually(lambda: len(imapd.attempts) == 2 and watcher.is_up)
                return source.token_calls
            finally:
                await watcher.close()

        calls = asyncio.run(scenario())

    assert calls == 2


def test_a_persistent_watcher_without_a_token_is_down_at_oauth_and_so_are_its_runs() -> None:
    source = StaticTokens()
    with oauth_imapd({CANARY}) as imapd, listener() as (smtp_port, smtp_connections):

        async def scenario() -> tuple[str | None, RunResult, int]:
            box = mailbox(imapd.port, source)
            watcher = MailboxWatcher(box, TokenSigner(), persistent=True)
            try:
                await watcher.start(Transcript(), time.monotonic() + 3)
                source.error = TokenError("invalid_client (HTTP 401)", "invalid_client")
                imapd.drop_connections()
                await eventually(lambda: watcher.down_stage is Stage.OAUTH)
                result = await run_probe(
                    probe(smtp_port, box), signer=TokenSigner(), watcher=watcher
                )
                return watcher.down_reason, result, smtp_connections()
            finally:
                await watcher.close()

        down_reason, result, made = asyncio.run(scenario())

    assert down_reason == "static: invalid_client (HTTP 401)"
    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.OAUTH
    assert result.error == "mailbox unreachable: static: invalid_client (HTTP 401)"
    assert made == 0


def test_a_run_on_a_shared_watcher_fetches_only_the_smtp_token() -> None:
    imap_source = StaticTokens(client="imap")
    smtp_source = StaticTokens(client="smtp")
    with oauth_imapd({CANARY}) as imapd:
        behaviour = OAuthBehaviour(user=USER, tokens={CANARY}, deliver=imapd.deliver)
        with smtpd(behaviour, auth_require_tls=False) as smtp_port:

            async def scenario() -> RunResult:
                box = mailbox(imapd.port, imap_source)
                signer = TokenSigner()
                watcher = MailboxWatcher(box, signer, persistent=True)
                try:
                    await watcher.start(Transcript(), time.monotonic() + 3)
                    spec = probe(smtp_port, box, smtp_source)
                    return await run_probe(spec, signer=signer, watcher=watcher)
                finally:
                    await watcher.close()

            result = asyncio.run(scenario())

    assert result.outcome is Outcome.DELIVERED, result.error
    assert (imap_source.token_calls, smtp_source.token_calls) == (1, 1)
    assert "oauth: token from smtp (cached, expires in 59m)" in lines(result)


@pytest.mark.parametrize("offered", [BOTH, ("XOAUTH2",)], ids=["oauthbearer", "xoauth2"])
@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "refused"])
def test_the_token_appears_in_no_output_in_any_form(offered: Sequence[str], accepted: bool) -> None:
    source = StaticTokens([CANARY], fresh=True)
    with oauth_imapd({CANARY} if accepted else set(), mechanisms=offered) as imapd:
        behaviour = OAuthBehaviour(user=USER, tokens={CANARY}, deliver=imapd.deliver)
        with smtpd(behaviour, auth_require_tls=False) as smtp_port:
            result = run(probe(smtp_port, mailbox(imapd.port, source), source))
        port = imapd.port

    assert result.success is accepted, result.error
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
