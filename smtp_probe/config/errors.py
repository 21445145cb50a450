"""Config errors: each located as ``FILE:LINE:COL: PATH: MESSAGE``, all reported together.

A :class:`Problems` collects the problems of one load wherever they are
found (the YAML layer, the schema, the cross-references) and puts them in
document order; :class:`ConfigError` carries the result. No message holds a
value from the file: the location points at it instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

Loc = tuple[str | int, ...]
"""A location in the document: mapping keys and list indexes from the root."""

_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """The config cannot be used; :attr:`errors` lists every problem found.

    Each error is ``FILE:LINE:COL: PATH: MESSAGE`` (a problem with the whole
    file has no path); ``str()`` is one readable multi-line report headed by
    the file name. No error contains a secret.
    """

    def __init__(self, errors: Sequence[str], source: Path | None = None) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        self.source = source
        super().__init__(self.errors)

    def __str__(self) -> str:
        count = len(self.errors)
        lines = [f"{display_name(self.source)}: {count} error{'' if count == 1 else 's'}:"]
        lines.extend(f"  - {error}" for error in self.errors)
        return "\n".join(lines)


def display_name(source: Path | None) -> str:
    """How errors name the config: its path, or ``<config>`` for text without a file."""
    return str(source) if source is not None else "<config>"


def format_loc(loc: Loc) -> str:
    """``smtp_servers.relay.port``, ``probes[2].to``; keys that are not plain words quoted."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True, slots=True, order=True)
class _Problem:
    line: int
    column: int
    seq: int
    text: str


class Problems:
    """The problems found in one document, kept in document order."""

    def __init__(self, source: Path | None) -> None:
        self.source = source
        self._items: list[_Problem] = []

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, position: tuple[int, int], loc: Loc, message: str) -> None:
        """Record ``message`` about ``loc``, found at 0-based ``(line, column)``."""
        line, column = position
        where = f"{display_name(self.source)}:{line + 1}:{column + 1}"
        path = format_loc(loc)
        text = f"{where}: {path}: {message}" if path else f"{where}: {message}"
        self._items.append(_Problem(line, column, len(self._items), text))

    def error(self) -> ConfigError:
        """All problems as one :class:`ConfigError`: by line, column, then as found."""
        return ConfigError([p.text for p in sorted(self._items)], self.source)

    def whole_file(self, message: str, position: tuple[int, int] | None = None) -> ConfigError:
        """A problem with the file as such (unreadable, not YAML, empty): one error, no path."""
        where = display_name(self.source)
        if position is not None:
            where += f":{position[0] + 1}:{position[1] + 1}"
        return ConfigError([f"{where}: {message}"], self.source)
