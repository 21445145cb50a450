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
    """A delivery status notification (RFC 3464) about this run came back: failed."""
    AUTH_FAILED = "auth_failed"
    """Delivered, but without the SPF/DKIM/DMARC results the probe requires."""
    REJECTED = "rejected"
    """A probe that expects a refusal (``expect``, a built-in ``check``) was
    refused as expected: a success. A smuggling check whose smuggled message
    was not accepted ends so too."""
    ACCEPTED_UNEXPECTEDLY = "accepted_unexpectedly"
    """A probe that expects a refusal was accepted: an open relay, AUTH in the
    clear, a forged sender taken, a smuggled message delivered."""
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
    VERIFY = "verify"
    """Checks of the arrived message (authentication results)."""
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
    verification off too. ``not_after`` is the earliest notAfter of the
    chain the server presented where Python can hand that chain over: its
    public ``get_unverified_chain()`` exists from Python 3.13 (Debian 13).
    On Python 3.11 and 3.12 only the peer (leaf) certificate is available
    without private APIs, so ``not_after`` is the leaf's and an
    intermediate that expires first goes unnoticed; :attr:`chain_length`
    says which of the two was done.
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
    chain_length: int | None = None
    """How many certificates the server presented (``not_after`` is the earliest of
    them); ``None`` when this Python reads only the leaf (before 3.13)."""
    expiring_subject: str = ""
    """Subject of the presented certificate that expires first when that is not the
    leaf (an intermediate); empty when it is the leaf or only the leaf was read."""

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
    mx_host: str | None = None
    """The MX host the message went to (a server given as ``mx: <domain>``)."""


@dataclass(frozen=True, slots=True)
class Hop:
    """One ``Received:`` line of the arrived message: one MTA's hand-over.

    Hops are in the order the message travelled (oldest first): hop 0 is
    the first server that took it from us.
    """

    by: str | None
    """The receiving host (``by`` clause), as the MTA wrote it."""
    from_: str | None
    """The sending host (``from`` clause), as the MTA wrote it."""
    with_: str | None
    """The protocol (``with`` clause), e.g. ``ESMTPSA``, ``LMTPS``."""
    tls: bool
    """The hop was over TLS (``ESMTPS``/``ESMTPSA``/``LMTPS``..., or a ``TLS`` comment)."""
    at: float | None
    """When this MTA received it (epoch seconds, its own clock); ``None`` if unparseable."""
    delay_seconds: float | None
    """Seconds since the previous hop's time; ``None`` for hop 0, a missing
    time, or a negative gap (see :attr:`skewed`)."""
    skewed: bool = False
    """Its time is before the previous hop's: the two clocks disagree."""


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """One method's result from the receiver's ``Authentication-Results`` (RFC 8601)."""

    method: str
    """``spf``, ``dkim``, ``dmarc``, ``arc``..."""
    result: str
    """``pass``, ``fail``, ``softfail``, ``neutral``, ``none``, ``temperror``, ``permerror``..."""
    detail: str = ""
    """Properties worth showing, e.g. ``header.d=example.test``; a reason."""


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What the receiving side said about the arrived message, and what we checked ourselves."""

    authserv_id: str | None
    """The authserv-id whose headers were believed; ``None``: none configured, none believed."""
    results: tuple[AuthVerdict, ...] = ()
    ignored: int = 0
    """``Authentication-Results`` headers from another authserv-id (possibly forged)."""
    spam_score: float | None = None
    spam_threshold: float | None = None
    spam_source: str | None = None
    """The header the score came from, e.g. ``X-Spamd-Result``, ``X-Spam-Status``."""
    own_dkim: AuthVerdict | None = None
    """Our own DKIM verification of the message (``verify_dkim``), beside the receiver's."""
    notes: tuple[str, ...] = ()
    """What could not be read (an unparseable header, a believed header below a
    foreign one): shown in the transcript, never fatal to the run."""

    def result(self, method: str) -> str:
        """The believed result of ``method``; ``none`` when the receiver gave none."""
        for verdict in self.results:
            if verdict.method == method:
                return verdict.result
        return "none"


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery status notification (RFC 3464) about this run, read off the bounce mailbox."""

    action: str
    """``failed``, ``delayed``, ``delivered``, ``relayed``, ``expanded``."""
    status: str
    """The enhanced status code, e.g. ``5.1.1``."""
    recipient: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None
    """``Diagnostic-Code``, e.g. ``smtp; 550 5.1.1 <x@example.test> User unknown``."""
    reporting_mta: str | None = None
    seen_at: float | None = None
    """Monotonic time the watcher saw the report."""

    @property
    def status_class(self) -> str:
        """``2``, ``4`` or ``5`` (the first digit of :attr:`status`), for metric labels."""
        return self.status[:1] if self.status[:1] in ("2", "4", "5") else "unknown"

    def describe(self) -> str:
        """One line: ``5.1.1 <rcpt> (remote mta: ...; smtp; 550 5.1.1 ...)``.

        The diagnostic is the server's text: for reasons and transcripts, never labels.
        """
        where = self.remote_mta or self.reporting_mta
        detail = "; ".join(
            part
            for part in (f"remote mta: {where}" if where else "", self.diagnostic or "")
            if part
        )
        recipient = f" <{self.recipient}>" if self.recipient else ""
        return f"{self.status}{recipient}" + (f" ({detail})" if detail else "")


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
    hops: tuple[Hop, ...] = ()
    """:attr:`received` parsed, oldest first, with per-hop delays."""
    verdicts: Verdicts | None = None
    """Authentication results and spam score; ``None`` until read."""


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
class SmugglingVerdict:
    """One end-of-data variant of the ``smtp_smuggling`` check and what the server did with it."""

    variant: str
    """The variant's name, e.g. ``lf_dot_crlf`` (``<LF>.<CR><LF>``)."""
    accepted: bool
    """The smuggled second message was accepted (an extra ``250``) or arrived: vulnerable."""
    evidence: str
    """One line for the transcript and the reason: the replies seen, the token found."""


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
    bounces: tuple[Bounce, ...] = ()
    """Delivery status notifications about this run: a ``failed`` one ends
    the run ``bounced``; ``delayed`` ones are noted and the run waits on."""
    policy_check: str | None = None
    """The policy the run tested: a :class:`~smtp_probe.probe.spec.PolicyCheck`
    value, ``expect`` for a plain ``expect``, ``None`` for a delivery probe."""
    smuggling: tuple[SmugglingVerdict, ...] = ()
    """Per end-of-data variant, for the ``smtp_smuggling`` check."""

    @property
    def success(self) -> bool:
        """True when the mail went where it should, or was refused as the probe expects."""
        return self.outcome in (Outcome.DELIVERED, Outcome.SENT, Outcome.REJECTED)

    @property
    def folder(self) -> str | None:
        """The folder the message was found in, if it arrived."""
        return self.arrival.folder if self.arrival else None


@dataclass(frozen=True, slots=True)
class DnsCheckResult:
    """One DNS check of a probe's domains (``mx``, ``spf``, ``dmarc``...) and its evidence."""

    check: str
    """A :class:`~smtp_probe.probe.spec.DnsCheck` value (a metric label value)."""
    ok: bool
    reason: str
    """One line: why it failed, or what was found (``p=reject``, ``2 MX, all resolve``)."""
    evidence: tuple[str, ...] = ()
    """The lookups and what they answered, for the transcript (records, HTTPS fetch)."""
    policy: str | None = None
    """``dmarc``: the published ``p=``; ``mta_sts``: the policy's ``mode``; else ``None``."""
    listed: tuple[tuple[str, bool], ...] = ()
    """``dnsbl``: (zone, listed) per configured zone."""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class DnsReport:
    """All DNS checks of one probe, run together (on the probe's ``dns_interval``)."""

    probe: str
    started_at: datetime
    duration_seconds: float
    results: tuple[DnsCheckResult, ...]
    transcript: Transcript

    @property
    def success(self) -> bool:
        """Every check passed."""
        return all(result.ok for result in self.results)
