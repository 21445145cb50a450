"""OAuth on the real mail stack: Dovecot checks bearer tokens at the real authorization server.

The OAuth end-to-end tests of smtp_probe trust that the stack takes a good
token and refuses a bad one the way a real provider's servers do; these
prove it with the libraries alone (imapclient, aiosmtplib, a token from
:class:`tests.support.oauth_server.OAuthServer`'s token endpoint): IMAP
``AUTHENTICATE XOAUTH2``/``OAUTHBEARER`` and SMTP ``AUTH`` on the submission
port, the JSON error challenge and the ``535`` after it, the temporary
failure while introspection is down or hangs, that tokens and passwords do
not stand in for each other, and that failed token logins do not slow the
next login down.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import json
import re
import secrets
import ssl
import time
import urllib.parse
import urllib.request
import uuid
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.support.loopback_smtpd import silent_listener
from tests.support.mailstack import MailStack, MailStackError
from tests.support.oauth_server import OAuthServer

pytestmark = pytest.mark.e2e

PROBE = "probe@example.test"
SINK = "sink@example.test"
MECHANISMS = ["XOAUTH2", "OAUTHBEARER"]


def _fetch_token(server: OAuthServer, client_id: str, secret: str) -> str:
    """A client-credentials access token from the server's token endpoint (HTTPS, its CA)."""
    body = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    ).encode()
    request = urllib.request.Request(server.token_url, data=body, method="POST")  # noqa: S310
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with urllib.request.urlopen(request, context=context, timeout=10) as reply:  # noqa: S310
        answer: dict[str, Any] = json.loads(reply.read())
    token = answer["access_token"]
    assert isinstance(token, str)
    return token


@pytest.fixture(scope="module")
def tokens(oauth_server: OAuthServer) -> dict[str, str]:
    """A fresh access token for each of probe and sink (one client per user, as M365 apps)."""
    found = {}
    for user in (PROBE, SINK):
        client_id, secret = f"mailstack-{user.split('@')[0]}-{uuid.uuid4().hex[:8]}", "s3cret"
        oauth_server.add_client(client_id, secret, user=user)
        found[user] = _fetch_token(oauth_server, client_id, secret)
    return found


def _imap(stack: MailStack) -> IMAPClient:
    return IMAPClient(
        stack.host, port=stack.imaps_port, ssl_context=stack.ssl_context(), timeout=20
    )


def _imap_token_login(stack: MailStack, mechanism: str, user: str, token: str) -> IMAPClient:
    """A client logged in with ``mechanism``; raises LoginError with Dovecot's reply."""
    client = _imap(stack)
    try:
        if mechanism == "XOAUTH2":
            client.oauth2_login(user, token)
        else:
            client.oauthbearer_login(user, token)
    except BaseException:
        client.shutdown()
        raise
    return client


def _initial_response(mechanism: str, user: str, token: str) -> bytes:
    """The SASL initial response: Google's XOAUTH2 format, or RFC 7628's OAUTHBEARER."""
    if mechanism == "XOAUTH2":
        text = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        text = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
    return text.encode()


# The client's answer to an error challenge: an empty line for XOAUTH2, a
# lone %x01 for OAUTHBEARER (RFC 7628 3.2.3).
_ABORT = {"XOAUTH2": b"", "OAUTHBEARER": b"\x01"}


def _imap_sasl(
    stack: MailStack, mechanism: str, user: str, token: str
) -> tuple[list[dict[str, Any]], str]:
    """AUTHENTICATE over IMAPS, answering error challenges as the protocol says.

    imapclient answers every challenge with the token again, so this uses
    imaplib's challenge callback to see them.  Returns (the decoded error
    challenges, ``"OK"`` or the text of the tagged NO).
    """
    challenges: list[dict[str, Any]] = []

    def answer(challenge: bytes) -> bytes:
        if not challenge:  # the server's empty "+": our initial response
            return _initial_response(mechanism, user, token)
        challenges.append(json.loads(challenge))
        return _ABORT[mechanism]

    with imaplib.IMAP4_SSL(
        stack.host, stack.imaps_port, ssl_context=stack.ssl_context(), timeout=20
    ) as imap:
        try:
            imap.authenticate(mechanism, answer)
        except imaplib.IMAP4.error as exc:
            return challenges, str(exc)
        return challenges, "OK"


async def _smtp_auth(
    stack: MailStack, mechanism: str, user: str, token: str, *, send_to: str | None = None
) -> tuple[int, str, dict[str, Any] | None, int | None]:
    """AUTH on the submission port after STARTTLS.

    Returns (code, text, decoded error challenge or None, code after the
    empty response or None).  With ``send_to``, a successful login also
    sends a message there.
    """
    async with aiosmtplib.SMTP(
        hostname=stack.host,
        port=stack.submission_port,
        start_tls=True,
        tls_context=stack.ssl_context(),
        timeout=20,
    ) as smtp:
        await smtp.ehlo()
        reply = await smtp.execute_command(
            b"AUTH", mechanism.encode(), base64.b64encode(_initial_response(mechanism, user, token))
        )
        challenge, final = None, None
        if reply.code == 334:
            challenge = json.loads(base64.b64decode(reply.message))
            final = (await smtp.execute_command(base64.b64encode(_ABORT[mechanism]))).code
        elif reply.code == 235 and send_to is not None:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = user, send_to, "sent with a token"
            msg.set_content("hello\n")
            await smtp.send_message(msg)
        return reply.code, reply.message, challenge, final


def test_oauth_is_offered_on_imap_and_submission(mailstack: MailStack) -> None:
    with _imap(mailstack) as client:
        caps = set(client.capabilities())
    assert {b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER", b"AUTH=PLAIN"} <= caps

    async def auth_methods() -> str:
        async with aiosmtplib.SMTP(
            hostname=mailstack.host,
            port=mailstack.submission_port,
            start_tls=True,
            tls_context=mailstack.ssl_context(),
            timeout=20,
        ) as smtp:
            await smtp.ehlo()
            return smtp.esmtp_extensions["auth"]

    assert set(asyncio.run(auth_methods()).split()) == {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_imap_token_login_succeeds_with_a_token_from_the_server(
    mailstack: MailStack, tokens: dict[str, str], mechanism: str
) -> None:
    client = _imap_token_login(mailstack, mechanism, SINK, tokens[SINK])
    with client:
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] >= 0
    assert f"user=<{SINK}>, method={mechanism}" in mailstack.dovecot_log()


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("case", ["unknown token", "another user's token", "a password"])
def test_imap_token_login_fails_with_a_bad_token(
    mailstack: MailStack, tokens: dict[str, str], mechanism: str, case: str
) -> None:
    token = {
        "unknown token": "at-" + secrets.token_urlsafe(32),
        "another user's token": tokens[PROBE],
        "a password": mailstack.users[SINK],
    }[case]
    with pytest.raises(LoginError, match=r"^\[AUTHENTICATIONFAILED\] Authentication failed"):
        _imap_token_login(mailstack, mechanism, SINK, token)


@pytest.mark.parametrize(
    ("mechanism", "status"), [("XOAUTH2", "401"), ("OAUTHBEARER", "invalid_token")]
)
def test_imap_bad_token_gets_an_error_challenge_then_no(
    mailstack: MailStack, mechanism: str, status: str
) -> None:
    challenges, result = _imap_sasl(mailstack, mechanism, SINK, "at-" + secrets.token_urlsafe(32))
    assert [c["status"] for c in challenges] == [status]
    assert result == "[AUTHENTICATIONFAILED] Authentication failed."


@pytest.mark.parametrize(
    ("mechanism", "status"), [("XOAUTH2", "401"), ("OAUTHBEARER", "invalid_token")]
)
def test_another_users_token_gets_an_error_challenge_on_dovecot_23_only(
    mailstack: MailStack, tokens: dict[str, str], mechanism: str, status: str
) -> None:
    """A live token for the wrong user: what a client sees differs between Dovecot 2.3 and 2.4.

    2.3 refuses it like an unknown token, with an error challenge; 2.4
    (Debian 13) refuses it without one, so a client has no status to report.
    """
    challenges, result = _imap_sasl(mailstack, mechanism, SINK, tokens[PROBE])
    code, text, challenge, final = asyncio.run(
        _smtp_auth(mailstack, mechanism, SINK, tokens[PROBE])
    )
    assert result == "[AUTHENTICATIONFAILED] Authentication failed."
    if mailstack.dovecot_version.startswith("2.3"):
        assert [c["status"] for c in challenges] == [status]
        assert (code, final) == (334, 535)
        assert challenge is not None
        assert challenge["status"] == status
    else:
        assert challenges == []
        assert (code, text, challenge) == (
            535, "5.7.8 Error: authentication failed: (reason unavailable)", None
        )  # fmt: skip


def test_a_token_is_not_a_password(mailstack: MailStack, tokens: dict[str, str]) -> None:
    with _imap(mailstack) as client, pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        client.login(SINK, tokens[SINK])
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        asyncio.run(_smtp_password_login(mailstack, PROBE, tokens[PROBE]))
    # and passwords still work beside OAuth
    with _imap(mailstack) as client:
        client.login(SINK, mailstack.users[SINK])
    asyncio.run(_smtp_password_login(mailstack, PROBE, mailstack.users[PROBE]))


async def _smtp_password_login(stack: MailStack, user: str, password: str) -> None:
    async with aiosmtplib.SMTP(
        hostname=stack.host,
        port=stack.submission_port,
        start_tls=True,
        tls_context=stack.ssl_context(),
        timeout=20,
    ) as smtp:
        await smtp.login(user, password)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_smtp_token_auth_succeeds_and_the_message_is_delivered(
    mailstack: MailStack, tokens: dict[str, str], mechanism: str
) -> None:
    mark = uuid.uuid4().hex
    code, text, challenge, _ = asyncio.run(
        _smtp_auth(mailstack, mechanism, PROBE, tokens[PROBE], send_to=f"sink+{mark}@example.test")
    )
    assert (code, text, challenge) == (235, "2.7.0 Authentication successful", None)
    # delivered to sink's INBOX (unknown detail folder -> INBOX), with SASL (ESMTPSA)
    deadline = time.monotonic() + 15
    while not (found := [m for m in mailstack.maildir_messages(SINK) if mark.encode() in m]):
        assert time.monotonic() < deadline, "the message sent after token AUTH never arrived"
        time.sleep(0.05)
    assert b"with ESMTPSA" in found[0]
    with _imap(mailstack) as client:
        client.login(SINK, mailstack.users[SINK])
        client.select_folder("INBOX")
        client.delete_messages(client.search(["TO", f"sink+{mark}@example.test"]))
        client.expunge()


@pytest.mark.parametrize(
    ("mechanism", "status"), [("XOAUTH2", "401"), ("OAUTHBEARER", "invalid_token")]
)
def test_smtp_token_auth_fails_with_a_decodable_error_challenge(
    mailstack: MailStack, mechanism: str, status: str
) -> None:
    code, _, challenge, final = asyncio.run(
        _smtp_auth(mailstack, mechanism, PROBE, "at-" + secrets.token_urlsafe(32))
    )
    assert code == 334
    assert challenge is not None
    assert challenge["status"] == status
    if mechanism == "XOAUTH2":
        assert challenge["schemes"] == "bearer"
    assert final == 535


# What a temporary failure (introspection refused or timed out) looks like.
# Dovecot 2.3 answers IMAP with NO [UNAVAILABLE] at once; 2.4.1 checks tokens
# in the mechanism itself and only says "temporary" in its error challenge
# (status 500 / internal_failure), then NO [AUTHENTICATIONFAILED].  Postfix
# has no temporary reply for it: SMTP gets 535 either way.
_TEMPORARY_STATUS = {"XOAUTH2": "500", "OAUTHBEARER": "internal_failure"}


def _assert_temporary_failure(stack: MailStack, mechanism: str, user: str, token: str) -> None:
    challenges, result = _imap_sasl(stack, mechanism, user, token)
    code, text, challenge, final = asyncio.run(_smtp_auth(stack, mechanism, user, token))
    if stack.dovecot_version.startswith("2.3"):
        assert challenges == []
        assert result.startswith("[UNAVAILABLE] Temporary authentication failure.")
        assert (code, text) == (535, "5.7.8 Error: authentication failed: (reason unavailable)")
    else:
        assert [c["status"] for c in challenges] == [_TEMPORARY_STATUS[mechanism]]
        assert result == "[AUTHENTICATIONFAILED] Authentication failed."
        assert (code, final) == (334, 535)
        assert challenge is not None
        assert challenge["status"] == _TEMPORARY_STATUS[mechanism]


def test_introspection_down_is_a_temporary_failure_until_it_is_back(
    mailstack: MailStack, oauth_server: OAuthServer, tokens: dict[str, str]
) -> None:
    oauth_server.stop()  # its ports refuse connections now
    try:
        for mechanism in MECHANISMS:
            _assert_temporary_failure(mailstack, mechanism, SINK, tokens[SINK])
        assert "Introspection failed: connect(" in mailstack.dovecot_log()
    finally:
        oauth_server.start()  # same ports, same tokens
    for mechanism in MECHANISMS:
        _imap_token_login(mailstack, mechanism, SINK, tokens[SINK]).logout()
        code, *_ = asyncio.run(_smtp_auth(mailstack, mechanism, PROBE, tokens[PROBE]))
        assert code == 235


def test_failed_token_logins_do_not_slow_down_the_next_login(
    mailstack: MailStack, tokens: dict[str, str]
) -> None:
    def timed(mechanism: str, token: str) -> float:
        start = time.monotonic()
        _imap_token_login(mailstack, mechanism, SINK, token).logout()
        return time.monotonic() - start

    for mechanism in MECHANISMS:
        for _ in range(2):
            with pytest.raises(LoginError):
                timed(mechanism, "at-" + secrets.token_urlsafe(16))
        assert timed(mechanism, tokens[SINK]) < 0.5
        code, *_ = asyncio.run(_smtp_auth(mailstack, mechanism, PROBE, "bad-" + uuid.uuid4().hex))
        assert code == 334
        start = time.monotonic()
        code, *_ = asyncio.run(_smtp_auth(mailstack, mechanism, PROBE, tokens[PROBE]))
        assert (code, time.monotonic() - start < 0.5) == (235, True)


def test_hanging_introspection_fails_the_login_after_oauth_timeout() -> None:
    with silent_listener() as port:
        stack = MailStack(oauth=f"http://127.0.0.1:{port}/introspect", oauth_timeout=1.0)
        with stack:
            start = time.monotonic()
            _assert_temporary_failure(stack, "OAUTHBEARER", SINK, "at-whatever")
            # each login (IMAP, SMTP) waited for the timeout (plus 2.3's 0.5 s
            # failure flush), no longer
            assert 1.9 < time.monotonic() - start < 5
            assert re.search(
                r"Introspection failed: .*(timed out|timeout expired)", stack.dovecot_log()
            )


def test_a_stack_without_oauth_offers_no_token_mechanisms() -> None:
    with MailStack() as stack:
        with _imap(stack) as client:
            caps = set(client.capabilities())
            assert b"AUTH=PLAIN" in caps
            assert not {b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER"} & caps
            client.login(SINK, stack.users[SINK])
        assert "introspection" not in stack.layout.dovecot_conf.read_text()


def test_only_a_loopback_http_introspection_url_is_accepted() -> None:
    for url in ("https://127.0.0.1:1/introspect", "http://192.0.2.1:80/introspect"):
        with pytest.raises(MailStackError, match=re.escape("must be http://127.0.0.1:PORT")):
            MailStack(oauth=url).start()
