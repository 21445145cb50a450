"""The daemon's HTTP face: metrics, health, reload, on-demand runs and a status page.

``/probe`` runs only probes that are in the config — never an arbitrary
target — so the endpoint cannot be turned into a mail cannon; one on-demand
run per probe at a time, a pause between two, a budget per minute over all
probes (the daemon's gate), and it can be switched off. ``POST /-/reload``
answers only when the lifecycle API is enabled, as in Prometheus and
Alertmanager: anyone who reaches the port could otherwise make the daemon
re-read its config at will (SIGHUP always reloads). Nothing served here ever
contains a secret: the transcripts are redacted where they are written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from smtp_probe.config.runtime import ServerSettings
from smtp_probe.report import as_dict, verdict
from smtp_probe.server.interface import Monitor, OnDemandRefused
from smtp_probe.server.status_page import render_status_page
from smtp_probe.server.webconfig import WebGuard

LIFECYCLE_DISABLED: Final = (
    "Lifecycle API is not enabled. Start smtp-probe run with --web.enable-lifecycle.\n"
)
"""The 403 body of ``POST /-/reload`` without the flag: Prometheus' own words, then how."""
PROBE_DISABLED: Final = "On-demand runs are disabled (--web.disable-probe-endpoint).\n"
"""The 403 body of ``/probe`` when the endpoint is switched off."""


@dataclass(frozen=True, slots=True)
class WebOptions:
    """The ``--web.*`` switches of ``smtp-probe run`` that change what the endpoints do."""

    enable_lifecycle: bool = False
    """``--web.enable-lifecycle``: ``POST /-/reload`` reloads; without it, 403."""
    probe_endpoint: bool = True
    """``/probe`` runs probes on demand; ``--web.disable-probe-endpoint`` makes it 403."""


class HttpServer:
    """aiohttp server bound to ``settings``; ``bound`` tells the real port after start."""

    def __init__(
        self,
        monitor: Monitor,
        settings: ServerSettings,
        web_options: WebOptions | None = None,
        guard: WebGuard | None = None,
    ) -> None:
        self.monitor = monitor
        self.settings = settings
        self.web_options = web_options or WebOptions()
        self.guard = guard
        self.bound = settings
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: the address is in use or not ours to bind.
        """
        self._runner = web.AppRunner(
            make_app(self.monitor, self.web_options, self.guard), access_log=None
        )
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


def make_app(
    monitor: Monitor, options: WebOptions | None = None, guard: WebGuard | None = None
) -> web.Application:
    """The aiohttp application serving ``monitor`` (also used directly by tests).

    ``options`` default to :class:`WebOptions`' defaults: no lifecycle API,
    ``/probe`` on. With a ``guard`` (``--web.config.file``) every route asks
    for its basic auth users and answers with its headers.
    """
    app = web.Application(middlewares=[guard.middleware] if guard is not None else [])
    handlers = _Handlers(monitor, options or WebOptions())
    app.router.add_get("/", handlers.status_page)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/-/healthy", handlers.healthy)
    app.router.add_get("/-/ready", handlers.ready)
    app.router.add_post("/-/reload", handlers.reload)
    app.router.add_get("/probe", handlers.probe)
    return app


def _html_safe_json(value: object) -> str:
    r"""JSON with ``<``, ``>`` and ``&`` as ``\u`` escapes, as Go's encoding/json writes it.

    A banner or reply holding ``<script>`` stays the same string for a JSON
    parser but is never markup, even where the body ends up inside HTML. Those
    three characters only ever occur inside JSON strings, so the swap is safe.
    """
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Handlers:
    def __init__(self, monitor: Monitor, options: WebOptions) -> None:
        self.monitor = monitor
        self.options = options

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
        if not self.options.enable_lifecycle:
            return web.Response(status=403, text=LIFECYCLE_DISABLED)
        ok, message = await self.monitor.reload()
        return web.Response(status=200 if ok else 500, text=message.rstrip("\n") + "\n")

    async def probe(self, request: web.Request) -> web.Response:
        if not self.options.probe_endpoint:
            return web.Response(status=403, text=PROBE_DISABLED)
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
        # What a server said is in there verbatim: never let a browser sniff it as HTML.
        headers = {"X-Content-Type-Options": "nosniff"}
        if request.query.get("format") == "json":
            return web.json_response(as_dict(result), dumps=_html_safe_json, headers=headers)
        text = "\n".join([*result.transcript.render(), verdict(result)]) + "\n"
        return web.Response(text=text, headers=headers)

    async def status_page(self, request: web.Request) -> web.Response:
        body = render_status_page(self.monitor.status(), now=time.time())
        return web.Response(text=body, content_type="text/html")
