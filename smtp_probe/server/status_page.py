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
from smtp_probe.probe.result import DnsCheckResult, Hop, Outcome, RunResult, TlsFacts
from smtp_probe.probe.transcript import Direction
from smtp_probe.report import HOPS_CAVEAT, hop_delay, verdict
from smtp_probe.server.interface import ProbeStatus, Status

REFRESH_SECONDS: Final = 15
SPARK_WIDTH: Final = 150
SPARK_HEIGHT: Final = 34
_SPARK_PAD: Final = 4.0
EXPIRY_WARN_DAYS: Final = 14
"""Fewer days left than this is amber (the ticket alert's threshold)."""
EXPIRY_BAD_DAYS: Final = 3
"""Fewer days left than this is red (the paging alert's threshold)."""

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
    """Delivered, sent or rejected is green; junk, throttled, auth_failed amber; failures red.

    ``rejected`` is a policy probe refused as it expects; ``accepted_unexpectedly`` is red.
    """
    if outcome in (Outcome.DELIVERED, Outcome.SENT, Outcome.REJECTED):
        return Tone.OK
    if outcome in (Outcome.JUNK, Outcome.THROTTLED, Outcome.AUTH_FAILED):
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
class HopView:
    """One ``Received:`` hop of the last run's message, as words (all of it server text)."""

    index: int
    by: str
    from_: str
    with_: str
    tls: str
    at: str
    delay: str
    skewed: bool


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
    hops: tuple[HopView, ...] = ()
    """The message's hops, oldest first; empty when it was not seen."""
    hops_caveat: str = HOPS_CAVEAT
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


@dataclass(frozen=True, slots=True)
class TlsLegView:
    """One leg (``smtp``, ``imap``) of a probe's last run that spoke TLS, as words."""

    probe: str
    leg: str
    version: str
    cipher: str
    subject: str
    issuer: str
    verified: bool
    days_left: str
    """E.g. ``84 days``, ``2.0 days``, ``expired 1.5 days ago``; ``unknown`` without a certificate."""
    expires: str
    """The notAfter as a UTC clock time; empty without a certificate."""
    tone: Tone
    """Red under :data:`EXPIRY_BAD_DAYS` (or expired), amber under :data:`EXPIRY_WARN_DAYS`."""
    expiring_subject: str = ""
    """The chain's certificate that expires first when it is not the server's own
    (an intermediate; known on Python 3.13+ only)."""


def tls_legs(probe: str, result: RunResult, now: float) -> tuple[TlsLegView, ...]:
    """The TLS legs of ``result``: SMTP, then IMAP (only once the message arrived).

    The IMAP leg's facts come with the arrival, so a run that failed before
    the message was found shows its SMTP leg only.
    """
    imap = result.arrival.tls if result.arrival is not None else None
    return tuple(
        _tls_leg_view(probe, leg, facts, now)
        for leg, facts in (("smtp", result.smtp.tls), ("imap", imap))
        if facts is not None
    )


def _tls_leg_view(probe: str, leg: str, facts: TlsFacts, now: float) -> TlsLegView:
    left = facts.days_left(now)
    if left is None:
        days, tone_ = "unknown", Tone.NONE
    else:
        if left < 0:
            days = f"expired {-left:.1f} days ago"
        else:
            days = f"{left:.1f} days" if left < EXPIRY_WARN_DAYS else f"{left:.0f} days"
        tone_ = (
            Tone.BAD
            if left < EXPIRY_BAD_DAYS
            else Tone.WARN
            if left < EXPIRY_WARN_DAYS
            else Tone.OK
        )
    return TlsLegView(
        probe=probe,
        leg=leg,
        version=facts.version or "unknown",
        cipher=facts.cipher or "unknown",
        subject=facts.subject,
        issuer=facts.issuer,
        verified=facts.verified,
        days_left=days,
        expires=_clock(facts.not_after) if facts.not_after is not None else "",
        tone=tone_,
        expiring_subject=facts.expiring_subject,
    )


@dataclass(frozen=True, slots=True)
class DnsCheckView:
    """One DNS check of a probe, as words (reason and evidence are DNS and HTTPS text)."""

    check: str
    tone: Tone
    """Green passed, red failed, grey not run yet."""
    verdict: str
    """``ok``, ``failed`` or ``not run yet``."""
    reason: str
    evidence: tuple[str, ...]
    policy: str = ""
    """``dmarc``: the published ``p=``; ``mta_sts``: the policy's mode; else empty."""
    listed: str = ""
    """``dnsbl``: the zones listing a sending IP, comma-separated; else empty."""


@dataclass(frozen=True, slots=True)
class DnsView:
    """A probe's DNS checks: each check's last verdict, and when they last ran."""

    probe: str
    every: str
    ago: str
    """How long ago the last round finished; empty before the first."""
    at: str
    checks: tuple[DnsCheckView, ...]

    @property
    def tone(self) -> Tone:
        """Red when a check failed, grey before the first round, else green."""
        tones = {check.tone for check in self.checks}
        if Tone.BAD in tones:
            return Tone.BAD
        return Tone.NONE if Tone.NONE in tones or not tones else Tone.OK


def dns_views(status: Status, now: float) -> tuple[DnsView, ...]:
    """A :class:`DnsView` per probe with DNS checks, in the config's order."""
    return tuple(_dns_view(probe, now) for probe in status.probes if probe.dns_checks or probe.dns)


def _dns_view(probe: ProbeStatus, now: float) -> DnsView:
    report = probe.dns
    every = _every(probe.dns_interval) if probe.dns_interval is not None else ""
    if report is None:
        pending = tuple(
            DnsCheckView(check, Tone.NONE, "not run yet", "", ()) for check in probe.dns_checks
        )
        return DnsView(probe.name, every, "", "", pending)
    finished = report.started_at.timestamp() + report.duration_seconds
    return DnsView(
        probe=probe.name,
        every=every,
        ago=_ago(now - finished),
        at=_clock(finished),
        checks=tuple(_dns_check_view(result) for result in report.results),
    )


def _dns_check_view(result: DnsCheckResult) -> DnsCheckView:
    return DnsCheckView(
        check=result.check,
        tone=Tone.OK if result.ok else Tone.BAD,
        verdict="ok" if result.ok else "failed",
        reason=result.reason,
        evidence=result.evidence,
        policy=result.policy or "",
        listed=", ".join(zone for zone, listed in result.listed if listed),
    )


def render_status_page(status: Status, *, now: float) -> str:
    """The whole HTML page for ``status`` as of Unix time ``now``."""
    probes = [_probe_view(probe, status.history_size, now) for probe in status.probes]
    tls = [
        leg
        for probe in status.probes
        if probe.last is not None
        for leg in tls_legs(probe.name, probe.last, now)
    ]
    counts = {tone: sum(1 for p in probes if p.tone is tone) for tone in Tone}
    return _ENV.get_template("status.html").render(
        version=__version__,
        refresh=REFRESH_SECONDS,
        generated=_clock(now),
        history_size=status.history_size,
        instance=status.instance,
        probes=probes,
        counts=counts,
        mailboxes=status.mailboxes,
        mailboxes_up=sum(1 for m in status.mailboxes if m.up),
        tls_legs=tls,
        dns=dns_views(status, now),
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
        bounce=f"{last.bounces[-1].action} {last.bounces[-1].describe()}" if last.bounces else "",
        hops=tuple(_hop_view(index, hop) for index, hop in enumerate(last.arrival.hops))
        if last.arrival is not None
        else (),
    )


def _hop_view(index: int, hop: Hop) -> HopView:
    return HopView(
        index=index,
        by=hop.by or "?",
        from_=hop.from_ or "?",
        with_=hop.with_ or "?",
        tls="yes" if hop.tls else "no",
        at=_clock(hop.at) if hop.at is not None else "?",
        delay=hop_delay(hop, first=index == 0),
        skewed=hop.skewed,
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
    """Where the run ended, and for a policy probe which check it was (``open_relay: ...``)."""
    policy = f"{result.policy_check}: " if result.policy_check else ""
    reply = f"[{result.smtp.reply_code}]" if result.smtp.reply_code else ""
    if result.stage is not None:
        return f"{policy}at {result.stage}" + (f" {reply}" if reply else "")
    if result.outcome is Outcome.REJECTED:
        return f"{policy}refused" + (f" {reply}" if reply else "")
    if result.folder:
        return f"in {result.folder}"
    return reply


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
