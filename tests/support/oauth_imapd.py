r"""pymap taking OAuth2 ``AUTHENTICATE``, standing for Dovecot with its oauth2 passdb.

A real IMAP server (pymap's in-memory ``dict`` backend) in a thread of its
own on 127.0.0.1, with two SASL mechanisms added through pysasl's server
interface, written here because pysasl's own ``XOAUTH2`` knows no error
challenge and it has no ``OAUTHBEARER``. They answer as Dovecot 2.3 does
(``mech-oauth2.c``; ``oauth-dovecot.md`` in the research notes): the
capabilities list ``AUTH=PLAIN AUTH=LOGIN`` and the OAuth2 ones; a good
token logs in; a bad one gets a ``+`` base64 JSON error challenge
(``{"status":"401","schemes":"bearer","scope":"mail"}`` for XOAUTH2,
``{"status":"invalid_token"}`` for OAUTHBEARER) and, after the client's
acknowledgement, ``NO [AUTHENTICATIONFAILED]``; with ``temporary`` set,
``NO [UNAVAILABLE] Temporary authentication failure.`` (the introspection
endpoint down). Unlike Dovecot, which takes any acknowledgement, it checks
the client sent the one the mechanism prescribes (empty for XOAUTH2,
``\x01`` for OAUTHBEARER) and answers ``BAD`` otherwise.

:meth:`OAuthImapd.deliver` appends a message to a folder, thread-safely:
the SMTP harness of a test delivers through it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from argparse import Namespace
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from proxyprotocol.noop import ProxyProtocolNoop
from proxyprotocol.result import ProxyResultLocal
from proxyprotocol.sock import SocketInfo
from pymap.backend.dict import Config as DictConfig
from pymap.backend.dict import Login
from pymap.backend.dict.filter import FilterSet
from pymap.backend.dict.mailbox import MailboxSet
from pymap.concurrent import Subsystem
from pymap.exceptions import ResponseError
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.parsing.response import ResponseCode, ResponseNo
from pymap.user import Passwords, UserMetadata
from pysasl import SASLAuth
from pysasl.creds.server import ServerCredentials
from pysasl.exception import InvalidResponse
from pysasl.hashing import Cleartext
from pysasl.identity import Identity
from pysasl.mechanism import ChallengeResponse, ServerChallenge, ServerMechanism

from tests.support.loopback_smtpd import LOOPBACK
from tests.support.oauth_smtpd import OAUTHBEARER_ERROR, XOAUTH2_ERROR, Attempt

USER: Final = "probe@example.test"
PASSWORD: Final = "imap-password"  # noqa: S105 - the test server's own user
_XOAUTH2: Final = re.compile(rb"^user=([^\x01]*)\x01auth=Bearer ([^\x01]+)\x01\x01$")
_GS2: Final = re.compile(rb"^n,a=([^,]*),\x01(.*)\x01$", re.DOTALL)
_START_TIMEOUT: Final = 5.0


@dataclass
class OAuthImapd:
    """The server's state, shared with its thread: tokens it vouches for and what it saw."""

    tokens: set[str] = field(default_factory=set)
    user: str = USER
    mechanisms: Sequence[str] = ("XOAUTH2", "OAUTHBEARER")
    temporary: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _mailboxes: MailboxSet | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def _running(self) -> tuple[asyncio.AbstractEventLoop, MailboxSet]:
        if self._loop is None or self._mailboxes is None:
            raise RuntimeError("the server is not running")
        return self._loop, self._mailboxes

    def deliver(self, message: bytes, folder: str = "INBOX") -> None:
        """Append ``message`` to ``folder`` (from any thread), as a local delivery would."""
        loop, mailboxes = self._running()

        async def append() -> None:
            mailbox = await mailboxes.get_mailbox(folder)
            await mailbox.append(AppendMessage(message, datetime.now(UTC)), recent=True)

        asyncio.run_coroutine_threadsafe(append(), loop).result(_START_TIMEOUT)

    def drop_connections(self) -> None:
        """Close every client connection, as a server restart would."""
        loop, _ = self._running()

        async def drop() -> None:
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(drop(), loop).result(_START_TIMEOUT)

    def message_count(self, folder: str = "INBOX") -> int:
        """How many messages ``folder`` holds now."""
        loop, mailboxes = self._running()

        async def count() -> int:
            mailbox = await mailboxes.get_mailbox(folder)
            return len([message async for message in mailbox.messages()])

        return asyncio.run_coroutine_threadsafe(count(), loop).result(_START_TIMEOUT)


@contextmanager
def oauth_imapd(
    tokens: Iterable[str],
    *,
    mechanisms: Sequence[str] = ("XOAUTH2", "OAUTHBEARER"),
    temporary: bool = False,
) -> Iterator[OAuthImapd]:
    """Run the server on a free port of 127.0.0.1 until the block ends."""
    state = OAuthImapd(tokens=set(tokens), mechanisms=mechanisms, temporary=temporary)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="oauth-imapd", daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(_start(state), loop).result(_START_TIMEOUT)
    state._loop = loop
    try:
        yield state
    finally:

        async def stop() -> None:
            server.close()
            for writer in list(state._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=_START_TIMEOUT) if tasks else None

        asyncio.run_coroutine_threadsafe(stop(), loop).result(_START_TIMEOUT * 2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT)
        loop.close()


async def _start(state: OAuthImapd) -> asyncio.Server:
    state._mailboxes = mailboxes = MailboxSet()
    config = _Config(
        Namespace(),
        host=None,
        port=0,
        demo_data=False,
        demo_user=state.user,
        demo_password=PASSWORD,
        tls_enabled=False,
        hash_context=Cleartext(),
        cpu_subsystem=Subsystem.for_asyncio(),
        proxy_protocol=ProxyProtocolNoop(),
        reject_dnsbl=False,
    )
    config.state = state
    login = Login(config)
    password = await Passwords(config).hash_password(PASSWORD)
    await login.demo_user_identity.set(UserMetadata(config, state.user, password=password))
    config.set_cache[state.user] = (mailboxes, FilterSet())
    imap = IMAPServer(login, config)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state._writers.add(writer)
        try:
            info = SocketInfo.get(writer, ProxyResultLocal(), unique_id=uuid.uuid4().bytes)
            await imap(reader, writer, info)
        finally:
            state._writers.discard(writer)

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    state.port = server.sockets[0].getsockname()[1]
    return server


class _Config(DictConfig):
    """pymap's dict-backend config, with the OAuth2 mechanisms and a greeting that needs no DNS."""

    state: OAuthImapd

    @property
    def greeting(self) -> bytes:
        return b"oauth-imapd ready"

    @property
    def tls_auth(self) -> SASLAuth:
        mechanisms: list[ServerMechanism] = list(SASLAuth.defaults().server_mechanisms)
        for name in self.state.mechanisms:
            mechanisms.append(_BearerMechanism(name, self.state))
        return SASLAuth(mechanisms)


class _Unavailable(ResponseError):
    """Dovecot's answer when it cannot check a token now."""

    def get_response(self, tag: bytes) -> ResponseNo:
        return ResponseNo(
            tag, b"Temporary authentication failure.", ResponseCode.of(b"UNAVAILABLE")
        )


class _Vouched(ServerCredentials):
    """Credentials the mechanism has already checked: ``ok`` is the verdict."""

    __slots__ = ("_ok", "_user")

    def __init__(self, user: str, *, ok: bool) -> None:
        self._user = user
        self._ok = ok

    @property
    def authcid(self) -> str:
        return self._user

    @property
    def authzid(self) -> str:
        return self._user

    def verify(self, identity: Identity | None) -> bool:
        return self._ok


class _BearerMechanism(ServerMechanism):
    """XOAUTH2 or OAUTHBEARER as Dovecot's ``mech-oauth2.c`` serves them."""

    def __init__(self, name: str, state: OAuthImapd) -> None:
        super().__init__(name)
        self._state = state

    def server_attempt(
        self, responses: Sequence[ChallengeResponse]
    ) -> tuple[ServerCredentials, bytes | None]:
        if not responses:
            raise ServerChallenge(b"")  # imaplib sends no initial response: ask for it
        mechanism = self.name.decode()
        attempt = _parse(mechanism, responses[0].response)
        state = self._state
        if len(responses) == 1:
            state.attempts.append(attempt)
            if state.temporary:
                raise _Unavailable()
            if attempt.token in state.tokens and attempt.user == state.user:
                return _Vouched(attempt.user, ok=True), None
            error = XOAUTH2_ERROR if mechanism == "XOAUTH2" else OAUTHBEARER_ERROR
            raise ServerChallenge(json.dumps(error, separators=(",", ":")).encode())
        acknowledgement = responses[1].response
        state.attempts[-1].acknowledgement = acknowledgement
        if acknowledgement != (b"" if mechanism == "XOAUTH2" else b"\x01"):
            raise InvalidResponse()
        return _Vouched(attempt.user, ok=False), None


def _parse(mechanism: str, response: bytes) -> Attempt:
    """The user, token and fields of an initial response.

    Raises:
        InvalidResponse: it is not one (pymap answers ``BAD``).
    """
    if mechanism == "XOAUTH2":
        match = _XOAUTH2.match(response)
        if match is None:
            raise InvalidResponse()
        return Attempt(mechanism, match[1].decode(), match[2].decode())
    gs2 = _GS2.match(response)
    if gs2 is None:
        raise InvalidResponse()
    pairs = dict(part.decode().split("=", 1) for part in gs2[2].split(b"\x01") if b"=" in part)
    auth = pairs.pop("auth", "")
    if not auth.startswith("Bearer "):
        raise InvalidResponse()
    user = gs2[1].decode().replace("=2C", ",").replace("=3D", "=")
    return Attempt(mechanism, user, auth.removeprefix("Bearer "), pairs)
