"""TokenCache's edge cases, with fetch functions of the test's own and a wall clock it moves.

The cache reads expiry against the wall clock (``time.time``) of its own
module; the tests replace that one clock and keep the real monotonic one
(deadlines, waits). Real providers and a real server: tests/protocol/test_oauth_token_cache.py.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from smtp_probe.oauth import cache as cache_module
from smtp_probe.oauth.cache import (
    LAST_USE_MARGIN,
    REFRESH_AHEAD_MAX,
    Fetched,
    TokenCache,
)
from smtp_probe.probe.credentials import TokenError
from smtp_probe.secret import Secret

T0 = 1_800_000_000.0


class Clock:
    """The cache's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    wall = Clock()
    fake = types.SimpleNamespace(time=wall.time, monotonic=time.monotonic)
    monkeypatch.setattr(cache_module, "time", fake)
    return wall


@dataclass
class Endpoint:
    """A fetch function: hands out ``tok-1``, ``tok-2``... living ``lifetime`` seconds, or fails."""

    clock: Clock
    lifetime: float | None = 3600.0
    failure: BaseException | None = None
    calls: int = 0
    timeouts: list[float] = field(default_factory=list)

    def __call__(self, timeout: float) -> Fetched:
        self.calls += 1
        self.timeouts.append(timeout)
        if self.failure is not None:
            raise self.failure
        expires = None if self.lifetime is None else self.clock.now + self.lifetime
        return Fetched(Secret(f"tok-{self.calls}"), expires)


@dataclass
class Observer:
    calls: list[tuple[str, str, float | None]] = field(default_factory=list)

    def token_requested(
        self, client: str, result: str, seconds: float, expires_at: float | None
    ) -> None:
        self.calls.append((client, result, expires_at))


def cache_of(
    fetch: Callable[[float], Fetched], timeout: float = 10.0
) -> tuple[TokenCache, Observer]:
    cache = TokenCache("m365", fetch, timeout=timeout)
    observer = Observer()
    cache.observer = observer
    return cache, observer


def value(cache: TokenCache) -> str:
    return cache.token(5).value.reveal()


@pytest.mark.parametrize(
    ("lifetime", "refresh_after"),
    [
        (3600.0, 3600.0 - REFRESH_AHEAD_MAX),  # long tokens: five minutes ahead
        (100.0, 75.0),  # short ones: when a quarter of their life is left
    ],
)
def test_a_token_is_served_until_its_refresh_point(
    clock: Clock, lifetime: float, refresh_after: float
) -> None:
    endpoint = Endpoint(clock, lifetime)
    cache, _ = cache_of(endpoint)

    first = cache.token(5)
    clock.now = T0 + refresh_after - 0.01
    again = cache.token(5)
    clock.now = T0 + refresh_after
    renewed = cache.token(5)

    assert (first.fresh, again.fresh, renewed.fresh) == (True, False, True)
    assert again.value == first.value != renewed.value
    assert first.expires_at == T0 + lifetime
    assert cache.expires_at == T0 + refresh_after + lifetime
    assert endpoint.calls == 2


def test_a_token_without_expiry_is_kept_until_rejected(clock: Clock) -> None:
    endpoint = Endpoint(clock, lifetime=None)
    cache, _ = cache_of(endpoint)
    first = cache.token(5)
    clock.now += 10 * 86400

    assert cache.token(5).value == first.value
    cache.reject(first)
    assert value(cache) == "tok-2"


def test_reject_only_drops_the_token_it_names(clock: Clock) -> None:
    cache, _ = cache_of(Endpoint(clock))
    old = cache.token(5)
    cache.reject(old)
    new = cache.token(5)

    cache.reject(old)

    assert cache.token(5).value == new.value
    assert cache.token(5).fresh is False


def test_a_failed_refresh_keeps_serving_the_token_while_it_has_time_left(clock: Clock) -> None:
    endpoint = Endpoint(clock, lifetime=3600)
    cache, observer = cache_of(endpoint)
    first = cache.token(5)
    clock.now = T0 + 3600 - 100  # due for refresh, 100 s left
    endpoint.failure = TokenError("token endpoint: HTTP 503", "http_error")

    kept = cache.token(5)
    clock.now = T0 + 3600 - LAST_USE_MARGIN  # too close to expiry to send
    with pytest.raises(TokenError, match="HTTP 503"):
        cache.token(5)

    assert (kept.value, kept.fresh) == (first.value, False)
    assert [c[1] for c in observer.calls] == ["success", "http_error", "http_error"]
    assert endpoint.calls == 3, "every call during the failure asks the endpoint again"


def test_a_rejected_token_is_not_served_when_the_refetch_fails(clock: Clock) -> None:
    endpoint = Endpoint(clock)
    cache, _ = cache_of(endpoint)
    first = cache.token(5)
    cache.reject(first)
    endpoint.failure = TokenError("token endpoint: invalid_client (HTTP 401)", "invalid_client")

    with pytest.raises(TokenError) as caught:
        cache.token(5)

    assert caught.value.result == "invalid_client"


def test_an_unexpected_exception_in_a_fetch_becomes_a_bad_response(clock: Clock) -> None:
    endpoint = Endpoint(clock, failure=RuntimeError("library bug with secret-in-message"))
    cache, observer = cache_of(endpoint)

    with pytest.raises(TokenError) as caught:
        cache.token(5)

    assert (caught.value.result, caught.value.reason) == (
        "bad_response",
        "token request failed: RuntimeError",
    )
    assert observer.calls == [("m365", "bad_response", None)]


def test_the_client_timeout_caps_what_a_fetch_is_given(clock: Clock) -> None:
    endpoint = Endpoint(clock)
    cache, _ = cache_of(endpoint, timeout=2.0)

    cache.token(9.0)

    assert endpoint.timeouts == [pytest.approx(2.0, abs=0.05)]


def test_a_caller_with_less_time_stops_waiting_at_its_own_deadline() -> None:
    release = threading.Event()
    given: list[float] = []

    def hanging(timeout: float) -> Fetched:
        given.append(timeout)
        release.wait(30)
        return Fetched(Secret("late"), None)

    cache, observer = cache_of(hanging, timeout=9.0)
    started = time.monotonic()
    try:
        with pytest.raises(TokenError) as caught:
            cache.token(0.3)
    finally:
        release.set()

    assert time.monotonic() - started < 1.0
    assert (caught.value.result, caught.value.reason) == (
        "timeout",
        "no answer from the token endpoint within 0.3s",
    )
    assert given == [pytest.approx(0.3, abs=0.05)]
    assert observer.calls == [("m365", "timeout", None)]


@pytest.mark.parametrize(("client_timeout", "caller_timeout"), [(0.5, 9.0), (9.0, 0.5)])
def test_a_fetch_that_keeps_its_deadline_ends_first_and_its_reason_is_reported(
    client_timeout: float, caller_timeout: float
) -> None:
    # A token command killed at its deadline must be killed before the caller
    # (smtp-probe check) gives up and exits, and say so itself.
    ended: list[float] = []

    def keeps_deadline(timeout: float) -> Fetched:
        time.sleep(timeout)
        ended.append(time.monotonic())
        raise TokenError("token command helper: no token within 0.5s (killed)", "timeout")

    cache, observer = cache_of(keeps_deadline, timeout=client_timeout)
    started = time.monotonic()
    with pytest.raises(TokenError) as caught:
        cache.token(caller_timeout)

    assert caught.value.reason == "token command helper: no token within 0.5s (killed)"
    assert ended, "the caller stopped waiting before the fetch's own deadline"
    assert time.monotonic() - started < 0.5 + 0.3
    assert observer.calls == [("m365", "timeout", None)]


def test_a_late_answer_after_the_deadline_is_not_cached() -> None:
    answered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow(timeout: float) -> Fetched:
        calls.append(1)
        if len(calls) == 1:
            release.wait(30)
            answered.set()
            return Fetched(Secret("too-late"), None)
        return Fetched(Secret("second"), None)

    cache, _ = cache_of(slow)
    with pytest.raises(TokenError):
        cache.token(0.2)
    release.set()
    answered.wait(5)

    assert value(cache) == "second"


def test_repr_names_the_client_and_no_token(clock: Clock) -> None:
    cache, _ = cache_of(Endpoint(clock))
    token = cache.token(5)

    shown = f"{cache!r} {token!r} {token}"

    assert "tok-1" not in shown
    assert repr(cache) == "TokenCache('m365')"
    assert cache.client == "m365"
