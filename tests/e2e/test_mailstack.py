"""Smoke tests of the test harness itself: does the private mail stack keep its promises.

Every other end-to-end test trusts :class:`mailstack.MailStack`; these prove,
against the real servers, that each port speaks the promised TLS/AUTH mode,
that mail is delivered where the harness says (INBOX, Junk by address), that
the fault-injection recipients misbehave as documented, and that failed
logins do not slow later ones down.  Each test removes what it created.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.support.mailstack import (
    BOUNCE,
    DEFER_450,
    DISCARD,
    HOLD,
    JUNK_ADDRESS,
    OUTAGE,
    REJECT_550,
    MailStack,
)

pytestmark = pytest.mark.e2e

PROBE = "probe@example.test"
SINK = "sink@example.test"
MARK_HEADER = "X-Mailstack-Mark"
WAIT = 15.0


def _message(to: str, token: str, sender: str = PROBE) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"mailstack smoke {token}"
    msg[MARK_HEADER] = token
    msg["Message-ID"] = f"<{token}@example.test>"
    msg.set_content(f"token {token}\n")
    return msg


def _send(stack: MailStack, kind: str, msg: EmailMessage, **extra: Any) -> str:
    """Send over ``kind`` (smtp/submission/smtps); return Postfix's 250 text."""
    ctx = stack.ssl_context()
    options: dict[str, Any] = {
        "hostname": stack.host,
        "tls_context": ctx,
        "timeout": 20,
    }
    if kind == "smtp":
        options |= {"port": stack.smtp_port, "start_tls": True}
    elif kind == "submission":
        options |= {"port": stack.submission_port, "start_tls": True}
        options |= {"username": PROBE, "password": stack.users[PROBE]}
    elif kind == "smtps":
        options |= {"port": stack.smtps_port, "use_tls": True}
        options |= {"username": PROBE, "password": stack.users[PROBE]}
    else:  # pragma: no cover - test bug
        raise ValueError(kind)
    options |= extra
    _, text = asyncio.run(aiosmtplib.send(msg, **options))
    return text


def _imap(stack: MailStack, user: str) -> IMAPClient:
    client = IMAPClient(
        stack.host, port=stack.imaps_port, ssl=True, ssl_context=stack.ssl_context(), timeout=20
    )
    client.login(user, stack.users[user])
    return client


def _wait_for(
    stack: MailStack, user: str, folder: str, criteria: list[str], timeout: float = WAIT
) -> list[int]:
    """Poll (NOOP + SEARCH) over IMAPS until ``criteria`` match in ``folder``."""
    with _imap(stack, user) as client:
        client.select_folder(folder)
        deadline = time.monotonic() + timeout
        while True:
            client.noop()
            uids: list[int] = client.search(criteria)
            if uids or time.monotonic() > deadline:
                return uids
            time.sleep(0.02)


def _delete(stack: MailStack, user: str, folder: str, uids: list[int]) -> None:
    with _imap(stack, user) as client:
        client.select_folder(folder)
        client.delete_messages(uids)
        client.expunge()


def _with_token(stack: MailStack, user: str, folder: str, token: str) -> list[bytes]:
    return [raw for raw in stack.maildir_messages(user, folder) if token.encode() in raw]


def _eventually(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _queued_for(stack: MailStack, address: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in stack.queue()
        if any(rcpt.get("address") == address for rcpt in entry.get("recipients", []))
    ]


def test_stack_started_fast_on_private_loopback_ports(mailstack: MailStack) -> None:
    ports = {
        mailstack.smtp_port,
        mailstack.submission_port,
        mailstack.smtps_port,
        mailstack.imap_port,
        mailstack.imaps_port,
    }
    assert len(ports) == 5
    assert not ports & {25, 143, 465, 587, 993}
    assert mailstack.host == "127.0.0.1"
    assert mailstack.start_seconds < 10, f"start took {mailstack.start_seconds:.1f}s"
    for port in ports:
        with socket.create_connection((mailstack.host, port), timeout=5):
            pass
    assert "daemon started" in mailstack.postfix_log()
    assert "starting up" in mailstack.dovecot_log()


@pytest.mark.parametrize("kind", ["smtp", "submission", "smtps"])
def test_each_smtp_port_delivers_to_inbox(mailstack: MailStack, kind: str) -> None:
    token = uuid.uuid4().hex
    reply = _send(mailstack, kind, _message(SINK, token))
    assert "queued as" in reply

    uids = _wait_for(mailstack, SINK, "INBOX", ["HEADER", MARK_HEADER, token])
    assert len(uids) == 1, f"{kind}: message not found in INBOX over IMAPS"
    [raw] = _with_token(mailstack, SINK, "INBOX", token)
    received = email.message_from_bytes(raw, policy=email.policy.default).get_all("Received")
    postfix_hop = [str(r) for r in received or [] if "(Postfix)" in str(r)]
    assert len(postfix_hop) == 1
    # ESMTPS = TLS was used; ESMTPSA = TLS plus SASL authentication
    expected = "ESMTPS" if kind == "smtp" else "ESMTPSA"
    assert f"with {expected} id" in postfix_hop[0]
    assert _with_token(mailstack, SINK, "Junk", token) == []

    _delete(mailstack, SINK, "INBOX", uids)
    assert _with_token(mailstack, SINK, "INBOX", token) == []


def test_junk_address_lands_in_the_special_use_junk_folder(mailstack: MailStack) -> None:
    token = uuid.uuid4().hex
    _send(mailstack, "smtp", _message(JUNK_ADDRESS, token))

    uids = _wait_for(mailstack, SINK, "Junk", ["HEADER", MARK_HEADER, token])
    assert len(uids) == 1
    assert len(_with_token(mailstack, SINK, "Junk", token)) == 1
    assert _with_token(mailstack, SINK, "INBOX", token) == []
    with _imap(mailstack, SINK) as client:
        junk = [name for flags, _, name in client.list_folders() if b"\\Junk" in flags]
    assert junk == ["Junk"]

    _delete(mailstack, SINK, "Junk", uids)
    assert _with_token(mailstack, SINK, "Junk", token) == []


def test_imap_capabilities_and_starttls(mailstack: MailStack) -> None:
    with _imap(mailstack, PROBE) as client:
        caps = set(client.capabilities())
        assert {b"IDLE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE"} <= caps
        names = {name for _, _, name in client.list_folders()}
        assert {"INBOX", "Junk"} <= names
    client = IMAPClient(mailstack.host, port=mailstack.imap_port, ssl=False, timeout=20)
    try:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(mailstack.ssl_context())
        client.login(PROBE, mailstack.users[PROBE])
        assert b"IDLE" in client.capabilities()
    finally:
        client.logout()


def test_smtp_ports_speak_the_promised_tls_and_auth(mailstack: MailStack) -> None:
    async def ehlo_features(port: int, use_tls: bool) -> tuple[set[str], set[str]]:
        async with aiosmtplib.SMTP(
            hostname=mailstack.host,
            port=port,
            use_tls=use_tls,
            start_tls=False,
            tls_context=mailstack.ssl_context(),
            timeout=20,
        ) as smtp:
            await smtp.ehlo()
            before = set(smtp.esmtp_extensions)
            if not use_tls:
                await smtp.starttls(tls_context=mailstack.ssl_context())
                await smtp.ehlo()
            return before, set(smtp.esmtp_extensions)

    before, after = asyncio.run(ehlo_features(mailstack.smtp_port, use_tls=False))
    assert "starttls" in before
    assert "auth" not in after  # MX port: no AUTH at all
    before, after = asyncio.run(ehlo_features(mailstack.submission_port, use_tls=False))
    assert "starttls" in before
    assert "auth" not in before  # AUTH only after TLS
    assert "auth" in after
    _, after = asyncio.run(ehlo_features(mailstack.smtps_port, use_tls=True))
    assert "auth" in after


def test_submission_refuses_unauthenticated_mail(mailstack: MailStack) -> None:
    token = uuid.uuid4().hex
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        _send(mailstack, "submission", _message(SINK, token), username=None, password=None)
    [error] = info.value.recipients
    assert error.code == 554


def test_mx_port_never_relays_elsewhere(mailstack: MailStack) -> None:
    # .invalid is reserved (RFC 2606): this never leaves the machine anyway.
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        _send(mailstack, "smtp", _message("someone@mailstack.invalid", uuid.uuid4().hex))
    [error] = info.value.recipients
    assert error.code == 554
    assert "Relay access denied" in error.message


@pytest.mark.parametrize(
    ("address", "code", "enhanced"),
    [(REJECT_550, 550, "5.1.1"), (DEFER_450, 450, "4.2.0")],
)
def test_fault_recipients_are_refused_at_rcpt(
    mailstack: MailStack, address: str, code: int, enhanced: str
) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        _send(mailstack, "submission", _message(address, uuid.uuid4().hex))
    [error] = info.value.recipients
    assert (error.code, error.recipient) == (code, address)
    assert error.message.startswith(enhanced)
    assert _queued_for(mailstack, address) == []


def test_hold_recipient_is_accepted_then_parked(mailstack: MailStack) -> None:
    token = uuid.uuid4().hex
    reply = _send(mailstack, "smtp", _message(HOLD, token))
    queue_id = reply.rsplit(" ", 1)[-1]

    entries = _queued_for(mailstack, HOLD)
    assert [(e["queue_id"], e["queue_name"]) for e in entries] == [(queue_id, "hold")]
    mailstack.flush()  # a flush does not release held mail
    time.sleep(0.5)
    assert [e["queue_name"] for e in _queued_for(mailstack, HOLD)] == ["hold"]

    mailstack.delete_queued(queue_id)
    assert _queued_for(mailstack, HOLD) == []


def test_bounce_recipient_sends_a_dsn_to_the_sender(mailstack: MailStack) -> None:
    token = uuid.uuid4().hex
    _send(mailstack, "smtp", _message(BOUNCE, token))

    uids = _wait_for(mailstack, PROBE, "INBOX", ["TEXT", token])
    assert len(uids) == 1, "no DSN for the bounced message in the sender's INBOX"
    [raw] = _with_token(mailstack, PROBE, "INBOX", token)
    dsn = email.message_from_bytes(raw, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    _delete(mailstack, PROBE, "INBOX", uids)


def test_outage_recipient_stays_deferred(mailstack: MailStack) -> None:
    reply = _send(mailstack, "smtp", _message(OUTAGE, uuid.uuid4().hex))
    queue_id = reply.rsplit(" ", 1)[-1]
    try:
        assert _eventually(
            lambda: [e["queue_name"] for e in _queued_for(mailstack, OUTAGE)] == ["deferred"]
        )
        [entry] = _queued_for(mailstack, OUTAGE)
        assert "Connection refused" in entry["recipients"][0]["delay_reason"]
    finally:
        mailstack.delete_queued(queue_id)
    assert _queued_for(mailstack, OUTAGE) == []


def test_discard_recipient_is_accepted_and_silently_dropped(mailstack: MailStack) -> None:
    reply = _send(mailstack, "smtp", _message(DISCARD, uuid.uuid4().hex))
    queue_id = reply.rsplit(" ", 1)[-1]
    assert _eventually(lambda: f"{queue_id}: to=<{DISCARD}>" in mailstack.postfix_log())
    assert "status=sent (mailstack simulated silent loss)" in mailstack.postfix_log()
    assert _queued_for(mailstack, DISCARD) == []


def test_failed_logins_do_not_slow_down_the_next_one(mailstack: MailStack) -> None:
    async def smtp_auth(password: str) -> float:
        start = time.monotonic()
        async with aiosmtplib.SMTP(
            hostname=mailstack.host,
            port=mailstack.submission_port,
            start_tls=True,
            tls_context=mailstack.ssl_context(),
            timeout=20,
        ) as smtp:
            await smtp.auth_plain(PROBE, password)
        return time.monotonic() - start

    def imap_login(user: str, password: str) -> float:
        start = time.monotonic()
        with IMAPClient(
            mailstack.host,
            port=mailstack.imaps_port,
            ssl_context=mailstack.ssl_context(),
            timeout=20,
        ) as client:
            client.login(user, password)
        return time.monotonic() - start

    for attempt in range(2):
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            asyncio.run(smtp_auth(f"wrong-{attempt}-{uuid.uuid4().hex}"))
        assert asyncio.run(smtp_auth(mailstack.users[PROBE])) < 0.5
        for user in (SINK, "nobody-such@example.test"):
            with pytest.raises(LoginError):
                imap_login(user, f"wrong-{attempt}-{uuid.uuid4().hex}")
            assert imap_login(SINK, mailstack.users[SINK]) < 0.5


def test_append_plants_a_message_visible_in_the_maildir(mailstack: MailStack) -> None:
    token = uuid.uuid4().hex
    raw = (
        f"From: someone@example.test\r\nTo: {SINK}\r\nSubject: planted {token}\r\n"
        f"{MARK_HEADER}: {token}\r\n\r\nbody\r\n"
    ).encode()
    uid = mailstack.append(SINK, "Junk", raw)
    assert isinstance(uid, int)
    # Dovecot stores messages with bare LF line endings on disk
    assert _with_token(mailstack, SINK, "Junk", token) == [raw.replace(b"\r\n", b"\n")]
    _delete(mailstack, SINK, "Junk", [uid])
    assert _with_token(mailstack, SINK, "Junk", token) == []


def test_dovecot_outage_defers_then_recovers(mailstack: MailStack) -> None:
    token, after = uuid.uuid4().hex, uuid.uuid4().hex
    mailstack.stop_dovecot()
    try:
        with pytest.raises(ConnectionRefusedError):
            IMAPClient(mailstack.host, port=mailstack.imaps_port, timeout=5)
        with pytest.raises(aiosmtplib.SMTPException):  # no SASL backend: smtpd exits
            _send(mailstack, "submission", _message(SINK, uuid.uuid4().hex))
        reply = _send(mailstack, "smtp", _message(SINK, token))  # MX port needs no auth
        queue_id = reply.rsplit(" ", 1)[-1]
        assert _eventually(
            lambda: (
                [e["queue_name"] for e in mailstack.queue() if e["queue_id"] == queue_id]
                == ["deferred"]
            )
        )
    finally:
        mailstack.start_dovecot()
    _send(mailstack, "submission", _message(SINK, after))  # usable again at once
    mailstack.flush()
    for mark in (token, after):
        uids = _wait_for(mailstack, SINK, "INBOX", ["HEADER", MARK_HEADER, mark])
        assert len(uids) == 1
        _delete(mailstack, SINK, "INBOX", uids)
    assert [e for e in mailstack.queue() if e["queue_id"] == queue_id] == []
