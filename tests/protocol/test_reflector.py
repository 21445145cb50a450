"""Reflector runs against the demo sandbox (aiosmtpd in, pymap out) on 127.0.0.1.

A reflector run sends to an address we do not own that answers (an
auto-reply, a forward) and confirms the *answer* in our mailbox by the
signed token in its Subject. Here the "external" address is the sandbox's
junk address, whose folder the probe does not watch, and the test itself
plays the reflector: it waits for our message there and appends an answer
to INBOX the way a vacation responder's reply would land (a new message,
reply prefix, no custom headers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage, Message
from email.utils import format_datetime, localtime
from typing import Any

from smtp_probe.probe.message import PROBE_HEADER, TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Cleanup, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.report import as_dict
from smtp_probe.sandbox import (
    JUNK_FOLDER,
    JUNK_RECIPIENT,
    TRASH_FOLDER,
    SandboxAddress,
)
from smtp_probe.watchers import WatcherPool
from tests.support.sandbox_imap import append, messages_in, run, sandbox, sandbox_mailbox
from tests.support.waiting import eventually

PROBE = "via-autoreply"
SENDER = "probe@sender.test"
Reflect = Callable[[Message], EmailMessage | bytes | None]


def reflector_probe(
    address: SandboxAddress, *, reflector: bool = True, timeout: float = 8.0, **mailbox: Any
) -> ProbeSpec:
    """Send to the sandbox's junk address (the "external" reflector), watch INBOX only."""
    return ProbeSpec(
        name=PROBE,
        smtp=SmtpServer(host=address.host, port=address.smtp_port, tls=TlsMode.NONE),
        mail_from=SENDER,
        rcpt_to=JUNK_RECIPIENT,
        mailbox=sandbox_mailbox(address, junk_folders=(), **mailbox),
        timeout=timeout,
        reflector=reflector,
    )


def auto_reply(
    original: Message, *, subject: str | None = None, dated: bool = True
) -> EmailMessage:
    """What a vacation responder sends back: a new message, the Subject behind ``Re: ``."""
    reply = EmailMessage()
    reply["From"] = str(original["To"])
    reply["To"] = str(original["From"])
    reply["Subject"] = subject if subject is not None else f"Re: {original['Subject']}"
    if dated:
        reply["Date"] = format_datetime(localtime())
    reply["In-Reply-To"] = str(original["Message-ID"])
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content("I am out of the office.\n")
    return reply


@dataclass
class Reflected:
    result: RunResult
    inbox: list[Message]
    junk: list[Message]
    """What reached the reflector (our original)."""


async def reflected_run(
    spec: ProbeSpec, address: SandboxAddress, reflect: Reflect, *, delay: float = 0.0
) -> Reflected:
    """Run ``spec`` while playing the reflector: answer our message with ``reflect(original)``."""
    signer = TokenSigner()
    task = asyncio.create_task(run_probe(spec, signer=signer))
    deadline = time.monotonic() + spec.timeout
    originals: list[Message] = []
    while not originals and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.02)
        originals = await asyncio.to_thread(messages_in, address, JUNK_FOLDER)
    if originals:
        await asyncio.sleep(delay)
        answer = reflect(originals[0])
        if answer is not None:
            await asyncio.to_thread(append, address, "INBOX", answer)
    result = await task
    inbox = await asyncio.to_thread(messages_in, address, "INBOX")
    junk = await asyncio.to_thread(messages_in, address, JUNK_FOLDER)
    return Reflected(result, inbox, junk)


def notes(result: RunResult) -> list[str]:
    return [line.split("=== ", 1)[1] for line in result.transcript.render() if "=== " in line]


def test_an_auto_reply_with_the_token_in_its_subject_is_the_delivery_and_is_cleaned_up() -> None:
    async def scenario() -> Reflected:
        async with sandbox() as address:
            # The reflector answers 1.5 s later: its Date (to the second) is past our 250.
            return await reflected_run(reflector_probe(address), address, auto_reply, delay=1.5)

    done = run(scenario, timeout=30)
    result = done.result

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.arrival is not None
    assert result.arrival.by_subject
    assert result.arrival.deleted
    assert done.inbox == []  # the reply (ours: it carries our valid token) is gone
    assert len(done.junk) == 1  # the original at the reflector is never touched
    original = done.junk[0]
    assert "Auto-Submitted" not in original  # or a vacation responder would not answer
    assert "X-Auto-Response-Suppress" not in original
    assert any(
        note.startswith("imap: found UID ")
        and note.endswith(" in INBOX by the token in its Subject (Re:); token signature verified")
        for note in notes(result)
    ), notes(result)
    legs = result.reflector
    assert legs is not None
    assert legs.source == "Date"
    assert result.delivery_seconds is not None
    assert 0.4 < legs.outbound_seconds <= result.delivery_seconds
    assert legs.return_seconds >= 0
    assert abs(legs.outbound_seconds + legs.return_seconds - result.delivery_seconds) < 1e-9
    assert any(note.startswith("reflector: outbound ") for note in notes(result))
    data = as_dict(result)
    assert data["reflector"] == {
        "outbound_seconds": round(legs.outbound_seconds, 6),
        "return_seconds": round(legs.return_seconds, 6),
    }


def test_an_encoded_word_subject_from_an_exchange_style_autoreply_is_recognised() -> None:
    def reply(original: Message) -> bytes:
        # Encoded-words, folded, cut in the middle of the token (as Header() cuts long subjects).
        subject = Header(f"Automatische Antwort: {original['Subject']}", "utf-8").encode()
        assert subject.count("=?utf-8?") == 2
        raw = auto_reply(original, subject="PLACEHOLDER").as_bytes()
        return raw.replace(b"Subject: PLACEHOLDER", b"Subject: " + subject.encode())

    async def scenario() -> Reflected:
        async with sandbox() as address:
            return await reflected_run(reflector_probe(address), address, reply)

    done = run(scenario, timeout=30)

    assert done.result.outcome is Outcome.DELIVERED, done.result.error
    assert any("(Automatische Antwort:)" in note for note in notes(done.result))
    assert done.inbox == []


def test_a_reply_without_a_date_is_split_at_its_oldest_received_header() -> None:
    def reply(original: Message) -> EmailMessage:
        answer = auto_reply(original, subject=f"RE: AW: {original['Subject']}", dated=False)
        stamp = format_datetime(localtime())
        answer["Received"] = f"from mx.reflector.test by mx.ours.test; {stamp}"
        answer["Received"] = f"from localhost by mx.reflector.test; {stamp}"
        return answer

    async def scenario() -> Reflected:
        async with sandbox() as address:
            return await reflected_run(reflector_probe(address), address, reply, delay=1.2)

    result = run(scenario, timeout=30).result

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.reflector is not None
    assert result.reflector.source == "Received"
    assert result.reflector.outbound_seconds > 0.1


def test_a_reply_with_a_forged_token_is_never_the_delivery_and_is_left_alone() -> None:
    def forged(original: Message) -> EmailMessage:
        subject = str(original["Subject"])
        flipped = subject[:-1] + ("0" if subject[-1] != "0" else "1")
        return auto_reply(original, subject=f"Re: {flipped}")

    async def scenario() -> Reflected:
        async with sandbox() as address:
            return await reflected_run(reflector_probe(address, timeout=3.0), address, forged)

    done = run(scenario, timeout=30)

    assert done.result.outcome is Outcome.NOT_DELIVERED
    assert done.result.stage is Stage.DELIVERY
    assert any("in its Subject but a bad signature" in note for note in notes(done.result))
    assert [str(m["Subject"]).startswith("Re: smtp-probe") for m in done.inbox] == [True]


def test_a_delivery_status_notification_quoting_the_token_is_not_a_delivery() -> None:
    def bounce(original: Message) -> EmailMessage:
        dsn = EmailMessage()
        dsn["From"] = "MAILER-DAEMON@reflector.test"
        dsn["To"] = str(original["From"])
        dsn["Subject"] = f"Undeliverable: {original['Subject']}"
        dsn["Date"] = format_datetime(localtime())
        dsn.set_content("Your message could not be delivered.\n")
        status = EmailMessage()
        status.set_content("Reporting-MTA: dns; reflector.test\n")
        dsn.add_attachment(status)
        dsn.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"')
        return dsn

    async def scenario() -> Reflected:
        async with sandbox() as address:
            return await reflected_run(reflector_probe(address, timeout=3.0), address, bounce)

    done = run(scenario, timeout=30)

    assert done.result.outcome is Outcome.NOT_DELIVERED
    assert any(
        "is a delivery status notification (multipart/report)" in note
        for note in notes(done.result)
    )
    assert len(done.inbox) == 1  # left alone: DSN handling is for later


def test_a_run_that_is_not_a_reflector_run_does_not_take_a_reply_for_its_message() -> None:
    async def scenario() -> Reflected:
        async with sandbox() as address:
            spec = reflector_probe(address, reflector=False, timeout=3.0)
            return await reflected_run(spec, address, auto_reply)

    done = run(scenario, timeout=30)

    assert done.result.outcome is Outcome.NOT_DELIVERED
    assert done.result.reflector is None
    assert len(done.inbox) == 1
    assert len(done.junk) == 1
    assert "Auto-Submitted" in done.junk[0]  # and it asked robots not to answer


def test_our_own_message_redirected_back_is_delivered_with_legs_not_split() -> None:
    """A Sieve ``redirect`` returns our original, header and all: the header finds it."""

    async def scenario() -> Reflected:
        async with sandbox() as address:
            return await reflected_run(reflector_probe(address), address, redirect)

    def redirect(original: Message) -> EmailMessage:
        copy = EmailMessage()
        for name, value in original.items():
            copy[name] = value
        copy.set_content(original.get_payload())
        return copy

    done = run(scenario, timeout=30)
    result = done.result

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.arrival is not None
    assert not result.arrival.by_subject
    assert result.reflector is None
    assert any(note.endswith("legs not split") for note in notes(result))
    assert done.inbox == []
    assert len(done.junk) == 1


def test_a_reply_on_gmail_is_trashed_and_found_there_by_its_subject_without_uidplus() -> None:
    async def scenario() -> tuple[Reflected, list[Message]]:
        options = {"imap_extensions": ["X-GM-EXT-1"], "imap_withheld": ["UIDPLUS"]}
        async with sandbox(**options) as address:
            done = await reflected_run(
                reflector_probe(address, cleanup=Cleanup.TRASH), address, auto_reply
            )
            return done, await asyncio.to_thread(messages_in, address, TRASH_FOLDER)

    done, trash = run(scenario, timeout=30)
    result = done.result

    assert result.outcome is Outcome.DELIVERED, result.error
    token = str(done.junk[0][PROBE_HEADER])
    sent = [line.split("-> ", 1)[1] for line in result.transcript.render() if "  -> " in line]
    assert f"UID SEARCH SUBJECT {token}" in sent
    assert done.inbox == []
    assert trash == []


# ---------------------------------------------------------------- late and leftover replies


def leftover_reply(signer: TokenSigner) -> EmailMessage:
    """A reply to a run of an earlier life of the daemon (same token secret), still in INBOX."""
    reply = EmailMessage()
    reply["From"] = JUNK_RECIPIENT
    reply["To"] = SENDER
    reply["Subject"] = f"Automatic reply: smtp-probe {PROBE} {signer.new(PROBE)}"
    reply["Date"] = format_datetime(localtime())
    reply.set_content("I am out of the office.\n")
    return reply


def test_the_daemon_sweeps_a_leftover_reply_of_a_reflector_probe_and_counts_it_late() -> None:
    key = b"k" * 32

    async def scenario() -> tuple[list[str], list[Message], list[Message]]:
        late: list[str] = []
        async with sandbox() as address:
            await asyncio.to_thread(append, address, "INBOX", leftover_reply(TokenSigner(key)))
            stranger = auto_reply(leftover_reply(TokenSigner(b"x" * 32)))
            await asyncio.to_thread(append, address, "INBOX", stranger)
            before = await asyncio.to_thread(messages_in, address, "INBOX")
            pool = WatcherPool(key, on_late=late.append, start_wait=5.0)
            try:
                await pool.sync([reflector_probe(address)], key=key)
                await eventually(lambda: late != [])
            finally:
                await pool.close()
            after = await asyncio.to_thread(messages_in, address, "INBOX")
        return late, before, after

    late, before, after = run(scenario, timeout=30)

    assert late == [PROBE]
    assert len(before) == 2
    assert [str(m["Subject"]).startswith("Re: Automatic reply:") for m in after] == [True]


def test_the_daemon_leaves_a_reply_alone_when_no_probe_of_the_mailbox_is_a_reflector() -> None:
    key = b"k" * 32

    async def scenario() -> tuple[list[str], list[Message]]:
        late: list[str] = []
        async with sandbox() as address:
            await asyncio.to_thread(append, address, "INBOX", leftover_reply(TokenSigner(key)))
            pool = WatcherPool(key, on_late=late.append, start_wait=5.0)
            try:
                await pool.sync([reflector_probe(address, reflector=False)], key=key)
                await asyncio.sleep(0.5)  # the first sweep is done by then
            finally:
                await pool.close()
            return late, await asyncio.to_thread(messages_in, address, "INBOX")

    late, inbox = run(scenario, timeout=30)

    assert late == []
    assert len(inbox) == 1


def test_a_reply_after_the_run_gave_up_is_counted_late_and_deleted() -> None:
    key = b"k" * 32

    async def scenario() -> tuple[RunResult, list[str], list[Message]]:
        late: list[str] = []
        async with sandbox() as address:
            spec = reflector_probe(address, timeout=1.5)
            pool = WatcherPool(key, on_late=late.append, start_wait=5.0)
            try:
                await pool.sync([spec], key=key)
                async with pool.use(spec.mailbox) as watcher:
                    result = await run_probe(spec, signer=pool.signer, watcher=watcher)
                original = (await asyncio.to_thread(messages_in, address, JUNK_FOLDER))[0]
                await asyncio.to_thread(append, address, "INBOX", auto_reply(original))
                await eventually(lambda: late != [])
            finally:
                await pool.close()
            return result, late, await asyncio.to_thread(messages_in, address, "INBOX")

    result, late, inbox = run(scenario, timeout=30)

    assert result.outcome is Outcome.NOT_DELIVERED
    assert late == [PROBE]
    assert inbox == []
