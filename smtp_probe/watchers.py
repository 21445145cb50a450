"""The daemon's mailbox watchers: one persistent watcher per mailbox in use, shared by its probes.

A mailbox is in use as a probe's delivery ``mailbox`` or as its
``bounce_mailbox`` (watched for delivery status notifications); one used
both ways has one watcher serving both roles.

:meth:`WatcherPool.sync` makes the pool match the configured probes: it
opens a watcher for each new mailbox, tells kept ones which probes deliver
to them, and retires the ones no probe uses any more. A run borrows its
mailbox's watcher with ``async with pool.use(mailbox)``; a retired watcher
stays open until the last run using it ends, then closes. The pool also
owns the token signer its watchers verify with: a new token secret retires
every watcher and opens new ones that verify with the new key (the instance
id, made once per process, stays).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, NamedTuple

from smtp_probe import log
from smtp_probe.probe.imap import ImapError, MailboxWatcher
from smtp_probe.probe.message import INSTANCE_ID, TokenSigner
from smtp_probe.probe.result import Bounce
from smtp_probe.probe.spec import DEFAULT_RUN_TIMEOUT, DEFAULT_SWEEP_GRACE, Mailbox, ProbeSpec
from smtp_probe.probe.transcript import Transcript

_LOG: Final = log.get(__name__)
WATCHER_START_WAIT: Final = 10.0
"""How long a sync waits for a new mailbox's first connection before going on without it."""


class WatcherState(NamedTuple):
    """A mailbox in use, whether its watcher is connected, and why not."""

    mailbox: Mailbox
    up: bool
    reason: str | None
    """The watcher's last failure (``imap_login: login refused: ...``); ``None`` while up."""


@dataclass(eq=False)
class _Lease:
    """A watcher and how many runs are using it now."""

    watcher: MailboxWatcher
    users: int = 0


class WatcherPool:
    """Persistent :class:`MailboxWatcher` instances keyed by mailbox, refcounted per run."""

    def __init__(
        self,
        key: bytes | None,
        *,
        on_late: Callable[[str], None] | None = None,
        on_late_bounce: Callable[[str, Bounce], None] | None = None,
        on_foreign: Callable[[str, str], None] | None = None,
        start_wait: float = WATCHER_START_WAIT,
        instance: str = INSTANCE_ID,
    ) -> None:
        """A pool whose watchers verify tokens signed with ``key`` (``None``: a random key).

        ``on_late`` is called with the probe name of every late probe message
        a watcher cleans up; ``on_late_bounce`` with the probe name and the
        report of every delivery status notification it deletes that no run
        was waiting for (it came after its run ended); ``on_foreign`` with
        the probe name and instance id of every old leftover of another
        instance it sweeps. Runs sign as ``instance`` (this process's, by
        default: tests make two in one process).
        """
        self._key = key
        self._instance = instance
        self._signer = TokenSigner(key, instance=instance)
        self._on_late = on_late
        self._on_late_bounce = on_late_bounce
        self._on_foreign = on_foreign
        self._start_wait = start_wait
        self._active: dict[Mailbox, _Lease] = {}
        self._retired: set[_Lease] = set()
        """Watchers no probe uses any more, still lent to a run: they close after it."""
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def instance(self) -> str:
        """The instance id every run token signed here carries."""
        return self._instance

    @property
    def signer(self) -> TokenSigner:
        """The signer runs must sign with, so that the watchers recognise their messages."""
        return self._signer

    async def sync(
        self,
        probes: Iterable[ProbeSpec],
        *,
        key: bytes | None,
        sweep_after: float = DEFAULT_RUN_TIMEOUT + DEFAULT_SWEEP_GRACE,
    ) -> None:
        """Make the watchers match ``probes``, the token ``key`` and ``sweep_after``.

        ``sweep_after`` (seconds since its send time) is when another
        instance's leftover may be swept (:meth:`Config.sweep_after
        <smtp_probe.config.runtime.Config.sweep_after>`). Returns once every
        new watcher is connected or ``start_wait`` has passed; an
        unreachable mailbox is logged and keeps being retried in the
        background (its probes fail fast at ``imap_connect`` meanwhile).
        """
        if key != self._key:
            # Watchers verify tokens with the signer they were made with: re-key them all.
            self._key = key
            self._signer = TokenSigner(key, instance=self._instance)
            for mailbox in list(self._active):
                self._retire(mailbox)
        needed: dict[Mailbox, list[str]] = {}
        reflectors: dict[Mailbox, list[str]] = {}
        bounces: dict[Mailbox, list[str]] = {}
        for spec in probes:
            if spec.mailbox is not None:
                needed.setdefault(spec.mailbox, []).append(spec.name)
                if spec.reflector:
                    reflectors.setdefault(spec.mailbox, []).append(spec.name)
                if spec.bounce_mailbox is not None:
                    # A bounce mailbox gets a watcher too: the same one if it delivers as well.
                    needed.setdefault(spec.bounce_mailbox, [])
                    bounces.setdefault(spec.bounce_mailbox, []).append(spec.name)
        for mailbox in self._active.keys() - needed.keys():
            self._retire(mailbox)
        starting: list[MailboxWatcher] = []
        for mailbox, names in needed.items():
            lease = self._active.get(mailbox)
            replying = reflectors.get(mailbox, [])
            bouncing = bounces.get(mailbox, [])
            if lease is not None:
                lease.watcher.set_probe_names(
                    names, reflectors=replying, bounces=bouncing, sweep_after=sweep_after
                )
                continue
            watcher = MailboxWatcher(
                mailbox,
                self._signer,
                on_late=self._on_late,
                persistent=True,
                probe_names=names,
                reflector_probes=replying,
                bounce_probes=bouncing,
                on_late_bounce=self._on_late_bounce,
                sweep_after=sweep_after,
                on_foreign=self._on_foreign,
            )
            self._active[mailbox] = _Lease(watcher)
            starting.append(watcher)
        await asyncio.gather(*(self._start(watcher) for watcher in starting))

    @asynccontextmanager
    async def use(self, mailbox: Mailbox | None) -> AsyncIterator[MailboxWatcher | None]:
        """Borrow the watcher of ``mailbox`` for one run.

        Yields ``None`` for a probe without a mailbox, or for a mailbox the
        pool does not watch (before the first sync): the run then opens a
        watcher of its own. A watcher retired while borrowed closes when its
        last run gives it back.
        """
        lease = self._active.get(mailbox) if mailbox is not None else None
        if lease is None:
            yield None
            return
        lease.users += 1
        try:
            yield lease.watcher
        finally:
            lease.users -= 1
            if lease.users == 0 and lease in self._retired:
                self._close_later(lease)

    def states(self) -> list[WatcherState]:
        """Each mailbox in use, whether its watcher is connected now, and why not."""
        return [_state(mailbox, lease.watcher) for mailbox, lease in self._active.items()]

    async def close(self) -> None:
        """Close every watcher, borrowed or not, and wait for closes already under way."""
        leases = [*self._active.values(), *self._retired]
        self._active.clear()
        self._retired.clear()
        await asyncio.gather(*(lease.watcher.close() for lease in leases))
        if self._closing:
            await asyncio.wait(set(self._closing))

    async def _start(self, watcher: MailboxWatcher) -> None:
        try:
            await watcher.start(Transcript(), time.monotonic() + self._start_wait)
        except ImapError as exc:
            # It keeps retrying in the background; its probes fail fast meanwhile.
            _LOG.warning("mailbox unreachable", mailbox=watcher.mailbox.address,
                         user=watcher.mailbox.username, stage=str(exc.stage),
                         reason=exc.reason)  # fmt: skip

    def _retire(self, mailbox: Mailbox) -> None:
        lease = self._active.pop(mailbox)
        if lease.users == 0:
            self._close_later(lease)
        else:
            self._retired.add(lease)

    def _close_later(self, lease: _Lease) -> None:
        """Close in the background: a run handing its watcher back need not wait for that."""
        self._retired.discard(lease)
        task = asyncio.get_running_loop().create_task(lease.watcher.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _state(mailbox: Mailbox, watcher: MailboxWatcher) -> WatcherState:
    stage, reason = watcher.down_stage, watcher.down_reason
    if watcher.is_up or reason is None:
        return WatcherState(mailbox, watcher.is_up, None)
    return WatcherState(mailbox, False, f"{stage}: {reason}" if stage else reason)
