"""Names that refer to other sections: dangling references, probe names made twice, shared mailboxes.

Probes (and routes) refer to servers and mailboxes by name, servers and
mailboxes to OAuth clients. :func:`check` runs on the raw data, whatever
else is wrong with the file, so a misspelt reference is reported together
with every other error. It checks only that a name is defined: a
definition with its own errors is reported where it is written, not again
at each place using it. A section that is not a mapping at all hides its
names; references into it are not reported, which would only bury the one
real error.

Routes make probes whose names (:func:`route_probe_name`) must be probe
names, and unique among every probe of the file.

:func:`shared_mailbox_conflicts` runs on the built mailboxes: probes
watching one mailbox share one connection, so its definitions must agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

from smtp_probe.config.errors import Loc, format_loc
from smtp_probe.config.values import PROBE_NAME_EXPECTED, closest, names_hint, parse_probe_name

if TYPE_CHECKING:
    from smtp_probe.probe.spec import Mailbox

_PRESET_PROVIDER: Final = {"microsoft365": "microsoft", "google": "google"}
"""The OAuth provider whose tokens each provider preset's servers take."""


def route_probe_name(route: str, smtp: str, mailbox: str) -> str:
    """The name of the probe ``route`` makes from a sender through ``smtp`` to ``mailbox``."""
    return f"{route}-{smtp}-to-{mailbox}"


def check(raw: Mapping[str, object]) -> Iterator[tuple[Loc, str]]:
    """Every reference to an undefined name and every probe name made twice, located."""
    servers = _names(raw, "smtp_servers")
    mailboxes = _names(raw, "mailboxes")
    clients = _names(raw, "oauth_clients")
    yield from _oauth_references(raw, clients)
    made: dict[str, str] = {}
    """Probe name -> where it is made, for "also ..."."""
    probes = raw.get("probes")
    for index, probe in enumerate(probes if isinstance(probes, list) else []):
        if not isinstance(probe, dict):
            continue
        name = probe.get("name")
        if isinstance(name, str) and _is_probe_name(name):
            if name in made:
                yield (("probes", index, "name"), f"duplicate probe name (also {made[name]})")
            else:
                made[name] = f"probes[{index}]"
        for key, defined, what, section in (
            ("smtp", servers, "server", "smtp_servers"),
            ("mailbox", mailboxes, "mailbox", "mailboxes"),
            ("bounce_mailbox", mailboxes, "mailbox", "mailboxes"),
        ):
            problem = _dangling(probe.get(key), defined, what, section)
            if problem is not None:
                yield ("probes", index, key), problem
    routes = raw.get("routes")
    for name, route in (routes if isinstance(routes, dict) else {}).items():
        if isinstance(route, dict):
            yield from _route(name, route, servers, mailboxes, made)


def _oauth_references(
    raw: Mapping[str, object], clients: list[str] | None
) -> Iterator[tuple[Loc, str]]:
    """``oauth`` of servers and mailboxes names a client, of the preset's provider if any."""
    for section in ("smtp_servers", "mailboxes"):
        entries = raw.get(section)
        if not isinstance(entries, dict):
            continue
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                continue
            client = entry.get("oauth")
            problem = _dangling(client, clients, "OAuth client", "oauth_clients")
            if problem is not None:
                yield (section, name, "oauth"), problem
            elif isinstance(client, str) and clients and client in clients:
                problem = _provider_mismatch(raw, entry.get("provider"), client)
                if problem is not None:
                    yield (section, name, "oauth"), problem


def _provider_mismatch(raw: Mapping[str, object], preset: object, client: str) -> str | None:
    """A Microsoft 365 server given a Google client, or the other way round."""
    if not isinstance(preset, str) or preset not in _PRESET_PROVIDER:
        return None
    section = raw.get("oauth_clients")
    entry = section.get(client) if isinstance(section, dict) else None
    provider = entry.get("provider") if isinstance(entry, dict) else None
    expected = _PRESET_PROVIDER[preset]
    if provider not in _PRESET_PROVIDER.values() or provider == expected:
        return None  # generic and token_command clients may serve anything
    return (
        f"provider {preset} takes tokens of a provider: {expected} client; "
        f"oauth_clients.{client} is provider: {provider}"
    )


def _route(
    name: str,
    route: Mapping[str, object],
    servers: list[str] | None,
    mailboxes: list[str] | None,
    made: dict[str, str],
) -> Iterator[tuple[Loc, str]]:
    """A route's references, and the names of the probes it makes: valid, and not made before."""
    at: Loc = ("routes", name)
    senders = _entries(route.get("senders"))
    targets = _entries(route.get("mailboxes"))
    for index, sender in senders:
        problem = _dangling(sender.get("smtp"), servers, "server", "smtp_servers")
        if problem is not None:
            yield (*at, "senders", index, "smtp"), problem
    for index, target in targets:
        problem = _dangling(target.get("mailbox"), mailboxes, "mailbox", "mailboxes")
        if problem is not None:
            yield (*at, "mailboxes", index, "mailbox"), problem
    if not _is_probe_name(name):
        yield at, f"a route name starts the names of its probes: expected {PROBE_NAME_EXPECTED}"
        return
    for i, sender in senders:
        for j, target in targets:
            smtp, mailbox = sender.get("smtp"), target.get("mailbox")
            if not isinstance(smtp, str) or not isinstance(mailbox, str):
                continue  # reported by the schema
            probe = route_probe_name(name, smtp, mailbox)
            pair = f"senders[{i}] x mailboxes[{j}]"
            if not _is_probe_name(probe):
                yield (
                    at,
                    (f"{pair} makes the probe name {probe!r}, which is not {PROBE_NAME_EXPECTED}"),
                )
            elif probe in made:
                yield at, f"{pair} makes the probe name {probe!r}, which {made[probe]} has already"
            else:
                made[probe] = f"{format_loc(at)} ({pair})"


def _entries(value: object) -> list[tuple[int, Mapping[str, object]]]:
    """The mappings of a list, by index; nothing when it is not a list."""
    if not isinstance(value, list):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, dict)]


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
