"""No stale failures: a run right after the mailbox comes back is confirmed, against real Dovecot.

The daemon's shared watcher retries a lost mailbox with a growing backoff.
Before issue 11 a run that found it down failed with the watcher's old
reason until the backoff ran out (~10 s of false failures after a 20 s
outage). Now a run that finds it down asks for a reconnect attempt now and
reports what *that* attempt says: during the outage an ``error`` at
``imap_connect`` with nothing sent, right after the heal a delivered run.
"""

from __future__ import annotations

import asyncio
import time

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Arrival, Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec
from smtp_probe.probe.transcript import Transcript
from smtp_probe.watchers import WatcherPool
from tests.support.mailstack import MailStack
from tests.support.routes import SENDER, SINK, mailbox, probe, probe_messages

OUTAGE_SECONDS = 8.0
"""Long enough for the watcher's backoff to grow to 8 s (attempts at 0, .5, 1.5, 3.5, 7.5 s)."""


async def until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def borrowed_run(pool: WatcherPool, spec: ProbeSpec) -> RunResult:
    """One run the way the daemon makes it: on the pool's shared watcher."""
    async with pool.use(spec.mailbox) as watcher:
        assert watcher is not None
        return await run_probe(spec, signer=pool.signer, watcher=watcher)


def test_a_run_right_after_imap_comes_back_is_delivered_not_a_stale_failure(
    stack: MailStack,
) -> None:
    spec = probe(stack, name="heal", timeout=15.0)

    async def scenario() -> tuple[list[RunResult], list[int], RunResult, float]:
        pool = WatcherPool(None)
        await pool.sync([spec], key=None)
        try:
            [state] = pool.states()
            assert state.up
            await asyncio.to_thread(stack.stop_dovecot)
            await until(lambda: not pool.states()[0].up, timeout=10)
            outage: list[RunResult] = []
            left: list[int] = []
            down_since = time.monotonic()
            while time.monotonic() - down_since < OUTAGE_SECONDS:
                outage.append(await borrowed_run(pool, spec))
                left.append(len(probe_messages(stack)))
                await asyncio.sleep(1.0)
            await asyncio.to_thread(stack.start_dovecot)
            healed_at = time.monotonic()
            healed = await borrowed_run(pool, spec)
            return outage, left, healed, time.monotonic() - healed_at
        finally:
            await pool.close()

    try:
        outage, left, healed, took = asyncio.run(scenario())
    finally:
        stack.start_dovecot()

    # The run started right after the heal: delivered, not the watcher's old failure.
    assert (healed.outcome, healed.stage, healed.error) == (Outcome.DELIVERED, None, "")
    assert len(outage) >= 4
    for result in outage:
        assert (result.outcome, result.stage) == (Outcome.ERROR, Stage.IMAP_CONNECT), result.error
        assert result.smtp.reply_code is None  # nothing sent
        assert result.smtp.accepted_at is None
        texts = [line.text for line in result.transcript.lines]
        assert any("asking it to reconnect now" in text for text in texts), texts
        assert any("the reconnect attempt failed at imap_connect" in text for text in texts), texts
    assert left == [0] * len(outage)
    assert "imap: reconnected" in [line.text for line in healed.transcript.lines]
    assert took < spec.timeout
    assert probe_messages(stack) == []


def test_a_run_in_flight_when_imap_drops_is_confirmed_soon_after_it_comes_back(
    stack: MailStack,
) -> None:
    """A run already waiting for its message keeps reconnects at ``poll_interval``, not the backoff."""
    signer = TokenSigner()
    token = signer.new("in-flight")
    box = mailbox(stack)

    async def scenario() -> Arrival | None:
        watcher = MailboxWatcher(box, signer, persistent=True)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            async with watcher.expecting("in-flight", token, Transcript()) as expected:
                await asyncio.to_thread(stack.stop_dovecot)
                await until(lambda: not watcher.is_up, timeout=10)
                # Without a run waiting, the backoff would have grown to 8 s by now.
                await asyncio.sleep(OUTAGE_SECONDS)
                await asyncio.to_thread(stack.start_dovecot)
                await asyncio.to_thread(stack.append, SINK, "INBOX", probe_mail(token))
                healed_at = time.monotonic()
                return await expected.arrival(healed_at + 3 * box.poll_interval)
        finally:
            await watcher.close()

    try:
        arrival = asyncio.run(scenario())
    finally:
        stack.start_dovecot()

    # Found within its 3 * poll_interval deadline (else None, or ImapError while still down).
    assert arrival is not None
    assert arrival.deleted
    assert probe_messages(stack) == []


def probe_mail(token: object) -> bytes:
    return f"From: {SENDER}\r\nTo: {SINK}\r\nX-Smtp-Probe: {token}\r\n\r\nin flight\r\n".encode()
