"""A certificate that expires in two days: the expiry metric and the paging alert in a real Prometheus.

The route is real: the daemon (a real process) submits over implicit TLS to
a real stunnel in front of the stack's Postfix, and the message is delivered
to Dovecot and read back over IMAPS as on any other route. Only the
certificate the client sees is ours: issued by a test CA of this test, it
expires in two days (:mod:`tests.support.stunnel` says why a TLS front and
not a second Postfix). A real Prometheus scrapes the daemon every second and
evaluates the shipped rules, their ``for:`` scaled from minutes to seconds
as in ``test_alerting``.

Then: the expiry gauge of the SMTP leg is that certificate's notAfter; the
critical alert (page) and the soon alert (ticket) fire for that probe and
leg only, not for its IMAP leg or for the route whose certificates expire in
the year 3000; and the status page shows the two days in red.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from tests.e2e.test_alerting import RULES, fast_rules
from tests.support.daemon_proc import Daemon, config_text, start_daemon, stop_daemon
from tests.support.html_tree import parse
from tests.support.mailstack import MailStack
from tests.support.prom import Prometheus
from tests.support.routes import SENDER, SINK, probe_messages
from tests.support.stunnel import Stunnel

pytestmark = pytest.mark.e2e

CRITICAL = "SmtpProbeCertificateExpiringCritical"
SOON = "SmtpProbeCertificateExpiringSoon"


@dataclass
class Expiring:
    daemon: Daemon
    prometheus: Prometheus
    not_after: datetime


@pytest.fixture
def expiring(stack: MailStack, tmp_path: Path) -> Iterator[Expiring]:
    """Daemon with probes ``submission`` (the stack's certificate) and ``expiring`` (ours)."""
    ca = trustme.CA(organization_name="expiry test CA")
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="smtps.example.test",
                         not_after=not_after)  # fmt: skip
    ca_file, chain, key = tmp_path / "ca.pem", tmp_path / "chain.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    front = Stunnel(stack.smtp_port, chain, key, ca_file)
    config = config_text(stack, tmp_path, ["submission"]).replace(
        "mailboxes:\n",
        f"  fronted: {{host: 127.0.0.1, port: {front.port}, tls: tls, ca_file: {ca_file}}}\n"
        "mailboxes:\n",
    ) + (f"  - {{name: expiring, smtp: fronted, mailbox: imaps, from: {SENDER}, to: {SINK}}}\n")
    rules = [
        fast_rules(RULES / name, tmp_path / name)
        for name in ("smtp_probe_recording.yml", "smtp_probe_alerts.yml")
    ]
    daemon = start_daemon(stack, tmp_path, [], config=config)
    prometheus = Prometheus([f"127.0.0.1:{daemon.port}"], rules=rules)
    try:
        prometheus.start()
        yield Expiring(daemon, prometheus, not_after)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(40) == 0, daemon.log.read_text()[-3000:]
        end = time.monotonic() + 20
        while stack.queue() or probe_messages(stack):
            assert time.monotonic() < end, "probe mail left in the queue or the mailbox"
            time.sleep(0.5)
    finally:
        stop_daemon(daemon)
        prometheus.stop()
        front.stop()


def firing(prometheus: Prometheus, alertname: str) -> set[tuple[str, str]]:
    """(probe, leg) of every firing ``alertname``."""
    data = prometheus.api(
        "/api/v1/query", query=f'ALERTS{{alertname="{alertname}", alertstate="firing"}}'
    )
    return {(s["metric"]["probe"], s["metric"]["leg"]) for s in data["result"]}


def test_a_certificate_expiring_in_two_days_pages_for_its_probe_and_leg_only(
    expiring: Expiring,
) -> None:
    prometheus, daemon = expiring.prometheus, expiring.daemon

    # The route itself works: the message went through the front and arrived.
    prometheus.wait_for(
        "smtp_probe_success", lambda r: r == {"submission": 1, "expiring": 1}, timeout=30
    )
    expiry = prometheus.api("/api/v1/query", query="smtp_probe_tls_cert_expiry_timestamp_seconds")
    seen = {
        (s["metric"]["probe"], s["metric"]["leg"]): float(s["value"][1]) for s in expiry["result"]
    }
    assert seen[("expiring", "smtp")] == expiring.not_after.timestamp()
    far = datetime(2999, 1, 1, tzinfo=UTC).timestamp()  # the stack's certificate: year 3000
    assert {key for key, at in seen.items() if at > far} == {
        ("submission", "smtp"),
        ("submission", "imap"),
        ("expiring", "imap"),
    }

    # for: 5m -> 5 s (page), 15m -> 15 s (ticket), evaluated every second.
    end = time.monotonic() + 45
    while not (firing(prometheus, CRITICAL) and firing(prometheus, SOON)):
        assert time.monotonic() < end, f"not firing:\n{prometheus.log()[-2000:]}"
        time.sleep(0.5)
    assert firing(prometheus, CRITICAL) == {("expiring", "smtp")}
    assert firing(prometheus, SOON) == {("expiring", "smtp")}
    [alert] = [
        a
        for a in prometheus.api("/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == CRITICAL
    ]
    assert alert["labels"]["severity"] == "page"
    assert (
        "smtp certificate of probe expiring expires within 3 days"
        in (alert["annotations"]["summary"])
    )

    # The status page says so too, in red, beside the healthy legs in green.
    status, html = daemon.get("/")
    assert status == 200
    rows = {
        (r.attrs["data-probe"], r.attrs["data-leg"]): r.find("span", cls="days")
        for r in parse(html).find_all("tr", cls="tls")
    }
    assert rows[("expiring", "smtp")].text() in {"1.9 days", "2.0 days"}
    assert "bad" in rows[("expiring", "smtp")].classes
    assert all("ok" in badge.classes for key, badge in rows.items() if key != ("expiring", "smtp"))
