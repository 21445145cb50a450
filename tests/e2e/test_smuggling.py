"""The smtp_smuggling check against real Postfix: the policy stack's ``smuggling`` and ``secure`` listeners.

``smuggling`` is Debian 12's default (``smtpd_forbid_bare_newline = no``):
the smuggled message must really arrive (and be deleted); ``secure``
(``= yes``, no exclusions) must read each variant's content as one message.
The ``policy`` fixture checks that queues and mailboxes are left clean.
"""

from __future__ import annotations

import asyncio
import time

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.smuggling import VARIANTS
from smtp_probe.probe.spec import PolicyCheck, ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.transcript import Transcript
from tests.support.policystack import LOCAL_RECIPIENT, SECURE, SMUGGLING, PolicyStack
from tests.support.routes import SENDER, mailbox

#: What Postfix with ``smtpd_forbid_bare_newline = no`` takes as the end of DATA:
#: every variant whose dot is followed by a bare <LF> line end, or preceded by one
#: and followed by <CR><LF>. A bare <CR> is never a line end to Postfix.
POSTFIX_LOOSE = {"lf_dot_lf", "lf_dot_crlf", "crlf_dot_lf"}


def _spec(stack: PolicyStack, listener: str, *variants: str, name: str = "smuggling") -> ProbeSpec:
    host, port = stack.listener(listener)
    return ProbeSpec(
        name=name,
        # An MX as the world sees it: STARTTLS, no login.
        smtp=SmtpServer(
            host, port, TlsMode.STARTTLS, TlsSettings(ca_file=stack.ca_file), timeout=10
        ),
        mail_from=SENDER,
        rcpt_to=LOCAL_RECIPIENT,
        mailbox=mailbox(stack.mailstack),
        timeout=30,
        check=PolicyCheck.SMTP_SMUGGLING,
        smuggling_variants=variants,
    )


def _text(result: RunResult) -> str:
    return "\n".join(result.transcript.render())


def test_postfix_with_bare_newlines_allowed_takes_the_smuggled_message(policy: PolicyStack) -> None:
    result = asyncio.run(run_probe(_spec(policy, SMUGGLING), signer=TokenSigner()))

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, result.error
    assert result.stage is Stage.DATA
    assert not result.success
    assert result.policy_check == "smtp_smuggling"
    verdicts = {verdict.variant: verdict for verdict in result.smuggling}
    assert list(verdicts) == list(VARIANTS)
    accepted = {name for name, verdict in verdicts.items() if verdict.accepted}
    assert accepted == POSTFIX_LOOSE
    assert (
        result.error
        == f"smuggled message accepted with {', '.join(n for n in VARIANTS if n in accepted)}"
    )
    for name in POSTFIX_LOOSE:
        # Really delivered, not only acknowledged: its own signed token was found.
        assert "arrived in INBOX" in verdicts[name].evidence
        assert "replies 250, 250, 250, 354, 250, 221" in verdicts[name].evidence
    for name in set(VARIANTS) - POSTFIX_LOOSE:
        assert "inside the carrier's body" in verdicts[name].evidence
    text = _text(result)
    assert "~> <LF>.<CR><LF>   (end of data variant lf_dot_crlf)" in text
    assert "lf_dot_crlf VULNERABLE" in text


def test_postfix_with_bare_newlines_forbidden_is_safe(policy: PolicyStack) -> None:
    result = asyncio.run(run_probe(_spec(policy, SECURE), signer=TokenSigner()))

    assert result.outcome is Outcome.REJECTED, result.error
    assert result.success
    assert result.stage is None
    assert result.policy_check == "smtp_smuggling"
    assert len(result.smuggling) == len(VARIANTS)
    for verdict in result.smuggling:
        assert not verdict.accepted, verdict
        assert verdict.evidence.startswith("one message: the smuggled one arrived inside")
        assert verdict.evidence.endswith("replies 250, 221")


def test_the_daemons_shared_watcher_finds_and_deletes_both_messages(policy: PolicyStack) -> None:
    signer = TokenSigner()
    spec = _spec(policy, SMUGGLING, "lf_dot_crlf", "cr_dot_cr", name="shared")
    late: list[str] = []

    async def scenario() -> RunResult:
        assert spec.mailbox is not None
        watcher = MailboxWatcher(
            spec.mailbox, signer, persistent=True, probe_names=[spec.name], on_late=late.append
        )
        await watcher.start(Transcript(), time.monotonic() + 10)
        try:
            result = await run_probe(spec, signer=signer, watcher=watcher)
            await asyncio.sleep(1.0)  # anything left over would be swept up as late by now
            return result
        finally:
            await watcher.close()

    result = asyncio.run(scenario())

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, result.error
    assert [(v.variant, v.accepted) for v in result.smuggling] == [
        ("lf_dot_crlf", True),
        ("cr_dot_cr", False),
    ]
    assert late == []
