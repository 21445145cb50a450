"""Shared by the OAuth provider tests: clients of the test authorization server, loopback only.

:func:`loopback_only` points every proxy variable at a port that refuses
connections (loopback excepted), so a provider library that tried to reach
the real Entra ID or Google (instance discovery, a default token URI) would
fail the test at once instead of leaving the machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smtp_probe.oauth.settings import OAuthClient, Provider
from tests.support.loopback_smtpd import closed_port
from tests.support.oauth_server import OAuthServer

CANARY_SECRET = "canary-client-secret-7f3a9c"  # noqa: S105 - a test canary
"""A client secret that must appear in no output."""


@contextmanager
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """While inside, every non-loopback HTTP(S) request goes to a proxy that refuses it."""
    with closed_port() as port:
        proxy = f"http://127.0.0.1:{port}"
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
            monkeypatch.setenv(name, proxy)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        yield


def oauth_client(
    srv: OAuthServer, provider: Provider, *, timeout: float = 5.0, ca_file: Path | None = None
) -> OAuthClient:
    """An ``oauth_clients`` entry for ``provider`` trusting the server's CA."""
    return OAuthClient("test", provider, timeout=timeout, ca_file=ca_file or srv.ca_file)
