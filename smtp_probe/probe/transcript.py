"""The telnet-style, redacted record of a run: every command and reply with its time.

Direction marks: ``->`` sent and ``<-`` received in the clear, ``~>`` and
``<~`` inside TLS, ``===`` notes from the probe itself. Secrets never enter
a transcript: AUTH, AUTHENTICATE and LOGIN arguments are replaced before a line is stored,
and every registered secret (and its base64 forms) is scrubbed from every
line as a second line of defence.
"""

from __future__ import annotations

import base64
import enum
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

REDACTED: Final = "********"
_SASL: Final = re.compile(r"^((?:AUTH|AUTHENTICATE)\s+\S+)(\s+.*)?$", re.IGNORECASE)
"""SMTP ``AUTH`` and IMAP ``AUTHENTICATE`` (with an initial response, RFC 4959)."""
_IMAP_LOGIN: Final = re.compile(r"^(LOGIN\s+\S+)(\s+.*)?$", re.IGNORECASE)


class Direction(enum.StrEnum):
    """Which way a line went, and whether it travelled inside TLS."""

    SENT = "->"
    RECEIVED = "<-"
    SENT_TLS = "~>"
    RECEIVED_TLS = "<~"
    NOTE = "==="


@dataclass(frozen=True, slots=True)
class Line:
    """One transcript line: seconds since the run started, direction, text."""

    offset: float
    direction: Direction
    text: str

    def render(self) -> str:
        """Format as ``  12.3ms -> EHLO probe`` (milliseconds since the run started)."""
        return f"{self.offset * 1000:9.1f}ms {self.direction.value:>3} {self.text}"


def redact_command(text: str) -> str:
    """Hide the credentials in an SMTP ``AUTH``, IMAP ``AUTHENTICATE`` or ``LOGIN`` command line.

    ``AUTH PLAIN dGVzd…`` becomes ``AUTH PLAIN ********``,
    ``AUTHENTICATE XOAUTH2 dXNl…`` becomes ``AUTHENTICATE XOAUTH2 ********``;
    ``LOGIN user secret`` becomes ``LOGIN user ********``.
    """
    for pattern in (_SASL, _IMAP_LOGIN):
        match = pattern.match(text)
        if match is not None:
            return f"{match.group(1)} {REDACTED}" if match.group(2) else match.group(1)
    return text


def _secret_forms(secret: str) -> set[str]:
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    return {form for form in forms if len(form) >= 3}


class Transcript:
    """An append-only, thread-safe list of :class:`Line` sharing one start time.

    The IMAP leg writes from its worker thread while the SMTP leg writes from
    the event loop, hence the lock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self._lines: list[Line] = []
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def mask(self, secret: str | None) -> None:
        """Register a secret that must never appear in any line, in clear or base64."""
        if secret:
            with self._lock:
                self._secrets |= _secret_forms(secret)

    def add(self, direction: Direction, text: str, at: float | None = None) -> None:
        """Append one line per line of ``text`` (multi-line replies stay readable)."""
        offset = (self._clock() if at is None else at) - self.started
        with self._lock:
            for part in text.splitlines() or [""]:
                self._lines.append(Line(max(offset, 0.0), direction, self._scrub(part)))

    def sent(self, text: str, *, tls: bool) -> None:
        """Record a command we sent, redacting credentials."""
        self.add(Direction.SENT_TLS if tls else Direction.SENT, redact_command(text))

    def received(self, text: str, *, tls: bool) -> None:
        """Record a reply we received."""
        self.add(Direction.RECEIVED_TLS if tls else Direction.RECEIVED, text)

    def note(self, text: str) -> None:
        """Record something the probe itself observed or decided."""
        self.add(Direction.NOTE, text)

    def extend(self, lines: Iterable[Line]) -> None:
        """Append lines recorded elsewhere (they keep their own offsets)."""
        with self._lock:
            self._lines.extend(Line(ln.offset, ln.direction, self._scrub(ln.text)) for ln in lines)

    @property
    def lines(self) -> tuple[Line, ...]:
        """A snapshot of the lines, in time order."""
        with self._lock:
            return tuple(sorted(self._lines, key=lambda line: line.offset))

    def render(self) -> list[str]:
        """The lines as text, one string each."""
        return [line.render() for line in self.lines]

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text
