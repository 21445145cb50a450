"""The check command line: usage errors exit 3 naming the flag; flags become a ProbeSpec."""

from __future__ import annotations

import argparse
import json
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import trustme

from smtp_probe.check import (
    IMAP_PASSWORD_ENV,
    IMAP_TOKEN_CLIENT,
    SMTP_PASSWORD_ENV,
    SMTP_TOKEN_CLIENT,
    UsageError,
    probe_from_args,
    probe_from_config,
    token_command_client,
)
from smtp_probe.cli import build_parser, main
from smtp_probe.config import load_config, values
from smtp_probe.oauth.cache import TokenCache
from smtp_probe.oauth.settings import CommandClient, OAuthClient
from smtp_probe.probe.spec import ProbeSpec, TlsMode
from tests.support.cli_proc import REPO, run_cli

FROM = ["--from", "probe@sender.example"]
TO = ["--to", "sink@rcpt.example"]
ADDRESSES = [*FROM, *TO]
# Port 9 (discard) on loopback: were a usage check ever skipped, the run fails fast and locally.
SMTP = ["--smtp", "127.0.0.1:9", "--smtp-tls", "none"]
TOKEN_COMMAND = "sh -c 'echo not-a-real-token'"  # noqa: S105 - a command line


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


# A flag that is wrong, or does not fit the others, exits 3 with one line naming it.
FLAG_ERRORS = [
    pytest.param(ADDRESSES, "--smtp", "", id="smtp-missing"),
    pytest.param(["--smtp", "mail.example:0", *ADDRESSES], "--smtp", "", id="smtp-port-0"),
    pytest.param(["--smtp", "mail.example:70000", *ADDRESSES], "--smtp", "", id="smtp-port-70000"),
    pytest.param(["--smtp", "mail.example:smtp", *ADDRESSES], "--smtp", "", id="smtp-port-name"),
    pytest.param(["--smtp", ":25", *ADDRESSES], "--smtp", "", id="smtp-no-host"),
    pytest.param(
        ["--smtp", "mail.example", "--smtp-tls", "ssl", *ADDRESSES],
        "--smtp-tls",
        "",
        id="smtp-tls-unknown",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe"],
        "--smtp-user",
        SMTP_PASSWORD_ENV,
        id="smtp-user-without-any-password",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--imap", "127.0.0.1:9"],
        "--imap",
        IMAP_PASSWORD_ENV,
        id="imap-without-any-password",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--imap-user", "sink"], "--imap-user", "", id="imap-user-without-imap"
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--smtp-token-command", TOKEN_COMMAND],
        "--smtp-token-command",
        "--smtp-user",
        id="smtp-token-command-without-smtp-user",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--imap-token-command", TOKEN_COMMAND],
        "--imap-token-command",
        "without --imap",
        id="imap-token-command-without-imap",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe", "--smtp-token-command", "helper 'unclosed"],
        "--smtp-token-command",
        "no closing quotation",
        id="smtp-token-command-unclosed-quote",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe", "--smtp-token-command", "no-such-program-xyz"],
        "--smtp-token-command",
        "not found in PATH",
        id="smtp-token-command-not-in-path",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--imap", "127.0.0.1:9", "--imap-token-command", "./no-such-helper -v"],
        "--imap-token-command",
        "does not exist",
        id="imap-token-command-missing-program",
    ),
    pytest.param([*SMTP, *FROM], "--to", "", id="to-missing"),
    pytest.param([*SMTP, *FROM, "--to", "sink"], "--to", "", id="to-no-at"),
    pytest.param([*SMTP, "--from", "probe", *TO], "--from", "", id="from-no-at"),
    pytest.param([*SMTP, "--from", "@example.com", *TO], "--from", "", id="from-no-local-part"),
    pytest.param([*SMTP, "--from", "probe@", *TO], "--from", "", id="from-no-domain"),
    pytest.param([*SMTP, "--from", "a b@example.com", *TO], "--from", "", id="from-space"),
    pytest.param([*SMTP, "--from", "<a@b.c>", *TO], "--from", "", id="from-angle-brackets"),
    pytest.param(
        [*SMTP, "--from", "a@b@c.test", *TO], "--from", "one @", id="from-two-at-signs-as-in-config"
    ),
    pytest.param([*SMTP, *ADDRESSES, "--helo", "two words"], "--helo", "", id="helo-space"),
    pytest.param([*SMTP, *ADDRESSES, "--timeout", "abc"], "--timeout", "", id="timeout-abc"),
    pytest.param([*SMTP, *ADDRESSES, "--timeout", "5x"], "--timeout", "", id="timeout-5x"),
    pytest.param([*SMTP, *ADDRESSES, "--timeout", "0"], "--timeout", "", id="timeout-0"),
    pytest.param([*SMTP, *ADDRESSES, "--timeout", "-3s"], "--timeout", "", id="timeout-negative"),
    pytest.param([*SMTP, *ADDRESSES, "--warning", "soon"], "--warning", "", id="warning-soon"),
    pytest.param(
        [*SMTP, *ADDRESSES, "--imap", "imap.example", "--folder", ""],
        "--folder",
        "",
        id="folder-empty",
    ),
    pytest.param(
        [*SMTP, *ADDRESSES, "--imap", "imap.example", "--folder", "  "],
        "--folder",
        "",
        id="folder-blank",
    ),
]


@pytest.mark.parametrize(("argv", "flag", "says"), FLAG_ERRORS)
def test_a_bad_flag_exits_3_with_one_line_naming_it(
    argv: list[str], flag: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(argv, capsys)
    assert_usage_error(code, err, flag)
    assert says in err


def test_missing_command_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 3
    assert "COMMAND" in capsys.readouterr().err


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


def test_usage_error_in_a_real_process_is_one_line_and_no_traceback() -> None:
    for argv, flag in (
        (ADDRESSES, "--smtp"),
        ([*SMTP, *ADDRESSES, "--timeout", "soon"], "--timeout"),
    ):
        done = run_cli("check", *argv)
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
    assert spec.mailbox.password is not None
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
    assert spec.mailbox.password is not None
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


def test_token_commands_log_in_with_oauth_on_both_legs_instead_of_a_password() -> None:
    spec = spec_of(
        [*SMTP, *ADDRESSES, "--smtp-user", "probe", "--smtp-token-command", TOKEN_COMMAND,
         "--imap", "imap.example", "--imap-token-command", "sh -c 'echo other'"]
    )  # fmt: skip
    assert spec.mailbox is not None
    assert (spec.smtp.username, spec.smtp.password) == ("probe", None)
    assert (spec.mailbox.username, spec.mailbox.password) == ("sink@rcpt.example", None)
    assert isinstance(spec.smtp.oauth, TokenCache)
    assert isinstance(spec.mailbox.oauth, TokenCache)
    assert (spec.smtp.oauth.client, spec.mailbox.oauth.client) == (
        SMTP_TOKEN_CLIENT,
        IMAP_TOKEN_CLIENT,
    )


def test_a_token_command_is_split_without_a_shell_into_a_command_client() -> None:
    """The words a shell would see, and no shell: the same client a config's token_command is."""
    client = token_command_client(
        ("sh", "-c", "echo $HOME; echo *"), "--smtp-token-command", SMTP_TOKEN_CLIENT
    )
    assert client == OAuthClient(
        SMTP_TOKEN_CLIENT, CommandClient(command=("sh", "-c", "echo $HOME; echo *"))
    )
    parsed = build_parser().parse_args(
        ["check", "--smtp-token-command", "helper --account 'probe one' a\\ b"]
    )
    assert parsed.smtp_token_command == ("helper", "--account", "probe one", "a b")


def test_a_token_command_program_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper = tmp_path / "helper"
    helper.write_text("#!/bin/sh\necho token\n")
    helper.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    client = token_command_client(("./helper", "-v"), "--imap-token-command", IMAP_TOKEN_CLIENT)
    assert client.provider == CommandClient(command=(str(helper), "-v"))


@pytest.mark.parametrize("leg", ["smtp", "imap"])
@pytest.mark.parametrize("password_from", ["file", "env"])
def test_a_token_command_and_a_password_for_one_leg_exit_3_naming_the_token_command(
    leg: str,
    password_from: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw-canary-value\n")
    argv = [*SMTP, *ADDRESSES]
    if leg == "smtp":
        argv += ["--smtp-user", "probe"]
    else:
        argv += ["--imap", "127.0.0.1:9"]
    argv += [f"--{leg}-token-command", TOKEN_COMMAND]
    if password_from == "file":  # noqa: S105 - where the password comes from
        argv += [f"--{leg}-password-file", str(secret)]
    else:
        env = SMTP_PASSWORD_ENV if leg == "smtp" else IMAP_PASSWORD_ENV
        monkeypatch.setenv(env, "pw-canary-value")
    code, err = run_main(argv, capsys)
    assert_usage_error(code, err, f"--{leg}-token-command")
    assert "not both" in err
    assert "pw-canary-value" not in err


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


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config with one probe, ``p``, through a relay on 127.0.0.1:9 (discard)."""
    path = tmp_path / "c.yml"
    path.write_text(
        "smtp_servers: {relay: {host: 127.0.0.1, port: 9, tls: none}}\n"
        "probes: [{name: p, smtp: relay, from: a@example.test, to: b@example.test}]\n"
    )
    return path


def test_a_probe_of_a_config_runs_with_its_route(config_file: Path) -> None:
    """--config/--probe: the spec is the config's, the --timeout flag overrides its deadline."""
    args = build_parser().parse_args(
        ["check", "--config", str(config_file), "--probe", "p", "--timeout", "7s"]
    )
    spec, _signer = probe_from_config(args)
    assert (spec.name, spec.smtp.port, spec.timeout) == ("p", 9, 7.0)


def test_without_timeout_a_probe_of_a_config_keeps_its_own_deadline(config_file: Path) -> None:
    args = build_parser().parse_args(["check", "--config", str(config_file), "--probe", "p"])
    spec, _signer = probe_from_config(args)
    configured = load_config(config_file).probe("p")
    assert configured is not None
    assert spec == configured.spec


@pytest.fixture
def oauth_config_file(tmp_path: Path) -> Path:
    """A config whose relay logs in with OAuth, and a route of two probes through it."""
    path = tmp_path / "c.yml"
    path.write_text(
        "oauth_clients: {helper: {token_command: \"sh -c 'echo not-a-real-token'\"}}\n"
        "smtp_servers:\n"
        "  relay: {host: 127.0.0.1, port: 9, tls: none, username: probe, oauth: helper}\n"
        "  direct: {host: 127.0.0.1, port: 9, tls: none}\n"
        "mailboxes: {inbox: {host: 127.0.0.1, port: 9, tls: none, username: b, oauth: helper}}\n"
        "routes:\n"
        "  out:\n"
        "    senders: [{smtp: relay, from: a@example.test}, {smtp: direct, from: a@example.test}]\n"
        "    mailboxes: [{mailbox: inbox, to: b@example.test}]\n"
    )
    return path


def test_a_route_probe_of_a_config_runs_by_its_expanded_name_with_its_oauth_client(
    oauth_config_file: Path,
) -> None:
    args = build_parser().parse_args(
        ["check", "--config", str(oauth_config_file), "--probe", "out-relay-to-inbox"]
    )
    spec, _signer = probe_from_config(args)
    assert spec.name == "out-relay-to-inbox"
    assert spec.mailbox is not None
    assert isinstance(spec.smtp.oauth, TokenCache)
    assert spec.smtp.oauth.client == "helper"
    # One client, one cache: the server and the mailbox share it.
    assert spec.mailbox.oauth is spec.smtp.oauth
    assert spec.smtp.password is None


def test_an_unknown_probe_lists_the_route_made_names(
    oauth_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--config", str(oauth_config_file), "--probe", "out"], capsys)
    assert_usage_error(code, err, "--probe")
    assert "(have: out-relay-to-inbox, out-direct-to-inbox)" in err


def test_an_unknown_probe_of_a_config_exits_3_naming_probe(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--config", str(config_file), "--probe", "q"], capsys)
    assert_usage_error(code, err, "--probe")
    assert "(have: p)" in err


@pytest.mark.parametrize(("given", "missing"), [("--config", "--probe"), ("--probe", "--config")])
def test_config_without_probe_and_probe_without_config_exit_3(
    given: str, missing: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value = str(config_file) if given == "--config" else "p"
    code, err = run_main([given, value], capsys)
    assert_usage_error(code, err, missing)
    assert "--config and --probe go together" in err


@pytest.mark.parametrize(
    "route",
    [
        ["--smtp", "mail.example"],
        ["--from", "probe@sender.example"],
        ["--to", "sink@rcpt.example"],
        ["--imap", "imap.example"],
        ["--smtp-user", "probe"],
        ["--imap-user", "sink"],
        ["--smtp-token-command", TOKEN_COMMAND],
        ["--imap-token-command", TOKEN_COMMAND],
    ],
    ids=lambda route: route[0],
)
def test_a_route_flag_beside_config_exits_3_naming_it(
    route: list[str], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The route is the config's: a flag that would change it is refused, not ignored."""
    code, err = run_main(["--config", str(config_file), "--probe", "p", *route], capsys)
    assert_usage_error(code, err, route[0])
    assert "the route comes from --config" in err


def test_a_config_that_does_not_validate_exits_3_with_its_located_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("probes: [{name: p, smtp: relay, from: a@example.test, to: b@example.test}]\n")
    code, err = run_main(["--config", str(path), "--probe", "p"], capsys)
    assert code == 3
    assert err.splitlines() == [
        f"{path}: 1 error:",
        f"  - {path}:1:26: probes[0].smtp: unknown server (smtp_servers defines none)",
    ]


def test_run_with_its_address_taken_exits_3_with_one_line_saying_so(config_file: Path) -> None:
    """A second daemon on the same port: exit 3 and why, beside the daemon's own JSON log."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_cli("run", "--config", str(config_file), "--listen", f"127.0.0.1:{port}")

    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    [error] = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert error.startswith("smtp-probe run: error: cannot listen: "), error
    assert str(port) in error
    assert "already in use" in error


# ----------------------------------------------- validate and config-schema


def test_validate_prints_a_summary_then_every_probe_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    demo = REPO / "config" / "demo.yml"
    assert main(["validate", "--config", str(demo)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{demo}: valid: 3 probe(s), 1 mailbox(es)",
        "  sandbox-inbox: sandbox -> sandbox, probe@sandbox.test -> demo@sandbox.test",
        "  sandbox-junk: sandbox -> sandbox, probe@sandbox.test -> demo+junk@sandbox.test",
        "  sandbox-rejected: sandbox -> sandbox, probe@sandbox.test -> nobody@elsewhere.test",
    ]


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
        "name, smtp, mailbox, from, to, interval, timeout, jitter, reflector, expect_auth, "
        "verify_dkim, bounce_mailbox, check, expect, smuggling_variants",
    ]


def test_config_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-schema"]) == 0
    printed = capsys.readouterr().out
    assert printed.endswith("}\n")
    assert json.loads(printed)["title"] == "smtp-probe configuration"
