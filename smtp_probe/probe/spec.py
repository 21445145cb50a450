"""What a run needs to know about its route: SMTP server, mailbox, addresses, deadline.

These are plain frozen values so that the CLI and the YAML config build the
same thing, and a run never reads global state. A route's defaults are
declared here, once, beside its types: the config schema and ``check``'s
flags (through :mod:`smtp_probe.config.values`) use these constants, and
the engine never depends on the config.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from smtp_probe.probe.credentials import TokenSource
from smtp_probe.probe.result import Stage
from smtp_probe.secret import Secret


class Cleanup(enum.StrEnum):
    r"""How a found probe message is removed from the mailbox.

    ``expunge`` flags it ``\Deleted`` and expunges it by UID where it is;
    ``trash`` moves it to the SPECIAL-USE ``\Trash`` folder and expunges it
    there (Gmail: expunging from INBOX only removes a label, the message
    stays in All Mail).
    """

    EXPUNGE = "expunge"
    TRASH = "trash"


class TlsMode(enum.StrEnum):
    """How a connection is protected: ``none``, ``starttls`` (upgrade) or ``tls`` (implicit).

    ``opportunistic`` (SMTP only; the default of ``mx:`` servers) is what an
    MTA does: STARTTLS when the server offers it, the certificate not
    verified, plain SMTP otherwise (RFC 3207 §4; MTA-STS may demand more).
    """

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"
    OPPORTUNISTIC = "opportunistic"


DEFAULT_RUN_TIMEOUT: Final = 60.0
"""The deadline of a run nothing else sets one for (``check --timeout``)."""
DEFAULT_SWEEP_GRACE: Final = 300.0
"""``limits.sweep_grace``: how much older than the longest run timeout another replica's
leftover must be before a watcher sweeps it (it also absorbs clock skew between hosts)."""
DEFAULT_COMMAND_TIMEOUT: Final = 30.0
"""The longest wait for one SMTP or IMAP reply."""
DEFAULT_POLL_INTERVAL: Final = 1.0
"""The cap the mailbox poll delay backs off to."""
MIN_POLL_INTERVAL: Final = 0.01
"""Where the poll delay starts (and doubles from); a cap below it makes no sense."""
DEFAULT_FOLDER: Final = "INBOX"
DEFAULT_IDLE: Final = True
DEFAULT_VERIFY: Final = True
DEFAULT_SMTP_TLS: Final = TlsMode.STARTTLS
DEFAULT_MAX_CONNECTIONS: Final = 4
DEFAULT_MAX_CONCURRENT_RUNS: Final = 32
"""Runs at once in the daemon: a small VM's share of sockets, threads and CPU."""
"""SMTP sessions at once per server identity (the daemon's limit): what an MTA allows one client."""
DEFAULT_IMAP_TLS: Final = TlsMode.TLS
SMTP_PORTS: Final[Mapping[TlsMode, int]] = MappingProxyType(
    {TlsMode.NONE: 25, TlsMode.STARTTLS: 587, TlsMode.TLS: 465, TlsMode.OPPORTUNISTIC: 25}
)
"""The port of an SMTP server by TLS mode when none is given (MX, submission, submissions, MX)."""
IMAP_PORTS: Final[Mapping[TlsMode, int]] = MappingProxyType(
    {TlsMode.NONE: 143, TlsMode.STARTTLS: 143, TlsMode.TLS: 993, TlsMode.OPPORTUNISTIC: 143}
)
"""The port of an IMAP server by TLS mode when none is given (``opportunistic`` is refused for IMAP)."""


DEFAULT_DNS_TIMEOUT: Final = 5.0
"""The longest wait for one of our own DNS lookups (the DKIM key)."""


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver for our own DNS lookups (the DKIM key of ``verify_dkim``)."""

    nameservers: tuple[tuple[str, int], ...] = ()
    """(IP address, port) pairs, asked in order; ``()`` is the system's resolver."""
    timeout: float = DEFAULT_DNS_TIMEOUT
    """The longest wait for one lookup, all nameservers included; the run deadline still applies."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificate verification for one server; verification is on unless switched off."""

    verify: bool = DEFAULT_VERIFY
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """An SMTP server a probe submits through."""

    host: str
    port: int
    tls: TlsMode = DEFAULT_SMTP_TLS
    tls_settings: TlsSettings = field(default_factory=TlsSettings)
    username: str | None = None
    password: Secret | None = None
    oauth: TokenSource | None = None
    """Log in with an OAuth2 bearer token (``XOAUTH2``/``OAUTHBEARER``) instead of a password."""
    helo: str | None = None
    timeout: float = DEFAULT_COMMAND_TIMEOUT
    """Inactivity limit for one SMTP command; the run deadline still bounds the whole leg."""
    mx: bool = False
    """``host`` is a mail domain: send as an MTA does, to its MX hosts by
    preference with fallback (port 25 unless ``port`` says otherwise),
    STARTTLS as its MTA-STS policy demands."""
    max_connections: int = field(default=DEFAULT_MAX_CONNECTIONS, compare=False)
    """The daemon's limit of SMTP sessions at once to this server's host and port (an
    ``mx`` server: to its domain); not part of how a run talks to the server."""

    @property
    def address(self) -> str:
        """``host:port`` for display (``MX example.net`` for an ``mx:`` server)."""
        if self.mx:
            return f"MX {self.host}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class PolicyCheck(enum.StrEnum):
    """A built-in expected refusal (probe key ``check``); a metric label value."""

    OPEN_RELAY = "open_relay"
    """Unauthenticated mail from an outside sender to an outside recipient must be refused."""
    AUTH_REQUIRES_TLS = "auth_requires_tls"
    """EHLO before STARTTLS must not offer AUTH, and AUTH in the clear must be refused."""
    SENDER_MISMATCH = "sender_mismatch"
    """A logged-in user sending as another address (``from``) must be refused."""
    SMTP_SMUGGLING = "smtp_smuggling"
    """A second message smuggled behind a non-standard end of DATA must never be accepted."""


EXPECT: Final = "expect"
"""The ``policy_check`` label value of a probe with a plain ``expect`` and no ``check``."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """The refusal a probe expects: at one of ``stages``, with a reply code matching ``codes``."""

    stages: tuple[Stage, ...]
    """SMTP stages at which the refusal counts (``reject_at``), e.g. ``(RCPT_TO,)``."""
    codes: tuple[str, ...] = ("5xx",)
    """Reply codes (``550``) or classes (``5xx``, ``55x``) that count as the refusal."""

    def matches(self, stage: Stage, code: int | None) -> bool:
        """True when a refusal ``code`` at ``stage`` is the expected one."""
        if stage not in self.stages or code is None:
            return False
        text = str(code)
        return any(
            len(pattern) == len(text)
            and all(p in ("x", "X") or p == c for p, c in zip(pattern, text, strict=True))
            for pattern in self.codes
        )


class DnsCheck(enum.StrEnum):
    """A DNS check of a probe's domains (``dns_checks``); a metric label value."""

    MX = "mx"
    SPF = "spf"
    DMARC = "dmarc"
    MTA_STS = "mta_sts"
    TLS_RPT = "tls_rpt"
    DNSBL = "dnsbl"
    FCRDNS = "fcrdns"


DMARC_POLICIES: Final = ("none", "quarantine", "reject")
"""DMARC ``p=`` values, weakest first: an expected policy is met by it or a later one."""
MTA_STS_MODES: Final = ("none", "testing", "enforce")
"""MTA-STS ``mode`` values, weakest first."""
DEFAULT_DNS_INTERVAL: Final = 900.0
"""How often a probe's DNS checks run when ``dns_interval`` is not given (15 minutes)."""


@dataclass(frozen=True, slots=True)
class DnsChecks:
    """What a probe checks in DNS, and for which domains and sending addresses."""

    checks: tuple[DnsCheck, ...]
    recipient_domain: str
    """Domain of ``to``: its MX, MTA-STS and TLS-RPT are checked."""
    sender_domain: str
    """Domain of ``from``: its SPF and DMARC are checked."""
    interval: float = DEFAULT_DNS_INTERVAL
    sending_ips: tuple[str, ...] = ()
    """The public IPs mail leaves from (SPF, DNSBL, FCrDNS); ``()``: the SMTP server's addresses."""
    mx_hosts: tuple[str, ...] = ()
    """``mx``: the MX host names expected (any order); ``()`` accepts any that resolve."""
    dmarc_policy: str = "none"
    """``dmarc``: the weakest acceptable ``p=`` (one of :data:`DMARC_POLICIES`)."""
    mta_sts_mode: str = "enforce"
    """``mta_sts``: the weakest acceptable ``mode`` (one of :data:`MTA_STS_MODES`)."""
    dnsbl_zones: tuple[str, ...] = ()
    """``dnsbl``: blocklist zones to ask (none by default: public lists have terms of use)."""
    tls_settings: TlsSettings = field(default_factory=TlsSettings)
    """How the MTA-STS policy's HTTPS certificate is verified (always verified; ``ca_file``)."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An IMAP mailbox a probe confirms delivery in."""

    host: str
    port: int
    username: str
    password: Secret | None = None
    oauth: TokenSource | None = None
    """Log in with ``AUTHENTICATE XOAUTH2``/``OAUTHBEARER``; exactly one of password and oauth."""
    tls: TlsMode = DEFAULT_IMAP_TLS
    tls_settings: TlsSettings = field(default_factory=TlsSettings)
    folder: str = DEFAULT_FOLDER
    junk_folders: tuple[str, ...] | None = None
    """Folders that count as junk; ``None`` means discover the SPECIAL-USE ``\\Junk`` folder."""
    idle: bool = DEFAULT_IDLE
    """Use IMAP IDLE for wake-ups where the server has it."""
    poll_min: float = MIN_POLL_INTERVAL
    """First delay between ``NOOP`` + ``SEARCH`` polls while a message is in flight."""
    poll_interval: float = DEFAULT_POLL_INTERVAL
    """The cap the poll delay backs off to (doubling from ``poll_min``)."""
    timeout: float = DEFAULT_COMMAND_TIMEOUT
    """Socket timeout for one IMAP command; also bounds how long a worker thread can hang."""
    cleanup: Cleanup | None = None
    """How to remove our message; ``None`` picks ``trash`` on Gmail (``X-GM-EXT-1``), else ``expunge``."""
    authserv_id: str | None = None
    """The receiving side's authserv-id: only ``Authentication-Results``
    headers naming it are believed (RFC 8601 §5); ``None`` believes none."""

    @property
    def address(self) -> str:
        """``host:port`` for display."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def key(self) -> tuple[str, int, str, str]:
        """Identity of the mailbox connection: probes sharing it share one watcher."""
        return (self.host, self.port, self.username, self.folder)


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One route: send from ``mail_from`` to ``rcpt_to`` via ``smtp``, confirm in ``mailbox``."""

    name: str
    smtp: SmtpServer
    mail_from: str
    rcpt_to: str
    mailbox: Mailbox | None = None
    """Without a mailbox the run stops after the SMTP leg (outcome ``sent``)."""
    timeout: float = DEFAULT_RUN_TIMEOUT
    """The one deadline for the whole run, both legs included."""
    reflector: bool = False
    """``rcpt_to`` is a mailbox we don't own that auto-replies or forwards to
    ``mailbox``; the run confirms the reply by the token in its subject."""
    expect_auth: tuple[tuple[str, str], ...] = ()
    """Required result per method (``(("dkim", "pass"),)``; hashable): a delivered message
    that misses one ends ``auth_failed`` at stage ``verify``."""
    verify_dkim: bool = False
    """Also verify the arrived message's DKIM signature ourselves (dkimpy)."""
    dns: DnsSettings = field(default_factory=DnsSettings)
    """Where our own DKIM check looks up keys."""
    bounce_mailbox: Mailbox | None = None
    """The envelope sender's mailbox, watched for delivery status
    notifications about the run: a ``failed`` one ends the run ``bounced``."""
    check: PolicyCheck | None = None
    """A built-in policy check: the run succeeds (``rejected``) when the server refuses."""
    expect: Expectation | None = None
    """The refusal the run expects (from ``expect``, or the defaults of ``check``);
    ``None`` for a delivery probe. Being accepted ends ``accepted_unexpectedly``."""
    smuggling_variants: tuple[str, ...] = ()
    """``smtp_smuggling``: the end-of-data variants to try (names from
    :data:`smtp_probe.probe.smuggling.VARIANTS`); ``()`` tries them all."""
    dns_checks: DnsChecks | None = None
    """DNS checks run beside delivery on their own interval (``dns_interval``)."""

    @property
    def policy_check(self) -> str | None:
        """The metric label of the policy this probe tests (``check``, or ``expect``), if any."""
        if self.check is not None:
            return str(self.check)
        return EXPECT if self.expect is not None else None
