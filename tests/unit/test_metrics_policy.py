"""Policy and DNS check metrics: pre-created at 0, set by runs and DNS reports, dropped on reload."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from smtp_probe.config.runtime import ScheduledProbe
from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import (
    DnsCheckResult,
    DnsReport,
    Outcome,
    RunResult,
    SmugglingVerdict,
    Stage,
)
from smtp_probe.probe.smuggling import VARIANTS
from smtp_probe.probe.spec import (
    EXPECT,
    DnsCheck,
    DnsChecks,
    Expectation,
    PolicyCheck,
    ProbeSpec,
)
from smtp_probe.probe.transcript import Transcript
from tests.support.results import STARTED, run_result
from tests.unit.test_metrics import config, exposition, value

VIOLATION = "smtp_probe_policy_violation"
SMUGGLED = "smtp_probe_smuggling_accepted"
DNS_OK = "smtp_probe_dns_check_success"
DNS_AT = "smtp_probe_dns_check_timestamp_seconds"
LISTED = "smtp_probe_dnsbl_listed"
DMARC = "smtp_probe_dmarc_policy_info"
MTA_STS = "smtp_probe_mta_sts_mode_info"
NEW = (VIOLATION, SMUGGLED, DNS_OK, DNS_AT, LISTED, DMARC, MTA_STS)
ZONES = ("zen.example.test", "bl.example.test.")
"""As configured: the second with a trailing dot, which the dnsbl check's verdicts drop."""
RELAY = Expectation((Stage.MAIL_FROM, Stage.RCPT_TO, Stage.DATA))


def dns_checks(*checks: DnsCheck, zones: tuple[str, ...] = ZONES) -> DnsChecks:
    return DnsChecks(
        checks=checks,
        recipient_domain="example.test",
        sender_domain="example.test",
        dnsbl_zones=zones,
    )


Changes = Mapping[str, Mapping[str, Any]]
"""Probe name -> ProbeSpec fields to change."""


def probes(changes: Changes | None = None) -> list[ScheduledProbe]:
    """Probes ``relay``, ``smuggling``, ``dns`` and ``plain``, each spec changed as given."""
    base = config("relay", "smuggling", "dns", "plain").probes
    changes = changes or {}
    out = []
    for probe in base:
        spec: ProbeSpec = replace(probe.spec, **changes.get(probe.name, {}))
        out.append(replace(probe, spec=spec))
    return out


DEFAULT: Changes = {
    "relay": {"check": PolicyCheck.OPEN_RELAY, "expect": RELAY},
    "smuggling": {
        "check": PolicyCheck.SMTP_SMUGGLING,
        "expect": Expectation((Stage.DATA,)),
        "smuggling_variants": ("lf_dot_crlf", "lf_dot_lf"),
    },
    "dns": {
        "dns_checks": dns_checks(
            DnsCheck.MX, DnsCheck.DMARC, DnsCheck.MTA_STS, DnsCheck.DNSBL, DnsCheck.FCRDNS
        )
    },
}


def configured(changes: Changes = DEFAULT) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(probes(changes))
    return metrics, registry


def series(registry: CollectorRegistry, *names: str) -> set[str]:
    """The sample lines (without values) of ``names``."""
    text = exposition(registry)
    return {
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line.split("{", 1)[0] in names and not line.startswith("#")
    }


def policy_run(probe: str, outcome: Outcome, **fields: object) -> RunResult:
    stage = Stage.RCPT_TO if outcome is Outcome.ACCEPTED_UNEXPECTEDLY else None
    check = {"relay": "open_relay", "smuggling": "smtp_smuggling"}.get(probe, EXPECT)
    result = run_result(probe, outcome, stage=stage)
    return replace(result, policy_check=check, **fields)  # type: ignore[arg-type]


def dns_report(*results: DnsCheckResult, probe: str = "dns", minutes: int = 0) -> DnsReport:
    return DnsReport(
        probe=probe,
        started_at=STARTED + timedelta(minutes=minutes),
        duration_seconds=0.5,
        results=results,
        transcript=Transcript(clock=lambda: 0.0),
    )


def ok(check: DnsCheck, **fields: object) -> DnsCheckResult:
    return DnsCheckResult(str(check), True, "fine", **fields)  # type: ignore[arg-type]


def failed(check: DnsCheck, **fields: object) -> DnsCheckResult:
    return DnsCheckResult(str(check), False, "broken", **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------- created up front


def test_policy_probes_have_a_violation_series_at_zero_and_delivery_probes_none() -> None:
    _, registry = configured()
    assert value(registry, VIOLATION, probe="relay", check="open_relay") == 0
    assert value(registry, VIOLATION, probe="smuggling", check="smtp_smuggling") == 0
    assert series(registry, VIOLATION) == {
        'smtp_probe_policy_violation{check="open_relay",probe="relay"}',
        'smtp_probe_policy_violation{check="smtp_smuggling",probe="smuggling"}',
    }


def test_a_plain_expect_is_labelled_expect() -> None:
    _, registry = configured({"plain": {"expect": Expectation((Stage.RCPT_TO,), ("550",))}})
    assert value(registry, VIOLATION, probe="plain", check="expect") == 0


def test_the_new_outcomes_are_precreated_with_the_others() -> None:
    _, registry = configured()
    for outcome in ("rejected", "accepted_unexpectedly"):
        assert value(registry, "smtp_probe_outcomes_total", probe="relay", outcome=outcome) == 0
        assert value(registry, "smtp_probe_outcomes_total", probe="plain", outcome=outcome) == 0


def test_named_smuggling_variants_are_precreated_at_zero() -> None:
    _, registry = configured()
    assert series(registry, SMUGGLED) == {
        'smtp_probe_smuggling_accepted{probe="smuggling",variant="lf_dot_crlf"}',
        'smtp_probe_smuggling_accepted{probe="smuggling",variant="lf_dot_lf"}',
    }


def test_each_configured_dns_check_and_zone_is_precreated_at_zero() -> None:
    _, registry = configured()
    for check in ("mx", "dmarc", "mta_sts", "dnsbl", "fcrdns"):
        assert value(registry, DNS_OK, probe="dns", check=check) == 0, check
        assert value(registry, DNS_AT, probe="dns", check=check) == 0, check
    assert value(registry, DNS_OK, probe="dns", check="spf") is None
    assert value(registry, DNS_OK, probe="relay", check="mx") is None
    for zone in ("zen.example.test", "bl.example.test"):
        assert value(registry, LISTED, probe="dns", zone=zone) == 0
    assert series(registry, DMARC, MTA_STS) == set(), "no policy read yet"


def test_zones_without_the_dnsbl_check_have_no_series() -> None:
    _, registry = configured({"dns": {"dns_checks": dns_checks(DnsCheck.MX)}})
    assert series(registry, LISTED) == set()


# ---------------------------------------------------------------- runs


def test_an_unexpected_acceptance_sets_the_violation_and_a_refusal_clears_it() -> None:
    metrics, registry = configured()
    metrics.record(policy_run("relay", Outcome.ACCEPTED_UNEXPECTEDLY))
    assert value(registry, VIOLATION, probe="relay", check="open_relay") == 1
    assert value(registry, "smtp_probe_success", probe="relay") == 0
    count = value(
        registry, "smtp_probe_outcomes_total", probe="relay", outcome="accepted_unexpectedly"
    )
    assert count == 1

    metrics.record(policy_run("relay", Outcome.REJECTED))
    assert value(registry, VIOLATION, probe="relay", check="open_relay") == 0
    assert value(registry, "smtp_probe_success", probe="relay") == 1
    assert value(registry, "smtp_probe_outcomes_total", probe="relay", outcome="rejected") == 1


def test_a_run_that_failed_otherwise_is_no_violation() -> None:
    metrics, registry = configured()
    metrics.record(policy_run("relay", Outcome.ACCEPTED_UNEXPECTEDLY))
    failed_run = run_result("relay", Outcome.SEND_FAILED, stage=Stage.CONNECT, reply_code=None)
    metrics.record(replace(failed_run, policy_check="open_relay"))
    assert value(registry, VIOLATION, probe="relay", check="open_relay") == 0
    assert value(registry, "smtp_probe_success", probe="relay") == 0


def test_smuggling_verdicts_set_their_variant_and_untried_variants_read_zero() -> None:
    metrics, registry = configured()
    verdicts = (
        SmugglingVerdict("lf_dot_crlf", True, "250 after the smuggled DATA"),
        SmugglingVerdict("lf_dot_lf", False, "one 250 only"),
    )
    metrics.record(policy_run("smuggling", Outcome.ACCEPTED_UNEXPECTEDLY, smuggling=verdicts))
    assert value(registry, SMUGGLED, probe="smuggling", variant="lf_dot_crlf") == 1
    assert value(registry, SMUGGLED, probe="smuggling", variant="lf_dot_lf") == 0
    assert value(registry, VIOLATION, probe="smuggling", check="smtp_smuggling") == 1

    metrics.record(policy_run("smuggling", Outcome.SEND_FAILED))  # stopped before any variant
    assert value(registry, SMUGGLED, probe="smuggling", variant="lf_dot_crlf") == 0


def test_with_named_variants_a_verdict_for_another_variant_makes_no_series() -> None:
    metrics, registry = configured()
    verdict = SmugglingVerdict("cr_dot_cr", True, "250")
    metrics.record(policy_run("smuggling", Outcome.ACCEPTED_UNEXPECTEDLY, smuggling=(verdict,)))
    assert value(registry, SMUGGLED, probe="smuggling", variant="cr_dot_cr") is None


def test_without_named_variants_every_variant_is_precreated_and_labels_stay_bounded() -> None:
    changes: Changes = {**DEFAULT, "smuggling": {**DEFAULT["smuggling"], "smuggling_variants": ()}}
    metrics, registry = configured(changes)
    assert {s.split('variant="')[1].rstrip('"}') for s in series(registry, SMUGGLED)} == set(
        VARIANTS
    )
    assert len(VARIANTS) >= 6
    verdicts = (
        SmugglingVerdict("cr_dot_cr", False, "refused"),
        SmugglingVerdict("lf_dot_lf", True, "arrived"),
        SmugglingVerdict("Bare LF from mx.example.net: 421", True, "free text is no label"),
    )
    metrics.record(policy_run("smuggling", Outcome.ACCEPTED_UNEXPECTEDLY, smuggling=verdicts))
    assert value(registry, SMUGGLED, probe="smuggling", variant="lf_dot_lf") == 1
    assert value(registry, SMUGGLED, probe="smuggling", variant="cr_dot_cr") == 0
    assert len(series(registry, SMUGGLED)) == len(VARIANTS)
    assert "mx.example.net" not in exposition(registry)


# ---------------------------------------------------------------- DNS reports


def test_a_dns_report_sets_success_and_the_time_it_finished() -> None:
    metrics, registry = configured()
    metrics.record_dns(dns_report(ok(DnsCheck.MX), failed(DnsCheck.FCRDNS), minutes=3))
    finished = (STARTED + timedelta(minutes=3)).timestamp() + 0.5
    assert value(registry, DNS_OK, probe="dns", check="mx") == 1
    assert value(registry, DNS_AT, probe="dns", check="mx") == finished
    assert value(registry, DNS_OK, probe="dns", check="fcrdns") == 0
    assert value(registry, DNS_AT, probe="dns", check="fcrdns") == finished
    assert value(registry, DNS_AT, probe="dns", check="dmarc") == 0, "not in this report"


def test_checks_and_probes_that_are_not_configured_are_ignored() -> None:
    metrics, registry = configured()
    metrics.record_dns(dns_report(ok(DnsCheck.SPF)))
    metrics.record_dns(dns_report(ok(DnsCheck.MX), probe="relay"))
    metrics.record_dns(dns_report(ok(DnsCheck.MX), probe="removed-meanwhile"))
    assert value(registry, DNS_OK, probe="dns", check="spf") is None
    assert value(registry, DNS_OK, probe="relay", check="mx") is None
    assert "removed-meanwhile" not in exposition(registry)


def test_dnsbl_listing_per_configured_zone() -> None:
    metrics, registry = configured()
    listed = (("zen.example.test", True), ("bl.example.test", False), ("other.test", True))
    metrics.record_dns(dns_report(failed(DnsCheck.DNSBL, listed=listed)))
    assert value(registry, LISTED, probe="dns", zone="zen.example.test") == 1
    assert value(registry, LISTED, probe="dns", zone="bl.example.test") == 0
    assert value(registry, LISTED, probe="dns", zone="other.test") is None
    assert value(registry, DNS_OK, probe="dns", check="dnsbl") == 0

    # A zone the next run has no verdict for (it stopped first) keeps its value.
    metrics.record_dns(dns_report(failed(DnsCheck.DNSBL, listed=(("bl.example.test", True),))))
    assert value(registry, LISTED, probe="dns", zone="zen.example.test") == 1
    assert value(registry, LISTED, probe="dns", zone="bl.example.test") == 1


def test_dmarc_policy_and_mta_sts_mode_have_one_series_for_what_was_read() -> None:
    metrics, registry = configured()
    metrics.record_dns(
        dns_report(ok(DnsCheck.DMARC, policy="reject"), ok(DnsCheck.MTA_STS, policy="enforce"))
    )
    assert series(registry, DMARC, MTA_STS) == {
        'smtp_probe_dmarc_policy_info{policy="reject",probe="dns"}',
        'smtp_probe_mta_sts_mode_info{mode="enforce",probe="dns"}',
    }
    metrics.record_dns(
        dns_report(
            failed(DnsCheck.DMARC, policy="none"), failed(DnsCheck.MTA_STS, policy="testing")
        )
    )
    assert series(registry, DMARC, MTA_STS) == {
        'smtp_probe_dmarc_policy_info{policy="none",probe="dns"}',
        'smtp_probe_mta_sts_mode_info{mode="testing",probe="dns"}',
    }
    # Nothing read (no record, no policy fetched): no series; odd words are "other".
    metrics.record_dns(dns_report(failed(DnsCheck.MTA_STS), ok(DnsCheck.DMARC, policy="Weird")))
    assert series(registry, DMARC, MTA_STS) == {
        'smtp_probe_dmarc_policy_info{policy="other",probe="dns"}'
    }


# ---------------------------------------------------------------- reloads


def test_a_reload_keeps_kept_values_and_drops_what_went_away() -> None:
    metrics, registry = configured()
    metrics.record(policy_run("relay", Outcome.ACCEPTED_UNEXPECTEDLY))
    metrics.record_dns(
        dns_report(
            ok(DnsCheck.MX),
            ok(DnsCheck.DMARC, policy="reject"),
            ok(DnsCheck.MTA_STS, policy="enforce"),
            failed(DnsCheck.DNSBL, listed=(("zen.example.test", True),)),
        )
    )
    metrics.configure(probes(DEFAULT))  # the same config again: nothing changes
    assert value(registry, VIOLATION, probe="relay", check="open_relay") == 1
    assert value(registry, DNS_OK, probe="dns", check="mx") == 1
    assert value(registry, LISTED, probe="dns", zone="zen.example.test") == 1

    changed: Changes = {
        "relay": {"check": PolicyCheck.SENDER_MISMATCH, "expect": RELAY},
        "smuggling": {**DEFAULT["smuggling"], "smuggling_variants": ("lf_dot_lf",)},
        "dns": {"dns_checks": dns_checks(DnsCheck.MX, DnsCheck.DNSBL, zones=("bl.example.test.",))},
    }
    metrics.configure(probes(changed))
    assert series(registry, VIOLATION) == {
        'smtp_probe_policy_violation{check="sender_mismatch",probe="relay"}',
        'smtp_probe_policy_violation{check="smtp_smuggling",probe="smuggling"}',
    }
    assert value(registry, VIOLATION, probe="relay", check="sender_mismatch") == 0
    assert series(registry, SMUGGLED) == {
        'smtp_probe_smuggling_accepted{probe="smuggling",variant="lf_dot_lf"}'
    }
    assert {re.search(r'check="(\w+)"', s).group(1) for s in series(registry, DNS_OK)} == {  # type: ignore[union-attr]
        "mx",
        "dnsbl",
    }
    assert value(registry, DNS_OK, probe="dns", check="mx") == 1
    assert series(registry, LISTED) == {
        'smtp_probe_dnsbl_listed{probe="dns",zone="bl.example.test"}'
    }
    assert series(registry, DMARC, MTA_STS) == set()

    metrics.configure(probes())  # every probe back to a plain delivery probe
    assert series(registry, *NEW) == set()


def test_rendered_text_and_collector_agree() -> None:
    metrics, registry = configured()
    metrics.record(policy_run("relay", Outcome.ACCEPTED_UNEXPECTEDLY))
    metrics.record_dns(
        dns_report(ok(DnsCheck.MTA_STS, policy="enforce"), failed(DnsCheck.DNSBL, listed=()))
    )
    rendered = {
        line for line in metrics.render().decode().splitlines() if line.split("{")[0] in NEW
    }
    collected = {
        line
        for line in exposition(registry).splitlines()
        if line.split("{")[0] in NEW and not line.startswith("#")
    }
    assert rendered == collected
    assert 'smtp_probe_policy_violation{check="open_relay",probe="relay"} 1.0' in rendered
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", exposition(registry), re.MULTILINE))
    assert "last scheduled run" in helps[VIOLATION]
    assert "last scheduled run" in helps[SMUGGLED]
    assert "dns_interval" in helps[DNS_OK]
    assert "dns_interval" in helps[MTA_STS]
