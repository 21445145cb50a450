"""How the engine asks for an OAuth2 access token, without knowing where tokens come from.

The engine (SMTP ``AUTH XOAUTH2``/``OAUTHBEARER``, IMAP ``AUTHENTICATE``)
only sees :class:`TokenSource`: a shared, thread-safe cache in front of one
configured OAuth client (:mod:`smtp_probe.oauth`). ``probe/`` never imports
the OAuth libraries; a run that needs no token never loads them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from smtp_probe.secret import Secret


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token as handed to a server; its value never prints."""

    value: Secret
    expires_at: float | None
    """Wall-clock (epoch) second the token stops working; ``None`` when unknown."""
    fresh: bool
    """Fetched for this request rather than served from the cache: a fresh
    token the server refuses is not retried."""


class TokenError(Exception):
    """A token could not be obtained. ``reason`` and ``result`` are safe to show.

    ``reason`` is one line naming the endpoint's error (``invalid_client``,
    ``HTTP 503``, ``no answer within 5s``) and never holds a secret;
    ``result`` is the metric label value: ``invalid_client``,
    ``unauthorized_client``, ``invalid_grant``, ``http_error``, ``timeout``,
    ``unreachable``, ``bad_response`` or ``command_failed``.
    """

    def __init__(self, reason: str, result: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


def seconds_text(value: float) -> str:
    """A wait in a reason, as a reader expects it: ``2.9`` for the 2.8512 s a deadline left.

    Tenths from 0.1 s up, one significant digit below; never more digits.
    """
    return f"{round(value, 1):g}" if value >= 0.1 else f"{value:.1g}"


class TokenSource(Protocol):
    """One configured OAuth client's tokens, cached and shared by every user of the client."""

    @property
    def client(self) -> str:
        """The client's name in ``oauth_clients`` (metric label, transcript)."""
        ...

    def token(self, timeout: float) -> AccessToken:
        """A token valid for a while yet, fetched only if the cache has none.

        Blocking and thread-safe (IMAP watchers call it from their threads;
        the engine through ``asyncio.to_thread``); never waits longer than
        ``timeout`` seconds.

        Raises:
            TokenError: the token endpoint or command failed.
        """
        ...

    def reject(self, token: AccessToken) -> None:
        """A server refused ``token``: drop it, so the next :meth:`token` fetches anew."""
        ...


async def obtain(source: TokenSource, deadline: float) -> AccessToken:
    """A token from ``source`` before ``deadline`` (monotonic), without blocking the event loop.

    ``source.token`` runs in a daemon thread of its own rather than the
    default executor: a source that overruns its timeout must hold neither
    the run (which gives up at the deadline) nor the event loop's small
    shared thread pool (DNS lookups wait there), nor ``asyncio.run``'s
    shutdown (Python 3.11 waits for executor threads without a limit).

    Raises:
        TokenError: the source failed, or had no token by the deadline
            (result ``timeout``).
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TokenError("no time left before the run deadline", "timeout")
    future: concurrent.futures.Future[AccessToken] = concurrent.futures.Future()
    context = contextvars.copy_context()  # the log context, as asyncio.to_thread would keep it

    def fetch() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(source.token, remaining))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting run
            future.set_exception(exc)

    threading.Thread(target=fetch, name=f"oauth token {source.client}", daemon=True).start()
    try:
        async with asyncio.timeout(remaining) as limit:
            return await asyncio.wrap_future(future)
    except TimeoutError:
        if not limit.expired():
            raise  # the source's own, not the deadline
        raise TokenError(
            f"no token within {seconds_text(remaining)}s (the run deadline)", "timeout"
        ) from None


def describe(token: AccessToken, *, now: float | None = None) -> str:
    """``cached, expires in 57m``: where a token came from and how long it lives, never its value."""
    origin = "fresh" if token.fresh else "cached"
    if token.expires_at is None:
        return f"{origin}, expiry unknown"
    left = token.expires_at - (time.time() if now is None else now)
    if left <= 0:
        return f"{origin}, expired {_span(-left)} ago"
    return f"{origin}, expires in {_span(left)}"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"
