"""Replicas: several real daemons of one config and one token secret on one mailbox.

Shared by tests/e2e/test_replicas.py (two replicas for 90 s) and
bench/bench_replicas.py (as many and as long as asked). Delivery goes
through :class:`~tests.support.slow_hop.SlowHop`, so every replica always
has messages in flight in the mailbox at the same time as the others.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon_proc import Daemon, start_daemon, stop_daemon
from tests.support.mailstack import SLOW, MailStack
from tests.support.routes import SENDER, SINK
from tests.support.slow_hop import SlowHop

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def replica_config(stack: MailStack, token_file: Path, probes: Sequence[str], interval: str) -> str:
    """The one config every replica runs: ``probes`` through the slow hop into sink's INBOX.

    Each probe runs every ``interval``, which is also its timeout.
    """
    lines = [
        f"defaults: {{interval: {interval}, timeout: {interval}, jitter: 500ms}}",
        f"token_secret_file: {token_file}",
        "smtp_servers:",
        f"  mx: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}}}",
        "mailboxes:",
        f"  sink: {{host: 127.0.0.1, port: {stack.imaps_port}, tls: tls,"
        f" ca_file: {stack.ca_file}, username: {SINK}, password: '${{SINK_PASSWORD}}'}}",
        "probes:",
        *(
            f"  - {{name: {name}, smtp: mx, mailbox: sink, from: {SENDER}, to: {SLOW}}}"
            for name in probes
        ),
    ]
    return "\n".join(lines) + "\n"


@contextmanager
def running_replicas(
    stack: MailStack,
    workdir: Path,
    *,
    count: int,
    probes: Sequence[str],
    interval: str,
    delay: float,
) -> Iterator[tuple[list[Daemon], SlowHop]]:
    """``count`` daemons of one config and one token secret, the slow hop (``delay`` s) in front.

    All are stopped together when the block ends (SIGTERM: runs in progress
    finish and clean up), then the hop.

    Raises:
        AssertionError: a daemon did not start (see :func:`start_daemon`).
    """
    shared = workdir / "shared"
    shared.mkdir()
    token = shared / "token"
    token.write_text("one-token-secret-for-every-replica\n")
    text = replica_config(stack, token, probes, interval)
    with ExitStack() as resources:
        hop = resources.enter_context(SlowHop(stack, delay))
        started: list[Daemon] = []
        resources.callback(stop_all, started)
        for number in range(count):
            home = workdir / f"replica-{number + 1}"
            home.mkdir()
            started.append(start_daemon(stack, home, [], config=text))
        yield started, hop


def stop_all(daemons: Sequence[Daemon]) -> None:
    """SIGTERM every daemon at once, then wait for each (killed after 40 s, as by stop_daemon)."""
    for daemon in daemons:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
    for daemon in daemons:
        try:
            daemon.proc.wait(40)
        except subprocess.TimeoutExpired:
            stop_daemon(daemon)


def scrape(daemon: Daemon) -> Samples:
    """Every sample of the daemon's ``/metrics``, by name and labels.

    Raises:
        AssertionError: the scrape did not answer 200.
    """
    status, text = daemon.get("/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value; ``None`` if the daemon exports no such series."""
    return samples.get((name, frozenset(labels.items())))


def logged(daemon: Daemon, event: str) -> list[dict[str, object]]:
    """The daemon's JSON log lines for ``event`` (``"run finished"``, ``"daemon started"``)."""
    found = []
    for line in daemon.log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found
