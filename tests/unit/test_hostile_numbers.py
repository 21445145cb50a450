"""Numbers a stranger writes: "²" is a digit to ``str.isdigit`` and not to ``int()``.

Found by the property tests (tests/property): every parser that checked
``isdigit()`` and then called ``int()`` raised ``ValueError`` on a
superscript or other non-ASCII digit, and on more than 4,300 ASCII digits
(``int()``'s limit), instead of reporting the value as unreadable.
"""

from __future__ import annotations

import asyncio

import pytest

from smtp_probe.oauth.command import _number
from smtp_probe.oauth.generic import _fetched
from smtp_probe.probe.dns_records import RecordError, parse_dmarc
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.mta_sts import MtaStsError, parse_policy
from smtp_probe.probe.smuggling import _Replies

HOSTILE = [
    pytest.param(text, id=name)
    for name, text in (("superscript", "²"), ("arabic-indic", "٣٣"), ("5000-digits", "9" * 5000))
]


@pytest.mark.parametrize("sent", HOSTILE)
def test_a_token_whose_time_is_not_ascii_digits_is_not_ours(sent: str) -> None:
    signer = TokenSigner(b"k" * 32)
    real = signer.new("probe")
    assert signer.verify("probe", str(real)) == real
    assert signer.verify("probe", f"{sent}-{real.run_id}-{real.signature}") is None


@pytest.mark.parametrize("max_age", ["²", "٣٣"])
def test_an_mta_sts_max_age_of_other_digits_is_a_policy_error(max_age: str) -> None:
    with pytest.raises(MtaStsError, match="max_age"):
        parse_policy(f"version: STSv1\nmode: none\nmax_age: {max_age}\n", domain="d", policy_id="1")


@pytest.mark.parametrize("pct", HOSTILE)
def test_a_dmarc_pct_of_other_digits_is_a_record_error(pct: str) -> None:
    assert parse_dmarc("v=DMARC1; p=none; pct=0100").pct == 100
    with pytest.raises(RecordError, match="pct"):
        parse_dmarc(f"v=DMARC1; p=none; pct={pct}")


def test_a_smuggling_reply_with_other_digits_is_shown_under_code_0() -> None:
    async def read() -> list[tuple[int, str] | None]:
        replies = _Replies()
        replies.data_received("²²² ok\r\n250 ok\r\n".encode())
        replies.eof_received()
        return [await replies.reply(1.0) for _ in range(3)]

    assert asyncio.run(read()) == [(0, "²²² ok"), (250, "ok"), None]


@pytest.mark.parametrize("expires_in", HOSTILE)
def test_a_token_endpoint_expiry_of_other_digits_is_no_expiry(expires_in: str) -> None:
    fetched = _fetched({"access_token": "t", "expires_in": expires_in}, 200)
    assert fetched.expires_at is None
    assert _fetched({"access_token": "t", "expires_in": "60"}, 200).expires_at is not None


def test_a_token_command_expiry_of_other_digits_is_no_number() -> None:
    assert _number("²") is None
    assert _number("60") == 60.0


@pytest.mark.parametrize(
    "record", ["v=DMARC1; p=a\nb", "v=DMARC1; p=none; sp=x\r\ny", "v=DMARC1; p=none; pct=1\n2"]
)
def test_a_dmarc_error_is_one_printable_line(record: str) -> None:
    # Also found by tests/property: the raw value went into the message, and a
    # line break in a TXT record started a line of its own in the transcript.
    with pytest.raises(RecordError) as caught:
        parse_dmarc(record)
    assert str(caught.value).isprintable()
