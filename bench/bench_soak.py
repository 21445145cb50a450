"""The fault soak: thousands of daemon runs against the real stack while faults come and go.

A real ``python -m smtp_probe run`` (pinned to its own core) runs
``--probes`` probes through a private Postfix + Dovecot (submission with
STARTTLS + AUTH, confirmed over IMAPS in sink's INBOX) while the faults of
``tests/support/faults.py`` are switched on for ``--window`` seconds each,
with ``--gap`` healthy seconds after each heal, cycling through all seven
until ``--duration`` is used: deferred delivery, slow delivery (a delaying
hop in front of Dovecot's LMTP), rejected recipient (550 at RCPT), tempfail
(451 at RCPT), wrong password, IMAP down (Dovecot stopped), SMTP down
(``postfix stop``). The schedule and the checks are ``tests/support/soak.py``
(its short twin runs in CI: ``tests/e2e/test_fault_soak.py``).

Checked (exit status 1 when one fails):

* every run inside a fault window (starting ``--settle`` s after the fault
  took effect, ending before the heal) reports the fault's outcome and stage;
* ``/metrics`` counts every run under the outcome and stage its log line says;
* every run starting ``--heal-grace`` s after a heal is delivered;
* no run lasts longer than its timeout (plus 0.5 s);
* nothing is left in Postfix's queue or the mailbox at the end (messages
  held back by a fault arrive after the heal and are deleted as late);
* threads and file descriptors at the end (no fault on) are no more than
  before the first fault, and RSS grew by less than 8 MiB.

Reported: all of that per fault, RSS/threads/fds at start, end and peak, and
the daemon's CPU per run over the whole soak (faults included: failing runs
are cheaper, deferred ones costlier than a healthy run).

Run as root (the stack needs it): ``python -m bench.bench_soak --out /tmp/soak.json``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.benchkit import (
    DAEMON_CORE,
    background_load,
    machine_info,
    median,
    percentile,
    pin_to_stack_core,
    print_table,
    start_stack,
    write_json,
)
from tests.support.soak import FAULT_NAMES, SoakPlan, SoakReport, WindowVerdict, run_soak

MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    defaults = SoakPlan()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--duration", type=float, default=900.0, help="seconds of the whole schedule (900)"
    )
    parser.add_argument(
        "--window", type=float, default=defaults.window, help="seconds each fault is on"
    )
    parser.add_argument(
        "--gap", type=float, default=defaults.gap, help="healthy seconds after each heal"
    )
    parser.add_argument("--probes", type=int, default=defaults.probes, help="probes in the daemon")
    parser.add_argument(
        "--interval", type=float, default=defaults.interval, help="seconds between a probe's runs"
    )
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="run deadline (s)")
    parser.add_argument("--jitter", type=float, default=defaults.jitter, help="seconds of jitter")
    parser.add_argument(
        "--slow", type=float, default=defaults.slow_seconds, help="slow hop's delay (s)"
    )
    parser.add_argument(
        "--settle", type=float, default=defaults.settle, help="seconds before a window counts"
    )
    parser.add_argument(
        "--heal-grace",
        type=float,
        default=defaults.heal_grace,
        help="runs starting this many seconds after a heal must be delivered",
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_NAMES),
        help="comma-separated faults, in schedule order (default: all seven)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin daemon/stack to cores")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (config, log)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every check passed, 1 when one failed, 2 for bad flags."""
    args = parse_args(argv)
    pinned = not args.no_pin and pin_to_stack_core()
    try:
        plan = SoakPlan(
            faults=tuple(name.strip() for name in args.faults.split(",") if name.strip()),
            window=args.window,
            gap=args.gap,
            duration=args.duration,
            probes=args.probes,
            interval=args.interval,
            jitter=args.jitter,
            timeout=args.timeout,
            slow_seconds=args.slow,
            settle=args.settle,
            heal_grace=args.heal_grace,
            pin_core=DAEMON_CORE if pinned else None,
        )
    except ValueError as exc:
        print(f"bench_soak: {exc}")
        return 2
    load_before = background_load()
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    stack = start_stack(fine_delays=False)
    try:
        report = run_soak(stack, work, plan, say=lambda line: print(f"  {line}", flush=True))
    finally:
        stack.stop()
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failures = report.failures()
    write_json(args.out, _report(report, pinned, load_before, failures))
    if failures:
        print("\nFAILED:")
        for line in failures[:50]:
            print(f"  {line}")
        return 1
    print("\nall checks passed")
    return 0


def _by_fault(windows: Sequence[WindowVerdict]) -> dict[str, dict[str, Any]]:
    """The windows of each fault added up."""
    merged: dict[str, dict[str, Any]] = {}
    for window in windows:
        entry = merged.setdefault(
            window.switch.fault,
            {
                "expected": window.expected,
                "windows": 0,
                "runs_in_window": 0,
                "seen": {},
                "misattributed": [],
                "runs_after_heal": 0,
                "not_delivered_after_heal": [],
                "seconds_to_take_effect": [],
                "seconds_to_heal": [],
                "last_failure_after_heal": None,
            },
        )
        entry["windows"] += 1
        entry["runs_in_window"] += window.runs
        for label, count in window.seen.items():
            entry["seen"][label] = entry["seen"].get(label, 0) + count
        entry["misattributed"] += window.misattributed
        entry["runs_after_heal"] += window.healed_runs
        entry["not_delivered_after_heal"] += window.not_delivered_after_heal
        entry["seconds_to_take_effect"].append(window.switch.on_done - window.switch.on_at)
        entry["seconds_to_heal"].append(window.switch.off_done - window.switch.off_at)
        last = window.last_failure_after_heal
        if last is not None:
            entry["last_failure_after_heal"] = max(entry["last_failure_after_heal"] or 0.0, last)
    return merged


def _report(
    report: SoakReport, pinned: bool, load_before: float, failures: list[str]
) -> dict[str, Any]:
    plan = report.plan
    wall = report.ended - report.started
    durations = [run.duration for run in report.runs]
    faults = _by_fault(report.windows)
    base, final = report.baseline, report.final
    rows: list[tuple[str, str]] = [
        (
            "probes x interval, timeout",
            f"{plan.probes} x {plan.interval:g} s (jitter {plan.jitter:g} s), {plan.timeout:g} s",
        ),
        (
            "schedule",
            f"{len(report.windows)} windows of {plan.window:g} s, {plan.gap:g} s healthy after "
            f"each heal; {wall / 60:.1f} min",
        ),
        ("pinned", f"daemon core {DAEMON_CORE}" if pinned else "no"),
        ("machine busy before start", f"{100 * load_before:.0f} %"),
        ("runs", f"{len(report.runs)} ({len(report.runs) / wall:.1f}/s), {report.skipped} skipped"),
        ("warm-up runs delivered", f"{report.warmup_runs - len(report.warmup_not_delivered)}"),
    ]
    for name, entry in faults.items():
        wrong, late = len(entry["misattributed"]), len(entry["not_delivered_after_heal"])
        rows.append(
            (
                f"{name} x{entry['windows']}",
                f"{entry['runs_in_window']} runs, want {entry['expected']}: "
                f"{'ok' if not wrong else f'{wrong} MISATTRIBUTED'}; "
                f"{entry['runs_after_heal']} after heal, "
                f"{'all delivered' if not late else f'{late} NOT DELIVERED'}"
                f" (last failure started {_seconds(entry['last_failure_after_heal'])} after)",
            )
        )
    rows += [
        (
            "run duration median/p99/max",
            f"{median(durations):.2f} / {percentile(durations, 0.99):.2f} / "
            f"{max(durations, default=math.nan):.2f} s  (deadline {plan.timeout:g} s)",
        ),
        ("runs past deadline", str(len(report.past_deadline))),
        (
            "/metrics outcomes and stages vs. log",
            "agree" if not report.miscounted else "; ".join(report.miscounted),
        ),
        ("late messages deleted", f"{report.late_messages:g}"),
        ("left in queue / mailbox", f"{len(report.queue_left)} / {report.mailbox_left}"),
        (
            "RSS start / end / max",
            f"{base.rss / MIB:.1f} / {final.rss / MIB:.1f} / {report.peak('rss') / MIB:.1f} MiB",
        ),
        (
            "threads start / end / max",
            f"{base.threads} / {final.threads} / {report.peak('threads')}",
        ),
        ("fds start / end / max", f"{base.fds} / {final.fds} / {report.peak('fds')}"),
        (
            "CPU per run (whole soak)",
            f"{1000 * report.cpu_per_run:.1f} ms ({report.runs_measured} runs, "
            f"{report.cpu_seconds:.1f} s CPU)",
        ),
        ("checks", "all passed" if not failures else f"{len(failures)} FAILED"),
    ]
    print_table("bench_soak: daemon vs. real Postfix + Dovecot under faults", rows)
    return {
        "benchmark": "bench_soak",
        "machine": machine_info(),
        "machine_busy_before_start": load_before,
        "params": {
            "faults": list(plan.faults),
            "window": plan.window,
            "gap": plan.gap,
            "duration": plan.duration,
            "probes": plan.probes,
            "interval": plan.interval,
            "jitter": plan.jitter,
            "timeout": plan.timeout,
            "slow_seconds": plan.slow_seconds,
            "settle": plan.settle,
            "heal_grace": plan.heal_grace,
            "pinned": pinned,
        },
        "wall_seconds": wall,
        "runs": len(report.runs),
        "runs_skipped": report.skipped,
        "outcomes": _counts(report),
        "faults": faults,
        "warmup_runs": report.warmup_runs,
        "run_duration_seconds": {
            "median": median(durations),
            "p99": percentile(durations, 0.99),
            "max": max(durations, default=math.nan),
        },
        "runs_past_deadline": len(report.past_deadline),
        "metrics_disagreeing_with_log": report.miscounted,
        "late_messages_deleted": report.late_messages,
        "queue_left": len(report.queue_left),
        "mailbox_left": report.mailbox_left,
        "rss_bytes": {"start": base.rss, "end": final.rss, "max": report.peak("rss")},
        "threads": {"start": base.threads, "end": final.threads, "max": report.peak("threads")},
        "fds": {"start": base.fds, "end": final.fds, "max": report.peak("fds")},
        "cpu_ms_per_run": 1000 * report.cpu_per_run,
        "cpu_seconds": report.cpu_seconds,
        "runs_measured": report.runs_measured,
        "samples": [
            {"t": s.at - report.started, "rss": s.rss, "threads": s.threads, "fds": s.fds}
            for s in report.samples
        ],
        "switches": [
            {
                "fault": s.fault,
                "on": s.on_at - report.started,
                "effective": s.on_done - report.started,
                "off": s.off_at - report.started,
                "healed": s.off_done - report.started,
            }
            for s in report.switches
        ],
        "failures": failures,
        "passed": not failures,
    }


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} s"


def _counts(report: SoakReport) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in report.runs:
        counts[run.label()] = counts.get(run.label(), 0) + 1
    return dict(sorted(counts.items()))


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    print(f"\n({time.monotonic() - started:.0f} s)")
    raise SystemExit(status)
