"""Delivery status notifications (RFC 3464): read one, find whose it is and what it says.

A DSN is a ``multipart/report; report-type=delivery-status`` message: a
human-readable part, a ``message/delivery-status`` part (one block of
per-message fields, then one block per recipient) and, usually, the
returned message: its headers (``text/rfc822-headers``, what ``RET=HDRS``
asks for) or all of it (``message/rfc822``). The returned headers carry
our ``X-Smtp-Probe`` token; the per-message ``Original-Envelope-Id`` our
run id, when the server took ``ENVID``.

:func:`parse_report` reads such a message with the standard library only
and never raises on what a server (or a stranger) sent: anything that is
not a delivery report gives ``None``, and missing or garbled fields are
left empty. It proves nothing about ownership: the caller verifies the
token's signature before believing or deleting anything. The RFC 6533
``global`` variants (UTF-8 headers) are read the same way.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import quopri
import re
from dataclasses import dataclass
from email.message import Message
from typing import Final

from smtp_probe.probe.message import PROBE_HEADER, decode_subject, parse_subject

__all__ = ["DeliveryReport", "RecipientStatus", "parse_report"]

_REPORT_TYPES: Final = frozenset({"delivery-status", "global-delivery-status"})
_STATUS_PARTS: Final = frozenset({"message/delivery-status", "message/global-delivery-status"})
_HEADER_PARTS: Final = frozenset({"text/rfc822-headers", "message/global-headers"})
_MESSAGE_PARTS: Final = frozenset({"message/rfc822", "message/global"})
_STATUS: Final = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
"""An enhanced status code (RFC 3463): class, subject, detail (Exchange uses 3 digits: 5.1.10)."""
_ACTIONS: Final = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_FIELD_MAX: Final = 500
"""Longest field value kept (a diagnostic is server text: one line, bounded)."""
_PARTS_MAX: Final = 64
"""Parts looked at in one report; a report never needs more, a hostile one may have thousands."""
_PARSER: Final = email.parser.BytesParser(policy=email.policy.compat32)
_HEADERS: Final = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One per-recipient block of a report."""

    recipient: str | None
    """``Original-Recipient`` if given (the address we sent to), else ``Final-Recipient``."""
    action: str
    """``failed``, ``delayed``, ``delivered``, ``relayed``, ``expanded`` (``""`` if unreadable)."""
    status: str
    """The enhanced status code, e.g. ``5.1.1`` (``""`` if missing or malformed)."""
    remote_mta: str | None = None
    diagnostic: str | None = None
    """``Diagnostic-Code`` as the server wrote it, unfolded: server text, not a label."""


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What a delivery report says, and the token and run id it quotes (unverified)."""

    envelope_id: str | None
    """``Original-Envelope-Id`` (xtext decoded): our run id when the server took ``ENVID``."""
    reporting_mta: str | None
    recipients: tuple[RecipientStatus, ...]
    token: str | None
    """The ``X-Smtp-Probe`` value of the returned headers, else the token in their Subject."""

    @property
    def worst(self) -> RecipientStatus | None:
        """The recipient block that matters most: a ``failed`` one, else a ``delayed`` one."""
        for action in ("failed", "delayed"):
            for recipient in self.recipients:
                if recipient.action == action:
                    return recipient
        return self.recipients[0] if self.recipients else None


def parse_report(raw: bytes) -> DeliveryReport | None:
    """The delivery report in ``raw`` (a whole message), or ``None`` if it is not one.

    Never raises: a message that does not parse, is not a
    ``multipart/report`` of type delivery-status, or has no status part
    gives ``None``.
    """
    try:
        return _parse(_PARSER.parsebytes(raw))
    except Exception:  # noqa: BLE001 - a stranger's bytes must never crash the watcher
        return None


def _parse(message: Message) -> DeliveryReport | None:
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "")).lower() not in _REPORT_TYPES:
        return None
    parts = message.get_payload()
    if not isinstance(parts, list):
        return None
    status_part: Message | None = None
    returned: Message | None = None
    for part in parts[:_PARTS_MAX]:
        if not isinstance(part, Message):
            continue
        kind = part.get_content_type()
        if kind in _STATUS_PARTS and status_part is None:
            status_part = part
        elif kind in _HEADER_PARTS | _MESSAGE_PARTS and returned is None:
            returned = part
    if status_part is None:
        return None
    blocks = [block for block in _blocks(status_part) if block.keys()]
    if not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1:]
    return DeliveryReport(
        envelope_id=_xtext_decode(_field(per_message, "Original-Envelope-Id")),
        reporting_mta=_typed(_field(per_message, "Reporting-MTA")),
        recipients=tuple(_recipient(block) for block in per_recipient if _is_recipient(block)),
        token=_token(returned) if returned is not None else None,
    )


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a status part; parsed again from its decoded text if need be.

    The stdlib splits ``message/delivery-status`` into blocks itself, even
    when the part has a transfer encoding (base64, quoted-printable:
    Exchange does this), and then the blocks are the encoded lines: those
    are put together again, decoded and split into blocks here.
    """
    payload = part.get_payload()
    blocks = (
        [block for block in payload if isinstance(block, Message)]
        if isinstance(payload, list)
        else []
    )
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding not in ("base64", "quoted-printable"):
        return blocks
    if isinstance(payload, str):
        encoded = payload
    else:
        encoded = "\n".join(block.as_string() for block in blocks)
    data = encoded.encode("ascii", "replace")
    try:
        decoded = base64.b64decode(data) if encoding == "base64" else quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return []
    text = decoded.replace(b"\r\n", b"\n")
    return [
        _HEADERS.parsebytes(chunk.strip(b"\n") + b"\n")
        for chunk in re.split(rb"\n[ \t]*\n", text)
        if chunk.strip()
    ]


def _is_recipient(block: Message) -> bool:
    return "Final-Recipient" in block or "Action" in block or "Status" in block


def _recipient(block: Message) -> RecipientStatus:
    action = (_field(block, "Action") or "").lower().split(" ")[0]
    status = _STATUS.search(_field(block, "Status") or "")
    return RecipientStatus(
        recipient=_typed(_field(block, "Original-Recipient") or _field(block, "Final-Recipient")),
        action=action if action in _ACTIONS else "",
        status=".".join(status.groups()) if status else "",
        remote_mta=_typed(_field(block, "Remote-MTA")),
        diagnostic=_field(block, "Diagnostic-Code"),
    )


def _token(part: Message) -> str | None:
    """Our token from the returned headers (or message) in ``part``."""
    headers: Message | None
    if part.get_content_type() in _MESSAGE_PARTS:
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            headers = inner[0]
        else:
            headers = _headers_of(part)
    else:
        headers = _headers_of(part)
    if headers is None:
        return None
    value = _field(headers, PROBE_HEADER)
    if value:
        return value.split()[0]
    subject = _field(headers, "Subject")
    parsed = parse_subject(decode_subject(subject)) if subject else None
    return parsed.token if parsed is not None else None


def _headers_of(part: Message) -> Message | None:
    """The header block inside a ``text/rfc822-headers`` part, transfer encoding undone."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        payload = part.get_payload()
        if not isinstance(payload, str):
            return None
        data = payload.encode("utf-8", "replace")
    return _HEADERS.parsebytes(data.lstrip(b"\r\n"))


def _field(block: Message, name: str) -> str | None:
    """A field's value, unfolded, bounded; ``None`` when absent or empty."""
    value = block.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text[:_FIELD_MAX] or None


def _typed(value: str | None) -> str | None:
    """``dns; mx.example.test`` as ``mx.example.test``: the address without its type."""
    if value is None:
        return None
    kind, sep, rest = value.partition(";")
    if sep and kind.strip().isascii() and " " not in kind.strip():
        return rest.strip() or None
    return value


def _xtext_decode(value: str | None) -> str | None:
    """RFC 3461 xtext (``+XX`` hex escapes) decoded; a malformed escape is kept as it is."""
    if value is None or "+" not in value:
        return value
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)
