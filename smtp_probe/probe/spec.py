"""What a run needs to know about its route: SMTP server, mailbox, addresses, deadline.

These are plain frozen values so that the CLI and the YAML config build the
same thing, and a run never reads global state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from smtp_probe.secret import Secret


class TlsMode(enum.StrEnum):
    """How a connection is protected: ``none``, ``starttls`` (upgrade) or ``tls`` (implicit)."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificate verification for one server; verification is on unless switched off."""

    verify: bool = True
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """An SMTP server a probe submits through."""

    host: str
    port: int
    tls: TlsMode = TlsMode.STARTTLS
    tls_settings: TlsSettings = field(default_factory=TlsSettings)
    username: str | None = None
    password: Secret | None = None
    helo: str | None = None
    timeout: float = 30.0
    """Inactivity limit for one SMTP command; the run deadline still bounds the whole leg."""

    @property
    def address(self) -> str:
        """``host:port`` for display."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An IMAP mailbox a probe confirms delivery in."""

    host: str
    port: int
    username: str
    password: Secret
    tls: TlsMode = TlsMode.TLS
    tls_settings: TlsSettings = field(default_factory=TlsSettings)
    folder: str = "INBOX"
    junk_folders: tuple[str, ...] | None = None
    """Folders that count as junk; ``None`` means discover the SPECIAL-USE ``\\Junk`` folder."""
    idle: bool = True
    """Use IMAP IDLE for wake-ups where the server has it."""
    poll_min: float = 0.01
    """First delay between ``NOOP`` + ``SEARCH`` polls while a message is in flight."""
    poll_interval: float = 1.0
    """The cap the poll delay backs off to (doubling from ``poll_min``)."""
    timeout: float = 30.0
    """Socket timeout for one IMAP command; also bounds how long a worker thread can hang."""

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
    timeout: float = 60.0
    """The one deadline for the whole run, both legs included."""
