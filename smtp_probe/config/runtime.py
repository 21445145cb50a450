"""The validated config the daemon runs: probes with their schedules, OAuth clients, where to serve.

Plain frozen values (dataclasses and tuples), so two loads of one file
compare equal and a reload can be diffed. The exception is an OAuth
client's token cache, which is one live object per client shared by every
server and mailbox naming it: two caches are equal only if they are the
same object, so a reload keeps a client's cache (given the config it
replaces) when the client's settings did not change. Built only by
:mod:`smtp_probe.config.load`; nothing here parses or validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from smtp_probe.config import values
from smtp_probe.oauth.cache import TokenCache
from smtp_probe.oauth.settings import OAuthClient
from smtp_probe.probe.spec import (
    DEFAULT_MAX_CONCURRENT_RUNS,
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_SWEEP_GRACE,
    Mailbox,
    ProbeSpec,
)
from smtp_probe.secret import Secret


@dataclass(frozen=True, slots=True)
class ScheduledProbe:
    """A probe's route (:class:`ProbeSpec`) and when to run it."""

    spec: ProbeSpec
    interval: float
    """Seconds between the starts of two runs."""
    jitter: float
    """Up to this many seconds of random shift per run, so probes don't fire in lockstep."""
    smtp_name: str = field(default="", compare=False)
    """The ``smtp_servers`` entry it sends through, for listings (what runs is :attr:`spec`)."""
    mailbox_name: str | None = field(default=None, compare=False)
    """The ``mailboxes`` entry it watches, if any, for listings."""

    @property
    def name(self) -> str:
        """The probe's configured name (also its ``probe`` label)."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where the HTTP server (metrics, status page, reload) listens."""

    host: str = ""
    """Address to bind; ``""`` means all interfaces."""
    port: int = values.DEFAULT_LISTEN_PORT


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config: the probes to schedule and how the daemon serves them."""

    probes: tuple[ScheduledProbe, ...]
    server: ServerSettings = field(default_factory=ServerSettings)
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    """Runs the daemon has in progress at once (``limits.max_concurrent_runs``)."""
    sweep_grace: float = DEFAULT_SWEEP_GRACE
    """How much older than the longest run timeout a replica's leftover must be to be
    swept (``limits.sweep_grace``); see :attr:`sweep_after`."""
    token_secret: Secret | None = None
    """Key that signs run tokens; ``None`` means a random key per process."""
    source: Path | None = None
    """The file this config was read from, if any."""
    oauth_clients: Mapping[str, TokenCache] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    """The token source of every ``oauth_clients`` entry, by name: the very object the
    servers and mailboxes naming it hold, for the daemon to observe (metrics)."""
    oauth_settings: Mapping[str, OAuthClient] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    """What each ``oauth_clients`` entry says; a reload keeps the cache of a client whose
    settings are unchanged."""
    _by_name: dict[str, ScheduledProbe] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        # Looked up two or three times per run; a dict beats a scan of 1,000 probes.
        object.__setattr__(self, "_by_name", {p.spec.name: p for p in self.probes})

    @property
    def sweep_after(self) -> float:
        """Seconds after its send time another instance's leftover may be swept.

        The longest run timeout of any probe (no run waits longer for its
        message), plus ``limits.sweep_grace``.
        """
        longest = max((p.spec.timeout for p in self.probes), default=DEFAULT_RUN_TIMEOUT)
        return longest + self.sweep_grace

    def probe(self, name: str) -> ScheduledProbe | None:
        """The probe called ``name``, or ``None`` if there is none."""
        return self._by_name.get(name)

    @property
    def mailboxes(self) -> tuple[Mailbox, ...]:
        """The distinct mailboxes the probes watch, in order of first use.

        Probes watching the same mailbox (same :attr:`Mailbox.key`) share one
        watcher, so a mailbox is listed once however many probes use it.
        """
        seen: dict[tuple[str, int, str, str], Mailbox] = {}
        for scheduled in self.probes:
            mailbox = scheduled.spec.mailbox
            if mailbox is not None:
                seen.setdefault(mailbox.key, mailbox)
        return tuple(seen.values())


def parse_listen(text: str) -> ServerSettings:
    """Parse a listen address: ``HOST:PORT``, ``:PORT``, ``[v6]:PORT``, ``HOST`` or ``PORT``.

    An empty host (``:PORT``) means all interfaces; a missing port is 10587.

    Raises:
        ValueError: the address is malformed; the message says why.
    """
    host, port = values.parse_listen(text)
    return ServerSettings(host, port)
