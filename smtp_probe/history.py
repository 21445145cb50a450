"""The recent scheduled runs of each probe, for the status page's strip and sparkline.

Metrics already hold the aggregate facts (counts, last success, in flight);
this keeps what they cannot: the last few runs one by one, and the last
run's full result with its transcript. Only the last result is kept in
full, so a thousand probes cost a thousand transcripts, not thirty
thousand. Like the metrics, it holds configured probes only: a reload that
removes a probe clears its history, and a result of a probe removed while
it ran is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from smtp_probe.probe.result import Outcome, RunResult

HISTORY_SIZE: Final = 30
"""Runs kept per probe: an hour of a two-minute probe, at a glance."""


@dataclass(frozen=True, slots=True)
class RunPoint:
    """One scheduled run, reduced to what a strip cell and a sparkline point show."""

    outcome: Outcome
    finished_at: float
    """Unix time the run finished."""
    delivery_seconds: float | None
    """``None`` for runs without a delivery (failures, SMTP-only probes)."""

    @classmethod
    def of(cls, result: RunResult) -> RunPoint:
        """The point of one finished run."""
        return cls(
            outcome=result.outcome,
            finished_at=result.started_at.timestamp() + result.duration_seconds,
            delivery_seconds=result.delivery_seconds,
        )


@dataclass
class _Probe:
    points: deque[RunPoint]
    last: RunResult | None = None


class RunHistory:
    """The last ``size`` scheduled runs of each configured probe, the latest in full."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        if size < 1:
            raise ValueError(f"history size must be at least 1, not {size}")
        self.size = size
        self._probes: dict[str, _Probe] = {}

    def configure(self, names: Iterable[str]) -> None:
        """Keep the history of these probes, start an empty one for new ones, drop the rest."""
        wanted = set(names)
        for name in self._probes.keys() - wanted:
            del self._probes[name]
        for name in wanted - self._probes.keys():
            self._probes[name] = _Probe(deque(maxlen=self.size))

    def record(self, result: RunResult) -> None:
        """Add a finished scheduled run; ignored for a probe that is not configured (any more)."""
        probe = self._probes.get(result.probe)
        if probe is None:
            return
        probe.points.append(RunPoint.of(result))
        probe.last = result

    def recent(self, name: str) -> tuple[RunPoint, ...]:
        """The probe's last runs, oldest first; empty for an unknown probe."""
        probe = self._probes.get(name)
        return tuple(probe.points) if probe is not None else ()

    def last(self, name: str) -> RunResult | None:
        """The probe's last run in full, or ``None`` before its first (or if unknown)."""
        probe = self._probes.get(name)
        return probe.last if probe is not None else None
