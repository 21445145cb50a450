"""The status page: every probe's recent scheduled runs, for a person, from a jinja2 template.

Everything a server sent us (banners, replies, error text) is text, never
markup: the template is rendered with autoescape on and nothing here is
marked safe. No JavaScript and no external assets: the CSS and the
sparklines (inline SVG) are part of the page, which refreshes itself.
This module turns a :class:`Status` into plain view values (words,
colours, coordinates); the template only lays them out.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import jinja2

from smtp_probe import __version__
from smtp_probe.history import RunPoint
from smtp_probe.probe.dsn import describe_bounce
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.transcript import Direction
from smtp_probe.report import verdict
from smtp_probe.server.interface import ProbeStatus, Status

REFRESH_SECONDS: Final = 15
SPARK_WIDTH: Final = 150
SPARK_HEIGHT: Final = 34
_SPARK_PAD: Final = 4.0

_ENV: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("smtp_probe.server", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Tone(enum.StrEnum):
    """The colour of an outcome: green, amber, red, or grey before the first run."""

    OK = "ok"
    WARN = "warn"
    BAD = "bad"
    NONE = "none"


def tone(outcome: Outcome) -> Tone:
    """Delivered or sent is green, junk and throttled amber, every failure red."""
    if outcome in (Outcome.DELIVERED, Outcome.SENT):
        return Tone.OK
    if outcome in (Outcome.JUNK, Outcome.THROTTLED):
        return Tone.WARN
    return Tone.BAD


@dataclass(frozen=True, slots=True)
class Cell:
    """One run in the outcome strip."""

    tone: Tone
    outcome: str
    title: str


@dataclass(frozen=True, slots=True)
class SparkPoint:
    """One delivery time on the sparkline, in SVG user units."""

    x: float
    y: float
    title: str


@dataclass(frozen=True, slots=True)
class Sparkline:
    """The delivery times of the recent runs; runs without one leave a gap in the line."""

    path: str
    """SVG path data: ``M`` starts a segment (first point, or after a gap), ``L`` continues."""
    points: tuple[SparkPoint, ...]
    low: str
    high: str
    title: str
    width: int = SPARK_WIDTH
    height: int = SPARK_HEIGHT


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """A transcript line and who spoke: ``client``, ``server`` or the probe's own ``note``."""

    speaker: str
    text: str


@dataclass(frozen=True, slots=True)
class LastRunView:
    """The last scheduled run of a probe, as words."""

    tone: Tone
    outcome: str
    where: str
    """The failing stage and reply code, or the folder the message landed in."""
    error: str
    delivery: str
    tls: str
    ago: str
    at: str
    transcript: tuple[TranscriptLine, ...]
    verdict: str
    bounce: str = ""
    """The run's last delivery status notification (``failed 5.1.1 <rcpt> (...)``), or ``""``."""


@dataclass(frozen=True, slots=True)
class ProbeView:
    """One probe's row, strip, sparkline and transcript, as words and numbers."""

    name: str
    running: bool
    every: str
    last: LastRunView | None
    last_success: str
    last_success_at: str
    strip: tuple[Cell, ...]
    sparkline: Sparkline | None

    @property
    def tone(self) -> Tone:
        """The colour of the last outcome (grey before the first run)."""
        return self.last.tone if self.last is not None else Tone.NONE


def render_status_page(status: Status, *, now: float) -> str:
    """The whole HTML page for ``status`` as of Unix time ``now``."""
    probes = [_probe_view(probe, status.history_size, now) for probe in status.probes]
    counts = {tone: sum(1 for p in probes if p.tone is tone) for tone in Tone}
    return _ENV.get_template("status.html").render(
        version=__version__,
        refresh=REFRESH_SECONDS,
        generated=_clock(now),
        history_size=status.history_size,
        probes=probes,
        counts=counts,
        mailboxes=status.mailboxes,
        mailboxes_up=sum(1 for m in status.mailboxes if m.up),
    )


def _probe_view(probe: ProbeStatus, history_size: int, now: float) -> ProbeView:
    success = probe.last_success_at
    return ProbeView(
        name=probe.name,
        running=probe.running,
        every=_every(probe.interval),
        last=_last_run_view(probe.last, now) if probe.last is not None else None,
        last_success=_ago(now - success) if success is not None else "never",
        last_success_at=_clock(success) if success is not None else "",
        strip=tuple(_cell(point) for point in probe.recent),
        sparkline=sparkline(probe.recent, history_size),
    )


def _last_run_view(last: RunResult, now: float) -> LastRunView:
    finished = last.started_at.timestamp() + last.duration_seconds
    return LastRunView(
        tone=tone(last.outcome),
        outcome=str(last.outcome),
        where=_where(last),
        error=last.error,
        delivery=_duration(last.delivery_seconds) if last.delivery_seconds is not None else "",
        tls=last.smtp.tls_version or "",
        ago=_ago(now - finished),
        at=_clock(finished),
        transcript=tuple(
            TranscriptLine(_SPEAKERS[line.direction], line.render())
            for line in last.transcript.lines
        ),
        verdict=verdict(last),
        bounce=f"{last.bounces[-1].action} {describe_bounce(last.bounces[-1])}"
        if last.bounces
        else "",
    )


def _cell(point: RunPoint) -> Cell:
    delivery = point.delivery_seconds
    took = f" in {_duration(delivery)}" if delivery is not None else ""
    return Cell(
        tone(point.outcome),
        str(point.outcome),
        f"{_clock(point.finished_at)}: {point.outcome}{took}",
    )


_SPEAKERS: Final = {
    Direction.SENT: "client",
    Direction.SENT_TLS: "client",
    Direction.RECEIVED: "server",
    Direction.RECEIVED_TLS: "server",
    Direction.NOTE: "note",
}


def sparkline(points: Sequence[RunPoint], slots: int) -> Sparkline | None:
    """The delivery times of ``points`` on a ``slots``-wide axis, newest at the right.

    ``None`` when no run has a delivery time. The vertical axis spans the
    lowest to the highest time shown (a flat line in the middle when they
    are equal); a run without a delivery time breaks the line.
    """
    times = [p.delivery_seconds for p in points if p.delivery_seconds is not None]
    if not times:
        return None
    low, high = min(times), max(times)
    step = (SPARK_WIDTH - 2 * _SPARK_PAD) / max(slots - 1, 1)
    first_slot = max(slots - len(points), 0)
    commands: list[str] = []
    marks: list[SparkPoint] = []
    previous_had_time = False
    for index, point in enumerate(points):
        seconds = point.delivery_seconds
        if seconds is None:
            previous_had_time = False
            continue
        x = _SPARK_PAD + (first_slot + index) * step
        if high > low:
            y = _SPARK_PAD + (high - seconds) / (high - low) * (SPARK_HEIGHT - 2 * _SPARK_PAD)
        else:
            y = SPARK_HEIGHT / 2
        commands.append(f"{'L' if previous_had_time else 'M'}{x:.1f},{y:.1f}")
        marks.append(SparkPoint(round(x, 1), round(y, 1), f"{_clock(point.finished_at)}: "
                                f"{_duration(seconds)}"))  # fmt: skip
        previous_had_time = True
    gaps = len(points) - len(times)
    title = (
        f"Delivery time of the last {len(points)} run(s): lowest {_duration(low)}, "
        f"highest {_duration(high)}"
        + (f"; {gaps} run(s) without a delivery leave gaps" if gaps else "")
    )
    return Sparkline(
        path=" ".join(commands),
        points=tuple(marks),
        low=_duration(low),
        high=_duration(high),
        title=title,
    )


def _where(result: RunResult) -> str:
    if result.stage is not None:
        reply = f" [{result.smtp.reply_code}]" if result.smtp.reply_code else ""
        return f"at {result.stage}{reply}"
    if result.folder:
        return f"in {result.folder}"
    return f"[{result.smtp.reply_code}]" if result.smtp.reply_code else ""


def _duration(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f} min {rest:.0f} s"


def _every(interval: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if interval >= size and interval % size == 0:
            return f"every {interval / size:g} {unit}"
    return f"every {interval:g} s"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _clock(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
