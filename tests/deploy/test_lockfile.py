"""requirements.lock is current with pyproject.toml, hashed, and what the Dockerfile installs.

Offline: the lock is compared with pyproject.toml's ``dependencies`` by name
and specifier (tests/support/lockfile.py); nothing asks PyPI. When this fails,
run ``scripts/lock`` and commit the result.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support import lockfile
from tests.support.prom import free_port

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
DEPENDENCIES: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]["dependencies"]


def test_lock_is_current_with_pyproject() -> None:
    problems = lockfile.stale(DEPENDENCIES, lockfile.load(LOCK))
    assert not problems, "requirements.lock is stale; run scripts/lock:\n" + "\n".join(problems)


def test_lock_was_written_by_scripts_lock() -> None:
    header = LOCK.read_text(encoding="utf-8").splitlines()[:2]
    assert header[1].strip("# ") == "scripts/lock", header


def test_every_pin_is_hashed_and_sdist_only_ones_are_in() -> None:
    pins = {pin.name: pin for pin in lockfile.load(LOCK)}
    assert all(len(pin.hashes) >= 1 for pin in pins.values())
    # Published as sdists only: the lock carries the sdist's hash (one file).
    for name in ("authres", "dkimpy", "pyspf"):
        assert len(pins[name].hashes) == 1, pins[name]


def _with(old: str, new: tuple[str, ...]) -> list[str]:
    """The pyproject dependencies, the one starting with ``old`` replaced by ``new``."""
    (index,) = [i for i, text in enumerate(DEPENDENCIES) if text.startswith(old)]
    return [*DEPENDENCIES[:index], *new, *DEPENDENCIES[index + 1 :]]


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        # A specifier the pin no longer satisfies.
        ("aiosmtplib", ("aiosmtplib>=999",), r"aiosmtplib==[\d.]+ in the lock does not satisfy"),
        # A new dependency, not locked yet.
        (
            "pyyaml",
            ("pyyaml>=6", "bogus-new-dep>=1"),
            r"'bogus-new-dep>=1' is in pyproject.toml but not",
        ),
        # A removed dependency, still locked as ours.
        ("jinja2", (), r"jinja2 is locked as a direct dependency but not in pyproject"),
    ],
)
def test_staleness_is_detected(old: str, new: tuple[str, ...], complaint: str) -> None:
    problems = lockfile.stale(_with(old, new), lockfile.load(LOCK))
    assert any(re.search(complaint, problem) for problem in problems), problems


def test_a_pin_nothing_needs_and_an_unhashed_pin_are_detected() -> None:
    text = LOCK.read_text(encoding="utf-8") + "orphan==1.0\n    # via nothing-locked\n"
    problems = lockfile.stale(DEPENDENCIES, lockfile.parse(text))
    assert "orphan==1.0 has no --hash" in problems
    assert "orphan is needed by nothing in the lock (nothing-locked)" in problems


def test_a_line_that_is_no_pin_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 1: not a pin"):
        lockfile.parse("aiohttp>=3\n")


def test_dockerfile_installs_the_lock_with_hashes_and_the_project_without_deps() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"COPY [^\n]*requirements\.lock", dockerfile)
    install = re.search(r"install \\\n(?:\s+--[^\n]*\\\n)*\s+-r requirements\.lock", dockerfile)
    assert install, "pip install ... -r requirements.lock"
    assert "--require-hashes" in install[0]
    assert re.search(r"install --no-deps /wheels/\S+\.whl", dockerfile)


def test_audit_fails_loudly_when_the_advisory_source_is_unreachable(tmp_path: Path) -> None:
    # The network "down": every HTTPS request goes to a loopback proxy port
    # where nothing listens. An empty cache, so no earlier answer stands in.
    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"no_proxy", "https_proxy"}}
    env |= {"HTTPS_PROXY": dead, "https_proxy": dead}
    done = subprocess.run(
        [REPO / "scripts" / "audit", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "scripts/audit: FAILED" in done.stderr
    assert "No known vulnerabilities found" not in done.stdout
