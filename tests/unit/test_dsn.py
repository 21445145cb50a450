"""The DSN parser and xtext: real Postfix reports, Exchange and Gmail shapes, garbage.

``postfix-*.eml`` are real reports from the MailStack's Postfix 3.7 (a
``BOUNCE`` recipient refused by Dovecot's LMTP, and an ``OUTAGE`` one with
``delay_warning_time``), to a message sent with ``RET=HDRS ENVID=<run id>``
and signed with ``KEY`` for probe ``e2e``. The Exchange Online and Gmail
ones are written after the shape of theirs (multipart/alternative or
related first part, ``5.1.10``, ``message/rfc822``); ``@TOKEN@`` and
``@RUNID@`` are filled in per test.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from smtp_probe.probe.dsn import DeliveryReport, parse_report
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.smtp import xtext

HERE = Path(__file__).parent / "dsn"
KEY = b"k" * 32


def fixture(name: str, token: str = "", run_id: str = "") -> bytes:
    raw = (HERE / name).read_bytes()
    return raw.replace(b"@TOKEN@", token.encode()).replace(b"@RUNID@", run_id.encode())


def report(raw: bytes) -> DeliveryReport:
    parsed = parse_report(raw)
    assert parsed is not None
    return parsed


def test_real_postfix_failed_report() -> None:
    parsed = report(fixture("postfix-failed.eml"))

    assert parsed.envelope_id == "d4b453fc6918b49e"
    assert parsed.reporting_mta == "mx.example.test"
    [rcpt] = parsed.recipients
    assert rcpt.action == "failed"
    assert rcpt.status == "5.1.1"
    assert rcpt.recipient == "bounce@example.test"
    assert rcpt.remote_mta == "mx.example.test"
    assert rcpt.diagnostic == (
        "smtp; 550 5.1.1 <bounce@example.test> User doesn't exist: bounce@example.test"
    )
    assert parsed.worst is rcpt
    assert parsed.token is not None
    token = TokenSigner(KEY).verify("e2e", parsed.token)
    assert token is not None
    assert token.run_id == parsed.envelope_id


def test_real_postfix_delayed_report() -> None:
    parsed = report(fixture("postfix-delayed.eml"))

    [rcpt] = parsed.recipients
    assert (rcpt.action, rcpt.status, rcpt.remote_mta) == ("delayed", "4.4.1", None)
    assert rcpt.diagnostic is not None
    assert "Connection refused" in rcpt.diagnostic
    assert parsed.token is not None
    assert TokenSigner(KEY).verify("e2e", parsed.token) is not None


def test_exchange_shape_three_digit_status_and_rfc822_headers() -> None:
    token = TokenSigner(KEY).new("e2e")
    parsed = report(fixture("exchange-failed.eml", str(token), token.run_id))

    assert parsed.envelope_id == token.run_id
    assert parsed.reporting_mta == "AM9PR01MB1234.eurprd01.prod.outlook.com"
    [rcpt] = parsed.recipients
    assert (rcpt.action, rcpt.status, rcpt.recipient) == ("failed", "5.1.10", "nobody@contoso.com")
    assert rcpt.diagnostic is not None
    assert rcpt.diagnostic.startswith("smtp;550 5.1.10 RESOLVER")
    assert parsed.token == str(token)


def test_gmail_shape_returned_whole_message() -> None:
    token = TokenSigner(KEY).new("e2e")
    parsed = report(fixture("gmail-failed.eml", str(token)))

    assert parsed.envelope_id is None
    [rcpt] = parsed.recipients
    assert (rcpt.action, rcpt.status) == ("failed", "5.1.1")
    assert rcpt.remote_mta is not None
    assert rcpt.remote_mta.startswith("mx.example.org.")
    assert parsed.token == str(token)


def test_token_found_in_the_returned_subject_when_the_header_was_dropped() -> None:
    token = TokenSigner(KEY).new("e2e")
    raw = fixture("exchange-failed.eml", str(token), token.run_id)
    raw = raw.replace(f"X-Smtp-Probe: {token}\r\n".encode(), b"")

    assert report(raw).token == str(token)


def test_base64_status_and_headers_parts_are_decoded() -> None:
    status = (
        b"Reporting-MTA: dns; mx.example.test\r\nOriginal-Envelope-Id: abc+2Bdef\r\n\r\n"
        b"Final-Recipient: rfc822; x@example.test\r\nAction: failed\r\nStatus: 5.2.2\r\n"
    )
    headers = b"Subject: hello\r\nX-Smtp-Probe: 1-aaaaaaaaaaaaaaaa-" + b"b" * 32 + b"\r\n"
    raw = (
        b'Content-Type: multipart/report; report-type="delivery-status"; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(status)
        + b"--B\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(headers)
        + b"--B--\r\n"
    )
    parsed = report(raw)

    assert parsed.envelope_id == "abc+def"
    assert [(r.action, r.status) for r in parsed.recipients] == [("failed", "5.2.2")]
    assert parsed.token == "1-aaaaaaaaaaaaaaaa-" + "b" * 32


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(range(256)) * 4, id="binary"),
        pytest.param(b"Subject: hi\r\n\r\nhello\r\n", id="plain-mail"),
        pytest.param(
            b'Content-Type: multipart/report; report-type=disposition-notification; boundary="B"'
            b"\r\n\r\n--B\r\nContent-Type: message/disposition-notification\r\n\r\nx: y\r\n--B--\r\n",
            id="read-receipt",
        ),
        pytest.param(
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
            b"--B\r\nContent-Type: text/plain\r\n\r\nno status part\r\n--B--\r\n",
            id="no-status-part",
        ),
        pytest.param(
            b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary\r\n",
            id="no-boundary",
        ),
        pytest.param(
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
            b"--B\r\nContent-Type: message/delivery-status\r\n\r\n--B--\r\n",
            id="empty-status-part",
        ),
    ],
)
def test_anything_else_is_not_a_report_and_never_raises(raw: bytes) -> None:
    assert parse_report(raw) is None


def test_garbled_fields_are_left_empty() -> None:
    raw = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: x\r\n\r\n"
        b"Final-Recipient: ;\r\nAction: exploded\r\nStatus: 9.9.9 nonsense\r\n"
        b"Diagnostic-Code: " + b"A" * 5000 + b"\r\n--B--\r\n"
    )
    parsed = report(raw)

    [rcpt] = parsed.recipients
    assert (rcpt.action, rcpt.status, rcpt.recipient) == ("", "", None)
    assert rcpt.diagnostic is not None
    assert len(rcpt.diagnostic) == 500
    assert parsed.token is None
    assert parsed.worst is rcpt


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("1764322545123-9f2c4e1ab07d5c33", "1764322545123-9f2c4e1ab07d5c33"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("sp ace\x7f", "sp+20ace+7F"),
        ("é", "+C3+A9"),
    ],
)
def test_xtext(text: str, encoded: str) -> None:
    assert xtext(text) == encoded


def test_a_report_cut_anywhere_or_mangled_never_raises() -> None:
    """What a partial FETCH (the first 256 KiB) or a broken server hands over."""
    raw = fixture("postfix-failed.eml")
    results = [parse_report(raw[:end]) for end in range(0, len(raw), 37)]
    results += [parse_report(raw.replace(b"\n", b"\r", count)) for count in (1, 50, 500)]
    results += [parse_report(raw.replace(b"--", b"")), parse_report(raw.replace(b":", b""))]

    assert results[0] is None
    cut_after_status = raw.index(b"Content-Description: Undelivered Message Headers")
    parsed = parse_report(raw[:cut_after_status])
    assert parsed is not None
    assert [r.status for r in parsed.recipients] == ["5.1.1"]
    assert parsed.token is None, "no returned headers, no token: nothing to believe"
