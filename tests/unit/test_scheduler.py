"""ProbeScheduler: one job per probe, first runs spread by name, never overlapping runs.

Schedule arithmetic is checked on a fake clock (``now=``) with a started but
paused APScheduler, so nothing fires; the overlap and stop tests use a real
``AsyncIOScheduler`` with sub-second intervals and take well under 2 s each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from smtp_probe.config.runtime import ScheduledProbe
from smtp_probe.probe.spec import ProbeSpec, SmtpServer, TlsMode
from smtp_probe.scheduler import ProbeScheduler, first_run_offset
from tests.support.waiting import eventually

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def probe(name: str, interval: float = 60.0, jitter: float = 0.0) -> ScheduledProbe:
    spec = ProbeSpec(
        name=name,
        smtp=SmtpServer(host="127.0.0.1", port=25, tls=TlsMode.NONE),
        mail_from="probe@sender.test",
        rcpt_to="sink@rcpt.test",
        timeout=min(interval, 10.0),
    )
    return ScheduledProbe(spec=spec, interval=interval, jitter=jitter)


class FakeClock:
    """A settable ``now()`` for ProbeScheduler."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


async def never_called(name: str) -> None:
    raise AssertionError(f"the paused scheduler ran {name}")


def on_paused_scheduler(
    body: Callable[[ProbeScheduler, AsyncIOScheduler, FakeClock], None],
) -> None:
    """Run ``body`` against a ProbeScheduler on a started, paused APScheduler and a fake clock.

    Started, so jobs land in the real job store with their real next run
    times; paused, so none of them fires.
    """

    async def main() -> None:
        aps = AsyncIOScheduler(timezone=UTC)
        aps.start(paused=True)
        clock = FakeClock()
        try:
            body(ProbeScheduler(never_called, scheduler=aps, now=clock), aps, clock)
        finally:
            aps.shutdown(wait=False)

    asyncio.run(main())


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


@contextlib.asynccontextmanager
async def scheduling(
    run: Callable[[str], Coroutine[Any, Any, None]], *probes: ScheduledProbe
) -> AsyncIterator[ProbeScheduler]:
    """A started real-time ProbeScheduler for ``probes``; stopped at once if the body did not."""
    sched = ProbeScheduler(run)
    sched.apply(list(probes))
    sched.start()
    try:
        yield sched
    finally:
        if sched.running:
            await sched.stop(grace=0.0)


# ---------------------------------------------------------------- first_run_offset


def test_first_run_offset_is_the_same_in_a_fresh_process_with_another_hash_seed() -> None:
    """A probe keeps its phase across restarts (no per-process salted ``hash()``)."""
    names = ["relay-to-inbox", "a", "probe-42", "Ünïcode-is-not-allowed-but-hashable"]
    code = (
        "from smtp_probe.scheduler import first_run_offset\n"
        f"print([first_run_offset(n, 60.0) for n in {names!r}])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }

    assert outputs == {str([first_run_offset(n, 60.0) for n in names])}


def test_first_run_offset_is_within_the_first_interval() -> None:
    for interval in (0.2, 1.0, 60.0, 3600.0):
        for index in range(1000):
            offset = first_run_offset(f"probe-{index}", interval)
            assert 0.0 <= offset < interval, (index, interval, offset)


def test_first_run_offsets_of_many_probes_spread_over_the_interval() -> None:
    """100 probes are not all at second zero: they cover at least 8 of the 10 tenths."""
    interval = 60.0
    offsets = [first_run_offset(f"probe-{index}", interval) for index in range(100)]

    tenths = {int(offset / interval * 10) for offset in offsets}

    assert len(tenths) >= 8, sorted(tenths)
    assert len(set(offsets)) > 90


# ---------------------------------------------------------------- apply (fake clock)


def test_apply_creates_one_job_per_probe_named_by_the_probe() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha"), probe("beta"), probe("gamma")])

        assert sorted(job.id for job in aps.get_jobs()) == ["alpha", "beta", "gamma"]

    on_paused_scheduler(body)


def test_apply_creates_jobs_that_allow_one_instance_and_coalesce_missed_runs() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha")])

        job = aps.get_job("alpha")
        assert job.max_instances == 1
        assert job.coalesce is True

    on_paused_scheduler(body)


def test_apply_uses_the_configured_interval_and_jitter() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha", interval=45.0, jitter=3.0)])

        trigger = aps.get_job("alpha").trigger
        assert trigger.interval == timedelta(seconds=45)
        assert trigger.jitter == 3.0

    on_paused_scheduler(body)


def test_apply_with_zero_jitter_schedules_without_jitter() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha", interval=45.0, jitter=0.0)])

        assert not aps.get_job("alpha").trigger.jitter

    on_paused_scheduler(body)


def test_apply_schedules_the_first_run_at_now_plus_the_name_offset() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha", interval=60.0), probe("beta", interval=600.0)])

        assert sched.next_run("alpha") == T0 + timedelta(seconds=first_run_offset("alpha", 60.0))
        assert sched.next_run("beta") == T0 + timedelta(seconds=first_run_offset("beta", 600.0))

    on_paused_scheduler(body)


def test_apply_again_with_an_unchanged_probe_keeps_its_next_run_time() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha", interval=60.0, jitter=2.0)])
        before = sched.next_run("alpha")
        clock.advance(25)

        sched.apply([probe("alpha", interval=60.0, jitter=2.0), probe("beta")])

        assert sched.next_run("alpha") == before

    on_paused_scheduler(body)


def test_apply_with_a_changed_interval_reschedules_the_probe() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha", interval=60.0)])
        clock.advance(25)

        sched.apply([probe("alpha", interval=300.0)])

        assert aps.get_job("alpha").trigger.interval == timedelta(seconds=300)
        assert sched.next_run("alpha") == clock.at + timedelta(
            seconds=first_run_offset("alpha", 300.0)
        )
        assert len(aps.get_jobs()) == 1

    on_paused_scheduler(body)


def test_apply_with_a_changed_jitter_updates_the_trigger() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha", interval=60.0, jitter=1.0)])

        sched.apply([probe("alpha", interval=60.0, jitter=7.0)])

        assert aps.get_job("alpha").trigger.jitter == 7.0

    on_paused_scheduler(body)


def test_apply_without_a_probe_removes_its_job_and_keeps_the_others() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha"), probe("beta")])
        beta_next = sched.next_run("beta")

        sched.apply([probe("beta")])

        assert [job.id for job in aps.get_jobs()] == ["beta"]
        assert sched.next_run("alpha") is None
        assert sched.next_run("beta") == beta_next

    on_paused_scheduler(body)


def test_a_probe_removed_and_added_back_is_scheduled_again() -> None:
    def body(sched: ProbeScheduler, aps: AsyncIOScheduler, clock: FakeClock) -> None:
        sched.apply([probe("alpha")])
        sched.apply([])
        clock.advance(5)

        sched.apply([probe("alpha")])

        assert sched.next_run("alpha") == clock.at + timedelta(
            seconds=first_run_offset("alpha", 60.0)
        )

    on_paused_scheduler(body)


# ---------------------------------------------------------------- real time


class RunRecorder:
    """A ``run`` coroutine that sleeps ``seconds`` and records concurrency per probe."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.started: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}

    async def __call__(self, name: str) -> None:
        self.started[name] = self.started.get(name, 0) + 1
        self.active[name] = self.active.get(name, 0) + 1
        self.max_active[name] = max(self.max_active.get(name, 0), self.active[name])
        try:
            await asyncio.sleep(self.seconds[name])
        except asyncio.CancelledError:
            self.cancelled[name] = self.cancelled.get(name, 0) + 1
            raise
        finally:
            self.active[name] -= 1
        self.finished[name] = self.finished.get(name, 0) + 1


def test_a_run_longer_than_the_interval_never_overlaps_the_next_one() -> None:
    recorder = RunRecorder({"slow": 0.7})

    async def main() -> None:
        async with scheduling(recorder, probe("slow", interval=0.2)):
            await asyncio.sleep(1.5)

    run_async(main)

    assert recorder.started["slow"] >= 2
    assert recorder.max_active["slow"] == 1


def test_skipped_counts_the_runs_that_could_not_start_for_that_probe_only() -> None:
    """A 0.7 s run on a 0.2 s interval skips several runs; a quick probe beside it skips none."""
    recorder = RunRecorder({"slow": 0.7, "quick": 0.01})

    async def main() -> None:
        async with scheduling(
            recorder, probe("slow", interval=0.2), probe("quick", interval=0.2)
        ) as sched:
            await asyncio.sleep(1.5)
        skipped.update(sched.skipped)

    skipped: dict[str, int] = {}
    run_async(main)

    assert skipped.get("slow", 0) >= 2
    assert skipped.get("quick", 0) == 0
    assert recorder.started["quick"] >= 4


@dataclass(frozen=True)
class Stopped:
    """What a ``stop(grace=...)`` took, and the runs' state at the moment it returned."""

    seconds: float
    active: dict[str, int]
    finished: dict[str, int]
    cancelled: dict[str, int]


def stop_while_a_run_is_in_progress(run_seconds: float, grace: float) -> Stopped:
    """Schedule ``alpha`` (runs of ``run_seconds``), stop with ``grace`` while it runs."""
    recorder = RunRecorder({"alpha": run_seconds})
    stopped: list[Stopped] = []

    async def main() -> None:
        async with scheduling(recorder, probe("alpha", interval=0.2)) as sched:
            await eventually(lambda: recorder.active.get("alpha", 0) == 1)
            began = time.monotonic()
            await sched.stop(grace=grace)
            stopped.append(
                Stopped(
                    seconds=time.monotonic() - began,
                    active=dict(recorder.active),
                    finished=dict(recorder.finished),
                    cancelled=dict(recorder.cancelled),
                )
            )

    run_async(main)
    return stopped[0]


def test_stop_lets_a_run_in_progress_finish_within_the_grace() -> None:
    stopped = stop_while_a_run_is_in_progress(run_seconds=0.3, grace=2.0)

    assert stopped.finished == {"alpha": 1}, "stop returned before the run finished"
    assert stopped.cancelled == {}
    assert stopped.seconds < 1.0, "stop waited for the whole grace, not just the run"


def test_stop_cancels_a_run_that_outlasts_the_grace() -> None:
    stopped = stop_while_a_run_is_in_progress(run_seconds=10.0, grace=0.3)

    assert stopped.cancelled == {"alpha": 1}
    assert stopped.finished == {}
    assert 0.25 <= stopped.seconds < 1.0


def test_stop_returns_only_after_a_cancelled_run_has_unwound() -> None:
    stopped = stop_while_a_run_is_in_progress(run_seconds=10.0, grace=0.2)

    assert stopped.active == {"alpha": 0}
    assert stopped.cancelled == {"alpha": 1}


def test_no_run_starts_while_stop_waits_for_a_run_in_progress() -> None:
    """During the grace period other probes' runs do not start (the schedule is paused)."""
    recorder = RunRecorder({"slow": 0.6, "quick": 0.01})

    async def main() -> None:
        async with scheduling(
            recorder, probe("slow", interval=0.2), probe("quick", interval=0.1)
        ) as sched:
            await eventually(
                lambda: (
                    recorder.active.get("slow", 0) == 1 and recorder.finished.get("quick", 0) >= 1
                )
            )
            quick_runs = recorder.started["quick"]
            await sched.stop(grace=2.0)
            assert recorder.finished.get("slow") == 1
            assert recorder.started["quick"] == quick_runs

    run_async(main)


def test_no_run_starts_after_stop() -> None:
    recorder = RunRecorder({"alpha": 0.01})

    async def main() -> None:
        async with scheduling(recorder, probe("alpha", interval=0.2)) as sched:
            await eventually(lambda: recorder.finished.get("alpha", 0) >= 1)
            await sched.stop(grace=1.0)
            started = recorder.started["alpha"]
            await asyncio.sleep(0.6)
            assert recorder.started["alpha"] == started

    run_async(main)


def test_running_is_false_once_stop_returns() -> None:
    """Not a loop turn later: APScheduler's own shutdown is deferred."""

    async def main() -> None:
        async with scheduling(never_called, probe("alpha", interval=60.0)) as sched:
            assert sched.running

            await sched.stop(grace=1.0)

            assert not sched.running

    run_async(main)


def test_jitter_does_not_accumulate_runs_stay_on_the_interval_grid() -> None:
    """APScheduler's own trigger drifts by jitter/2 per run; ours plans from a fixed grid."""
    from smtp_probe.scheduler import GridIntervalTrigger

    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = GridIntervalTrigger(seconds=10, start_date=start, jitter=5, timezone=UTC)
    fire = start
    for step in range(1, 200):
        following = trigger.get_next_fire_time(fire, fire)
        assert following is not None
        fire = following
        offset = (fire - start).total_seconds() - step * 10
        assert 0 <= offset <= 5, f"run {step} is {offset:.2f}s off its grid point"


def test_a_fire_time_exactly_on_the_grid_moves_on_by_one_interval() -> None:
    """Float error must not make the trigger return the same time again (a busy loop)."""
    from smtp_probe.scheduler import GridIntervalTrigger

    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = GridIntervalTrigger(seconds=0.2, start_date=start, timezone=UTC)
    fire = start
    for step in range(1, 500):
        following = trigger.get_next_fire_time(fire, fire)
        assert following is not None
        assert following > fire
        fire = following
        assert abs((fire - start).total_seconds() - step * 0.2) < 1e-3
