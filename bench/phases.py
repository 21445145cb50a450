"""The measured life of one daemon against the mail stack, shared by bench_run_cpu and bench_scale.

:func:`measure_daemon` runs the phases both benchmarks have: pin this
process (and so the stack) to core 0, start a private Postfix + Dovecot,
start the daemon pinned to core 1 with the probes at a 24 h interval (none
due), measure that **idle** cost, switch to the real interval with
``POST /-/reload``, warm up, then measure a **steady window** (CPU of every
thread, RSS sampled each second, optionally py-spy), let the caller measure
something more (``after_window``), stop the daemon with SIGTERM and collect
the runs it logged inside the window. The stack, the daemon and the work
directory are cleaned up whatever happens.

The benchmarks differ only in their probes, their flags' defaults and what
they report; :func:`add_phase_arguments` and :func:`environment_rows` keep
the common flags and the common lines of their tables alike.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from bench.benchkit import (
    DAEMON_CORE,
    STACK_CORE,
    DaemonProcess,
    Route,
    Window,
    background_load,
    close_window,
    daemon_config,
    finish_py_spy,
    foreign_load,
    free_port,
    open_window,
    peak_rss_bytes,
    pin_to_stack_core,
    runs_between,
    sample_process,
    start_py_spy,
    start_stack,
    write_secrets,
)
from tests.support.daemon_proc import event_time

IDLE_INTERVAL: Final = "24h"
"""Interval of the idle phase: first runs are spread over a day, so none fall in it."""
SETTLE_SECONDS: Final = 1.0
"""Pause after start-up before the idle window, so start-up work is not counted as idle."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Plan:
    """How long each phase lasts and how the daemon schedules its probes."""

    interval: str
    jitter: str
    timeout: str
    duration: float
    """Seconds of the steady window."""
    warmup: float
    """Seconds at the real interval before the window opens."""
    idle: float
    """Seconds of the idle window (0: skip it)."""
    pin: bool = True
    keep: bool = False
    """Keep the work directory (config, daemon log) and say where it is."""
    py_spy: Path | None = None
    """Profile the steady window with py-spy into this file."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        """The plan the flags of :func:`add_phase_arguments` describe."""
        return cls(
            interval=args.interval,
            jitter=args.jitter,
            timeout=args.timeout,
            duration=args.duration,
            warmup=args.warmup,
            idle=args.idle,
            pin=not args.no_pin,
            keep=args.keep,
            py_spy=args.py_spy,
        )


@dataclass(frozen=True, slots=True)
class Measured(Generic[T]):
    """What the phases measured, for the benchmark's own report."""

    pid: int
    pinned: bool
    """Daemon on core 1, this process and the stack on core 0."""
    load_before: float
    """Busy fraction of all cores before anything started (other work on the machine)."""
    startup_seconds: float
    """From starting the daemon to ``/-/ready`` answering 200."""
    rss_startup: int
    idle_cpu_per_second: float
    """CPU seconds per second while no run was due; NaN when the idle phase was skipped."""
    window: Window
    rss_max_sampled: int
    """Largest RSS of the once-a-second samples during the window."""
    rss_peak_window: int
    """High-water RSS (``VmHWM``) when the window closed."""
    rss_peak: int
    """High-water RSS when the daemon was stopped (after ``after_window``)."""
    runs: list[dict[str, Any]]
    """The daemon's ``run finished`` log events inside the window."""
    skipped: int
    """Runs the scheduler skipped inside the window because the last one still ran."""
    postfix_log: str
    after: T
    """What ``after_window`` returned."""


def measure_daemon(
    routes: Sequence[Route],
    plan: Plan,
    *,
    work_prefix: str,
    after_window: Callable[[DaemonProcess], T],
) -> Measured[T]:
    """Run the phases (see the module docstring) for ``routes`` and return what they measured.

    ``after_window`` runs once the window closed, with the daemon still up
    and outside the CPU figures (a scrape, say).

    Raises:
        RuntimeError: the daemon did not become ready, or the reload to the
            real interval failed.
    """
    pinned = plan.pin and pin_to_stack_core()
    load_before = background_load()
    work = Path(tempfile.mkdtemp(prefix=work_prefix))
    stack = start_stack()
    daemon: DaemonProcess | None = None
    try:
        secrets = work / "secrets"
        write_secrets(stack, secrets)
        port = free_port()
        config = work / "config.yml"

        def configure(interval: str) -> None:
            idle = interval == IDLE_INTERVAL
            config.write_text(
                daemon_config(
                    stack,
                    secrets,
                    routes,
                    interval=interval,
                    timeout=plan.timeout,
                    jitter="0s" if idle else plan.jitter,
                    listen_port=port,
                )
            )

        configure(IDLE_INTERVAL)
        daemon = DaemonProcess(config, work / "daemon.log", port, DAEMON_CORE if pinned else None)
        began = time.monotonic()
        daemon.start()
        startup = time.monotonic() - began
        rss_startup = sample_process(daemon.pid).rss_bytes

        idle_cpu_per_second = _idle_phase(daemon, plan.idle)

        configure(plan.interval)
        status, body = daemon.get("/-/reload", method="POST")
        if status != 200:
            raise RuntimeError(f"reload failed: {status} {body.decode(errors='replace')}")
        time.sleep(plan.warmup)

        window, rss_max = _steady_window(daemon, plan.duration, plan.py_spy)
        rss_peak_window = peak_rss_bytes(daemon.pid)
        after = after_window(daemon)
        rss_peak = peak_rss_bytes(daemon.pid)
        daemon.stop()

        events = list(daemon.events())
        return Measured(
            pid=daemon.pid,
            pinned=pinned,
            load_before=load_before,
            startup_seconds=startup,
            rss_startup=rss_startup,
            idle_cpu_per_second=idle_cpu_per_second,
            window=window,
            rss_max_sampled=rss_max,
            rss_peak_window=rss_peak_window,
            rss_peak=rss_peak,
            runs=runs_between(events, window.start.at, window.end.at),
            skipped=_skipped_in(events, window),
            postfix_log=stack.postfix_log(),
            after=after,
        )
    finally:
        if daemon is not None:
            daemon.stop()
        stack.stop()
        if plan.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def nothing_after(daemon: DaemonProcess) -> None:
    """An ``after_window`` for a benchmark that measures nothing more."""


def _idle_phase(daemon: DaemonProcess, seconds: float) -> float:
    """CPU seconds per second of the daemon over ``seconds`` with no run due; NaN for 0 s."""
    if seconds <= 0:
        return math.nan
    time.sleep(SETTLE_SECONDS)
    opened = open_window(daemon.pid)
    time.sleep(seconds)
    idle = close_window(daemon.pid, opened)
    return idle.cpu / idle.seconds


def _steady_window(
    daemon: DaemonProcess, seconds: float, py_spy: Path | None
) -> tuple[Window, int]:
    """The measured window and the largest RSS sampled in it (once a second)."""
    spy = start_py_spy(daemon.pid, seconds, py_spy) if py_spy else None
    opened = open_window(daemon.pid)
    rss_max = 0
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(min(1.0, max(0.0, end - time.time())))
        rss_max = max(rss_max, sample_process(daemon.pid).rss_bytes)
    window = close_window(daemon.pid, opened)
    if spy is not None and py_spy is not None:
        finish_py_spy(spy, py_spy)
    return window, rss_max


def _skipped_in(events: Sequence[dict[str, Any]], window: Window) -> int:
    return sum(
        1
        for event in events
        if str(event.get("event", "")).startswith("run skipped")
        and window.start.at <= event_time(event) <= window.end.at
    )


# ----------------------------------------------------------------- flags and report lines


def add_phase_arguments(
    parser: argparse.ArgumentParser,
    *,
    interval: str,
    jitter: str,
    timeout: str,
    duration: float,
    warmup: float,
    idle: float,
) -> None:
    """The flags of :class:`Plan`, with this benchmark's defaults, plus ``--out``."""
    parser.add_argument("--interval", default=interval, help=f"each probe's interval ({interval})")
    parser.add_argument("--jitter", default=jitter, help=f"each probe's jitter ({jitter})")
    parser.add_argument("--timeout", default=timeout, help=f"run deadline ({timeout})")
    parser.add_argument(
        "--duration", type=float, default=duration, help=f"measured seconds ({duration:g})"
    )
    parser.add_argument(
        "--warmup", type=float, default=warmup, help=f"seconds before measuring ({warmup:g})"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=idle,
        help=f"seconds of idle baseline first, 0 to skip ({idle:g})",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin daemon/stack to cores")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (config, log)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="also sample the daemon with py-spy (if installed) over the window; collapsed "
        "stacks go to FILE and a summary is printed (perturbs the CPU figures a little)",
    )


def environment_rows(measured: Measured[Any]) -> list[tuple[str, str]]:
    """Table lines that say whether the figures can be trusted: pinning and other load."""
    foreign = daemon_core_foreign_load(measured.window)
    busy = f"{100 * measured.load_before:.0f} %"
    return [
        (
            "pinned",
            f"daemon core {DAEMON_CORE}, stack core {STACK_CORE}" if measured.pinned else "no",
        ),
        (
            "machine busy before start",
            f"{busy}  (other work: numbers read high)" if measured.load_before > 0.05 else busy,
        ),
        (
            f"foreign load on core {DAEMON_CORE}",
            f"{100 * foreign:.0f} %"
            + ("  (PERTURBED: other processes shared the daemon's core)" if foreign > 0.05 else ""),
        ),
    ]


def core_rows(window: Window) -> list[tuple[str, str]]:
    """Table lines on how busy each core was in the window."""
    return [
        (f"core {STACK_CORE} (stack) busy", f"{100 * window.core_busy(STACK_CORE):.0f} %"),
        (
            f"core {DAEMON_CORE} (daemon) busy, softirq, steal",
            f"{100 * window.core_busy(DAEMON_CORE):.0f} %, "
            f"{100 * window.core_softirq(DAEMON_CORE):.0f} %, "
            f"{100 * window.core_steal(DAEMON_CORE):.0f} %",
        ),
    ]


def core_json(window: Window) -> dict[str, float]:
    """The JSON twin of :func:`core_rows`."""
    return {
        "stack_core0": window.core_busy(STACK_CORE),
        "daemon_core1": window.core_busy(DAEMON_CORE),
        "daemon_core1_softirq": window.core_softirq(DAEMON_CORE),
        "daemon_core1_steal": window.core_steal(DAEMON_CORE),
    }


def daemon_core_foreign_load(window: Window) -> float:
    """:func:`benchkit.foreign_load` for the daemon's own CPU fraction in ``window``."""
    return foreign_load(window, window.cpu / window.seconds)
