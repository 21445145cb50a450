"""The Received chain of a real message: Postfix's hop, then Dovecot LMTP's, with delays.

Runs go through the real Postfix + Dovecot (the session's MailStack), whose
messages arrive with two ``Received:`` lines: Postfix's (``ESMTPSA`` on
submission, ``ESMTPS`` on port 25 after STARTTLS, with its ``(using TLSv1.3
...)`` comment) and Dovecot LMTP's. The hops must come out of the run
result, the JSON, the ``check -v`` text and the metrics as they really were.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from prometheus_client import CollectorRegistry

from smtp_probe.config.runtime import ScheduledProbe
from smtp_probe.metrics import Metrics
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec
from smtp_probe.report import HOPS_CAVEAT, as_dict, render_text
from tests.e2e.test_check_cli import check
from tests.support.mailstack import MailStack
from tests.support.routes import mailbox, probe, smtp_server


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


@pytest.mark.parametrize(
    ("smtp_kind", "protocol"),
    [("submission", "ESMTPSA"), ("mx", "ESMTPS")],
    ids=["submission", "mx-port"],
)
def test_a_real_message_has_the_postfix_and_lmtp_hops(
    stack: MailStack, smtp_kind: str, protocol: str
) -> None:
    spec = probe(stack, smtp=smtp_server(stack, smtp_kind), box=mailbox(stack, "imaps"))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure([ScheduledProbe(spec, interval=60.0, jitter=0.0)])
    before = time.time()
    result = run(spec)
    after = time.time()
    metrics.record(result)

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.arrival is not None
    hops = result.arrival.hops
    assert len(hops) == len(result.arrival.received) >= 2
    first, last = hops[0], hops[-1]
    assert (first.by, first.with_, first.tls) == ("mx.example.test", protocol, True)
    assert first.from_  # our EHLO name, whatever this machine is called
    assert (last.by, last.with_) == ("mx.example.test", "LMTP")
    for hop in hops:
        # Whole seconds of this machine's clock: within the run, give or take the rounding.
        assert hop.at is not None
        assert before - 1 <= hop.at <= after + 1
        assert not hop.skewed
    assert first.delay_seconds is None
    assert all(h.delay_seconds is not None and 0 <= h.delay_seconds <= 2 for h in hops[1:])

    document = as_dict(result)["imap"]["hops"]
    assert [(h["by"], h["with"], h["tls"]) for h in document] == [
        (h.by, h.with_, h.tls) for h in hops
    ]
    text = render_text(result, colour=False, verbose=True)
    assert f"hops (oldest first; {HOPS_CAVEAT}):" in text
    assert f"  0  mx.example.test  {protocol}" in text

    name = spec.name
    assert registry.get_sample_value("smtp_probe_hops", {"probe": name}) == len(hops)
    info = {"probe": name, "hop": "0", "by": "mx.example.test", "with": protocol}
    assert registry.get_sample_value("smtp_probe_hop_info", info) == 1.0
    delay = registry.get_sample_value("smtp_probe_hop_delay_seconds", {"probe": name, "hop": "1"})
    assert delay == hops[1].delay_seconds


def test_check_verbose_prints_the_hop_table_and_json_carries_the_hops(stack: MailStack) -> None:
    text = check(stack, "-v")
    document = check(stack, "--format", "json")

    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    start = lines.index(f"hops (oldest first; {HOPS_CAVEAT}):")
    assert lines[start + 1].split() == ["#", "by", "with", "TLS", "delay"]
    assert lines[start + 2].split()[:5] == ["0", "mx.example.test", "ESMTPSA", "yes", "-"]
    row = lines[start + 3].split()
    assert row[:4] == ["1", "mx.example.test", "LMTP", "no"]
    assert row[4:] in (["0", "s"], ["1", "s"], ["2", "s"])
    assert lines[-1].startswith("OK: delivered to INBOX ")
    assert document.returncode == 0, document.stdout + document.stderr
    hops = json.loads(document.stdout)["imap"]["hops"]
    assert [h["with"] for h in hops] == ["ESMTPSA", "LMTP"]
    assert hops[0]["delay_seconds"] is None
    assert hops[1]["delay_seconds"] in (0.0, 1.0, 2.0)
    assert not any(h["skewed"] for h in hops)
