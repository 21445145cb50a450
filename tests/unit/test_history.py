"""The per-probe run history behind the status page: bounded, configured probes only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from smtp_probe.history import HISTORY_SIZE, RunHistory, RunPoint
from smtp_probe.probe.result import Outcome, Stage
from tests.support.results import STARTED, run_result


def test_recent_holds_the_runs_oldest_first() -> None:
    history = RunHistory()
    history.configure(["alpha"])

    history.record(run_result("alpha", Outcome.DELIVERED, delivery=0.1))
    history.record(run_result("alpha", Outcome.SEND_FAILED, stage=Stage.CONNECT))
    history.record(run_result("alpha", Outcome.JUNK, delivery=0.3))

    assert [p.outcome for p in history.recent("alpha")] == [
        Outcome.DELIVERED, Outcome.SEND_FAILED, Outcome.JUNK,
    ]  # fmt: skip
    assert [p.delivery_seconds for p in history.recent("alpha")] == [0.1, None, 0.3]


def test_recent_keeps_only_the_last_size_runs() -> None:
    history = RunHistory(size=3)
    history.configure(["alpha"])

    for second in range(5):
        history.record(run_result("alpha", started_at=STARTED + timedelta(seconds=second)))

    finished = [p.finished_at for p in history.recent("alpha")]
    start = STARTED.timestamp() + 1.25
    assert finished == [start + 2, start + 3, start + 4]


def test_the_default_size_is_thirty_runs() -> None:
    assert RunHistory().size == HISTORY_SIZE == 30


def test_last_is_the_latest_result_in_full() -> None:
    history = RunHistory()
    history.configure(["alpha"])
    first = run_result("alpha", Outcome.DELIVERED)
    second = run_result("alpha", Outcome.SEND_FAILED, stage=Stage.RCPT_TO, reply_code=550)

    history.record(first)
    history.record(second)

    assert history.last("alpha") is second


def test_a_probe_without_runs_has_no_history() -> None:
    history = RunHistory()
    history.configure(["alpha"])

    assert history.recent("alpha") == ()
    assert history.last("alpha") is None


def test_a_result_of_a_probe_that_is_not_configured_is_dropped() -> None:
    """A probe removed by a reload while it ran does not come back."""
    history = RunHistory()
    history.configure(["alpha"])

    history.record(run_result("gone"))

    assert history.recent("gone") == ()
    assert history.last("gone") is None


def test_configure_clears_the_history_of_removed_probes_and_keeps_the_others() -> None:
    history = RunHistory()
    history.configure(["alpha", "gone"])
    history.record(run_result("alpha"))
    history.record(run_result("gone"))

    history.configure(["alpha", "new"])
    history.configure(["alpha", "new", "gone"])

    assert len(history.recent("alpha")) == 1
    assert history.recent("gone") == ()
    assert history.last("gone") is None
    assert history.recent("new") == ()


def test_a_point_finishes_at_start_plus_duration() -> None:
    point = RunPoint.of(run_result(delivery=0.4, duration=2.0))

    assert point == RunPoint(Outcome.DELIVERED, STARTED.timestamp() + 2.0, 0.4)


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RunHistory(size=0)
