"""The dashboard's "Authentication and spam" row against a real Prometheus and real runs.

The mail-stack daemon of :mod:`tests.e2e.test_dashboard` reads no
Authentication-Results (its Postfix writes none), so this row has its own
case: the real :class:`~smtp_probe.app.Daemon` and HTTP server, in this
process, run two probes every two seconds through filter hops
(:mod:`tests.support.stamping_smtpd`, standing for a receiver's
OpenDKIM/rspamd) into the demo sandbox: ``trusted`` gets ``dkim=pass`` and
an rspamd score, ``distrusted`` gets ``dkim=fail`` and ends ``auth_failed``.
A real Prometheus scrapes it, and every query of the row must run, return
data and show that.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from smtp_probe.app import Daemon as InProcessDaemon
from smtp_probe.config.runtime import Config, ScheduledProbe, ServerSettings
from smtp_probe.probe.spec import ProbeSpec, SmtpServer, TlsMode
from smtp_probe.sandbox import DEMO_USER
from smtp_probe.server.http import HttpServer
from tests.e2e.test_dashboard import (
    JOB,
    RANGE_PANEL_TYPES,
    RANGE_SECONDS,
    by_labels,
    evaluate,
    grafana_values,
    load_dashboard,
    queries,
    row_panel_titles,
    substitute,
)
from tests.support.loopback_smtpd import LOOPBACK
from tests.support.prom import Prometheus
from tests.support.sandbox_imap import sandbox, sandbox_mailbox
from tests.support.stamping_smtpd import Stamping, stamping_hop

ROW = "Authentication and spam"
RECEIVER = "mx.sandbox.test"
STAMPS = {
    "trusted": [
        f"Authentication-Results: {RECEIVER}; dkim=pass header.d=sender.test; spf=pass",
        "X-Spamd-Result: default: False [2.40 / 15.00]",
    ],
    "distrusted": [f"Authentication-Results: {RECEIVER}; dkim=fail header.d=sender.test"],
}


@pytest.fixture(scope="module")
def verdict_daemon() -> Iterator[int]:
    """The in-process daemon's HTTP port, while both probes run every two seconds."""
    started = threading.Event()
    stop = threading.Event()
    bound: list[int] = []
    failure: list[BaseException] = []

    async def serve() -> None:
        async with AsyncExitStack() as stack:
            address = await stack.enter_async_context(sandbox())
            probes = []
            for name, lines in STAMPS.items():
                stamping = Stamping((address.host, address.smtp_port), lines)
                port = await stack.enter_async_context(stamping_hop(stamping))
                spec = ProbeSpec(
                    name=name,
                    smtp=SmtpServer(host=LOOPBACK, port=port, tls=TlsMode.NONE),
                    mail_from="probe@sender.test",
                    rcpt_to=DEMO_USER,
                    mailbox=sandbox_mailbox(address, junk_folders=(), authserv_id=RECEIVER),
                    timeout=1.8,
                    expect_auth=(("dkim", "pass"),),
                )
                probes.append(ScheduledProbe(spec, 2.0, 0.1, smtp_name=name, mailbox_name="inbox"))
            daemon = InProcessDaemon(Config(tuple(probes)))
            http = HttpServer(daemon, ServerSettings("127.0.0.1", 0))
            await http.start()
            await daemon.start()
            bound.append(http.bound.port)
            started.set()
            try:
                await asyncio.to_thread(stop.wait)
            finally:
                await daemon.stop()
                await http.stop()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture below
            failure.append(exc)
            started.set()

    server = threading.Thread(target=run, name="verdict daemon")
    server.start()
    try:
        assert started.wait(30), "the daemon did not start"
        assert not failure, failure
        yield bound[0]
    finally:
        stop.set()
        server.join(30)
    assert not failure, failure


@pytest.fixture(scope="module")
def verdict_prometheus(verdict_daemon: int) -> Iterator[Prometheus]:
    """A real Prometheus scraping the daemon, once it has itself seen three more runs each."""
    server = Prometheus([f"127.0.0.1:{verdict_daemon}"], job=JOB)
    server.start()
    try:
        first = server.wait_for(
            "smtp_probe_runs_total", lambda r: set(r) == set(STAMPS), timeout=30
        )
        server.wait_for(
            "smtp_probe_runs_total",
            lambda r: all(r.get(name, 0) >= first[name] + 3 for name in STAMPS),
            timeout=40,
        )
        yield server
    finally:
        server.stop()


def test_authentication_row_queries_show_what_the_receivers_said(
    verdict_prometheus: Prometheus,
) -> None:
    dashboard = load_dashboard()
    titles = row_panel_titles(dashboard, ROW)
    assert len(titles) >= 3
    values = grafana_values("(" + "|".join(STAMPS) + ")")
    now = time.time()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    problems: list[str] = []
    for query in queries(dashboard):
        if query.panel not in titles:
            continue
        expr = substitute(query.expr, values)
        result, error = evaluate(verdict_prometheus, "/api/v1/query", query=expr, time=f"{now:.3f}")
        if error or not result:
            problems.append(f"{query.panel}: {error or 'no data (instant)'}: {expr}")
        results[(query.panel, query.ref)] = result
        if query.range or query.panel_type in RANGE_PANEL_TYPES:
            series, error = evaluate(
                verdict_prometheus, "/api/v1/query_range", query=expr,
                start=f"{now - RANGE_SECONDS:.3f}", end=f"{now:.3f}", step="1",
            )  # fmt: skip
            if error or not any(s["values"] for s in series):
                problems.append(f"{query.panel}: {error or 'no data (range)'}: {expr}")
    assert not problems, "\n".join(problems)

    auth = by_labels(
        results[("Authentication results (last arrived message)", "A")], "probe", "method", "result"
    )
    assert auth[("trusted", "dkim", "pass")] == 1
    assert auth[("distrusted", "dkim", "fail")] == 1
    assert auth[("distrusted", "dmarc", "none")] == 1
    assert ("trusted", "dkim", "fail") not in auth
    failed = by_labels(results[("Runs ending auth_failed", "A")], "probe")
    assert failed[("trusted",)] == 0
    assert failed[("distrusted",)] > 0
    assert by_labels(results[("Spam score vs threshold", "A")], "probe") == {("trusted",): 2.4}
    assert by_labels(results[("Spam score vs threshold", "B")], "probe") == {("trusted",): 15.0}
