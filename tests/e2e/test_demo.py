"""`smtp-probe demo` as a newcomer runs it: delivered runs within seconds, clean stop."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from smtp_probe.demo import demo_config
from tests.support.cli_proc import run_cli
from tests.support.loopback_smtpd import silent_listener
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


def run_demo(listen_port: int) -> subprocess.CompletedProcess[str]:
    """``smtp-probe demo`` expected to stop by itself (it fails); its output and exit code."""
    return run_cli("demo", "--listen", f"127.0.0.1:{listen_port}")


def test_demo_with_a_sandbox_port_taken_says_which_and_exits_3() -> None:
    smtp_port = demo_config().probes[0].spec.smtp.port
    with socket.create_server(("127.0.0.1", smtp_port)):
        done = run_demo(free_port())

    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("smtp-probe demo: error: ")
    assert f"port {smtp_port} on 127.0.0.1 is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_that_cannot_listen_says_where_exits_3_and_frees_the_sandbox_ports() -> None:
    spec = demo_config().probes[0].spec
    assert spec.mailbox is not None
    sandbox_ports = (spec.smtp.port, spec.mailbox.port)
    with silent_listener() as taken:
        done = run_demo(taken)

    assert done.returncode == 3, done.stderr
    assert f"smtp-probe demo: error: cannot listen on 127.0.0.1:{taken}: " in done.stderr
    assert "Traceback" not in done.stderr
    for port in sandbox_ports:  # the sandbox was stopped on the way out
        with socket.create_server(("127.0.0.1", port)):
            pass
