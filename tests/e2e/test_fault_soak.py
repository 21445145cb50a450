"""The fault soak, short: a real daemon against real Postfix + Dovecot while every fault comes and goes.

The long version is ``bench/bench_soak.py`` (minutes, thousands of runs,
figures in the README); this one switches each fault of
:mod:`tests.support.faults` on once for a few seconds, with short heal gaps
between, and asserts the same checks (:mod:`tests.support.soak`): runs inside
a window report the fault's outcome and stage (and ``/metrics`` counts them
so), runs after a heal are
delivered, no run outlives its deadline, nothing is left in the queue or the
mailbox (and the user's own mail is untouched), and the daemon ends with no
more threads or file descriptors than it had before the first fault.

It runs on a private stack: the faults change Postfix's restrictions and
stop and start both servers, which the session's shared stack must not see.
Costs ~75 s of wall time, most of it the seven fault windows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mailstack import MailStack
from tests.support.routes import bystanders, plant_bystanders
from tests.support.soak import FAULT_NAMES, SoakPlan, SoakReport, run_soak

PLAN = SoakPlan(
    window=4.5,
    gap=3.0,
    probes=6,
    interval=2.5,
    jitter=0.1,
    timeout=2.5,
    slow_seconds=1.0,
    settle=0.5,
    heal_grace=1.5,
)
"""Each fault once: ~3 runs inside each window (one per probe for the 2.5 s deferred runs)."""


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[SoakReport, int]:
    """One short soak on a private stack; its report and how many bystanders survived it."""
    with MailStack() as stack:
        planted = plant_bystanders(stack)
        report = run_soak(stack, Path(tmp_path_factory.mktemp("soak")), PLAN, say=lambda _: None)
        return report, planted - len(bystanders(stack))


@pytest.mark.timeout(180)
def test_every_fault_window_is_reported_at_its_stage_and_outcome(
    soak: tuple[SoakReport, int],
) -> None:
    report, _ = soak

    assert [window.switch.fault for window in report.windows] == list(FAULT_NAMES)
    for window in report.windows:
        assert window.runs >= 1, f"{window.switch.fault}: no run inside the window"
        assert window.misattributed == [], window.switch.fault
    # reported exactly as the faults' table says (the labels are the contract's values)
    seen = {window.switch.fault: set(window.seen) for window in report.windows}
    assert seen == {
        "deferred_delivery": {"not_delivered@delivery"},
        "slow_delivery": {"delivered"},
        "rejected_recipient": {"send_failed@rcpt_to"},
        "tempfail": {"send_failed@rcpt_to"},
        "wrong_password": {"send_failed@auth"},
        "imap_down": {"error@imap_connect"},
        "smtp_down": {"send_failed@connect"},
    }
    # and /metrics counted every run under the outcome and stage the log gave it
    assert report.miscounted == []
    assert report.counted["outcome:send_failed"] >= sum(
        window.runs for window in report.windows[2:5] + report.windows[6:]
    )
    assert report.counted["stage:imap_connect"] >= report.windows[5].runs


@pytest.mark.timeout(180)
def test_runs_started_after_each_heal_are_delivered(soak: tuple[SoakReport, int]) -> None:
    report, _ = soak

    assert report.warmup_runs >= 1
    assert report.warmup_not_delivered == []
    for window in report.windows:
        assert window.healed_runs >= 1, f"after {window.switch.fault}: no run after the heal"
        assert window.not_delivered_after_heal == [], window.switch.fault


@pytest.mark.timeout(180)
def test_no_run_past_its_deadline_and_nothing_left_behind(soak: tuple[SoakReport, int]) -> None:
    report, bystanders_lost = soak

    assert report.past_deadline == []
    assert max(run.duration for run in report.runs) <= PLAN.timeout + PLAN.slack
    assert report.queue_left == []
    assert report.mailbox_left == 0
    assert bystanders_lost == 0
    # the deferred window's messages arrived after their runs gave up: deleted as late
    assert report.late_messages >= report.windows[0].runs
    assert report.daemon_exit == 0


@pytest.mark.timeout(180)
def test_threads_and_descriptors_do_not_grow_under_faults(soak: tuple[SoakReport, int]) -> None:
    report, _ = soak

    assert report.final.threads <= report.baseline.threads
    assert report.final.fds <= report.baseline.fds
    assert report.final.rss - report.baseline.rss <= PLAN.rss_growth_limit
    assert report.failures() == []
