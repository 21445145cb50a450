"""An SMTP server that throttles senders the way Exchange Online does, for the M365 quirk tests.

What: a real aiosmtpd server on 127.0.0.1 (through :func:`tests.support.loopback_smtpd.smtpd`)
whose handler answers ``MAIL FROM``, ``RCPT TO`` or the end of ``DATA`` with a
temporary rate-limit refusal, for the first ``times`` transactions or forever,
and records what it was asked.

Why: it stands for Exchange Online (``smtp.office365.com``), which refuses
submissions it is throttling with 4xx replies carrying the enhanced status
``4.3.2`` - "Concurrent connections limit exceeded" when a client opens too
many sessions, "STOREDRV.ClientSubmit; sender thread limit exceeded" when one
mailbox submits too much at once.  A probe must report those as a temporary
condition (outcome ``throttled``), not as a broken route.  No Exchange server
can run here, so the replies are scripted; everything else (the SMTP dialogue,
EHLO, AUTH when asked for) is aiosmtpd's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.loopback_smtpd import Behaviour, smtpd

__all__ = [
    "CONCURRENT_CONNECTIONS",
    "SENDER_THREAD_LIMIT",
    "Throttling",
    "throttling_smtpd",
]

#: Exchange Online's reply when a client has too many sessions open at once.
CONCURRENT_CONNECTIONS = (
    "451 4.3.2 Concurrent connections limit exceeded. "
    "Visit https://aka.ms/concurrent_sending for more information."
)
#: Exchange Online's reply when one sender submits too many messages at once.
SENDER_THREAD_LIMIT = "452 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"

Stage = Literal["mail", "rcpt", "data"]


@dataclass
class Throttling(Behaviour):
    """A :class:`Behaviour` that refuses at ``stage`` with ``reply`` (see the module docstring).

    ``times``: how many transactions are refused before the server accepts
    mail normally again (``None``: refuse forever).  ``refusals`` counts the
    refusals sent so far.
    """

    stage: Stage = "rcpt"
    reply: str = CONCURRENT_CONNECTIONS
    times: int | None = None
    refusals: int = 0

    def _refuse(self) -> bool:
        """True (and counted) while this transaction should be refused."""
        if self.times is not None and self.refusals >= self.times:
            return False
        self.refusals += 1
        return True

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Refuse the sender while throttling at ``mail``, else accept it."""
        if self.stage == "mail" and self._refuse():
            return self.reply
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Refuse the recipient while throttling at ``rcpt``, else accept it."""
        if self.stage == "rcpt" and self._refuse():
            return self.reply
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Refuse the message after its final dot while throttling at ``data``."""
        if self.stage == "data" and self._refuse():
            return self.reply
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def throttling_smtpd(
    reply: str = CONCURRENT_CONNECTIONS,
    *,
    stage: Stage = "rcpt",
    times: int | None = None,
    **smtp_kwargs: Any,
) -> Iterator[tuple[int, Throttling]]:
    """Run a throttling server; yield ``(port, handler)``.

    ``reply`` must be a 4xx reply line; ``smtp_kwargs`` go to aiosmtpd's
    ``SMTP`` (e.g. ``authenticator=``, ``auth_require_tls=False``,
    ``tls_context=``).  Raises ValueError for a reply that is not 4xx.
    """
    if not (len(reply) > 4 and reply[0] == "4" and reply[1:3].isdigit() and reply[3] == " "):
        raise ValueError(f"a throttling reply is a single 4xx line, got {reply!r}")
    handler = Throttling(stage=stage, reply=reply, times=times)
    with smtpd(handler, **smtp_kwargs) as port:
        yield port, handler
