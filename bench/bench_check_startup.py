"""Whole-process wall time of an SMTP-only ``smtp-probe check``, beside swaks, in one run.

A Nagios-style monitor starts ``smtp-probe check`` every minute per route, so
the cost that matters is the whole process: interpreter start-up, imports,
the SMTP session, exit. Both tools submit the same message route through the
same real Postfix (the private stack of ``tests/support/mailstack.py``, on
127.0.0.1): the submission port with STARTTLS and AUTH PLAIN, from
probe@example.test to sink@example.test. Runs alternate between the
commands so that a change of machine load hits all alike.

Timed, each run checked for success (exit 0):

* ``smtp-probe check``: by default the console script ``pip install`` would
  make for this checkout (the ``[project.scripts]`` entry of its
  ``pyproject.toml``, on this interpreter, the checkout first on
  ``PYTHONPATH``), with the package's bytecode compiled first as ``pip``
  does (not ``shutil.which("smtp-probe")``, which may be a wrapper: a
  pyenv shim costs ~90 ms by itself); ``--smtp-probe PATH`` times an
  installed script instead (e.g. one in a throwaway venv), ``--baseline``
  another checkout or installed script beside it (e.g. the code before a
  change: ``git archive main | tar -x -C DIR``) and ``--no-compile``
  measures without ``.pyc`` files (a fresh checkout under
  ``PYTHONDONTWRITEBYTECODE=1``, as on the project's sandboxes, compiles
  every module at every start);
* ``swaks`` on the same route, told to verify the certificate like we do
  (it does not unless given ``--tls-verify``);
* ``python -c pass`` on the same interpreter with the same environment:
  the floor (``site`` and every ``.pth`` file of site-packages included);
* ``aiosmtplib alone``: the smallest script that sends the same route with
  the library we use (asyncio, ssl, aiosmtplib, STARTTLS, AUTH, one
  message), on the same interpreter: what any asyncio-based Python sender
  pays before it does anything of its own.

Per command: median, p90 and min wall time (``subprocess.run`` start to
exit) and median CPU (user + system, from the kernel's child accounting).
Then, to say where our time goes: an in-process breakdown of the same check
(time stamps from a driver that does what ``smtp-probe check`` does, step by
step, on the same interpreter), its SMTP stage timings, the modules it
imports (``-X importtime``: total per origin and the slowest, two levels
deep) and which heavy modules it imports (it should import none of them).

Run as root (the stack needs it): ``python -m bench.bench_check_startup``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.benchkit import (
    ROOT,
    SENDER,
    SINK,
    machine_info,
    median,
    ms,
    percentile,
    print_table,
    write_json,
)
from tests.support.importtime import IMPORT_LINE, heavy
from tests.support.mailstack import MailStack

TARGET_SECONDS: Final = 0.110
"""Issue 7's bound on our median."""
_PIP_SCRIPT: Final = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {function}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({function}())
"""
"""What pip writes for a console script (``pip._vendor.distlib``'s template)."""

_MINIMAL_SENDER: Final = """
import asyncio, os, socket, ssl, sys
import aiosmtplib
host, port, ca, user, password_file, sender, rcpt = sys.argv[1:]
async def main():
    context = ssl.create_default_context(cafile=ca)
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    smtp = aiosmtplib.SMTP(hostname=host, sock=sock, start_tls=False, tls_context=context,
                           local_hostname="bench.example.test")
    await smtp.connect()
    await smtp.ehlo()
    await smtp.starttls()
    await smtp.ehlo()
    with open(password_file) as f:
        await smtp.auth_plain(user, f.read().rstrip("\\n"))
    message = f"From: {sender}\\r\\nTo: {rcpt}\\r\\nSubject: aiosmtplib alone\\r\\n\\r\\nhello\\r\\n"
    await smtp.sendmail(sender, [rcpt], message.encode())
    await smtp.quit()
asyncio.run(main())
sys.stdout.flush()
os._exit(0)
"""
"""The floor of an asyncio sender: the library's own ``SMTP`` doing the same session.

It connects its own socket, as our engine does (aiosmtplib's own
``connect(host, port)`` then ``STARTTLS`` stalled ~40 ms on the next EHLO
against this Postfix, which would flatter us), and ends with ``os._exit``
as ``smtp-probe check`` does, so that the difference between the two is our
own code, not the interpreter's teardown.
"""

_PHASES_DRIVER: Final = """
import time
stamps = [("interpreter + site", time.time())]
import os, sys
from smtp_probe import cli
stamps.append(("import smtp_probe.cli", time.time()))
import logging
logging.basicConfig(level=logging.WARNING)
args = cli.build_parser().parse_args(sys.argv[1:])
stamps.append(("parse the flags", time.time()))
from smtp_probe.check import probe_from_args
spec = probe_from_args(args, os.environ)
stamps.append(("build the probe (CA file, password)", time.time()))
import asyncio
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.run import run_probe
from smtp_probe.report import render_nagios
stamps.append(("import the engine (aiosmtplib, email)", time.time()))
result = asyncio.run(run_probe(spec, signer=TokenSigner()))
stamps.append(("asyncio.run(run_probe): the run", time.time()))
print(render_nagios(result))
stamps.append(("render, print", time.time()))
stages = " ".join(f"{k}={v:.6f}" for k, v in result.smtp.stage_seconds.items())
marks = "|".join(f"{name}={at:.6f}" for name, at in stamps)
print(f"PHASES {marks}", file=sys.stderr)
print(f"STAGES outcome={result.outcome} {stages} whole_run={result.duration_seconds:.6f}", file=sys.stderr)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0 if result.success else 1)
"""
"""What ``smtp-probe check`` does, with a time stamp after each step (and ``os._exit``, as it)."""


@dataclass
class Command:
    """One command timed in the alternating loop, and its figures."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failed: int = 0
    last_error: str = ""

    def figures(self) -> dict[str, Any]:
        """Median, p90, min wall time; median CPU; failed runs."""
        return {
            "median": median(self.wall),
            "p90": percentile(self.wall, 0.9),
            "min": min(self.wall, default=float("nan")),
            "cpu_median": median(self.cpu),
            "failed_runs": self.failed,
        }


@dataclass(frozen=True)
class Subject:
    """A ``smtp-probe`` to time: its console script, interpreter and environment."""

    label: str
    script: Path
    python: str
    env: Mapping[str, str]
    description: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs per command (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs per command first")
    parser.add_argument(
        "--phases", type=int, default=20, help="runs of the in-process breakdown (default 20)"
    )
    parser.add_argument(
        "--smtp-probe",
        type=Path,
        metavar="PATH",
        help="an installed smtp-probe console script to time (run without PYTHONPATH) "
        "instead of this checkout's",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR|PATH",
        help="another checkout (e.g. `git archive main | tar -x -C /tmp/main`) or installed "
        "console script to time alongside",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="measure the checkouts without .pyc files (removes their smtp_probe/__pycache__ "
        "and runs with PYTHONDONTWRITEBYTECODE=1)",
    )
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the stack, time the commands alternately, print the tables; exit 1 if a run failed."""
    args = parse_args(argv)
    swaks = shutil.which("swaks")
    if swaks is None:
        print("needs swaks (apt-get install swaks)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp_dir:
        tmp = Path(tmp_dir)
        subjects = _subjects(args, tmp)
        load_before = os.getloadavg()
        with MailStack() as stack:
            route, commands = _commands(subjects, stack, tmp, swaks)
            busy_before = _cpu_busy()
            started = time.monotonic()
            for command in commands:
                for _ in range(args.warmup):
                    _time_once(command, record=False)
            for _ in range(args.runs):
                for command in commands:
                    _time_once(command)
            window = time.monotonic() - started
            busy = _cpu_busy()
            children_cpu = sum(sum(command.cpu) for command in commands)
            phases = _phases(subjects[0], route, args.phases)
            imports = _imports(subjects[0], route)
        load_after = os.getloadavg()
    machine_busy = (busy[0] - busy_before[0]) / max(busy[1] - busy_before[1], 1e-9)
    cores = os.cpu_count() or 1
    state = {
        "load_average_1min_before_after": [load_before[0], load_after[0]],
        "machine_busy_fraction_during_timing": machine_busy,
        "timed_commands_cpu_fraction_of_machine": children_cpu / (window * cores),
        "cores": cores,
    }
    _report(args, subjects, commands, phases, imports, state)
    return 1 if any(command.failed for command in commands) else 0


def _commands(
    subjects: Sequence[Subject], stack: MailStack, tmp: Path, swaks: str
) -> tuple[list[str], list[Command]]:
    """The check's arguments, and every command to time on the stack's submission route."""
    password_file = tmp / "smtp-password"
    password_file.write_text(stack.users[SENDER] + "\n")
    server = f"{stack.host}:{stack.submission_port}"
    route = [
        "check", "--smtp", server, "--smtp-tls", "starttls",
        "--smtp-user", SENDER, "--smtp-password-file", str(password_file),
        "--from", SENDER, "--to", SINK, "--ca-file", str(stack.ca_file),
        "--helo", "bench.example.test", "--format", "nagios",
    ]  # fmt: skip
    theirs = [
        swaks, "--server", server, "--tls", "--tls-verify", "--tls-ca-path", str(stack.ca_file),
        "--auth", "PLAIN", "--auth-user", SENDER, "--auth-password", stack.users[SENDER],
        "--from", SENDER, "--to", SINK, "--helo", "bench.example.test", "--silent", "2",
    ]  # fmt: skip
    ours = subjects[0]
    alone = [
        ours.python, "-c", _MINIMAL_SENDER, stack.host, str(stack.submission_port),
        str(stack.ca_file), SENDER, str(password_file), SENDER, SINK,
    ]  # fmt: skip
    commands = [Command(s.label, [str(s.script), *route], s.env) for s in subjects]
    commands.append(Command("swaks", theirs, ours.env))
    commands.append(Command("python -c pass", [ours.python, "-c", "pass"], ours.env))
    commands.append(Command("aiosmtplib alone (same route)", alone, ours.env))
    return route, commands


# ------------------------------------------------------------------ subjects


def _subjects(args: argparse.Namespace, tmp: Path) -> list[Subject]:
    """Ours first, then the baseline if any."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONPROFILEIMPORTTIME")
    }
    label = "smtp-probe check"
    if args.smtp_probe is not None:
        subjects = [_installed_subject(label, args.smtp_probe, env)]
    else:
        subjects = [_checkout_subject(label, ROOT, tmp / "ours", env, args.no_compile)]
    if args.baseline is not None:
        label = f"smtp-probe check (baseline {args.baseline})"
        if args.baseline.is_dir():
            baseline = _checkout_subject(
                label, args.baseline.resolve(), tmp / "baseline", env, args.no_compile
            )
        else:
            baseline = _installed_subject(label, args.baseline, env)
        subjects.append(baseline)
    return subjects


def _installed_subject(label: str, path: Path, env: Mapping[str, str]) -> Subject:
    """An installed console script, run with the interpreter of its ``#!`` line."""
    script = path.absolute()
    first = script.read_text(encoding="utf-8").splitlines()[0]
    if not first.startswith("#!"):
        raise SystemExit(f"{script}: not a console script (no #! line)")
    python = first[2:].strip().split()[0]
    description = f"installed script {script} (interpreter {python}, no PYTHONPATH)"
    return Subject(label, script, python, env, description)


def _checkout_subject(
    label: str, checkout: Path, where: Path, env: Mapping[str, str], no_compile: bool
) -> Subject:
    """The console script pip would install for ``checkout``, run with it first on PYTHONPATH."""
    project = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))
    module, _, function = project["project"]["scripts"]["smtp-probe"].partition(":")
    where.mkdir(parents=True)
    script = where / "smtp-probe"
    script.write_text(_PIP_SCRIPT.format(python=sys.executable, module=module, function=function))
    script.chmod(0o755)
    package = checkout / "smtp_probe"
    if no_compile:
        for cache in list(package.rglob("__pycache__")):
            shutil.rmtree(cache)
        bytecode = "no .pyc (every module compiled at every start)"
    else:
        subprocess.run(  # noqa: S603 - the running interpreter on our own sources
            [sys.executable, "-m", "compileall", "-q", str(package)], check=True
        )
        bytecode = ".pyc compiled first, as pip install does"
    run_env = dict(env, PYTHONPATH=str(checkout))
    if no_compile:
        run_env["PYTHONDONTWRITEBYTECODE"] = "1"
    description = (
        f"pip-style console script for {checkout} ({module}:{function}), "
        f"interpreter {sys.executable}, PYTHONPATH={checkout}, {bytecode}"
    )
    return Subject(label, script, sys.executable, run_env, description)


# ------------------------------------------------------------------ timing


def _time_once(command: Command, *, record: bool = True) -> None:
    """One run: wall seconds of the whole process, its CPU, and whether it exited 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    completed = subprocess.run(  # noqa: S603 - fixed argv of local tools
        command.argv, capture_output=True, timeout=60, check=False, env=dict(command.env)
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not record:
        return
    command.wall.append(wall)
    command.cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    if completed.returncode != 0:
        command.failed += 1
        command.last_error = (completed.stdout + completed.stderr).decode(errors="replace")[-500:]


def _cpu_busy() -> tuple[float, float]:
    """Busy and total jiffies of the whole machine so far (``/proc/stat``)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


# ------------------------------------------------------------------ where the time goes


def _phases(subject: Subject, route: Sequence[str], runs: int) -> dict[str, Any]:
    """Median time of each step of a check, from the driver's time stamps; SMTP stages."""
    steps: dict[str, list[float]] = {}
    stages: dict[str, list[float]] = {}
    totals: list[float] = []
    for _ in range(runs):
        start = time.time()
        completed = subprocess.run(  # noqa: S603 - the interpreter under test, our driver
            [subject.python, "-c", _PHASES_DRIVER, *route],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(subject.env),
        )
        end = time.time()
        marks = [line for line in completed.stderr.splitlines() if line.startswith("PHASES ")]
        if completed.returncode != 0 or not marks:
            print(f"phase driver failed:\n{completed.stderr[-1000:]}", file=sys.stderr)
            continue
        previous = start
        for mark in marks[0].removeprefix("PHASES ").split("|"):
            name, _, at = mark.rpartition("=")
            steps.setdefault(name, []).append(float(at) - previous)
            previous = float(at)
        steps.setdefault("exit (os._exit, as check does)", []).append(end - previous)
        totals.append(end - start)
        for line in completed.stderr.splitlines():
            if line.startswith("STAGES "):
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key != "outcome":
                        stages.setdefault(key, []).append(float(value))
    return {
        "steps_median_seconds": {name: median(values) for name, values in steps.items()},
        "total_median_seconds": median(totals),
        "smtp_stages_median_seconds": {name: median(values) for name, values in stages.items()},
        "runs": len(totals),
    }


def _imports(subject: Subject, route: Sequence[str]) -> dict[str, Any]:
    """One ``-X importtime`` run of our check: self time per origin, slowest, heavy ones."""
    env = dict(subject.env, PYTHONPROFILEIMPORTTIME="1")
    completed = subprocess.run(  # noqa: S603 - the console script under test
        [str(subject.script), *route], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )  # fmt: skip
    stdlib = sys.stdlib_module_names
    per_origin: dict[str, float] = {"smtp_probe": 0.0, "third-party": 0.0, "standard library": 0.0}
    after_site = False
    top: list[tuple[str, float]] = []
    imported: list[str] = []
    for line in completed.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match is None:
            continue
        name = match["name"]
        self_us, cumulative_us = int(match["self"]), int(match["cumulative"])
        imported.append(name)
        if not after_site:
            after_site = name == "site"
            continue
        root = name.split(".")[0]
        origin = (
            "smtp_probe"
            if root == "smtp_probe"
            else "standard library"
            if root in stdlib or root.startswith("_")
            else "third-party"
        )
        per_origin[origin] += self_us / 1e6
        if len(match["indent"]) <= 3:
            top.append((name, cumulative_us / 1e6))
    return {
        "self_seconds_by_origin_after_site": per_origin,
        "slowest_two_levels": sorted(top, key=lambda item: -item[1])[:12],
        "heavy_modules_imported": heavy(imported),
        "modules_imported": len(imported),
    }


# ------------------------------------------------------------------ output


def _report(
    args: argparse.Namespace,
    subjects: Sequence[Subject],
    commands: Sequence[Command],
    phases: Mapping[str, Any],
    imports: Mapping[str, Any],
    state: Mapping[str, Any],
) -> None:
    figures = {command.name: command.figures() for command in commands}
    rows = [
        (
            command.name,
            f"median {ms(f['median'])}, p90 {ms(f['p90'])}, min {ms(f['min'])}, "
            f"CPU {ms(f['cpu_median'])}, failed runs {f['failed_runs']}",
        )
        for command, f in ((c, figures[c.name]) for c in commands)
    ]
    ours_median = figures[subjects[0].label]["median"]
    floor = figures["python -c pass"]["median"]
    met = "met" if ours_median <= TARGET_SECONDS else "NOT MET"
    rows.append(("target: smtp-probe check median", f"<= {ms(TARGET_SECONDS)}: {met}"))
    rows.append(("smtp-probe check above the floor", ms(ours_median - floor)))
    rows.append(
        (
            "smtp-probe check above aiosmtplib alone",
            ms(ours_median - figures["aiosmtplib alone (same route)"]["median"]),
        )
    )
    print_table(
        f"SMTP-only check, whole process, {args.runs} runs each, alternating "
        "(STARTTLS + AUTH, real Postfix)",
        rows,
    )
    print_table(
        "machine state",
        [
            ("load average (1 min) before / after",
             " / ".join(f"{x:.2f}" for x in state["load_average_1min_before_after"])),
            ("machine busy while timing (all cores)",
             f"{state['machine_busy_fraction_during_timing']:.0%}"),
            ("of which the timed commands", f"{state['timed_commands_cpu_fraction_of_machine']:.0%}"),
            *((f"subject: {s.label}", s.description) for s in subjects),
        ],
    )  # fmt: skip
    steps = phases["steps_median_seconds"]
    print_table(
        f"where a check's time goes (median of {phases['runs']} runs of a driver doing "
        f"what check does; total {ms(phases['total_median_seconds'])})",
        [(name, ms(seconds)) for name, seconds in steps.items()],
    )
    print_table(
        "the run's SMTP stages (median; server time included)",
        [(name, ms(seconds)) for name, seconds in phases["smtp_stages_median_seconds"].items()],
    )
    print_table(
        f"imports of smtp-probe check (-X importtime, one run, {imports['modules_imported']} "
        "modules; self time after site)",
        [
            *((origin, ms(seconds)) for origin, seconds in
              imports["self_seconds_by_origin_after_site"].items()),
            ("heavy modules imported", ", ".join(imports["heavy_modules_imported"]) or "none"),
        ],
    )  # fmt: skip
    print_table(
        "slowest imports of smtp-probe check (cumulative, two levels deep)",
        [(module, ms(seconds)) for module, seconds in imports["slowest_two_levels"]],
    )
    for command in commands:
        if command.failed:
            print(f"\n{command.name}: {command.failed} failed runs; last output:\n"
                  f"{command.last_error}")  # fmt: skip
    write_json(
        args.out,
        {
            "benchmark": "check_startup",
            "machine": machine_info(),
            "machine_state": dict(state),
            "runs": args.runs,
            "subjects": {s.label: s.description for s in subjects},
            "figures": figures,
            "phases": dict(phases),
            "imports": dict(imports),
            "target_median_seconds": TARGET_SECONDS,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
