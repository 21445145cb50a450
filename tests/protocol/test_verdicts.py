"""Verdicts of whole runs: a filter hop stamps the message, the watcher reads it over real IMAP.

The probe submits to a stamping hop (aiosmtpd standing for a receiving
MTA's milters, see :mod:`tests.support.stamping_smtpd`) that relays into
the demo sandbox (pymap); the run reads the Authentication-Results and
spam headers before deleting the message, and with ``verify_dkim`` checks
the signature itself against a loopback DNS responder.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import DnsSettings, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.report import ExitCode, as_dict, exit_code, render_text
from smtp_probe.sandbox import DEMO_USER, SandboxAddress
from tests.support.dns_responder import LOOPBACK, DnsResponder
from tests.support.results import own_dkim_of, verdicts_of
from tests.support.sandbox_imap import messages_in, run, sandbox, sandbox_mailbox
from tests.support.stamping_smtpd import DkimKey, Stamping, make_key, stamping_hop

RECEIVER = "mx.sandbox.test"
SENDER = "probe@sender.test"
GOOD = f"Authentication-Results: {RECEIVER}; dkim=pass header.d=sender.test header.s=probe; spf=pass smtp.mailfrom=sender.test; dmarc=pass header.from=sender.test"
FORGED = "Authentication-Results: evil.example; dkim=pass; spf=pass; dmarc=pass"


def spec(address: SandboxAddress, port: int, **changes: object) -> ProbeSpec:
    probe = ProbeSpec(
        name="signed-route",
        smtp=SmtpServer(host=LOOPBACK, port=port, tls=TlsMode.NONE),
        mail_from=SENDER,
        rcpt_to=DEMO_USER,
        mailbox=sandbox_mailbox(address, junk_folders=(), authserv_id=RECEIVER),
        timeout=10.0,
    )
    return replace(probe, **changes)  # type: ignore[arg-type]


def through_hop(
    stamping_lines: list[str], sign: DkimKey | None = None, **changes: object
) -> tuple[RunResult, int]:
    """One run through a stamping hop into the sandbox; the result and what INBOX holds after."""

    async def scenario() -> tuple[RunResult, int]:
        async with sandbox() as address:
            stamping = Stamping((address.host, address.smtp_port), stamping_lines, sign)
            async with stamping_hop(stamping) as port:
                result = await run_probe(spec(address, port, **changes), signer=TokenSigner())
            left = await asyncio.to_thread(messages_in, address, "INBOX")
            return result, len(left)

    return run(scenario)


def test_the_receivers_verdicts_are_read_and_a_forged_header_ignored() -> None:
    result, left = through_hop(
        [
            GOOD,
            "X-Spamd-Result: default: False [2.40 / 15.00]; DKIM_TRACE(0.00)[sender.test:+]",
            FORGED,
        ],
        expect_auth=(("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass")),
    )

    assert result.outcome is Outcome.DELIVERED, result.error
    assert left == 0
    verdicts = verdicts_of(result)
    assert [(v.method, v.result) for v in verdicts.results] == [
        ("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass"),
    ]  # fmt: skip
    assert verdicts.ignored == 1
    assert (verdicts.spam_score, verdicts.spam_threshold) == (2.4, 15.0)
    text = render_text(result, colour=False)
    assert f"verify: {RECEIVER}: dkim=pass" in text
    assert "ignored 1 Authentication-Results header(s)" in text
    assert as_dict(result)["imap"]["verdicts"]["spam_source"] == "X-Spamd-Result"


def test_a_forged_pass_does_not_hide_the_receivers_fail() -> None:
    failing = f'Authentication-Results: {RECEIVER}; dkim=fail reason="signature verification failed" header.d=sender.test'
    result, left = through_hop([failing, FORGED], expect_auth=(("dkim", "pass"), ("dmarc", "pass")))

    assert result.outcome is Outcome.AUTH_FAILED
    assert result.stage is Stage.VERIFY
    assert result.error == "dkim=fail (expected pass); dmarc=none (expected pass)"
    assert not result.success
    assert exit_code(result) is ExitCode.WARNING
    assert result.arrival is not None
    assert result.arrival.deleted
    assert left == 0  # deleted all the same
    assert "FAILED at verify: dkim=fail (expected pass)" in render_text(result, colour=False)


def test_without_any_authentication_results_the_expectation_is_missed() -> None:
    result, left = through_hop([], expect_auth=(("spf", "pass"),))

    assert result.outcome is Outcome.AUTH_FAILED
    assert result.error == "spf=none (expected pass)"
    assert left == 0


def test_a_list_of_accepted_results_passes_on_any_of_them() -> None:
    neutral = f"Authentication-Results: {RECEIVER}; spf=neutral smtp.mailfrom=sender.test"
    result, _ = through_hop([neutral], expect_auth=(("spf", "pass"), ("spf", "neutral")))
    assert result.outcome is Outcome.DELIVERED


def own_check(responder: DnsResponder, key: DkimKey, *, timeout: float = 2.0) -> RunResult:
    return through_hop(
        [GOOD],
        sign=key,
        verify_dkim=True,
        dns=DnsSettings(((LOOPBACK, responder.port),), timeout),
    )[0]


def test_verify_dkim_checks_the_signature_against_the_published_key() -> None:
    key = make_key("sender.test")
    with DnsResponder() as responder:
        responder.records[key.name] = key.record
        result = own_check(responder, key)

    assert result.outcome is Outcome.DELIVERED, result.error
    own = own_dkim_of(result)
    assert own.result == "pass", own.detail
    assert "header.d=sender.test" in own.detail
    assert responder.questions >= 1
    assert "verify: own DKIM check: dkim=pass" in render_text(result, colour=False)


def test_verify_dkim_with_another_key_published_fails() -> None:
    key, other = make_key("sender.test"), make_key("sender.test")
    with DnsResponder() as responder:
        responder.records[key.name] = other.record
        result = own_check(responder, key)

    own = own_dkim_of(result)
    assert own.result == "fail", own


def test_verify_dkim_without_a_published_key_is_a_permerror() -> None:
    key = make_key("sender.test")
    with DnsResponder() as responder:
        result = own_check(responder, key)

    own = own_dkim_of(result)
    assert own.result == "permerror", own
    assert f"no key published at {key.name}" in own.detail


def test_verify_dkim_against_a_silent_resolver_gives_up_after_its_timeout() -> None:
    key = make_key("sender.test")
    with DnsResponder() as responder:
        responder.silent = True
        started = time.monotonic()
        result = own_check(responder, key, timeout=0.5)
        took = time.monotonic() - started

    assert result.outcome is Outcome.DELIVERED  # our own check never fails the run
    own = own_dkim_of(result)
    assert own.result == "temperror", own
    assert took < 8.0


def test_verify_dkim_on_an_unsigned_message_is_none() -> None:
    with DnsResponder() as responder:
        result = through_hop(
            [], verify_dkim=True, dns=DnsSettings(((LOOPBACK, responder.port),), 1.0)
        )[0]
        assert responder.questions == 0

    own = own_dkim_of(result)
    assert own.result == "none"
