"""RunResult values as ``run_probe`` builds them, for tests and benches that need a result but no run.

One factory, :func:`run_result`, so that a change to ``RunResult`` is made
in one place. Its defaults describe a plain run (no STARTTLS, no AUTH) of
probe ``route-a`` that was delivered to INBOX; every field a caller cares
about is a keyword.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from smtp_probe.probe.hops import parse_hops
from smtp_probe.probe.result import (
    SMTP_STAGES,
    Arrival,
    AuthVerdict,
    Hop,
    Outcome,
    ReflectorLegs,
    RunResult,
    SmtpReport,
    Stage,
    Verdicts,
)
from smtp_probe.probe.transcript import Transcript

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
"""When every run starts unless told otherwise."""
DURATION = 1.25
"""Seconds every run takes unless told otherwise."""
RUN_ID = "9f2c4e1ab07d5c33"
QUEUE_ID = "4XyZ12"
PLAIN_STAGES: tuple[Stage, ...] = tuple(
    stage for stage in SMTP_STAGES if stage not in (Stage.STARTTLS, Stage.AUTH)
)
"""The stages of a plain SMTP session (no STARTTLS, no AUTH) that reached the end of DATA."""
STAGE_SECONDS: Mapping[Stage, float] = MappingProxyType(
    {stage: (n + 1) / 1000 for n, stage in enumerate(PLAIN_STAGES)}
)
"""Seconds per stage of a plain SMTP session: 1 ms for the first stage, 2 ms for the next..."""


class _Unset(enum.Enum):
    """A keyword the caller left out, where ``None`` is a value a caller may mean."""

    UNSET = enum.auto()


def stages_reached(stage: Stage | None) -> dict[Stage, float]:
    """:data:`STAGE_SECONDS` up to and including ``stage`` when the run failed in SMTP.

    A run that failed later (IMAP, delivery) or did not fail went through
    every SMTP stage.
    """
    if stage not in SMTP_STAGES:
        return dict(STAGE_SECONDS)
    last = SMTP_STAGES.index(stage)
    return {s: t for s, t in STAGE_SECONDS.items() if SMTP_STAGES.index(s) <= last}


def run_result(
    probe: str = "route-a",
    outcome: Outcome = Outcome.DELIVERED,
    *,
    stage: Stage | None = None,
    error: str = "",
    delivery: float | None = None,
    started_at: datetime = STARTED,
    duration: float = DURATION,
    run_id: str = RUN_ID,
    reply_code: int | None = 250,
    reply: str = f"2.0.0 Ok: queued as {QUEUE_ID}",
    queue_id: str | _Unset | None = _Unset.UNSET,
    stage_seconds: Mapping[Stage, float] | None = None,
    accepted_at: float | None = None,
    tls_version: str | None = None,
    transcript: Transcript | None = None,
    folder: str | None = None,
    received: tuple[str, ...] = (),
    internaldate: datetime | None = None,
    reflector: ReflectorLegs | None = None,
    hops: tuple[Hop, ...] | None = None,
) -> RunResult:
    """A finished run, with the fields ``run_probe`` would fill for that outcome.

    Defaults, each replaced by its keyword:

    * a delivered or junk run gets an arrival (UID 7) in ``folder``, which
      defaults to INBOX or Junk by outcome, with ``received`` headers and
      ``internaldate``, and ``hops`` parsed from ``received`` unless given;
      ``delivery`` defaults to 0.25 s for it;
    * ``stage_seconds`` are :func:`stages_reached` for ``stage``;
    * ``queue_id`` is :data:`QUEUE_ID`, or ``None`` for a run that failed at
      an SMTP stage (no queue id before DATA is accepted);
    * the transcript is empty, on a clock fixed at 0;
    * ``reflector`` legs only when given.

    The reply (``reply_code``, ``reply``) is the ``250`` that queued the
    message unless the caller gives a failure's reply.
    """
    arrival = None
    if outcome in (Outcome.DELIVERED, Outcome.JUNK):
        junk = outcome is Outcome.JUNK
        arrival = Arrival(
            uid=7,
            folder=folder or ("Junk" if junk else "INBOX"),
            seen_at=0.0,
            internaldate=internaldate,
            received=received,
            junk=junk,
            hops=parse_hops(received) if hops is None else hops,
        )
        delivery = 0.25 if delivery is None else delivery
    if isinstance(queue_id, _Unset):
        queue_id = None if stage in SMTP_STAGES else QUEUE_ID
    return RunResult(
        probe=probe,
        run_id=run_id,
        outcome=outcome,
        stage=stage,
        error=error,
        started_at=started_at,
        duration_seconds=duration,
        smtp=SmtpReport(
            reply_code=reply_code,
            reply=reply,
            queue_id=queue_id,
            stage_seconds=stages_reached(stage) if stage_seconds is None else stage_seconds,
            tls_version=tls_version,
            accepted_at=accepted_at,
        ),
        transcript=transcript if transcript is not None else Transcript(clock=lambda: 0.0),
        delivery_seconds=delivery,
        arrival=arrival,
        reflector=reflector,
    )


def verdicts_of(result: RunResult) -> Verdicts:
    """The verdicts a real run read from its message before deleting it.

    Raises:
        AssertionError: the message did not arrive, was not deleted, or had no verdicts read.
    """
    assert result.arrival is not None
    assert result.arrival.deleted
    assert result.arrival.verdicts is not None
    return result.arrival.verdicts


def own_dkim_of(result: RunResult) -> AuthVerdict:
    """The run's own DKIM check (``verify_dkim``) of its message.

    Raises:
        AssertionError: see :func:`verdicts_of`; or the run did not check DKIM itself.
    """
    own = verdicts_of(result).own_dkim
    assert own is not None
    return own
