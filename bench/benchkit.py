"""Shared pieces of the benchmarks: the mail stack, the daemon process, /proc readings, output.

Everything here talks to 127.0.0.1 only. The benchmarks run the daemon as
a real ``python -m smtp_probe run`` process, so its CPU and memory are read
from ``/proc/<pid>`` exactly as ``ps`` or a container runtime would see
them: every thread (event loop, IMAP watchers, executor) is included, and
the benchmark's own work is not.

On a machine with two or more cores the benchmark pins itself and the mail
stack (Postfix and Dovecot inherit its affinity) to core 0 and the daemon
to core 1, so the two never compete for a CPU and "CPU fraction of one
core" means just that.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.support.daemon_proc import event_time, log_events
from tests.support.mailstack import MailStack

ROOT: Final = Path(__file__).resolve().parent.parent
"""The repository checkout the benchmarks belong to."""

SENDER: Final = "probe@example.test"
SINK: Final = "sink@example.test"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
STACK_CORE: Final = 0
DAEMON_CORE: Final = 1
TOKEN_SECRET: Final = "bench-token-secret-of-enough-length"  # noqa: S105 - a throwaway key

# ----------------------------------------------------------------- statistics


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> str:
    """Seconds as a short millisecond figure for a table."""
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


# ----------------------------------------------------------------- output


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """Print ``rows`` (label, value) as a two-column table under ``title``."""
    width = max((len(label) for label, _ in rows), default=0)
    print(f"\n{title}")
    print("-" * max(len(title), width + 20))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` (nothing when ``path`` is None)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    print(f"\nwrote {path}")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


# ----------------------------------------------------------------- /proc


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU (seconds, user + system) of a process and of each of its threads, at one instant."""

    at: float
    """``time.time()`` of the reading."""
    user: float
    system: float
    threads: dict[int, float]
    rss_bytes: int
    context_switches: int
    """Voluntary + involuntary, summed over the threads alive at the reading."""

    @property
    def cpu(self) -> float:
        """User + system CPU seconds."""
        return self.user + self.system


def _stat_times(path: Path) -> tuple[float, float]:
    fields = path.read_text().rsplit(")", 1)[1].split()
    # after "pid (comm)": state is fields[0]; utime, stime are stat fields 14, 15
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def _switches(task: Path) -> int:
    total = 0
    for line in (task / "status").read_text().splitlines():
        if "ctxt_switches:" in line:
            total += int(line.split()[1])
    return total


def sample_process(pid: int) -> ProcSample:
    """Read the CPU times and RSS of ``pid`` and the CPU time of each of its threads."""
    at = time.time()
    user, system = _stat_times(Path(f"/proc/{pid}/stat"))
    threads: dict[int, float] = {}
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            threads[int(task.name)] = sum(_stat_times(task / "stat"))
            switches += _switches(task)
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return ProcSample(at, user, system, threads, rss_pages * PAGE_SIZE, switches)


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water RSS (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def core_busy_seconds() -> dict[int, tuple[float, float, float]]:
    """Per CPU core since boot, from ``/proc/stat``: busy, softirq and steal seconds.

    Busy is everything but idle and iowait; softirq (network processing,
    for loopback traffic too) is part of it and is charged to no process.
    Steal is time the hypervisor gave this virtual CPU to someone else.
    """
    busy: dict[int, tuple[float, float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        match = re.match(r"cpu(\d+)\s+(.*)", line)
        if match is None:
            continue
        values = [int(v) for v in match.group(2).split()]
        idle = values[3] + values[4]
        busy[int(match.group(1))] = (
            (sum(values[:8]) - idle) / CLOCK_TICKS,
            values[6] / CLOCK_TICKS,
            values[7] / CLOCK_TICKS,
        )
    return busy


@dataclass(frozen=True, slots=True)
class Window:
    """The difference between two samples of one process (and of the cores)."""

    start: ProcSample
    end: ProcSample
    cores_start: dict[int, tuple[float, float, float]]
    cores_end: dict[int, tuple[float, float, float]]

    @property
    def seconds(self) -> float:
        """Wall-clock length of the window."""
        return self.end.at - self.start.at

    @property
    def cpu(self) -> float:
        """CPU seconds the process used in the window (all threads, user + system)."""
        return self.end.cpu - self.start.cpu

    @property
    def system(self) -> float:
        """The kernel's part of :attr:`cpu` (syscalls: sockets, futexes, epoll)."""
        return self.end.system - self.start.system

    @property
    def context_switches(self) -> int:
        """Thread context switches in the window (threads that ended are missed)."""
        return self.end.context_switches - self.start.context_switches

    def main_thread_cpu(self, pid: int) -> float:
        """CPU seconds of the main thread: the event loop (SMTP, scheduler, HTTP, logging)."""
        return self.end.threads.get(pid, 0.0) - self.start.threads.get(pid, 0.0)

    def core_busy(self, core: int) -> float:
        """Fraction of the window that ``core`` was busy (whoever used it)."""
        return self._core(core, 0)

    def core_softirq(self, core: int) -> float:
        """Fraction of the window that ``core`` spent in softirq (charged to no process)."""
        return self._core(core, 1)

    def core_steal(self, core: int) -> float:
        """Fraction of the window the hypervisor ran someone else on ``core``."""
        return self._core(core, 2)

    def _core(self, core: int, column: int) -> float:
        if core not in self.cores_end or core not in self.cores_start or self.seconds <= 0:
            return math.nan
        return (self.cores_end[core][column] - self.cores_start[core][column]) / self.seconds


Opened = tuple[ProcSample, dict[int, tuple[float, float, float]]]


def open_window(pid: int) -> Opened:
    """Start a measurement window on ``pid``."""
    return sample_process(pid), core_busy_seconds()


def close_window(pid: int, opened: Opened) -> Window:
    """End a measurement window opened by :func:`open_window`."""
    return Window(opened[0], sample_process(pid), opened[1], core_busy_seconds())


def background_load(seconds: float = 2.0) -> float:
    """Busy fraction of all cores over ``seconds``, before the benchmark starts anything.

    Anything well above zero means other work shares the machine (another
    test suite, a build): CPU per run and delivery times will read high.
    """
    before = core_busy_seconds()
    time.sleep(seconds)
    after = core_busy_seconds()
    busy = sum(after[c][0] - before[c][0] for c in after if c in before)
    return busy / (seconds * max(len(after), 1))


def foreign_load(window: Window, cpu_fraction: float) -> float:
    """How busy the daemon's core was with work that was not the daemon's (nor softirq).

    Hypervisor steal on that core counts as busy (someone else's work), so it
    is part of this figure.
    """
    return window.core_busy(DAEMON_CORE) - window.core_softirq(DAEMON_CORE) - cpu_fraction


def pin_to_stack_core() -> bool:
    """Pin this process (and so the stack it starts) to core 0; False on a single core."""
    if (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(0, {STACK_CORE})
    return True


# ----------------------------------------------------------------- the mail stack


def start_stack(*, fine_delays: bool = True) -> MailStack:
    """Start a private Postfix + Dovecot; with ``fine_delays``, log delays to the microsecond.

    Postfix logs ``delays=a/b/c/d`` with two decimals by default (10 ms steps,
    as coarse as what we measure); ``delay_logging_resolution_limit = 6``
    makes them precise. Only this benchmark's private instance is changed.
    """
    stack = MailStack()
    stack.start()
    if fine_delays:
        try:
            conf = stack.layout.postfix_conf
            postconf = _sbin("postconf")
            subprocess.run(  # noqa: S603 - fixed argv, our own private instance
                [postconf, "-c", str(conf), "-e", "delay_logging_resolution_limit = 6"],
                check=True,
                capture_output=True,
            )
            # Postfix re-reads files written "now" until their mtime is past.
            past = time.time() - 60
            os.utime(conf / "main.cf", (past, past))
            subprocess.run(  # noqa: S603 - fixed argv, our own private instance
                [_sbin("postfix"), "-c", str(conf), "reload"], check=True, capture_output=True
            )
            time.sleep(1.0)  # qmgr and the delivery agents restart with the new setting
        except BaseException:
            stack.stop()
            raise
    return stack


def _sbin(name: str) -> str:
    for directory in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        candidate = Path(directory, name)
        if candidate.is_file():
            return str(candidate)
    return name


_LMTP_SENT: Final = re.compile(
    r"/lmtp\[\d+\]: (?P<qid>[0-9A-Za-z]+): to=<[^>]*>, .*?delay=(?P<delay>[\d.]+), "
    r"delays=(?P<a>[\d.]+)/(?P<b>[\d.]+)/(?P<c>[\d.]+)/(?P<d>[\d.]+), .*status=sent"
)


@dataclass(frozen=True, slots=True)
class PostfixDelivery:
    """Postfix's own account of one delivery over LMTP (``delays=a/b/c/d``)."""

    queue_id: str
    delay: float
    """Seconds from the message's arrival (MAIL FROM) to Dovecot's ``250 Saved``."""
    before_qmgr: float
    in_qmgr: float
    connect: float
    transmit: float

    @property
    def after_queueing(self) -> float:
        """Seconds from the queue manager taking the message (≈ the 250) to ``250 Saved``.

        The 250 that ends DATA is sent once cleanup has queued the file and
        told the queue manager, so this is the MTA's own measure of
        "250 → visible in the mailbox" (Dovecot answers ``Saved`` after the
        file is in ``new/``).
        """
        return self.in_qmgr + self.connect + self.transmit


def postfix_deliveries(log_text: str) -> dict[str, PostfixDelivery]:
    """Every ``status=sent`` LMTP delivery in Postfix's log, by queue id."""
    found: dict[str, PostfixDelivery] = {}
    for match in _LMTP_SENT.finditer(log_text):
        found[match["qid"]] = PostfixDelivery(
            match["qid"],
            float(match["delay"]),
            float(match["a"]),
            float(match["b"]),
            float(match["c"]),
            float(match["d"]),
        )
    return found


# ----------------------------------------------------------------- the daemon


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Route:
    """One probe's route through the stack: which mailbox it lands in."""

    name: str
    mailbox: str | None
    """Key of the mailbox in the config, or None for an SMTP-only probe."""
    rcpt_to: str


def daemon_config(
    stack: MailStack,
    secrets: Path,
    routes: Sequence[Route],
    *,
    interval: str,
    timeout: str,
    jitter: str,
    listen_port: int,
) -> str:
    """A daemon config (YAML) that sends through submission (STARTTLS + AUTH), watches IMAPS.

    Mailbox keys: ``sink`` and ``probe`` (each user's INBOX). Passwords come
    from files in ``secrets`` (written by :func:`write_secrets`).
    """
    lines = [
        f"defaults: {{interval: {interval}, timeout: {timeout}, jitter: {jitter}}}",
        f"token_secret_file: {secrets / 'token'}",
        "smtp_servers:",
        f"  submission: {{host: 127.0.0.1, port: {stack.submission_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}, username: {SENDER},"
        f" password_file: {secrets / 'probe.password'}}}",
        "mailboxes:",
    ]
    for key, user in (("sink", SINK), ("probe", SENDER)):
        lines.append(
            f"  {key}: {{host: 127.0.0.1, port: {stack.imaps_port}, tls: tls,"
            f" ca_file: {stack.ca_file}, username: {user},"
            f" password_file: {secrets / (key + '.password')}}}"
        )
    lines.append("probes:")
    for route in routes:
        mailbox = f", mailbox: {route.mailbox}" if route.mailbox else ""
        lines.append(
            f"  - {{name: {route.name}, smtp: submission{mailbox},"
            f" from: {SENDER}, to: {route.rcpt_to}}}"
        )
    lines.append(f'server: {{listen: "127.0.0.1:{listen_port}"}}')
    return "\n".join(lines) + "\n"


def write_secrets(stack: MailStack, secrets: Path) -> None:
    """The password files and the token secret the config refers to."""
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "token").write_text(TOKEN_SECRET + "\n")
    (secrets / "probe.password").write_text(stack.users[SENDER] + "\n")
    (secrets / "sink.password").write_text(stack.users[SINK] + "\n")
    for path in secrets.iterdir():
        path.chmod(0o600)


@dataclass
class DaemonProcess:
    """``python -m smtp_probe run`` as a child process, its log in a file."""

    config: Path
    log: Path
    port: int
    pin_core: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log_offset: int = field(default=0)

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start the daemon and wait until ``/-/ready`` answers 200.

        Raises:
            RuntimeError: the daemon exited or did not become ready in time.
        """
        core = self.pin_core

        def pin() -> None:
            if core is not None:
                os.sched_setaffinity(0, {core})

        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable,
                    "-m",
                    "smtp_probe",
                    "run",
                    "--config",
                    str(self.config),
                    "--log-level",
                    "info",
                    # The phases switch to the real interval with POST /-/reload.
                    "--web.enable-lifecycle",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=pin,
            )
        end = time.monotonic() + ready_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.get("/-/ready")[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready after {ready_timeout:.0f}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        if self.proc is None:
            raise RuntimeError("daemon not started")
        return self.proc.pid

    def get(self, path: str, method: str = "GET", timeout: float = 30.0) -> tuple[int, bytes]:
        """One HTTP request to the daemon; returns (status, body)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, wait for a clean stop (runs in flight finish); SIGKILL if it hangs."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the daemon's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def events(self) -> Iterator[dict[str, Any]]:
        """Every JSON log line of the daemon so far (non-JSON lines are skipped)."""
        return log_events(self.log)


def runs_between(
    events: Sequence[dict[str, Any]], start: float, end: float
) -> list[dict[str, Any]]:
    """The ``run finished`` events logged in [start, end] (Unix time)."""
    return [e for e in events if e.get("event") == "run finished" and start <= event_time(e) <= end]


def outcome_counts(runs: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many runs ended in each outcome (``stage`` added for failures)."""
    counts: dict[str, int] = {}
    for run in runs:
        key = str(run.get("outcome"))
        if run.get("stage"):
            key += f"@{run['stage']}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------- profiling


def start_py_spy(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` with py-spy (all threads, native frames off) for ``seconds``.

    Returns None (and says so) when py-spy is not installed. py-spy runs
    without pausing the target (``--nonblocking``) on the stack's core, but
    it still costs the target some cache and scheduler noise: take CPU
    figures from a run without it. py-spy's idle detection misses some
    blocked threads, so :func:`summarize_collapsed` drops samples whose
    innermost frame is a blocking wait (:data:`IDLE_LEAVES`).
    """
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy is not installed: no profile (pip install py-spy)")
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish_py_spy(
    proc: subprocess.Popen[bytes], output: Path, top: int = 25
) -> ProfileSummary | None:
    """Wait for py-spy and print where the samples fell: by area, and by function."""
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not output.exists():
        print("py-spy wrote no profile")
        return None
    summary = summarize_collapsed(output.read_text(errors="replace"))
    total = summary.total or 1
    rows = [(name, f"{100 * n / total:5.1f} %") for name, n in summary.areas]
    print_table(f"py-spy: busy samples by area ({summary.total} at 250 Hz, {output})", rows)
    rows = [(name, f"{100 * n / total:5.1f} %") for name, n in summary.inclusive[:top]]
    print_table("py-spy: inclusive, by function", rows)
    rows = [(name, f"{100 * n / total:5.1f} %") for name, n in summary.self_time[:top]]
    print_table("py-spy: self, by function", rows)
    return summary


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """Samples per function from collapsed stacks: total, inclusive, self and by area."""

    total: int
    inclusive: list[tuple[str, int]]
    self_time: list[tuple[str, int]]
    areas: list[tuple[str, int]]


AREAS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("TLS handshake (OpenSSL, both legs)", ("do_handshake",)),
    ("build_message (email package)", ("build_message",)),
    ("DATA payload: Message.as_bytes", ("Message.as_bytes",)),
    ("getaddrinfo via the default executor", ("BaseEventLoop.getaddrinfo",)),
    ("IMAP header parsing (email, policy.default)", ("MailboxWatcher._scan", "email/")),
    ("IMAP commands (imapclient, imaplib, ssl)", ("MailboxWatcher.",)),
    ("SMTP dialogue (aiosmtplib, asyncio ssl)", ("send_message",)),
    ("SMTP dialogue (aiosmtplib, asyncio ssl)", ("aiosmtplib/",)),
    ("SMTP dialogue (aiosmtplib, asyncio ssl)", ("sslproto.py",)),
    ("run log line (structlog, logging)", ("_log_run",)),
    ("metrics update (prometheus_client)", ("Metrics.record",)),
    ("HTTP server (aiohttp)", ("aiohttp/",)),
    ("scheduler (APScheduler)", ("apscheduler/",)),
    ("rest of run_probe / Daemon._run", ("run_probe",)),
    ("rest of run_probe / Daemon._run", ("Daemon._run",)),
    ("event loop, threads, other", ("",)),
)
"""Where a sample's CPU goes: the first area all of whose markers occur in its stack."""


def _area(frames: list[str]) -> str:
    joined = "\n".join(frames)
    for label, markers in AREAS:
        if all(marker in joined for marker in markers):
            return label
    return "event loop, threads, other"


IDLE_LEAVES: Final = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "MailboxWatcher._wait_readable (smtp_probe/probe/imap.py)",
        "SSLSocket.read (ssl.py)",
        "_worker (concurrent/futures/thread.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
    }
)
"""Innermost frames that mean "blocked, not computing" (py-spy still samples some)."""
_FRAME: Final = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def summarize_collapsed(text: str) -> ProfileSummary:
    """Aggregate py-spy's ``--format raw`` output (``frame;frame;... count`` lines)."""
    inclusive: dict[str, int] = {}
    self_time: dict[str, int] = {}
    areas: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = frames[1:]
        if not frames or frames[-1] in IDLE_LEAVES:
            continue
        total += count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + count
        area = _area(frames)
        areas[area] = areas.get(area, 0) + count
    return ProfileSummary(
        total,
        sorted(inclusive.items(), key=lambda kv: -kv[1]),
        sorted(self_time.items(), key=lambda kv: -kv[1]),
        sorted(areas.items(), key=lambda kv: -kv[1]),
    )
