"""A run that finds its persistent watcher down asks for a reconnect now, within its deadline.

The failing IMAP server here is :class:`BrokenImap`: a TCP listener that
stands for a Dovecot whose imap-login process dies on every connection
(``drop``: it accepts and closes before the greeting) or hangs (``silent``:
it accepts and never greets). It counts the connections, so the test sees
how many reconnect attempts the watcher made. The healed server is the demo
sandbox's pymap on the same port.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from smtp_probe.probe.imap import ImapError, MailboxWatcher
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Stage
from smtp_probe.probe.transcript import Transcript
from smtp_probe.sandbox import MailSandbox
from tests.protocol.test_watchers import mailbox
from tests.support.loopback_smtpd import LOOPBACK
from tests.support.sandbox_imap import run


class BrokenImap:
    """A listener that accepts IMAP connections and then drops them or says nothing."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, port)
        sock: socket.socket = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.silent:
            self._held.append(writer)
        else:
            writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._held:
            writer.close()
        await self._server.wait_closed()


async def until(condition: Callable[[], bool], *, within: float) -> None:
    """Wait (polling) until ``condition`` holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {within:g}s")
        await asyncio.sleep(0.05)


async def down_watcher(port: int) -> MailboxWatcher:
    """A started persistent watcher whose first connection failed."""
    watcher = MailboxWatcher(mailbox(port), TokenSigner(), persistent=True)
    with pytest.raises(ImapError):
        await watcher.start(Transcript(), time.monotonic() + 3)
    return watcher


async def refused(watcher: MailboxWatcher, deadline: float) -> tuple[ImapError, Transcript]:
    transcript = Transcript()
    signer = TokenSigner()
    with pytest.raises(ImapError) as raised:
        async with watcher.expecting("p", signer.new("p"), transcript, deadline=deadline):
            pytest.fail("a watcher that stays down must not register a run")
    return raised.value, transcript


def test_concurrent_runs_on_a_down_watcher_share_one_fresh_attempt_then_all_proceed_once_healed() -> (
    None
):
    async def scenario() -> tuple[int, list[tuple[ImapError, Transcript]], list[bool]]:
        broken = BrokenImap()
        port = await broken.start()
        watcher = await down_watcher(port)
        try:
            # Attempts at 0, 0.5, 1.5 and 3.5 s: the next one is not due before 7.5 s.
            # Counted, not timed: on a loaded machine the 3.5 s attempt may come late.
            await until(lambda: broken.connections >= 4, within=20.0)
            await asyncio.sleep(0.2)
            before = broken.connections
            deadline = time.monotonic() + 5
            outage = await asyncio.gather(*(refused(watcher, deadline) for _ in range(5)))
            attempts = broken.connections - before
            await broken.stop()
            sandbox = MailSandbox(imap_port=port)
            await sandbox.start()
            try:
                signer = TokenSigner()

                async def registered() -> bool:
                    token = signer.new("p")
                    async with watcher.expecting(
                        "p", token, Transcript(), deadline=time.monotonic() + 5
                    ):
                        return watcher.is_up

                healed = await asyncio.gather(*(registered() for _ in range(3)))
            finally:
                await watcher.close()
                await sandbox.stop()
            return attempts, outage, healed
        finally:
            await watcher.close()

    attempts, outage, healed = run(scenario)

    # Five runs asking at once share the attempt: no thundering herd. A run that asks
    # only after the watcher thread took the shared request gets a fresh attempt of its
    # own (an attempt that *starts* after the call, by design); on a loaded machine the
    # thread may take the request between two of the five, so two attempts, never five.
    assert 1 <= attempts <= 2
    for error, transcript in outage:
        assert error.stage is Stage.IMAP_CONNECT
        texts = [line.text for line in transcript.lines]
        assert any(
            text.startswith("imap: the reconnect attempt failed at imap_connect: ")
            for text in texts
        ), texts
        attempt_reason = next(
            t for t in texts if t.startswith("imap: the reconnect attempt failed")
        )
        assert attempt_reason.endswith(error.reason.removeprefix("mailbox unreachable: "))
    assert healed == [True, True, True]


def test_a_reconnect_attempt_that_hangs_fails_the_run_at_its_own_deadline() -> None:
    async def scenario() -> tuple[ImapError, Transcript, float]:
        silent = BrokenImap(silent=True)
        port = await silent.start()
        try:
            watcher = await down_watcher(port)
            try:
                started = time.monotonic()
                error, transcript = await refused(watcher, started + 1.0)
                return error, transcript, time.monotonic() - started
            finally:
                await watcher.close(timeout=0.5)
        finally:
            await silent.stop()

    error, transcript, took = run(scenario)

    assert error.stage is Stage.IMAP_CONNECT
    assert error.reason == (
        "mailbox unreachable: the reconnect attempt did not end before the run deadline"
    )
    assert 1.0 <= took < 1.5
    assert "imap: the reconnect attempt did not end before the run deadline" in [
        line.text for line in transcript.lines
    ]
