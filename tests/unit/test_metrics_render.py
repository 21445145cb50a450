"""The fast /metrics exposition says exactly what the registry says."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from smtp_probe.config import parse_config
from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import Outcome, ReflectorLegs, Stage
from tests.support.results import run_result

CONFIG = """
smtp_servers:
  relay: {host: 127.0.0.1, port: 2525, tls: none}
probes:
  - {name: alpha, smtp: relay, from: a@example.test, to: b@example.test}
  - {name: beta, smtp: relay, from: a@example.test, to: b@example.test, interval: 30s}
"""


def busy_metrics() -> Metrics:
    metrics = Metrics(CollectorRegistry())
    metrics.configure(parse_config(CONFIG).probes)
    metrics.record(run_result("alpha", Outcome.DELIVERED, delivery=0.012))
    metrics.record(run_result("alpha", Outcome.DELIVERED, delivery=42.0))
    metrics.record(
        run_result("beta", Outcome.SEND_FAILED, stage=Stage.RCPT_TO, reply_code=550, reply="5.1.1")
    )
    metrics.late_message("alpha")
    metrics.run_started("beta")
    metrics.slot_wait_started("connection")
    metrics.slot_wait_started("connection")
    metrics.slot_wait_ended("connection")
    metrics.slot_wait_started("run")
    metrics.reloaded(ok=True, at=1_700_000_000.5)
    metrics.configure_oauth({"m365": None, "workspace": 1_700_003_600.0})
    metrics.token_requested("m365", "success", 0.31, 1_700_003_599.5)
    metrics.token_requested("m365", "invalid_client", 0.04, None)
    metrics.token_requested("workspace", "timeout", 10.0, None)
    return metrics


def test_text_render_is_byte_for_byte_what_generate_latest_writes() -> None:
    metrics = busy_metrics()

    assert metrics.render() == generate_latest(metrics.registry)


def test_openmetrics_render_is_what_the_openmetrics_encoder_writes_and_parses() -> None:
    metrics = busy_metrics()

    rendered = metrics.render(openmetrics=True)

    assert rendered == generate_openmetrics(metrics.registry)  # type: ignore[no-untyped-call]
    families = text_string_to_metric_families(rendered.decode())  # type: ignore[no-untyped-call]
    names = {family.name for family in families}
    assert "smtp_probe_runs" in names
    assert "smtp_probe_delivery_duration_seconds" in names
    assert "smtp_probe_oauth_token_requests" in names
    assert "smtp_probe_oauth_token_request_duration_seconds" in names


def test_text_render_of_reflector_legs_is_what_generate_latest_writes() -> None:
    metrics = Metrics(CollectorRegistry())
    probes = parse_config(CONFIG).probes
    metrics.configure(replace(p, spec=replace(p.spec, reflector=p.name == "beta")) for p in probes)
    legs = ReflectorLegs(outbound_seconds=1.5, return_seconds=0.25, source="Received")
    metrics.record(run_result("beta", Outcome.DELIVERED, delivery=1.75, reflector=legs))

    rendered = metrics.render()

    assert rendered == generate_latest(metrics.registry)
    assert b'smtp_probe_reflector_leg_seconds{leg="outbound",probe="beta"} 1.5\n' in rendered
    assert b'smtp_probe_reflector_leg_seconds{leg="return",probe="beta"} 0.25\n' in rendered


def test_a_removed_probe_leaves_no_line_behind() -> None:
    metrics = busy_metrics()
    metrics.configure(parse_config(CONFIG).probes[:1])

    assert b'probe="beta"' not in metrics.render()
    assert b'probe="alpha"' in metrics.render()


def test_a_removed_oauth_client_leaves_no_line_behind_and_the_render_still_matches() -> None:
    metrics = busy_metrics()
    metrics.configure_oauth({"m365": None})

    assert b'client="workspace"' not in metrics.render()
    assert b'client="m365"' in metrics.render()
    assert metrics.render() == generate_latest(metrics.registry)
