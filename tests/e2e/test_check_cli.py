"""`smtp-probe check` as an operator runs it, against real Postfix + Dovecot."""

from __future__ import annotations

import json
import subprocess

from smtp_probe.check import IMAP_PASSWORD_ENV, SMTP_PASSWORD_ENV
from tests.support.cli_proc import run_cli
from tests.support.mailstack import JUNK_ADDRESS, REJECT_550, MailStack
from tests.support.routes import SENDER, SINK


def check(stack: MailStack, *extra: str, to: str = SINK) -> subprocess.CompletedProcess[str]:
    """Run ``python -m smtp_probe check`` through submission + IMAPS, passwords via env."""
    env = {SMTP_PASSWORD_ENV: stack.users[SENDER], IMAP_PASSWORD_ENV: stack.users[SINK]}
    argv = [
        "check",
        "--smtp", f"{stack.host}:{stack.submission_port}", "--smtp-user", SENDER,
        "--from", SENDER, "--to", to,
        "--imap", f"{stack.host}:{stack.imaps_port}", "--imap-user", SINK,
        "--ca-file", str(stack.ca_file), "--timeout", "20s",
        *extra,
    ]  # fmt: skip
    return run_cli(*argv, env=env)


def assert_no_secret(stack: MailStack, proc: subprocess.CompletedProcess[str]) -> None:
    for secret in stack.users.values():
        assert secret not in proc.stdout
        assert secret not in proc.stderr


def test_text_output_reads_like_the_telnet_session(stack: MailStack) -> None:
    proc = check(stack)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.endswith("<- 220 mx.example.test ESMTP") for line in lines)
    assert any("-> STARTTLS" in line for line in lines)
    assert any("~> AUTH PLAIN ********" in line for line in lines)
    assert any("<~ 250 2.0.0 Ok: queued as" in line for line in lines)
    # Postfix offers PIPELINING: MAIL, RCPT and DATA, then their three replies,
    # the message, the dot, the 250: in that order, nothing between.
    data = next(i for i, line in enumerate(lines) if line.endswith("~> DATA"))
    assert "~> MAIL FROM:<" in lines[data - 2]
    assert "~> RCPT TO:<" in lines[data - 1]
    assert lines[data + 1].endswith("<~ 250 2.1.0 Ok")
    assert lines[data + 2].endswith("<~ 250 2.1.5 Ok")
    assert lines[data + 3].endswith("<~ 354 End data with <CR><LF>.<CR><LF>")
    assert "~> [message: " in lines[data + 4]
    assert lines[data + 5].endswith("~> .")
    assert "<~ 250 2.0.0 Ok: queued as" in lines[data + 6]
    assert lines[-1].startswith("OK: delivered to INBOX ")
    assert "\x1b[" not in proc.stdout, "no colour when stdout is not a terminal"
    assert proc.stderr == ""
    assert_no_secret(stack, proc)


def test_json_output_has_the_contract_fields(stack: MailStack) -> None:
    proc = check(stack, "--format", "json")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["outcome"] == "delivered"
    assert result["success"] is True
    assert result["stage"] is None
    assert result["smtp"]["reply_code"] == 250
    assert result["smtp"]["queue_id"]
    assert set(result["smtp"]["stage_seconds"]) >= {"connect", "ehlo", "starttls", "auth", "data"}
    assert 0 < result["delivery_seconds"] < result["duration_seconds"]
    assert result["folder"] == "INBOX"
    assert any("RCPT TO:<sink@example.test>" in line for line in result["transcript"])
    assert any(
        line.endswith("<~ 354 End data with <CR><LF>.<CR><LF>") for line in result["transcript"]
    )
    assert_no_secret(stack, proc)


def test_rejected_recipient_is_critical_with_stage_and_code(stack: MailStack) -> None:
    proc = check(stack, "--format", "nagios", to=REJECT_550)

    assert proc.returncode == 2
    assert proc.stdout.startswith("SMTP-PROBE CRITICAL - send_failed at rcpt_to [550]")


def test_junk_placement_is_a_warning(stack: MailStack) -> None:
    proc = check(stack, to=JUNK_ADDRESS)

    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("WARNING: delivered into JUNK folder Junk")


def test_without_imap_check_stops_after_smtp(stack: MailStack) -> None:
    argv = [
        "check",
        "--smtp", f"{stack.host}:{stack.smtps_port}", "--smtp-tls", "tls", "--smtp-user", SENDER,
        "--from", SENDER, "--to", "probe@example.test", "--ca-file", str(stack.ca_file),
    ]  # fmt: skip
    proc = run_cli(*argv, env={SMTP_PASSWORD_ENV: stack.users[SENDER]})
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "delivery not checked" in proc.stdout.splitlines()[-1]
        assert "imap" not in proc.stdout
    finally:
        # Not our mailbox under watch: remove what the SMTP-only check delivered to probe@.
        for folder in ("new", "cur"):
            path = stack.maildir_path(SENDER) / folder
            for file in path.iterdir() if path.exists() else ():
                if b"X-Smtp-Probe:" in file.read_bytes():
                    file.unlink()
