"""The daemon's HTTP face against a real Daemon and real aiosmtpd servers on 127.0.0.1.

Probes are SMTP-only (no mailbox, so no IMAP watcher); their SMTP server is
an aiosmtpd instance accepting mail, or a closed loopback port. The app is
served by aiohttp's TestServer on 127.0.0.1 and driven by its TestClient.
Probes scheduled every hour (``alpha``, ``beta``, ``gamma``: first runs 33
to 49 minutes away) never run during a test; probes scheduled every second
run within one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from smtp_probe.app import Daemon
from smtp_probe.config import parse_config
from smtp_probe.config.errors import ConfigError
from smtp_probe.config.runtime import Config
from smtp_probe.scheduler import first_run_offset
from smtp_probe.server.http import LIFECYCLE_DISABLED, PROBE_DISABLED, WebOptions, make_app
from tests.support.leaks import password_forms
from tests.support.loopback_smtpd import (
    LOOPBACK,
    Authenticator,
    Behaviour,
    closed_port,
    smtpd,
)

Client = TestClient[web.Request, web.Application]

SENDER = "probe@sender.test"
RECIPIENT = "sink@rcpt.test"
USER = "probe-user"
PASSWORD = "s3cret-Horse-Battery"  # noqa: S105 - the test server's own user
HOURLY = ("alpha", "beta", "gamma")
LIFECYCLE = WebOptions(enable_lifecycle=True)
"""``--web.enable-lifecycle``: what every test that POSTs to /-/reload and expects it to work needs."""


def yaml_config(
    port: int,
    *names: str,
    interval: str = "1h",
    timeout: str = "5s",
    password: str | None = None,
) -> str:
    """SMTP-only probes ``names`` through one plain-text server on 127.0.0.1:``port``."""
    auth = f", username: {USER}, password: '{password}'" if password else ""
    probes = "".join(
        f"  - {{name: {name}, smtp: local, from: {SENDER}, to: {RECIPIENT}}}\n" for name in names
    )
    return (
        f"defaults: {{interval: {interval}, timeout: {timeout}, jitter: 0s}}\n"
        "smtp_servers:\n"
        f"  local: {{host: {LOOPBACK}, port: {port}, tls: none, helo: probe.test{auth}}}\n"
        f"probes:\n{probes}"
    )


def config(port: int, *names: str, **options: Any) -> Config:
    return parse_config(yaml_config(port, *names, **options))


@asynccontextmanager
async def serving(
    daemon: Daemon, *, start: bool = True, options: WebOptions | None = None
) -> AsyncIterator[Client]:
    """Serve ``make_app(daemon, options)`` on 127.0.0.1; start the daemon first unless told not to."""
    try:
        if start:
            await daemon.start()
        app = make_app(daemon, options)
        async with TestClient(TestServer(app, host=LOOPBACK)) as client:
            yield client
    finally:
        await daemon.stop()


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


@dataclass(frozen=True)
class Reply:
    """What a client keeps of one HTTP response."""

    status: int
    text: str
    content_type: str
    """The media type alone (``text/html``)."""
    content_type_header: str
    retry_after: str | None


async def reply_of(response: ClientResponse) -> Reply:
    return Reply(
        status=response.status,
        text=await response.text(),
        content_type=response.content_type,
        content_type_header=response.headers.get("Content-Type", ""),
        retry_after=response.headers.get("Retry-After"),
    )


def requests_in_turn(
    path: str,
    *names: str,
    times: int,
    handler: Behaviour | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    start: bool = True,
    options: WebOptions | None = None,
) -> list[Reply]:
    """Serve a Daemon of SMTP-only probes ``names`` and send it a request ``times`` in turn.

    The probes' SMTP server is an aiosmtpd answering with ``handler``, or a
    closed loopback port without one; ``start=False`` leaves the daemon
    unstarted (what a request sees during start-up).
    """

    async def main() -> list[Reply]:
        server: AbstractContextManager[int] = smtpd(handler) if handler else closed_port()
        with server as port:
            daemon = Daemon(config(port, *names))
            async with serving(daemon, start=start, options=options) as client:
                return [
                    await reply_of(await client.request(method, path, headers=headers))
                    for _ in range(times)
                ]

    return asyncio.run(main())


def request_once(path: str, *names: str, **options: Any) -> Reply:
    """:func:`requests_in_turn` with one request."""
    [reply] = requests_in_turn(path, *names, times=1, **options)
    return reply


async def text_of(client: Client, path: str) -> tuple[int, str]:
    response = await client.get(path)
    return response.status, await response.text()


async def metrics_text(client: Client) -> str:
    status, text = await text_of(client, "/metrics")
    assert status == 200
    return text


def sample(text: str, name: str, probe: str) -> float | None:
    """The value of ``name{probe="..."}`` in an exposition, if present."""
    match = re.search(rf'^{name}\{{probe="{re.escape(probe)}"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def wait_for_scheduled_run(daemon: Daemon, name: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(probe.name == name and probe.last for probe in daemon.status().probes):
        assert time.monotonic() < deadline, f"no scheduled run of {name} in {timeout}s"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def hung_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A server that accepts connections and never says a word (a hung SMTP server).

    Yields its port and an event set once a client has connected, so a test
    knows a run is under way without looking inside the daemon.
    """
    connected = asyncio.Event()
    clients: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)
        connected.set()
        await reader.read()  # until the client gives up and closes

    server = await asyncio.start_server(hang, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1], connected
    finally:
        server.close()
        for writer in clients:
            writer.close()
        await server.wait_closed()


def probe_again_while_the_first_run_hangs(timeout: str) -> tuple[Reply, Reply]:
    """``GET /probe?name=alpha`` through a hung server, and again while that run waits.

    Returns the first request's reply (once its run timed out) and the
    second's.
    """

    async def main() -> tuple[Reply, Reply]:
        async with hung_server() as (port, connected):
            daemon = Daemon(config(port, "alpha", timeout=timeout))
            async with serving(daemon) as client:
                first = asyncio.ensure_future(client.get("/probe?name=alpha"))
                await asyncio.wait_for(connected.wait(), 2)
                second = await reply_of(await client.get("/probe?name=alpha"))
                return await reply_of(await first), second

    return asyncio.run(main())


def probe_rows(page: str) -> dict[str, str]:
    """Each probe row of the status page: probe name -> the text of its outcome badge."""
    rows = re.findall(
        r'<tr class="probe" data-probe="([^"]*)">.*?<td class="outcome">\s*'
        r'<span class="badge [a-z]+">([^<]*)</span>',
        page,
        re.DOTALL,
    )
    return dict(rows)


def test_hourly_probe_names_do_not_run_during_a_test() -> None:
    """The premise of the tests that expect no scheduled run: first runs are > 30 min away."""
    for name in HOURLY:
        assert first_run_offset(name, 3600.0) > 1800.0, name


# ---------------------------------------------------------------- health and readiness


def test_healthy_answers_200() -> None:
    reply = request_once("/-/healthy", "alpha", start=False)

    assert reply.status == 200
    assert reply.text == "OK\n"


def test_ready_answers_503_before_the_daemon_started() -> None:
    assert request_once("/-/ready", "alpha", start=False).status == 503


def test_ready_answers_200_once_the_daemon_started() -> None:
    async def main() -> None:
        with closed_port() as port:
            daemon = Daemon(config(port, "alpha"))
            async with serving(daemon, start=False) as client:
                await daemon.start()
                status, _ = await text_of(client, "/-/ready")
        assert status == 200

    run_async(main)


# ---------------------------------------------------------------- /metrics


def test_metrics_has_a_success_series_for_every_probe_from_start_up() -> None:
    reply = request_once("/metrics", *HOURLY)

    assert reply.status == 200
    for name in HOURLY:
        assert sample(reply.text, "smtp_probe_success", name) == 0, name
        assert sample(reply.text, "smtp_probe_runs_total", name) == 0, name


def test_metrics_reports_a_successful_start_up_config_load() -> None:
    reply = request_once("/metrics", "alpha")

    assert reply.status == 200
    assert "\nsmtp_probe_config_last_reload_successful 1.0\n" in reply.text


def test_metrics_content_type_is_the_prometheus_text_format_0_0_4() -> None:
    """Without an Accept header asking otherwise, the classic text format is served."""
    reply = request_once("/metrics", "alpha")

    assert reply.status == 200
    parts = [part.strip() for part in reply.content_type_header.split(";")]
    assert parts[0] == "text/plain"
    assert "version=0.0.4" in parts


def test_metrics_negotiates_openmetrics_when_the_scraper_asks_for_it() -> None:
    """Prometheus's own Accept header (OpenMetrics first) gets an OpenMetrics body."""
    accept = (
        "application/openmetrics-text;version=1.0.0;q=0.5,"
        "application/openmetrics-text;version=0.0.1;q=0.4,"
        "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    )

    reply = request_once("/metrics", "alpha", headers={"Accept": accept})

    assert reply.status == 200
    assert reply.content_type == "application/openmetrics-text"
    assert reply.text.endswith("# EOF\n")
    assert 'smtp_probe_success{probe="alpha"} 0.0' in reply.text


# ---------------------------------------------------------------- /probe


def test_probe_without_a_name_is_400() -> None:
    assert request_once("/probe", "alpha").status == 400


def test_probe_with_an_unknown_name_is_404_and_sends_nothing() -> None:
    handler = Behaviour()

    assert request_once("/probe?name=mail-cannon", "alpha", handler=handler).status == 404
    assert handler.messages == []


def test_probe_runs_a_configured_probe_now_and_returns_its_transcript_and_verdict() -> None:
    handler = Behaviour(data_reply="250 2.0.0 Ok: queued as QID42")

    reply = request_once("/probe?name=alpha", "alpha", handler=handler)

    assert reply.status == 200
    lines = reply.text.rstrip("\n").splitlines()
    assert any(line.endswith(f"-> RCPT TO:<{RECIPIENT}>") for line in lines)
    assert lines[-1].startswith("OK: accepted by SMTP (250), queue id QID42")
    assert len(handler.messages) == 1


def test_probe_in_json_format_returns_the_result_object_with_outcome_sent() -> None:
    reply = request_once("/probe?name=alpha&format=json", "alpha", handler=Behaviour())

    assert reply.status == 200
    assert reply.content_type == "application/json"
    body = json.loads(reply.text)
    assert body["probe"] == "alpha"
    assert body["outcome"] == "sent"
    assert body["success"] is True
    assert body["smtp"]["reply_code"] == 250


def test_probe_of_an_unreachable_server_returns_the_failing_verdict() -> None:
    reply = request_once("/probe?name=alpha", "alpha")

    assert reply.status == 200
    assert reply.text.rstrip("\n").splitlines()[-1].startswith("CRITICAL: send_failed at connect")


def test_probe_does_not_touch_the_scheduled_run_metrics() -> None:
    """On-demand runs stay out of runs_total, outcomes_total and success."""

    async def main() -> None:
        with smtpd(Behaviour()) as port:
            async with serving(Daemon(config(port, "alpha"))) as client:
                status, _ = await text_of(client, "/probe?name=alpha")
                text = await metrics_text(client)
        assert status == 200
        assert sample(text, "smtp_probe_runs_total", "alpha") == 0
        assert sample(text, "smtp_probe_success", "alpha") == 0
        assert sample(text, "smtp_probe_last_run_timestamp_seconds", "alpha") == 0
        assert 'smtp_probe_outcomes_total{outcome="sent",probe="alpha"} 0.0' in text

    run_async(main)


def test_probe_run_again_right_after_an_on_demand_run_is_429() -> None:
    """The endpoint runs configured probes only, and not back to back: no mail cannon."""
    first, second = requests_in_turn("/probe?name=alpha", "alpha", times=2, handler=Behaviour())

    assert first.status == 200
    assert second.status == 429
    assert "ago" in second.text


def test_probe_already_running_on_demand_is_429() -> None:
    """One on-demand run per probe at a time: a second request while one hangs is refused."""
    first, second = probe_again_while_the_first_run_hangs(timeout="1s")

    assert second.status == 429
    assert "already in progress" in second.text
    assert first.status == 200


def test_probe_refused_says_when_to_retry_in_a_retry_after_header() -> None:
    """429 carries Retry-After in whole seconds: what is left of the 5 s pause, at least 1."""
    _, refused = requests_in_turn("/probe?name=alpha", "alpha", times=2, handler=Behaviour())

    assert refused.status == 429
    assert refused.retry_after is not None
    assert 1 <= int(refused.retry_after) <= 5


def test_probe_refused_while_running_waits_for_the_run_deadline_and_the_pause() -> None:
    _, refused = probe_again_while_the_first_run_hangs(timeout="3s")

    assert refused.status == 429
    assert refused.retry_after is not None
    # Up to 3 s of the hung run left, then the 5 s pause.
    assert 6 <= int(refused.retry_after) <= 8


def test_probe_endpoint_switched_off_is_403_and_sends_nothing() -> None:
    handler = Behaviour()

    reply = request_once(
        "/probe?name=alpha", "alpha", handler=handler, options=WebOptions(probe_endpoint=False)
    )

    assert (reply.status, reply.text) == (403, PROBE_DISABLED)
    assert "--web.disable-probe-endpoint" in reply.text
    assert handler.messages == []
    assert handler.greetings == []


def test_probe_runs_over_the_per_minute_budget_of_all_probes_are_429_with_retry_after() -> None:
    """Three probes, a budget of two a minute: the third probe's first run is refused."""
    handler = Behaviour()

    async def main() -> list[Reply]:
        with smtpd(handler) as port:
            daemon = Daemon(config(port, "alpha", "beta", "gamma"), on_demand_per_minute=2)
            async with serving(daemon) as client:
                return [
                    await reply_of(await client.get(f"/probe?name={name}"))
                    for name in ("alpha", "beta", "nope", "gamma")
                ]

    alpha, beta, unknown, gamma = asyncio.run(main())

    assert (alpha.status, beta.status, unknown.status) == (200, 200, 404)
    assert gamma.status == 429
    assert "2 on-demand runs started in the last minute (--web.probe-rate)" in gamma.text
    assert gamma.retry_after is not None
    assert 55 <= int(gamma.retry_after) <= 60
    assert len(handler.messages) == 2


def test_probe_output_is_never_sniffed_as_html_and_its_json_escapes_markup() -> None:
    handler = Behaviour(rcpt_reply=f"550 5.1.1 {MARKUP_IN_REPLY}")

    async def main() -> tuple[Reply, Reply]:
        with smtpd(handler) as port:
            daemon = Daemon(config(port, "alpha", "beta"))
            async with serving(daemon) as client:
                text = await reply_of(await client.get("/probe?name=alpha"))
                as_json = await reply_of(await client.get("/probe?name=beta&format=json"))
        return text, as_json

    text, as_json = asyncio.run(main())

    assert text.content_type == "text/plain"
    assert as_json.content_type == "application/json"
    assert "<" not in as_json.text
    assert ">" not in as_json.text
    assert "&" not in as_json.text
    assert MARKUP_IN_REPLY in json.dumps(json.loads(as_json.text), ensure_ascii=False)
    assert MARKUP_IN_REPLY in text.text  # text/plain: shown as sent, with nosniff below


def test_probe_responses_forbid_content_type_sniffing() -> None:
    async def main() -> list[str | None]:
        with smtpd(Behaviour()) as port:
            async with serving(Daemon(config(port, "alpha", "beta"))) as client:
                first = await client.get("/probe?name=alpha")
                second = await client.get("/probe?name=beta&format=json")
                return [r.headers.get("X-Content-Type-Options") for r in (first, second)]

    assert asyncio.run(main()) == ["nosniff", "nosniff"]


MARKUP_IN_REPLY = "<script>alert(1)</script> & <b>bold</b>"


# ---------------------------------------------------------------- POST /-/reload


def test_reload_adds_and_removes_probes_and_their_series() -> None:
    async def main() -> None:
        with closed_port() as port:
            daemon = Daemon(
                config(port, "alpha", "beta"), load=lambda: config(port, "alpha", "gamma")
            )
            async with serving(daemon, options=LIFECYCLE) as client:
                before = await metrics_text(client)
                response = await client.post("/-/reload")
                after = await metrics_text(client)
        assert response.status == 200
        assert sample(before, "smtp_probe_success", "beta") == 0
        assert sample(before, "smtp_probe_success", "gamma") is None
        assert 'probe="beta"' not in after
        assert sample(after, "smtp_probe_success", "gamma") == 0
        assert sample(after, "smtp_probe_success", "alpha") == 0
        assert daemon.scheduler.next_run("beta") is None
        assert daemon.scheduler.next_run("gamma") is not None

    run_async(main)


def test_reload_makes_a_new_probe_runnable_on_demand() -> None:
    async def main() -> None:
        with smtpd(Behaviour()) as port:
            daemon = Daemon(config(port, "alpha"), load=lambda: config(port, "alpha", "gamma"))
            async with serving(daemon, options=LIFECYCLE) as client:
                before, _ = await text_of(client, "/probe?name=gamma")
                await client.post("/-/reload")
                after, _ = await text_of(client, "/probe?name=gamma")
        assert (before, after) == (404, 200)

    run_async(main)


def test_reload_with_an_invalid_config_is_500_with_the_errors_and_keeps_the_old_probes() -> None:
    async def main() -> None:
        with closed_port() as port:
            bad = yaml_config(port, "alpha", "gamma").replace("smtp: local", "smtp: relya")
            daemon = Daemon(config(port, "alpha", "beta"), load=lambda: parse_config(bad))
            async with serving(daemon, options=LIFECYCLE) as client:
                response = await client.post("/-/reload")
                body = await response.text()
                text = await metrics_text(client)
        assert response.status == 500
        assert "probes[0].smtp: unknown server" in body
        assert sample(text, "smtp_probe_success", "beta") == 0
        assert sample(text, "smtp_probe_success", "gamma") is None
        assert [probe.name for probe in daemon.status().probes] == ["alpha", "beta"]

    run_async(main)


def test_reload_with_an_invalid_config_sets_last_reload_successful_to_zero() -> None:
    def broken() -> Config:
        raise ConfigError(["probes: no probes are configured; add at least one"])

    async def main() -> None:
        with closed_port() as port:
            daemon = Daemon(config(port, "alpha"), load=broken)
            async with serving(daemon, options=LIFECYCLE) as client:
                await client.post("/-/reload")
                text = await metrics_text(client)
        assert "\nsmtp_probe_config_last_reload_successful 0.0\n" in text

    run_async(main)


def test_reload_without_a_config_source_is_500() -> None:
    assert request_once("/-/reload", "alpha", method="POST", options=LIFECYCLE).status == 500


def test_reload_without_web_enable_lifecycle_is_refused_403_and_reloads_nothing() -> None:
    """As in Prometheus: without --web.enable-lifecycle, POST /-/reload is 403 and never reads."""
    loads: list[str] = []

    def load() -> Config:
        loads.append("read")
        return config(port, "alpha", "gamma")

    async def main() -> None:
        async with serving(Daemon(config(port, "alpha"), load=load)) as client:
            response = await client.post("/-/reload")
            body = await response.text()
            text = await metrics_text(client)
        assert response.status == 403
        assert body == LIFECYCLE_DISABLED
        assert body.startswith("Lifecycle API is not enabled.")
        assert "--web.enable-lifecycle" in body
        assert loads == []
        assert sample(text, "smtp_probe_success", "gamma") is None

    with closed_port() as port:
        run_async(main)


# ---------------------------------------------------------------- status page


def test_status_page_is_html_without_scripts_listing_every_probe_with_no_run_yet() -> None:
    reply = request_once("/", *HOURLY)

    assert reply.status == 200
    assert reply.content_type == "text/html"
    assert "<script" not in reply.text.lower()
    assert probe_rows(reply.text) == dict.fromkeys(HOURLY, "no run yet")


def test_status_page_shows_the_outcome_of_the_last_scheduled_run() -> None:
    async def main() -> None:
        with smtpd(Behaviour()) as port:
            daemon = Daemon(config(port, "alpha", interval="1s", timeout="1s"))
            async with serving(daemon) as client:
                await wait_for_scheduled_run(daemon, "alpha")
                _, page = await text_of(client, "/")
        assert probe_rows(page) == {"alpha": "sent"}
        assert re.search(r'<li class="cell ok" title="[^"]*: sent">', page)
        assert '<details class="transcript" id="transcript-1">' in page
        assert "-&gt; MAIL FROM:&lt;probe@sender.test&gt;" in page

    run_async(main)


def test_status_page_does_not_show_an_on_demand_run_as_the_last_scheduled_run() -> None:
    async def main() -> None:
        with smtpd(Behaviour()) as port:
            async with serving(Daemon(config(port, "alpha"))) as client:
                status, _ = await text_of(client, "/probe?name=alpha")
                _, page = await text_of(client, "/")
        assert status == 200
        assert probe_rows(page) == {"alpha": "no run yet"}
        assert 'class="cell ok"' not in page
        assert '<details class="transcript"' not in page

    run_async(main)


MARKUP = "<script>alert(1)</script> <b>bold</b>"
"""What a hostile (or merely odd) server puts in its banner and replies."""


class StartTags(HTMLParser):
    """Every element start tag of a page, as a browser's tokenizer sees them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_status_page_shows_markup_from_a_server_as_text_never_as_elements() -> None:
    """Banner, replies and the error line of a server that speaks HTML stay escaped text."""
    accepting = Behaviour(data_reply=f"250 2.0.0 {MARKUP} queued")
    refusing = Behaviour(rcpt_reply=f"550 5.1.1 {MARKUP} no such user")

    async def main() -> None:
        with smtpd(accepting, ident=MARKUP) as good, smtpd(refusing, ident=MARKUP) as bad:
            text = yaml_config(good, "alpha", interval="1s", timeout="1s")
            text = text.replace(
                "probes:\n",
                f"  other: {{host: {LOOPBACK}, port: {bad}, tls: none, helo: probe.test}}\n"
                "probes:\n"
                f"  - {{name: beta, smtp: other, from: {SENDER}, to: {RECIPIENT}}}\n",
            )
            daemon = Daemon(parse_config(text))
            async with serving(daemon) as client:
                await wait_for_scheduled_run(daemon, "alpha")
                await wait_for_scheduled_run(daemon, "beta")
                _, page = await text_of(client, "/")
        assert probe_rows(page) == {"alpha": "sent", "beta": "send_failed"}
        escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;bold&lt;/b&gt;"
        assert page.count(escaped) >= 5, "banner, replies and error should all be shown"
        assert f"220 mx.test {escaped}" in page
        assert f"550 5.1.1 {escaped} no such user" in page
        tags = StartTags(page).tags
        assert "script" not in tags
        assert "b" not in tags
        assert "<script" not in page.lower()

    run_async(main)


def test_status_page_never_contains_the_smtp_password_after_an_authenticated_run() -> None:
    authenticator = Authenticator(USER, PASSWORD)

    async def main() -> None:
        with smtpd(Behaviour(), authenticator=authenticator, auth_require_tls=False) as port:
            daemon = Daemon(config(port, "alpha", interval="1s", timeout="1s", password=PASSWORD))
            async with serving(daemon) as client:
                await wait_for_scheduled_run(daemon, "alpha")
                _, page = await text_of(client, "/")
        assert authenticator.attempts[0] == (USER, PASSWORD), "the run did not log in"
        assert "AUTH PLAIN" in page
        for form in password_forms(USER, PASSWORD):
            assert form not in page, form

    run_async(main)


def test_probe_output_never_contains_the_smtp_password() -> None:
    authenticator = Authenticator(USER, PASSWORD)

    async def main() -> None:
        with smtpd(Behaviour(), authenticator=authenticator, auth_require_tls=False) as port:
            daemon = Daemon(config(port, "alpha", "beta", password=PASSWORD))
            async with serving(daemon) as client:
                _, text = await text_of(client, "/probe?name=alpha")
                _, as_json = await text_of(client, "/probe?name=beta&format=json")
        assert authenticator.attempts == [(USER, PASSWORD)] * 2
        for form in password_forms(USER, PASSWORD):
            assert form not in text, form
            assert form not in as_json, form

    run_async(main)
