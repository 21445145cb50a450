"""An open relay and an accepted smuggled message page in a real Prometheus; the safe twins stay quiet.

The daemon (a real process) runs four policy probes against the real policy
Postfix of :mod:`tests.support.policystack`: ``open_relay`` through its
``open_relay`` listener (``mynetworks = 0.0.0.0/0``) and through its
``secure`` one, ``smtp_smuggling`` through its ``smuggling`` listener
(``smtpd_forbid_bare_newline = no``, Debian 12's default) and through
``secure``. A real Prometheus scrapes it every second and evaluates the
shipped rules, their ``for:`` and windows scaled from minutes to seconds as
in ``test_alerting``.

Then: SmtpProbeOpenRelay and SmtpProbeSmtpSmugglingAccepted fire (pages) for
the misconfigured listeners' probes only, with the variant that got through
named; the policy gauges say 1 there and 0 for the secure twins; and
SmtpProbeDeliveryFailing and the burn-rate pages stay quiet, although every
run of those probes ends ``accepted_unexpectedly`` (success 0): the policy
alert speaks for them. The relay probe has no mailbox, so it sends nothing;
the smuggling probes' messages are found and deleted (the ``policy`` fixture
checks that queues and mailboxes are left clean).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_alerting import RULES, fast_rules
from tests.support.daemon_proc import Daemon, start_daemon, stop_daemon
from tests.support.policystack import (
    LOCAL_RECIPIENT,
    OPEN_RELAY,
    OUTSIDE_RECIPIENT,
    OUTSIDE_SENDER,
    SECURE,
    SMUGGLING,
    PolicyStack,
)
from tests.support.prom import Prometheus
from tests.support.routes import SENDER, SINK

pytestmark = pytest.mark.e2e

OPEN_RELAY_ALERT = "SmtpProbeOpenRelay"
SMUGGLING_ALERT = "SmtpProbeSmtpSmugglingAccepted"
QUIET = ("SmtpProbeDeliveryFailing", "SmtpProbeErrorBudgetBurnFast", "SmtpProbeStale")
VARIANTS = ("lf_dot_crlf", "cr_dot_cr")
"""One variant the smuggling listener takes, one it does not (a bare CR is no line end)."""


@dataclass
class Policing:
    daemon: Daemon
    prometheus: Prometheus


def config(policy: PolicyStack, workdir: Path) -> str:
    """Four policy probes: each check through a misconfigured and the secure listener."""
    ports = policy.ports
    mailstack = policy.mailstack
    servers = "".join(
        f"  {name}: {{host: 127.0.0.1, port: {ports[name]}, tls: starttls,"
        f" ca_file: {policy.ca_file}, timeout: 10s}}\n"
        for name in (OPEN_RELAY, SMUGGLING, SECURE)
    )
    relay = f"from: {OUTSIDE_SENDER}, to: {OUTSIDE_RECIPIENT}, check: open_relay"
    smuggle = (
        f"mailbox: imaps, from: {SENDER}, to: {LOCAL_RECIPIENT}, check: smtp_smuggling,"
        f" smuggling_variants: [{', '.join(VARIANTS)}]"
    )
    return (
        "defaults: {interval: 8s, timeout: 7s, jitter: 100ms}\n"
        f"token_secret_file: {workdir / 'token'}\n"
        f"smtp_servers:\n{servers}"
        "mailboxes:\n"
        f"  imaps: {{host: 127.0.0.1, port: {mailstack.imaps_port}, tls: tls,"
        f" ca_file: {mailstack.ca_file}, username: {SINK}, password: '${{SINK_PASSWORD}}'}}\n"
        "probes:\n"
        f"  - {{name: relay-open, smtp: {OPEN_RELAY}, {relay}}}\n"
        f"  - {{name: relay-closed, smtp: {SECURE}, {relay}}}\n"
        f"  - {{name: smuggle-open, smtp: {SMUGGLING}, {smuggle}}}\n"
        f"  - {{name: smuggle-safe, smtp: {SECURE}, {smuggle}}}\n"
    )


@pytest.fixture
def policing(policy: PolicyStack, tmp_path: Path) -> Iterator[Policing]:
    """The daemon running the four probes, and a Prometheus with the shipped rules, sped up."""
    rules = [
        fast_rules(RULES / name, tmp_path / name)
        for name in ("smtp_probe_recording.yml", "smtp_probe_alerts.yml")
    ]
    daemon = start_daemon(policy.mailstack, tmp_path, [], config=config(policy, tmp_path))
    prometheus = Prometheus([f"127.0.0.1:{daemon.port}"], rules=rules)
    try:
        prometheus.start()
        yield Policing(daemon, prometheus)
        # Runs in flight finish and delete their messages before the policy fixture looks.
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(40) == 0, daemon.log.read_text()[-3000:]
    finally:
        stop_daemon(daemon)
        prometheus.stop()


def firing(prometheus: Prometheus, alertname: str) -> dict[str, dict[str, str]]:
    """Labels of every firing ``alertname``, by probe."""
    data = prometheus.api(
        "/api/v1/query", query=f'ALERTS{{alertname="{alertname}", alertstate="firing"}}'
    )
    return {s["metric"]["probe"]: s["metric"] for s in data["result"]}


def test_open_relay_and_smuggling_page_for_the_misconfigured_listeners_only(
    policing: Policing,
) -> None:
    prometheus, daemon = policing.prometheus, policing.daemon

    # Each probe has finished two runs, as Prometheus itself saw them.
    prometheus.wait_for(
        "smtp_probe_runs_total", lambda r: len(r) == 4 and min(r.values()) >= 2, timeout=60
    )
    violations = prometheus.query("max by (probe) (smtp_probe_policy_violation)")
    assert violations == {"relay-open": 1, "relay-closed": 0, "smuggle-open": 1,
                          "smuggle-safe": 0}, daemon.log.read_text()[-3000:]  # fmt: skip
    assert prometheus.query("max by (probe) (smtp_probe_success)") == {
        "relay-open": 0,
        "relay-closed": 1,
        "smuggle-open": 0,
        "smuggle-safe": 1,
    }
    smuggled = prometheus.api("/api/v1/query", query="smtp_probe_smuggling_accepted")["result"]
    assert {(s["metric"]["probe"], s["metric"]["variant"]): s["value"][1] for s in smuggled} == {
        ("smuggle-open", "lf_dot_crlf"): "1",
        ("smuggle-open", "cr_dot_cr"): "0",
        ("smuggle-safe", "lf_dot_crlf"): "0",
        ("smuggle-safe", "cr_dot_cr"): "0",
    }

    # No `for:`: both fire at the first evaluation after the scrape.
    end = time.monotonic() + 20
    while not (firing(prometheus, OPEN_RELAY_ALERT) and firing(prometheus, SMUGGLING_ALERT)):
        assert time.monotonic() < end, f"not firing:\n{prometheus.log()[-2000:]}"
        time.sleep(0.5)
    assert set(firing(prometheus, OPEN_RELAY_ALERT)) == {"relay-open"}
    assert firing(prometheus, OPEN_RELAY_ALERT)["relay-open"]["severity"] == "page"
    assert set(firing(prometheus, SMUGGLING_ALERT)) == {"smuggle-open"}
    [alert] = [
        a
        for a in prometheus.api("/api/v1/alerts")["alerts"]
        if a["labels"]["alertname"] == SMUGGLING_ALERT
    ]
    assert alert["labels"]["severity"] == "page"
    assert "Variants taken: lf_dot_crlf." in alert["annotations"]["description"]

    # Every run of the two probes fails (success 0) as accepted_unexpectedly: well past
    # DeliveryFailing's 5 s (5 m) `for:`, neither it nor a burn-rate page fires for them.
    time.sleep(10)
    assert set(firing(prometheus, OPEN_RELAY_ALERT)) == {"relay-open"}
    for name in QUIET:
        assert firing(prometheus, name) == {}, name
    # The SLO's error ratio over "1 h" (a minute here: 5 m is shorter than the interval).
    ratio = prometheus.query("probe:smtp_probe_failures:ratio_rate1h")
    assert ratio == dict.fromkeys(("relay-open", "relay-closed", "smuggle-open",
                                   "smuggle-safe"), 0)  # fmt: skip
