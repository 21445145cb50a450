"""parse_duration and parse_host_port: the small value types of the CLI and the config."""

from __future__ import annotations

import pytest

from smtp_probe.units import parse_duration, parse_host_port


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 2 m ", 120.0),
    ],
)
def test_duration_with_a_unit_is_converted_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "seconds"), [("60", 60.0), ("0.25", 0.25)])
def test_bare_number_duration_is_taken_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0", "0s", "0ms", "-5", "-0.5"])
def test_zero_or_negative_duration_is_refused_as_not_greater_than_zero(text: str) -> None:
    with pytest.raises(ValueError, match="must be greater than zero"):
        parse_duration(text)


def test_negative_duration_with_a_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid duration '-5s'"):
        parse_duration("-5s")


@pytest.mark.parametrize("text", ["abc", "5x", "", "s", "5 seconds", "1h30m"])
def test_malformed_duration_is_refused_with_a_message_saying_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a number with a unit, like 500ms, 30s") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["nan", "inf", "1e400"])
def test_non_finite_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_host_without_port_gets_the_default_port() -> None:
    assert parse_host_port("mail.example.com", 587) == ("mail.example.com", 587)


def test_host_with_port_is_split() -> None:
    assert parse_host_port("mail.example.com:2525", 587) == ("mail.example.com", 2525)


def test_bracketed_ipv6_literal_with_port_is_split() -> None:
    assert parse_host_port("[::1]:25", 587) == ("::1", 25)


def test_bracketed_ipv6_literal_without_port_gets_the_default_port() -> None:
    assert parse_host_port("[2001:db8::1]", 465) == ("2001:db8::1", 465)


def test_bare_ipv6_literal_is_a_host_with_the_default_port() -> None:
    assert parse_host_port("::1", 25) == ("::1", 25)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_host_port("  mx.example.org:25 ", 587) == ("mx.example.org", 25)


@pytest.mark.parametrize("text", ["mail:0", "mail:65536", "mail:99999", "mail:abc", "mail:-1"])
def test_port_outside_1_to_65535_or_not_a_number_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid port .*expected 1-65535"):
        parse_host_port(text, 25)


def test_highest_and_lowest_ports_are_allowed() -> None:
    assert parse_host_port("mail:1", 25) == ("mail", 1)
    assert parse_host_port("mail:65535", 25) == ("mail", 65535)


@pytest.mark.parametrize("text", ["", "   ", ":25", "[]:25"])
def test_empty_host_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="empty host"):
        parse_host_port(text, 25)


@pytest.mark.parametrize("text", ["[::1", "[::1]25", "[::1]:x"])
def test_malformed_bracketed_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_host_port(text, 25)


def test_colon_without_a_port_is_refused() -> None:
    with pytest.raises(ValueError, match="port"):
        parse_host_port("mail.example.com:", 25)
