"""A hostile SMTP server: its banner and replies carry HTML and script.

It stands for a hostile or compromised MTA (or one whose operator put
markup in ``smtpd_banner`` or a policy service's reject text): everything
it says ends up in our transcripts, errors, status page and ``/probe``
output, and must stay text there, never markup. It is a real aiosmtpd
(:func:`tests.support.loopback_smtpd.smtpd`) that greets with :data:`BANNER_MARKUP`
and refuses every recipient with :data:`REPLY_MARKUP`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.loopback_smtpd import Behaviour, smtpd

BANNER_MARKUP = "<script>alert(1)</script>"
"""In the ``220`` greeting."""
REPLY_MARKUP = "</pre><img src=x onerror=\"alert('rcpt')\"><a href='javascript:alert(3)'>&amp;x</a>"
"""In the ``550`` reply to ``RCPT TO``: closes our ``<pre>``, then attributes and an entity."""
PAYLOADS = (BANNER_MARKUP, REPLY_MARKUP)


@contextmanager
def hostile_smtpd() -> Iterator[int]:
    """Run the hostile server on 127.0.0.1; yield its port."""
    behaviour = Behaviour(rcpt_reply=f"550 5.7.1 {REPLY_MARKUP}")
    with smtpd(behaviour, server_hostname="mx.hostile.test", ident=BANNER_MARKUP) as port:
        yield port
