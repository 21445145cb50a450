"""The fast /metrics exposition says exactly what the registry says."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from smtp_probe.config import parse_config
from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import Arrival, Outcome, RunResult, SmtpReport, Stage
from smtp_probe.probe.transcript import Transcript

CONFIG = """
smtp_servers:
  relay: {host: 127.0.0.1, port: 2525, tls: none}
probes:
  - {name: alpha, smtp: relay, from: a@example.test, to: b@example.test}
  - {name: beta, smtp: relay, from: a@example.test, to: b@example.test, interval: 30s}
"""


def result(probe: str, outcome: Outcome, stage: Stage | None, delivery: float | None) -> RunResult:
    return RunResult(
        probe=probe,
        run_id="r",
        outcome=outcome,
        stage=stage,
        error="",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_seconds=0.25,
        smtp=SmtpReport(reply_code=550 if stage else 250, stage_seconds={Stage.EHLO: 0.002}),
        transcript=Transcript(),
        delivery_seconds=delivery,
        arrival=Arrival(uid=1, folder="INBOX", seen_at=0.0) if delivery else None,
    )


def busy_metrics() -> Metrics:
    metrics = Metrics(CollectorRegistry())
    metrics.configure(parse_config(CONFIG).probes)
    metrics.record(result("alpha", Outcome.DELIVERED, None, 0.012))
    metrics.record(result("alpha", Outcome.DELIVERED, None, 42.0))
    metrics.record(result("beta", Outcome.SEND_FAILED, Stage.RCPT_TO, None))
    metrics.late_message("alpha")
    metrics.run_started("beta")
    metrics.reloaded(ok=True, at=1_700_000_000.5)
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


def test_a_removed_probe_leaves_no_line_behind() -> None:
    metrics = busy_metrics()
    metrics.configure(parse_config(CONFIG).probes[:1])

    assert b'probe="beta"' not in metrics.render()
    assert b'probe="alpha"' in metrics.render()
