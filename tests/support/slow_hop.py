"""A slow next hop: Postfix's LMTP sessions through it reach Dovecot only after a delay.

It stands for the hop that makes real delivery take seconds (a content
filter, a busy mailbox server, a congested link, an MX far away that greets
late), which is when replicas' messages are in flight at the same time and
when the fault soak's ``slow_delivery`` runs report a late delivery.
:class:`SlowHop` listens on the socket ``private/slow-lmtp`` in Postfix's
queue directory, waits ``delay`` seconds after each connection, then
connects to Dovecot's own LMTP socket and passes the bytes both ways
unchanged: Dovecot does the delivery, to sink's INBOX. Postfix only waits
longer for the greeting; while Dovecot is down, Postfix sees a dropped
connection and defers.

Two ways in: the stack's transport map routes :data:`~tests.support.
mailstack.SLOW` there (the replica tests), and :data:`TRANSPORT` as
``virtual_transport`` routes every delivery there (the soak's fault
``slow_delivery``, :mod:`tests.support.faults`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from types import TracebackType

from tests.support.mailstack import MailStack

SOCKET = "slow-lmtp"
"""The socket's name in Postfix's ``private`` directory (the transport map names it)."""
TRANSPORT = f"lmtp:unix:private/{SOCKET}"
"""The Postfix transport that delivers through the hop."""


class SlowHop:
    """The delaying relay, in a thread of its own; ``with SlowHop(stack, 3.0): ...``.

    (Or :meth:`start` ... :meth:`close`, for a hop that outlives one block.)
    ``sessions`` counts the LMTP sessions passed on (read it after the block).
    """

    def __init__(self, stack: MailStack, delay: float) -> None:
        private = stack.layout.queue_dir / "private"
        self.path: Path = private / SOCKET
        self.target: Path = private / "dovecot-lmtp"
        self.delay = delay
        self.sessions = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slow-hop", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> SlowHop:
        """:meth:`start`.

        Raises:
            OSError: the socket could not be made.
        """
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """:meth:`close`."""
        self.close()

    def start(self) -> None:
        """Listen (the socket is open to Postfix's unprivileged ``lmtp`` process).

        Raises:
            OSError: the socket could not be made.
        """
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._relay, path=str(self.path)), self._loop
        ).result(10)
        os.chmod(self.path, 0o666)  # noqa: S103 - in the stack's private dir; Postfix runs as postfix

    def close(self) -> None:
        """Stop listening and the thread; sessions in progress are cut."""
        server = self._server
        if server is not None:
            server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            await asyncio.sleep(self.delay)
            server_in, server_out = await asyncio.open_unix_connection(str(self.target))
        except OSError:
            client_out.close()
            return
        self.sessions += 1
        await asyncio.gather(_pipe(client_in, server_out), _pipe(server_in, client_out))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy ``source`` to ``sink`` until either side ends, then close ``sink``."""
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.close()
