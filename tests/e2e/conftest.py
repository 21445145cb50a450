"""Fixtures for end-to-end runs against the real Postfix + Dovecot stack."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator

import pytest

from mailstack import MailStack
from routes import SINK
from smtp_probe.probe.message import PROBE_HEADER

BYSTANDER_SUBJECT = "a user's own mail: the probe must never touch this"


def probe_messages(stack: MailStack, user: str = SINK) -> list[bytes]:
    """Every message carrying the probe header in ``user``'s INBOX and Junk."""
    found = []
    for folder in ("INBOX", "Junk"):
        for raw in stack.maildir_messages(user, folder):
            if email.message_from_bytes(raw, policy=email.policy.default)[PROBE_HEADER]:
                found.append(raw)
    return found


def bystanders(stack: MailStack) -> list[bytes]:
    """The planted non-probe messages, wherever they are."""
    return [
        raw
        for folder in ("INBOX", "Junk")
        for raw in stack.maildir_messages(SINK, folder)
        if BYSTANDER_SUBJECT.encode() in raw
    ]


@pytest.fixture(scope="session")
def planted(mailstack: MailStack) -> int:
    """Plant one ordinary message in sink's INBOX and one in Junk, once."""
    for folder in ("INBOX", "Junk"):
        raw = (
            f"From: someone@example.test\r\nTo: {SINK}\r\nSubject: {BYSTANDER_SUBJECT}\r\n"
            f"Message-ID: <bystander-{folder}@example.test>\r\n\r\nhello\r\n"
        ).encode()
        mailstack.append(SINK, folder, raw)
    return 2


@pytest.fixture
def stack(mailstack: MailStack, planted: int) -> Iterator[MailStack]:
    """The stack, checked after each test: no probe mail left, bystanders untouched."""
    assert len(bystanders(mailstack)) == planted
    yield mailstack
    leftovers = probe_messages(mailstack)
    assert leftovers == [], "a probe message was left in the mailbox"
    assert len(bystanders(mailstack)) == planted, "a non-probe message was touched"
