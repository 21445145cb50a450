"""1,000 probes at a 60 s interval in one daemon process: CPU fraction of one core and RSS.

The daemon (``python -m smtp_probe run``, pinned to its own core) gets
``--probes`` probes, all submitting through the stack's submission port
(STARTTLS + AUTH). They are spread round-robin over the stack's two
mailboxes, sink's and probe's INBOX over IMAPS, so two watchers serve all
of them (probes sharing a watcher is the design; the stack has no other
users). At 1,000 probes / 60 s that is ~17 runs a second.

Phases: start-up (time until ``/-/ready``), an idle baseline (the same
probes at a 24 h interval, so none is due: the cost of holding them),
then the real interval via ``POST /-/reload``, a warm-up, and the
measured window. The first runs of each probe are spread over its first
interval by a hash of its name, so the load is steady from the start.

``--smtp-only`` drops the mailboxes: every run stops after the SMTP leg
(outcome ``sent``). Use it to tell the daemon's IMAP cost from its SMTP
cost, or if the stack cannot keep up with full runs; the table then says
"SMTP-only" and the numbers are not those of full runs.

After the window, ``/metrics`` is scraped a few times (outside the CPU
window) to show the scrape time of this many probes with real results.

Run as root (the stack needs it): ``python -m bench.bench_scale``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.benchkit import (
    SENDER,
    SINK,
    DaemonProcess,
    Route,
    machine_info,
    median,
    ms,
    outcome_counts,
    percentile,
    postfix_deliveries,
    print_table,
    write_json,
)
from bench.phases import (
    Measured,
    Plan,
    add_phase_arguments,
    core_json,
    core_rows,
    daemon_core_foreign_load,
    environment_rows,
    measure_daemon,
)
from smtp_probe.config.values import parse_duration

CPU_TARGET = 0.10
RSS_TARGET = 150 * 2**20
DELIVERY_FLOOR = 0.0099
"""The stack's delivery floor: 250 to visible with a NOOP every 10 ms on a quiet machine
(issue 11; ../shared/research/latency-floor.md measured 9.7 ms)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument(
        "--mailboxes",
        type=int,
        choices=(1, 2),
        default=2,
        help="spread the probes over 1 (sink) or 2 (sink, probe) mailboxes (default 2)",
    )
    parser.add_argument(
        "--smtp-only", action="store_true", help="probes without a mailbox (SMTP leg only)"
    )
    parser.add_argument("--scrapes", type=int, default=5, help="/metrics scrapes after the window")
    add_phase_arguments(
        parser, interval="60s", jitter="5s", timeout="30s", duration=180.0, warmup=15.0, idle=15.0
    )
    return parser.parse_args(argv)


def routes_for(args: argparse.Namespace) -> list[Route]:
    """The probes: round-robin over the mailboxes, each delivering to its mailbox's user."""
    boxes = [("sink", SINK), ("probe", SENDER)][: args.mailboxes]
    routes = []
    for i in range(args.probes):
        key, user = boxes[i % len(boxes)]
        routes.append(Route(f"scale-{i:04d}", None if args.smtp_only else key, user))
    return routes


@dataclass(frozen=True, slots=True)
class Scrapes:
    """``GET /metrics`` after the window: seconds of each scrape and the body's size."""

    seconds: list[float]
    size: int


def scrape(times: int) -> Callable[[DaemonProcess], Scrapes]:
    """An ``after_window`` that scrapes ``/metrics`` ``times`` times."""

    def after_window(daemon: DaemonProcess) -> Scrapes:
        seconds: list[float] = []
        size = 0
        for _ in range(times):
            began = time.perf_counter()
            _, body = daemon.get("/metrics")
            seconds.append(time.perf_counter() - began)
            size = len(body)
        return Scrapes(seconds, size)

    return after_window


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets met or not)."""
    args = parse_args(argv)
    measured = measure_daemon(
        routes_for(args),
        Plan.from_args(args),
        work_prefix="bench-scale-",
        after_window=scrape(args.scrapes),
    )
    write_json(args.out, _report(args, measured))
    return 0


def _report(args: argparse.Namespace, measured: Measured[Scrapes]) -> dict[str, Any]:
    window, runs, pid = measured.window, measured.runs, measured.pid
    startup, idle_fraction = measured.startup_seconds, measured.idle_cpu_per_second
    rss_startup, rss_max = measured.rss_startup, measured.rss_max_sampled
    rss_peak_runs, rss_peak = measured.rss_peak_window, measured.rss_peak
    scrapes, metrics_bytes = measured.after.seconds, measured.after.size
    completed = len(runs)
    configured = args.probes / parse_duration(args.interval)
    # APScheduler 3 adds U(0, jitter) to each interval *after* the previous
    # jittered run, so the mean period is interval + jitter / 2.
    drifting = args.probes / (parse_duration(args.interval) + _jitter_seconds(args.jitter) / 2)
    fraction = window.cpu / window.seconds
    main_cpu = window.main_thread_cpu(pid)
    succeeded = [r for r in runs if r.get("outcome") in ("delivered", "sent")]
    reported = [float(r["delivery_seconds"]) for r in runs if r.get("delivery_seconds")]
    durations = [float(r["duration_seconds"]) for r in succeeded]
    deliveries = postfix_deliveries(measured.postfix_log)
    true = [
        deliveries[str(r["queue_id"])].after_queueing
        for r in runs
        if r.get("delivery_seconds") and str(r.get("queue_id")) in deliveries
    ]
    mode = (
        "SMTP-only (no IMAP leg)" if args.smtp_only else f"full runs, {args.mailboxes} mailbox(es)"
    )
    per_run = window.cpu / completed if completed else math.nan
    rows = [
        ("mode", mode),
        ("probes x interval", f"{args.probes} x {args.interval} (jitter {args.jitter})"),
        *environment_rows(measured),
        ("start-up to ready", f"{startup:.2f} s"),
        ("idle CPU (none due)", f"{100 * idle_fraction:.2f} % of one core"),
        ("window", f"{window.seconds:.1f} s"),
        (
            "runs completed",
            f"{completed} ({completed / window.seconds:.1f}/s, "
            f"configured {configured:.1f}/s, {drifting:.1f}/s with jitter drift)",
        ),
        ("outcomes", ", ".join(f"{k}={v}" for k, v in outcome_counts(runs).items())),
        ("runs skipped (overlap)", str(measured.skipped)),
        ("daemon CPU", f"{window.cpu:.2f} s"),
        ("CPU fraction of one core", f"{100 * fraction:.1f} %  (target < 10 %)"),
        ("  main thread (loop)", f"{100 * main_cpu / window.seconds:.1f} %"),
        (
            "  other threads (IMAP watchers, executor)",
            f"{100 * (window.cpu - main_cpu) / window.seconds:.1f} %",
        ),
        ("  of which system (kernel)", f"{100 * window.system / window.seconds:.1f} %"),
        ("context switches per run", f"{window.context_switches / max(completed, 1):.0f}"),
        ("CPU per run", f"{1000 * per_run:.2f} ms"),
        ("RSS start-up / max sampled", f"{rss_startup / 2**20:.1f} / {rss_max / 2**20:.1f} MiB"),
        (
            "RSS peak: runs / after scrapes",
            f"{rss_peak_runs / 2**20:.1f} / {rss_peak / 2**20:.1f} MiB  (target < 150 MB)",
        ),
        *core_rows(window),
        ("run duration median/p90", f"{ms(median(durations))} / {ms(percentile(durations, 0.9))}"),
        (
            "reported delivery median/p90",
            f"{ms(median(reported))} / {ms(percentile(reported, 0.9))}"
            f"  (target: median <= {ms(DELIVERY_FLOOR * 1.5)}, 1.5x the stack's floor)",
        ),
        ("true delivery median/p90", f"{ms(median(true))} / {ms(percentile(true, 0.9))}"),
        (
            "/metrics scrape median/max",
            f"{ms(median(scrapes))} / {ms(max(scrapes, default=math.nan))}"
            f" ({metrics_bytes / 1024:.0f} KiB)",
        ),
    ]
    print_table(f"bench_scale: {args.probes} probes in one daemon", rows)
    return {
        "benchmark": "bench_scale",
        "machine": machine_info(),
        "params": {
            "probes": args.probes,
            "interval": args.interval,
            "jitter": args.jitter,
            "timeout": args.timeout,
            "duration": args.duration,
            "warmup": args.warmup,
            "mailboxes": 0 if args.smtp_only else args.mailboxes,
            "smtp_only": args.smtp_only,
            "pinned": measured.pinned,
        },
        "startup_seconds": startup,
        "idle_cpu_fraction": idle_fraction,
        "machine_busy_before_start": measured.load_before,
        "foreign_load_daemon_core": daemon_core_foreign_load(window),
        "window_seconds": window.seconds,
        "runs_completed": completed,
        "runs_per_second": completed / window.seconds,
        "runs_per_second_configured": configured,
        "runs_per_second_with_jitter_drift": drifting,
        "outcomes": outcome_counts(runs),
        "runs_skipped": measured.skipped,
        "cpu_seconds": window.cpu,
        "cpu_fraction": fraction,
        "cpu_fraction_main_thread": main_cpu / window.seconds,
        "cpu_fraction_system": window.system / window.seconds,
        "context_switches_per_run": window.context_switches / max(completed, 1),
        "cpu_ms_per_run": 1000 * per_run,
        "rss_bytes": {
            "startup": rss_startup,
            "max_sampled": rss_max,
            "peak_after_runs": rss_peak_runs,
            "peak_after_scrapes": rss_peak,
        },
        "core_busy": core_json(window),
        "run_duration_seconds": {"median": median(durations), "p90": percentile(durations, 0.9)},
        "reported_delivery_seconds": {
            "median": median(reported),
            "p90": percentile(reported, 0.9),
            "n": len(reported),
        },
        "true_delivery_seconds": {"median": median(true), "p90": percentile(true, 0.9)},
        "metrics_scrape_seconds": {
            "median": median(scrapes),
            "all": scrapes,
            "bytes": metrics_bytes,
        },
        "targets": {
            "cpu_fraction_max": CPU_TARGET,
            "met_cpu": fraction < CPU_TARGET,
            "rss_bytes_max": RSS_TARGET,
            "met_rss": max(rss_peak, rss_max) < RSS_TARGET,
            "reported_median_seconds_max": DELIVERY_FLOOR * 1.5,
            "met_delivery": median(reported) <= DELIVERY_FLOOR * 1.5,
        },
    }


def _jitter_seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:  # "0s": no jitter
        return 0.0


if __name__ == "__main__":
    raise SystemExit(main())
