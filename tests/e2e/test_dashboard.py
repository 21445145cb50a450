"""The shipped Grafana dashboard, checked for provisioning and against a real Prometheus.

Structure (no network): the JSON loads, has no ``__inputs``/``__requires``
(file provisioning does not substitute them), every panel and query goes
through the ``${datasource}`` variable, ids are unique, and every metric a
query names is one the exporter really exports.

Queries (end to end): the daemon runs three probes against the real Postfix
+ Dovecot — two healthy routes and one whose recipient is refused — and a
real Prometheus scrapes it. Every panel query, every variable query and every
annotation is evaluated through Prometheus' HTTP API with the template
variables substituted as Grafana would; any error fails, every panel must
return data, and the core panels must show what really happened.

The TLS row must show every leg that spoke TLS with the stack's certificate.

The "OAuth tokens" row has its own case: the mail-stack daemon logs in with
passwords, so its panels are checked against a daemon (the real
:class:`~smtp_probe.app.Daemon` and HTTP server, in this process) whose two
OAuth clients' token caches stand in front of small token endpoints of our
own, one issuing short-lived tokens and one refusing the client; a second
real Prometheus scrapes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import subprocess
import threading
import time
import urllib.error
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from smtp_probe.app import Daemon as InProcessDaemon
from smtp_probe.config.runtime import Config, ServerSettings
from smtp_probe.metrics import Metrics
from smtp_probe.oauth.cache import Fetched, TokenCache
from smtp_probe.probe.credentials import TokenError
from smtp_probe.secret import Secret
from smtp_probe.server.http import HttpServer
from tests.support.daemon_proc import Daemon, start_daemon, stop_daemon
from tests.support.mailstack import MailStack
from tests.support.prom import Prometheus, PrometheusError

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "smtp-probe.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PROBES = ("submission", "mx", "refused")
JOB = "smtp-probe"
"""The job name tests/support/prom.py scrapes the daemon under."""
RANGE_PANEL_TYPES = {"timeseries", "state-timeline", "heatmap", "barchart", "trend"}
RANGE_SECONDS = 60
GRAFANA_BUILTINS = {
    "__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms",
}  # fmt: skip
CORE_METRICS = {
    "smtp_probe_success",
    "smtp_probe_delivery_duration_seconds_bucket",
    "smtp_probe_failures_total",
    "smtp_probe_outcomes_total",
    "smtp_probe_smtp_reply_code",
    "smtp_probe_last_success_timestamp_seconds",
    "smtp_probe_in_flight",
    "smtp_probe_stage_duration_seconds",
    "smtp_probe_late_messages_total",
    "smtp_probe_config_last_reload_successful",
    "smtp_probe_oauth_token_requests_total",
    "smtp_probe_oauth_token_expiry_timestamp_seconds",
    "smtp_probe_oauth_token_request_duration_seconds_bucket",
    "smtp_probe_hops",
    "smtp_probe_hop_delay_seconds",
    "smtp_probe_hop_info",
    "up",
}
"""Metrics the dashboard must show somewhere (the operator's questions)."""
OAUTH_ROW = "OAuth tokens"
TOKEN_LIFETIME = 4.0
"""Seconds the test endpoint's tokens live: several renewals within a minute."""

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")
_METRIC = re.compile(r"\b(smtp_probe_\w+|up)\b")


@dataclass(frozen=True)
class Query:
    """One target of one panel."""

    panel: str
    panel_type: str
    ref: str
    expr: str
    instant: bool
    range: bool


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as file:
        loaded: dict[str, Any] = json.load(file)
    return loaded


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[Query]:
    out: list[Query] = []
    for panel in data_panels(dashboard):
        for target in panel.get("targets", []):
            instant = bool(target.get("instant", False))
            ranged = bool(target.get("range", not instant))
            out.append(
                Query(panel["title"], panel["type"], target["refId"], target["expr"],
                      instant, ranged)
            )  # fmt: skip
    return out


def oauth_panel_titles(dashboard: dict[str, Any]) -> set[str]:
    """Titles of the panels in the "OAuth tokens" row (a collapsed row holds its panels)."""
    (row,) = [p for p in dashboard["panels"] if p["type"] == "row" and p["title"] == OAUTH_ROW]
    return {panel["title"] for panel in row["panels"]}


def row_panel_titles(dashboard: dict[str, Any], title: str) -> set[str]:
    """Titles of the panels in the row called ``title``."""
    (row,) = [p for p in dashboard["panels"] if p["type"] == "row" and p["title"] == title]
    return {panel["title"] for panel in row["panels"]}


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    for var in dashboard["templating"]["list"]:
        if var["name"] == name:
            found: dict[str, Any] = var
            return found
    raise AssertionError(f"no template variable {name!r}")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana template variables the way Grafana would for these values.

    Raises:
        AssertionError: the expression uses a variable the dashboard does not define.
    """

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise AssertionError(f"undefined variable ${name} in {expr}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def exported_metric_names() -> set[str]:
    """Names of every sample the exporter can expose, from its real metric definitions."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


# --------------------------------------------------------------------------- structure


def test_dashboard_is_provisionable_as_a_file() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    dashboard = load_dashboard()
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    assert "DS_PROMETHEUS" not in text
    assert dashboard["id"] is None
    assert dashboard["uid"] == "smtp-probe-overview"
    assert 8 <= len(dashboard["uid"]) <= 40
    assert dashboard["schemaVersion"] == 39
    assert isinstance(dashboard["refresh"], str)
    datasource = variable(dashboard, "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    panels = data_panels(dashboard)
    assert len(panels) >= 15
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: duplicate refIds"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target.get("expr", "").strip(), f"{panel['title']} {target['refId']}: no expr"
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]
    for annotation in dashboard["annotations"]["list"]:
        if not annotation.get("builtIn"):
            assert annotation["datasource"] == DATASOURCE, annotation["name"]


def test_panels_are_laid_out_with_unique_ids_titles_and_descriptions() -> None:
    dashboard = load_dashboard()
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    titles = [p["title"] for p in data_panels(dashboard)]
    assert len(titles) == len(set(titles)), "duplicate panel titles"
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    for panel in data_panels(dashboard):
        assert len(panel.get("description", "")) >= 40, f"{panel['title']}: say what it means"


def test_probe_variable_lists_every_probe_and_allows_all() -> None:
    probe = variable(load_dashboard(), "probe")
    assert probe["type"] == "query"
    assert probe["multi"] is True
    assert probe["includeAll"] is True
    assert probe["definition"] == "label_values(smtp_probe_success, probe)"
    assert probe["query"]["query"] == probe["definition"]


def test_queries_use_only_defined_variables_and_exported_metrics() -> None:
    dashboard = load_dashboard()
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_BUILTINS
    exported = exported_metric_names() | {"up"}
    used: set[str] = set()
    exprs = [q.expr for q in queries(dashboard)] + [
        a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a
    ]
    for expr in exprs:
        substitute(expr, dict.fromkeys(defined, "x"))
        names = set(_METRIC.findall(expr))
        assert names, f"no metric in {expr}"
        assert names <= exported, f"{expr}: not exported: {names - exported}"
        used |= names
    missing = CORE_METRICS - used
    assert not missing, f"not shown anywhere: {missing}"


def test_rate_panels_use_the_rate_interval_and_a_minimum_window() -> None:
    for panel in data_panels(load_dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            if ("rate(" in expr or "increase(" in expr) and "$__range" not in expr:
                assert "[$__rate_interval]" in expr, f"{panel['title']}: {expr}"
                assert panel.get("interval"), f"{panel['title']}: set a Min interval"


def test_provisioning_files_load_the_dashboard_directory_and_a_prometheus() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/smtp-probe.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"].startswith("http")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def daemon(mailstack: MailStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The daemon as a real process: two healthy probes and one refused at RCPT TO."""
    running = start_daemon(mailstack, tmp_path_factory.mktemp("dashboard"), list(PROBES))
    yield running
    # Let runs in flight finish and delete their messages before the next test's checks.
    running.proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        running.proc.wait(40)
    stop_daemon(running)


@pytest.fixture(scope="module")
def prometheus(daemon: Daemon) -> Iterator[Prometheus]:
    server = Prometheus([f"127.0.0.1:{daemon.port}"], job=JOB)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def warmed(prometheus: Prometheus, oauth_scraped: OAuthScraped) -> Prometheus:
    """Prometheus once it has itself watched every probe finish three more scheduled runs.

    Counting from the first scrape, not from zero: Prometheus may start after the
    daemon's first runs, and rate()/increase() need samples from before and after.
    (``oauth_scraped`` is only started here, so that the OAuth row's Prometheus
    warms up during this wait rather than after it.)
    """
    wait_for_runs(prometheus, PROBES, first_timeout=20)
    return prometheus


def wait_for_runs(prometheus: Prometheus, probes: Iterable[str], *, first_timeout: float) -> None:
    """Wait until Prometheus itself has seen each of ``probes`` finish three more runs.

    Raises:
        AssertionError: not within ``first_timeout`` s for the first scrape
            of every probe, or 40 s more for the three runs.
    """
    names = set(probes)
    first = prometheus.wait_for(
        "smtp_probe_runs_total", lambda r: set(r) == names, timeout=first_timeout
    )
    prometheus.wait_for(
        "smtp_probe_runs_total",
        lambda r: all(r.get(name, 0) >= first[name] + 3 for name in names),
        timeout=40,
    )


def grafana_values(probe: str = "(" + "|".join(PROBES) + ")") -> dict[str, str]:
    """What Grafana would put in for the variables: the probes selected, a 1-minute range.

    With several probes picked, Grafana writes ``$probe`` as ``(a|b|c)``; with
    "All", as the variable's ``allValue``.
    """
    return {
        "datasource": "unused",
        "job": JOB,
        "probe": probe,
        "__interval": "1s",
        "__interval_ms": "1000",
        "__rate_interval": "20s",
        "__range": f"{RANGE_SECONDS}s",
        "__range_s": str(RANGE_SECONDS),
        "__range_ms": str(RANGE_SECONDS * 1000),
    }


def evaluate(prometheus: Prometheus, path: str, **params: str) -> tuple[list[Any], str]:
    """The result of one API call, or an error message."""
    try:
        data = prometheus.api(path, **params)
    except PrometheusError as exc:
        return [], str(exc)
    except urllib.error.HTTPError as exc:
        return [], f"HTTP {exc.code}: {exc.read().decode(errors='replace')}"
    result: list[Any] = data["result"]
    return result, ""


def by_labels(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in result
    }


Results = dict[tuple[str, str], list[dict[str, Any]]]
"""Instant query results by (panel title, query ref)."""


def panel_results(
    prometheus: Prometheus, dashboard: dict[str, Any], titles: set[str], values: dict[str, str]
) -> tuple[Results, list[str]]:
    """Run every query of the panels ``titles`` as Grafana would: (results, problems).

    A problem is a query that fails or returns no data, instant or (for
    range panels) over the last :data:`RANGE_SECONDS`; a query whose
    instant evaluation fails has no result and is not run as a range.
    """
    now = time.time()
    results: Results = {}
    problems: list[str] = []
    for query in queries(dashboard):
        if query.panel not in titles:
            continue
        expr = substitute(query.expr, values)
        where = f"{query.panel} [{query.ref}] {expr}"
        result, error = evaluate(prometheus, "/api/v1/query", query=expr, time=f"{now:.3f}")
        if error:
            problems.append(f"{where}: {error}")
            continue
        if not result:
            problems.append(f"{where}: no data (instant)")
        results[(query.panel, query.ref)] = result
        if query.range or query.panel_type in RANGE_PANEL_TYPES:
            series, error = evaluate(
                prometheus, "/api/v1/query_range", query=expr,
                start=f"{now - RANGE_SECONDS:.3f}", end=f"{now:.3f}", step="1",
            )  # fmt: skip
            if error:
                problems.append(f"{where}: {error} (range)")
            elif not any(s["values"] for s in series):
                problems.append(f"{where}: no data (range)")
    return results, problems


@contextlib.contextmanager
def daemon_thread(
    configure: Callable[[AsyncExitStack], Awaitable[Config]], name: str
) -> Iterator[int]:
    """The real daemon and HTTP server, in this process on a thread; yields the HTTP port.

    ``configure`` builds the config inside the thread's event loop; what it
    enters on the exit stack (a sandbox, filter hops) lives until the daemon
    has stopped.

    Raises:
        AssertionError: the daemon did not start within 30 s, or failed.
    """
    started = threading.Event()
    stop = threading.Event()
    bound: list[int] = []
    failure: list[BaseException] = []

    async def serve() -> None:
        async with AsyncExitStack() as stack:
            daemon = InProcessDaemon(await configure(stack))
            http = HttpServer(daemon, ServerSettings("127.0.0.1", 0))
            await http.start()
            await daemon.start()
            bound.append(http.bound.port)
            started.set()
            try:
                await asyncio.to_thread(stop.wait)
            finally:
                await daemon.stop()
                await http.stop()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
            started.set()

    server = threading.Thread(target=run, name=name)
    server.start()
    try:
        assert started.wait(30), "the daemon did not start"
        assert not failure, failure
        yield bound[0]
    finally:
        stop.set()
        server.join(30)
    assert not failure, failure


@pytest.mark.parametrize("selection", ["every-probe", "all"])
def test_every_panel_query_runs_and_returns_data(warmed: Prometheus, selection: str) -> None:
    dashboard = load_dashboard()
    if selection == "all":
        values = grafana_values(variable(dashboard, "probe")["allValue"])
    else:
        values = grafana_values()
    elsewhere = oauth_panel_titles(dashboard)  # no OAuth here: see test_oauth_row_...
    # No Authentication-Results either: see tests/e2e/test_dashboard_verdicts.py.
    elsewhere |= row_panel_titles(dashboard, "Authentication and spam")
    # No policy probes or DNS checks either: see tests/e2e/test_dashboard_policy.py.
    elsewhere |= row_panel_titles(dashboard, "Policy and DNS")
    titles = {panel["title"] for panel in data_panels(dashboard)} - elsewhere
    instant_results, problems = panel_results(warmed, dashboard, titles, values)
    assert not problems, "\n".join(problems)
    check_core_panels(instant_results)
    check_tls_panels(instant_results)


def check_core_panels(results: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """The core panels show what really happened: two healthy routes, one refused."""

    def probes(title: str, ref: str = "A") -> dict[str, float]:
        return {k[0]: v for k, v in by_labels(results[(title, ref)], "probe").items()}

    assert probes("Delivery success (last run)") == {"submission": 1, "mx": 1, "refused": 0}
    assert probes("Failing probes") == {"": 1}
    since = probes("Time since last success")
    assert since["refused"] == -1, "a probe that never succeeded must read 'never' (-1)"
    assert 0 <= since["submission"] < 10
    assert 0 <= since["mx"] < 10
    assert probes("Last SMTP reply code") == {"submission": 250, "mx": 250, "refused": 550}
    assert probes("Runs in flight")[""] in {0, 1, 2, 3}
    for ref in ("A", "B", "C"):
        quantile = probes("Delivery latency (p50 / p90 / p99)", ref)
        assert 0 < quantile["submission"] <= 2.5, quantile
        assert 0 < quantile["mx"] <= 2.5, quantile
        assert math.isnan(quantile.get("refused", math.nan)), quantile
    failures = by_labels(results[("Failures by stage", "A")], "probe", "stage")
    assert failures.get(("refused", "rcpt_to"), 0) > 0, failures
    assert [k for k in failures if k[0] == "refused"] == [("refused", "rcpt_to")], failures
    assert all(v > 0 for v in failures.values()), "zero series are filtered out"
    outcomes = by_labels(results[("Outcomes", "A")], "outcome")
    assert {("delivered",), ("send_failed",)} <= set(outcomes), outcomes
    ratio = probes("Success ratio (time range)")
    assert 0.5 < ratio["submission"] <= 1
    assert ratio["refused"] == 0
    assert probes("Exporter up") == {"": 1}
    assert probes("Config reload") == {"": 1}
    for ref in "ABCDEFGH":
        assert set(probes("Probes", ref)) == set(PROBES), ref
    assert probes("Probes", "C")["refused"] == -1
    assert probes("Probes", "G") == dict.fromkeys(PROBES, 2.0)
    check_hop_panels(results)


def check_hop_panels(results: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """The Hops row shows the real chain: Postfix, then Dovecot LMTP; nothing for the refused."""
    count = by_labels(results[("Hop count (last run)", "A")], "probe")
    assert count == {("submission",): 2, ("mx",): 2, ("refused",): 0}, count
    delays = by_labels(results[("Per-hop delay (last run)", "A")], "probe", "hop")
    # Hop 0 has nothing before it; hop 1 (Postfix to Dovecot on one clock) is 0 s or so.
    assert set(delays) == {("submission", "1"), ("mx", "1")}, delays
    assert all(0 <= v < 10 for v in delays.values()), delays
    assert by_labels(results[("Hops of the last run", "B")], "probe", "hop") == delays
    info = by_labels(results[("Hops of the last run", "A")], "probe", "hop", "by", "with")
    assert {(p, h, b) for p, h, b, _ in info} == {
        (probe, hop, "mx.example.test") for probe in ("submission", "mx") for hop in "01"
    }, info
    assert {w for _, h, _, w in info if h == "1"} == {"LMTP"}, info
    assert all(w.startswith("ESMTP") for _, h, _, w in info if h == "0"), info


def check_tls_panels(results: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """The TLS row: every leg that spoke TLS, with the stack's certificate (it expires in 3000).

    ``refused`` never gets a message into the mailbox, so its IMAP leg has
    no facts (they come with the arrival).
    """
    legs = {("submission", "smtp"), ("submission", "imap"), ("mx", "smtp"), ("mx", "imap"),
            ("refused", "smtp")}  # fmt: skip
    days = by_labels(results[("Certificate days left", "A")], "probe", "leg")
    assert set(days) == legs, days
    assert all(300_000 < value < 400_000 for value in days.values()), days
    info = by_labels(results[("TLS version and cipher", "A")], "probe", "leg", "version", "cipher")
    assert {key[:2] for key in info} == legs, info
    assert all(key[2] in {"TLSv1.2", "TLSv1.3"} and key[3] for key in info), info
    assert set(info.values()) == {1.0}


def test_variable_queries_and_annotations_run(warmed: Prometheus) -> None:
    dashboard = load_dashboard()
    values = grafana_values()
    expected = {"probe": set(PROBES), "job": {JOB}}
    for name, wanted in expected.items():
        definition = variable(dashboard, name)["definition"]
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", definition)
        assert match, definition
        metric, label = match.groups()
        found = warmed.api(f"/api/v1/label/{label}/values", **{"match[]": metric})
        assert set(found) == wanted, (name, found)
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            expr = substitute(annotation["expr"], values)
            now = time.time()
            _, error = evaluate(
                warmed, "/api/v1/query_range", query=expr,
                start=f"{now - RANGE_SECONDS:.3f}", end=f"{now:.3f}", step="1",
            )  # fmt: skip
            assert not error, f"annotation {annotation['name']}: {error}"


# --------------------------------------------------------------------------- the OAuth row


class TokenEndpoint:
    """A token endpoint as a provider's fetch sees it.

    It issues tokens that live ``lifetime`` seconds or, with ``refuse``,
    answers ``invalid_client`` like Entra ID for a client whose secret expired.
    """

    def __init__(self, *, lifetime: float = TOKEN_LIFETIME, refuse: bool = False) -> None:
        self.lifetime = lifetime
        self.refuse = refuse
        self.issued = 0

    def __call__(self, timeout: float) -> Fetched:
        time.sleep(0.03)  # a request takes a little while: the duration panel has values
        if self.refuse:
            raise TokenError("token endpoint: invalid_client (HTTP 401)", "invalid_client")
        self.issued += 1
        return Fetched(Secret(f"access-token-{self.issued}"), time.time() + self.lifetime)


@dataclass
class OAuthDaemon:
    """The in-process daemon with two OAuth clients, its port and its token caches."""

    port: int
    caches: dict[str, TokenCache]


def ask_for_tokens(caches: dict[str, TokenCache], stop: threading.Event) -> None:
    """What probes do: ask each client for a token every few tenths of a second."""
    while not stop.wait(0.3):
        for cache in caches.values():
            with contextlib.suppress(TokenError):
                cache.token(2.0)


@pytest.fixture(scope="module")
def oauth_daemon() -> Iterator[OAuthDaemon]:
    """A daemon (no probes) with clients ``m365`` (tokens) and ``workspace`` (refused)."""
    caches = {
        "m365": TokenCache("m365", TokenEndpoint(), timeout=2.0),
        "workspace": TokenCache("workspace", TokenEndpoint(refuse=True), timeout=2.0),
    }
    config = Config((), oauth_clients=MappingProxyType(caches))

    async def configure(stack: AsyncExitStack) -> Config:
        return config

    stop = threading.Event()
    asker = threading.Thread(target=ask_for_tokens, args=(caches, stop), name="token asker")
    with daemon_thread(configure, "oauth daemon") as port:
        asker.start()
        try:
            yield OAuthDaemon(port, caches)
        finally:
            stop.set()
            asker.join(10)


@dataclass
class OAuthScraped:
    """The Prometheus scraping the OAuth daemon, and the token requests of its first scrape."""

    server: Prometheus
    first: dict[str, float]


@pytest.fixture(scope="module")
def oauth_scraped(oauth_daemon: OAuthDaemon) -> Iterator[OAuthScraped]:
    """A real Prometheus scraping the OAuth daemon, once it has scraped both clients."""
    server = Prometheus([f"127.0.0.1:{oauth_daemon.port}"], job=JOB)
    server.start()
    try:
        by_client = (
            'sum by (probe) (label_replace(smtp_probe_oauth_token_requests_total, "probe", '
            '"$1", "client", "(.+)"))'
        )
        first = server.wait_for(by_client, lambda r: set(r) == {"m365", "workspace"}, timeout=20)
        yield OAuthScraped(server, first)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oauth_prometheus(oauth_scraped: OAuthScraped) -> Prometheus:
    """That Prometheus once it has seen tokens come and go."""
    server, first = oauth_scraped.server, oauth_scraped.first
    # Two more renewals of m365's token seen by Prometheus itself: rate() has data.
    server.wait_for(
        'sum by (probe) (label_replace(smtp_probe_oauth_token_requests_total{result="success"}'
        ', "probe", "$1", "client", "(.+)"))',
        lambda r: r.get("m365", 0) >= first["m365"] + 2,
        timeout=40,
    )
    return server


def test_oauth_row_queries_show_what_the_token_caches_did(
    oauth_prometheus: Prometheus, oauth_daemon: OAuthDaemon
) -> None:
    """Every query of the OAuth row runs, returns data, and shows both clients as they are."""
    dashboard = load_dashboard()
    titles = oauth_panel_titles(dashboard)
    assert len(titles) >= 3
    results, problems = panel_results(oauth_prometheus, dashboard, titles, grafana_values())
    assert not problems, "\n".join(problems)

    failed = by_labels(results[("OAuth token failures (time range)", "A")], "client")
    assert failed[("workspace",)] > 0
    assert failed[("m365",)] == 0
    requests = by_labels(results[("OAuth token requests by result", "A")], "client", "result")
    assert set(requests) == {("m365", "success"), ("workspace", "invalid_client")}, requests
    expiry = by_labels(results[("OAuth token time to expiry", "A")], "client")
    assert set(expiry) == {("m365",)}, "a client that never got a token has no expiry"
    assert -2 < expiry[("m365",)] <= TOKEN_LIFETIME, expiry
    p95 = by_labels(results[("OAuth token request duration (p95)", "A")], "client")
    assert set(p95) == {("m365",), ("workspace",)}, p95
    assert all(0.025 <= seconds <= 0.5 for seconds in p95.values()), p95
    assert oauth_daemon.caches["workspace"].expires_at is None
