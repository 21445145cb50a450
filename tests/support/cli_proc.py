"""``smtp-probe`` as an operator starts it: ``python -m smtp_probe ...`` in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    *argv: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m smtp_probe ARGV`` from the repository root and wait for it to exit.

    The environment is :func:`cli_environment` with ``env`` on top; the
    output is captured as text.

    Raises:
        subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds.
    """
    return subprocess.run(
        [sys.executable, "-m", "smtp_probe", *argv],
        cwd=REPO,
        env=cli_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m smtp_probe ARGV`` as :func:`run_cli` does, without waiting for it."""
    return subprocess.Popen(
        [sys.executable, "-m", "smtp_probe", *argv],
        cwd=REPO,
        env=cli_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours without any ``SMTP_PROBE_*`` variable, then ``env``.

    A password exported in the developer's shell must not change a test.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_PROBE_")}
    environ.update(env or {})
    return environ
