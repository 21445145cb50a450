"""Any RFC 6749 token endpoint through authlib: the client-credentials or the refresh-token grant.

authlib's ``OAuth2Session`` builds the request (``client_secret_basic``
when there is a secret, the public-client form when not) and parses the
answer; the session carries our deadline and CA like the other providers'.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError  # type: ignore[import-untyped]
from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]

from smtp_probe.oauth.cache import Fetched
from smtp_probe.oauth.endpoint import (
    Deadline,
    endpoint_error,
    http_status_error,
    no_token,
    transport_error,
)
from smtp_probe.oauth.settings import GenericClient, Grant, OAuthClient
from smtp_probe.probe.credentials import TokenError
from smtp_probe.secret import Secret


class _Session(Deadline, OAuth2Session):  # type: ignore[misc]
    """authlib's session with our deadline, CA and status record."""


class GenericFetch:
    """The fetch of one generic client: one authlib session, kept between fetches."""

    def __init__(self, client: OAuthClient, settings: GenericClient) -> None:
        self._settings = settings
        secret = settings.client_secret.reveal() if settings.client_secret else None
        self._session = _Session(settings.client_id, secret, scope=settings.scope)
        self._session.setup_deadline(client.ca_file)
        self._secrets = [
            s.reveal() for s in (settings.client_secret, settings.refresh_token) if s is not None
        ]

    def __call__(self, timeout: float) -> Fetched:
        """Ask the token endpoint for a token by the configured grant within ``timeout`` seconds.

        Raises:
            TokenError: the endpoint refused, failed or did not answer; the
                reason names no secret.
        """
        settings = self._settings
        session = self._session
        session.timeout = timeout
        try:
            if settings.grant is Grant.REFRESH_TOKEN:
                refresh_token = settings.refresh_token.reveal() if settings.refresh_token else ""
                token = session.refresh_token(settings.token_url, refresh_token=refresh_token)
            else:
                token = session.fetch_token(settings.token_url, grant_type=settings.grant.value)
        except OAuthError as exc:
            raise endpoint_error(
                exc.error, exc.description, session.last_status, secrets=self._secrets
            ) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise http_status_error(status, secrets=self._secrets) from None
        except requests.RequestException as exc:
            raise transport_error(exc, settings.token_url, timeout) from None
        except ValueError:
            raise TokenError(
                f"token endpoint: its answer is not a JSON object (HTTP {session.last_status})",
                "bad_response",
            ) from None
        return _fetched(token, session.last_status)


def _fetched(token: Any, status: int | None) -> Fetched:
    value = token.get("access_token") if isinstance(token, dict) else None
    if not isinstance(value, str) or not value:
        raise no_token(status)
    expires_in = token.get("expires_in")
    if (
        isinstance(expires_in, str)
        and expires_in.isascii()
        and expires_in.isdigit()
        and len(expires_in) <= 15
    ):
        expires_in = int(expires_in)  # some endpoints send a string (Google once did)
    expires_at = time.time() + expires_in if isinstance(expires_in, int | float) else None
    return Fetched(Secret(value), expires_at)
