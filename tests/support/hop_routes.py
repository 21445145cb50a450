"""Probe specs through the multi-hop route (tests/support/hopstack.py) for end-to-end tests.

The counterparts of :mod:`tests.support.routes` for a :class:`HopStack`: the
probe submits at the submission hop (STARTTLS + AUTH as ``probe@``), the
message crosses the rspamd-filtered inbound hop and the MailStack, and is
watched in sink's mailbox, whose receiver writes Authentication-Results as
:data:`AUTHSERV_ID`.  DSNs come back to ``probe@``'s mailbox
(:func:`bounce_box`).
"""

from __future__ import annotations

from dataclasses import replace

from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.secret import Secret
from tests.support.hopstack import AUTHSERV_ID, SENDER, HopStack
from tests.support.routes import SINK, mailbox

__all__ = ["bounce_box", "hop_probe", "hop_sink_box", "hop_smtp_server"]


def hop_smtp_server(hops: HopStack, **changes: object) -> SmtpServer:
    """The submission hop: STARTTLS (the MailStack CA), AUTH as probe@."""
    server = SmtpServer(
        hops.host,
        hops.submission_port,
        TlsMode.STARTTLS,
        TlsSettings(ca_file=hops.ca_file),
        SENDER,
        Secret(hops.mailstack.users[SENDER]),
        timeout=10,
    )
    return replace(server, **changes)  # type: ignore[arg-type]


def hop_sink_box(hops: HopStack, **changes: object) -> Mailbox:
    """The sink mailbox (IMAPS), trusting Authentication-Results from the inbound hop only."""
    return replace(mailbox(hops.mailstack), authserv_id=AUTHSERV_ID, **changes)  # type: ignore[arg-type]


def bounce_box(hops: HopStack, **changes: object) -> Mailbox:
    """The probe@ mailbox (IMAPS): where DSNs for the probe's envelope sender arrive."""
    box = replace(
        mailbox(hops.mailstack), username=SENDER, password=Secret(hops.mailstack.users[SENDER])
    )
    return replace(box, **changes)  # type: ignore[arg-type]


def hop_probe(
    hops: HopStack,
    *,
    to: str = SINK,
    timeout: float = 20.0,
    name: str = "hops",
    **changes: object,
) -> ProbeSpec:
    """A probe from probe@ to ``to`` through the whole route, watched in sink's mailbox.

    ``changes`` are ProbeSpec fields (``expect_auth``, ``verify_dkim``,
    ``bounce_mailbox``, ...).
    """
    spec = ProbeSpec(
        name=name,
        smtp=hop_smtp_server(hops),
        mail_from=SENDER,
        rcpt_to=to,
        mailbox=hop_sink_box(hops),
        timeout=timeout,
    )
    return replace(spec, **changes)  # type: ignore[arg-type]
