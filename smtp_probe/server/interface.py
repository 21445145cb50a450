"""What the HTTP handlers need from the daemon: a narrow interface, not the composition root.

``server/`` sees the daemon only through :class:`Monitor` and the plain
values below, so it never imports ``smtp_probe.app`` (which builds the
daemon *and* the HTTP server): readiness, the metrics exposition, a
reload, an on-demand run, and a snapshot of probes and mailboxes for the
status page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from smtp_probe.history import RunPoint
from smtp_probe.probe.result import DnsReport, RunResult
from smtp_probe.probe.spec import Mailbox


class OnDemandRefused(Exception):
    """An on-demand run was refused: one of that probe is running, or ended moments ago.

    ``retry_after`` is how many seconds to wait before asking again.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    """One configured probe as the status page shows it (scheduled runs only)."""

    name: str
    interval: float
    recent: tuple[RunPoint, ...]
    """The last scheduled runs, oldest first (at most :attr:`Status.history_size`)."""
    last: RunResult | None
    """The last scheduled run in full (transcript included); ``None`` before the first."""
    last_success_at: float | None
    """Unix time the last successful scheduled run finished; ``None`` if none since start-up."""
    running: bool
    """A scheduled run of this probe is in progress."""
    dns_checks: tuple[str, ...] = ()
    """The DNS checks configured for this probe (``dns_checks``), in order; ``()`` for none."""
    dns_interval: float | None = None
    """How often they run (``dns_interval``); ``None`` without DNS checks."""
    dns: DnsReport | None = None
    """The last round of its DNS checks; ``None`` before the first (or without any)."""


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """A mailbox in use and whether its shared watcher is connected."""

    mailbox: Mailbox
    up: bool
    down_reason: str | None = None
    """Why the watcher is not connected (stage and reason of its last failure)."""


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of everything the status page shows."""

    probes: tuple[ProbeStatus, ...]
    mailboxes: tuple[MailboxStatus, ...]
    history_size: int
    """How many runs per probe :attr:`ProbeStatus.recent` holds at most."""
    instance: str = ""
    """This process's instance id (the first half of its run ids), to tell replicas apart."""


class Monitor(Protocol):
    """The daemon as the HTTP handlers see it."""

    @property
    def ready(self) -> bool:
        """True once the config is loaded and probes are being scheduled."""
        ...

    def render_metrics(self, *, openmetrics: bool) -> bytes:
        """The metrics exposition: Prometheus text 0.0.4, or OpenMetrics 1.0."""
        ...

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config and apply it if it validates; (applied, message for a person)."""
        ...

    async def run_on_demand(self, name: str) -> RunResult | None:
        """Run the configured probe ``name`` now, outside the metrics; ``None`` if unknown.

        Raises:
            OnDemandRefused: a run of it on demand is in progress or ended too recently.
        """
        ...

    def status(self) -> Status:
        """The probes' recent scheduled runs and the mailboxes' states, now."""
        ...
