"""Policy checks against a real Postfix: each fails on the misconfigured listener, passes on secure.

The listeners of :mod:`tests.support.policystack` differ from the secure
one in exactly one setting, so each check is shown to tell them apart:
``rejected`` (exit 0) on ``secure``, ``accepted_unexpectedly`` (exit 2) on
the listener configured wrong, the refused (or accepted) command and its
reply in the transcript. Runs go through ``run_probe`` and through
``smtp-probe check`` in a real process. The ``policy`` fixture checks that
the queues drain and no test mail is left in any mailbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess

import pytest

from smtp_probe.check import SMTP_PASSWORD_ENV
from smtp_probe.probe.expect import expectation
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Expectation, Mailbox, PolicyCheck, ProbeSpec
from smtp_probe.probe.transcript import Direction
from tests.support import routes
from tests.support.cli_proc import run_cli
from tests.support.policystack import (
    AUTH_IN_CLEAR,
    LOCAL_RECIPIENT,
    NO_LOGIN_MISMATCH,
    OPEN_RELAY,
    OUTSIDE_RECIPIENT,
    OUTSIDE_SENDER,
    SASL_USER,
    SECURE,
    PolicyStack,
    smtp_server,
)

#: an address of the mail stack that SASL_USER does not own
FORGED = LOCAL_RECIPIENT


def policy_probe(
    stack: PolicyStack,
    listener: str,
    check: PolicyCheck | None,
    *,
    expect: Expectation | None = None,
    mail_from: str = OUTSIDE_SENDER,
    rcpt_to: str = OUTSIDE_RECIPIENT,
    box: Mailbox | None = None,
) -> ProbeSpec:
    """A probe with ``check`` (and/or ``expect``) through policy listener ``listener``."""
    return ProbeSpec(
        name=f"policy-{check or 'expect'}",
        smtp=smtp_server(stack, listener),
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        mailbox=box,
        timeout=15.0,
        check=check,
        expect=expectation(check, expect),
    )


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def lines(result: RunResult, direction: Direction) -> list[str]:
    return [line.text for line in result.transcript.lines if line.direction is direction]


def notes(result: RunResult) -> list[str]:
    return lines(result, Direction.NOTE)


def shown(result: RunResult) -> str:
    return "\n".join(result.transcript.render())


# ------------------------------------------------------------------ open_relay


def test_open_relay_is_rejected_by_the_secure_listener_at_rcpt_to(policy: PolicyStack) -> None:
    result = run(policy_probe(policy, SECURE, PolicyCheck.OPEN_RELAY))

    assert result.outcome is Outcome.REJECTED, shown(result)
    assert result.success
    assert result.policy_check == "open_relay"
    assert result.smtp.reply_code == 554
    assert f"RCPT TO:<{OUTSIDE_RECIPIENT}>" in lines(result, Direction.SENT_TLS)
    # Postfix offers PIPELINING: DATA went out with MAIL and RCPT, and its own
    # "no valid recipients" is shown after the refusal, noted but not blamed.
    [refusal, data_reply] = [
        t for t in lines(result, Direction.RECEIVED_TLS) if t.startswith("554")
    ]
    assert "Relay access denied" in refusal
    assert "no valid recipients" in data_reply
    assert "the reply to DATA follows from the rcpt_to reply" in notes(result)
    assert f"refused as expected at rcpt_to: {refusal}" in notes(result)
    assert not any(text.startswith("AUTH") for text in lines(result, Direction.SENT_TLS))


def test_open_relay_is_accepted_unexpectedly_by_the_open_listener_and_nothing_is_sent(
    policy: PolicyStack,
) -> None:
    result = run(policy_probe(policy, OPEN_RELAY, PolicyCheck.OPEN_RELAY))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, shown(result)
    assert not result.success
    assert result.stage is Stage.DATA
    assert result.smtp.reply_code == 354
    assert "expected a refusal at mail_from, rcpt_to or data (5xx)" in result.error
    assert any(t.startswith("250") for t in lines(result, Direction.RECEIVED_TLS))
    assert "stopping after data: closing without sending the message" in notes(result)
    # Nothing was delivered: the queue drains empty and sink's INBOX holds no probe
    # message (the policy fixture checks both after the test, too).
    assert policy.drain(timeout=2.0) == {}
    assert routes.probe_messages(policy.mailstack) == []


def test_open_relay_with_a_mailbox_sends_finds_and_deletes_the_relayed_message(
    policy: PolicyStack,
) -> None:
    """With the mailbox of the (rewritten) outside recipient, the relayed message is proof."""
    box = routes.mailbox(policy.mailstack)
    result = run(policy_probe(policy, OPEN_RELAY, PolicyCheck.OPEN_RELAY, box=box))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, shown(result)
    assert result.stage is Stage.DATA
    assert result.arrival is not None
    assert result.arrival.deleted
    assert "the accepted message arrived in INBOX and was deleted" in notes(result)
    assert routes.probe_messages(policy.mailstack) == []


# ----------------------------------------------------------- auth_requires_tls


def test_auth_requires_tls_is_rejected_by_the_secure_listener(policy: PolicyStack) -> None:
    result = run(policy_probe(policy, SECURE, PolicyCheck.AUTH_REQUIRES_TLS))

    assert result.outcome is Outcome.REJECTED, shown(result)
    sent = lines(result, Direction.SENT)
    assert "STARTTLS" not in sent
    assert "AUTH PLAIN ********" in sent
    assert not lines(result, Direction.SENT_TLS)
    [refusal] = [t for t in lines(result, Direction.RECEIVED) if t.startswith("503")]
    assert f"refused as expected at auth: {refusal}" in notes(result)
    assert not any("AUTH" in t for t in lines(result, Direction.RECEIVED) if t.startswith("250"))
    assert policy.mailstack.users[SASL_USER] not in shown(result)


def test_auth_requires_tls_fails_at_ehlo_on_the_listener_offering_auth_in_clear(
    policy: PolicyStack,
) -> None:
    result = run(policy_probe(policy, AUTH_IN_CLEAR, PolicyCheck.AUTH_REQUIRES_TLS))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, shown(result)
    assert result.stage is Stage.EHLO
    assert result.error == "the EHLO before STARTTLS offers AUTH"
    assert any(t.startswith("250-AUTH") for t in lines(result, Direction.RECEIVED))
    assert any(note.startswith("AUTH is offered before STARTTLS") for note in notes(result))
    assert not any(t.startswith("AUTH") for t in lines(result, Direction.SENT))


# ------------------------------------------------------------- sender_mismatch


def test_sender_mismatch_is_rejected_by_the_secure_listener(policy: PolicyStack) -> None:
    spec = policy_probe(
        policy, SECURE, PolicyCheck.SENDER_MISMATCH, mail_from=FORGED, rcpt_to=LOCAL_RECIPIENT
    )
    result = run(spec)

    assert result.outcome is Outcome.REJECTED, shown(result)
    received = lines(result, Direction.RECEIVED_TLS)
    assert any(t.startswith("235") for t in received)  # logged in with the real credentials
    [refusal] = [t for t in received if t.startswith("553")]
    assert "not owned by user" in refusal
    assert any(note.startswith("refused as expected at ") for note in notes(result))
    assert policy.mailstack.users[SASL_USER] not in shown(result)


def test_sender_mismatch_is_accepted_unexpectedly_without_the_login_check(
    policy: PolicyStack,
) -> None:
    spec = policy_probe(
        policy,
        NO_LOGIN_MISMATCH,
        PolicyCheck.SENDER_MISMATCH,
        mail_from=FORGED,
        rcpt_to=LOCAL_RECIPIENT,
    )
    result = run(spec)

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, shown(result)
    assert result.stage is Stage.DATA
    assert f"MAIL FROM:<{FORGED}>" in lines(result, Direction.SENT_TLS)
    assert policy.drain(timeout=2.0) == {}


# ------------------------------------------------------------ a plain expect


def test_a_plain_expect_with_the_wrong_code_is_send_failed_naming_both(
    policy: PolicyStack,
) -> None:
    spec = policy_probe(policy, SECURE, None, expect=Expectation((Stage.RCPT_TO,), ("550",)))
    result = run(dataclasses.replace(spec, smtp=dataclasses.replace(spec.smtp, username=None)))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.policy_check == "expect"
    assert result.error.startswith("expected a refusal at rcpt_to (550); got 554 5.7.1")


# ------------------------------------------------------------------ the CLI


def check(stack: PolicyStack, listener: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``smtp-probe check`` through ``listener`` (STARTTLS, the stack's CA), text output."""
    host, port = stack.listener(listener)
    argv = [
        "check", "--smtp", f"{host}:{port}", "--ca-file", str(stack.ca_file),
        "--timeout", "15s", *extra,
    ]  # fmt: skip
    env = {SMTP_PASSWORD_ENV: stack.mailstack.users[SASL_USER]}
    return run_cli(*argv, env=env)


OPEN_RELAY_FLAGS = ("--check", "open_relay", "--from", OUTSIDE_SENDER, "--to", OUTSIDE_RECIPIENT)


@pytest.mark.parametrize(
    ("listener", "code", "verdict"),
    [
        (SECURE, 0, "OK: open_relay: refused as expected (554 5.7.1"),
        (OPEN_RELAY, 2, "CRITICAL: open_relay: accepted_unexpectedly at data"),
    ],
)
def test_check_open_relay_exits_by_the_listener(
    policy: PolicyStack, listener: str, code: int, verdict: str
) -> None:
    proc = check(policy, listener, *OPEN_RELAY_FLAGS)

    assert proc.returncode == code, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[-1].startswith(verdict)
    assert any(line.endswith(f"~> RCPT TO:<{OUTSIDE_RECIPIENT}>") for line in out)


@pytest.mark.parametrize(
    ("listener", "code", "evidence"),
    [
        (SECURE, 0, "<- 503 5.5.1 Error: authentication not enabled"),
        (AUTH_IN_CLEAR, 2, "<- 250-AUTH PLAIN LOGIN"),
    ],
)
def test_check_auth_requires_tls_exits_by_the_listener(
    policy: PolicyStack, listener: str, code: int, evidence: str
) -> None:
    proc = check(policy, listener, "--check", "auth_requires_tls", "--from", SASL_USER,
                 "--to", LOCAL_RECIPIENT, "--format", "json")  # fmt: skip

    assert proc.returncode == code, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["policy_check"] == "auth_requires_tls"
    assert data["outcome"] == ("rejected" if code == 0 else "accepted_unexpectedly")
    assert any(evidence in line for line in data["transcript"]), data["transcript"]


@pytest.mark.parametrize(("listener", "code"), [(SECURE, 0), (NO_LOGIN_MISMATCH, 2)])
def test_check_sender_mismatch_exits_by_the_listener(
    policy: PolicyStack, listener: str, code: int
) -> None:
    proc = check(policy, listener, "--check", "sender_mismatch", "--smtp-user", SASL_USER,
                 "--from", FORGED, "--to", LOCAL_RECIPIENT, "--format", "nagios", "-v")  # fmt: skip

    assert proc.returncode == code, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    if code == 0:
        assert first.startswith("SMTP-PROBE OK - sender_mismatch: refused as expected (553 5.7.1")
    else:
        assert first.startswith("SMTP-PROBE CRITICAL - sender_mismatch: accepted_unexpectedly")
    assert f"MAIL FROM:<{FORGED}>" in proc.stdout
    assert policy.mailstack.users[SASL_USER] not in proc.stdout + proc.stderr


def test_check_expect_reject_takes_the_stage_and_codes(policy: PolicyStack) -> None:
    proc = check(policy, SECURE, "--expect-reject", "rcpt_to:554", "--from", OUTSIDE_SENDER,
                 "--to", OUTSIDE_RECIPIENT)  # fmt: skip
    wrong_code = check(policy, SECURE, "--expect-reject", "rcpt_to:550", "--from",
                       OUTSIDE_SENDER, "--to", OUTSIDE_RECIPIENT)  # fmt: skip
    too_early = check(policy, SECURE, "--expect-reject", "mail_from", "--from", OUTSIDE_SENDER,
                      "--to", OUTSIDE_RECIPIENT)  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("OK: expect: refused as expected (554")
    assert wrong_code.returncode == 2, wrong_code.stdout + wrong_code.stderr
    assert wrong_code.stdout.splitlines()[-1].startswith(
        "CRITICAL: expect: send_failed at rcpt_to [554]: expected a refusal at rcpt_to (550); "
        "got 554 5.7.1"
    )
    # MAIL FROM is taken: the run ends there (RSET, QUIT), before any RCPT TO.
    assert too_early.returncode == 2, too_early.stdout + too_early.stderr
    assert too_early.stdout.splitlines()[-1].startswith(
        "CRITICAL: expect: accepted_unexpectedly at mail_from: accepted at mail_from"
    )
    assert "~> RSET" in too_early.stdout
    assert "RCPT TO" not in too_early.stdout
