"""The ``Received:`` chain of an arrived message, as hops with per-hop delays.

Each MTA that takes a message writes one ``Received:`` line on top
(RFC 5321 section 4.4): ``from`` the host it took it from, ``by`` itself,
``with`` the protocol, then ``;`` and the time by its own clock. Read
oldest first, consecutive times give how long each hop held the message.

Those times are whole seconds on most MTAs and come from other hosts'
clocks, so they are diagnosis, never the headline delivery time (which
is measured on our one clock). A hop whose time is before the previous
hop's is flagged as clock skew instead of getting a negative delay.

Real lines are loose: Microsoft 365 writes ``with Microsoft SMTP Server
(version=TLS1_2, ...)``, Gmail ``by 2002:a05:...`` (an address, no name),
qmail-like MTAs leave out ``with``, and anything may be missing or
garbled. The parser takes what is there and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from smtp_probe.probe.message import header_date
from smtp_probe.probe.result import Hop

_KEYWORDS: Final = frozenset({"from", "by", "via", "with", "id", "for", "tls"})
"""Clause keywords (RFC 5321 ``Stamp``, plus Exim's ``tls <cipher>``): a clause's value ends at the next."""

_TLS_PROTOCOL: Final = re.compile(r"(?:UTF8)?(?:E?SMTP|LMTP)SA?|HTTPS|\S*TLS\S*", re.IGNORECASE)
"""``with`` protocols that say TLS: RFC 3848/8314 ``ESMTPS``, ``ESMTPSA``, ``LMTPS``,
``UTF8SMTPS``..., Exim's lower-case ``esmtps``, Microsoft's ``HTTPS`` and private
names such as ``ESMTPTLS``.
Not ``SMTP``, ``ESMTPA`` (authenticated, no TLS) or ``LMTP``: the ``S`` is required."""

_TLS_COMMENT: Final = re.compile(
    r"using\s+TLS|version=TLS|\bTLS\s*v?1[._]\d|\bSSLv3\b|\bTLSv1\b", re.IGNORECASE
)
"""A comment that says TLS: Postfix ``(using TLSv1.3 with cipher ...)``, Sendmail and
Gmail ``(version=TLSv1.3 cipher=...)``, Microsoft ``(version=TLS1_2, cipher=...)``,
Exim ``(TLS1.3)``."""

MAX_VALUE: Final = 255
"""Longest clause value kept (a host name is at most 253 characters); a longer one is cut."""


def parse_hops(received: Sequence[str]) -> tuple[Hop, ...]:
    """``Received:`` headers (newest first, as the message carries them) as hops, oldest first.

    Every header becomes one hop, however little of it parses. Each
    hop's delay is its time minus the previous hop's: ``None`` for hop 0,
    when either time is missing, or when the gap is negative (then the
    hop is marked ``skewed``). Never raises.
    """
    stamps = [_parse_one(text) for text in reversed(received)]
    hops: list[Hop] = []
    previous: float | None = None
    for index, (by, from_, with_, tls, at) in enumerate(stamps):
        delay: float | None = None
        skewed = False
        if index > 0 and at is not None and previous is not None:
            gap = at - previous
            if gap < 0:
                skewed = True
            else:
                delay = gap
        hops.append(Hop(by=by, from_=from_, with_=with_, tls=tls, at=at,
                        delay_seconds=delay, skewed=skewed))  # fmt: skip
        previous = at
    return tuple(hops)


def _parse_one(text: str) -> tuple[str | None, str | None, str | None, bool, float | None]:
    """One header's ``by``, ``from``, ``with``, TLS flag and time (epoch seconds)."""
    # Values end up in terminals, HTML and metric labels: no control characters.
    text = "".join(char if char.isprintable() else " " for char in text)
    head, semicolon, tail = text.rpartition(";")
    if not semicolon:
        head, tail = text, ""
    at = _time(tail)
    words, comments = _split(head)
    clauses = _clauses(words)
    with_ = clauses.get("with")
    tls = "tls" in clauses or _tls_protocol(with_) or any(_TLS_COMMENT.search(c) for c in comments)
    return clauses.get("by"), clauses.get("from"), with_, tls, at


def _time(text: str) -> float | None:
    """The RFC 5322 date after the last ``;`` as epoch seconds; ``None`` if it won't parse."""
    if not text.strip():
        return None
    try:
        when = header_date(text)
        return when.timestamp() if when is not None else None
    except (OverflowError, ValueError, OSError):  # absurd years or offsets
        return None


def _split(text: str) -> tuple[list[str], list[str]]:
    """Words outside comments, and the comments' texts (nested ones inside their parent).

    An unclosed ``(`` runs to the end, as a broken header would read.
    """
    comments: list[str] = []
    outside: list[str] = []
    comment: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                outside.append(" ")
                comment = []
            else:
                comment.append(char)
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                comments.append("".join(comment))
            else:
                comment.append(char)
        elif depth > 0:
            comment.append(char)
        else:
            outside.append(char)
    if depth > 0:
        comments.append("".join(comment))
    words = "".join(outside).split()
    return words, comments


def _clauses(words: Iterable[str]) -> dict[str, str]:
    """The first value of each clause: ``from``/``by`` take one word, ``with`` runs to the next keyword.

    ``with`` may be several words (``Microsoft SMTP Server``); a host is one.
    """
    found: dict[str, str] = {}
    key: str | None = None
    value: list[str] = []

    def close() -> None:
        if key is not None and value and key not in found:
            found[key] = " ".join(value)[:MAX_VALUE]

    for word in words:
        lower = word.lower()
        if lower in _KEYWORDS:
            close()
            key, value = lower, []
            continue
        if key is None or word == ";":
            continue
        if key == "with" or not value:
            value.append(word)
    close()
    return found


def _tls_protocol(protocol: str | None) -> bool:
    """Whether a ``with`` protocol names TLS (``ESMTPS``, ``LMTPSA``, ``esmtps``...)."""
    if protocol is None:
        return False
    return _TLS_PROTOCOL.fullmatch(protocol.split()[0]) is not None
