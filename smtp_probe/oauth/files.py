"""When a provider's credential files last changed, so a file rotated in place is read again.

A certificate or service-account key is read when the provider's library
object is built, at the first fetch. Operators (and cert-manager) rotate
such files by writing the new one under the same path; the config's
settings stay equal, so a reload keeps the client's cache. Comparing this
stamp before each fetch makes the next token come from the new file.
"""

from __future__ import annotations

import os
from pathlib import Path


def stamp(*paths: Path | None) -> tuple[tuple[int, int, int] | None, ...]:
    """``(inode, mtime_ns, size)`` of each path (``None`` where absent or unreadable)."""
    found: list[tuple[int, int, int] | None] = []
    for path in paths:
        if path is None:
            found.append(None)
            continue
        try:
            info = os.stat(path)
        except OSError:
            found.append(None)
            continue
        found.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(found)
