"""A wire tap between an IMAP client and a real server, to see the commands on the wire.

:class:`WireTap` is a TCP relay on 127.0.0.1 in front of a real server
(Dovecot of the mail stack, or the sandbox's pymap) over plain IMAP. It
stands for no server: it passes every byte both ways unchanged and records
what the client wrote, one entry per ``recv``, so a test can count commands
(``NOOP``, ``UID SEARCH``, ``FETCH`` ...) and see which of them the client
wrote together (pipelined: one write, where separate round trips never
share one).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class WireTap:
    """Relay 127.0.0.1:``port`` (ours) to ``host``:``target`` (the server); record the client's writes."""

    def __init__(
        self, host: str, target: int, rewrite: Callable[[bytes], bytes] | None = None
    ) -> None:
        """Listen on a free port (:attr:`port`); ``rewrite`` changes what the client writes.

        The recorded chunks are what the client wrote, before ``rewrite``:
        with it, a test makes the real server answer a command it was
        not sent (a ``BAD`` for a mangled one, say).
        """
        self._target = (host, target)
        self._rewrite = rewrite
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="wire-tap", daemon=True).start()

    def chunks(self) -> list[list[str]]:
        """What the client wrote, one list of command lines (tags dropped) per chunk read."""
        with self._lock:
            raw = list(self._chunks)
        out = []
        for chunk in raw:
            lines = chunk.decode("utf-8", "replace").split("\r\n")
            out.append([_untagged(line) for line in lines if line])
        return out

    def commands(self) -> list[str]:
        """Every command line the client wrote, in order, tags dropped."""
        return [line for chunk in self.chunks() for line in chunk]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._lock:
            self._chunks.clear()

    def close(self) -> None:
        """Stop relaying: close the listener and every connection."""
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target, timeout=10)
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self._chunks.append(data)
                    if self._rewrite is not None:
                        data = self._rewrite(data)
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _untagged(line: str) -> str:
    """``A12 UID SEARCH ...`` as ``UID SEARCH ...``; a continuation line as it is."""
    tag, _, rest = line.partition(" ")
    return rest if rest and tag.isalnum() and tag[:1].isalpha() else line
