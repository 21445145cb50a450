"""What one ``oauth_clients`` entry says, as plain frozen values (no OAuth library imported).

The config builds these; :func:`smtp_probe.oauth.token_source` turns one into
the cached :class:`~smtp_probe.probe.credentials.TokenSource` that probes and
watchers share. Keeping the settings free of msal, google-auth and authlib
lets ``validate`` and ``check`` without OAuth start fast.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smtp_probe.secret import Secret

MICROSOFT_SCOPE: Final = "https://outlook.office365.com/.default"
"""Exchange Online's scope for IMAP and SMTP AUTH with application permissions."""
MICROSOFT_AUTHORITY: Final = "https://login.microsoftonline.com"
"""Entra ID's global cloud; sovereign clouds have their own (e.g. login.microsoftonline.us)."""
GOOGLE_SCOPE: Final = "https://mail.google.com/"
"""The only scope Gmail accepts for IMAP and SMTP."""
GOOGLE_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
DEFAULT_TOKEN_TIMEOUT: Final = 10.0
"""Longest wait for one token request (HTTP or command); the run deadline still bounds it."""
DEFAULT_COMMAND_LIFETIME: Final = 300.0
"""How long a command's token is reused when it says nothing about its expiry."""


class Grant(enum.StrEnum):
    """The OAuth2 grant a generic client uses at its token endpoint."""

    CLIENT_CREDENTIALS = "client_credentials"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant name


@dataclass(frozen=True, slots=True)
class MicrosoftClient:
    """Entra ID client credentials (MSAL): a client secret or a certificate."""

    tenant: str
    client_id: str
    client_secret: Secret | None = None
    certificate_file: Path | None = None
    """PEM certificate registered with the app; its key is ``private_key_file``
    (or in the same file)."""
    private_key_file: Path | None = None
    scope: str = MICROSOFT_SCOPE
    authority: str = MICROSOFT_AUTHORITY


@dataclass(frozen=True, slots=True)
class GoogleClient:
    """google-auth: a service account with domain-wide delegation, or an installed app's refresh token."""

    service_account_file: Path | None = None
    subject: str | None = None
    """The mailbox user the service account acts as (domain-wide delegation)."""
    client_id: str | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    scope: str = GOOGLE_SCOPE
    token_uri: str | None = None
    """Override of the token endpoint (default: the service account file's, or Google's)."""


@dataclass(frozen=True, slots=True)
class GenericClient:
    """Any RFC 6749 token endpoint, through authlib."""

    token_url: str
    client_id: str
    grant: Grant = Grant.CLIENT_CREDENTIALS
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class CommandClient:
    """A helper program that prints an access token (plain, a JWT, or JSON with ``expires_in``)."""

    command: tuple[str, ...]
    lifetime: float = DEFAULT_COMMAND_LIFETIME


Provider = MicrosoftClient | GoogleClient | GenericClient | CommandClient


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """One ``oauth_clients`` entry: its name, provider settings and how to reach the endpoint."""

    name: str
    provider: Provider
    timeout: float = DEFAULT_TOKEN_TIMEOUT
    ca_file: Path | None = None
    """PEM CAs to trust for the token endpoint instead of the system's."""
