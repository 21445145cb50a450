"""YAML config file -> validated, frozen :class:`Config`; every error with its location.

The daemon reads this file at start-up and on every reload, and a reload
swaps in a new config only if it validates, so validation is the whole job:

* **Strict.** Unknown keys, wrong types, bad durations, ports outside
  1-65535, dangling references and duplicate probe names are errors. A
  duration needs a unit (``30s``, not ``30``): a bare number is ambiguous
  in a file that mixes seconds and minutes.
* **Every error at once, with its location.** Errors are collected, never
  raised one by one, and reported in document order as ``location: message``
  with the location as a path into the document (``smtp_servers.relay.port``,
  ``probes[2].to``). YAML syntax errors are reported as ``FILE:LINE:COL``.
  :class:`ConfigError` is the only exception :func:`load_config` raises.
* **Secrets never printed.** Passwords and the token secret become
  :class:`~smtp_probe.secret.Secret` (``repr`` is ``<secret>``); no error
  message echoes a value that could be a secret: type errors name the kind
  of value found, never the value, and file contents are never shown.
* **Frozen values.** The result is frozen dataclasses and tuples, so two
  loads of the same file compare equal and a reload can be diffed.

Secrets come from ``password_file`` (one trailing newline stripped) or from
``password`` with ``${VAR}`` references expanded from the environment
(``$${`` writes a literal ``${``). Expansion applies to ``password`` only:
every other value is taken literally, so a ``$`` in a folder name or an
address never needs escaping. Relative paths (``password_file``,
``ca_file``, ``token_secret_file``) are relative to the config file's
directory, so a config and its secrets can move together.

A probe's ``timeout`` and ``jitter`` default to the ``defaults`` section
but are fitted to the probe's interval: an inherited timeout is capped at
the interval and an inherited jitter at half of it, so a probe that only
sets ``interval: 30s`` is valid. Values written in the probe itself are
checked instead: a timeout longer than the interval (runs would overlap) or
a jitter not shorter than it is an error.

YAML details: a key written twice in one mapping is an error (PyYAML would
silently keep the last); merge keys (``<<: *anchor``) work and may be
overridden; a section left empty (every entry commented out) reads as empty.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.tls import ca_file_problem
from smtp_probe.secret import Secret
from smtp_probe.units import parse_duration, parse_host_port

DEFAULT_INTERVAL: Final = 60.0
DEFAULT_TIMEOUT: Final = 120.0
DEFAULT_JITTER: Final = 5.0
DEFAULT_LISTEN_PORT: Final = 10587
DEFAULT_COMMAND_TIMEOUT: Final = 30.0
DEFAULT_POLL_INTERVAL: Final = 1.0
MIN_TOKEN_SECRET_BYTES: Final = 16

_SMTP_PORTS: Final = {TlsMode.NONE: 25, TlsMode.STARTTLS: 587, TlsMode.TLS: 465}
_IMAP_PORTS: Final = {TlsMode.NONE: 143, TlsMode.STARTTLS: 143, TlsMode.TLS: 993}

_TOP_KEYS: Final = (
    "defaults",
    "token_secret_file",
    "smtp_servers",
    "mailboxes",
    "probes",
    "server",
)
_DEFAULTS_KEYS: Final = ("interval", "timeout", "jitter")
_SMTP_KEYS: Final = (
    "host",
    "port",
    "tls",
    "verify",
    "ca_file",
    "username",
    "password",
    "password_file",
    "helo",
    "timeout",
)
_MAILBOX_KEYS: Final = (
    "host",
    "port",
    "tls",
    "verify",
    "ca_file",
    "username",
    "password",
    "password_file",
    "folder",
    "junk_folders",
    "poll_interval",
    "idle",
    "timeout",
)
_PROBE_KEYS: Final = ("name", "smtp", "mailbox", "from", "to", "interval", "timeout", "jitter")
_SERVER_KEYS: Final = ("listen",)

# A probe name is a Prometheus label value and goes into the Subject header.
_PROBE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ZERO_DURATION: Final = re.compile(r"\s*0+(?:\.0+)?\s*(?:ms|s|m|h)\s*")
_MIN_POLL_INTERVAL: Final = 0.01  # Mailbox.poll_min: the poll delay starts there and doubles
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
# A sanity bound: far beyond any useful probe setting, well inside what timers accept.
_MAX_DURATION: Final = 31 * 24 * 3600.0
_MAX_NAMES_LISTED: Final = 10

_T = TypeVar("_T")
_D = TypeVar("_D")


@dataclass(frozen=True, slots=True)
class ScheduledProbe:
    """A probe's route (:class:`ProbeSpec`) and when to run it."""

    spec: ProbeSpec
    interval: float
    """Seconds between the starts of two runs."""
    jitter: float
    """Up to this many seconds of random shift per run, so probes don't fire in lockstep."""

    @property
    def name(self) -> str:
        """The probe's configured name (also its ``probe`` label)."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where the HTTP server (metrics, status page, reload) listens."""

    host: str = ""
    """Address to bind; ``""`` means all interfaces."""
    port: int = DEFAULT_LISTEN_PORT


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config: the probes to schedule and how the daemon serves them."""

    probes: tuple[ScheduledProbe, ...]
    server: ServerSettings = field(default_factory=ServerSettings)
    token_secret: Secret | None = None
    """Key that signs run tokens; ``None`` means a random key per process."""
    source: Path | None = None
    """The file this config was read from, if any."""
    _by_name: dict[str, ScheduledProbe] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        # Looked up two or three times per run; a dict beats a scan of 1,000 probes.
        object.__setattr__(self, "_by_name", {p.spec.name: p for p in self.probes})

    def probe(self, name: str) -> ScheduledProbe | None:
        """The probe called ``name``, or ``None`` if there is none."""
        return self._by_name.get(name)

    def shard(self, index: int, count: int) -> Config:
        """The part of this config that shard ``index`` of ``count`` runs.

        A probe belongs to shard ``crc32(name) % count``: stable across
        restarts, reloads and machines, and every probe is in exactly one
        shard. Shard 0 of 1 is the whole config.
        """
        if not 0 <= index < count:
            raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
        kept = tuple(p for p in self.probes if shard_of(p.spec.name, count) == index)
        return replace(self, probes=kept)

    @property
    def mailboxes(self) -> tuple[Mailbox, ...]:
        """The distinct mailboxes the probes watch, in order of first use.

        Probes watching the same mailbox (same :attr:`Mailbox.key`) share one
        watcher, so a mailbox is listed once however many probes use it.
        """
        seen: dict[tuple[str, int, str, str], Mailbox] = {}
        for scheduled in self.probes:
            mailbox = scheduled.spec.mailbox
            if mailbox is not None:
                seen.setdefault(mailbox.key, mailbox)
        return tuple(seen.values())


def shard_of(name: str, count: int) -> int:
    """The shard (``0..count-1``) that runs the probe called ``name``."""
    return zlib.crc32(name.encode("utf-8")) % count


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard i/N`` (``0 <= i < N``).

    Raises:
        ValueError: not of the form ``i/N`` with ``0 <= i < N``.
    """
    index_text, slash, count_text = text.strip().partition("/")
    if not slash or not index_text.isdigit() or not count_text.isdigit():
        raise ValueError(f"invalid shard {text!r}: expected i/N, like 0/3")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        raise ValueError(f"invalid shard {text!r}: need 0 <= i < N")
    return index, count


class ConfigError(Exception):
    """The config cannot be used; :attr:`errors` lists every problem found.

    Each error is ``location: message``; ``str()`` is one readable
    multi-line report headed by the file name. No error contains a secret.
    """

    def __init__(self, errors: Sequence[str], source: Path | None = None) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        self.source = source
        super().__init__(self.errors)

    def __str__(self) -> str:
        count = len(self.errors)
        lines = [f"{_display_name(self.source)}: {count} error{'' if count == 1 else 's'}:"]
        lines.extend(f"  - {error}" for error in self.errors)
        return "\n".join(lines)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``.

    ``environ`` supplies ``${VAR}`` references in passwords (default:
    ``os.environ``).

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or does not
            validate; it lists every problem with its location.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"], path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text"], path) from None
    return parse_config(text, source=path, environ=environ)


def parse_config(
    text: str, *, source: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate the YAML document ``text`` into a :class:`Config`.

    ``source`` is the file it came from: it names the file in errors and is
    the directory relative paths are resolved against (the current directory
    without it). ``environ`` supplies ``${VAR}`` references in passwords
    (default: ``os.environ``).

    Raises:
        ConfigError: every problem found, in document order, with its location.
    """
    reader = _Reader(source, os.environ if environ is None else environ)
    return reader.read(text)


def parse_listen(text: str) -> ServerSettings:
    """Parse a listen address: ``HOST:PORT``, ``:PORT``, ``[v6]:PORT``, ``HOST`` or ``PORT``.

    An empty host (``:PORT``) means all interfaces; a missing port is 10587.

    Raises:
        ValueError: the address is malformed; the message says why.
    """
    stripped = text.strip()
    if stripped.isdigit() or (stripped.startswith(":") and stripped.count(":") == 1):
        # parse_host_port insists on a host; here "no host" means all interfaces.
        port_text = stripped.removeprefix(":")
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ValueError(f"invalid port {port_text!r} in {text!r}: expected 1-65535")
        return ServerSettings("", int(port_text))
    host, port = parse_host_port(stripped, DEFAULT_LISTEN_PORT)
    return ServerSettings(host, port)


# --------------------------------------------------------------------- internals


def _display_name(source: Path | None) -> str:
    return str(source) if source is not None else "<config>"


def _join(where: str, key: str) -> str:
    """Extend a location path by a mapping key (quoted when it isn't a plain word)."""
    if not _PLAIN_KEY.fullmatch(key):
        return f"{where}[{key!r}]"
    return f"{where}.{key}" if where else key


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


class _Reported(Exception):
    """A value was bad and its error is already recorded; the reader moves on."""


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A scalar PyYAML cannot construct, and why."""

    reason: str


@dataclass(frozen=True, slots=True, order=True)
class _Problem:
    line: int
    column: int
    seq: int
    text: str


class _Fields:
    """The keys of one YAML mapping, read one by one; remembers which were bad."""

    def __init__(self, reader: _Reader, node: Node, where: str, nodes: dict[str, Node]) -> None:
        self.reader = reader
        self.node = node
        self.where = where
        self.nodes = nodes
        self.ok = True
        self.bad: set[str] = set()

    def has(self, key: str) -> bool:
        """Whether ``key`` is written in the mapping."""
        return key in self.nodes

    def valid(self, key: str) -> bool:
        """Whether ``key`` is written and its value was good."""
        return key in self.nodes and key not in self.bad

    def path(self, key: str) -> str:
        """Location of ``key`` in the document."""
        return _join(self.where, key)

    def at(self, key: str) -> Node:
        """The value node of ``key``, or the mapping itself when the key is absent."""
        return self.nodes.get(key, self.node)

    def get(self, key: str, parse: Callable[[Node, str], _T], default: _D) -> _T | _D:
        """Parse ``key`` with ``parse``; ``default`` when it is absent or bad (bad is recorded)."""
        node = self.nodes.get(key)
        if node is None:
            return default
        try:
            return parse(node, self.path(key))
        except _Reported:
            self.ok = False
            self.bad.add(key)
            return default

    def error(self, key: str, message: str) -> None:
        """Record a problem with ``key`` (at its value, or at the mapping if it is absent)."""
        self.reader.error(self.at(key), self.path(key), message)
        self.ok = False

    def error_here(self, message: str) -> None:
        """Record a problem with the mapping as a whole."""
        self.reader.error(self.node, self.where, message)
        self.ok = False


@dataclass(slots=True)
class _Defaults:
    interval: float | None = DEFAULT_INTERVAL
    timeout: float | None = DEFAULT_TIMEOUT
    jitter: float | None = DEFAULT_JITTER


class _Reader:
    """One validation pass over one document; collects every problem it meets."""

    def __init__(self, source: Path | None, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.base_dir = source.parent if source is not None else Path()
        self.problems: list[_Problem] = []
        self.loader = yaml.SafeLoader("")

    # -- recording

    def error(self, node: Node, where: str, message: str) -> None:
        """Record ``where: message`` at the position of ``node``."""
        mark = node.start_mark
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        text = f"{where}: {message}" if where else message
        self.problems.append(_Problem(line, column, len(self.problems), text))

    def fail(self, node: Node, where: str, message: str) -> _Reported:
        """Record a problem; the caller raises the result to abandon the value being read."""
        self.error(node, where, message)
        return _Reported()

    def _whole_file_error(self, message: str, mark: yaml.Mark | None = None) -> ConfigError:
        name = _display_name(self.source)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        return ConfigError([f"{where}: {message}"], self.source)

    # -- the document

    def read(self, text: str) -> Config:
        """Validate the whole document.

        Raises:
            ConfigError: any problem, all of them listed.
        """
        root = self._compose(text)
        if root is None:
            raise self._whole_file_error("the file is empty; it needs at least a 'probes' list")
        if not isinstance(root, MappingNode):
            raise self._whole_file_error(
                f"expected a mapping of sections ({', '.join(_TOP_KEYS)}), got {self.kind(root)}",
                root.start_mark,
            )
        top = self.fields(root, "", _TOP_KEYS, required=("probes",))
        if top is None:  # unreachable: root is a mapping; keeps the types honest
            raise self._whole_file_error("the document is not a mapping")
        defaults = self._defaults(top)
        token_secret = top.get("token_secret_file", self._token_secret, None)
        servers = self._named(top, "smtp_servers", self._smtp_server)
        mailboxes = self._named(top, "mailboxes", self._mailbox)
        probes = self._probes(top, defaults, servers, mailboxes)
        server = self._server(top)
        if self.problems:
            raise ConfigError([p.text for p in sorted(self.problems)], self.source)
        return Config(
            probes=tuple(probes), server=server, token_secret=token_secret, source=self.source
        )

    def _compose(self, text: str) -> Node | None:
        """Parse ``text`` into a node tree; any YAML error is one located ConfigError."""
        loader: yaml.SafeLoader | None = None
        try:
            loader = yaml.SafeLoader(text)
            return loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            # Only problem and context: str(exc) would quote the offending
            # line, and that line may hold a password.
            # PyYAML's order: "while parsing X started at L:C: expected Y".
            message = exc.problem or "invalid YAML"
            if exc.context:
                where = exc.context_mark
                started = (
                    f" started at line {where.line + 1}, column {where.column + 1}"
                    if where is not None and where != exc.problem_mark
                    else ""
                )
                message = f"{exc.context}{started}: {message}"
            raise self._whole_file_error(
                f"invalid YAML: {message}", exc.problem_mark or exc.context_mark
            ) from None
        except yaml.reader.ReaderError as exc:  # a control character in the text
            line = text.count("\n", 0, exc.position)
            column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
            mark = yaml.Mark(exc.name, exc.position, line, column, None, 0)
            raise self._whole_file_error(
                f"invalid YAML: character #x{exc.character:04x} is not allowed", mark
            ) from None
        except yaml.YAMLError as exc:
            raise self._whole_file_error(f"invalid YAML: {type(exc).__name__}") from None
        except RecursionError:
            raise self._whole_file_error("invalid YAML: nested too deeply") from None
        finally:
            if loader is not None:
                loader.dispose()

    def _defaults(self, top: _Fields) -> _Defaults:
        defaults = _Defaults()
        if not top.has("defaults"):
            return defaults
        fields = self.fields(top.at("defaults"), "defaults", _DEFAULTS_KEYS, null_is_empty=True)
        if fields is None:
            return _Defaults(None, None, None)
        defaults.interval = fields.get("interval", self.duration, DEFAULT_INTERVAL)
        defaults.timeout = fields.get("timeout", self.duration, DEFAULT_TIMEOUT)
        defaults.jitter = fields.get("jitter", self.jitter, DEFAULT_JITTER)
        for key in fields.bad:
            setattr(defaults, key, None)
        if (
            fields.valid("jitter")
            and fields.valid("interval")
            and defaults.jitter is not None
            and defaults.interval is not None
            and defaults.jitter >= defaults.interval
        ):
            fields.error(
                "jitter",
                f"{_seconds(defaults.jitter)} is not shorter than the interval "
                f"{_seconds(defaults.interval)}",
            )
        return defaults

    def _named(
        self, top: _Fields, section: str, build: Callable[[Node, str], _T]
    ) -> dict[str, tuple[Node, _T | None]] | None:
        """Read a section of named definitions: name -> (node, value or ``None`` if bad).

        ``None`` when the section itself is malformed: references into it
        can't be checked then, and reporting each as unknown would only bury
        the one real error.
        """
        named: dict[str, tuple[Node, _T | None]] = {}
        if not top.has(section):
            return named
        fields = self.fields(top.at(section), section, None, null_is_empty=True)
        if fields is None:
            return None
        for name, node in fields.nodes.items():
            try:
                named[name] = (node, build(node, fields.path(name)))
            except _Reported:
                named[name] = (node, None)
        return named

    # -- SMTP servers and mailboxes

    def _smtp_server(self, node: Node, where: str) -> SmtpServer:
        fields = self.fields(node, where, _SMTP_KEYS, required=("host",))
        if fields is None:
            raise _Reported
        host = fields.get("host", self.host, "")
        tls = fields.get("tls", self.tls_mode, TlsMode.STARTTLS)
        port = fields.get("port", self.port, _SMTP_PORTS[tls])
        tls_settings = self._tls_settings(fields)
        username, password = self._credentials(fields, username_required=False)
        helo = fields.get("helo", self.helo, None)
        timeout = fields.get("timeout", self.duration, DEFAULT_COMMAND_TIMEOUT)
        if not fields.ok:
            raise _Reported
        return SmtpServer(
            host=host,
            port=port,
            tls=tls,
            tls_settings=tls_settings,
            username=username,
            password=password,
            helo=helo,
            timeout=timeout,
        )

    def _mailbox(self, node: Node, where: str) -> Mailbox:
        fields = self.fields(node, where, _MAILBOX_KEYS, required=("host", "username"))
        if fields is None:
            raise _Reported
        host = fields.get("host", self.host, "")
        tls = fields.get("tls", self.tls_mode, TlsMode.TLS)
        port = fields.get("port", self.port, _IMAP_PORTS[tls])
        tls_settings = self._tls_settings(fields)
        username, password = self._credentials(fields, username_required=True)
        folder = fields.get("folder", self.string, "INBOX")
        junk_folders = fields.get("junk_folders", self.string_list, None)
        poll_interval = fields.get("poll_interval", self.duration, DEFAULT_POLL_INTERVAL)
        if fields.valid("poll_interval") and poll_interval < _MIN_POLL_INTERVAL:
            fields.error("poll_interval", f"must be at least {_MIN_POLL_INTERVAL * 1000:g}ms")
        idle = fields.get("idle", self.boolean, True)
        timeout = fields.get("timeout", self.duration, DEFAULT_COMMAND_TIMEOUT)
        if not fields.ok or username is None or password is None:
            raise _Reported
        return Mailbox(
            host=host,
            port=port,
            username=username,
            password=password,
            tls=tls,
            tls_settings=tls_settings,
            folder=folder,
            junk_folders=junk_folders,
            idle=idle,
            poll_interval=poll_interval,
            timeout=timeout,
        )

    def _tls_settings(self, fields: _Fields) -> TlsSettings:
        verify = fields.get("verify", self.boolean, True)
        ca_file = fields.get("ca_file", self.ca_file, None)
        return TlsSettings(verify=verify, ca_file=ca_file)

    def _credentials(
        self, fields: _Fields, *, username_required: bool
    ) -> tuple[str | None, Secret | None]:
        """Username and password of a server; the password from ``password`` or ``password_file``."""
        username = fields.get("username", self.string, None)
        password = fields.get("password", self.password, None)
        from_file = fields.get("password_file", self.password_file, None)
        has_password = fields.has("password") or fields.has("password_file")
        if fields.has("password") and fields.has("password_file"):
            fields.error("password_file", "give either password or password_file, not both")
        if username_required and not has_password:
            fields.error_here("needs password or password_file")
        elif not username_required and has_password and not fields.has("username"):
            key = "password" if fields.has("password") else "password_file"
            fields.error(key, "a password needs a username")
        elif not username_required and fields.has("username") and not has_password:
            fields.error("username", "a username needs password or password_file")
        return username, password or from_file

    # -- probes

    def _probes(
        self,
        top: _Fields,
        defaults: _Defaults,
        servers: dict[str, tuple[Node, SmtpServer | None]] | None,
        mailboxes: dict[str, tuple[Node, Mailbox | None]] | None,
    ) -> list[ScheduledProbe]:
        if not top.has("probes"):
            return []
        node = top.at("probes")
        if isinstance(node, ScalarNode) and self._is_null(node):
            self.error(node, "probes", "no probes are configured; add at least one")
            return []
        if not isinstance(node, SequenceNode):
            self.error(node, "probes", f"expected a list of probes, got {self.kind(node)}")
            return []
        if not node.value:
            self.error(node, "probes", "no probes are configured; add at least one")
            return []
        probes: list[ScheduledProbe] = []
        names: dict[str, str] = {}
        used_mailboxes: list[tuple[str, Mailbox]] = []
        for index, item in enumerate(node.value):
            where = f"probes[{index}]"
            scheduled, mailbox_name = self._probe(item, where, defaults, servers, mailboxes, names)
            if scheduled is not None:
                probes.append(scheduled)
                if scheduled.spec.mailbox is not None and mailbox_name is not None:
                    used_mailboxes.append((mailbox_name, scheduled.spec.mailbox))
        self._check_shared_mailboxes(used_mailboxes, mailboxes)
        return probes

    def _probe(
        self,
        node: Node,
        where: str,
        defaults: _Defaults,
        servers: dict[str, tuple[Node, SmtpServer | None]] | None,
        mailboxes: dict[str, tuple[Node, Mailbox | None]] | None,
        names: dict[str, str],
    ) -> tuple[ScheduledProbe | None, str | None]:
        fields = self.fields(node, where, _PROBE_KEYS, required=("name", "smtp", "from", "to"))
        if fields is None:
            return None, None
        name = fields.get("name", self.probe_name, "")
        if fields.valid("name"):
            if name in names:
                fields.error("name", f"duplicate probe name {name!r} (also {names[name]})")
            else:
                names[name] = where
        mail_from = fields.get("from", self.address, "")
        rcpt_to = fields.get("to", self.address, "")
        smtp_name = fields.get("smtp", self.string, None)
        smtp = self._reference(fields, "smtp", smtp_name, servers, "server", "smtp_servers")
        mailbox_name = fields.get("mailbox", self.string, None)
        mailbox = self._reference(
            fields, "mailbox", mailbox_name, mailboxes, "mailbox", "mailboxes"
        )
        interval = fields.get("interval", self.duration, defaults.interval)
        if "interval" in fields.bad:
            interval = None
        timeout = fields.get("timeout", self.duration, None)
        jitter = fields.get("jitter", self.jitter, None)
        if interval is not None:
            if timeout is not None and timeout > interval:
                fields.error(
                    "timeout",
                    f"{_seconds(timeout)} is longer than the interval {_seconds(interval)}; "
                    "runs would overlap",
                )
            elif not fields.has("timeout") and defaults.timeout is not None:
                timeout = min(defaults.timeout, interval)
            if jitter is not None and jitter >= interval:
                fields.error(
                    "jitter",
                    f"{_seconds(jitter)} is not shorter than the interval {_seconds(interval)}",
                )
            elif not fields.has("jitter") and defaults.jitter is not None:
                jitter = min(defaults.jitter, interval / 2)

        if (
            not fields.ok
            or smtp is None
            or (fields.has("mailbox") and mailbox is None)
            or interval is None
            or timeout is None
            or jitter is None
        ):
            return None, None
        spec = ProbeSpec(
            name=name,
            smtp=smtp,
            mail_from=mail_from,
            rcpt_to=rcpt_to,
            mailbox=mailbox,
            timeout=timeout,
        )
        return ScheduledProbe(spec=spec, interval=interval, jitter=jitter), mailbox_name

    def _reference(
        self,
        fields: _Fields,
        key: str,
        name: str | None,
        defined: Mapping[str, tuple[Node, _T | None]] | None,
        what: str,
        section: str,
    ) -> _T | None:
        """Resolve a probe's reference to a named definition; ``None`` if absent or bad."""
        if name is None or defined is None:
            return None
        if name not in defined:
            known = sorted(defined)
            suggestion = _suggest(name, known)
            if suggestion is not None:
                hint = f"; did you mean {suggestion!r}?"
            elif not known:
                hint = f" ({section} defines none)"
            elif len(known) <= _MAX_NAMES_LISTED:
                hint = f" (defined: {', '.join(known)})"
            else:
                hint = ""
            fields.error(key, f"unknown {what} {name!r}{hint}")
            return None
        # A definition with its own errors was reported there; don't repeat it here.
        return defined[name][1]

    def _check_shared_mailboxes(
        self,
        used: list[tuple[str, Mailbox]],
        mailboxes: dict[str, tuple[Node, Mailbox | None]] | None,
    ) -> None:
        """Two definitions of one mailbox must agree: probes using it share one watcher."""
        first: dict[tuple[str, int, str, str], tuple[str, Mailbox]] = {}
        reported: set[str] = set()
        for name, mailbox in used:
            other_name, other = first.setdefault(mailbox.key, (name, mailbox))
            if other_name == name or other == mailbox or name in reported or mailboxes is None:
                continue
            reported.add(name)
            self.error(
                mailboxes[name][0],
                _join("mailboxes", name),
                f"watches the same mailbox as mailboxes.{other_name} "
                f"({mailbox.username} in {mailbox.folder} at {mailbox.address}) "
                "with different settings; probes watching one mailbox share one "
                "connection, so define it once",
            )

    # -- server and token secret

    def _server(self, top: _Fields) -> ServerSettings:
        if not top.has("server"):
            return ServerSettings()
        fields = self.fields(top.at("server"), "server", _SERVER_KEYS, null_is_empty=True)
        if fields is None:
            return ServerSettings()
        return fields.get("listen", self.listen, ServerSettings())

    def _token_secret(self, node: Node, where: str) -> Secret:
        path = self.path(node, where)
        try:
            raw = path.read_bytes().strip()
        except OSError as exc:
            raise self.fail(node, where, f"cannot read {path}: {exc.strerror or exc}") from None
        if len(raw) < MIN_TOKEN_SECRET_BYTES:
            raise self.fail(
                node,
                where,
                f"{path} holds {len(raw)} bytes; at least {MIN_TOKEN_SECRET_BYTES} are needed "
                "(make one with: openssl rand -hex 32)",
            )
        try:
            return Secret(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise self.fail(
                node, where, f"{path} is not UTF-8 text (make one with: openssl rand -hex 32)"
            ) from None

    # -- mappings

    def fields(
        self,
        node: Node,
        where: str,
        allowed: Sequence[str] | None,
        *,
        required: Sequence[str] = (),
        null_is_empty: bool = False,
    ) -> _Fields | None:
        """Check that ``node`` is a mapping with string keys out of ``allowed`` (any if ``None``).

        Unknown, duplicate and missing keys are recorded. ``None`` when the
        node is not a mapping at all (recorded too). YAML merge keys (``<<``)
        are honoured. With ``null_is_empty`` an empty value (a section whose
        entries are all commented out) reads as an empty mapping.
        """
        if null_is_empty and isinstance(node, ScalarNode) and self._is_null(node):
            return _Fields(self, node, where, {})
        if not isinstance(node, MappingNode):
            self.error(node, where, f"expected a mapping, got {self.kind(node)}")
            return None
        nodes: dict[str, Node] = {}
        for key_node, value_node in self._pairs(node, where, frozenset()):
            key = self._key(key_node, where)
            if key is None:
                continue
            if allowed is not None and key not in allowed:
                suggestion = _suggest(key, allowed)
                hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
                self.error(
                    key_node,
                    _join(where, key),
                    f"unknown key{hint}; allowed keys: {', '.join(allowed)}",
                )
                continue
            nodes[key] = value_node
        for key in required:
            if key not in nodes:
                self.error(node, _join(where, key), "required key is missing")
        fields = _Fields(self, node, where, nodes)
        fields.ok = all(key in nodes for key in required)
        return fields

    def _pairs(
        self, node: MappingNode, where: str, seen: frozenset[int]
    ) -> list[tuple[Node, Node]]:
        """The key/value pairs of a mapping with ``<<`` merges applied, later keys winning.

        Duplicate keys written in one mapping are errors (PyYAML silently
        keeps the last); keys brought in by a merge may be overridden.
        """
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        written: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                # Earlier sources win, so add them last.
                for source in reversed(sources):
                    if not isinstance(source, MappingNode) or source is node or id(source) in seen:
                        self.error(source, where, "'<<' must merge a mapping or a list of them")
                        continue
                    merged.extend(self._pairs(source, where, seen | {id(node)}))
                continue
            if isinstance(key_node, ScalarNode):
                key = key_node.value
                if isinstance(key, str) and key in written:
                    self.error(key_node, _join(where, key), "duplicate key")
                written.add(key)
            own.append((key_node, value_node))
        return merged + own

    def _key(self, node: Node, where: str) -> str | None:
        if isinstance(node, ScalarNode):
            try:
                key = self.value(node, where)
            except _Reported:
                return None
            if isinstance(key, str) and key:
                return key
        self.error(node, where, f"keys must be non-empty strings, got {self.kind(node)}")
        return None

    # -- scalars

    def value(self, node: ScalarNode, where: str) -> object:
        """The Python value of a scalar, as ``yaml.safe_load`` would give it."""
        value = self._construct(node)
        if isinstance(value, _Unreadable):
            raise self.fail(node, where, value.reason)
        return value

    def _construct(self, node: ScalarNode) -> object:
        """The value of a scalar, or why it has none (an unknown or mismatched ``!tag``)."""
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.loader.recursive_objects.clear()
            return _Unreadable(exc.problem or f"cannot read this value as {node.tag}")
        except Exception:  # noqa: BLE001 - PyYAML's constructors raise anything on "!!int x"
            self.loader.recursive_objects.clear()
            return _Unreadable(f"cannot read this value as {node.tag}")

    def _is_null(self, node: ScalarNode) -> bool:
        return self._construct(node) is None

    def kind(self, node: Node) -> str:
        """What a node holds, for "expected X, got Y"; never the value itself (it may be secret)."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        value = self._construct(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, _Unreadable):
            return f"a value tagged {node.tag}"
        kinds: list[tuple[type, str]] = [
            (bool, "a boolean"),
            (int, "an integer"),
            (float, "a number"),
            (str, "a string"),
            (bytes, "binary data"),
        ]
        if value is None:
            return "nothing (null)"
        for python_type, description in kinds:
            if isinstance(value, python_type):
                return description
        return "a date" if type(value).__module__ == "datetime" else f"a {type(value).__name__}"

    def typed(self, node: Node, where: str, want: type[_T], expected: str) -> _T:
        """The value of ``node`` if it is a ``want`` (a bool never passes as an int)."""
        if isinstance(node, ScalarNode):
            value = self.value(node, where)
            if isinstance(value, want) and not (isinstance(value, bool) and want is not bool):
                return value
        raise self.fail(node, where, f"expected {expected}, got {self.kind(node)}")

    def string(self, node: Node, where: str) -> str:
        """A non-empty string."""
        value = self.typed(node, where, str, "a string")
        if not value.strip():
            raise self.fail(node, where, "must not be empty")
        return value

    def string_list(self, node: Node, where: str) -> tuple[str, ...]:
        """A list of non-empty strings (an empty list is allowed)."""
        if not isinstance(node, SequenceNode):
            raise self.fail(node, where, f"expected a list of strings, got {self.kind(node)}")
        items: list[str] = []
        failed = False
        for index, item in enumerate(node.value):
            try:
                items.append(self.string(item, f"{where}[{index}]"))
            except _Reported:
                failed = True
        if failed:
            raise _Reported
        return tuple(items)

    def boolean(self, node: Node, where: str) -> bool:
        """``true`` or ``false`` (quoted strings are not booleans)."""
        return self.typed(node, where, bool, "true or false")

    def port(self, node: Node, where: str) -> int:
        """A TCP port number."""
        value = self.typed(node, where, int, "a port number 1-65535")
        if not 0 < value < 65536:
            raise self.fail(node, where, f"port {value} is outside 1-65535")
        return value

    def duration(self, node: Node, where: str) -> float:
        """A positive duration with a unit: ``500ms``, ``30s``, ``5m``, ``1h``."""
        return self._duration(node, where, allow_zero=False)

    def jitter(self, node: Node, where: str) -> float:
        """A duration, where ``0s`` (no jitter) is allowed too."""
        return self._duration(node, where, allow_zero=True)

    def _duration(self, node: Node, where: str, *, allow_zero: bool) -> float:
        if isinstance(node, ScalarNode):
            value = self.value(node, where)
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if isinstance(value, str):
                if _is_number(value):
                    raise self.fail(
                        node,
                        where,
                        f"invalid duration {value!r}: expected a number with a unit, "
                        "like 500ms, 30s, 5m or 1h",
                    )
                if allow_zero and _ZERO_DURATION.fullmatch(value):
                    return 0.0
                try:
                    seconds = parse_duration(value)
                except ValueError as exc:
                    raise self.fail(node, where, str(exc)) from None
                if seconds > _MAX_DURATION:
                    raise self.fail(
                        node,
                        where,
                        f"invalid duration {value!r}: at most {_MAX_DURATION / 3600:g}h (31 days)",
                    )
                return seconds
        raise self.fail(node, where, f"expected a duration like 30s, got {self.kind(node)}")

    def tls_mode(self, node: Node, where: str) -> TlsMode:
        """``none``, ``starttls`` or ``tls``."""
        choices = [mode.value for mode in TlsMode]
        expected = f"one of {', '.join(choices)}"
        value = self.typed(node, where, str, expected)
        try:
            return TlsMode(value)
        except ValueError:
            suggestion = _suggest(value, choices)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise self.fail(node, where, f"{value!r} is not {expected}{hint}") from None

    def host(self, node: Node, where: str) -> str:
        """A host name or IP address, without a port."""
        value = self.string(node, where)
        if any(c.isspace() for c in value):
            raise self.fail(node, where, f"{value!r} contains whitespace")
        if value.startswith("["):
            raise self.fail(node, where, f"{value!r}: write IPv6 addresses without brackets")
        if ":" in value:
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                raise self.fail(
                    node, where, f"{value!r}: put the port in 'port', not in the host"
                ) from None
        return value

    def helo(self, node: Node, where: str) -> str:
        """The name to greet with: one ASCII word."""
        value = self.string(node, where)
        if any(c.isspace() for c in value) or not value.isascii():
            raise self.fail(node, where, f"{value!r} is not a host name")
        return value

    def address(self, node: Node, where: str) -> str:
        """A bare mail address ``local@domain``."""
        value = self.string(node, where)
        local, _, domain = value.partition("@")
        if (
            value.count("@") != 1
            or not local
            or not domain
            or any(c.isspace() or c in "<>" for c in value)
        ):
            raise self.fail(node, where, f"{value!r} is not a mail address like probe@example.com")
        return value

    def probe_name(self, node: Node, where: str) -> str:
        """A name fit for a Prometheus label value and a Subject header."""
        value = self.typed(node, where, str, "a string")
        if not _PROBE_NAME.fullmatch(value):
            raise self.fail(
                node,
                where,
                f"invalid probe name {value!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
            )
        return value

    def listen(self, node: Node, where: str) -> ServerSettings:
        """``HOST:PORT``, ``:PORT`` or ``[v6]:PORT``."""
        value = self.typed(node, where, str, "a string like ':10587' or 'HOST:PORT'")
        try:
            return parse_listen(value)
        except ValueError as exc:
            raise self.fail(node, where, str(exc)) from None

    # -- files and secrets

    def path(self, node: Node, where: str) -> Path:
        """A file path; relative paths are relative to the config file's directory."""
        text = self.string(node, where)
        if "\0" in text:
            raise self.fail(node, where, "a path cannot contain a NUL character")
        try:
            path = Path(text).expanduser()
        except RuntimeError as exc:  # "~" with no home directory to expand it to
            raise self.fail(node, where, str(exc)) from None
        # normpath, not resolve(): keep symlinks (a Kubernetes secret volume
        # swaps one on rotation) but show "a/../b" as "b" in errors.
        return Path(os.path.normpath((self.base_dir / path).absolute()))

    def ca_file(self, node: Node, where: str) -> Path:
        """A readable PEM file of CA certificates."""
        path = self.path(node, where)
        problem = ca_file_problem(path)
        if problem is not None:
            raise self.fail(node, where, problem)
        return path

    def password(self, node: Node, where: str) -> Secret:
        """A password written in the file, with ``${VAR}`` expanded from the environment."""
        value = self.typed(node, where, str, "a string")
        expanded = self._expand(value, node, where)
        if not expanded:
            raise self.fail(node, where, "must not be empty")
        return Secret(expanded)

    def password_file(self, node: Node, where: str) -> Secret:
        """The content of a file, less one trailing newline."""
        path = self.path(node, where)
        try:
            content = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise self.fail(node, where, f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise self.fail(node, where, f"{path} is not UTF-8 text") from None
        content = content.removesuffix("\n").removesuffix("\r")
        if not content:
            raise self.fail(node, where, f"{path} is empty")
        return Secret(content)

    def _expand(self, text: str, node: Node, where: str) -> str:
        """Replace ``${VAR}`` by its value and ``$${`` by ``${``; errors never quote ``text``."""
        parts: list[str] = []
        failed = False
        index = 0
        while index < len(text):
            if text.startswith("$${", index):
                parts.append("${")
                index += 3
            elif text.startswith("${", index):
                end = text.find("}", index + 2)
                if end < 0:
                    raise self.fail(
                        node, where, "unterminated '${' (write '$${' for a literal '${')"
                    )
                name = text[index + 2 : end]
                if not _ENV_NAME.fullmatch(name):
                    self.error(
                        node,
                        where,
                        "'${' must be followed by a variable name and '}' "
                        "(write '$${' for a literal '${')",
                    )
                    failed = True
                elif name not in self.environ:
                    self.error(node, where, f"environment variable {name} is not set")
                    failed = True
                else:
                    parts.append(self.environ[name])
                index = end + 1
            else:
                parts.append(text[index])
                index += 1
        if failed:
            raise _Reported
        return "".join(parts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
