"""Our own DKIM check of an arrived message (``verify_dkim``), beside the receiver's verdict.

The receiver's ``Authentication-Results`` says what *it* concluded; checking
the signature ourselves (``dkimpy``, keys looked up with ``dnspython``
against the configured resolver) tells a broken key or a mangling hop from
a receiver that did not check. Every signature on the message is tried, up
to :data:`MAX_SIGNATURES`: ``pass`` if one verifies, else the first one's
result. Results use RFC 8601's words:

* ``none``: the message carries no ``DKIM-Signature``;
* ``pass``: the signature verifies with the published key;
* ``fail``: it does not (changed body or headers, another key published);
* ``permerror``: no key is published for the selector, or the signature
  or key is malformed;
* ``temperror``: the key could not be looked up in time.

Both libraries are imported at the first check: a run without
``verify_dkim`` never loads them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from smtp_probe.probe.resolver import dnspython_resolver
from smtp_probe.probe.result import AuthVerdict
from smtp_probe.probe.spec import DnsSettings

MAX_SIGNATURES: Final = 5
"""How many signatures of one message are tried at most."""


@dataclass
class _Lookups:
    """What the key lookups of one signature found, for telling apart the ways dkimpy says False."""

    missing: str | None = None
    """The key name that has no TXT record."""
    failed: str | None = None
    """Why a lookup gave no answer in time."""


def check_dkim(message: bytes, settings: DnsSettings, deadline: float) -> AuthVerdict:
    """Verify ``message``'s DKIM signatures; blocking: run it in a thread.

    Each key lookup waits at most ``settings.timeout`` and never past
    ``deadline`` (monotonic). Never raises for a bad message, key or
    answer: those are results.
    """
    import dkim  # here: only verify_dkim runs load dkimpy and dnspython
    import dns.resolver

    resolver = dnspython_resolver(dns.resolver.Resolver, settings)
    logger = _quiet_logger()
    first: AuthVerdict | None = None
    for index in range(MAX_SIGNATURES):
        lookups = _Lookups()
        checker: Any = None
        try:
            checker = dkim.DKIM(message, logger=logger, timeout=max(0.1, settings.timeout))
            if not _has(checker, index):
                break
            verified = checker.verify(
                idx=index, dnsfunc=_lookup(resolver, settings, deadline, lookups)
            )
        except dkim.ValidationError as exc:
            verdict = AuthVerdict("dkim", "fail", _detail(checker, str(exc)))
        except dkim.DKIMException as exc:
            verdict = AuthVerdict("dkim", "permerror", _detail(checker, str(exc)))
        else:
            if verified:
                return AuthVerdict("dkim", "pass", _detail(checker, ""))
            verdict = _unverified(checker, lookups)
        first = first or verdict
    return first or AuthVerdict("dkim", "none", "no DKIM-Signature")


def _unverified(checker: Any, lookups: _Lookups) -> AuthVerdict:
    """Why ``verify`` said False: a lookup that timed out, a missing key, or a bad signature."""
    if lookups.failed is not None:
        return AuthVerdict("dkim", "temperror", _detail(checker, lookups.failed))
    if lookups.missing is not None:
        return AuthVerdict(
            "dkim", "permerror", _detail(checker, f"no key published at {lookups.missing}")
        )
    return AuthVerdict("dkim", "fail", _detail(checker, "signature verification failed"))


def _has(checker: Any, index: int) -> bool:
    """Whether the message has a signature at ``index`` (0 is the topmost)."""
    return sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature") > index


def _detail(checker: Any, reason: str) -> str:
    """``header.d=... header.s=...`` of the signature checked, and the reason if any."""
    parts: list[str] = []
    for tag, name in ((b"d", "header.d"), (b"s", "header.s")):
        value = (getattr(checker, "signature_fields", None) or {}).get(tag)
        if isinstance(value, bytes):
            parts.append(f"{name}={value.decode('ascii', 'replace')}")
    if reason:
        parts.append(f"reason={reason[:120]}")
    return " ".join(parts)


def _lookup(resolver: Any, settings: DnsSettings, deadline: float, lookups: _Lookups) -> Any:
    """The ``dnsfunc`` dkimpy calls: the TXT record of a key name, bounded by the timeout and deadline."""
    import dkim
    import dns.exception
    import dns.rdatatype
    import dns.resolver

    def txt(name: bytes, timeout: float = 5.0) -> bytes | None:
        text = name.decode("ascii", "replace").rstrip(".")
        left = deadline - time.monotonic()
        if left <= 0:
            lookups.failed = "the run deadline passed before the key lookup"
            raise dkim.DnsTimeoutError(lookups.failed)
        try:
            answer = resolver.resolve(
                text,
                dns.rdatatype.TXT,
                lifetime=min(settings.timeout, left),
                raise_on_no_answer=False,
                search=False,
            )
        except dns.resolver.NXDOMAIN:
            lookups.missing = text
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            lookups.failed = f"key lookup of {text}: {exc}"
            raise dkim.DnsTimeoutError(lookups.failed) from None
        for rrset in answer.response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        lookups.missing = text
        return None

    return txt


def _quiet_logger() -> logging.Logger:
    """A logger for dkimpy that goes nowhere: its reasons are read from its exceptions."""
    logger = logging.getLogger("smtp_probe.own_dkim")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger
