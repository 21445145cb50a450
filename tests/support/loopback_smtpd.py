"""Real SMTP servers on 127.0.0.1 for protocol tests: aiosmtpd with per-test behaviour.

Each test chooses how the server answers (EHLO, MAIL FROM, RCPT TO, DATA,
AUTH, STARTTLS) through a :class:`Behaviour` handler; the server itself is
a real aiosmtpd instance in a thread, on a port the kernel picked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

LOOPBACK = "127.0.0.1"


@dataclass
class Behaviour:
    """An aiosmtpd handler whose replies a test chooses; it records what it accepted.

    A reply left at ``None`` means "accept as a normal server would".
    """

    esmtp: bool = True
    """``False``: a server that does not speak ESMTP and answers ``EHLO`` with
    ``500`` but takes ``HELO`` — an RFC 821 server, or (still met in the wild) a
    server behind a Cisco PIX/ASA whose SMTP inspection ("fixup smtp",
    MailGuard) turns every ``EHLO`` into an unknown command."""
    ehlo_reply: str | None = None
    mail_reply: str | None = None
    rcpt_reply: str | None = None
    data_command_reply: str | None = None
    """The reply to the ``DATA`` command itself instead of ``354`` (Postfix
    answers ``554 5.5.1 Error: no valid recipients`` or a policy refusal from
    ``smtpd_data_restrictions`` there)."""
    data_reply: str = "250 2.0.0 Ok: queued as ABC123"
    """The reply to the message's final dot."""
    data_delay: float = 0.0
    """Seconds to sit on the message before replying to its final dot (a slow content filter)."""
    offer_dsn: bool = False
    """Advertise ``DSN`` (RFC 3461) in the EHLO reply and take its ``MAIL``/``RCPT``
    parameters, as Postfix does."""
    refuse_dsn_parameters: bool = False
    """With ``offer_dsn``: advertise ``DSN`` but answer its parameters with aiosmtpd's
    own ``555 ... parameters not recognized`` (a server that lies about DSN)."""
    offer_pipelining: bool = False
    """Advertise ``PIPELINING`` (RFC 2920) as Postfix and every big MTA do; aiosmtpd reads
    pipelined commands in order and answers each as it comes."""
    data_commands: int = 0
    """How many ``DATA`` commands reached the server (answered or refused)."""
    greetings: list[str] = field(default_factory=list)
    """Every ``EHLO``/``HELO`` received, as ``"EHLO name"``."""
    mail_from: list[str] = field(default_factory=list)
    rcpt_to: list[str] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)
    """The parameters of every accepted ``MAIL FROM`` (aiosmtpd upper-cases them)."""
    rcpt_options: list[list[str]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    connections_open: int = 0
    """TCP connections open now (the controller's own readiness check included)."""
    most_connections: int = 0
    """The most connections that were ever open at once."""

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.greetings.append(f"EHLO {hostname}")
        if not self.esmtp:
            return ["500 5.5.1 Command unrecognized: EHLO"]
        if self.ehlo_reply is not None:
            return [self.ehlo_reply]
        session.host_name = hostname
        extra = [
            f"250-{name}"
            for name, offered in (("PIPELINING", self.offer_pipelining), ("DSN", self.offer_dsn))
            if offered
        ]
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self.greetings.append(f"HELO {hostname}")
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.mail_from.append(address)
        self.mail_options.append(list(mail_options))
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        self.rcpt_to.append(address)
        self.rcpt_options.append(list(rcpt_options))
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.messages.append(content if isinstance(content, bytes) else content.encode())
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        return self.data_reply


@dataclass
class Authenticator:
    """An aiosmtpd authenticator that knows one user; it records every login attempt."""

    username: str
    password: str
    attempts: list[tuple[str, str]] = field(default_factory=list)

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.attempts.append((login, password))
        ok = (login, password) == (self.username, self.password)
        return AuthResult(success=ok, handled=False)


_DSN_PARAMETERS = frozenset({"RET", "ENVID", "NOTIFY", "ORCPT"})


class _ScriptedSMTP(SMTP):
    """aiosmtpd's server, plus the one reply it has no handler hook for: the one to DATA.

    With :attr:`Behaviour.offer_dsn` it also takes RFC 3461's parameters,
    which aiosmtpd itself refuses with ``555``.
    """

    def _getparams(self, params: Any) -> dict[str, str | bool] | None:
        parsed: dict[str, str | bool] | None = super()._getparams(params)
        handler = self.event_handler
        if (
            parsed is not None
            and isinstance(handler, Behaviour)
            and handler.offer_dsn
            and not handler.refuse_dsn_parameters
        ):
            # Checked by aiosmtpd after this; the handler still sees them in its options.
            return {key: value for key, value in parsed.items() if key not in _DSN_PARAMETERS}
        return parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handler = self.event_handler
        if isinstance(handler, Behaviour):
            handler.connections_open += 1
            handler.most_connections = max(handler.most_connections, handler.connections_open)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        handler = self.event_handler
        if isinstance(handler, Behaviour):
            handler.connections_open -= 1
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.event_handler
        if isinstance(handler, Behaviour):
            handler.data_commands += 1
        refusal = handler.data_command_reply if isinstance(handler, Behaviour) else None
        if refusal is not None and self.envelope is not None and self.envelope.rcpt_tos:
            await self.push(refusal)
            return
        await super().smtp_DATA(arg)


class _LoopbackController(Controller):
    """aiosmtpd's threaded controller, bound to an ephemeral port on 127.0.0.1."""

    def __init__(self, handler: Behaviour, **smtp_kwargs: Any) -> None:
        super().__init__(handler, hostname=LOOPBACK, port=0, **smtp_kwargs)

    def factory(self) -> SMTP:
        return _ScriptedSMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # aiosmtpd 1.4 connects to self.port to check readiness; learn the real port first.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


@contextmanager
def smtpd(handler: Behaviour, **smtp_kwargs: Any) -> Iterator[int]:
    """Run aiosmtpd with ``handler`` (and aiosmtpd.smtp.SMTP options); yield its port."""
    smtp_kwargs.setdefault("server_hostname", "mx.test")
    controller = _LoopbackController(handler, **smtp_kwargs)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that completes the TCP handshake and then never says a word.

    The kernel accepts connections into the listen backlog on our behalf, so
    the client is connected but no ``220`` ever comes.
    """
    with socket.create_server((LOOPBACK, 0), backlog=8) as listener:
        yield listener.getsockname()[1]


@contextmanager
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, and nobody can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


@asynccontextmanager
async def greeting_server(greeting: str) -> AsyncIterator[int]:
    """A server (in the test's own event loop) that greets with ``greeting`` and hangs up."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting.encode() + b"\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
