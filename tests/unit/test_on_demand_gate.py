"""The on-demand gate's budget over all probes (``--web.probe-rate``), on a clock we turn.

The per-probe pause and the one-run-at-a-time rule are tested through HTTP
in ``tests/protocol/test_http.py``; here the sliding minute alone, which
would take a real minute to watch.
"""

from __future__ import annotations

import pytest

from smtp_probe.app import OnDemandGate
from smtp_probe.server.interface import OnDemandRefused


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def run(gate: OnDemandGate, name: str) -> None:
    with gate.admit(name, timeout=5.0):
        pass


def test_the_budget_refuses_the_next_run_until_the_oldest_leaves_the_minute(clock: Clock) -> None:
    gate = OnDemandGate(gap=0.0, per_minute=2, clock=clock)
    run(gate, "alpha")
    clock.now += 20
    run(gate, "beta")
    clock.now += 10

    with pytest.raises(OnDemandRefused) as refused:
        run(gate, "gamma")
    assert refused.value.retry_after == pytest.approx(30.0)
    assert "--web.probe-rate" in str(refused.value)

    clock.now += 30  # alpha's start is now 60 s old: out of the window
    run(gate, "gamma")
    with pytest.raises(OnDemandRefused):
        run(gate, "delta")  # beta and gamma fill it again


def test_a_refused_run_does_not_spend_the_budget(clock: Clock) -> None:
    gate = OnDemandGate(gap=5.0, per_minute=2, clock=clock)
    run(gate, "alpha")
    with pytest.raises(OnDemandRefused):
        run(gate, "alpha")  # the per-probe pause, not the budget
    run(gate, "beta")
    with pytest.raises(OnDemandRefused) as refused:
        run(gate, "gamma")
    assert "2 on-demand runs started in the last minute" in str(refused.value)
