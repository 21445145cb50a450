"""How the engine asks for an OAuth2 access token, without knowing where tokens come from.

The engine (SMTP ``AUTH XOAUTH2``/``OAUTHBEARER``, IMAP ``AUTHENTICATE``)
only sees :class:`TokenSource`: a shared, thread-safe cache in front of one
configured OAuth client (:mod:`smtp_probe.oauth`). ``probe/`` never imports
the OAuth libraries; a run that needs no token never loads them.
"""

from __future__ import annotations

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
