"""A token source with fixed tokens, for engine tests: our own TokenSource protocol, not a library.

:class:`StaticTokens` behaves like :class:`smtp_probe.oauth.cache.TokenCache`
as the engine sees it (a current token served from the cache; a rejected
one replaced by a fresh one on the next request) without any token
endpoint behind it, and counts what it is asked. The real cache, providers
and authorization server are tested in their own modules.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence

from smtp_probe.probe.credentials import AccessToken, TokenError
from smtp_probe.secret import Secret

CANARY = "ya29.canary-TOKEN-must-never-show-4f9c2e"
"""A token value tests search every output for."""


class StaticTokens:
    """Hands out ``values`` in order: the first at first, each later one after a reject.

    ``fresh`` says whether the first request counts as a fetch (a refusal
    of its token is final) or as served from the cache (a refusal earns one
    retry). The first request after a :meth:`reject` is a fetch; every other
    request is served from the cache, as with the real cache. ``error`` (an
    attribute a test may set later, as when a client secret expires) makes
    every request fail; ``block`` makes every request hang until
    :meth:`release` (or its timeout) and then fail, like an endpoint that
    never answers.
    """

    def __init__(
        self,
        values: Sequence[str] = (CANARY,),
        *,
        client: str = "static",
        fresh: bool = False,
        lifetime: float = 3600.0,
        error: TokenError | None = None,
        block: bool = False,
        obey_timeout: bool = True,
    ) -> None:
        """``obey_timeout=False`` with ``block``: a source that ignores the timeout it is given."""
        self._client = client
        self._values = list(values)
        self._lifetime = lifetime
        self.error = error
        self._block = block
        self._obey_timeout = obey_timeout
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._index = 0
        self._fetch_next = fresh
        self.token_calls = 0
        self.timeouts: list[float] = []
        """The ``timeout`` of each :meth:`token` call."""
        self.rejected: list[str] = []
        """Values of the tokens the engine rejected, in order."""

    def __repr__(self) -> str:
        return f"StaticTokens({self._client!r})"

    @property
    def client(self) -> str:
        """The client name the engine reports."""
        return self._client

    def token(self, timeout: float) -> AccessToken:
        """The current token (see the class docstring).

        Raises:
            TokenError: ``error`` was given, the source blocks, or it ran out of values.
        """
        with self._lock:
            self.token_calls += 1
            self.timeouts.append(timeout)
        if self._block:
            self._released.wait(timeout if self._obey_timeout else None)
            raise TokenError(f"no answer within {timeout:g}s", "timeout")
        if self.error is not None:
            raise self.error
        with self._lock:
            if self._index >= len(self._values):
                raise TokenError("no more tokens", "invalid_grant")
            fresh, self._fetch_next = self._fetch_next, False
            return AccessToken(
                Secret(self._values[self._index]), time.time() + self._lifetime, fresh
            )

    def reject(self, token: AccessToken) -> None:
        """Drop ``token`` if it is the current one; the next :meth:`token` gives the next value."""
        with self._lock:
            value = token.value.reveal()
            self.rejected.append(value)
            if self._index < len(self._values) and self._values[self._index] == value:
                self._index += 1
                self._fetch_next = True

    def release(self) -> None:
        """Let blocked requests return (they fail)."""
        self._released.set()


def token_forms(token: str, *, user: str, host: str, port: int) -> list[str]:
    """The token in clear, in base64 alone, and inside both mechanisms' base64 initial responses."""
    b64 = base64.b64encode
    return [
        token,
        b64(token.encode()).decode(),
        b64(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode(),
        b64(
            f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()
        ).decode(),
    ]
