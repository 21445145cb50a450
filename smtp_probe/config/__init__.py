"""The config file: one typed schema, YAML with every error located, values shared with the CLI.

* **Strict.** Unknown keys, wrong types, bad durations, ports outside
  1-65535, dangling references and duplicate probe names are errors. A
  duration needs a unit (``30s``, not ``30``): a bare number is ambiguous
  in a file that mixes seconds and minutes.
* **Every error at once, with its location.** Errors are collected, never
  raised one by one, and reported in document order as
  ``FILE:LINE:COL: PATH: MESSAGE``, the path leading into the document
  (``smtp_servers.relay.port``, ``probes[2].to``). :class:`ConfigError` is
  the only exception :func:`load_config` raises.
* **Secrets never printed.** Passwords and the token secret become
  :class:`~smtp_probe.secret.Secret` (``repr`` is ``<secret>``); no error
  message echoes a value from the file: type errors name the kind of value
  found, and the location points at the value.
* **Frozen values.** The result is frozen dataclasses and tuples, so two
  loads of the same file compare equal and a reload can be diffed.

Secrets come from a ``*_file`` key (one trailing newline stripped) or
from ``password`` (or an OAuth client's ``client_secret`` and
``refresh_token``) with ``${VAR}`` references expanded from the
environment (``$${`` writes a literal ``${``). Expansion applies to those
secret keys only: every other value is taken literally, so a ``$`` in a
folder name or an address never needs escaping. Relative paths (every
``*_file`` key, a token command's program) are relative to the config
file's directory, so a config and its secrets can move together.

``routes`` are shorthand: each expands into ordinary probes, one per
sender and mailbox, named ``{route}-{smtp}-to-{mailbox}``. Each OAuth
client becomes one token cache, shared by every server and mailbox that
names it.

A probe's ``timeout`` and ``jitter`` default to the ``defaults`` section but
are fitted to the probe's interval (see :mod:`.timing`). YAML details: a key
written twice in one mapping is an error (PyYAML would silently keep the
last); merge keys (``<<: *anchor``) work and may be overridden; a section
left empty (every entry commented out) reads as empty.

The modules, one job each: :mod:`.values` (value types and defaults, shared
with the CLI), :mod:`.model` (the schema), :mod:`.document` (YAML with
positions), :mod:`.messages` (schema errors in our words), :mod:`.references`
and :mod:`.timing` (rules across keys), :mod:`.load` (the whole load),
:mod:`.runtime` (the result), :mod:`.schema` (JSON Schema for editors).

Importing this package is cheap (no pydantic, no YAML, no dataclasses):
``smtp-probe check`` with flags needs only :mod:`.values`, which runs this
``__init__`` first, and it is started every minute. The daemon's modules
take the runtime types from :mod:`.runtime` and the error from
:mod:`.errors`; :func:`load_config` and :func:`parse_config` import the
schema on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtp_probe.config.runtime import Config

__all__ = ["load_config", "parse_config"]


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path`` (see :func:`.load.load_config`).

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or does not
            validate; it lists every problem with its location.
    """
    from smtp_probe.config import load  # the schema is heavy: imported on first use

    return load.load_config(path, environ)


def parse_config(
    text: str,
    *,
    source: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate the YAML document ``text`` (see :func:`.load.parse_config`).

    Raises:
        ConfigError: every problem found, in document order, with its location.
    """
    from smtp_probe.config import load  # the schema is heavy: imported on first use

    return load.parse_config(text, source=source, environ=environ)
