"""The daemon as a real process (``python -m smtp_probe run``) against the mail stack.

Shared by the end-to-end tests that need a running exporter: it writes a
config for the stack's routes, starts the daemon on a free port and waits
until it is ready; and by them and the benchmarks that read its JSON log
(:func:`log_events`, :func:`event_time`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.mailstack import REJECT_550, MailStack
from tests.support.prom import free_port
from tests.support.routes import SENDER, SINK


@dataclass
class Daemon:
    """A running daemon process, its port, config file and log file.

    ``tls`` (a client context) makes :meth:`get` speak HTTPS, and ``auth``
    (user, password) sends basic auth: for a daemon with ``--web.config.file``.
    """

    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    log: Path
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    auth: tuple[str, str] | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        request = urllib.request.Request(self.url(path), method=method)  # noqa: S310
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=20, context=self.tls) as reply:  # noqa: S310
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def config_text(stack: MailStack, secrets: Path, probes: list[str]) -> str:
    """A daemon config for the stack with the named probes (of the three below)."""
    available = {
        "submission": ("submission", "imaps", SINK),
        "mx": ("mx", "imap", SINK),
        "refused": ("submission", "imaps", REJECT_550),
        "added": ("smtps", "imaps", SINK),
    }
    lines = [
        "defaults: {interval: 2s, timeout: 1800ms, jitter: 100ms}",
        f"token_secret_file: {secrets / 'token'}",
        "smtp_servers:",
        f"  submission: {{host: 127.0.0.1, port: {stack.submission_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}, username: {SENDER}, password_file: {secrets / 'smtp'}}}",
        f"  mx: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}}}",
        f"  smtps: {{host: 127.0.0.1, port: {stack.smtps_port}, tls: tls,"
        f" ca_file: {stack.ca_file}, username: {SENDER}, password_file: {secrets / 'smtp'}}}",
        "mailboxes:",
        f"  imaps: {{host: 127.0.0.1, port: {stack.imaps_port}, tls: tls, ca_file: {stack.ca_file},"
        f" username: {SINK}, password: '${{SINK_PASSWORD}}'}}",
        f"  imap: {{host: 127.0.0.1, port: {stack.imap_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}, username: {SINK}, password: '${{SINK_PASSWORD}}'}}",
        "probes:",
    ]
    for name in probes:
        smtp, mailbox, to = available[name]
        lines.append(
            f"  - {{name: {name}, smtp: {smtp}, mailbox: {mailbox}, from: {SENDER}, to: {to}}}"
        )
    return "\n".join(lines) + "\n"


def start_daemon(
    stack: MailStack,
    workdir: Path,
    probes: list[str],
    *,
    config: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> Daemon:
    """Start ``python -m smtp_probe run`` for ``probes`` (names from :func:`config_text`).

    ``config`` replaces the generated config text (it may build on
    ``config_text(stack, workdir, ...)``: the password and token files are
    written to ``workdir`` either way). ``args`` go after ``run``'s own
    (``--log-level debug``); ``env`` is added to the daemon's environment;
    ``tls`` and ``auth`` are how the readiness check (and :meth:`Daemon.get`)
    talk to a daemon with ``--web.config.file``.

    Raises:
        AssertionError: the daemon exited or was not ready within 20 s.
    """
    secrets = workdir
    (secrets / "smtp").write_text(stack.users[SENDER] + "\n")
    (secrets / "token").write_text("a-token-secret-of-enough-length\n")
    text = config if config is not None else config_text(stack, secrets, probes)
    return spawn_daemon(
        workdir,
        text,
        args=args,
        env={"SINK_PASSWORD": stack.users[SINK], **(env or {})},
        tls=tls,
        auth=auth,
    )


def spawn_daemon(
    workdir: Path,
    config: str,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> Daemon:
    """Start ``python -m smtp_probe run`` with the config text ``config`` (no mail stack needed).

    The config is written to ``workdir/config.yml``, the log to
    ``workdir/daemon.log``; ``env`` is added to the daemon's environment;
    ``tls`` and ``auth`` as for :func:`start_daemon`.

    Raises:
        AssertionError: the daemon exited or was not ready within 20 s.
    """
    path = workdir / "config.yml"
    path.write_text(config)
    port = free_port()
    log = workdir / "daemon.log"
    environ = dict(os.environ) | dict(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smtp_probe", "run", "--config", str(path),
             "--listen", f"127.0.0.1:{port}", *args],
            stdout=out, stderr=subprocess.STDOUT, env=environ,
        )  # fmt: skip
    running = Daemon(proc, port, path, log, tls, auth)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            if running.get("/-/ready")[0] == 200:
                return running
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError(f"daemon not ready after 20 s:\n{log.read_text()}")


def stop_daemon(daemon: Daemon) -> None:
    """Stop the daemon as an operator would (SIGTERM: runs finish and clean up), or kill it."""
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(40)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait(10)


def log_events(log: Path) -> Iterator[dict[str, Any]]:
    """Every JSON line of the daemon's log ``log`` so far (non-JSON lines are skipped).

    Raises:
        OSError: the log cannot be read.
    """
    with log.open("rb") as fh:
        for raw in fh:
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                if isinstance(event, dict):
                    yield event


def event_time(event: dict[str, Any]) -> float:
    """The Unix time of a log event (structlog's ISO UTC timestamp); NaN without one."""
    try:
        return datetime.fromisoformat(str(event.get("timestamp", ""))).timestamp()
    except ValueError:
        return math.nan
