"""The IMAP leg: a mailbox watcher on imapclient, in a worker thread of its own.

One :class:`MailboxWatcher` owns one IMAP connection to one mailbox and
serves every probe that delivers there. Its thread

* connects, logs in and selects the folder *before* any message is sent, so
  a fast delivery cannot slip by and login time never counts as delivery;
* while a run's message is in flight, polls ``NOOP`` + ``UID SEARCH`` from
  ``poll_min`` doubling to ``poll_interval`` (a bare SEARCH on Dovecot sees
  new mail one command late; the NOOP fixes that), idling between slower
  polls so a server that pushes new mail wakes it at once;
* while nothing is in flight, sits in IDLE (or polls slowly without it);
* matches arrivals by the probe header *and* a valid signature, reads their
  folder, INTERNALDATE and ``Received`` headers, and deletes exactly that
  message by UID. Nothing else in the mailbox is ever touched.

imapclient is blocking and not thread-safe, so only the watcher thread uses
the connection; the event loop talks to it through a lock-protected table of
expectations and a wake-up socket. Every blocking call is bounded by the
socket timeout, because a thread cannot be cancelled. This module is the only
place that knows imapclient's exceptions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.parser
import email.policy
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import DELETED, JUNK

from smtp_probe.probe.message import PROBE_HEADER, Token, TokenSigner, token_key
from smtp_probe.probe.result import Arrival, Stage
from smtp_probe.probe.spec import Mailbox, TlsMode
from smtp_probe.probe.tls import client_context, describe_verify_error
from smtp_probe.probe.transcript import Direction, Transcript

IDLE_RENEW_SECONDS: Final = 25 * 60
"""Re-issue IDLE before servers drop it (RFC 2177 allows them to after 29 minutes)."""
IDLE_BETWEEN_POLLS: Final = 0.25
"""In flight, wait in IDLE rather than silently when the next poll is this far off."""
QUIET_POLL_SECONDS: Final = 60.0
"""Without IDLE and nothing in flight, look for late arrivals this often."""
RECONNECT_MIN: Final = 0.5
RECONNECT_MAX: Final = 30.0
"""A persistent watcher retries a lost mailbox from 0.5 s, doubling to 30 s."""
_MAX_EXPIRED: Final = 10_000
"""How many timed-out tokens we remember to recognise their late arrival."""
_FETCH_HEADERS: Final = f"BODY.PEEK[HEADER.FIELDS ({PROBE_HEADER.upper()} RECEIVED)]"
# compat32: ten times cheaper than the default policy, and we only want strings.
_HEADER_PARSER: Final = email.parser.BytesHeaderParser(policy=email.policy.compat32)


class ImapError(Exception):
    """The IMAP leg failed at ``stage`` (``imap_connect`` … ``imap_select``, ``cleanup``)."""

    def __init__(self, stage: Stage, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass(eq=False)
class Pending:
    """A run waiting for its message; resolved from the watcher thread."""

    probe: str
    token: Token
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Arrival]
    transcript: Transcript
    polls: int = 0


@dataclass
class _FolderState:
    """Where we are in one folder: the next UID we have not looked at yet."""

    name: str
    uidvalidity: int = 0
    next_uid: int = 1


@dataclass
class _Counters:
    polls: int = 0
    idle_wakeups: int = 0
    late: int = 0
    reconnects: int = 0
    forged: int = 0


class MailboxWatcher:
    """One shared, self-healing IMAP connection that spots probe messages as they land.

    Use ``await start()`` once, ``await wait_for()`` per run, ``await close()``
    at the end. All methods are called from the event loop; the IMAP work
    happens in the watcher's own thread.
    """

    def __init__(
        self,
        mailbox: Mailbox,
        signer: TokenSigner,
        *,
        on_late: Callable[[str], None] | None = None,
        persistent: bool = False,
        probe_names: Iterable[str] = (),
    ) -> None:
        """Prepare a watcher; nothing connects before :meth:`start`.

        ``persistent`` watchers (the daemon's) reconnect with backoff forever,
        sweep the folder for leftover probe messages when they first connect,
        and delete any message whose token verifies for one of
        ``probe_names``; one-shot watchers (``check``) give up on the first
        failure.
        """
        self.mailbox = mailbox
        self._signer = signer
        self._on_late = on_late
        self._persistent = persistent
        self._probe_names: frozenset[str] = frozenset(probe_names)
        self._up = False
        self._down_stage = Stage.IMAP_CONNECT
        self._down_reason = "not connected yet"
        self._lock = threading.Lock()
        self._expectations: dict[str, Pending] = {}
        self._expired: dict[str, str] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = threading.Event()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._in_tls = False
        self._folder = _FolderState(mailbox.folder)
        self._junk: list[_FolderState] = []
        self._idle_capable = False
        self._uidplus = False
        self._transcript: Transcript = Transcript()
        self.connect_transcript: Transcript = self._transcript
        """The session of the latest (re)connection, for the status page."""
        self._deadline = 0.0
        self._delay = mailbox.poll_min
        self._restart_polling = False
        self.counters = _Counters()

    # ----------------------------------------------------------------- event loop side

    @property
    def uses_idle(self) -> bool:
        """True once connected to a server with IDLE, and IDLE is enabled."""
        return self._idle_capable and self.mailbox.idle

    @property
    def is_up(self) -> bool:
        """True while connected, logged in and watching the folder."""
        return self._up

    def require_up(self) -> None:
        """Fail fast when the mailbox is unreachable, so no unconfirmable mail is sent.

        Raises:
            ImapError: at the stage of the last failure, with its reason.
        """
        if not self._up:
            raise ImapError(self._down_stage, f"mailbox unreachable: {self._down_reason}")

    def set_probe_names(self, names: Iterable[str]) -> None:
        """Say which probes deliver here, so their leftovers can be recognised and removed."""
        with self._lock:
            self._probe_names = frozenset(names)

    @property
    def junk_folders(self) -> tuple[str, ...]:
        """The folders whose arrivals count as junk placement."""
        return tuple(state.name for state in self._junk)

    async def start(self, transcript: Transcript, deadline: float) -> None:
        """Connect, log in and select the folder, before ``deadline`` (monotonic).

        A persistent watcher keeps retrying in the background after a failed
        first attempt; the error is still raised so the caller can report it.

        Raises:
            ImapError: at ``imap_connect``, ``imap_starttls``, ``imap_login`` or
                ``imap_select``, with a one-line reason.
        """
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._transcript = transcript
        self._deadline = deadline
        transcript.mask(self.mailbox.password.reveal())
        self._thread = threading.Thread(
            target=self._run, name=f"imap-watcher {self.mailbox.username}", daemon=True
        )
        self._thread.start()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + 1.0):
                await asyncio.wrap_future(self._ready)
        except TimeoutError:
            self._stopping.set()
            raise ImapError(Stage.IMAP_CONNECT, "no answer before the run deadline") from None

    def expect(self, probe: str, token: Token, transcript: Transcript) -> Pending:
        """Register a run's token *before* its message is sent.

        From now on the watcher claims a message with this token for the run
        (so it can never be mistaken for a leftover and swept away), even if
        it lands before :meth:`wait_for` is called.
        """
        loop = asyncio.get_running_loop()
        pending = Pending(probe, token, loop, loop.create_future(), transcript)
        with self._lock:
            self._expectations[token.key] = pending
        return pending

    def forget(self, pending: Pending) -> None:
        """Drop a registration whose message was never accepted (the send failed)."""
        with self._lock:
            self._expectations.pop(pending.token.key, None)

    async def wait_for(self, pending: Pending, deadline: float) -> Arrival | None:
        """Wait until the registered message is seen, or ``deadline`` passes.

        Call right after the ``250``: fast polling restarts from ``poll_min``.
        Returns the arrival (already deleted from the mailbox, if that
        worked), or ``None`` when the deadline passed first. A message that
        turns up after that is a *late* arrival: counted, deleted, and never
        turned into a success.

        Raises:
            ImapError: the deadline passed while the mailbox was unreachable.
        """
        self._restart_polling = True
        self._wake()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await asyncio.shield(pending.future)
        except TimeoutError:
            if not self._up:
                # Not a delivery problem we can vouch for: we could not look.
                raise ImapError(
                    self._down_stage, f"mailbox unreachable: {self._down_reason}"
                ) from None
            return None
        finally:
            key = pending.token.key
            with self._lock:
                self._expectations.pop(key, None)
                if not pending.future.done():
                    self._expired[key] = pending.probe
                    while len(self._expired) > _MAX_EXPIRED:
                        del self._expired[next(iter(self._expired))]
            pending.transcript.note(
                f"imap: {pending.polls} poll(s) of {self.mailbox.folder}"
                + (f" and {', '.join(self.junk_folders)}" if self._junk else "")
            )

    async def close(self, timeout: float = 5.0) -> None:
        """Log out and stop the thread; waits at most ``timeout`` seconds for it."""
        self._stopping.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, timeout)
        with contextlib.suppress(OSError):
            self._wake_r.close()
            self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # ----------------------------------------------------------------- watcher thread

    def _run(self) -> None:
        backoff = RECONNECT_MIN
        transcript = self._transcript
        while not self._stopping.is_set():
            try:
                self._connect(transcript)
            except ImapError as exc:
                transcript.note(f"FAILED at {exc.stage}: {exc.reason}")
                self._mark_down(exc.stage, exc.reason)
                self._shutdown_client()
                if not self._ready.done():
                    self._ready.set_exception(exc)
                if not self._persistent:
                    return
                self._wait_readable([], backoff)
                backoff = min(backoff * 2, RECONNECT_MAX)
                transcript = Transcript()
                continue
            except BaseException as exc:  # noqa: BLE001 - reported to the awaiting run
                error = ImapError(Stage.IMAP_CONNECT, f"internal error: {exc!r}")
                self._mark_down(error.stage, error.reason)
                self._shutdown_client()
                if not self._ready.done():
                    self._ready.set_exception(error)
                return
            self._up, backoff = True, RECONNECT_MIN
            self.connect_transcript = transcript
            if not self._ready.done():
                self._ready.set_result(None)
            try:
                if self._persistent:
                    self._poll()  # sweep: leftovers of earlier runs, late arrivals
                self._watch()
            except (OSError, IMAPClientError) as exc:
                self._mark_down(Stage.IMAP_CONNECT, f"connection lost: {_reason(exc)}")
                self._shutdown_client()
                if not self._persistent:
                    self._fail_all(f"IMAP connection lost: {_reason(exc)}")
                    return
                self.counters.reconnects += 1
                transcript = Transcript()
                continue
            break
        self._up = False
        self._logout()

    def _mark_down(self, stage: Stage, reason: str) -> None:
        self._up = False
        self._down_stage, self._down_reason = stage, reason

    def _watch(self) -> None:
        while not self._stopping.is_set():
            if self._in_flight():
                if self._restart_polling:
                    # A message was just accepted: no delivery takes no time, so
                    # the first look is poll_min after the 250, not at once.
                    self._restart_polling, self._delay = False, self.mailbox.poll_min
                    self._pause(self._delay, in_flight=True)
                self._poll()
                self._pause(self._delay, in_flight=True)
                self._delay = min(self._delay * 2, self.mailbox.poll_interval)
            else:
                self._delay = self.mailbox.poll_min
                # Woken for a new expectation: the in-flight branch polls next.
                if self._pause(QUIET_POLL_SECONDS, in_flight=False) and not self._in_flight():
                    self._poll()

    def _in_flight(self) -> bool:
        with self._lock:
            return bool(self._expectations)

    def _pause(self, seconds: float, *, in_flight: bool) -> bool:
        """Wait up to ``seconds``; return True if the mailbox may have news.

        Wakes early for a new expectation or stop (wake-up socket) and, in
        IDLE, for an ``EXISTS`` from the server.
        """
        if self.uses_idle and (seconds >= IDLE_BETWEEN_POLLS or not in_flight):
            return self._idle(min(seconds, IDLE_RENEW_SECONDS))
        woke = self._wait_readable([], seconds)
        return not woke or not in_flight

    def _idle(self, seconds: float) -> bool:
        """Sit in IDLE for up to ``seconds``; return True if the mailbox may have news.

        Whatever the server sends ends the IDLE, and ``DONE`` then reads it in
        blocking mode. (imapclient's ``idle_check`` reads a non-blocking socket
        and raises on a line that arrives in two pieces, which real servers do.)
        An EOF makes ``DONE`` fail, and the watcher reconnects.
        """
        client = self._client
        sock = client.socket()
        client.idle()
        server_spoke = False
        timed_out = False
        try:
            woken = self._wait_readable([sock], seconds)
            server_spoke = not woken and self._readable_now(sock)
            timed_out = not woken and not server_spoke
        finally:
            _text, responses = client.idle_done()
        if server_spoke and any(_is_news(response) for response in responses):
            self.counters.idle_wakeups += 1
        if self._in_flight():
            # A new expectation arrived while idling: restart fast polling.
            self._delay = self.mailbox.poll_min
            return True
        return server_spoke or timed_out

    @staticmethod
    def _readable_now(sock: Any) -> bool:
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def _wait_readable(self, socks: list[Any], seconds: float) -> bool:
        """Block until a socket in ``socks`` is readable or ``seconds`` pass.

        Returns True if the wake-up socket fired (and drains it).
        """
        for sock in socks:
            pending = getattr(sock, "pending", None)
            if pending is not None and pending():
                return False
        readable, _, _ = select.select([self._wake_r, *socks], [], [], max(0.0, seconds))
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError, OSError):
                while self._wake_r.recv(4096):
                    pass
            return True
        return False

    # ----------------------------------------------------------------- connect

    def _connect(self, transcript: Transcript) -> None:
        mailbox = self.mailbox
        timeout = max(0.5, min(mailbox.timeout, self._deadline - time.monotonic()))
        transcript.note(f"imap: connecting to {mailbox.address} (tls: {mailbox.tls})")
        context = client_context(mailbox.tls_settings) if mailbox.tls is not TlsMode.NONE else None
        try:
            client = IMAPClient(
                mailbox.host,
                port=mailbox.port,
                ssl=mailbox.tls is TlsMode.TLS,
                ssl_context=context,
                timeout=timeout,
            )
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise ImapError(Stage.IMAP_CONNECT, describe_verify_error(exc)) from None
        except (OSError, IMAPClientError) as exc:
            raise ImapError(Stage.IMAP_CONNECT, _reason(exc)) from None
        client.normalise_times = False
        self._client = client
        self._in_tls = mailbox.tls is TlsMode.TLS
        if self._in_tls:
            transcript.note(f"TLS established ({_tls_version(client)})")
        self._received(_text(client.welcome), transcript)

        if mailbox.tls is TlsMode.STARTTLS:
            self._sent("STARTTLS", transcript)
            try:
                reply = client.starttls(context)
            except (ssl.SSLError, ssl.CertificateError) as exc:
                raise ImapError(Stage.IMAP_STARTTLS, describe_verify_error(exc)) from None
            except (OSError, IMAPClientError) as exc:
                raise ImapError(Stage.IMAP_STARTTLS, _reason(exc)) from None
            self._in_tls = True
            self._received(f"OK {_text(reply)}" if reply else "OK", transcript)
            transcript.note(f"TLS established ({_tls_version(client)})")

        self._sent(f"LOGIN {mailbox.username} {mailbox.password.reveal()}", transcript)
        try:
            reply = client.login(mailbox.username, mailbox.password.reveal())
        except LoginError as exc:
            self._received(f"NO {_reason(exc)}", transcript)
            raise ImapError(Stage.IMAP_LOGIN, f"login refused: {_reason(exc)}") from None
        except (OSError, IMAPClientError) as exc:
            raise ImapError(Stage.IMAP_LOGIN, _reason(exc)) from None
        self._received(f"OK {_text(reply)}", transcript)

        try:
            capabilities = {_text(c).upper() for c in client.capabilities()}
            self._idle_capable = "IDLE" in capabilities
            self._uidplus = "UIDPLUS" in capabilities
            self._select(self._folder, transcript)
            known = {state.name: state for state in self._junk}
            self._junk = [known.get(name, _FolderState(name)) for name in self._find_junk_folders()]
            for state in self._junk:
                status = client.folder_status(state.name, [b"UIDNEXT", b"UIDVALIDITY"])
                if int(status[b"UIDVALIDITY"]) != state.uidvalidity:
                    state.uidvalidity = int(status[b"UIDVALIDITY"])
                    # A persistent watcher sweeps from the start; a one-shot one from now.
                    state.next_uid = 1 if self._persistent else int(status[b"UIDNEXT"])
        except (OSError, IMAPClientError) as exc:
            raise ImapError(Stage.IMAP_SELECT, _reason(exc)) from None
        mode = "IDLE + polling" if self.uses_idle else "polling (no IDLE)"
        junk = ", ".join(self.junk_folders) or "none"
        transcript.note(f"imap: watching {mailbox.folder} by {mode}; junk folders: {junk}")

    def _select(self, state: _FolderState, transcript: Transcript | None = None) -> None:
        if transcript is not None:
            self._sent(f"SELECT {state.name}", transcript)
        info = self._client.select_folder(state.name)
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        uidnext = int(info.get(b"UIDNEXT", 0))
        if uidvalidity != state.uidvalidity:
            # First selection, or the server renumbered the folder: a persistent
            # watcher sweeps it from the start, a one-shot one starts from here.
            state.uidvalidity = uidvalidity
            state.next_uid = 1 if self._persistent else uidnext
        if transcript is not None:
            exists = info.get(b"EXISTS", "?")
            self._received(
                f"OK {exists} EXISTS, UIDNEXT {uidnext}, UIDVALIDITY {uidvalidity}", transcript
            )

    def _find_junk_folders(self) -> list[str]:
        configured = self.mailbox.junk_folders
        if configured is not None:
            names: Iterable[str] = configured
        else:
            found = self._client.find_special_folder(JUNK)
            names = [found] if found else []
        return [name for name in names if name != self.mailbox.folder]

    # ----------------------------------------------------------------- polling

    def _poll(self) -> None:
        """One round: ``NOOP`` + ``UID SEARCH`` in the folder, then a look into junk."""
        client = self._client
        self.counters.polls += 1
        with self._lock:
            for expectation in self._expectations.values():
                expectation.polls += 1
        client.noop()
        self._scan(self._folder, seen_at=None)
        for state in self._junk:
            status = client.folder_status(state.name, [b"UIDNEXT", b"UIDVALIDITY"])
            if int(status[b"UIDVALIDITY"]) != state.uidvalidity:
                state.uidvalidity, state.next_uid = int(status[b"UIDVALIDITY"]), 1
            if int(status[b"UIDNEXT"]) > state.next_uid:
                seen_at = time.monotonic()
                self._select(state)
                try:
                    self._scan(state, seen_at=seen_at)
                finally:
                    self._select(self._folder)

    def _scan(self, state: _FolderState, *, seen_at: float | None) -> None:
        """Find probe messages with UIDs we have not looked at yet and deal with each."""
        client = self._client
        criteria = ["UID", f"{state.next_uid}:*", "HEADER", PROBE_HEADER, ""]
        uids = [uid for uid in client.search(criteria) if uid >= state.next_uid]
        found_at = time.monotonic() if seen_at is None else seen_at
        if not uids:
            return
        state.next_uid = max(uids) + 1
        fetched = client.fetch(uids, ["INTERNALDATE", _FETCH_HEADERS])
        for uid in sorted(fetched):
            data = fetched[uid]
            headers = _HEADER_PARSER.parsebytes(_header_block(data))
            value = str(headers.get(PROBE_HEADER, "")).strip()
            received = tuple(" ".join(str(h).split()) for h in headers.get_all("Received", []))
            internaldate = data.get(b"INTERNALDATE")
            self._match(
                state,
                uid,
                value,
                found_at,
                internaldate if isinstance(internaldate, datetime) else None,
                received,
            )

    def _match(
        self,
        state: _FolderState,
        uid: int,
        value: str,
        seen_at: float,
        internaldate: datetime | None,
        received: tuple[str, ...],
    ) -> None:
        key = token_key(value)
        with self._lock:
            expectation = self._expectations.get(key)
            late_probe = self._expired.get(key) if expectation is None else None
            names = self._probe_names
        probe = expectation.probe if expectation else late_probe
        if probe is None:
            # A leftover of an earlier run (or an earlier life of this daemon with
            # the same token secret)? Only if it verifies for a probe of ours.
            probe = next((n for n in sorted(names) if self._signer.verify(n, value)), None)
        if probe is None:
            return  # someone else's, or a stranger's: never touched
        if self._signer.verify(probe, value) is None:
            # Our run id with a signature we did not make: a forgery or a
            # mangled copy. It proves nothing and it is not ours to delete.
            self.counters.forged += 1
            if expectation is not None:
                expectation.transcript.note(
                    f"imap: UID {uid} in {state.name} carries this run's id but a bad "
                    "signature; ignored, left untouched"
                )
            return
        # Leftovers and late arrivals belong to no run: their lines are not kept.
        transcript = expectation.transcript if expectation else Transcript()
        if expectation is not None:
            transcript.note(f"imap: found UID {uid} in {state.name}; token signature verified")
        deleted, cleanup_error = self._delete(uid, state, transcript)
        arrival = Arrival(
            uid=uid,
            folder=state.name,
            seen_at=seen_at,
            internaldate=internaldate,
            received=received,
            junk=state is not self._folder,
            deleted=deleted,
            cleanup_error=cleanup_error,
        )
        if expectation is None:
            self.counters.late += 1
            with self._lock:
                self._expired.pop(key, None)
            if self._on_late is not None:
                self._on_late(probe)
            return
        expectation.loop.call_soon_threadsafe(_resolve, expectation.future, arrival)

    def _delete(
        self, uid: int, state: _FolderState, transcript: Transcript
    ) -> tuple[bool, str | None]:
        """Delete exactly ``uid`` (already verified as ours) from the selected folder."""
        client = self._client
        try:
            self._sent(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)", transcript)
            client.add_flags([uid], [DELETED], silent=True)
            if self._uidplus:
                self._sent(f"UID EXPUNGE {uid}", transcript)
                client.uid_expunge([uid])
            else:
                # Plain EXPUNGE removes every \Deleted message: only do it when
                # the only one flagged is ours, or we would delete user mail.
                flagged = set(client.search(["DELETED"]))
                if flagged - {uid}:
                    return (
                        False,
                        "no UIDPLUS and other messages are flagged \\Deleted; left flagged",
                    )
                self._sent("EXPUNGE", transcript)
                client.expunge()
        except (OSError, IMAPClientError) as exc:
            return False, f"delete of UID {uid} in {state.name} failed: {_reason(exc)}"
        self._received("OK message deleted", transcript)
        return True, None

    # ----------------------------------------------------------------- shutdown

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            expectations = list(self._expectations.values())
        for expectation in expectations:
            error = ImapError(Stage.DELIVERY, reason)
            expectation.loop.call_soon_threadsafe(_reject, expectation.future, error)

    def _logout(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.logout()
        except (OSError, IMAPClientError):
            self._shutdown_client()

    def _shutdown_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError, IMAPClientError):
                self._client.shutdown()

    # ----------------------------------------------------------------- transcript

    def _sent(self, text: str, transcript: Transcript | None = None) -> None:
        (transcript or self._transcript).sent(text, tls=self._in_tls)

    def _received(self, text: str, transcript: Transcript | None = None) -> None:
        direction = Direction.RECEIVED_TLS if self._in_tls else Direction.RECEIVED
        (transcript or self._transcript).add(direction, text)


def _resolve(future: asyncio.Future[Arrival], arrival: Arrival) -> None:
    if not future.done():
        future.set_result(arrival)


def _reject(future: asyncio.Future[Arrival], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _header_block(data: dict[bytes, Any]) -> bytes:
    """The fetched header fields, whatever order the server names them in.

    Dovecot echoes ``BODY[HEADER.FIELDS (X-SMTP-PROBE RECEIVED)]``; pymap
    sorts the field names, so the reply is found by prefix.
    """
    for key, value in data.items():
        if key.startswith(b"BODY[HEADER.FIELDS") and isinstance(value, bytes):
            return value
    return b""


def _is_news(response: Any) -> bool:
    return (
        isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return describe_verify_error(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


def _tls_version(client: Any) -> str:
    sock = client.socket()
    version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    return version or "unknown version"
