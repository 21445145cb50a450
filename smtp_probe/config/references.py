"""Probes refer to servers and mailboxes by name: dangling references, duplicate names, shared mailboxes.

:func:`check` runs on the raw data, whatever else is wrong with the file,
so a misspelt reference is reported together with every other error. It
checks only that a name is defined: a definition with its own errors is
reported where it is written, not again at each probe using it. A section
that is not a mapping at all hides its names; references into it are not
reported, which would only bury the one real error.

:func:`shared_mailbox_conflicts` runs on the built mailboxes: probes
watching one mailbox share one connection, so its definitions must agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from smtp_probe.config.errors import Loc
from smtp_probe.config.values import closest, names_hint, parse_probe_name

if TYPE_CHECKING:
    from smtp_probe.probe.spec import Mailbox


def check(raw: Mapping[str, object]) -> Iterator[tuple[Loc, str]]:
    """Every reference to an undefined name and every duplicate probe name, located."""
    probes = raw.get("probes")
    if not isinstance(probes, list):
        return
    servers = _names(raw, "smtp_servers")
    mailboxes = _names(raw, "mailboxes")
    first: dict[str, int] = {}
    for index, probe in enumerate(probes):
        if not isinstance(probe, dict):
            continue
        name = probe.get("name")
        if isinstance(name, str) and _is_probe_name(name):
            if name in first:
                yield (
                    ("probes", index, "name"),
                    f"duplicate probe name (also probes[{first[name]}])",
                )
            else:
                first[name] = index
        for key, defined, what, section in (
            ("smtp", servers, "server", "smtp_servers"),
            ("mailbox", mailboxes, "mailbox", "mailboxes"),
        ):
            problem = _dangling(probe.get(key), defined, what, section)
            if problem is not None:
                yield ("probes", index, key), problem


def shared_mailbox_conflicts(used: Iterable[tuple[str, Mailbox]]) -> Iterator[tuple[Loc, str]]:
    """Mailbox definitions (by name) that watch one mailbox with different settings."""
    first: dict[tuple[str, int, str, str], tuple[str, Mailbox]] = {}
    reported: set[str] = set()
    for name, mailbox in used:
        other_name, other = first.setdefault(mailbox.key, (name, mailbox))
        if other_name == name or other == mailbox or name in reported:
            continue
        reported.add(name)
        yield (
            ("mailboxes", name),
            f"watches the same mailbox (host, port, username and folder) as "
            f"mailboxes.{other_name} with different settings; probes watching one mailbox "
            "share one connection, so define it once",
        )


def _names(raw: Mapping[str, object], section: str) -> list[str] | None:
    """The names a section defines; ``None`` when it is malformed (names unknown)."""
    value = raw.get(section)
    if value is None:
        return []
    if not isinstance(value, dict):
        return None
    return sorted(value)


def _dangling(name: object, defined: list[str] | None, what: str, section: str) -> str | None:
    if not isinstance(name, str) or not name.strip() or defined is None or name in defined:
        return None  # absent, bad (reported by the schema), or fine
    suggestion = closest(name, defined)
    if suggestion is not None:
        return f"unknown {what}; did you mean {suggestion!r}?"
    if not defined:
        return f"unknown {what} ({section} defines none)"
    return f"unknown {what}{names_hint(defined)}"


def _is_probe_name(name: str) -> bool:
    try:
        parse_probe_name(name)
    except ValueError:
        return False
    return True
