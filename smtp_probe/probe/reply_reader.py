"""What the readers of pipelined SMTP replies share: a buffer, a wake-up and the wait.

Two places take a transport from aiosmtplib for a while and read several
replies that may come in one segment, which aiosmtplib's own reader would
drop: :mod:`.smtp` for a pipelined command group, :mod:`.smuggling` for
the replies to its raw content. They differ in what a reply is and what
bad input means (see their ``_take``); the buffering, the end of the
connection and waiting for the next whole reply are the same, and live
here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Generic, TypeVar

ReplyT = TypeVar("ReplyT")


class ReplyReader(asyncio.Protocol, Generic[ReplyT]):
    """Buffers what the server sends and hands out whole replies as :meth:`_take` finds them."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._closed = False
        """The server ended the connection (EOF or lost): no more bytes will come."""
        self._changed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        """Keep ``data`` and wake the reader."""
        self._buffer.extend(data)
        self._changed.set()

    def eof_received(self) -> bool:
        """The server is done sending: wake the reader; close our side too (False)."""
        self._closed = True
        self._changed.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: wake the reader."""
        self._closed = True
        self._changed.set()

    async def _next(self) -> ReplyT | None:
        """The next reply :meth:`_take` finds; None once the connection ended without one.

        Waits as long as it takes: the caller puts a deadline around it.
        Raises whatever :meth:`_take` raises.
        """
        while True:
            reply = self._take()
            if reply is not None:
                return reply
            if self._closed:
                return None
            self._changed.clear()
            await self._changed.wait()

    def _lines(self) -> Iterator[tuple[bytes, int]]:
        """Each whole line in the buffer (with its line feed) and the offset just past it.

        A caller that consumes (``del self._buffer[:offset]``) stops iterating.
        """
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) >= 0:
            line = bytes(self._buffer[offset : end + 1])
            offset = end + 1
            yield line, offset

    def _take(self) -> ReplyT | None:
        """One whole reply off the buffer (removing it), or None while none is complete."""
        raise NotImplementedError
