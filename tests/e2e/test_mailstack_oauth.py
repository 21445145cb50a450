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
    return base64.b64encode(text.encode())


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
            b"AUTH", mechanism.encode(), _initial_response(mechanism, user, token)
        )
        challenge, final = None, None
        if reply.code == 334:
            challenge = json.loads(base64.b64decode(reply.message))
            # the client's answer to an error challenge: an empty line for
            # XOAUTH2, a lone %x01 for OAUTHBEARER (RFC 7628 3.2.3)
            empty = b"" if mechanism == "XOAUTH2" else base64.b64encode(b"\x01")
            final = (await smtp.execute_command(empty)).code
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


def test_introspection_down_is_a_temporary_failure_until_it_is_back(
    mailstack: MailStack, oauth_server: OAuthServer, tokens: dict[str, str]
) -> None:
    oauth_server.stop()  # its ports refuse connections now
    try:
        for mechanism in MECHANISMS:
            with pytest.raises(
                LoginError, match=r"^\[UNAVAILABLE\] Temporary authentication failure"
            ):
                _imap_token_login(mailstack, mechanism, SINK, tokens[SINK])
            # Postfix tells SMTP clients nothing of "temporary": 535 as for a
            # bad token.  Dovecot 2.4 at least says so in its error challenge.
            code, text, challenge, final = asyncio.run(
                _smtp_auth(mailstack, mechanism, PROBE, tokens[PROBE])
            )
            if mailstack.dovecot_version.startswith("2.3"):
                assert (code, text) == (
                    535,
                    "5.7.8 Error: authentication failed: (reason unavailable)",
                )
            else:
                assert (code, final) == (334, 535)
                assert challenge is not None
                expected = {"XOAUTH2": "500", "OAUTHBEARER": "internal_failure"}[mechanism]
                assert challenge["status"] == expected
    finally:
        oauth_server.start()  # same ports, same tokens
    _imap_token_login(mailstack, "XOAUTH2", SINK, tokens[SINK]).logout()
    code, *_ = asyncio.run(_smtp_auth(mailstack, "XOAUTH2", PROBE, tokens[PROBE]))
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
            with pytest.raises(LoginError, match=r"^\[UNAVAILABLE\]"):
                _imap_token_login(stack, "OAUTHBEARER", SINK, "at-whatever")
            assert 0.9 < time.monotonic() - start < 5


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
