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

from collections.abc import Iterator
from contextlib import AsyncExitStack

import pytest

from smtp_probe.config.runtime import Config, ScheduledProbe
from smtp_probe.probe.spec import ProbeSpec, SmtpServer, TlsMode
from smtp_probe.sandbox import DEMO_USER
from tests.e2e.test_dashboard import (
    JOB,
    by_labels,
    daemon_thread,
    grafana_values,
    load_dashboard,
    panel_results,
    row_panel_titles,
    wait_for_runs,
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


async def configure(stack: AsyncExitStack) -> Config:
    """Both probes, each through its own stamping hop into one demo sandbox."""
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
    return Config(tuple(probes))


@pytest.fixture(scope="module")
def verdict_daemon() -> Iterator[int]:
    """The in-process daemon's HTTP port, while both probes run every two seconds."""
    with daemon_thread(configure, "verdict daemon") as port:
        yield port


@pytest.fixture(scope="module")
def verdict_prometheus(verdict_daemon: int) -> Iterator[Prometheus]:
    """A real Prometheus scraping the daemon, once it has itself seen three more runs each."""
    server = Prometheus([f"127.0.0.1:{verdict_daemon}"], job=JOB)
    server.start()
    try:
        wait_for_runs(server, STAMPS, first_timeout=30)
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
    results, problems = panel_results(verdict_prometheus, dashboard, titles, values)
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
