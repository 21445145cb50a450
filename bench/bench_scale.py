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
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.benchkit import (
    DAEMON_CORE,
    SENDER,
    SINK,
    DaemonProcess,
    Route,
    Window,
    background_load,
    close_window,
    daemon_config,
    event_time,
    finish_py_spy,
    foreign_load,
    free_port,
    machine_info,
    median,
    ms,
    open_window,
    outcome_counts,
    peak_rss_bytes,
    percentile,
    pin_to_stack_core,
    postfix_deliveries,
    print_table,
    runs_between,
    sample_process,
    start_py_spy,
    start_stack,
    write_json,
    write_secrets,
)
from smtp_probe.config.values import parse_duration

IDLE_INTERVAL = "24h"
CPU_TARGET = 0.10
RSS_TARGET = 150 * 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--interval", default="60s", help="each probe's interval (default 60s)")
    parser.add_argument("--jitter", default="5s", help="each probe's jitter (default 5s)")
    parser.add_argument("--timeout", default="30s", help="run deadline (default 30s)")
    parser.add_argument(
        "--duration", type=float, default=180.0, help="measured seconds (default 180)"
    )
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument(
        "--idle", type=float, default=15.0, help="seconds of idle baseline first (0: skip)"
    )
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
    parser.add_argument("--no-pin", action="store_true", help="do not pin daemon/stack to cores")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (config, log)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--py-spy", type=Path, metavar="FILE", help="also profile the window with py-spy"
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (targets met or not)."""
    args = parse_args(argv)
    pinned = not args.no_pin and pin_to_stack_core()
    load_before = background_load()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    stack = start_stack()
    daemon: DaemonProcess | None = None
    try:
        secrets = work / "secrets"
        write_secrets(stack, secrets)
        routes = routes_for(args)
        port = free_port()
        config = work / "config.yml"

        def configure(interval: str) -> None:
            config.write_text(
                daemon_config(
                    stack,
                    secrets,
                    routes,
                    interval=interval,
                    timeout=args.timeout,
                    jitter="0s" if interval == IDLE_INTERVAL else args.jitter,
                    listen_port=port,
                )
            )

        configure(IDLE_INTERVAL)
        daemon = DaemonProcess(config, work / "daemon.log", port, DAEMON_CORE if pinned else None)
        began = time.monotonic()
        daemon.start()
        startup = time.monotonic() - began
        rss_startup = sample_process(daemon.pid).rss_bytes

        idle_fraction = math.nan
        if args.idle > 0:
            time.sleep(1.0)
            opened = open_window(daemon.pid)
            time.sleep(args.idle)
            idle = close_window(daemon.pid, opened)
            idle_fraction = idle.cpu / idle.seconds

        configure(args.interval)
        status, body = daemon.get("/-/reload", method="POST")
        if status != 200:
            raise RuntimeError(f"reload failed: {status} {body.decode(errors='replace')}")
        time.sleep(args.warmup)

        spy = start_py_spy(daemon.pid, args.duration, args.py_spy) if args.py_spy else None
        opened = open_window(daemon.pid)
        rss_max = 0
        end = time.time() + args.duration
        while time.time() < end:
            time.sleep(min(1.0, max(0.0, end - time.time())))
            rss_max = max(rss_max, sample_process(daemon.pid).rss_bytes)
        window = close_window(daemon.pid, opened)
        rss_peak_runs = peak_rss_bytes(daemon.pid)
        if spy is not None and args.py_spy is not None:
            finish_py_spy(spy, args.py_spy)

        scrapes: list[float] = []
        size = 0
        for _ in range(args.scrapes):
            t0 = time.perf_counter()
            status, body = daemon.get("/metrics")
            scrapes.append(time.perf_counter() - t0)
            size = len(body)
        rss_peak = peak_rss_bytes(daemon.pid)
        daemon.stop()

        events = list(daemon.events())
        runs = runs_between(events, window.start.at, window.end.at)
        skipped = sum(
            1
            for e in events
            if str(e.get("event", "")).startswith("run skipped")
            and window.start.at <= event_time(e) <= window.end.at
        )
        result = _report(
            args,
            daemon.pid,
            window,
            runs,
            skipped,
            startup,
            idle_fraction,
            rss_startup,
            rss_max,
            rss_peak_runs,
            rss_peak,
            scrapes,
            size,
            stack.postfix_log(),
            pinned,
            load_before,
        )
        write_json(args.out, result)
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
        stack.stop()
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _report(
    args: argparse.Namespace,
    pid: int,
    window: Window,
    runs: list[dict[str, Any]],
    skipped: int,
    startup: float,
    idle_fraction: float,
    rss_startup: int,
    rss_max: int,
    rss_peak_runs: int,
    rss_peak: int,
    scrapes: list[float],
    metrics_bytes: int,
    postfix_log: str,
    pinned: bool,
    load_before: float,
) -> dict[str, Any]:
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
    deliveries = postfix_deliveries(postfix_log)
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
        ("pinned", "daemon core 1, stack core 0" if pinned else "no"),
        (
            "machine busy before start",
            f"{100 * load_before:.0f} %  (other work: numbers read high)"
            if load_before > 0.05
            else f"{100 * load_before:.0f} %",
        ),
        (
            "foreign load on core 1",
            f"{100 * foreign_load(window, window.cpu / window.seconds):.0f} %"
            + (
                "  (PERTURBED: other processes shared the daemon's core)"
                if foreign_load(window, window.cpu / window.seconds) > 0.05
                else ""
            ),
        ),
        ("start-up to ready", f"{startup:.2f} s"),
        ("idle CPU (none due)", f"{100 * idle_fraction:.2f} % of one core"),
        ("window", f"{window.seconds:.1f} s"),
        (
            "runs completed",
            f"{completed} ({completed / window.seconds:.1f}/s, "
            f"configured {configured:.1f}/s, {drifting:.1f}/s with jitter drift)",
        ),
        ("outcomes", ", ".join(f"{k}={v}" for k, v in outcome_counts(runs).items())),
        ("runs skipped (overlap)", str(skipped)),
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
        ("core 0 (stack) busy", f"{100 * window.core_busy(0):.0f} %"),
        (
            "core 1 (daemon) busy, softirq, steal",
            f"{100 * window.core_busy(1):.0f} %, {100 * window.core_softirq(1):.0f} %, "
            f"{100 * window.core_steal(1):.0f} %",
        ),
        ("run duration median/p90", f"{ms(median(durations))} / {ms(percentile(durations, 0.9))}"),
        (
            "reported delivery median/p90",
            f"{ms(median(reported))} / {ms(percentile(reported, 0.9))}",
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
            "pinned": pinned,
        },
        "startup_seconds": startup,
        "idle_cpu_fraction": idle_fraction,
        "machine_busy_before_start": load_before,
        "foreign_load_daemon_core": foreign_load(window, window.cpu / window.seconds),
        "window_seconds": window.seconds,
        "runs_completed": completed,
        "runs_per_second": completed / window.seconds,
        "runs_per_second_configured": configured,
        "runs_per_second_with_jitter_drift": drifting,
        "outcomes": outcome_counts(runs),
        "runs_skipped": skipped,
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
        "core_busy": {
            "stack_core0": window.core_busy(0),
            "daemon_core1": window.core_busy(1),
            "daemon_core1_softirq": window.core_softirq(1),
            "daemon_core1_steal": window.core_steal(1),
        },
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
        },
    }


def _jitter_seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:  # "0s": no jitter
        return 0.0


if __name__ == "__main__":
    raise SystemExit(main())
