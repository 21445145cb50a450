"""A filter hop for the verdict protocol tests: stamps headers on a message and relays it on.

It stands for a receiving MTA's milters: OpenDKIM signing on submission
(``sign``: dkimpy signs the message as it arrives) and a verifier such as
OpenDKIM/OpenDMARC or rspamd writing ``Authentication-Results`` and spam
headers on top (``stamp``). It is an aiosmtpd server; it relays with
aiosmtplib into the next hop (the demo sandbox), so the probe's watcher
reads the result over real IMAP. The end-to-end tests use the real filter
stack (Postfix + OpenDKIM) instead.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiosmtplib
import dkim
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.loopback_smtpd import LOOPBACK


@dataclass(frozen=True)
class DkimKey:
    """An RSA key pair for one selector of one domain."""

    domain: str
    selector: str
    private_pem: bytes
    public_b64: str

    @property
    def name(self) -> str:
        """Where the key is published: ``selector._domainkey.domain``."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record(self) -> str:
        """The TXT record publishing the public key."""
        return f"v=DKIM1; k=rsa; p={self.public_b64}"


def make_key(domain: str, selector: str = "probe") -> DkimKey:
    """A fresh 2048-bit RSA key for ``selector`` of ``domain``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(domain, selector, private, base64.b64encode(public).decode())


@dataclass
class Stamping:
    """What the hop does to each message: sign it, then put ``stamp`` lines on top."""

    next_hop: tuple[str, int]
    stamp: list[str] = field(default_factory=list)
    """Header lines (``Name: value``), written above everything, in this order."""
    sign: DkimKey | None = None
    relayed: int = 0


class _Handler:
    def __init__(self, stamping: Stamping) -> None:
        self._stamping = stamping

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Sign, stamp, relay; answer with the next hop's verdict."""
        stamping = self._stamping
        content = envelope.original_content or b""
        if stamping.sign is not None:
            key = stamping.sign
            signature = dkim.sign(
                content,
                key.selector.encode(),
                key.domain.encode(),
                key.private_pem,
                include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
            )
            content = signature + content
        stamped = "".join(f"{line}\r\n" for line in stamping.stamp).encode() + content
        host, port = stamping.next_hop
        try:
            await aiosmtplib.send(
                stamped,
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname=host,
                port=port,
                start_tls=False,  # plain on loopback, like a filter's reinjection
                timeout=5,
            )
        except aiosmtplib.SMTPException as exc:
            return f"451 4.4.0 next hop refused: {exc}"
        stamping.relayed += 1
        return "250 2.0.0 Ok: relayed"


@asynccontextmanager
async def stamping_hop(stamping: Stamping) -> AsyncIterator[int]:
    """Run the hop on a free loopback port (yielded) until the block ends."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_Handler(stamping), hostname="filter.test"), LOOPBACK, 0
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
