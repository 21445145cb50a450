"""The slot limiter: first come first served, every waiter within its own deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from smtp_probe.probe.slots import Limiter, Slots, SlotTimeout, server_identity
from smtp_probe.probe.spec import SmtpServer
from smtp_probe.probe.transcript import Transcript


class Counting:
    """A :class:`~smtp_probe.probe.slots.SlotObserver` that keeps the numbers."""

    def __init__(self) -> None:
        self.waiting: dict[str, int] = {}
        self.waits: dict[str, int] = {}

    def slot_wait_started(self, limit: str) -> None:
        self.waiting[limit] = self.waiting.get(limit, 0) + 1
        self.waits[limit] = self.waits.get(limit, 0) + 1

    def slot_wait_ended(self, limit: str) -> None:
        self.waiting[limit] -= 1


def notes(transcript: Transcript) -> list[str]:
    return [line.text for line in transcript.lines]


async def hold(limiter: Limiter, name: str, order: list[str], release: asyncio.Event) -> None:
    async with limiter.slot("a run slot", Transcript(), time.monotonic() + 5):
        order.append(name)
        await release.wait()


def test_slots_are_handed_out_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        limiter = Limiter(1)
        order: list[str] = []
        release = asyncio.Event()
        tasks = []
        for name in ("first", "second", "third", "fourth"):
            tasks.append(asyncio.create_task(hold(limiter, name, order, release)))
            await asyncio.sleep(0.01)  # each queues behind the previous one
        assert order == ["first"]
        assert limiter.waiting == 3
        release.set()
        await asyncio.gather(*tasks)
        assert limiter.in_use == 0
        return order

    assert asyncio.run(scenario()) == ["first", "second", "third", "fourth"]


def test_a_waiter_gives_up_at_its_own_deadline_and_says_why() -> None:
    async def scenario() -> tuple[float, str, list[str], Limiter]:
        limiter = Limiter(1, kind="connection")
        release = asyncio.Event()
        holder = asyncio.create_task(hold(limiter, "holder", [], release))
        await asyncio.sleep(0.01)
        transcript = Transcript()
        started = time.monotonic()
        with pytest.raises(SlotTimeout) as caught:
            async with limiter.slot("a connection slot to relay:25", transcript, started + 0.3):
                pass
        waited = time.monotonic() - started
        release.set()
        await holder
        return waited, caught.value.reason, notes(transcript), limiter

    waited, reason, lines, limiter = asyncio.run(scenario())

    assert 0.25 <= waited < 1.0
    assert reason.startswith("no free connection slot to relay:25 within the deadline")
    assert "1 in use, 0 waiting" in reason
    assert lines[0] == "waiting for a connection slot to relay:25 (1 in use of 1, 0 waiting)"
    assert lines[-1] == reason
    assert limiter.in_use == 0
    assert limiter.waiting == 0


def test_a_waiter_that_gets_its_slot_notes_how_long_it_waited() -> None:
    async def scenario() -> list[str]:
        limiter = Limiter(1)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(limiter, "holder", [], release))
        await asyncio.sleep(0.01)
        transcript = Transcript()
        asyncio.get_running_loop().call_later(0.1, release.set)
        async with limiter.slot("a run slot", transcript, time.monotonic() + 5):
            pass
        await holder
        return notes(transcript)

    lines = asyncio.run(scenario())

    assert lines[0] == "waiting for a run slot (1 in use of 1, 0 waiting)"
    assert lines[1].startswith("got a run slot after 0.")
    assert float(lines[1].split(" after ")[1].removesuffix("s")) >= 0.09


def test_a_timed_out_waiter_does_not_hold_up_those_behind_it() -> None:
    async def scenario() -> list[str]:
        limiter = Limiter(1)
        order: list[str] = []
        release = asyncio.Event()
        holder = asyncio.create_task(hold(limiter, "holder", order, release))
        await asyncio.sleep(0.01)

        async def impatient() -> None:
            with pytest.raises(SlotTimeout):
                async with limiter.slot("a run slot", Transcript(), time.monotonic() + 0.05):
                    order.append("impatient")

        early = asyncio.create_task(impatient())
        await asyncio.sleep(0.01)
        patient = asyncio.create_task(hold(limiter, "patient", order, asyncio.Event()))
        await early
        release.set()
        await holder
        await asyncio.sleep(0.01)
        patient.cancel()
        await asyncio.gather(patient, return_exceptions=True)
        assert limiter.in_use == 0
        return order

    assert asyncio.run(scenario()) == ["holder", "patient"]


def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    async def scenario() -> Limiter:
        limiter = Limiter(1)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(limiter, "holder", [], release))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(hold(limiter, "waiter", [], asyncio.Event()))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        release.set()
        await holder
        return limiter

    limiter = asyncio.run(scenario())

    assert (limiter.in_use, limiter.waiting) == (0, 0)


def test_raising_the_limit_lets_waiters_in_now_and_holders_keep_their_slots() -> None:
    async def scenario() -> tuple[list[str], int]:
        limiter = Limiter(1)
        order: list[str] = []
        release = asyncio.Event()
        tasks = [asyncio.create_task(hold(limiter, "a", order, release))]
        await asyncio.sleep(0.01)
        tasks += [asyncio.create_task(hold(limiter, n, order, release)) for n in ("b", "c")]
        await asyncio.sleep(0.01)
        limiter.limit = 3
        await asyncio.sleep(0.01)
        in_use = limiter.in_use
        release.set()
        await asyncio.gather(*tasks)
        return order, in_use

    assert asyncio.run(scenario()) == (["a", "b", "c"], 3)


def test_lowering_the_limit_applies_as_slots_are_given_back() -> None:
    async def scenario() -> list[int]:
        limiter = Limiter(3)
        releases = [asyncio.Event() for _ in range(4)]
        tasks = [
            asyncio.create_task(hold(limiter, str(i), [], release))
            for i, release in enumerate(releases)
        ]
        await asyncio.sleep(0.01)
        seen = [limiter.in_use]  # 3 hold, 1 waits
        limiter.limit = 1
        releases[0].set()
        await asyncio.sleep(0.01)
        seen.append(limiter.in_use)  # 2 still hold; the waiter still waits
        releases[1].set()
        releases[2].set()
        await asyncio.sleep(0.01)
        seen.append(limiter.in_use)  # now the waiter holds the one slot
        releases[3].set()
        await asyncio.gather(*tasks)
        return seen

    assert asyncio.run(scenario()) == [3, 2, 1]


def test_the_observer_counts_waits_and_runs_waiting() -> None:
    async def scenario() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        observer = Counting()
        limiter = Limiter(1, kind="connection", observer=observer)
        release = asyncio.Event()
        tasks = [asyncio.create_task(hold(limiter, str(i), [], release)) for i in range(3)]
        await asyncio.sleep(0.01)
        during = dict(observer.waiting)
        release.set()
        await asyncio.gather(*tasks)
        return during, observer.waiting, observer.waits

    during, after, waits = asyncio.run(scenario())

    assert during == {"connection": 2}
    assert after == {"connection": 0}
    assert waits == {"connection": 2}


def test_servers_count_per_host_and_port_and_mx_servers_per_domain() -> None:
    relay = SmtpServer("Relay.Example", 587, max_connections=2)
    same = SmtpServer("relay.example", 587, max_connections=5)
    other_port = SmtpServer("relay.example", 25)
    mx = SmtpServer("example.net", 25, mx=True)

    assert server_identity(relay) == server_identity(same)
    assert server_identity(relay) != server_identity(other_port)
    assert server_identity(mx) == ("mx", "example.net")
    assert server_identity(mx) != server_identity(SmtpServer("example.net", 25))

    slots = Slots(8)
    slots.configure(8, [relay, same, other_port, mx])

    assert slots.connection(same) is slots.connection(relay)
    assert slots.connection(relay).limit == 2  # the smallest given for one server
    assert slots.connection(other_port).limit == 4  # the default
    slots.configure(2, [same])
    assert slots.connection(relay).limit == 5
    assert slots.runs.limit == 2
