"""The daemon's opt-in endpoints as a real process: ``--web.*`` flags, SIGHUP, ``/probe`` off.

A real ``smtp-probe run`` (:mod:`tests.support.daemon_proc`) with SMTP-only
probes aimed at a closed loopback port on an hourly schedule: what is under
test is which probes the daemon serves after a reload, not their runs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtp_probe.cli import main
from tests.support.daemon_proc import Daemon, spawn_daemon, stop_daemon
from tests.support.loopback_smtpd import LOOPBACK, closed_port

pytestmark = pytest.mark.e2e


def _config(port: int, *names: str) -> str:
    probes = "".join(
        f"  - {{name: {name}, smtp: nowhere, from: probe@sender.test, to: sink@rcpt.test}}\n"
        for name in names
    )
    return (
        "defaults: {interval: 1h, timeout: 2s, jitter: 0s}\n"
        "smtp_servers:\n"
        f"  nowhere: {{host: {LOOPBACK}, port: {port}, tls: none}}\n"
        f"probes:\n{probes}"
    )


def _probes(daemon: Daemon) -> set[str]:
    """The probes the daemon serves now, as its metrics list them."""
    status, text = daemon.get("/metrics")
    assert status == 200
    return {
        line.split('probe="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("smtp_probe_success{")
    }


@pytest.fixture
def port() -> Iterator[int]:
    with closed_port() as closed:
        yield closed


def _running(tmp_path: Path, port: int, *args: str) -> Daemon:
    return spawn_daemon(tmp_path, _config(port, "alpha"), args=args)


def test_a_reload_without_web_enable_lifecycle_is_refused(tmp_path: Path, port: int) -> None:
    daemon = _running(tmp_path, port)
    try:
        daemon.config.write_text(_config(port, "alpha", "beta"))
        status, body = daemon.get("/-/reload", method="POST")
        assert status == 403
        assert body.startswith("Lifecycle API is not enabled.")
        assert "--web.enable-lifecycle" in body
        time.sleep(0.5)
        assert _probes(daemon) == {"alpha"}
    finally:
        stop_daemon(daemon)


def test_sighup_reloads_without_web_enable_lifecycle(tmp_path: Path, port: int) -> None:
    daemon = _running(tmp_path, port)
    try:
        daemon.config.write_text(_config(port, "alpha", "beta"))
        daemon.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 15
        while _probes(daemon) != {"alpha", "beta"}:
            assert time.monotonic() < end, daemon.log.read_text()
            time.sleep(0.2)
    finally:
        stop_daemon(daemon)


def test_a_reload_with_web_enable_lifecycle_applies_the_new_config(
    tmp_path: Path, port: int
) -> None:
    daemon = _running(tmp_path, port, "--web.enable-lifecycle")
    try:
        daemon.config.write_text(_config(port, "alpha", "beta"))
        assert daemon.get("/-/reload", method="POST") == (200, "reloaded: 2 probe(s)\n")
        assert _probes(daemon) == {"alpha", "beta"}
    finally:
        stop_daemon(daemon)


def test_web_disable_probe_endpoint_makes_probe_403(tmp_path: Path, port: int) -> None:
    daemon = _running(tmp_path, port, "--web.disable-probe-endpoint")
    try:
        status, body = daemon.get("/probe?name=alpha")
        assert (status, body) == (
            403,
            "On-demand runs are disabled (--web.disable-probe-endpoint).\n",
        )
        assert daemon.get("/")[0] == 200  # the rest still serves
    finally:
        stop_daemon(daemon)


def test_web_probe_rate_limits_on_demand_runs_over_all_probes(tmp_path: Path, port: int) -> None:
    daemon = spawn_daemon(tmp_path, _config(port, "alpha", "beta"), args=["--web.probe-rate", "1"])
    try:
        assert daemon.get("/probe?name=alpha")[0] == 200  # a failing run, but a run
        status, body = daemon.get("/probe?name=beta")
        assert status == 429
        assert "1 on-demand runs started in the last minute (--web.probe-rate)" in body
    finally:
        stop_daemon(daemon)


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_a_bad_web_probe_rate_is_a_usage_error_naming_the_flag(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--config", "smtp-probe.yml", f"--web.probe-rate={value}"])
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "--web.probe-rate" in err
    assert "Traceback" not in err
