"""OAuth2 access tokens for SMTP and IMAP logins: providers, a shared cache, refresh ahead of expiry.

:func:`token_source` turns an :class:`~smtp_probe.oauth.settings.OAuthClient`
into a :class:`~smtp_probe.probe.credentials.TokenSource`. The provider
libraries (msal, google-auth, authlib) are imported only when a token is
first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtp_probe.oauth.cache import TokenCache
    from smtp_probe.oauth.settings import OAuthClient


def token_source(client: OAuthClient) -> TokenCache:
    """The token cache of ``client``; its provider library loads on the first fetch.

    The provider's fetch (and the library object it keeps, e.g. MSAL's
    application) lives as long as this cache: a reloaded config builds anew.
    """
    from smtp_probe.oauth.cache import Fetch, Fetched, TokenCache

    built: list[Fetch] = []

    def fetch(timeout: float) -> Fetched:
        if not built:
            from smtp_probe.oauth.providers import fetcher

            built.append(fetcher(client))
        return built[0](timeout)

    return TokenCache(client.name, fetch, timeout=client.timeout)
