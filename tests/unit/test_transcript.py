"""The redacted, telnet-style transcript: what it hides and how it reads."""

from __future__ import annotations

import base64
import re

import pytest

from smtp_probe.probe.transcript import REDACTED, Direction, Line, Transcript, redact_command


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


PLAIN_PAYLOAD = base64.b64encode(b"\0user@example.com\0s3cret-pass").decode()


def test_auth_plain_payload_is_redacted() -> None:
    assert redact_command(f"AUTH PLAIN {PLAIN_PAYLOAD}") == f"AUTH PLAIN {REDACTED}"


def test_auth_login_initial_response_is_redacted() -> None:
    username = base64.b64encode(b"user@example.com").decode()
    assert redact_command(f"AUTH LOGIN {username}") == f"AUTH LOGIN {REDACTED}"


def test_lower_case_auth_is_redacted_too() -> None:
    assert redact_command(f"auth plain {PLAIN_PAYLOAD}") == f"auth plain {REDACTED}"


def test_auth_without_a_payload_stays_as_it_is() -> None:
    assert redact_command("AUTH LOGIN") == "AUTH LOGIN"


def test_imap_login_password_is_redacted_and_the_user_kept() -> None:
    assert redact_command("LOGIN user@example.com s3cret-pass") == (
        f"LOGIN user@example.com {REDACTED}"
    )


@pytest.mark.parametrize(
    "command",
    [
        "EHLO probe.example.com",
        "MAIL FROM:<probe@example.com>",
        "RCPT TO:<sink@example.com>",
        "DATA",
        "STARTTLS",
        "QUIT",
        "AUTHORITY is not a command",
        "SELECT INBOX",
    ],
)
def test_non_auth_commands_are_untouched(command: str) -> None:
    assert redact_command(command) == command


def test_sent_auth_command_is_stored_redacted() -> None:
    transcript = Transcript()
    transcript.sent(f"AUTH PLAIN {PLAIN_PAYLOAD}", tls=True)
    assert [line.text for line in transcript.lines] == [f"AUTH PLAIN {REDACTED}"]


def test_masked_secret_is_scrubbed_from_any_line() -> None:
    transcript = Transcript()
    transcript.mask("s3cret-pass")
    transcript.received("535 5.7.8 password s3cret-pass is wrong", tls=False)
    transcript.note("retrying with s3cret-pass")

    texts = [line.text for line in transcript.lines]
    assert texts == [f"535 5.7.8 password {REDACTED} is wrong", f"retrying with {REDACTED}"]


def test_masked_secret_is_scrubbed_in_its_base64_form() -> None:
    encoded = base64.b64encode(b"s3cret-pass").decode()
    transcript = Transcript()
    transcript.mask("s3cret-pass")
    transcript.sent(encoded, tls=False)
    transcript.received(f"334 {encoded}", tls=False)

    assert [line.text for line in transcript.lines] == [REDACTED, f"334 {REDACTED}"]


def test_masked_secret_is_scrubbed_from_lines_added_with_extend() -> None:
    transcript = Transcript()
    transcript.mask("s3cret-pass")
    transcript.extend([Line(0.5, Direction.SENT_TLS, "LOGIN-ish s3cret-pass")])
    assert transcript.lines[0].text == f"LOGIN-ish {REDACTED}"


def test_mask_of_nothing_changes_nothing() -> None:
    transcript = Transcript()
    transcript.mask(None)
    transcript.mask("")
    transcript.note("plain text")
    assert transcript.lines[0].text == "plain text"


def test_multi_line_text_becomes_one_line_each() -> None:
    transcript = Transcript()
    transcript.received("250-mx.example\n250-PIPELINING\r\n250 HELP", tls=False)
    assert [line.text for line in transcript.lines] == [
        "250-mx.example",
        "250-PIPELINING",
        "250 HELP",
    ]
    assert all(line.direction is Direction.RECEIVED for line in transcript.lines)


def test_direction_marks_follow_tls_and_notes() -> None:
    transcript = Transcript()
    transcript.sent("EHLO a", tls=False)
    transcript.received("250 ok", tls=False)
    transcript.sent("EHLO b", tls=True)
    transcript.received("250 ok", tls=True)
    transcript.note("a note")
    assert [line.direction.value for line in transcript.lines] == ["->", "<-", "~>", "<~", "==="]


def test_offsets_are_seconds_since_the_transcript_started() -> None:
    clock = FakeClock(100.0)
    transcript = Transcript(clock=clock)
    clock.now = 100.25
    transcript.note("later")
    assert transcript.lines[0].offset == pytest.approx(0.25)


def test_lines_come_out_in_time_order() -> None:
    clock = FakeClock(10.0)
    transcript = Transcript(clock=clock)
    transcript.add(Direction.NOTE, "second", at=12.0)
    transcript.add(Direction.NOTE, "first", at=11.0)
    assert [line.text for line in transcript.lines] == ["first", "second"]


def test_render_shows_milliseconds_direction_and_text() -> None:
    assert Line(0.0123, Direction.SENT, "EHLO probe").render() == "     12.3ms  -> EHLO probe"
    assert Line(1.5, Direction.NOTE, "done").render() == "   1500.0ms === done"


def test_render_gives_one_string_per_line_in_the_telnet_format() -> None:
    clock = FakeClock(0.0)
    transcript = Transcript(clock=clock)
    transcript.received("220 mx ESMTP", tls=False)
    clock.now = 0.002
    transcript.sent("EHLO probe", tls=False)
    clock.now = 0.0305
    transcript.sent("MAIL FROM:<a@b.c>", tls=True)

    rendered = transcript.render()
    assert len(rendered) == 3
    pattern = re.compile(r"^ *\d+\.\dms (?: ->| <-| ~>| <~|===) .+$")
    assert all(pattern.match(text) for text in rendered), rendered
    assert rendered[1] == "      2.0ms  -> EHLO probe"
    assert rendered[2].endswith("ms  ~> MAIL FROM:<a@b.c>")


def test_imap_authenticate_initial_response_is_redacted() -> None:
    payload = base64.b64encode(b"user=u\x01auth=Bearer ya29.secret\x01\x01").decode()

    assert redact_command(f"AUTHENTICATE XOAUTH2 {payload}") == f"AUTHENTICATE XOAUTH2 {REDACTED}"
    assert redact_command("AUTHENTICATE OAUTHBEARER") == "AUTHENTICATE OAUTHBEARER"
