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
    assert [values.smtp_port(mode) for mode in TlsMode] == [25, 587, 465]
    assert [values.imap_port(mode) for mode in TlsMode] == [143, 143, 993]


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
        "expected one of none, starttls, tls (did you mean 'starttls'?)"
    )
    assert refused(parse_tls_mode, "ssl") == "expected one of none, starttls, tls"


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
    # The secret is 12 bytes; tmp_path may hold "12" itself, so look past it.
    assert "12" not in message.removeprefix(f"{tmp_path}/token")


def test_relative_paths_are_relative_to_the_base_and_normalised(tmp_path: Path) -> None:
    assert resolve_path("a/../b", tmp_path) == tmp_path / "b"
    assert resolve_path("/etc/x", tmp_path) == Path("/etc/x")


def test_a_missing_ca_file_names_the_file(tmp_path: Path) -> None:
    assert refused(check_ca_file, tmp_path / "ca.pem") == (
        f"CA file {tmp_path}/ca.pem does not exist"
    )
