"""What ``python -X importtime`` says, and the modules a check with flags must not import.

Shared by the import-diet test (tests/unit/test_startup_imports.py) and the
start-up benchmark (bench/bench_check_startup.py), so both hold the check to
the same list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

IMPORT_LINE: Final = re.compile(
    r"import time:\s+(?P<self>\d+) \|\s+(?P<cumulative>\d+) \|(?P<indent>\s*)(?P<name>\S+)"
)
"""One line of ``-X importtime``: self and cumulative microseconds, nesting, module."""

HEAVY_MODULES: Final = (
    "pydantic",
    "pydantic_core",
    "yaml",
    "structlog",
    "imapclient",
    "prometheus_client",
    "aiohttp",
    "apscheduler",
    "jinja2",
    "importlib.metadata",
    # OAuth: loaded at the first token fetch, never to build a client or a check.
    "msal",
    "google.auth",
    "google.oauth2",
    "authlib",
    "requests",
    # Verdicts: loaded when an arrived message is read or its DKIM checked.
    "authres",
    "dkim",
    "dns",
    # DNS checks: SPF evaluation, loaded when an spf check runs.
    "spf",
)
"""What an SMTP-only check with flags never needs (each also names its submodules)."""


def heavy(modules: Iterable[str]) -> list[str]:
    """The modules of :data:`HEAVY_MODULES` (or their submodules) among ``modules``, sorted."""
    return sorted({m for m in modules for h in HEAVY_MODULES if m == h or m.startswith(f"{h}.")})
