"""Whole-process wall time of an SMTP-only ``smtp-probe check``, beside swaks, in one run.

A Nagios-style monitor starts ``smtp-probe check`` every minute per route, so
the cost that matters is the whole process: interpreter start-up, imports,
the SMTP session, exit. Both tools submit the same message route through the
same real Postfix (the private stack of ``tests/support/mailstack.py``, on
127.0.0.1): the submission port with STARTTLS and AUTH PLAIN, from
probe@example.test to sink@example.test. Runs alternate between the tools so
that a change of machine load hits both alike.

Measured per tool: median, p90 and min of the wall time of the process (from
``subprocess.run`` start to exit), every run checked for success (exit 0).
Also: ``python -c pass`` (the interpreter floor, ``site`` and its ``.pth``
files included), and the slowest imports of our check (``-X importtime``),
to show where the time goes.

swaks does not verify the server certificate unless told to (``--tls-verify``
with ``--tls-ca-path``); it is told to here, so both tools do the same work.

Run as root (the stack needs it): ``python -m bench.bench_check_startup``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.benchkit import (
    SENDER,
    SINK,
    machine_info,
    median,
    ms,
    percentile,
    print_table,
    write_json,
)
from tests.support.mailstack import MailStack

TARGET_SECONDS = 0.110
"""Issue 7's bound on our median."""
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs per tool (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs per tool first")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the stack, time both tools alternately, print the table; exit 1 if a run failed."""
    args = parse_args(argv)
    swaks = shutil.which("swaks")
    probe = shutil.which("smtp-probe")
    if swaks is None or probe is None:
        print("needs swaks (apt-get install swaks) and smtp-probe on PATH", file=sys.stderr)
        return 2
    with MailStack() as stack, tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        password_file = Path(tmp) / "smtp-password"
        password_file.write_text(stack.users[SENDER] + "\n")
        server = f"{stack.host}:{stack.submission_port}"
        ours = [
            probe, "check", "--smtp", server, "--smtp-tls", "starttls",
            "--smtp-user", SENDER, "--smtp-password-file", str(password_file),
            "--from", SENDER, "--to", SINK, "--ca-file", str(stack.ca_file),
            "--helo", "bench.example.test", "--format", "nagios",
        ]  # fmt: skip
        theirs = [
            swaks, "--server", server, "--tls", "--tls-verify", "--tls-ca-path",
            str(stack.ca_file), "--auth", "PLAIN", "--auth-user", SENDER,
            "--auth-password", stack.users[SENDER], "--from", SENDER, "--to", SINK,
            "--helo", "bench.example.test", "--silent", "2",
        ]  # fmt: skip
        floor = [sys.executable, "-c", "pass"]
        commands = {"smtp-probe check": ours, "swaks": theirs, "python -c pass": floor}
        for command in commands.values():
            for _ in range(args.warmup):
                _timed(command)
        times: dict[str, list[float]] = {name: [] for name in commands}
        failures: dict[str, int] = dict.fromkeys(commands, 0)
        for _ in range(args.runs):
            for name, command in commands.items():
                seconds, ok = _timed(command)
                times[name].append(seconds)
                failures[name] += 0 if ok else 1
        imports = _slowest_imports(ours)
    rows: list[tuple[str, str]] = []
    figures: dict[str, Any] = {}
    for name, values in times.items():
        figures[name] = {
            "median": median(values),
            "p90": percentile(values, 0.9),
            "min": min(values),
            "failed_runs": failures[name],
        }
        rows.append(
            (
                name,
                f"median {ms(median(values))}, p90 {ms(percentile(values, 0.9))}, "
                f"min {ms(min(values))}, failed runs {failures[name]}",
            )
        )
    ours_median = figures["smtp-probe check"]["median"]
    met = "met" if ours_median <= TARGET_SECONDS else "NOT MET"
    rows.append(("target: smtp-probe check median", f"<= {ms(TARGET_SECONDS)}: {met}"))
    print_table(
        f"SMTP-only check, whole process, {args.runs} runs each (STARTTLS + AUTH, real Postfix)",
        rows,
    )
    print_table(
        "slowest imports of smtp-probe check (cumulative, -X importtime)",
        [(module, ms(seconds)) for module, seconds in imports],
    )
    write_json(
        args.out,
        {
            "benchmark": "check_startup",
            "machine": machine_info(),
            "runs": args.runs,
            "figures": figures,
            "slowest_imports_seconds": dict(imports),
            "target_median_seconds": TARGET_SECONDS,
        },
    )
    return 1 if any(failures.values()) else 0


def _timed(command: list[str]) -> tuple[float, bool]:
    """Wall seconds of one whole process, and whether it exited 0."""
    start = time.perf_counter()
    completed = subprocess.run(  # noqa: S603 - fixed argv of local tools
        command, capture_output=True, timeout=60, check=False
    )
    return time.perf_counter() - start, completed.returncode == 0


def _slowest_imports(command: list[str], count: int = 12) -> list[tuple[str, float]]:
    """The imports of ``command`` (a console script) by cumulative time, two levels deep.

    Two levels: the script's own module and what it imports directly, so the
    table names the packages that cost (``aiosmtplib``, ``email.message``),
    not only ``smtp_probe.cli``.
    """
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    completed = subprocess.run(  # noqa: S603 - fixed argv of a local tool
        command, capture_output=True, text=True, timeout=60, env=env, check=False
    )
    found: list[tuple[str, float]] = []
    for line in completed.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match is not None and len(match.group(3)) <= 3:
            found.append((match.group(4), int(match.group(2)) / 1e6))
    return sorted(found, key=lambda item: -item[1])[:count]


if __name__ == "__main__":
    sys.exit(main())
