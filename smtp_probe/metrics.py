"""Every Prometheus metric of smtp_probe, on an injected registry (a public contract).

Values describe the *last scheduled run* of each probe; ``/probe`` runs on
demand never touch them. Every probe's series are created when the probe is
added, so a restart or a probe that never succeeds cannot hide behind
``absent()``, and removed when a reload drops the probe (or the policy
check, DNS check or DNSBL zone they belong to). The same holds for every
configured OAuth client (``client`` label): its token series exist from the
moment it is configured, for every result a request can have. Labels carry
only the configured probe or client name, a stage, an outcome, a token
request's result class, a word from a fixed list (a policy check, a
smuggling variant, a DNS check, a DMARC policy, an MTA-STS mode) or a
configured DNSBL zone: never host names, addresses, error text or tokens.
The one exception is ``smtp_probe_hop_info``, which names each hop's
receiving host and protocol as the message's ``Received:`` lines say
(bounded: at most :data:`MAX_HOPS` hops per probe, values cut to 255 characters).

Token requests are reported by the clients' token caches, from whichever
thread asked for a token (a run's worker thread, a mailbox watcher), so the
client series are guarded by a lock; the probe series change on the event
loop only.

A thousand probes make some 60,000 samples. prometheus_client's generic
exposition needs most of a second for that, on the event loop, so the
samples of each probe are rendered to text when the probe's values change
(once per run) and a scrape only joins the pieces. The same values are
offered to the registry as a collector, so ``generate_latest`` and
``get_sample_value`` see exactly what ``/metrics`` serves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from smtp_probe import __version__
from smtp_probe.config.runtime import ScheduledProbe
from smtp_probe.probe import slots
from smtp_probe.probe.result import (
    SMTP_STAGES,
    Bounce,
    DnsReport,
    Hop,
    Outcome,
    RunResult,
    Stage,
)
from smtp_probe.probe.smuggling import VARIANTS
from smtp_probe.probe.spec import (
    DMARC_POLICIES,
    MTA_STS_MODES,
    DnsCheck,
    PolicyCheck,
    ProbeSpec,
)
from smtp_probe.probe.verdicts import METHODS, metric_result

DELIVERY_BUCKETS: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
"""Delivery-time histogram buckets, 50 ms to 30 min: a local hop to a slow queue."""
TIMED_STAGES: Final = (*SMTP_STAGES, Stage.DELIVERY)
_LAST: Final = " (from the last scheduled run)"


def _number(value: float) -> str:
    """A sample value as prometheus_client writes it (``1.0``, ``+Inf``, ``NaN``)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


_LE: Final = (*(_number(b) for b in DELIVERY_BUCKETS), "+Inf")

TOKEN_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Token-request histogram buckets: a local endpoint, a cloud one, up to a slow timeout."""
_TOKEN_LE: Final = (*(_number(b) for b in TOKEN_BUCKETS), "+Inf")
TOKEN_RESULTS: Final = (
    "success", "invalid_client", "unauthorized_client", "invalid_grant", "http_error",
    "timeout", "unreachable", "bad_response", "command_failed",
)  # fmt: skip
"""Every ``result`` of a token request: ``success`` or a ``TokenError.result``."""
_UNCLASSIFIED: Final = "bad_response"
"""Where a result outside :data:`TOKEN_RESULTS` is counted (the cache's own
word for a failure it cannot classify); a label never takes free text."""


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    """Family name; counters add ``_total`` to their samples."""
    kind: str
    help: str


SUCCESS = _Family(
    "smtp_probe_success",
    "gauge",
    "1 if the message arrived where it should (or was accepted, for SMTP-only probes; or was "
    "refused as expected, for probes with a check or expect), else 0" + _LAST,
)
RUNS = _Family("smtp_probe_runs", "counter", "Scheduled runs finished")
FAILURES = _Family(
    "smtp_probe_failures", "counter", "Scheduled runs that failed, by the stage they stopped at"
)
OUTCOMES = _Family(
    "smtp_probe_outcomes",
    "counter",
    "Scheduled runs by outcome (delivered, junk, sent, send_failed, throttled, not_delivered, "
    "bounced, auth_failed, rejected, accepted_unexpectedly, error)",
)
DELIVERY = _Family(
    "smtp_probe_delivery_duration_seconds",
    "histogram",
    "Seconds from the 250 that accepted DATA to the message seen in the mailbox, "
    "for delivered scheduled runs (junk included)",
)
DURATION = _Family("smtp_probe_duration_seconds", "gauge", "Seconds the whole run took" + _LAST)
STAGE_DURATION = _Family(
    "smtp_probe_stage_duration_seconds",
    "gauge",
    "Seconds spent in each stage, 0 for stages not reached" + _LAST,
)
REPLY_CODE = _Family(
    "smtp_probe_smtp_reply_code",
    "gauge",
    "The last final or failing SMTP reply code, 0 if none was received" + _LAST,
)
LAST_RUN = _Family(
    "smtp_probe_last_run_timestamp_seconds",
    "gauge",
    "Unix time the last scheduled run finished, 0 before the first",
)
LAST_SUCCESS = _Family(
    "smtp_probe_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful scheduled run, 0 if none since start-up",
)
INTERVAL = _Family("smtp_probe_interval_seconds", "gauge", "Configured interval between runs")
TIMEOUT = _Family("smtp_probe_timeout_seconds", "gauge", "Configured deadline of one run")
LATE = _Family(
    "smtp_probe_late_messages",
    "counter",
    "Probe messages that arrived after their run had given up (or were left from earlier "
    "runs), and were cleaned up",
)
FOREIGN = _Family(
    "smtp_probe_foreign_leftovers",
    "counter",
    "Probe messages, replies and delivery reports of another instance (a replica, or an "
    "earlier life of this daemon) found older than the longest timeout plus "
    "limits.sweep_grace, and cleaned up; never counted as late",
)
IN_FLIGHT = _Family("smtp_probe_in_flight", "gauge", "Runs of this probe in progress now")
REFLECTOR_LEG = _Family(
    "smtp_probe_reflector_leg_seconds",
    "gauge",
    "Reflector probes only: seconds of each leg of the delivery, outbound (our 250 to the "
    "reflector's timestamp) and return (from there to our mailbox), 0 when not measured" + _LAST,
)
REFLECTOR_LEGS: Final = ("outbound", "return")
TLS_EXPIRY = _Family(
    "smtp_probe_tls_cert_expiry_timestamp_seconds",
    "gauge",
    "Unix time the peer certificate of each leg (smtp, imap) expires, from the last scheduled "
    "run that had TLS on that leg; 0 if its certificate could not be read. A leg never seen "
    "with TLS has no series",
)
TLS_INFO = _Family(
    "smtp_probe_tls_info",
    "gauge",
    "Always 1; the version and cipher labels say which TLS each leg (smtp, imap) spoke in the "
    "last scheduled run that had TLS on that leg",
)
AUTH_RESULT = _Family(
    "smtp_probe_auth_result",
    "gauge",
    "1 for the result (pass, fail, none, ...; other for a word outside RFC 8601's) the "
    "receiver's Authentication-Results gave each method (spf, dkim, dmarc, arc), from the last "
    "scheduled run whose message arrived; only for mailboxes with an authserv_id",
)
SPAM_SCORE = _Family(
    "smtp_probe_spam_score",
    "gauge",
    "The receiver's spam score of the message (rspamd or SpamAssassin headers), from the last "
    "scheduled run whose message arrived; no series when it carried none",
)
SPAM_THRESHOLD = _Family(
    "smtp_probe_spam_threshold",
    "gauge",
    "The score at which the receiver calls a message spam, from the same header as "
    "smtp_probe_spam_score; no series when the header does not say",
)
_HOP_CLOCKS: Final = "; each hop's time is whole seconds on most MTAs, from that host's own clock"
HOPS = _Family(
    "smtp_probe_hops",
    "gauge",
    "Received: lines (hops) of the probe message, 0 when the run did not see it" + _LAST,
)
HOP_DELAY = _Family(
    "smtp_probe_hop_delay_seconds",
    "gauge",
    "Seconds between the previous hop's Received time and this hop's (hop 0 is the first "
    "server, hop 9 sums hops 9 and beyond); no series for hop 0, a hop without both times, "
    "or a hop whose clock is behind the previous one's" + _HOP_CLOCKS + _LAST,
)
HOP_INFO = _Family(
    "smtp_probe_hop_info",
    "gauge",
    "Always 1; the by and with labels name each hop's receiving host and protocol as its "
    "Received: line says (hop 9: the last of hops 9 and beyond)" + _LAST,
)
MAX_HOPS: Final = 10
"""Hop labels ``0``..``9``: a longer chain is folded into hop 9, keeping the series bounded."""
BOUNCES = _Family(
    "smtp_probe_bounces",
    "counter",
    "Delivery status notifications (RFC 3464) about this probe's messages read off its "
    "bounce_mailbox, by action (failed, delayed...) and status class (4, 5); late ones included",
)
BOUNCE_ACTIONS: Final = ("failed", "delayed")
BOUNCE_CLASSES: Final = ("4", "5")
"""The bounce series every probe has from the start (others appear when seen)."""
LAST_BOUNCE = _Family(
    "smtp_probe_last_bounce_status_info",
    "gauge",
    "Always 1; the status label is the enhanced status code (e.g. 5.1.1) of the last delivery "
    "status notification about this probe; no series before the first",
)
POLICY_VIOLATION = _Family(
    "smtp_probe_policy_violation",
    "gauge",
    "1 if the server accepted what the probe's check (open_relay, auth_requires_tls, "
    "sender_mismatch, smtp_smuggling; expect for a plain expect) needs it to refuse "
    "(outcome accepted_unexpectedly), else 0; only for probes with a check or expect" + _LAST,
)
SMUGGLING_ACCEPTED = _Family(
    "smtp_probe_smuggling_accepted",
    "gauge",
    "smtp_smuggling probes only: 1 if the server took the message smuggled behind this "
    "end-of-data variant (an extra 250 to it, or it arrived in the mailbox), else 0" + _LAST,
)
_DNS_RUN: Final = " (from the probe's last DNS check run, every dns_interval)"
DNS_SUCCESS = _Family(
    "smtp_probe_dns_check_success",
    "gauge",
    "1 if the DNS check (mx, spf, dmarc, mta_sts, tls_rpt, dnsbl, fcrdns) passed, else 0; "
    "0 before its first run too (see smtp_probe_dns_check_timestamp_seconds)" + _DNS_RUN,
)
DNS_TIMESTAMP = _Family(
    "smtp_probe_dns_check_timestamp_seconds",
    "gauge",
    "Unix time the probe's last run of this DNS check finished, 0 before the first",
)
DNSBL_LISTED = _Family(
    "smtp_probe_dnsbl_listed",
    "gauge",
    "1 if the dnsbl check found a sending IP listed on this configured blocklist zone, "
    "else 0 (also when its lookups there failed: the dnsbl check then fails)" + _DNS_RUN,
)
DMARC_POLICY = _Family(
    "smtp_probe_dmarc_policy_info",
    "gauge",
    "Always 1; the policy label is the p= (none, quarantine, reject; other for anything "
    "else) of the sender domain's DMARC record; no series when the check read none" + _DNS_RUN,
)
MTA_STS_MODE = _Family(
    "smtp_probe_mta_sts_mode_info",
    "gauge",
    "Always 1; the mode label is the mode (none, testing, enforce; other for anything else) "
    "of the recipient domain's MTA-STS policy; no series when the check could not fetch "
    "one" + _DNS_RUN,
)
PER_PROBE: Final = (
    SUCCESS, RUNS, FAILURES, OUTCOMES, DELIVERY, DURATION, STAGE_DURATION, REPLY_CODE,
    LAST_RUN, LAST_SUCCESS, INTERVAL, TIMEOUT, LATE, FOREIGN, IN_FLIGHT, REFLECTOR_LEG,
    TLS_EXPIRY,
    TLS_INFO, HOPS, HOP_DELAY, HOP_INFO, AUTH_RESULT, SPAM_SCORE, SPAM_THRESHOLD,
    BOUNCES, LAST_BOUNCE, POLICY_VIOLATION, SMUGGLING_ACCEPTED, DNS_SUCCESS, DNS_TIMESTAMP,
    DNSBL_LISTED, DMARC_POLICY, MTA_STS_MODE,
)  # fmt: skip
RELOAD_OK = _Family(
    "smtp_probe_config_last_reload_successful",
    "gauge",
    "1 if the last configuration (re)load succeeded",
)
RELOAD_TIME = _Family(
    "smtp_probe_config_last_reload_success_timestamp_seconds",
    "gauge",
    "Unix time of the last successful configuration (re)load",
)
RUNS_WAITING = _Family(
    "smtp_probe_runs_waiting",
    "gauge",
    "Runs waiting now for a slot: limit=run (limits.max_concurrent_runs) or limit=connection "
    "(an SMTP server's max_connections)",
)
SLOT_WAITS = _Family(
    "smtp_probe_slot_waits",
    "counter",
    "Times a run had to wait for a slot, by limit (run, connection); on demand runs included",
)
BUILD_INFO = _Family(
    "smtp_probe_build_info", "gauge", "Always 1; the version label says which build runs"
)
TOKEN_REQUESTS = _Family(
    "smtp_probe_oauth_token_requests",
    "counter",
    "Requests for an OAuth2 access token (token endpoint or token command), by configured "
    "client and result: success, or the class of the error (invalid_client, "
    "unauthorized_client, invalid_grant, http_error, timeout, unreachable, bad_response, "
    "command_failed)",
)
TOKEN_EXPIRY = _Family(
    "smtp_probe_oauth_token_expiry_timestamp_seconds",
    "gauge",
    "Unix time the client's current access token expires; 0 before its first token, "
    "or when the endpoint did not say",
)
TOKEN_DURATION = _Family(
    "smtp_probe_oauth_token_request_duration_seconds",
    "histogram",
    "Seconds one token request took, whatever its result",
)
PER_CLIENT: Final = (TOKEN_REQUESTS, TOKEN_EXPIRY, TOKEN_DURATION)


@dataclass
class _Probe:
    """The current values of one probe's series."""

    interval: float
    timeout: float
    success: float = 0.0
    runs: float = 0.0
    failures: dict[Stage, float] = field(default_factory=lambda: dict.fromkeys(Stage, 0.0))
    outcomes: dict[Outcome, float] = field(default_factory=lambda: dict.fromkeys(Outcome, 0.0))
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(DELIVERY_BUCKETS))
    """Observations per bucket (not cumulative); ``+Inf`` is ``count``."""
    delivery_sum: float = 0.0
    delivery_count: float = 0.0
    duration: float = 0.0
    stage_seconds: dict[Stage, float] = field(
        default_factory=lambda: dict.fromkeys(TIMED_STAGES, 0.0)
    )
    reply_code: float = 0.0
    last_run: float = 0.0
    last_success: float = 0.0
    late: float = 0.0
    foreign: float = 0.0
    in_flight: float = 0.0
    legs: dict[str, float] | None = None
    """Seconds per reflector leg; ``None`` for a probe that is not a reflector probe."""
    tls: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    """Per leg (``smtp``, ``imap``) seen with TLS: certificate expiry, version, cipher."""
    hops: int = 0
    hop_rows: tuple[tuple[str, str, str, float | None], ...] = ()
    """The last run's hops, folded to :data:`MAX_HOPS`: label, by, with, delay."""
    auth: dict[str, str] = field(default_factory=dict)
    """Method -> the receiver's result (a bounded label value), from the last arrived message."""
    spam: tuple[float, float | None] | None = None
    """Spam score and threshold from the last arrived message, if it carried a score."""
    bounces: dict[tuple[str, str], float] = field(
        default_factory=lambda: {(a, c): 0.0 for a in BOUNCE_ACTIONS for c in BOUNCE_CLASSES}
    )
    """Reports seen per (action, status class)."""
    last_bounce: str | None = None
    """The status of the last report seen."""
    violations: dict[str, float] = field(default_factory=dict)
    """Policy check label -> 1 if the last run was accepted_unexpectedly; empty for a
    delivery probe (at most one key: the probe's ``policy_check``)."""
    smuggling: dict[str, float] | None = None
    """Variant (the probe's ``smuggling_variants``, or every one of
    :data:`~smtp_probe.probe.smuggling.VARIANTS`) -> 1 if the last run's smuggled
    message was taken; ``None`` unless the probe's check is ``smtp_smuggling``."""
    dns: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Configured DNS check -> (success, Unix time it last finished)."""
    dnsbl: dict[str, float] = field(default_factory=dict)
    """Configured DNSBL zone -> listed (the ``dnsbl`` check only)."""
    dmarc: str | None = None
    """The ``p=`` the last ``dmarc`` check read (a bounded label), if any."""
    mta_sts: str | None = None
    """The ``mode`` the last ``mta_sts`` check read (a bounded label), if any."""

    def configure_policy(self, spec: ProbeSpec) -> None:
        """Keep the policy and DNS series ``spec`` still has, create new ones at 0, drop the rest."""
        check = spec.policy_check
        self.violations = {check: self.violations.get(check, 0.0)} if check else {}
        if spec.check is not PolicyCheck.SMTP_SMUGGLING:
            self.smuggling = None
        else:
            old = self.smuggling or {}
            variants = spec.smuggling_variants or tuple(VARIANTS)
            self.smuggling = {v: old.get(v, 0.0) for v in variants}
        dns = spec.dns_checks
        checks = [str(c) for c in dns.checks] if dns is not None else []
        self.dns = {c: self.dns.get(c, (0.0, 0.0)) for c in checks}
        # As the dnsbl check names them (no trailing dot): its verdicts match by name.
        zones = [z.strip().rstrip(".") for z in dns.dnsbl_zones] if dns is not None else []
        if DnsCheck.DNSBL not in checks:
            zones = []
        self.dnsbl = {zone: self.dnsbl.get(zone, 0.0) for zone in zones}
        if DnsCheck.DMARC not in checks:
            self.dmarc = None
        if DnsCheck.MTA_STS not in checks:
            self.mta_sts = None

    def record_policy(self, result: RunResult) -> None:
        """Set the policy series from one finished run."""
        accepted = 1.0 if result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY else 0.0
        for check in self.violations:
            self.violations[check] = accepted
        if self.smuggling is None:
            return
        for variant in self.smuggling:
            self.smuggling[variant] = 0.0  # not tried (the run stopped first): not taken
        for verdict in result.smuggling:
            if verdict.variant in self.smuggling:  # the probe's variants: a bounded label
                self.smuggling[verdict.variant] = 1.0 if verdict.accepted else 0.0

    def record_dns(self, report: DnsReport) -> None:
        """Set the DNS series from one run of the probe's DNS checks (configured checks only)."""
        finished = report.started_at.timestamp() + report.duration_seconds
        for result in report.results:
            if result.check not in self.dns:
                continue
            self.dns[result.check] = (1.0 if result.ok else 0.0, finished)
            if result.check == DnsCheck.DNSBL:
                for zone, listed in result.listed:
                    if zone in self.dnsbl:
                        self.dnsbl[zone] = 1.0 if listed else 0.0
            elif result.check == DnsCheck.DMARC:
                self.dmarc = _word(result.policy, DMARC_POLICIES)
            elif result.check == DnsCheck.MTA_STS:
                self.mta_sts = _word(result.policy, MTA_STS_MODES)

    def bounced(self, bounce: Bounce) -> None:
        """Count one delivery status notification."""
        key = (bounce.action, bounce.status_class)
        self.bounces[key] = self.bounces.get(key, 0.0) + 1
        self.last_bounce = bounce.status

    def cumulative(self) -> list[float]:
        total, out = 0.0, []
        for count in self.buckets:
            total += count
            out.append(total)
        out.append(self.delivery_count)
        return out


@dataclass
class _Client:
    """The current values of one OAuth client's series."""

    expiry: float = 0.0
    requests: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOKEN_RESULTS, 0.0))
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(TOKEN_BUCKETS))
    """Observations per bucket (not cumulative); ``+Inf`` is ``count``."""
    seconds_sum: float = 0.0
    count: float = 0.0

    def cumulative(self) -> list[float]:
        total, out = 0.0, []
        for count in self.buckets:
            total += count
            out.append(total)
        out.append(self.count)
        return out


class Metrics:
    """The exporter's metrics, how a run result updates them, and their exposition.

    It is also the :class:`smtp_probe.oauth.cache.TokenObserver` the daemon
    hands every configured token cache.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._probes: dict[str, _Probe] = {}
        self._text: dict[str, dict[_Family, str]] = {}
        self._clients: dict[str, _Client] = {}
        self._client_text: dict[str, tuple[str, ...]] = {}
        """Client name -> its sample lines of each :data:`PER_CLIENT` family, in order."""
        self._client_lock = threading.Lock()
        self._reload_ok = 0.0
        self._reload_time = 0.0
        self._waiting = dict.fromkeys(slots.LIMITS, 0.0)
        self._waits = dict.fromkeys(slots.LIMITS, 0.0)
        registry.register(self)

    # ----------------------------------------------------------------- updates

    def configure(self, probes: Iterable[ScheduledProbe]) -> None:
        """Create the series of new probes, update configured values, drop removed probes."""
        wanted = {p.spec.name: p for p in probes}
        for name in self._probes.keys() - wanted.keys():
            del self._probes[name]
            del self._text[name]
        for name, probe in wanted.items():
            state = self._probes.get(name)
            if state is None:
                state = self._probes[name] = _Probe(probe.interval, probe.spec.timeout)
            state.interval, state.timeout = probe.interval, probe.spec.timeout
            if not probe.spec.reflector:
                state.legs = None
            elif state.legs is None:
                state.legs = dict.fromkeys(REFLECTOR_LEGS, 0.0)
            state.configure_policy(probe.spec)
            self._render(name)

    def configure_oauth(self, clients: Mapping[str, float | None]) -> None:
        """Create the series of new OAuth clients, drop removed ones, set each token's expiry.

        ``clients`` maps every configured client to the expiry of the token its
        cache holds now (``None``: no token yet, or one that did not say), so
        a client whose cache a reload replaced stops showing the old token.
        Request counts of a kept client carry on.
        """
        with self._client_lock:
            for name in self._clients.keys() - clients.keys():
                del self._clients[name]
                del self._client_text[name]
            for name, expires_at in clients.items():
                state = self._clients.setdefault(name, _Client())
                state.expiry = expires_at or 0.0
                self._client_text[name] = _client_lines(name, state)

    def token_requested(
        self, client: str, result: str, seconds: float, expires_at: float | None
    ) -> None:
        """Count one token request of ``client`` (``TokenObserver``); thread-safe.

        A success sets the expiry gauge (0 when the token did not say); a
        failure leaves it at the token still held. Requests of a client that
        is not configured (any more) are not counted.
        """
        with self._client_lock:
            state = self._clients.get(client)
            if state is None:
                return
            label = result if result in state.requests else _UNCLASSIFIED
            state.requests[label] += 1
            if result == "success":
                state.expiry = expires_at or 0.0
            seconds = max(0.0, seconds)
            state.seconds_sum += seconds
            state.count += 1
            for index, bound in enumerate(TOKEN_BUCKETS):
                if seconds <= bound:
                    state.buckets[index] += 1
                    break
            self._client_text[client] = _client_lines(client, state)

    def record(self, result: RunResult) -> None:
        """Account for one finished scheduled run of a configured probe."""
        state = self._probes.get(result.probe)
        if state is None:
            return  # removed by a reload while it ran: its series are gone
        finished = result.started_at.timestamp() + result.duration_seconds
        state.runs += 1
        state.outcomes[result.outcome] += 1
        if result.stage is not None:
            state.failures[result.stage] += 1
        state.success = 1.0 if result.success else 0.0
        if result.success:
            state.last_success = finished
        state.last_run = finished
        state.duration = result.duration_seconds
        state.reply_code = float(result.smtp.reply_code or 0)
        timings = result.smtp.stage_seconds
        for stage in SMTP_STAGES:
            state.stage_seconds[stage] = timings.get(stage, 0.0)
        state.stage_seconds[Stage.DELIVERY] = result.delivery_seconds or 0.0
        if state.legs is not None:
            legs = result.reflector
            state.legs["outbound"] = legs.outbound_seconds if legs else 0.0
            state.legs["return"] = legs.return_seconds if legs else 0.0
        imap_tls = result.arrival.tls if result.arrival is not None else None
        for leg, facts in (("smtp", result.smtp.tls), ("imap", imap_tls)):
            if facts is not None:
                state.tls[leg] = (
                    facts.not_after or 0.0,
                    facts.version or "unknown",
                    facts.cipher or "unknown",
                )
        # Replaced whole every run, so hops of an earlier, longer route vanish.
        hops = result.arrival.hops if result.arrival is not None else ()
        state.hops, state.hop_rows = len(hops), fold_hops(hops)
        verdicts = result.arrival.verdicts if result.arrival is not None else None
        if verdicts is not None:
            # Replaced whole: a method's earlier result series goes with it.
            state.auth = (
                {m: metric_result(m, verdicts.result(m)) for m in METHODS}
                if verdicts.authserv_id
                else {}
            )
            score = verdicts.spam_score
            state.spam = None if score is None else (score, verdicts.spam_threshold)
        for bounce in result.bounces:
            state.bounced(bounce)
        state.record_policy(result)
        delivered = result.outcome in (Outcome.DELIVERED, Outcome.JUNK)
        if result.delivery_seconds is not None and delivered:
            seconds = result.delivery_seconds
            state.delivery_sum += seconds
            state.delivery_count += 1
            for index, bound in enumerate(DELIVERY_BUCKETS):
                if seconds <= bound:
                    state.buckets[index] += 1
                    break
        self._render(result.probe)

    def record_dns(self, report: DnsReport) -> None:
        """Account for one run of a configured probe's DNS checks (its ``dns_interval`` job).

        Only the checks and DNSBL zones the probe is configured with are
        taken (their series exist from :meth:`configure` on); a report of a
        probe a reload removed is dropped. The DMARC policy and MTA-STS mode
        series are replaced whole: the one the check read now, or none.
        """
        state = self._probes.get(report.probe)
        if state is None:
            return
        state.record_dns(report)
        self._render(report.probe)

    def run_started(self, probe: str) -> None:
        """A scheduled run of ``probe`` began (``smtp_probe_in_flight`` + 1)."""
        self._in_flight(probe, 1)

    def run_ended(self, probe: str) -> None:
        """A scheduled run of ``probe`` ended (``smtp_probe_in_flight`` - 1)."""
        self._in_flight(probe, -1)

    def late_message(self, probe: str) -> None:
        """Count a message that arrived after its run gave up."""
        state = self._probes.get(probe)
        if state is not None:
            state.late += 1
            self._text[probe][LATE] = _lines(LATE, probe, state)

    def foreign_leftover(self, probe: str) -> None:
        """Count another instance's old leftover (message, reply or report) that was swept."""
        state = self._probes.get(probe)
        if state is not None:
            state.foreign += 1
            self._text[probe][FOREIGN] = _lines(FOREIGN, probe, state)

    def late_bounce(self, probe: str, bounce: Bounce) -> None:
        """Count a delivery status notification that came after its run ended."""
        state = self._probes.get(probe)
        if state is not None:
            state.bounced(bounce)
            self._text[probe][BOUNCES] = _lines(BOUNCES, probe, state)
            self._text[probe][LAST_BOUNCE] = _lines(LAST_BOUNCE, probe, state)

    def reloaded(self, *, ok: bool, at: float) -> None:
        """Record the result of a configuration (re)load."""
        self._reload_ok = 1.0 if ok else 0.0
        if ok:
            self._reload_time = at

    def slot_wait_started(self, limit: str) -> None:
        """A run began waiting for a ``limit`` slot (``SlotObserver``; on the event loop)."""
        if limit in self._waiting:
            self._waiting[limit] += 1
            self._waits[limit] += 1

    def slot_wait_ended(self, limit: str) -> None:
        """A run stopped waiting for a ``limit`` slot (``SlotObserver``)."""
        if limit in self._waiting:
            self._waiting[limit] = max(0.0, self._waiting[limit] - 1)

    def _in_flight(self, probe: str, change: int) -> None:
        state = self._probes.get(probe)
        if state is not None:
            state.in_flight = max(0.0, state.in_flight + change)
            self._text[probe][IN_FLIGHT] = _lines(IN_FLIGHT, probe, state)

    def _render(self, probe: str) -> None:
        self._text[probe] = _probe_lines(probe, self._probes[probe])

    # ----------------------------------------------------------------- reads

    def last_success(self, probe: str) -> float | None:
        """Unix time ``probe``'s last successful scheduled run finished; ``None`` if none yet."""
        state = self._probes.get(probe)
        return state.last_success if state is not None and state.last_success else None

    def runs_in_flight(self, probe: str) -> int:
        """Scheduled runs of ``probe`` in progress now (0 for an unknown probe)."""
        state = self._probes.get(probe)
        return int(state.in_flight) if state is not None else 0

    # ----------------------------------------------------------------- exposition

    def render(self, *, openmetrics: bool = False) -> bytes:
        """The exposition of every series: Prometheus text 0.0.4, or OpenMetrics 1.0."""
        out: list[str] = []
        texts = list(self._text.values())
        for family in PER_PROBE:
            out.append(_header(family, openmetrics))
            out.extend(text[family] for text in texts)
        with self._client_lock:
            client_texts = list(self._client_text.values())
        for index, family in enumerate(PER_CLIENT):
            out.append(_header(family, openmetrics))
            out.extend(text[index] for text in client_texts)
        for family, value in ((RELOAD_OK, self._reload_ok), (RELOAD_TIME, self._reload_time)):
            out.append(_header(family, openmetrics))
            out.append(f"{family.name} {_number(value)}\n")
        for family, values, suffix in (
            (RUNS_WAITING, self._waiting, ""),
            (SLOT_WAITS, self._waits, "_total"),
        ):
            out.append(_header(family, openmetrics))
            out.extend(
                f'{family.name}{suffix}{{limit="{limit}"}} {_number(value)}\n'
                for limit, value in values.items()
            )
        out.append(_header(BUILD_INFO, openmetrics))
        out.append(f'{BUILD_INFO.name}{{version="{_escape(__version__)}"}} 1.0\n')
        if openmetrics:
            out.append("# EOF\n")
        return "".join(out).encode()

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (lets the registry check names cheaply)."""
        for family in (
            *PER_PROBE,
            *PER_CLIENT,
            RELOAD_OK,
            RELOAD_TIME,
            RUNS_WAITING,
            SLOT_WAITS,
            BUILD_INFO,
        ):
            yield _empty(family)

    def collect(self) -> Iterator[Metric]:
        """The same values as :meth:`render`, as prometheus_client families."""
        families = {family: _empty(family) for family in PER_PROBE}
        histogram = HistogramMetricFamily(DELIVERY.name, DELIVERY.help, labels=["probe"])
        families[DELIVERY] = histogram
        for name, state in self._probes.items():
            for family, labels, value in _samples(name, state):
                metric = families[family]
                if isinstance(metric, GaugeMetricFamily | CounterMetricFamily):
                    metric.add_metric(labels, value)
            histogram.add_metric(
                [name], list(zip(_LE, state.cumulative(), strict=True)), state.delivery_sum
            )
        yield from families.values()
        yield from self._collect_clients()
        yield GaugeMetricFamily(RELOAD_OK.name, RELOAD_OK.help, value=self._reload_ok)
        yield GaugeMetricFamily(RELOAD_TIME.name, RELOAD_TIME.help, value=self._reload_time)
        waiting = GaugeMetricFamily(RUNS_WAITING.name, RUNS_WAITING.help, labels=["limit"])
        waits = CounterMetricFamily(SLOT_WAITS.name, SLOT_WAITS.help, labels=["limit"])
        for limit in slots.LIMITS:
            waiting.add_metric([limit], self._waiting[limit])
            waits.add_metric([limit], self._waits[limit])
        yield from (waiting, waits)
        build = GaugeMetricFamily(BUILD_INFO.name, BUILD_INFO.help, labels=["version"])
        build.add_metric([__version__], 1.0)
        yield build

    def _collect_clients(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(TOKEN_REQUESTS.name, TOKEN_REQUESTS.help,
                                       labels=["client", "result"])  # fmt: skip
        expiry = GaugeMetricFamily(TOKEN_EXPIRY.name, TOKEN_EXPIRY.help, labels=["client"])
        duration = HistogramMetricFamily(TOKEN_DURATION.name, TOKEN_DURATION.help,
                                         labels=["client"])  # fmt: skip
        with self._client_lock:
            for name, state in self._clients.items():
                for result, count in state.requests.items():
                    requests.add_metric([name, result], count)
                expiry.add_metric([name], state.expiry)
                duration.add_metric(
                    [name],
                    list(zip(_TOKEN_LE, state.cumulative(), strict=True)),
                    state.seconds_sum,
                )
        yield from (requests, expiry, duration)


def _samples(probe: str, state: _Probe) -> Iterator[tuple[_Family, list[str], float]]:
    """Every (family, label values, value) of one probe but the histogram."""
    yield SUCCESS, [probe], state.success
    yield RUNS, [probe], state.runs
    for stage, count in state.failures.items():
        yield FAILURES, [probe, stage.value], count
    for outcome, count in state.outcomes.items():
        yield OUTCOMES, [probe, outcome.value], count
    yield DELIVERY, [probe], 0.0
    yield DURATION, [probe], state.duration
    for stage, seconds in state.stage_seconds.items():
        yield STAGE_DURATION, [probe, stage.value], seconds
    yield REPLY_CODE, [probe], state.reply_code
    yield LAST_RUN, [probe], state.last_run
    yield LAST_SUCCESS, [probe], state.last_success
    yield INTERVAL, [probe], state.interval
    yield TIMEOUT, [probe], state.timeout
    yield LATE, [probe], state.late
    yield FOREIGN, [probe], state.foreign
    yield IN_FLIGHT, [probe], state.in_flight
    for leg, seconds in (state.legs or {}).items():
        yield REFLECTOR_LEG, [probe, leg], seconds
    for leg, (expiry, version, cipher) in sorted(state.tls.items()):
        yield TLS_EXPIRY, [probe, leg], expiry
        yield TLS_INFO, [probe, leg, version, cipher], 1.0
    yield HOPS, [probe], float(state.hops)
    for hop, by, with_, delay in state.hop_rows:
        if delay is not None:
            yield HOP_DELAY, [probe, hop], delay
        yield HOP_INFO, [probe, hop, by, with_], 1.0

    for method, result in state.auth.items():
        yield AUTH_RESULT, [probe, method, result], 1.0
    if state.spam is not None:
        score, threshold = state.spam
        yield SPAM_SCORE, [probe], score
        if threshold is not None:
            yield SPAM_THRESHOLD, [probe], threshold
    for (action, status_class), count in sorted(state.bounces.items()):
        yield BOUNCES, [probe, action, status_class], count
    if state.last_bounce is not None:
        yield LAST_BOUNCE, [probe, state.last_bounce], 1.0
    for check, violated in state.violations.items():
        yield POLICY_VIOLATION, [probe, check], violated
    for variant, accepted in sorted((state.smuggling or {}).items()):
        yield SMUGGLING_ACCEPTED, [probe, variant], accepted
    for check, (ok, finished) in state.dns.items():
        yield DNS_SUCCESS, [probe, check], ok
        yield DNS_TIMESTAMP, [probe, check], finished
    for zone, listed in state.dnsbl.items():
        yield DNSBL_LISTED, [probe, zone], listed
    if state.dmarc is not None:
        yield DMARC_POLICY, [probe, state.dmarc], 1.0
    if state.mta_sts is not None:
        yield MTA_STS_MODE, [probe, state.mta_sts], 1.0


def _word(value: str | None, words: tuple[str, ...]) -> str | None:
    """``value`` as a label from ``words`` (``other`` for anything else); ``None`` stays."""
    if value is None:
        return None
    word = value.strip().lower()
    return word if word in words else "other"


def fold_hops(hops: tuple[Hop, ...]) -> tuple[tuple[str, str, str, float | None], ...]:
    """Hops as (hop label, by, with, delay) rows, at most :data:`MAX_HOPS` of them.

    Hops from index ``MAX_HOPS - 1`` on become one row: its delay is the
    sum of theirs (``None`` unless each has one: a sum missing a hop would
    understate it), its ``by`` and ``with`` are the last hop's. A missing
    ``by`` or ``with`` is ``unknown``.
    """
    rows = [
        (str(index), hop.by or "unknown", hop.with_ or "unknown", hop.delay_seconds)
        for index, hop in enumerate(hops[: MAX_HOPS - 1])
    ]
    rest = hops[MAX_HOPS - 1 :]
    if rest:
        delays = [hop.delay_seconds for hop in rest]
        total = None if None in delays else sum(d for d in delays if d is not None)
        last = rest[-1]
        rows.append((str(MAX_HOPS - 1), last.by or "unknown", last.with_ or "unknown", total))
    return tuple(rows)


_LABEL_NAMES: Final = {FAILURES: ("probe", "stage"), OUTCOMES: ("probe", "outcome"),
                       STAGE_DURATION: ("probe", "stage"),
                       REFLECTOR_LEG: ("probe", "leg"), TLS_EXPIRY: ("probe", "leg"),
                       TLS_INFO: ("probe", "leg", "version", "cipher"),
                       HOP_DELAY: ("probe", "hop"),
                       HOP_INFO: ("probe", "hop", "by", "with"),
                       AUTH_RESULT: ("probe", "method", "result"),
                       BOUNCES: ("probe", "action", "status_class"),
                       LAST_BOUNCE: ("probe", "status"),
                       POLICY_VIOLATION: ("probe", "check"),
                       SMUGGLING_ACCEPTED: ("probe", "variant"),
                       DNS_SUCCESS: ("probe", "check"), DNS_TIMESTAMP: ("probe", "check"),
                       DNSBL_LISTED: ("probe", "zone"), DMARC_POLICY: ("probe", "policy"),
                       MTA_STS_MODE: ("probe", "mode")}  # fmt: skip


def _probe_lines(probe: str, state: _Probe) -> dict[_Family, str]:
    """The sample lines of every :data:`PER_PROBE` family of one probe, in one pass.

    Done after every run: one walk over the probe's samples, not one per family.
    """
    label = f'probe="{_escape(probe)}"'
    grouped: dict[_Family, list[str]] = {family: [] for family in PER_PROBE}
    for family, labels, value in _samples(probe, state):
        lines = grouped.get(family)
        if lines is not None and family is not DELIVERY:
            lines.append(_sample_line(family, label, labels, value))
    text = {family: "".join(lines) for family, lines in grouped.items()}
    text[DELIVERY] = _lines(DELIVERY, probe, state)
    return text


def _sample_line(family: _Family, label: str, labels: list[str], value: float) -> str:
    """One sample line of ``family``; ``label`` is the escaped ``probe="..."`` pair."""
    sample = family.name + ("_total" if family.kind == "counter" else "")
    other = _LABEL_NAMES.get(family, ("probe",))[1:]
    pairs = [label]
    pairs.extend(f'{name}="{_escape(text)}"' for name, text in zip(other, labels[1:], strict=True))
    # Label names in alphabetical order, as prometheus_client writes them.
    pairs.sort()
    return f"{sample}{{{','.join(pairs)}}} {_number(value)}\n"


def _lines(family: _Family, probe: str, state: _Probe) -> str:
    """The sample lines of one family for one probe, in the text format."""
    label = f'probe="{_escape(probe)}"'
    if family is DELIVERY:
        name = family.name
        lines = [
            f'{name}_bucket{{le="{le}",{label}}} {_number(count)}\n'
            for le, count in zip(_LE, state.cumulative(), strict=True)
        ]
        lines.append(f"{name}_count{{{label}}} {_number(state.delivery_count)}\n")
        lines.append(f"{name}_sum{{{label}}} {_number(state.delivery_sum)}\n")
        return "".join(lines)
    return "".join(
        _sample_line(family, label, labels, value)
        for fam, labels, value in _samples(probe, state)
        if fam is family
    )


def _client_lines(client: str, state: _Client) -> tuple[str, ...]:
    """The sample lines of one client for each :data:`PER_CLIENT` family, in the text format."""
    label = f'client="{_escape(client)}"'
    requests = "".join(
        f'{TOKEN_REQUESTS.name}_total{{{label},result="{result}"}} {_number(count)}\n'
        for result, count in state.requests.items()
    )
    expiry = f"{TOKEN_EXPIRY.name}{{{label}}} {_number(state.expiry)}\n"
    name = TOKEN_DURATION.name
    duration = "".join(
        f'{name}_bucket{{{label},le="{le}"}} {_number(count)}\n'
        for le, count in zip(_TOKEN_LE, state.cumulative(), strict=True)
    )
    duration += f"{name}_count{{{label}}} {_number(state.count)}\n"
    duration += f"{name}_sum{{{label}}} {_number(state.seconds_sum)}\n"
    return requests, expiry, duration


def _header(family: _Family, openmetrics: bool) -> str:
    kind = family.kind
    name = family.name
    if not openmetrics and kind == "counter":
        name += "_total"  # the classic format names counters by their samples
    return f"# HELP {name} {family.help}\n# TYPE {name} {kind}\n"


def _empty(
    family: _Family,
) -> GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily:
    labels = list(_LABEL_NAMES.get(family, ("probe",))) if family in PER_PROBE else None
    if family is BUILD_INFO:
        labels = ["version"]
    elif family in (RUNS_WAITING, SLOT_WAITS):
        labels = ["limit"]
    elif family in PER_CLIENT:
        labels = ["client", "result"] if family is TOKEN_REQUESTS else ["client"]
    if family.kind == "counter":
        return CounterMetricFamily(family.name, family.help, labels=labels)
    if family.kind == "histogram":
        return HistogramMetricFamily(family.name, family.help, labels=labels)
    return GaugeMetricFamily(family.name, family.help, labels=labels)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
