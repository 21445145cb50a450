"""What a run needs to know about its route: SMTP server, mailbox, addresses, deadline.

These are plain frozen values so that the CLI and the YAML config build the
same thing, and a run never reads global state. Their defaults are the
constants of :mod:`smtp_probe.config.values`, where every default is
declared once; :class:`TlsMode` is that module's value type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smtp_probe.config.values import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_FOLDER,
    DEFAULT_IDLE,
    DEFAULT_IMAP_TLS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_SMTP_TLS,
    DEFAULT_VERIFY,
    MIN_POLL_INTERVAL,
    TlsMode,
)
from smtp_probe.secret import Secret

__all__ = ["Mailbox", "ProbeSpec", "SmtpServer", "TlsMode", "TlsSettings"]


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
    helo: str | None = None
    timeout: float = DEFAULT_COMMAND_TIMEOUT
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
