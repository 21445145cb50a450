"""The daemon's OAuth wiring: metrics observe every token cache; a reload keeps unchanged clients.

Configs are built as the loader builds them: one :class:`TokenCache` per
``oauth_clients`` entry, held by ``Config.oauth_clients`` and by every server
and mailbox that names the client. Each cache sits in front of a small
fetch function of ours (:class:`Endpoint`), which counts how often a token
was really requested. Probes run hourly (first runs half an hour or more
away) and no mailbox is watched, so nothing touches the network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from smtp_probe.app import Daemon, keep_unchanged_oauth_clients
from smtp_probe.config.runtime import Config, ScheduledProbe
from smtp_probe.oauth.cache import Fetched, TokenCache
from smtp_probe.oauth.settings import GenericClient, OAuthClient
from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.secret import Secret

REQUESTS = "smtp_probe_oauth_token_requests_total"
EXPIRY = "smtp_probe_oauth_token_expiry_timestamp_seconds"
LIFETIME = 3600.0


class Endpoint:
    """A token endpoint as a provider's fetch sees it: each call issues a new token."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, timeout: float) -> Fetched:
        self.calls += 1
        return Fetched(Secret(f"access-token-{self.calls}"), time.time() + LIFETIME)


def settings(name: str, secret: str = "first-secret") -> OAuthClient:  # noqa: S107 - test value
    return OAuthClient(
        name,
        GenericClient("https://idp.example.test/token", "smtp-probe", client_secret=Secret(secret)),
    )


class Clients:
    """What the loader would build for some ``oauth_clients``: settings, caches, endpoints."""

    def __init__(self, *clients: OAuthClient) -> None:
        self.settings = {client.name: client for client in clients}
        self.endpoints = {client.name: Endpoint() for client in clients}
        self.caches = {
            client.name: TokenCache(client.name, self.endpoints[client.name], timeout=5.0)
            for client in clients
        }


def mailbox(cache: TokenCache | None) -> Mailbox:
    return Mailbox("127.0.0.1", 993, "probe@example.test", oauth=cache, tls=TlsMode.TLS)


def config(clients: Clients, probes: Mapping[str, str], *, with_mailbox: bool = False) -> Config:
    """Hourly SMTP-only probes ``{probe name: client name}``, each logging in with its client."""
    scheduled = []
    for name, client in probes.items():
        cache = clients.caches[client]
        smtp = SmtpServer("127.0.0.1", 9, TlsMode.NONE, username="probe@example.test", oauth=cache)
        spec = ProbeSpec(
            name, smtp, "probe@example.test", "sink@example.test",
            mailbox=mailbox(cache) if with_mailbox else None, timeout=5.0,
        )  # fmt: skip
        scheduled.append(ScheduledProbe(spec, interval=3600.0, jitter=0.0))
    return Config(
        tuple(scheduled),
        oauth_clients=MappingProxyType(dict(clients.caches)),
        oauth_settings=MappingProxyType(dict(clients.settings)),
    )


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_start_makes_the_metrics_observe_every_configured_client() -> None:
    clients = Clients(settings("m365"), settings("workspace"))
    registry = CollectorRegistry()
    daemon = Daemon(config(clients, {"alpha": "m365", "beta": "workspace"}), registry=registry)

    async def main() -> None:
        await daemon.start()
        try:
            await asyncio.to_thread(clients.caches["m365"].token, 5.0)
        finally:
            await daemon.stop()

    run(main)

    assert all(cache.observer is daemon.metrics for cache in clients.caches.values())
    assert sample(registry, REQUESTS, client="m365", result="success") == 1
    assert sample(registry, REQUESTS, client="workspace", result="success") == 0
    assert sample(registry, EXPIRY, client="m365") == clients.caches["m365"].expires_at
    assert sample(registry, EXPIRY, client="workspace") == 0


def test_a_reload_with_unchanged_settings_keeps_the_cache_and_its_token() -> None:
    running = Clients(settings("m365"))
    loaded = Clients(settings("m365"))  # the loader's new, empty cache for the same settings
    registry = CollectorRegistry()
    daemon = Daemon(
        config(running, {"alpha": "m365"}),
        registry=registry,
        load=lambda: config(loaded, {"alpha": "m365", "beta": "m365"}),
    )
    kept = running.caches["m365"]

    async def main() -> None:
        await daemon.start()
        try:
            first = await asyncio.to_thread(kept.token, 5.0)
            applied, _ = await daemon.reload()
            assert applied
            for name in ("alpha", "beta"):
                probe = daemon.config.probe(name)
                assert probe is not None
                source = probe.spec.smtp.oauth
                assert source is kept, name
                again = await asyncio.to_thread(source.token, 5.0)
                assert again.value == first.value
        finally:
            await daemon.stop()

    run(main)

    assert daemon.config.oauth_clients["m365"] is kept
    assert running.endpoints["m365"].calls == 1, "a reload must not refetch the token"
    assert loaded.endpoints["m365"].calls == 0
    assert sample(registry, REQUESTS, client="m365", result="success") == 1
    assert sample(registry, EXPIRY, client="m365") == kept.expires_at


def test_a_reload_with_a_rotated_secret_gets_a_new_cache_that_fetches_and_is_observed() -> None:
    running = Clients(settings("m365", "expired-secret"))
    loaded = Clients(settings("m365", "rotated-secret"))
    registry = CollectorRegistry()
    daemon = Daemon(
        config(running, {"alpha": "m365"}),
        registry=registry,
        load=lambda: config(loaded, {"alpha": "m365"}),
    )
    replacement = loaded.caches["m365"]

    async def main() -> None:
        await daemon.start()
        try:
            await asyncio.to_thread(running.caches["m365"].token, 5.0)
            applied, _ = await daemon.reload()
            assert applied
            # The old token is no longer the client's: its expiry is not shown.
            assert sample(registry, EXPIRY, client="m365") == 0
            probe = daemon.config.probe("alpha")
            assert probe is not None
            assert probe.spec.smtp.oauth is replacement
            await asyncio.to_thread(replacement.token, 5.0)
        finally:
            await daemon.stop()

    run(main)

    assert replacement.observer is daemon.metrics
    assert loaded.endpoints["m365"].calls == 1
    assert sample(registry, REQUESTS, client="m365", result="success") == 2
    assert sample(registry, EXPIRY, client="m365") == replacement.expires_at


def test_a_reload_that_removes_a_client_drops_its_series() -> None:
    running = Clients(settings("m365"), settings("workspace"))
    loaded = Clients(settings("m365"))
    registry = CollectorRegistry()
    daemon = Daemon(
        config(running, {"alpha": "m365", "beta": "workspace"}),
        registry=registry,
        load=lambda: config(loaded, {"alpha": "m365"}),
    )

    async def main() -> None:
        await daemon.start()
        try:
            assert 'client="workspace"' in generate_latest(registry).decode()
            applied, _ = await daemon.reload()
            assert applied
        finally:
            await daemon.stop()

    run(main)

    text = generate_latest(registry).decode()
    assert 'client="workspace"' not in text
    assert 'client="m365"' in text


def test_keeping_a_client_swaps_its_cache_into_mailboxes_so_their_watcher_stays() -> None:
    running = Clients(settings("m365"), settings("workspace"))
    loaded = Clients(settings("m365"), settings("workspace", "rotated"))
    before = config(running, {"alpha": "m365", "beta": "workspace"}, with_mailbox=True)
    after = config(loaded, {"alpha": "m365", "beta": "workspace"}, with_mailbox=True)

    kept = keep_unchanged_oauth_clients(before, after)

    alpha, beta = kept.probe("alpha"), kept.probe("beta")
    assert alpha is not None
    assert beta is not None
    assert alpha.spec.mailbox is not None
    assert alpha.spec.mailbox.oauth is running.caches["m365"]
    assert alpha.spec.mailbox == before.probes[0].spec.mailbox, "same mailbox: same watcher"
    assert beta.spec.smtp.oauth is loaded.caches["workspace"]
    assert kept.oauth_clients == {
        "m365": running.caches["m365"],
        "workspace": loaded.caches["workspace"],
    }
    assert kept.oauth_settings == after.oauth_settings


def test_a_config_without_oauth_clients_is_left_as_loaded() -> None:
    empty = Clients()
    before = config(empty, {})
    after = config(empty, {})

    assert keep_unchanged_oauth_clients(before, after) is after
