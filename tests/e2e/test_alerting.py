"""A broken mail route pages through a real Prometheus and a real Alertmanager.

The daemon (a real process) probes two routes of the real Postfix + Dovecot
stack every 2 s: ``submission`` (healthy) and ``refused`` (its recipient gets
a 550). A real Prometheus scrapes it every second and evaluates the shipped
rules, with every ``for:``, range window and group interval scaled from
minutes to seconds (derived from the files, never copied). It sends to a real
Alertmanager that runs the shipped ``alertmanager.yml`` with its receivers
pointed at a webhook in this test and its timers cut to a second.

Then: the always-broken route pages; the healthy one does not; stopping
Dovecot breaks ``submission`` for real (its runs fail at ``imap_connect``) and
it pages, via the ``pager`` receiver, with the failing stage in the
description; starting Dovecot again heals it and the page resolves.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon_proc import Daemon, start_daemon, stop_daemon
from tests.support.mailstack import MailStack
from tests.support.prom import Prometheus, free_port, stop_process, wait_ready
from tests.support.routes import probe_messages

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
SPEEDUP = 60
"""Rule durations are divided by this: a minute in production is a second here."""

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def scaled(duration: str) -> str:
    """A Prometheus duration (``5m``, ``1h30m``) divided by :data:`SPEEDUP`, in ms."""
    parts = _DURATION.findall(duration)
    assert parts, duration
    assert "".join(n + unit for n, unit in parts) == duration, duration
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    return f"{max(1, round(seconds * 1000 / SPEEDUP))}ms"


def fast_rules(source: Path, target: Path) -> Path:
    """Write ``source`` with every ``for:``, ``[range]`` and group ``interval`` scaled."""
    document = yaml.safe_load(source.read_text())
    for group in document["groups"]:
        if "interval" in group:
            group["interval"] = scaled(group["interval"])
        for rule in group["rules"]:
            rule["expr"] = re.sub(
                r"\[([0-9a-z]+)\]", lambda m: f"[{scaled(m.group(1))}]", rule["expr"]
            )
            if "for" in rule:
                rule["for"] = scaled(rule["for"])
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def fast_alertmanager_config(webhook: str) -> str:
    """The shipped Alertmanager config, each receiver a webhook to ``webhook/<name>``."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [{"url": f"{webhook}/{receiver['name']}", "send_resolved": True}],
        }
        for receiver in config["receivers"]
    ]
    routes = [config["route"]]
    while routes:
        route = routes.pop()
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"),
                           ("repeat_interval", "1h")):  # fmt: skip
            if key in route or route is config["route"]:
                route[key] = value
        routes.extend(route.get("routes", []))
    return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True)
class Notification:
    """One webhook call from Alertmanager, and when it arrived (monotonic)."""

    receiver: str
    payload: dict[str, Any]
    at: float

    def alerts(self, alertname: str, probe: str, status: str) -> list[dict[str, Any]]:
        return [
            alert
            for alert in self.payload["alerts"]
            if alert["labels"].get("alertname") == alertname
            and alert["labels"].get("probe") == probe
            and alert["status"] == status
        ]


class Webhook:
    """An HTTP server on 127.0.0.1 that records every notification POSTed to it."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        received = self._received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received(self.path.strip("/"), json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output for the test

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _received(self, receiver: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self.notifications.append(Notification(receiver, payload, time.monotonic()))

    def seen(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)

    def wait_for(
        self, match: Callable[[Notification], bool], timeout: float, after: float = 0.0
    ) -> Notification:
        """The first notification received after ``after`` that ``match`` accepts.

        Raises:
            AssertionError: none arrived within ``timeout`` seconds.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for note in self.seen():
                if note.at >= after and match(note):
                    return note
            time.sleep(0.1)
        summary = [(n.receiver, n.payload["status"], n.payload["groupLabels"]) for n in self.seen()]
        raise AssertionError(f"no matching notification in {timeout}s; got {summary}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Alertmanager:
    """A private ``prometheus-alertmanager`` on a free 127.0.0.1 port, clustering off."""

    def __init__(self, config: str) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            pytest.fail(
                "Alertmanager is not installed: apt-get install prometheus-alertmanager"
                " (the tests need it)"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="alertmanager-"))
        (self.dir / "alertmanager.yml").write_text(config)
        self.port = free_port()
        self._log = (self.dir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'alertmanager.yml'}",
             f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_ready("alertmanager", self.proc, self.url("/-/ready"), self.log, 30)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return (self.dir / "alertmanager.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Alerting:
    daemon: Daemon
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: Webhook


@pytest.fixture
def alerting(mailstack: MailStack, tmp_path: Path) -> Iterator[Alerting]:
    """Daemon -> Prometheus (fast rules) -> Alertmanager (shipped routing) -> webhook."""
    rules = [
        fast_rules(RULES / name, tmp_path / name)
        for name in ("smtp_probe_recording.yml", "smtp_probe_alerts.yml")
    ]
    daemon = start_daemon(mailstack, tmp_path, ["submission", "refused"])
    webhook = Webhook()
    alertmanager = prometheus = None
    try:
        alertmanager = Alertmanager(fast_alertmanager_config(webhook.url))
        prometheus = Prometheus(
            [f"127.0.0.1:{daemon.port}"],
            rules=rules,
            alertmanagers=[f"127.0.0.1:{alertmanager.port}"],
        )
        prometheus.start()
        end = time.monotonic() + 10
        while not prometheus.api("/api/v1/alertmanagers")["activeAlertmanagers"]:
            assert time.monotonic() < end, f"no active alertmanager:\n{prometheus.log()[-2000:]}"
            time.sleep(0.2)
        yield Alerting(daemon, prometheus, alertmanager, webhook)
        # Mail deferred while Dovecot was down arrives late; let the daemon
        # sweep it up, then stop it cleanly so no probe message stays behind.
        mailstack.flush()
        end = time.monotonic() + 30
        while mailstack.queue() or probe_messages(mailstack):
            assert time.monotonic() < end, "probe mail left in the queue or the mailbox"
            time.sleep(0.5)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(40) == 0, daemon.log.read_text()[-3000:]
        assert probe_messages(mailstack) == []
    finally:
        stop_daemon(daemon)
        if prometheus is not None:
            prometheus.stop()
        if alertmanager is not None:
            alertmanager.stop()
        webhook.stop()


def pages(alertname: str, probe: str, status: str = "firing") -> Callable[[Notification], bool]:
    """A notification to the pager receiver that carries this alert in this status."""
    return lambda note: note.receiver == "pager" and bool(note.alerts(alertname, probe, status))


def test_a_broken_route_pages_through_alertmanager_and_resolves_when_healed(
    alerting: Alerting, mailstack: MailStack
) -> None:
    webhook, prometheus = alerting.webhook, alerting.prometheus

    # The route whose recipient is always refused pages, with stage and reply code.
    note = webhook.wait_for(pages("SmtpProbeDeliveryFailing", "refused"), timeout=40)
    [alert] = note.alerts("SmtpProbeDeliveryFailing", "refused", "firing")
    assert alert["labels"]["severity"] == "page"
    description = alert["annotations"]["description"]
    assert "probe refused" in description
    assert "Failing stage: rcpt_to." in description
    assert "Last SMTP reply code: 550." in description
    assert alert["annotations"]["runbook_url"].endswith("/docs/runbook.md#smtpprobedeliveryfailing")

    # The healthy route delivers, and has paged for nothing.
    prometheus.wait_for('smtp_probe_success{probe="submission"}', lambda r: r == {"submission": 1})
    assert prometheus.query('ALERTS{probe="submission", alertstate="firing"}') == {}
    assert not [n for n in webhook.seen() if n.payload["groupLabels"].get("probe") == "submission"]

    # Break it for real: with Dovecot down every run fails at imap_connect.
    broken_at = time.monotonic()
    mailstack.stop_dovecot()
    try:
        note = webhook.wait_for(
            pages("SmtpProbeDeliveryFailing", "submission"), timeout=45, after=broken_at
        )
        time_to_page = note.at - broken_at
        [alert] = note.alerts("SmtpProbeDeliveryFailing", "submission", "firing")
        assert "Failing stage: imap_connect." in alert["annotations"]["description"]
        assert note.payload["groupLabels"] == {"probe": "submission"}
    finally:
        mailstack.start_dovecot()
    healed_at = time.monotonic()

    note = webhook.wait_for(
        pages("SmtpProbeDeliveryFailing", "submission", "resolved"), timeout=60, after=healed_at
    )
    time_to_resolve = note.at - healed_at
    print(f"time to page: {time_to_page:.1f} s; time to resolve: {time_to_resolve:.1f} s")
    # for 5m -> 5 s, plus a failed run (every 2 s), a scrape and an evaluation
    # (1 s each) and Alertmanager's group_wait (1 s).
    assert time_to_page < 20
