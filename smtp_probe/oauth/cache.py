"""One OAuth client's tokens: fetched once, shared by every probe and watcher, refreshed ahead of expiry.

A :class:`TokenCache` sits in front of one provider's *fetch* function (a
blocking call that asks the token endpoint or runs the token command). It
holds the current token in memory only, hands it out while it has a while
left to live, and fetches a new one when it is close to expiry or a server
refused it. One fetch runs at a time per client; callers arriving meanwhile
wait for it (within their own timeout) instead of asking the endpoint again.
When refreshing ahead fails, the current token is still handed out while it
has more than a few seconds to live (the failure is reported all the same),
and the next call asks again. A token handed out again from the cache is
marked ``fresh=False``: a server that refuses it gets one retry with a new one.

A fetch runs in a worker thread that the caller waits for with a hard
deadline: a token endpoint that accepts the connection and never answers
costs a run its timeout, never more, whatever the HTTP library does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from smtp_probe.probe.credentials import AccessToken, TokenError, seconds_text
from smtp_probe.secret import Secret

REFRESH_AHEAD_MAX: Final = 300.0
"""A token is replaced at most this many seconds before it expires ..."""
REFRESH_AHEAD_SHARE: Final = 0.25
"""... or when less than this share of its lifetime is left, if that comes later."""
FETCH_MARGIN: Final = 0.25
"""A fetch's own deadline comes this much (at most a tenth of its time) before the
caller stops waiting for it. A fetch that keeps its deadline then ends first,
in its own words, and cleans up after itself: a token command is killed before
``smtp-probe check`` exits and its daemon worker thread with it (the helper would
otherwise be left running, in a session of its own), and the reason says
"token command ...: killed", not "no answer from the token endpoint". The
caller's wait stays the hard stop for a fetch that does not keep its deadline."""
LAST_USE_MARGIN: Final = 5.0
"""A token this close to expiry is not handed out when its refresh failed: it
could expire between the SMTP AUTH and the IMAP login of one run."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a provider's fetch returns: the token and when it expires (epoch seconds, if known)."""

    value: Secret
    expires_at: float | None


Fetch = Callable[[float], Fetched]
"""A provider's blocking token request; its argument is the timeout in seconds.

Raises :class:`TokenError` with a reason that names no secret.
"""


class TokenObserver(Protocol):
    """Told about every token request (the daemon's metrics)."""

    def token_requested(
        self, client: str, result: str, seconds: float, expires_at: float | None
    ) -> None:
        """One request to ``client``'s endpoint ended with ``result`` (``success`` or an error)."""
        ...


@dataclass(slots=True)
class _Current:
    token: AccessToken
    refresh_at: float | None
    """Wall-clock second after which the token is replaced; ``None``: never by age."""
    cached: AccessToken
    """The same token as handed out again from the cache (``fresh=False``)."""


class TokenCache:
    """The :class:`~smtp_probe.probe.credentials.TokenSource` of one OAuth client."""

    def __init__(self, client: str, fetch: Fetch, *, timeout: float) -> None:
        """``fetch`` asks the provider; ``timeout`` caps one request whatever the caller allows."""
        self._client = client
        self._fetch = fetch
        self._timeout = timeout
        self._lock = threading.Lock()
        self._current: _Current | None = None
        self.observer: TokenObserver | None = None

    def __repr__(self) -> str:
        return f"TokenCache({self._client!r})"

    @property
    def client(self) -> str:
        """The client's name in ``oauth_clients``."""
        return self._client

    @property
    def expires_at(self) -> float | None:
        """When the cached token expires (epoch seconds), if there is one and it says."""
        current = self._current
        return current.token.expires_at if current else None

    def token(self, timeout: float) -> AccessToken:
        """The cached token, or a new one if it is due for refresh.

        Raises:
            TokenError: the fetch failed or did not end within ``timeout``.
        """
        give_up = time.monotonic() + timeout
        if not self._lock.acquire(timeout=max(0.0, timeout)):
            raise TokenError(
                f"no token within {seconds_text(timeout)}s (another request to the endpoint is still running)",
                "timeout",
            )
        try:
            current = self._current
            if current is not None and not _due(current):
                return current.cached
            try:
                fetched = self._request(max(0.0, give_up - time.monotonic()))
            except TokenError:
                # Refreshing ahead failed (and was observed): the token still
                # works for a while, so this run goes on with it; the next
                # call asks the endpoint again.
                if current is not None and _usable(current.token):
                    return current.cached
                raise
            token = AccessToken(fetched.value, fetched.expires_at, fresh=True)
            self._current = _Current(
                token,
                _refresh_at(fetched.expires_at),
                AccessToken(fetched.value, fetched.expires_at, fresh=False),
            )
            return token
        finally:
            self._lock.release()

    def reject(self, token: AccessToken) -> None:
        """Forget ``token`` if it is still the cached one: the next :meth:`token` fetches anew."""
        with self._lock:
            if self._current is not None and self._current.token.value == token.value:
                self._current = None

    def _request(self, timeout: float) -> Fetched:
        """Run one fetch in a worker thread, waiting at most ``timeout`` (capped by the client's).

        The fetch gets the client's timeout, and the caller waits a margin
        longer (:data:`FETCH_MARGIN`); when the caller's own timeout is the
        shorter, the fetch gets a margin less than that.
        """
        if timeout >= self._timeout + _margin(self._timeout):
            limit = self._timeout
            wait = limit + _margin(limit)
        else:
            wait = max(0.0, timeout)
            limit = wait - _margin(wait)
        box: list[Fetched | BaseException] = []
        done = threading.Event()

        def work() -> None:
            try:
                box.append(self._fetch(limit))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                box.append(exc)
            finally:
                done.set()

        started = time.monotonic()
        worker = threading.Thread(target=work, name=f"oauth {self._client}", daemon=True)
        worker.start()
        finished = done.wait(wait)
        seconds = time.monotonic() - started
        if not finished:
            self._observe("timeout", seconds, None)
            raise TokenError(
                f"no answer from the token endpoint within {seconds_text(limit)}s", "timeout"
            )
        outcome = box[0]
        if isinstance(outcome, TokenError):
            self._observe(outcome.result, seconds, None)
            raise outcome
        if isinstance(outcome, BaseException):
            self._observe("bad_response", seconds, None)
            raise TokenError(f"token request failed: {type(outcome).__name__}", "bad_response")
        self._observe("success", seconds, outcome.expires_at)
        return outcome

    def _observe(self, result: str, seconds: float, expires_at: float | None) -> None:
        observer = self.observer
        if observer is not None:
            observer.token_requested(self._client, result, seconds, expires_at)


def _margin(seconds: float) -> float:
    return min(FETCH_MARGIN, seconds / 10)


def _refresh_at(expires_at: float | None) -> float | None:
    if expires_at is None:
        return None
    lifetime = max(0.0, expires_at - time.time())
    return expires_at - min(REFRESH_AHEAD_MAX, lifetime * REFRESH_AHEAD_SHARE)


def _usable(token: AccessToken) -> bool:
    """Still worth sending: more than :data:`LAST_USE_MARGIN` seconds before it expires."""
    return token.expires_at is not None and time.time() < token.expires_at - LAST_USE_MARGIN


def _due(current: _Current) -> bool:
    return current.refresh_at is not None and time.time() >= current.refresh_at
