"""The OAuth token metrics: series per configured client, what a token request records.

The requests come from real :class:`TokenCache` objects around a small fetch
function of ours (an endpoint that answers with a token or a ``TokenError``,
as a provider's fetch does), with :class:`Metrics` as their observer; values
are read from a fresh registry with ``get_sample_value``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from smtp_probe.metrics import TOKEN_BUCKETS, TOKEN_RESULTS, Metrics
from smtp_probe.oauth.cache import Fetched, TokenCache
from smtp_probe.probe.credentials import TokenError
from smtp_probe.secret import Secret

CLIENT_SECRET = "client-Secret-canary-3f9a"  # noqa: S105 - a made-up secret to look for
ACCESS_TOKEN = "eyJ-access-token-canary-77c1"  # noqa: S105 - a made-up token to look for
ERROR_TEXT = "AADSTS7000222: the provided client secret keys are expired"
REQUESTS = "smtp_probe_oauth_token_requests_total"
EXPIRY = "smtp_probe_oauth_token_expiry_timestamp_seconds"
DURATION = "smtp_probe_oauth_token_request_duration_seconds"


class Endpoint:
    """A provider's fetch: answers each request with the next of ``answers``.

    An answer is a token lifetime in seconds (a token that expires then), or a
    :class:`TokenError` to raise; ``delay`` seconds pass before it answers.
    """

    def __init__(self, *answers: float | TokenError | None, delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.delay = delay
        self.calls = 0
        self.expiries: list[float | None] = []

    def __call__(self, timeout: float) -> Fetched:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if isinstance(answer, TokenError):
            raise answer
        expires_at = None if answer is None else time.time() + answer
        self.expiries.append(expires_at)
        return Fetched(Secret(f"{ACCESS_TOKEN}-{self.calls}"), expires_at)


def observed(
    metrics: Metrics, name: str, endpoint: Callable[[float], Fetched], timeout: float = 5.0
) -> TokenCache:
    """A token cache of client ``name`` in front of ``endpoint``, reporting to ``metrics``."""
    cache = TokenCache(name, endpoint, timeout=timeout)
    cache.observer = metrics
    return cache


def fresh(*clients: str) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure_oauth(dict.fromkeys(clients))
    return metrics, registry


def requests(registry: CollectorRegistry, client: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for result in TOKEN_RESULTS:
        found = registry.get_sample_value(REQUESTS, {"client": client, "result": result})
        assert found is not None, (client, result)
        out[result] = found
    return out


def refused(result: str) -> TokenError:
    return TokenError(f"token endpoint: {result} (HTTP 401)", result)


def test_every_configured_client_has_every_result_and_zero_expiry_before_any_request() -> None:
    _, registry = fresh("m365", "workspace")

    for client in ("m365", "workspace"):
        assert requests(registry, client) == dict.fromkeys(TOKEN_RESULTS, 0.0)
        assert registry.get_sample_value(EXPIRY, {"client": client}) == 0.0
        assert registry.get_sample_value(f"{DURATION}_count", {"client": client}) == 0.0


def test_results_are_success_and_every_token_error_result_of_the_contract() -> None:
    assert set(TOKEN_RESULTS) == {
        "success", "invalid_client", "unauthorized_client", "invalid_grant", "http_error",
        "timeout", "unreachable", "bad_response", "command_failed",
    }  # fmt: skip


def test_duration_buckets_run_from_50ms_to_30s() -> None:
    _, registry = fresh("m365")

    pattern = rf'{DURATION}_bucket{{client="m365",le="([^"]+)"}}'
    found = re.findall(pattern, generate_latest(registry).decode())
    bounds = [float(le) for le in found if le != "+Inf"]

    assert bounds == list(TOKEN_BUCKETS)
    assert (bounds[0], bounds[-1]) == (0.05, 30.0)


def test_a_fetched_token_counts_a_success_and_sets_the_expiry() -> None:
    metrics, registry = fresh("m365")
    endpoint = Endpoint(3600.0)
    cache = observed(metrics, "m365", endpoint)

    cache.token(5.0)

    assert requests(registry, "m365")["success"] == 1
    assert registry.get_sample_value(EXPIRY, {"client": "m365"}) == endpoint.expiries[0]


def test_a_cached_token_is_no_request() -> None:
    metrics, registry = fresh("m365")
    cache = observed(metrics, "m365", Endpoint(3600.0))

    for _ in range(3):
        cache.token(5.0)

    assert sum(requests(registry, "m365").values()) == 1
    assert registry.get_sample_value(f"{DURATION}_count", {"client": "m365"}) == 1


def test_a_refused_request_counts_its_result_and_keeps_the_held_tokens_expiry() -> None:
    metrics, registry = fresh("m365")
    endpoint = Endpoint(3600.0, refused("invalid_client"))
    cache = observed(metrics, "m365", endpoint)
    token = cache.token(5.0)
    cache.reject(token)

    with pytest.raises(TokenError):
        cache.token(5.0)

    counts = requests(registry, "m365")
    assert (counts["success"], counts["invalid_client"]) == (1, 1)
    assert sum(counts.values()) == 2
    assert registry.get_sample_value(EXPIRY, {"client": "m365"}) == endpoint.expiries[0]


def test_an_endpoint_that_does_not_answer_counts_a_timeout_and_its_wait() -> None:
    metrics, registry = fresh("slow")
    cache = observed(metrics, "slow", Endpoint(3600.0, delay=1.0), timeout=0.2)

    with pytest.raises(TokenError):
        cache.token(5.0)

    assert requests(registry, "slow")["timeout"] == 1
    seconds = registry.get_sample_value(f"{DURATION}_sum", {"client": "slow"})
    assert seconds is not None
    assert 0.2 <= seconds < 1.0
    assert registry.get_sample_value(f"{DURATION}_bucket", {"client": "slow", "le": "0.1"}) == 0
    assert registry.get_sample_value(f"{DURATION}_bucket", {"client": "slow", "le": "0.25"}) == 1


def test_a_token_without_an_expiry_sets_the_gauge_to_zero() -> None:
    metrics, registry = fresh("helper")
    metrics.configure_oauth({"helper": 1_900_000_000.0})
    cache = observed(metrics, "helper", Endpoint(None))

    cache.token(5.0)

    assert registry.get_sample_value(EXPIRY, {"client": "helper"}) == 0.0


def test_a_result_outside_the_contract_is_counted_as_bad_response_not_as_a_new_label() -> None:
    metrics, registry = fresh("m365")

    metrics.token_requested("m365", ERROR_TEXT, 0.1, None)

    assert requests(registry, "m365")["bad_response"] == 1
    assert ERROR_TEXT not in generate_latest(registry).decode()


def test_requests_of_an_unconfigured_client_are_not_counted() -> None:
    metrics, registry = fresh("m365")

    metrics.token_requested("gone", "success", 0.1, 2_000_000_000.0)

    assert 'client="gone"' not in generate_latest(registry).decode()


def test_reconfigure_drops_removed_clients_keeps_counts_and_takes_the_caches_expiry() -> None:
    metrics, registry = fresh("m365", "workspace")
    cache = observed(metrics, "m365", Endpoint(3600.0))
    cache.token(5.0)

    metrics.configure_oauth({"m365": cache.expires_at})

    text = generate_latest(registry).decode()
    assert 'client="workspace"' not in text
    assert requests(registry, "m365")["success"] == 1
    assert registry.get_sample_value(EXPIRY, {"client": "m365"}) == cache.expires_at

    metrics.configure_oauth({"m365": None})  # the cache was replaced: no token yet

    assert registry.get_sample_value(EXPIRY, {"client": "m365"}) == 0.0
    assert requests(registry, "m365")["success"] == 1


def test_requests_from_many_threads_are_all_counted() -> None:
    metrics, registry = fresh("m365")
    per_thread, threads = 200, 8

    def hammer() -> None:
        for n in range(per_thread):
            metrics.token_requested("m365", "success" if n % 2 else "timeout", 0.01, None)
            metrics.render()

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    counts = requests(registry, "m365")
    assert counts["success"] == counts["timeout"] == per_thread * threads / 2
    assert registry.get_sample_value(f"{DURATION}_count", {"client": "m365"}) == 1600


def test_no_secret_token_or_error_text_reaches_the_exposition() -> None:
    metrics, registry = fresh("m365")
    endpoint = Endpoint(3600.0, TokenError(f"{ERROR_TEXT} for {CLIENT_SECRET}", "invalid_client"))
    cache = observed(metrics, "m365", endpoint)
    cache.reject(cache.token(5.0))
    with pytest.raises(TokenError):
        cache.token(5.0)

    for text in (generate_latest(registry).decode(), metrics.render(openmetrics=True).decode()):
        for forbidden in (ACCESS_TOKEN, CLIENT_SECRET, ERROR_TEXT, "AADSTS"):
            assert forbidden not in text, forbidden


def test_client_label_values_are_only_configured_names_and_results_only_the_contract() -> None:
    metrics, registry = fresh("m365", "workspace")
    observed(metrics, "m365", Endpoint(3600.0)).token(5.0)

    text = generate_latest(registry).decode()

    pairs = re.findall(r'(client|result)="([^"]*)"', text)
    assert {value for label, value in pairs if label == "client"} == {"m365", "workspace"}
    assert {value for label, value in pairs if label == "result"} == set(TOKEN_RESULTS)
