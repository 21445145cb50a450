"""The dashboard's "Policy and DNS" row against a real Prometheus.

The mail-stack daemon of :mod:`tests.e2e.test_dashboard` runs no policy
probes and no DNS checks, so this row has its own case: the exporter's real
:class:`~smtp_probe.metrics.Metrics`, configured with an ``open_relay``, an
``smtp_smuggling`` and a DNS-checking probe, is served over HTTP and scraped
by a real Prometheus while it is given run results and DNS reports (the
values the engines hand it; the engines themselves are tested against real
Postfix and Knot elsewhere). Every query of the row must run, return data
and show those values, and the MTA-STS panel must show the downgrade from
``enforce`` to ``testing`` over time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry

from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import DnsCheckResult, DnsReport, Outcome, SmugglingVerdict
from smtp_probe.probe.spec import DnsCheck
from smtp_probe.probe.transcript import Transcript
from tests.e2e.test_dashboard import (
    JOB,
    RANGE_SECONDS,
    by_labels,
    evaluate,
    grafana_values,
    load_dashboard,
    panel_results,
    row_panel_titles,
    substitute,
)
from tests.support.prom import Prometheus
from tests.unit.test_metrics_policy import DEFAULT, failed, ok, policy_run, probes

ROW = "Policy and DNS"
PROBES = ("relay", "smuggling", "dns", "plain")


class Exporter:
    """``/metrics`` of one :class:`Metrics` on 127.0.0.1, on a thread."""

    def __init__(self, metrics: Metrics) -> None:
        exported = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exported.render()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: Prometheus scrapes every second."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="exporter")

    def __enter__(self) -> Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def now_report(*results: DnsCheckResult) -> DnsReport:
    """A DNS report of probe ``dns`` that finished just now."""
    return DnsReport(
        probe="dns",
        started_at=datetime.now(UTC),
        duration_seconds=0.2,
        results=results,
        transcript=Transcript(clock=lambda: 0.0),
    )


def dns_results(mode: str) -> tuple[DnsCheckResult, ...]:
    return (
        ok(DnsCheck.MX),
        ok(DnsCheck.DMARC, policy="reject"),
        (ok if mode == "enforce" else failed)(DnsCheck.MTA_STS, policy=mode),
        failed(DnsCheck.DNSBL, listed=(("zen.example.test", True), ("bl.example.test", False))),
        failed(DnsCheck.FCRDNS),
    )


@pytest.fixture(scope="module")
def policy_prometheus() -> Iterator[tuple[Metrics, Prometheus]]:
    """Prometheus once it has seen the MTA-STS mode go from enforce to testing."""
    metrics = Metrics(CollectorRegistry())
    metrics.configure(probes(DEFAULT))
    metrics.record(policy_run("relay", Outcome.REJECTED))
    metrics.record_dns(now_report(*dns_results("enforce")))
    with Exporter(metrics) as exporter:
        server = Prometheus([f"127.0.0.1:{exporter.port}"], job=JOB)
        server.start()
        try:
            enforce = 'max by (probe) (smtp_probe_mta_sts_mode_info{mode="enforce"})'
            server.wait_for(enforce, lambda r: r == {"dns": 1}, timeout=20)
            time.sleep(3)  # a few scrapes of the enforce state
            metrics.record(policy_run("relay", Outcome.ACCEPTED_UNEXPECTEDLY))
            verdicts = (
                SmugglingVerdict("lf_dot_crlf", True, "second 250"),
                SmugglingVerdict("lf_dot_lf", False, "one 250"),
            )
            smuggled = policy_run("smuggling", Outcome.ACCEPTED_UNEXPECTEDLY, smuggling=verdicts)
            metrics.record(smuggled)
            metrics.record_dns(now_report(*dns_results("testing")))
            testing = 'max by (probe) (smtp_probe_mta_sts_mode_info{mode="testing"})'
            server.wait_for(testing, lambda r: r == {"dns": 1}, timeout=20)
            yield metrics, server
        finally:
            server.stop()


def test_policy_and_dns_row_queries_show_what_the_probes_found(
    policy_prometheus: tuple[Metrics, Prometheus],
) -> None:
    _, prometheus = policy_prometheus
    dashboard = load_dashboard()
    titles = row_panel_titles(dashboard, ROW)
    assert len(titles) >= 5
    values = grafana_values("(" + "|".join(PROBES) + ")")
    results, problems = panel_results(prometheus, dashboard, titles, values)
    assert not problems, "\n".join(problems)

    policy = by_labels(results[("Policy checks (last run)", "A")], "probe", "check")
    # 2 ACCEPTED (violation), 1 REFUSED (success), 0 FAILED: both were accepted last.
    assert policy == {("relay", "open_relay"): 2, ("smuggling", "smtp_smuggling"): 2}
    variants = by_labels(results[("SMTP smuggling per variant", "A")], "probe", "variant")
    assert variants == {("smuggling", "lf_dot_crlf"): 1, ("smuggling", "lf_dot_lf"): 0}
    passed = by_labels(results[("DNS checks (last run)", "A")], "probe", "check")
    assert passed == {
        ("dns", "mx"): 1,
        ("dns", "dmarc"): 1,
        ("dns", "mta_sts"): 0,
        ("dns", "dnsbl"): 0,
        ("dns", "fcrdns"): 0,
    }
    ages = by_labels(results[("DNS checks (last run)", "B")], "probe", "check")
    assert set(ages) == set(passed)
    assert all(0 <= age < 60 for age in ages.values()), ages
    listed = by_labels(results[("DNSBL listings", "A")], "probe", "zone")
    assert listed == {("dns", "zen.example.test"): 1, ("dns", "bl.example.test"): 0}
    assert by_labels(results[("DMARC policy", "A")], "probe") == {("dns",): 3}
    assert by_labels(results[("MTA-STS mode", "A")], "probe") == {("dns",): 2}


def over_time(prometheus: Prometheus, title: str, probe: str) -> list[float]:
    """The values of panel ``title``'s query for ``probe`` over the last minute."""
    [panel] = [
        p
        for row in load_dashboard()["panels"]
        if row["title"] == ROW
        for p in row["panels"]
        if p["title"] == title
    ]
    expr = substitute(panel["targets"][0]["expr"], grafana_values(f"({probe})"))
    now = time.time()
    series, error = evaluate(
        prometheus, "/api/v1/query_range", query=expr,
        start=f"{now - RANGE_SECONDS:.3f}", end=f"{now:.3f}", step="1",
    )  # fmt: skip
    assert not error, error
    [only] = series
    return [float(v) for _, v in only["values"]]


def test_the_timelines_show_the_change_over_time(
    policy_prometheus: tuple[Metrics, Prometheus],
) -> None:
    """The MTA-STS mode went from enforce (3) to testing (2); relay from REFUSED (1) to ACCEPTED (2)."""
    _, prometheus = policy_prometheus
    mode = over_time(prometheus, "MTA-STS mode", "dns")
    assert (mode[0], mode[-1], set(mode)) == (3, 2, {2, 3})
    relay = over_time(prometheus, "Policy checks (last run)", "relay")
    assert (relay[0], relay[-1], set(relay)) == (1, 2, {1, 2})
