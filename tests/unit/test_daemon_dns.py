"""The daemon plans each probe's DNS checks as their own job: dns_interval, soon after start.

The jobs' effect (real checks against Knot, the status page, the log) is
tested end to end in tests/e2e/test_dns_checks_wiring.py; here the plan.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from smtp_probe.app import DNS_FIRST_RUN_WITHIN, Daemon, dns_jobs
from smtp_probe.config import parse_config
from smtp_probe.config.runtime import Config
from smtp_probe.scheduler import ProbeScheduler, first_run_offset
from tests.unit.test_scheduler import T0, FakeClock, never_called, probe

# Port 9 on loopback: a DNS round that fires during a test fails locally and fast.
_HEAD = """\
dns: {nameservers: ["127.0.0.1:9"], timeout: 500ms}
defaults: {interval: 1h, jitter: 10s}
smtp_servers:
  relay: {host: 127.0.0.1, port: 9, tls: none}
probes:
"""


def _config(*probes: str) -> Config:
    return parse_config(_HEAD + "".join(f"  - {p}\n" for p in probes))


A = "{name: a, smtp: relay, from: a@x.test, to: b@y.test, dns_checks: [mx]}"
B = "{name: b, smtp: relay, from: a@x.test, to: b@y.test, dns_interval: 4s, dns_checks: [spf]}"
C = "{name: c, smtp: relay, from: a@x.test, to: b@y.test}"


def test_a_job_per_probe_with_dns_checks_on_its_dns_interval_with_capped_jitter() -> None:
    jobs = {job.name: (job.interval, job.jitter) for job in dns_jobs(_config(A, B, C))}
    assert jobs == {"a": (900.0, 10.0), "b": (4.0, 2.0)}


def test_the_first_dns_round_comes_within_first_within_not_within_the_interval() -> None:
    async def main() -> None:
        aps = AsyncIOScheduler(timezone=UTC)
        aps.start(paused=True)
        try:
            sched = ProbeScheduler(never_called, scheduler=aps, now=FakeClock(), first_within=30)
            sched.apply([probe("alpha", interval=900.0), probe("beta", interval=10.0)])
            assert sched.next_run("alpha") == T0 + timedelta(
                seconds=first_run_offset("alpha", 30.0)
            )
            assert sched.next_run("beta") == T0 + timedelta(seconds=first_run_offset("beta", 10.0))
        finally:
            aps.shutdown(wait=False)

    asyncio.run(main())


def test_reload_adds_and_removes_dns_jobs_and_never_touches_the_delivery_jobs() -> None:
    loads = iter([_config(B, C)])

    async def main() -> None:
        daemon = Daemon(_config(A, C), load=lambda: next(loads))
        await daemon.start()
        try:
            first = daemon.dns_scheduler.next_run("a")
            assert first is not None
            assert daemon.dns_scheduler.next_run("c") is None
            assert (first - first.now(UTC)).total_seconds() <= DNS_FIRST_RUN_WITHIN
            delivery = {name: daemon.scheduler.next_run(name) for name in ("a", "c")}
            assert all(delivery.values())

            applied, _ = await daemon.reload()
            assert applied
            assert daemon.dns_scheduler.next_run("a") is None
            assert daemon.dns_scheduler.next_run("b") is not None
            assert daemon.dns_scheduler.next_run("c") is None
            assert daemon.scheduler.next_run("c") == delivery["c"]
            assert daemon.scheduler.next_run("b") is not None
            assert [p.dns_checks for p in daemon.status().probes] == [("spf",), ()]
        finally:
            await daemon.stop(grace=5)

    asyncio.run(main())
