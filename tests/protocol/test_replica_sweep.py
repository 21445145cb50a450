"""A daemon's watcher beside a replica (same token key, another instance id) on the sandbox's pymap.

The test plays the replica: it appends what the replica's runs would
leave in the mailbox, signed with the shared key under another instance id,
young (its run may still be waiting for it) or old (older than the longest
timeout plus the grace: nobody waits for it). The watcher must leave the
young ones untouched (not deleted, not flagged, not counted), sweep the
old ones without calling them late, and come back to the young ones once
they are old enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, localtime
from pathlib import Path

from smtp_probe.probe.message import PROBE_HEADER, TokenSigner, build_message
from smtp_probe.probe.result import Bounce
from smtp_probe.probe.spec import ProbeSpec, SmtpServer, TlsMode
from smtp_probe.sandbox import SandboxAddress
from smtp_probe.watchers import WatcherPool
from tests.support.sandbox_imap import (
    append,
    imap_login,
    messages_in,
    run,
    sandbox,
    sandbox_mailbox,
)
from tests.support.waiting import eventually

KEY = b"shared-token-secret-of-replicas!"
ME = "aaaa0001"
REPLICA = "bbbb0002"
PROBE = "e2e"
SENDER = "probe@sender.test"
RECIPIENT = "rcpt@sandbox.test"
SWEEP_AFTER = 3.0
"""Seconds: the longest timeout plus the grace, short so the young ones come of age in the test."""
REPORT = Path(__file__).resolve().parents[1] / "unit" / "dsn" / "exchange-failed.eml"


def probe(address: SandboxAddress, *, reflector: bool = False, bounces: bool = False) -> ProbeSpec:
    mailbox = sandbox_mailbox(address, junk_folders=())
    return ProbeSpec(
        name=PROBE,
        smtp=SmtpServer(host=address.host, port=address.smtp_port, tls=TlsMode.NONE),
        mail_from=SENDER,
        rcpt_to=RECIPIENT,
        mailbox=mailbox,
        timeout=2.0,
        reflector=reflector,
        bounce_mailbox=mailbox if bounces else None,
    )


def signer(instance: str) -> TokenSigner:
    return TokenSigner(KEY, instance=instance)


def sent_at(age: float) -> float:
    return time.time() - age


def message(instance: str, *, age: float, label: str) -> EmailMessage:
    """A probe message of ``instance``'s run sent ``age`` seconds ago; ``label`` names it here."""
    token = signer(instance).new(PROBE, now=sent_at(age))
    built = build_message(token=token, probe=PROBE, mail_from=SENDER, rcpt_to=RECIPIENT)
    built["X-Test-Label"] = label
    return built


def reply(instance: str, *, age: float, label: str) -> EmailMessage:
    """A reflector's answer to ``instance``'s run: the token only in the Subject."""
    token = signer(instance).new(PROBE, now=sent_at(age))
    answer = EmailMessage()
    answer["From"] = RECIPIENT
    answer["To"] = SENDER
    answer["Subject"] = f"Automatic reply: smtp-probe {PROBE} {token}"
    answer["Date"] = format_datetime(localtime())
    answer["X-Test-Label"] = label
    answer.set_content("I am out of the office.\n")
    return answer


def report(instance: str, *, age: float, label: str) -> bytes:
    """A real-shaped delivery status notification (Exchange's) about ``instance``'s run."""
    token = signer(instance).new(PROBE, now=sent_at(age))
    raw = REPORT.read_bytes().replace(b"@TOKEN@", str(token).encode())
    raw = raw.replace(b"@RUNID@", token.run_id.encode())
    return f"X-Test-Label: {label}\r\n".encode() + raw


def stranger(label: str) -> EmailMessage:
    other = EmailMessage()
    other["From"] = "someone@else.test"
    other["To"] = SENDER
    other["Subject"] = "lunch?"
    other["X-Test-Label"] = label
    other.set_content("hi\n")
    return other


def labels(address: SandboxAddress) -> list[str]:
    return [str(m["X-Test-Label"]) for m in messages_in(address, "INBOX")]


def flagged_deleted(address: SandboxAddress) -> list[int]:
    with imap_login(address) as client:
        client.select_folder("INBOX", readonly=True)
        return list(client.search(["DELETED"]))


async def nudge_until(address: SandboxAddress, condition: Callable[[], bool]) -> None:
    """Append a stranger's message every 0.5 s until ``condition()`` holds (10 s at most).

    New mail ends the idle watcher's IDLE, and it polls. One message could
    land just before the watcher goes idle, unannounced: then only the
    quiet poll, a minute later, would find it.

    Raises:
        AssertionError: the condition did not hold within 10 s.
    """
    for _ in range(20):
        await asyncio.to_thread(append, address, "INBOX", stranger("nudge"))
        with contextlib.suppress(AssertionError):
            await eventually(condition, timeout=0.5)
            return
    raise AssertionError("condition not met in 10 s")


@dataclass
class Seen:
    late: list[str] = field(default_factory=list)
    late_bounces: list[str] = field(default_factory=list)
    foreign: list[tuple[str, str]] = field(default_factory=list)

    def late_bounce(self, probe: str, _: Bounce) -> None:
        self.late_bounces.append(probe)


@dataclass
class Story:
    at_start: list[str]
    while_young: list[str]
    flagged_while_young: list[int]
    seen_while_young: Seen
    at_end: list[str]
    seen: Seen


def pool_for(seen: Seen) -> WatcherPool:
    return WatcherPool(
        KEY,
        instance=ME,
        on_late=seen.late.append,
        on_late_bounce=seen.late_bounce,
        on_foreign=lambda probe, instance: seen.foreign.append((probe, instance)),
        start_wait=5.0,
    )


def snapshot(seen: Seen) -> Seen:
    return Seen(list(seen.late), list(seen.late_bounces), list(seen.foreign))


async def story(
    spec: ProbeSpec, address: SandboxAddress, put: Iterable[EmailMessage | bytes], *, swept: int
) -> Story:
    """Fill INBOX, start a pool on it, look while the young ones are young, then once old.

    Returns once the watcher has swept ``swept`` leftovers of the replica in all.
    """
    for item in put:
        await asyncio.to_thread(append, address, "INBOX", item)
    at_start = await asyncio.to_thread(labels, address)
    seen = Seen()
    pool = pool_for(seen)
    began = time.monotonic()
    try:
        await pool.sync([spec], key=KEY, sweep_after=SWEEP_AFTER)
        # The first sweep has handled the old ones; the young ones are 1.5 s from due.
        await eventually(lambda: len(seen.foreign) >= 1, timeout=2.0)
        await asyncio.sleep(max(0.0, began + SWEEP_AFTER - 1.5 - time.monotonic()))
        while_young = await asyncio.to_thread(labels, address)
        flagged = await asyncio.to_thread(flagged_deleted, address)
        young_seen = snapshot(seen)
        await asyncio.sleep(max(0.0, began + SWEEP_AFTER + 1.0 - time.monotonic()))
        # New mail wakes the idle watcher at once; without it the quiet poll (60 s) would.
        await nudge_until(address, lambda: len(seen.foreign) >= swept)
        at_end = [label for label in await asyncio.to_thread(labels, address) if label != "nudge"]
    finally:
        await pool.close()
    return Story(at_start, while_young, flagged, young_seen, at_end, seen)


def test_young_messages_and_replies_of_a_replica_are_left_alone_until_old_then_swept() -> None:
    async def main() -> Story:
        async with sandbox() as address:
            put = [
                message(ME, age=0.0, label="own leftover"),
                message(REPLICA, age=SWEEP_AFTER + 60, label="replica old"),
                message(REPLICA, age=0.0, label="replica young"),
                reply(REPLICA, age=0.0, label="replica young reply"),
                # Sent "in the future" by a replica whose clock runs an hour ahead.
                message(REPLICA, age=-3600.0, label="replica future"),
                stranger("stranger"),
            ]
            return await story(probe(address, reflector=True), address, put, swept=4)

    told = run(main, timeout=40)

    assert told.at_start == [
        "own leftover",
        "replica old",
        "replica young",
        "replica young reply",
        "replica future",
        "stranger",
    ]
    # First sweep: our own leftover (late) and the replica's old one (not late) are gone.
    assert told.while_young == [
        "replica young",
        "replica young reply",
        "replica future",
        "stranger",
    ]
    assert told.flagged_while_young == []
    assert told.seen_while_young.late == [PROBE]
    assert told.seen_while_young.foreign == [(PROBE, REPLICA)]
    # Once old enough, fetched and verified again, and swept; never counted late.
    assert told.at_end == ["stranger"]
    assert told.seen.late == [PROBE]
    assert told.seen.foreign == [(PROBE, REPLICA)] * 4


def test_young_delivery_reports_of_a_replica_are_left_alone_until_old_then_swept() -> None:
    async def main() -> Story:
        async with sandbox() as address:
            put = [
                report(ME, age=0.0, label="own report"),
                report(REPLICA, age=SWEEP_AFTER + 60, label="replica old report"),
                report(REPLICA, age=0.0, label="replica young report"),
            ]
            return await story(probe(address, bounces=True), address, put, swept=2)

    told = run(main, timeout=40)

    assert told.at_start == ["own report", "replica old report", "replica young report"]
    assert told.while_young == ["replica young report"]
    assert told.flagged_while_young == []
    assert told.seen_while_young.late_bounces == [PROBE]
    assert told.seen_while_young.foreign == [(PROBE, REPLICA)]
    assert told.at_end == []
    assert told.seen.late_bounces == [PROBE]
    assert told.seen.foreign == [(PROBE, REPLICA)] * 2
    assert told.seen.late == []


def test_a_young_replica_message_landing_while_the_watcher_is_up_is_left_alone() -> None:
    """Not only the first sweep: a replica's message that lands beside ours stays."""

    async def main() -> tuple[list[str], Seen]:
        async with sandbox() as address:
            seen = Seen()
            pool = pool_for(seen)
            spec = probe(address)
            try:
                await pool.sync([spec], key=KEY, sweep_after=60.0)
                # Past the first sweep, into IDLE: what lands now is news the server pushes.
                await asyncio.sleep(0.5)
                # Arrives while the watcher is up, as a replica's in-flight message would.
                await asyncio.to_thread(
                    append, address, "INBOX", message(REPLICA, age=0.0, label="replica young")
                )
                await asyncio.to_thread(append, address, "INBOX", message(ME, age=0.0, label="own"))
                # Our own message has a higher UID: once it is swept, the replica's was looked at.
                await nudge_until(address, lambda: seen.late != [])
                await asyncio.sleep(0.3)
            finally:
                await pool.close()
            inbox = await asyncio.to_thread(labels, address)
            return [label for label in inbox if label != "nudge"], seen

    inbox, seen = run(main, timeout=30)

    assert seen.late == [PROBE]
    assert inbox == ["replica young"]
    assert seen.foreign == []


def test_the_header_token_is_what_a_watcher_checks() -> None:
    """Sanity for the helpers above: the replica's message verifies for us and is not ours."""
    built = message(REPLICA, age=0.0, label="x")
    token = signer(ME).verify(PROBE, str(built[PROBE_HEADER]))

    assert token is not None
    assert token.instance == REPLICA
    assert not signer(ME).is_own(token)
