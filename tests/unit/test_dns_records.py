"""Reading SPF, DMARC and TLS-RPT record text and forming DNSBL names (smtp_probe.probe.dns_records)."""

from __future__ import annotations

import pytest

from smtp_probe.probe.dns_records import (
    DmarcRecord,
    RecordError,
    TlsRptRecord,
    dnsbl_error_code,
    dnsbl_listing,
    dnsbl_name,
    is_dmarc,
    is_tlsrpt,
    parse_dmarc,
    parse_tags,
    parse_tlsrpt,
    spf_records,
)


def test_spf_records_are_the_v_spf1_ones_only() -> None:
    txts = [
        "v=spf1 -all",
        "V=SPF1 ip4:192.0.2.0/24 ~all",
        "v=spf1",
        "v=spf10 -all",
        "google-site-verification=abc",
        "v=DMARC1; p=none",
        " v=spf1 mx -all",
    ]
    assert spf_records(txts) == [
        "v=spf1 -all",
        "V=SPF1 ip4:192.0.2.0/24 ~all",
        "v=spf1",
        " v=spf1 mx -all",
    ]


def test_tags_are_read_in_order_with_whitespace_dropped() -> None:
    assert parse_tags(" v=DMARC1 ;p = reject; rua=mailto:a@x.example,mailto:b@x.example; ") == [
        ("v", "DMARC1"),
        ("p", "reject"),
        ("rua", "mailto:a@x.example,mailto:b@x.example"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v=DMARC1; p", "'p' is not tag=value"),
        ("v=DMARC1; p=none; p=reject", "tag p= appears twice"),
        ("v=DMARC1; =x", "'=x' is not tag=value"),
    ],
)
def test_broken_tag_lists_name_the_part(text: str, message: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_tags(text)
    assert str(caught.value) == message


def test_a_dmarc_record_parses() -> None:
    record = parse_dmarc("v=DMARC1; p=Quarantine; sp=reject; pct=50; rua=mailto:d@x.example")
    assert record == DmarcRecord("quarantine", "reject", 50, ("mailto:d@x.example",))


def test_a_dmarc_record_defaults_pct_and_has_no_sp() -> None:
    assert parse_dmarc("v=DMARC1;p=none") == DmarcRecord("none")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p=reject; v=DMARC1", "does not start with v=DMARC1"),
        ("v=DMARC2; p=reject", "does not start with v=DMARC1"),
        ("v=DMARC1; rua=mailto:d@x.example", "has no p= tag"),
        ("v=DMARC1; p=discard", "p=discard is not one of none, quarantine, reject"),
        ("v=DMARC1; p=none; sp=block", "sp=block is not one of none, quarantine, reject"),
        ("v=DMARC1; p=none; pct=150", "pct=150 is not a number from 0 to 100"),
        ("v=DMARC1; p=none; pct=half", "pct=half is not a number from 0 to 100"),
    ],
)
def test_a_broken_dmarc_record_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_dmarc(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=DMARC1; p=none", True),
        ("v = DMARC1;p=none", True),
        ("v=DMARC1", True),
        ("v=dmarc1; p=none", False),
        ("p=none; v=DMARC1", False),
        ("v=spf1 -all", False),
    ],
)
def test_dmarc_records_are_told_apart_by_their_first_tag(text: str, expected: bool) -> None:
    assert is_dmarc(text) is expected


def test_a_tls_rpt_record_parses_with_both_schemes() -> None:
    record = parse_tlsrpt("v=TLSRPTv1; rua=mailto:tls@x.example, https://reports.x.example/tls")
    assert record == TlsRptRecord(("mailto:tls@x.example", "https://reports.x.example/tls"))
    assert is_tlsrpt("v=TLSRPTv1;rua=mailto:a@x.example")
    assert not is_tlsrpt("v=TLSRPTv2; rua=mailto:a@x.example")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rua=mailto:a@x.example; v=TLSRPTv1", "does not start with v=TLSRPTv1"),
        ("v=TLSRPTv1", "has no rua= tag"),
        ("v=TLSRPTv1; rua=", "rua= is empty"),
        (
            "v=TLSRPTv1; rua=http://x.example/r",
            "rua URI 'http://x.example/r' is not mailto: or https:",
        ),
        ("v=TLSRPTv1; rua=mailto:", "rua URI 'mailto:' is not mailto: or https:"),
    ],
)
def test_a_broken_tls_rpt_record_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_tlsrpt(text)
    assert str(caught.value) == message


def test_dnsbl_names_reverse_octets_and_nibbles() -> None:
    assert dnsbl_name("127.0.0.2", "zen.example.") == "2.0.0.127.zen.example"
    assert dnsbl_name("2001:db8::1", "bl.example") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
    )
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        dnsbl_name("mail.example", "bl.example")


@pytest.mark.parametrize(
    ("answer", "listing", "error"),
    [
        ("127.0.0.2", True, False),
        ("127.0.0.10", True, False),
        ("127.255.255.254", False, True),
        ("127.255.255.252", False, True),
        ("192.0.2.1", False, False),
        ("not-an-ip", False, False),
    ],
)
def test_dnsbl_answers_are_listings_or_error_codes(answer: str, listing: bool, error: bool) -> None:
    assert (dnsbl_listing(answer), dnsbl_error_code(answer)) == (listing, error)
