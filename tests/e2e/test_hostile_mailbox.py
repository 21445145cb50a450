r"""A mailbox stuffed with hostile foreign mail is watched at normal speed and never touched.

Against a private Postfix + Dovecot (its own stack: the session's shared sink
mailbox must not carry two thousand strangers into other tests). Before the
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

Cost in CI: about 10 s (stack start 1 s, stuffing 3 s, runs and snapshots).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from imapclient import IMAPClient

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import PROBE_HEADER, SUBJECT_MARK, TokenSigner
from smtp_probe.probe.result import Bounce, Outcome, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Mailbox, ProbeSpec
from smtp_probe.probe.transcript import Transcript
from smtp_probe.secret import Secret
from tests.support.hostile_mail import Hostile, hostile_messages
from tests.support.mailstack import REFLECTOR, TRASH_FOLDER, MailStack
from tests.support.routes import SENDER, SINK, mailbox, probe, smtp_server

PLAIN, REFLECT = "plain", "reflect"
FOLDERS = ("INBOX", "Junk", TRASH_FOLDER)
INBOX_HOSTILE, INBOX_ORDINARY = 1500, 400
JUNK_HOSTILE, JUNK_ORDINARY = 300, 200
PLAIN_RUNS, REFLECTOR_RUNS = 8, 2
SLOWER_AT_MOST = 3.0
"""The stuffed mailbox's median delivery time against the empty one's..."""
SLACK_SECONDS = 0.15
"""...plus this much, for a loaded CI machine. Re-searching or re-fetching the
whole stuffed folder on each poll costs far more than this per run."""
FIRST_SWEEP_SECONDS = 15.0
"""The first sweep over ~2,000 foreign candidates (10 MB of them): ~1 s here."""

Snapshot = dict[str, dict[int, tuple[frozenset[bytes], bytes]]]


@pytest.fixture(scope="module")
def private_stack() -> Iterator[MailStack]:
    """A mail stack of this module's own: its sink mailbox ends up stuffed."""
    with MailStack() as stack:
        yield stack


def _client(stack: MailStack, user: str) -> IMAPClient:
    client = IMAPClient(
        stack.host, port=stack.imaps_port, ssl_context=stack.ssl_context(), timeout=60
    )
    client.login(user, stack.users[user])
    return client


def stuff(stack: MailStack, folder: str, messages: list[Hostile]) -> None:
    """APPEND ``messages`` to sink's ``folder``, 200 per MULTIAPPEND (one by one takes 5x longer)."""
    with _client(stack, SINK) as client:
        for first in range(0, len(messages), 200):
            client.multiappend(folder, [m.append_item() for m in messages[first : first + 200]])


def snapshot(stack: MailStack) -> Snapshot:
    r"""Every message of sink's folders: UID -> (flags but ``\Recent``, the whole message).

    Read-only selects and ``BODY.PEEK``: taking the snapshot changes nothing.
    """
    found: Snapshot = {}
    with _client(stack, SINK) as client:
        for folder in FOLDERS:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            messages: dict[int, tuple[frozenset[bytes], bytes]] = {}
            for first in range(0, len(uids), 500):
                fetched = client.fetch(uids[first : first + 500], ["FLAGS", "BODY.PEEK[]"])
                for uid, data in fetched.items():
                    flags = frozenset(data[b"FLAGS"]) - {b"\\Recent"}
                    messages[uid] = (flags, data[b"BODY[]"])
            found[folder] = messages
    return found


def box_of(stack: MailStack, user: str) -> Mailbox:
    """The mailbox of ``user`` over IMAPS, with a short command timeout."""
    return replace(mailbox(stack), username=user, password=Secret(stack.users[user]))


def specs(stack: MailStack, box: Mailbox) -> tuple[ProbeSpec, ProbeSpec]:
    """A plain probe to ``box``'s user and a reflector probe answered to them, watched in ``box``."""
    user = box.username
    plain = replace(probe(stack, box=box, to=user, name=PLAIN), timeout=20.0)
    reflect = replace(
        probe(stack, smtp=smtp_server(stack, "mx"), box=box, to=REFLECTOR, name=REFLECT),
        mail_from=user,
        reflector=True,
        timeout=20.0,
    )
    return plain, reflect


def watcher_for(
    box: Mailbox, signer: TokenSigner, late: list[tuple[str, str, float]]
) -> MailboxWatcher:
    """A persistent watcher as the daemon makes it, looking for replies and reports as well."""

    def on_late(probe_name: str) -> None:
        late.append(("message", probe_name, time.monotonic()))

    def on_late_bounce(probe_name: str, bounce: Bounce) -> None:
        late.append(("report", probe_name, time.monotonic()))

    return MailboxWatcher(
        box,
        signer,
        persistent=True,
        probe_names=(PLAIN, REFLECT),
        reflector_probes=(REFLECT,),
        bounce_probes=(PLAIN,),
        on_late=on_late,
        on_late_bounce=on_late_bounce,
    )


def our_leftovers(signer: TokenSigner) -> tuple[bytes, bytes, bytes]:
    """A probe message, a reflector's reply and a report of ours, from an earlier life."""
    message = (
        f"From: {SENDER}\r\nTo: {SINK}\r\n{PROBE_HEADER}: {signer.new(PLAIN)}\r\n"
        "Subject: leftover\r\n\r\nours\r\n"
    ).encode()
    reply = (
        f"From: {REFLECTOR}\r\nTo: {SINK}\r\n"
        f"Subject: Auto: {SUBJECT_MARK} {REFLECT} {signer.new(REFLECT)}\r\n\r\nanswer\r\n"
    ).encode()
    report = (
        "From: MAILER-DAEMON@example.test\r\nTo: sink@example.test\r\n"
        "Message-ID: <leftover-report@example.test>\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n'
        "MIME-Version: 1.0\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nbounced\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
        "Final-Recipient: rfc822; nobody@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--r\r\nContent-Type: text/rfc822-headers\r\n\r\n{PROBE_HEADER}: {signer.new(PLAIN)}\r\n"
        "\r\n--r--\r\n"
    ).encode()
    return message, reply, report


def ordinary(count: int, folder: str) -> list[Hostile]:
    """Plain foreign mail: what most of a real mailbox is, after the hostile part."""
    return [
        Hostile(
            "ordinary",
            (
                f"From: friend{n}@elsewhere.test\r\nTo: {SINK}\r\nSubject: lunch {folder} {n}\r\n"
                f"Message-ID: <{folder}-{n}@elsewhere.test>\r\n\r\nsee you\r\n"
            ).encode(),
        )
        for n in range(count)
    ]


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
            async with asyncio.timeout(FIRST_SWEEP_SECONDS * 2):
                while len(late) < 3:
                    await asyncio.sleep(0.02)
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
    for folder in FOLDERS:
        changed = {
            uid
            for uid in before[folder].keys() | after[folder].keys()
            if before[folder].get(uid) != after[folder].get(uid)
        }
        assert not changed, f"{folder}: {len(changed)} message(s) changed, e.g. UID {min(changed)}"
    assert len(before["INBOX"]) == INBOX_HOSTILE + INBOX_ORDINARY
    assert len(before["Junk"]) == JUNK_HOSTILE + JUNK_ORDINARY
    assert before[TRASH_FOLDER] == {}
