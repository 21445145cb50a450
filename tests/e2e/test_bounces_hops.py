"""Bounces on the multi-hop route (submission -> rspamd-filtered inbound -> MailStack).

The issue's cases on real hops: a recipient unknown at the last hop after
the first accepted (the inbound hop writes the DSN) ends the run
``bounced`` with ``5.1.1`` well before its deadline; a deferred hop (the
inbound hop's ``delay_warning_time`` is :data:`DELAY_WARNING_SECONDS`)
sends a ``delayed`` DSN, which is noted, and the run is never called
bounced. Every report goes to the envelope sender's MailStack mailbox, the
probe's ``bounce_mailbox``, and is deleted once verified; the ``hops``
fixture checks that no probe mail is left behind.
"""

from __future__ import annotations

import asyncio
import time

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec
from tests.support.hop_routes import bounce_box, hop_probe
from tests.support.hopstack import (
    DELAY_WARNING_SECONDS,
    DELAYED,
    INBOUND,
    INBOUND_HOSTNAME,
    SENDER,
    UNKNOWN,
    HopStack,
)


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def reports_about(hops: HopStack, result: RunResult) -> list[bytes]:
    return [raw for raw in hops.mailstack.maildir_messages(SENDER) if result.run_id.encode() in raw]


def test_unknown_at_the_last_hop_bounces_within_seconds(hops: HopStack) -> None:
    spec = hop_probe(hops, to=UNKNOWN, timeout=30.0, bounce_mailbox=bounce_box(hops))
    started = time.monotonic()
    result = run(spec)
    elapsed = time.monotonic() - started

    assert result.outcome is Outcome.BOUNCED, result.error
    assert result.stage is Stage.DELIVERY
    assert elapsed < 15.0, "the DSN, not the 30 s deadline, ends the run"
    [bounce] = result.bounces
    assert (bounce.action, bounce.status, bounce.recipient) == ("failed", "5.1.1", UNKNOWN)
    assert bounce.reporting_mta == INBOUND_HOSTNAME, "the hop after the first wrote it"
    assert bounce.diagnostic is not None
    assert "5.1.1" in bounce.diagnostic
    assert result.error.startswith(f"bounced: 5.1.1 <{UNKNOWN}> (remote mta: ")
    assert reports_about(hops, result) == []


def test_a_deferred_hop_is_noted_as_delayed_and_never_called_bounced(hops: HopStack) -> None:
    spec = hop_probe(
        hops, to=DELAYED, timeout=DELAY_WARNING_SECONDS + 8.0, bounce_mailbox=bounce_box(hops)
    )
    try:
        result = run(spec)
    finally:
        hops.delete_queued(INBOUND)  # deferred for ever at the inbound hop

    assert result.outcome is Outcome.NOT_DELIVERED, result.error
    assert [(b.action, b.status) for b in result.bounces] == [("delayed", "4.4.1")]
    assert result.bounces[0].reporting_mta == INBOUND_HOSTNAME
    text = "\n".join(result.transcript.render())
    assert f"delayed 4.4.1 <{DELAYED}>" in text
    assert "still waiting for the message" in text
    assert reports_about(hops, result) == []
