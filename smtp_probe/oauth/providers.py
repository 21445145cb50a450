"""Asking each kind of provider for a token: one fetch function per configured client.

:func:`fetcher` picks the provider module by the client's settings and
imports it (and with it msal, google-auth, authlib or requests) only then:
a process that never fetches a token never loads them. The fetch it returns
keeps the library's client object (MSAL's application, google-auth's
credentials, authlib's session) from one fetch to the next; the
:class:`~smtp_probe.oauth.cache.TokenCache` in front of it decides when to fetch.
"""

from __future__ import annotations

from smtp_probe.oauth.cache import Fetch, Fetched
from smtp_probe.oauth.settings import (
    CommandClient,
    GenericClient,
    GoogleClient,
    MicrosoftClient,
    OAuthClient,
)


def fetcher(client: OAuthClient) -> Fetch:
    """The blocking fetch of ``client``'s provider (its argument: the timeout in seconds)."""
    settings = client.provider
    if isinstance(settings, MicrosoftClient):
        from smtp_probe.oauth.microsoft import MicrosoftFetch

        return MicrosoftFetch(client, settings)
    if isinstance(settings, GoogleClient):
        from smtp_probe.oauth.google import GoogleFetch

        return GoogleFetch(client, settings)
    if isinstance(settings, GenericClient):
        from smtp_probe.oauth.generic import GenericFetch

        return GenericFetch(client, settings)
    if isinstance(settings, CommandClient):
        from smtp_probe.oauth.command import CommandFetch

        return CommandFetch(settings)
    raise TypeError(f"unknown provider settings {type(settings).__name__}")


def fetch_token(client: OAuthClient, timeout: float) -> Fetched:
    """Ask ``client``'s provider for a new token within ``timeout`` seconds (a one-off fetch).

    Raises:
        TokenError: the endpoint or command failed; the reason names no secret.
    """
    return fetcher(client)(timeout)
