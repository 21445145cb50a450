"""The token cache in front of a real provider and a real authorization server.

What probes and watchers rely on: one token shared by every caller, one
request for many concurrent callers, a new token ahead of expiry (with
tokens that live three seconds), a refused token replaced at once, a
hanging endpoint costing a caller its timeout and no more, and every
request reported to the observer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from smtp_probe.oauth import token_source
from smtp_probe.oauth.cache import TokenCache
from smtp_probe.oauth.settings import GenericClient, MicrosoftClient
from smtp_probe.probe.credentials import AccessToken, TokenError
from smtp_probe.secret import Secret
from tests.support.oauth_clients import CANARY_SECRET, loopback_only, oauth_client
from tests.support.oauth_server import OAuthServer


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with loopback_only(monkeypatch):
        yield


@pytest.fixture(scope="module")
def server() -> Iterator[OAuthServer]:
    with OAuthServer(token_lifetime=3600) as srv:
        yield srv


@pytest.fixture
def app(server: OAuthServer, request: pytest.FixtureRequest) -> str:
    """A client of this test's own: the server's request counts are per client."""
    client_id: str = request.node.name
    server.add_client(client_id, CANARY_SECRET)
    return client_id


@dataclass
class Observer:
    """Records what the cache reports (the daemon's metrics get the same calls)."""

    calls: list[tuple[str, str, float, float | None]] = field(default_factory=list)

    def token_requested(
        self, client: str, result: str, seconds: float, expires_at: float | None
    ) -> None:
        self.calls.append((client, result, seconds, expires_at))

    @property
    def results(self) -> list[str]:
        return [call[1] for call in self.calls]


def generic_cache(
    srv: OAuthServer, app: str, *, timeout: float = 5.0
) -> tuple[TokenCache, Observer]:
    settings = GenericClient(srv.token_url, app, client_secret=Secret(CANARY_SECRET))
    cache = token_source(oauth_client(srv, settings, timeout=timeout))
    observer = Observer()
    cache.observer = observer
    return cache, observer


def test_one_request_serves_many_concurrent_callers(server: OAuthServer, app: str) -> None:
    cache, observer = generic_cache(server, app)
    tokens: list[AccessToken] = []
    start = threading.Barrier(8)

    def caller() -> None:
        start.wait()
        tokens.append(cache.token(5))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(tokens) == 8
    assert len({t.value for t in tokens}) == 1
    assert sorted(t.fresh for t in tokens) == [False] * 7 + [True]
    assert server.requests(app) == 1
    assert observer.results == ["success"]


def test_three_second_tokens_are_replaced_ahead_of_expiry_and_never_served_expired(
    server: OAuthServer, app: str
) -> None:
    cache, observer = generic_cache(server, app)
    seen: list[AccessToken] = []
    server.token_lifetime = 3
    try:
        until = time.monotonic() + 6.5
        while time.monotonic() < until:
            token = cache.token(5)
            assert token.expires_at is not None
            assert token.expires_at - time.time() > 0.5, "a token this close to expiry was served"
            assert server.introspect(token.value.reveal())["active"] is True
            seen.append(token)
            time.sleep(0.2)
    finally:
        server.token_lifetime = 3600

    distinct = {t.value for t in seen}
    # refreshed when a quarter of the 3 s is left: every ~2.25 s, so 3 or 4 tokens
    assert 3 <= len(distinct) <= 4
    assert server.requests(app) == len(distinct)
    assert observer.results == ["success"] * len(distinct)


def test_a_rejected_token_is_replaced_by_the_next_call(server: OAuthServer, app: str) -> None:
    cache, _ = generic_cache(server, app)
    first = cache.token(5)
    assert cache.token(5).fresh is False

    cache.reject(first)
    second = cache.token(5)

    assert second.fresh is True
    assert second.value != first.value
    cache.reject(first)  # a late rejection of the old token leaves the new one alone
    assert cache.token(5).value == second.value
    assert server.requests(app) == 2


def test_microsoft_token_rejected_by_a_server_is_not_handed_back_by_msal(
    server: OAuthServer, app: str
) -> None:
    settings = MicrosoftClient("contoso", app, Secret(CANARY_SECRET), authority=server.url)
    cache = token_source(oauth_client(server, settings))
    first = cache.token(5)
    server.revoke_tokens()  # what the IMAP server sees: the token no longer works

    cache.reject(first)
    second = cache.token(5)

    assert second.value != first.value
    assert server.introspect(second.value.reveal())["active"] is True


def test_failures_are_reported_and_the_next_call_asks_again(server: OAuthServer, app: str) -> None:
    cache, observer = generic_cache(server, app)
    server.fail_with(503)
    try:
        with pytest.raises(TokenError, match="HTTP 503"):
            cache.token(5)
    finally:
        server.fail_with(None)
    server.revoke_client(app)
    try:
        with pytest.raises(TokenError, match="invalid_client"):
            cache.token(5)
    finally:
        server.revoke_client(app, revoked=False)

    token = cache.token(5)

    assert observer.results == ["http_error", "invalid_client", "success"]
    assert [call[0] for call in observer.calls] == ["test"] * 3
    assert observer.calls[-1][3] == token.expires_at
    assert all(0 <= call[2] < 5 for call in observer.calls)


@pytest.mark.parametrize(("client_timeout", "caller_timeout"), [(1.0, 10.0), (10.0, 1.0)])
def test_a_hanging_endpoint_costs_the_shorter_timeout_and_no_more(
    server: OAuthServer, app: str, client_timeout: float, caller_timeout: float
) -> None:
    cache, observer = generic_cache(server, app, timeout=client_timeout)
    server.hang()
    try:
        started = time.monotonic()
        with pytest.raises(TokenError) as caught:
            cache.token(caller_timeout)
        took = time.monotonic() - started
    finally:
        server.hang(False)

    assert caught.value.result == "timeout"
    assert 0.9 <= took < 2.5
    assert observer.results == ["timeout"]
    assert server.requests(app) == 1


def test_a_caller_waiting_behind_a_hanging_request_gives_up_at_its_own_timeout(
    server: OAuthServer, app: str
) -> None:
    cache, _ = generic_cache(server, app, timeout=3.0)
    server.hang()
    try:
        first_errors: list[TokenError] = []

        def first_caller() -> None:
            try:
                cache.token(3.0)
            except TokenError as exc:
                first_errors.append(exc)

        first = threading.Thread(target=first_caller)
        first.start()
        while server.requests(app) == 0:
            time.sleep(0.02)
        started = time.monotonic()
        with pytest.raises(TokenError) as caught:
            cache.token(0.5)
        took = time.monotonic() - started
        first.join(5)
    finally:
        server.hang(False)

    assert caught.value.result == "timeout"
    assert "another request to the endpoint is still running" in caught.value.reason
    assert took < 1.5
    assert [e.result for e in first_errors] == ["timeout"]
    assert server.requests(app) == 1
