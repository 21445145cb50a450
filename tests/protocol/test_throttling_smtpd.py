"""The throttling test server keeps its promises: Exchange-style 4.3.2 refusals where asked, then mail."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib
import pytest

from tests.support.loopback_smtpd import LOOPBACK
from tests.support.throttling_smtpd import (
    CONCURRENT_CONNECTIONS,
    SENDER_THREAD_LIMIT,
    throttling_smtpd,
)


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "probe@example.test", "m365@example.test", "hi"
    msg.set_content("hello\n")
    return msg


def _send(port: int) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    return asyncio.run(aiosmtplib.send(_message(), hostname=LOOPBACK, port=port, timeout=10))


def test_rcpt_is_refused_with_concurrent_connections_limit() -> None:
    with throttling_smtpd(CONCURRENT_CONNECTIONS, stage="rcpt") as (port, handler):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
            _send(port)
        [error] = info.value.recipients
        assert error.code == 451
        assert error.message.startswith("4.3.2 Concurrent connections limit exceeded")
        assert handler.refusals == 1
        assert handler.messages == []


def test_mail_is_refused_with_sender_thread_limit() -> None:
    with throttling_smtpd(SENDER_THREAD_LIMIT, stage="mail") as (port, handler):
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
            _send(port)
        assert info.value.code == 452
        assert "sender thread limit exceeded" in info.value.message
        assert info.value.message.startswith("4.3.2 ")
        assert handler.rcpt_to == []


def test_data_refusal_then_recovery_after_times() -> None:
    with throttling_smtpd(SENDER_THREAD_LIMIT, stage="data", times=2) as (port, handler):
        for _ in range(2):
            with pytest.raises(aiosmtplib.SMTPDataError) as info:
                _send(port)
            assert info.value.code == 452
        _, reply = _send(port)
        assert reply.startswith("2.0.0")
        assert handler.refusals == 2
        # refused messages are not kept: only the third one was accepted
        assert len(handler.messages) == 1


def test_only_4xx_replies_are_accepted() -> None:
    with pytest.raises(ValueError, match="4xx"), throttling_smtpd("550 5.7.1 no"):
        pass  # pragma: no cover - never reached
