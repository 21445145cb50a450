"""``smtp-probe check`` end to end against aiosmtpd on 127.0.0.1: output formats and exit codes."""

from __future__ import annotations

import json
import signal
import socket

import pytest

from smtp_probe.cli import main
from tests.support.cli_proc import run_cli, start_cli
from tests.support.loopback_smtpd import LOOPBACK, Behaviour, smtpd

ADDRESSES = ["--from", "probe@sender.test", "--to", "sink@rcpt.test"]


def check_args(port: int, *extra: str) -> list[str]:
    return [
        "check",
        "--smtp",
        f"{LOOPBACK}:{port}",
        "--smtp-tls",
        "none",
        *ADDRESSES,
        "--timeout",
        "5s",
        *extra,
    ]


def test_check_in_a_real_process_prints_one_json_object_and_exits_0_when_sent() -> None:
    with smtpd(Behaviour(data_reply="250 2.0.0 Ok: queued as Q1W2E3")) as port:
        done = run_cli(*check_args(port, "--format", "json"))

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)
    assert data["outcome"] == "sent"
    assert data["success"] is True
    assert data["stage"] is None
    assert data["smtp"]["reply_code"] == 250
    assert data["smtp"]["queue_id"] == "Q1W2E3"
    assert any("MAIL FROM:<probe@sender.test>" in line for line in data["transcript"])
    assert any(
        line.endswith("<- 354 End data with <CR><LF>.<CR><LF>") for line in data["transcript"]
    )


def test_check_with_a_rejected_message_prints_nagios_critical_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with smtpd(Behaviour(data_reply="554 5.7.1 Rejected by policy")) as port:
        code = main(check_args(port, "--format", "nagios"))

    out = capsys.readouterr().out
    assert code == 2
    assert out.startswith("SMTP-PROBE CRITICAL - send_failed at data [554]")
    assert " | " in out


def test_check_text_output_is_the_transcript_then_the_verdict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with smtpd(Behaviour()) as port:
        code = main(check_args(port, "--format", "text"))

    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert code == 0
    assert any(line.endswith("ms  -> MAIL FROM:<probe@sender.test>") for line in lines)
    assert any(line.endswith("ms  <- 250 2.0.0 Ok: queued as ABC123") for line in lines)
    data = next(i for i, line in enumerate(lines) if line.endswith("ms  -> DATA"))
    assert lines[data + 1].endswith("ms  <- 354 End data with <CR><LF>.<CR><LF>")
    assert lines[-1].startswith("OK: accepted by SMTP (250), queue id ABC123")
    assert "\x1b" not in "\n".join(lines)


def test_ctrl_c_during_a_check_exits_3_with_one_line_and_no_traceback() -> None:
    """An operator who gives up on a hanging server gets UNKNOWN, as a monitor plugin should."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(20)
        port = listener.getsockname()[1]
        proc = start_cli(*check_args(port))
        try:
            connection, _ = listener.accept()  # the check is waiting for a 220 now
            with connection:
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
            proc.wait()

    assert proc.returncode == 3, err
    assert out == ""
    assert err == "smtp-probe: interrupted\n"
