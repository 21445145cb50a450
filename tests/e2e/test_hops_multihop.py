"""Per-hop delay on the real multi-hop route: a hold on the middle hop shows where it was.

The route is :mod:`tests.support.hopstack`: the submission Postfix, the
rspamd-filtered inbound Postfix, then the MailStack's Postfix and Dovecot
LMTP, so a probe message arrives with four ``Received:`` lines. The test
parks the message in the inbound hop's hold queue for a few seconds
(Postfix ``HOLD``, released with ``postsuper -H``): the inbound hop stamped
it on arrival, the next hop only after the release. A hop's delay is the
time from the previous hop's stamp to its own, so the hold shows as the
delay of the hop after the inbound one (the MailStack's Postfix), in the
result and in ``smtp_probe_hop_delay_seconds``, while the other hops stay
near zero; the headline delivery time (our one clock) covers it too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from prometheus_client import CollectorRegistry

from smtp_probe.config.runtime import ScheduledProbe
from smtp_probe.metrics import Metrics
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec
from smtp_probe.report import render_text
from tests.support.hopstack import INBOUND, INBOUND_HOSTNAME, SUBMISSION_HOSTNAME, HopStack
from tests.support.routes import mailbox, probe, smtp_server

HOLD_SECONDS = 4
"""How long the inbound hop holds the message; Received times are whole seconds."""
MX = "mx.example.test"


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def test_a_hold_on_the_middle_hop_shows_as_the_next_hops_delay_and_metric(
    hops: HopStack,
) -> None:
    stack = hops.mailstack
    spec = probe(
        stack,
        smtp=smtp_server(stack, "submission", port=hops.submission_port),
        box=mailbox(stack, "imaps"),
        timeout=40.0,
        name="multihop",
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure([ScheduledProbe(spec, interval=60.0, jitter=0.0)])

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with hops.held(INBOUND):
            running = pool.submit(run, spec)
            hops.wait_queued(INBOUND, "hold", timeout=20)
            time.sleep(HOLD_SECONDS)
        result = running.result(timeout=60)
    metrics.record(result)

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.arrival is not None
    chain = result.arrival.hops
    assert [(h.by, h.with_) for h in chain] == [
        (SUBMISSION_HOSTNAME, "ESMTPSA"),
        (INBOUND_HOSTNAME, "ESMTPS"),
        (MX, "ESMTPS"),
        (MX, "LMTP"),
    ], result.arrival.received
    assert [h.tls for h in chain] == [True, True, True, False]
    assert not any(h.skewed for h in chain)
    delays = [h.delay_seconds for h in chain]
    assert delays[0] is None
    assert delays[1] is not None
    assert delays[1] <= 1
    assert delays[2] is not None
    # whole seconds on both stamps: a 4 s hold reads 3..5 s, plus the release's own time
    assert HOLD_SECONDS - 1 <= delays[2] <= HOLD_SECONDS + 3, delays
    assert delays[3] is not None
    assert delays[3] <= 1
    assert result.delivery_seconds is not None
    assert result.delivery_seconds >= HOLD_SECONDS - 1  # our own clock saw the hold too

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"probe": "multihop", **labels})

    assert sample("smtp_probe_hops") == 4.0
    assert sample("smtp_probe_hop_delay_seconds", hop="2") == delays[2]
    assert sample("smtp_probe_hop_delay_seconds", hop="1") == delays[1]
    assert sample("smtp_probe_hop_delay_seconds", hop="0") is None
    held_by = {"hop": "1", "by": INBOUND_HOSTNAME, "with": "ESMTPS"}
    assert sample("smtp_probe_hop_info", **held_by) == 1.0
    text = render_text(result, colour=False, verbose=True)
    assert f"  2  {MX}" in text
