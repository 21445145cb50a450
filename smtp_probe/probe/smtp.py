"""The SMTP leg: submit the probe message with aiosmtplib, stage by stage.

Each stage of the telnet session (resolve, connect, banner, EHLO — or HELO
for a server that does not speak ESMTP —, STARTTLS, AUTH, MAIL FROM, RCPT
TO, DATA) is timed and every command and reply, the ``354`` after ``DATA``
included, is written to the transcript; any failure becomes one
:class:`SmtpSendError` naming the stage. This module is the only place that
knows aiosmtplib's exceptions.

Where the EHLO reply offers ``PIPELINING`` (RFC 2920) ``MAIL FROM``,
``RCPT TO`` and ``DATA`` go out in one write, as every MTA sends them, and
their replies are read in order (:func:`_pipelined`); the transcript shows
the three commands, then the three replies. A refusal is still the failure
of its own stage. A server without it gets one command per round trip.

The ``smtp_smuggling`` check reuses every stage up to DATA's ``354`` and
then takes the connection over (``raw_content``, :class:`DataChannel`): its
content must reach the server unrepaired, so :mod:`.smuggling` writes it.

For a probe that expects a refusal (:mod:`smtp_probe.probe.expect` decides
what its answers mean) the leg can stop after a stage (``stop_after``),
and :func:`try_auth_in_clear` offers a dummy ``AUTH`` without TLS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Final

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH, normalize_message_line_endings

from smtp_probe.probe import sasl
from smtp_probe.probe.credentials import AccessToken, TokenError, TokenSource, describe, obtain
from smtp_probe.probe.message import OutgoingMessage, outgoing
from smtp_probe.probe.reply_reader import ReplyReader
from smtp_probe.probe.result import SMTP_STAGES, SmtpReport, Stage, TlsFacts
from smtp_probe.probe.spec import SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.tls import client_context, describe_facts, describe_verify_error, tls_facts
from smtp_probe.probe.transcript import REDACTED, Transcript

_QUEUE_ID: Final = (
    re.compile(r"queued as\s+<?([A-Za-z0-9._@-]+?)>?(?:\s|$)", re.IGNORECASE),
    re.compile(r"\bid=([A-Za-z0-9._-]+)"),
)
_AUTH_PREFERENCE: Final = ("plain", "login", "cram-md5")
_QUIT_TIMEOUT: Final = 2.0
_DEADLINE_SLACK: Final = 0.05
"""A command timeout this close to the run deadline was the deadline."""
_NOT_ESMTP: Final = frozenset({500, 502})
"""EHLO replies that mean "unknown command": greet with HELO instead (RFC 5321 §3.2)."""
_DSN_PARAMETERS_REFUSED: Final = 555
"""RFC 5321 §4.2.3 / RFC 3461: "MAIL FROM/RCPT TO parameters not recognized or not implemented"."""
DSN_NOTIFY: Final = "NOTIFY=FAILURE,DELAY"
"""What we ask a DSN for: a failure and a delay, never success (that we see ourselves)."""
_START_INPUT: Final = 354
_OK: Final = 250
_WILL_FORWARD: Final = 251
_AUTH_CONTINUE: Final = 334
_AUTH_OK: Final = 235
_AUTH_REFUSED: Final = 535
"""The reply to credentials that are wrong (RFC 4954); a token refused so may just be stale."""
_DUMMY_USER: Final = "smtp-probe-dummy"
"""The user of the invalid credential ``try_auth_in_clear`` offers (never a real account)."""
_COMMAND_LINE_MAX: Final = 512
"""RFC 5321's command line limit, CRLF included; RFC 4954 §4 says an initial
response that would break it goes on a line of its own after a ``334``."""
_LEADING_DOT: Final = re.compile(rb"(?m)^\.")
_THROTTLING: Final = re.compile(
    r"""
    \b4\.3\.2\b                 # "not accepting messages": what M365 says for its concurrency limits
    | throttl                     # "4.7.0 Throttled", "throttling"
    | sender\ thread\ limit\ exceeded   # M365 STOREDRV.ClientSubmit
    | concurrent\ (?:server\ )?(?:connections?|sessions?)
    | too\ many\ (?:concurrent\ )?(?:connections?|sessions?|messages?|mails?|e-?mails?
                 |recipients?|requests?|login\ attempts?|auth\w*\ attempts?)
    | rate[\ -]?limit             # "rate limit exceeded", "ratelimited"
    | at\ a\ rate\ that            # Gmail 4.2.1 "receiving mail at a rate that prevents ..."
    """,
    re.IGNORECASE | re.VERBOSE,
)
"""What a ``4xx`` says when it means "slow down", not "something is wrong".

Microsoft 365 (``4.3.2``, "sender thread limit exceeded", "concurrent
connections"), Google ("at a rate that prevents", "too many login
attempts"), Postfix's anvil ("too many connections") and policy daemons'
rate limits. "too many errors" is left out on purpose: that is Postfix
hanging up on a client that misbehaved, not a rate limit.
"""


class SmtpSendError(Exception):
    """The SMTP leg failed at ``stage``; ``report`` holds what was seen until then.

    ``throttled`` is True when the failure was a ``4xx`` reply saying the
    server is rate limiting us (see :func:`is_throttling`). ``code`` is the
    refusal's reply code when the server refused at ``stage`` (a ``4xx`` or
    ``5xx`` answered there); ``None`` for a failure that was no refusal
    (a timeout, a lost connection, something missing from EHLO).
    """

    def __init__(
        self,
        stage: Stage,
        reason: str,
        report: SmtpReport,
        *,
        throttled: bool = False,
        code: int | None = None,
    ) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.report = report
        self.throttled = throttled
        self.code = code


def is_throttling(code: int | None, text: str) -> bool:
    """True for a temporary (``4xx``) reply that says the server is limiting our rate.

    Other ``4xx`` replies (greylisting, a full disk, a lookup failure) are
    temporary too, but they are not about how fast we send: they stay
    ordinary send failures.
    """
    return code is not None and 400 <= code < 500 and _THROTTLING.search(text) is not None


def parse_queue_id(reply: str) -> str | None:
    """Pull the queue id out of the final ``250`` (Postfix, Exim and friends)."""
    for pattern in _QUEUE_ID:
        match = pattern.search(reply)
        if match is not None:
            return match.group(1)
    return None


def default_helo() -> str:
    """The name we greet with when none is configured: this host's name, without DNS."""
    name = socket.gethostname()
    return name if name else "localhost"


@dataclass
class _Session:
    """Mutable bookkeeping of one submission; turned into a frozen report at the end."""

    server: SmtpServer
    transcript: Transcript
    deadline: float
    stage: Stage = Stage.DNS
    stage_started: float = field(default_factory=time.monotonic)
    timings: dict[Stage, float] = field(default_factory=dict)
    reply_code: int | None = None
    reply: str = ""
    queue_id: str | None = None
    tls_version: str | None = None
    tls: TlsFacts | None = None
    accepted_at: float | None = None
    in_tls: bool = False
    token: AccessToken | None = None
    """The OAuth2 token to log in with (servers with ``oauth``); replaced when refused."""
    stop_after: Stage | None = None
    """End the session after this stage (or the first one past it) is answered positively."""
    expecting: bool = False
    """A refusal is what the probe hopes for: the transcript says "refused", not "FAILED"."""
    reply_stage: Stage | None = None
    """The stage the last reply was received in."""
    connect_to: Sequence[str] = ()
    """IP addresses to connect to instead of resolving ``server.host`` (an MX host we resolved)."""

    @property
    def verified(self) -> bool:
        """Whether a TLS certificate is verified on this connection (opportunistic TLS never is)."""
        return self.server.tls_settings.verify and self.server.tls is not TlsMode.OPPORTUNISTIC

    def enter(self, stage: Stage) -> None:
        """Close the timing of the current stage and start ``stage``."""
        self.finish_stage()
        self.stage = stage
        self.stage_started = time.monotonic()

    def finish_stage(self) -> None:
        elapsed = time.monotonic() - self.stage_started
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + elapsed
        self.stage_started = time.monotonic()

    def op_timeout(self) -> float:
        """The per-command timeout: the server's limit, never past the run deadline."""
        return max(0.001, min(self.server.timeout, self.deadline - time.monotonic()))

    def sent(self, text: str) -> None:
        self.transcript.sent(text, tls=self.in_tls)

    def received(self, code: int, message: str) -> None:
        self.reply_code, self.reply, self.reply_stage = code, message, self.stage
        lines = message.splitlines() or [""]
        for index, line in enumerate(lines):
            sep = "-" if index < len(lines) - 1 else " "
            self.transcript.received(f"{code}{sep}{line}", tls=self.in_tls)

    def report(self) -> SmtpReport:
        return SmtpReport(
            reply_code=self.reply_code,
            reply=self.reply,
            queue_id=self.queue_id,
            stage_seconds=dict(self.timings),
            tls_version=self.tls_version,
            accepted_at=self.accepted_at,
            tls=self.tls,
        )

    def fail(self, reason: str, stage: Stage | None = None) -> SmtpSendError:
        self.finish_stage()
        failed_at = stage or self.stage
        # We stop at the first error reply, so a 4xx seen last is what ended the leg.
        throttled = is_throttling(self.reply_code, self.reply)
        if throttled:
            reason = f"temporary throttling by the server: {reason}"
        code = self.reply_code
        if self.reply_stage is not failed_at or code is None or code < 400:
            code = None
        refused = self.expecting and code is not None
        # One MX attempt of several (connect_to) failing is not yet the run failing.
        verdict = "refused" if refused else "attempt failed" if self.connect_to else "FAILED"
        self.transcript.note(f"{verdict} at {failed_at}: {reason}")
        return SmtpSendError(failed_at, reason, self.report(), throttled=throttled, code=code)

    def stops_after(self, stage: Stage) -> bool:
        """Whether the session is to end now that ``stage`` was answered positively."""
        stop = self.stop_after
        return stop is not None and SMTP_STAGES.index(stage) >= SMTP_STAGES.index(stop)


async def send_message(
    server: SmtpServer,
    message: EmailMessage | OutgoingMessage,
    *,
    mail_from: str,
    rcpt_to: str,
    transcript: Transcript,
    deadline: float,
    token: AccessToken | None = None,
    envid: str | None = None,
    raw_content: RawContent | None = None,
    stop_after: Stage | None = None,
    expecting: bool = False,
    connect_to: Sequence[str] = (),
) -> SmtpReport:
    """Submit ``message`` through ``server`` before ``deadline`` (monotonic seconds).

    Returns the report of a message accepted by the final ``250``; its
    ``accepted_at`` is when delivery time starts counting.

    With ``stop_after`` the session ends once that stage (or the first
    one past it the session has) is answered positively, and nothing is
    delivered: ``RSET`` in a transaction, then ``QUIT``; after ``DATA``'s
    ``354`` the connection is closed without the message, which the server
    then discards. The report then has no ``accepted_at``. ``expecting``
    marks a probe that hopes for a refusal: a refusal is noted as one,
    not as a failure (the caller writes the verdict).

    With ``envid`` (the run id) and a server whose EHLO offers ``DSN``
    (RFC 3461), the envelope asks for a delivery status notification on
    failure or delay: ``MAIL FROM:<a> RET=HDRS ENVID=<envid>`` and ``RCPT
    TO:<b> NOTIFY=FAILURE,DELAY``, so a bounce carries our headers (the
    signed token) and our run id back. A server that refuses the
    parameters (``555``) gets the command once more without them.

    A server with ``oauth`` logs in with ``token`` (fetched from the source
    at AUTH time when not given). A token from the cache that the server
    refuses is rejected and AUTH tried once more with a fresh one.

    An address that is not ASCII goes with ``SMTPUTF8`` (RFC 6531; a
    server without it fails the run at ``mail_from`` before anything is
    sent), a message with 8-bit bytes with ``BODY=8BITMIME`` where offered.
    ``MAIL``, ``RCPT`` and ``DATA`` are pipelined where the server offers
    ``PIPELINING``; with ``stop_after`` at ``mail_from`` or ``rcpt_to`` the
    group ends there, so no ``DATA`` goes out that the session must not
    reach.

    ``raw_content`` takes the connection over after DATA's ``354`` (the
    ``smtp_smuggling`` check; see :class:`DataChannel`).

    ``connect_to`` (IP addresses) skips resolving ``server.host``, which
    still names the TLS peer: the MX walk of :mod:`smtp_probe.probe.mx`
    resolves MX hosts itself and sends through here, one address at a time.

    Raises:
        ValueError: ``server`` is an ``mx`` server (send with
            :func:`smtp_probe.probe.submit.submit`).
        SmtpSendError: the submission failed; it names the stage, the reason and
            carries the reply code and timings seen so far. Stage ``oauth``:
            a new token was needed and could not be obtained.
    """
    if server.mx:
        raise ValueError(f"{server.address}: send to an mx server with smtp_probe.probe.submit")
    session = _Session(
        server,
        transcript,
        deadline,
        token=token,
        stop_after=stop_after,
        expecting=expecting,
        connect_to=connect_to,
    )
    transcript.mask(server.password.reveal() if server.password else None)
    transcript.mask(token.value.reveal() if token else None)

    async def converse(client: aiosmtplib.SMTP) -> None:
        if not await _stopped(session, client, Stage.BANNER):
            await _converse(session, client, message, mail_from, rcpt_to, envid, raw_content)

    await _in_session(session, converse)
    return session.report()


async def _in_session(
    session: _Session, body: Callable[[aiosmtplib.SMTP], Awaitable[None]]
) -> None:
    """Connect, run ``body`` on the greeted client, QUIT; every failure as one SmtpSendError.

    Raises:
        SmtpSendError: naming the stage the session was in.
    """
    server = session.server
    deadline = session.deadline
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + (deadline - time.monotonic())):
            client = await _open(session)
            try:
                await body(client)
            finally:
                await _quit(session, client)
    except SmtpSendError:
        raise
    except aiosmtplib.SMTPTimeoutError:
        # A TimeoutError too: caught first, or every command timeout would
        # read as the run deadline. Near the deadline the two limits coincide.
        if time.monotonic() >= deadline - _DEADLINE_SLACK:
            raise session.fail("no answer before the run deadline") from None
        raise session.fail(f"no answer within {server.timeout:g}s") from None
    except TimeoutError:
        raise session.fail("no answer before the run deadline") from None
    except ssl.SSLError as exc:
        stage = Stage.STARTTLS if session.stage is Stage.STARTTLS else Stage.CONNECT
        raise session.fail(describe_verify_error(exc), stage) from None
    except aiosmtplib.SMTPServerDisconnected as exc:
        raise session.fail(f"server closed the connection ({exc.message})") from None
    except aiosmtplib.SMTPException as exc:
        raise session.fail(_explain(exc)) from None
    except OSError as exc:
        raise session.fail(_os_reason(exc)) from None
    session.finish_stage()


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """What :func:`try_auth_in_clear` saw: AUTH in the clear's EHLO, and the dummy AUTH's reply."""

    offered: bool
    """The EHLO before any TLS listed ``AUTH``."""
    code: int | None
    """The reply to ``AUTH PLAIN`` with the dummy credential; ``None`` when it was not sent."""
    reply: str
    report: SmtpReport


async def try_auth_in_clear(
    server: SmtpServer, *, transcript: Transcript, deadline: float
) -> AuthAttempt:
    """Connect without TLS, EHLO, and offer an invalid dummy credential unless AUTH is listed.

    ``server`` is used as given (the caller sets ``tls: none``). The
    credential is :data:`smtp_probe.probe.expect`'s dummy user with a
    random password, never a real one; it is masked all the same. A server
    that lists AUTH in the clear has already shown what the check asks
    about, and gets no login attempt. A ``334`` (the server wants more)
    is answered with ``*``, which cancels the exchange (RFC 4954 §4).

    Raises:
        SmtpSendError: the session failed before the AUTH reply (connect,
            banner, EHLO; a timeout or a lost connection at AUTH).
    """
    session = _Session(server, transcript, deadline)
    offered = False
    code: int | None = None
    reply_text = ""

    async def dummy_auth(client: aiosmtplib.SMTP) -> None:
        nonlocal offered, code, reply_text
        await _greet(session, client, server.helo or default_helo())
        offered = client.supports_extension("auth")
        if offered:
            methods = " ".join(client.server_auth_methods).upper() or "(no mechanism)"
            transcript.note(f"AUTH is offered before STARTTLS: {methods}")
            return
        session.enter(Stage.AUTH)
        password = secrets.token_urlsafe(18)
        transcript.mask(password)
        encoded = base64.b64encode(f"\0{_DUMMY_USER}\0{password}".encode())
        transcript.mask(encoded.decode())
        session.sent(f"AUTH PLAIN {REDACTED}")
        reply = await client.execute_command(
            b"AUTH", b"PLAIN", encoded, timeout=session.op_timeout()
        )
        session.received(reply.code, reply.message)
        code, reply_text = reply.code, reply.message
        if reply.code == _AUTH_CONTINUE:
            session.sent("*")
            cancelled = await client.execute_command(b"*", timeout=session.op_timeout())
            session.received(cancelled.code, cancelled.message)

    await _in_session(session, dummy_auth)
    return AuthAttempt(offered=offered, code=code, reply=reply_text, report=session.report())


async def _open(session: _Session) -> aiosmtplib.SMTP:
    """Resolve, connect and read the banner; implicit TLS is negotiated before the banner."""
    server = session.server
    session.transcript.note(f"connecting to {server.address} (tls: {server.tls})")
    try:
        addresses: Sequence[tuple[Any, Any, int, str, Any]]
        if session.connect_to:
            addresses = [
                entry
                for address in session.connect_to
                for entry in await _resolve(address, server.port)
            ]
        else:
            addresses = await _resolve(server.host, server.port)
    except socket.gaierror as exc:
        raise session.fail(f"cannot resolve {server.host}: {exc.strerror}") from None
    except UnicodeError:
        # The idna codec rejects empty or over-long labels before any lookup.
        raise session.fail(f"cannot resolve {server.host}: not a valid host name") from None

    # Built before connecting so that a bad CA file cannot leak a socket.
    use_tls = server.tls is TlsMode.TLS
    context = client_context(server.tls_settings) if server.tls is not TlsMode.NONE else None

    session.enter(Stage.CONNECT)
    sock = await _connect_any(session, addresses)
    session.transcript.note(f"connected to {_peer(sock)}")

    session.enter(Stage.BANNER)
    client = aiosmtplib.SMTP(
        hostname=server.host,
        sock=sock,
        use_tls=use_tls,
        start_tls=False,
        tls_context=context,
        local_hostname=server.helo or default_helo(),
        timeout=session.op_timeout(),
    )
    try:
        greeting = await client.connect(timeout=session.op_timeout())
    except aiosmtplib.SMTPConnectTimeoutError:
        raise session.fail("no 220 greeting before the timeout") from None
    except aiosmtplib.SMTPConnectResponseError as exc:
        session.received(exc.code, exc.message)
        raise session.fail(f"server greeted with {exc.code} {_first_line(exc.message)}") from None
    except aiosmtplib.SMTPConnectError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            raise session.fail(describe_verify_error(cause), Stage.CONNECT) from None
        raise session.fail(f"connection lost before the greeting ({exc.message})") from None
    if use_tls:
        _note_tls(session, client)
    session.received(greeting.code, greeting.message)
    return client


async def _resolve(host: str, port: int) -> Sequence[tuple[Any, Any, int, str, Any]]:
    """Addresses to try; an IP literal needs no lookup (and no trip to the thread pool)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if ip.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 0, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, 0, "", (host, port))]


async def _connect_any(
    session: _Session, addresses: Sequence[tuple[Any, Any, int, str, Any]]
) -> socket.socket:
    """Connect to the first address that answers, like a mail client walking A/AAAA records."""
    loop = asyncio.get_running_loop()
    last_error: OSError | None = None
    for family, kind, proto, _name, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    reason = _os_reason(last_error) if last_error else "no address to connect to"
    raise session.fail(f"cannot connect to {session.server.address}: {reason}")


async def _converse(
    session: _Session,
    client: aiosmtplib.SMTP,
    message: EmailMessage | OutgoingMessage,
    mail_from: str,
    rcpt_to: str,
    envid: str | None = None,
    raw_content: RawContent | None = None,
) -> None:
    server = session.server
    helo = server.helo or default_helo()
    await _greet(session, client, helo)
    if await _stopped(session, client, Stage.EHLO):
        return

    opportunistic = server.tls is TlsMode.OPPORTUNISTIC
    if opportunistic and not client.supports_extension("starttls"):
        session.transcript.note("no STARTTLS offered: continuing without TLS (opportunistic)")
    elif server.tls is TlsMode.STARTTLS or opportunistic:
        session.enter(Stage.STARTTLS)
        if not client.supports_extension("starttls"):
            raise session.fail("server does not offer STARTTLS")
        # Opportunistic TLS verifies nothing (RFC 3207 §4): it only keeps passive eyes out.
        settings = TlsSettings(verify=False) if opportunistic else server.tls_settings
        await _command(
            session,
            "STARTTLS",
            client.starttls(
                server_hostname=server.host,
                tls_context=client_context(settings),
                timeout=session.op_timeout(),
            ),
        )
        _note_tls(session, client)
        await _ehlo(session, client, helo)
        if await _stopped(session, client, Stage.STARTTLS):
            return

    if server.username:
        session.enter(Stage.AUTH)
        await _authenticate(session, client)
        if await _stopped(session, client, Stage.AUTH):
            return

    await _transaction(session, client, message, mail_from, rcpt_to, envid, raw_content)


@dataclass(frozen=True, slots=True)
class _Command:
    """``MAIL``, ``RCPT`` or ``DATA`` of the transaction, with the parameters it carries."""

    stage: Stage
    text: str
    """The command without parameters, as sent (``MAIL FROM:<a>``, ``DATA``)."""
    params: tuple[str, ...] = ()
    """Parameters it always carries (``SMTPUTF8``, ``BODY=8BITMIME``)."""
    dsn: tuple[str, ...] = ()
    """DSN parameters: a ``555`` refusing them means "once more without them"."""
    utf8: bool = False
    """The line goes out in UTF-8 (``SMTPUTF8``), else in ASCII."""

    def line(self, *, dsn: bool) -> str:
        """The command line as sent, without its ``CRLF``."""
        return " ".join((self.text, *self.params, *(self.dsn if dsn else ())))

    def wire(self, *, dsn: bool) -> bytes:
        return self.line(dsn=dsn).encode("utf-8" if self.utf8 else "ascii")

    def accepts(self, code: int) -> bool:
        """Whether ``code`` lets the transaction go on (``251``: RFC 5321's "will forward")."""
        if self.stage is Stage.DATA:
            return code == _START_INPUT
        if self.stage is Stage.RCPT_TO:
            return code in (_OK, _WILL_FORWARD)
        return code == _OK


async def _transaction(
    session: _Session,
    client: aiosmtplib.SMTP,
    message: EmailMessage | OutgoingMessage,
    mail_from: str,
    rcpt_to: str,
    envid: str | None,
    raw_content: RawContent | None,
) -> None:
    """``MAIL``, ``RCPT``, ``DATA`` and the message: pipelined where the server offers it.

    With ``PIPELINING`` in the EHLO reply (RFC 2920) the three commands go
    out in one write and their replies are read in order, as every MTA
    sends; without it, one command per round trip. A session that is to
    stop after ``MAIL FROM`` or ``RCPT TO`` (an expected refusal without a
    mailbox) pipelines only up to that stage: no ``DATA`` is ever sent
    where the session must not reach it, and the message itself never
    goes out before every reply is read.

    Raises:
        SmtpSendError: at the stage whose command the server refused.
    """
    outgoing_message = message if isinstance(message, OutgoingMessage) else outgoing(message)
    utf8 = outgoing_message.utf8 or not (mail_from.isascii() and rcpt_to.isascii())
    session.enter(Stage.MAIL_FROM)
    if utf8 and not client.supports_extension("smtputf8"):
        raise session.fail(
            "an address or header is not ASCII and the server does not offer SMTPUTF8 (RFC 6531)"
        )
    params: list[str] = []
    if outgoing_message.eight_bit and client.supports_extension("8bitmime"):
        params.append("BODY=8BITMIME")
    if utf8:
        params.append("SMTPUTF8")
    dsn = envid is not None and client.supports_extension("dsn")
    commands = (
        _Command(
            Stage.MAIL_FROM,
            f"MAIL FROM:{quote_address(mail_from)}",
            tuple(params),
            ("RET=HDRS", f"ENVID={xtext(envid)}") if dsn and envid is not None else (),
            utf8,
        ),
        _Command(
            Stage.RCPT_TO,
            f"RCPT TO:{quote_address(rcpt_to)}",
            (),
            (DSN_NOTIFY,) if dsn else (),
            utf8,
        ),
        _Command(Stage.DATA, "DATA"),
    )
    group: tuple[_Command, ...] = commands
    if session.stop_after in (Stage.MAIL_FROM, Stage.RCPT_TO):
        group = tuple(c for c in commands if _order(c.stage) <= _order(session.stop_after))
    done, retry = 0, False
    if len(group) > 1 and client.supports_extension("pipelining"):
        done = await _pipelined(session, client, group)
        retry = done < len(group)
        for command in group[:done]:
            if await _stopped(session, client, command.stage):
                return
    for index in range(done, len(group)):
        command = group[index]
        await _one(session, client, command, dsn=not (retry and index == done))
        if await _stopped(session, client, command.stage):
            return
    if raw_content is not None:
        await _raw_transfer(session, client, raw_content)
        return
    payload = outgoing_message.data
    session.sent(f"[message: {len(payload)} bytes, Subject: {outgoing_message.subject}]")
    session.sent(".")
    reply = await _reply(
        session, _transfer(client, payload, timeout=session.op_timeout()), expect=_OK
    )
    session.accepted_at = time.monotonic()
    session.queue_id = parse_queue_id(reply.message)


async def _one(
    session: _Session, client: aiosmtplib.SMTP, command: _Command, *, dsn: bool
) -> aiosmtplib.SMTPResponse:
    """One command, one round trip; DSN parameters refused with ``555`` go once more without.

    A server that advertises DSN but then rejects its parameters is
    broken, but the probe is about delivery, not about DSN: the message
    goes without them, and the transcript says so.

    Raises:
        SmtpSendError: the server refused the command (without DSN parameters too).
    """
    session.enter(command.stage)
    with_dsn = dsn and bool(command.dsn)
    while True:
        session.sent(command.line(dsn=with_dsn))
        reply = await client.execute_command(
            command.wire(dsn=with_dsn), timeout=session.op_timeout()
        )
        session.received(reply.code, reply.message)
        if command.accepts(reply.code):
            return reply
        if with_dsn and reply.code == _DSN_PARAMETERS_REFUSED:
            _note_dsn_refused(session)
            with_dsn = False
            continue
        raise session.fail(f"server replied {reply.code} {_first_line(reply.message)}")


def _note_dsn_refused(session: _Session) -> None:
    session.transcript.note(
        "the server offers DSN but refused its parameters; once more without them "
        "(no bounce report will name this run)"
    )


async def _pipelined(session: _Session, client: aiosmtplib.SMTP, group: Sequence[_Command]) -> int:
    """Send ``group`` in one write (RFC 2920) and read every reply in order.

    Returns how many commands of ``group`` went through: all of them, or
    the index of one whose DSN parameters were refused with ``555`` (sent
    again without them, one at a time, by the caller). Every reply is
    read, each within the command timeout and the run deadline, and shown
    where it came; a refusal is the failure of its own stage, and the
    replies after it (``503``/``554`` "no valid recipients" to ``DATA``)
    are noted, not blamed. A ``354`` after a refused command is ended with
    a lone ``.`` as RFC 2920 §3.1 asks (there is no recipient: nothing is
    delivered).

    Raises:
        SmtpSendError: at the stage whose command was refused.
        aiosmtplib.SMTPReadTimeoutError: no reply in time (before any refusal).
        aiosmtplib.SMTPServerDisconnected: the connection was lost (before any refusal).
    """
    for command in group:
        session.sent(command.line(dsn=True))
    data = b"".join(command.wire(dsn=True) + b"\r\n" for command in group)
    refusal: tuple[Stage, int, str] | None = None
    retry: int | None = None
    dangling_data = False
    async with _PipelineReader.over(client) as reader:
        reader.write(data)
        for index, command in enumerate(group):
            settled = refusal is not None or retry is not None
            if not settled:
                session.enter(command.stage)
            try:
                reply = await reader.reply(session.op_timeout())
            except (aiosmtplib.SMTPReadTimeoutError, aiosmtplib.SMTPServerDisconnected) as exc:
                if not settled:
                    raise
                session.transcript.note(f"no reply to {command.text} ({exc.message})")
                # A reply coming late would pair with QUIT: hang up instead.
                reader.abandon()
                break
            session.received(reply.code, reply.message)
            if settled:
                if command.stage is Stage.DATA:
                    dangling_data = reply.code == _START_INPUT
                    earlier = refusal[0] if refusal is not None else group[retry or 0].stage
                    session.transcript.note(f"the reply to DATA follows from the {earlier} reply")
                continue
            if command.accepts(reply.code):
                continue
            if command.dsn and reply.code == _DSN_PARAMETERS_REFUSED:
                retry = index
                continue
            refusal = (command.stage, reply.code, reply.message)
    if dangling_data:
        await _end_empty_data(session, client)
    if refusal is not None:
        stage, code, text = refusal
        session.reply_code, session.reply, session.reply_stage = code, text, stage
        raise session.fail(f"server replied {code} {_first_line(text)}", stage)
    if retry is not None:
        _note_dsn_refused(session)
        # The lone dot ended the transaction the server had: start it again.
        return 0 if dangling_data else retry
    return len(group)


async def _end_empty_data(session: _Session, client: aiosmtplib.SMTP) -> None:
    """End a ``DATA`` the server took after refusing the transaction: a lone ``.``, reply noted."""
    session.transcript.note("the server took DATA all the same: ending it with a lone '.'")
    session.sent(".")
    try:
        # A courtesy, like QUIT: the run's verdict is already the refusal.
        reply = await _write_and_read(
            client, b".\r\n", timeout=min(_QUIT_TIMEOUT, session.op_timeout())
        )
    except aiosmtplib.SMTPException:
        session.transcript.note("no reply to the lone '.'")
        return
    session.transcript.received(f"{reply.code} {reply.message}", tls=session.in_tls)


class _PipelineReader(ReplyReader[aiosmtplib.SMTPResponse]):
    """Reads pipelined SMTP replies off aiosmtplib's connection, then gives the connection back.

    aiosmtplib reads one reply per command it sent and drops bytes that
    come while no command of its own waits, so a second and third reply
    arriving in one segment (Postfix flushes its pipelined replies
    together) would be lost. For the length of one pipelined group this
    protocol takes the transport (:meth:`asyncio.Transport.set_protocol`,
    as :mod:`.smuggling` does for its content) and hands it back to
    aiosmtplib's protocol afterwards, with nothing pending on either side.
    A lost connection is passed on to aiosmtplib, which then knows it too.
    """

    def __init__(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._transport = transport
        self._protocol = protocol

    @classmethod
    @contextlib.asynccontextmanager
    async def over(cls, client: aiosmtplib.SMTP) -> AsyncIterator[_PipelineReader]:
        """Own ``client``'s transport for the ``async with`` block.

        Raises:
            aiosmtplib.SMTPServerDisconnected: the client is not connected.
        """
        transport, protocol = client.transport, client.protocol
        if (
            not isinstance(transport, asyncio.Transport)
            or protocol is None
            or transport.is_closing()
        ):
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        reader = cls(transport, protocol)
        transport.set_protocol(reader)
        try:
            yield reader
        except aiosmtplib.SMTPException:
            # As aiosmtplib does: a reply given up on would pair with the next command.
            transport.close()
            raise
        finally:
            if transport.get_protocol() is reader:
                transport.set_protocol(protocol)
            if reader._closed:
                client.close()

    def write(self, data: bytes) -> None:
        """Write ``data`` (the whole group) at once."""
        self._transport.write(data)

    def abandon(self) -> None:
        """Close the connection: the replies still owed will never be read."""
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if len(self._buffer) > MAX_RESPONSE_LENGTH * 3:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._protocol.connection_lost(exc)

    async def reply(self, timeout: float) -> aiosmtplib.SMTPResponse:
        """The next whole (possibly multi-line) reply.

        Raises:
            aiosmtplib.SMTPReadTimeoutError: none within ``timeout`` seconds.
            aiosmtplib.SMTPServerDisconnected: the connection ended without one.
            aiosmtplib.SMTPResponseException: a line that is not an SMTP reply.
        """
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                reply = await self._next()
        except TimeoutError:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
        if reply is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        return reply

    def _take(self) -> aiosmtplib.SMTPResponse | None:
        lines: list[str] = []
        for line, offset in self._lines():
            head = line[:3]
            if not head.isdigit() or len(line) > MAX_LINE_LENGTH:
                raise aiosmtplib.SMTPResponseException(
                    -1, f"Malformed SMTP response line: {line.decode('utf-8', 'replace')!r}"
                )
            lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return aiosmtplib.SMTPResponse(int(head), "\n".join(lines))
        return None


class DataChannel:
    """The connection after the ``354``, handed to a caller that writes the content itself.

    For :mod:`smtp_probe.probe.smuggling` only: its content must reach the
    server byte for byte, and aiosmtplib's line-ending normalisation and
    dot-stuffing would repair exactly the bytes under test; aiosmtplib's
    reader also cannot take several pipelined replies at once. The caller
    owns :attr:`transport` from now on (it may give it a protocol of its
    own); the connection is closed when it returns.
    """

    def __init__(self, session: _Session, transport: asyncio.Transport) -> None:
        self._session = session
        self.transport = transport

    @property
    def reply_timeout(self) -> float:
        """How long to wait for one reply: the server's command timeout, within the run deadline."""
        return self._session.op_timeout()

    def sent(self, text: str) -> None:
        """Record a line of what was written (the caller shows raw bytes escaped)."""
        self._session.sent(text)

    def received(self, code: int, message: str) -> None:
        """Record a reply read off the transport."""
        self._session.received(code, message)

    def note(self, text: str) -> None:
        """Record what the caller observed."""
        self._session.transcript.note(text)


RawContent = Callable[[DataChannel], Awaitable[tuple[int, str] | None]]
"""Writes the DATA content itself; returns the reply to its end of data, or
``None`` when the server closed the connection without one. May raise
``TimeoutError`` (no reply in time) or ``OSError``."""


async def _raw_transfer(session: _Session, client: aiosmtplib.SMTP, write: RawContent) -> None:
    """Hand the connection to ``write`` after the ``354``; its reply decides like a ``250`` would.

    Raises:
        SmtpSendError: at ``data``: no reply, a refusal, or a lost connection.
    """
    transport = client.transport
    if not isinstance(transport, asyncio.Transport):
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        reply = await write(DataChannel(session, transport))
    except TimeoutError:
        if time.monotonic() >= session.deadline - _DEADLINE_SLACK:
            raise session.fail("no reply to the end of data before the run deadline") from None
        raise session.fail(
            f"no reply to the end of data within {session.server.timeout:g}s"
        ) from None
    finally:
        # The transport is no longer aiosmtplib's to read or QUIT on.
        client.close()
    if reply is None:
        raise session.fail("server closed the connection without a reply to the end of data")
    code, text = reply
    session.reply_code, session.reply = code, text
    if code != _OK:
        raise session.fail(f"server replied {code} {_first_line(text)}")
    session.accepted_at = time.monotonic()
    session.queue_id = parse_queue_id(text)


async def _stopped(session: _Session, client: aiosmtplib.SMTP, stage: Stage) -> bool:
    """End the session here if it is to stop after ``stage``; True if it did.

    In a transaction (after MAIL FROM) an ``RSET`` cancels it; after the
    ``354`` of DATA there is no command to cancel with, so the connection
    is closed without the message (the server discards a message whose
    final dot never came). The QUIT is the caller's. The replies to RSET
    are shown but do not replace the reply the report keeps.
    """
    if not session.stops_after(stage):
        return False
    session.finish_stage()
    if stage is Stage.DATA:
        session.transcript.note(f"stopping after {stage}: closing without sending the message")
        client.close()
        return True
    session.transcript.note(f"stopping after {stage}: nothing is sent")
    if stage in (Stage.MAIL_FROM, Stage.RCPT_TO):
        session.transcript.sent("RSET", tls=session.in_tls)
        try:
            reply = await client.rset(timeout=min(_QUIT_TIMEOUT, session.op_timeout()))
        except aiosmtplib.SMTPResponseException as exc:
            session.transcript.received(f"{exc.code} {exc.message}", tls=session.in_tls)
        except aiosmtplib.SMTPException:
            # Nothing was accepted after all: a server that will not RSET is just hung up on.
            session.transcript.note("no reply to RSET; closing the connection")
            client.close()
        else:
            session.transcript.received(f"{reply.code} {reply.message}", tls=session.in_tls)
    return True


def xtext(text: str) -> str:
    """``text`` as RFC 3461 §4 xtext: ``+``, ``=`` and bytes outside ``!``..``~`` as ``+XX``."""
    return "".join(
        chr(byte) if 33 <= byte <= 126 and byte not in (0x2B, 0x3D) else f"+{byte:02X}"
        for byte in text.encode()
    )


async def _transfer(
    client: aiosmtplib.SMTP, payload: bytes, *, timeout: float
) -> aiosmtplib.SMTPResponse:
    """Send the message after the ``354`` and read the reply to its final dot.

    What aiosmtplib's ``execute_data_command`` does after DATA: CRLF line
    endings, dot-stuffing, the terminating ``.``. No command lock is needed:
    this run owns the client and sends nothing else meanwhile.

    Raises:
        aiosmtplib.SMTPServerDisconnected: the connection was lost.
        aiosmtplib.SMTPTimeoutError: no reply within ``timeout``.
    """
    data = _LEADING_DOT.sub(b"..", normalize_message_line_endings(payload)) + b".\r\n"
    return await _write_and_read(client, data, timeout=timeout)


async def _write_and_read(
    client: aiosmtplib.SMTP, data: bytes, *, timeout: float
) -> aiosmtplib.SMTPResponse:
    """Write ``data`` as it is and read one reply on aiosmtplib's own protocol.

    Raises:
        aiosmtplib.SMTPServerDisconnected: the connection was lost.
        aiosmtplib.SMTPTimeoutError: no reply within ``timeout``.
    """
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        protocol.write(data)
        # read_response arms the reply before the loop can deliver a byte of it.
        return await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        # As aiosmtplib does: a reply we gave up on would pair with the next command.
        client.close()
        raise


async def _command(
    session: _Session,
    text: str,
    call: Awaitable[aiosmtplib.SMTPResponse],
    *,
    expect: int | None = None,
) -> aiosmtplib.SMTPResponse:
    """Send one command (already started as ``call``), record it and its reply.

    Raises:
        SmtpSendError: the server answered with an error reply (or, with
            ``expect``, any other code).
    """
    session.sent(text)
    return await _reply(session, call, expect=expect)


async def _reply(
    session: _Session, call: Awaitable[aiosmtplib.SMTPResponse], *, expect: int | None = None
) -> aiosmtplib.SMTPResponse:
    """Await the reply to what was just sent and record it.

    Raises:
        SmtpSendError: the server answered with an error reply (or, with
            ``expect``, any other code).
    """
    try:
        reply = await call
    except aiosmtplib.SMTPResponseException as exc:
        session.received(exc.code, exc.message)
        raise session.fail(f"server replied {exc.code} {_first_line(exc.message)}") from None
    session.received(reply.code, reply.message)
    if expect is not None and reply.code != expect:
        raise session.fail(f"server replied {reply.code} {_first_line(reply.message)}")
    return reply


async def _greet(session: _Session, client: aiosmtplib.SMTP, helo: str) -> None:
    """``EHLO``; a server that does not know it gets ``HELO``, as RFC 5321 §3.2 asks.

    Without ESMTP there is no STARTTLS and no AUTH: a probe that needs
    either fails here rather than sending in the clear or unauthenticated.

    Raises:
        SmtpSendError: at ``ehlo``.
    """
    server = session.server
    session.enter(Stage.EHLO)
    session.sent(f"EHLO {helo}")
    try:
        reply = await client.ehlo(hostname=helo, timeout=session.op_timeout())
    except aiosmtplib.SMTPHeloError as exc:
        session.received(exc.code, exc.message)
        first = f"server replied {exc.code} {_first_line(exc.message)}"
        if exc.code not in _NOT_ESMTP:
            raise session.fail(first) from None
        needed = [
            name
            for name, needs in (
                ("STARTTLS", server.tls is TlsMode.STARTTLS),
                ("AUTH", bool(server.username)),
            )
            if needs
        ]
        if needed:
            raise session.fail(
                f"{first}: the server does not speak ESMTP, so {' and '.join(needed)} "
                f"{'is' if len(needed) == 1 else 'are'} impossible"
            ) from None
        # client.helo() also marks the session greeted: aiosmtplib won't greet again on its own.
        await _command(
            session, f"HELO {helo}", client.helo(hostname=helo, timeout=session.op_timeout())
        )
        return
    session.received(reply.code, reply.message)


async def _ehlo(session: _Session, client: aiosmtplib.SMTP, helo: str) -> None:
    """``EHLO`` again inside TLS; here it must work, since STARTTLS did.

    Raises:
        SmtpSendError: at ``ehlo``.
    """
    session.enter(Stage.EHLO)
    await _command(
        session, f"EHLO {helo}", client.ehlo(hostname=helo, timeout=session.op_timeout())
    )


async def _authenticate(session: _Session, client: aiosmtplib.SMTP) -> None:
    """``AUTH`` with the password, or with an OAuth2 token when the server has ``oauth``.

    Raises:
        SmtpSendError: at ``auth`` (no usable mechanism, refused), or at
            ``oauth`` (a new token could not be obtained).
    """
    server = session.server
    username = server.username or ""
    password = server.password.reveal() if server.password else ""
    if not client.supports_extension("auth"):
        hint = "" if session.in_tls else " (many servers offer AUTH only after STARTTLS)"
        raise session.fail(f"server offers no AUTH{hint}")
    if server.oauth is not None:
        # What the server offers, not only what aiosmtplib has a method for.
        offered = list(dict.fromkeys(method.lower() for method in client.server_auth_methods))
        await _authenticate_oauth(session, client, server.oauth, offered)
        return
    offered = [method.lower() for method in client.supported_auth_methods]
    mechanism = next((m for m in _AUTH_PREFERENCE if m in offered), None)
    if mechanism is None:
        raise session.fail(f"no supported AUTH mechanism among {', '.join(offered)}")
    methods = {
        "plain": client.auth_plain,
        "login": client.auth_login,
        "cram-md5": client.auth_crammd5,
    }
    # The transcript shows the mechanism only; redact_command drops the rest.
    await _command(
        session,
        f"AUTH {mechanism.upper()} ********",
        methods[mechanism](username, password, timeout=session.op_timeout()),
    )


async def _authenticate_oauth(
    session: _Session, client: aiosmtplib.SMTP, source: TokenSource, offered: list[str]
) -> None:
    """``AUTH OAUTHBEARER`` (or ``XOAUTH2``); a refused token from the cache gets one more try.

    The retry is on the same connection: SMTP allows a new AUTH after a
    failed one. A fresh token that is refused is the credential's fault,
    not the cache's, and is not retried.

    Raises:
        SmtpSendError: at ``auth`` or ``oauth``.
    """
    mechanism = sasl.choose(offered)
    if mechanism is None:
        names = " ".join(name.upper() for name in offered) or "no mechanism"
        raise session.fail(
            f"server offers neither {sasl.OAUTHBEARER} nor {sasl.XOAUTH2} (AUTH {names})"
        )
    token = session.token if session.token is not None else await _new_token(session, source)
    refusal = await _sasl_exchange(session, client, mechanism, token)
    if refusal is None:
        return
    if token.fresh or not client.is_connected:
        raise session.fail(refusal)
    source.reject(token)
    session.transcript.note(
        f"oauth: the cached token from {source.client} was refused; trying once more with a new one"
    )
    token = await _new_token(session, source)
    refusal = await _sasl_exchange(session, client, mechanism, token)
    if refusal is not None:
        raise session.fail(refusal)


async def _new_token(session: _Session, source: TokenSource) -> AccessToken:
    """A token from ``source`` within the run deadline, noted and masked in the transcript.

    Raises:
        SmtpSendError: at ``oauth``: none could be obtained.
    """
    try:
        token = await obtain(source, session.deadline)
    except TokenError as exc:
        raise session.fail(f"{source.client}: {exc.reason}", Stage.OAUTH) from None
    session.transcript.mask(token.value.reveal())
    session.transcript.note(f"oauth: token from {source.client} ({describe(token)})")
    session.token = token
    return token


async def _sasl_exchange(
    session: _Session, client: aiosmtplib.SMTP, mechanism: str, token: AccessToken
) -> str | None:
    """One OAuth2 AUTH exchange: ``None`` when logged in, the reason when the token was refused.

    The initial response goes on the AUTH line when it fits in the command
    line limit (large Entra ID tokens do not), else after the ``334``. A
    ``334`` answering it is the error challenge: shown decoded, acknowledged
    as the mechanism requires, then comes the refusal.

    Raises:
        SmtpSendError: at ``auth``, for any failure but a ``535`` (a
            temporary ``454``, a protocol error): nothing a new token mends.
    """
    server = session.server
    payload = sasl.initial_response(
        mechanism,
        user=server.username or "",
        token=token.value.reveal(),
        host=server.host,
        port=server.port,
    )
    session.transcript.mask(payload.decode())
    encoded = base64.b64encode(payload)
    name = mechanism.encode()
    if len(b"AUTH " + name + b" " + encoded) + 2 <= _COMMAND_LINE_MAX:
        session.sent(f"AUTH {mechanism} {REDACTED}")
        reply = await _auth_reply(session, client, b"AUTH", name, encoded)
    else:
        session.sent(f"AUTH {mechanism}")
        reply = await _auth_reply(session, client, b"AUTH", name)
        if reply.code == _AUTH_CONTINUE:
            session.received(reply.code, reply.message)
            session.sent(REDACTED)
            reply = await _auth_reply(session, client, encoded)
    challenge: bytes | None = None
    if reply.code == _AUTH_CONTINUE:
        challenge = _decoded(reply.message)
        session.received(reply.code, sasl.shown_challenge(challenge))
        acknowledgement = base64.b64encode(sasl.error_response(mechanism))
        session.sent(acknowledgement.decode())
        reply = await _auth_reply(session, client, acknowledgement)
        if reply.code == _AUTH_CONTINUE:
            session.received(reply.code, reply.message)
            session.sent("*")
            reply = await _auth_reply(session, client, b"*")
            session.received(reply.code, reply.message)
            raise session.fail(f"server sent a second challenge after the {mechanism} error")
    session.received(reply.code, reply.message)
    if reply.code == _AUTH_OK:
        return None
    reason = f"{reply.code} {_first_line(reply.message)}"
    if challenge is not None:
        reason += f" (token refused: {sasl.challenge_summary(challenge)})"
    if reply.code != _AUTH_REFUSED:
        raise session.fail(reason)
    return reason


async def _auth_reply(
    session: _Session, client: aiosmtplib.SMTP, *line: bytes
) -> aiosmtplib.SMTPResponse:
    """Send one line of an AUTH exchange (already in the transcript) and return the reply.

    As aiosmtplib's own ``auth_login`` does: ``execute_command`` returns any
    reply, error codes included; only a lost connection or a timeout raise.
    """
    return await client.execute_command(*line, timeout=session.op_timeout())


def _decoded(challenge: str) -> bytes:
    """A ``334`` challenge's bytes; one that is not base64 is taken as it came."""
    try:
        return base64.b64decode(challenge.strip(), validate=True)
    except ValueError:
        return challenge.encode()


async def _quit(session: _Session, client: aiosmtplib.SMTP) -> None:
    """Say goodbye politely if the connection is still up; never fail the run over it."""
    if not client.is_connected or time.monotonic() >= session.deadline:
        client.close()
        return
    try:
        async with asyncio.timeout(_QUIT_TIMEOUT):
            session.transcript.sent("QUIT", tls=session.in_tls)
            reply = await client.quit(timeout=_QUIT_TIMEOUT)
            session.transcript.received(f"{reply.code} {reply.message}", tls=session.in_tls)
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        session.transcript.note("connection closed without a QUIT reply")
    finally:
        client.close()


def _note_tls(session: _Session, client: aiosmtplib.SMTP) -> None:
    """Record that the connection is inside TLS now, and what TLS it is."""
    session.in_tls = True
    ssl_object = client.get_transport_info("ssl_object") or client.get_transport_info("sslobject")
    if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        session.tls = tls_facts(ssl_object, verified=session.verified)
        session.tls_version = session.tls.version
    session.transcript.note(f"TLS established ({session.tls_version})")
    if session.tls is not None:
        session.transcript.note(describe_facts(session.tls, time.time()))


def _peer(sock: socket.socket) -> str:
    host, port = sock.getpeername()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_reason(exc: OSError) -> str:
    # asyncio's sock_connect says "Connect call failed (...)"; the errno says why.
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


def _order(stage: Stage | None) -> int:
    return SMTP_STAGES.index(stage) if stage in SMTP_STAGES else -1


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _explain(exc: aiosmtplib.SMTPException) -> str:
    return _first_line(exc.message) or type(exc).__name__
