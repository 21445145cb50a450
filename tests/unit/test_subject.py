"""The token in a reply's Subject: real-world reply and forward prefixes, encoded-words, forgeries.

A reflector's answer drops our ``X-Smtp-Probe`` header but keeps the
Subject behind prefixes that depend on the client, the server and the
language. :func:`parse_subject` finds the token after any of them; the
signature (checked by the :class:`TokenSigner`) is what makes it ours.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.message import EmailMessage

import pytest

from smtp_probe.probe.message import (
    SUBJECT_MARK,
    TokenSigner,
    build_message,
    decode_subject,
    header_date,
    parse_subject,
)

KEY = b"r" * 32
PROBE = "via-autoreply"
SIGNER = TokenSigner(KEY)
TOKEN = SIGNER.new(PROBE, now=1_767_322_245.123)
ORIGINAL = f"{SUBJECT_MARK} {PROBE} {TOKEN}"


def verified(subject: str) -> bool:
    """Whether ``subject`` (as a header value) carries a token signed for :data:`PROBE`."""
    parsed = parse_subject(decode_subject(subject))
    return parsed is not None and SIGNER.verify(PROBE, parsed.token) is not None


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "Re: ",
        "RE: ",
        "re: ",
        "Re:",  # no space after the colon (some mobile clients)
        "AW: ",  # German "Antwort"
        "WG: ",  # German "Weitergeleitet"
        "Fwd: ",
        "FWD: ",
        "Fw: ",
        "FW: ",
        "TR: ",  # French "Transféré"
        "SV: ",  # Scandinavian "Svar"
        "VS: ",  # Finnish "Vastaus"
        "Antw: ",  # Dutch
        "Odp: ",  # Polish
        "RV: ",  # Spanish "Reenviado"
        "ENC: ",  # Portuguese "Encaminhado"
        "Auto: ",  # Dovecot Pigeonhole vacation's default
        "Automatic reply: ",  # Outlook / Exchange Online
        "Automatische Antwort: ",
        "Réponse automatique : ",  # French puts a space before the colon
        "Risposta automatica: ",
        "Respuesta automática: ",
        "Out of Office: ",
        "Abwesenheitsnotiz: ",  # Lotus Notes / HCL
        "回复: ",  # Chinese (simplified)
        "答复: ",  # Outlook, Chinese
        "Ynt: ",  # Turkish
        "Re[2]: ",
        "Re^2: ",
        "RE: RE: AW: ",
        "Re: Fwd: Automatic reply: ",
        "[EXTERNAL] Re: ",
        "Re: [SPAM] ",
        "*** SPAM *** ",
        "[Ticket #4711] ",
    ],
)
def test_a_signed_token_is_found_after_any_reply_or_forward_prefix(prefix: str) -> None:
    parsed = parse_subject(decode_subject(prefix + ORIGINAL))

    assert parsed is not None
    assert parsed.token == str(TOKEN)
    assert parsed.probe == PROBE
    assert parsed.prefix == " ".join(prefix.split())
    assert SIGNER.verify(PROBE, parsed.token) == TOKEN


@pytest.mark.parametrize(
    "suffix", ["", " ", " (fwd)", " [was: hello]", "\tfollow-up", " - Ticket created"]
)
def test_text_after_the_token_does_not_matter(suffix: str) -> None:
    assert verified(f"Re: {ORIGINAL}{suffix}")


def test_a_whole_subject_in_one_base64_encoded_word_is_decoded() -> None:
    encoded = Header(f"Automatische Antwort: {ORIGINAL}", "utf-8").encode()
    assert "=?utf-8?" in encoded

    assert verified(encoded)


def test_a_token_split_across_encoded_words_and_folded_lines_is_joined_again() -> None:
    """Long subjects are cut into encoded-words anywhere, here in the middle of the token."""
    text = f"Réponse automatique : {ORIGINAL}"
    cut = len(text) - 20
    words = [
        f"=?UTF-8?B?{base64.b64encode(part.encode()).decode()}?="
        for part in (text[:cut], text[cut:])
    ]

    assert verified("\r\n ".join(words))
    assert verified("\r\n\t".join(words))


def test_a_quoted_printable_encoded_word_prefix_before_a_plain_subject_is_decoded() -> None:
    assert verified(f"=?iso-8859-1?q?R=E9ponse_automatique_:?= {ORIGINAL}")


def test_a_subject_folded_by_the_replying_client_is_unfolded() -> None:
    assert verified(f"Automatic reply:\r\n {SUBJECT_MARK}\r\n\t{PROBE}\r\n {TOKEN}")


def test_a_token_in_upper_case_still_verifies() -> None:
    """Some gateways shout; the hex is the same."""
    assert verified(f"RE: {ORIGINAL.upper()}")


def test_an_undecodable_encoded_word_is_taken_as_it_stands() -> None:
    raw = f"=?x-no-such-charset?q?Re:?= {ORIGINAL}"
    assert decode_subject(raw) == raw
    assert verified(raw)


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("", id="empty"),
        pytest.param("Re: hello", id="unrelated"),
        pytest.param(f"Re: {SUBJECT_MARK} {PROBE}", id="no-token"),
        pytest.param(f"Re: {TOKEN}", id="token-without-the-mark"),
        pytest.param(f"Re: {ORIGINAL[:-4]}", id="truncated-token"),
        pytest.param(f"Re: {ORIGINAL}abc", id="token-glued-to-more-hex"),
        pytest.param(f"Re: {SUBJECT_MARK} {PROBE} {TOKEN.key}", id="unsigned"),
    ],
)
def test_subjects_without_a_whole_token_give_nothing(subject: str) -> None:
    assert parse_subject(decode_subject(subject)) is None


def _flip(hex_text: str) -> str:
    """``hex_text`` with its last digit changed."""
    return hex_text[:-1] + ("0" if hex_text[-1] != "0" else "1")


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(
            f"Re: {SUBJECT_MARK} {PROBE} {TOKEN.key}-{_flip(TOKEN.signature)}",
            id="forged-signature",
        ),
        pytest.param(
            f"Re: {SUBJECT_MARK} {PROBE} {TOKEN.sent_ms + 1}-{TOKEN.run_id}-{TOKEN.signature}",
            id="tampered-time",
        ),
        pytest.param(
            f"Re: {SUBJECT_MARK} {PROBE} {TokenSigner(b'x' * 32).new(PROBE)}", id="other-key"
        ),
        pytest.param(f"Re: {SUBJECT_MARK} {PROBE} {SIGNER.new('another-probe')}", id="other-probe"),
    ],
)
def test_a_token_shaped_but_forged_or_foreign_subject_does_not_verify(subject: str) -> None:
    assert parse_subject(decode_subject(subject)) is not None  # it looks like one...
    assert not verified(subject)  # ...but is not ours


def test_the_probe_name_in_the_subject_proves_nothing_the_signature_decides() -> None:
    """A reply may claim any probe name; the token verifies only for the probe it was made for."""
    subject = f"Re: {SUBJECT_MARK} someone-else {TOKEN}"
    parsed = parse_subject(subject)

    assert parsed is not None
    assert parsed.probe == "someone-else"
    assert SIGNER.verify(PROBE, parsed.token) == TOKEN
    assert SIGNER.verify("someone-else", parsed.token) is None


# ---------------------------------------------------------------- the message a reflector gets


def _headers(message: EmailMessage) -> dict[str, str]:
    return {name: str(value) for name, value in message.items()}


def test_a_reflector_run_sends_without_the_headers_that_silence_autoresponders() -> None:
    """Sieve vacation (RFC 5230) never answers Auto-Submitted mail; Exchange honours the other."""
    plain = _headers(
        build_message(token=TOKEN, probe=PROBE, mail_from="a@x.test", rcpt_to="b@y.test")
    )
    reflected = _headers(
        build_message(
            token=TOKEN, probe=PROBE, mail_from="a@x.test", rcpt_to="b@y.test", reflector=True
        )
    )

    assert plain["Auto-Submitted"] == "auto-generated"
    assert plain["X-Auto-Response-Suppress"] == "All"
    assert "Auto-Submitted" not in reflected
    assert "X-Auto-Response-Suppress" not in reflected
    assert reflected["Subject"] == plain["Subject"] == ORIGINAL
    assert reflected["X-Smtp-Probe"] == str(TOKEN)


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fri, 02 Jan 2026 03:04:05 +0000", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            " Fri, 2 Jan 2026 04:04:05 +0100 (CET)",
            datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("2 Jan 2026 03:04:05 -0000", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_header_dates_parse_with_their_zone(text: str, expected: datetime) -> None:
    assert header_date(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "Fri, 99 Foo 2026 25:61:00 +0000"])
def test_a_date_that_does_not_parse_is_none(text: str) -> None:
    assert header_date(text) is None
