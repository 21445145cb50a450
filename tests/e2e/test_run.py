"""One run against real Postfix + Dovecot: every outcome and stage the contract names."""

from __future__ import annotations

import asyncio
import re
import sys
import time

import pytest
import trustme
from prometheus_client import CollectorRegistry

from smtp_probe.config.runtime import ScheduledProbe
from smtp_probe.metrics import Metrics
from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import Token, TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec, TlsSettings
from smtp_probe.probe.transcript import Transcript
from smtp_probe.report import as_dict, render_text
from smtp_probe.secret import Secret
from tests.support.mailstack import DEFER_450, HOLD, JUNK_ADDRESS, REJECT_550, MailStack
from tests.support.results import PLAIN_STAGES
from tests.support.routes import SENDER, SINK, mailbox, probe, smtp_server


def run(spec: ProbeSpec, signer: TokenSigner | None = None) -> RunResult:
    return asyncio.run(run_probe(spec, signer=signer or TokenSigner()))


EXPIRY = "smtp_probe_tls_cert_expiry_timestamp_seconds"


def transcript_text(result: RunResult) -> str:
    return "\n".join(result.transcript.render())


@pytest.mark.parametrize(
    ("smtp_kind", "imap_kind"),
    [("mx", "imap"), ("submission", "imaps"), ("smtps", "imaps")],
    ids=["mx-port-starttls", "submission-starttls-auth", "implicit-tls-auth"],
)
def test_delivered_through_each_tls_mode(stack: MailStack, smtp_kind: str, imap_kind: str) -> None:
    result = run(probe(stack, smtp=smtp_server(stack, smtp_kind), box=mailbox(stack, imap_kind)))

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.stage is None
    assert result.folder == "INBOX"
    assert result.smtp.reply_code == 250
    assert result.smtp.queue_id
    assert result.smtp.tls_version
    assert result.smtp.tls_version.startswith("TLSv1.")
    assert result.delivery_seconds is not None
    assert 0 < result.delivery_seconds < result.duration_seconds
    assert result.arrival is not None
    assert result.arrival.deleted
    assert any(result.smtp.queue_id in header for header in result.arrival.received)
    stages = set(result.smtp.stage_seconds)
    assert set(PLAIN_STAGES) <= stages
    assert (Stage.AUTH in stages) == (smtp_kind != "mx")
    assert (Stage.STARTTLS in stages) == (smtp_kind != "smtps")


def test_auth_payload_and_passwords_never_reach_the_transcript(stack: MailStack) -> None:
    result = run(probe(stack))

    text = transcript_text(result)
    assert "AUTH PLAIN ********" in text
    for secret in stack.users.values():
        assert secret not in text
    assert "LOGIN sink@example.test ********" in text
    assert "Secret" not in repr(probe(stack))
    assert "sink-secret" not in repr(probe(stack))


def test_poll_path_without_idle_finds_the_message(stack: MailStack) -> None:
    signer = TokenSigner()
    box = mailbox(stack, idle=False)

    async def scenario() -> tuple[RunResult, MailboxWatcher]:
        watcher = MailboxWatcher(box, signer)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            return await run_probe(probe(stack, box=box), signer=signer, watcher=watcher), watcher
        finally:
            await watcher.close()

    result, watcher = asyncio.run(scenario())

    assert result.outcome is Outcome.DELIVERED, result.error
    assert not watcher.uses_idle
    polls = re.search(r"imap: (\d+) poll\(s\) of INBOX", transcript_text(result))
    assert polls is not None
    assert int(polls.group(1)) >= 1


def test_idle_wakes_the_watcher_long_before_the_next_poll(stack: MailStack) -> None:
    """With polls 20 s apart, only an IDLE notice explains a message seen within seconds."""
    signer = TokenSigner()
    box = mailbox(stack, poll_min=20.0, poll_interval=20.0)
    token = signer.new("idle")
    raw = f"From: {SENDER}\r\nTo: {SINK}\r\nX-Smtp-Probe: {token}\r\n\r\nidle\r\n".encode()

    async def scenario() -> tuple[float | None, MailboxWatcher]:
        watcher = MailboxWatcher(box, signer)
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            async with watcher.expecting("idle", token, Transcript()) as expected:
                waiting = asyncio.create_task(expected.arrival(time.monotonic() + 15))
                await asyncio.sleep(1.0)  # past the first fast polls: the watcher is in IDLE now
                appended = time.monotonic()
                await asyncio.to_thread(stack.append, SINK, "INBOX", raw)
                arrival = await waiting
            return (arrival.seen_at - appended if arrival else None), watcher
        finally:
            await watcher.close()

    seen_after, watcher = asyncio.run(scenario())

    assert watcher.uses_idle
    assert seen_after is not None
    assert seen_after < 10


def test_recipient_rejected_with_5xx_fails_at_rcpt_to(stack: MailStack) -> None:
    result = run(probe(stack, to=REJECT_550))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 550
    assert "5.1.1" in result.error


def test_recipient_deferred_with_4xx_fails_at_rcpt_to(stack: MailStack) -> None:
    result = run(probe(stack, to=DEFER_450))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.reply_code == 450


def test_wrong_password_fails_at_auth(stack: MailStack) -> None:
    smtp = smtp_server(stack, password=Secret("not-the-password"))

    result = run(probe(stack, smtp=smtp))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.AUTH
    assert result.smtp.reply_code == 535
    assert "not-the-password" not in transcript_text(result)


def test_wrong_imap_password_fails_at_imap_login_and_sends_nothing(stack: MailStack) -> None:
    result = run(probe(stack, box=mailbox(stack, password=Secret("nope"))))

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.IMAP_LOGIN
    assert result.smtp.reply_code is None
    assert "EHLO" not in transcript_text(result)


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsSettings:
    """Trust only a CA that did not sign the stack's certificates."""
    path = tmp_path_factory.mktemp("stranger") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return TlsSettings(ca_file=path)


@pytest.mark.parametrize(
    ("smtp_kind", "stage"),
    [("submission", Stage.STARTTLS), ("smtps", Stage.CONNECT)],
    ids=["starttls", "implicit-tls"],
)
def test_certificate_from_unknown_ca_fails_verification(
    stack: MailStack, stranger_ca: TlsSettings, smtp_kind: str, stage: Stage
) -> None:
    result = run(probe(stack, smtp=smtp_server(stack, smtp_kind, tls_settings=stranger_ca)))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is stage
    assert "certificate verification failed" in result.error
    assert "AUTH PLAIN" not in transcript_text(result)


def test_imap_certificate_from_unknown_ca_fails_at_imap_connect(
    stack: MailStack, stranger_ca: TlsSettings
) -> None:
    result = run(probe(stack, box=mailbox(stack, tls_settings=stranger_ca)))

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.IMAP_CONNECT
    assert "certificate verification failed" in result.error


def test_imap_starttls_with_unknown_ca_fails_at_imap_starttls(
    stack: MailStack, stranger_ca: TlsSettings
) -> None:
    result = run(probe(stack, box=mailbox(stack, "imap", tls_settings=stranger_ca)))

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.IMAP_STARTTLS
    assert "certificate verification failed" in result.error


def test_missing_folder_fails_at_imap_select(stack: MailStack) -> None:
    result = run(probe(stack, box=mailbox(stack, folder="No-Such-Folder")))

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.IMAP_SELECT
    assert result.smtp.reply_code is None


def test_imap_down_fails_at_imap_connect_before_any_mail_is_sent(stack: MailStack) -> None:
    queued_before = len(stack.queue())
    stack.stop_dovecot()
    try:
        result = run(probe(stack))
    finally:
        stack.start_dovecot()

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.IMAP_CONNECT
    assert "refused" in result.error
    assert result.smtp.reply_code is None
    assert len(stack.queue()) == queued_before


def held(stack: MailStack) -> set[str]:
    return {m["queue_id"] for m in stack.queue() if m["queue_name"] == "hold"}


async def newly_held(stack: MailStack, before: set[str], timeout: float = 10.0) -> str:
    """The queue id of the message that reached Postfix's hold queue since ``before``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = await asyncio.to_thread(held, stack) - before
        if new:
            [queue_id] = new
            return queue_id
        await asyncio.sleep(0.05)
    raise AssertionError("the probe message never reached the hold queue")


@pytest.mark.parametrize("persistent", [False, True], ids=["one-shot", "persistent"])
def test_mailbox_lost_after_the_250_keeps_the_smtp_facts_and_blames_delivery(
    stack: MailStack, persistent: bool
) -> None:
    """Dovecot stops while the accepted message sits in the hold queue: not a send failure."""
    signer = TokenSigner()
    box = mailbox(stack)
    spec = probe(stack, to=HOLD, box=box, timeout=5.0)
    before = held(stack)

    async def scenario() -> tuple[RunResult, str]:
        watcher = None
        if persistent:  # the daemon's kind, passed in; check's kind is opened by run_probe
            watcher = MailboxWatcher(box, signer, persistent=True, probe_names=[spec.name])
            await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            running = asyncio.create_task(run_probe(spec, signer=signer, watcher=watcher))
            queue_id = await newly_held(stack, before)
            await asyncio.to_thread(stack.stop_dovecot)
            return await running, queue_id
        finally:
            if watcher is not None:
                await watcher.close()

    try:
        result, queue_id = asyncio.run(scenario())
    finally:
        stack.start_dovecot()
        stack.delete_queued("ALL")

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.DELIVERY
    assert "mailbox became unreachable" in result.error
    assert result.smtp.reply_code == 250
    assert result.smtp.queue_id == queue_id
    assert {Stage.CONNECT, Stage.EHLO, Stage.MAIL_FROM, Stage.RCPT_TO, Stage.DATA} <= set(
        result.smtp.stage_seconds
    )
    assert result.smtp.accepted_at is not None
    assert result.delivery_seconds is None
    if not persistent:
        # A one-shot watcher cannot come back: the run ends at once, not at its deadline.
        assert result.duration_seconds < spec.timeout
    data = as_dict(result)
    assert (data["outcome"], data["stage"]) == ("error", "delivery")
    assert data["smtp"]["queue_id"] == queue_id
    assert data["smtp"]["reply_code"] == 250
    assert "data" in data["smtp"]["stage_seconds"]
    last = render_text(result, colour=False).splitlines()[-1]
    assert last.startswith("CRITICAL: error at delivery: mailbox became unreachable")
    assert f"queue id {queue_id}" in last
    assert "FAILED at delivery: mailbox became unreachable" in transcript_text(result)


def test_message_held_in_the_queue_is_not_delivered_and_the_run_ends_on_time(
    stack: MailStack,
) -> None:
    started = time.monotonic()
    try:
        result = run(probe(stack, to=HOLD, timeout=3.0))
        elapsed = time.monotonic() - started
        held = [m for m in stack.queue() if m["queue_name"] == "hold"]
    finally:
        stack.delete_queued("ALL")

    assert result.outcome is Outcome.NOT_DELIVERED
    assert result.stage is Stage.DELIVERY
    assert result.smtp.reply_code == 250
    assert result.delivery_seconds is None
    assert elapsed < 3.0 + 2.0
    assert [m["queue_id"] for m in held] == [result.smtp.queue_id]


def test_message_filed_into_junk_is_outcome_junk(stack: MailStack) -> None:
    result = run(probe(stack, to=JUNK_ADDRESS))

    assert result.outcome is Outcome.JUNK, result.error
    assert result.folder == "Junk"
    assert result.arrival is not None
    assert result.arrival.junk
    assert result.arrival.deleted


def test_forged_message_with_a_bad_signature_is_not_delivery(stack: MailStack) -> None:
    """A message with this run's id but a signature we did not make proves nothing."""
    signer = TokenSigner(b"k" * 32)
    token = signer.new("e2e")
    forged = f"{token.key}-{'0' * 32}"

    class FixedSigner(TokenSigner):
        def new(self, probe: str, *, now: float | None = None) -> Token:
            return token

    fixed = FixedSigner(b"k" * 32)
    box = mailbox(stack)

    async def scenario() -> RunResult:
        watcher = MailboxWatcher(box, fixed)
        await watcher.start(Transcript(), time.monotonic() + 10)
        raw = (
            f"From: {SENDER}\r\nTo: {SINK}\r\nSubject: forged\r\nX-Smtp-Probe: {forged}\r\n\r\nx\r\n"
        ).encode()
        try:
            # The real message is held, so only the forgery can ever show up.
            task = asyncio.create_task(
                run_probe(probe(stack, to=HOLD, box=box, timeout=4), signer=fixed, watcher=watcher)
            )
            await asyncio.sleep(0.5)
            await asyncio.to_thread(stack.append, SINK, "INBOX", raw)
            return await task
        finally:
            await watcher.close()

    try:
        result = asyncio.run(scenario())
        forgeries = [raw for raw in stack.maildir_messages(SINK) if forged.encode() in raw]
    finally:
        stack.delete_queued("ALL")
        for path in (stack.maildir_path(SINK) / "new").iterdir():
            if forged.encode() in path.read_bytes():
                path.unlink()
        for path in (stack.maildir_path(SINK) / "cur").iterdir():
            if forged.encode() in path.read_bytes():
                path.unlink()

    assert result.outcome is Outcome.NOT_DELIVERED
    assert "bad signature" in transcript_text(result)
    assert len(forgeries) == 1, "the forged message must be left alone, not deleted"


@pytest.mark.parametrize(
    ("smtp_kind", "imap_kind"),
    [("submission", "imaps"), ("smtps", "imap")],
    ids=["smtp-starttls-imap-tls", "smtp-tls-imap-starttls"],
)
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "verification-off"])
def test_tls_facts_of_both_legs_are_in_the_result_json_transcript_and_metrics(
    stack: MailStack, verify: bool, smtp_kind: str, imap_kind: str
) -> None:
    settings = TlsSettings(ca_file=stack.ca_file) if verify else TlsSettings(verify=False)
    spec = probe(
        stack,
        smtp=smtp_server(stack, smtp_kind, tls_settings=settings),
        box=mailbox(stack, imap_kind, tls_settings=settings),
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure([ScheduledProbe(spec, interval=60.0, jitter=0.0)])
    result = run(spec)
    metrics.record(result)

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.arrival is not None
    legs = {"smtp": result.smtp.tls, "imap": result.arrival.tls}
    document = as_dict(result)
    for leg, facts in legs.items():
        assert facts is not None, leg
        assert facts.version is not None
        assert facts.version.startswith("TLSv1.")
        assert facts.cipher
        assert facts.subject.startswith("CN=mx.example.test"), leg
        assert "O=mailstack test CA" in facts.issuer
        assert facts.not_after is not None
        assert facts.not_after > time.time() + 86400
        assert facts.verified is verify
        # The stack presents its certificate alone (no intermediate): a chain of one
        # where Python hands the chain over (3.13+), else only the leaf was read.
        assert facts.chain_length == (1 if sys.version_info >= (3, 13) else None), leg
        assert facts.expiring_subject == ""
        assert document[leg]["tls"]["subject"] == facts.subject
        assert document[leg]["tls"]["verified"] is verify
        assert document[leg]["tls"]["days_left"] > 1
        expiry = {"probe": spec.name, "leg": leg}
        assert registry.get_sample_value(EXPIRY, expiry) == facts.not_after
        info = {**expiry, "version": facts.version, "cipher": facts.cipher}
        assert registry.get_sample_value("smtp_probe_tls_info", info) == 1.0
    text = transcript_text(result)
    checked = "verified" if verify else "not verified (verification off)"
    assert re.search(rf"TLS certificate: CN=mx\.example\.test.*\), {re.escape(checked)}", text)
    assert re.search(
        rf"imap: TLS certificate: CN=mx\.example\.test.*\), {re.escape(checked)}", text
    )
