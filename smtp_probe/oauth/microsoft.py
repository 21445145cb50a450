"""Entra ID client credentials through MSAL: a client secret or a certificate, one token per fetch.

MSAL (``msal``) is the library Microsoft maintains for this; we let it do
the protocol (tenant discovery, the client assertion a certificate signs,
the token request) and keep two of its habits out of the way, because our
:class:`~smtp_probe.oauth.cache.TokenCache` decides when to ask:

* its token cache: every fetch starts from an empty one, so MSAL never hands
  back a token a mail server just refused;
* its HTTP replay cache (it answers a repeated request that failed with HTTP
  400, 429 or 5xx from memory for up to a minute): disabled, so every fetch
  is a real request and its result is the endpoint's current answer.

A certificate is sent as MSAL does for ``public_certificate``: a PS256
assertion naming the certificate's SHA-256 thumbprint (``x5t#S256``) with the
certificate in ``x5c``; Entra accepts it for any certificate registered on
the app. (The SHA-1 ``thumbprint`` form is MSAL's deprecated fallback.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import msal  # type: ignore[import-untyped]
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smtp_probe.oauth.cache import Fetched
from smtp_probe.oauth.endpoint import (
    TokenSession,
    endpoint_error,
    http_status_error,
    no_token,
    transport_error,
)
from smtp_probe.oauth.files import stamp
from smtp_probe.oauth.settings import MicrosoftClient, OAuthClient
from smtp_probe.probe.credentials import TokenError
from smtp_probe.secret import Secret

_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class MicrosoftFetch:
    """The fetch of one Microsoft client; its MSAL application is built at the first fetch and kept."""

    def __init__(self, client: OAuthClient, settings: MicrosoftClient) -> None:
        self._settings = settings
        self._session = TokenSession(client.ca_file)
        self._app: Any = None
        self._built_from: object = None
        """The certificate files' :func:`~smtp_probe.oauth.files.stamp` when the app was built."""
        self._authority = f"{settings.authority.rstrip('/')}/{settings.tenant}"
        self._secrets = [settings.client_secret.reveal()] if settings.client_secret else []

    def __call__(self, timeout: float) -> Fetched:
        """Ask Entra ID for a token for the client's scope within ``timeout`` seconds.

        Raises:
            TokenError: the endpoint refused, failed or did not answer, or the
                certificate could not be read; the reason names no secret.
        """
        self._session.timeout = timeout
        settings = self._settings
        files = stamp(settings.certificate_file, settings.private_key_file)
        if self._app is None or files != self._built_from:
            # A certificate rotated in place is read again, not kept until a restart.
            self._app = self._build(timeout)
            self._built_from = files
        self._app.token_cache = msal.TokenCache()
        try:
            result = self._app.acquire_token_for_client(scopes=[self._settings.scope])
        except requests.RequestException as exc:
            raise transport_error(exc, self._authority, timeout) from None
        except msal.exceptions.MsalServiceError:
            raise http_status_error(self._session.last_status, secrets=self._secrets) from None
        except ValueError:  # MSAL parses every answer below 500 as JSON
            status = self._session.last_status
            if status is not None and status >= 400:
                raise http_status_error(status, secrets=self._secrets) from None
            raise TokenError(
                f"token endpoint: its answer is not JSON (HTTP {self._status()})", "bad_response"
            ) from None
        if isinstance(result, dict) and "error" in result:
            raise endpoint_error(
                result.get("error"),
                result.get("error_description"),
                self._session.last_status,
                secrets=self._secrets,
            )
        token = result.get("access_token") if isinstance(result, dict) else None
        if not isinstance(token, str) or not token:
            raise no_token(self._session.last_status)
        expires_in = result.get("expires_in")
        expires_at = time.time() + expires_in if isinstance(expires_in, int | float) else None
        return Fetched(Secret(token), expires_at)

    def _status(self) -> int | str:
        status = self._session.last_status
        return status if status is not None else "?"

    def _build(self, timeout: float) -> Any:
        """The MSAL application; it fetches the tenant's discovery document."""
        credential = self._credential()
        try:
            return msal.ConfidentialClientApplication(
                self._settings.client_id,
                client_credential=credential,
                authority=self._authority,
                http_client=self._session,
                http_cache=_Forgetful(),
                # Never ask login.microsoftonline.com about another host: the
                # authority comes from our config, and tests must stay local.
                instance_discovery=False,
            )
        except requests.RequestException as exc:
            raise transport_error(exc, self._authority, timeout) from None
        except (ValueError, msal.exceptions.MsalServiceError):
            raise TokenError(
                f"token endpoint: tenant discovery at {self._authority} failed "
                f"(HTTP {self._status()})",
                "http_error",
            ) from None

    def _credential(self) -> str | dict[str, str]:
        settings = self._settings
        if settings.client_secret is not None:
            return settings.client_secret.reveal()
        if settings.certificate_file is None:
            raise TokenError(
                "microsoft client: neither a secret nor a certificate", "invalid_client"
            )
        return certificate_credential(settings.certificate_file, settings.private_key_file)


def certificate_credential(certificate_file: Path, key_file: Path | None) -> dict[str, str]:
    """MSAL's ``client_credential`` for a PEM certificate and its key (in ``key_file`` or the same file).

    Raises:
        TokenError: a file cannot be read, holds no certificate or key, or
            the key does not belong to the certificate (``invalid_client``).
    """
    certificate_text = _read(certificate_file, "certificate_file")
    match = _CERTIFICATE.search(certificate_text)
    if match is None:
        raise TokenError(
            f"certificate_file {certificate_file}: no PEM certificate in it", "invalid_client"
        )
    try:
        certificate = x509.load_pem_x509_certificate(match.group(0).encode())
    except ValueError:
        raise TokenError(
            f"certificate_file {certificate_file}: the certificate cannot be parsed",
            "invalid_client",
        ) from None
    where = f"private_key_file {key_file}" if key_file else f"certificate_file {certificate_file}"
    key_text = certificate_text if key_file is None else _read(key_file, "private_key_file")
    try:
        key = serialization.load_pem_private_key(key_text.encode(), password=None)
    except (ValueError, TypeError):
        raise TokenError(
            f"{where}: no unencrypted PEM private key in it", "invalid_client"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != (
        certificate.public_key().public_bytes(serialization.Encoding.PEM, public)
    ):
        raise TokenError(
            f"{where}: the private key does not belong to the certificate in {certificate_file}",
            "invalid_client",
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {"private_key": key_pem, "public_certificate": match.group(0)}


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a text file"
        raise TokenError(f"{key} {path}: {why}", "invalid_client") from None


class _Forgetful(MutableMapping[str, Any]):
    """An ``http_cache`` for MSAL that keeps nothing: every request goes to the endpoint."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        pass

    def __delitem__(self, key: str) -> None:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0
