"""The fault soak's judge (tests/support/soak.py) fails on every kind of bad run it is meant to catch.

The soak itself (tests/e2e/test_fault_soak.py, bench/bench_soak.py) passes
when the daemon behaves, so these runs are made up: they show that a
misattributed run, a failure after a heal, a run past its deadline, a
leftover and a leak each fail the soak, and that runs straddling a switch
do not.
"""

from __future__ import annotations

from typing import Any

from smtp_probe.probe.result import Outcome, Stage
from tests.support.faults import Expect, Fault
from tests.support.soak import Run, Sample, SoakPlan, SoakReport, Switch, _judge

PLAN = SoakPlan(faults=("tempfail",), window=10, gap=10, timeout=3, interval=3, slow_seconds=1)
TEMPFAIL = Fault("tempfail", Expect(Outcome.SEND_FAILED, Stage.RCPT_TO, 4), print, print)
# warm-up 0..10, tempfail on at 10 (in effect at 11) until 21 (healed at 22), end at 32
SWITCH = Switch("tempfail", on_at=10.0, on_done=11.0, off_at=21.0, off_done=22.0)


def run(start: float, end: float, outcome: str, stage: str | None, code: int | None) -> Run:
    event: dict[str, Any] = {
        "event": "run finished",
        "probe": "soak-00",
        "outcome": outcome,
        "stage": stage,
        "reply_code": code,
        "duration_seconds": end - start,
    }
    return Run(start, end, event)


def delivered(start: float, end: float | None = None) -> Run:
    return run(start, start + 0.1 if end is None else end, "delivered", None, 250)


def refused(start: float, code: int = 451) -> Run:
    return run(start, start + 0.1, "send_failed", "rcpt_to", code)


def report(runs: list[Run], **changes: Any) -> SoakReport:
    values: dict[str, Any] = {
        "plan": PLAN,
        "started": 0.0,
        "ended": 33.0,
        "switches": [SWITCH],
        "runs": runs,
        "samples": [],
        "baseline": Sample(10.0, 50 * 2**20, 2, 10, 1.0),
        "final": Sample(32.0, 51 * 2**20, 2, 10, 2.0),
        "skipped": 0,
        "late_messages": 0.0,
        "queue_left": [],
        "mailbox_left": 0,
        "daemon_exit": 0,
        "miscounted": [],
        "counted": {},
    }
    made = SoakReport(**(values | changes))
    _judge(made, {"tempfail": TEMPFAIL})
    return made


GOOD = [delivered(3.0), refused(12.0), refused(18.0), delivered(25.0)]


def test_a_soak_where_every_run_is_as_expected_passes() -> None:
    verdict = report(GOOD)

    assert verdict.failures() == []
    [window] = verdict.windows
    assert (window.runs, window.seen, window.healed_runs) == (2, {"send_failed@rcpt_to": 2}, 1)
    assert window.last_failure_after_heal is None
    assert verdict.cpu_per_run == 1.0 / 3  # the three runs between baseline and final


def test_runs_straddling_a_switch_are_not_judged_by_outcome() -> None:
    # started before the fault took effect / ended after the heal began / within the grace
    straddling = [refused(10.8), run(20.0, 21.5, "send_failed", "rcpt_to", 451), refused(22.5)]

    verdict = report(GOOD + straddling)

    assert verdict.failures() == []
    assert verdict.windows[0].last_failure_after_heal == 0.5


def test_a_run_reported_at_another_stage_or_reply_class_is_misattributed() -> None:
    for wrong in (refused(15.0, code=550), run(15.0, 15.1, "send_failed", "mail_from", 451)):
        failures = report([*GOOD, wrong]).failures()

        assert len(failures) == 1
        assert failures[0].startswith("tempfail: misattributed: soak-00 send_failed@")


def test_a_window_without_runs_and_a_failure_after_the_heal_fail() -> None:
    failures = report([delivered(3.0), refused(24.0)]).failures()

    assert "tempfail: no run started and ended inside the window" in failures
    assert any(line.startswith("after tempfail: soak-00 send_failed@rcpt_to") for line in failures)
    assert "after tempfail: no run started after the heal's grace" not in failures


def test_deadline_leftovers_leaks_and_miscounts_each_fail() -> None:
    late_run = run(24.0, 27.6, "not_delivered", "delivery", 250)  # 3.6 s > 3 s + 0.5 s slack
    cases: dict[str, SoakReport] = {
        "past deadline": report([*GOOD, late_run]),
        "Postfix queue not empty": report(GOOD, queue_left=[{"queue_id": "X"}]),
        "probe message(s) left": report(GOOD, mailbox_left=1),
        "threads grew": report(GOOD, final=Sample(32.0, 51 * 2**20, 3, 10, 2.0)),
        "file descriptors grew": report(GOOD, final=Sample(32.0, 51 * 2**20, 2, 11, 2.0)),
        "RSS grew": report(GOOD, final=Sample(32.0, 60 * 2**20, 2, 10, 2.0)),
        "metrics:": report(GOOD, miscounted=["outcome:delivered: /metrics 1, log 2..2"]),
        "daemon exit status": report(GOOD, daemon_exit=1),
    }

    for expected, verdict in cases.items():
        assert any(expected in line for line in verdict.failures()), (expected, verdict.failures())
