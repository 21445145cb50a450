"""The daemon's HTTP face: metrics, health, reload, on-demand runs and a status page.

``/probe`` runs only probes that are in the config — never an arbitrary
target — so the endpoint cannot be turned into a mail cannon; one on-demand
run per probe at a time. Nothing served here ever contains a secret: the
transcripts are redacted where they are written.
"""

from __future__ import annotations

import math
import time

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from smtp_probe.config.runtime import ServerSettings
from smtp_probe.report import as_dict, verdict
from smtp_probe.server.interface import Monitor, OnDemandRefused
from smtp_probe.server.status_page import render_status_page
from smtp_probe.server.webconfig import WebGuard


class HttpServer:
    """aiohttp server bound to ``settings``; ``bound`` tells the real port after start."""

    def __init__(
        self, monitor: Monitor, settings: ServerSettings, guard: WebGuard | None = None
    ) -> None:
        self.monitor = monitor
        self.settings = settings
        self.guard = guard
        self.bound = settings
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: the address is in use or not ours to bind.
        """
        self._runner = web.AppRunner(make_app(self.monitor, self.guard), access_log=None)
        await self._runner.setup()
        context = self.guard.server_context() if self.guard is not None else None
        site = web.TCPSite(
            self._runner, self.settings.host or None, self.settings.port, ssl_context=context
        )
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


def make_app(monitor: Monitor, guard: WebGuard | None = None) -> web.Application:
    """The aiohttp application serving ``monitor`` (also used directly by tests).

    With a ``guard`` (``--web.config.file``) every route asks for its basic
    auth users and answers with its headers.
    """
    app = web.Application(middlewares=[guard.middleware] if guard is not None else [])
    handlers = _Handlers(monitor)
    app.router.add_get("/", handlers.status_page)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/-/healthy", handlers.healthy)
    app.router.add_get("/-/ready", handlers.ready)
    app.router.add_post("/-/reload", handlers.reload)
    app.router.add_get("/probe", handlers.probe)
    return app


class _Handlers:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    async def metrics(self, request: web.Request) -> web.Response:
        # Negotiated like prometheus_client's own handlers: OpenMetrics when the
        # scraper asks for it, the classic text format otherwise.
        _, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        body = self.monitor.render_metrics(openmetrics=openmetrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, request: web.Request) -> web.Response:
        if self.monitor.ready:
            return web.Response(text="Ready\n")
        return web.Response(status=503, text="Not ready\n")

    async def reload(self, request: web.Request) -> web.Response:
        ok, message = await self.monitor.reload()
        return web.Response(status=200 if ok else 500, text=message.rstrip("\n") + "\n")

    async def probe(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        if not name:
            return web.Response(status=400, text="missing ?name=PROBE\n")
        try:
            result = await self.monitor.run_on_demand(name)
        except OnDemandRefused as exc:
            # Retry-After is whole seconds (RFC 9110 section 10.2.3); never 0, or a
            # client would come straight back.
            retry_after = str(max(1, math.ceil(exc.retry_after)))
            return web.Response(status=429, text=f"{exc}\n", headers={"Retry-After": retry_after})
        if result is None:
            return web.Response(status=404, text=f"no probe named {name!r} in the config\n")
        if request.query.get("format") == "json":
            return web.json_response(as_dict(result))
        text = "\n".join([*result.transcript.render(), verdict(result)]) + "\n"
        return web.Response(text=text)

    async def status_page(self, request: web.Request) -> web.Response:
        body = render_status_page(self.monitor.status(), now=time.time())
        return web.Response(text=body, content_type="text/html")
