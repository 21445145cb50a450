"""MTA-STS policy parsing and MX pattern matching (RFC 8461 §3.2, §4.1)."""

from __future__ import annotations

import pytest

from smtp_probe.probe.mta_sts import MtaStsError, MtaStsPolicy, parse_policy


def policy(*patterns: str) -> MtaStsPolicy:
    return MtaStsPolicy("example.net", "1", "enforce", patterns, 60)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("mx1.example.net", True),
        ("MX1.Example.NET.", True),
        ("a.backup.example.net", True),
        ("a.b.backup.example.net", False),
        ("backup.example.net", False),
        ("mx2.example.net", False),
    ],
)
def test_mx_patterns_match_exact_names_and_one_wildcard_label(host: str, expected: bool) -> None:
    assert policy("mx1.example.net", "*.backup.example.net").matches(host) is expected


def test_a_policy_parses_with_unknown_keys_ignored_and_max_age_capped() -> None:
    parsed = parse_policy(
        "version: STSv1\nmode: testing\nfuture: x\nmx: mx1.example.net\nmax_age: 99999999999\n",
        domain="example.net",
        policy_id="abc",
    )
    assert parsed == MtaStsPolicy("example.net", "abc", "testing", ("mx1.example.net",), 31557600)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n", "version is 'STSv2', not STSv1"),
        ("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n", "mode 'strict' is not one of"),
        ("version: STSv1\nmode: enforce\nmx: a\n", "max_age '(missing)' is not a number"),
        ("version: STSv1\nmode: enforce\nmax_age: 5\n", "mode enforce without any mx: line"),
        ("version: STSv1\n<html>\n", "is not 'key: value'"),
    ],
)
def test_a_broken_policy_is_an_error_naming_the_field(text: str, reason: str) -> None:
    with pytest.raises(MtaStsError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(text, domain="example.net", policy_id="1")


def test_mode_none_needs_no_mx() -> None:
    parsed = parse_policy("version: STSv1\nmode: none\nmax_age: 5\n", domain="d", policy_id="1")
    assert (parsed.mode, parsed.mx) == ("none", ())
