"""Two real daemons, one config, one mailbox: each reports the truth, nothing is left behind.

What every team runs for availability (and Kubernetes does in a rolling
update): two replicas of one config with one ``token_secret_file``, so each
verifies the other's messages. Delivery takes 3 s here (a slow next hop in
front of Dovecot, :mod:`tests.support.slow_hop`), so both replicas always
have messages in flight in the one mailbox at the same time. Before run
tokens carried the instance, a replica swept the other's in-flight
messages as its own leftovers: the other's runs ended ``not_delivered`` and
the sweeper counted them late (about half of all runs, on this test).
bench/bench_replicas.py runs the same for longer, with more replicas.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon_proc import Daemon
from tests.support.mailstack import MailStack
from tests.support.replicas import logged, running_replicas, sample, scrape, stop_all
from tests.support.routes import probe_messages
from tests.support.slow_hop import SlowHop

pytestmark = pytest.mark.timeout(300)

DELAY = 3.0
"""Seconds the next hop holds each delivery: the issue's slow delivery."""
RUN_SECONDS = 90.0
"""How long both replicas run: about 18 runs of each probe in each."""
PROBES = ("replicated-a", "replicated-b")
MIN_RUNS = 12
"""Runs each probe must have finished in each replica (5 s interval, 3 s delivery)."""


@pytest.fixture
def replicas(stack: MailStack, tmp_path: Path) -> Iterator[tuple[list[Daemon], SlowHop]]:
    """Two replicas, stopped (runs finish and clean up) before ``stack`` checks for leftovers."""
    with running_replicas(
        stack, tmp_path, count=2, probes=PROBES, interval="5s", delay=DELAY
    ) as running:
        yield running


def test_two_replicas_of_one_config_deliver_every_run_and_leave_nothing_behind(
    stack: MailStack, replicas: tuple[list[Daemon], SlowHop]
) -> None:
    daemons, hop = replicas
    time.sleep(RUN_SECONDS)
    scraped = [scrape(daemon) for daemon in daemons]
    stop_all(daemons)

    for daemon, metrics in zip(daemons, scraped, strict=True):
        where = daemon.log.parent.name
        for probe in PROBES:
            runs = sample(metrics, "smtp_probe_runs_total", probe=probe)
            delivered = sample(
                metrics, "smtp_probe_outcomes_total", probe=probe, outcome="delivered"
            )
            assert runs is not None
            assert runs >= MIN_RUNS, (where, probe, runs)
            assert delivered == runs, (where, probe, runs, delivered)
            # Another replica's in-flight message is neither late nor swept.
            assert sample(metrics, "smtp_probe_late_messages_total", probe=probe) == 0, where
            assert sample(metrics, "smtp_probe_foreign_leftovers_total", probe=probe) == 0, where
            # The slow hop was on the path: every delivery took at least its delay.
            count = sample(metrics, "smtp_probe_delivery_duration_seconds_count", probe=probe)
            total = sample(metrics, "smtp_probe_delivery_duration_seconds_sum", probe=probe)
            assert count == runs
            assert total is not None
            assert total / count >= DELAY
        # Runs that finished after the scrape (while stopping) were delivered too.
        outcomes = {str(run["outcome"]) for run in logged(daemon, "run finished")}
        assert outcomes == {"delivered"}, where
    assert hop.sessions >= 2 * len(PROBES) * MIN_RUNS

    # Two instances, told apart by the first half of their run ids.
    instances = [str(event["instance"]) for d in daemons for event in logged(d, "daemon started")]
    assert len(set(instances)) == 2, instances
    for daemon, instance in zip(daemons, instances, strict=True):
        assert all(
            str(run["run_id"]).startswith(instance) for run in logged(daemon, "run finished")
        )
    # Every message was deleted by its own replica: none is left (the stack fixture checks the
    # bystanders and Junk as well), and nothing waits in Postfix's queue.
    assert probe_messages(stack) == []
    assert stack.queue() == []
