"""The check command line: usage errors exit 3 naming the flag; flags become a ProbeSpec."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import trustme

from smtp_probe.check import (
    IMAP_PASSWORD_ENV,
    SMTP_PASSWORD_ENV,
    UsageError,
    probe_from_args,
    probe_from_config,
)
from smtp_probe.cli import build_parser, main
from smtp_probe.config import values
from smtp_probe.probe.spec import ProbeSpec, TlsMode

REPO = Path(__file__).resolve().parents[2]
ADDRESSES = ["--from", "probe@sender.example", "--to", "sink@rcpt.example"]
# Port 9 (discard) on loopback: were a usage check ever skipped, the run fails fast and locally.
SMTP = ["--smtp", "127.0.0.1:9", "--smtp-tls", "none"]


@pytest.fixture(autouse=True)
def no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() reads the real environment: make sure no password leaks in from it."""
    monkeypatch.delenv(SMTP_PASSWORD_ENV, raising=False)
    monkeypatch.delenv(IMAP_PASSWORD_ENV, raising=False)


def run_main(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run main(), returning its exit code (argparse's SystemExit included) and stderr."""
    try:
        code = main(["check", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code if isinstance(exc.code, int) else -1
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def assert_usage_error(code: int, stderr: str, flag: str) -> None:
    assert code == 3
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.search(rf"{re.escape(flag)}(?![\w-])", lines[0]), lines[0]
    assert "Traceback" not in stderr


def test_missing_smtp_exits_3_naming_smtp(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(ADDRESSES, capsys)
    assert_usage_error(code, err, "--smtp")


def test_missing_to_exits_3_naming_to(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([*SMTP, "--from", "probe@sender.example"], capsys)
    assert_usage_error(code, err, "--to")


def test_missing_command_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 3
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["abc", "5x", "0", "-3s"])
def test_bad_timeout_exits_3_naming_timeout(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--timeout", timeout], capsys)
    assert_usage_error(code, err, "--timeout")


def test_bad_warning_exits_3_naming_warning(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--warning", "soon"], capsys)
    assert_usage_error(code, err, "--warning")


@pytest.mark.parametrize(
    "smtp", ["mail.example:0", "mail.example:70000", "mail.example:smtp", ":25"]
)
def test_bad_smtp_address_exits_3_naming_smtp(
    smtp: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--smtp", smtp, *ADDRESSES], capsys)
    assert_usage_error(code, err, "--smtp")


def test_unknown_smtp_tls_mode_exits_3_naming_smtp_tls(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["--smtp", "mail.example", "--smtp-tls", "ssl", *ADDRESSES], capsys)
    assert_usage_error(code, err, "--smtp-tls")


def test_smtp_user_without_any_password_exits_3_naming_smtp_user(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--smtp-user", "probe"], capsys)
    assert_usage_error(code, err, "--smtp-user")
    assert SMTP_PASSWORD_ENV in err


def test_imap_without_any_password_exits_3_naming_imap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--imap", "127.0.0.1:9"], capsys)
    assert_usage_error(code, err, "--imap")
    assert IMAP_PASSWORD_ENV in err


def test_imap_user_without_imap_exits_3_naming_imap_user(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--imap-user", "sink"], capsys)
    assert_usage_error(code, err, "--imap-user")


def test_missing_smtp_password_file_exits_3_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.txt"
    code, err = run_main(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe", "--smtp-password-file", str(missing)], capsys
    )
    assert_usage_error(code, err, "--smtp-password-file")
    assert str(missing) in err


def test_empty_smtp_password_file_exits_3_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    code, err = run_main(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe", "--smtp-password-file", str(empty)], capsys
    )
    assert_usage_error(code, err, "--smtp-password-file")


def test_smtp_password_file_without_smtp_user_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw-value\n")
    code, err = run_main([*SMTP, *ADDRESSES, "--smtp-password-file", str(secret)], capsys)
    assert_usage_error(code, err, "--smtp-password-file")
    assert "pw-value" not in err


def test_nonexistent_ca_file_exits_3_naming_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--ca-file", str(tmp_path / "ca.pem")], capsys)
    assert_usage_error(code, err, "--ca-file")
    assert "does not exist" in err


def test_ca_file_without_a_certificate_exits_3_naming_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    code, err = run_main([*SMTP, *ADDRESSES, "--ca-file", str(junk)], capsys)
    assert_usage_error(code, err, "--ca-file")


def test_ca_file_and_insecure_together_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(
        [*SMTP, *ADDRESSES, "--ca-file", str(tmp_path / "ca.pem"), "--insecure"], capsys
    )
    assert_usage_error(code, err, "--insecure")
    assert "--ca-file" in err


@pytest.mark.parametrize(
    "address", ["probe", "@example.com", "probe@", "a b@example.com", "<a@b.c>"]
)
def test_from_that_is_not_an_address_exits_3_naming_from(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([*SMTP, "--from", address, "--to", "sink@rcpt.example"], capsys)
    assert_usage_error(code, err, "--from")


def test_to_that_is_not_an_address_exits_3_naming_to(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([*SMTP, "--from", "probe@sender.example", "--to", "sink"], capsys)
    assert_usage_error(code, err, "--to")


def test_helo_with_a_space_exits_3_naming_helo(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--helo", "two words"], capsys)
    assert_usage_error(code, err, "--helo")


def test_usage_error_in_a_real_process_is_one_line_and_no_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_PROBE_")}
    for argv, flag in (
        (ADDRESSES, "--smtp"),
        ([*SMTP, *ADDRESSES, "--timeout", "soon"], "--timeout"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "smtp_probe", "check", *argv],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.stdout == ""
        assert_usage_error(done.returncode, done.stderr, flag)


def spec_of(args: Sequence[str], environ: Mapping[str, str] | None = None) -> ProbeSpec:
    namespace: argparse.Namespace = build_parser().parse_args(["check", *args])
    return probe_from_args(namespace, environ or {})


@pytest.mark.parametrize(
    ("mode", "port"), [(TlsMode.STARTTLS, 587), (TlsMode.TLS, 465), (TlsMode.NONE, 25)]
)
def test_smtp_port_defaults_to_the_tls_mode_port(mode: TlsMode, port: int) -> None:
    spec = spec_of(["--smtp", "mail.example", "--smtp-tls", str(mode), *ADDRESSES])
    assert (spec.smtp.host, spec.smtp.port, spec.smtp.tls) == ("mail.example", port, mode)


def test_smtp_tls_defaults_to_starttls_on_587() -> None:
    spec = spec_of(["--smtp", "mail.example", *ADDRESSES])
    assert (spec.smtp.tls, spec.smtp.port) == (TlsMode.STARTTLS, 587)


def test_explicit_smtp_port_wins_over_the_default() -> None:
    spec = spec_of(["--smtp", "mail.example:2525", "--smtp-tls", "tls", *ADDRESSES])
    assert spec.smtp.port == 2525


IMAP_ENV = {IMAP_PASSWORD_ENV: "imap-pw-from-env"}


@pytest.mark.parametrize(
    ("mode", "port"), [(TlsMode.TLS, 993), (TlsMode.STARTTLS, 143), (TlsMode.NONE, 143)]
)
def test_imap_port_defaults_to_the_tls_mode_port(mode: TlsMode, port: int) -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--imap", "imap.example", "--imap-tls", str(mode)], IMAP_ENV)
    assert spec.mailbox is not None
    assert (spec.mailbox.host, spec.mailbox.port, spec.mailbox.tls) == ("imap.example", port, mode)


def test_imap_tls_defaults_to_implicit_tls_on_993() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--imap", "imap.example"], IMAP_ENV)
    assert spec.mailbox is not None
    assert (spec.mailbox.tls, spec.mailbox.port) == (TlsMode.TLS, 993)


def test_imap_user_defaults_to_the_to_address() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--imap", "imap.example"], IMAP_ENV)
    assert spec.mailbox is not None
    assert spec.mailbox.username == "sink@rcpt.example"


def test_explicit_imap_user_wins_over_the_to_address() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--imap", "imap.example", "--imap-user", "sink"], IMAP_ENV)
    assert spec.mailbox is not None
    assert spec.mailbox.username == "sink"


def test_without_imap_the_spec_has_no_mailbox() -> None:
    assert spec_of([*SMTP, *ADDRESSES]).mailbox is None


def test_passwords_come_from_the_environment() -> None:
    environ = {SMTP_PASSWORD_ENV: "smtp-pw-from-env", IMAP_PASSWORD_ENV: "imap-pw-from-env"}
    spec = spec_of([*SMTP, *ADDRESSES, "--smtp-user", "probe", "--imap", "imap.example"], environ)
    assert spec.smtp.password is not None
    assert spec.smtp.password.reveal() == "smtp-pw-from-env"
    assert spec.mailbox is not None
    assert spec.mailbox.password.reveal() == "imap-pw-from-env"


def test_passwords_come_from_files_without_their_trailing_newline(tmp_path: Path) -> None:
    smtp_file, imap_file = tmp_path / "smtp", tmp_path / "imap"
    smtp_file.write_text("smtp pw from file\n")
    imap_file.write_text("imap pw from file\r\n")
    spec = spec_of(
        [
            *SMTP,
            *ADDRESSES,
            "--smtp-user",
            "probe",
            "--smtp-password-file",
            str(smtp_file),
            "--imap",
            "imap.example",
            "--imap-password-file",
            str(imap_file),
        ]
    )
    assert spec.smtp.password is not None
    assert spec.smtp.password.reveal() == "smtp pw from file"
    assert spec.mailbox is not None
    assert spec.mailbox.password.reveal() == "imap pw from file"


def test_password_file_wins_over_the_environment(tmp_path: Path) -> None:
    smtp_file = tmp_path / "smtp"
    smtp_file.write_text("from-file")
    spec = spec_of(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe", "--smtp-password-file", str(smtp_file)],
        {SMTP_PASSWORD_ENV: "from-env"},
    )
    assert spec.smtp.password is not None
    assert spec.smtp.password.reveal() == "from-file"


def test_no_password_appears_in_the_repr_of_the_spec(tmp_path: Path) -> None:
    imap_file = tmp_path / "imap"
    imap_file.write_text("imap-pw-XYZZY")
    spec = spec_of(
        [
            *SMTP,
            *ADDRESSES,
            "--smtp-user",
            "probe",
            "--imap",
            "imap.example",
            "--imap-password-file",
            str(imap_file),
        ],
        {SMTP_PASSWORD_ENV: "smtp-pw-PLUGH"},
    )
    text = repr(spec)
    assert "smtp-pw-PLUGH" not in text
    assert "imap-pw-XYZZY" not in text
    assert text.count("<secret>") == 2


def test_insecure_switches_off_verification_on_both_legs() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--imap", "imap.example", "--insecure"], IMAP_ENV)
    assert spec.mailbox is not None
    assert spec.smtp.tls_settings.verify is False
    assert spec.mailbox.tls_settings.verify is False


def test_verification_is_on_by_default() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--imap", "imap.example"], IMAP_ENV)
    assert spec.mailbox is not None
    assert spec.smtp.tls_settings.verify is True
    assert spec.mailbox.tls_settings.verify is True


def test_ca_file_is_used_on_both_legs(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    spec = spec_of(
        [*SMTP, *ADDRESSES, "--imap", "imap.example", "--ca-file", str(ca_file)], IMAP_ENV
    )
    assert spec.mailbox is not None
    assert spec.smtp.tls_settings.ca_file == ca_file
    assert spec.mailbox.tls_settings.ca_file == ca_file
    assert spec.smtp.tls_settings.verify is True


def test_timeout_is_the_run_deadline_and_caps_each_command() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--timeout", "5s"])
    assert spec.timeout == 5.0
    assert spec.smtp.timeout == 5.0


def test_probe_from_args_raises_usage_error_not_system_exit() -> None:
    """Flags that do not fit together are found after parsing, and raised, not exited."""
    with pytest.raises(UsageError, match="--smtp-user"):
        spec_of([*SMTP, *ADDRESSES, "--smtp-user", "probe"])


# ------------------------------------------ the same value types as the config


def test_an_address_with_two_at_signs_is_refused_as_in_the_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run_main([*SMTP, "--from", "a@b@c.test", "--to", "sink@rcpt.example"], capsys)
    assert_usage_error(code, err, "--from")
    assert "one @" in err


def test_a_bad_flag_value_is_named_but_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--helo", "two words-XYZZY"], capsys)
    assert_usage_error(code, err, "--helo")
    assert "XYZZY" not in err


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("90", 90.0), ("1.5", 1.5), ("500ms", 0.5), ("2m", 120.0)]
)
def test_timeout_is_a_duration_and_a_bare_number_is_seconds(timeout: str, seconds: float) -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--timeout", timeout])
    assert spec.timeout == seconds


def test_defaults_are_the_configs_defaults() -> None:
    """No --timeout: the run deadline, reply timeouts and folder are the shared constants."""
    spec = spec_of([*SMTP, *ADDRESSES, "--imap", "imap.example"], IMAP_ENV)
    assert spec.mailbox is not None
    assert spec.timeout == values.DEFAULT_RUN_TIMEOUT
    assert spec.smtp.timeout == spec.mailbox.timeout == values.DEFAULT_COMMAND_TIMEOUT
    assert spec.mailbox.folder == values.DEFAULT_FOLDER
    assert spec.mailbox.poll_interval == values.DEFAULT_POLL_INTERVAL


def test_a_password_file_loses_one_newline_only_as_in_the_config(tmp_path: Path) -> None:
    """The CLI used to strip every trailing CR and LF; the config strips one newline."""
    smtp_file = tmp_path / "smtp"
    smtp_file.write_bytes(b"pw ends in a newline\n\n")
    spec = spec_of(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe", "--smtp-password-file", str(smtp_file)]
    )
    assert spec.smtp.password is not None
    assert spec.smtp.password.reveal() == "pw ends in a newline\n"


@pytest.mark.parametrize("folder", ["", "  "])
def test_an_empty_folder_exits_3_naming_folder(
    folder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, "--imap", "imap.example", "--folder", folder], capsys)
    assert_usage_error(code, err, "--folder")


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [("run", "--listen", "localhost:http"), ("run", "--shard", "3/3"), ("demo", "--listen", ":0")],
)
def test_bad_listen_and_shard_flags_exit_3_naming_the_flag(
    command: str, flag: str, value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [command, flag, value]
    if command == "run":
        argv += ["--config", str(tmp_path / "unused.yml")]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 3
    assert_usage_error(3, capsys.readouterr().err, flag)


def test_a_probe_of_a_config_runs_with_its_route(tmp_path: Path) -> None:
    """--config/--probe: the spec is the config's, the --timeout flag overrides its deadline."""
    config = tmp_path / "c.yml"
    config.write_text(
        "smtp_servers: {relay: {host: 127.0.0.1, port: 9, tls: none}}\n"
        "probes: [{name: p, smtp: relay, from: a@example.test, to: b@example.test}]\n"
    )
    args = build_parser().parse_args(
        ["check", "--config", str(config), "--probe", "p", "--timeout", "7s"]
    )
    spec, _signer = probe_from_config(args)
    assert (spec.name, spec.smtp.port, spec.timeout) == ("p", 9, 7.0)


def test_an_unknown_probe_of_a_config_exits_3_naming_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yml"
    config.write_text(
        "smtp_servers: {relay: {host: 127.0.0.1, port: 9, tls: none}}\n"
        "probes: [{name: p, smtp: relay, from: a@example.test, to: b@example.test}]\n"
    )
    code, err = run_main(["--config", str(config), "--probe", "q"], capsys)
    assert_usage_error(code, err, "--probe")
    assert "(have: p)" in err


# ----------------------------------------------- validate and config-schema


def test_validate_prints_a_summary_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    demo = REPO / "config" / "demo.yml"
    assert main(["validate", "--config", str(demo)]) == 0
    assert capsys.readouterr().out == f"{demo}: valid: 3 probe(s), 1 mailbox(es)\n"


def test_validate_prints_every_located_error_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("probes:\n  - {name: x, smtp: relay, from: a@b, to: c@d, port: 25}\n")
    assert main(["validate", "--config", str(path)]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{path}: 2 errors:",
        f"  - {path}:2:21: probes[0].smtp: unknown server (smtp_servers defines none)",
        f"  - {path}:2:48: probes[0].port: unknown key; allowed keys: "
        "name, smtp, mailbox, from, to, interval, timeout, jitter",
    ]


def test_config_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-schema"]) == 0
    printed = capsys.readouterr().out
    assert printed.endswith("}\n")
    assert json.loads(printed)["title"] == "smtp-probe configuration"
