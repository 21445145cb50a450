"""Parsers of what strangers send never raise, and finish in bounded time.

Each parser here reads text a foreign server or a foreign message wrote:
``Received`` chains, ``Authentication-Results`` and spam headers, delivery
reports, Subjects and dates, the headers the IMAP watcher fetches, DNS TXT
records, MTA-STS policies and SMTP replies. They get arbitrary text and
bytes (invalid UTF-8, control characters, RFC 2047 garbage), adversarial
shapes (headers of hundreds of kilobytes, thousands of unclosed comments, deeply nested
MIME) and a 10 MB message. A parser documented as raising may raise only
its own error type; the rest must return. The profile's per-example
deadline (tests/property/conftest.py) turns a super-linear regex or loop
into a failure.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_probe.probe import (
    dns_records,
    dsn,
    hops,
    imap_session,
    message,
    mta_sts,
    smtp,
    smuggling,
)
from smtp_probe.probe.result import Verdicts
from smtp_probe.probe.verdicts import VERDICT_HEADERS, read_verdicts

# ------------------------------------------------------------------------ strategies

_PIECES = (
    "from", "by", "with", "id", "for", "via", "tls", ";", "(", ")", "((", "))", " ", "\t",
    "\r\n", "\r\n ", "\n", "\x00", "\x1b[31m", "\u202e", "\ufeff", "=?", "?=", "=?utf-8?q?",
    "=?utf-8?b?", "=?x-unknown?q?a?=", "=?utf-8?b?////?=", "=?utf-8?q?=FF=FE?=", "?q?", "?b?",
    "ESMTPS", "using TLSv1.3", "version=TLS1_2", "Mon, 7 Dec 2026 02:50:37 +0000",
    "Fri, 31 Dec 9999 23:59:59 -9999", "0000", "-", "=", "/", "[", "]", "<", ">", "@", ":",
    "smtp-probe", "Re: ", "1764322545123-9f2c4e1ab07d5c33-", "0123456789abcdef" * 2,
    "spf=pass", "dkim=fail", "header.d=example.com", "smtp.mailfrom=", "reason=\"",
    "score=", "required=", "[", "/", "1.5", "-", "9" * 400, "queued as ", "id=", "throttl",
    "too many ", "4.3.2", "v=DMARC1", "v=TLSRPTv1", "p=reject", "rua=", "mailto:", "mx: ",
    "version: STSv1", "mode: enforce", "max_age: ", "*.", "é", "回复", "²", "٣",
)  # fmt: skip
hostile_text = st.lists(st.sampled_from(_PIECES) | st.text(max_size=20), max_size=40).map(
    "".join
) | st.text(max_size=400)
"""Text built from the pieces the parsers look for, glued with arbitrary text."""

huge_text = st.sampled_from(
    [
        "(" * 20_000,
        "(" * 10_000 + ")" * 10_000,
        "from " * 10_000,
        "with " * 10_000 + ";",
        ";" * 20_000,
        "=?utf-8?q?" * 20_000,
        "=?utf-8?b?" + "A" * 50_000 + "?=",
        "smtp-probe " * 20_000,
        "smtp-probe x " + "0" * 50_000,
        "smtp-probe " + "a" * 50_000 + " 1-" + "0" * 16 + "-",
        "a" * 100_000,
        " " * 100_000,
        "\t\r\n " * 20_000,
        "[" + "1" * 50_000 + "/",
        "score=" + "9" * 50_000,
        "queued as " + "a" * 50_000,
        "id=" + "a" * 50_000 + " ",
        "too many " * 10_000,
        "a=" * 20_000,
        "mx: x\n" * 10_000,
        "\x00\xff\ud7ff" * 10_000,
    ]
)
"""Shapes that are linear to read and quadratic (or worse) to a careless regex."""

any_text = hostile_text | huge_text

numbers = st.sampled_from(
    ["0", "100", "0100", "86400", "-1", "1e3", " 7", "²", "²²²", "٣٣٣", "9" * 5000]
)
"""What a field meant to be a number may hold: "²" and "٣" are digits to ``str.isdigit``,
and 5,000 ASCII digits are more than ``int()`` reads."""
_hex = st.text(alphabet="0123456789abcdefABCDEF", min_size=0, max_size=34)
token_shaped = st.tuples(numbers | st.text(max_size=18), _hex, _hex).map("-".join)
"""``SENT-RUNID-SIGNATURE`` with every part possibly wrong."""
mta_sts_policies = st.tuples(
    st.sampled_from(["none", "testing", "enforce", "²"]),
    numbers,
    st.lists(
        st.sampled_from(["mx.example.test", "*.example.test", "", "*"]) | hostile_text, max_size=3
    ),
).map(
    lambda p: (
        f"version: STSv1\nmode: {p[0]}\nmax_age: {p[1]}\n" + "".join(f"mx: {m}\n" for m in p[2])
    )
)
dns_txt_records = numbers.map(lambda n: f"v=DMARC1; p=none; pct={n}") | st.tuples(
    st.sampled_from(["v=DMARC1; p=none", "v=DMARC1; p=reject; sp=none", "v=TLSRPTv1"]),
    st.sampled_from(["pct", "rua", "sp", "p"]),
    numbers | hostile_text,
).map(lambda p: f"{p[0]}; {p[1]}={p[2]}")

received_chains = st.tuples(
    st.lists(hostile_text, max_size=6), st.lists(huge_text, max_size=1)
).map(lambda pair: pair[0] + pair[1])
"""Up to six ordinary-sized headers and at most one huge one (a list of huge ones only costs time)."""


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


hostile_bytes = (
    st.binary(max_size=2000)
    | any_text.map(_encode)
    | st.tuples(any_text, st.binary(max_size=50)).map(lambda p: _encode(p[0]) + p[1])
)


@st.composite
def mime_message(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A MIME message (DSN-shaped or not), nested, with broken parts and encodings."""
    kind = draw(
        st.sampled_from(
            [
                "multipart/report; report-type=delivery-status",
                "multipart/report; report-type=global-delivery-status",
                "multipart/mixed",
                "message/delivery-status",
                "message/rfc822",
                "text/rfc822-headers",
                "text/plain",
                "multipart/report",
            ]
        )
    )
    encoding = draw(st.sampled_from(["", "base64", "quoted-printable", "8bit", "x-garbage"]))
    boundary = draw(st.sampled_from(["b", "", "=_", "b" * 200]))
    headers = [f'Content-Type: {kind}; boundary="{boundary}"']
    if encoding:
        headers.append(f"Content-Transfer-Encoding: {encoding}")
    headers.extend(
        f"{draw(st.sampled_from(['Subject', 'X-Smtp-Probe', 'Status', 'Action', 'Final-Recipient', 'Original-Envelope-Id', 'Received', 'Diagnostic-Code']))}: {draw(hostile_text)}"
        for _ in range(draw(st.integers(0, 4)))
    )
    head = "\r\n".join(headers).encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    if kind.startswith("multipart") and depth < 6:
        parts = draw(st.lists(mime_message(depth + 1) | hostile_bytes, max_size=3))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
        body += draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b""]))
    else:
        body = draw(hostile_bytes)
    return head + body


def _nested(depth: int) -> bytes:
    """A report whose first part is ``depth`` multiparts deep (boundaries all different)."""
    head = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b0\r\n\r\n"
    opening = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth + 1)))
    return head + opening + closing


adversarial_messages = st.sampled_from(
    [
        _nested(200),
        _nested(600),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        + b"--b\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n\r\n" * 20_000,
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        + b"--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"!!!!" * 10_000,
        b"Subject: " + b"=?utf-8?q?" * 10_000 + b"\r\n\r\n",
        b"Received: " + b"(" * 50_000 + b"\r\n\r\n",
        b"X-Long: " + b"a" * 200_000 + b"\r\n\r\n",
        b"\xff\xfe\x00" * 30_000,
        b"\r\n" * 50_000,
    ]
)


# ---------------------------------------------------------------------------- tests


@given(received_chains)
def test_received_chain_never_raises(received: list[str]) -> None:
    parsed = hops.parse_hops(received)
    assert len(parsed) == len(received)
    for hop in parsed:
        for value in (hop.by, hop.from_, hop.with_):
            assert value is None or (len(value) <= hops.MAX_VALUE and value.isprintable())
        assert hop.delay_seconds is None or hop.delay_seconds >= 0


_VERDICT_NAMES = st.sampled_from([*VERDICT_HEADERS, "Received", "authentication-results "])


@given(st.lists(st.tuples(_VERDICT_NAMES, any_text), max_size=6), st.none() | hostile_text)
def test_verdicts_never_raise(headers: list[tuple[str, str]], authserv_id: str | None) -> None:
    verdicts = read_verdicts(headers, authserv_id)
    assert isinstance(verdicts, Verdicts)


@given(st.one_of(token_shaped, any_text))
def test_subject_and_date_helpers_never_raise(text: str) -> None:
    decoded = message.decode_subject(text)
    assert "  " not in decoded
    assert decoded == decoded.strip()
    parsed = message.parse_subject(decoded)
    assert parsed is None or parsed.token == parsed.token.lower()
    when = message.header_date(text)
    assert when is None or when.tzinfo is not None
    assert message.TokenSigner(b"k" * 32).verify("probe", text) is None
    assert isinstance(message.token_key(text), str)


# The stdlib parser takes ~0.2 s on 600 nested multiparts (then gives up): bounded, but slow.
@settings(deadline=timedelta(seconds=5))
@given(st.one_of(mime_message(), hostile_bytes, adversarial_messages))
def test_delivery_report_parser_never_raises(raw: bytes) -> None:
    report = dsn.parse_report(raw)
    assert report is None or isinstance(report, dsn.DeliveryReport)
    if report is not None:
        assert all(len(r.diagnostic or "") <= 500 for r in report.recipients)


@settings(max_examples=3, deadline=timedelta(seconds=30))
@given(st.sampled_from([b"a", b"\xff", b"=?x?"]))
def test_ten_megabyte_message_is_read_in_bounded_time(filler: bytes) -> None:
    body = (filler * 99 + b"\r\n") * (10 * 1024 * 1024 // 101)
    raw = b"From: x@example.test\r\nSubject: hi\r\n\r\n" + body
    assert len(raw) >= 10_000_000
    assert dsn.parse_report(raw) is None
    report_shaped = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Status: 5.1.1\r\nAction: failed\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
        + raw
        + b"\r\n--b--\r\n"
    )
    report = dsn.parse_report(report_shaped)
    assert report is not None
    assert report.worst is not None
    assert report.worst.status == "5.1.1"
    fetched = imap_session.parse_fetched(
        1, {b"BODY[HEADER.FIELDS (X-SMTP-PROBE RECEIVED)]": raw[: 1024 * 1024] + body}
    )
    assert fetched.uid == 1


@given(
    st.integers(1, 2**32),
    st.one_of(mime_message(), hostile_bytes, adversarial_messages),
    st.sampled_from(
        [b"BODY[HEADER.FIELDS (X-SMTP-PROBE RECEIVED)]", b"BODY[HEADER.FIELDS (RECEIVED)]", b"X"]
    ),
    st.none() | st.datetimes() | st.binary(max_size=10),
)
def test_fetched_headers_never_raise(
    uid: int, raw: bytes, key: bytes, internaldate: datetime | bytes | None
) -> None:
    fetched = imap_session.parse_fetched(uid, {key: raw, b"INTERNALDATE": internaldate})
    assert fetched.uid == uid
    assert fetched.date is None or fetched.date.tzinfo is not None
    for received in fetched.received:
        hops.parse_hops([received])
    read_verdicts(fetched.verdict_headers, "mx.example.test")
    message.parse_subject(fetched.subject)


@given(st.lists(any_text, max_size=5), st.one_of(dns_txt_records, any_text), st.text(max_size=30))
def test_dns_record_parsers_raise_only_record_error(
    txts: list[str], text: str, address: str
) -> None:
    dns_records.spf_records(txts)
    errors: list[str] = []
    for parse, check in (
        (dns_records.parse_dmarc, dns_records.is_dmarc),
        (dns_records.parse_tlsrpt, dns_records.is_tlsrpt),
        (dns_records.parse_tags, None),
    ):
        if check is not None:
            check(text)
        try:
            parse(text)
        except dns_records.RecordError as exc:
            errors.append(str(exc))
    # RecordError's contract: "the message says what is wrong, in one line".
    assert all(error and error.isprintable() for error in errors), errors
    dns_records.dnsbl_listing(address)
    dns_records.dnsbl_error_code(address)
    with contextlib.suppress(ValueError):  # documented: not an IP address
        dns_records.dnsbl_name(address, text)


@settings(max_examples=150)  # cheap: mostly small policies
@given(st.one_of(mta_sts_policies, any_text), st.text(max_size=60))
def test_mta_sts_policy_raises_only_its_error(text: str, host: str) -> None:
    try:
        policy = mta_sts.parse_policy(text, domain="example.test", policy_id="1")
    except mta_sts.MtaStsError:
        return
    assert policy.max_age <= mta_sts.MAX_AGE_LIMIT
    policy.matches(host)
    policy.describe()


@given(any_text, st.none() | st.integers(-1000, 1000))
def test_smtp_reply_helpers_never_raise(reply: str, code: int | None) -> None:
    queue_id = smtp.parse_queue_id(reply)
    assert queue_id is None or queue_id in reply
    throttled = smtp.is_throttling(code, reply)
    assert not throttled or (code is not None and 400 <= code < 500)


@given(st.lists(hostile_bytes | numbers.map(lambda n: _encode(n) + b" ok\r\n"), max_size=5))
def test_smuggling_reply_reader_never_raises(chunks: list[bytes]) -> None:
    replies = smuggling._Replies()
    for chunk in chunks:
        replies.data_received(chunk)
    while (reply := replies._take()) is not None:
        code, _ = reply
        assert 0 <= code <= 999


@given(huge_text)
def test_every_text_parser_reads_every_huge_shape(text: str) -> None:
    # A small finite strategy: Hypothesis runs every shape (the random tests
    # above may not draw each), so each parser meets each shape on every run.
    hops.parse_hops([text])
    read_verdicts([(name, text) for name in VERDICT_HEADERS], text)
    message.parse_subject(message.decode_subject(text))
    message.header_date(text)
    message.TokenSigner(b"k" * 32).verify("probe", text)
    smtp.parse_queue_id(text)
    smtp.is_throttling(421, text)
    dns_records.spf_records([text])
    for parse in (dns_records.parse_dmarc, dns_records.parse_tlsrpt):
        with contextlib.suppress(dns_records.RecordError):
            parse(text)
    with contextlib.suppress(mta_sts.MtaStsError):
        mta_sts.parse_policy(text, domain="example.test", policy_id="1")
    raw = _encode(text)
    dsn.parse_report(b"Subject: " + raw + b"\r\nReceived: " + raw + b"\r\n\r\n" + raw)
    imap_session.parse_fetched(1, {b"BODY[HEADER.FIELDS (RECEIVED)]": b"Received: " + raw})
