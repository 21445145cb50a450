"""hops.py: real ``Received:`` chains become hops, oldest first, with per-hop delays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smtp_probe.probe.hops import MAX_VALUE, parse_hops
from smtp_probe.probe.result import Hop
from tests.support import received_samples as samples


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _summary(hops: tuple[Hop, ...]) -> list[tuple[str | None, str | None, bool, float | None]]:
    return [(h.by, h.with_, h.tls, h.delay_seconds) for h in hops]


def test_postfix_submission_then_dovecot_lmtp() -> None:
    hops = parse_hops(samples.POSTFIX_DOVECOT)
    assert hops == (
        Hop(by="mx.example.test", from_="[127.0.0.1]", with_="ESMTPSA", tls=True,
            at=_at("2026-12-07T02:50:37"), delay_seconds=None),
        Hop(by="mx.example.test", from_="mx.example.test", with_="LMTP", tls=False,
            at=_at("2026-12-07T02:50:38"), delay_seconds=1.0),
    )  # fmt: skip


def test_relay_chain_puts_the_held_time_on_the_hop_that_took_it() -> None:
    hops = parse_hops(samples.POSTFIX_RELAY_CHAIN)
    assert _summary(hops) == [
        ("submit.example.org", "ESMTPSA", True, None),
        ("relay.example.org", "ESMTP", False, 1.0),
        ("mx.example.net", "ESMTPS", True, 30.0),
        ("mx.example.net", "LMTPS", True, 2.0),
    ]
    assert [h.from_ for h in hops] == [
        "[192.0.2.99]", "submit.example.org", "relay.example.org", "mx.example.net",
    ]  # fmt: skip
    assert not any(h.skewed for h in hops)


def test_microsoft_365_protocol_is_several_words_and_tls_is_in_its_comment() -> None:
    hops = parse_hops(samples.MICROSOFT_365)
    assert _summary(hops) == [
        ("AM4PEPF00027A5F.mail.protection.outlook.com", "Microsoft SMTP Server", False, None),
        ("AS9PR06CA0123.outlook.office365.com", "Microsoft SMTP Server", True, 1.0),
        ("DB9PR04MB8412.eurprd04.prod.outlook.com", "Microsoft SMTP Server", True, 1.0),
        ("AM9PR04MB8780.eurprd04.prod.outlook.com", "HTTPS", True, 1.0),
    ]
    assert hops[0].from_ == "mail.example.org"


def test_gmail_hosts_are_addresses_and_zones_are_honoured() -> None:
    hops = parse_hops(samples.GMAIL)
    assert _summary(hops) == [
        ("2002:a17:90a:1234:b0:2a0:1234:5678", "SMTP", False, None),
        ("mx.google.com", "SMTPS", True, 2.0),
        ("2002:a05:6a10:8e0b:b0:5a1:2c3d:4e5f", "SMTP", False, 1.0),
    ]
    assert hops[0].from_ is None
    assert hops[0].at == _at("2026-12-07T10:50:37")  # -0800


def test_exim_lower_case_esmtps_and_tls_clause() -> None:
    hops = parse_hops(samples.EXIM)
    assert _summary(hops) == [
        ("mail.example.org", "local", False, None),
        ("mx.example.net", "esmtps", True, 1.0),
    ]
    assert [h.from_ for h in hops] == ["probe", "[192.0.2.10]"]


def test_sendmail_local_submission_has_neither_from_nor_with() -> None:
    hops = parse_hops(samples.SENDMAIL)
    assert _summary(hops) == [
        ("mail.example.org", None, False, None),
        ("mx.example.net", "ESMTPS", True, 5.0),
    ]
    assert hops[0].from_ is None
    assert hops[0].at == _at("2026-12-07T01:50:38")  # +0100


def test_qmail_lines_without_with_and_a_comment_only_line() -> None:
    hops = parse_hops(samples.QMAIL)
    assert _summary(hops) == [("mx.example.net", None, False, None), (None, None, False, 1.0)]
    assert hops[0].from_ == "unknown"
    assert hops[1].at == _at("2026-12-07T02:50:40")  # -0000 is taken as UTC


def test_clock_skew_is_flagged_never_a_negative_delay() -> None:
    hops = parse_hops(samples.SKEWED)
    assert [(h.by, h.delay_seconds, h.skewed) for h in hops] == [
        ("submit.example.org", None, False),
        ("relay.example.org", None, True),
        # measured against the skewed hop's own time: the next gap is positive again
        ("mx.example.net", 210.0, False),
    ]
    assert all(h.delay_seconds is None or h.delay_seconds >= 0 for h in hops)


def test_missing_dates_leave_the_neighbouring_delays_unknown() -> None:
    hops = parse_hops(samples.MISSING_DATES)
    assert [(h.by, h.at is not None, h.delay_seconds, h.skewed) for h in hops] == [
        ("first.example.org", True, None, False),
        ("submit.example.org", False, None, False),
        ("relay.example.org", False, None, False),
        # the hop before it has no time: no delay rather than one spanning three hops
        ("mx.example.net", True, None, False),
    ]
    assert [h.with_ for h in hops] == ["ESMTP", "ESMTPSA", "ESMTP", "ESMTP"]


def test_garbage_never_raises_and_each_line_is_a_hop() -> None:
    hops = parse_hops(samples.GARBAGE)
    assert len(hops) == len(samples.GARBAGE)
    oldest_first = list(reversed(samples.GARBAGE))
    by_line = dict(zip(oldest_first, hops, strict=True))
    huge = by_line[samples.GARBAGE[-1]]
    assert huge.by == "h" * MAX_VALUE
    assert huge.at == _at("2026-12-07T02:50:37")
    assert by_line[""] == Hop(None, None, None, False, None, None)
    assert by_line["garbage with no structure whatsoever"].by is None
    unclosed = by_line[samples.GARBAGE[2]]
    assert (unclosed.by, unclosed.at) == (None, _at("2026-12-07T02:50:37"))
    assert by_line[samples.GARBAGE[3]].at is None  # year 99999
    assert by_line[samples.GARBAGE[4]].at is None  # offset +9999
    assert by_line["from by with ; ;"] == Hop(None, None, None, False, None, None)


def test_empty_chain() -> None:
    assert parse_hops(()) == ()


@pytest.mark.parametrize(
    ("protocol", "tls"),
    [
        ("ESMTPS", True), ("ESMTPSA", True), ("LMTPS", True), ("LMTPSA", True),
        ("UTF8SMTPS", True), ("UTF8SMTPSA", True), ("UTF8LMTPS", True), ("ESMTPTLS", True),
        ("esmtpsa", True), ("SMTPS", True), ("HTTPS", True),
        ("SMTP", False), ("ESMTP", False), ("ESMTPA", False), ("LMTP", False),
        ("UTF8SMTP", False), ("local", False), ("mapi", False),
    ],
)  # fmt: skip
def test_protocol_names_that_say_tls(protocol: str, tls: bool) -> None:
    (hop,) = parse_hops((f"from a.example by b.example with {protocol} id 1; "
                         "Mon, 7 Dec 2026 02:50:37 +0000",))  # fmt: skip
    assert (hop.with_, hop.tls) == (protocol, tls)


@pytest.mark.parametrize(
    "comment",
    ["(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))",
     "(version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)",
     "(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NOT)",
     "(TLS1.3)"],
)  # fmt: skip
def test_tls_comments_count_even_with_a_plain_protocol(comment: str) -> None:
    (hop,) = parse_hops((f"from a.example {comment} by b.example with ESMTP id 1; "
                         "Mon, 7 Dec 2026 02:50:37 +0000",))  # fmt: skip
    assert hop.tls


def test_a_host_named_like_tls_is_not_tls() -> None:
    (hop,) = parse_hops(("from tls.example (tls.example [192.0.2.1]) (No client certificate "
                         "requested) by mx.example with ESMTP id 1; Mon, 7 Dec 2026 02:50:37 +0000",))  # fmt: skip
    assert (hop.from_, hop.tls) == ("tls.example", False)


def test_control_characters_never_reach_a_value() -> None:
    (hop,) = parse_hops(("from a\x1b[31m.example by evil\x07.example\x00 with ESMTP\x1b id 1; "
                         "Mon, 7 Dec 2026 02:50:37 +0000",))  # fmt: skip
    assert (hop.from_, hop.by, hop.with_) == ("a", "evil", "ESMTP")
    assert hop.at == _at("2026-12-07T02:50:37")
