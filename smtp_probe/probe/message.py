"""The probe message and its token: unique per run, signed so a forgery never counts.

A token looks like ``1764322545123-9f2c4e1ab07d5c33-<32 hex>``: send time in
milliseconds, a run id, and an HMAC-SHA256 (truncated to 128 bits) over both
and the probe name. It uses only digits, letters and ``-`` so it survives
IMAP SEARCH and Subject folding everywhere.

The run id's first 8 hex digits are the *instance* that sent it (a random
id made once per process, :data:`INSTANCE_ID`), the last 8 are random per
run. Replicas sharing one ``token_secret_file`` verify each other's tokens;
the instance tells a replica which verified messages are its own and which
may still be in flight for another (the watcher leaves those alone until
they are old). The signature covers the whole run id, so the instance
cannot be forged, and the token keeps its old shape: tokens made before
the instance existed still parse (their first 8 digits name no live
instance).

The token travels twice: in the ``X-Smtp-Probe`` header and in the Subject,
``smtp-probe <probe> <token>``. A reflector's reply (an auto-reply, a
forward) keeps the Subject behind its own prefixes (``Re:``, ``AW:``,
``Automatic reply:``, ...) but drops custom headers: :func:`parse_subject`
finds the token there, whatever came before it.
"""

from __future__ import annotations

import email.header
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.utils import format_datetime, localtime, make_msgid, parsedate_to_datetime
from typing import Final

PROBE_HEADER: Final = "X-Smtp-Probe"
SUBJECT_MARK: Final = "smtp-probe"
"""How every probe Subject starts (before any reply prefix): what a reflector run searches for."""
_SIG_HEX: Final = 32
INSTANCE_HEX: Final = 8
"""Hex digits of an instance id: the first half of a run id."""
INSTANCE_ID: Final = secrets.token_hex(INSTANCE_HEX // 2)
"""This process's instance id, made at start: every run id it makes begins with it."""
_SUBJECT_TOKEN: Final = re.compile(
    rf"(?P<prefix>.*?)\b{SUBJECT_MARK}\s+(?P<probe>\S+)\s+"
    r"(?P<token>\d{1,16}-[0-9a-f]{16}-[0-9a-f]{32})(?![0-9a-z])",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed token: when it was made, which run, and its signature."""

    sent_ms: int
    run_id: str
    signature: str

    def __str__(self) -> str:
        return f"{self.key}-{self.signature}"

    @property
    def key(self) -> str:
        """The token without its signature: what identifies the run."""
        return f"{self.sent_ms}-{self.run_id}"

    @property
    def instance(self) -> str:
        """The instance id of the process that made the token (the run id's first half)."""
        return self.run_id[:INSTANCE_HEX]


def token_key(text: str) -> str:
    """The run-identifying part of a header value (everything before the signature)."""
    return text.strip().rpartition("-")[0]


class TokenSigner:
    """Make and check run tokens with one HMAC key.

    With no key given a random one is made, so tokens verify only within this
    process: a restarted daemon then cannot claim (or delete) messages of its
    previous life. Configure ``token_secret_file`` to keep them verifiable.

    Every token made carries ``instance`` (by default this process's
    :data:`INSTANCE_ID`, kept across reloads and re-keys) in its run id.
    """

    __slots__ = ("_key", "instance")

    def __init__(self, key: bytes | None = None, *, instance: str = INSTANCE_ID) -> None:
        """A signer with ``key`` (``None`` or empty: a random one) for ``instance``.

        Raises:
            ValueError: ``instance`` is not 8 lower-case hex digits.
        """
        if len(instance) != INSTANCE_HEX or instance.strip("0123456789abcdef"):
            raise ValueError(f"instance id must be {INSTANCE_HEX} lower-case hex digits")
        self._key = key if key else secrets.token_bytes(32)
        self.instance: Final = instance
        """The instance id every token this signer makes carries."""

    def __repr__(self) -> str:
        return f"TokenSigner(<secret>, instance={self.instance!r})"

    def new(self, probe: str, *, now: float | None = None) -> Token:
        """Return a fresh signed token for one run of ``probe``, carrying our instance id."""
        sent_ms = int((time.time() if now is None else now) * 1000)
        run_id = self.instance + secrets.token_hex(INSTANCE_HEX // 2)
        return Token(sent_ms, run_id, self._sign(probe, sent_ms, run_id))

    def is_own(self, token: Token) -> bool:
        """Whether ``token`` (verified) was made by this signer's instance."""
        return token.instance == self.instance

    def verify(self, probe: str, text: str) -> Token | None:
        """Return the token if ``text`` is a token this key signed for ``probe``, else ``None``."""
        parts = text.strip().split("-")
        # ASCII digits only, at most the 16 a token has: int() refuses "²" and 5,000 digits.
        if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 16:
            return None
        sent_ms, run_id, signature = int(parts[0]), parts[1], parts[2]
        if len(signature) != _SIG_HEX or len(run_id) != 16:
            return None
        expected = self._sign(probe, sent_ms, run_id)
        if not hmac.compare_digest(expected, signature.lower()):
            return None
        return Token(sent_ms, run_id, signature.lower())

    def _sign(self, probe: str, sent_ms: int, run_id: str) -> str:
        payload = f"smtp-probe/1\0{probe}\0{sent_ms}\0{run_id}".encode()
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()[:_SIG_HEX]


@dataclass(frozen=True, slots=True)
class SubjectToken:
    """What :func:`parse_subject` read from a Subject: ``<prefix>smtp-probe <probe> <token>``."""

    prefix: str
    """What came before: reply and forward prefixes (``"Re: AW:"``), or ``""``."""
    probe: str
    """The probe name the Subject claims; only the token's signature proves it."""
    token: str
    """The token, unverified (hex in lower case, as the signer writes it)."""


def decode_subject(raw: str) -> str:
    """A Subject header as text: RFC 2047 encoded-words decoded, folding and runs of space gone.

    Words split across encoded-words (long subjects are cut anywhere,
    even inside our token) are joined again. An undecodable header is
    taken as it stands.
    """
    text = raw
    if "=?" in raw:
        try:
            text = str(email.header.make_header(email.header.decode_header(raw)))
        except (HeaderParseError, LookupError, UnicodeError, ValueError):
            text = raw
    return " ".join(text.split())


def header_date(text: str) -> datetime | None:
    """An RFC 5322 date (a ``Date:`` header, the tail of a ``Received:``); ``None`` if it won't parse.

    A date without a zone (``-0000`` or none) is taken as UTC.
    """
    try:
        parsed = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_subject(subject: str) -> SubjectToken | None:
    """The probe name and token in a (decoded) Subject, after any reply or forward prefixes.

    Accepts whatever stands before ``smtp-probe``: ``Re:``, ``RE:``,
    ``AW:``, ``WG:``, ``Fwd:``, ``FW:``, ``TR:``, ``SV:``, ``VS:``,
    ``Auto:``, ``Automatic reply:``, ``Odp:``, ``回复:`` and their
    repetitions, and gateway tags such as ``[EXTERNAL]``: the list of
    prefixes in use is open-ended, and the token's signature, not the
    prefix, is what makes a message ours. Returns ``None`` when there is
    no token-shaped word after the mark.
    """
    match = _SUBJECT_TOKEN.match(subject)
    if match is None:
        return None
    return SubjectToken(
        prefix=" ".join(match["prefix"].split()),
        probe=match["probe"],
        token=match["token"].lower(),
    )


def build_message(
    *, token: Token, probe: str, mail_from: str, rcpt_to: str, reflector: bool = False
) -> EmailMessage:
    """Build the probe message: RFC 5322 headers, the token in a header and the Subject.

    ``Auto-Submitted`` and ``X-Auto-Response-Suppress`` keep vacation and
    out-of-office robots from answering, except for a ``reflector`` run,
    whose whole point is an answer (RFC 3834 and Sieve vacation, RFC 5230,
    never reply to an ``Auto-Submitted`` message; Exchange honours the
    other). The body is short but not empty, because empty mails get
    quarantined by some gateways.
    """
    domain = mail_from.rpartition("@")[2] or "smtp-probe.invalid"
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = rcpt_to
    message["Date"] = format_datetime(localtime())
    # Always pass a domain: the default is a slow getfqdn() that leaks our hostname.
    message["Message-ID"] = make_msgid(idstring=token.run_id, domain=domain)
    message["Subject"] = f"{SUBJECT_MARK} {probe} {token}"
    message[PROBE_HEADER] = str(token)
    if not reflector:
        message["Auto-Submitted"] = "auto-generated"
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(
        "This is an automated delivery test sent by smtp-probe.\n"
        f"Probe: {probe}\nToken: {token}\n"
        "It is deleted automatically once it arrives; no action is needed.\n"
    )
    return message
