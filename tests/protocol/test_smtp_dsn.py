"""DSN parameters (RFC 3461) on the envelope, against aiosmtpd on 127.0.0.1.

A server whose EHLO offers ``DSN`` gets ``MAIL FROM:<a> RET=HDRS
ENVID=<run id>`` and ``RCPT TO:<b> NOTIFY=FAILURE,DELAY``, so a bounce
brings our headers and run id back; a server without ``DSN`` gets the
bare commands it always got; one that offers ``DSN`` but refuses its
parameters with ``555`` gets them once more without.
"""

from __future__ import annotations

from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.transcript import Direction
from tests.support.loopback_routes import RECIPIENT, SENDER, loopback_probe, run
from tests.support.loopback_smtpd import Behaviour, smtpd


def sent(result: RunResult) -> list[str]:
    return [line.text for line in result.transcript.lines if line.direction is Direction.SENT]


def test_a_server_offering_dsn_gets_ret_envid_and_notify() -> None:
    handler = Behaviour(offer_dsn=True)
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    # aiosmtpd upper-cases the parameters it hands its handler.
    assert handler.mail_options == [["RET=HDRS", f"ENVID={result.run_id.upper()}"]]
    assert handler.rcpt_options == [["NOTIFY=FAILURE,DELAY"]]
    commands = sent(result)
    assert f"MAIL FROM:<{SENDER}> RET=HDRS ENVID={result.run_id}" in commands
    assert f"RCPT TO:<{RECIPIENT}> NOTIFY=FAILURE,DELAY" in commands


def test_a_server_without_dsn_gets_the_bare_envelope() -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    assert handler.mail_options == [[]]
    assert handler.rcpt_options == [[]]
    commands = sent(result)
    assert f"MAIL FROM:<{SENDER}>" in commands
    assert f"RCPT TO:<{RECIPIENT}>" in commands
    assert not any("ENVID" in line or "NOTIFY" in line for line in commands)


def test_dsn_parameters_refused_with_555_are_dropped_once_and_the_message_still_goes() -> None:
    handler = Behaviour(offer_dsn=True, refuse_dsn_parameters=True)
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    assert handler.mail_options == [[]]
    assert handler.rcpt_options == [[]]
    assert len(handler.messages) == 1
    commands = sent(result)
    assert commands.count(f"MAIL FROM:<{SENDER}> RET=HDRS ENVID={result.run_id}") == 1
    assert commands.count(f"MAIL FROM:<{SENDER}>") == 1
    assert commands.count(f"RCPT TO:<{RECIPIENT}> NOTIFY=FAILURE,DELAY") == 1
    assert commands.count(f"RCPT TO:<{RECIPIENT}>") == 1
    received = [
        line.text for line in result.transcript.lines if line.direction is Direction.RECEIVED
    ]
    assert any(text.startswith("555") for text in received)
    notes = [line.text for line in result.transcript.lines if line.direction is Direction.NOTE]
    assert sum("refused its parameters" in note for note in notes) == 2


def test_a_refusal_other_than_555_is_not_retried() -> None:
    handler = Behaviour(offer_dsn=True, mail_reply="550 5.7.1 sender rejected")
    with smtpd(handler) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.smtp.reply_code == 550
    assert sum(line.startswith("MAIL FROM") for line in sent(result)) == 1
