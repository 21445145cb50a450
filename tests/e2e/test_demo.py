"""`smtp-probe demo` as a newcomer runs it: delivered runs within seconds, clean stop."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request

from tests.support.prom import free_port


def metric(text: str, name: str, probe: str) -> float | None:
    match = re.search(rf'^{name}{{probe="{probe}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_demo_shows_a_delivered_run_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtp_probe", "demo", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        delivered = None
        end = time.monotonic() + 40
        while time.monotonic() < end and not delivered:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                delivered = metric(
                    text, "smtp_probe_delivery_duration_seconds_count", "sandbox-inbox"
                )
            except OSError:
                pass
            time.sleep(0.5)
        assert delivered is not None
        assert delivered >= 1
        assert metric(text, "smtp_probe_success", "sandbox-inbox") == 1.0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            page = r.read().decode()
        assert "sandbox-inbox" in page
        assert "delivered" in page
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output
    assert f"status page: http://127.0.0.1:{port}/" in output
    assert "Traceback" not in output
