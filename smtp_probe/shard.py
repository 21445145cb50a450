"""Sharding: N daemons share one config, each running the probes of its shard.

A probe belongs to shard ``crc32(name) % N``: stable across restarts,
reloads and machines, and every probe is in exactly one shard. Shard 0 of 1
is the whole config. Parsing the config knows nothing of this; a sharded
daemon loads the whole file and keeps its part.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from smtp_probe.config import load_config

if TYPE_CHECKING:
    from smtp_probe.config.runtime import Config


def shard_of(name: str, count: int) -> int:
    """The shard (``0..count-1``) that runs the probe called ``name``."""
    return zlib.crc32(name.encode("utf-8")) % count


def shard(config: Config, index: int, count: int) -> Config:
    """The part of ``config`` that shard ``index`` of ``count`` runs.

    Raises:
        ValueError: ``index`` is not in ``0..count-1``.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    kept = tuple(p for p in config.probes if shard_of(p.spec.name, count) == index)
    return replace(config, probes=kept)


def load_shard(path: Path, index: int = 0, count: int = 1) -> Config:
    """Load the config file at ``path`` and keep shard ``index`` of ``count``.

    Every shard keeps every OAuth client: a client is cheap until a probe
    asks it for a token.

    Raises:
        ConfigError: the file does not validate.
    """
    return shard(load_config(path), index, count)


def config_loader(path: Path, index: int = 0, count: int = 1) -> Callable[[], Config]:
    """The daemon's ``load``: shard ``index`` of ``count`` of the file at ``path``, at every call."""
    return lambda: load_shard(path, index, count)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard i/N`` (``0 <= i < N``).

    Raises:
        ValueError: not of the form ``i/N`` with ``0 <= i < N``.
    """
    index_text, slash, count_text = text.strip().partition("/")
    if not slash or not index_text.isdigit() or not count_text.isdigit():
        raise ValueError("invalid shard: expected i/N, like 0/3")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        raise ValueError("invalid shard: need 0 <= i < N")
    return index, count
