r"""Provider quirks end to end against real Postfix + Dovecot: ``\Trash`` cleanup, reflector mode.

* Cleanup through ``\Trash`` (what Gmail needs) against Dovecot's real
  SPECIAL-USE ``Trash`` folder, MOVE and UIDPLUS (``COPYUID`` sent untagged
  with the MOVE, as RFC 6851 asks).
* Reflector runs answered by the stack's real Sieve ``vacation`` reflector
  (a new message, ``Auto: <our subject>``, none of our headers) and passed
  back by its Sieve ``redirect`` forwarder (our message, unchanged). The
  probe sends through the MX port from sink, so the answer lands in sink's
  INBOX, which the probe watches.

The ``stack`` fixture checks after each test that no probe message is left
in sink's INBOX or Junk and that the planted bystanders are untouched.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from imapclient import IMAPClient

from smtp_probe.probe.message import PROBE_HEADER, TokenSigner
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Cleanup, ProbeSpec
from smtp_probe.report import as_dict
from tests.support.mailstack import FORWARDER, REFLECTOR, TRASH_FOLDER, MailStack
from tests.support.routes import SINK, mailbox, probe, smtp_server

pytestmark = pytest.mark.e2e

TRASH_BYSTANDER = "already in the trash: the probe must never touch this"


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def sent(result: RunResult) -> list[str]:
    """The commands of the run, without timestamps and direction marks."""
    return [
        line.split("> ", 1)[1]
        for line in result.transcript.render()
        if "-> " in line or "~> " in line
    ]


def transcript(result: RunResult) -> str:
    return "\n".join(result.transcript.render())


def notes(result: RunResult) -> list[str]:
    return [line.split("=== ", 1)[1] for line in result.transcript.render() if "=== " in line]


def probe_headers(stack: MailStack, user: str, folder: str) -> list[str]:
    """The probe-header values of the messages in ``user``'s ``folder`` (read from Maildir)."""
    values = []
    for raw in stack.maildir_messages(user, folder):
        value = email.message_from_bytes(raw, policy=email.policy.default)[PROBE_HEADER]
        if value:
            values.append(str(value))
    return values


def subjects(stack: MailStack, user: str, folder: str) -> list[str]:
    return [
        " ".join(str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"]).split())
        for raw in stack.maildir_messages(user, folder)
    ]


def reflector_probe(stack: MailStack, to: str, cleanup: Cleanup | None = None) -> ProbeSpec:
    """From sink, through the MX port (no AUTH), to ``to``; the answer is watched in sink's INBOX."""
    box = mailbox(stack, cleanup=cleanup)
    spec = probe(stack, smtp=smtp_server(stack, "mx"), box=box, to=to)
    return replace(spec, mail_from=SINK, reflector=True, timeout=20.0)


# ---------------------------------------------------------------- \Trash


@pytest.fixture
def trash_bystander(stack: MailStack) -> Iterator[None]:
    """Somebody's message already in sink's Trash for one test; removed afterwards.

    The stack is shared by the session, and other tests expect its Trash empty.
    """
    stack.append(
        SINK,
        TRASH_FOLDER,
        f"From: someone@example.test\r\nTo: {SINK}\r\nSubject: {TRASH_BYSTANDER}\r\n\r\nhi\r\n".encode(),
    )
    yield
    with IMAPClient(
        stack.host, port=stack.imaps_port, ssl_context=stack.ssl_context(), timeout=20
    ) as client:
        client.login(SINK, stack.users[SINK])
        client.select_folder(TRASH_FOLDER)
        client.delete_messages(client.search(["SUBJECT", TRASH_BYSTANDER]))
        client.expunge()
    assert stack.maildir_messages(SINK, TRASH_FOLDER) == []


@pytest.mark.usefixtures("trash_bystander")
def test_cleanup_trash_moves_to_dovecots_trash_and_deletes_it_there(stack: MailStack) -> None:
    result = run(probe(stack, box=mailbox(stack, cleanup=Cleanup.TRASH)))

    assert result.outcome is Outcome.DELIVERED, transcript(result)
    assert result.arrival is not None
    assert result.arrival.deleted
    commands = sent(result)
    moved = commands.index(f"UID MOVE {result.arrival.uid} {TRASH_FOLDER}")
    assert commands[moved + 1] == f"SELECT {TRASH_FOLDER}"
    # Dovecot answers the MOVE with COPYUID: no search needed to find the copy.
    assert commands[moved + 2].startswith("UID STORE ")
    assert commands[moved + 3].startswith("UID EXPUNGE ")
    assert commands[moved + 4] == "SELECT INBOX"
    assert not any(command.startswith("UID SEARCH") for command in commands)
    assert probe_headers(stack, SINK, TRASH_FOLDER) == []
    assert TRASH_BYSTANDER in subjects(stack, SINK, TRASH_FOLDER)


def test_dovecot_is_not_gmail_so_cleanup_left_to_us_expunges_in_place(stack: MailStack) -> None:
    result = run(probe(stack))

    assert result.outcome is Outcome.DELIVERED, transcript(result)
    assert any(note.endswith("; cleanup: expunge") for note in notes(result))
    assert not any("MOVE" in command for command in sent(result))


# ---------------------------------------------------------------- reflector


@pytest.mark.parametrize("cleanup", [Cleanup.EXPUNGE, Cleanup.TRASH])
def test_the_sieve_vacation_reflectors_reply_is_the_delivery(
    stack: MailStack, cleanup: Cleanup
) -> None:
    at_reflector = len(stack.maildir_messages(REFLECTOR))

    result = run(reflector_probe(stack, REFLECTOR, cleanup=cleanup))

    assert result.outcome is Outcome.DELIVERED, transcript(result)
    assert result.arrival is not None
    assert result.arrival.by_subject
    assert result.arrival.deleted
    assert any("by the token in its Subject (Auto:)" in note for note in notes(result))
    legs = result.reflector
    assert legs is not None
    assert legs.source == "Date"
    assert result.delivery_seconds is not None
    assert legs.outbound_seconds + legs.return_seconds == pytest.approx(result.delivery_seconds)
    assert as_dict(result)["reflector"] is not None
    # The reply is gone (ours: it carries our token); our message at the reflector is not.
    assert not any("smtp-probe" in subject for subject in subjects(stack, SINK, "INBOX"))
    assert not any("smtp-probe" in subject for subject in subjects(stack, SINK, TRASH_FOLDER))
    # Sieve sends the reply while it delivers our message: its copy may land a moment later.
    kept: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(kept) <= at_reflector and time.monotonic() < deadline:
        time.sleep(0.05)
        kept = stack.maildir_messages(REFLECTOR)
    assert len(kept) == at_reflector + 1
    assert any(result.run_id.encode() in raw for raw in kept)


def test_a_message_redirected_back_unchanged_is_the_delivery_without_split_legs(
    stack: MailStack,
) -> None:
    result = run(reflector_probe(stack, FORWARDER))

    assert result.outcome is Outcome.DELIVERED, transcript(result)
    assert result.arrival is not None
    assert not result.arrival.by_subject  # our own header came back
    assert result.reflector is None
    assert any(note.endswith("legs not split") for note in notes(result))
