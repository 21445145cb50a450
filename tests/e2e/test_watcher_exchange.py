"""What the watcher says on the wire to real Dovecot, seen through a wire tap.

A poll answers for every run in flight on the mailbox and, without news,
is one ``NOOP`` pipelined with the junk folder's ``STATUS``; new mail is
searched and fetched in one ``FETCH`` of the folder's last messages unless
more are new than that (then ``UID SEARCH``); our message is deleted with
``UID STORE`` and ``UID EXPUNGE`` in one write. A stranger's message is
fetched (``BODY.PEEK``) but never flagged, moved or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

from imapclient import IMAPClient

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.imap_session import TAIL_FETCH
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Arrival
from smtp_probe.probe.spec import TlsMode
from smtp_probe.probe.transcript import Transcript
from tests.support.imap_tap import WireTap
from tests.support.mailstack import MailStack
from tests.support.routes import SENDER, SINK, mailbox


def mail(subject: str, probe_header: str | None = None) -> bytes:
    header = f"X-Smtp-Probe: {probe_header}\r\n" if probe_header else ""
    return (f"From: {SENDER}\r\nTo: {SINK}\r\nSubject: {subject}\r\n{header}\r\nbody\r\n").encode()


@contextlib.contextmanager
def sink_imap(stack: MailStack) -> Iterator[IMAPClient]:
    """Another client of sink's mailbox (IMAPS), as a user's mail program would be."""
    client = IMAPClient(stack.host, port=stack.imaps_port, ssl_context=stack.ssl_context())
    try:
        client.login(SINK, stack.users[SINK])
        yield client
    finally:
        client.logout()


def flags_by_subject(stack: MailStack, mark: str) -> dict[str, tuple[bytes, ...]]:
    """The flags of every INBOX message whose Subject holds ``mark`` (read-only look)."""
    with sink_imap(stack) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["SUBJECT", mark])
        fetched = (
            client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
        )
    out = {}
    for data in fetched.values():
        subject = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip()
        out[subject] = tuple(data[b"FLAGS"])
    return out


def remove_by_subject(stack: MailStack, mark: str) -> None:
    with sink_imap(stack) as client:
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", mark])
        if uids:
            client.delete_messages(uids)
            client.expunge()


def watched(stack: MailStack, tap: WireTap, signer: TokenSigner) -> MailboxWatcher:
    """A one-shot watcher of sink's INBOX over plain IMAP through ``tap``."""
    return MailboxWatcher(mailbox(stack, "imap", port=tap.port, tls=TlsMode.NONE), signer)


def test_runs_in_flight_share_each_poll_and_a_poll_without_news_is_one_noop(
    stack: MailStack,
) -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[list[Arrival | None], list[int], list[list[str]]]:
        tap = WireTap(stack.host, stack.imap_port)
        watcher = watched(stack, tap, signer)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            async with contextlib.AsyncExitStack() as runs:
                waiting = [
                    await runs.enter_async_context(
                        watcher.expecting(f"p{i}", signer.new(f"p{i}"), Transcript())
                    )
                    for i in range(5)
                ]
                deadline = time.monotonic() + 0.5
                arrivals = await asyncio.gather(*(run.arrival(deadline) for run in waiting))
            return list(arrivals), [run.polls for run in waiting], tap.chunks()
        finally:
            await watcher.close()
            tap.close()

    arrivals, polls, chunks = asyncio.run(scenario())

    assert arrivals == [None] * 5
    noops = [chunk for chunk in chunks if "NOOP" in chunk]
    assert min(polls) >= 3
    # One poll for all five runs, not five: each run counts the polls it waited through.
    assert len(noops) <= max(polls) + 1
    # The junk folder's STATUS travels in the same write as the NOOP.
    assert all(any(line.startswith("STATUS ") for line in chunk) for chunk in noops)
    commands = [line for chunk in chunks for line in chunk]
    # Nothing new: at most the one look after SELECT, and no search at all.
    assert not any(line.startswith("UID SEARCH") for line in commands)
    assert sum(line.startswith("FETCH ") for line in commands) <= 1


def test_new_mail_is_searched_and_fetched_in_one_exchange_and_a_stranger_is_left_alone(
    stack: MailStack,
) -> None:
    signer = TokenSigner()
    token = signer.new("tail")
    mark = f"stranger-{uuid.uuid4().hex[:8]}"
    stack.append(SINK, "INBOX", mail(f"{mark} old"))

    async def scenario() -> tuple[Arrival | None, list[list[str]]]:
        tap = WireTap(stack.host, stack.imap_port)
        watcher = watched(stack, tap, signer)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            async with watcher.expecting("tail", token, Transcript()) as expected:
                await asyncio.to_thread(stack.append, SINK, "INBOX", mail(f"{mark} new"))
                await asyncio.to_thread(stack.append, SINK, "INBOX", mail("ours", str(token)))
                arrival = await expected.arrival(time.monotonic() + 5)
            return arrival, tap.chunks()
        finally:
            await watcher.close()
            tap.close()

    try:
        arrival, chunks = asyncio.run(scenario())
        strangers = flags_by_subject(stack, mark)
    finally:
        remove_by_subject(stack, mark)

    assert arrival is not None
    assert arrival.deleted, arrival.cleanup_error
    commands = [line for chunk in chunks for line in chunk]
    assert not any(line.startswith("UID SEARCH") for line in commands), commands
    tail_fetches = [line for line in commands if line.startswith("FETCH ")]
    assert tail_fetches
    assert all("BODY.PEEK[HEADER.FIELDS (X-SMTP-PROBE" in f for f in tail_fetches)
    # Deleted in one write: UID STORE and UID EXPUNGE of exactly our UID.
    uid = arrival.uid
    assert [f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)", f"UID EXPUNGE {uid}"] in chunks
    assert not any("STORE" in line and str(uid) not in line for line in commands)
    # Both strangers (the one the tail fetch read too) are there, unflagged.
    assert strangers == {f"{mark} old": (), f"{mark} new": ()}


def test_more_new_messages_than_the_tail_holds_are_searched_for_and_only_ours_is_deleted(
    stack: MailStack,
) -> None:
    signer = TokenSigner()
    token = signer.new("many")
    mark = f"crowd-{uuid.uuid4().hex[:8]}"
    staging = f"Staging-{mark}"
    stack.append(SINK, "INBOX", mail(f"{mark} old"))
    with sink_imap(stack) as client:
        client.create_folder(staging)
        for index in range(TAIL_FETCH + 2):
            client.append(staging, mail(f"{mark} {index}"))
        client.append(staging, mail("ours", str(token)))

    def move_all_at_once() -> None:
        # One MOVE: seven messages land together, as a burst of deliveries would.
        with sink_imap(stack) as client:
            client.select_folder(staging)
            client.move(client.search(["ALL"]), "INBOX")

    async def scenario() -> tuple[Arrival | None, list[list[str]]]:
        tap = WireTap(stack.host, stack.imap_port)
        watcher = watched(stack, tap, signer)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            async with watcher.expecting("many", token, Transcript()) as expected:
                waiting = asyncio.create_task(expected.arrival(time.monotonic() + 5))
                await asyncio.sleep(0.1)  # a poll or two without news first
                await asyncio.to_thread(move_all_at_once)
                arrival = await waiting
            return arrival, tap.chunks()
        finally:
            await watcher.close()
            tap.close()

    try:
        arrival, chunks = asyncio.run(scenario())
        strangers = flags_by_subject(stack, mark)
    finally:
        remove_by_subject(stack, mark)
        with sink_imap(stack) as client:
            client.delete_folder(staging)

    assert arrival is not None
    assert arrival.deleted, arrival.cleanup_error
    commands = [line for chunk in chunks for line in chunk]
    searches = [line for line in commands if line.startswith("UID SEARCH")]
    assert searches, "seven new messages, a tail of four: the server searches"
    assert all("HEADER X-Smtp-Probe" in line for line in searches)
    expected = {f"{mark} old": ()} | {f"{mark} {i}": () for i in range(TAIL_FETCH + 2)}
    assert strangers == expected


def test_runs_in_a_stream_do_not_each_pay_an_idle_and_a_done(stack: MailStack) -> None:
    signer = TokenSigner()

    async def scenario() -> list[str]:
        tap = WireTap(stack.host, stack.imap_port)
        watcher = watched(stack, tap, signer)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            for index in range(5):
                token = signer.new(f"s{index}")
                async with watcher.expecting(f"s{index}", token, Transcript()) as expected:
                    await asyncio.to_thread(stack.append, SINK, "INBOX", mail("ours", str(token)))
                    arrival = await expected.arrival(time.monotonic() + 5)
                    assert arrival is not None
                await asyncio.sleep(0.1)  # the next run comes soon
            return tap.commands()
        finally:
            await watcher.close()
            tap.close()

    commands = asyncio.run(scenario())

    # Five runs 0.1 s apart: at most the IDLE entered before the first one.
    assert commands.count("IDLE") <= 1, commands
    assert sum(line.startswith("UID EXPUNGE") for line in commands) == 5
