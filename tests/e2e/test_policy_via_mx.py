"""Policy checks sent the way the outside world's mail comes in: through an ``mx:`` domain.

The real policy Postfix (:mod:`tests.support.policystack`) stands for a
domain's inbound MX; the tests' Knot publishes that domain's MX record, so
the check walks the MX like an MTA (``mx_host`` in the result) and then
judges the server it reached. The ``policy`` fixture checks that queues
drain and no test mail is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from smtp_probe.probe.expect import expectation
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.smuggling import VARIANTS
from smtp_probe.probe.spec import (
    DnsSettings,
    PolicyCheck,
    ProbeSpec,
    SmtpServer,
    TlsMode,
    TlsSettings,
)
from tests.support.dns_server import DnsServer
from tests.support.policystack import (
    LOCAL_RECIPIENT,
    OPEN_RELAY,
    OUTSIDE_RECIPIENT,
    OUTSIDE_SENDER,
    SECURE,
    SMUGGLING,
    PolicyStack,
)
from tests.support.routes import SENDER, mailbox

DOMAIN = "inbound.example.test"
MX_HOST = "mx.inbound.example.test"


@pytest.fixture(scope="module")
def knot() -> Iterator[DnsServer]:
    records = [("inbound", "MX", f"10 {MX_HOST}."), ("mx.inbound", "A", "127.0.0.1")]
    with DnsServer("example.test", records) as server:
        yield server


def mx_spec(
    knot: DnsServer,
    stack: PolicyStack,
    listener: str,
    check: PolicyCheck,
    *,
    mail_from: str,
    rcpt_to: str,
    with_mailbox: bool = False,
) -> ProbeSpec:
    """A ``check`` probe whose server is ``mx: inbound.example.test``, reaching ``listener``."""
    server = SmtpServer(
        DOMAIN,
        stack.port(listener),
        TlsMode.OPPORTUNISTIC,
        TlsSettings(ca_file=stack.ca_file),
        timeout=10,
        mx=True,
    )
    return ProbeSpec(
        name=f"mx-{check}",
        smtp=server,
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        mailbox=mailbox(stack.mailstack) if with_mailbox else None,
        timeout=30.0,
        check=check,
        expect=expectation(check, None),
        dns=DnsSettings(nameservers=(knot.address,), timeout=3.0),
    )


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def test_an_open_relay_found_through_the_mx_is_accepted_unexpectedly(
    knot: DnsServer, policy: PolicyStack
) -> None:
    spec = mx_spec(
        knot,
        policy,
        OPEN_RELAY,
        PolicyCheck.OPEN_RELAY,
        mail_from=OUTSIDE_SENDER,
        rcpt_to=OUTSIDE_RECIPIENT,
    )
    result = run(spec)

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, result.error
    assert result.smtp.mx_host == MX_HOST
    text = "\n".join(result.transcript.render())
    assert f"MX 10 {MX_HOST}" in text
    # No mailbox: the session stops after DATA's 354, the message is never sent.
    assert "stopping after data: closing without sending the message" in text
    assert result.smtp.accepted_at is None


def test_a_closed_relay_found_through_the_mx_refuses_as_expected(
    knot: DnsServer, policy: PolicyStack
) -> None:
    spec = mx_spec(
        knot,
        policy,
        SECURE,
        PolicyCheck.OPEN_RELAY,
        mail_from=OUTSIDE_SENDER,
        rcpt_to=OUTSIDE_RECIPIENT,
    )
    result = run(spec)

    assert result.outcome is Outcome.REJECTED, result.error
    assert result.success
    assert result.smtp.reply_code == 554
    assert "Relay access denied" in result.smtp.reply
    text = "\n".join(result.transcript.render())
    assert "refused as expected at rcpt_to" in text
    assert f"MX 10 {MX_HOST}" in text


def test_smuggling_through_the_mx_is_found_on_the_loose_listener_only(
    knot: DnsServer, policy: PolicyStack
) -> None:
    loose = run(
        mx_spec(
            knot,
            policy,
            SMUGGLING,
            PolicyCheck.SMTP_SMUGGLING,
            mail_from=SENDER,
            rcpt_to=LOCAL_RECIPIENT,
            with_mailbox=True,
        )
    )
    strict = run(
        mx_spec(
            knot,
            policy,
            SECURE,
            PolicyCheck.SMTP_SMUGGLING,
            mail_from=SENDER,
            rcpt_to=LOCAL_RECIPIENT,
            with_mailbox=True,
        )
    )

    assert loose.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, loose.error
    assert loose.stage is Stage.DATA
    assert {v.variant for v in loose.smuggling if v.accepted} == {
        "lf_dot_lf",
        "lf_dot_crlf",
        "crlf_dot_lf",
    }
    assert strict.outcome is Outcome.REJECTED, strict.error
    assert len(strict.smuggling) == len(VARIANTS)
    assert not any(v.accepted for v in strict.smuggling)
