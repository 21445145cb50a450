r"""A tiny raw SMTP server that ends DATA where a sloppy MTA would: stands for a vulnerable MTA.

It stands for Postfix 3.7 with ``smtpd_forbid_bare_newline = no`` (Debian
12's default), which takes ``<LF>.<CR><LF>`` as the end of DATA, and for
the other servers of the 2023 SMTP smuggling reports that took ``<LF>.<LF>``
or ``<CR>.<CR>``: the test picks the extra end-of-data sequences it accepts
(``terminators``; none: a strict server). Like those servers it reads
pipelined input in order, so whatever follows an end of data is read as
commands. With ``refuse_bare_lf`` it stands for Postfix with
``smtpd_forbid_bare_newline = yes`` for a client it does not exempt:
``521 5.5.2 Error: bare <LF> received`` and a disconnect. With ``silent``
it never answers the end of data (a hung content filter); with
``hang_up_on_bare_lf`` it hangs up on a bare ``<LF>`` without a word; without
``answer_quit`` it closes on ``QUIT`` without its ``221``.

Every message it accepts is handed to ``deliver`` (the tests append it to
the sandbox's IMAP mailbox); the raw DATA input of each session is kept in
:attr:`SplittingSmtpd.contents` so tests can pin the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Final

LOOPBACK: Final = "127.0.0.1"
STANDARD: Final = b"\r\n.\r\n"
_BARE_LF: Final = re.compile(rb"(?<!\r)\n")


class SplittingSmtpd:
    """``async with SplittingSmtpd(...) as port``: the server on a free loopback port."""

    def __init__(
        self,
        deliver: Callable[[bytes], Awaitable[None]],
        *,
        terminators: tuple[bytes, ...] = (),
        refuse_bare_lf: bool = False,
        silent: bool = False,
        hang_up_on_bare_lf: bool = False,
        answer_quit: bool = True,
    ) -> None:
        self._deliver = deliver
        self._terminators = (STANDARD, *terminators)
        self._refuse_bare_lf = refuse_bare_lf
        self._silent = silent
        self._hang_up = hang_up_on_bare_lf
        self._answer_quit = answer_quit
        self._server: asyncio.Server | None = None
        self.contents: list[bytes] = []
        """Per session, everything received after its first ``354``."""
        self.accepted = 0

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._session, LOOPBACK, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        data_mode = False
        content: bytearray | None = None
        writer.write(b"220 smuggle.test ESMTP\r\n")
        try:
            while True:
                if data_mode:
                    end, length = self._end_of_data(buffer)
                    region = buffer[: end + length] if end >= 0 else buffer
                    if (self._refuse_bare_lf or self._hang_up) and _BARE_LF.search(region):
                        if not self._hang_up:
                            writer.write(b"521 5.5.2 smuggle.test Error: bare <LF> received\r\n")
                        break
                    if end < 0 or self._silent:
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        buffer += chunk
                        if content is not None:
                            content += chunk
                        continue
                    message = bytes(buffer[:end]) + b"\r\n"
                    del buffer[: end + length]
                    data_mode = False
                    await self._deliver(re.sub(rb"(?m)^\.\.", b".", message))
                    self.accepted += 1
                    writer.write(f"250 2.0.0 Ok: queued as Q{self.accepted}\r\n".encode())
                    continue
                newline = buffer.find(b"\n")
                if newline < 0:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    if content is not None:
                        content += chunk
                    continue
                line = bytes(buffer[:newline]).rstrip(b"\r").decode("ascii", "replace")
                del buffer[: newline + 1]
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    writer.write(b"250-smuggle.test\r\n250 PIPELINING\r\n")
                elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == "DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    data_mode = True
                    if content is None:
                        content = bytearray(buffer)
                        self.contents.append(b"")
                elif verb == "QUIT":
                    if self._answer_quit:
                        writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    writer.write(b"502 5.5.2 Error: command not recognized\r\n")
                await writer.drain()
        finally:
            if content is not None:
                self.contents[-1] = bytes(content)
            await writer.drain()
            writer.close()

    def _end_of_data(self, buffer: bytearray) -> tuple[int, int]:
        """Where the earliest end of data starts (before its line end) and its length; -1 if none."""
        found = [(buffer.find(term), len(term)) for term in self._terminators]
        found = [(at, length) for at, length in found if at >= 0]
        return min(found) if found else (-1, 0)
