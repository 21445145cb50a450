"""The daemon against real Postfix + Dovecot, scraped by a real Prometheus.

Three probes run every two seconds — two healthy routes and one whose
recipient is refused — and Prometheus' HTTP API must agree with what
happened: success, failures by stage, the delivery histogram, timestamps;
then a reload adds and removes a probe, a bad reload changes nothing, and
SIGTERM leaves no probe message behind.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.daemon_proc import Daemon, config_text, start_daemon, stop_daemon
from tests.support.html_tree import parse
from tests.support.mailstack import MailStack
from tests.support.prom import Prometheus
from tests.support.routes import probe_messages


@pytest.fixture(scope="module")
def daemon(mailstack: MailStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The daemon as a real process on a free port, with three probes (POST /-/reload on)."""
    running = start_daemon(
        mailstack,
        tmp_path_factory.mktemp("daemon"),
        ["submission", "mx", "refused"],
        args=["--web.enable-lifecycle"],
    )
    yield running
    stop_daemon(running)


@pytest.fixture(scope="module")
def prometheus(daemon: Daemon) -> Iterator[Prometheus]:
    server = Prometheus([f"127.0.0.1:{daemon.port}"])
    server.start()
    yield server
    server.stop()


def test_prometheus_sees_healthy_and_broken_routes(daemon: Daemon, prometheus: Prometheus) -> None:
    runs = prometheus.wait_for(
        "smtp_probe_runs_total",
        lambda r: len(r) == 3 and min(r.values()) >= 3,
        timeout=40,
    )
    assert set(runs) == {"submission", "mx", "refused"}

    success = prometheus.query("smtp_probe_success")
    assert success == {"submission": 1.0, "mx": 1.0, "refused": 0.0}
    failures = prometheus.query("sum by (probe) (smtp_probe_failures_total)")
    assert failures["submission"] == 0
    assert failures["mx"] == 0
    assert prometheus.query('smtp_probe_failures_total{stage="rcpt_to"}')["refused"] >= 3
    assert prometheus.query("smtp_probe_smtp_reply_code") == {
        "submission": 250.0, "mx": 250.0, "refused": 550.0,
    }  # fmt: skip
    delivered = prometheus.query("smtp_probe_delivery_duration_seconds_count")
    assert delivered["submission"] >= 3
    assert delivered["refused"] == 0
    mean = prometheus.query(
        "smtp_probe_delivery_duration_seconds_sum / smtp_probe_delivery_duration_seconds_count"
    )
    assert 0 < mean["submission"] < 1.8
    fresh = prometheus.query("time() - smtp_probe_last_success_timestamp_seconds")
    assert fresh["submission"] < 10
    assert prometheus.query("smtp_probe_last_success_timestamp_seconds")["refused"] == 0
    assert prometheus.query("time() - smtp_probe_last_run_timestamp_seconds")["refused"] < 10
    assert prometheus.query("smtp_probe_interval_seconds")["mx"] == 2
    assert prometheus.query('up{job="smtp-probe"}') == {"": 1.0}


def test_status_page_and_on_demand_probe(daemon: Daemon) -> None:
    status, page = daemon.get("/")
    assert status == 200
    assert "<table>" in page
    assert "refused" in page
    assert "send_failed" in page
    status, text = daemon.get("/probe?name=submission")
    assert status == 200
    assert text.splitlines()[-1].startswith("OK: delivered to INBOX")
    assert daemon.get("/probe?name=nope")[0] == 404
    for secret in ("probe-secret", "sink-secret", "a-token-secret"):
        assert secret not in page
        assert secret not in text


def test_hops_of_the_real_chain_reach_prometheus_and_the_status_page(
    daemon: Daemon, prometheus: Prometheus
) -> None:
    hops = prometheus.wait_for(
        "smtp_probe_hops", lambda r: r.get("submission", 0) >= 2 and r.get("mx", 0) >= 2
    )
    assert hops == {"submission": 2.0, "mx": 2.0, "refused": 0.0}
    info = prometheus.api("/api/v1/query", query="smtp_probe_hop_info")["result"]
    seen = {(s["metric"]["probe"], s["metric"]["hop"], s["metric"]["by"], s["metric"]["with"])
            for s in info}  # fmt: skip
    assert seen == {
        ("submission", "0", "mx.example.test", "ESMTPSA"),
        ("submission", "1", "mx.example.test", "LMTP"),
        ("mx", "0", "mx.example.test", "ESMTPS"),
        ("mx", "1", "mx.example.test", "LMTP"),
    }
    delays = prometheus.query('smtp_probe_hop_delay_seconds{hop="1"}')
    assert set(delays) == {"submission", "mx"}
    assert all(0 <= v <= 2 for v in delays.values())
    assert prometheus.query('smtp_probe_hop_delay_seconds{hop="0"}') == {}

    status, page = daemon.get("/")
    assert status == 200
    tree = parse(page)
    rows = [[td.text() for td in tr.find_all("td")] for tr in tree.find_all("tr", cls="hop")]
    # index, by, with, TLS of each hop of the two delivered probes; none for the refused one
    assert sorted((r[0], r[1], r[3], r[4]) for r in rows) == [
        ("0", "mx.example.test", "ESMTPS", "yes"),
        ("0", "mx.example.test", "ESMTPSA", "yes"),
        ("1", "mx.example.test", "LMTP", "no"),
        ("1", "mx.example.test", "LMTP", "no"),
    ]
    assert [r[6] for r in rows if r[0] == "0"] == ["-", "-"]
    assert all(r[6] in ("0 s", "1 s", "2 s") for r in rows if r[0] == "1")
    assert "whole seconds from each host's own clock" in tree.find("p", cls="hops-note").text()


def test_reload_adds_and_removes_probes_and_a_bad_one_changes_nothing(
    daemon: Daemon, prometheus: Prometheus, mailstack: MailStack
) -> None:
    good = daemon.config.read_text()
    secrets = daemon.config.parent
    daemon.config.write_text(config_text(mailstack, secrets, ["submission", "refused", "added"]))
    status, message = daemon.get("/-/reload", method="POST")
    assert (status, message.strip()) == (200, "reloaded: 3 probe(s)")
    prometheus.wait_for(
        "smtp_probe_success", lambda r: set(r) == {"submission", "refused", "added"}, timeout=20
    )
    prometheus.wait_for("smtp_probe_runs_total", lambda r: r.get("added", 0) >= 1, timeout=20)

    daemon.config.write_text(good.replace("interval: 2s", "interval: soon"))
    status, message = daemon.get("/-/reload", method="POST")
    assert status == 500
    assert "defaults.interval" in message
    prometheus.wait_for("smtp_probe_config_last_reload_successful", lambda r: r == {"": 0.0})
    before = prometheus.query("smtp_probe_runs_total")["added"]
    prometheus.wait_for(
        "smtp_probe_runs_total", lambda r: r.get("added", 0) >= before + 2, timeout=20
    )

    daemon.config.write_text(good)
    daemon.proc.send_signal(signal.SIGHUP)
    prometheus.wait_for("smtp_probe_success", lambda r: set(r) == {"submission", "mx", "refused"})
    prometheus.wait_for("smtp_probe_config_last_reload_successful", lambda r: r == {"": 1.0})


def test_probes_fail_fast_at_imap_connect_while_the_mailbox_is_down_and_recover(
    daemon: Daemon, prometheus: Prometheus, mailstack: MailStack
) -> None:
    before = prometheus.query('smtp_probe_failures_total{stage="imap_connect"}')
    mailstack.stop_dovecot()
    try:
        failed = prometheus.wait_for(
            'smtp_probe_failures_total{stage="imap_connect"}',
            lambda r: r.get("submission", 0) > before.get("submission", 0),
            timeout=20,
        )
        assert failed["submission"] >= 1
        # Failing fast: no run waits out its deadline for a mailbox it cannot see.
        assert (
            prometheus.query('smtp_probe_duration_seconds{probe="submission"}')["submission"] < 1.0
        )
    finally:
        mailstack.start_dovecot()
    prometheus.wait_for(
        'smtp_probe_success{probe="submission"}', lambda r: r == {"submission": 1.0}, timeout=30
    )


def test_sigterm_stops_cleanly_and_leaves_no_probe_message(
    daemon: Daemon, mailstack: MailStack
) -> None:
    time.sleep(1.0)  # let some runs be in flight
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(40) == 0, daemon.log.read_text()[-3000:]
    assert probe_messages(mailstack) == []
    log = daemon.log.read_text()
    assert "daemon stopped" in log
    assert "Traceback" not in log
    for secret in ("probe-secret", "sink-secret", "a-token-secret"):
        assert secret not in log
