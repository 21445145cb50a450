"""Throttling replies against aiosmtpd on 127.0.0.1: outcome ``throttled``, ``check`` exits 1.

aiosmtpd answers as Microsoft 365 does when a tenant's concurrency limit is
hit (``451 4.3.2``), and as Postfix's anvil does at the greeting (``421 …
too many connections``).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from smtp_probe.cli import main
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.report import ExitCode, exit_code
from tests.support.loopback_routes import loopback_probe, run
from tests.support.loopback_smtpd import LOOPBACK, Behaviour, greeting_server, smtpd

M365_CONCURRENCY = "451 4.3.2 Concurrent connections limit exceeded"


def check_args(port: int, *extra: str) -> list[str]:
    return [
        "check",
        "--smtp",
        f"{LOOPBACK}:{port}",
        "--smtp-tls",
        "none",
        "--from",
        "probe@sender.test",
        "--to",
        "sink@rcpt.test",
        "--timeout",
        "5s",
        *extra,
    ]


@pytest.mark.parametrize(
    ("handler", "stage"),
    [
        pytest.param(Behaviour(mail_reply=M365_CONCURRENCY), Stage.MAIL_FROM, id="mail_from"),
        pytest.param(
            Behaviour(rcpt_reply="452 4.5.3 Error: too many recipients"),
            Stage.RCPT_TO,
            id="rcpt_to",
        ),
        pytest.param(Behaviour(data_reply=M365_CONCURRENCY), Stage.DATA, id="data"),
    ],
)
def test_a_throttling_reply_is_outcome_throttled_at_its_stage(
    handler: Behaviour, stage: Stage
) -> None:
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.THROTTLED
    assert result.success is False
    assert result.stage is stage
    assert result.error.startswith("temporary throttling by the server: server replied 45")
    assert exit_code(result) is ExitCode.WARNING
    assert f"=== FAILED at {stage}: temporary throttling by the server" in "\n".join(
        result.transcript.render()
    )


def test_too_many_connections_at_the_greeting_is_throttled_at_stage_banner() -> None:
    async def scenario() -> RunResult:
        greeting = "421 4.7.0 mx.test Error: too many connections from 127.0.0.1"
        async with greeting_server(greeting) as port:
            return await run_probe(loopback_probe(port), signer=TokenSigner())

    result = asyncio.run(scenario())

    assert result.outcome is Outcome.THROTTLED
    assert result.stage is Stage.BANNER
    assert result.smtp.reply_code == 421


def test_another_temporary_refusal_stays_send_failed() -> None:
    with smtpd(Behaviour(rcpt_reply="450 4.7.1 Greylisted, try again in 300 seconds")) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert "throttling" not in result.error
    assert exit_code(result) is ExitCode.CRITICAL


def test_check_reports_throttling_as_warning_in_json_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with smtpd(Behaviour(data_reply=M365_CONCURRENCY)) as port:
        code = main(check_args(port, "--format", "json"))

    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["exit_code"] == 1
    assert data["outcome"] == "throttled"
    assert data["success"] is False
    assert data["stage"] == "data"
    assert data["smtp"]["reply_code"] == 451
    assert data["error"] == (
        "temporary throttling by the server: server replied 451 4.3.2 "
        "Concurrent connections limit exceeded"
    )


def test_check_reports_throttling_as_warning_in_nagios_and_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with smtpd(Behaviour(data_reply=M365_CONCURRENCY)) as port:
        nagios = main(check_args(port, "--format", "nagios"))
        nagios_out = capsys.readouterr().out
        text = main(check_args(port, "--format", "text"))
        text_out = capsys.readouterr().out

    assert (nagios, text) == (1, 1)
    assert nagios_out.startswith(
        "SMTP-PROBE WARNING - throttled at data [451]: temporary throttling by the server"
    )
    verdict = text_out.rstrip("\n").split("\n")[-1]
    assert verdict.startswith(
        "WARNING: throttled at data [451]: temporary throttling by the server"
    )
