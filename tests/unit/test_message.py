"""Signed run tokens and the probe message built around them."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

import pytest

from smtp_probe.probe.message import PROBE_HEADER, Token, TokenSigner, build_message, token_key

KEY = b"k" * 32
SENDER = "probe@sender.example"
RECIPIENT = "sink@rcpt.example"


def test_token_verifies_for_its_probe_with_the_same_key() -> None:
    token = TokenSigner(KEY).new("route-a")
    assert TokenSigner(KEY).verify("route-a", str(token)) == token


def test_token_verifies_with_surrounding_whitespace_and_upper_case_signature() -> None:
    token = TokenSigner(KEY).new("route-a")
    text = f"  {token.key}-{token.signature.upper()}\r\n"
    assert TokenSigner(KEY).verify("route-a", text) == token


def test_token_does_not_verify_for_another_probe() -> None:
    token = TokenSigner(KEY).new("route-a")
    assert TokenSigner(KEY).verify("route-b", str(token)) is None


def test_token_does_not_verify_with_another_key() -> None:
    token = TokenSigner(KEY).new("route-a")
    assert TokenSigner(b"x" * 32).verify("route-a", str(token)) is None


def test_tokens_of_signers_without_a_key_verify_only_in_their_own_signer() -> None:
    signer = TokenSigner()
    token = signer.new("route-a")
    assert signer.verify("route-a", str(token)) == token
    assert TokenSigner().verify("route-a", str(token)) is None


def _flip_hex(text: str) -> str:
    return ("0" if text[0] != "0" else "1") + text[1:]


def test_token_with_a_tampered_run_id_does_not_verify() -> None:
    token = TokenSigner(KEY).new("route-a")
    forged = Token(token.sent_ms, _flip_hex(token.run_id), token.signature)
    assert TokenSigner(KEY).verify("route-a", str(forged)) is None


def test_token_with_a_tampered_time_does_not_verify() -> None:
    token = TokenSigner(KEY).new("route-a")
    forged = Token(token.sent_ms + 1, token.run_id, token.signature)
    assert TokenSigner(KEY).verify("route-a", str(forged)) is None


def test_token_with_a_tampered_signature_does_not_verify() -> None:
    token = TokenSigner(KEY).new("route-a")
    forged = Token(token.sent_ms, token.run_id, _flip_hex(token.signature))
    assert TokenSigner(KEY).verify("route-a", str(forged)) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "1-2-3",
        "a-b-c",
        "1764322545123-9f2c4e1ab07d5c33",
        "1764322545123-9f2c4e1ab07d5c33-short",
        "x1764322545123-9f2c4e1ab07d5c33-" + "0" * 32,
        "1764322545123-9f2c4e1ab07d5c33-" + "0" * 32 + "-extra",
    ],
)
def test_garbage_strings_do_not_verify(text: str) -> None:
    assert TokenSigner(KEY).verify("route-a", text) is None


def test_tokens_are_unique_even_at_the_same_instant() -> None:
    signer = TokenSigner(KEY)
    tokens = {str(signer.new("route-a", now=1_700_000_000.0)) for _ in range(200)}
    assert len(tokens) == 200


def test_token_carries_its_send_time_in_milliseconds() -> None:
    token = TokenSigner(KEY).new("route-a", now=1_700_000_000.123)
    assert token.sent_ms == 1_700_000_000_123
    assert str(token).startswith("1700000000123-")


def test_token_uses_only_letters_digits_and_dashes() -> None:
    token = str(TokenSigner(KEY).new("route with spaces/and:punctuation"))
    assert token.replace("-", "").isalnum()
    assert token.isascii()


def test_token_key_is_the_token_without_its_signature() -> None:
    token = TokenSigner(KEY).new("route-a")
    assert token_key(f" {token}\r\n") == token.key
    assert token.key == f"{token.sent_ms}-{token.run_id}"


def test_signer_repr_hides_the_key() -> None:
    key = b"supersecretkeymaterial-0123456789"
    text = repr(TokenSigner(key))
    assert "<secret>" in text
    assert "supersecret" not in text
    assert key.hex() not in text


def _message() -> tuple[Token, dict[str, str], str]:
    token = TokenSigner(KEY).new("route-a")
    message = build_message(token=token, probe="route-a", mail_from=SENDER, rcpt_to=RECIPIENT)
    headers = {name: str(value) for name, value in message.items()}
    body = message.get_content()
    assert isinstance(body, str)
    return token, headers, body


def test_message_is_from_the_sender_to_the_recipient() -> None:
    _, headers, _ = _message()
    assert headers["From"] == SENDER
    assert headers["To"] == RECIPIENT


def test_message_date_is_rfc5322_parseable_and_timezone_aware() -> None:
    _, headers, _ = _message()
    date = parsedate_to_datetime(headers["Date"])
    assert isinstance(date, datetime)
    assert date.tzinfo is not None


def test_message_id_uses_the_sender_domain() -> None:
    token, headers, _ = _message()
    message_id = headers["Message-ID"]
    assert message_id.startswith("<")
    assert message_id.endswith("@sender.example>")
    assert token.run_id in message_id


def test_subject_and_probe_header_carry_the_token() -> None:
    token, headers, _ = _message()
    assert str(token) in headers["Subject"]
    assert headers[PROBE_HEADER] == str(token)
    assert PROBE_HEADER == "X-Smtp-Probe"


def test_message_asks_robots_not_to_answer() -> None:
    _, headers, _ = _message()
    assert headers["Auto-Submitted"] == "auto-generated"
    assert headers["X-Auto-Response-Suppress"] == "All"


def test_message_has_a_non_empty_plain_text_body() -> None:
    token = TokenSigner(KEY).new("route-a")
    message = build_message(token=token, probe="route-a", mail_from=SENDER, rcpt_to=RECIPIENT)
    assert message.get_content_type() == "text/plain"
    assert str(message.get_content()).strip() != ""


def test_each_header_appears_exactly_once() -> None:
    token = TokenSigner(KEY).new("route-a")
    message = build_message(token=token, probe="route-a", mail_from=SENDER, rcpt_to=RECIPIENT)
    names = [name.lower() for name in message]
    assert len(names) == len(set(names))
