r"""A mailbox stuffed with hostile foreign mail is watched at normal speed and never touched.

Against a private Postfix + Dovecot (its own stack: the session's shared sink
mailbox must not carry three thousand strangers into other tests; and its
Dovecot refuses command lines over 8 KB, as RFC 7162 lets a server do: a
first sweep that fetched all ~1,800 candidates in one command failed, and
skipped them). Before the
watchers start, sink's INBOX and its ``\Junk`` folder get
:mod:`tests.support.hostile_mail`'s messages (forged headers, Subjects and
delivery reports, huge and broken headers, deep MIME, 10 MB, no headers, a
future date) followed by ordinary foreign mail, as in any real mailbox; then
three leftovers of our own (a message, a reflector's reply, a report), which
the first sweep must find and delete. Probe runs then alternate between the
stuffed mailbox and an empty one (probe@'s) on the same stack, each watched by
a persistent watcher as the daemon's: every run is delivered, and the stuffed
side's delivery times stay within a generous factor of the empty side's (a
watcher that re-reads the folder each poll is far outside it; alternating keeps
machine load out of the comparison). Afterwards every foreign message is where
it was, byte for byte, with the same UID and no flag added: no ``\Deleted``, no
``\Seen`` (only ``BODY.PEEK`` is ever fetched), nothing moved to Trash.

Cost in CI: about 10-15 s (stack start 1 s, stuffing 3 s, runs and snapshots).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator

import pytest

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.transcript import Transcript
from tests.support.hostile_mail import (
    PLAIN,
    REFLECT,
    TEN_MB,
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
from tests.support.mailstack import TRASH_FOLDER, MailStack
from tests.support.routes import SENDER, SINK

INBOX_HOSTILE, INBOX_ORDINARY = 2600, 400
"""~1,800 candidates: a single FETCH of them all would be a ~9 KB command line."""
LINE_LIMIT = 8192
"""Dovecot refuses longer command lines here, as a server keeping RFC 7162's
recommended 8,192 octets does (Dovecot's default is 64 KB)."""
JUNK_HOSTILE, JUNK_ORDINARY = 300, 200
PLAIN_RUNS, REFLECTOR_RUNS = 8, 2
SLOWER_AT_MOST = 3.0
"""The stuffed mailbox's median delivery time against the empty one's..."""
SLACK_SECONDS = 0.15
"""...plus this much, for a loaded CI machine. Re-searching or re-fetching the
whole stuffed folder on each poll costs far more than this per run."""
FIRST_SWEEP_SECONDS = 15.0
"""The first sweep over ~2,000 foreign candidates (10 MB of them): ~1 s here."""


@pytest.fixture(scope="module")
def private_stack() -> Iterator[MailStack]:
    """A mail stack of this module's own: its sink mailbox ends up stuffed."""
    with MailStack(imap_max_line_length=LINE_LIMIT) as stack:
        yield stack


def test_a_stuffed_mailbox_is_watched_at_normal_speed_and_no_foreign_message_is_touched(
    private_stack: MailStack,
) -> None:
    stack = private_stack
    signer = TokenSigner()
    probes = (PLAIN, REFLECT)
    stuff(
        stack,
        "INBOX",
        hostile_messages(11, INBOX_HOSTILE, signer, probes) + ordinary(INBOX_ORDINARY, "inbox"),
    )
    stuff(
        stack,
        "Junk",
        hostile_messages(12, JUNK_HOSTILE, signer, probes, big=False)
        + ordinary(JUNK_ORDINARY, "junk"),
    )
    before = snapshot(stack)
    assert max(len(raw) for raw in stack.maildir_messages(SINK)) > TEN_MB * 0.99
    message, reply, report = our_leftovers(signer)
    stack.append(SINK, "INBOX", message)
    stack.append(SINK, "Junk", reply)
    stack.append(SINK, "Junk", report)  # the last thing the first sweep looks at

    stuffed_box, empty_box = box_of(stack, SINK), box_of(stack, SENDER)
    stuffed_plain, stuffed_reflect = specs(stack, stuffed_box)
    empty_plain, empty_reflect = specs(stack, empty_box)
    late: list[tuple[str, str, float]] = []

    async def scenario() -> tuple[float, list[RunResult], list[RunResult]]:
        stuffed = watcher_for(stuffed_box, signer, late)
        empty = watcher_for(empty_box, signer, [])
        started = time.monotonic()
        await stuffed.start(Transcript(), started + 20)
        await empty.start(Transcript(), time.monotonic() + 20)
        try:
            give_up = started + FIRST_SWEEP_SECONDS * 2
            while len(late) < 3 and time.monotonic() < give_up:
                await asyncio.sleep(0.02)
            if len(late) < 3:
                pytest.fail(f"the first sweep did not delete our 3 leftovers; it found {late}")
            sweep = max(at for _, _, at in late) - started
            on_stuffed: list[RunResult] = []
            on_empty: list[RunResult] = []
            rounds = [(empty_plain, stuffed_plain)] * PLAIN_RUNS
            rounds += [(empty_reflect, stuffed_reflect)] * REFLECTOR_RUNS
            for number, (one, other) in enumerate(rounds):
                # Alternate which side goes first, so neither always follows the other.
                first, second = (one, other) if number % 2 else (other, one)
                for spec in (first, second):
                    side = on_empty if spec.mailbox is empty_box else on_stuffed
                    watcher = empty if side is on_empty else stuffed
                    side.append(await run_probe(spec, signer=signer, watcher=watcher))
            return sweep, on_stuffed, on_empty
        finally:
            await stuffed.close()
            await empty.close()

    sweep, on_stuffed, on_empty = asyncio.run(scenario())

    # The first sweep found our three leftovers (the report last of all) and deleted them.
    assert sorted((kind, name) for kind, name, _ in late) == [
        ("message", PLAIN),
        ("message", REFLECT),
        ("report", PLAIN),
    ]
    assert sweep < FIRST_SWEEP_SECONDS
    for result in on_stuffed + on_empty:
        assert result.outcome is Outcome.DELIVERED, "\n".join(result.transcript.render())
        assert result.arrival is not None
        assert result.arrival.deleted
    plain_times = {
        side: [r.delivery_seconds or 0.0 for r in runs if r.probe == PLAIN]
        for side, runs in (("stuffed", on_stuffed), ("empty", on_empty))
    }
    stuffed_median = statistics.median(plain_times["stuffed"])
    empty_median = statistics.median(plain_times["empty"])
    assert stuffed_median <= empty_median * SLOWER_AT_MOST + SLACK_SECONDS, plain_times

    # Every foreign message is still there: same folder, UID, flags and bytes; ours are gone.
    after = snapshot(stack)
    for folder, uids in changed(before, after).items():
        assert not uids, f"{folder}: {len(uids)} message(s) changed, e.g. UID {min(uids)}"
    assert len(before["INBOX"]) == INBOX_HOSTILE + INBOX_ORDINARY
    assert sum(b"\\Seen" not in flags for flags, _ in before["INBOX"].values()) > 1000
    assert len(before["Junk"]) == JUNK_HOSTILE + JUNK_ORDINARY
    assert before[TRASH_FOLDER] == {}
