"""The value types shared by the config file and ``check``'s flags; no message shows its input."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from smtp_probe.config import values
from smtp_probe.config.values import (
    TlsMode,
    check_ca_file,
    expand_env,
    parse_address,
    parse_duration,
    parse_helo,
    parse_host,
    parse_host_port,
    parse_listen,
    parse_poll_interval,
    parse_probe_name,
    parse_tls_mode,
    read_password_file,
    read_token_secret,
    resolve_path,
)

REPO = Path(__file__).resolve().parents[2]
_T = TypeVar("_T")


def refused(parse: Callable[[_T], object], value: _T) -> str:
    """The message ``parse(value)`` raises, checked not to quote a text ``value``."""
    with pytest.raises(ValueError) as caught:  # noqa: PT011 - the message is checked below
        parse(value)
    message = str(caught.value)
    if isinstance(value, str) and len(value.strip()) > 1:
        assert value.strip() not in message, message
    return message


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 2 m ", 120.0),
        ("744h", 744 * 3600.0),
    ],
)
def test_duration_with_a_unit_is_converted_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(text, unit_required=True) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "seconds"), [("60", 60.0), ("0.25", 0.25)])
def test_bare_number_duration_is_taken_as_seconds_where_allowed(text: str, seconds: float) -> None:
    """``--timeout 60``, as operators type it; the config file wants a unit."""
    assert parse_duration(text) == pytest.approx(seconds)
    assert refused(lambda t: parse_duration(t, unit_required=True), text) == (
        "a duration needs a unit: 500ms, 30s, 5m or 1h"
    )


@pytest.mark.parametrize("text", ["0", "0s", "0ms", "0.0h"])
def test_zero_duration_is_refused_unless_allowed(text: str) -> None:
    assert refused(parse_duration, text) == "a duration must be longer than zero"
    assert parse_duration(text, allow_zero=True) == 0.0


@pytest.mark.parametrize(
    "text", ["abc", "5x", "", "s", "5 seconds", "1h30m", "-5", "-5s", "nan", "inf", "1e3", ".5s"]
)
def test_malformed_duration_is_refused_saying_what_is_expected(text: str) -> None:
    assert refused(parse_duration, text) == "expected a duration like 500ms, 30s, 5m or 1h"


def test_duration_over_31_days_is_refused() -> None:
    assert refused(parse_duration, "745h") == "a duration can be at most 744h (31 days)"


def test_poll_interval_is_at_least_the_first_poll_delay() -> None:
    assert parse_poll_interval("10ms") == pytest.approx(values.MIN_POLL_INTERVAL)
    assert refused(parse_poll_interval, "9ms") == "must be at least 10ms"


@pytest.mark.parametrize(
    ("text", "valid", "jitter_valid"),
    [
        ("30s", True, True),
        (" 1.5 m ", True, True),
        ("0s", False, True),
        ("0.0ms", False, True),
        ("00s", False, True),
        ("30", False, False),
        ("-5s", False, False),
        ("5 seconds", False, False),
    ],
)
def test_the_json_schema_duration_patterns_agree_with_the_parser(
    text: str, valid: bool, jitter_valid: bool
) -> None:
    def parses(allow_zero: bool) -> bool:
        try:
            parse_duration(text, unit_required=True, allow_zero=allow_zero)
        except ValueError:
            return False
        return True

    assert (re.search(values.DURATION_PATTERN, text) is not None) == valid == parses(False)
    assert (re.search(values.JITTER_PATTERN, text) is not None) == jitter_valid == parses(True)


# ----------------------------------------------------------- hosts and ports


def test_host_without_port_has_no_port() -> None:
    assert parse_host_port("mail.example.com") == ("mail.example.com", None)


def test_host_with_port_is_split() -> None:
    assert parse_host_port("mail.example.com:2525") == ("mail.example.com", 2525)


def test_bracketed_ipv6_literal_with_port_is_split() -> None:
    assert parse_host_port("[::1]:25") == ("::1", 25)


def test_bracketed_ipv6_literal_without_port_has_no_port() -> None:
    assert parse_host_port("[2001:db8::1]") == ("2001:db8::1", None)


def test_bare_ipv6_literal_is_a_host() -> None:
    assert parse_host_port("::1") == ("::1", None)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_host_port("  mx.example.org:25 ") == ("mx.example.org", 25)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mail:0", "outside the port range 1-65535"),
        ("mail:65536", "outside the port range 1-65535"),
        ("mail:99999", "outside the port range 1-65535"),
        ("mail:abc", "expected a port number 1-65535"),
        ("mail:-1", "expected a port number 1-65535"),
        ("mail:", "missing port after ':'"),
        ("", "missing host"),
        ("   ", "missing host"),
        (":25", "missing host"),
        ("[]:25", "missing host"),
        ("[::1", "missing ']' after the IPv6 address"),
        ("[::1]25", "expected [IPV6]:PORT"),
        ("[::1]:x", "expected a port number 1-65535"),
        ("mail:25:26", "write IPv6 addresses as [IPV6]:PORT"),
        ("[mail host]:25", "a host name cannot contain whitespace"),
    ],
)
def test_malformed_host_and_port_is_refused(text: str, message: str) -> None:
    assert refused(parse_host_port, text) == message


def test_highest_and_lowest_ports_are_allowed() -> None:
    assert parse_host_port("mail:1") == ("mail", 1)
    assert parse_host_port("mail:65535") == ("mail", 65535)


def test_port_defaults_follow_the_tls_mode() -> None:
    assert [values.smtp_port(mode) for mode in TlsMode] == [25, 587, 465, 25]
    assert [values.imap_port(mode) for mode in TlsMode] == [143, 143, 993, 143]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smtp.example.com:587", "put the port in 'port', not in the host"),
        ("[::1]", "write IPv6 addresses without brackets"),
        ("mail host", "a host name cannot contain whitespace"),
        (" ", "must not be empty"),
    ],
)
def test_a_config_host_is_a_host_alone(text: str, message: str) -> None:
    assert refused(parse_host, text) == message


@pytest.mark.parametrize("text", ["mail.example.com", "192.0.2.1", "2001:db8::25", "fe80::1%eth0"])
def test_a_config_host_may_be_a_name_or_an_address(text: str) -> None:
    assert parse_host(text) == text
    assert re.search(values.HOST_PATTERN, text)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (":10587", ("", 10587)),
        ("9100", ("", 9100)),
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("localhost", ("localhost", 10587)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_listen_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(text) == parsed
    assert re.search(values.LISTEN_PATTERN, text)


@pytest.mark.parametrize(
    ("text", "mode"), [("none", TlsMode.NONE), ("starttls", TlsMode.STARTTLS), ("tls", TlsMode.TLS)]
)
def test_tls_modes(text: str, mode: TlsMode) -> None:
    assert parse_tls_mode(text) is mode


def test_a_misspelt_tls_mode_gets_a_suggestion_and_the_choices() -> None:
    assert refused(parse_tls_mode, "startls") == (
        "expected one of none, starttls, tls, opportunistic (did you mean 'starttls'?)"
    )
    assert refused(parse_tls_mode, "ssl") == "expected one of none, starttls, tls, opportunistic"


# ---------------------------------------------------------- names and addresses


@pytest.mark.parametrize("text", ["probe@example.com", "a+tag@b", "x@[192.0.2.1]"])
def test_bare_addresses_are_accepted(text: str) -> None:
    assert parse_address(text) == text
    assert re.search(values.ADDRESS_PATTERN, text)


@pytest.mark.parametrize(
    "text", ["sink", "@rcpt.test", "sink@", "a@b@c.test", "a b@c.test", "<a@b.c>", "a@b\r\n"]
)
def test_anything_but_a_bare_address_is_refused(text: str) -> None:
    assert refused(parse_address, text) == (
        "expected a mail address like probe@example.com (one @, no spaces, no <>)"
    )
    assert not re.search(values.ADDRESS_PATTERN, text)


@pytest.mark.parametrize("text", ["two words", "naïve.example", "", "tab\there"])
def test_helo_is_one_word_of_ascii(text: str) -> None:
    refused(parse_helo, text)
    assert not re.search(values.HELO_PATTERN, text)


@pytest.mark.parametrize("text", ["-dash", "x" * 65, "a/b", "", "sp ace"])
def test_probe_names_are_label_safe(text: str) -> None:
    refused(parse_probe_name, text)
    assert not re.search(values.PROBE_NAME_PATTERN, text)


# ------------------------------------------------------------ files and secrets


def test_environment_references_are_expanded_and_dollar_dollar_escapes() -> None:
    assert expand_env("a${X}b$${Y}", {"X": "1"}) == "a1b${Y}"


def test_every_unset_variable_and_bad_reference_is_its_own_problem() -> None:
    with pytest.raises(values.ValueProblems) as caught:
        expand_env("secret-text ${A} ${1} ${B}", {})
    assert caught.value.messages == (
        "environment variable A is not set",
        "'${' must be followed by a variable name and '}' (write '$${' for a literal '${')",
        "environment variable B is not set",
    )
    assert "secret-text" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "password"),
    [(b"pw\n", "pw"), (b"pw\r\n", "pw"), (b"pw", "pw"), (b"pw\n\n", "pw\n"), (b"pw\r", "pw\r")],
)
def test_a_password_file_loses_exactly_one_trailing_newline(
    tmp_path: Path, content: bytes, password: str
) -> None:
    (tmp_path / "pw").write_bytes(content)
    assert read_password_file(tmp_path / "pw").reveal() == password


@pytest.mark.parametrize(
    ("content", "problem"), [(b"\n", "is empty"), (b"\xff\xfe secret", "is not UTF-8 text")]
)
def test_an_unusable_password_file_names_the_file_not_its_content(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    (tmp_path / "pw").write_bytes(content)
    assert refused(read_password_file, tmp_path / "pw") == f"{tmp_path}/pw {problem}"


def test_a_token_secret_shorter_than_16_bytes_is_refused_without_its_length(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("  short-secret \n")
    message = refused(read_token_secret, tmp_path / "token")
    assert message.startswith(f"{tmp_path}/token holds fewer than 16 bytes")
    # The path is the test's own (pytest-of-root/pytest-127/... may hold a 12).
    assert "12" not in message.removeprefix(f"{tmp_path}/token")


def test_relative_paths_are_relative_to_the_base_and_normalised(tmp_path: Path) -> None:
    assert resolve_path("a/../b", tmp_path) == tmp_path / "b"
    assert resolve_path("/etc/x", tmp_path) == Path("/etc/x")


def test_a_missing_ca_file_names_the_file(tmp_path: Path) -> None:
    assert refused(check_ca_file, tmp_path / "ca.pem") == (
        f"CA file {tmp_path}/ca.pem does not exist"
    )


# -------------------------------------------------------- OAuth client values


@pytest.mark.parametrize(
    "url",
    [
        "https://login.microsoftonline.com",
        "https://idp.example.com:8443/oauth2/token?tenant=a#x",
        "http://localhost:8080/token",
        "http://127.0.0.1/token",
        "http://[::1]:9000/token",
    ],
)
def test_token_urls_that_are_accepted(url: str) -> None:
    assert values.parse_url(url) == url
    assert re.search(values.URL_PATTERN, url)


@pytest.mark.parametrize(
    ("url", "message", "schema_too"),
    [
        ("http://idp.example.com/token", "use https://", True),
        ("http://10.0.0.1/token", "use https://", True),
        ("ftp://idp.example.com/token", "expected a URL like https://", True),
        ("idp.example.com/token", "expected a URL like https://", True),
        ("https:///token", "expected a URL like https://", True),
        ("https://idp.example.com/a b", "expected a URL without spaces", True),
        # The port is the parser's to check; the schema's pattern lets it through.
        ("https://idp.example.com:99999/token", "expected a URL like https://", False),
        ("https://idp.example.com:port/token", "expected a URL like https://", False),
    ],
)
def test_token_urls_that_are_refused(url: str, message: str, schema_too: bool) -> None:
    """Plain http only to this host: a client secret must not cross a network in the clear."""
    assert refused(values.parse_url, url).startswith(message)
    assert (re.search(values.URL_PATTERN, url) is None) == schema_too


@pytest.mark.parametrize(("text", "ok"), [("contoso.onmicrosoft.com", True), ("a b", False)])
def test_a_word_has_no_spaces(text: str, ok: bool) -> None:
    assert (re.search(values.WORD_PATTERN, text) is not None) == ok
    if ok:
        assert values.parse_word(text) == text
    else:
        assert refused(values.parse_word, text) == "expected one word, without spaces"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("oauth2-helper --account probe", ("oauth2-helper", "--account", "probe")),
        ("helper 'two words' \"and $HOME\"", ("helper", "two words", "and $HOME")),
        ("helper a\\ b", ("helper", "a b")),
        ("helper; rm -rf /", ("helper;", "rm", "-rf", "/")),
    ],
)
def test_a_command_is_split_into_words_like_a_shell_would_but_never_run_by_one(
    text: str, words: tuple[str, ...]
) -> None:
    """Quotes and backslashes only: no variables, no ``;``, no globbing."""
    assert values.split_command(text) == words


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("helper 'unclosed", "cannot split the command: no closing quotation"),
        ("helper \\", "cannot split the command: no escaped character"),
        ("   ", "must not be empty"),
    ],
)
def test_a_command_that_cannot_be_split_is_refused(text: str, message: str) -> None:
    assert refused(values.split_command, text) == message


def test_a_command_program_with_a_slash_is_resolved_against_the_base_and_must_run(
    tmp_path: Path,
) -> None:
    helper = tmp_path / "bin" / "helper"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\necho token\n")
    with pytest.raises(ValueError, match="is not executable"):
        values.check_command(["bin/helper", "-v"], tmp_path)
    helper.chmod(0o755)
    assert values.check_command(["bin/helper", "-v"], tmp_path) == (str(helper), "-v")
    with pytest.raises(ValueError, match=f"^the program {tmp_path}/nope does not exist$"):
        values.check_command(["./nope"], tmp_path)


def test_a_bare_command_program_is_looked_up_in_path_and_kept_as_written(tmp_path: Path) -> None:
    assert values.check_command(["sh", "-c", "echo token"], tmp_path) == (
        "sh",
        "-c",
        "echo token",
    )
    message = refused(lambda argv: values.check_command(argv, tmp_path), ["no-such-program-xyz"])
    assert message == "the program is not found in PATH"


def test_a_certificate_file_needs_a_pem_certificate_and_a_key_file_a_pem_key(
    tmp_path: Path,
) -> None:
    cert, key, both = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "both.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nhunter2-key\n-----END RSA PRIVATE KEY-----\n")
    both.write_text(cert.read_text() + key.read_text())
    assert values.check_certificate_file(cert) == cert
    assert values.check_private_key_file(key) == key
    assert (values.has_private_key(cert), values.has_private_key(both)) == (False, True)
    assert refused(values.check_certificate_file, key) == (
        f"{key} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    )
    assert refused(values.check_private_key_file, cert) == (
        f"{cert} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
    )
    assert refused(values.check_private_key_file, tmp_path / "none.pem") == (
        f"cannot read {tmp_path}/none.pem: No such file or directory"
    )


@pytest.mark.parametrize(
    "content",
    [
        b'{"type": "authorized_user", "client_email": "a@b", "private_key": "hunter2-key"}',
        b'{"type": "service_account", "private_key": "hunter2-key"}',
        b'["service_account", "hunter2-key"]',
        b"hunter2-key: not json",
        b"\xff\xfe hunter2-key",
    ],
)
def test_a_service_account_file_must_be_a_service_accounts_json_key(
    tmp_path: Path, content: bytes
) -> None:
    """The message names the file and what it should hold, never what it holds."""
    path = tmp_path / "sa.json"
    path.write_bytes(content)
    message = refused(values.check_service_account_file, path)
    assert message.startswith(f"{path} is not a service account key file")
    assert "hunter2" not in message


def test_presets_fill_the_providers_hosts_and_tls_modes() -> None:
    assert {p: (h, t, values.smtp_port(t)) for p, (h, t) in values.SMTP_PRESETS.items()} == {
        values.Preset.MICROSOFT365: ("smtp.office365.com", TlsMode.STARTTLS, 587),
        values.Preset.GOOGLE: ("smtp.gmail.com", TlsMode.STARTTLS, 587),
    }
    assert {p: (h, t, values.imap_port(t)) for p, (h, t) in values.IMAP_PRESETS.items()} == {
        values.Preset.MICROSOFT365: ("outlook.office365.com", TlsMode.TLS, 993),
        values.Preset.GOOGLE: ("imap.gmail.com", TlsMode.TLS, 993),
    }
