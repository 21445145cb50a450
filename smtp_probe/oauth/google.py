"""Google tokens through google-auth: a service account acting as a user, or an installed app's refresh token.

A service account with domain-wide delegation signs a JWT (``sub`` = the
mailbox user, ``scope`` = ``https://mail.google.com/``) and trades it at the
token endpoint (RFC 7523); an installed app redeems its refresh token. Both
are google-auth credentials whose ``refresh()`` we call once per fetch,
through our :class:`~smtp_probe.oauth.endpoint.TokenSession` (deadline, CA).

google-auth retries a token request that got HTTP 5xx (or a
``server_error``/``temporarily_unavailable`` error) up to three times with
a backoff of a second or two; the fetch's deadline still bounds the whole.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.service_account

from smtp_probe.oauth.cache import Fetched
from smtp_probe.oauth.endpoint import (
    TokenSession,
    endpoint_error,
    http_status_error,
    no_token,
    transport_error,
)
from smtp_probe.oauth.files import stamp
from smtp_probe.oauth.settings import GOOGLE_TOKEN_URI, GoogleClient, OAuthClient
from smtp_probe.probe.credentials import TokenError
from smtp_probe.secret import Secret

_SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key")


class GoogleFetch:
    """The fetch of one Google client; its credentials object is built at the first fetch and kept."""

    def __init__(self, client: OAuthClient, settings: GoogleClient) -> None:
        self._settings = settings
        self._session = TokenSession(client.ca_file)
        self._request = google.auth.transport.requests.Request(session=self._session)
        self._credentials: Any = None
        self._built_from: object = None
        """The service account file's :func:`~smtp_probe.oauth.files.stamp` when it was read."""
        self._token_uri = settings.token_uri or GOOGLE_TOKEN_URI
        self._secrets = [
            s.reveal() for s in (settings.client_secret, settings.refresh_token) if s is not None
        ]

    def __call__(self, timeout: float) -> Fetched:
        """Ask Google's token endpoint (or ``token_uri``) for a token within ``timeout`` seconds.

        Raises:
            TokenError: the endpoint refused, failed or did not answer, or the
                service account file is unusable; the reason names no secret.
        """
        self._session.timeout = timeout
        files = stamp(self._settings.service_account_file)
        if self._credentials is None or files != self._built_from:
            # A key file rotated in place is read again, not kept until a restart.
            self._credentials = self._build()
            self._built_from = files
        credentials = self._credentials
        try:
            credentials.refresh(self._request)
        except google.auth.exceptions.TransportError as exc:
            raise transport_error(exc, self._token_uri, timeout) from None
        except google.auth.exceptions.RefreshError as exc:
            raise self._refused(exc) from None
        token = credentials.token
        if not isinstance(token, str) or not token:
            raise no_token(self._session.last_status)
        expiry = credentials.expiry  # naive UTC, as google-auth keeps it
        expires_at = expiry.replace(tzinfo=datetime.UTC).timestamp() if expiry is not None else None
        return Fetched(Secret(token), expires_at)

    def _refused(self, exc: google.auth.exceptions.RefreshError) -> TokenError:
        """google-auth's RefreshError carries the endpoint's JSON (or its text) in ``args``."""
        status = self._session.last_status
        details = next((a for a in exc.args if isinstance(a, dict)), None)
        if details is not None and "error" in details:
            return endpoint_error(
                details.get("error"),
                details.get("error_description"),
                status,
                secrets=self._secrets,
            )
        if details is not None:
            return no_token(status)
        if status is not None and status >= 400:
            return http_status_error(status, secrets=self._secrets)
        return TokenError(
            f"token endpoint: unusable answer (HTTP {status if status is not None else '?'})",
            "bad_response",
        )

    def _build(self) -> Any:
        settings = self._settings
        scopes = [settings.scope]
        if settings.service_account_file is None:
            return google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
                None,
                refresh_token=settings.refresh_token.reveal() if settings.refresh_token else None,
                client_id=settings.client_id,
                client_secret=settings.client_secret.reveal() if settings.client_secret else None,
                token_uri=self._token_uri,
                scopes=scopes,
            )
        path = settings.service_account_file
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TokenError(
                f"service_account_file {path}: {exc.strerror or 'unreadable'}", "invalid_client"
            ) from None
        except ValueError:
            raise TokenError(
                f"service_account_file {path}: not JSON (a service account key file is)",
                "invalid_client",
            ) from None
        missing = [
            f for f in _SERVICE_ACCOUNT_FIELDS if not isinstance(info, dict) or not info.get(f)
        ]
        if missing:
            raise TokenError(
                f"service_account_file {path}: not a service account key (no {', '.join(missing)})",
                "invalid_client",
            )
        if settings.token_uri is not None or "token_uri" not in info:
            info["token_uri"] = self._token_uri
        else:
            self._token_uri = info["token_uri"]
        try:
            return google.oauth2.service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=scopes, subject=settings.subject
            )
        except ValueError:
            raise TokenError(
                f"service_account_file {path}: its private_key cannot be loaded", "invalid_client"
            ) from None
