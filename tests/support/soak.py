"""The fault soak: a real daemon runs probes while faults are switched on and off, then checked.

What: :func:`run_soak` starts ``python -m smtp_probe run`` (a real process)
with several probes at a short interval on a running
:class:`~tests.support.mailstack.MailStack`, then follows a schedule: a
healthy warm-up, then each fault of :mod:`tests.support.faults` on for a
window and healed for a gap, cycling until the planned duration is used. It
samples the daemon's RSS, threads, file descriptors and CPU from
``/proc/<pid>`` once a second, drains Postfix's queue at the end, stops the
daemon with SIGTERM and looks for probe messages left in the mailbox.
:class:`SoakReport` holds every run (from the daemon's structured ``run
finished`` log lines) and judges them:

* **attribution**: a run that starts ``settle`` seconds or more after a
  fault was switched on and ends before it is switched off reports exactly
  the fault's :class:`~tests.support.faults.Expect` (outcome, stage, reply
  class); every fault window has at least one such run;
* **heal**: a run that starts ``heal_grace`` seconds or more after a heal
  (or after the warm-up began) and ends before the next fault is delivered;
* **deadline**: no run lasts longer than its timeout (plus ``slack``);
* **leftovers**: nothing in Postfix's queue, no probe message in the mailbox;
* **flat resources**: threads and file descriptors at the end no more than
  at the start (both sampled with no fault on), RSS grown by no more than
  ``rss_growth_limit``.

Runs that straddle a switch are in no window: their outcome depends on the
instant of the switch, so they are only held to their deadline.

Why a shared module: ``bench/bench_soak.py`` runs it for many minutes and
prints the figures; ``tests/e2e/test_fault_soak.py`` runs a short schedule in
CI with the same checks as asserts.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.support.daemon_proc import Daemon, event_time, log_events, spawn_daemon, stop_daemon
from tests.support.faults import HEALTHY, RECIPIENT, SENDER, Fault, all_faults, by_name, drain
from tests.support.mailstack import MailStack
from tests.support.routes import probe_messages

FAULT_NAMES: Final = (
    "deferred_delivery",
    "slow_delivery",
    "rejected_recipient",
    "tempfail",
    "wrong_password",
    "imap_down",
    "smtp_down",
)
"""Every fault, in the order a schedule cycles through them."""
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
_LATE: Final = re.compile(r"^smtp_probe_late_messages_total\{[^}]*\} ([0-9.e+]+)$", re.M)
_COUNTED: Final = re.compile(
    r'^smtp_probe_(outcomes|failures)_total\{[^}]*?(?:outcome|stage)="([a-z_]+)"[^}]*\} ([0-9.e+]+)$',
    re.M,
)


@dataclass(frozen=True, slots=True)
class SoakPlan:
    """The schedule and the daemon's probes (see the module docstring for the checks)."""

    faults: tuple[str, ...] = FAULT_NAMES
    window: float = 30.0
    """Seconds each fault stays on (counted from when it took effect)."""
    gap: float = 15.0
    """Healthy seconds after each heal, and of the warm-up before the first fault."""
    duration: float = 0.0
    """Seconds of the whole schedule, cycling through ``faults``; 0: each fault once."""
    probes: int = 24
    interval: float = 6.0
    """Each probe's interval; the daemon caps ``timeout`` at it, so it must be at least that."""
    jitter: float = 0.5
    timeout: float = 6.0
    slow_seconds: float = 2.0
    """The slow next hop's delay (below ``timeout``)."""
    settle: float = 0.5
    heal_grace: float = 2.0
    slack: float = 0.5
    """Seconds a run may end after its timeout before it counts as past its deadline."""
    rss_growth_limit: float = 8 * 2**20
    drain_timeout: float = 30.0
    pin_core: int | None = None
    """Pin every thread of the daemon to this core (the caller pins itself elsewhere)."""

    def __post_init__(self) -> None:
        """Refuse a plan whose checks could not hold.

        Raises:
            ValueError: a fault name is unknown, the slow hop is not faster than the deadline, or the
                timeout is above the interval (the daemon caps it there).
        """
        unknown = sorted(set(self.faults) - set(FAULT_NAMES))
        if unknown or not self.faults:
            raise ValueError(f"unknown or no faults {unknown}; known: {list(FAULT_NAMES)}")
        if self.slow_seconds >= self.timeout:
            raise ValueError("slow_seconds must be below timeout: a slow run must still deliver")
        if self.timeout > self.interval:
            raise ValueError("timeout must not exceed interval (the daemon caps it there)")


@dataclass(frozen=True, slots=True)
class Switch:
    """One fault window: when it was switched on, took effect, was healed and healed."""

    fault: str
    on_at: float
    on_done: float
    off_at: float
    off_done: float


@dataclass(frozen=True, slots=True)
class Sample:
    """The daemon process at one instant (``/proc/<pid>``)."""

    at: float
    rss: int
    threads: int
    fds: int
    cpu: float


@dataclass(frozen=True, slots=True)
class Run:
    """One ``run finished`` log event, with its start and end as Unix time."""

    start: float
    end: float
    event: dict[str, Any]

    @property
    def duration(self) -> float:
        """``duration_seconds`` as logged."""
        return float(self.event.get("duration_seconds") or 0.0)

    def label(self) -> str:
        """``outcome@stage`` as the tables show it."""
        stage = self.event.get("stage")
        return f"{self.event.get('outcome')}@{stage}" if stage else str(self.event.get("outcome"))


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """What the runs inside one fault window reported."""

    switch: Switch
    expected: str
    runs: int
    seen: dict[str, int]
    misattributed: list[str]
    """One line per run that reported something else than expected."""
    healed_runs: int
    """Runs that started ``heal_grace`` after this heal and ended before the next switch."""
    not_delivered_after_heal: list[str]
    last_failure_after_heal: float | None
    """Seconds after the heal that the latest failed run started (grace or not); None: none."""


@dataclass
class SoakReport:
    """Everything the soak saw, and its verdicts (:meth:`failures`)."""

    plan: SoakPlan
    started: float
    ended: float
    switches: list[Switch]
    runs: list[Run]
    samples: list[Sample]
    baseline: Sample
    """Sampled at the end of the warm-up, before the first fault."""
    final: Sample
    """Sampled after the last heal's gap and the queue drain, before the daemon stopped."""
    skipped: int
    late_messages: float
    queue_left: list[dict[str, object]]
    mailbox_left: int
    daemon_exit: int | None
    miscounted: list[str]
    """Where ``/metrics`` (outcomes, failures by stage) disagreed with the logged runs."""
    counted: dict[str, float]
    """``/metrics`` at the end: ``outcome:NAME`` and ``stage:NAME`` counters, over all probes."""
    windows: list[WindowVerdict] = field(default_factory=list)
    warmup_runs: int = 0
    warmup_not_delivered: list[str] = field(default_factory=list)

    @property
    def past_deadline(self) -> list[Run]:
        """Runs that lasted longer than their timeout plus the slack."""
        limit = self.plan.timeout + self.plan.slack
        return [run for run in self.runs if run.duration > limit]

    @property
    def cpu_seconds(self) -> float:
        """The daemon's CPU (all threads, user + system) from the baseline to the end."""
        return self.final.cpu - self.baseline.cpu

    @property
    def runs_measured(self) -> int:
        """Runs that finished between the baseline and the final sample."""
        return sum(1 for run in self.runs if self.baseline.at <= run.end <= self.final.at)

    @property
    def cpu_per_run(self) -> float:
        """CPU seconds per run between the baseline and the final sample (NaN for none)."""
        runs = self.runs_measured
        return self.cpu_seconds / runs if runs else math.nan

    def peak(self, what: str) -> int:
        """The largest sampled ``rss``, ``threads`` or ``fds``."""
        return max((int(getattr(sample, what)) for sample in self.samples), default=0)

    def failures(self) -> list[str]:
        """Every failed check, one line each; empty when the soak passed."""
        failed: list[str] = []
        for verdict in self.windows:
            name = verdict.switch.fault
            if verdict.runs == 0:
                failed.append(f"{name}: no run started and ended inside the window")
            failed += [f"{name}: misattributed: {line}" for line in verdict.misattributed]
            failed += [f"after {name}: {line}" for line in verdict.not_delivered_after_heal]
            if verdict.healed_runs == 0:
                failed.append(f"after {name}: no run started after the heal's grace")
        failed += [f"warm-up: {line}" for line in self.warmup_not_delivered]
        failed += [
            f"past deadline: {run.event.get('probe')} {run.label()} {run.duration:.2f} s"
            for run in self.past_deadline
        ]
        if self.queue_left:
            failed.append(f"Postfix queue not empty: {len(self.queue_left)} message(s)")
        if self.mailbox_left:
            failed.append(f"{self.mailbox_left} probe message(s) left in the mailbox")
        if self.final.threads > self.baseline.threads:
            failed.append(f"threads grew: {self.baseline.threads} -> {self.final.threads}")
        if self.final.fds > self.baseline.fds:
            failed.append(f"file descriptors grew: {self.baseline.fds} -> {self.final.fds}")
        if self.final.rss - self.baseline.rss > self.plan.rss_growth_limit:
            failed.append(
                f"RSS grew {(self.final.rss - self.baseline.rss) / 2**20:.1f} MiB "
                f"(limit {self.plan.rss_growth_limit / 2**20:.1f} MiB)"
            )
        failed += [f"metrics: {line}" for line in self.miscounted]
        if self.daemon_exit != 0:
            failed.append(f"daemon exit status {self.daemon_exit} after SIGTERM")
        return failed


def config_text(stack: MailStack, workdir: Path, plan: SoakPlan) -> str:
    """The daemon's config: ``plan.probes`` probes, submission (STARTTLS + AUTH) to sink's INBOX."""
    (workdir / "smtp").write_text(stack.users[SENDER] + "\n")
    (workdir / "token").write_text("a-soak-token-secret-of-enough-length\n")
    lines = [
        f"defaults: {{interval: {plan.interval * 1000:.0f}ms, timeout: {plan.timeout * 1000:.0f}ms,"
        f" jitter: {plan.jitter * 1000:.0f}ms}}",
        f"token_secret_file: {workdir / 'token'}",
        "smtp_servers:",
        f"  submission: {{host: 127.0.0.1, port: {stack.submission_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}, username: {SENDER}, password_file: {workdir / 'smtp'}}}",
        "mailboxes:",
        f"  sink: {{host: 127.0.0.1, port: {stack.imaps_port}, tls: tls, ca_file: {stack.ca_file},"
        f" username: {RECIPIENT}, password: '${{SINK_PASSWORD}}'}}",
        "probes:",
    ]
    lines += [
        f"  - {{name: soak-{i:02d}, smtp: submission, mailbox: sink, from: {SENDER},"
        f" to: {RECIPIENT}}}"
        for i in range(plan.probes)
    ]
    return "\n".join(lines) + "\n"


def sample(pid: int) -> Sample:
    """RSS, thread count, open file descriptors and CPU seconds of ``pid`` now.

    Raises:
        OSError: the process is gone.
    """
    at = time.time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_SIZE
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return Sample(at, rss, threads, fds, cpu)


class _Sampler:
    """Samples the daemon once a second in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError):
                self.samples.append(sample(self.pid))

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def _pin(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` (and so the threads it starts later) to ``core``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), {core})


def _logged_counts(log: Path) -> dict[str, int]:
    """Runs logged so far by ``outcome:NAME`` and, for failed ones, ``stage:NAME``."""
    counts: dict[str, int] = {}
    for event in log_events(log):
        if event.get("event") != "run finished":
            continue
        keys = [f"outcome:{event.get('outcome')}"]
        if event.get("stage"):
            keys.append(f"stage:{event['stage']}")
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
    return counts


def _counted(daemon: Daemon) -> tuple[dict[str, float], list[str], float]:
    """Compare ``/metrics`` with the log: (counters, disagreements, late messages deleted).

    Counters are keyed like :func:`_logged_counts`, summed over the probes.

    The daemon updates its metrics and then logs the run, in one step of its
    event loop, so every counter lies between the log's count just before
    the scrape and its count a moment after it.
    """
    before = _logged_counts(daemon.log)
    status, body = daemon.get("/metrics")
    time.sleep(1.0)
    after = _logged_counts(daemon.log)
    if status != 200:
        return {}, [f"/metrics answered {status}"], math.nan
    metrics: dict[str, float] = {}
    for family, label, value in _COUNTED.findall(body):
        key = f"{'outcome' if family == 'outcomes' else 'stage'}:{label}"
        metrics[key] = metrics.get(key, 0.0) + float(value)
    wrong = [
        f"{key}: /metrics {metrics.get(key, 0.0):g}, log {before.get(key, 0)}..{after.get(key, 0)}"
        for key in sorted(set(metrics) | set(after))
        if not before.get(key, 0) <= metrics.get(key, 0.0) <= after.get(key, 0)
    ]
    return metrics, wrong, sum(float(value) for value in _LATE.findall(body))


def run_soak(
    stack: MailStack,
    workdir: Path,
    plan: SoakPlan,
    *,
    say: Callable[[str], None] = print,
) -> SoakReport:
    """Run the soak of ``plan`` on the started ``stack`` (see the module docstring).

    ``say`` gets one line per switch, for a human watching. The stack is left
    healed; the daemon is stopped whatever happens.

    Raises:
        ValueError: ``plan.faults`` names an unknown fault.
        tests.support.faults.FaultError: a fault could not be switched.
        AssertionError: the daemon did not start.
    """
    all_of_them, close_faults = all_faults(stack, slow_seconds=plan.slow_seconds)
    order = by_name(all_of_them, plan.faults)
    daemon = spawn_daemon(
        workdir,
        config_text(stack, workdir, plan),
        args=["--log-level", "info"],
        env={"SINK_PASSWORD": stack.users[RECIPIENT]},
    )
    pid = daemon.proc.pid
    if plan.pin_core is not None:
        _pin(pid, plan.pin_core)
    sampler = _Sampler(pid)
    switches: list[Switch] = []
    active: Fault | None = None
    try:
        started = time.time()
        say(f"warm-up {plan.gap:.0f} s, {plan.probes} probes every {plan.interval:g} s")
        time.sleep(plan.gap)
        baseline = sample(pid)
        for fault in _schedule(order, plan):
            on_at = time.time()
            active = fault
            fault.on()
            on_done = time.time()
            say(f"{fault.name}: on ({on_done - on_at:.1f} s to take effect)")
            time.sleep(plan.window)
            off_at = time.time()
            fault.off()
            active = None
            off_done = time.time()
            say(f"{fault.name}: healed ({off_done - off_at:.1f} s)")
            switches.append(Switch(fault.name, on_at, on_done, off_at, off_done))
            time.sleep(plan.gap)
        queue_left = drain(stack, plan.drain_timeout)
        # the last late arrivals: the watcher deletes them on its next look
        time.sleep(2.0)
        final = sample(pid)
        counted, miscounted, late = _counted(daemon)
    finally:
        if active is not None:
            with contextlib.suppress(Exception):
                active.off()
        stop_daemon(daemon)
        samples = sampler.stop()
        close_faults()
    ended = time.time()
    logged = list(log_events(daemon.log))
    runs = [
        Run(event_time(e) - float(e.get("duration_seconds") or 0.0), event_time(e), e)
        for e in logged
        if e.get("event") == "run finished"
    ]
    report = SoakReport(
        plan=plan,
        started=started,
        ended=ended,
        switches=switches,
        runs=runs,
        samples=samples,
        baseline=baseline,
        final=final,
        skipped=sum(1 for e in logged if str(e.get("event", "")).startswith("run skipped")),
        late_messages=late,
        queue_left=queue_left or stack.queue(),
        mailbox_left=len(probe_messages(stack)),
        daemon_exit=daemon.proc.returncode,
        miscounted=miscounted,
        counted=counted,
    )
    _judge(report, {fault.name: fault for fault in order})
    return report


def _schedule(order: Sequence[Fault], plan: SoakPlan) -> Iterator[Fault]:
    """The faults in order, cycling while the next window and gap fit in ``plan.duration``."""
    if plan.duration <= 0:
        yield from order
        return
    end = time.monotonic() + plan.duration - plan.gap  # the warm-up was part of it
    while True:
        for fault in order:
            if time.monotonic() + plan.window + plan.gap > end:
                return
            yield fault


def _judge(report: SoakReport, faults: dict[str, Fault]) -> None:
    """Fill in the window verdicts and the warm-up's (see the module docstring)."""
    plan = report.plan
    runs = report.runs
    switches = report.switches
    first_on = switches[0].on_at if switches else report.final.at
    warm = [r for r in runs if r.start >= report.started + plan.heal_grace and r.end <= first_on]
    report.warmup_runs = len(warm)
    report.warmup_not_delivered = [_line(r) for r in warm if HEALTHY.mismatch(r.event)]
    for index, switch in enumerate(switches):
        expect = faults[switch.fault].expect
        inside = [
            r for r in runs if r.start >= switch.on_done + plan.settle and r.end <= switch.off_at
        ]
        seen: dict[str, int] = {}
        for run in inside:
            seen[run.label()] = seen.get(run.label(), 0) + 1
        wrong = [f"{_line(r)} ({why})" for r in inside if (why := expect.mismatch(r.event))]
        next_on = switches[index + 1].on_at if index + 1 < len(switches) else report.final.at
        healed = [
            r for r in runs if r.start >= switch.off_done + plan.heal_grace and r.end <= next_on
        ]
        failed_after = [
            r.start - switch.off_done
            for r in runs
            if r.start >= switch.off_done and r.end <= next_on and HEALTHY.mismatch(r.event)
        ]
        report.windows.append(
            WindowVerdict(
                switch=switch,
                expected=expect.label(),
                runs=len(inside),
                seen=dict(sorted(seen.items())),
                misattributed=wrong,
                healed_runs=len(healed),
                not_delivered_after_heal=[
                    f"{_line(r)} started {r.start - switch.off_done:.1f} s after the heal"
                    for r in healed
                    if HEALTHY.mismatch(r.event)
                ],
                last_failure_after_heal=max(failed_after, default=None),
            )
        )


def _line(run: Run) -> str:
    error = str(run.event.get("error") or "")
    return f"{run.event.get('probe')} {run.label()} {error[:120]}".rstrip()
