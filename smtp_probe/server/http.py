"""The daemon's HTTP face: metrics, health, reload, on-demand runs and a status page.

``/probe`` runs only probes that are in the config — never an arbitrary
target — so the endpoint cannot be turned into a mail cannon; one on-demand
run per probe at a time. Nothing served here ever contains a secret: the
transcripts are redacted where they are written.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Final

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from smtp_probe import __version__
from smtp_probe.app import Daemon, ProbeState
from smtp_probe.config import ServerSettings
from smtp_probe.report import as_dict, verdict

_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left}
.ok{color:#176c2c;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00;font-weight:600}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
"""


class HttpServer:
    """aiohttp server bound to ``settings``; ``bound`` tells the real port after start."""

    def __init__(self, daemon: Daemon, settings: ServerSettings) -> None:
        self.daemon = daemon
        self.settings = settings
        self.bound = settings
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: the address is in use or not ours to bind.
        """
        self._runner = web.AppRunner(make_app(self.daemon), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host or None, self.settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.settings.port
        self.bound = ServerSettings(self.settings.host, port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def make_app(daemon: Daemon) -> web.Application:
    """The aiohttp application for ``daemon`` (also used directly by tests)."""
    app = web.Application()
    handlers = _Handlers(daemon)
    app.router.add_get("/", handlers.status_page)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/-/healthy", handlers.healthy)
    app.router.add_get("/-/ready", handlers.ready)
    app.router.add_post("/-/reload", handlers.reload)
    app.router.add_get("/probe", handlers.probe)
    return app


class _Handlers:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def metrics(self, request: web.Request) -> web.Response:
        # Negotiated like prometheus_client's own handlers: OpenMetrics when the
        # scraper asks for it, the classic text format otherwise.
        _, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        body = self.daemon.metrics.render(openmetrics=openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, request: web.Request) -> web.Response:
        if self.daemon.ready:
            return web.Response(text="Ready\n")
        return web.Response(status=503, text="Not ready\n")

    async def reload(self, request: web.Request) -> web.Response:
        ok, message = await self.daemon.reload()
        return web.Response(status=200 if ok else 500, text=message.rstrip("\n") + "\n")

    async def probe(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name:
            return web.Response(status=400, text="missing ?name=PROBE\n")
        try:
            result = await self.daemon.run_on_demand(name)
        except RuntimeError as exc:
            return web.Response(status=429, text=f"{exc}\n")
        if result is None:
            return web.Response(status=404, text=f"no probe named {name!r} in the config\n")
        if request.query.get("format") == "json":
            return web.json_response(as_dict(result))
        text = "\n".join([*result.transcript.render(), verdict(result)]) + "\n"
        return web.Response(text=text)

    async def status_page(self, request: web.Request) -> web.Response:
        states = self.daemon.states()
        body = _render_status(states, self.daemon)
        return web.Response(text=body, content_type="text/html")


def _render_status(states: list[ProbeState], daemon: Daemon) -> str:
    now = time.time()
    rows = []
    details = []
    for state in states:
        last = state.last
        name = html.escape(state.name)
        if last is None:
            outcome = '<span class="warn">no run yet</span>'
            stage = delivery = ran = ""
        else:
            css = "ok" if last.success else ("warn" if last.outcome.value == "junk" else "bad")
            outcome = f'<span class="{css}">{html.escape(last.outcome.value)}</span>'
            stage = html.escape(str(last.stage or ""))
            reply = f" [{last.smtp.reply_code}]" if last.smtp.reply_code else ""
            stage += html.escape(reply) if last.stage else ""
            delivery = (
                f"{last.delivery_seconds * 1000:.1f} ms"
                if last.delivery_seconds is not None
                else ""
            )
            ran = _ago(now - last.started_at.timestamp())
            lines = "\n".join([*last.transcript.render(), verdict(last)])
            details.append(
                f"<details><summary>{name}: last transcript</summary>"
                f"<pre>{html.escape(lines)}</pre></details>"
            )
        success = _ago(now - state.last_success_at) if state.last_success_at else "never"
        running = " (running)" if state.running else ""
        rows.append(
            f"<tr><td>{name}{running}</td><td>{outcome}</td><td>{stage}</td><td>{delivery}</td>"
            f"<td>{ran}</td><td>{success}</td><td>{state.interval:g}s</td></tr>"
        )
    mailboxes = "".join(
        f"<li>{html.escape(m.username)} at {html.escape(m.address)} {html.escape(m.folder)}: "
        f"{'<span class=ok>connected</span>' if up else '<span class=bad>unreachable</span>'}</li>"
        for m, up in daemon.watcher_states()
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta http-equiv="refresh" content="15"><title>smtp-probe</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>smtp-probe {html.escape(__version__)}</h1>"
        f"<p>{len(states)} probe(s). Values are from the last scheduled run. "
        f'Generated {generated}. <a href="/metrics">metrics</a></p>'
        "<table><tr><th>probe</th><th>last outcome</th><th>stage</th><th>delivery</th>"
        "<th>last run</th><th>last success</th><th>interval</th></tr>"
        + "".join(rows)
        + "</table>"
        + (f"<h2>Mailboxes</h2><ul>{mailboxes}</ul>" if mailboxes else "")
        + "<h2>Transcripts</h2>"
        + ("".join(details) or "<p>No runs yet.</p>")
        + "</body></html>"
    )


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
