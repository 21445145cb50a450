"""``smtp-probe check`` with OAuth2 by ``XOAUTH2`` alone, against real Postfix + Dovecot.

Microsoft 365 offers only XOAUTH2 (no OAUTHBEARER), on SMTP and IMAP. The
session's stack offers both and the engine prefers OAUTHBEARER, so this
module starts a second private stack
(:class:`tests.support.mailstack.MailStack` with
``oauth_mechanisms=("xoauth2",)``) that stands in for Microsoft 365's
mechanism list, sharing the session's authorization server. It runs the
engine's XOAUTH2 path end to end: a good token on both legs, and a token
the servers refuse, whose JSON error challenge must be decoded and
answered with XOAUTH2's empty response.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from imapclient import IMAPClient

from tests.support.mailstack import MailStack
from tests.support.oauth_e2e import OAuthConfig, PostfixLog, leaked, refusing_proxy
from tests.support.oauth_server import OAuthServer
from tests.support.routes import SENDER, SINK, left_clean, plant_bystanders

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def xoauth2_stack(oauth_server: OAuthServer) -> Iterator[MailStack]:
    """A private stack whose only token mechanism is XOAUTH2, as Microsoft 365's."""
    with MailStack(oauth=oauth_server, oauth_mechanisms=("xoauth2",)) as started:
        yield started


@pytest.fixture(scope="module")
def planted(xoauth2_stack: MailStack) -> int:
    """Ordinary mail in sink's INBOX and Junk that no probe may touch."""
    return plant_bystanders(xoauth2_stack)


@pytest.fixture
def stack(xoauth2_stack: MailStack, planted: int) -> Iterator[MailStack]:
    """The XOAUTH2-only stack; after each test no probe mail is left, bystanders untouched."""
    with left_clean(xoauth2_stack, planted):
        yield xoauth2_stack


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    """A proxy that refuses: the only way out of loopback for the processes under test."""
    with refusing_proxy() as url:
        yield url


@pytest.fixture
def config(stack: MailStack, oauth_server: OAuthServer, tmp_path: Path) -> OAuthConfig:
    return OAuthConfig(stack, oauth_server, tmp_path)


def test_the_stack_offers_xoauth2_and_no_oauthbearer(stack: MailStack) -> None:
    async def ehlo_auth() -> str:
        async with aiosmtplib.SMTP(
            hostname=stack.host,
            port=stack.submission_port,
            start_tls=True,
            tls_context=stack.ssl_context(),
            timeout=20,
        ) as smtp:
            await smtp.ehlo()
            return smtp.esmtp_extensions["auth"]

    assert asyncio.run(ehlo_auth()) == "PLAIN LOGIN XOAUTH2"
    with IMAPClient(
        stack.host, port=stack.imaps_port, ssl_context=stack.ssl_context(), timeout=20
    ) as client:
        auth = sorted(c for c in client.capabilities() if c.startswith(b"AUTH="))
    assert auth == [b"AUTH=LOGIN", b"AUTH=PLAIN", b"AUTH=XOAUTH2"]


def test_check_delivers_with_xoauth2_on_both_legs(config: OAuthConfig, proxy: str) -> None:
    probe, smtp_client, imap_client = config.both_legs("microsoft_secret")
    postfix = PostfixLog(config.stack)

    proc = config.check(probe, proxy=proxy)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("OK: delivered to INBOX ")
    assert any(x.endswith("<~ 250-AUTH PLAIN LOGIN XOAUTH2") for x in lines)
    auth = next(i for i, x in enumerate(lines) if x.endswith("~> AUTH XOAUTH2 ********"))
    assert lines[auth + 1].endswith("<~ 235 2.7.0 Authentication successful")
    login = next(i for i, x in enumerate(lines) if x.endswith("~> AUTHENTICATE XOAUTH2 ********"))
    assert lines[login + 1].endswith("<~ OK Logged in")
    assert "OAUTHBEARER" not in proc.stdout
    # the servers agree on what was used
    assert re.search(rf"sasl_method=XOAUTH2, sasl_username={SENDER}", postfix.new())
    assert f"user=<{SINK}>, method=XOAUTH2" in config.stack.dovecot_log()
    for client in (smtp_client, imap_client):  # Dovecot checked each token once, for its login
        assert config.server.introspections(config.client_ids[client]) == [True]
    tokens = config.issued(smtp_client, imap_client)
    assert len(tokens) == 2
    assert leaked(proc.stdout + proc.stderr, [*tokens, *config.secrets.values()]) == []
    assert proc.stderr == ""


# Dovecot's XOAUTH2 error challenge for a token it does not know. 2.3 sends
# exactly these keys in this order; 2.4 (Debian 13) leads with "schemes"
# and adds "openid-configuration", so order and extra keys are not pinned.
_CHALLENGE = {"status": "401", "schemes": "bearer", "scope": "mail"}
_XOAUTH2_401 = {"status 401", "schemes bearer", "scope mail"}


def _challenge(line: str, marker: str) -> dict[str, object]:
    """The JSON error challenge a transcript line shows decoded after ``marker``."""
    assert marker in line, line
    decoded: dict[str, object] = json.loads(line.split(marker, 1)[1])
    return decoded


def _refusal(prefix: str, reason: str) -> set[str]:
    """The fields of ``(token refused: ...)`` after ``prefix`` (a regex) in a run's reason."""
    match = re.fullmatch(rf"{prefix} \(token refused: (.*)\)", reason)
    assert match is not None, reason
    return set(match.group(1).split(", "))


def _unknown_token(config: OAuthConfig, name: str) -> tuple[str, str]:
    """A token_command client printing a well-formed token no server issued: (client, token).

    Dovecot 2.3 and 2.4 both answer an unknown token with an error
    challenge (2.4 gives none for another user's live token).
    """
    token = "at-" + secrets.token_urlsafe(32)
    return config.command(name, f"print({token!r})\n"), token


def test_a_token_the_smtp_server_refuses_fails_at_auth_with_the_decoded_challenge(
    config: OAuthConfig, proxy: str
) -> None:
    smtp_client, token = _unknown_token(config, "unknown-token")
    config.smtp("submission", oauth=smtp_client)
    config.mailbox("sink", oauth=config.generic("sink", SINK))
    probe = config.probe("refused", "submission", "sink")
    postfix = PostfixLog(config.stack)

    proc, result = config.check_json(probe, proxy=proxy)

    assert (proc.returncode, result["outcome"], result["stage"]) == (2, "send_failed", "auth")
    assert result["smtp"]["reply_code"] == 535
    assert _refusal(r"535 5\.7\.8 .*", result["error"]) >= _XOAUTH2_401, result["error"]
    transcript = result["transcript"]
    auth = next(i for i, x in enumerate(transcript) if x.endswith("~> AUTH XOAUTH2 ********"))
    assert _CHALLENGE.items() <= _challenge(transcript[auth + 1], "<~ 334 ").items()
    assert transcript[auth + 2].endswith("~> "), "XOAUTH2 answers the challenge with an empty line"
    assert "<~ 535 5.7.8" in transcript[auth + 3]
    assert not any("MAIL FROM" in line for line in transcript)
    assert postfix.auth_failures("XOAUTH2") == 1
    assert postfix.messages() == 0
    secrets_ = [token, *config.issued("sink"), *config.secrets.values()]
    assert leaked(proc.stdout + proc.stderr, secrets_) == []


def test_a_token_the_imap_server_refuses_fails_at_imap_login_and_nothing_is_sent(
    config: OAuthConfig, proxy: str
) -> None:
    imap_client, token = _unknown_token(config, "unknown-token")
    config.smtp("submission", oauth=config.generic("probe", SENDER))
    config.mailbox("sink", oauth=imap_client)
    probe = config.probe("refused", "submission", "sink")
    postfix = PostfixLog(config.stack)

    proc, result = config.check_json(probe, proxy=proxy)

    assert (proc.returncode, result["outcome"], result["stage"]) == (2, "error", "imap_login")
    refused = r"AUTHENTICATE XOAUTH2 refused: \[AUTHENTICATIONFAILED\] Authentication failed\."
    assert _refusal(refused, result["error"]) >= _XOAUTH2_401, result["error"]
    transcript = result["transcript"]
    login = next(
        i for i, x in enumerate(transcript) if x.endswith("~> AUTHENTICATE XOAUTH2 ********")
    )
    assert _CHALLENGE.items() <= _challenge(transcript[login + 1], "<~ + ").items()
    assert transcript[login + 2].endswith("~> "), "XOAUTH2 answers the challenge with an empty line"
    assert "<~ NO [AUTHENTICATIONFAILED]" in transcript[login + 3]
    assert postfix.submissions() == 0
    secrets_ = [token, *config.issued("probe"), *config.secrets.values()]
    assert leaked(proc.stdout + proc.stderr, secrets_) == []


def test_only_token_mechanisms_can_be_chosen_and_only_with_oauth() -> None:
    for wanted in ((), ("cram-md5",), ("xoauth2", "XOAUTH2")):
        with pytest.raises(ValueError, match="oauth_mechanisms must be distinct names among"):
            MailStack(oauth="http://127.0.0.1:1/introspect", oauth_mechanisms=wanted)
    with pytest.raises(ValueError, match="oauth_mechanisms needs oauth="):
        MailStack(oauth_mechanisms=("xoauth2",))
    assert MailStack(
        oauth="http://127.0.0.1:1/x", oauth_mechanisms=("OAuthBearer",)
    ).oauth_mechanisms == ("oauthbearer",)
