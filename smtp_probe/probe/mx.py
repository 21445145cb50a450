"""Sending as an MTA does: an ``mx:`` server's MX walk, with MTA-STS deciding the TLS.

For an SMTP server given as ``mx: <domain>`` the message goes where the
outside world's mail goes (RFC 5321 §5.1): the domain's MX records through
our resolver (never the system's: the same view of DNS as the DNS checks),
sorted by preference (equal ones shuffled, as §5.1 asks), a domain without
MX taken as its own single MX (its A/AAAA), a null MX (RFC 7505) refused.
Each MX host's addresses (A, then AAAA) are tried in turn; an attempt that
fails before the envelope (no connection, a ``4xx``/``5xx`` banner, EHLO
or STARTTLS failing) moves on to the next, each one noted in the
transcript as ``=== MX 10 mx1.example.net [192.0.2.1]:25: <why>, trying
the next``. Once a host takes the envelope its answer is final.

TLS follows the domain's MTA-STS policy (RFC 8461 §4, §5), discovered
before connecting:

- ``enforce``: only MX hosts the policy names, STARTTLS required and the
  certificate verified for the MX host name (the server's ``ca_file`` or
  the system store, whatever ``verify`` says); a host that fails this is
  skipped, and with none left the run fails at ``starttls``: the message
  is never sent in the clear to such a domain;
- ``testing``: the same checks, violations noted in the transcript, and the
  message delivered as without a policy;
- no policy (or ``none``): the server's own ``tls``, by default
  ``opportunistic`` (STARTTLS when offered, unverified; plain otherwise).

A policy that is published but cannot be fetched counts as none unless an
unexpired one is cached (RFC 8461 §5.1); the transcript says which.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import Final

from smtp_probe.probe import mta_sts, resolver
from smtp_probe.probe.credentials import AccessToken
from smtp_probe.probe.message import OutgoingMessage
from smtp_probe.probe.mta_sts import MtaStsError, MtaStsPolicy
from smtp_probe.probe.resolver import Answer, DnsLookupError, Resolver
from smtp_probe.probe.result import SmtpReport, Stage
from smtp_probe.probe.smtp import RawContent, SmtpSendError, send_message
from smtp_probe.probe.spec import DnsSettings, SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.transcript import Transcript

FALLBACK_STAGES: Final = frozenset({Stage.CONNECT, Stage.BANNER, Stage.EHLO, Stage.STARTTLS})
"""A failure at these stages is the host's, not the message's: the next MX is tried."""


@dataclass(frozen=True, slots=True)
class MxHost:
    """One MX record: preference and host name (no trailing dot)."""

    preference: int
    host: str


class _Failed(Exception):
    """The MX walk found no host; ``stage`` and ``reason`` of the run's failure."""

    def __init__(self, stage: Stage, reason: str, report: SmtpReport | None = None) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.report = report
        """What the last attempt saw (its reply, its timings), when there was one."""


async def send_via_mx(
    server: SmtpServer,
    message: EmailMessage | OutgoingMessage,
    *,
    mail_from: str,
    rcpt_to: str,
    transcript: Transcript,
    deadline: float,
    dns: DnsSettings,
    token: AccessToken | None = None,
    envid: str | None = None,
    raw_content: RawContent | None = None,
    stop_after: Stage | None = None,
    expecting: bool = False,
) -> SmtpReport:
    """Deliver ``message`` to the MX hosts of the mail domain ``server.host`` (see the module docstring).

    Returns the report of the accepting host, ``mx_host`` naming it.
    ``raw_content``, ``stop_after`` and ``expecting`` go to the chosen
    host's session as :func:`~smtp_probe.probe.smtp.send_message` takes them
    (the smuggling and expected-refusal checks through an MX).

    Raises:
        SmtpSendError: at ``dns`` (no MX and no address, a null MX, a
            failed lookup), at ``starttls`` (MTA-STS ``enforce`` and no host
            fit it), at ``connect``/``banner``/``ehlo`` (no host could be
            reached), or at the stage where the chosen host refused.
    """
    started = time.monotonic()
    domain = server.host.lower().rstrip(".")
    lookups = resolver.shared(dns)
    transcript.note(f"sending to the MX of {domain} (tls: {server.tls})")
    try:
        hosts = await _mx_hosts(domain, lookups, deadline, transcript)
    except _Failed as exc:
        raise _failure(transcript, exc, started) from None
    policy = await _policy(domain, lookups, server, deadline, transcript)
    dns_seconds = time.monotonic() - started

    last: _Failed | None = None
    policy_refusals: list[str] = []
    for mx in hosts:
        label = f"MX {mx.preference} {mx.host}"
        if policy is not None and policy.mode != "none" and not policy.matches(mx.host):
            why = f"{mx.host} is not among the MTA-STS policy's mx ({', '.join(policy.mx)})"
            if policy.mode == "enforce":
                transcript.note(f"{label}: {why}: skipped (enforce)")
                policy_refusals.append(why)
                continue
            transcript.note(f"{label}: MTA-STS testing violation: {why}; delivering anyway")
        try:
            addresses = await _addresses(mx.host, lookups, deadline, transcript)
        except _Failed as exc:
            transcript.note(f"{label}: {exc.reason}, trying the next")
            last = exc
            continue
        for address in addresses:
            where = f"[{address}]:{server.port}"
            attempts = _attempts(server, mx.host, policy)
            for index, (attempt, strict) in enumerate(attempts):
                transcript.note(f"{label} {where}" + (" (MTA-STS)" if strict else ""))
                try:
                    report = await send_message(
                        attempt,
                        message,
                        mail_from=mail_from,
                        rcpt_to=rcpt_to,
                        transcript=transcript,
                        deadline=deadline,
                        token=token,
                        envid=envid,
                        connect_to=(address,),
                        raw_content=raw_content,
                        stop_after=stop_after,
                        expecting=expecting,
                    )
                except SmtpSendError as exc:
                    if exc.stage not in FALLBACK_STAGES or time.monotonic() >= deadline:
                        refused = expecting and exc.code is not None
                        verdict = "refused" if refused else "FAILED"
                        transcript.note(f"{verdict} at {exc.stage}: {exc.reason}")
                        raise SmtpSendError(
                            exc.stage,
                            exc.reason,
                            _finished(exc.report, mx.host, dns_seconds),
                            throttled=exc.throttled,
                            code=exc.code,
                        ) from None
                    if strict and _tls_refusal(exc):
                        why = f"{mx.host} {where}: {exc.reason}"
                        if index + 1 < len(attempts):
                            transcript.note(
                                f"{label}: MTA-STS testing violation: {exc.reason}; "
                                "once more without the policy"
                            )
                            continue
                        policy_refusals.append(why)
                        transcript.note(f"{label} {where}: {exc.reason}: skipped (enforce)")
                        break
                    transcript.note(f"{label} {where}: {exc.reason}, trying the next")
                    last = _Failed(exc.stage, f"{mx.host} {where}: {exc.reason}", exc.report)
                    break
                transcript.note(f"delivered to {label} {where}")
                return _finished(report, mx.host, dns_seconds)

    if policy is not None and policy.mode == "enforce" and policy_refusals and last is None:
        reason = f"MTA-STS enforce ({domain}, id {policy.policy_id}): " + "; ".join(policy_refusals)
        raise _failure(transcript, _Failed(Stage.STARTTLS, reason), started)
    if last is None:  # pragma: no cover - every path above sets one or returns
        last = _Failed(Stage.CONNECT, f"no MX host of {domain} could be tried")
    reason = f"no MX host of {domain} took the message; last: {last.reason}"
    if policy_refusals:
        reason += f"; refused by MTA-STS enforce: {'; '.join(policy_refusals)}"
    raise _failure(transcript, _Failed(last.stage, reason, last.report), started)


def _attempts(
    server: SmtpServer, host: str, policy: MtaStsPolicy | None
) -> list[tuple[SmtpServer, bool]]:
    """The server settings to try ``host`` with: (settings, bound by MTA-STS?) in order.

    Under ``enforce`` only the strict attempt; under ``testing`` the strict
    one, then the server's own TLS if that one failed on TLS; otherwise the
    server's own TLS alone.
    """
    plain = replace(server, host=host, mx=False)
    if policy is None or policy.mode == "none":
        return [(plain, False)]
    strict = replace(
        plain,
        tls=TlsMode.STARTTLS,
        tls_settings=TlsSettings(verify=True, ca_file=server.tls_settings.ca_file),
    )
    if policy.mode == "enforce":
        return [(strict, True)]
    return [(strict, True), (plain, False)]


async def _mx_hosts(
    domain: str, lookups: Resolver, deadline: float, transcript: Transcript
) -> list[MxHost]:
    """The MX hosts of ``domain`` by preference; the domain itself when it has no MX.

    Raises:
        _Failed: at ``dns``: lookup failure, no such domain, a null MX.
    """
    try:
        answer = await lookups.lookup(domain, "MX", deadline=deadline)
    except DnsLookupError as exc:
        raise _Failed(Stage.DNS, f"MX lookup failed: {exc.reason}") from None
    transcript.note(answer.describe())
    if not answer.exists:
        if answer.status == resolver.Status.NXDOMAIN:
            raise _Failed(Stage.DNS, f"{domain} does not exist (NXDOMAIN)")
        transcript.note(f"{domain} has no MX: its own address is the MX (RFC 5321 §5.1)")
        return [MxHost(0, domain)]
    hosts: list[MxHost] = []
    for record in answer.records:
        preference, _, name = record.partition(" ")
        host = name.strip().rstrip(".").lower()
        if not host:
            # "0 ." is the null MX of RFC 7505: the domain accepts no mail.
            raise _Failed(Stage.DNS, f"{domain} accepts no mail (null MX, RFC 7505)")
        hosts.append(MxHost(int(preference), host))
    random.shuffle(hosts)  # equal preferences in random order (RFC 5321 §5.1); sort is stable
    hosts.sort(key=lambda mx: mx.preference)
    return hosts


async def _addresses(
    host: str, lookups: Resolver, deadline: float, transcript: Transcript
) -> list[str]:
    """A then AAAA addresses of an MX host.

    Raises:
        _Failed: at ``dns``: neither gave an address.
    """
    result = await lookups.addresses(host, deadline=deadline)
    for _rdtype, step in result.steps:
        if isinstance(step, Answer) and step.exists:
            transcript.note(step.describe())
    if not result.found:
        raise _Failed(Stage.DNS, f"{host} has no address ({result.why_none()})")
    return result.found


async def _policy(
    domain: str, lookups: Resolver, server: SmtpServer, deadline: float, transcript: Transcript
) -> MtaStsPolicy | None:
    """The MTA-STS policy to deliver under, noted in the transcript; ``None`` for none."""
    evidence: list[str] = []
    try:
        policy = await mta_sts.discover(
            domain, lookups, tls_settings=server.tls_settings, deadline=deadline, evidence=evidence
        )
    except MtaStsError as exc:
        for line in evidence:
            transcript.note(line)
        cached = mta_sts.cached_policy(domain)
        if cached is None:
            transcript.note(
                f"MTA-STS: policy not fetched ({exc.reason}): delivering as without a policy "
                "(RFC 8461 §5)"
            )
            return None
        transcript.note(f"MTA-STS: policy not fetched ({exc.reason}): the cached one applies")
        policy = cached
    else:
        for line in evidence:
            transcript.note(line)
        if policy is None:
            cached = mta_sts.cached_policy(domain)
            if cached is not None:
                transcript.note("MTA-STS: no record now, but a cached policy has not expired")
                policy = cached
    if policy is None:
        transcript.note(f"MTA-STS: {domain} publishes no policy: opportunistic delivery")
        return None
    transcript.note(f"MTA-STS: mode {policy.mode} (id {policy.policy_id}) applies")
    return policy


def _tls_refusal(exc: SmtpSendError) -> bool:
    """The failure is the host's TLS: no STARTTLS (or no ESMTP at all), a failed handshake."""
    return exc.stage is Stage.STARTTLS or (exc.stage is Stage.EHLO and "STARTTLS" in exc.reason)


def _finished(report: SmtpReport, host: str, dns_seconds: float) -> SmtpReport:
    """``report`` with the MX host and the time spent on MX and MTA-STS lookups."""
    timings = dict(report.stage_seconds)
    timings[Stage.DNS] = timings.get(Stage.DNS, 0.0) + dns_seconds
    return replace(report, mx_host=host, stage_seconds=timings)


def _failure(transcript: Transcript, failed: _Failed, started: float) -> SmtpSendError:
    """The run's failure: the last attempt's reply kept, the whole walk's time on its stage."""
    transcript.note(f"FAILED at {failed.stage}: {failed.reason}")
    report = failed.report or SmtpReport()
    timings = dict(report.stage_seconds)
    timings[failed.stage] = (
        time.monotonic()
        - started
        - sum(seconds for stage, seconds in timings.items() if stage is not failed.stage)
    )
    return SmtpSendError(failed.stage, failed.reason, replace(report, stage_seconds=timings))
