"""/metrics scrape time with 1,000 configured probes that have each recorded a few results.

No mail stack is needed: the probes come from a generated YAML config read
by the real ``parse_config``, their series are created by
``Metrics.configure`` and filled by ``Metrics.record`` with a mix of
results (two delivered runs and one refused at ``RCPT TO`` per probe by
default), exactly as the daemon does after its runs.

Measured, median and p99 of ``--repeats`` scrapes:

* **in-process**: ``prometheus_client.generate_latest(registry)``, the
  call the daemon's ``/metrics`` handler makes;
* **over HTTP**: ``GET /metrics`` from the daemon's own aiohttp app
  (``make_app(Daemon(config))``) on 127.0.0.1, from a client thread; and
  how long the event loop was blocked meanwhile (a ticker task measures
  its own lateness), since the handler renders on the loop and a blocked
  loop delays every run's timestamps;
* both exposition formats the handler negotiates: the classic text format
  (no ``Accept`` header) and OpenMetrics, which Prometheus asks for first
  (its default ``Accept`` header, :data:`PROMETHEUS_ACCEPT`).

Run: ``python -m bench.bench_metrics`` (``--probes``, ``--results``, ``--repeats``).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from bench.benchkit import (
    background_load,
    machine_info,
    median,
    ms,
    percentile,
    print_table,
    write_json,
)
from smtp_probe.app import Daemon
from smtp_probe.config import parse_config
from smtp_probe.config.runtime import Config
from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import SMTP_STAGES, Outcome, RunResult, Stage
from smtp_probe.server.http import make_app
from tests.support.results import run_result

TARGET_SECONDS = 0.050
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""The ``Accept`` header Prometheus (2.x, 3.x defaults) sends with every scrape."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--probes", type=int, default=1000, help="configured probes")
    parser.add_argument("--results", type=int, default=3, help="results recorded per probe")
    parser.add_argument("--repeats", type=int, default=30, help="scrapes per measurement")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def config_text(probes: int) -> str:
    """A config with ``probes`` probes over one SMTP server and two mailboxes (never contacted)."""
    lines = [
        "defaults: {interval: 60s, timeout: 30s, jitter: 5s}",
        "smtp_servers:",
        "  relay: {host: 127.0.0.1, port: 10025, tls: starttls, username: probe@example.test,"
        " password: not-used}",
        "mailboxes:",
        "  sink: {host: 127.0.0.1, port: 10993, tls: tls, username: sink@example.test,"
        " password: not-used}",
        "  probe: {host: 127.0.0.1, port: 10993, tls: tls, username: probe@example.test,"
        " password: not-used}",
        "probes:",
    ]
    for i in range(probes):
        box, to = ("sink", "sink@example.test") if i % 2 == 0 else ("probe", "probe@example.test")
        lines.append(
            f"  - {{name: metrics-{i:04d}, smtp: relay, mailbox: {box},"
            f" from: probe@example.test, to: {to}}}"
        )
    return "\n".join(lines) + "\n"


def fake_results(config: Config, per_probe: int, rng: random.Random) -> list[RunResult]:
    """``per_probe`` results per probe: delivered runs, with every third refused at RCPT TO."""
    results = []
    for scheduled in config.probes:
        for n in range(per_probe):
            refused = n % 3 == 2
            stages = SMTP_STAGES[: SMTP_STAGES.index(Stage.RCPT_TO) + 1] if refused else SMTP_STAGES
            timings = {stage: rng.uniform(0.0002, 0.004) for stage in stages}
            delivery = None if refused else rng.uniform(0.008, 0.030)
            results.append(
                run_result(
                    scheduled.name,
                    Outcome.SEND_FAILED if refused else Outcome.DELIVERED,
                    run_id=f"{rng.getrandbits(64):016x}",
                    stage=Stage.RCPT_TO if refused else None,
                    error="server replied 550 5.1.1 no such user" if refused else "",
                    started_at=datetime.now(UTC),
                    duration=sum(timings.values()) + (delivery or 0.0),
                    reply_code=550 if refused else 250,
                    reply="5.1.1 no such user" if refused else "2.0.0 Ok: queued as ABC",
                    stage_seconds=timings,
                    accepted_at=None if refused else time.monotonic(),
                    delivery=delivery,
                )
            )
    return results


def render_openmetrics(registry: CollectorRegistry) -> bytes:
    """The OpenMetrics exposition, which the handler sends when Prometheus asks for it."""
    body: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
    return body


def time_calls(repeats: int, call: Any) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``call()``."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return times


def family_sizes(body: bytes) -> dict[str, int]:
    """Sample lines per metric family in an exposition (``_bucket`` etc. folded in)."""
    families: dict[str, int] = {}
    current = ""
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif line and not line.startswith("#"):
            families[current] = families.get(current, 0) + 1
    return dict(sorted(families.items(), key=lambda kv: -kv[1]))


async def http_scrapes(
    daemon: Daemon, repeats: int, accept: str | None
) -> tuple[list[float], float, int]:
    """Scrape the daemon's aiohttp app ``repeats`` times from a client thread.

    Returns the latencies, the worst event-loop lateness seen meanwhile, and
    the body size.
    """
    from aiohttp import web

    runner = web.AppRunner(make_app(daemon), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    worst_lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst_lag
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            worst_lag = max(worst_lag, time.perf_counter() - began - 0.001)

    tick = asyncio.create_task(ticker())
    try:
        latencies, size = await asyncio.to_thread(_client, port, repeats, accept)
    finally:
        stop.set()
        await tick
        await runner.cleanup()
    return latencies, worst_lag, size


def _client(port: int, repeats: int, accept: str | None) -> tuple[list[float], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    size = 0
    try:
        for _ in range(repeats):
            began = time.perf_counter()
            connection.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
            reply = connection.getresponse()
            body = reply.read()
            latencies.append(time.perf_counter() - began)
            if reply.status != 200:
                raise RuntimeError(f"/metrics answered {reply.status}")
            size = len(body)
    finally:
        connection.close()
    return latencies, size


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (target met or not)."""
    args = parse_args(argv)
    load_before = background_load()
    rng = random.Random(1)  # noqa: S311 - fake timings, not security

    began = time.perf_counter()
    config = parse_config(config_text(args.probes))
    parse_seconds = time.perf_counter() - began
    results = fake_results(config, args.results, rng)

    # In-process: the registry the daemon would hold.
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    began = time.perf_counter()
    metrics.configure(config.probes)
    configure_seconds = time.perf_counter() - began
    began = time.perf_counter()
    for result in results:
        metrics.record(result)
    record_seconds = (time.perf_counter() - began) / len(results)
    body = generate_latest(registry)
    families = family_sizes(body)
    in_process = time_calls(args.repeats, lambda: generate_latest(registry))
    openmetrics_body = render_openmetrics(registry)
    openmetrics = time_calls(args.repeats, lambda: render_openmetrics(registry))

    # Over HTTP: the daemon's own app (no scheduler, no watchers: nothing connects).
    daemon = Daemon(config)
    daemon.metrics.configure(config.probes)
    for result in results:
        daemon.metrics.record(result)
    over_http, loop_lag, http_size = asyncio.run(http_scrapes(daemon, args.repeats, None))
    om_http, om_lag, om_size = asyncio.run(http_scrapes(daemon, args.repeats, PROMETHEUS_ACCEPT))

    samples = sum(families.values())
    rows = [
        ("probes x results each", f"{args.probes} x {args.results}"),
        ("machine busy before start", f"{100 * load_before:.0f} %"),
        ("parse_config", f"{parse_seconds * 1000:.0f} ms"),
        ("Metrics.configure (create series)", f"{configure_seconds * 1000:.0f} ms"),
        ("Metrics.record, per result", f"{record_seconds * 1e6:.0f} us"),
        (
            "exposition",
            f"{samples} samples, {len(body) / 1024:.0f} KiB, {samples / args.probes:.0f} per probe",
        ),
        ("text format, in-process median / p99", _pair(in_process)),
        ("text format, HTTP median / p99", _pair(over_http)),
        ("  body; event loop blocked (worst)", f"{http_size / 1024:.0f} KiB; {ms(loop_lag)}"),
        ("OpenMetrics, in-process median / p99", _pair(openmetrics)),
        ("OpenMetrics, HTTP median / p99", _pair(om_http) + "  (what Prometheus gets)"),
        ("  body; event loop blocked (worst)", f"{om_size / 1024:.0f} KiB; {ms(om_lag)}"),
        ("target", "< 50 ms"),
    ]
    print_table(f"bench_metrics: /metrics with {args.probes} probes ({args.repeats} scrapes)", rows)
    print_table("samples per family (all probes)", [(name, str(n)) for name, n in families.items()])
    write_json(
        args.out,
        {
            "benchmark": "bench_metrics",
            "machine": machine_info(),
            "params": {"probes": args.probes, "results": args.results, "repeats": args.repeats},
            "machine_busy_before_start": load_before,
            "parse_config_seconds": parse_seconds,
            "configure_seconds": configure_seconds,
            "record_seconds_per_result": record_seconds,
            "samples": samples,
            "bytes": len(body),
            "samples_per_family": families,
            "in_process_seconds": _stats(in_process),
            "http_seconds": _stats(over_http),
            "http_bytes": http_size,
            "event_loop_blocked_worst_seconds": loop_lag,
            "openmetrics_in_process_seconds": _stats(openmetrics),
            "openmetrics_bytes": len(openmetrics_body),
            "openmetrics_http_seconds": _stats(om_http),
            "openmetrics_event_loop_blocked_worst_seconds": om_lag,
            "targets": {
                "scrape_seconds_max": TARGET_SECONDS,
                "met_in_process": percentile(in_process, 0.99) < TARGET_SECONDS,
                "met_http": percentile(over_http, 0.99) < TARGET_SECONDS,
                "met_http_openmetrics": percentile(om_http, 0.99) < TARGET_SECONDS,
            },
        },
    )
    return 0


def _pair(values: list[float]) -> str:
    return f"{ms(median(values))} / {ms(percentile(values, 0.99))}"


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": median(values),
        "p99": percentile(values, 0.99),
        "min": min(values, default=float("nan")),
        "max": max(values, default=float("nan")),
    }


if __name__ == "__main__":
    raise SystemExit(main())
