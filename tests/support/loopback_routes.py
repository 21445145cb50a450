"""Probes aimed at the loopback SMTP servers of the protocol tests, and one run of them.

The counterpart of :mod:`tests.support.routes` (which aims at the real
Postfix + Dovecot stack) for :mod:`tests.support.loopback_smtpd`: one
SMTP-only route (no mailbox, so a run stops after the ``250``), plain SMTP
unless a test asks for TLS or AUTH.
"""

from __future__ import annotations

import asyncio

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.secret import Secret
from tests.support.loopback_smtpd import LOOPBACK

SENDER = "probe@sender.test"
RECIPIENT = "sink@rcpt.test"
HELO_NAME = "probe.test"


def loopback_probe(
    port: int,
    *,
    name: str = "proto",
    host: str = LOOPBACK,
    tls: TlsMode = TlsMode.NONE,
    tls_settings: TlsSettings | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
    command_timeout: float = 5.0,
) -> ProbeSpec:
    """A probe from :data:`SENDER` to :data:`RECIPIENT` through ``host:port``.

    It greets as :data:`HELO_NAME`; ``timeout`` is the run deadline and
    ``command_timeout`` the longest wait for one reply.
    """
    return ProbeSpec(
        name=name,
        smtp=SmtpServer(
            host=host,
            port=port,
            tls=tls,
            tls_settings=tls_settings or TlsSettings(),
            username=username,
            password=Secret(password) if password is not None else None,
            helo=HELO_NAME,
            timeout=command_timeout,
        ),
        mail_from=SENDER,
        rcpt_to=RECIPIENT,
        timeout=timeout,
    )


def run(probe: ProbeSpec, signer: TokenSigner | None = None) -> RunResult:
    """One run of ``probe`` in a fresh event loop, signed by ``signer`` (a new one by default)."""
    return asyncio.run(run_probe(probe, signer=signer or TokenSigner()))
