"""Authentication results and spam scores as metrics: the last arrived message's, bounded labels."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry

from smtp_probe.metrics import Metrics
from smtp_probe.probe.result import AuthVerdict, Outcome, RunResult, Stage, Verdicts
from tests.support.results import run_result
from tests.unit.test_metrics import exposition, metrics_for, value

AUTH = "smtp_probe_auth_result"


def arrived(verdicts: Verdicts, outcome: Outcome = Outcome.DELIVERED) -> RunResult:
    result = run_result("alpha", Outcome.DELIVERED)
    assert result.arrival is not None
    stage = Stage.VERIFY if outcome is Outcome.AUTH_FAILED else None
    return replace(
        result, outcome=outcome, stage=stage, arrival=replace(result.arrival, verdicts=verdicts)
    )


def auth_series(registry: CollectorRegistry) -> list[str]:
    return sorted(line for line in exposition(registry).splitlines() if line.startswith(AUTH))


def test_no_auth_or_spam_series_before_a_message_arrived() -> None:
    _, registry = metrics_for("alpha")
    assert auth_series(registry) == []
    assert value(registry, "smtp_probe_spam_score", probe="alpha") is None
    assert value(registry, "smtp_probe_outcomes_total", probe="alpha", outcome="auth_failed") == 0


def test_each_method_has_one_series_for_its_last_result() -> None:
    metrics, registry = metrics_for("alpha")
    failing = Verdicts("mx.example.net", results=(AuthVerdict("dkim", "fail"),))
    metrics.record(arrived(failing, Outcome.AUTH_FAILED))
    passing = Verdicts("mx.example.net", results=(AuthVerdict("dkim", "pass"),))
    metrics.record(arrived(passing))

    assert value(registry, AUTH, probe="alpha", method="dkim", result="pass") == 1
    assert value(registry, AUTH, probe="alpha", method="dkim", result="fail") is None
    assert value(registry, AUTH, probe="alpha", method="dmarc", result="none") == 1
    assert len(auth_series(registry)) == 4  # spf, dkim, dmarc, arc
    assert value(registry, "smtp_probe_outcomes_total", probe="alpha", outcome="auth_failed") == 1
    assert value(registry, "smtp_probe_failures_total", probe="alpha", stage="verify") == 1


def test_a_result_outside_the_rfc_words_is_other() -> None:
    metrics, registry = metrics_for("alpha")
    odd = Verdicts("mx.example.net", results=(AuthVerdict("spf", "x" * 40),))
    metrics.record(arrived(odd))
    assert value(registry, AUTH, probe="alpha", method="spf", result="other") == 1


def test_without_an_authserv_id_there_are_no_auth_series() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(arrived(Verdicts("mx.example.net", results=(AuthVerdict("dkim", "pass"),))))
    metrics.record(arrived(Verdicts(None, ignored=2)))
    assert auth_series(registry) == []


def test_a_run_without_an_arrival_keeps_the_last_results() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(arrived(Verdicts("mx.example.net", results=(AuthVerdict("dkim", "pass"),))))
    metrics.record(run_result("alpha", Outcome.NOT_DELIVERED, stage=Stage.DELIVERY))
    assert value(registry, AUTH, probe="alpha", method="dkim", result="pass") == 1


def test_spam_score_and_threshold_follow_the_last_arrived_message() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(arrived(Verdicts(None, spam_score=2.4, spam_threshold=15.0)))
    assert value(registry, "smtp_probe_spam_score", probe="alpha") == 2.4
    assert value(registry, "smtp_probe_spam_threshold", probe="alpha") == 15.0

    metrics.record(arrived(Verdicts(None, spam_score=-0.5)))
    assert value(registry, "smtp_probe_spam_score", probe="alpha") == -0.5
    assert value(registry, "smtp_probe_spam_threshold", probe="alpha") is None

    metrics.record(arrived(Verdicts(None)))
    assert value(registry, "smtp_probe_spam_score", probe="alpha") is None


def test_rendered_text_and_collector_agree() -> None:
    metrics, registry = metrics_for("alpha")
    metrics.record(
        arrived(
            Verdicts(
                "mx.example.net",
                results=(AuthVerdict("dkim", "pass"), AuthVerdict("spf", "softfail")),
                spam_score=1.0,
                spam_threshold=5.0,
            )
        )
    )
    text = metrics.render().decode()
    assert 'smtp_probe_auth_result{method="spf",probe="alpha",result="softfail"} 1.0' in text
    assert 'smtp_probe_spam_threshold{probe="alpha"} 5.0' in text
    assert isinstance(metrics, Metrics)
    assert value(registry, AUTH, probe="alpha", method="spf", result="softfail") == 1
