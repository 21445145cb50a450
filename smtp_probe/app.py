"""The daemon and its composition root: config -> metrics -> watchers -> scheduler -> HTTP; signals.

Everything long-lived is built here and handed down; nothing below reads
global state, and nothing below imports this module (the HTTP handlers see
the daemon through ``server.interface.Monitor``). A reload swaps in a new
config only once it validates, then adds, reschedules or removes jobs by
probe name and opens or retires mailbox watchers to match. OAuth clients
whose settings a reload leaves unchanged keep their token cache (and the
token in it), so a reload neither refetches tokens nor reconnects their
mailboxes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

import structlog
from prometheus_client import CollectorRegistry

from smtp_probe import log
from smtp_probe.config.errors import ConfigError
from smtp_probe.config.runtime import Config, ScheduledProbe, ServerSettings
from smtp_probe.history import RunHistory
from smtp_probe.metrics import Metrics
from smtp_probe.probe import resolver as dns_resolver
from smtp_probe.probe.credentials import TokenSource
from smtp_probe.probe.dns_checks import run_dns_checks
from smtp_probe.probe.result import DnsCheckResult, DnsReport, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.slots import Slots
from smtp_probe.probe.spec import ProbeSpec
from smtp_probe.probe.transcript import Transcript
from smtp_probe.scheduler import ProbeScheduler
from smtp_probe.server.http import HttpServer, WebOptions
from smtp_probe.server.interface import MailboxStatus, OnDemandRefused, ProbeStatus, Status
from smtp_probe.server.webconfig import WebGuard
from smtp_probe.watchers import WatcherPool

_LOG: Final = log.get(__name__)
ON_DEMAND_MIN_GAP: Final = 5.0
"""Seconds between two ``/probe`` runs of one probe: the endpoint is not a mail cannon."""
ON_DEMAND_PER_MINUTE: Final = 30
"""``/probe`` runs started in any 60 s, all probes together (``--web.probe-rate``): with
many probes the per-probe pause alone would still let a client send a message a second."""
ON_DEMAND_WINDOW: Final = 60.0
STOP_GRACE_SECONDS: Final = 30.0
"""How long a stopping daemon lets runs in progress finish (and clean up)."""
DNS_FIRST_RUN_WITHIN: Final = 30.0
"""A probe's DNS checks first run within this many seconds of the start (or of being
added by a reload), spread by name, not somewhere in their first 15-minute interval."""


class OnDemandGate:
    """Admission for ``/probe`` runs: a mail cannon neither per probe nor over all of them.

    One on-demand run per probe at a time, ``gap`` seconds between two of
    them, and at most ``per_minute`` started in any 60 s over all probes.
    """

    def __init__(
        self,
        gap: float = ON_DEMAND_MIN_GAP,
        per_minute: int = ON_DEMAND_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is monotonic seconds (tests turn their own instead of waiting a minute)."""
        self.gap = gap
        self.per_minute = per_minute
        self._clock = clock
        self._starts: deque[float] = deque()
        """Monotonic start times of the on-demand runs of the last ``ON_DEMAND_WINDOW`` s."""
        self._running: dict[str, float] = {}
        """Probe name -> monotonic time its on-demand run in progress will have given up."""
        self._ended: dict[str, float] = {}
        """Probe name -> monotonic time its last on-demand run ended (within ``gap``)."""

    @contextmanager
    def admit(self, name: str, *, timeout: float) -> Iterator[None]:
        """Hold ``name``'s on-demand slot for one run that gives up after ``timeout`` seconds.

        Raises:
            OnDemandRefused: a run of ``name`` holds the slot, ended less
                than ``gap`` seconds ago, or ``per_minute`` runs (of any probe)
                started in the last minute; says how long to wait.
        """
        now = self._clock()
        ends = self._running.get(name)
        if ends is not None:
            raise OnDemandRefused(
                f"an on-demand run of {name} is already in progress",
                retry_after=max(ends - now, 0.0) + self.gap,
            )
        free_at = self._ended.get(name, -math.inf) + self.gap
        if now < free_at:
            raise OnDemandRefused(
                f"{name} ran on demand less than {self.gap:g}s ago; try again shortly",
                retry_after=free_at - now,
            )
        while self._starts and self._starts[0] <= now - ON_DEMAND_WINDOW:
            self._starts.popleft()
        if len(self._starts) >= self.per_minute:
            raise OnDemandRefused(
                f"{self.per_minute} on-demand runs started in the last minute "
                "(--web.probe-rate); try again shortly",
                retry_after=self._starts[0] + ON_DEMAND_WINDOW - now,
            )
        self._starts.append(now)
        self._ended.pop(name, None)  # only ends within the gap matter
        self._running[name] = now + timeout
        try:
            yield
        finally:
            del self._running[name]
            self._ended[name] = self._clock()


class Daemon:
    """The long-running monitor: scheduled probes, shared watchers, metrics, reloads.

    It is the :class:`smtp_probe.server.interface.Monitor` the HTTP server serves.
    """

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        load: Callable[[], Config] | None = None,
        on_demand_per_minute: int = ON_DEMAND_PER_MINUTE,
    ) -> None:
        """Wire a daemon for ``config``; ``load`` re-reads the config on reload.

        ``on_demand_per_minute`` bounds ``/probe`` runs over all probes (``--web.probe-rate``).
        """
        self.config = config
        self.metrics = Metrics(registry or CollectorRegistry())
        self.slots = Slots(config.max_concurrent_runs, observer=self.metrics)
        """Runs at once, and SMTP sessions at once per server: a reload changes the limits."""
        self._load = load
        self._watchers = WatcherPool(
            _secret_bytes(config),
            on_late=self.metrics.late_message,
            on_late_bounce=self.metrics.late_bounce,
            on_foreign=self._swept_foreign,
        )
        self._history = RunHistory()
        self.scheduler = ProbeScheduler(self._run_scheduled)
        self.dns_scheduler = ProbeScheduler(
            self._run_dns, first_within=DNS_FIRST_RUN_WITHIN, kind="dns checks"
        )
        """Each probe's DNS checks: their own jobs, on ``dns_interval``, beside the runs."""
        self._dns_reports: dict[str, DnsReport] = {}
        self._on_demand = OnDemandGate(per_minute=on_demand_per_minute)
        self._reload_lock = asyncio.Lock()
        self.started = False

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the watchers, create every probe's series, start scheduling."""
        self._configure(self.config)
        self.metrics.reloaded(ok=True, at=time.time())
        await self._watchers.sync(
            _specs(self.config),
            key=_secret_bytes(self.config),
            sweep_after=self.config.sweep_after,
        )
        self.scheduler.apply(self.config.probes)
        self.dns_scheduler.apply(dns_jobs(self.config))
        self.scheduler.start()
        self.dns_scheduler.start()
        self.started = True
        _LOG.info("daemon started", probes=len(self.config.probes),
                  mailboxes=len(self._watchers.states()),
                  instance=self._watchers.instance)  # fmt: skip

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop scheduling, let runs in progress finish and clean up, close the watchers."""
        self.started = False
        ends = time.monotonic() + grace
        await self.scheduler.stop(grace)
        await self.dns_scheduler.stop(max(ends - time.monotonic(), 0.0))
        await self._watchers.close()
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
            config = keep_unchanged_oauth_clients(self.config, config)
            self.config = config
            self._configure(config)
            await self._watchers.sync(
                _specs(config), key=_secret_bytes(config), sweep_after=config.sweep_after
            )
            self.scheduler.apply(config.probes)
            self.dns_scheduler.apply(dns_jobs(config))
            self.metrics.reloaded(ok=True, at=time.time())
            _LOG.info("config reloaded", probes=len(config.probes))
            return True, f"reloaded: {len(config.probes)} probe(s)"

    def _configure(self, config: Config) -> None:
        self.metrics.configure(config.probes)
        self.slots.configure(config.max_concurrent_runs, (p.spec.smtp for p in config.probes))
        self._history.configure(p.spec.name for p in config.probes)
        checked = {p.spec.name for p in config.probes if p.spec.dns_checks is not None}
        for name in self._dns_reports.keys() - checked:
            del self._dns_reports[name]
        for cache in config.oauth_clients.values():
            cache.observer = self.metrics
        self.metrics.configure_oauth(
            {name: cache.expires_at for name, cache in config.oauth_clients.items()}
        )

    def _swept_foreign(self, probe: str, instance: str) -> None:
        """A watcher swept an old leftover of another instance (called from its thread)."""
        self.metrics.foreign_leftover(probe)
        _LOG.info("swept another instance's leftover", probe=probe, instance=instance)

    # ----------------------------------------------------------------- runs

    async def _run_scheduled(self, name: str) -> None:
        probe = self.config.probe(name)
        if probe is None:
            return  # removed by a reload since the job fired
        result = await self._run(probe, scheduled=True)
        self.metrics.record(result)
        self._history.record(result)
        _log_run(result)

    async def _run_dns(self, name: str) -> None:
        """One scheduled round of a probe's DNS checks: metrics, the status page, a log line each."""
        probe = self.config.probe(name)
        if probe is None or probe.spec.dns_checks is None:
            return  # removed (or its checks dropped) by a reload since the job fired
        spec = probe.spec
        with structlog.contextvars.bound_contextvars(probe=name):
            report = await dns_check_report(spec)
        current = self.config.probe(name)
        if current is None or current.spec.dns_checks != spec.dns_checks:
            return  # reloaded meanwhile: the report describes checks no longer configured
        self.metrics.record_dns(report)
        self._dns_reports[name] = report
        _log_dns(report)

    async def run_on_demand(self, name: str) -> RunResult | None:
        """Run a configured probe now (``/probe``), outside the metrics; ``None`` if unknown.

        Raises:
            OnDemandRefused: an on-demand run of this probe is in progress or
                ended less than ``ON_DEMAND_MIN_GAP`` seconds ago, or the
                per-minute budget over all probes is spent.
        """
        probe = self.config.probe(name)
        if probe is None:
            return None
        with self._on_demand.admit(name, timeout=probe.spec.timeout):
            return await self._run(probe, scheduled=False)

    async def _run(self, probe: ScheduledProbe, *, scheduled: bool) -> RunResult:
        spec = probe.spec
        # Taken together with the watcher (no await in between): after a re-key,
        # a run signs with the key its borrowed watcher verifies with.
        signer = self._watchers.signer
        async with (
            self._watchers.use(spec.mailbox) as watcher,
            self._watchers.use(spec.bounce_mailbox) as bounce_watcher,
        ):
            if scheduled:
                self.metrics.run_started(spec.name)
            try:
                with structlog.contextvars.bound_contextvars(probe=spec.name):
                    return await run_probe(
                        spec,
                        signer=signer,
                        watcher=watcher,
                        bounce_watcher=bounce_watcher,
                        slots=self.slots,
                    )
            finally:
                if scheduled:
                    self.metrics.run_ended(spec.name)

    # ----------------------------------------------------------------- what the HTTP server reads

    @property
    def ready(self) -> bool:
        """True once the config is loaded and the scheduler runs."""
        return self.started and self.scheduler.running

    def render_metrics(self, *, openmetrics: bool) -> bytes:
        """The metrics exposition (see :meth:`Metrics.render`)."""
        return self.metrics.render(openmetrics=openmetrics)

    def status(self) -> Status:
        """Each configured probe's recent scheduled runs, and each mailbox's state."""
        probes = tuple(
            ProbeStatus(
                name=p.spec.name,
                interval=p.interval,
                recent=self._history.recent(p.spec.name),
                last=self._history.last(p.spec.name),
                last_success_at=self.metrics.last_success(p.spec.name),
                running=self.metrics.runs_in_flight(p.spec.name) > 0,
                dns_checks=tuple(p.spec.dns_checks.checks) if p.spec.dns_checks else (),
                dns_interval=p.spec.dns_checks.interval if p.spec.dns_checks else None,
                dns=self._dns_reports.get(p.spec.name),
            )
            for p in self.config.probes
        )
        mailboxes = tuple(MailboxStatus(s.mailbox, s.up, s.reason) for s in self._watchers.states())
        return Status(
            probes, mailboxes, history_size=self._history.size, instance=self._watchers.instance
        )


def keep_unchanged_oauth_clients(running: Config, loaded: Config) -> Config:
    """``loaded``, with ``running``'s token cache for every OAuth client whose settings are equal.

    The loader builds a new, empty cache per client; swapping the running one
    back in (in :attr:`Config.oauth_clients` and in every server and mailbox
    that uses it) keeps its token across the reload, and keeps the mailbox
    equal to the one its watcher serves, so the watcher is not reopened. A
    client whose settings changed (a rotated secret included: secrets compare
    by value) gets the new cache and fetches a token with its new settings.
    """
    swap: dict[TokenSource, TokenSource] = {}
    for name, cache in loaded.oauth_clients.items():
        kept = running.oauth_clients.get(name)
        settings = loaded.oauth_settings.get(name)
        if kept is None or kept is cache or settings is None:
            continue
        if running.oauth_settings.get(name) == settings:
            swap[cache] = kept
    if not swap:
        return loaded
    probes = tuple(
        dataclasses.replace(probe, spec=_with_sources(probe.spec, swap)) for probe in loaded.probes
    )
    clients = {
        name: running.oauth_clients[name] if cache in swap else cache
        for name, cache in loaded.oauth_clients.items()
    }
    return dataclasses.replace(loaded, probes=probes, oauth_clients=MappingProxyType(clients))


def _with_sources(spec: ProbeSpec, swap: Mapping[TokenSource, TokenSource]) -> ProbeSpec:
    """``spec`` with each token source that is a key of ``swap`` replaced by its value."""
    smtp, mailbox = spec.smtp, spec.mailbox
    if smtp.oauth is not None and smtp.oauth in swap:
        smtp = dataclasses.replace(smtp, oauth=swap[smtp.oauth])
    if mailbox is not None and mailbox.oauth is not None and mailbox.oauth in swap:
        mailbox = dataclasses.replace(mailbox, oauth=swap[mailbox.oauth])
    if smtp is spec.smtp and mailbox is spec.mailbox:
        return spec
    return dataclasses.replace(spec, smtp=smtp, mailbox=mailbox)


async def dns_check_report(spec: ProbeSpec) -> DnsReport:
    """``spec``'s DNS checks through the shared resolver of ``spec.dns``, under its timeout.

    :func:`run_dns_checks` never raises by contract; should it all the same,
    every check is reported failed with the error, so one bad round costs a
    red line on the status page, not the job.
    """
    deadline = time.monotonic() + spec.timeout
    started = time.time()
    try:
        return await run_dns_checks(spec, deadline=deadline, resolver=dns_resolver.shared(spec.dns))
    except Exception as exc:  # noqa: BLE001 - a broken contract must not end the job
        _LOG.exception("dns checks raised")
        reason = f"internal error: {type(exc).__name__}"
        checks = spec.dns_checks.checks if spec.dns_checks is not None else ()
        return DnsReport(
            probe=spec.name,
            started_at=datetime.fromtimestamp(started, UTC),
            duration_seconds=time.time() - started,
            results=tuple(DnsCheckResult(str(check), False, reason) for check in checks),
            transcript=Transcript(),
        )


def dns_jobs(config: Config) -> list[ScheduledProbe]:
    """The DNS-check job of each probe that has ``dns_checks``: its ``dns_interval``, jittered.

    The jitter is the probe's own, capped at half the DNS interval.
    """
    return [
        dataclasses.replace(
            probe,
            interval=checks.interval,
            jitter=min(probe.jitter, checks.interval / 2),
        )
        for probe in config.probes
        if (checks := probe.spec.dns_checks) is not None
    ]


def _log_dns(report: DnsReport) -> None:
    """One structured line per check, so a log search finds each check's verdict and reason."""
    for result in report.results:
        (_LOG.info if result.ok else _LOG.warning)(
            "dns check",
            probe=report.probe,
            check=result.check,
            ok=result.ok,
            reason=result.reason,
            policy=result.policy,
            listed=[zone for zone, listed in result.listed if listed] or None,
            seconds=round(result.seconds, 4),
        )


def _specs(config: Config) -> list[ProbeSpec]:
    return [p.spec for p in config.probes]


def _secret_bytes(config: Config) -> bytes | None:
    return config.token_secret.reveal().encode() if config.token_secret else None


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
    web_options: WebOptions | None = None,
    probe_rate: int = ON_DEMAND_PER_MINUTE,
    guard: WebGuard | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP and ``POST /-/reload`` call ``load``.

    ``POST /-/reload`` only with ``web_options.enable_lifecycle``; SIGHUP always.
    ``probe_rate`` is the ``/probe`` budget per minute over all probes.
    ``guard`` is the ``--web.config.file`` (TLS, basic auth, headers) every
    endpoint obeys.

    Returns the exit code (0 after a clean stop).

    Raises:
        OSError: the HTTP address cannot be bound.
    """
    daemon = Daemon(config, load=load, on_demand_per_minute=probe_rate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[tuple[bool, str]]] = set()

    def reload_on_hup() -> None:
        # The loop keeps only weak references to tasks: hold it until it is done.
        task = loop.create_task(daemon.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    http = HttpServer(daemon, listen or config.server, web_options, guard)
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
