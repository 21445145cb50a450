"""report.py: exit codes, the JSON contract, the Nagios line and the text verdict."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from smtp_probe.probe.result import Bounce, Outcome, ReflectorLegs, RunResult, Stage
from smtp_probe.probe.transcript import Transcript
from smtp_probe.report import (
    HOPS_CAVEAT,
    ExitCode,
    as_dict,
    exit_code,
    render_json,
    render_nagios,
    render_text,
    verdict,
)
from tests.support import received_samples as samples
from tests.support.results import STAGE_SECONDS, run_result


def make_result(outcome: Outcome, *, delivery: float | None = None) -> RunResult:
    """A run of ``outcome`` whose transcript has three lines: banner, EHLO and a note."""
    transcript = Transcript(clock=lambda: 0.0)
    transcript.received("220 mx.example ESMTP", tls=False)
    transcript.sent("EHLO probe", tls=False)
    transcript.note("a note")
    return run_result(outcome=outcome, delivery=delivery, transcript=transcript)


def failed(outcome: Outcome = Outcome.SEND_FAILED) -> RunResult:
    """A run whose DATA got ``554`` (a reply with a pipe, which Nagios output must not keep)."""
    return run_result(
        outcome=outcome,
        stage=Stage.DATA,
        error="server replied 554 5.7.1 rejected | spam",
        reply_code=554,
        reply="5.7.1 rejected | spam",
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
    assert exit_code(make_result(Outcome.JUNK, delivery=0.5)) == 1


def test_throttled_by_the_server_is_warning_not_critical() -> None:
    """A server asking us to slow down is a temporary condition, not a broken route."""
    assert exit_code(failed(Outcome.THROTTLED)) is ExitCode.WARNING


def test_delivered_without_the_required_authentication_is_warning_not_critical() -> None:
    """The message arrived; the receiver distrusts it: fix it, but nobody is woken."""
    assert exit_code(failed(Outcome.AUTH_FAILED)) is ExitCode.WARNING


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
    assert data["smtp"]["stage_seconds"] == {str(k): v for k, v in STAGE_SECONDS.items()}
    assert data["delivery_seconds"] == 0.25
    assert data["folder"] == "INBOX"
    assert data["exit_code"] == 0


def test_json_of_a_reflector_run_has_both_legs_and_other_runs_have_none() -> None:
    legs = ReflectorLegs(outbound_seconds=2.0, return_seconds=0.5, source="Date")
    reflected = as_dict(run_result(delivery=2.5, reflector=legs))
    plain = as_dict(make_result(Outcome.DELIVERED, delivery=0.25))

    assert reflected["reflector"] == {"outbound_seconds": 2.0, "return_seconds": 0.5}
    assert reflected["delivery_seconds"] == 2.5
    assert plain["reflector"] is None


def test_verdict_and_nagios_of_a_reflector_run_show_both_legs() -> None:
    legs = ReflectorLegs(outbound_seconds=2.0, return_seconds=0.5, source="Date")
    result = run_result(delivery=2.5, reflector=legs)

    assert "2500.0 ms after the 250 (via the reflector: out 2000.0 ms, back 500.0 ms)" in (
        verdict(result)
    )
    perf = render_nagios(result).split(" | ", 1)[1].split()
    assert perf[:3] == ["delivery=2.500000s;;;0", "outbound=2.000000s;;;0", "return=0.500000s;;;0"]


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
    assert labels == ["duration", *[str(stage) for stage in STAGE_SECONDS]]


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


RECEIVED = (
    "from mx.example by imap.example with LMTP id 42",
    "from probe.example by mx.example with ESMTPS id 4XyZ12",
)
ARRIVED = datetime(2026, 1, 2, 3, 4, 7, tzinfo=UTC)


def test_verbose_text_adds_stage_timings_and_the_arrival_between_transcript_and_verdict() -> None:
    result = run_result(received=RECEIVED, internaldate=ARRIVED)

    lines = render_text(result, colour=False, verbose=True).split("\n")

    assert lines == [
        *result.transcript.render(),
        "",
        "stage timings:",
        "  dns        1.0 ms",
        "  connect    2.0 ms",
        "  banner     3.0 ms",
        "  ehlo       4.0 ms",
        "  mail_from  5.0 ms",
        "  rcpt_to    6.0 ms",
        "  data       7.0 ms",
        "INTERNALDATE: 2026-01-02T03:04:07+00:00",
        "Received (newest first):",
        *[f"  {header}" for header in RECEIVED],
        f"hops (oldest first; {HOPS_CAVEAT}):",
        "  #  by            with    TLS  delay",
        "  0  mx.example    ESMTPS  yes  -",
        "  1  imap.example  LMTP    no   ?",
        "",
        verdict(result),
    ]


def test_verbose_hop_table_shows_delays_and_flags_clock_skew() -> None:
    result = run_result(received=samples.SKEWED)

    lines = render_text(result, colour=False, verbose=True).split("\n")

    start = lines.index(f"hops (oldest first; {HOPS_CAVEAT}):")
    assert lines[start + 1 : start + 5] == [
        "  #  by                  with     TLS  delay",
        "  0  submit.example.org  ESMTPSA  yes  -",
        "  1  relay.example.org   ESMTPS   yes  ?      clock skew",
        "  2  mx.example.net      LMTP     no   210 s",
    ]
    assert "whole seconds from each host's own clock" in HOPS_CAVEAT


def test_verbose_text_of_an_arrival_without_received_lines_has_no_hop_table() -> None:
    text = render_text(run_result(), colour=False, verbose=True)
    assert "hops (" not in text


def test_verbose_text_without_an_arrival_lists_only_the_stages_the_run_reached() -> None:
    result = run_result(
        outcome=Outcome.SEND_FAILED, stage=Stage.EHLO, reply_code=502, error="server replied 502"
    )

    lines = render_text(result, colour=False, verbose=True).split("\n")

    assert lines[:2] == ["", "stage timings:"]
    assert [line.split()[0] for line in lines[2:-2]] == ["dns", "connect", "banner", "ehlo"]
    assert lines[-2:] == ["", verdict(result)]


def test_json_imap_holds_the_arrival_and_is_null_without_one() -> None:
    delivered = as_dict(run_result(received=RECEIVED, internaldate=ARRIVED))
    sent = as_dict(run_result(outcome=Outcome.SENT))

    assert delivered["imap"] == {
        "uid": 7,
        "internaldate": "2026-01-02T03:04:07+00:00",
        "received": list(RECEIVED),
        "hops": [
            {"by": "mx.example", "from": "probe.example", "with": "ESMTPS", "tls": True,
             "at": None, "delay_seconds": None, "skewed": False},
            {"by": "imap.example", "from": "mx.example", "with": "LMTP", "tls": False,
             "at": None, "delay_seconds": None, "skewed": False},
        ],
        "deleted": False,
        "tls": None,
        "verdicts": None,
    }  # fmt: skip
    assert sent["imap"] is None


def test_json_hops_carry_times_delays_and_skew() -> None:
    hops = as_dict(run_result(received=samples.SKEWED))["imap"]["hops"]

    assert [(h["by"], h["at"], h["delay_seconds"], h["skewed"]) for h in hops] == [
        ("submit.example.org", "2026-12-07T02:50:37+00:00", None, False),
        ("relay.example.org", "2026-12-07T02:47:30+00:00", None, True),
        ("mx.example.net", "2026-12-07T02:51:00+00:00", 210.0, False),
    ]


def test_a_bounced_run_shows_its_reports_in_json_and_verbose_text() -> None:
    bounce = Bounce(
        "failed",
        "5.1.1",
        "x@example.test",
        "mx.example.test",
        "smtp; 550 5.1.1 <x@example.test> User unknown",
        "relay.example.test",
    )
    reason = "bounced: 5.1.1 <x@example.test> (remote mta: mx.example.test; smtp; 550 5.1.1 ...)"
    result = replace(
        run_result(outcome=Outcome.BOUNCED, stage=Stage.DELIVERY, error=reason), bounces=(bounce,)
    )

    data = as_dict(result)
    assert data["outcome"] == "bounced"
    assert data["success"] is False
    assert data["exit_code"] == 2
    assert data["bounces"] == [
        {
            "action": "failed",
            "status": "5.1.1",
            "status_class": "5",
            "recipient": "x@example.test",
            "remote_mta": "mx.example.test",
            "diagnostic": "smtp; 550 5.1.1 <x@example.test> User unknown",
            "reporting_mta": "relay.example.test",
        }
    ]
    assert as_dict(make_result(Outcome.DELIVERED, delivery=0.5))["bounces"] == []
    text = render_text(result, colour=False, verbose=True)
    assert "failed 5.1.1 recipient=x@example.test remote-mta=mx.example.test" in text
    assert "    smtp; 550 5.1.1 <x@example.test> User unknown" in text
    assert text.splitlines()[-1].startswith("CRITICAL: bounced at delivery: bounced: 5.1.1")


def policy_result(outcome: Outcome, **fields: object) -> RunResult:
    """A policy probe's run (``open_relay``) of ``outcome``."""
    return replace(run_result(outcome=outcome, **fields), policy_check="open_relay")  # type: ignore[arg-type]


def test_a_policy_probe_refused_as_expected_is_ok_and_says_so() -> None:
    result = policy_result(
        Outcome.REJECTED,
        reply_code=554,
        reply="5.7.1 <x@elsewhere.example>: Relay access denied",
        queue_id=None,
    )
    assert exit_code(result) is ExitCode.OK
    assert verdict(result).startswith(
        "OK: open_relay: refused as expected (554 5.7.1 <x@elsewhere.example>: Relay access denied)"
    )
    data = as_dict(result)
    assert data["policy_check"] == "open_relay"
    assert data["success"] is True
    assert data["exit_code"] == 0
    assert render_nagios(result).startswith("SMTP-PROBE OK - open_relay: refused as expected")


def test_a_policy_probe_accepted_unexpectedly_is_critical() -> None:
    result = policy_result(
        Outcome.ACCEPTED_UNEXPECTEDLY,
        stage=Stage.RCPT_TO,
        error="accepted at rcpt_to; expected a refusal at mail_from, rcpt_to or data (5xx)",
        reply_code=250,
        reply="2.1.5 Ok",
        queue_id=None,
    )
    assert exit_code(result) is ExitCode.CRITICAL
    assert verdict(result).startswith(
        "CRITICAL: open_relay: accepted_unexpectedly at rcpt_to: accepted at rcpt_to; "
        "expected a refusal at mail_from, rcpt_to or data (5xx)"
    )
    assert as_dict(result)["success"] is False


def test_a_delivery_probe_has_no_policy_check_in_json() -> None:
    assert as_dict(make_result(Outcome.DELIVERED, delivery=0.25))["policy_check"] is None
