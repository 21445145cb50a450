"""Bounces against real Postfix + Dovecot: a real DSN ends the run ``bounced`` within seconds.

The MailStack's ``BOUNCE`` recipient is accepted with ``250`` and then
refused by Dovecot's LMTP, so Postfix sends a real RFC 3464 report to the
envelope sender, probe@example.test, whose mailbox is the probe's
``bounce_mailbox`` here. The sender's mailbox also holds bystanders the
probe must never touch: an ordinary message and a real Postfix report
about somebody else's message (a token signed with another key).

The delayed case (and a bounce from a hop after the first) runs on the
multi-hop route: tests/e2e/test_bounces_hops.py.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import smtplib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import Token, TokenSigner, build_message
from smtp_probe.probe.result import Bounce, Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Mailbox, ProbeSpec
from smtp_probe.probe.transcript import Transcript
from smtp_probe.report import as_dict
from smtp_probe.secret import Secret
from smtp_probe.watchers import WatcherPool
from tests.support.cli_proc import run_cli
from tests.support.daemon_proc import config_text, start_daemon, stop_daemon
from tests.support.mailstack import BOUNCE, MailStack
from tests.support.routes import SENDER, SINK, mailbox, probe, smtp_server

STRANGER_DSN = (Path(__file__).parent.parent / "unit" / "dsn" / "postfix-failed.eml").read_bytes()
"""A real Postfix report whose returned token was signed with a key that is not ours."""
BYSTANDER = (
    f"From: someone@example.test\r\nTo: {SENDER}\r\nSubject: the sender's own mail\r\n"
    "Message-ID: <bounce-bystander@example.test>\r\n\r\nhello\r\n"
).encode()


def sender_box(stack: MailStack) -> Mailbox:
    """The envelope sender's mailbox (probe@example.test), where its bounces land."""
    return mailbox(stack, username=SENDER, password=Secret(stack.users[SENDER]))


def run(spec: ProbeSpec, signer: TokenSigner | None = None) -> RunResult:
    return asyncio.run(run_probe(spec, signer=signer or TokenSigner()))


def reports_about(stack: MailStack, result: RunResult) -> list[bytes]:
    """Messages in the sender's INBOX that quote ``result``'s run id."""
    return [raw for raw in stack.maildir_messages(SENDER) if result.run_id.encode() in raw]


def bystanders(stack: MailStack) -> list[bytes]:
    return [
        raw
        for raw in stack.maildir_messages(SENDER)
        if b"<bounce-bystander@example.test>" in raw or raw.endswith(STRANGER_DSN[-200:])
    ]


def delete_matching(stack: MailStack, user: str, needle: str) -> None:
    """Remove ``user``'s INBOX messages containing ``needle`` (test clean-up, plain imaplib)."""
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=stack.ssl_context()) as imap:
        imap.login(user, stack.users[user])
        imap.select("INBOX")
        _, data = imap.uid("SEARCH", "TEXT", f'"{needle}"')
        for uid in data[0].split():
            imap.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
        imap.expunge()
        imap.logout()


@pytest.fixture
def sender_planted(mailstack: MailStack) -> Iterator[MailStack]:
    """The sender's INBOX with two bystanders; checked untouched afterwards, then removed."""
    mailstack.append(SENDER, "INBOX", BYSTANDER)
    mailstack.append(SENDER, "INBOX", STRANGER_DSN)
    assert len(bystanders(mailstack)) == 2
    try:
        yield mailstack
        assert len(bystanders(mailstack)) == 2, "a message not ours was touched"
    finally:
        delete_matching(mailstack, SENDER, "bounce-bystander@example.test")
        delete_matching(mailstack, SENDER, "d4b453fc6918b49e")


def test_a_real_postfix_bounce_ends_the_run_bounced_within_seconds(
    stack: MailStack, sender_planted: MailStack
) -> None:
    spec = probe(stack, smtp=smtp_server(stack, "mx"), to=BOUNCE, timeout=30.0)
    spec = _with_bounces(spec, sender_box(stack))
    started = time.monotonic()
    result = run(spec)
    elapsed = time.monotonic() - started

    assert result.outcome is Outcome.BOUNCED, result.error
    assert result.stage is Stage.DELIVERY
    assert not result.success
    assert elapsed < 10.0, "a bounce must end the run long before its 30 s deadline"
    [bounce] = result.bounces
    assert (bounce.action, bounce.status, bounce.status_class) == ("failed", "5.1.1", "5")
    assert bounce.recipient == BOUNCE
    assert bounce.remote_mta == "mx.example.test"
    assert bounce.reporting_mta == "mx.example.test"
    assert bounce.diagnostic is not None
    assert "User doesn't exist" in bounce.diagnostic
    assert result.error.startswith(f"bounced: 5.1.1 <{BOUNCE}> (remote mta: mx.example.test; ")
    text = "\n".join(result.transcript.render())
    assert f"RET=HDRS ENVID={result.run_id}" in text
    assert "NOTIFY=FAILURE,DELAY" in text
    assert "delivery status notification about this run (token signature verified)" in text
    assert reports_about(stack, result) == [], "the report about our run was not deleted"
    data = as_dict(result)
    assert data["outcome"] == "bounced"
    assert data["bounces"][0]["status"] == "5.1.1"


def test_the_bounce_mailbox_may_be_the_delivery_mailbox(
    stack: MailStack, sender_planted: MailStack
) -> None:
    box = sender_box(stack)
    spec = _with_bounces(
        probe(stack, smtp=smtp_server(stack, "mx"), to=BOUNCE, box=box, timeout=30.0), box
    )
    result = run(spec)

    assert result.outcome is Outcome.BOUNCED, result.error
    assert [b.status for b in result.bounces] == ["5.1.1"]
    assert reports_about(stack, result) == []


def test_without_a_bounce_mailbox_the_run_times_out_and_the_report_stays(
    stack: MailStack,
) -> None:
    result = run(probe(stack, smtp=smtp_server(stack, "mx"), to=BOUNCE, timeout=3.0))
    try:
        assert result.outcome is Outcome.NOT_DELIVERED
        assert result.bounces == ()
        # Nobody watches the sender's mailbox: Postfix's report waits there, untouched.
        deadline = time.monotonic() + 10
        while not reports_about(stack, result) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(reports_about(stack, result)) == 1
    finally:
        delete_matching(stack, SENDER, result.run_id)


def test_the_daemon_pool_deletes_a_report_no_run_waits_for_and_counts_it(
    stack: MailStack, sender_planted: MailStack
) -> None:
    """A report that comes after its run ended (here: for a message no run waits for)."""
    late: list[tuple[str, str]] = []

    async def scenario() -> Token:
        pool = WatcherPool(None, on_late_bounce=lambda p, b: late.append((p, b.status)))
        box = sender_box(stack)
        spec = _with_bounces(probe(stack, to=BOUNCE), box)
        await pool.sync([spec], key=None)
        try:
            token = pool.signer.new(spec.name)
            message = build_message(token=token, probe=spec.name, mail_from=SENDER, rcpt_to=BOUNCE)
            with smtplib.SMTP(stack.host, stack.smtp_port, timeout=10) as client:
                client.sendmail(
                    SENDER,
                    [BOUNCE],
                    message.as_bytes(),
                    mail_options=["RET=HDRS", f"ENVID={token.run_id}"],
                    rcpt_options=["NOTIFY=FAILURE"],
                )
            deadline = time.monotonic() + 10
            while not late and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return token
        finally:
            await pool.close()

    token = asyncio.run(scenario())

    assert late == [("e2e", "5.1.1")]
    assert [raw for raw in stack.maildir_messages(SENDER) if token.run_id.encode() in raw] == []


def _with_bounces(spec: ProbeSpec, box: Mailbox) -> ProbeSpec:
    return replace(spec, bounce_mailbox=box)


REAL_TOKEN = "1796611893369-d4b453fc6918b49e-876d0ee005fa5061aa8c658ac00d1c3c"  # noqa: S105 - a probe token in a fixture, not a secret
REAL_RUN_ID = "d4b453fc6918b49e"


def report_for(token: str, run_id: str, message_id: str) -> bytes:
    """The real Postfix report, about the message with ``token`` and envelope id ``run_id``."""
    return (
        STRANGER_DSN.replace(REAL_TOKEN.encode(), token.encode())
        .replace(REAL_RUN_ID.encode(), run_id.encode())
        .replace(b"<20261207025133.82EDD21207B@mx.example.test>", message_id.encode())
    )


def test_only_a_report_whose_token_verifies_and_whose_envid_agrees_is_believed(
    stack: MailStack, sender_planted: MailStack
) -> None:
    signer = TokenSigner()
    token = signer.new("e2e")
    forged = report_for(f"{token.key}-{'0' * 32}", token.run_id, "<forged@example.test>")
    other_envid = report_for(str(token), "0123456789abcdef", "<other-envid@example.test>")
    genuine = report_for(str(token), token.run_id, "<genuine@example.test>")

    async def scenario() -> tuple[Transcript, tuple[Bounce, ...]]:
        watcher = MailboxWatcher(sender_box(stack), signer)
        transcript = Transcript()
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            async with watcher.expecting("e2e", token, transcript, bounces=True) as expected:
                for raw in (forged, other_envid, genuine):
                    stack.append(SENDER, "INBOX", raw)
                arrival = await expected.arrival(time.monotonic() + 10)
                assert arrival is None
                return transcript, expected.bounces
        finally:
            await watcher.close()

    transcript, bounces = asyncio.run(scenario())

    assert [(b.action, b.status) for b in bounces] == [("failed", "5.1.1")]
    left = stack.maildir_messages(SENDER)
    assert any(b"<forged@example.test>" in raw for raw in left)
    assert any(b"<other-envid@example.test>" in raw for raw in left)
    assert not any(b"<genuine@example.test>" in raw for raw in left)
    notes = "\n".join(transcript.render())
    assert "bad signature; ignored, left untouched" in notes
    assert "names another envelope id (0123456789abcdef); not believed, left untouched" in notes
    delete_matching(stack, SENDER, token.run_id)


def test_the_daemon_reports_a_bounced_route_in_metrics_and_on_the_status_page(
    stack: MailStack, sender_planted: MailStack, tmp_path: Path
) -> None:
    text = config_text(stack, tmp_path, ["submission"]).replace(
        "mailboxes:\n",
        f"mailboxes:\n  sender: {{host: 127.0.0.1, port: {stack.imaps_port}, tls: tls, "
        f"ca_file: {stack.ca_file}, username: {SENDER}, password: '${{SENDER_PASSWORD}}'}}\n",
    )
    text += (
        f"  - {{name: bounced, smtp: mx, mailbox: imaps, bounce_mailbox: sender, "
        f"from: {SENDER}, to: {BOUNCE}, interval: 3s, timeout: 2900ms}}\n"
    )
    daemon = start_daemon(
        stack, tmp_path, [], config=text, env={"SENDER_PASSWORD": stack.users[SENDER]}
    )
    failed = 'smtp_probe_bounces_total{action="failed",probe="bounced",status_class="5"}'
    try:
        deadline = time.monotonic() + 30
        metrics = ""
        while time.monotonic() < deadline:
            metrics = daemon.get("/metrics")[1]
            if f"{failed} 2.0" in metrics:
                break
            time.sleep(0.5)
        assert f"{failed} 2.0" in metrics, metrics
        assert 'smtp_probe_outcomes_total{outcome="bounced",probe="bounced"} 2.0' in metrics
        assert 'smtp_probe_last_bounce_status_info{probe="bounced",status="5.1.1"} 1.0' in metrics
        assert 'smtp_probe_success{probe="submission"} 1.0' in metrics
        page = daemon.get("/")[1]
        assert f"DSN: failed 5.1.1 &lt;{BOUNCE}&gt;" in page
    finally:
        stop_daemon(daemon)
    # Reports about the daemon's messages return their Subject: "smtp-probe bounced <token>".
    ours = [raw for raw in stack.maildir_messages(SENDER) if b"smtp-probe bounced" in raw]
    assert ours == [], "a report about the daemon's runs was left in the bounce mailbox"


def test_check_of_a_bounced_route_is_critical_with_the_dsn_in_its_json(
    stack: MailStack, sender_planted: MailStack, tmp_path: Path
) -> None:
    text = config_text(stack, tmp_path, []).replace(
        "mailboxes:\n",
        f"mailboxes:\n  sender: {{host: 127.0.0.1, port: {stack.imaps_port}, tls: tls, "
        f"ca_file: {stack.ca_file}, username: {SENDER}, password: '${{SENDER_PASSWORD}}'}}\n",
    )
    text += (
        f"  - {{name: bounced, smtp: mx, mailbox: imaps, bounce_mailbox: sender, "
        f"from: {SENDER}, to: {BOUNCE}, interval: 1m, timeout: 30s}}\n"
    )
    (tmp_path / "token").write_text("a-token-secret-of-enough-length\n")
    (tmp_path / "smtp").write_text(stack.users[SENDER] + "\n")
    config = tmp_path / "config.yml"
    config.write_text(text)
    env = {"SINK_PASSWORD": stack.users[SINK], "SENDER_PASSWORD": stack.users[SENDER]}

    started = time.monotonic()
    proc = run_cli(
        "check", "--config", str(config), "--probe", "bounced", "--format", "json", env=env
    )
    elapsed = time.monotonic() - started

    assert proc.returncode == 2, proc.stderr
    assert elapsed < 15, "the bounce, not the 30 s deadline, ends the check"
    data = json.loads(proc.stdout)
    assert (data["outcome"], data["stage"], data["exit_code"]) == ("bounced", "delivery", 2)
    [bounce] = data["bounces"]
    assert (bounce["action"], bounce["status"], bounce["recipient"]) == ("failed", "5.1.1", BOUNCE)
    assert data["error"].startswith(f"bounced: 5.1.1 <{BOUNCE}>")
    assert stack.users[SENDER] not in proc.stdout
    assert [raw for raw in stack.maildir_messages(SENDER) if data["run_id"].encode() in raw] == []


def test_an_unreachable_bounce_mailbox_costs_the_run_its_bounce_watch_not_its_verdict(
    stack: MailStack,
) -> None:
    refused = replace(sender_box(stack), password=Secret("not-the-password"))
    result = run(_with_bounces(probe(stack), refused))

    assert result.outcome is Outcome.DELIVERED, result.error
    text = "\n".join(result.transcript.render())
    assert "bounce mailbox probe@example.test at 127.0.0.1:" in text
    assert "delivery status notifications are not watched" in text
    assert "not-the-password" not in text
