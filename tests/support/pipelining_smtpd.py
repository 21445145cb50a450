"""A small SMTP server that answers a pipelined group the way Postfix does, for the wire tests.

What: an asyncio server on 127.0.0.1 (in the test's own event loop) that
offers ``PIPELINING`` and answers the transaction's commands only once it
holds the whole group: it reads ``MAIL``, ``RCPT`` and ``DATA`` and then
writes their three replies in one write, as Postfix's smtpd does (it
flushes its replies when its input is empty). A client that waits for the
``MAIL`` reply before sending ``RCPT`` gets nothing and times out, so a
run that goes through proves the group went out at once. It records every
command line, and can leave the ``DATA`` reply out for good (``answer_data
= False``: the server that never answers the third reply).

Why: aiosmtpd answers each command the moment it reads it, so it cannot
show what a pipelining client does with replies that come together, nor
hold a reply back. It stands for Postfix 3.7/3.10 (``smtpd`` with its
default ``PIPELINING``); the real Postfix runs in the e2e tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tests.support.loopback_smtpd import LOOPBACK

__all__ = ["Pipelining", "pipelining_smtpd"]


@dataclass
class Pipelining:
    """The server's replies to the group, and what it saw."""

    mail_reply: str = "250 2.1.0 Ok"
    rcpt_reply: str = "250 2.1.5 Ok"
    data_reply: str = "354 End data with <CR><LF>.<CR><LF>"
    answer_data: bool = True
    """``False``: MAIL and RCPT are answered, DATA never is (the connection stays open)."""
    final_reply: str = "250 2.0.0 Ok: queued as PIPE1"
    commands: list[str] = field(default_factory=list)
    """Every command line read, in order (the message's lines excluded)."""
    messages: list[bytes] = field(default_factory=list)
    sessions: set[asyncio.StreamWriter] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One session: greet, EHLO, the transaction group, the message, QUIT."""
        self.sessions.add(writer)
        writer.write(b"220 pipe.test ESMTP\r\n")
        pending: list[str] = []
        try:
            while line := await reader.readline():
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                self.commands.append(text)
                verb = text.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    writer.write(b"250-pipe.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb in ("MAIL", "RCPT"):
                    pending.append(self.mail_reply if verb == "MAIL" else self.rcpt_reply)
                elif verb == "DATA":
                    if self.answer_data:
                        pending.append(self.data_reply)
                    writer.write("".join(f"{reply}\r\n" for reply in pending).encode())
                    pending.clear()
                    if self.answer_data and self.data_reply.startswith("354"):
                        self.messages.append(await _message(reader))
                        writer.write(f"{self.final_reply}\r\n".encode())
                elif verb == "RSET":
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    writer.write(b"502 5.5.2 Error: command not recognized\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.sessions.discard(writer)
            writer.close()


@contextlib.asynccontextmanager
async def pipelining_smtpd(server: Pipelining) -> AsyncIterator[int]:
    """Run ``server`` on an ephemeral port of 127.0.0.1 in this event loop; yield the port."""
    listener = await asyncio.start_server(server.serve, LOOPBACK, 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        # A session still waiting (the never-answered DATA) must not hold the loop.
        for writer in list(server.sessions):
            writer.close()
        await listener.wait_closed()


async def _message(reader: asyncio.StreamReader) -> bytes:
    """The lines after the ``354`` through the line that is a lone ``.``."""
    content = bytearray()
    while line := await reader.readline():
        content.extend(line)
        if line == b".\r\n":
            break
    return bytes(content)
