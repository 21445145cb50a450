"""Replicas that don't fight, for as long as asked: N daemons of one config on one mailbox.

The long form of tests/e2e/test_replicas.py (two replicas, 90 s, in CI):
``--replicas`` daemons with one config and one ``token_secret_file`` run
``--probes`` probes each into sink's INBOX of a private Postfix + Dovecot,
every delivery held ``--delay`` seconds by a slow next hop
(tests/support/slow_hop.py), so every replica always has messages in
flight beside the others'. Reported per replica: runs by outcome (from its
``run finished`` log lines, runs that ended while stopping included), late
arrivals and swept foreign leftovers (from its ``/metrics`` just before
the stop); then what was left in the mailbox and in Postfix's queue. Exit
status 1 if a run was not delivered or anything was left.

Run as root (the stack needs it): ``python -m bench.bench_replicas --minutes 10``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.benchkit import machine_info, outcome_counts, print_table, start_stack, write_json
from tests.support.replicas import logged, running_replicas, sample, scrape
from tests.support.routes import probe_messages


@dataclass(frozen=True)
class Replica:
    """What one replica did."""

    instance: str
    runs: int
    outcomes: dict[str, int]
    late: float
    foreign_swept: float


def main() -> int:
    """Run the replicas, print what each did and what was left; 0 if all was well."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2, help="daemons (default 2)")
    parser.add_argument("--minutes", type=float, default=10.0, help="run time (default 10)")
    parser.add_argument("--probes", type=int, default=4, help="probes per daemon (default 4)")
    parser.add_argument("--interval", default="5s", help="each probe's interval and timeout")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds each delivery is held")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    probes = [f"replicated-{number + 1}" for number in range(args.probes)]
    stack = start_stack(fine_delays=False)
    workdir = tempfile.TemporaryDirectory(prefix="bench-replicas-")
    try:
        with running_replicas(
            stack,
            Path(workdir.name),
            count=args.replicas,
            probes=probes,
            interval=args.interval,
            delay=args.delay,
        ) as (daemons, hop):
            time.sleep(args.minutes * 60)
            scraped = [scrape(daemon) for daemon in daemons]
            # Leaving the block stops every replica (runs finish and clean up), then the hop.
        replicas = []
        for daemon, metrics in zip(daemons, scraped, strict=True):
            runs = logged(daemon, "run finished")
            started = logged(daemon, "daemon started")
            replicas.append(
                Replica(
                    instance=str(started[0]["instance"]) if started else "?",
                    runs=len(runs),
                    outcomes=outcome_counts(runs),
                    late=sum(
                        sample(metrics, "smtp_probe_late_messages_total", probe=p) or 0
                        for p in probes
                    ),
                    foreign_swept=sum(
                        sample(metrics, "smtp_probe_foreign_leftovers_total", probe=p) or 0
                        for p in probes
                    ),
                )
            )
        left = len(probe_messages(stack))
        queued = len(stack.queue())
        sessions = hop.sessions
    finally:
        stack.stop()
        workdir.cleanup()
    for number, replica in enumerate(replicas, 1):
        print_table(
            f"replica {number} (instance {replica.instance})",
            [
                ("runs", str(replica.runs)),
                *((f"  {k}", str(v)) for k, v in replica.outcomes.items()),
                ("late arrivals", f"{replica.late:g}"),
                ("foreign leftovers swept", f"{replica.foreign_swept:g}"),
            ],
        )
    print_table(
        "afterwards",
        [
            ("deliveries through the slow hop", str(sessions)),
            ("probe messages left in the mailbox", str(left)),
            ("messages left in Postfix's queue", str(queued)),
        ],
    )
    ok = left == 0 and queued == 0
    ok = ok and all(set(r.outcomes) == {"delivered"} and r.late == 0 for r in replicas)
    write_json(
        args.out,
        {
            "benchmark": "replicas",
            "machine": machine_info(),
            "settings": {k: str(v) for k, v in vars(args).items()},
            "replicas": [dataclasses.asdict(replica) for replica in replicas],
            "left_in_mailbox": left,
            "left_in_queue": queued,
            "ok": ok,
        },
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
