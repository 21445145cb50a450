"""``limits.max_concurrent_runs`` and ``smtp_servers.X.max_connections``: config, daemon, metrics.

The limiter itself is tested in test_slots.py, against real SMTP sessions
in tests/protocol/test_concurrency.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from smtp_probe.app import Daemon
from smtp_probe.config import parse_config
from smtp_probe.config.errors import ConfigError
from smtp_probe.config.runtime import Config
from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.spec import DEFAULT_MAX_CONCURRENT_RUNS, DEFAULT_MAX_CONNECTIONS
from smtp_probe.probe.transcript import Transcript

# Port 9 on loopback: a run that fires during a test fails locally and fast.
SERVERS = """\
defaults: {interval: 1h, timeout: 500ms}
smtp_servers:
  relay: {host: 127.0.0.1, port: 9, tls: none%s}
  again: {host: 127.0.0.1, port: 9, tls: none}
probes:
  - {name: a, smtp: relay, from: a@x.test, to: b@y.test}
  - {name: b, smtp: again, from: a@x.test, to: b@y.test}
"""


def config(limits: str = "", relay: str = "") -> Config:
    return parse_config(SERVERS % relay + limits, environ={})


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return list(caught.value.errors)


def test_defaults_fit_a_small_vm() -> None:
    loaded = config()
    assert loaded.max_concurrent_runs == DEFAULT_MAX_CONCURRENT_RUNS == 32
    assert loaded.probes[0].spec.smtp.max_connections == DEFAULT_MAX_CONNECTIONS == 4


def test_the_keys_are_read() -> None:
    loaded = config("limits: {max_concurrent_runs: 7}\n", ", max_connections: 2")
    assert loaded.max_concurrent_runs == 7
    assert [p.spec.smtp.max_connections for p in loaded.probes] == [2, 4]


@pytest.mark.parametrize(
    ("limits", "relay", "expected"),
    [
        (
            "limits: {max_concurrent_runs: 0}\n",
            "",
            "<config>:8:31: limits.max_concurrent_runs: must be at least 1",
        ),
        (
            "",
            ", max_connections: -2",
            "<config>:3:65: smtp_servers.relay.max_connections: must be at least 1",
        ),
        (
            "",
            ", max_connections: many",
            "<config>:3:65: smtp_servers.relay.max_connections: expected a whole number of at "
            "least 1, got a string",
        ),
        (
            "limits: {max_concurrent_runs: true}\n",
            "",
            "<config>:8:31: limits.max_concurrent_runs: expected a whole number of at least 1, "
            "got a boolean",
        ),
        (
            "limits: {max_runs: 3}\n",
            "",
            "<config>:8:10: limits.max_runs: unknown key; allowed keys: max_concurrent_runs, "
            "sweep_grace",
        ),
        (
            "limits: {sweep_grace: 300}\n",
            "",
            "<config>:8:23: limits.sweep_grace: a duration needs a unit: 500ms, 30s, 5m or 1h",
        ),
        (
            "limits: {sweep_grace: 0s}\n",
            "",
            "<config>:8:23: limits.sweep_grace: a duration must be longer than zero",
        ),
        (
            "limits: {sweep_grace: -5m}\n",
            "",
            "<config>:8:23: limits.sweep_grace: expected a duration like 500ms, 30s, 5m or 1h",
        ),
    ],
)
def test_bad_limits_are_errors_naming_the_key_and_line(
    limits: str, relay: str, expected: str
) -> None:
    assert errors(SERVERS % relay + limits) == [expected]


def test_the_daemon_applies_the_limits_and_a_reload_changes_them() -> None:
    loads = iter([config("limits: {max_concurrent_runs: 3}\n", ", max_connections: 1")])

    async def main() -> tuple[int, int, int, int]:
        daemon = Daemon(config("limits: {max_concurrent_runs: 5}\n", ", max_connections: 2"),
                        load=lambda: next(loads))  # fmt: skip
        await daemon.start()
        try:
            relay = daemon.config.probes[0].spec.smtp
            before = daemon.slots.runs.limit, daemon.slots.connection(relay).limit
            applied, _ = await daemon.reload()
            assert applied
            return (*before, daemon.slots.runs.limit, daemon.slots.connection(relay).limit)
        finally:
            await daemon.stop(grace=5)

    # relay and again are one server (127.0.0.1:9): the smallest limit is theirs.
    assert asyncio.run(main()) == (5, 2, 3, 1)


def test_a_run_without_a_run_slot_by_its_deadline_is_an_error_and_the_wait_is_counted() -> None:
    registry = CollectorRegistry()

    async def main() -> tuple[RunResult | None, float | None]:
        daemon = Daemon(config("limits: {max_concurrent_runs: 1}\n"), registry=registry)
        hold = daemon.slots.runs.slot("a run slot", Transcript(), time.monotonic() + 30)
        async with hold:
            result = await daemon.run_on_demand("a")
            waiting = registry.get_sample_value("smtp_probe_runs_waiting", {"limit": "run"})
        return result, waiting

    result, waiting_after = asyncio.run(main())

    assert result is not None
    assert result.outcome is Outcome.ERROR
    assert result.stage is None
    assert result.error.startswith("no free run slot within the deadline (waited 0.")
    assert result.duration_seconds < 1.5
    lines = [line.text for line in result.transcript.lines]
    assert lines[0] == "waiting for a run slot (1 in use of 1, 0 waiting)"
    assert waiting_after == 0
    assert registry.get_sample_value("smtp_probe_slot_waits_total", {"limit": "run"}) == 1
    assert registry.get_sample_value("smtp_probe_slot_waits_total", {"limit": "connection"}) == 0


def test_runs_waiting_is_a_gauge_per_limit_and_waits_a_counter() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for _ in range(3):
        metrics.slot_wait_started("connection")
    metrics.slot_wait_started("run")
    metrics.slot_wait_ended("connection")
    metrics.slot_wait_started("nonsense")  # not a limit: ignored, no new label value

    def sample(name: str, limit: str) -> float | None:
        return registry.get_sample_value(name, {"limit": limit})

    assert sample("smtp_probe_runs_waiting", "connection") == 2
    assert sample("smtp_probe_runs_waiting", "run") == 1
    assert sample("smtp_probe_slot_waits_total", "connection") == 3
    assert sample("smtp_probe_slot_waits_total", "run") == 1
    assert sample("smtp_probe_runs_waiting", "nonsense") is None
    text = metrics.render().decode()
    assert 'smtp_probe_runs_waiting{limit="connection"} 2.0\n' in text
    assert 'smtp_probe_slot_waits_total{limit="run"} 1.0\n' in text
