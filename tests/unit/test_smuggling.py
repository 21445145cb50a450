"""The smuggling check's bytes: each variant exactly, the content around it, the reading of replies."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from smtp_probe.probe.smuggling import (
    VARIANTS,
    Attempt,
    content,
    escape,
    message_bytes,
    smuggled_commands,
    unknown_variants,
)


def test_every_variant_is_exactly_its_named_bytes() -> None:
    assert dict(VARIANTS) == {
        "lf_dot_lf": b"\n.\n",
        "lf_dot_crlf": b"\n.\r\n",
        "crlf_dot_lf": b"\r\n.\n",
        "lf_dot_cr": b"\n.\r",
        "cr_dot_cr": b"\r.\r",
        "cr_dot_crlf": b"\r.\r\n",
        "crlf_dot_cr": b"\r\n.\r",
        "cr_dot_lf": b"\r.\n",
    }


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_name_spells_its_bytes(name: str) -> None:
    spelled = {"lf": b"\n", "cr": b"\r", "crlf": b"\r\n"}
    before, _dot, after = name.split("_")
    assert VARIANTS[name] == spelled[before] + b"." + spelled[after]
    assert VARIANTS[name] != b"\r\n.\r\n"


def test_escape_shows_line_ends_and_other_control_bytes() -> None:
    assert escape(b"\n.\r\n") == "<LF>.<CR><LF>"
    assert escape(b"DATA\r\n") == "DATA<CR><LF>"
    assert escape(b"a\x00\tb") == "a<0x00><0x09>b"


def _message(body: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "s"
    message.set_content(body)
    return message


def test_message_bytes_are_crlf_dot_stuffed_without_a_final_line_end() -> None:
    raw = message_bytes(_message("one\n.two\nthree\n"))

    assert raw.endswith(b"\r\n\r\none\r\n..two\r\nthree")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_content_is_carrier_variant_commands_smuggled_and_the_real_end(name: str) -> None:
    data = content(
        VARIANTS[name], b"CARRIER", b"SMUGGLED", mail_from="a@x.test", rcpt_to="b@y.test"
    )

    assert data == (
        b"CARRIER"
        + VARIANTS[name]
        + b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
        + b"SMUGGLED\r\n.\r\n"
    )
    # The real end of data comes once, at the very end.
    assert data.count(b"\r\n.\r\n") == 1
    assert data.endswith(b"\r\n.\r\n")


def test_smuggled_commands_are_a_whole_transaction() -> None:
    assert smuggled_commands("a@x.test", "b@y.test") == (
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
    )


def test_unknown_variants_are_named() -> None:
    assert unknown_variants(["lf_dot_lf", "crlf_dot_crlf", "nope"]) == ["crlf_dot_crlf", "nope"]
    assert unknown_variants(list(VARIANTS)) == []


def _attempt(*codes: int) -> Attempt:
    return Attempt("lf_dot_crlf", tuple((code, "x") for code in codes), written=True)


def test_a_safe_server_answers_once_then_our_quit() -> None:
    attempt = _attempt(250, 221)

    assert attempt.carrier_accepted
    assert not attempt.ended_early
    assert not attempt.smuggled_accepted
    assert attempt.describe() == "250, 221"


def test_a_vulnerable_server_answers_every_smuggled_command_and_queues_the_second_message() -> None:
    attempt = _attempt(250, 250, 250, 354, 250, 221)

    assert attempt.carrier_accepted
    assert attempt.ended_early
    assert attempt.smuggled_accepted
    assert attempt.smuggled_replies == ((250, "x"), (250, "x"), (354, "x"), (250, "x"))


def test_ending_early_but_refusing_the_smuggled_recipient_is_not_acceptance() -> None:
    attempt = _attempt(250, 250, 554, 554, 502, 502, 221)

    assert attempt.ended_early
    assert not attempt.smuggled_accepted


def test_a_refused_carrier_is_not_accepted() -> None:
    attempt = _attempt(521)

    assert not attempt.carrier_accepted
    assert not attempt.smuggled_accepted
    assert _attempt().describe() == "no reply"
