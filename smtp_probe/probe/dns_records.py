"""Reading the mail-policy records of DNS: SPF selection, DMARC and TLS-RPT tag lists, DNSBL names.

Pure text functions, no lookups: the DNS checks (:mod:`smtp_probe.probe.dns_checks`)
ask DNS and hand the TXT strings here, so the parsing rules are testable
without a server. SPF itself is *evaluated* by pyspf (which knows the
mechanisms, macros and limits); here we only pick the ``v=spf1`` records
out of a name's TXT set, as RFC 7208 §4.5 says.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from smtp_probe.probe.spec import DMARC_POLICIES

_SPF_VERSION: Final = re.compile(r"^v=spf1(?:\s|$)", re.IGNORECASE)
_TAG: Final = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*)$", re.DOTALL)
TLSRPT_SCHEMES: Final = ("mailto:", "https:")
"""The ``rua=`` URI schemes RFC 8460 §3 defines for TLS reports."""


class RecordError(ValueError):
    """A record is published but cannot be read; the message says what is wrong, in one line."""


def spf_records(txts: Iterable[str]) -> list[str]:
    """The SPF records among a name's TXT strings: those starting ``v=spf1`` then a space or the end.

    RFC 7208 §4.5: more than one is a ``permerror``; ``v=spf10`` is not SPF.
    """
    return [txt for txt in txts if _SPF_VERSION.match(txt.strip())]


def parse_tags(text: str) -> list[tuple[str, str]]:
    """A ``tag=value; tag=value`` list (DMARC RFC 7489 §6.4, TLS-RPT RFC 8460 §3) in order.

    Whitespace around tags and values is dropped; an empty part (a trailing
    ``;``) is allowed.

    Raises:
        RecordError: a part is not ``tag=value``, or a tag appears twice.
    """
    tags: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        match = _TAG.match(part)
        if match is None:
            raise RecordError(f"{part!r} is not tag=value")
        tag, value = match.group(1).lower(), match.group(2).strip()
        if tag in seen:
            raise RecordError(f"tag {tag}= appears twice")
        seen.add(tag)
        tags.append((tag, value))
    return tags


def _shown(value: str) -> str:
    """A record's value for an error message: as written, or escaped when it holds line breaks or controls.

    The value is the domain owner's (or an attacker's) text and ends up in
    transcripts: a newline in it must not start a line of its own there.
    """
    return value if value.isprintable() else repr(value)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """What a DMARC record says about handling failing mail (RFC 7489 §6.3)."""

    policy: str
    """``p=``: ``none``, ``quarantine`` or ``reject``."""
    subdomain_policy: str | None = None
    """``sp=``, when given."""
    pct: int = 100
    rua: tuple[str, ...] = ()


def is_dmarc(text: str) -> bool:
    """The TXT string is a DMARC record: it starts with the ``v=DMARC1`` tag (RFC 7489 §6.6.3)."""
    head = text.strip().split(";", 1)[0]
    return head.replace(" ", "").replace("\t", "") == "v=DMARC1"


def parse_dmarc(text: str) -> DmarcRecord:
    """Read a DMARC record (``v=DMARC1; p=reject; rua=mailto:...``).

    Strict where it matters to a monitor: ``p=`` must be present and valid
    (RFC 7489 §6.6.3 lets a receiver guess ``none`` for a record with a
    bad or missing ``p=`` but a valid ``rua=``; we report it as broken,
    since the domain owner meant something else).

    Raises:
        RecordError: not a ``v=DMARC1`` record, no or an unknown ``p=``/``sp=``,
            or a ``pct=`` that is not 0-100.
    """
    tags = parse_tags(text)
    if not tags or tags[0] != ("v", "DMARC1"):
        raise RecordError("does not start with v=DMARC1")
    values = dict(tags)
    policy = values.get("p")
    if policy is None:
        raise RecordError("has no p= tag")
    if policy.lower() not in DMARC_POLICIES:
        raise RecordError(f"p={_shown(policy)} is not one of {', '.join(DMARC_POLICIES)}")
    sub = values.get("sp")
    if sub is not None and sub.lower() not in DMARC_POLICIES:
        raise RecordError(f"sp={_shown(sub)} is not one of {', '.join(DMARC_POLICIES)}")
    pct_text = values.get("pct", "100")
    # ASCII digits, few of them: int() refuses "²" (a digit to isdigit()) and 5,000 digits.
    digits = pct_text.isascii() and pct_text.isdigit() and len(pct_text) <= 10
    if not digits or not 0 <= int(pct_text) <= 100:
        raise RecordError(f"pct={_shown(pct_text)} is not a number from 0 to 100")
    rua = tuple(uri.strip() for uri in values.get("rua", "").split(",") if uri.strip())
    return DmarcRecord(policy.lower(), sub.lower() if sub else None, int(pct_text), rua)


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """Where a domain wants its SMTP TLS reports sent (RFC 8460 §3)."""

    rua: tuple[str, ...]


def is_tlsrpt(text: str) -> bool:
    """The TXT string is a TLS-RPT record: it starts with ``v=TLSRPTv1``."""
    head = text.strip().split(";", 1)[0]
    return head.replace(" ", "").replace("\t", "") == "v=TLSRPTv1"


def parse_tlsrpt(text: str) -> TlsRptRecord:
    """Read a TLS-RPT record (``v=TLSRPTv1; rua=mailto:tls@example.net``).

    Raises:
        RecordError: not ``v=TLSRPTv1`` first, no ``rua=``, or a report
            address that is neither ``mailto:`` nor ``https:``.
    """
    tags = parse_tags(text)
    if not tags or tags[0] != ("v", "TLSRPTv1"):
        raise RecordError("does not start with v=TLSRPTv1")
    values = dict(tags)
    if "rua" not in values:
        raise RecordError("has no rua= tag")
    uris = tuple(uri.strip() for uri in values["rua"].split(",") if uri.strip())
    if not uris:
        raise RecordError("rua= is empty")
    for uri in uris:
        scheme = uri.lower()
        if not scheme.startswith(TLSRPT_SCHEMES) or len(uri.split(":", 1)[1]) == 0:
            raise RecordError(f"rua URI {uri!r} is not mailto: or https:")
    return TlsRptRecord(uris)


def reverse_labels(ip: str) -> str:
    """The reversed-address labels of ``ip`` without a suffix.

    ``127.0.0.2`` -> ``2.0.0.127``; an IPv6 address gives its 32 nibbles,
    least significant first (RFC 5782 §2.4).

    Raises:
        ValueError: ``ip`` is not an IP address.
    """
    pointer = ipaddress.ip_address(ip).reverse_pointer
    return pointer.rsplit(".", 2)[0]


def dnsbl_name(ip: str, zone: str) -> str:
    """The name a DNSBL is asked about ``ip`` in ``zone``: ``2.0.0.127.zen.example``.

    Raises:
        ValueError: ``ip`` is not an IP address.
    """
    return f"{reverse_labels(ip)}.{zone.strip().rstrip('.')}"


def dnsbl_error_code(address: str) -> bool:
    """An answer in 127.255.255.0/24: the list refused the query (Spamhaus: not a listing).

    Spamhaus-style lists answer 127.255.255.252-255 for "typing error",
    "query via public resolver" and "excessive queries"; it says nothing
    about the address asked.
    """
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network("127.255.255.0/24")
    except ValueError:
        return False


def dnsbl_listing(address: str) -> bool:
    """An answer in 127.0.0.0/8 (and not an error code): the address is listed (RFC 5782 §2.1)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip in ipaddress.ip_network("127.0.0.0/8") and not dnsbl_error_code(address)
