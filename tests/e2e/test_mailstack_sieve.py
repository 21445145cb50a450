r"""The mail stack's reflector, forwarder and Trash folder, against the real Dovecot (Sieve) + Postfix.

Reflector mode and the Gmail-style trash cleanup are tested end to end
against these; here we prove they behave as the harness promises: the
``vacation`` reflector answers a probe message (built by smtp_probe's own
message builder) with the token kept in the subject, and - as RFC 3834 asks of
every automatic responder - ignores mail marked ``Auto-Submitted``; the ``redirect`` forwarder passes a probe message on to
sink unchanged; sink has a ``\Trash`` SPECIAL-USE folder.
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import time
from email.message import EmailMessage, Message

import pytest
from imapclient import IMAPClient

from smtp_probe.probe.message import PROBE_HEADER, TokenSigner, build_message
from tests.support.mailstack import FORWARDER, REFLECTOR, TRASH_FOLDER, MailStack

pytestmark = pytest.mark.e2e

SINK = "sink@example.test"
WAIT = 15.0


def _probe_message(stack: MailStack, to: str) -> tuple[EmailMessage, str]:
    """A probe message from sink to ``to``, exactly as smtp_probe builds it, and its token."""
    token = TokenSigner().new("mailstack-sieve")
    message = build_message(token=token, probe="mailstack-sieve", mail_from=SINK, rcpt_to=to)
    return message, str(token)


def _send_mx(stack: MailStack, message: EmailMessage) -> None:
    """Send over the MX port (no AUTH needed); the envelope sender is the From: address."""
    with smtplib.SMTP(stack.host, stack.smtp_port, timeout=20) as smtp:
        smtp.starttls(context=stack.ssl_context())
        smtp.send_message(message)


def _parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def _unfolded(value: str) -> str:
    """A header value with folding and runs of blanks collapsed to single spaces."""
    return re.sub(r"\s+", " ", value).strip()


def _wait_inbox(
    stack: MailStack, needle: str, count: int = 1, timeout: float = WAIT
) -> list[bytes]:
    """The INBOX messages of sink containing ``needle``, once there are ``count`` (or time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [raw for raw in stack.maildir_messages(SINK) if needle.encode() in raw]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _delete_inbox(stack: MailStack, needle: str) -> None:
    with IMAPClient(
        stack.host, port=stack.imaps_port, ssl_context=stack.ssl_context(), timeout=20
    ) as client:
        client.login(SINK, stack.users[SINK])
        client.select_folder("INBOX")
        uids = client.search(["TEXT", needle])
        client.delete_messages(uids)
        client.expunge()
    assert [raw for raw in stack.maildir_messages(SINK) if needle.encode() in raw] == []


def _wait_log(stack: MailStack, pattern: str, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, stack.dovecot_log()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_reflector_answers_a_probe_message_with_the_token_in_the_subject(
    mailstack: MailStack,
) -> None:
    message, token = _probe_message(mailstack, REFLECTOR)
    # What reflector mode must send: no RFC 3834 "do not answer me" markers.
    del message["Auto-Submitted"]
    del message["X-Auto-Response-Suppress"]
    _send_mx(mailstack, message)

    [raw] = _wait_inbox(mailstack, token)
    reply = _parsed(raw)
    assert str(reply["From"]) == REFLECTOR
    assert str(reply["To"]) == SINK
    assert _unfolded(str(reply["Subject"])) == f"Auto: {_unfolded(str(message['Subject']))}"
    assert str(reply["In-Reply-To"]) == str(message["Message-ID"])
    assert str(reply["Auto-Submitted"]).startswith("auto-replied")
    # a reply drops custom headers: the subject is all that carries the token back
    assert reply[PROBE_HEADER] is None
    assert "<>" in str(reply["Return-Path"])  # null sender: nobody answers the answer

    # every message gets its reply, not just the first from a sender
    _send_mx(mailstack, message)
    assert len(_wait_inbox(mailstack, token, count=2)) == 2
    _delete_inbox(mailstack, token)


def test_reflector_ignores_auto_submitted_mail_as_any_responder_does(
    mailstack: MailStack,
) -> None:
    message, token = _probe_message(mailstack, REFLECTOR)
    assert message["Auto-Submitted"] == "auto-generated"  # what a normal probe sends
    _send_mx(mailstack, message)

    message_id = re.escape(str(message["Message-ID"]))
    assert _wait_log(
        mailstack, rf"msgid={message_id}: vacation action: discarding vacation response"
    )
    assert _wait_log(mailstack, rf"msgid={message_id}: stored mail into mailbox 'INBOX'")
    assert _wait_inbox(mailstack, token, timeout=1.0) == []


def test_forwarder_passes_a_probe_message_on_to_sink_unchanged(mailstack: MailStack) -> None:
    message, token = _probe_message(mailstack, FORWARDER)
    _send_mx(mailstack, message)

    [raw] = _wait_inbox(mailstack, token)
    forwarded = _parsed(raw)
    assert forwarded[PROBE_HEADER] == token
    assert forwarded["Subject"] == message["Subject"]
    assert forwarded["To"] == FORWARDER
    assert forwarded["X-Sieve-Redirected-From"] == FORWARDER
    assert forwarded["Return-Path"] == f"<{SINK}>"  # the original envelope sender
    _delete_inbox(mailstack, token)


def test_sink_has_a_special_use_trash_folder(mailstack: MailStack) -> None:
    with IMAPClient(
        mailstack.host, port=mailstack.imaps_port, ssl_context=mailstack.ssl_context(), timeout=20
    ) as client:
        client.login(SINK, mailstack.users[SINK])
        trash = [name for flags, _, name in client.list_folders() if b"\\Trash" in flags]
        assert trash == [TRASH_FOLDER]
        assert client.find_special_folder(b"\\Trash") == TRASH_FOLDER

        uid = mailstack.append(SINK, "INBOX", b"Subject: to be trashed\r\n\r\nbye\r\n")
        assert uid is not None
        client.select_folder("INBOX")
        client.move([uid], TRASH_FOLDER)
        client.select_folder(TRASH_FOLDER)
        [trashed] = client.search(["SUBJECT", "to be trashed"])
        client.delete_messages([trashed])
        client.expunge()
    assert mailstack.maildir_messages(SINK, TRASH_FOLDER) == []
