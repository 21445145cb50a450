"""One way to send for every kind of run: to a host directly, or to a mail domain's MX.

:func:`~smtp_probe.probe.smtp.send_message` talks to one host;
:func:`~smtp_probe.probe.mx.send_via_mx` walks an ``mx:`` server's MX hosts
and sends to each through it. Callers (a delivery run, an expected
refusal, the smuggling check) send through :func:`submit` and need not
know which. The MX walk (and MTA-STS with ``http.client``) is imported
only for an ``mx`` server, keeping ``smtp-probe check`` start-up lean.
"""

from __future__ import annotations

from email.message import EmailMessage

from smtp_probe.probe.credentials import AccessToken
from smtp_probe.probe.message import OutgoingMessage
from smtp_probe.probe.result import SmtpReport, Stage
from smtp_probe.probe.smtp import RawContent, send_message
from smtp_probe.probe.spec import DnsSettings, SmtpServer
from smtp_probe.probe.transcript import Transcript


async def submit(
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
    """Send ``message`` through ``server``; an ``mx`` server's MX hosts are found through ``dns``.

    The options are :func:`~smtp_probe.probe.smtp.send_message`'s.

    Raises:
        SmtpSendError: as :func:`~smtp_probe.probe.smtp.send_message` and
            :func:`~smtp_probe.probe.mx.send_via_mx` say.
    """
    if server.mx:
        from smtp_probe.probe.mx import send_via_mx

        return await send_via_mx(
            server,
            message,
            mail_from=mail_from,
            rcpt_to=rcpt_to,
            transcript=transcript,
            deadline=deadline,
            dns=dns,
            token=token,
            envid=envid,
            raw_content=raw_content,
            stop_after=stop_after,
            expecting=expecting,
        )
    return await send_message(
        server,
        message,
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        transcript=transcript,
        deadline=deadline,
        token=token,
        envid=envid,
        raw_content=raw_content,
        stop_after=stop_after,
        expecting=expecting,
    )
