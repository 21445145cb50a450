"""Read ``requirements.lock`` (made by ``scripts/lock``) and compare it with pyproject.toml.

The lock is pip's requirements format as ``uv pip compile --generate-hashes``
writes it: one ``name==version`` per package, its ``--hash=sha256:...``
options on continuation lines, then ``# via`` comments naming what needs it
(``smtp-probe (pyproject.toml)`` for our own direct dependencies). Reading it
needs no network, so the staleness check runs offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_VIA = "smtp-probe (pyproject.toml)"
"""How the lock names our own project as the reason for a pin."""

# The image's Python (scripts/lock resolves for it): markers are evaluated here.
IMAGE_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)\s*(?:;\s*([^\\]*?))?\s*(?:\\)?$")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    """One locked package: its canonical name, version, environment marker, hashes, needers.

    ``marker`` is empty for a pin every Python and platform gets.
    """

    name: str
    version: str
    marker: str
    hashes: tuple[str, ...]
    via: tuple[str, ...]

    def requirement_line(self) -> str:
        """The pin as one pip requirements line, marker and hashes included."""
        hashes = " ".join(f"--hash=sha256:{digest}" for digest in self.hashes)
        marker = f" ; {self.marker}" if self.marker else ""
        return f"{self.name}=={self.version}{marker} {hashes}"


def parse(text: str) -> list[Pin]:
    """The pins of a lock file's ``text``, in file order.

    Raises:
        ValueError: a line that is neither a pin, a hash, a comment nor blank
            (a lock written by something else than scripts/lock).
    """
    pins: list[Pin] = []
    name = version = marker = ""
    hashes: list[str] = []
    via: list[str] = []

    def close() -> None:
        if name:
            pins.append(Pin(name, version, marker, tuple(hashes), tuple(via)))

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        pinned = _PIN.match(stripped)
        if pinned:
            close()
            name, version = canonicalize_name(pinned[1]), pinned[2]
            marker = pinned[3] or ""
            hashes, via = [], []
        elif stripped.startswith("--hash=") and name:
            hashes.extend(_HASH.findall(stripped))
        elif stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if comment.startswith("via "):
                via.append(comment.removeprefix("via ").strip())
            elif name and line.startswith("    #   "):
                via.append(comment)
        else:
            raise ValueError(f"requirements.lock line {number}: not a pin: {line!r}")
    close()
    return pins


def load(path: Path) -> list[Pin]:
    """The pins of the lock file at ``path`` (raises as :func:`parse`, or OSError)."""
    return parse(path.read_text(encoding="utf-8"))


def stale(dependencies: Iterable[str], pins: Iterable[Pin]) -> list[str]:
    """Why the lock does not match ``dependencies`` (pyproject's list); empty when current.

    Checks names and specifiers, not PyPI: every direct dependency is pinned to
    a version its specifier allows and marked as ours, nothing else is marked
    as ours, every pin has hashes, and every pin is needed by a pinned package
    or by us (no leftovers of a removed dependency).
    """
    locked: dict[str, Pin] = {}
    problems: list[str] = []
    for pin in pins:
        if pin.name in locked:
            problems.append(f"{pin.name} is pinned twice")
        locked[pin.name] = pin
        if not pin.hashes:
            problems.append(f"{pin.name}=={pin.version} has no --hash")

    direct: set[str] = set()
    for text in dependencies:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(dict(IMAGE_ENVIRONMENT)):
            continue
        name = canonicalize_name(requirement.name)
        direct.add(name)
        found = locked.get(name)
        if found is None:
            problems.append(f"{text!r} is in pyproject.toml but not in the lock")
        elif not requirement.specifier.contains(found.version, prereleases=True):
            problems.append(f"{name}=={found.version} in the lock does not satisfy {text!r}")
        elif PROJECT_VIA not in found.via:
            problems.append(f"{name} is not marked as needed by pyproject.toml in the lock")

    for pin in locked.values():
        if PROJECT_VIA in pin.via and pin.name not in direct:
            problems.append(
                f"{pin.name} is locked as a direct dependency but not in pyproject.toml"
            )
        needers = {canonicalize_name(v) for v in pin.via if v != PROJECT_VIA}
        if not (PROJECT_VIA in pin.via or needers & locked.keys()):
            problems.append(f"{pin.name} is needed by nothing in the lock ({', '.join(pin.via)})")
    return problems


def split(pins: Iterable[Pin], names: Iterable[str]) -> tuple[list[Pin], list[Pin]]:
    """``pins`` as (those not in ``names``, those in ``names``), by canonical name."""
    wanted = {canonicalize_name(name) for name in names}
    rest = [pin for pin in pins if pin.name not in wanted]
    chosen = [pin for pin in pins if pin.name in wanted]
    return rest, chosen


def requirements_file(pins: Iterable[Pin], path: Path) -> Path:
    """Write ``pins`` as a hashed requirements file at ``path``; return ``path``."""
    path.write_text("".join(f"{pin.requirement_line()}\n" for pin in pins), encoding="utf-8")
    return path
