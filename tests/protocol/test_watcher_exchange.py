r"""The watcher's exchange against the sandbox's pymap, with and without UIDPLUS and MOVE.

pymap announces new mail in its ``NOOP`` replies as RFC 3501 asks, so
polls search nothing until then and new mail is fetched in one exchange;
without UIDPLUS our message is deleted the careful way (``UID STORE``, a
search for other ``\Deleted`` messages, plain ``EXPUNGE``), with it in one
pipelined write. A stranger is never flagged or deleted. The wire tap
(:mod:`tests.support.imap_tap`) shows the commands.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Arrival
from smtp_probe.probe.transcript import Transcript
from smtp_probe.sandbox import DEMO_USER, SandboxAddress
from tests.support.imap_tap import WireTap
from tests.support.sandbox_imap import append, imap_login, run, sandbox, sandbox_mailbox

PROBE = "exchange"


def mail(subject: str, token: str | None = None) -> bytes:
    header = f"X-Smtp-Probe: {token}\r\n" if token else ""
    return (
        f"From: a@b.test\r\nTo: {DEMO_USER}\r\nSubject: {subject}\r\n{header}\r\nbody\r\n".encode()
    )


def inbox_flags(address: SandboxAddress) -> dict[str, tuple[bytes, ...]]:
    """Subject -> flags of every INBOX message (a read-only look)."""
    with imap_login(address) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        fetched = (
            client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
        )
    return {
        data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip(): tuple(
            data[b"FLAGS"]
        )
        for data in fetched.values()
    }


@pytest.mark.parametrize("withheld", [(), ("UIDPLUS", "MOVE")], ids=["full", "no-uidplus-no-move"])
def test_new_mail_is_fetched_in_one_exchange_and_only_ours_is_deleted(
    withheld: tuple[str, ...],
) -> None:
    signer = TokenSigner()
    token = signer.new(PROBE)

    async def scenario() -> tuple[Arrival | None, list[list[str]], dict[str, tuple[bytes, ...]]]:
        async with sandbox(imap_withheld=list(withheld)) as address:
            await asyncio.to_thread(append, address, "INBOX", mail("old stranger"))
            tap = WireTap(address.host, address.imap_port)
            # Polls far apart: only an announced EXISTS explains a prompt look.
            box = sandbox_mailbox(address, port=tap.port, poll_interval=30.0)
            watcher = MailboxWatcher(box, signer)
            await watcher.start(Transcript(), time.monotonic() + 5)
            try:
                async with watcher.expecting(PROBE, token, Transcript()) as expected:
                    waiting = asyncio.create_task(expected.arrival(time.monotonic() + 5))
                    await asyncio.sleep(0.05)  # polls without news first
                    await asyncio.to_thread(append, address, "INBOX", mail("new stranger"))
                    await asyncio.to_thread(append, address, "INBOX", mail("ours", str(token)))
                    arrival = await waiting
            finally:
                await watcher.close()
                tap.close()
            return arrival, tap.chunks(), await asyncio.to_thread(inbox_flags, address)

    arrival, chunks, left = run(scenario)

    assert arrival is not None
    assert arrival.deleted, arrival.cleanup_error
    commands = [line for chunk in chunks for line in chunk]
    assert not any(line.startswith("UID SEARCH") and "HEADER" in line for line in commands)
    assert any(line.startswith("FETCH ") and "BODY.PEEK[HEADER.FIELDS" in line for line in commands)
    noops = [chunk for chunk in chunks if "NOOP" in chunk]
    assert len(noops) >= 2
    uid = arrival.uid
    store = f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)"
    if withheld:
        at = commands.index(store)
        assert commands[at + 1 : at + 3] == ["UID SEARCH DELETED", "EXPUNGE"]
        assert not any("EXPUNGE" in line and line != "EXPUNGE" for line in commands)
        assert not any(line.startswith(("UID MOVE", "UID COPY")) for line in commands)
    else:
        assert [store, f"UID EXPUNGE {uid}"] in chunks
    assert sum("STORE" in line for line in commands) == 1
    assert left == {"old stranger": (), "new stranger": ()}


def test_a_server_that_refuses_the_tail_fetch_is_searched_instead() -> None:
    signer = TokenSigner()
    token = signer.new(PROBE)

    def mangle(data: bytes) -> bytes:
        # pymap answers BAD to a FETCH of an item it does not know.
        return data.replace(b" FETCH 1:* (UID ", b" FETCH 1:* (NO-SUCH-ITEM UID ")

    async def scenario() -> tuple[Arrival | None, list[str], dict[str, tuple[bytes, ...]]]:
        async with sandbox() as address:
            await asyncio.to_thread(append, address, "INBOX", mail("old stranger"))
            tap = WireTap(address.host, address.imap_port, rewrite=mangle)
            watcher = MailboxWatcher(sandbox_mailbox(address, port=tap.port), signer)
            await watcher.start(Transcript(), time.monotonic() + 5)
            try:
                async with watcher.expecting(PROBE, token, Transcript()) as expected:
                    await asyncio.to_thread(append, address, "INBOX", mail("ours", str(token)))
                    arrival = await expected.arrival(time.monotonic() + 5)
                up = watcher.is_up
            finally:
                await watcher.close()
                tap.close()
            assert up, "a refused FETCH must not cost the connection"
            return arrival, tap.commands(), await asyncio.to_thread(inbox_flags, address)

    arrival, commands, left = run(scenario)

    assert arrival is not None
    assert arrival.deleted, arrival.cleanup_error
    tails = [line for line in commands if line.startswith("FETCH 1:* (UID ")]
    assert len(tails) == 1, "tried once; searched from then on"
    assert any(line.startswith("UID SEARCH") and "HEADER" in line for line in commands)
    assert left == {"old stranger": ()}
