"""A persistent watcher on a mailbox stuffed with tens of thousands of hostile foreign messages.

The big brother of ``tests/e2e/test_hostile_mailbox.py``: a private Postfix +
Dovecot, sink's INBOX stuffed with ``--hostile`` messages of
``tests/support/hostile_mail.py`` (forged headers, Subjects and reports, huge
and broken headers, deep MIME, one 10 MB message) and ``--ordinary`` plain
foreign ones after them, its Junk folder with ``--junk`` hostile and as many
plain ones, then three leftovers of our own. A persistent watcher (as the
daemon's) starts on it, and one on probe@'s empty mailbox; ``--runs`` probe
runs alternate between the two.

Reports: stuffing time; the first sweep (wall time from ``start()`` until the
last leftover is deleted, CPU of this process meanwhile, peak RSS); delivery
time on the stuffed and the empty mailbox (median, p90); and whether any
foreign message changed (folder, UID, flags, bytes): that must be none, and
the exit status is 1 if it is not, or if a run was not delivered.

Run as root (the stack needs it): ``python -m bench.bench_stuffed_mailbox``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

from bench.benchkit import (
    machine_info,
    median,
    ms,
    percentile,
    postfix_deliveries,
    print_table,
    start_stack,
    write_json,
)
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.transcript import Transcript
from tests.support.hostile_mail import (
    PLAIN,
    REFLECT,
    box_of,
    changed,
    hostile_messages,
    ordinary,
    our_leftovers,
    snapshot,
    specs,
    stuff,
    watcher_for,
)
from tests.support.mailstack import MailStack
from tests.support.routes import SENDER, SINK


def main() -> int:
    """Run the benchmark; 1 if a foreign message changed or a run was not delivered."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hostile", type=int, default=20_000, help="hostile messages in INBOX")
    parser.add_argument("--ordinary", type=int, default=5_000, help="plain ones after them")
    parser.add_argument("--junk", type=int, default=5_000, help="hostile (and plain) ones in Junk")
    parser.add_argument("--runs", type=int, default=20, help="runs on each mailbox")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    signer = TokenSigner()
    probes = (PLAIN, REFLECT)
    with start_stack() as stack:
        began = time.monotonic()
        # Made per folder and dropped once appended: the RSS figure is the watcher's.
        stuff(
            stack,
            "INBOX",
            hostile_messages(21, args.hostile, signer, probes) + ordinary(args.ordinary, "inbox"),
        )
        stuff(
            stack,
            "Junk",
            hostile_messages(22, args.junk, signer, probes, big=False)
            + ordinary(args.junk, "junk"),
        )
        stuffing = time.monotonic() - began
        before = snapshot(stack)
        message, reply, report = our_leftovers(signer)
        stack.append(SINK, "INBOX", message)
        stack.append(SINK, "Junk", reply)
        stack.append(SINK, "Junk", report)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        sweep, sweep_cpu, stuffed_runs, empty_runs = asyncio.run(_watch(stack, signer, args.runs))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        after = snapshot(stack)
        postfix = postfix_deliveries(stack.postfix_log())

    touched = sum(len(uids) for uids in changed(before, after).values())
    failed = [r for r in stuffed_runs + empty_runs if r.outcome is not Outcome.DELIVERED]
    times: dict[str, dict[str, list[float]]] = {}
    for side, runs in (("stuffed", stuffed_runs), ("empty", empty_runs)):
        reported = [r.delivery_seconds or 0.0 for r in runs]
        # Postfix's own 250 -> Dovecot's "Saved": what the server takes, which a
        # big Maildir makes slower whatever the watcher does.
        server = [
            postfix[r.smtp.queue_id].after_queueing for r in runs if r.smtp.queue_id in postfix
        ]
        times[side] = {
            "reported": reported,
            "server": server,
            "watcher": [a - b for a, b in zip(reported, server, strict=False)],
        }
    rows = [
        ("messages in INBOX / Junk", f"{len(before['INBOX'])} / {len(before['Junk'])}"),
        ("stuffing (MULTIAPPEND)", f"{stuffing:.1f} s"),
        ("first sweep, wall", f"{sweep:.2f} s"),
        ("first sweep, CPU of this process", f"{sweep_cpu:.2f} s"),
        ("peak RSS before / after watching", f"{rss_before / 2**20:.0f} / {rss / 2**20:.0f} MB"),
    ]
    for side, parts in times.items():
        for part, values in parts.items():
            if values:
                figures = f"median {ms(median(values))}, p90 {ms(percentile(values, 0.9))}"
                rows.append((f"delivery, {side} mailbox, {part}", figures))
    rows += [("runs not delivered", str(len(failed))), ("foreign messages changed", str(touched))]
    print_table("Watching a stuffed mailbox", rows)
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "inbox": len(before["INBOX"]),
            "junk": len(before["Junk"]),
            "stuffing_seconds": stuffing,
            "first_sweep_seconds": sweep,
            "first_sweep_cpu_seconds": sweep_cpu,
            "peak_rss_bytes_before_watching": rss_before,
            "peak_rss_bytes": rss,
            "delivery_seconds": times,
            "not_delivered": len(failed),
            "foreign_changed": touched,
        },
    )
    return 1 if touched or failed else 0


async def _watch(
    stack: MailStack, signer: TokenSigner, runs: int
) -> tuple[float, float, list[RunResult], list[RunResult]]:
    """Start both watchers, wait for the first sweep, then alternate ``runs`` runs on each."""
    stuffed_box, empty_box = box_of(stack, SINK), box_of(stack, SENDER)
    late: list[tuple[str, str, float]] = []
    stuffed = watcher_for(stuffed_box, signer, late)
    empty = watcher_for(empty_box, signer, [])
    on_stuffed: list[RunResult] = []
    on_empty: list[RunResult] = []
    cpu, started = time.process_time(), time.monotonic()
    await stuffed.start(Transcript(), started + 60)
    try:
        async with asyncio.timeout(600):
            while len(late) < 3:
                await asyncio.sleep(0.01)
        sweep, sweep_cpu = max(at for _, _, at in late) - started, time.process_time() - cpu
        await empty.start(Transcript(), time.monotonic() + 20)
        stuffed_plain, _ = specs(stack, stuffed_box)
        empty_plain, _ = specs(stack, empty_box)
        for number in range(runs):
            order = [(empty_plain, empty, on_empty), (stuffed_plain, stuffed, on_stuffed)]
            for spec, watcher, side in order if number % 2 else order[::-1]:
                side.append(await run_probe(spec, signer=signer, watcher=watcher))
    finally:
        await stuffed.close()
        await empty.close()
    return sweep, sweep_cpu, on_stuffed, on_empty


if __name__ == "__main__":
    sys.exit(main())
