"""The whole SMTP dialogue as the manual telnet test has it, against aiosmtpd on 127.0.0.1.

Every reply shows, the ``354`` after ``DATA`` included; a server that does
not speak ESMTP gets ``HELO`` (RFC 5321 §3.2) unless the probe needs
STARTTLS or AUTH.
"""

from __future__ import annotations

import asyncio
import time
from email.message import EmailMessage

import pytest

from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.smtp import send_message
from smtp_probe.probe.spec import TlsMode
from smtp_probe.probe.transcript import Direction, Transcript
from tests.support.loopback_routes import HELO_NAME, RECIPIENT, SENDER, loopback_probe, run
from tests.support.loopback_smtpd import Behaviour, smtpd


def dialogue(result: RunResult) -> list[str]:
    """The commands and replies, as ``-> TEXT`` / ``<- TEXT``, without the notes."""
    return [
        f"{line.direction.value} {line.text}"
        for line in result.transcript.lines
        if line.direction is not Direction.NOTE
    ]


# ------------------------------------------------------------------ DATA and its 354


def test_transcript_shows_the_354_between_data_and_the_message_as_in_telnet() -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    lines = dialogue(result)
    start = lines.index("-> DATA")
    [raw] = handler.messages
    assert lines[start : start + 5] == [
        "-> DATA",
        "<- 354 End data with <CR><LF>.<CR><LF>",
        f"-> [message: {len(raw)} bytes, Subject: smtp-probe proto {raw_token(raw)}]",
        "-> .",
        "<- 250 2.0.0 Ok: queued as ABC123",
    ]
    assert lines[start + 5] == "-> QUIT"


def raw_token(raw: bytes) -> str:
    header = next(line for line in raw.split(b"\r\n") if line.startswith(b"X-Smtp-Probe: "))
    return header.split(b": ", 1)[1].decode()


def test_data_refused_with_554_fails_at_stage_data_and_sends_no_message() -> None:
    handler = Behaviour(data_command_reply="554 5.5.1 Error: no valid recipients")
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DATA
    assert result.smtp.reply_code == 554
    assert "no valid recipients" in result.error
    assert result.smtp.queue_id is None
    assert handler.messages == []
    lines = dialogue(result)
    assert lines[lines.index("-> DATA") + 1] == "<- 554 5.5.1 Error: no valid recipients"
    assert not any(line.startswith("-> [message:") for line in lines)


@pytest.mark.parametrize(
    ("run_timeout", "command_timeout", "says"),
    [
        pytest.param(10.0, 1.0, "no answer within 1s", id="command-timeout"),
        pytest.param(1.5, 30.0, "no answer before the run deadline", id="run-deadline"),
    ],
)
def test_no_reply_to_the_final_dot_fails_at_stage_data_on_time(
    run_timeout: float, command_timeout: float, says: str
) -> None:
    with smtpd(Behaviour(data_delay=5.0)) as port:
        started = time.monotonic()
        probe = loopback_probe(port, timeout=run_timeout, command_timeout=command_timeout)
        result = run(probe)
        elapsed = time.monotonic() - started

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DATA
    assert says in result.error
    assert 1.0 <= elapsed < 3.5
    assert result.smtp.stage_seconds[Stage.DATA] >= 0.9
    lines = dialogue(result)
    assert lines[-1] == "-> ."
    assert "-> QUIT" not in lines, "a reply given up on must not be read as QUIT's"


def test_message_lines_are_dot_stuffed_and_line_endings_normalised_on_the_wire() -> None:
    """What the server stores is what we sent, lines starting with a dot included."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = "dots"
    message.set_content(".leading dot\n..two dots\n.\nlast line\n")
    handler = Behaviour()

    async def send(port: int) -> None:
        await send_message(
            loopback_probe(port).smtp,
            message,
            mail_from=SENDER,
            rcpt_to=RECIPIENT,
            transcript=Transcript(),
            deadline=time.monotonic() + 5,
        )

    with smtpd(handler) as port:
        asyncio.run(send(port))

    [raw] = handler.messages
    assert raw.endswith(b"\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n")


# ------------------------------------------------------------------ HELO for pre-ESMTP servers


@pytest.mark.parametrize(
    ("handler", "refusal"),
    [
        pytest.param(
            Behaviour(esmtp=False), "500 5.5.1 Command unrecognized: EHLO", id="500-pre-esmtp"
        ),
        pytest.param(
            Behaviour(ehlo_reply="502 5.5.2 Error: command not recognized"),
            "502 5.5.2 Error: command not recognized",
            id="502",
        ),
    ],
)
def test_server_without_esmtp_gets_helo_and_the_message_is_sent(
    handler: Behaviour, refusal: str
) -> None:
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.queue_id == "ABC123"
    assert len(handler.messages) == 1
    lines = dialogue(result)
    start = lines.index(f"-> EHLO {HELO_NAME}")
    assert lines[start : start + 4] == [
        f"-> EHLO {HELO_NAME}",
        f"<- {refusal}",
        f"-> HELO {HELO_NAME}",
        "<- 250 mx.test",
    ]
    assert lines[start + 4] == f"-> MAIL FROM:<{SENDER}>"
    # Exactly one greeting each: aiosmtplib must not send its own EHLO/HELO later.
    assert handler.greetings == [f"EHLO {HELO_NAME}", f"HELO {HELO_NAME}"]
    assert Stage.EHLO in result.smtp.stage_seconds


@pytest.mark.parametrize(
    ("tls", "username", "impossible"),
    [
        pytest.param(TlsMode.STARTTLS, None, "STARTTLS is impossible", id="starttls"),
        pytest.param(TlsMode.NONE, "probe", "AUTH is impossible", id="auth"),
        pytest.param(TlsMode.STARTTLS, "probe", "STARTTLS and AUTH are impossible", id="both"),
    ],
)
def test_server_without_esmtp_fails_at_ehlo_when_the_probe_needs_starttls_or_auth(
    tls: TlsMode, username: str | None, impossible: str
) -> None:
    handler = Behaviour(esmtp=False)
    with smtpd(handler) as port:
        password = "pre-esmtp-secret" if username else None
        result = run(loopback_probe(port, tls=tls, username=username, password=password))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.EHLO
    assert result.smtp.reply_code == 500
    assert "does not speak ESMTP" in result.error
    assert impossible in result.error
    assert handler.greetings == [f"EHLO {HELO_NAME}"]
    assert handler.messages == []
    assert not any(line.startswith("-> HELO") for line in dialogue(result))


def test_ehlo_refused_with_another_5xx_fails_at_ehlo_without_trying_helo() -> None:
    handler = Behaviour(ehlo_reply="554 5.7.1 Access denied")
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.EHLO
    assert result.smtp.reply_code == 554
    assert "Access denied" in result.error
    assert "ESMTP" not in result.error
    assert handler.greetings == [f"EHLO {HELO_NAME}"]
    assert not any(line.startswith("-> HELO") for line in dialogue(result))
