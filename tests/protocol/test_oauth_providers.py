"""The token providers (MSAL, google-auth, authlib) against a real authorization server over HTTPS.

Each provider library talks to tests/support/oauth_server.py exactly as it
would to Entra ID, Google or an RFC 6749 server: MSAL with a tenant
authority on the local host, google-auth with the service account's (or
the client's) ``token_uri`` pointing at it. Every test runs with proxies
that refuse anything but loopback, so nothing can leave the machine.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from smtp_probe.oauth.providers import fetch_token, fetcher
from smtp_probe.oauth.settings import (
    GOOGLE_SCOPE,
    GenericClient,
    GoogleClient,
    Grant,
    MicrosoftClient,
    OAuthClient,
)
from smtp_probe.probe.credentials import TokenError
from smtp_probe.secret import Secret
from tests.support.oauth_clients import CANARY_SECRET, loopback_only, oauth_client
from tests.support.oauth_server import OAuthServer

TENANT = "contoso.onmicrosoft.com"
USER = "probe@example.test"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with loopback_only(monkeypatch):
        yield


@pytest.fixture(scope="module")
def server() -> Iterator[OAuthServer]:
    with OAuthServer(token_lifetime=600) as srv:
        srv.add_client("m365-app", CANARY_SECRET, user=USER)
        yield srv


def microsoft(srv: OAuthServer, secret: str = CANARY_SECRET, **kwargs: object) -> OAuthClient:
    settings = MicrosoftClient(TENANT, "m365-app", Secret(secret), authority=srv.url)
    return oauth_client(srv, settings, **kwargs)  # type: ignore[arg-type]


def generic(srv: OAuthServer, secret: str = CANARY_SECRET) -> OAuthClient:
    return oauth_client(srv, GenericClient(srv.token_url, "m365-app", client_secret=Secret(secret)))


def refused(client: OAuthClient) -> TokenError:
    with pytest.raises(TokenError) as caught:
        fetch_token(client, 5)
    return caught.value


def assert_active_for(srv: OAuthServer, token: str, user: str) -> None:
    info = srv.introspect(token)
    assert info["active"] is True
    assert info["username"] == user


# ------------------------------------------------------------------ Microsoft


def test_microsoft_client_secret_gets_a_token_for_the_exchange_scope(server: OAuthServer) -> None:
    before = server.requests("m365-app")
    fetched = fetch_token(microsoft(server), 5)

    info = server.introspect(fetched.value.reveal())
    assert (info["active"], info["username"]) == (True, USER)
    assert info["scope"] == "https://outlook.office365.com/.default"
    assert fetched.expires_at == pytest.approx(time.time() + 600, abs=5)
    assert server.requests("m365-app") == before + 1


@pytest.mark.parametrize("key_in_certificate_file", [False, True])
def test_microsoft_certificate_signs_a_client_assertion(
    server: OAuthServer, tmp_path: Path, key_in_certificate_file: bool
) -> None:
    certificate = server.add_certificate_client("m365-cert-app", user=USER)
    cert_file, key_file = tmp_path / "app.pem", tmp_path / "app.key"
    if key_in_certificate_file:
        cert_file.write_text(certificate.private_key_pem + certificate.certificate_pem)
    else:
        cert_file.write_text(certificate.certificate_pem)
        key_file.write_text(certificate.private_key_pem)
    settings = MicrosoftClient(
        TENANT,
        "m365-cert-app",
        certificate_file=cert_file,
        private_key_file=None if key_in_certificate_file else key_file,
        authority=server.url,
    )

    fetched = fetch_token(oauth_client(server, settings), 5)

    assert_active_for(server, fetched.value.reveal(), USER)


def test_microsoft_certificate_rotated_in_place_is_read_again(
    server: OAuthServer, tmp_path: Path
) -> None:
    """A reload keeps a client whose settings (paths) are unchanged: the files must be re-read."""
    first = server.add_certificate_client("m365-rotating-app", user=USER)
    cert_file, key_file = tmp_path / "app.pem", tmp_path / "app.key"
    cert_file.write_text(first.certificate_pem)
    key_file.write_text(first.private_key_pem)
    settings = MicrosoftClient(
        TENANT,
        "m365-rotating-app",
        certificate_file=cert_file,
        private_key_file=key_file,
        authority=server.url,
    )
    fetch = fetcher(oauth_client(server, settings))
    assert_active_for(server, fetch(5).value.reveal(), USER)

    # The new pair, written under the same paths, belongs to another app
    # registration: a fetch that still used the old pair would succeed.
    rotated = server.add_certificate_client("m365-rotated-elsewhere")
    key_file.write_text(rotated.private_key_pem)
    cert_file.write_text(rotated.certificate_pem)
    with pytest.raises(TokenError) as caught:
        fetch(5)
    assert caught.value.result == "invalid_client"


def test_microsoft_certificate_of_another_key_is_refused_before_asking(
    server: OAuthServer, tmp_path: Path
) -> None:
    registered = server.add_certificate_client("m365-mixed-app")
    other = server.add_certificate_client("m365-other-app")
    (tmp_path / "app.pem").write_text(registered.certificate_pem)
    (tmp_path / "app.key").write_text(other.private_key_pem)
    settings = MicrosoftClient(
        TENANT,
        "m365-mixed-app",
        certificate_file=tmp_path / "app.pem",
        private_key_file=tmp_path / "app.key",
        authority=server.url,
    )

    error = refused(oauth_client(server, settings))

    assert error.result == "invalid_client"
    assert "does not belong to the certificate" in error.reason
    assert server.requests("m365-mixed-app") == 0


def test_microsoft_every_fetch_asks_the_endpoint_msal_keeps_no_token(server: OAuthServer) -> None:
    """Our cache decides: a token a server refused must never come back from MSAL's cache."""
    fetch = fetcher(microsoft(server))
    before = server.requests("m365-app")

    first, second = fetch(5), fetch(5)

    assert first.value != second.value
    assert server.requests("m365-app") == before + 2


def test_microsoft_wrong_secret_is_invalid_client_without_the_secret(server: OAuthServer) -> None:
    wrong = CANARY_SECRET + "-wrong"
    error = refused(microsoft(server, secret=wrong))

    assert error.result == "invalid_client"
    assert error.reason.startswith("token endpoint: invalid_client (HTTP 401)")
    assert wrong not in f"{error.reason} {error!r} {error.args}"


def test_microsoft_errors_are_not_replayed_the_endpoint_is_asked_again(
    server: OAuthServer,
) -> None:
    """MSAL's HTTP replay cache is off: after a 503 or a revoked client, the next answer counts."""
    fetch = fetcher(microsoft(server))
    before = server.requests("m365-app")
    server.fail_with(503)
    try:
        with pytest.raises(TokenError, match="HTTP 503"):
            fetch(5)
    finally:
        server.fail_with(None)
    server.revoke_client("m365-app")
    try:
        with pytest.raises(TokenError, match="invalid_client"):
            fetch(5)
    finally:
        server.revoke_client("m365-app", revoked=False)

    assert_active_for(server, fetch(5).value.reveal(), USER)
    assert server.requests("m365-app") == before + 3


def test_microsoft_authority_without_a_tenant_document_fails_discovery(
    server: OAuthServer,
) -> None:
    settings = MicrosoftClient("no/such", "m365-app", Secret(CANARY_SECRET), authority=server.url)
    error = refused(oauth_client(server, settings))

    assert (error.result, error.reason) == (
        "http_error",
        f"token endpoint: tenant discovery at {server.url}/no/such failed (HTTP 404)",
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "certificate_file {dir}/app.pem: No such file or directory"),
        ({"app.pem": "no pem here"}, "certificate_file {dir}/app.pem: no PEM certificate in it"),
        (
            {
                "app.pem": "CERT",
                "app.key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            },
            "private_key_file {dir}/app.key: no unencrypted PEM private key in it",
        ),
    ],
)
def test_microsoft_unusable_certificate_files_are_named(
    server: OAuthServer, tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    certificate = server.add_certificate_client("m365-files-app")
    for name, text in files.items():
        (tmp_path / name).write_text(text.replace("CERT", certificate.certificate_pem))
    settings = MicrosoftClient(
        TENANT,
        "m365-files-app",
        certificate_file=tmp_path / "app.pem",
        private_key_file=tmp_path / "app.key",
        authority=server.url,
    )
    error = refused(oauth_client(server, settings))

    assert (error.result, error.reason) == ("invalid_client", expected.format(dir=tmp_path))


def test_microsoft_default_authority_stays_off_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """login.microsoftonline.com through the test's refusing proxy: unreachable, not a lookup elsewhere."""
    settings = MicrosoftClient(TENANT, "m365-app", Secret(CANARY_SECRET))
    error = refused(OAuthClient("m365", settings, timeout=5))

    assert error.result == "unreachable"
    assert error.reason.startswith("token endpoint login.microsoftonline.com")


# --------------------------------------------------------------------- Google


@pytest.fixture(scope="module")
def service_account_file(server: OAuthServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("google") / "sa.json"
    path.write_text(json.dumps(server.add_service_account()))
    return path


def test_google_service_account_acts_as_the_subject(
    server: OAuthServer, service_account_file: Path
) -> None:
    settings = GoogleClient(service_account_file=service_account_file, subject=USER)

    fetched = fetch_token(oauth_client(server, settings), 5)

    info = server.introspect(fetched.value.reveal())
    assert (info["active"], info["username"], info["scope"]) == (True, USER, GOOGLE_SCOPE)
    # google-auth keeps the expiry as naive UTC: read as local time it would be hours off
    assert fetched.expires_at == pytest.approx(time.time() + 600, abs=5)


def test_google_service_account_file_rotated_in_place_is_read_again(
    server: OAuthServer, service_account_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "sa.json"
    path.write_text(service_account_file.read_text())
    fetch = fetcher(oauth_client(server, GoogleClient(service_account_file=path, subject=USER)))
    assert_active_for(server, fetch(5).value.reveal(), USER)

    path.write_text("{}")  # a broken rotation: a fetch that kept the old key would succeed
    with pytest.raises(TokenError) as caught:
        fetch(5)
    assert caught.value.result == "invalid_client"
    assert str(path) in caught.value.reason


def test_google_scope_without_delegation_is_unauthorized_client(
    server: OAuthServer, service_account_file: Path
) -> None:
    settings = GoogleClient(
        service_account_file=service_account_file,
        subject=USER,
        scope="https://www.googleapis.com/auth/gmail.readonly",
    )
    error = refused(oauth_client(server, settings))

    assert error.result == "unauthorized_client"
    assert "not authorized for any of the scopes requested" in error.reason


def test_google_token_uri_setting_overrides_the_key_files(
    server: OAuthServer, service_account_file: Path, tmp_path: Path
) -> None:
    info = json.loads(service_account_file.read_text())
    info["token_uri"] = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    moved = tmp_path / "sa.json"
    moved.write_text(json.dumps(info))
    settings = GoogleClient(service_account_file=moved, subject=USER, token_uri=server.token_url)

    assert_active_for(server, fetch_token(oauth_client(server, settings), 5).value.reveal(), USER)


def test_google_installed_app_refresh_token(server: OAuthServer) -> None:
    refresh_token = server.add_refresh_token("m365-app", "sink@example.test")
    settings = GoogleClient(
        client_id="m365-app",
        client_secret=Secret(CANARY_SECRET),
        refresh_token=Secret(refresh_token),
        token_uri=server.token_url,
    )

    fetched = fetch_token(oauth_client(server, settings), 5)

    assert_active_for(server, fetched.value.reveal(), "sink@example.test")
    assert fetched.expires_at == pytest.approx(time.time() + 600, abs=5)


def test_google_unknown_refresh_token_is_invalid_grant_without_it(server: OAuthServer) -> None:
    settings = GoogleClient(
        client_id="m365-app",
        client_secret=Secret(CANARY_SECRET),
        refresh_token=Secret("rt-canary-not-issued-here"),
        token_uri=server.token_url,
    )
    error = refused(oauth_client(server, settings))

    assert (error.result, error.reason) == (
        "invalid_grant",
        "token endpoint: invalid_grant (HTTP 400)",
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not JSON"),
        ('{"type": "service_account"}', "no client_email, private_key"),
    ],
)
def test_google_unusable_service_account_file_is_named(
    server: OAuthServer, tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "sa.json"
    path.write_text(content)
    error = refused(oauth_client(server, GoogleClient(service_account_file=path, subject=USER)))

    assert error.result == "invalid_client"
    assert error.reason.startswith(f"service_account_file {path}: ")
    assert expected in error.reason


# -------------------------------------------------------------------- generic


def test_generic_client_credentials(server: OAuthServer) -> None:
    fetched = fetch_token(generic(server), 5)

    assert_active_for(server, fetched.value.reveal(), USER)
    assert fetched.expires_at == pytest.approx(time.time() + 600, abs=5)


def test_generic_refresh_token_grant(server: OAuthServer) -> None:
    refresh_token = server.add_refresh_token("m365-app", "sink@example.test")
    settings = GenericClient(
        server.token_url,
        "m365-app",
        Grant.REFRESH_TOKEN,
        client_secret=Secret(CANARY_SECRET),
        refresh_token=Secret(refresh_token),
        scope="mail",
    )

    fetched = fetch_token(oauth_client(server, settings), 5)

    assert_active_for(server, fetched.value.reveal(), "sink@example.test")


def test_generic_wrong_secret_is_invalid_client(server: OAuthServer) -> None:
    error = refused(generic(server, secret="not-the-secret"))  # noqa: S106 - a wrong one

    assert error.result == "invalid_client"
    assert error.reason.startswith("token endpoint: invalid_client (HTTP 401)")


# ------------------------------------------------------- failures of any kind


@pytest.mark.parametrize("status", [503, 400])
def test_a_bare_http_error_is_an_http_error_for_every_provider(
    server: OAuthServer, service_account_file: Path, status: int
) -> None:
    """A gateway's error page (not an OAuth error document), whether 5xx or 4xx."""
    google = oauth_client(
        server, GoogleClient(service_account_file=service_account_file, subject=USER)
    )
    server.fail_with(status)
    try:
        errors = [refused(client) for client in (microsoft(server), generic(server), google)]
    finally:
        server.fail_with(None)

    expected = ("http_error", f"token endpoint: HTTP {status}")
    assert {(e.result, e.reason) for e in errors} == {expected}


def test_a_stopped_endpoint_is_unreachable_for_every_provider(
    server: OAuthServer, service_account_file: Path
) -> None:
    google = oauth_client(
        server, GoogleClient(service_account_file=service_account_file, subject=USER)
    )
    port = server.url.rsplit(":", 1)[1]
    server.stop()
    try:
        errors = [refused(client) for client in (microsoft(server), generic(server), google)]
    finally:
        server.start()

    expected = ("unreachable", f"token endpoint 127.0.0.1:{port}: connection refused")
    assert {(e.result, e.reason) for e in errors} == {expected}


def test_an_endpoint_certificate_from_another_ca_is_not_trusted(
    server: OAuthServer, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    error = refused(microsoft(server, ca_file=other_ca))

    assert error.result == "unreachable"
    assert "TLS certificate not trusted" in error.reason


def test_the_ca_file_wins_over_requests_ca_bundle(
    server: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REQUESTS_CA_BUNDLE overrides a requests session's verify; our ca_file must still win."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")

    assert_active_for(server, fetch_token(generic(server), 5).value.reveal(), USER)


def test_no_secret_or_token_in_errors_reprs_or_debug_logs(
    server: OAuthServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    refresh_token = server.add_refresh_token("m365-app", USER)
    google_rt = GoogleClient(
        client_id="m365-app",
        client_secret=Secret(CANARY_SECRET),
        refresh_token=Secret(refresh_token),
        token_uri=server.token_url,
    )
    clients = [microsoft(server), generic(server), oauth_client(server, google_rt)]
    caplog.set_level(logging.DEBUG)

    tokens = [fetch_token(client, 5) for client in clients]
    server.revoke_client("m365-app")
    try:
        errors = [refused(client) for client in clients]
    finally:
        server.revoke_client("m365-app", revoked=False)

    shown = caplog.text + "".join(f"{e.reason}{e!r}{e.args}" for e in errors)
    shown += "".join(repr(t) + str(t.value) for t in tokens) + "".join(map(repr, clients))
    assert len(caplog.records) > 0, "the libraries logged nothing at debug: the test sees nothing"
    for secret in (CANARY_SECRET, refresh_token, *(t.value.reveal() for t in tokens)):
        assert secret not in shown
