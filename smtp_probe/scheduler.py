"""One APScheduler job per probe: interval with jitter, first runs spread, never overlapping.

The daemon keeps two of these: one for delivery runs and one for DNS checks
(each probe with ``dns_checks`` has its own job on ``dns_interval``), so a
slow DNS job never holds up a delivery run.

The scheduler knows only names and timing; what a run does is the caller's
``run`` coroutine, which looks the probe up in the current config when it
starts, so a reload that changes a route takes effect at the next run
without touching the schedule.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from smtp_probe import log
from smtp_probe.config.runtime import ScheduledProbe

_LOG: Final = log.get(__name__)


class GridIntervalTrigger(IntervalTrigger):  # type: ignore[misc]
    """An interval trigger whose jitter does not accumulate.

    APScheduler 3 adds each run's jitter to the previous, already jittered,
    fire time, so a probe drifts by ``jitter / 2`` per run on average (25 %
    fewer runs than configured at 10 s +- 5 s). Here every run is planned
    from the grid ``start_date + k * interval`` and jittered once.
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The next run: one interval after the *grid point* of the previous run, jittered."""
        if previous_fire_time is not None:
            start = self.start_date.timestamp()
            # The epsilon keeps a fire time that is exactly on the grid on its own
            # step despite float error (else the same time would come back forever).
            elapsed = previous_fire_time.timestamp() - start
            steps = math.floor(elapsed / self.interval_length + 1e-6)
            previous_fire_time = datetime.fromtimestamp(
                start + max(steps, 0) * self.interval_length, tz=self.timezone
            )
        next_time: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        return next_time


def first_run_offset(name: str, interval: float) -> float:
    """Where in its first interval a probe first runs: a stable fraction of it.

    A hash of the name spreads probes evenly over the interval and keeps
    each probe's phase the same across restarts, instead of every probe
    firing at second zero against the same servers.
    """
    return (zlib.crc32(name.encode()) / 2**32) * interval


class ProbeScheduler:
    """Keeps exactly one job per configured probe and runs ``run(name)`` on schedule."""

    def __init__(
        self,
        run: Callable[[str], Awaitable[None]],
        *,
        scheduler: AsyncIOScheduler | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        first_within: float | None = None,
        kind: str = "run",
    ) -> None:
        """Jobs call ``run(name)``; ``first_within`` caps the spread of the first runs.

        Without it a probe first runs somewhere in its first interval; with
        it, within ``first_within`` seconds of being scheduled (a slow job,
        like the DNS checks every 15 minutes, still reports soon after a
        start). ``kind`` names the jobs in logs ("run", "dns checks").
        """
        self._run = run
        self._first_within = first_within
        self._kind = kind
        self._scheduler = scheduler or AsyncIOScheduler(timezone=UTC)
        self._now = now
        self._timing: dict[str, tuple[float, float]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._started = False
        self.skipped: dict[str, int] = {}
        """Runs skipped because the previous run of the probe was still going."""
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        # Our own flag: APScheduler finishes its shutdown on a later loop turn.
        return self._started and bool(self._scheduler.running)

    def start(self) -> None:
        """Start firing jobs; needs a running event loop."""
        self._scheduler.start()
        self._started = True

    def apply(self, probes: Iterable[ScheduledProbe]) -> None:
        """Make the jobs match ``probes``: add new ones, reschedule changed, remove gone ones."""
        wanted = {p.spec.name: (p.interval, p.jitter) for p in probes}
        for name in self._timing.keys() - wanted.keys():
            self._scheduler.remove_job(name)
            del self._timing[name]
            self.skipped.pop(name, None)
        for name, timing in wanted.items():
            if self._timing.get(name) == timing:
                continue
            interval, jitter = timing
            spread = interval if self._first_within is None else min(interval, self._first_within)
            first = self._now() + timedelta(seconds=first_run_offset(name, spread))
            self._scheduler.add_job(
                self._job,
                GridIntervalTrigger(
                    seconds=interval, start_date=first, jitter=jitter or None, timezone=UTC
                ),
                args=[name],
                id=name,
                name=f"probe {name}" if self._kind == "run" else f"{self._kind} {name}",
                replace_existing=True,
                next_run_time=first,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval)),
            )
            self._timing[name] = timing

    def next_run(self, name: str) -> datetime | None:
        """When the probe runs next, if it is scheduled."""
        job = self._scheduler.get_job(name)
        return job.next_run_time if job is not None else None

    async def stop(self, grace: float) -> None:
        """Stop scheduling, let runs in progress finish for up to ``grace`` seconds, then stop.

        APScheduler's own shutdown cancels running coroutine jobs, so the
        runs are awaited here first.
        """
        self._started = False
        if self._scheduler.running:
            self._scheduler.pause()
        if self._running:
            _LOG.info("waiting for runs in progress", runs=len(self._running), grace=grace)
            _done, pending = await asyncio.wait(set(self._running), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                # Let cancelled runs unwind (and clean up) before the caller
                # closes the mailbox watchers they use.
                await asyncio.wait(pending, timeout=5.0)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def _job(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self._run(name)
        except asyncio.CancelledError:
            # Stopping: a cancelled run is a normal end, not a job error for
            # APScheduler to log with a traceback.
            _LOG.info(f"{self._kind} cancelled at shutdown", probe=name)
        finally:
            if task is not None:
                self._running.discard(task)

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        self.skipped[event.job_id] = self.skipped.get(event.job_id, 0) + 1
        _LOG.warning(
            f"{self._kind} skipped: previous {self._kind} still in progress", probe=event.job_id
        )
