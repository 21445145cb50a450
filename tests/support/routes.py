"""Routes through the real stack for end-to-end tests: servers, mailboxes, probes."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from smtp_probe.probe.message import PROBE_HEADER
from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.secret import Secret
from tests.support.mailstack import MailStack

SINK = "sink@example.test"
SENDER = "probe@example.test"


def smtp_server(stack: MailStack, kind: str = "submission", **changes: object) -> SmtpServer:
    """An SmtpServer for one of the stack's SMTP ports: ``mx``, ``submission`` or ``smtps``."""
    trusted = TlsSettings(ca_file=stack.ca_file)
    password = Secret(stack.users[SENDER])
    servers = {
        "mx": SmtpServer(stack.host, stack.smtp_port, TlsMode.STARTTLS, trusted, timeout=10),
        "submission": SmtpServer(
            stack.host,
            stack.submission_port,
            TlsMode.STARTTLS,
            trusted,
            SENDER,
            password,
            timeout=10,
        ),
        "smtps": SmtpServer(
            stack.host, stack.smtps_port, TlsMode.TLS, trusted, SENDER, password, timeout=10
        ),
    }
    return replace(servers[kind], **changes)  # type: ignore[arg-type]


def mailbox(stack: MailStack, kind: str = "imaps", **changes: object) -> Mailbox:
    """A Mailbox for sink over ``imaps`` (implicit TLS) or ``imap`` (STARTTLS)."""
    trusted = TlsSettings(ca_file=stack.ca_file)
    port, tls = (
        (stack.imaps_port, TlsMode.TLS) if kind == "imaps" else (stack.imap_port, TlsMode.STARTTLS)
    )
    base = Mailbox(
        stack.host,
        port,
        SINK,
        password=Secret(stack.users[SINK]),
        tls=tls,
        tls_settings=trusted,
        timeout=10,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def probe(
    stack: MailStack,
    *,
    smtp: SmtpServer | None = None,
    box: Mailbox | None = None,
    to: str = SINK,
    timeout: float = 15.0,
    name: str = "e2e",
) -> ProbeSpec:
    """A probe from probe@ to ``to`` through ``smtp`` (default submission), watched in ``box``."""
    return ProbeSpec(
        name=name,
        smtp=smtp or smtp_server(stack),
        mail_from=SENDER,
        rcpt_to=to,
        mailbox=box if box is not None else mailbox(stack),
        timeout=timeout,
    )


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


def plant_bystanders(stack: MailStack) -> int:
    """Plant one ordinary (non-probe) message in sink's INBOX and one in Junk; their number."""
    for folder in ("INBOX", "Junk"):
        raw = (
            f"From: someone@example.test\r\nTo: {SINK}\r\nSubject: {BYSTANDER_SUBJECT}\r\n"
            f"Message-ID: <bystander-{folder}@example.test>\r\n\r\nhello\r\n"
        ).encode()
        stack.append(SINK, folder, raw)
    return 2


@contextmanager
def left_clean(stack: MailStack, planted: int) -> Iterator[MailStack]:
    """Around one test: afterwards no probe mail is left and the ``planted`` bystanders are intact.

    Raises:
        AssertionError: a bystander was missing before, or either check fails after.
    """
    assert len(bystanders(stack)) == planted
    yield stack
    leftovers = probe_messages(stack)
    assert leftovers == [], "a probe message was left in the mailbox"
    assert len(bystanders(stack)) == planted, "a non-probe message was touched"
