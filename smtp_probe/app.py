"""The daemon's composition root: config -> metrics -> watchers -> scheduler -> HTTP; signals.

Everything long-lived is built here and handed down; nothing below reads
global state. A reload swaps in a new config only once it validates, then
adds, reschedules or removes jobs by probe name and opens or retires
mailbox watchers to match.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import structlog
from prometheus_client import CollectorRegistry

from smtp_probe import log
from smtp_probe.config import Config, ConfigError, ServerSettings
from smtp_probe.metrics import Metrics
from smtp_probe.probe.imap import ImapError, MailboxWatcher
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Mailbox
from smtp_probe.probe.transcript import Transcript
from smtp_probe.scheduler import ProbeScheduler

_LOG: Final = log.get(__name__)
ON_DEMAND_MIN_GAP: Final = 5.0
"""Seconds between two ``/probe`` runs of one probe: the endpoint is not a mail cannon."""
STOP_GRACE_SECONDS: Final = 30.0
"""How long a stopping daemon lets runs in progress finish (and clean up)."""
WATCHER_START_WAIT: Final = 10.0
"""How long start-up or a reload waits for a new mailbox's first connection."""


@dataclass(frozen=True, slots=True)
class ProbeState:
    """What the status page shows of one probe."""

    name: str
    interval: float
    last: RunResult | None
    last_success_at: float | None
    running: int


class Daemon:
    """The long-running monitor: scheduled probes, shared watchers, metrics, reloads."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        load: Callable[[], Config] | None = None,
    ) -> None:
        """Wire a daemon for ``config``; ``load`` re-reads the config on reload."""
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._load = load
        self._signer = TokenSigner(_secret_bytes(config))
        self._watchers: dict[Mailbox, MailboxWatcher] = {}
        self._retired: dict[MailboxWatcher, int] = {}
        self._users: dict[MailboxWatcher, int] = {}
        self.scheduler = ProbeScheduler(self._run_scheduled)
        self._last: dict[str, RunResult] = {}
        self._last_success: dict[str, float] = {}
        self._running: dict[str, int] = {}
        self._on_demand: set[str] = set()
        self._on_demand_ended: dict[str, float] = {}
        self._reload_lock = asyncio.Lock()
        self.started = False

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the watchers, create every probe's series, start scheduling."""
        self.metrics.configure(self.config.probes)
        self.metrics.reloaded(ok=True, at=time.time())
        await self._sync_watchers()
        self.scheduler.apply(self.config.probes)
        self.scheduler.start()
        self.started = True
        _LOG.info("daemon started", probes=len(self.config.probes),
                  mailboxes=len(self._watchers))  # fmt: skip

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop scheduling, let runs in progress finish and clean up, close the watchers."""
        self.started = False
        await self.scheduler.stop(grace)
        watchers = [*self._watchers.values(), *self._retired]
        self._watchers.clear()
        self._retired.clear()
        await asyncio.gather(*(w.close() for w in watchers))
        _LOG.info("daemon stopped")

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config; apply it only if it validates. Returns (applied, message)."""
        async with self._reload_lock:
            if self._load is None:
                return False, "this daemon has no config file to reload"
            try:
                config = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                self.metrics.reloaded(ok=False, at=time.time())
                _LOG.error("reload failed, keeping the running config", errors=list(exc.errors))
                return False, str(exc)
            if _secret_bytes(config) != _secret_bytes(self.config):
                # New token key: watchers must verify with it, so reopen them all.
                self._signer = TokenSigner(_secret_bytes(config))
                for mailbox in list(self._watchers):
                    self._retire(mailbox)
            self.config = config
            self.metrics.configure(config.probes)
            await self._sync_watchers()
            self.scheduler.apply(config.probes)
            self.metrics.reloaded(ok=True, at=time.time())
            _LOG.info("config reloaded", probes=len(config.probes))
            return True, f"reloaded: {len(config.probes)} probe(s)"

    # ----------------------------------------------------------------- runs

    async def _run_scheduled(self, name: str) -> None:
        result = await self._run(name)
        if result is None:
            return
        self.metrics.record(result)
        self._last[name] = result
        if result.success:
            self._last_success[name] = result.started_at.timestamp() + result.duration_seconds
        _log_run(result)

    async def run_on_demand(self, name: str) -> RunResult | None:
        """Run a configured probe now (``/probe``), outside the metrics; ``None`` if unknown.

        Raises:
            RuntimeError: an on-demand run of this probe is in progress or ended
                less than ``ON_DEMAND_MIN_GAP`` seconds ago.
        """
        if self.config.probe(name) is None:
            return None
        if name in self._on_demand:
            raise RuntimeError(f"an on-demand run of {name} is already in progress")
        wait = self._on_demand_ended.get(name, -ON_DEMAND_MIN_GAP) + ON_DEMAND_MIN_GAP
        if time.monotonic() < wait:
            raise RuntimeError(
                f"{name} ran on demand less than {ON_DEMAND_MIN_GAP:g}s ago; try again shortly"
            )
        self._on_demand.add(name)
        try:
            return await self._run(name, scheduled=False)
        finally:
            self._on_demand.discard(name)
            self._on_demand_ended[name] = time.monotonic()

    async def _run(self, name: str, *, scheduled: bool = True) -> RunResult | None:
        probe = self.config.probe(name)
        if probe is None:
            return None  # removed by a reload since the job fired
        watcher = self._watchers.get(probe.spec.mailbox) if probe.spec.mailbox else None
        if watcher is not None:
            self._users[watcher] = self._users.get(watcher, 0) + 1
        if scheduled:
            self.metrics.run_started(name)
        self._running[name] = self._running.get(name, 0) + 1
        try:
            with structlog.contextvars.bound_contextvars(probe=name):
                return await run_probe(probe.spec, signer=self._signer, watcher=watcher)
        finally:
            self._running[name] -= 1
            if scheduled:
                self.metrics.run_ended(name)
            if watcher is not None:
                self._release(watcher)

    # ----------------------------------------------------------------- watchers

    async def _sync_watchers(self) -> None:
        """Open a persistent watcher per mailbox in use; retire the ones no probe needs."""
        needed: dict[Mailbox, list[str]] = {}
        for probe in self.config.probes:
            if probe.spec.mailbox is not None:
                needed.setdefault(probe.spec.mailbox, []).append(probe.spec.name)
        for mailbox in list(self._watchers):
            if mailbox not in needed:
                self._retire(mailbox)
        starting: list[Awaitable[None]] = []
        for mailbox, names in needed.items():
            watcher = self._watchers.get(mailbox)
            if watcher is None:
                watcher = MailboxWatcher(
                    mailbox, self._signer, on_late=self.metrics.late_message,
                    persistent=True, probe_names=names,
                )  # fmt: skip
                self._watchers[mailbox] = watcher
                starting.append(self._start_watcher(watcher))
            else:
                watcher.set_probe_names(names)
        await asyncio.gather(*starting)

    async def _start_watcher(self, watcher: MailboxWatcher) -> None:
        try:
            await watcher.start(Transcript(), time.monotonic() + WATCHER_START_WAIT)
        except ImapError as exc:
            # It keeps retrying in the background; its probes fail fast meanwhile.
            _LOG.warning("mailbox unreachable", mailbox=watcher.mailbox.address,
                         user=watcher.mailbox.username, stage=str(exc.stage),
                         reason=exc.reason)  # fmt: skip

    def _retire(self, mailbox: Mailbox) -> None:
        watcher = self._watchers.pop(mailbox)
        if self._users.get(watcher, 0) == 0:
            _spawn(watcher.close())
        else:
            self._retired[watcher] = 1

    def _release(self, watcher: MailboxWatcher) -> None:
        self._users[watcher] -= 1
        if self._users[watcher] == 0:
            del self._users[watcher]
            if self._retired.pop(watcher, None) is not None:
                _spawn(watcher.close())

    # ----------------------------------------------------------------- status

    @property
    def ready(self) -> bool:
        """True once the config is loaded and the scheduler runs."""
        return self.started and self.scheduler.running

    def states(self) -> list[ProbeState]:
        """Each configured probe's latest scheduled result, for the status page."""
        return [
            ProbeState(
                name=p.spec.name,
                interval=p.interval,
                last=self._last.get(p.spec.name),
                last_success_at=self._last_success.get(p.spec.name),
                running=self._running.get(p.spec.name, 0),
            )
            for p in self.config.probes
        ]

    def watcher_states(self) -> list[tuple[Mailbox, bool]]:
        """Each mailbox in use and whether its watcher is connected."""
        return [(mailbox, watcher.is_up) for mailbox, watcher in self._watchers.items()]


def _secret_bytes(config: Config) -> bytes | None:
    return config.token_secret.reveal().encode() if config.token_secret else None


_BACKGROUND: set[asyncio.Task[None]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` in the background, keeping a reference so it is not collected."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _log_run(result: RunResult) -> None:
    _LOG.info(
        "run finished",
        probe=result.probe,
        run_id=result.run_id,
        outcome=str(result.outcome),
        stage=str(result.stage) if result.stage else None,
        error=result.error or None,
        duration_seconds=round(result.duration_seconds, 4),
        delivery_seconds=(
            round(result.delivery_seconds, 4) if result.delivery_seconds is not None else None
        ),
        reply_code=result.smtp.reply_code,
        queue_id=result.smtp.queue_id,
        folder=result.folder,
    )


async def serve(
    config: Config,
    *,
    load: Callable[[], Config] | None = None,
    listen: ServerSettings | None = None,
    on_started: Callable[[ServerSettings], None] | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP and ``POST /-/reload`` call ``load``.

    Returns the exit code (0 after a clean stop).

    Raises:
        OSError: the HTTP address cannot be bound.
    """
    from smtp_probe.server.http import HttpServer

    daemon = Daemon(config, load=load)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _spawn(_reload_quietly(daemon)))
    http = HttpServer(daemon, listen or config.server)
    try:
        await http.start()
        await daemon.start()
        if on_started is not None:
            on_started(http.bound)
        _LOG.info("listening", address=f"{http.bound.host or '*'}:{http.bound.port}")
        await stop.wait()
        _LOG.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await daemon.stop()
        await http.stop()
    return 0


async def _reload_quietly(daemon: Daemon) -> None:
    await daemon.reload()
