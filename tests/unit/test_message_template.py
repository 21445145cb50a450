"""The per-probe message template makes what build_message makes, for every kind of probe."""

from __future__ import annotations

import email
import email.policy
import re
import time
from email.utils import parsedate_to_datetime

import pytest

from smtp_probe.probe.message import (
    PROBE_HEADER,
    MessageTemplate,
    OutgoingMessage,
    Token,
    TokenSigner,
    _message_id_field,
    build_message,
    outgoing,
    template,
)

SIGNER = TokenSigner(b"k" * 32)
_VARYING = (b"date", b"message-id")

CASES = [
    ("route-a", "probe@example.test", "sink@example.test", False),
    ("route-a", "probe@example.test", "reflector@example.test", True),
    ("p", "a@b.c", "d@e.f", False),
    ("x" * 70, "probe@example.test", "sink@example.test", False),
    ("with space and: colon", "probe@example.test", "sink@example.test", False),
    ("m365-eu-west/primary", "probe@" + "d" * 50 + ".example", "sink@example.test", False),
    ("m365", "probe@" + "d" * 58 + ".ex", "sink@example.test", False),
    ("m365", "probe@" + "d" * 59 + ".ex", "sink@example.test", False),
    ("zürich-primär", "probe@example.test", "sink@example.test", False),
    ("zürich", "prøbe@exämple.test", "sïnk@example.test", False),
    ("東京", "пример@пример.рф", "sink@example.test", True),
    ("route", "probe@example.test", "用户@例子.广告", False),
]


def fields(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The header fields as (lower-case name, whole field with its folding), and the body."""
    head, _, body = data.partition(b"\r\n\r\n")
    found = []
    for field in re.split(rb"\r\n(?![ \t])", head):
        found.append((field.partition(b":")[0].lower(), field))
    return found, body


def expected(token: Token, probe: str, mail_from: str, rcpt_to: str, reflector: bool) -> bytes:
    return outgoing(
        build_message(
            token=token, probe=probe, mail_from=mail_from, rcpt_to=rcpt_to, reflector=reflector
        )
    ).data


@pytest.mark.parametrize(("probe", "mail_from", "rcpt_to", "reflector"), CASES)
def test_template_output_is_build_message_output_but_for_date_and_message_id(
    probe: str, mail_from: str, rcpt_to: str, reflector: bool
) -> None:
    token = SIGNER.new(probe)
    made = template(probe, mail_from, rcpt_to, reflector).render(token)
    want = expected(token, probe, mail_from, rcpt_to, reflector)

    got_fields, got_body = fields(made.data)
    want_fields, want_body = fields(want)
    assert got_body == want_body
    assert [name for name, _ in got_fields] == [name for name, _ in want_fields]
    for (name, got), (_, wanted) in zip(got_fields, want_fields, strict=True):
        if name not in _VARYING:
            assert got == wanted, name
    assert b"\n" not in made.data.replace(b"\r\n", b"")
    assert made.data.endswith(b"\r\n")
    assert (
        made.utf8
        == outgoing(
            build_message(token=token, probe=probe, mail_from=mail_from, rcpt_to=rcpt_to)
        ).utf8
    )


@pytest.mark.parametrize(("probe", "mail_from", "rcpt_to", "reflector"), CASES)
def test_template_date_and_message_id_are_fresh_and_folded_as_the_email_package_folds_them(
    probe: str, mail_from: str, rcpt_to: str, reflector: bool
) -> None:
    token = SIGNER.new(probe)
    made = template(probe, mail_from, rcpt_to, reflector).render(token)
    policy = email.policy.SMTPUTF8 if made.utf8 else email.policy.SMTP
    parsed = email.message_from_bytes(made.data, policy=email.policy.default)

    sent = parsedate_to_datetime(str(parsed["Date"]))
    assert abs(sent.timestamp() - time.time()) < 5
    message_id = str(parsed["Message-ID"]).strip()
    assert message_id.startswith("<")
    assert message_id.endswith(f".{token.run_id}@{mail_from.rpartition('@')[2]}>")
    [folded] = [field for name, field in fields(made.data)[0] if name == b"message-id"]
    assert folded + b"\r\n" == policy.fold_binary("Message-ID", message_id)
    other = template(probe, mail_from, rcpt_to, reflector).render(SIGNER.new(probe))
    assert email.message_from_bytes(other.data)["Message-ID"] != message_id


@pytest.mark.parametrize(("probe", "mail_from", "rcpt_to", "reflector"), CASES)
def test_template_output_parses_to_the_same_headers_and_body(
    probe: str, mail_from: str, rcpt_to: str, reflector: bool
) -> None:
    token = SIGNER.new(probe)
    made = template(probe, mail_from, rcpt_to, reflector).render(token)
    want = expected(token, probe, mail_from, rcpt_to, reflector)

    got = email.message_from_bytes(made.data, policy=email.policy.default)
    wanted = email.message_from_bytes(want, policy=email.policy.default)
    assert got.keys() == wanted.keys()
    for key in wanted:
        if key.lower() not in ("date", "message-id"):
            assert str(got[key]) == str(wanted[key]), key
    assert got.get_content() == wanted.get_content()
    assert SIGNER.verify(probe, str(got[PROBE_HEADER])) == token
    built = build_message(
        token=token, probe=probe, mail_from=mail_from, rcpt_to=rcpt_to, reflector=reflector
    )
    assert made.subject == str(built["Subject"])


@pytest.mark.parametrize(
    ("policy", "char"),
    [
        (email.policy.SMTP, "a"),
        (email.policy.SMTPUTF8, "a"),
        (email.policy.SMTPUTF8, "ä"),
        (email.policy.SMTPUTF8, "東"),
    ],
)
def test_message_id_folding_matches_the_email_package_for_every_length(
    policy: email.policy.Policy, char: str
) -> None:
    for length in range(20, 130):
        value = f"<1.{char * length}@x.y>"
        assert _message_id_field(value).encode() == policy.fold_binary("Message-ID", value), length


def test_common_probes_use_the_fast_path() -> None:
    for probe, mail_from, rcpt_to, reflector in CASES[:8]:
        assert MessageTemplate(
            probe=probe, mail_from=mail_from, rcpt_to=rcpt_to, reflector=reflector
        ).usable, probe


def test_a_token_of_another_length_is_built_by_build_message() -> None:
    token = Token(12345, "0123456789abcdef", "a" * 32)
    made = template("route-a", "probe@example.test", "sink@example.test").render(token)

    assert isinstance(made, OutgoingMessage)
    parsed = email.message_from_bytes(made.data, policy=email.policy.default)
    assert str(parsed[PROBE_HEADER]) == str(token)
    assert str(token) in str(parsed["Subject"])
