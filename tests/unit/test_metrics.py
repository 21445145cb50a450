"""The Prometheus metrics contract: series created up front, runs recorded, nothing secret.

Each test builds a fresh :class:`CollectorRegistry` and reads values with
``get_sample_value``; results are plain :class:`RunResult` values, no run
is performed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from smtp_probe import __version__
from smtp_probe.config import parse_config
from smtp_probe.config.runtime import Config
from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import (
    SMTP_STAGES,
    Bounce,
    Outcome,
    ReflectorLegs,
    RunResult,
    Stage,
    TlsFacts,
)
from tests.support import received_samples as samples
from tests.support.results import DURATION, STAGE_SECONDS, STARTED, run_result

FINISHED = STARTED.timestamp() + DURATION
LATER = STARTED + timedelta(minutes=1)

SMTP_HOST = "relay.corp-mail.test"
IMAP_HOST = "imap.corp-mail.test"
SENDER = "sender-box@corp-mail.test"
RECIPIENT = "rcpt-box@corp-mail.test"
SMTP_PASSWORD = "smtp-Pa55word-xyzzy"  # noqa: S105 - a made-up secret to look for
IMAP_PASSWORD = "imap-Pa55word-plugh"  # noqa: S105 - a made-up secret to look for
LEGS = ("outbound", "return")
TIMED_STAGES = (*SMTP_STAGES, Stage.DELIVERY)
"""Stages whose seconds are exported per run: the SMTP stages and delivery."""


def config(*names: str, interval: str = "30s", timeout: str = "20s") -> Config:
    """A config with one SMTP-only probe per name (no network is touched)."""
    probes = "".join(
        f"  - {{name: {name}, smtp: relay, from: {SENDER}, to: {RECIPIENT}, "
        f"interval: {interval}, timeout: {timeout}}}\n"
        for name in names
    )
    return parse_config(
        f"smtp_servers:\n  relay: {{host: {SMTP_HOST}, port: 2525, tls: none}}\nprobes:\n{probes}"
    )


def metrics_for(*names: str) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(config(*names).probes)
    return metrics, registry


def delivered(probe: str, delivery: float = 1.2) -> RunResult:
    return run_result(probe, Outcome.DELIVERED, delivery=delivery)


def rejected_at_rcpt(probe: str, started_at: datetime = LATER) -> RunResult:
    """A run whose RCPT TO got ``550``: send_failed at rcpt_to, no DATA, no delivery."""
    result = run_result(
        probe,
        Outcome.SEND_FAILED,
        stage=Stage.RCPT_TO,
        reply_code=550,
        reply="5.1.1 user unknown",
        started_at=started_at,
        error="550 5.1.1 user unknown",
    )
    assert Stage.DATA not in result.smtp.stage_seconds
    return result


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


# ---------------------------------------------------------------- series created up front


def test_configure_creates_success_runs_and_timestamps_at_zero_before_any_run() -> None:
    _, registry = metrics_for("alpha")

    for name in (
        "smtp_probe_success",
        "smtp_probe_runs_total",
        "smtp_probe_last_run_timestamp_seconds",
        "smtp_probe_last_success_timestamp_seconds",
        "smtp_probe_duration_seconds",
        "smtp_probe_smtp_reply_code",
        "smtp_probe_late_messages_total",
        "smtp_probe_in_flight",
    ):
        assert value(registry, name, probe="alpha") == 0, name


def test_configure_creates_a_failure_counter_for_every_stage() -> None:
    _, registry = metrics_for("alpha")

    for stage in Stage:
        assert value(registry, "smtp_probe_failures_total", probe="alpha", stage=stage) == 0


def test_configure_creates_an_outcome_counter_for_every_outcome() -> None:
    _, registry = metrics_for("alpha")

    for outcome in Outcome:
        assert value(registry, "smtp_probe_outcomes_total", probe="alpha", outcome=outcome) == 0


def test_configure_creates_every_delivery_histogram_bucket_from_50ms_to_30min() -> None:
    _, registry = metrics_for("alpha")

    text = exposition(registry)
    bounds = re.findall(
        r'^smtp_probe_delivery_duration_seconds_bucket\{le="([^"]+)",probe="alpha"\} 0\.0$',
        text,
        re.MULTILINE,
    )
    assert bounds[0] == "0.05"
    assert bounds[-2:] == ["1800.0", "+Inf"]
    assert value(registry, "smtp_probe_delivery_duration_seconds_count", probe="alpha") == 0
    assert value(registry, "smtp_probe_delivery_duration_seconds_sum", probe="alpha") == 0


def test_configure_creates_stage_durations_for_smtp_stages_and_delivery() -> None:
    _, registry = metrics_for("alpha")

    for stage in TIMED_STAGES:
        assert (
            value(registry, "smtp_probe_stage_duration_seconds", probe="alpha", stage=stage) == 0
        ), stage


def test_configure_sets_the_configured_interval_and_timeout() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    metrics.configure(config("alpha", interval="5m", timeout="90s").probes)

    assert value(registry, "smtp_probe_interval_seconds", probe="alpha") == 300
    assert value(registry, "smtp_probe_timeout_seconds", probe="alpha") == 90


def test_configure_again_updates_interval_and_keeps_counts_of_a_kept_probe() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(config("alpha", interval="30s").probes)
    metrics.record(delivered("alpha"))

    metrics.configure(config("alpha", interval="2m").probes)

    assert value(registry, "smtp_probe_interval_seconds", probe="alpha") == 120
    assert value(registry, "smtp_probe_runs_total", probe="alpha") == 1
    assert value(registry, "smtp_probe_success", probe="alpha") == 1


def test_configure_without_a_probe_removes_every_series_of_that_probe() -> None:
    metrics, registry = metrics_for("alpha", "gone")
    metrics.record(delivered("gone"))
    metrics.record(rejected_at_rcpt("gone"))
    metrics.late_message("gone")
    assert 'probe="gone"' in exposition(registry)

    metrics.configure(config("alpha").probes)

    text = exposition(registry)
    assert 'probe="gone"' not in text
    assert 'smtp_probe_success{probe="alpha"} 0.0' in text


def test_result_of_a_probe_removed_while_it_ran_does_not_bring_its_series_back() -> None:
    metrics, registry = metrics_for("alpha", "gone")
    metrics.configure(config("alpha").probes)

    metrics.record(delivered("gone"))
    metrics.late_message("gone")

    assert 'probe="gone"' not in exposition(registry)


# ---------------------------------------------------------------- a delivered run


def test_delivered_run_sets_success_and_counts_one_run_with_its_outcome() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(delivered("alpha"))

    assert value(registry, "smtp_probe_success", probe="alpha") == 1
    assert value(registry, "smtp_probe_runs_total", probe="alpha") == 1
    assert value(registry, "smtp_probe_outcomes_total", probe="alpha", outcome="delivered") == 1
    assert value(registry, "smtp_probe_outcomes_total", probe="alpha", outcome="junk") == 0
    for stage in Stage:
        assert value(registry, "smtp_probe_failures_total", probe="alpha", stage=stage) == 0


@pytest.mark.parametrize("outcome", [Outcome.DELIVERED, Outcome.JUNK])
def test_an_arrived_run_observes_its_delivery_seconds_in_the_histogram(outcome: Outcome) -> None:
    """A junk run is no success, yet its mail arrived: its latency belongs in the distribution."""
    metrics, registry = metrics_for("alpha")

    metrics.record(run_result("alpha", outcome, delivery=1.2))

    assert value(registry, "smtp_probe_delivery_duration_seconds_count", probe="alpha") == 1
    assert value(registry, "smtp_probe_delivery_duration_seconds_sum", probe="alpha") == 1.2
    bucket = "smtp_probe_delivery_duration_seconds_bucket"
    assert value(registry, bucket, probe="alpha", le="1.0") == 0
    assert value(registry, bucket, probe="alpha", le="2.5") == 1


def test_delivered_run_sets_each_stage_duration_and_zero_for_stages_not_reached() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(delivered("alpha", delivery=1.2))

    def stage_seconds(stage: Stage) -> float | None:
        return value(registry, "smtp_probe_stage_duration_seconds", probe="alpha", stage=stage)

    for stage, seconds in STAGE_SECONDS.items():
        assert stage_seconds(stage) == seconds, stage
    assert stage_seconds(Stage.STARTTLS) == 0
    assert stage_seconds(Stage.AUTH) == 0
    assert stage_seconds(Stage.DELIVERY) == 1.2


def test_delivered_run_sets_reply_code_run_duration_and_both_timestamps() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(delivered("alpha"))

    assert value(registry, "smtp_probe_smtp_reply_code", probe="alpha") == 250
    assert value(registry, "smtp_probe_duration_seconds", probe="alpha") == DURATION
    assert value(registry, "smtp_probe_last_run_timestamp_seconds", probe="alpha") == FINISHED
    assert value(registry, "smtp_probe_last_success_timestamp_seconds", probe="alpha") == FINISHED


def test_a_run_is_recorded_only_under_its_own_probe() -> None:
    metrics, registry = metrics_for("alpha", "beta")

    metrics.record(delivered("alpha"))

    assert value(registry, "smtp_probe_runs_total", probe="beta") == 0
    assert value(registry, "smtp_probe_success", probe="beta") == 0


# ---------------------------------------------------------------- a failed run


def test_failed_send_after_a_success_resets_success_to_zero() -> None:
    """The success gauge follows the last run: a send failure must clear an earlier 1."""
    metrics, registry = metrics_for("alpha")
    metrics.record(delivered("alpha"))
    assert value(registry, "smtp_probe_success", probe="alpha") == 1

    metrics.record(rejected_at_rcpt("alpha"))

    assert value(registry, "smtp_probe_success", probe="alpha") == 0


def test_failed_send_counts_a_failure_at_its_stage_only() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(rejected_at_rcpt("alpha"))

    for stage in Stage:
        expected = 1 if stage is Stage.RCPT_TO else 0
        assert (
            value(registry, "smtp_probe_failures_total", probe="alpha", stage=stage) == expected
        ), stage
    assert value(registry, "smtp_probe_outcomes_total", probe="alpha", outcome="send_failed") == 1
    assert value(registry, "smtp_probe_runs_total", probe="alpha") == 1


def test_failed_send_records_the_failing_reply_code() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(delivered("alpha"))

    metrics.record(rejected_at_rcpt("alpha"))

    assert value(registry, "smtp_probe_smtp_reply_code", probe="alpha") == 550


def test_failed_send_does_not_observe_the_delivery_histogram() -> None:
    """Failures must not pollute the latency distribution."""
    metrics, registry = metrics_for("alpha")
    metrics.record(delivered("alpha", delivery=1.2))

    metrics.record(rejected_at_rcpt("alpha"))

    assert value(registry, "smtp_probe_delivery_duration_seconds_count", probe="alpha") == 1
    assert value(registry, "smtp_probe_delivery_duration_seconds_sum", probe="alpha") == 1.2


def test_failed_send_keeps_last_success_timestamp_and_moves_last_run_timestamp() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(delivered("alpha"))

    metrics.record(rejected_at_rcpt("alpha", started_at=LATER))

    assert value(registry, "smtp_probe_last_success_timestamp_seconds", probe="alpha") == FINISHED
    assert (
        value(registry, "smtp_probe_last_run_timestamp_seconds", probe="alpha")
        == LATER.timestamp() + DURATION
    )


def test_failed_send_resets_stage_durations_of_stages_it_did_not_reach() -> None:
    """Stage gauges describe the last run: DATA and delivery go back to 0 after a RCPT failure."""
    metrics, registry = metrics_for("alpha")
    metrics.record(delivered("alpha", delivery=1.2))

    metrics.record(rejected_at_rcpt("alpha"))

    def stage_seconds(stage: Stage) -> float | None:
        return value(registry, "smtp_probe_stage_duration_seconds", probe="alpha", stage=stage)

    assert stage_seconds(Stage.RCPT_TO) == STAGE_SECONDS[Stage.RCPT_TO]
    assert stage_seconds(Stage.DATA) == 0
    assert stage_seconds(Stage.DELIVERY) == 0


# ---------------------------------------------------------------- junk, late mail, reloads


def test_junk_run_is_not_a_success() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(delivered("alpha"))

    metrics.record(run_result("alpha", Outcome.JUNK, delivery=0.3))

    assert value(registry, "smtp_probe_success", probe="alpha") == 0
    assert value(registry, "smtp_probe_outcomes_total", probe="alpha", outcome="junk") == 1


def test_late_message_increments_the_late_counter_of_its_probe() -> None:
    metrics, registry = metrics_for("alpha", "beta")

    metrics.late_message("alpha")
    metrics.late_message("alpha")

    assert value(registry, "smtp_probe_late_messages_total", probe="alpha") == 2
    assert value(registry, "smtp_probe_late_messages_total", probe="beta") == 0


def test_successful_reload_sets_the_gauge_to_one_and_the_timestamp() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.reloaded(ok=True, at=1_700_000_000.0)

    assert value(registry, "smtp_probe_config_last_reload_successful") == 1
    assert (
        value(registry, "smtp_probe_config_last_reload_success_timestamp_seconds")
        == 1_700_000_000.0
    )


def test_failed_reload_sets_the_gauge_to_zero_and_keeps_the_last_success_timestamp() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.reloaded(ok=True, at=1_700_000_000.0)

    metrics.reloaded(ok=False, at=1_700_000_500.0)

    assert value(registry, "smtp_probe_config_last_reload_successful") == 0
    assert (
        value(registry, "smtp_probe_config_last_reload_success_timestamp_seconds")
        == 1_700_000_000.0
    )


def test_build_info_is_one_with_the_package_version_label() -> None:
    _, registry = metrics_for("alpha")

    assert value(registry, "smtp_probe_build_info", version=__version__) == 1


# ---------------------------------------------------------------- the exposition contract

CONTRACT_TYPES: Mapping[str, str] = {
    "smtp_probe_success": "gauge",
    "smtp_probe_runs_total": "counter",
    "smtp_probe_failures_total": "counter",
    "smtp_probe_outcomes_total": "counter",
    "smtp_probe_delivery_duration_seconds": "histogram",
    "smtp_probe_duration_seconds": "gauge",
    "smtp_probe_stage_duration_seconds": "gauge",
    "smtp_probe_smtp_reply_code": "gauge",
    "smtp_probe_last_run_timestamp_seconds": "gauge",
    "smtp_probe_last_success_timestamp_seconds": "gauge",
    "smtp_probe_interval_seconds": "gauge",
    "smtp_probe_timeout_seconds": "gauge",
    "smtp_probe_late_messages_total": "counter",
    "smtp_probe_foreign_leftovers_total": "counter",  # issue 11, README's table
    "smtp_probe_in_flight": "gauge",
    "smtp_probe_reflector_leg_seconds": "gauge",  # issue 8, listed in the README's table
    "smtp_probe_tls_cert_expiry_timestamp_seconds": "gauge",  # issue 9, README's table
    "smtp_probe_tls_info": "gauge",  # issue 9, README's table
    "smtp_probe_hops": "gauge",  # issue 9, README's table
    "smtp_probe_hop_delay_seconds": "gauge",  # issue 9, README's table
    "smtp_probe_hop_info": "gauge",  # issue 9, README's table
    "smtp_probe_auth_result": "gauge",  # issue 9, README's table
    "smtp_probe_spam_score": "gauge",  # issue 9, README's table
    "smtp_probe_spam_threshold": "gauge",  # issue 9, README's table
    "smtp_probe_bounces_total": "counter",  # issue 9, README's table
    "smtp_probe_last_bounce_status_info": "gauge",  # issue 9, README's table
    "smtp_probe_policy_violation": "gauge",  # issue 10, README's table
    "smtp_probe_smuggling_accepted": "gauge",  # issue 10, README's table
    "smtp_probe_dns_check_success": "gauge",  # issue 10, README's table
    "smtp_probe_dns_check_timestamp_seconds": "gauge",  # issue 10, README's table
    "smtp_probe_dnsbl_listed": "gauge",  # issue 10, README's table
    "smtp_probe_dmarc_policy_info": "gauge",  # issue 10, README's table
    "smtp_probe_mta_sts_mode_info": "gauge",  # issue 10, README's table
    "smtp_probe_runs_waiting": "gauge",  # issue 11, README's table
    "smtp_probe_slot_waits_total": "counter",  # issue 11, README's table
    "smtp_probe_config_last_reload_successful": "gauge",
    "smtp_probe_config_last_reload_success_timestamp_seconds": "gauge",
    "smtp_probe_build_info": "gauge",
    "smtp_probe_oauth_token_requests_total": "counter",
    "smtp_probe_oauth_token_expiry_timestamp_seconds": "gauge",
    "smtp_probe_oauth_token_request_duration_seconds": "histogram",
}
"""DESIGN.md's metrics table (and the README's, for metrics added by later issues):
every name with its Prometheus type."""

PER_RUN_GAUGES = (
    "smtp_probe_success",
    "smtp_probe_duration_seconds",
    "smtp_probe_stage_duration_seconds",
    "smtp_probe_smtp_reply_code",
    "smtp_probe_last_run_timestamp_seconds",
)


def test_every_contract_metric_is_exposed_with_its_type() -> None:
    _, registry = metrics_for("alpha")

    text = exposition(registry)

    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    for name, kind in CONTRACT_TYPES.items():
        assert types.get(name) == kind, name


def test_every_exposed_metric_is_in_the_contract() -> None:
    """No metric sneaks in outside the contract tables (new ones need a table entry first).

    prometheus_client's own ``*_created`` companions of counters and
    histograms are not ours and are left out.
    """
    _, registry = metrics_for("alpha")

    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition(registry), re.MULTILINE))

    assert {name for name in types if not name.endswith("_created")} == set(CONTRACT_TYPES)


def test_the_readme_metrics_table_lists_exactly_the_contract_metrics() -> None:
    """The README's table is where users look; it names every metric, and no other."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `smtp_probe_")]
    listed = {name for row in rows for name in re.findall(r"`(smtp_probe_\w+)", row.split("|")[1])}

    assert listed == set(CONTRACT_TYPES)


def test_help_of_per_run_gauges_says_values_come_from_the_last_scheduled_run() -> None:
    _, registry = metrics_for("alpha")

    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", exposition(registry), re.MULTILINE))

    for name in PER_RUN_GAUGES:
        assert "last scheduled run" in helps[name], name


def secret_heavy_config() -> Config:
    """A config whose servers have hosts, addresses, user names and passwords."""
    return parse_config(
        "smtp_servers:\n"
        f"  relay: {{host: {SMTP_HOST}, port: 587, tls: none, username: {SENDER},\n"
        f"          password: {SMTP_PASSWORD}}}\n"
        "mailboxes:\n"
        f"  inbox: {{host: {IMAP_HOST}, port: 993, tls: tls, username: {RECIPIENT},\n"
        f"          password: {IMAP_PASSWORD}}}\n"
        "probes:\n"
        f"  - {{name: route-a, smtp: relay, mailbox: inbox, from: {SENDER}, to: {RECIPIENT}}}\n"
        f"  - {{name: route-b, smtp: relay, from: {SENDER}, to: {RECIPIENT}}}\n"
    )


def test_exposition_never_contains_a_host_address_user_or_password() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(secret_heavy_config().probes)
    metrics.record(delivered("route-a"))
    metrics.record(
        run_result(
            "route-b",
            Outcome.SEND_FAILED,
            stage=Stage.CONNECT,
            reply_code=None,
            error=f"cannot connect to {SMTP_HOST}:587 as {SENDER}",
        )
    )

    text = exposition(registry)

    for forbidden in (SMTP_HOST, IMAP_HOST, SENDER, RECIPIENT, SMTP_PASSWORD, IMAP_PASSWORD):
        assert forbidden not in text, forbidden
    assert "corp-mail" not in text


def test_label_values_are_only_probe_names_stages_outcomes_bucket_bounds_or_the_version() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(secret_heavy_config().probes)
    metrics.record(delivered("route-a"))
    metrics.record(rejected_at_rcpt("route-b"))

    text = exposition(registry)

    allowed = {
        "probe": {"route-a", "route-b"},
        "stage": {stage.value for stage in Stage},
        "outcome": {outcome.value for outcome in Outcome},
        "version": {__version__},
        "leg": {"outbound", "return"},
        "action": {"failed", "delayed"},
        "status_class": {"4", "5"},
        "limit": {"run", "connection"},
    }
    pairs = re.findall(r'(\w+)="([^"]*)"', "\n".join(re.findall(r"\{([^}]*)\}", text)))
    assert pairs
    for label, label_value in pairs:
        if label == "le":
            assert label_value == "+Inf" or float(label_value) > 0
        else:
            assert label_value in allowed[label], (label, label_value)


# ---------------------------------------------------------------- reflector legs


LEG = "smtp_probe_reflector_leg_seconds"


def with_reflector(metrics: Metrics, base: Config, *names: str) -> None:
    """Configure ``base``'s probes, those named here turned into reflector probes."""
    metrics.configure(
        replace(p, spec=replace(p.spec, reflector=p.name in names)) for p in base.probes
    )


def test_reflector_probes_have_both_legs_from_the_start_and_other_probes_none() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with_reflector(metrics, config("echo", "plain"), "echo")

    for leg in ("outbound", "return"):
        assert registry.get_sample_value(LEG, {"probe": "echo", "leg": leg}) == 0.0
        assert registry.get_sample_value(LEG, {"probe": "plain", "leg": leg}) is None


def test_a_reflector_run_sets_its_legs_and_a_run_without_them_resets_them() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with_reflector(metrics, config("echo"), "echo")
    legs = ReflectorLegs(outbound_seconds=3.0, return_seconds=0.75, source="Date")

    metrics.record(run_result("echo", delivery=3.75, reflector=legs))
    measured = [registry.get_sample_value(LEG, {"probe": "echo", "leg": leg}) for leg in LEGS]
    metrics.record(run_result("echo", Outcome.NOT_DELIVERED, stage=Stage.DELIVERY))
    after_failure = [registry.get_sample_value(LEG, {"probe": "echo", "leg": leg}) for leg in LEGS]

    assert measured == [3.0, 0.75]
    assert after_failure == [0.0, 0.0]


def test_a_probe_that_stops_being_a_reflector_loses_its_leg_series() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    base = config("echo")
    with_reflector(metrics, base, "echo")
    with_reflector(metrics, base)

    assert registry.get_sample_value(LEG, {"probe": "echo", "leg": "outbound"}) is None
    assert f"{LEG}{{" not in exposition(registry)


# ---------------------------------------------------------------- reads for the status page


def test_last_success_is_none_before_a_successful_run() -> None:
    metrics, _ = metrics_for("alpha")

    metrics.record(rejected_at_rcpt("alpha"))

    assert metrics.last_success("alpha") is None


def test_last_success_is_when_the_last_successful_run_finished_and_survives_a_failure() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(delivered("alpha"))

    metrics.record(rejected_at_rcpt("alpha"))

    assert metrics.last_success("alpha") == FINISHED
    assert metrics.last_success("alpha") == value(
        registry, "smtp_probe_last_success_timestamp_seconds", probe="alpha"
    )


def test_runs_in_flight_follows_started_and_ended_runs_of_that_probe() -> None:
    metrics, registry = metrics_for("alpha", "beta")

    metrics.run_started("alpha")
    metrics.run_started("alpha")
    metrics.run_ended("alpha")

    assert metrics.runs_in_flight("alpha") == 1
    assert metrics.runs_in_flight("beta") == 0
    assert value(registry, "smtp_probe_in_flight", probe="alpha") == 1


def test_reads_of_an_unknown_probe_are_empty() -> None:
    metrics, _ = metrics_for("alpha")

    assert metrics.last_success("nope") is None
    assert metrics.runs_in_flight("nope") == 0


TLS_EXPIRY = "smtp_probe_tls_cert_expiry_timestamp_seconds"
TLS_INFO = "smtp_probe_tls_info"


def with_tls(result: RunResult, smtp: TlsFacts | None, imap: TlsFacts | None) -> RunResult:
    """``result`` with the TLS facts of its SMTP leg and (when it arrived) its IMAP leg."""
    arrival = replace(result.arrival, tls=imap) if result.arrival is not None else None
    return replace(result, smtp=replace(result.smtp, tls=smtp), arrival=arrival)


def facts(version: str, cipher: str, not_after: float | None) -> TlsFacts:
    return TlsFacts(version, cipher, "CN=mx", "CN=CA", not_after=not_after, verified=True)


def test_tls_series_appear_per_leg_once_a_run_had_tls_there() -> None:
    metrics, registry = metrics_for("alpha")
    before = value(registry, TLS_EXPIRY, probe="alpha", leg="smtp")

    metrics.record(
        with_tls(
            delivered("alpha"),
            facts("TLSv1.3", "TLS_AES_256_GCM_SHA384", 1_900_000_000.0),
            facts("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", 1_800_000_000.0),
        )
    )

    assert before is None
    assert value(registry, TLS_EXPIRY, probe="alpha", leg="smtp") == 1_900_000_000.0
    assert value(registry, TLS_EXPIRY, probe="alpha", leg="imap") == 1_800_000_000.0
    smtp_info = {"probe": "alpha", "leg": "smtp", "version": "TLSv1.3"}
    assert value(registry, TLS_INFO, cipher="TLS_AES_256_GCM_SHA384", **smtp_info) == 1.0
    text = metrics.render().decode()
    assert (
        f'{TLS_INFO}{{cipher="ECDHE-RSA-AES128-GCM-SHA256",leg="imap",probe="alpha",'
        'version="TLSv1.2"} 1.0\n'
    ) in text
    assert f'{TLS_EXPIRY}{{leg="smtp",probe="alpha"}} 1.9e+09\n' in text


def test_tls_info_keeps_only_the_current_label_set_and_a_run_without_tls_keeps_the_last() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(with_tls(delivered("alpha"), facts("TLSv1.2", "OLD-CIPHER", 1e9), None))
    metrics.record(with_tls(delivered("alpha"), facts("TLSv1.3", "NEW-CIPHER", 2e9), None))
    metrics.record(rejected_at_rcpt("alpha"))  # no TLS facts at all

    text = metrics.render().decode()
    assert "OLD-CIPHER" not in text
    assert "NEW-CIPHER" in text
    assert value(registry, TLS_EXPIRY, probe="alpha", leg="smtp") == 2e9
    assert value(registry, TLS_EXPIRY, probe="alpha", leg="imap") is None


def test_an_unreadable_certificate_exports_expiry_zero_and_unknown_labels() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(with_tls(delivered("alpha"), TlsFacts(None, None, "", "", None, False), None))

    assert value(registry, TLS_EXPIRY, probe="alpha", leg="smtp") == 0.0
    labels = {"probe": "alpha", "leg": "smtp", "version": "unknown", "cipher": "unknown"}
    assert value(registry, TLS_INFO, **labels) == 1.0


HOPS = "smtp_probe_hops"
HOP_DELAY = "smtp_probe_hop_delay_seconds"
HOP_INFO = "smtp_probe_hop_info"


def hop_series(metrics: Metrics, family: str) -> list[str]:
    """The sample lines of ``family`` in the exposition, in order."""
    return [
        line for line in metrics.render().decode().splitlines() if line.startswith(family + "{")
    ]


def chain(count: int, *, skew_at: int | None = None) -> tuple[str, ...]:
    """``count`` Received lines (newest first), hop ``i`` at ``i * 2`` seconds past 02:50:00.

    ``skew_at``: that hop's clock is ten minutes behind.
    """
    lines = []
    for index in range(count):
        second = index * 2
        minute = 40 if index == skew_at else 50
        lines.append(
            f"from h{index - 1}.example by h{index}.example with ESMTP id {index}; "
            f"Mon, 7 Dec 2026 02:{minute}:{second:02d} +0000"
        )
    return tuple(reversed(lines))


def test_hops_is_zero_before_the_first_run_with_no_hop_series() -> None:
    metrics, registry = metrics_for("alpha")

    assert value(registry, HOPS, probe="alpha") == 0.0
    assert hop_series(metrics, HOP_DELAY) == []
    assert hop_series(metrics, HOP_INFO) == []


def test_a_delivered_run_exports_its_hop_count_delays_and_hosts() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(run_result("alpha", received=samples.POSTFIX_RELAY_CHAIN))

    assert value(registry, HOPS, probe="alpha") == 4.0
    assert value(registry, HOP_DELAY, probe="alpha", hop="0") is None  # nothing before it
    assert [value(registry, HOP_DELAY, probe="alpha", hop=h) for h in "123"] == [1.0, 30.0, 2.0]
    assert hop_series(metrics, HOP_INFO) == [
        f'{HOP_INFO}{{by="submit.example.org",hop="0",probe="alpha",with="ESMTPSA"}} 1.0',
        f'{HOP_INFO}{{by="relay.example.org",hop="1",probe="alpha",with="ESMTP"}} 1.0',
        f'{HOP_INFO}{{by="mx.example.net",hop="2",probe="alpha",with="ESMTPS"}} 1.0',
        f'{HOP_INFO}{{by="mx.example.net",hop="3",probe="alpha",with="LMTPS"}} 1.0',
    ]


def test_a_skewed_hop_has_info_but_no_delay_series() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(run_result("alpha", received=samples.SKEWED))

    assert value(registry, HOP_DELAY, probe="alpha", hop="1") is None
    assert value(registry, HOP_DELAY, probe="alpha", hop="2") == 210.0
    labels = {"probe": "alpha", "hop": "1", "by": "relay.example.org", "with": "ESMTPS"}
    assert value(registry, HOP_INFO, **labels) == 1.0
    assert all(float(line.rsplit(" ", 1)[1]) >= 0 for line in hop_series(metrics, HOP_DELAY))


def test_each_run_replaces_the_hops_of_the_last_so_stale_hops_vanish() -> None:
    metrics, registry = metrics_for("alpha", "beta")
    metrics.record(run_result("beta", received=samples.GMAIL))
    metrics.record(run_result("alpha", received=samples.POSTFIX_RELAY_CHAIN))

    metrics.record(run_result("alpha", received=samples.POSTFIX_DOVECOT))

    assert value(registry, HOPS, probe="alpha") == 2.0
    alpha = [line for line in hop_series(metrics, HOP_INFO) if 'probe="alpha"' in line]
    assert len(alpha) == 2
    assert "relay.example.org" not in "".join(alpha)
    assert value(registry, HOP_DELAY, probe="alpha", hop="3") is None
    assert value(registry, HOPS, probe="beta") == 3.0  # another probe's hops stay


def test_a_run_that_did_not_see_the_message_has_zero_hops() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(run_result("alpha", received=samples.POSTFIX_RELAY_CHAIN))

    metrics.record(rejected_at_rcpt("alpha"))

    assert value(registry, HOPS, probe="alpha") == 0.0
    assert hop_series(metrics, HOP_DELAY) == []
    assert hop_series(metrics, HOP_INFO) == []


def test_hops_beyond_ten_are_folded_into_hop_nine() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(run_result("alpha", received=chain(14)))

    assert value(registry, HOPS, probe="alpha") == 14.0
    hops = {line.split('hop="')[1].split('"')[0] for line in hop_series(metrics, HOP_INFO)}
    assert hops == {str(i) for i in range(10)}
    assert value(registry, HOP_DELAY, probe="alpha", hop="8") == 2.0
    assert value(registry, HOP_DELAY, probe="alpha", hop="9") == 10.0  # hops 9..13, 2 s each
    last = {"probe": "alpha", "hop": "9", "by": "h13.example", "with": "ESMTP"}
    assert value(registry, HOP_INFO, **last) == 1.0


def test_a_skewed_hop_among_the_folded_ones_leaves_hop_nine_without_a_delay() -> None:
    metrics, registry = metrics_for("alpha")

    metrics.record(run_result("alpha", received=chain(12, skew_at=10)))

    assert value(registry, HOP_DELAY, probe="alpha", hop="8") == 2.0
    assert value(registry, HOP_DELAY, probe="alpha", hop="9") is None


def test_a_reload_that_drops_a_probe_removes_its_hop_series() -> None:
    metrics, registry = metrics_for("alpha", "beta")
    metrics.record(run_result("alpha", received=samples.POSTFIX_DOVECOT))
    metrics.record(run_result("beta", received=samples.EXIM))

    metrics.configure(config("beta").probes)

    text = metrics.render().decode() + exposition(registry)
    assert 'probe="alpha"' not in text
    assert value(registry, HOPS, probe="beta") == 2.0
    assert value(registry, HOP_DELAY, probe="beta", hop="1") == 1.0


# ---------------------------------------------------------------- bounces


def bounced(probe: str, *bounces: Bounce) -> RunResult:
    result = run_result(probe, Outcome.BOUNCED, stage=Stage.DELIVERY, error="bounced: 5.1.1")
    return replace(result, bounces=bounces)


FAILED_511 = Bounce(
    "failed", "5.1.1", "x@example.test", "mx.example.test", "smtp; 550 5.1.1 <x@example.test>"
)
DELAYED_441 = Bounce("delayed", "4.4.1", "x@example.test")


def test_bounce_counters_exist_for_failed_and_delayed_by_class_before_any_run() -> None:
    _, registry = metrics_for("route-a")

    for action in ("failed", "delayed"):
        for status_class in ("4", "5"):
            labels = {"probe": "route-a", "action": action, "status_class": status_class}
            assert value(registry, "smtp_probe_bounces_total", **labels) == 0.0
    assert "smtp_probe_last_bounce_status_info{" not in exposition(registry)


def test_a_bounced_run_counts_its_reports_and_shows_the_last_status() -> None:
    metrics, registry = metrics_for("route-a")
    metrics.record(bounced("route-a", DELAYED_441, FAILED_511))

    labels = {"probe": "route-a", "action": "failed", "status_class": "5"}
    assert value(registry, "smtp_probe_bounces_total", **labels) == 1.0
    labels = {"probe": "route-a", "action": "delayed", "status_class": "4"}
    assert value(registry, "smtp_probe_bounces_total", **labels) == 1.0
    assert value(registry, "smtp_probe_last_bounce_status_info", probe="route-a", status="5.1.1")
    assert value(registry, "smtp_probe_outcomes_total", probe="route-a", outcome="bounced") == 1.0
    assert value(registry, "smtp_probe_success", probe="route-a") == 0.0
    text = metrics.render().decode()
    assert 'smtp_probe_last_bounce_status_info{probe="route-a",status="5.1.1"} 1.0' in text
    assert "550" not in text, "server text (the diagnostic) must never reach a label"
    assert "mx.example.test" not in text


def test_a_late_report_is_counted_and_replaces_the_last_status() -> None:
    metrics, registry = metrics_for("route-a")
    metrics.record(bounced("route-a", FAILED_511))
    metrics.late_bounce("route-a", DELAYED_441)
    metrics.late_bounce("gone", FAILED_511)  # a probe no longer configured: ignored

    labels = {"probe": "route-a", "action": "delayed", "status_class": "4"}
    assert value(registry, "smtp_probe_bounces_total", **labels) == 1.0
    assert value(registry, "smtp_probe_last_bounce_status_info", probe="route-a", status="4.4.1")
    text = metrics.render().decode()
    assert 'status="5.1.1"' not in text
    assert 'smtp_probe_last_bounce_status_info{probe="route-a",status="4.4.1"} 1.0' in text
