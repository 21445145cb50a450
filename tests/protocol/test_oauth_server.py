"""The test authorization server itself (tests/support/oauth_server.py), over real HTTPS.

The provider tests trust it to behave like Entra ID, Google's token endpoint
and an RFC 6749 server, and the Dovecot wiring trusts its introspection;
these tests pin what they rely on, with plain HTTP requests.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.oauth_server import DEFAULT_USER, OAuthServer


@pytest.fixture(scope="module")
def server() -> Iterator[OAuthServer]:
    with OAuthServer() as srv:
        srv.add_client("app", "app-secret")
        yield srv


def post(srv: OAuthServer, url: str, timeout: float = 5, **kwargs: Any) -> requests.Response:
    # verify= per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
    return requests.post(url, verify=str(srv.ca_file), timeout=timeout, **kwargs)


def client_credentials(srv: OAuthServer, client: str, secret: str) -> requests.Response:
    return post(
        srv, srv.token_url, data={"grant_type": "client_credentials"}, auth=(client, secret)
    )


def test_client_credentials_with_basic_or_post_auth_issue_a_token_introspection_knows() -> None:
    with OAuthServer(token_lifetime=7) as srv:
        srv.add_client("app", "app-secret", user="probe@example.test")
        basic = client_credentials(srv, "app", "app-secret")
        in_body = post(
            srv,
            srv.tenant_token_url("contoso"),
            data={
                "grant_type": "client_credentials",
                "client_id": "app",
                "client_secret": "app-secret",
                "scope": "https://outlook.office365.com/.default",
            },
        )
        assert basic.status_code == in_body.status_code == 200
        assert basic.json()["expires_in"] == 7
        assert in_body.json()["scope"] == "https://outlook.office365.com/.default"
        info = srv.introspect(basic.json()["access_token"])
        assert info["active"] is True
        assert info["username"] == "probe@example.test"
        assert info["exp"] - time.time() == pytest.approx(7, abs=2)
        assert srv.requests("app") == 2


def test_a_wrong_or_changed_secret_and_a_revoked_client_get_invalid_client(
    server: OAuthServer,
) -> None:
    server.add_client("rotating", "old-secret")
    wrong = client_credentials(server, "rotating", "not-the-secret")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    server.set_secret("rotating", "new-secret")
    assert client_credentials(server, "rotating", "old-secret").status_code == 401
    assert client_credentials(server, "rotating", "new-secret").status_code == 200
    server.revoke_client("rotating")
    revoked = client_credentials(server, "rotating", "new-secret")
    assert revoked.json()["error"] == "invalid_client"
    server.revoke_client("rotating", revoked=False)
    assert client_credentials(server, "rotating", "new-secret").status_code == 200
    assert [e["status"] for e in server.log() if e["client_id"] == "rotating"] == [
        401,
        401,
        200,
        401,
        200,
    ]


def test_a_refresh_token_is_redeemed_for_its_user_and_only_by_its_client(
    server: OAuthServer,
) -> None:
    server.add_client("other", "other-secret")
    token = server.add_refresh_token("app", "probe@example.test")
    data = {"grant_type": "refresh_token", "refresh_token": token}
    good = post(server, server.token_url, data=data, auth=("app", "app-secret"))
    assert good.status_code == 200
    assert server.introspect(good.json()["access_token"])["username"] == "probe@example.test"
    stolen = post(server, server.token_url, data=data, auth=("other", "other-secret"))
    assert stolen.json()["error"] == "invalid_grant"


def test_fail_with_answers_every_token_request_with_that_status(server: OAuthServer) -> None:
    server.fail_with(503)
    try:
        assert client_credentials(server, "app", "app-secret").status_code == 503
    finally:
        server.fail_with(None)
    assert client_credentials(server, "app", "app-secret").status_code == 200


def test_a_hanging_endpoint_accepts_and_does_not_answer_until_released(
    server: OAuthServer,
) -> None:
    before = server.requests("app")
    server.hang()
    try:
        with pytest.raises(requests.ReadTimeout):
            post(
                server,
                server.token_url,
                timeout=0.5,
                data={"grant_type": "client_credentials"},
                auth=("app", "app-secret"),
            )
        assert server.requests("app") == before + 1
        assert server.log()[-1]["status"] is None
    finally:
        server.hang(False)
    assert client_credentials(server, "app", "app-secret").status_code == 200


def test_a_stopped_server_refuses_and_comes_back_on_its_port_with_its_tokens() -> None:
    with OAuthServer() as srv:
        srv.add_client("app", "app-secret")
        issued = client_credentials(srv, "app", "app-secret").json()["access_token"]
        port = int(srv.url.rsplit(":", 1)[1])
        srv.stop()
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass
        srv.start()
        assert srv.url.endswith(f":{port}")
        assert srv.introspect(issued)["active"] is True
        assert srv.requests("app") == 1


def test_an_expired_or_revoked_token_is_inactive() -> None:
    with OAuthServer(token_lifetime=1) as srv:
        srv.add_client("app", "app-secret")
        short = client_credentials(srv, "app", "app-secret").json()["access_token"]
        srv.token_lifetime = 3600
        long = client_credentials(srv, "app", "app-secret").json()["access_token"]
        time.sleep(1.1)
        assert srv.introspect(short) == {"active": False}
        assert srv.introspect(long)["active"] is True
        srv.revoke_tokens()
        assert srv.introspect(long) == {"active": False}
        fresh = client_credentials(srv, "app", "app-secret").json()["access_token"]
        assert srv.introspect(fresh)["active"] is True


def test_introspection_takes_the_introspector_from_the_url_or_no_credentials(
    server: OAuthServer,
) -> None:
    token = client_credentials(server, "app", "app-secret").json()["access_token"]
    with_userinfo = requests.post(server.introspection_url, data={"token": token}, timeout=5)
    anonymous = requests.post(
        f"http://127.0.0.1:{server.http_port}/introspect", data={"token": token}, timeout=5
    )
    assert with_userinfo.json()["username"] == anonymous.json()["username"] == DEFAULT_USER
    wrong = requests.post(
        f"http://127.0.0.1:{server.http_port}/introspect",
        data={"token": token},
        auth=("dovecot", "not-the-secret"),
        timeout=5,
    )
    assert wrong.status_code == 401
    assert server.introspect("no-such-token") == {"active": False}


def test_discovery_documents_name_the_token_endpoints(server: OAuthServer) -> None:
    root = requests.get(
        f"{server.url}/.well-known/openid-configuration", verify=str(server.ca_file), timeout=5
    ).json()
    tenant = requests.get(
        f"{server.url}/contoso/v2.0/.well-known/openid-configuration",
        verify=str(server.ca_file),
        timeout=5,
    ).json()
    assert root["token_endpoint"] == server.token_url
    assert tenant["token_endpoint"] == server.tenant_token_url("contoso")
    assert "private_key_jwt" in tenant["token_endpoint_auth_methods_supported"]
