"""Structured logging: console lines on a terminal, JSON lines otherwise.

structlog and the standard library (APScheduler, aiohttp, imapclient) go
through one handler, so every line has the same shape and the bound
context (probe, run id) even from worker threads.

structlog is imported when logging is set up or a logger is made, not with
this module: the command line reads :data:`LEVELS` for every command, and
``smtp-probe check`` never logs through structlog (it prints its report).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    import structlog

LEVELS: Final = ("debug", "info", "warning", "error")


def setup(level: str = "info", *, stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure logging once for the process.

    ``json=None`` picks JSON unless ``stream`` is a terminal. Library loggers
    that would log protocol payloads (imapclient) are held at WARNING.
    """
    import structlog

    out = stream or sys.stderr
    as_json = not out.isatty() if json is None else json
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if as_json else _keep,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Protocol chatter of the libraries (and of the demo sandbox's servers).
    for noisy in ("imapclient", "aiosmtplib", "aiohttp.access", "mail.log", "pymap"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _keep(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return event


def get(name: str) -> structlog.stdlib.BoundLogger:
    """A logger for module ``name``."""
    import structlog

    return structlog.stdlib.get_logger(name)
