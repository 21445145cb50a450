r"""Cleanup by ``\Trash`` (Gmail's way) against the demo sandbox's pymap on 127.0.0.1.

Gmail deletes nothing when a message is expunged from INBOX: it only loses
its INBOX label and stays in All Mail. So the watcher moves our message to
the SPECIAL-USE ``\Trash`` folder and expunges it there. The sandbox stands
for Gmail by listing ``X-GM-EXT-1`` among its capabilities (pymap does not
implement Gmail's commands; the probe only detects the server by that name)
and marking its ``Trash`` folder ``\Trash``; withholding ``MOVE`` or
``UIDPLUS`` stands for servers without them.

The watcher is driven directly (the test appends the message, as the
delivery agent would), so the test knows the token; one run goes through
the sandbox's SMTP as well.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import Any

import pytest

from smtp_probe.probe.imap import ImapError, MailboxWatcher
from smtp_probe.probe.message import PROBE_HEADER, Token, TokenSigner, build_message
from smtp_probe.probe.result import Arrival, Outcome, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Cleanup, Mailbox, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.probe.transcript import Transcript
from smtp_probe.sandbox import DEMO_USER, TRASH_FOLDER, SandboxAddress
from tests.support.sandbox_imap import (
    append,
    delete_folder,
    imap_login,
    messages_in,
    run,
    sandbox,
    sandbox_mailbox,
)

PROBE = "to-gmail"
GMAIL = ("X-GM-EXT-1",)


def probe_message(token: Token) -> EmailMessage:
    return build_message(token=token, probe=PROBE, mail_from="probe@sender.test", rcpt_to=DEMO_USER)


def bystander(subject: str, **headers: str) -> EmailMessage:
    """Somebody else's mail: it must survive every cleanup."""
    message = EmailMessage()
    message["From"] = "someone@elsewhere.test"
    message["To"] = DEMO_USER
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("not yours to delete\n")
    return message


@dataclass
class Confirmed:
    """What one watched delivery left behind."""

    token: Token
    arrival: Arrival | None
    lines: list[str]
    inbox: list[Message]
    trash: list[Message]


async def confirm(
    address: SandboxAddress,
    mailbox: Mailbox,
    *,
    before: Callable[[SandboxAddress, Token], None] | None = None,
) -> Confirmed:
    """Watch ``mailbox``, deliver a probe message into INBOX, wait for it; then look at the folders.

    ``before`` runs (in a thread) once the token is known and before the
    delivery, to plant bystanders.
    """
    signer = TokenSigner()
    watcher = MailboxWatcher(mailbox, signer)
    transcript = Transcript()
    deadline = time.monotonic() + 10
    token = signer.new(PROBE)
    await watcher.start(transcript, deadline)
    try:
        if before is not None:
            await asyncio.to_thread(before, address, token)
        async with watcher.expecting(PROBE, token, transcript) as expected:
            await asyncio.to_thread(append, address, "INBOX", probe_message(token))
            arrival = await expected.arrival(deadline)
    finally:
        await watcher.close()
    inbox = await asyncio.to_thread(messages_in, address, "INBOX")
    trash = await asyncio.to_thread(messages_in, address, TRASH_FOLDER)
    return Confirmed(token, arrival, transcript.render(), inbox, trash)


def cleaned_up(done: Confirmed) -> Arrival:
    """The arrival, after checking that the message was found and deleted without error."""
    assert done.arrival is not None, "the message was not found"
    assert done.arrival.cleanup_error is None, done.arrival.cleanup_error
    assert done.arrival.deleted
    return done.arrival


def tokens(messages: list[Message]) -> list[str]:
    return [str(m.get(PROBE_HEADER, "")) for m in messages]


def subjects(messages: list[Message]) -> list[str]:
    return [str(m["Subject"]) for m in messages]


def commands(lines: list[str]) -> list[str]:
    """The IMAP commands of a transcript after the initial SELECT, without timestamps."""
    sent = [line.split("-> ", 1)[1] for line in lines if "  -> " in line]
    return sent[sent.index("SELECT INBOX") + 1 :]


# ---------------------------------------------------------------- trash


def test_cleanup_trash_moves_our_message_to_trash_and_expunges_it_there() -> None:
    async def scenario() -> Confirmed:
        async with sandbox() as address:

            def plant(address: SandboxAddress, token: Token) -> None:
                append(address, "INBOX", bystander("inbox bystander"))
                append(address, TRASH_FOLDER, bystander("trash bystander"))

            box = sandbox_mailbox(address, cleanup=Cleanup.TRASH)
            return await confirm(address, box, before=plant)

    done = run(scenario)

    uid = cleaned_up(done).uid
    steps = commands(done.lines)
    assert steps[0] == f"UID MOVE {uid} {TRASH_FOLDER}"
    assert steps[1] == f"SELECT {TRASH_FOLDER}"
    # Its UID in Trash comes from COPYUID: the next one there, after the bystander's.
    assert steps[2].startswith("UID STORE ")
    assert steps[2].endswith(" +FLAGS.SILENT (\\Deleted)")
    trash_uid = int(steps[2].split()[2])
    assert steps[3] == f"UID EXPUNGE {trash_uid}"
    assert steps[4] == "SELECT INBOX"
    assert not any(line.split("-> ", 1)[-1].startswith("UID SEARCH") for line in done.lines)
    assert subjects(done.inbox) == ["inbox bystander"]
    assert subjects(done.trash) == ["trash bystander"]


def test_gmail_is_recognised_by_x_gm_ext_1_and_cleaned_up_through_trash() -> None:
    async def scenario() -> Confirmed:
        async with sandbox(imap_extensions=GMAIL) as address:
            return await confirm(address, sandbox_mailbox(address))  # cleanup left to us

    done = run(scenario)

    cleaned_up(done)
    assert any("cleanup: trash (the server has X-GM-EXT-1: Gmail)" in line for line in done.lines)
    assert commands(done.lines)[0].startswith("UID MOVE ")
    assert tokens(done.inbox) == tokens(done.trash) == []


def test_without_x_gm_ext_1_cleanup_left_to_us_expunges_in_place() -> None:
    async def scenario() -> Confirmed:
        async with sandbox() as address:
            return await confirm(address, sandbox_mailbox(address))

    done = run(scenario)

    cleaned_up(done)
    assert any(line.endswith("cleanup: expunge") for line in done.lines)
    uid = cleaned_up(done).uid
    assert commands(done.lines) == [
        f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)",
        f"UID EXPUNGE {uid}",
    ]


def test_cleanup_expunge_on_gmail_is_obeyed() -> None:
    """An explicit ``cleanup: expunge`` wins over the detection."""

    async def scenario() -> Confirmed:
        async with sandbox(imap_extensions=GMAIL) as address:
            return await confirm(address, sandbox_mailbox(address, cleanup=Cleanup.EXPUNGE))

    done = run(scenario)

    cleaned_up(done)
    assert not any("MOVE" in step for step in commands(done.lines))


def test_without_move_the_message_is_copied_then_deleted_by_uid_on_both_sides() -> None:
    async def scenario() -> Confirmed:
        async with sandbox(imap_extensions=GMAIL, imap_withheld=["MOVE"]) as address:
            return await confirm(address, sandbox_mailbox(address))

    done = run(scenario)

    uid = cleaned_up(done).uid
    steps = commands(done.lines)
    assert steps[:4] == [
        f"UID COPY {uid} {TRASH_FOLDER}",
        f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)",
        f"UID EXPUNGE {uid}",
        f"SELECT {TRASH_FOLDER}",
    ]
    assert steps[4].startswith("UID STORE ")
    assert steps[5].startswith("UID EXPUNGE ")
    assert steps[6] == "SELECT INBOX"
    assert tokens(done.inbox) == tokens(done.trash) == []


def test_without_uidplus_its_copy_in_trash_is_found_by_its_token_and_only_it_is_deleted() -> None:
    """No COPYUID: a search by the token header in Trash, then only an exact token match goes.

    A bystander in Trash whose header merely *contains* the token (so the
    server's substring search finds it too) is left alone.
    """

    async def scenario() -> Confirmed:
        async with sandbox(imap_withheld=["UIDPLUS"]) as address:

            def plant(address: SandboxAddress, token: Token) -> None:
                lookalike = bystander("lookalike", X_Smtp_Probe=f"{token}-copy")
                append(address, TRASH_FOLDER, lookalike)

            box = sandbox_mailbox(address, cleanup=Cleanup.TRASH)
            return await confirm(address, box, before=plant)

    done = run(scenario)

    cleaned_up(done)
    steps = commands(done.lines)
    assert steps[0].startswith("UID MOVE ")
    assert steps[1] == f"SELECT {TRASH_FOLDER}"
    assert steps[2] == f"UID SEARCH HEADER {PROBE_HEADER} {done.token}"
    assert steps[4] == "EXPUNGE"  # no UIDPLUS: a plain EXPUNGE, ours being the only \Deleted
    assert subjects(done.trash) == ["lookalike"]
    assert tokens(done.inbox) == []


def test_without_uidplus_a_flagged_stranger_in_trash_stops_the_expunge() -> None:
    """A plain EXPUNGE would take the stranger with it: ours is left flagged, the run says why."""

    async def scenario() -> Confirmed:
        async with sandbox(imap_withheld=["UIDPLUS"]) as address:

            def plant(address: SandboxAddress, token: Token) -> None:
                append(address, TRASH_FOLDER, bystander("deleted by its owner"))
                with imap_login(address) as client:
                    client.select_folder(TRASH_FOLDER)
                    client.add_flags(client.search(["ALL"]), [b"\\Deleted"])

            box = sandbox_mailbox(address, cleanup=Cleanup.TRASH)
            return await confirm(address, box, before=plant)

    done = run(scenario)

    assert done.arrival is not None
    assert not done.arrival.deleted
    assert done.arrival.cleanup_error is not None
    assert "other messages are flagged \\Deleted" in done.arrival.cleanup_error
    assert "deleted by its owner" in subjects(done.trash)


def test_no_trash_folder_stops_the_watcher_before_anything_is_sent() -> None:
    """A probe that could not clean up after itself must not send: the watcher never comes up."""

    async def scenario() -> tuple[ImapError, list[str]]:
        async with sandbox(imap_extensions=GMAIL) as address:
            await asyncio.to_thread(delete_folder, address, TRASH_FOLDER)
            watcher = MailboxWatcher(sandbox_mailbox(address), TokenSigner())
            transcript = Transcript()
            try:
                with pytest.raises(ImapError) as refused:
                    await watcher.start(transcript, time.monotonic() + 10)
            finally:
                await watcher.close()
            return refused.value, transcript.render()

    error, lines = run(scenario)

    assert error.stage is Stage.IMAP_SELECT
    assert error.reason == (
        "cleanup is trash, but the server has no \\Trash folder (SPECIAL-USE, or one named "
        "Trash): nothing is sent that could not be removed"
    )
    assert not any("STORE" in step or "MOVE" in step for step in commands(lines))


# ---------------------------------------------------------------- whole runs


def sandbox_probe(address: SandboxAddress, mailbox: Mailbox) -> ProbeSpec:
    return ProbeSpec(
        name=PROBE,
        smtp=SmtpServer(host=address.host, port=address.smtp_port, tls=TlsMode.NONE),
        mail_from="probe@sender.test",
        rcpt_to=DEMO_USER,
        mailbox=mailbox,
        timeout=10.0,
    )


@pytest.mark.parametrize("trash_exists", [True, False], ids=["trash", "no-trash"])
def test_a_run_on_gmail_is_delivered_and_trashed_or_sends_nothing(trash_exists: bool) -> None:
    async def scenario() -> tuple[Any, list[Message]]:
        async with sandbox(imap_extensions=GMAIL) as address:
            if not trash_exists:
                await asyncio.to_thread(delete_folder, address, TRASH_FOLDER)
            spec = sandbox_probe(address, sandbox_mailbox(address))
            result = await run_probe(spec, signer=TokenSigner())
            return result, await asyncio.to_thread(messages_in, address, "INBOX")

    result, inbox = run(scenario)

    if trash_exists:
        assert result.outcome is Outcome.DELIVERED, result.error
        assert inbox == []
        assert any("-> UID MOVE " in line for line in result.transcript.render())
    else:
        assert result.outcome is Outcome.ERROR
        assert result.stage is Stage.IMAP_SELECT
        assert "no \\Trash folder" in result.error
        assert result.smtp.reply_code is None, "nothing was sent"
        assert inbox == []
