"""Bounded concurrency against real servers on 127.0.0.1: slots hold, deadlines hold.

aiosmtpd (:mod:`tests.support.loopback_smtpd`) counts the TCP connections
it has open at once while many probes on one server run together; the
smuggling check runs against :mod:`tests.support.splitting_smtpd` and the
demo sandbox's IMAP mailbox, as in tests/protocol/test_smuggling.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.slots import Slots
from smtp_probe.probe.spec import PolicyCheck, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.probe.transcript import Transcript
from smtp_probe.sandbox import SandboxAddress
from tests.support.loopback_routes import loopback_probe
from tests.support.loopback_smtpd import Behaviour, smtpd
from tests.support.sandbox_imap import append, run, sandbox, sandbox_mailbox
from tests.support.splitting_smtpd import LOOPBACK, SplittingSmtpd


def probes(
    port: int, count: int, *, max_connections: int = 4, timeout: float = 20.0
) -> list[ProbeSpec]:
    """``count`` probes through one aiosmtpd server, each with its own name."""
    specs = []
    for index in range(count):
        spec = loopback_probe(port, name=f"p{index:02d}", timeout=timeout)
        specs.append(replace(spec, smtp=replace(spec.smtp, max_connections=max_connections)))
    return specs


async def all_at_once(specs: list[ProbeSpec], slots: Slots) -> list[RunResult]:
    slots.configure(slots.runs.limit, (spec.smtp for spec in specs))
    signer = TokenSigner()
    return list(
        await asyncio.gather(*(run_probe(spec, signer=signer, slots=slots) for spec in specs))
    )


def quiet(handler: Behaviour) -> None:
    """Wait out the controller's own readiness connection, then count from zero."""
    ends = time.monotonic() + 2
    while handler.connections_open and time.monotonic() < ends:
        time.sleep(0.01)
    handler.most_connections = 0


def notes(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines]


def test_twenty_probes_on_one_server_never_hold_more_than_its_max_connections() -> None:
    handler = Behaviour(data_delay=0.15)
    with smtpd(handler) as port:
        quiet(handler)
        results = asyncio.run(all_at_once(probes(port, 20, max_connections=3), Slots(100)))

    assert [r.outcome for r in results] == [Outcome.SENT] * 20, [r.error for r in results]
    assert len(handler.messages) == 20
    assert handler.most_connections == 3
    waited = [
        r for r in results if any(n.startswith("waiting for a connection slot") for n in notes(r))
    ]
    assert len(waited) >= 17
    address = f"127.0.0.1:{port}"
    assert any(
        n.startswith(f"waiting for a connection slot to {address} (3 in use of 3, ")
        for r in waited
        for n in notes(r)
    )
    assert all(any(n.startswith("got a connection slot to") for n in notes(r)) for r in waited)


def test_max_concurrent_runs_bounds_runs_across_servers_limits() -> None:
    handler = Behaviour(data_delay=0.15)
    slots = Slots(2)
    with smtpd(handler) as port:
        quiet(handler)
        results = asyncio.run(all_at_once(probes(port, 6, max_connections=10), slots))

    assert [r.outcome for r in results] == [Outcome.SENT] * 6
    assert handler.most_connections == 2
    assert sum(any(n.startswith("waiting for a run slot") for n in notes(r)) for r in results) == 4
    assert (slots.runs.in_use, slots.runs.waiting) == (0, 0)


def test_a_run_without_a_connection_slot_by_its_deadline_ends_error_at_connect() -> None:
    handler = Behaviour(data_delay=1.5)
    with smtpd(handler) as port:
        quiet(handler)
        slow, hurried = probes(port, 2, max_connections=1)
        hurried = replace(hurried, timeout=0.5)

        async def scenario() -> tuple[RunResult, RunResult]:
            slots = Slots(10)
            slots.configure(10, [slow.smtp])
            signer = TokenSigner()
            first = asyncio.create_task(run_probe(slow, signer=signer, slots=slots))
            # Until the slow run holds the one connection (counted, not timed).
            while slots.connection(slow.smtp).in_use < 1:
                assert not first.done(), first
                await asyncio.sleep(0.01)
            second = await run_probe(hurried, signer=signer, slots=slots)
            return await first, second

        first, second = asyncio.run(scenario())

    assert first.outcome is Outcome.SENT
    assert second.outcome is Outcome.ERROR
    assert second.stage is Stage.CONNECT
    assert second.error.startswith(
        f"no free connection slot to 127.0.0.1:{port} within the deadline (waited 0."
    )
    assert second.error.endswith("1 in use, 0 waiting)")
    assert second.duration_seconds < 1.0  # its own deadline, not the slow run's end
    assert len(handler.messages) == 1  # nothing sent for the run without a slot
    assert not any(line.text.startswith("connecting to") for line in second.transcript.lines)


def _smuggling(address: SandboxAddress, port: int, timeout: float) -> ProbeSpec:
    return ProbeSpec(
        name="smuggling",
        smtp=SmtpServer(LOOPBACK, port, TlsMode.NONE, timeout=5, max_connections=1),
        mail_from="probe@sender.test",
        rcpt_to=address.user,
        mailbox=sandbox_mailbox(address),
        timeout=timeout,
        check=PolicyCheck.SMTP_SMUGGLING,
        smuggling_variants=("lf_dot_lf", "cr_dot_cr"),
    )


async def _smuggle(
    address: SandboxAddress, timeout: float, held_for: float
) -> tuple[RunResult, SplittingSmtpd, Slots]:
    """A smuggling run while someone else holds the server's one slot for ``held_for`` seconds."""

    async def deliver(raw: bytes) -> None:
        await asyncio.to_thread(append, address, "INBOX", raw)

    server = SplittingSmtpd(deliver)
    async with server as port:
        spec = _smuggling(address, port, timeout)
        slots = Slots(10)
        slots.configure(10, [spec.smtp])
        holding = asyncio.Event()

        async def other() -> None:
            async with slots.connecting(spec.smtp, Transcript(), time.monotonic() + 30):
                holding.set()
                await asyncio.sleep(held_for)

        holder = asyncio.create_task(other())
        await holding.wait()
        result = await run_probe(spec, signer=TokenSigner(), slots=slots)
        await holder
        return result, server, slots


def test_each_smuggling_session_takes_a_connection_slot() -> None:
    async def scenario() -> tuple[RunResult, SplittingSmtpd, Slots]:
        async with sandbox() as address:
            return await _smuggle(address, timeout=10, held_for=0.3)

    result, server, slots = run(scenario, timeout=30)

    assert result.outcome is Outcome.REJECTED, result.error
    assert len(server.contents) == 2
    waits = [n for n in notes(result) if n.startswith("waiting for a connection slot")]
    assert len(waits) == 1  # the first session waited; the second found the slot free
    port = int(waits[0].split(f"{LOOPBACK}:")[1].split(" ")[0])
    assert slots.connection(SmtpServer(LOOPBACK, port)).in_use == 0


def test_a_smuggling_session_without_a_slot_by_the_deadline_ends_error_at_connect() -> None:
    async def scenario() -> tuple[RunResult, SplittingSmtpd, Slots]:
        async with sandbox() as address:
            return await _smuggle(address, timeout=0.5, held_for=1.0)

    result, server, _ = run(scenario, timeout=30)

    assert result.outcome is Outcome.ERROR
    assert result.stage is Stage.CONNECT
    assert result.error.startswith("variant lf_dot_lf: no free connection slot to 127.0.0.1:")
    assert server.contents == []
