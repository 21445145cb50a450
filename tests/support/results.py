"""RunResult values as ``run_probe`` builds them, for tests that need a result but no run."""

from __future__ import annotations

from datetime import UTC, datetime

from smtp_probe.probe.result import Arrival, Outcome, RunResult, SmtpReport, Stage
from smtp_probe.probe.transcript import Transcript

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run_result(
    probe: str = "route-a",
    outcome: Outcome = Outcome.DELIVERED,
    *,
    stage: Stage | None = None,
    error: str = "",
    delivery: float | None = None,
    started_at: datetime = STARTED,
    duration: float = 1.25,
    reply_code: int | None = 250,
    reply: str = "2.0.0 Ok: queued as 4XyZ12",
    tls_version: str | None = None,
    transcript: Transcript | None = None,
) -> RunResult:
    """A finished run; delivered and junk runs get an arrival in INBOX or Junk.

    A delivered or junk run without ``delivery`` seconds gets 0.25 s.
    """
    arrival = None
    if outcome in (Outcome.DELIVERED, Outcome.JUNK):
        junk = outcome is Outcome.JUNK
        arrival = Arrival(uid=7, folder="Junk" if junk else "INBOX", seen_at=0.0, junk=junk)
        delivery = 0.25 if delivery is None else delivery
    return RunResult(
        probe=probe,
        run_id="9f2c4e1ab07d5c33",
        outcome=outcome,
        stage=stage,
        error=error,
        started_at=started_at,
        duration_seconds=duration,
        smtp=SmtpReport(
            reply_code=reply_code, reply=reply, queue_id="4XyZ12", tls_version=tls_version
        ),
        transcript=transcript if transcript is not None else Transcript(clock=lambda: 0.0),
        delivery_seconds=delivery,
        arrival=arrival,
    )
