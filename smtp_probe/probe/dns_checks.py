"""A probe's DNS checks: MX, SPF, DMARC, MTA-STS, TLS-RPT, DNSBL and forward-confirmed reverse DNS.

SKELETON (issue 10): the DNS checks helper implements this module.
"""

from __future__ import annotations

from smtp_probe.probe.resolver import Resolver
from smtp_probe.probe.result import DnsReport
from smtp_probe.probe.spec import ProbeSpec


async def run_dns_checks(
    spec: ProbeSpec, *, deadline: float, resolver: Resolver | None = None
) -> DnsReport:
    """Run every check of ``spec.dns_checks`` before ``deadline`` (monotonic) and report each.

    Never raises (cancellation aside): a check that cannot be done fails
    with its reason. ``resolver`` defaults to the shared one for ``spec.dns``.
    """
    raise NotImplementedError
