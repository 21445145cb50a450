"""Our own DNS lookups (MX, TXT, A/AAAA, PTR) through the configured resolver, cached for their TTL.

The DNS checks and ``mx:`` sending ask DNS themselves, through dnspython,
rather than through the system's ``getaddrinfo``: they need record types
the system resolver does not give (MX, TXT, PTR), the answers' TTLs, and a
resolver that can be pointed somewhere else (``dns: {nameservers: ...}``,
a split-horizon view, the tests' Knot). Every lookup is bounded by the
resolver's timeout and by the caller's deadline.

Answers (negative ones too: NXDOMAIN and "no such record") are kept for
their TTL, so checks on a short interval do not hammer the zone and see a
change when its TTL says they should. dnspython is imported at the first
lookup: ``smtp-probe check`` without DNS work starts without it.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smtp_probe.probe.spec import DnsSettings

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.resolver

NEGATIVE_TTL_CAP: Final = 300.0
"""The longest a "no such name/record" answer is kept (RFC 2308 caps it at the SOA minimum)."""
_MIN_LIFETIME: Final = 0.001
_D = TypeVar("_D", bound="dns.resolver.BaseResolver")


class Status(enum.StrEnum):
    """How a lookup came out, when the resolver answered at all."""

    OK = "ok"
    NXDOMAIN = "nxdomain"
    """The name does not exist."""
    NODATA = "nodata"
    """The name exists but has no record of this type."""


class DnsLookupError(Exception):
    """The resolver gave no usable answer: a timeout, SERVFAIL, REFUSED, a broken reply.

    ``reason`` is one line for the transcript, naming the name and type.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one name and type, as text (``10 mx1.example.net.``, a TXT's strings joined)."""

    name: str
    rdtype: str
    status: Status
    records: tuple[str, ...] = ()
    ttl: float = 0.0
    """Seconds the answer is valid for (its TTL; for a negative answer, the SOA minimum)."""

    @property
    def exists(self) -> bool:
        """There is at least one record."""
        return self.status is Status.OK and bool(self.records)

    def describe(self) -> str:
        """One transcript line: ``example.net MX: 10 mx1.example.net. (ttl 300)``."""
        if self.status is not Status.OK:
            return f"{self.name} {self.rdtype}: {self.status}"
        shown = "; ".join(self.records) or "(empty)"
        return f"{self.name} {self.rdtype}: {shown} (ttl {self.ttl:g})"


@dataclass(frozen=True, slots=True)
class Addresses:
    """A host's A then AAAA lookups: each answer or failure in the order asked, and the addresses."""

    host: str
    steps: tuple[tuple[str, Answer | DnsLookupError], ...]
    """(record type, its answer or why the lookup failed), A first."""

    @property
    def found(self) -> list[str]:
        """Every address the answers held, A before AAAA."""
        return [
            record
            for _rdtype, step in self.steps
            if isinstance(step, Answer)
            for record in step.records
        ]

    def why_none(self) -> str:
        """Why there is no address: the failed lookups, or that neither record exists."""
        failures = [step.reason for _rdtype, step in self.steps if isinstance(step, DnsLookupError)]
        return "; ".join(failures) if failures else "no A or AAAA record"


class Resolver:
    """Lookups through one resolver configuration, with a TTL cache shared by its callers.

    Safe to use from several event loops and threads: the cache is guarded
    by a lock, and each lookup makes its own dnspython resolver.
    """

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._lock = threading.Lock()

    async def lookup(self, name: str, rdtype: str, *, deadline: float) -> Answer:
        """Records of ``name`` of type ``rdtype`` (``MX``, ``TXT``, ``A``, ``AAAA``, ``PTR``).

        ``deadline`` is monotonic seconds; the wait is also bounded by the
        resolver's ``timeout``. TXT records come back as their strings
        joined (RFC 7208 §3.3), without quotes.

        Raises:
            DnsLookupError: no answer in time, SERVFAIL/REFUSED, or a malformed reply.
        """
        key = (name.lower().rstrip("."), rdtype.upper())
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        answer = await self._ask(key[0], key[1], deadline)
        with self._lock:
            self._cache[key] = (time.monotonic() + answer.ttl, answer)
        return answer

    async def addresses(self, host: str, *, deadline: float) -> Addresses:
        """The A then AAAA records of ``host``; a failed lookup is kept, not raised."""
        steps: list[tuple[str, Answer | DnsLookupError]] = []
        for rdtype in ("A", "AAAA"):
            try:
                steps.append((rdtype, await self.lookup(host, rdtype, deadline=deadline)))
            except DnsLookupError as exc:
                steps.append((rdtype, exc))
        return Addresses(host, tuple(steps))

    def clear(self) -> None:
        """Forget every cached answer."""
        with self._lock:
            self._cache.clear()

    async def _ask(self, name: str, rdtype: str, deadline: float) -> Answer:
        import dns.exception
        import dns.resolver

        lifetime = max(_MIN_LIFETIME, min(self.settings.timeout, deadline - time.monotonic()))
        resolver = self._resolver()
        try:
            reply = await resolver.resolve(
                name, rdtype, lifetime=lifetime, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
            return Answer(name, rdtype, Status.NXDOMAIN, ttl=_negative_ttl(response))
        except dns.resolver.LifetimeTimeout:
            raise DnsLookupError(
                f"{name} {rdtype}: no answer within {lifetime:.3g}s from {self._where()}"
            ) from None
        except dns.resolver.NoNameservers as exc:
            raise DnsLookupError(f"{name} {rdtype}: {_first_error(exc)}") from None
        except dns.exception.DNSException as exc:
            raise DnsLookupError(f"{name} {rdtype}: {exc}") from None
        if reply.rrset is None:
            return Answer(name, rdtype, Status.NODATA, ttl=_negative_ttl(reply.response))
        records = tuple(_text(rdata, rdtype) for rdata in reply.rrset)
        return Answer(name, rdtype, Status.OK, records, float(reply.rrset.ttl))

    def _resolver(self) -> dns.asyncresolver.Resolver:
        import dns.asyncresolver

        return dnspython_resolver(dns.asyncresolver.Resolver, self.settings)

    def _where(self) -> str:
        if not self.settings.nameservers:
            return "the system resolver"
        return ", ".join(f"{host}:{port}" for host, port in self.settings.nameservers)


def dnspython_resolver(factory: Callable[..., _D], settings: DnsSettings) -> _D:
    """A dnspython resolver made by ``factory`` asking ``settings.nameservers`` (the system's when none).

    ``factory`` is ``dns.asyncresolver.Resolver`` for our own lookups or
    ``dns.resolver.Resolver`` where a library wants a blocking lookup
    (dkimpy's ``dnsfunc`` in :mod:`~smtp_probe.probe.own_dkim`): both ask
    the same servers, set up the same way. Imports dnspython; call it only
    when a lookup is about to be made.
    """
    import dns.nameserver

    if not settings.nameservers:
        return factory(configure=True)
    resolver = factory(configure=False)
    resolver.nameservers = [
        dns.nameserver.Do53Nameserver(address, port) for address, port in settings.nameservers
    ]
    return resolver


def _text(rdata: Any, rdtype: str) -> str:
    """A record as text; a TXT record's character-strings joined without quotes."""
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    return str(rdata.to_text())


def _negative_ttl(response: Any) -> float:
    """The SOA minimum of a negative reply (RFC 2308 §5), capped; 0 without an SOA."""
    if response is None:
        return 0.0
    for rrset in response.authority:
        if rrset.rdtype == 6:  # SOA
            return float(min(rrset.ttl, rrset[0].minimum, NEGATIVE_TTL_CAP))
    return 0.0


def _first_error(exc: Any) -> str:
    """The ``NoNameservers`` error as one line: what the servers answered (SERVFAIL, REFUSED)."""
    errors = exc.kwargs.get("errors") or []
    answered = sorted({str(error[3]) for error in errors if len(error) > 3})
    return "; ".join(answered) if answered else "no nameserver could answer"


_SHARED: dict[DnsSettings, Resolver] = {}
_SHARED_LOCK = threading.Lock()


def shared(settings: DnsSettings) -> Resolver:
    """The process's one :class:`Resolver` for ``settings``: probes asking the same resolver share its cache."""
    with _SHARED_LOCK:
        resolver = _SHARED.get(settings)
        if resolver is None:
            resolver = _SHARED[settings] = Resolver(settings)
        return resolver
