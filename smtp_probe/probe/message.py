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
import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import SMTPUTF8 as SMTPUTF8_POLICY
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


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A probe message ready for DATA: its bytes and what the SMTP leg needs to know of them."""

    data: bytes
    """The whole message, ``CRLF`` line ends, not yet dot-stuffed."""
    subject: str
    """The Subject as built (for the transcript's one-line summary)."""
    utf8: bool = False
    """Headers carry UTF-8 (a non-ASCII address): the envelope needs ``SMTPUTF8`` (RFC 6531)."""

    @property
    def eight_bit(self) -> bool:
        """Some byte is outside ASCII: ``BODY=8BITMIME`` where the server offers it (RFC 6152)."""
        return not self.data.isascii()


def outgoing(message: EmailMessage) -> OutgoingMessage:
    """``message`` serialised as :mod:`email.policy.SMTP` does, or SMTPUTF8's if it must be.

    A header that cannot be written in ASCII (an address with a non-ASCII
    local part or domain: RFC 2047 cannot encode those) needs RFC 6532's
    UTF-8 headers, and so ``SMTPUTF8`` on the envelope.
    """
    try:
        return OutgoingMessage(message.as_bytes(policy=SMTP_POLICY), str(message["Subject"]))
    except UnicodeEncodeError:
        data = message.as_bytes(policy=SMTPUTF8_POLICY)
        return OutgoingMessage(data, str(message["Subject"]), utf8=True)


_PLACEHOLDER: Final = Token(9_999_999_999_999, "f" * 16, "e" * _SIG_HEX)
"""The token a template is built with; replaced by each run's own (same length, so same folding)."""
_PLACEHOLDER_BYTES: Final = str(_PLACEHOLDER).encode()
_TOKEN_PLACES: Final = 3
"""Where a token stands in the message: ``Subject``, ``X-Smtp-Probe`` and the body."""
_LINE_MAX: Final = 78
"""``email.policy.SMTP``'s ``max_line_length``: a longer header line is folded."""
_DATE: Final = b"date"
_MESSAGE_ID: Final = b"message-id"


class MessageTemplate:
    """One probe's message built once with :func:`build_message`; each run fills in its parts.

    What changes per run is the token (in ``Subject``, ``X-Smtp-Probe`` and
    the body), ``Date`` and ``Message-ID``; the rest (``From``, ``To``, the
    robot-suppressing headers, the MIME headers, the body's text) is the
    same bytes every time, so building the message costs a join instead
    of the :mod:`email` package's header parsing and folding (see
    ``bench/bench_parts.py``). The output is what :func:`build_message`
    makes, byte for byte but for ``Date`` and ``Message-ID``, which differ
    between any two runs anyway (``tests/unit/test_message_template.py``).

    A template whose token did not come out as three whole copies (a
    non-ASCII probe name gets an RFC 2047 Subject that may cut it, a body
    the :mod:`email` package chose to base64) is not used: such a probe's
    runs build the message with :func:`build_message` as before, and so
    does a token of another length than the placeholder's.
    """

    __slots__ = ("_domain", "_parts", "_probe", "_recipe", "_subject", "_utf8")

    def __init__(
        self, *, probe: str, mail_from: str, rcpt_to: str, reflector: bool = False
    ) -> None:
        self._probe = probe
        self._recipe = (mail_from, rcpt_to, reflector)
        self._domain = mail_from.rpartition("@")[2] or "smtp-probe.invalid"
        built = outgoing(
            build_message(
                token=_PLACEHOLDER,
                probe=probe,
                mail_from=mail_from,
                rcpt_to=rcpt_to,
                reflector=reflector,
            )
        )
        self._utf8 = built.utf8
        self._subject = built.subject.split(str(_PLACEHOLDER))
        self._parts = _split(built.data)

    @property
    def usable(self) -> bool:
        """Whether runs fill this template in (else they build the message themselves)."""
        return self._parts is not None and len(self._subject) == 2

    def render(self, token: Token) -> OutgoingMessage:
        """The message of the run with ``token``, ``Date`` now and a new ``Message-ID``."""
        text = str(token)
        if self._parts is None or not self.usable or len(text) != len(str(_PLACEHOLDER)):
            mail_from, rcpt_to, reflector = self._recipe
            return outgoing(
                build_message(
                    token=token,
                    probe=self._probe,
                    mail_from=mail_from,
                    rcpt_to=rcpt_to,
                    reflector=reflector,
                )
            )
        encoding = "utf-8" if self._utf8 else "ascii"
        fill = {
            _DATE: f"Date: {format_datetime(localtime())}\r\n".encode(),
            _MESSAGE_ID: _message_id_field(
                make_msgid(idstring=token.run_id, domain=self._domain)
            ).encode(encoding),
            None: text.encode(),
        }
        data = b"".join(
            part if isinstance(part, bytes) else fill[part.name] for part in self._parts
        )
        return OutgoingMessage(data, text.join(self._subject), utf8=self._utf8)


@dataclass(frozen=True, slots=True)
class _Hole:
    """A place in a template filled in per run: a whole header field, or the token (``None``)."""

    name: bytes | None


def _split(data: bytes) -> tuple[bytes | _Hole, ...] | None:
    """``data`` cut at its ``Date`` and ``Message-ID`` fields and at each copy of the placeholder.

    ``None`` when the placeholder does not stand whole in exactly its
    three places, or either field is missing.
    """
    head, _, body = data.partition(b"\r\n\r\n")
    parts: list[bytes | _Hole] = []
    fields = re.split(rb"\r\n(?![ \t])", head)
    pending: list[bytes] = []
    holes = 0
    for field in fields:
        name = field.partition(b":")[0].strip().lower()
        if name in (_DATE, _MESSAGE_ID):
            parts.append(b"".join(pending))
            pending = []
            parts.append(_Hole(name))
            holes += 1
        else:
            pending.append(field + b"\r\n")
    pending.append(b"\r\n" + body)
    parts.append(b"".join(pending))
    if holes != 2:
        return None
    cut: list[bytes | _Hole] = []
    for part in parts:
        if isinstance(part, _Hole):
            cut.append(part)
            continue
        pieces = part.split(_PLACEHOLDER_BYTES)
        for index, piece in enumerate(pieces):
            if index:
                cut.append(_Hole(None))
            cut.append(piece)
    if sum(1 for part in cut if isinstance(part, _Hole) and part.name is None) != _TOKEN_PLACES:
        return None
    return tuple(part for part in cut if part != b"")


def _message_id_field(value: str) -> str:
    """``Message-ID: <...>`` folded as :mod:`email.policy.SMTP` folds it.

    A msg-id has no place to fold inside: when the line would pass 78
    characters the policy moves the whole value to a continuation line, if
    it fits there (one space and the value); a value too long for any line
    stays on the first one.
    """
    line = f"Message-ID: {value}"
    if len(line) <= _LINE_MAX or len(value) + 1 > _LINE_MAX:
        return f"{line}\r\n"
    return f"Message-ID:\r\n {value}\r\n"


@functools.lru_cache(maxsize=4096)
def template(probe: str, mail_from: str, rcpt_to: str, reflector: bool = False) -> MessageTemplate:
    """The template of one probe (per name, addresses and kind), built at its first run."""
    return MessageTemplate(probe=probe, mail_from=mail_from, rcpt_to=rcpt_to, reflector=reflector)
