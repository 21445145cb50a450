"""Two real daemons, one config, one mailbox: each reports the truth, nothing is left behind.

What every team runs for availability (and Kubernetes does in a rolling
update): two replicas of one config with one ``token_secret_file``, so each
verifies the other's messages. Delivery takes 3 s here (a slow next hop in
front of Dovecot, :mod:`tests.support.slow_hop`), so both replicas always
have messages in flight in the one mailbox at the same time. Before run
tokens carried the instance, a replica swept the other's in-flight
messages as its own leftovers: the other's runs ended ``not_delivered`` and
the sweeper counted them late.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon_proc import Daemon, start_daemon, stop_daemon
from tests.support.mailstack import SLOW, MailStack
from tests.support.routes import SENDER, SINK, probe_messages
from tests.support.slow_hop import SlowHop

pytestmark = pytest.mark.timeout(300)

DELAY = 3.0
"""Seconds the next hop holds each delivery: the issue's slow delivery."""
RUN_SECONDS = 90.0
"""How long both replicas run: about 18 runs of each probe in each."""
PROBES = ("replicated-a", "replicated-b")
MIN_RUNS = 12
"""Runs each probe must have finished in each replica (5 s interval, 3 s delivery)."""


def config(stack: MailStack, shared: Path) -> str:
    """The one config both replicas run: two probes through the slow hop into sink's INBOX."""
    lines = [
        "defaults: {interval: 5s, timeout: 5s, jitter: 500ms}",
        f"token_secret_file: {shared / 'token'}",
        "smtp_servers:",
        f"  mx: {{host: 127.0.0.1, port: {stack.smtp_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}}}",
        "mailboxes:",
        f"  sink: {{host: 127.0.0.1, port: {stack.imaps_port}, tls: tls,"
        f" ca_file: {stack.ca_file}, username: {SINK}, password: '${{SINK_PASSWORD}}'}}",
        "probes:",
        *(
            f"  - {{name: {name}, smtp: mx, mailbox: sink, from: {SENDER}, to: {SLOW}}}"
            for name in PROBES
        ),
    ]
    return "\n".join(lines) + "\n"


def samples(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the daemon's /metrics, by name and labels."""
    status, text = daemon.get("/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


@pytest.fixture
def replicas(stack: MailStack, tmp_path: Path) -> Iterator[tuple[Daemon, Daemon, SlowHop]]:
    """Two daemons of one config and one token secret, the slow hop in front of Dovecot.

    Stopped together (SIGTERM: runs in progress finish and clean up) before
    the ``stack`` fixture checks that no probe message is left.
    """
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "token").write_text("one-token-secret-for-both-replicas\n")
    text = config(stack, shared)
    with ExitStack() as resources:
        hop = resources.enter_context(SlowHop(stack, DELAY))
        started: list[Daemon] = []
        resources.callback(stop_all, started)
        for name in ("one", "two"):
            workdir = tmp_path / name
            workdir.mkdir()
            started.append(start_daemon(stack, workdir, [], config=text))
        yield started[0], started[1], hop


def stop_all(daemons: list[Daemon]) -> None:
    """SIGTERM every daemon at once, then wait for each (see :func:`stop_daemon`)."""
    for daemon in daemons:
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
    for daemon in daemons:
        try:
            daemon.proc.wait(40)
        except subprocess.TimeoutExpired:
            stop_daemon(daemon)


def test_two_replicas_of_one_config_deliver_every_run_and_leave_nothing_behind(
    stack: MailStack, replicas: tuple[Daemon, Daemon, SlowHop]
) -> None:
    one, two, hop = replicas
    time.sleep(RUN_SECONDS)
    scraped = [samples(one), samples(two)]
    stop_all([one, two])

    for daemon, metrics in zip((one, two), scraped, strict=True):
        where = daemon.log.parent.name
        for probe in PROBES:
            runs = value(metrics, "smtp_probe_runs_total", probe=probe)
            delivered = value(
                metrics, "smtp_probe_outcomes_total", probe=probe, outcome="delivered"
            )
            assert runs is not None
            assert runs >= MIN_RUNS, (where, probe, runs)
            assert delivered == runs, (
                where,
                probe,
                runs,
                delivered,
                daemon.log.read_text()[-3000:],
            )
            # Another replica's in-flight message is neither late nor swept.
            assert value(metrics, "smtp_probe_late_messages_total", probe=probe) == 0, where
            assert value(metrics, "smtp_probe_foreign_leftovers_total", probe=probe) == 0, where
            # The slow hop was on the path: every delivery took at least its delay.
            count = value(metrics, "smtp_probe_delivery_duration_seconds_count", probe=probe)
            total = value(metrics, "smtp_probe_delivery_duration_seconds_sum", probe=probe)
            assert count == runs
            assert total is not None
            assert total / count >= DELAY
    assert hop.sessions >= 4 * MIN_RUNS

    # Two instances, told apart by their run ids' first half (logged at start-up).
    instances = {
        match
        for daemon in (one, two)
        for match in re.findall(r'"instance": "([0-9a-f]{8})"', daemon.log.read_text())
    }
    assert len(instances) == 2, instances
    # Every message was deleted by its own replica; none is left (the stack fixture checks the
    # bystanders and Junk as well), and nothing waits in Postfix's queue.
    assert probe_messages(stack) == []
    assert stack.queue() == []
