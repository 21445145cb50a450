"""Process, port and temp-dir helpers shared by the real-server test harnesses.

What: the plumbing that :mod:`tests.support.mailstack` (Postfix + Dovecot),
:mod:`tests.support.hopstack` (two more Postfix + rspamd) and
:mod:`tests.support.dns_server` (Knot DNS) all need: free loopback ports, a
private temp directory that names its owner process, cleaning up the
directories and servers of crashed sessions, stopping a server's whole
process group, telling our own server processes from recycled pids, and
reading logs for error messages.

Why one module: the harnesses start servers the same way and must clean
up after themselves the same way; one copy of that logic is one place to
get the pid-recycling and zombie cases right.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "HOST",
    "TERM_WAIT",
    "find_binary",
    "free_ports",
    "group_members",
    "new_root",
    "pid_alive",
    "probe_greeting",
    "proc_matches",
    "read_log",
    "read_pid",
    "reap_stale",
    "render",
    "run",
    "searched",
    "stop_group",
    "stop_if_ours",
    "stop_process",
    "tail",
    "temp_base",
    "write_past",
]

#: Every test server listens here only.
HOST = "127.0.0.1"
#: Grace period after SIGTERM before SIGKILL (test servers: nothing to save).
TERM_WAIT = 1.0

_SEARCH_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin")


def find_binary(name: str) -> str | None:
    """A server binary in PATH or the sbin directories (root's PATH may lack them), or None."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SEARCH_PATH:
        candidate = Path(directory, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def searched() -> str:
    """Where :func:`find_binary` looks besides PATH, for "not found" messages."""
    return ", ".join(_SEARCH_PATH)


def free_ports(count: int) -> list[int]:
    """Let the kernel pick ``count`` distinct free TCP ports on 127.0.0.1.

    All sockets stay bound until every port is chosen, so the ports differ.
    There is a small window between closing them and the servers binding;
    start-up reports a clear error if another process wins that race.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def probe_greeting(port: int, protocol: str, tls: ssl.SSLContext | None) -> str | None:
    """Connect (with TLS if ``tls``), check the server greeting, say goodbye.

    Returns None when the port serves ``protocol`` ("smtp" expects ``220``,
    "imap" ``* OK``), else a short reason.  Doing the TLS handshake proves
    the certificate loads and verifies against our CA - and, unlike a bare
    connect, leaves no "SSL_accept error" noise in the servers' logs.
    """
    expected, goodbye = (b"220", b"QUIT\r\n") if protocol == "smtp" else (b"* OK", b"a LOGOUT\r\n")
    try:
        with socket.create_connection((HOST, port), timeout=2) as raw:
            sock = tls.wrap_socket(raw, server_hostname=HOST) if tls else raw
            with sock:
                greeting = sock.recv(512)
                sock.sendall(goodbye)
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if not greeting.startswith(expected):
        return f"unexpected greeting {greeting[:80]!r}"
    return None


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc.strerror}>"
    return "\n".join(text.splitlines()[-lines:])


def read_log(path: Path) -> str:
    """A log file's whole text so far; empty if the server has not written it yet."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text(errors="replace")
    return ""


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill ``@name@`` placeholders; an unknown name is a programming error (KeyError).

    Everything else (Postfix's ``$name``, Dovecot's ``%{...}``, braces) is
    literal text, so the config templates need no escaping.
    """

    def sub(match: re.Match[str]) -> str:
        return str(values[match.group(1)])

    return re.sub(r"@([a-z_0-9]+)@", sub, template)


def write_past(path: Path, text: str) -> None:
    """Write a Postfix config file or table with an mtime a minute in the past.

    Postfix re-reads a config file or texthash table until its mtime is in
    the past (it guards against half-written files): a file written "now"
    costs ~2 s of 300 ms sleeps per command.
    """
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))


def run(argv: list[str], error: type[Exception], log: Path | None = None) -> str:
    """Run an admin command (``postfix``, ``postqueue``, ...) with a deadline; its stdout.

    Raises:
        error: the command could not run, timed out (60 s) or exited non-zero;
            the message has all its output and the tail of ``log`` if given.
    """
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error(f"{' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        logs = f"\n--- {log} (tail) ---\n{tail(log)}" if log is not None else ""
        raise error(f"{' '.join(argv)} exited with {proc.returncode}: {detail}{logs}")
    return proc.stdout.decode(errors="replace")


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    """The integer in a pid file, or None if absent/garbled."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        # after the command name: state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_group(leader: int, timeout: float = TERM_WAIT) -> None:
    """SIGTERM a server master we started and its whole process group; wait.

    Postfix's master (``postfix start`` runs it under setsid) and the
    servers we spawn with ``start_new_session`` each lead a process group
    that all their children inherit.  Signalling the master alone is not
    enough: Dovecot's master takes over a second to exit and its log, stats
    and auth children outlive it (the auth one would keep answering
    Postfix's SASL requests after ``MailStack.stop_dovecot``).  Signalling
    the group stops everything in ~0.1 s.  Stragglers get SIGKILL after
    ``timeout``: an lmtp process caught mid-delivery waits ~5 s for the auth
    process that the same signal just ended.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while members := group_members(leader):
        if time.monotonic() > deadline:
            if killed:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 1.0
        time.sleep(0.01)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = TERM_WAIT) -> None:
    """Stop a server we spawned with ``start_new_session`` (its whole group) and reap it."""
    stop_group(proc.pid, timeout)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
        proc.kill()
        proc.wait()


def proc_matches(pid: int, exe_name: str, marker: str) -> bool:
    """True if ``pid`` runs a binary named ``exe_name`` and mentions ``marker``.

    Used before killing a left-over server of a crashed earlier session, so
    that a recycled pid of some unrelated process is never signalled: the
    marker (the stack's temp dir) must appear in its command line,
    environment or working directory.
    """
    proc = Path(f"/proc/{pid}")
    try:
        if Path(os.readlink(proc / "exe")).name != exe_name:
            return False
    except OSError:
        return False
    needle = marker.encode()
    for name in ("cmdline", "environ"):
        with contextlib.suppress(OSError):
            if needle in (proc / name).read_bytes():
                return True
    with contextlib.suppress(OSError):
        if os.readlink(proc / "cwd").startswith(marker):
            return True
    return False


def stop_if_ours(pid_file: Path, exe_name: str, root: Path) -> int | None:
    """Stop the process group led by the pid in ``pid_file`` if it is ours; that pid.

    "Ours" is :func:`proc_matches` with ``root`` (the server's temp dir) as
    the marker.  Returns the pid read (None: no readable pid file), whether
    or not it was ours.
    """
    leader = read_pid(pid_file)
    if leader is not None and proc_matches(leader, exe_name, str(root)):
        stop_group(leader)
    return leader


def temp_base() -> Path:
    """Where server directories go: ``tempfile.gettempdir()`` if usable, else /tmp.

    Two constraints: the postfix, dovecot and nobody users must be able to
    traverse every parent directory, and unix socket paths (up to ~45
    characters below the stack directory) must stay under the 108-byte
    limit.  A ``TMPDIR`` inside root's home, or a deep pytest tmp dir,
    fails one of them.
    """
    base = Path(tempfile.gettempdir()).resolve()
    usable = len(str(base)) <= 40 and all(
        (parent.stat().st_mode & 0o001) for parent in (base, *base.parents)
    )
    return base if usable else Path("/tmp")


def new_root(prefix: str) -> Path:
    """A fresh ``<temp_base>/<prefix>XXXX`` directory, mode 0755, owned by this process.

    Server users (postfix, dovecot, nobody, _rspamd) must traverse it
    (mkdtemp makes it 0700).  ``owner.pid`` names this process, so that
    :func:`reap_stale` can tell a crashed session's directory from a live one.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=temp_base()))
    root.chmod(0o755)
    (root / "owner.pid").write_text(f"{os.getpid()}\n")
    return root


def reap_stale(prefix: str, stop: Callable[[Path], object]) -> None:
    """Clean up the ``prefix*`` directories whose owner process is gone.

    ``atexit`` does not run when the Python process is killed (SIGKILL, a CI
    timeout), so every start first calls ``stop(root)`` for each such
    directory (it stops that directory's servers) and then removes it.
    """
    for root in temp_base().glob(prefix + "*"):
        owner = read_pid(root / "owner.pid")
        if owner is None or pid_alive(owner):
            continue
        stop(root)
        shutil.rmtree(root, ignore_errors=True)
