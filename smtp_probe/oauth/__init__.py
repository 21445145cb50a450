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
    """The token cache of ``client``; its provider library loads on the first fetch."""
    from smtp_probe.oauth.cache import Fetched, TokenCache

    def fetch(timeout: float) -> Fetched:
        from smtp_probe.oauth.providers import fetch_token

        return fetch_token(client, timeout)

    return TokenCache(client.name, fetch, timeout=client.timeout)
