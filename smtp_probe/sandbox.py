r"""The embedded loopback mail sandbox behind ``smtp-probe demo``: real SMTP in, real IMAP out.

A newcomer should see delivered probe runs within seconds, without a mail
server of their own.  :class:`MailSandbox` starts two real servers in the
running event loop, on 127.0.0.1 only:

* **SMTP** is aiosmtpd.  It accepts mail for one mailbox,
  ``demo@sandbox.test``, and refuses every other recipient with ``550``, so
  it can never relay anywhere.  No AUTH, no TLS: nothing leaves loopback.
* **IMAP** is pymap over its in-memory ``dict`` backend.  ``LOGIN`` as
  ``demo@sandbox.test`` / ``demo`` sees what SMTP accepted: every message is
  appended to ``INBOX`` (or to ``Junk`` when sent to ``demo+junk@sandbox.test``,
  so the demo can show a junk placement too), with a ``Received`` header and
  the time of delivery as ``INTERNALDATE``.

pymap advertises ``IDLE``, ``UIDPLUS`` and ``MOVE``; the sandbox adds the
RFC 6154 ``\Junk`` and ``\Trash`` attributes to its ``Junk`` and ``Trash``
folders in ``LIST`` (without claiming the ``SPECIAL-USE`` capability, whose
``LIST ... RETURN`` syntax pymap does not parse), which is how real servers
such as Dovecot mark them.

For protocol tests the sandbox can stand for other servers' IMAP
capabilities: ``imap_extensions`` adds capability names to the list a
client sees after login (``X-GM-EXT-1``: Gmail; pymap does not implement
Gmail's commands, so this only serves a client's detection of the server),
and ``imap_withheld`` takes some away (``MOVE``, ``UIDPLUS``: an older
server; pymap still answers those commands, a client that reads the list
does not send them).

``delivery_delay`` holds each accepted message back that many seconds before
it becomes visible over IMAP, as a real queue would.

A pymap quirk for IMAP clients: a ``FETCH`` of ``BODY.PEEK[HEADER.FIELDS (B A)]``
is answered under the key ``BODY[HEADER.FIELDS (A B)]`` (field names sorted),
where Dovecot echoes the order asked for; look the reply up by its prefix.
Both servers log every SMTP/IMAP line at debug or info level (loggers
``mail.log`` and ``pymap``); the caller's logging setup decides what shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import ipaddress
import math
import re
import secrets
import uuid
import weakref
from argparse import Namespace
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeAlias

from aiosmtpd.smtp import SMTP, Envelope, Session
from proxyprotocol.noop import ProxyProtocolNoop
from proxyprotocol.result import ProxyResultLocal
from proxyprotocol.sock import SocketInfo
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import Login
from pymap.backend.dict.filter import FilterSet
from pymap.backend.dict.mailbox import MailboxSet
from pymap.concurrent import Subsystem
from pymap.imap import IMAPServer
from pymap.listtree import ListEntry, ListTree
from pymap.parsing.message import AppendMessage
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import Cleartext

__all__ = [
    "DEMO_PASSWORD",
    "DEMO_USER",
    "JUNK_FOLDER",
    "JUNK_RECIPIENT",
    "SANDBOX_DOMAIN",
    "TRASH_FOLDER",
    "MailSandbox",
    "SandboxAddress",
    "SandboxError",
]

SANDBOX_DOMAIN: Final = "sandbox.test"
"""The only domain the sandbox accepts mail for (``.test`` is reserved: RFC 2606)."""
DEMO_USER: Final = f"demo@{SANDBOX_DOMAIN}"
"""The IMAP login and the recipient address."""
DEMO_PASSWORD: Final = "demo"  # noqa: S105 - a published demo password on a loopback-only server
"""The fixed IMAP password; everything is on loopback, so it is no secret."""
JUNK_FOLDER: Final = "Junk"
r"""The folder marked ``\Junk`` in ``LIST``."""
JUNK_RECIPIENT: Final = f"demo+junk@{SANDBOX_DOMAIN}"
"""Mail to this address is delivered into :data:`JUNK_FOLDER` instead of ``INBOX``."""
TRASH_FOLDER: Final = "Trash"
r"""The folder marked ``\Trash`` in ``LIST``."""
_SPECIAL_USE: Final = {JUNK_FOLDER: b"Junk", TRASH_FOLDER: b"Trash"}
"""RFC 6154 attributes by folder (pymap writes the backslash)."""
_CAPABILITY: Final = re.compile(r"[A-Z0-9][A-Z0-9=+.-]*")

_IDENT: Final = "smtp-probe sandbox"
_ServerFactory: TypeAlias = Callable[[], Awaitable[asyncio.Server]]
_STOP_TIMEOUT: Final = 5.0


class SandboxError(Exception):
    """The sandbox cannot be set up or started; the message says why, for a person."""


@dataclass(frozen=True)
class SandboxAddress:
    """Where a started sandbox listens and how to log in; all a probe config needs."""

    host: str
    smtp_port: int
    imap_port: int
    user: str
    password: str


class MailSandbox:
    """A loopback SMTP server delivering into an in-memory IMAP mailbox.

    ``smtp_port`` and ``imap_port`` of ``0`` let the kernel pick free ports;
    :meth:`start` returns the ones in use.  ``delivery_delay`` (seconds) is
    the simulated queue time between the ``250`` that accepts a message and
    the moment it shows up over IMAP.

    ``imap_extensions`` and ``imap_withheld`` change the capabilities IMAP
    lists after login (see the module docstring).

    Raises:
        SandboxError: ``host`` is not a loopback address, a port or the
            delay is out of range, or a capability name is not one.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        smtp_port: int = 0,
        imap_port: int = 0,
        delivery_delay: float = 0.0,
        imap_extensions: Iterable[str] = (),
        imap_withheld: Iterable[str] = (),
    ) -> None:
        self._host = _loopback_host(host)
        for name, port in (("smtp_port", smtp_port), ("imap_port", imap_port)):
            if not 0 <= port <= 65535:
                raise SandboxError(f"{name} {port} is not a TCP port (0-65535; 0 picks a free one)")
        if smtp_port and smtp_port == imap_port:
            raise SandboxError(f"SMTP and IMAP cannot share port {smtp_port}")
        if not (math.isfinite(delivery_delay) and delivery_delay >= 0):
            raise SandboxError(
                f"delivery_delay must be a finite number of seconds >= 0, not {delivery_delay}"
            )
        self._capabilities = _Capabilities(
            _capability_names("imap_extensions", imap_extensions),
            frozenset(_capability_names("imap_withheld", imap_withheld)),
        )
        self._smtp_port = smtp_port
        self._imap_port = imap_port
        self._delay = delivery_delay
        self._delivered = 0
        self._address: SandboxAddress | None = None
        self._servers: list[asyncio.Server] = []
        self._mailboxes: _SandboxMailboxSet | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._imap_connections: set[asyncio.Task[None]] = set()
        self._smtp_connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def delivered(self) -> int:
        """Messages accepted over SMTP so far (each counted once, at its ``250``)."""
        return self._delivered

    async def start(self) -> SandboxAddress:
        """Start both servers in the running loop and return where they listen.

        Raises:
            SandboxError: already running, or a port cannot be bound (for
                example ``port 10025 on 127.0.0.1 is in use``).
        """
        if self._address is not None:
            raise SandboxError(
                f"the sandbox is already running on {self._host} "
                f"(SMTP {self._address.smtp_port}, IMAP {self._address.imap_port})"
            )
        loop = asyncio.get_running_loop()
        self._mailboxes = mailboxes = _SandboxMailboxSet()
        for folder in _SPECIAL_USE:
            await mailboxes.add_mailbox(folder)
            await mailboxes.set_subscribed(folder, True)
        imap = await _imap_server(mailboxes, self._capabilities)
        try:
            smtp_server = await self._listen(
                "SMTP",
                self._smtp_port,
                lambda: loop.create_server(self._smtp_protocol, self._host, self._smtp_port),
            )
            self._servers.append(smtp_server)
            imap_server = await self._listen(
                "IMAP",
                self._imap_port,
                lambda: asyncio.start_server(
                    lambda reader, writer: self._serve_imap(imap, reader, writer),
                    self._host,
                    self._imap_port,
                ),
            )
            self._servers.append(imap_server)
        except BaseException:
            await self._close()
            raise
        self._address = SandboxAddress(
            host=self._host,
            smtp_port=_bound_port(smtp_server),
            imap_port=_bound_port(imap_server),
            user=DEMO_USER,
            password=DEMO_PASSWORD,
        )
        return self._address

    async def stop(self) -> None:
        """Close both servers and every open connection, and release the ports.

        Messages still held back by ``delivery_delay`` are dropped.  Calling
        it again, or before :meth:`start`, does nothing.
        """
        await self._close()
        self._address = None

    async def _listen(
        self,
        service: str,
        port: int,
        create: _ServerFactory,
    ) -> asyncio.Server:
        """Bind one listener; turn the expected ``OSError`` into a readable SandboxError."""
        try:
            return await create()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                reason = f"port {port} on {self._host} is in use"
            elif exc.errno == errno.EACCES:
                reason = f"port {port} on {self._host} needs privileges this process lacks"
            else:
                reason = f"cannot listen on {self._host} port {port}: {exc.strerror or exc}"
            raise SandboxError(f"sandbox {service} server: {reason}") from exc

    async def _close(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for task in (*self._deliveries, *self._imap_connections):
            task.cancel()
        for protocol in list(self._smtp_connections):
            if protocol.transport is not None:
                protocol.transport.close()
        pending = [*self._deliveries, *self._imap_connections]
        if pending:
            await asyncio.wait(pending, timeout=_STOP_TIMEOUT)
        for server in servers:
            # From Python 3.12 this also waits for open connections, closed above.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _STOP_TIMEOUT)
        self._mailboxes = None

    # ------------------------------------------------------------------ SMTP

    def _smtp_protocol(self) -> SMTP:
        protocol = SMTP(
            _SmtpHandler(self._accept),
            hostname=SANDBOX_DOMAIN,
            ident=_IDENT,
            # Nothing to authenticate against: offer no mechanism at all.
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            loop=asyncio.get_running_loop(),
        )
        self._smtp_connections.add(protocol)
        return protocol

    def _accept(self, message: bytes, folders: Sequence[str]) -> None:
        """Count one accepted message and schedule its delivery into each folder."""
        self._delivered += 1
        mailboxes = self._mailboxes
        if mailboxes is None:  # stopping: nowhere to deliver to
            return
        for folder in folders:
            task = asyncio.create_task(self._deliver(mailboxes, folder, message))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, mailboxes: MailboxSet, folder: str, message: bytes) -> None:
        """Append the message to the folder once the simulated queue time has passed."""
        # Always yield once, so the 250 is on the wire before the message is visible.
        await asyncio.sleep(self._delay)
        mailbox = await mailboxes.get_mailbox(folder)
        await mailbox.append(AppendMessage(message, datetime.now(UTC)), recent=True)

    # ------------------------------------------------------------------ IMAP

    async def _serve_imap(
        self, server: IMAPServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Run one IMAP connection in a task that :meth:`stop` can cancel."""
        task = asyncio.current_task()
        if task is not None:
            self._imap_connections.add(task)
        try:
            socket_info = SocketInfo.get(writer, ProxyResultLocal(), unique_id=uuid.uuid4().bytes)
            await server(reader, writer, socket_info)
        finally:
            if task is not None:
                self._imap_connections.discard(task)


class _SmtpHandler:
    """aiosmtpd hooks: take mail for the demo mailbox only, never relay."""

    def __init__(self, accept: Callable[[bytes, Sequence[str]], None]) -> None:
        self._accept = accept

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept the demo mailbox (and its ``+detail`` forms); refuse the rest with 550."""
        domain = address.rpartition("@")[2]
        if domain.lower() != SANDBOX_DOMAIN:
            return (
                f"550 5.7.1 <{address}>: Relay access denied "
                f"(this sandbox only takes mail for @{SANDBOX_DOMAIN})"
            )
        if _folder_for(address) is None:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Stamp a ``Received`` header, queue the message for delivery, answer ``250``."""
        queue_id = secrets.token_hex(5).upper()
        content = envelope.original_content or b""
        folders = sorted({folder for rcpt in envelope.rcpt_tos if (folder := _folder_for(rcpt))})
        received = _received_header(session, queue_id, envelope.rcpt_tos)
        self._accept(received + content, folders)
        return f"250 2.0.0 Ok: queued as {queue_id}"


def _folder_for(recipient: str) -> str | None:
    """The folder a recipient's mail goes to, or None when it is not the demo mailbox."""
    local = recipient.rpartition("@")[0] if "@" in recipient else recipient
    user, _, detail = local.lower().partition("+")
    if user != DEMO_USER.partition("@")[0]:
        return None
    return JUNK_FOLDER if detail == "junk" else "INBOX"


def _received_header(session: Session, queue_id: str, recipients: Sequence[str]) -> bytes:
    """A Postfix-style trace header, so the probe's per-hop view has a hop to show."""
    peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
    helo = session.host_name or peer
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    recipient = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    date = email.utils.format_datetime(datetime.now().astimezone())
    return (
        f"Received: from {helo} ({peer} [{peer}])\r\n"
        f"\tby {SANDBOX_DOMAIN} ({_IDENT}) with {protocol} id {queue_id}{recipient};"
        f"\r\n\t{date}\r\n"
    ).encode()


# ---------------------------------------------------------------------- pymap


@dataclass(frozen=True)
class _Capabilities:
    """Capability names to add to, and to take from, what pymap lists after login."""

    extensions: tuple[bytes, ...] = ()
    withheld: frozenset[bytes] = frozenset()


def _capability_names(option: str, names: Iterable[str]) -> tuple[bytes, ...]:
    """``names`` as IMAP capability atoms.

    Raises:
        SandboxError: one is not a capability name (letters, digits, ``=+.-``).
    """
    atoms = []
    for name in names:
        if not isinstance(name, str) or not _CAPABILITY.fullmatch(name.upper()):
            raise SandboxError(f"{option}: {name!r} is not an IMAP capability name")
        atoms.append(name.upper().encode())
    return tuple(atoms)


class _SandboxConfig(DictConfig):
    """pymap's dict-backend config: a greeting that needs no DNS lookup, chosen capabilities."""

    capabilities: _Capabilities = _Capabilities()

    @property
    def greeting(self) -> bytes:
        return f"{SANDBOX_DOMAIN} {_IDENT} ready".encode()

    @property
    def login_capability(self) -> Sequence[bytes]:
        chosen = self.capabilities
        listed = [cap for cap in super().login_capability if cap not in chosen.withheld]
        return [*listed, *(cap for cap in chosen.extensions if cap not in listed)]


@dataclass(frozen=True)
class _SpecialUseEntry(ListEntry):
    """A ``LIST`` entry that also carries an RFC 6154 special-use attribute."""

    special_use: bytes = b""

    @property
    def attributes(self) -> Sequence[bytes]:
        return [*super().attributes, self.special_use]


class _SpecialUseTree(ListTree):
    r"""A mailbox tree that marks :data:`JUNK_FOLDER` ``\Junk`` and :data:`TRASH_FOLDER` ``\Trash``."""

    def list(self) -> Iterable[ListEntry]:
        for entry in super().list():
            use = _SPECIAL_USE.get(entry.name)
            if use is not None and entry.exists:
                yield _SpecialUseEntry(
                    entry.name, entry.exists, entry.marked, entry.has_children, use
                )
            else:
                yield entry


class _SandboxMailboxSet(MailboxSet):
    """pymap's in-memory mailbox set, listed with special-use attributes."""

    async def list_mailboxes(self) -> ListTree:
        return self._special_use(await super().list_mailboxes())

    async def list_subscribed(self) -> ListTree:
        return self._special_use(await super().list_subscribed())

    def _special_use(self, tree: ListTree) -> ListTree:
        names = [entry.name for entry in tree.list() if entry.exists]
        return _SpecialUseTree(self.delimiter).update(*names)


async def _imap_server(mailboxes: _SandboxMailboxSet, capabilities: _Capabilities) -> IMAPServer:
    """A pymap IMAP server whose only user, :data:`DEMO_USER`, owns ``mailboxes``."""
    config = _SandboxConfig(
        Namespace(),
        host=None,
        port=0,
        demo_data=False,
        demo_user=DEMO_USER,
        demo_password=DEMO_PASSWORD,
        # Plain LOGIN without STARTTLS: loopback only, and the demo has no certificate.
        tls_enabled=False,
        # The password is published; hashing it (500k PBKDF2 rounds) would only slow LOGIN.
        hash_context=Cleartext(),
        # Run everything in the event loop: no thread pool to leak on stop().
        cpu_subsystem=Subsystem.for_asyncio(),
        proxy_protocol=ProxyProtocolNoop(),
        reject_dnsbl=False,
    )
    config.capabilities = capabilities
    login = Login(config)
    password = await Passwords(config).hash_password(DEMO_PASSWORD)
    await login.demo_user_identity.set(UserMetadata(config, DEMO_USER, password=password))
    # The dict backend looks a user's mailboxes up here before creating empty ones.
    config.set_cache[DEMO_USER] = (mailboxes, FilterSet())
    return IMAPServer(login, config)


def _loopback_host(host: str) -> str:
    """The listening address, if it is loopback.

    Raises:
        SandboxError: the host is not a loopback IP address (nor ``localhost``).
    """
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SandboxError(
            f"sandbox host {host!r} is not an IP address; it listens on loopback only (127.0.0.1)"
        ) from None
    if not address.is_loopback:
        raise SandboxError(
            f"sandbox host {host} is not a loopback address; it listens on loopback only "
            "(127.0.0.1), because it takes mail without authentication"
        )
    return str(address)


def _bound_port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port
