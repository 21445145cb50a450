"""Asking each kind of provider for a token: one blocking call per kind, errors in our words.

Placeholder for issue 8's token providers (msal, google-auth, authlib and
``token_command``); the provider helpers replace the bodies below.
"""

from __future__ import annotations

from smtp_probe.oauth.cache import Fetched
from smtp_probe.oauth.settings import OAuthClient
from smtp_probe.probe.credentials import TokenError


def fetch_token(client: OAuthClient, timeout: float) -> Fetched:
    """Ask ``client``'s provider for a new token within ``timeout`` seconds.

    Raises:
        TokenError: the endpoint or command failed; the reason names no secret.
    """
    raise TokenError(f"{type(client.provider).__name__} is not built yet", "bad_response")
