"""MTA-STS (RFC 8461): discover a domain's policy, fetch it over verified HTTPS, match MX hosts.

SKELETON (issue 10): the helper building ``mx:`` sending implements this
module; the signatures below are the contract the DNS checks build on.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtp_probe.probe.resolver import Resolver
from smtp_probe.probe.spec import TlsSettings


class MtaStsError(Exception):
    """A published policy could not be had or read: ``reason`` is one line naming what failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MtaStsPolicy:
    """A domain's MTA-STS policy as fetched from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``."""

    domain: str
    policy_id: str
    """The ``id=`` of the ``_mta-sts`` TXT record."""
    mode: str
    """``enforce``, ``testing`` or ``none``."""
    mx: tuple[str, ...]
    """MX host patterns (``mx1.example.net``, ``*.example.net``)."""
    max_age: int

    def matches(self, host: str) -> bool:
        """True when MX ``host`` matches one of the policy's ``mx`` patterns (RFC 8461 §4.1)."""
        raise NotImplementedError


async def discover(
    domain: str,
    resolver: Resolver,
    *,
    tls_settings: TlsSettings,
    deadline: float,
    evidence: list[str] | None = None,
) -> MtaStsPolicy | None:
    """The MTA-STS policy of ``domain``, or ``None`` when it publishes no ``_mta-sts`` record.

    The policy is fetched over HTTPS with the certificate verified for
    ``mta-sts.<domain>`` (``tls_settings.ca_file`` or the system store), the
    host resolved through ``resolver``; cached for its ``max_age`` while the
    TXT ``id`` is unchanged. Lines of what was asked and answered are
    appended to ``evidence``.

    Raises:
        MtaStsError: a TXT record is published but the policy could not be
            fetched (certificate, HTTP status, timeout) or parsed.
    """
    raise NotImplementedError
