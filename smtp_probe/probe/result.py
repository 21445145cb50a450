"""Plain, frozen values describing how a run went: outcome, stage, timings, replies."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from smtp_probe.probe.transcript import Transcript


class Outcome(enum.StrEnum):
    """How a run ended (a public contract: metric label values and JSON)."""

    DELIVERED = "delivered"
    JUNK = "junk"
    SENT = "sent"
    """Accepted by SMTP; delivery not checked (``check`` without ``--imap``)."""
    SEND_FAILED = "send_failed"
    THROTTLED = "throttled"
    """The SMTP server turned the message away for now because of rate or
    connection limits (a ``4xx`` that says so): a temporary refusal, not a
    broken route."""
    NOT_DELIVERED = "not_delivered"
    BOUNCED = "bounced"
    ERROR = "error"


class Stage(enum.StrEnum):
    """Where a run was when it ended; mirrors swaks' exit-code stages (a contract)."""

    OAUTH = "oauth"
    """Getting an OAuth2 access token, before anything is sent."""
    DNS = "dns"
    CONNECT = "connect"
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL_FROM = "mail_from"
    RCPT_TO = "rcpt_to"
    DATA = "data"
    IMAP_CONNECT = "imap_connect"
    IMAP_STARTTLS = "imap_starttls"
    IMAP_LOGIN = "imap_login"
    IMAP_SELECT = "imap_select"
    DELIVERY = "delivery"
    CLEANUP = "cleanup"


SMTP_STAGES: tuple[Stage, ...] = (
    Stage.DNS,
    Stage.CONNECT,
    Stage.BANNER,
    Stage.EHLO,
    Stage.STARTTLS,
    Stage.AUTH,
    Stage.MAIL_FROM,
    Stage.RCPT_TO,
    Stage.DATA,
)
IMAP_STAGES: tuple[Stage, ...] = (
    Stage.IMAP_CONNECT,
    Stage.IMAP_STARTTLS,
    Stage.IMAP_LOGIN,
    Stage.IMAP_SELECT,
)


def _frozen_timings(timings: Mapping[Stage, float] | None) -> Mapping[Stage, float]:
    return MappingProxyType(dict(timings or {}))


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What one TLS connection was: protocol, cipher and the peer's certificate.

    Read from the binary certificate, so the facts are there with
    verification off too. Python 3.11 hands over only the peer (leaf)
    certificate, not the chain: ``not_after`` is the leaf's.
    """

    version: str | None
    cipher: str | None
    subject: str
    """The subject as an RFC 4514 string, e.g. ``CN=mx.example.test``."""
    issuer: str
    not_after: float | None
    """The certificate's notAfter as epoch seconds; ``None`` without a certificate."""
    verified: bool
    """The chain and host name were checked during the handshake (verification on)."""

    def days_left(self, now: float) -> float | None:
        """Days from ``now`` (epoch seconds) until ``not_after``; negative once expired."""
        return None if self.not_after is None else (self.not_after - now) / 86400.0


@dataclass(frozen=True, slots=True)
class SmtpReport:
    """What the SMTP leg saw: the last reply, the queue id, and seconds per stage."""

    reply_code: int | None = None
    reply: str = ""
    queue_id: str | None = None
    stage_seconds: Mapping[Stage, float] = field(default_factory=lambda: _frozen_timings(None))
    tls_version: str | None = None
    accepted_at: float | None = None
    """Monotonic time of the ``250`` that accepted DATA; the start of delivery."""
    tls: TlsFacts | None = None
    """The TLS connection the message went over; ``None`` without TLS."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """The probe message as found in the mailbox."""

    uid: int
    folder: str
    seen_at: float
    """Monotonic time at which the watcher saw the message."""
    internaldate: datetime | None = None
    received: tuple[str, ...] = ()
    """``Received:`` headers, newest first, for per-hop diagnosis."""
    junk: bool = False
    """Found in a junk folder rather than the watched one."""
    deleted: bool = False
    cleanup_error: str | None = None
    by_subject: bool = False
    """Recognised by the token in its Subject (a reflector's reply), not by our header."""
    date: datetime | None = None
    """Its ``Date:`` header: for a reply, when the reflector wrote it."""
    tls: TlsFacts | None = None
    """The TLS facts of the IMAP session that saw the message; ``None`` without TLS."""


@dataclass(frozen=True, slots=True)
class ReflectorLegs:
    """A reflector run's delivery time, split where the reflector answered.

    ``outbound_seconds`` runs from our ``250`` to the reflector's timestamp
    (second resolution, another host's clock: clamped to the delivery
    time), ``return_seconds`` from there to our watcher seeing the reply.
    The two add up to the delivery time.
    """

    outbound_seconds: float
    return_seconds: float
    source: str
    """Where the reflector's time came from: ``"Date"`` or ``"Received"``."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """The whole story of one run; ``run_probe`` always returns one, never raises."""

    probe: str
    run_id: str
    outcome: Outcome
    stage: Stage | None
    """Where a failed run stopped; ``None`` when it succeeded."""
    error: str
    """One human line about the failure (empty on success). Never holds secrets."""
    started_at: datetime
    duration_seconds: float
    smtp: SmtpReport
    transcript: Transcript
    delivery_seconds: float | None = None
    arrival: Arrival | None = None
    reflector: ReflectorLegs | None = None
    """A reflector run that got its reply: where the delivery time went."""

    @property
    def success(self) -> bool:
        """True when the mail went where it should (or was accepted, for SMTP-only checks)."""
        return self.outcome in (Outcome.DELIVERED, Outcome.SENT)

    @property
    def folder(self) -> str | None:
        """The folder the message was found in, if it arrived."""
        return self.arrival.folder if self.arrival else None
