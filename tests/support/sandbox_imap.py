"""A look into the demo sandbox's mailbox from the test's side, over real IMAP (imapclient).

Protocol tests drive the probe's watcher against the sandbox's pymap and
need to do what another mail client (or the mail system) would: put a
message into a folder, see what a folder holds afterwards, remove a
folder. These calls block: run them with ``asyncio.to_thread`` while the
sandbox serves them from the test's event loop. :func:`sandbox` starts one
for a scenario, and :func:`run` runs a scenario under a deadline.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from typing import Any, TypeVar

from imapclient import IMAPClient

from smtp_probe.probe.spec import Mailbox, TlsMode
from smtp_probe.sandbox import DEMO_PASSWORD, DEMO_USER, MailSandbox, SandboxAddress
from smtp_probe.secret import Secret

T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 20) -> T:
    """Run one async scenario under a deadline, so a hung server fails the test quickly."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=timeout)

    return asyncio.run(bounded())


@asynccontextmanager
async def sandbox(**options: Any) -> AsyncIterator[SandboxAddress]:
    """A started :class:`MailSandbox` (``options`` as its own), stopped afterwards."""
    server = MailSandbox(**options)
    address = await server.start()
    try:
        yield address
    finally:
        await server.stop()


def sandbox_mailbox(address: SandboxAddress, folder: str = "INBOX", **changes: object) -> Mailbox:
    """The probe's view of the sandbox user's ``folder`` (plain IMAP on loopback)."""
    mailbox = Mailbox(
        host=address.host,
        port=address.imap_port,
        username=DEMO_USER,
        password=Secret(DEMO_PASSWORD),
        tls=TlsMode.NONE,
        folder=folder,
        timeout=5.0,
    )
    return replace(mailbox, **changes)  # type: ignore[arg-type]


@contextmanager
def imap_login(address: SandboxAddress) -> Iterator[IMAPClient]:
    """A logged-in imapclient connection to the sandbox, logged out afterwards."""
    client = IMAPClient(address.host, port=address.imap_port, ssl=False, timeout=5)
    try:
        client.login(DEMO_USER, DEMO_PASSWORD)
        yield client
    finally:
        client.logout()


def append(address: SandboxAddress, folder: str, message: EmailMessage | bytes) -> None:
    """``APPEND`` ``message`` to ``folder``, as a delivery agent (or another client) would."""
    raw = message if isinstance(message, bytes) else message.as_bytes()
    with imap_login(address) as client:
        client.append(folder, raw, msg_time=datetime.now(UTC))


def messages_in(address: SandboxAddress, folder: str) -> list[Message]:
    """Every message in ``folder``, parsed, in UID order (read with ``BODY.PEEK``)."""
    with imap_login(address) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return [
        email.message_from_bytes(fetched[uid][b"BODY[]"], policy=email.policy.default)
        for uid in sorted(fetched)
    ]


def delete_folder(address: SandboxAddress, folder: str) -> None:
    """Remove ``folder`` from the sandbox user's mailbox."""
    with imap_login(address) as client:
        client.delete_folder(folder)
