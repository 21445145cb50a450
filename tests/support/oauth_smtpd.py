r"""aiosmtpd taking OAuth2 logins, standing for Postfix submission with Dovecot SASL (oauth2 passdb).

What the client sees is what the research note ``oauth-dovecot.md``
recorded from Postfix 3.7 + Dovecot 2.3: EHLO offers ``AUTH PLAIN LOGIN
XOAUTH2 OAUTHBEARER``; a good token gets ``235 2.7.0 Authentication
successful``; a bad one gets a ``334`` base64 JSON error challenge (Dovecot's
texts: ``{"status":"401","schemes":"bearer","scope":"mail"}`` for XOAUTH2,
``{"status":"invalid_token"}`` for OAUTHBEARER), then, after the client's
acknowledgement, ``535 5.7.8 Error: authentication failed``. Unlike Dovecot,
which takes any acknowledgement, this server checks it is the one the
mechanism prescribes (empty for XOAUTH2, ``\x01`` for OAUTHBEARER) and
answers ``501`` otherwise, so a wrong client fails its test.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from tests.support.loopback_smtpd import LOOPBACK, Behaviour

XOAUTH2_ERROR: Final = {"status": "401", "schemes": "bearer", "scope": "mail"}
OAUTHBEARER_ERROR: Final = {"status": "invalid_token"}
REFUSED: Final = "535 5.7.8 Error: authentication failed"
TEMPORARY: Final = "454 4.7.0 Temporary authentication failure"
_XOAUTH2: Final = re.compile(rb"^user=([^\x01]*)\x01auth=Bearer ([^\x01]+)\x01\x01$")
_GS2: Final = re.compile(rb"^n,a=([^,]*),\x01(.*)\x01$", re.DOTALL)


@dataclass
class Attempt:
    """One OAuth2 login as the server read it."""

    mechanism: str
    user: str
    token: str
    fields: dict[str, str] = field(default_factory=dict)
    """OAUTHBEARER's key-value pairs other than ``auth`` (``host``, ``port``)."""
    initial_response_inline: bool = True
    """The initial response came on the AUTH line (not after a ``334``)."""
    acknowledgement: bytes | None = None
    """The client's answer to the error challenge, decoded; ``None`` if none was sent."""


@dataclass
class OAuthBehaviour(Behaviour):
    """A :class:`Behaviour` whose AUTH also takes ``XOAUTH2`` and ``OAUTHBEARER`` tokens.

    ``tokens`` are the tokens the authorization server would vouch for, for
    ``user``; ``temporary`` answers every OAuth2 login ``454`` (Dovecot's
    introspection endpoint down). Every attempt is recorded. ``deliver``,
    if given, is handed each accepted message (into a test's IMAP server).
    """

    user: str = "probe@example.test"
    tokens: set[str] = field(default_factory=set)
    temporary: bool = False
    deliver: Callable[[bytes], None] | None = None
    attempts: list[Attempt] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Accept as :class:`Behaviour` does, then deliver."""
        reply = await super().handle_DATA(server, session, envelope)
        if self.deliver is not None and reply.startswith("250"):
            self.deliver(self.messages[-1])
        return reply

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """XOAUTH2: ``user=U^Aauth=Bearer T^A^A``."""
        response = await _initial_response(server, args)
        if response is None:
            return AuthResult(success=False, handled=True)
        match = _XOAUTH2.match(response)
        if match is None:
            await server.push("501 5.5.2 malformed XOAUTH2 response")
            return AuthResult(success=False, handled=True)
        attempt = Attempt("XOAUTH2", match[1].decode(), match[2].decode())
        attempt.initial_response_inline = len(args) > 1
        return await self._verify(server, attempt, XOAUTH2_ERROR, b"")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        """OAUTHBEARER: ``n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A`` (RFC 7628)."""
        response = await _initial_response(server, args)
        if response is None:
            return AuthResult(success=False, handled=True)
        match = _GS2.match(response)
        pairs = dict(
            part.decode().split("=", 1)
            for part in (match[2] if match else b"").split(b"\x01")
            if part
        )
        auth = pairs.pop("auth", "")
        if match is None or not auth.startswith("Bearer "):
            await server.push("501 5.5.2 malformed OAUTHBEARER response")
            return AuthResult(success=False, handled=True)
        user = match[1].decode().replace("=2C", ",").replace("=3D", "=")
        attempt = Attempt("OAUTHBEARER", user, auth.removeprefix("Bearer "), pairs)
        attempt.initial_response_inline = len(args) > 1
        return await self._verify(server, attempt, OAUTHBEARER_ERROR, b"\x01")

    async def _verify(
        self, server: SMTP, attempt: Attempt, error: dict[str, str], acknowledgement: bytes
    ) -> AuthResult:
        self.attempts.append(attempt)
        if self.temporary:
            return AuthResult(success=False, handled=False, message=TEMPORARY)
        if attempt.token in self.tokens and attempt.user == self.user:
            return AuthResult(success=True)
        answer = await server.challenge_auth(json.dumps(error, separators=(",", ":")))
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(answer, bytes)
        attempt.acknowledgement = answer
        if answer != acknowledgement:
            await server.push("501 5.5.2 unexpected response to the error challenge")
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=REFUSED)


async def _initial_response(server: SMTP, args: list[str]) -> bytes | None:
    """The decoded initial response: from the AUTH line, or asked for with an empty ``334``."""
    if len(args) > 1:
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await server.push("501 5.5.2 Can't decode base64")
            return None
    answer = await server.challenge_auth("", encode_to_b64=False)
    return answer if isinstance(answer, bytes) else None


@contextmanager
def listener() -> Iterator[tuple[int, Callable[[], int]]]:
    """A port that takes connections and never answers, and a count of the connections made.

    For "nothing was sent": a run pointed here that connects is caught,
    whether or not it got as far as saying anything.
    """
    with socket.create_server((LOOPBACK, 0), backlog=8) as server:
        server.setblocking(False)
        accepted: list[socket.socket] = []

        def connections() -> int:
            while True:
                try:
                    conn, _ = server.accept()
                except BlockingIOError:
                    return len(accepted)
                accepted.append(conn)

        try:
            yield server.getsockname()[1], connections
        finally:
            for conn in accepted:
                conn.close()
