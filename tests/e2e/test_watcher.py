"""The mailbox watcher's contract with a run, against real Dovecot.

``async with watcher.expecting(...)`` registers a token before the send and
always unregisters on leaving; a message that lands after its run gave up is
late: counted, deleted, never a success. A watcher that is down refuses to
register, so no mail is sent that could not be confirmed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from smtp_probe.probe.imap import ImapError, MailboxWatcher
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Stage
from smtp_probe.probe.transcript import Transcript
from tests.support.mailstack import MailStack
from tests.support.routes import SENDER, SINK, mailbox, probe_messages


def probe_mail(token: object) -> bytes:
    return f"From: {SENDER}\r\nTo: {SINK}\r\nX-Smtp-Probe: {token}\r\n\r\nlate\r\n".encode()


async def until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("persistent", [False, True], ids=["one-shot", "persistent"])
def test_message_landing_after_its_run_gave_up_is_late_deleted_and_never_an_arrival(
    stack: MailStack, persistent: bool
) -> None:
    signer = TokenSigner()
    token = signer.new("late")
    late: list[str] = []

    async def scenario() -> tuple[object, list[str]]:
        loop = asyncio.get_running_loop()
        seen = asyncio.Event()

        def on_late(probe: str) -> None:  # called from the watcher thread
            late.append(probe)
            loop.call_soon_threadsafe(seen.set)

        watcher = MailboxWatcher(mailbox(stack), signer, on_late=on_late, persistent=persistent)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            run_transcript = Transcript()
            async with watcher.expecting("late", token, run_transcript) as expected:
                arrival = await expected.arrival(time.monotonic() + 0.3)
            await asyncio.to_thread(stack.append, SINK, "INBOX", probe_mail(token))
            # The next run's fast polling finds it (IDLE may too, but Dovecot can
            # miss announcing a message that lands as IDLE starts).
            async with watcher.expecting("next", signer.new("next"), Transcript()) as following:
                assert await following.arrival(time.monotonic() + 2.0) is None
            async with asyncio.timeout(5):
                await seen.wait()
            return arrival, [line.text for line in run_transcript.lines]
        finally:
            await watcher.close()

    arrival, run_lines = asyncio.run(scenario())

    assert arrival is None
    assert late == ["late"]
    assert probe_messages(stack) == []
    assert not any("found UID" in line for line in run_lines), "a late message belongs to no run"


def test_watcher_that_is_down_refuses_to_expect_and_says_why_then_recovers(
    stack: MailStack,
) -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[ImapError, Stage | None, str | None, Transcript]:
        watcher = MailboxWatcher(mailbox(stack), signer, persistent=True)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            assert (watcher.is_up, watcher.down_stage, watcher.down_reason) == (True, None, None)
            await asyncio.to_thread(stack.stop_dovecot)
            await until(lambda: not watcher.is_up, timeout=10)
            refused = Transcript()
            with pytest.raises(ImapError) as raised:
                async with watcher.expecting("down", signer.new("down"), refused):
                    pytest.fail("a watcher that is down must not register a run")
            stage, reason = watcher.down_stage, watcher.down_reason
            await asyncio.to_thread(stack.start_dovecot)
            await until(lambda: watcher.is_up, timeout=20)
            return raised.value, stage, reason, refused
        finally:
            await watcher.close()

    try:
        error, stage, reason, refused = asyncio.run(scenario())
    finally:
        stack.start_dovecot()

    assert error.stage is Stage.IMAP_CONNECT
    assert error.stage is stage
    assert reason is not None
    assert error.reason == f"mailbox unreachable: {reason}"
    assert f"FAILED at imap_connect: mailbox unreachable: {reason}" in [
        line.text for line in refused.lines
    ]
