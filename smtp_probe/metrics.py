"""Every Prometheus metric of smtp_probe, on an injected registry (a public contract).

Values describe the *last scheduled run* of each probe; ``/probe`` runs on
demand never touch them. Every probe's series are created when the probe is
added, so a restart or a probe that never succeeds cannot hide behind
``absent()``, and removed when a reload drops the probe. Labels carry only
the configured probe name, a stage or an outcome: never host names,
addresses, error text or tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from smtp_probe import __version__
from smtp_probe.config import ScheduledProbe
from smtp_probe.probe.result import SMTP_STAGES, Outcome, RunResult, Stage

DELIVERY_BUCKETS: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
"""Delivery-time histogram buckets, 50 ms to 30 min: a local hop to a slow queue."""
TIMED_STAGES: Final = (*SMTP_STAGES, Stage.DELIVERY)
_LAST: Final = " (from the last scheduled run)"

# The *_created series prometheus_client adds to every counter and histogram
# are not part of the contract, and would add ~24 series per probe.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The exporter's metrics and how a run result updates them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.success = Gauge(
            "smtp_probe_success",
            "1 if the message arrived where it should (or was accepted, for SMTP-only "
            "probes), else 0" + _LAST,
            ["probe"], registry=r,
        )  # fmt: skip
        self.runs = Counter("smtp_probe_runs", "Scheduled runs finished", ["probe"], registry=r)
        self.failures = Counter(
            "smtp_probe_failures",
            "Scheduled runs that failed, by the stage they stopped at",
            ["probe", "stage"], registry=r,
        )  # fmt: skip
        self.outcomes = Counter(
            "smtp_probe_outcomes",
            "Scheduled runs by outcome (delivered, junk, sent, send_failed, not_delivered, "
            "bounced, error)",
            ["probe", "outcome"], registry=r,
        )  # fmt: skip
        self.delivery = Histogram(
            "smtp_probe_delivery_duration_seconds",
            "Seconds from the 250 that accepted DATA to the message seen in the mailbox, "
            "for delivered scheduled runs (junk included)",
            ["probe"], buckets=DELIVERY_BUCKETS, registry=r,
        )  # fmt: skip
        self.duration = Gauge(
            "smtp_probe_duration_seconds", "Seconds the whole run took" + _LAST, ["probe"],
            registry=r,
        )  # fmt: skip
        self.stage_duration = Gauge(
            "smtp_probe_stage_duration_seconds",
            "Seconds spent in each stage, 0 for stages not reached" + _LAST,
            ["probe", "stage"], registry=r,
        )  # fmt: skip
        self.reply_code = Gauge(
            "smtp_probe_smtp_reply_code",
            "The last final or failing SMTP reply code, 0 if none was received" + _LAST,
            ["probe"], registry=r,
        )  # fmt: skip
        self.last_run = Gauge(
            "smtp_probe_last_run_timestamp_seconds",
            "Unix time the last scheduled run finished, 0 before the first", ["probe"],
            registry=r,
        )  # fmt: skip
        self.last_success = Gauge(
            "smtp_probe_last_success_timestamp_seconds",
            "Unix time of the last successful scheduled run, 0 if none since start-up",
            ["probe"], registry=r,
        )  # fmt: skip
        self.interval = Gauge(
            "smtp_probe_interval_seconds", "Configured interval between runs", ["probe"],
            registry=r,
        )  # fmt: skip
        self.timeout = Gauge(
            "smtp_probe_timeout_seconds", "Configured deadline of one run", ["probe"],
            registry=r,
        )  # fmt: skip
        self.late = Counter(
            "smtp_probe_late_messages",
            "Probe messages that arrived after their run had given up (or were left from "
            "earlier runs), and were cleaned up",
            ["probe"], registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "smtp_probe_in_flight", "Runs of this probe in progress now", ["probe"],
            registry=r,
        )  # fmt: skip
        self.reload_ok = Gauge(
            "smtp_probe_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded", registry=r,
        )  # fmt: skip
        self.reload_time = Gauge(
            "smtp_probe_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load", registry=r,
        )  # fmt: skip
        build = Gauge(
            "smtp_probe_build_info", "Always 1; the version label says which build runs",
            ["version"], registry=r,
        )  # fmt: skip
        build.labels(__version__).set(1)
        self._probes: set[str] = set()

    def configure(self, probes: Iterable[ScheduledProbe]) -> None:
        """Create the series of new probes, update configured values, drop removed probes."""
        wanted = {p.spec.name: p for p in probes}
        for name in self._probes - wanted.keys():
            self._remove(name)
        for name, probe in wanted.items():
            if name not in self._probes:
                self._create(name)
            self.interval.labels(name).set(probe.interval)
            self.timeout.labels(name).set(probe.spec.timeout)
        self._probes = set(wanted)

    def record(self, result: RunResult) -> None:
        """Account for one finished scheduled run of a configured probe."""
        name = result.probe
        if name not in self._probes:
            return  # removed by a reload while it ran: its series are gone
        finished = result.started_at.timestamp() + result.duration_seconds
        self.runs.labels(name).inc()
        self.outcomes.labels(name, result.outcome.value).inc()
        if result.stage is not None:
            self.failures.labels(name, result.stage.value).inc()
        self.success.labels(name).set(1 if result.success else 0)
        if result.success:
            self.last_success.labels(name).set(finished)
        self.last_run.labels(name).set(finished)
        self.duration.labels(name).set(result.duration_seconds)
        self.reply_code.labels(name).set(result.smtp.reply_code or 0)
        timings = result.smtp.stage_seconds
        for stage in SMTP_STAGES:
            self.stage_duration.labels(name, stage.value).set(timings.get(stage, 0.0))
        self.stage_duration.labels(name, Stage.DELIVERY.value).set(result.delivery_seconds or 0.0)
        if result.delivery_seconds is not None and result.outcome in (
            Outcome.DELIVERED,
            Outcome.JUNK,
        ):
            self.delivery.labels(name).observe(result.delivery_seconds)

    def late_message(self, probe: str) -> None:
        """Count a message that arrived after its run gave up."""
        if probe in self._probes:
            self.late.labels(probe).inc()

    def reloaded(self, *, ok: bool, at: float) -> None:
        """Record the result of a configuration (re)load."""
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(at)

    def _create(self, name: str) -> None:
        for gauge in (self.success, self.duration, self.reply_code, self.last_run,
                      self.last_success, self.in_flight):  # fmt: skip
            gauge.labels(name).set(0)
        self.runs.labels(name)
        self.late.labels(name)
        self.delivery.labels(name)
        for stage in Stage:
            self.failures.labels(name, stage.value)
        for outcome in Outcome:
            self.outcomes.labels(name, outcome.value)
        for stage in TIMED_STAGES:
            self.stage_duration.labels(name, stage.value).set(0)

    def _remove(self, name: str) -> None:
        for metric in (self.success, self.runs, self.delivery, self.duration, self.reply_code,
                       self.last_run, self.last_success, self.interval, self.timeout,
                       self.late, self.in_flight):  # fmt: skip
            _forget(metric, name)
        for stage in Stage:
            _forget(self.failures, name, stage.value)
        for outcome in Outcome:
            _forget(self.outcomes, name, outcome.value)
        for stage in TIMED_STAGES:
            _forget(self.stage_duration, name, stage.value)


def _forget(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
