"""report.py: exit codes, the JSON contract, the Nagios line and the text verdict."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from smtp_probe.probe.result import Arrival, Outcome, RunResult, SmtpReport, Stage
from smtp_probe.probe.transcript import Transcript
from smtp_probe.report import (
    ExitCode,
    as_dict,
    exit_code,
    render_json,
    render_nagios,
    render_text,
    verdict,
)

TIMINGS = {
    Stage.DNS: 0.001,
    Stage.CONNECT: 0.002,
    Stage.BANNER: 0.003,
    Stage.EHLO: 0.004,
    Stage.MAIL_FROM: 0.005,
    Stage.RCPT_TO: 0.006,
    Stage.DATA: 0.007,
}


def make_result(
    outcome: Outcome,
    *,
    stage: Stage | None = None,
    error: str = "",
    delivery: float | None = None,
    folder: str = "INBOX",
    reply_code: int = 250,
    reply: str = "2.0.0 Ok: queued as 4XyZ12",
    queue_id: str | None = "4XyZ12",
) -> RunResult:
    """A RunResult as run_probe would build it, without running anything."""
    transcript = Transcript(clock=lambda: 0.0)
    transcript.received("220 mx.example ESMTP", tls=False)
    transcript.sent("EHLO probe", tls=False)
    transcript.note("a note")
    arrival = None
    if outcome in (Outcome.DELIVERED, Outcome.JUNK):
        arrival = Arrival(uid=7, folder=folder, seen_at=0.0, junk=outcome is Outcome.JUNK)
    return RunResult(
        probe="route-a",
        run_id="9f2c4e1ab07d5c33",
        outcome=outcome,
        stage=stage,
        error=error,
        started_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        duration_seconds=1.25,
        smtp=SmtpReport(
            reply_code=reply_code, reply=reply, queue_id=queue_id, stage_seconds=TIMINGS
        ),
        transcript=transcript,
        delivery_seconds=delivery,
        arrival=arrival,
    )


def failed(outcome: Outcome = Outcome.SEND_FAILED) -> RunResult:
    return make_result(
        outcome,
        stage=Stage.DATA,
        error="server replied 554 5.7.1 rejected | spam",
        reply_code=554,
        reply="5.7.1 rejected | spam",
        queue_id=None,
    )


def test_delivered_is_ok() -> None:
    assert exit_code(make_result(Outcome.DELIVERED, delivery=0.5)) is ExitCode.OK
    assert int(ExitCode.OK) == 0


def test_delivered_within_the_warning_time_is_ok() -> None:
    result = make_result(Outcome.DELIVERED, delivery=0.5)
    assert exit_code(result, warning_seconds=1.0) is ExitCode.OK


def test_delivered_slower_than_the_warning_time_is_warning() -> None:
    result = make_result(Outcome.DELIVERED, delivery=2.5)
    assert exit_code(result, warning_seconds=1.0) is ExitCode.WARNING
    assert int(ExitCode.WARNING) == 1


def test_delivered_into_junk_is_warning() -> None:
    assert exit_code(make_result(Outcome.JUNK, delivery=0.5, folder="Junk")) == 1


def test_sent_without_a_delivery_check_is_ok() -> None:
    assert exit_code(make_result(Outcome.SENT)) == 0


@pytest.mark.parametrize(
    "outcome", [Outcome.SEND_FAILED, Outcome.NOT_DELIVERED, Outcome.ERROR, Outcome.BOUNCED]
)
def test_every_failure_is_critical(outcome: Outcome) -> None:
    assert exit_code(failed(outcome)) is ExitCode.CRITICAL
    assert int(ExitCode.CRITICAL) == 2


def test_json_has_the_contract_keys() -> None:
    data = as_dict(make_result(Outcome.DELIVERED, delivery=0.25))
    contract = {"outcome", "success", "stage", "smtp", "delivery_seconds", "folder", "transcript"}
    assert contract <= set(data)
    assert {"reply_code", "reply", "queue_id", "stage_seconds"} <= set(data["smtp"])


def test_json_values_of_a_delivered_run() -> None:
    data = as_dict(make_result(Outcome.DELIVERED, delivery=0.25))
    assert data["outcome"] == "delivered"
    assert data["success"] is True
    assert data["stage"] is None
    assert data["smtp"]["reply_code"] == 250
    assert data["smtp"]["reply"] == "2.0.0 Ok: queued as 4XyZ12"
    assert data["smtp"]["queue_id"] == "4XyZ12"
    assert data["smtp"]["stage_seconds"] == {str(k): v for k, v in TIMINGS.items()}
    assert data["delivery_seconds"] == 0.25
    assert data["folder"] == "INBOX"
    assert data["exit_code"] == 0


def test_json_values_of_a_failed_run() -> None:
    data = as_dict(failed())
    assert data["outcome"] == "send_failed"
    assert data["success"] is False
    assert data["stage"] == "data"
    assert data["smtp"]["reply_code"] == 554
    assert data["delivery_seconds"] is None
    assert data["folder"] is None
    assert data["exit_code"] == 2


def test_json_transcript_is_a_list_of_rendered_lines() -> None:
    result = make_result(Outcome.SENT)
    data = as_dict(result)
    assert data["transcript"] == result.transcript.render()
    assert len(data["transcript"]) == 3
    assert all(isinstance(line, str) for line in data["transcript"])


def test_render_json_is_one_line_holding_the_same_object() -> None:
    result = make_result(Outcome.DELIVERED, delivery=0.25)
    text = render_json(result)
    assert "\n" not in text
    assert json.loads(text) == as_dict(result)


def test_nagios_line_of_a_success_starts_with_ok() -> None:
    line = render_nagios(make_result(Outcome.DELIVERED, delivery=0.25))
    assert line.startswith("SMTP-PROBE OK - ")


def test_nagios_line_of_a_slow_delivery_starts_with_warning() -> None:
    line = render_nagios(make_result(Outcome.DELIVERED, delivery=3.0), warning_seconds=1.0)
    assert line.startswith("SMTP-PROBE WARNING - ")


def test_nagios_line_of_a_failure_starts_with_critical() -> None:
    assert render_nagios(failed()).startswith("SMTP-PROBE CRITICAL - ")


def test_nagios_perfdata_follows_the_only_pipe() -> None:
    line = render_nagios(failed())
    assert line.count("|") == 1
    message, perfdata = line.split(" | ")
    assert "rejected / spam" in message
    labels = [item.split("=")[0] for item in perfdata.split(" ")]
    assert labels == ["duration", *[str(stage) for stage in TIMINGS]]


def test_nagios_perfdata_carries_delivery_with_its_warning_threshold() -> None:
    line = render_nagios(make_result(Outcome.DELIVERED, delivery=0.25), warning_seconds=2.0)
    perfdata = line.split(" | ")[1].split(" ")
    assert perfdata[0] == "delivery=0.250000s;2;;0"
    assert "duration=1.250000s;;;0" in perfdata


def test_nagios_verbose_adds_the_transcript_as_long_output() -> None:
    result = make_result(Outcome.SENT)
    lines = render_nagios(result, verbose=True).split("\n")
    assert lines[1:] == result.transcript.render()


def test_text_ends_with_the_verdict_line() -> None:
    result = failed()
    lines = render_text(result, colour=False).split("\n")
    assert lines[-1] == verdict(result)
    assert lines[:-1] == result.transcript.render()


def test_text_verdict_of_a_failure_names_outcome_stage_and_reply_code() -> None:
    last = render_text(failed(), colour=False).split("\n")[-1]
    assert last.startswith("CRITICAL: send_failed at data [554]: ")


def test_text_verdict_of_a_delivery_names_folder_and_time() -> None:
    last = render_text(make_result(Outcome.DELIVERED, delivery=0.25), colour=False).split("\n")[-1]
    assert last.startswith("OK: delivered to INBOX 250.0 ms after the 250")
    assert "queue id 4XyZ12" in last


def test_text_verdict_of_an_smtp_only_run_says_delivery_was_not_checked() -> None:
    last = render_text(make_result(Outcome.SENT), colour=False).split("\n")[-1]
    assert last.startswith("OK: accepted by SMTP (250)")
    assert "delivery not checked" in last


@pytest.mark.parametrize("verbose", [False, True])
def test_text_without_colour_has_no_ansi_escapes(verbose: bool) -> None:
    for result in (make_result(Outcome.DELIVERED, delivery=0.25), failed()):
        assert "\x1b" not in render_text(result, colour=False, verbose=verbose)


def test_text_with_colour_colours_the_verdict() -> None:
    text = render_text(failed(), colour=True)
    assert text.split("\n")[-1].startswith("\x1b[31m")
    assert text.endswith("\x1b[0m")
