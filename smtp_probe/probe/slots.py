"""Bounded concurrency: slots for runs and for connections to each SMTP server.

The daemon holds one :class:`Slots`: at most ``max_concurrent_runs`` runs at
once, and at most ``max_connections`` SMTP sessions at once per server
identity (host and port; an ``mx:`` server per mail domain), so a thousand
probes on one relay never open a thousand connections. A run waiting for a
slot keeps its own deadline: the wait is part of the run, and a run that
gets no slot before its deadline ends ``error`` with a reason naming the
slot (:class:`SlotTimeout`). Slots are handed out first come, first served.

A reload changes the limits in place: runs holding a slot keep it, and a
raised limit wakes waiters at once; a lowered one takes effect as slots are
given back. ``smtp-probe check`` runs one probe and takes no slots.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final, Protocol

from smtp_probe.probe.spec import DEFAULT_MAX_CONCURRENT_RUNS, SmtpServer
from smtp_probe.probe.transcript import Transcript

RUN: Final = "run"
CONNECTION: Final = "connection"
LIMITS: Final = (RUN, CONNECTION)
"""The ``limit`` label values of the slot metrics."""


class SlotTimeout(Exception):
    """No slot came free before the run's deadline; ``reason`` says which and how crowded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SlotObserver(Protocol):
    """Told about waits: the daemon's metrics (runs waiting, waits counted)."""

    def slot_wait_started(self, limit: str) -> None:
        """A run began waiting for a ``limit`` slot."""

    def slot_wait_ended(self, limit: str) -> None:
        """A run stopped waiting (it got the slot, ran out of time, or was cancelled)."""


class _Unobserved:
    """The observer of limits nobody watches (tests, benchmarks)."""

    def slot_wait_started(self, limit: str) -> None:
        """Nothing to count."""

    def slot_wait_ended(self, limit: str) -> None:
        """Nothing to count."""


class Limiter:
    """At most ``limit`` holders at once; waiters are served in arrival order, each by its deadline."""

    def __init__(
        self, limit: int, *, kind: str = RUN, observer: SlotObserver | None = None
    ) -> None:
        self._limit = limit
        self.kind = kind
        self.observer = observer or _Unobserved()
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int:
        """Holders allowed at once."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        # Holders keep their slot; a raised limit lets waiters in now.
        self._limit = value
        self._wake()

    @property
    def waiting(self) -> int:
        """Runs waiting for a slot now."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    @asynccontextmanager
    async def slot(self, what: str, transcript: Transcript, deadline: float) -> AsyncIterator[None]:
        """Hold one slot for the block; wait for it (noted in ``transcript``) until ``deadline``.

        ``what`` names the slot in the transcript and the reason
        ("a run slot", "a connection slot to relay:587").

        Raises:
            SlotTimeout: no slot came free before ``deadline``.
        """
        if self.in_use < self._limit and not self._waiters:
            self.in_use += 1
        else:
            await self._wait(what, transcript, deadline)
        try:
            yield
        finally:
            self.in_use -= 1
            self._wake()

    async def _wait(self, what: str, transcript: Transcript, deadline: float) -> None:
        """Queue for a slot; on return the slot is this caller's.

        Raises:
            SlotTimeout: ``deadline`` passed first.
        """
        ahead = self.waiting
        transcript.note(
            f"waiting for {what} ({self.in_use} in use of {self._limit}, {ahead} waiting)"
        )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        started = time.monotonic()
        self.observer.slot_wait_started(self.kind)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed a slot in the same turn as the timeout or cancellation: give it on.
                self.in_use -= 1
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            self._wake()
            if not isinstance(exc, TimeoutError):
                raise
            reason = (
                f"no free {what.removeprefix('a ')} within the deadline "
                f"(waited {time.monotonic() - started:.1f}s; "
                f"{self.in_use} in use, {self.waiting} waiting)"
            )
            transcript.note(reason)
            raise SlotTimeout(reason) from None
        finally:
            self.observer.slot_wait_ended(self.kind)
        transcript.note(f"got {what} after {time.monotonic() - started:.3f}s")

    def _wake(self) -> None:
        """Hand free slots to the oldest waiters still waiting."""
        while self._waiters and self.in_use < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)


def _loop_time(deadline: float) -> float:
    """``deadline`` (``time.monotonic``) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def server_identity(server: SmtpServer) -> tuple[str, int] | tuple[str, str]:
    """Which connection limit ``server`` counts against: host and port, or ``mx`` and domain."""
    if server.mx:
        return ("mx", server.host.lower())
    return (server.host.lower(), server.port)


class Slots:
    """The daemon's limits: one run limiter, one connection limiter per server identity."""

    def __init__(
        self,
        max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS,
        *,
        observer: SlotObserver | None = None,
    ) -> None:
        self.observer = observer or _Unobserved()
        self.runs = Limiter(max_concurrent_runs, kind=RUN, observer=self.observer)
        self._servers: dict[object, Limiter] = {}
        self._limits: dict[object, int] = {}

    def configure(self, max_concurrent_runs: int, servers: Iterable[SmtpServer]) -> None:
        """Apply (re)loaded limits: runs, and each server identity's (the smallest given for it).

        Runs holding a slot keep it; the new limits apply to the slots taken next.
        """
        self.runs.limit = max_concurrent_runs
        limits: dict[object, int] = {}
        for server in servers:
            key = server_identity(server)
            limits[key] = min(limits.get(key, server.max_connections), server.max_connections)
        self._limits = limits
        for known, limiter in self._servers.items():
            if known in limits:
                limiter.limit = limits[known]

    def connection(self, server: SmtpServer) -> Limiter:
        """The connection limiter of ``server``'s identity (made on first use)."""
        key = server_identity(server)
        limiter = self._servers.get(key)
        if limiter is None:
            limit = self._limits.get(key, server.max_connections)
            limiter = self._servers[key] = Limiter(limit, kind=CONNECTION, observer=self.observer)
        return limiter

    @asynccontextmanager
    async def connecting(
        self, server: SmtpServer, transcript: Transcript, deadline: float
    ) -> AsyncIterator[None]:
        """Hold a connection slot of ``server`` for the block (one SMTP session).

        Raises:
            SlotTimeout: no slot came free before ``deadline``.
        """
        async with self.connection(server).slot(
            f"a connection slot to {server.address}", transcript, deadline
        ):
            yield
