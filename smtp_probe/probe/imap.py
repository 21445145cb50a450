r"""The IMAP leg's watcher: one thread per mailbox that spots probe messages as they land.

One :class:`MailboxWatcher` owns one IMAP session (:mod:`.imap_session`) to
one mailbox and serves every probe that delivers there. Its thread

* connects, logs in and selects the folder *before* any message is sent, so
  a fast delivery cannot slip by and login time never counts as delivery;
* while a run's message is in flight, polls for every run at once: after a
  ``250`` six times ``poll_min`` apart (:data:`FAST_POLLS`), then doubling to
  ``poll_interval``, idling between slower polls so a server that pushes
  new mail wakes it at once. A poll is ``NOOP`` (a bare SEARCH on Dovecot
  sees new mail one command late) pipelined with each junk folder's
  ``STATUS``: one round trip. Only when the server announced new mail
  (``EXISTS``) is it looked at: the folder's last few messages fetched in
  one ``FETCH`` (``UID SEARCH`` and ``UID FETCH`` when more are new);
* while nothing is in flight, sits in IDLE (or polls slowly without it),
  from :data:`IDLE_LINGER` after the last run on: runs that come in a
  stream do not pay an IDLE and a DONE each;
* matches arrivals by the probe header *and* a valid signature, and deletes
  exactly that message by UID (on Gmail, or with ``cleanup: trash``, by
  moving it to ``\Trash`` and deleting its copy there, found by UID and
  token again). Nothing else in the mailbox is ever touched;
* shares the mailbox with replicas (other processes with the same token
  key): a verified message of another instance (the token's instance id,
  :mod:`.message`) is left alone while it may still be in flight for its
  sender, and swept only once it is older than ``sweep_after``
  (:func:`sweep_delay`); the watcher remembers its UID and looks again then;
* reconnects with backoff when it is persistent (the daemon's), or gives up
  on the first failure when it is one-shot (``check``). The backoff only
  paces retries no run waits for: a run that finds the watcher down asks
  for an attempt now (:meth:`MailboxWatcher.reconnect_now`) and reports
  what that attempt says, never an older failure.

A run talks to it through :meth:`MailboxWatcher.expecting`; the event loop and
the thread share only a lock-protected table of expectations and a wake-up
socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.parser
import email.policy
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from smtp_probe.probe.credentials import AccessToken
from smtp_probe.probe.dsn import DeliveryReport, parse_report
from smtp_probe.probe.hops import parse_hops
from smtp_probe.probe.imap_session import (
    MAX_MESSAGE_BYTES,
    ConnectionLost,
    FetchedMessage,
    FolderStatus,
    ImapError,
    ImapSession,
)
from smtp_probe.probe.message import PROBE_HEADER, Token, TokenSigner, parse_subject, token_key
from smtp_probe.probe.result import Arrival, Bounce, Stage
from smtp_probe.probe.spec import DEFAULT_RUN_TIMEOUT, DEFAULT_SWEEP_GRACE, Cleanup, Mailbox
from smtp_probe.probe.transcript import Transcript
from smtp_probe.probe.verdicts import read_verdicts

__all__ = ["Expected", "ImapError", "MailboxWatcher", "sweep_delay"]

IDLE_RENEW_SECONDS: Final = 25 * 60
"""Re-issue IDLE before servers drop it (RFC 2177 allows them to after 29 minutes)."""
IDLE_BETWEEN_POLLS: Final = 0.25
"""In flight, wait in IDLE rather than silently when the next poll is this far off."""
FAST_POLLS: Final = 4
"""After a ``250``, the delay stays ``poll_min`` for this many more polls before it doubles:
with 10 ms, polls at 10, 20 ... 60 ms, then 80, 120, 200 ms ... A local delivery takes
10-40 ms, and a poll without news costs one ``NOOP`` (with junk folders' ``STATUS``)."""
IDLE_LINGER: Final = 1.0
"""After the last run in flight ended, wait this long for the next before entering IDLE."""
QUIET_POLL_SECONDS: Final = 60.0
"""Without IDLE and nothing in flight, look for late arrivals this often."""
RECONNECT_MIN: Final = 0.5
RECONNECT_MAX: Final = 30.0
"""A persistent watcher retries a lost mailbox from 0.5 s, doubling to 30 s."""
_MAX_EXPIRED: Final = 10_000
"""How many timed-out tokens we remember to recognise their late arrival."""
_TOP_HEADERS: Final = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_REPORT_BATCH: Final = 16
"""Reports fetched per FETCH (each up to ``REPORT_FETCH_BYTES``): memory stays bounded."""
_MAX_DEFERRED: Final = 10_000
"""How many young messages of other instances a folder remembers to look at again."""


def sweep_delay(token: Token, *, instance: str, now: float, sweep_after: float) -> float:
    """Seconds until a verified leftover with ``token`` may be swept by ``instance``; 0: now.

    A leftover of ``instance`` itself is swept at once: no run of ours waits
    for it. Another instance's may still be in flight for its sender (a
    replica): it waits until ``sweep_after`` (the longest run timeout plus
    the grace) has passed since its send time, read from the token against
    ``now`` (wall clock, seconds), so the sender's run has surely ended.
    The wait is never longer than ``sweep_after`` from now: a send time in
    the future (a sender whose clock runs ahead) cannot pin a message for
    longer, because its sender sent it before we saw it. A sender whose
    clock runs behind makes its messages look older: the grace absorbs that
    skew.
    """
    if token.instance == instance:
        return 0.0
    age = now - token.sent_ms / 1000
    return min(max(0.0, sweep_after - age), sweep_after)


class Expected:
    """One run's registration with a watcher, from :meth:`MailboxWatcher.expecting`.

    The ``_arrived`` and ``_lost`` fields are written by the watcher thread
    under the watcher's lock and read by the run under the same lock.
    """

    def __init__(
        self,
        watcher: MailboxWatcher,
        probe: str,
        token: Token,
        transcript: Transcript,
        loop: asyncio.AbstractEventLoop,
        *,
        reflector: bool = False,
        whole_message: bool = False,
    ) -> None:
        self.probe = probe
        self.token = token
        self.transcript = transcript
        self.reflector = reflector
        """A reflector run: its message comes back as a reply, known by the token in its Subject."""
        self.whole_message = whole_message
        """Fetch the whole message before it is deleted (our own DKIM check needs it)."""
        self.message: bytes | None = None
        """The whole message, when asked for and fetched; written before the run is woken."""
        self.polls = 0
        """Poll rounds of the mailbox while this run was waiting."""
        self._watcher = watcher
        self._loop = loop
        self._woken = asyncio.Event()
        self._waiting = False
        """:meth:`arrival` was called: the message is in flight (written under the watcher's lock)."""
        self._arrived: Arrival | None = None
        self._lost: str | None = None
        self._settled = False
        self._bounce_lock = threading.Lock()
        self._bounces: list[Bounce] = []

    @property
    def bounces(self) -> tuple[Bounce, ...]:
        """The delivery status notifications about this run found so far, oldest first."""
        with self._bounce_lock:
            return tuple(self._bounces)

    @property
    def failed(self) -> Bounce | None:
        """The first ``failed`` notification about this run, if one came."""
        return next((bounce for bounce in self.bounces if bounce.action == "failed"), None)

    def _bounced(self, bounce: Bounce) -> None:
        """Record ``bounce`` (from a watcher thread); a ``failed`` one wakes :meth:`arrival`."""
        with self._bounce_lock:
            self._bounces.append(bounce)
        if bounce.action == "failed":
            self._wake()

    async def arrival(self, deadline: float) -> Arrival | None:
        """Wait for the message until ``deadline`` (monotonic); call it right after the ``250``.

        Fast polling restarts from ``poll_min``. Returns the arrival (already
        deleted from the mailbox, if that worked), or ``None`` when the
        deadline passed while the mailbox was being watched, or a ``failed``
        delivery status notification about the run came first (:attr:`failed`). A message that
        turns up later is a *late* arrival: counted, deleted, never a success.

        Raises:
            ImapError: at ``delivery``: the mailbox became unreachable while
                waiting (a one-shot watcher says so at once, a persistent one
                at the deadline if it has not reconnected by then).
        """
        return await self._watcher._wait(self, deadline)

    def _wake(self) -> None:
        """Wake :meth:`arrival` from the watcher thread."""
        with contextlib.suppress(RuntimeError):  # the run's loop has already closed
            self._loop.call_soon_threadsafe(self._woken.set)


@dataclass(frozen=True, slots=True)
class _Claim:
    """Whose a found message is: the probe, the run waiting for it (if any), the token seen."""

    probe: str
    expected: Expected | None
    key: str
    token: str
    """The token as found (verified for ``probe``)."""
    by_subject: bool
    """Found in the Subject (a reflector's reply), not in our header."""
    prefix: str = ""
    """The reply or forward prefixes before the Subject's mark."""
    foreign: str | None = None
    """The instance id of another instance whose old leftover this is; ``None``: ours."""


@dataclass
class _FolderState:
    """Where we are in one folder: the next UID we have not looked at yet.

    And the UIDs below it to look at again: young messages of other
    instances, with when they may be swept (monotonic), probe messages and
    reports apart (they are fetched differently).
    """

    name: str
    uidvalidity: int = 0
    next_uid: int = 1
    uidnext: int = 0
    """The folder's UIDNEXT when last selected or asked (STATUS): every UID
    below it was taken by then, so a search made since has seen them all."""
    deferred: dict[int, float] = field(default_factory=dict)
    deferred_reports: dict[int, float] = field(default_factory=dict)

    def due(self, now: float) -> tuple[list[int], list[int]]:
        """The deferred probe messages and reports whose time has come, by UID."""
        return (
            sorted(uid for uid, at in self.deferred.items() if at <= now),
            sorted(uid for uid, at in self.deferred_reports.items() if at <= now),
        )


class MailboxWatcher:
    """One shared, self-healing IMAP connection that spots probe messages as they land.

    ``await start()`` once, ``async with expecting(...)`` per run, ``await
    close()`` at the end. Everything public is called from the event loop;
    the IMAP work happens in the watcher's own thread.
    """

    def __init__(
        self,
        mailbox: Mailbox,
        signer: TokenSigner,
        *,
        on_late: Callable[[str], None] | None = None,
        persistent: bool = False,
        probe_names: Iterable[str] = (),
        reflector_probes: Iterable[str] = (),
        bounce_probes: Iterable[str] = (),
        on_late_bounce: Callable[[str, Bounce], None] | None = None,
        sweep_after: float = DEFAULT_RUN_TIMEOUT + DEFAULT_SWEEP_GRACE,
        on_foreign: Callable[[str, str], None] | None = None,
    ) -> None:
        """Prepare a watcher; nothing connects before :meth:`start`.

        ``persistent`` watchers (the daemon's) reconnect with backoff forever,
        sweep the folder for leftover probe messages when they first connect,
        and delete any message whose token verifies for one of
        ``probe_names`` and is their signer's instance's, or another
        instance's sent more than ``sweep_after`` seconds ago (see
        :func:`sweep_delay`; a younger one is looked at again when it is
        old enough); one-shot watchers (``check``) give up on the first
        failure. ``on_late`` is called (from the watcher thread) with the
        probe name of every late arrival or leftover of ours it deletes;
        ``on_foreign`` with the probe name and the instance id of every
        leftover of another instance it deletes (never a late arrival of
        this one).
        ``reflector_probes`` (of ``probe_names``) are answered by a
        reflector: their replies are looked for by Subject as well, from
        the first sweep on. ``bounce_probes`` have this mailbox as their
        ``bounce_mailbox``: delivery status notifications whose token
        verifies for one of them are theirs (and deleted; ``on_late_bounce``
        is called with the probe and the report of one no run waits for).
        """
        self.mailbox = mailbox
        self._signer = signer
        self._on_late = on_late
        self._on_foreign = on_foreign
        self._sweep_after = sweep_after
        self._persistent = persistent
        self._probe_names: frozenset[str] = frozenset(probe_names)
        self._reflector_probes: frozenset[str] = frozenset(reflector_probes)
        self._reflector_seen = False
        """A reflector run registered here: its (late) reply is looked for from then on."""
        self._bounce_probes: frozenset[str] = frozenset(bounce_probes)
        self._on_late_bounce = on_late_bounce
        self._bounce_expectations: dict[str, Expected] = {}
        """Runs whose delivery status notifications this watcher looks for, by token key."""
        self._bounce_expired: dict[str, str] = {}
        """Token key -> probe of runs that ended: their late reports are still ours."""
        self._bounce_seen = False
        """A run asked for reports here: they are looked for from then on (late ones too)."""
        # One attribute, so the loop never reads a stage of one failure with
        # the reason of another: None while up, else (stage, reason).
        self._down: tuple[Stage, str] | None = (Stage.IMAP_CONNECT, "not connected yet")
        self._lock = threading.Lock()
        self._expectations: dict[str, Expected] = {}
        self._expired: dict[str, str] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = threading.Event()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread: threading.Thread | None = None
        self._session: ImapSession | None = None
        self._folder = _FolderState(mailbox.folder)
        self._junk: list[_FolderState] = []
        self._idle_capable = False
        self._cleanup = Cleanup.EXPUNGE
        self._trash: str | None = None
        self._trash_looked_up = False
        self._transcript = Transcript()
        self._deadline = 0.0
        self._first_token: AccessToken | None = None
        self._delay = mailbox.poll_min
        self._restart_polling = False
        self._fast_left = 0
        """Polls still due at ``poll_min`` before the delay starts doubling (after a 250)."""
        self._searched_at = 0.0
        """When the folder was last searched (monotonic)."""
        self._linger_until = 0.0
        """Until when (monotonic) the watcher waits without IDLE after the last run ended."""
        self._attempt_wanted: concurrent.futures.Future[tuple[Stage, str] | None] | None = None
        """Runs waiting for a reconnect attempt that has not started yet (shared by all of them)."""

    # ----------------------------------------------------------------- event loop side

    @property
    def uses_idle(self) -> bool:
        """True once connected to a server with IDLE, and IDLE is enabled."""
        return self._idle_capable and self.mailbox.idle

    @property
    def is_up(self) -> bool:
        """True while connected, logged in and watching the folder."""
        return self._down is None

    @property
    def down_stage(self) -> Stage | None:
        """The stage of the failure that took the mailbox down; ``None`` while up."""
        down = self._down
        return None if down is None else down[0]

    @property
    def down_reason(self) -> str | None:
        """One line about why the mailbox is down; ``None`` while up."""
        down = self._down
        return None if down is None else down[1]

    @property
    def junk_folders(self) -> tuple[str, ...]:
        """The folders whose arrivals count as junk placement."""
        return tuple(state.name for state in self._junk)

    def set_probe_names(
        self,
        names: Iterable[str],
        *,
        reflectors: Iterable[str] = (),
        bounces: Iterable[str] = (),
        sweep_after: float | None = None,
    ) -> None:
        """Say which probes deliver here (and which of them by a reflector's reply).

        Their leftovers can then be recognised and removed; so can the
        delivery status notifications of ``bounces``, the probes whose
        ``bounce_mailbox`` this is. ``sweep_after``, if given, is the new
        age at which other instances' leftovers are swept (for UIDs seen
        from now on).
        """
        with self._lock:
            if sweep_after is not None:
                self._sweep_after = sweep_after
            self._probe_names = frozenset(names)
            self._reflector_probes = frozenset(reflectors)
            self._bounce_probes = frozenset(bounces)

    async def start(
        self, transcript: Transcript, deadline: float, token: AccessToken | None = None
    ) -> None:
        """Connect, log in and select the folder, before ``deadline`` (monotonic).

        The session is written to ``transcript``. A mailbox with ``oauth``
        logs in with ``token`` the first time if given (the run fetched it
        already: it counts as fresh if the run's request fetched it), and
        asks its source at every later login. A persistent watcher keeps
        retrying in the background after a failed first attempt; the error is
        still raised so the caller can report it.

        Raises:
            ImapError: at ``imap_connect``, ``imap_starttls``, ``imap_login`` or
                ``imap_select``, with a one-line reason.
            RuntimeError: the watcher was started before.
        """
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._transcript = transcript
        self._deadline = deadline
        self._first_token = token
        transcript.mask(self.mailbox.password.reveal() if self.mailbox.password else None)
        self._thread = threading.Thread(
            target=self._run, name=f"imap-watcher {self.mailbox.username}", daemon=True
        )
        self._thread.start()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + 1.0):
                await asyncio.wrap_future(self._ready)
        except TimeoutError:
            if not self._persistent:
                self._stopping.set()  # a persistent watcher keeps trying, as after any failure
            raise ImapError(Stage.IMAP_CONNECT, "no answer before the run deadline") from None

    @contextlib.asynccontextmanager
    async def expecting(
        self,
        probe: str,
        token: Token,
        transcript: Transcript,
        *,
        reflector: bool = False,
        whole_message: bool = False,
        bounces: bool = False,
        deadline: float | None = None,
    ) -> AsyncIterator[Expected]:
        """Register a run's token *before* its message is sent; unregister on leaving.

        While registered, the watcher claims a message with this token for the
        run (so it is never mistaken for a leftover and swept away), even if
        it lands before :meth:`Expected.arrival` is awaited. A token whose
        message has not arrived when the block is left is remembered, so a
        late arrival is recognised, counted and deleted. A ``reflector`` run
        also claims a message whose Subject carries its token (a reply). With
        ``whole_message`` the message itself is fetched before it is deleted
        (:attr:`Expected.message`). With ``bounces`` this mailbox is also the
        run's bounce mailbox: its delivery status notifications are looked for
        here too (see :meth:`watching_bounces`).

        A persistent watcher found down is first asked to reconnect now
        (:meth:`reconnect_now`, waiting until ``deadline``, monotonic; by
        default the mailbox's ``timeout`` from now): the run goes on if that
        attempt succeeds, and fails with that attempt's fresh reason if not.

        Raises:
            ImapError: the mailbox is unreachable (at the stage of the
                reconnect attempt made for this run, or of the last failure
                of a one-shot watcher); nothing is registered, and no mail
                should be sent.
        """
        attempt: tuple[Stage, str] | None = None
        if self._down is not None:
            attempt = await self.reconnect_now(transcript, self._deadline_or_default(deadline))
        expected = Expected(
            self,
            probe,
            token,
            transcript,
            asyncio.get_running_loop(),
            reflector=reflector,
            whole_message=whole_message,
        )
        with self._lock:
            # Checked under the lock: a watcher going down marks itself down
            # first, then fails every registered run under this lock.
            down = self._down
            if down is None:
                self._expectations[token.key] = expected
                self._reflector_seen = self._reflector_seen or reflector
                if bounces:
                    self._bounce_expectations[token.key] = expected
                    self._bounce_seen = True
        if down is not None:
            # What this run's reconnect attempt said, not an older failure.
            stage, why = attempt or down
            reason = f"mailbox unreachable: {why}"
            transcript.note(f"FAILED at {stage}: {reason}")
            raise ImapError(stage, reason)
        try:
            yield expected
        finally:
            self._settle(expected)

    @contextlib.asynccontextmanager
    async def watching_bounces(
        self, expected: Expected, deadline: float | None = None
    ) -> AsyncIterator[bool]:
        """Look for delivery status notifications about ``expected``'s run here, while inside.

        For a run whose bounce mailbox is not its delivery mailbox: the run
        registers with its delivery watcher (:meth:`expecting`) and with this
        one. A ``failed`` report found here wakes the run's wait at once.
        Yields False (and notes it in the run's transcript) when this mailbox
        is unreachable: the run goes on without bounce watching. A persistent
        watcher found down is first asked to reconnect now, waiting until
        ``deadline`` at most (monotonic; by default the mailbox's ``timeout``
        from now). Reports that come after the block is left are late:
        deleted and counted.
        """
        attempt: tuple[Stage, str] | None = None
        if self._down is not None:
            attempt = await self.reconnect_now(
                expected.transcript, self._deadline_or_default(deadline)
            )
        key = expected.token.key
        with self._lock:
            down = self._down
            if down is not None:
                down = attempt or down
            else:
                self._bounce_expectations[key] = expected
                self._bounce_seen = True
        if down is not None:
            expected.transcript.note(
                f"bounce mailbox {self.mailbox.username} unreachable ({down[0]}: {down[1]}); "
                "delivery status notifications are not watched in this run"
            )
            yield False
            return
        self._wake()
        try:
            yield True
        finally:
            self._end_bounce_watch(expected)

    def _end_bounce_watch(self, expected: Expected) -> None:
        """Stop looking for ``expected``'s reports; a later one is late."""
        key = expected.token.key
        with self._lock:
            if self._bounce_expectations.get(key) is expected:
                del self._bounce_expectations[key]
                self._bounce_expired[key] = expected.probe
                while len(self._bounce_expired) > _MAX_EXPIRED:
                    del self._bounce_expired[next(iter(self._bounce_expired))]

    async def reconnect_now(
        self, transcript: Transcript, deadline: float
    ) -> tuple[Stage, str] | None:
        """Have a persistent watcher that is down try to reconnect now; say how that went.

        The watcher's reconnect backoff paces its own retries only while no
        run is waiting: this asks for an attempt that *starts* after the
        call, wakes the watcher thread out of its backoff, and waits for that
        attempt until ``deadline`` (monotonic). Concurrent callers share one
        attempt. Returns ``None`` when the watcher is up (already, or after
        the attempt), else the ``(stage, reason)`` of the attempt's failure
        (noted in ``transcript``), or of the last failure of a watcher that
        does not reconnect (one-shot, closed). Never raises.
        """
        thread = self._thread
        with self._lock:
            down = self._down
            if down is None:
                return None
            if not self._persistent or self._stopping.is_set() or thread is None:
                return down
            if not thread.is_alive():
                return down
            attempt = self._attempt_wanted
            if attempt is None:
                attempt = self._attempt_wanted = concurrent.futures.Future()
        transcript.note(
            f"imap: the mailbox watcher is down ({down[0]}: {down[1]}); asking it to reconnect now"
        )
        self._wake()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                # Shielded: one run giving up must not cancel the attempt others share.
                outcome = await asyncio.shield(asyncio.wrap_future(attempt))
        except TimeoutError:
            outcome = (
                Stage.IMAP_CONNECT,
                "the reconnect attempt did not end before the run deadline",
            )
            transcript.note(f"imap: {outcome[1]}")
            return outcome
        if outcome is None:
            transcript.note("imap: reconnected")
            with self._lock:
                return self._down  # normally None; a fresh failure if it dropped again since
        transcript.note(f"imap: the reconnect attempt failed at {outcome[0]}: {outcome[1]}")
        return outcome

    def _deadline_or_default(self, deadline: float | None) -> float:
        return time.monotonic() + self.mailbox.timeout if deadline is None else deadline

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

    async def _wait(self, expected: Expected, deadline: float) -> Arrival | None:
        """:meth:`Expected.arrival`: wait, then settle the registration."""
        with self._lock:
            expected._waiting = True
        self._restart_polling = True
        self._wake()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await expected._woken.wait()
        arrived, lost = self._settle(expected)
        folders = ", ".join(self.junk_folders)
        expected.transcript.note(
            f"imap: {expected.polls} poll(s) of {self.mailbox.folder}"
            + (f" and {folders}" if folders else "")
        )
        if arrived is not None:
            return arrived
        if expected.failed is not None:
            return None
        why = lost if lost is not None else self.down_reason
        if why is not None:
            reason = f"mailbox became unreachable while waiting for the message: {why}"
            expected.transcript.note(f"FAILED at {Stage.DELIVERY}: {reason}")
            raise ImapError(Stage.DELIVERY, reason)
        return None

    def _settle(self, expected: Expected) -> tuple[Arrival | None, str | None]:
        """Unregister ``expected``; remember its token if its message has not arrived."""
        key = expected.token.key
        with self._lock:
            if self._expectations.get(key) is expected:
                del self._expectations[key]
            if self._bounce_expectations.get(key) is expected:
                del self._bounce_expectations[key]
                self._bounce_expired[key] = expected.probe
            if expected._arrived is None and not expected._settled:
                self._expired[key] = expected.probe
                while len(self._expired) > _MAX_EXPIRED:
                    del self._expired[next(iter(self._expired))]
            expected._settled = True
            return expected._arrived, expected._lost

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # ----------------------------------------------------------------- watcher thread

    def _run(self) -> None:
        backoff = RECONNECT_MIN
        transcript = self._transcript
        while not self._stopping.is_set():
            # The runs that asked for a reconnect before this attempt starts get its answer.
            with self._lock:
                serving, self._attempt_wanted = self._attempt_wanted, None
            try:
                self._open(transcript)
            except ImapError as exc:
                transcript.note(f"FAILED at {exc.stage}: {exc.reason}")
                self._mark_down(exc.stage, exc.reason)
                _answer(serving, (exc.stage, exc.reason))
                if not self._ready.done():
                    self._ready.set_exception(exc)
                if not self._persistent:
                    return
                self._back_off(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX)
                transcript = Transcript()
                continue
            except Exception as exc:  # noqa: BLE001 - reported to the awaiting run
                _answer(serving, (Stage.IMAP_CONNECT, f"internal error: {exc!r}"))
                self._give_up(Stage.IMAP_CONNECT, f"internal error: {exc!r}")
                return
            backoff = RECONNECT_MIN
            with self._lock:
                # Runs that asked while this attempt was under way: it is up now, a fresh answer.
                self._down, asked_meanwhile, self._attempt_wanted = None, self._attempt_wanted, None
            _answer(serving, None)
            _answer(asked_meanwhile, None)
            if not self._ready.done():
                self._ready.set_result(None)
            try:
                if self._persistent:
                    self._poll()  # sweep: leftovers of earlier runs, late arrivals
                self._watch()
            except (ConnectionLost, OSError) as exc:
                why = exc.reason if isinstance(exc, ConnectionLost) else exc.strerror or str(exc)
                reason = f"connection lost: {why}"
                if not self._persistent:
                    self._give_up(Stage.IMAP_CONNECT, reason)
                    return
                self._mark_down(Stage.IMAP_CONNECT, reason)
                transcript = Transcript()
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must not leave runs waiting on a dead thread
                self._give_up(Stage.IMAP_CONNECT, f"internal error: {exc!r}")
                return
            break
        self._down = (Stage.IMAP_CONNECT, "watcher closed")
        with self._lock:
            waiting, self._attempt_wanted = self._attempt_wanted, None
        _answer(waiting, self._down)
        if self._session is not None:
            self._session.logout()
            self._session = None

    def _back_off(self, seconds: float) -> None:
        """Wait ``seconds`` before the next reconnect, unless a run asks for one now (or stop).

        While a run whose message is in flight waits on this watcher, the
        wait is at most ``poll_interval``: the pace it would be polled at.
        """
        started = time.monotonic()
        while not self._stopping.is_set():
            with self._lock:
                if self._attempt_wanted is not None:
                    return
                in_flight = bool(self._expectations or self._bounce_expectations)
            limit = min(seconds, self.mailbox.poll_interval) if in_flight else seconds
            left = started + limit - time.monotonic()
            if left <= 0:
                return
            self._wait_readable([], left)

    @property
    def _live(self) -> ImapSession:
        """The open session.

        Raises:
            ConnectionLost: there is none (the watcher is down).
        """
        session = self._session
        if session is None:
            raise ConnectionLost("not connected")
        return session

    def _mark_down(self, stage: Stage, reason: str) -> None:
        self._down = (stage, reason)
        if self._session is not None:
            self._session.shutdown()
            self._session = None

    def _give_up(self, stage: Stage, reason: str) -> None:
        """Stop for good: fail the start (if pending) and every run waiting on this thread."""
        self._mark_down(stage, reason)
        if not self._ready.done():
            self._ready.set_exception(ImapError(stage, reason))
        with self._lock:
            waiting, self._attempt_wanted = self._attempt_wanted, None
            for expected in self._expectations.values():
                expected._lost = reason
                expected._wake()
        _answer(waiting, (stage, reason))

    def _open(self, transcript: Transcript) -> None:
        """Open a session and look at the folders: ready to watch.

        Raises:
            ImapError: at the stage that failed.
        """
        mailbox = self.mailbox
        if self._ready.done():
            timeout = mailbox.timeout  # a background reconnect has no run deadline
        else:
            timeout = max(0.5, min(mailbox.timeout, self._deadline - time.monotonic()))
        token, self._first_token = self._first_token, None
        session = ImapSession.open(mailbox, transcript, timeout, token=token)
        self._session = session
        self._idle_capable = session.idle_capable
        try:
            self._track(self._folder, session.select(self._folder.name, transcript))
            known = {state.name: state for state in self._junk}
            self._junk = [known.get(name, _FolderState(name)) for name in self._junk_names()]
            for state in self._junk:
                self._track(state, session.status(state.name))
            cleanup = self._choose_cleanup(session)
        except ConnectionLost as exc:
            raise ImapError(Stage.IMAP_SELECT, exc.reason) from None
        # The start deadline bounded the connection; commands from now on get the full timeout.
        session.set_timeout(mailbox.timeout)
        mode = "IDLE + polling" if self.uses_idle else "polling (no IDLE)"
        junk = ", ".join(self.junk_folders) or "none"
        transcript.note(
            f"imap: watching {mailbox.folder} by {mode}; junk folders: {junk}; cleanup: {cleanup}"
        )

    def _choose_cleanup(self, session: ImapSession) -> str:
        r"""Decide how our messages are removed on this connection; say how, for the transcript.

        ``trash`` when the mailbox says so, or (left to us) when the server
        is Gmail: there an expunge from INBOX only takes a label away and
        the message stays in All Mail. The ``\Trash`` folder is looked up
        here, on each connection: a probe that could not clean up after
        itself must not send at all.

        Raises:
            ImapError: at ``imap_select``: ``trash`` and no ``\Trash`` folder.
            ConnectionLost: the connection broke.
        """
        self._trash, self._trash_looked_up = None, False
        chosen = self.mailbox.cleanup
        gmail = chosen is None and session.has("X-GM-EXT-1")
        self._cleanup = (
            chosen if chosen is not None else Cleanup.TRASH if gmail else Cleanup.EXPUNGE
        )
        if self._cleanup is Cleanup.TRASH:
            self._trash, self._trash_looked_up = session.trash_folder(), True
            if self._trash is None:
                raise ImapError(
                    Stage.IMAP_SELECT,
                    "cleanup is trash, but the server has no \\Trash folder "
                    "(SPECIAL-USE, or one named Trash): nothing is sent that could not be removed",
                )
        return (
            f"{self._cleanup} (the server has X-GM-EXT-1: Gmail)" if gmail else str(self._cleanup)
        )

    def _junk_names(self) -> list[str]:
        configured = self.mailbox.junk_folders
        if configured is not None:
            names: Iterable[str] = configured
        else:
            found = self._live.junk_folder()
            names = [found] if found else []
        return [name for name in names if name != self.mailbox.folder]

    def _track(self, state: _FolderState, status: FolderStatus) -> None:
        """Follow a folder's numbering; the one place that decides where new mail starts.

        On first sight a persistent watcher looks at the whole folder (the
        leftovers of earlier runs), a one-shot one only at what comes next. A
        folder the server renumbered (new UIDVALIDITY) is looked at whole:
        its old UIDs mean nothing now.
        """
        state.uidnext = status.uidnext
        if status.uidvalidity == state.uidvalidity:
            return
        first_sight = state.uidvalidity == 0
        state.uidvalidity = status.uidvalidity
        state.deferred.clear()
        state.deferred_reports.clear()
        state.next_uid = status.uidnext if first_sight and not self._persistent else 1

    def _watch(self) -> None:
        was_in_flight = False
        while not self._stopping.is_set():
            if self._in_flight():
                was_in_flight = True
                if self._restart_polling:
                    # A message was just accepted: no delivery takes no time, so
                    # the first look is poll_min after the 250, not at once.
                    self._restart_polling, self._delay = False, self.mailbox.poll_min
                    self._fast_left = FAST_POLLS
                    self._pause(self._delay, in_flight=True)
                self._poll()
                self._pause(self._delay, in_flight=True)
                if self._fast_left > 0:
                    self._fast_left -= 1
                else:
                    self._delay = min(self._delay * 2, self.mailbox.poll_interval)
            elif was_in_flight:
                # The last run just gave up. What landed during the last pause
                # was announced there (and that news is spent): look once more,
                # or a late arrival waits for the next quiet poll.
                was_in_flight = False
                self._poll()
                self._linger_until = time.monotonic() + IDLE_LINGER
            elif (linger := self._linger_until - time.monotonic()) > 0:
                # Runs come in a stream: while the next is likely near, wait without
                # IDLE, which would cost an IDLE and a DONE round trip per run. The
                # socket is watched all the same: a server going away (EOF, BYE) is
                # noticed at once, as in IDLE, so no run registers with a dead watcher.
                if not self._wait_readable([self._live.socket()], linger) and not self._in_flight():
                    # Over, or the server spoke: look (IDLE announces only what
                    # lands after it starts); a lost connection fails here.
                    self._poll()
            else:
                self._delay = self.mailbox.poll_min
                # Woken for a new expectation: the in-flight branch polls next.
                if self._pause(QUIET_POLL_SECONDS, in_flight=False) and not self._in_flight():
                    self._poll()

    def _in_flight(self) -> bool:
        """Whether a run waits for its message (past its ``250``), or for reports.

        A run registered before its send is not waited for yet: no message
        of it can land before the ``250``, so polling for it would be wasted.
        """
        with self._lock:
            return bool(self._bounce_expectations) or any(
                expected._waiting for expected in self._expectations.values()
            )

    def _pause(self, seconds: float, *, in_flight: bool) -> bool:
        """Wait up to ``seconds``; return True if the mailbox may have news.

        Wakes early for a new expectation or stop (wake-up socket) and, in
        IDLE, for anything the server says.
        """
        if self.uses_idle and (seconds >= IDLE_BETWEEN_POLLS or not in_flight):
            return self._idle(min(seconds, IDLE_RENEW_SECONDS))
        woke = self._wait_readable([], seconds)
        return not woke or not in_flight

    def _idle(self, seconds: float) -> bool:
        """Sit in IDLE for up to ``seconds``; return True if the mailbox may have news.

        Whatever the server sends ends the IDLE, and ``DONE`` then reads it.
        An EOF makes ``DONE`` fail, and the watcher reconnects.
        """
        session = self._live
        sock = session.socket()
        session.idle()
        server_spoke = False
        timed_out = False
        try:
            woken = self._wait_readable([sock], seconds)
            server_spoke = not woken and self._readable_now(sock)
            timed_out = not woken and not server_spoke
        finally:
            session.idle_done()
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

    # ----------------------------------------------------------------- polling

    def _poll(self) -> None:
        """One round for every run in flight here: ``NOOP`` and the junk folders' ``STATUS``.

        Pipelined, one round trip. The folder is searched only when that
        (or any reply since the last search) announced new mail, or the last
        search is ``poll_interval`` old (a server that does not announce): a
        poll before the message lands costs one ``NOOP``. A junk folder is
        looked into when its ``UIDNEXT`` moved.
        """
        session = self._live
        with self._lock:
            for expected in {*self._expectations.values(), *self._bounce_expectations.values()}:
                expected.polls += 1
        junk = list(self._junk)
        polled = session.poll([state.name for state in junk])
        now = time.monotonic()
        if polled.news or now - self._searched_at >= self.mailbox.poll_interval:
            self._searched_at = now
            # Seen when the server announced it: the reply to this poll (or an
            # earlier one), not one round trip later when its headers are in.
            self._scan(self._folder, seen_at=now if polled.news else None, exists=polled.exists)
        self._revisit(self._folder)
        for state, status in zip(junk, polled.statuses, strict=True):
            self._track(state, status)
            if status.uidnext > state.next_uid or any(state.due(time.monotonic())):
                seen_at = time.monotonic()
                self._track(state, session.select(state.name))
                try:
                    self._scan(state, seen_at=seen_at)
                    self._revisit(state)
                finally:
                    self._track(self._folder, session.select(self._folder.name))

    def _scan(
        self, state: _FolderState, *, seen_at: float | None, exists: int | None = None
    ) -> None:
        """Find probe messages with UIDs we have not looked at yet and deal with each.

        Knowing the folder's size (``exists``, just announced), a few new
        messages are searched and fetched in one exchange
        (:meth:`ImapSession.fetch_tail`), unless replies or reports are
        looked for here (their server-side searches stay); else, or when
        more are new, ``UID SEARCH`` then ``UID FETCH`` of what it found.
        """
        session = self._live
        start = state.next_uid
        if exists is not None and not self._by_subject() and not self._looks_for_reports():
            tail = session.fetch_tail(start, exists)
            if tail is not None:
                found_at = time.monotonic() if seen_at is None else seen_at
                if tail:
                    state.next_uid = max(message.uid for message in tail) + 1
                for message in tail:
                    if message.token:  # what SEARCH HEADER X-Smtp-Probe "" would have found
                        self._match(state, message, found_at)
                return
        uids = session.search_probe_uids(start, subjects=self._by_subject())
        reports = session.search_report_uids(start) if self._looks_for_reports() else []
        found_at = time.monotonic() if seen_at is None else seen_at
        # Past what this search has seen: the UIDs found, and every UID below the
        # UIDNEXT known before it. Without the latter a folder of strangers' mail
        # (a spam folder) was searched whole, and Junk re-selected, on every poll.
        state.next_uid = max(start, state.uidnext, *(uid + 1 for uid in (*uids, *reports)))
        if not uids and not reports:
            return
        if uids:
            for message in session.fetch_probe_headers(uids):
                self._match(state, message, found_at)
        fresh = sorted(set(reports) - set(uids))
        # In batches: a first sweep of a real user's mailbox may find many reports.
        for first in range(0, len(fresh), _REPORT_BATCH):
            for uid, raw in session.fetch_reports(fresh[first : first + _REPORT_BATCH]):
                self._match_report(state, uid, raw, found_at)

    def _revisit(self, state: _FolderState) -> None:
        """Look again at other instances' young messages in ``state``'s folder that are old now.

        Each is fetched and verified again (another replica may have taken it
        meanwhile: then it is simply gone) and swept if it still is a
        verified leftover. Runs at every poll; without runs in flight polls
        come at least every :data:`QUIET_POLL_SECONDS`.

        Raises:
            ConnectionLost: the connection broke (what was not looked at yet stays remembered).
        """
        now = time.monotonic()
        messages, reports = state.due(now)
        if messages:
            for message in self._live.fetch_probe_headers(messages):
                state.deferred.pop(message.uid, None)
                self._match(state, message, now, overdue=True)
            for uid in messages:
                state.deferred.pop(uid, None)  # gone: deleted by its owner or by hand
        for first in range(0, len(reports), _REPORT_BATCH):
            batch = reports[first : first + _REPORT_BATCH]
            for uid, raw in self._live.fetch_reports(batch):
                state.deferred_reports.pop(uid, None)
                self._match_report(state, uid, raw, now, overdue=True)
            for uid in batch:
                state.deferred_reports.pop(uid, None)

    def _sweep_now(
        self, pending: dict[int, float], uid: int, token: Token, *, overdue: bool
    ) -> bool:
        """Whether another instance's verified leftover ``uid`` may be swept now.

        If not, its UID is remembered in ``pending`` with the time to look
        again; nothing is done to the message. ``overdue``: it was
        remembered, and that time has come.
        """
        if overdue:
            return True
        wait = sweep_delay(
            token, instance=self._signer.instance, now=time.time(), sweep_after=self._sweep_after
        )
        if wait <= 0:
            return True
        if len(pending) < _MAX_DEFERRED:
            # Past the bound it is found again by the sweep of the next start.
            pending.setdefault(uid, time.monotonic() + wait)
        return False

    def _looks_for_reports(self) -> bool:
        """Whether delivery status notifications are looked for in this mailbox."""
        with self._lock:
            return self._bounce_seen or bool(self._bounce_probes)

    def _by_subject(self) -> bool:
        """Whether replies (known by the Subject alone) are looked for here."""
        with self._lock:
            return self._reflector_seen or bool(self._reflector_probes)

    def _claim(
        self, state: _FolderState, message: FetchedMessage, *, overdue: bool = False
    ) -> _Claim | None:
        """Whose ``message`` is, by our header's token, else (reflector runs) its Subject's.

        ``None`` for a stranger's message, a forgery, a reply to a run that
        is not a reflector run, or another instance's leftover that may still
        be in flight (remembered to look at again, :meth:`_sweep_now`;
        ``overdue``: this is that look): those are never touched.
        """
        candidates = [(message.token, False, "")] if message.token else []
        if self._by_subject():
            parsed = parse_subject(message.subject)
            if parsed is not None:
                candidates.append((parsed.token, True, parsed.prefix))
        for text, by_subject, prefix in candidates:
            key = token_key(text)
            with self._lock:
                expected = self._expectations.get(key)
                late_probe = self._expired.get(key) if expected is None else None
                names = self._probe_names
            probe = expected.probe if expected else late_probe
            leftover: Token | None = None
            if probe is None:
                # A leftover of an earlier run (of this process, an earlier life of it, or a
                # replica: the same token secret)? Only if it verifies for a probe of ours.
                probe, leftover = self._verify_any(names, text)
            if probe is None:
                continue  # someone else's, or a stranger's
            where = f"UID {message.uid} in {state.name}"
            if self._signer.verify(probe, text) is None:
                # Our run id with a signature we did not make: a forgery or a
                # mangled copy. It proves nothing and it is not ours to delete.
                if expected is not None:
                    field = "Subject" if by_subject else "header"
                    expected.transcript.note(
                        f"imap: {where} carries this run's id in its {field} but a bad "
                        "signature; ignored, left untouched"
                    )
                continue
            if by_subject and expected is not None and not expected.reflector:
                expected.transcript.note(
                    f"imap: {where} carries this run's token in its Subject only, and this "
                    "is not a reflector run; ignored, left untouched"
                )
                return None
            foreign: str | None = None
            if leftover is not None and not self._signer.is_own(leftover):
                if not self._sweep_now(state.deferred, message.uid, leftover, overdue=overdue):
                    return None  # may be in flight for its replica: not ours to touch yet
                foreign = leftover.instance
            return _Claim(probe, expected, key, text, by_subject, prefix, foreign)
        return None

    def _verify_any(self, names: Iterable[str], text: str) -> tuple[str | None, Token | None]:
        """The first of ``names`` that ``text`` is a valid token for, and the token."""
        for name in sorted(names):
            token = self._signer.verify(name, text)
            if token is not None:
                return name, token
        return None, None

    def _match(
        self, state: _FolderState, message: FetchedMessage, seen_at: float, *, overdue: bool = False
    ) -> None:
        claim = self._claim(state, message, overdue=overdue)
        if claim is None:
            return
        expected, key = claim.expected, claim.key
        where = f"UID {message.uid} in {state.name}"
        if message.content_type == "multipart/report":
            # A DSN quotes our token; it says the message did NOT get there.
            if expected is not None:
                expected.transcript.note(
                    f"imap: {where} is a delivery status notification (multipart/report) "
                    "quoting this run's token; not counted as delivered, left untouched"
                )
            return
        # Leftovers and late arrivals belong to no run: their lines are not kept.
        transcript = expected.transcript if expected else Transcript()
        if expected is not None:
            how = ""
            if claim.by_subject:
                how = f" by the token in its Subject ({claim.prefix or 'no prefix'})"
            transcript.note(f"imap: found {where}{how}; token signature verified")
        cleanup_error: str | None = None
        lost: ConnectionLost | None = None
        # Taken before the cleanup, which may lose the session.
        tls = self._session.tls if self._session is not None else None
        whole: bytes | None = None
        try:
            whole = self._whole_message(message, expected, transcript)
            self._remove(state, message, claim, transcript)
        except ImapError as exc:
            cleanup_error = exc.reason
        except ConnectionLost as exc:
            # Recorded first, so the run learns that its message arrived; then reconnect.
            cleanup_error, lost = f"connection lost during cleanup: {exc.reason}", exc
        arrival = Arrival(
            uid=message.uid,
            folder=state.name,
            seen_at=seen_at,
            internaldate=message.internaldate,
            received=message.received,
            junk=state is not self._folder,
            deleted=cleanup_error is None,
            cleanup_error=cleanup_error,
            by_subject=claim.by_subject,
            date=message.date,
            tls=tls,
            hops=parse_hops(message.received),
            verdicts=(
                read_verdicts(message.verdict_headers, self.mailbox.authserv_id)
                if expected is not None
                else None
            ),
        )
        with self._lock:
            # The run may have given up while we were deleting: then it is late.
            owner = expected if self._expectations.get(key) is expected else None
            if owner is not None:
                del self._expectations[key]
                owner.message = whole
                owner._arrived = arrival
            else:
                self._expired.pop(key, None)
        if owner is not None:
            owner._wake()
        elif claim.foreign is not None:
            # Another replica's old leftover: not a late arrival of ours.
            if self._on_foreign is not None:
                self._on_foreign(claim.probe, claim.foreign)
        elif self._on_late is not None:
            self._on_late(claim.probe)
        if lost is not None:
            raise lost

    def _whole_message(
        self, message: FetchedMessage, expected: Expected | None, transcript: Transcript
    ) -> bytes | None:
        """The whole of ``message`` if its run asked for it; ``None`` (and a note) if not had.

        Raises:
            ConnectionLost: the connection broke (the cleanup would fail too).
        """
        if expected is None or not expected.whole_message:
            return None
        whole = self._live.fetch_message(message.uid)
        transcript.note(f"imap: fetched UID {message.uid} whole ({len(whole)} bytes) to check DKIM")
        if len(whole) >= MAX_MESSAGE_BYTES:
            transcript.note("imap: the message is larger than we read; no own DKIM check")
            return None
        return whole or None

    def _remove(
        self, state: _FolderState, message: FetchedMessage, claim: _Claim, transcript: Transcript
    ) -> None:
        r"""Delete our verified ``message`` from ``state``'s folder, the way the mailbox wants.

        Raises:
            ImapError: at ``cleanup``: the delete failed, or ``trash`` was
                asked for and the server has no ``\Trash`` folder (then
                nothing is touched).
            ConnectionLost: the connection broke.
        """
        session = self._live
        if self._cleanup is Cleanup.EXPUNGE:
            session.delete(message.uid, transcript)
            return
        if not self._trash_looked_up:
            self._trash, self._trash_looked_up = session.trash_folder(), True
        trash = self._trash
        if trash is None:
            reason = (
                "cleanup is trash, but the server has no \\Trash folder "
                f"(SPECIAL-USE, or one named Trash): left in {state.name}"
            )
            transcript.note(f"imap: {reason}")
            raise ImapError(Stage.CLEANUP, reason)
        if trash == state.name:
            session.delete(message.uid, transcript)
            return
        token = claim.token
        if claim.by_subject:
            session.trash(
                message.uid,
                trash,
                transcript,
                search=["SUBJECT", token],
                ours=lambda copy: _subject_token(copy) == token,
            )
        else:
            session.trash(
                message.uid,
                trash,
                transcript,
                search=["HEADER", PROBE_HEADER, token],
                ours=lambda copy: copy.token == token,
            )

    # ----------------------------------------------------------------- bounces

    def _match_report(
        self, state: _FolderState, uid: int, raw: bytes, seen_at: float, *, overdue: bool = False
    ) -> None:
        """Deal with a possible delivery status notification: ours only if its token verifies.

        Ours means: the token in its returned headers verifies for the run
        registered for it (or, once the run ended, for the probe it ran
        for), and its ``Original-Envelope-Id``, if any, is that run's id.
        Only then is it believed and deleted; anything else, a stranger's
        report, a forgery, a report without our headers, is never touched.
        A report about another instance's run is left alone like that
        run's message (:meth:`_sweep_now`) until it is old enough to sweep.
        """
        where = f"UID {uid} in {state.name}"
        report = parse_report(raw)
        if report is None or report.token is None:
            if report is not None and report.envelope_id:
                expected = self._bounce_by_run_id(report.envelope_id)
                if expected is not None:
                    expected.transcript.note(
                        f"imap: {where} is a delivery status notification naming this run's "
                        "envelope id, but it returns no headers with our token: "
                        "not believed, left untouched"
                    )
            return
        token = report.token
        key = token_key(token)
        with self._lock:
            expected = self._bounce_expectations.get(key)
            probe = expected.probe if expected else self._bounce_expired.get(key)
            names = self._bounce_probes
        leftover = probe is None
        if probe is None:
            probe, _ = self._verify_any(names, token)
        if probe is None:
            return  # another daemon's, or a stranger's
        verified = self._signer.verify(probe, token)
        if verified is None:
            if expected is not None:
                expected.transcript.note(
                    f"imap: {where} is a delivery status notification carrying this run's id "
                    "but a bad signature; ignored, left untouched"
                )
            return
        envid = report.envelope_id
        if envid is not None and envid.lower() != verified.run_id:
            if expected is not None:
                expected.transcript.note(
                    f"imap: {where} returns this run's token but names another envelope id "
                    f"({envid}); not believed, left untouched"
                )
            return
        foreign = leftover and not self._signer.is_own(verified)
        if foreign and not self._sweep_now(state.deferred_reports, uid, verified, overdue=overdue):
            return  # about a run that may still be going on in its replica: not ours yet
        bounce = _bounce(report, seen_at)
        transcript = expected.transcript if expected is not None else Transcript()
        if expected is not None:
            transcript.note(
                f"imap: {where} is a delivery status notification about this run "
                f"(token signature verified): {bounce.action} {bounce.describe()}"
            )
        lost: ConnectionLost | None = None
        try:
            self._remove_report(state, uid, raw, transcript)
        except ImapError as exc:
            transcript.note(f"imap: the report could not be deleted: {exc.reason}")
        except ConnectionLost as exc:
            lost = exc
        with self._lock:
            owner = expected if self._bounce_expectations.get(key) is expected else None
            if owner is not None:
                owner._bounced(bounce)
        if owner is not None:
            if bounce.action == "delayed":
                transcript.note("delivery delayed, not failed: still waiting for the message")
        elif foreign:
            if self._on_foreign is not None:
                self._on_foreign(probe, verified.instance)
        elif self._on_late_bounce is not None:
            self._on_late_bounce(probe, bounce)
        if lost is not None:
            raise lost

    def _bounce_by_run_id(self, run_id: str) -> Expected | None:
        with self._lock:
            return next(
                (
                    expected
                    for expected in self._bounce_expectations.values()
                    if expected.token.run_id == run_id.lower()
                ),
                None,
            )

    def _remove_report(
        self, state: _FolderState, uid: int, raw: bytes, transcript: Transcript
    ) -> None:
        r"""Delete our verified report ``uid`` from ``state``'s folder, the way the mailbox wants.

        With ``cleanup: trash`` its copy in ``\Trash`` is found by its
        ``Message-ID``; a report without one is deleted in place.

        Raises:
            ImapError: at ``cleanup``: the delete failed.
            ConnectionLost: the connection broke.
        """
        session = self._live
        if self._cleanup is Cleanup.EXPUNGE:
            session.delete(uid, transcript)
            return
        if not self._trash_looked_up:
            self._trash, self._trash_looked_up = session.trash_folder(), True
        trash = self._trash
        headers = _TOP_HEADERS.parsebytes(raw)
        message_id = " ".join(str(headers.get("Message-ID", "")).split())
        if trash is None or trash == state.name or not message_id:
            session.delete(uid, transcript)
            return
        session.trash(
            uid,
            trash,
            transcript,
            search=["HEADER", "Message-ID", message_id],
            ours=lambda copy: copy.message_id == message_id,
        )


def _answer(
    attempt: concurrent.futures.Future[tuple[Stage, str] | None] | None,
    outcome: tuple[Stage, str] | None,
) -> None:
    """Tell the runs waiting on ``attempt`` (if any) how it went: ``None`` for connected."""
    if attempt is not None and not attempt.done():
        attempt.set_result(outcome)


def _bounce(report: DeliveryReport, seen_at: float) -> Bounce:
    """The result value of a report: its most telling recipient block."""
    worst = report.worst
    return Bounce(
        action=(worst.action if worst is not None else "") or "unknown",
        status=(worst.status if worst is not None else "") or "unknown",
        recipient=worst.recipient if worst is not None else None,
        remote_mta=worst.remote_mta if worst is not None else None,
        diagnostic=worst.diagnostic if worst is not None else None,
        reporting_mta=report.reporting_mta,
        seen_at=seen_at,
    )


def _subject_token(message: FetchedMessage) -> str | None:
    """The token in ``message``'s Subject, if it has one."""
    parsed = parse_subject(message.subject)
    return parsed.token if parsed is not None else None
