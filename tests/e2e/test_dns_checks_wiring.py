"""DNS checks wired in: the daemon's own DNS job, the status page, and ``check --dns-checks``.

Against the real Knot (:class:`tests.support.dns_server.DnsServer`) serving
``example.test`` and the reverse zone ``0.0.127.in-addr.arpa``; every
resolver is pointed at it, so nothing leaves loopback. The mail side is an
aiosmtpd on loopback (``check``) or a closed port (the daemon: its delivery
runs fail, which must not touch the DNS job). The checks themselves are
tested in ``test_dns_checks.py``; here: they run, on their own schedule,
and their verdicts reach the page, the log, the JSON and the exit code.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtp_probe.check import SMTP_PASSWORD_ENV
from tests.support.cli_proc import run_cli
from tests.support.daemon_proc import Daemon, spawn_daemon, stop_daemon
from tests.support.dns_server import DnsServer, txt_rdata
from tests.support.loopback_smtpd import Behaviour, closed_port, smtpd

pytestmark = pytest.mark.e2e

SENDER = "probe@good.example.test"
RCPT = "probe@good.example.test"
MARKUP = "<b>bold</b>"
"""Server text on the status page must come out escaped: it is in a DMARC record."""
RECORDS = [
    ("mail", "A", "127.0.0.1"),
    ("good", "MX", "10 mail.example.test."),
    ("good", "TXT", txt_rdata("v=spf1 ip4:127.0.0.1 -all")),
    ("_dmarc.good", "TXT", txt_rdata(f"v=DMARC1; p=none; x={MARKUP}")),
    ("2.0.0.127.dnsbl", "A", "127.0.0.2"),
]
REVERSE = [("1", "PTR", "mail.example.test.")]
CHECKS = "dns_checks: {sending_ip: 127.0.0.1, mx: {}, spf: {}, dmarc: {policy: quarantine}, "
CHECKS += "fcrdns: {}, dnsbl: {zones: [dnsbl.example.test]}}"


@pytest.fixture(scope="module")
def knot() -> Iterator[DnsServer]:
    with DnsServer("example.test", RECORDS, extra_zones={"0.0.127.in-addr.arpa": REVERSE}) as dns:
        yield dns


def _config(knot: DnsServer, smtp_port: int, *, dns_checks: str | None = CHECKS) -> str:
    probe = (
        f"  - {{name: dns-probe, smtp: relay, from: {SENDER}, to: {RCPT}, interval: 1h, "
        "dns_interval: 1s" + (f", {dns_checks}" if dns_checks else "") + "}\n"
    )
    if dns_checks is None:
        probe = probe.replace(", dns_interval: 1s", "")
    return (
        f'dns: {{nameservers: ["{knot.nameserver}"], timeout: 2s}}\n'
        "smtp_servers:\n"
        f"  relay: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}\n"
        "probes:\n" + probe
    )


def _dns_lines(daemon: Daemon) -> list[dict[str, object]]:
    events = []
    for line in daemon.log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "dns check":
            events.append(event)
    return events


def _wait(what: str, until: float, daemon: Daemon, condition: object) -> None:
    assert callable(condition)
    while time.monotonic() < until:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}; log:\n{daemon.log.read_text()[-4000:]}")


def _metrics(daemon: Daemon) -> dict[str, float]:
    """The daemon's ``/metrics`` samples: ``name{labels}`` -> value."""
    status, text = daemon.get("/metrics")
    assert status == 200
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def _row(page: str, check: str) -> str:
    match = re.search(
        rf'<tr class="dns" data-probe="dns-probe" data-check="{check}">(.*?)</tr>', page, re.S
    )
    assert match is not None, page
    return match.group(1)


def test_the_daemon_runs_dns_checks_as_their_own_job_and_shows_them(
    knot: DnsServer, tmp_path: Path
) -> None:
    with closed_port() as port:
        daemon = spawn_daemon(tmp_path, _config(knot, port), args=["--web.enable-lifecycle"])
        try:
            # dns_interval 1s, delivery every hour: several DNS rounds and at
            # most the one delivery run the hourly job may have started.
            _wait(
                "no three DNS rounds within 15 s",
                time.monotonic() + 15,
                daemon,
                lambda: sum(e["check"] == "mx" for e in _dns_lines(daemon)) >= 3,
            )
            status, page = daemon.get("/")
            assert status == 200
            events = _dns_lines(daemon)
            verdicts = {(e["check"], e["ok"]) for e in events}
            assert verdicts == {
                ("mx", True),
                ("spf", True),
                ("dmarc", False),
                ("fcrdns", True),
                ("dnsbl", True),
            }
            dmarc = next(e for e in events if e["check"] == "dmarc")
            assert dmarc["probe"] == "dns-probe"
            assert dmarc["policy"] == "none"
            assert dmarc["level"] == "warning"
            assert "quarantine" in str(dmarc["reason"])

            assert "<h2>DNS checks</h2>" in page
            assert '<span class="badge ok">ok</span>' in _row(page, "spf")
            failed = _row(page, "dmarc")
            assert '<span class="badge bad">failed</span>' in failed
            assert html.escape(str(dmarc["reason"]), quote=False) in failed
            assert html.escape(MARKUP) in failed  # the record, as evidence: escaped text
            assert MARKUP not in page
            assert "ago" in _row(page, "mx")  # when the round ran

            # The same verdicts as metrics: one success series per configured check,
            # the time it last ran, the zone not listed (Knot lists 127.0.0.2, not .1),
            # the p= read, and no MTA-STS mode (that check is not configured).
            metrics = _metrics(daemon)
            assert {
                check: metrics[f'smtp_probe_dns_check_success{{check="{check}",probe="dns-probe"}}']
                for check in ("mx", "spf", "dmarc", "fcrdns", "dnsbl")
            } == {"mx": 1, "spf": 1, "dmarc": 0, "fcrdns": 1, "dnsbl": 1}
            ran = metrics['smtp_probe_dns_check_timestamp_seconds{check="mx",probe="dns-probe"}']
            assert time.time() - 30 < ran <= time.time()
            zone = 'smtp_probe_dnsbl_listed{probe="dns-probe",zone="dnsbl.example.test"}'
            assert metrics[zone] == 0
            assert metrics['smtp_probe_dmarc_policy_info{policy="none",probe="dns-probe"}'] == 1
            assert not any(name.startswith("smtp_probe_mta_sts_mode_info") for name in metrics)

            # A reload that drops the checks removes the job and the section.
            daemon.config.write_text(_config(knot, port, dns_checks=None))
            assert daemon.get("/-/reload", method="POST")[0] == 200
            time.sleep(1.5)  # a round already under way may still log
            rounds = len(_dns_lines(daemon))
            time.sleep(3)
            assert len(_dns_lines(daemon)) == rounds
            assert "<h2>DNS checks</h2>" not in daemon.get("/")[1]
            dns_series = ("smtp_probe_dns_check", "smtp_probe_dnsbl", "smtp_probe_dmarc")
            assert not [name for name in _metrics(daemon) if name.startswith(dns_series)]
        finally:
            stop_daemon(daemon)
    assert daemon.proc.returncode == 0, daemon.log.read_text()[-3000:]


def _check(knot: DnsServer, port: int, *extra: str) -> tuple[int, str, str]:
    proc = run_cli(
        "check", "--smtp", f"127.0.0.1:{port}", "--smtp-tls", "none",
        "--from", SENDER, "--to", RCPT, "--timeout", "10s",
        "--dns-server", knot.nameserver, *extra,
        env={SMTP_PASSWORD_ENV: ""},
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def test_check_dns_checks_prints_a_line_per_check_and_warns_on_a_failing_one(
    knot: DnsServer,
) -> None:
    with smtpd(Behaviour()) as port:
        code, out, err = _check(
            knot, port, "--dns-checks=mx,spf,dmarc,fcrdns", "--sending-ip", "127.0.0.1",
            "--dmarc-policy", "quarantine", "-v",
        )  # fmt: skip
    assert code == 1, out + err
    lines = out.splitlines()
    block = lines[lines.index("DNS checks:") + 1 :]
    assert block[0] == "OK mx: " + block[0].removeprefix("OK mx: ")
    assert [line.split(":")[0] for line in block if not line.startswith(" ")] == [
        "OK mx",
        "OK spf",
        "FAILED dmarc",
        "OK fcrdns",
        "WARNING",
    ]
    assert block[-1] == "WARNING: DNS checks failing: dmarc"
    assert any(line.startswith("    ") and "PTR" in line for line in block)  # -v: evidence
    assert "OK: accepted by SMTP (250)" in out  # the run itself is fine


def test_check_dns_checks_all_passing_keeps_the_runs_exit_code(knot: DnsServer) -> None:
    with smtpd(Behaviour()) as port:
        code, out, err = _check(knot, port, "--dns-checks=spf,fcrdns", "--sending-ip", "127.0.0.1")
    assert code == 0, out + err
    assert out.splitlines()[-1] == "OK: 2 DNS check(s) passed"
    assert "    " not in out.split("DNS checks:")[1]  # evidence only with -v


def test_check_dns_checks_json_and_nagios(knot: DnsServer) -> None:
    with smtpd(Behaviour()) as port:
        code, out, err = _check(
            knot, port, "--dns-checks=dmarc,dnsbl", "--dnsbl-zone", "dnsbl.example.test",
            "--sending-ip", "127.0.0.2", "--dmarc-policy", "none", "--format", "json",
        )  # fmt: skip
        nagios_code, nagios, _ = _check(
            knot, port, "--dns-checks=dmarc,dnsbl", "--dnsbl-zone", "dnsbl.example.test",
            "--sending-ip", "127.0.0.2", "--format", "nagios",
        )  # fmt: skip
    assert code == 1, out + err
    shape = json.loads(out)
    assert shape["exit_code"] == 1
    assert shape["outcome"] == "sent"
    checks = {entry["check"]: entry for entry in shape["dns_checks"]}
    assert list(checks) == ["dmarc", "dnsbl"]
    assert checks["dmarc"]["ok"] is True
    assert checks["dmarc"]["policy"] == "none"
    assert checks["dnsbl"]["ok"] is False
    assert checks["dnsbl"]["listed"] == ["dnsbl.example.test"]
    assert checks["dnsbl"]["evidence"]
    assert set(checks["dnsbl"]) == {
        "check", "ok", "reason", "evidence", "policy", "listed", "seconds",
    }  # fmt: skip

    assert nagios_code == 1
    head, perf = nagios.splitlines()[0].split(" | ")
    assert head.startswith("SMTP-PROBE WARNING - accepted by SMTP (250)")
    assert head.endswith("; DNS checks failing: dnsbl")
    assert "dns_failed=1;;;0;2" in perf.split()


def test_check_config_probe_runs_its_own_dns_checks(knot: DnsServer, tmp_path: Path) -> None:
    with smtpd(Behaviour()) as port:
        config = tmp_path / "smtp-probe.yml"
        config.write_text(_config(knot, port))
        proc = run_cli(
            "check", "--config", str(config), "--probe", "dns-probe", "--dns-checks",
            "--dmarc-policy", "none",
        )  # fmt: skip
        plain = run_cli("check", "--config", str(config), "--probe", "dns-probe")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = [line.split(":")[0] for line in proc.stdout.split("DNS checks:\n")[1].splitlines()]
    assert checks == ["OK mx", "OK spf", "OK dmarc", "OK dnsbl", "OK fcrdns", "OK"]
    assert plain.returncode == 0
    assert "DNS checks" not in plain.stdout  # only with --dns-checks
