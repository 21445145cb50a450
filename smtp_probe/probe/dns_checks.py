"""A probe's DNS checks: MX, SPF, DMARC, MTA-STS, TLS-RPT, DNSBL and forward-confirmed reverse DNS.

Each check asks DNS through :class:`~smtp_probe.probe.resolver.Resolver`
(the probe's nameservers, answers cached for their TTL) and ends in one
:class:`~smtp_probe.probe.result.DnsCheckResult`: ``ok``, a one-line
reason, and evidence lines (what was asked, what came back). The checks
run concurrently under the caller's deadline; a check that cannot be
done (timeout, SERVFAIL, no sending IP) fails with the reason, never
with an exception.

Rules, per check:

- ``mx``: the recipient domain has MX records, not the null MX ``0 .``
  (RFC 7505: "accepts no mail"), every MX host has an A or AAAA record,
  and, when ``mx_hosts`` is given, the MX host set equals it (case and
  trailing dot ignored).
- ``spf``: the sender domain has exactly one ``v=spf1`` TXT record;
  pyspf evaluates it (through our resolver) for each sending IP and the
  result is ``pass`` for every one; no evaluation ends in ``permerror``
  (which includes more than 10 DNS-querying terms, RFC 7208 §4.6.4). The
  per-IP evaluation stops at the first matching term, so the record is
  also evaluated once for 192.0.2.1 (TEST-NET-1, RFC 5737: an address no
  record authorises, used only as the evaluation's input; nothing is
  sent to it) to walk every term and count the worst case.
- ``dmarc``: ``_dmarc.<sender domain>`` has exactly one ``v=DMARC1``
  record, it parses, and its ``p=`` is at least ``dmarc_policy``
  (none < quarantine < reject). Only the exact domain is asked: the
  organisational-domain fallback of RFC 7489 §6.6.3 needs the Public
  Suffix List, which we do not ship; check the organisational domain
  itself if mail is sent from a subdomain.
- ``mta_sts``: the recipient domain publishes an MTA-STS policy that is
  fetched over verified HTTPS (:func:`smtp_probe.probe.mta_sts.discover`),
  its ``mode`` is at least ``mta_sts_mode``, every MX host matches one of
  its ``mx`` patterns and every pattern matches at least one MX host.
- ``tls_rpt``: ``_smtp._tls.<recipient domain>`` has exactly one
  ``v=TLSRPTv1`` record with a ``rua=`` of ``mailto:``/``https:`` URIs.
- ``dnsbl``: each sending IP is looked up in each zone (reversed octets
  or nibbles, RFC 5782); an A record in 127.0.0.0/8 is a listing (its
  TXT is fetched for the reason), NXDOMAIN is not; 127.255.255.x is the
  list refusing the query (Spamhaus error codes), reported as a failure
  to check, not a listing. ``ok`` = checked everywhere, listed nowhere.
- ``fcrdns``: each sending IP has a PTR record and at least one PTR name
  resolves (A for IPv4, AAAA for IPv6) back to that IP.

Sending IPs (``spf``, ``dnsbl``, ``fcrdns``) are ``dns_checks.sending_ips``
or else the SMTP server's addresses: an IP literal as is, a host name's
A/AAAA records, for an ``mx:`` server the addresses of its MX hosts.

dnspython and pyspf are imported only when a check runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from smtp_probe.probe import dns_records
from smtp_probe.probe.resolver import Answer, DnsLookupError, Resolver, Status, shared
from smtp_probe.probe.result import DnsCheckResult, DnsReport
from smtp_probe.probe.spec import (
    DMARC_POLICIES,
    MTA_STS_MODES,
    DnsCheck,
    DnsChecks,
    ProbeSpec,
)
from smtp_probe.probe.transcript import Direction, Transcript

SPF_WORST_CASE_IP: Final = "192.0.2.1"
"""TEST-NET-1 (RFC 5737): the SPF record is evaluated for it to walk every term and count lookups."""
SPF_MAX_LOOKUPS: Final = 10
"""RFC 7208 §4.6.4: at most 10 terms that query DNS."""

_R = TypeVar("_R")


class _CheckFailed(Exception):
    """A check ends early with ``reason`` (its evidence so far is kept)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(slots=True)
class _Outcome:
    """What one check function returns (the runner adds name, evidence and time)."""

    ok: bool
    reason: str
    policy: str | None = None
    listed: tuple[tuple[str, bool], ...] = ()


class _Context:
    """What the checks of one run share: spec, resolver, deadline, memoised lookups."""

    def __init__(self, spec: ProbeSpec, checks: DnsChecks, resolver: Resolver, deadline: float):
        self.spec = spec
        self.checks = checks
        self.resolver = resolver
        self.deadline = deadline
        self._memo: dict[str, asyncio.Task[Any]] = {}

    async def lookup(self, name: str, rdtype: str, evidence: list[str]) -> Answer:
        """One lookup, described in ``evidence``; a resolver failure ends the check.

        Raises:
            _CheckFailed: no usable answer (timeout, SERVFAIL, REFUSED).
        """
        try:
            answer = await self.resolver.lookup(name, rdtype, deadline=self.deadline)
        except DnsLookupError as exc:
            evidence.append(exc.reason)
            raise _CheckFailed(exc.reason) from None
        evidence.append(answer.describe())
        return answer

    async def once(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """``make()`` awaited once per run, shared by the checks that need it."""
        task = self._memo.get(key)
        if task is None:
            task = self._memo[key] = asyncio.ensure_future(make())
        return await asyncio.shield(task)

    async def mx_hosts(self, domain: str) -> tuple[list[str], list[str]]:
        """(MX host names by preference, evidence) of ``domain``, looked up once per run.

        ``[]`` when there is no MX or the lookup failed (the failure is in
        the evidence); a null MX is the name ``""``.
        """
        result: tuple[list[str], list[str]] = await self.once(
            f"mx:{domain}", lambda: self._mx_hosts(domain)
        )
        return result

    async def _mx_hosts(self, domain: str) -> tuple[list[str], list[str]]:
        evidence: list[str] = []
        try:
            answer = await self.lookup(domain, "MX", evidence)
        except _CheckFailed as exc:
            return [], [*evidence, f"failed: {exc.reason}"]
        return _mx_names(answer), evidence

    def close(self) -> None:
        """Cancel shared lookups no check waits for any more (a check ran out of time)."""
        for task in self._memo.values():
            task.cancel()

    async def sending_ips(self) -> tuple[list[str], list[str]]:
        """(The sending IPs, evidence of how they were found).

        Raises:
            _CheckFailed: none could be found.
        """
        result: tuple[list[str], list[str], str | None] = await self.once(
            "sending-ips", self._sending_ips
        )
        ips, evidence, failure = result
        if failure is not None:
            raise _CheckFailed(failure)
        return ips, evidence

    async def _sending_ips(self) -> tuple[list[str], list[str], str | None]:
        if self.checks.sending_ips:
            configured = list(self.checks.sending_ips)
            wrong = [ip for ip in configured if not _is_ip(ip)]
            if wrong:
                return [], [], f"sending IP {', '.join(wrong)} is not an IP address"
            return configured, [f"sending IPs (configured): {', '.join(configured)}"], None
        server = self.spec.smtp
        evidence: list[str] = []
        if server.mx:
            hosts, mx_evidence = await self.mx_hosts(server.host)
            evidence += mx_evidence
            hosts = [host for host in hosts if host]
            if not hosts:
                return [], evidence, f"sending IPs: {server.host} has no usable MX host"
        else:
            hosts = [server.host]
        ips: list[str] = []
        for host in hosts:
            if _is_ip(host):
                ips.append(str(ipaddress.ip_address(host)))
                continue
            try:
                found = await self.addresses(host, evidence)
            except _CheckFailed as exc:
                return [], evidence, f"sending IPs: {exc.reason}"
            ips += [ip for ip in found if ip not in ips]
        if not ips:
            return [], evidence, f"sending IPs: {', '.join(hosts)} has no A/AAAA record"
        evidence.append(f"sending IPs (SMTP server {server.address}): {', '.join(ips)}")
        return ips, evidence, None

    async def addresses(self, host: str, evidence: list[str]) -> list[str]:
        """The A and AAAA addresses of ``host`` (asked concurrently).

        Raises:
            _CheckFailed: a lookup failed.
        """
        answers = await asyncio.gather(
            self.lookup(host, "A", evidence), self.lookup(host, "AAAA", evidence)
        )
        return [record for answer in answers if answer.exists for record in answer.records]


def _mx_names(answer: Answer) -> list[str]:
    """The MX host names of an answer by preference; the null MX ``0 .`` gives ``""``."""
    if not answer.exists:
        return []
    ranked: list[tuple[int, str]] = []
    for record in answer.records:
        parts = record.split()
        preference = int(parts[0]) if parts and parts[0].isdigit() else 65535
        ranked.append((preference, _host(parts[-1] if parts else "")))
    ranked.sort()
    return [host for _pref, host in ranked]


def _host(name: str) -> str:
    """A host name compared the DNS way: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------ checks


async def _check_mx(ctx: _Context, evidence: list[str]) -> _Outcome:
    domain = ctx.checks.recipient_domain
    answer = await ctx.lookup(domain, "MX", evidence)
    if not answer.exists:
        what = "does not exist" if answer.status is Status.NXDOMAIN else "has no MX record"
        return _Outcome(False, f"{domain} {what}")
    hosts = _mx_names(answer)
    if hosts == [""]:
        return _Outcome(False, f"{domain} publishes a null MX (0 .): it accepts no mail")
    if "" in hosts:
        return _Outcome(False, f"{domain} mixes a null MX (0 .) with other MX records")
    resolved = await asyncio.gather(*(_resolves(ctx, host) for host in hosts))
    dead = [host for host, (ok, _lines) in zip(hosts, resolved, strict=True) if not ok]
    for _ok, lines in resolved:
        evidence.extend(lines)
    if dead:
        return _Outcome(False, f"MX host {', '.join(dead)} does not resolve (no A/AAAA)")
    expected = {_host(host) for host in ctx.checks.mx_hosts}
    if expected:
        missing = sorted(expected - set(hosts))
        extra = sorted(set(hosts) - expected)
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(extra)}"] if extra else []
            )
            return _Outcome(False, f"MX hosts differ from the expected: {'; '.join(parts)}")
        return _Outcome(True, f"{len(hosts)} MX, all resolve, as expected")
    return _Outcome(True, f"{len(hosts)} MX, all resolve")


async def _resolves(ctx: _Context, host: str) -> tuple[bool, list[str]]:
    """Whether ``host`` has an A or AAAA record, and the lookups' lines."""
    lines: list[str] = []
    try:
        return bool(await ctx.addresses(host, lines)), lines
    except _CheckFailed as exc:
        return False, [*lines, f"failed: {exc.reason}"]


async def _check_spf(ctx: _Context, evidence: list[str]) -> _Outcome:
    domain = ctx.checks.sender_domain
    answer = await ctx.lookup(domain, "TXT", evidence)
    records = dns_records.spf_records(answer.records if answer.exists else ())
    if not records:
        return _Outcome(False, f"{domain} has no SPF (v=spf1) record")
    if len(records) > 1:
        return _Outcome(False, f"{domain} has {len(records)} SPF records (permerror: one allowed)")
    ips, ip_evidence = await ctx.sending_ips()
    evidence.extend(ip_evidence)
    sender = ctx.spec.mail_from
    if sender.rpartition("@")[2].lower() != domain.lower():
        sender = f"postmaster@{domain}"
    helo = ctx.spec.smtp.helo or domain
    failures: list[str] = []
    verdicts: list[str] = []
    worst = 0
    for ip in [*ips, SPF_WORST_CASE_IP]:
        result, explanation, lookups = await _evaluate_spf(ctx, ip, sender, helo, evidence)
        worst_case = ip == SPF_WORST_CASE_IP
        label = "every term (worst case)" if worst_case else ip
        evidence.append(f"spf {label}: {result} ({lookups} DNS lookups) {explanation}".rstrip())
        if result == "permerror":
            return _Outcome(False, f"permerror: {_spf_problem(explanation)}")
        if result == "temperror":
            return _Outcome(False, f"temperror: {_spf_problem(explanation)}")
        if worst_case:
            if lookups > SPF_MAX_LOOKUPS:  # pyspf raises first; kept for clarity
                return _Outcome(False, f"{lookups} DNS lookups (at most {SPF_MAX_LOOKUPS})")
            worst = lookups
        elif result != "pass":
            failures.append(f"{ip} {result}")
        else:
            verdicts.append(f"{ip} pass")
    if failures:
        return _Outcome(False, f"not authorised: {', '.join(failures)}")
    return _Outcome(True, f"{', '.join(verdicts)} ({worst} of {SPF_MAX_LOOKUPS} DNS lookups)")


def _spf_problem(explanation: str) -> str:
    for prefix in ("SPF Permanent Error: ", "SPF Temporary Error: "):
        if explanation.startswith(prefix):
            return explanation[len(prefix) :]
    return explanation


_SPF_LOCAL = threading.local()
_SPF_HOOK_LOCK = threading.Lock()


def _install_spf_hook(spf: Any) -> None:
    """Route pyspf's DNS through the lookup function of the calling thread.

    pyspf asks DNS through its module-level ``DNSLookup(name, qtype,
    strict, timeout)``; a thread running our evaluation has
    ``_SPF_LOCAL.lookup`` set and gets our resolver (the probe's
    nameservers, deadline and TTL cache). Any other thread keeps pyspf's
    own lookup.
    """
    with _SPF_HOOK_LOCK:
        if getattr(spf, "_smtp_probe_hook", False):
            return
        original = spf.DNSLookup

        def dns_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = 30) -> Any:
            ours = getattr(_SPF_LOCAL, "lookup", None)
            if ours is None:
                return original(name, qtype, strict, timeout)
            return ours(name, qtype)

        spf.DNSLookup = dns_lookup
        spf._smtp_probe_hook = True


async def _evaluate_spf(
    ctx: _Context, ip: str, sender: str, helo: str, evidence: list[str]
) -> tuple[str, str, int]:
    """The SPF (result, explanation, DNS lookups) for ``ip``, its DNS through ``ctx.resolver``.

    pyspf is synchronous: it runs in a worker thread whose DNS calls come
    back to this event loop, so every lookup uses the shared resolver and
    its cache, and is bounded by the deadline.
    """
    import spf

    _install_spf_hook(spf)
    loop = asyncio.get_running_loop()

    def lookup(name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        remaining = ctx.deadline - time.monotonic()
        if remaining <= 0:
            raise spf.TempError(f"DNS {name} {qtype}: deadline passed")
        future = asyncio.run_coroutine_threadsafe(
            ctx.resolver.lookup(name, qtype, deadline=ctx.deadline), loop
        )
        try:
            answer = future.result(timeout=remaining + 1.0)
        except DnsLookupError as exc:
            evidence.append(exc.reason)
            raise spf.TempError(f"DNS {exc.reason}") from None
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise spf.TempError(f"DNS {name} {qtype}: no answer before the deadline") from None
        evidence.append(answer.describe())
        return [((name, qtype), _spf_value(qtype, record)) for record in answer.records]

    def evaluate() -> tuple[str, str, int]:
        _SPF_LOCAL.lookup = lookup
        try:
            query = spf.query(i=ip, s=sender, h=helo, strict=True)
            result, _code, explanation = query.check()
            return str(result), str(explanation), int(query.lookups)
        finally:
            _SPF_LOCAL.lookup = None

    return await asyncio.to_thread(evaluate)


def _spf_value(qtype: str, record: str) -> Any:
    """One of our answer records in the shape pyspf's dnspython lookup gives."""
    if qtype in ("TXT", "SPF"):
        return (record.encode("utf-8"),)
    if qtype == "MX":
        preference, _, exchange = record.partition(" ")
        return (int(preference), exchange.rstrip("."))
    if qtype == "PTR":
        return record.rstrip(".")
    return record


async def _single_record(
    ctx: _Context,
    name: str,
    kind: str,
    is_kind: Callable[[str], bool],
    parse: Callable[[str], _R],
    evidence: list[str],
) -> _R | _Outcome:
    """The one ``kind`` TXT record at ``name``, parsed; else the failed outcome saying why.

    DMARC (RFC 7489 §6.6.3) and TLS-RPT (RFC 8460 §3) alike apply no
    record when a name has none of the kind or more than one.
    """
    answer = await ctx.lookup(name, "TXT", evidence)
    records = [txt for txt in answer.records if is_kind(txt)] if answer.exists else []
    if not records:
        return _Outcome(False, f"no {kind} record at {name}")
    if len(records) > 1:
        return _Outcome(False, f"{len(records)} {kind} records at {name} (none applies)")
    try:
        return parse(records[0])
    except dns_records.RecordError as exc:
        return _Outcome(False, f"{kind} record at {name} {exc}")


async def _check_dmarc(ctx: _Context, evidence: list[str]) -> _Outcome:
    record = await _single_record(
        ctx,
        f"_dmarc.{ctx.checks.sender_domain}",
        "DMARC",
        dns_records.is_dmarc,
        dns_records.parse_dmarc,
        evidence,
    )
    if isinstance(record, _Outcome):
        return record
    wanted = ctx.checks.dmarc_policy
    if DMARC_POLICIES.index(record.policy) < DMARC_POLICIES.index(wanted):
        return _Outcome(
            False, f"p={record.policy} is weaker than the expected {wanted}", record.policy
        )
    return _Outcome(True, f"p={record.policy} (at least {wanted})", record.policy)


async def _check_mta_sts(ctx: _Context, evidence: list[str]) -> _Outcome:
    from smtp_probe.probe import mta_sts

    domain = ctx.checks.recipient_domain
    try:
        policy = await mta_sts.discover(
            domain,
            ctx.resolver,
            tls_settings=ctx.checks.tls_settings,
            deadline=ctx.deadline,
            evidence=evidence,
        )
    except mta_sts.MtaStsError as exc:
        return _Outcome(False, exc.reason)
    if policy is None:
        return _Outcome(
            False, f"{domain} publishes no MTA-STS policy (no valid _mta-sts TXT record)"
        )
    wanted = ctx.checks.mta_sts_mode
    rank = MTA_STS_MODES.index(policy.mode) if policy.mode in MTA_STS_MODES else -1
    if rank < MTA_STS_MODES.index(wanted):
        return _Outcome(
            False, f"mode {policy.mode} is weaker than the expected {wanted}", policy.mode
        )
    hosts, mx_evidence = await ctx.mx_hosts(domain)
    evidence.extend(mx_evidence)
    if not hosts or "" in hosts:
        return _Outcome(False, f"{domain} has no MX host to match the policy against", policy.mode)
    unmatched = [host for host in hosts if not policy.matches(host)]
    unused = [
        pattern
        for pattern in policy.mx
        if not any(dataclasses.replace(policy, mx=(pattern,)).matches(host) for host in hosts)
    ]
    problems = ([f"MX {', '.join(unmatched)} not in the policy"] if unmatched else []) + (
        [f"pattern {', '.join(unused)} matches no MX"] if unused else []
    )
    if problems:
        return _Outcome(False, "; ".join(problems), policy.mode)
    return _Outcome(True, f"mode {policy.mode}, {len(hosts)} MX all match the policy", policy.mode)


async def _check_tls_rpt(ctx: _Context, evidence: list[str]) -> _Outcome:
    record = await _single_record(
        ctx,
        f"_smtp._tls.{ctx.checks.recipient_domain}",
        "TLS-RPT",
        dns_records.is_tlsrpt,
        dns_records.parse_tlsrpt,
        evidence,
    )
    if isinstance(record, _Outcome):
        return record
    return _Outcome(True, f"reports to {', '.join(record.rua)}")


async def _check_dnsbl(ctx: _Context, evidence: list[str]) -> _Outcome:
    zones = [zone.strip().rstrip(".") for zone in ctx.checks.dnsbl_zones]
    if not zones:
        return _Outcome(False, "no DNSBL zones configured (dnsbl: {zones: [...]})")
    ips, ip_evidence = await ctx.sending_ips()
    evidence.extend(ip_evidence)
    pairs = [(ip, zone) for zone in zones for ip in ips]
    verdicts = await asyncio.gather(*(_dnsbl_one(ctx, ip, zone) for ip, zone in pairs))
    listed_in: dict[str, bool] = dict.fromkeys(zones, False)
    listings: list[str] = []
    errors: list[str] = []
    for (ip, zone), (verdict, lines) in zip(pairs, verdicts, strict=True):
        evidence.extend(lines)
        if verdict is True:
            listed_in[zone] = True
            listings.append(f"{ip} in {zone}")
        elif isinstance(verdict, str):
            errors.append(verdict)
    listed = tuple(listed_in.items())
    if listings:
        return _Outcome(False, f"listed: {', '.join(listings)}", listed=listed)
    if errors:
        return _Outcome(False, f"could not check: {'; '.join(errors)}", listed=listed)
    return _Outcome(True, f"{', '.join(ips)} listed in none of {len(zones)} zone(s)", listed=listed)


async def _dnsbl_one(ctx: _Context, ip: str, zone: str) -> tuple[bool | str, list[str]]:
    """(True listed / False not / a reason it could not be checked, evidence) for ``ip`` in ``zone``."""
    lines: list[str] = []
    try:
        name = dns_records.dnsbl_name(ip, zone)
    except ValueError:
        return f"{ip} is not an IP address", lines
    try:
        answer = await ctx.lookup(name, "A", lines)
        if not answer.exists:
            return False, lines
        codes = list(answer.records)
        if any(dns_records.dnsbl_listing(code) for code in codes):
            txt = await ctx.lookup(name, "TXT", lines)
            if txt.exists:
                lines.append(f"{ip} listed in {zone}: {' / '.join(txt.records)}")
            return True, lines
        if all(dns_records.dnsbl_error_code(code) for code in codes):
            return f"{zone} refused the query for {ip} ({', '.join(codes)})", lines
        return f"{zone} answered {', '.join(codes)} for {ip}, outside 127.0.0.0/8", lines
    except _CheckFailed as exc:
        return f"{zone}: {exc.reason}", lines


async def _check_fcrdns(ctx: _Context, evidence: list[str]) -> _Outcome:
    ips, ip_evidence = await ctx.sending_ips()
    evidence.extend(ip_evidence)
    outcomes = await asyncio.gather(*(_fcrdns_one(ctx, ip) for ip in ips))
    confirmed: list[str] = []
    failures: list[str] = []
    for ok, line, lines in outcomes:
        evidence.extend(lines)
        (confirmed if ok else failures).append(line)
    if failures:
        return _Outcome(False, "; ".join(failures))
    return _Outcome(True, "; ".join(confirmed))


async def _fcrdns_one(ctx: _Context, ip: str) -> tuple[bool, str, list[str]]:
    """(confirmed, a summary line, evidence) for one sending IP."""
    lines: list[str] = []
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False, f"{ip} is not an IP address", lines
    try:
        ptr = await ctx.lookup(address.reverse_pointer, "PTR", lines)
        if not ptr.exists:
            return False, f"{ip} has no PTR record", lines
        rdtype = "A" if address.version == 4 else "AAAA"
        names = [_host(record) for record in ptr.records]
        for name in names:
            forward = await ctx.lookup(name, rdtype, lines)
            back = {ipaddress.ip_address(r) for r in forward.records if _is_ip(r)}
            if address in back:
                return True, f"{ip} -> {name} -> {ip}", lines
        return False, f"{ip} -> {', '.join(names)}, which does not resolve back to {ip}", lines
    except _CheckFailed as exc:
        return False, f"{ip}: {exc.reason}", lines


_CHECKS: Final[dict[DnsCheck, Callable[[_Context, list[str]], Awaitable[_Outcome]]]] = {
    DnsCheck.MX: _check_mx,
    DnsCheck.SPF: _check_spf,
    DnsCheck.DMARC: _check_dmarc,
    DnsCheck.MTA_STS: _check_mta_sts,
    DnsCheck.TLS_RPT: _check_tls_rpt,
    DnsCheck.DNSBL: _check_dnsbl,
    DnsCheck.FCRDNS: _check_fcrdns,
}


async def _run_one(ctx: _Context, check: DnsCheck, transcript: Transcript) -> DnsCheckResult:
    """One check under the deadline, its failures (any exception) turned into a failed result."""
    began = time.monotonic()
    evidence: list[str] = []
    try:
        async with asyncio.timeout_at(_loop_time(ctx.deadline)):
            outcome = await _CHECKS[check](ctx, evidence)
    except _CheckFailed as exc:
        outcome = _Outcome(False, exc.reason)
    except TimeoutError:
        outcome = _Outcome(False, "no result before the deadline")
    except Exception as exc:  # noqa: BLE001 - a broken check is reported, never raised
        outcome = _Outcome(False, f"check failed: {type(exc).__name__}: {exc}")
    seconds = time.monotonic() - began
    result = DnsCheckResult(
        check=check.value,
        ok=outcome.ok,
        reason=outcome.reason,
        evidence=tuple(evidence),
        policy=outcome.policy,
        listed=outcome.listed,
        seconds=seconds,
    )
    _record(transcript, result)
    return result


def _loop_time(deadline: float) -> float:
    """``deadline`` (time.monotonic) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _record(transcript: Transcript, result: DnsCheckResult) -> None:
    """The check's evidence then its verdict, as one block of notes at one offset."""
    at = time.monotonic()
    verdict = "ok" if result.ok else "FAILED"
    transcript.add(Direction.NOTE, f"dns check {result.check}: {verdict}: {result.reason}", at=at)
    for line in result.evidence:
        transcript.add(Direction.NOTE, f"  {line}", at=at)


async def run_dns_checks(
    spec: ProbeSpec, *, deadline: float, resolver: Resolver | None = None
) -> DnsReport:
    """Run every check of ``spec.dns_checks`` before ``deadline`` (monotonic) and report each.

    Never raises (cancellation aside): a check that cannot be done fails
    with its reason. ``resolver`` defaults to the shared one for ``spec.dns``.
    Checks run concurrently; their results come back in the order
    ``spec.dns_checks.checks`` names them. A probe without ``dns_checks``
    gets an empty (successful) report.
    """
    started_at = datetime.now(UTC)
    began = time.monotonic()
    transcript = Transcript()
    checks = spec.dns_checks
    results: Sequence[DnsCheckResult] = ()
    if checks is not None and checks.checks:
        ctx = _Context(spec, checks, resolver or shared(spec.dns), deadline)
        transcript.note(
            f"dns checks {', '.join(c.value for c in checks.checks)} via {_where(ctx.resolver)}"
        )
        try:
            results = await asyncio.gather(*(_run_one(ctx, c, transcript) for c in checks.checks))
        finally:
            ctx.close()
    return DnsReport(
        probe=spec.name,
        started_at=started_at,
        duration_seconds=time.monotonic() - began,
        results=tuple(results),
        transcript=transcript,
    )


def _where(resolver: Resolver) -> str:
    servers = resolver.settings.nameservers
    if not servers:
        return "the system resolver"
    return ", ".join(f"{host}:{port}" for host, port in servers)
