"""The shipped Prometheus rules and Alertmanager config: valid, unit-tested, documented.

Runs the real ``promtool`` (Debian package ``prometheus``) and ``amtool``
(``prometheus-alertmanager``) on ``deploy/``; a missing tool fails the test,
it never skips. Besides the tools' own checks, it holds the rules to the
project's conventions: every alert has a severity, a summary, a description
and a ``runbook_url`` whose anchor exists in ``docs/runbook.md``; every alert
has a promtool case where it fires and one where it stays quiet; every
metric a rule reads is one the exporter defines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from prometheus_client import CollectorRegistry

from smtp_probe.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"page", "ticket", "warning"}


def tool(name: str, package: str) -> str:
    """The path of a command-line tool; fail (never skip) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (the tests need it)")
    return path


def run(argv: list[str]) -> str:
    """Run a tool; fail with its whole output when it exits non-zero."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}:\n{output}")
    return output


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of the shipped rule files that has key ``kind`` (alert or record)."""
    return [
        rule
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


ALERTS = rules("alert")
RECORDS = rules("record")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, '-' for ' '."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (heading := re.match(r"#{1,6} (.+)", line)):
            anchors.add(github_anchor(heading.group(1)))
    return anchors


def exported_names() -> set[str]:
    """Every sample name the exporter can expose (``_total``, ``_bucket``... included)."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_count", "_sum", "_created"],
        }.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_the_rule_and_test_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["smtp_probe_alerts.yml", "smtp_probe_recording.yml"]
    assert len(TEST_FILES) >= 3
    assert ALERTS
    assert RECORDS


@pytest.mark.parametrize(
    ("command", "path"),
    [
        *[pytest.param("check", path, id=f"check-{path.name}") for path in RULE_FILES],
        *[pytest.param("test", path, id=f"test-{path.name}") for path in TEST_FILES],
    ],
)
def test_promtool_rules_command_succeeds(command: str, path: Path) -> None:
    """``promtool check rules`` on every rule file, ``promtool test rules`` on every test file."""
    output = run([tool("promtool", "prometheus"), command, "rules", str(path)])
    assert "SUCCESS" in output


def test_promtool_check_example_prometheus_config() -> None:
    config = PROMETHEUS / "prometheus.yml"
    output = run([tool("promtool", "prometheus"), "check", "config", str(config)])
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output
    scrape = load(config)["scrape_configs"]
    assert [(job["job_name"], job["scrape_interval"]) for job in scrape] == [("smtp-probe", "15s")]
    assert scrape[0]["static_configs"][0]["targets"][0].endswith(":10587")


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: str(a["alert"]))
def test_alert_has_severity_summary_description_and_runbook(alert: dict[str, Any]) -> None:
    assert re.fullmatch(r"SmtpProbe[A-Z][A-Za-z]+", alert["alert"])
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip()
    assert "{{" in annotations["description"], "a description should carry labels or values"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: str(a["alert"]))
def test_runbook_url_points_at_a_section_of_the_runbook(alert: dict[str, Any]) -> None:
    url = urlparse(alert["annotations"]["runbook_url"])
    assert url.scheme == "https"
    assert url.path.endswith("/docs/runbook.md")
    assert url.fragment == alert["alert"].lower(), "each alert links its own section"
    assert url.fragment in runbook_anchors(), f"docs/runbook.md has no #{url.fragment}"


def test_runbook_has_no_section_for_an_alert_that_does_not_exist() -> None:
    sections = set(re.findall(r"^## (SmtpProbe\w+)$", RUNBOOK.read_text(), re.MULTILINE))
    assert sections == {alert["alert"] for alert in ALERTS}


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in ALERTS}
    assert names - firing == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def test_promtool_tests_load_the_shipped_rule_files() -> None:
    for path in TEST_FILES:
        loaded = {(path.parent / name).resolve() for name in load(path)["rule_files"]}
        assert loaded == {p.resolve() for p in RULE_FILES}, path.name


def test_recording_rule_names_are_level_metric_operations() -> None:
    for rule in RECORDS:
        assert re.fullmatch(r"probe:smtp_probe_[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]
    assert len({rule["record"] for rule in RECORDS}) == len(RECORDS)


def test_rules_read_only_metrics_the_exporter_defines_and_series_that_are_recorded() -> None:
    exported = exported_names()
    recorded = {rule["record"] for rule in RECORDS}
    for rule in [*ALERTS, *RECORDS]:
        expr = rule["expr"]
        for name in re.findall(r"(?<![:\w])smtp_probe_\w+", expr):
            assert name in exported, f"{name} in {rule.get('alert') or rule['record']}"
        for name in re.findall(r"\bprobe:[\w:]+", expr):
            assert name in recorded, f"{name} in {rule.get('alert') or rule['record']}"


def test_amtool_checks_the_example_alertmanager_config() -> None:
    output = run([tool("amtool", "prometheus-alertmanager"), "check-config",
                  str(ALERTMANAGER_CONFIG)])  # fmt: skip
    assert "SUCCESS" in output


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=page", "alertname=SmtpProbeDeliveryFailing", "probe=relay"], "pager"),
        (["severity=ticket", "alertname=SmtpProbeJunkPlacement", "probe=relay"], "mail-ops"),
        (["severity=warning", "alertname=SmtpProbeConfigReloadFailed"], "mail-ops"),
        (["severity=page", "alertname=SmtpProbeOAuthTokenFailing", "client=m365"], "pager"),
        (["severity=warning", "alertname=SmtpProbeThrottled", "probe=relay"], "mail-ops"),
        (
            [
                "severity=ticket",
                "alertname=SmtpProbeReplicaDisagrees",
                "probe=relay",
                "instance=mon2:10587",
                "disagreement=failing",
            ],
            "mail-ops",
        ),
        (
            ["severity=page", "alertname=SmtpProbeCertificateExpiringCritical", "probe=relay"],
            "pager",
        ),
        (
            ["severity=ticket", "alertname=SmtpProbeCertificateExpiringSoon", "probe=relay"],
            "mail-ops",
        ),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    output = run([tool("amtool", "prometheus-alertmanager"), "config", "routes", "test",
                  f"--config.file={ALERTMANAGER_CONFIG}", *labels])  # fmt: skip
    assert output.splitlines()[0].strip() == receiver


def test_alertmanager_groups_by_probe_and_inhibits_tickets_while_a_page_fires() -> None:
    config = load(ALERTMANAGER_CONFIG)
    assert "probe" in config["route"]["group_by"]
    assert {
        "source_matchers": ['severity="page"'],
        "target_matchers": ['severity=~"ticket|warning"'],
        "equal": ["probe"],
    } in config["inhibit_rules"]
