"""Root test configuration: the session-wide real Postfix + Dovecot stack.

The ``mailstack`` fixture starts one private :class:`tests.support.mailstack.MailStack`
(real servers on free 127.0.0.1 ports, everything in a temp dir) the first
time a test asks for it, and stops it when the session ends.  A test session
that never requests it starts no servers.  A missing Postfix/Dovecot is an
error, never a skip: CI must fail loudly on a broken machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mailstack import MailStack
from tests.support.routes import BYSTANDER_SUBJECT, SINK, bystanders, probe_messages


@pytest.fixture(scope="session")
def mailstack() -> Iterator[MailStack]:
    """A started private mail stack, shared by the whole session."""
    stack = MailStack()
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


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
