"""The schema of the config file, declared once: pydantic models of every section and key.

Each key says its Python type, its default, its help text (the JSON
Schema's ``description``, which editors show) and its :class:`Value`: how a
YAML scalar becomes that type, through the parsers of
:mod:`smtp_probe.config.values` that the CLI uses too. Models are strict
(a quoted ``"yes"`` is not a boolean, ``true`` is not a port), reject
unknown keys and are frozen.

Reading a value may need the world outside the file: ``${VAR}`` in a
``password`` comes from the environment, ``password_file``, ``ca_file`` and
``token_secret_file`` are read relative to the config file. Validation
takes a :class:`Context` with both, so a validated :class:`ConfigFile`
holds secrets and checked paths, not text still to be resolved.

Rules that tie keys together (one password, not two; a jitter shorter than
the interval; references between sections) are each model's :meth:`rules`:
they run on the raw mapping even when some of its keys are bad, so one
load reports every error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
)
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from smtp_probe.config import references, timing, values
from smtp_probe.config.errors import Loc
from smtp_probe.config.runtime import ServerSettings, parse_listen
from smtp_probe.config.values import TlsMode
from smtp_probe.secret import Secret

ERROR_TYPE: Final = "smtp_probe_config"
"""The pydantic error type of every message written here; its text is shown as is."""

Violation = tuple[Loc, str]
"""A rule's finding: where (relative to the mapping; ``()`` is the mapping) and what."""


@dataclass(frozen=True, slots=True)
class Context:
    """What reading values needs from outside the file."""

    base_dir: Path = field(default_factory=Path)
    """Relative paths are relative to this: the config file's directory."""
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    """Where ``${VAR}`` in a password is looked up."""


def _error(message: str) -> PydanticCustomError:
    # No context: pydantic would format {...} in the message otherwise.
    return PydanticCustomError(ERROR_TYPE, message)


@dataclass(frozen=True, slots=True)
class Value:
    """How one kind of YAML scalar is read: its YAML type, its parser, its JSON Schema.

    A value of another YAML type is "expected X, got Y" (a boolean never
    passes for an integer); the parser's :class:`ValueError` becomes the
    message. Neither shows the value.
    """

    expected: str
    """What the key wants, for "expected ..., got ..."."""
    yaml_type: type | tuple[type, ...]
    """What YAML must have read (a boolean never passes for an integer)."""
    parse: Callable[[Any, Context], Any]
    json_schema: Mapping[str, Any]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(self._validate)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(self.json_schema)

    def accepts(self, value: object) -> bool:
        """Whether ``value`` has the YAML type this value is written as."""
        return isinstance(value, self.yaml_type) and (
            self.yaml_type is bool or not isinstance(value, bool)
        )

    def read(self, value: object, context: Context | None = None) -> Any | None:
        """The parsed value, or ``None`` when ``value`` is absent or bad (for rules)."""
        if value is None or not self.accepts(value):
            return None
        try:
            return self.parse(value, context or Context())
        except ValueError:
            return None

    def _validate(self, value: object, info: ValidationInfo) -> Any:
        if not self.accepts(value):
            raise _error(f"expected {self.expected}, got {values.kind_of(value)}")
        context = info.context if isinstance(info.context, Context) else Context()
        try:
            return self.parse(value, context)
        except ValidationError:
            raise
        except values.ValueProblems as exc:
            raise _problems(exc.messages) from None
        except ValueError as exc:
            raise _error(str(exc)) from None


def _problems(messages: tuple[str, ...], locs: tuple[Loc, ...] | None = None) -> ValidationError:
    """Several errors about one value (or its items, at ``locs``), raised together."""
    return ValidationError.from_exception_data(
        ERROR_TYPE,
        [
            InitErrorDetails(type=_error(message), loc=loc, input=None)
            for message, loc in zip(messages, locs or ((),) * len(messages), strict=True)
        ],
    )


def _plain(parse: Callable[[Any], Any]) -> Callable[[Any, Context], Any]:
    return lambda value, _context: parse(value)


def _text(expected: str, parse: Callable[[str], Any], **schema: Any) -> Value:
    return Value(expected, str, _plain(parse), {"type": "string", **schema})


def _secret_file(text: str, context: Context) -> Secret:
    return values.read_password_file(values.resolve_path(text, context.base_dir))


def _token_secret_file(text: str, context: Context) -> Secret:
    return values.read_token_secret(values.resolve_path(text, context.base_dir))


def _ca_file(text: str, context: Context) -> Path:
    return values.check_ca_file(values.resolve_path(text, context.base_dir))


def _folders(items: list[Any], context: Context) -> tuple[str, ...]:
    bad = [(index, item) for index, item in enumerate(items) if not TEXT.accepts(item)]
    blank = [index for index, item in enumerate(items) if TEXT.accepts(item) and not item.strip()]
    if bad or blank:
        problems = [(f"expected a string, got {values.kind_of(item)}", (i,)) for i, item in bad]
        problems += [("must not be empty", (i,)) for i in blank]
        problems.sort(key=lambda problem: problem[1])
        raise _problems(tuple(m for m, _ in problems), tuple(loc for _, loc in problems))
    return tuple(items)


_NOT_BLANK: Final = {"minLength": 1, "pattern": values.NOT_BLANK_PATTERN}

TEXT: Final = _text("a string", values.not_blank, **_NOT_BLANK)
REFERENCE: Final = TEXT
BOOL: Final = Value("true or false", bool, _plain(lambda value: value), {"type": "boolean"})
PORT: Final = Value(
    values.PORT_EXPECTED,
    int,
    _plain(values.check_port),
    {"type": "integer", "minimum": values.MIN_PORT, "maximum": values.MAX_PORT},
)
TLS: Final = _text(
    f"one of {', '.join(mode.value for mode in TlsMode)}",
    values.parse_tls_mode,
    enum=[mode.value for mode in TlsMode],
)


def _duration(parse: Callable[[str], float], pattern: str) -> Value:
    # A bare number is a duration without its unit, and the message says so.
    return Value(
        f"a duration like {values.DURATION_EXAMPLES}",
        (str, int, float),
        _plain(lambda value: parse(str(value))),
        {"type": "string", "pattern": pattern},
    )


DURATION: Final = _duration(
    lambda text: values.parse_duration(text, unit_required=True), values.DURATION_PATTERN
)
JITTER: Final = _duration(
    lambda text: values.parse_duration(text, unit_required=True, allow_zero=True),
    values.JITTER_PATTERN,
)
POLL_INTERVAL: Final = _duration(values.parse_poll_interval, values.DURATION_PATTERN)
HOST: Final = _text("a host name or IP address", values.parse_host, pattern=values.HOST_PATTERN)
HELO: Final = _text("a host name", values.parse_helo, pattern=values.HELO_PATTERN)
ADDRESS: Final = _text(
    "a mail address like probe@example.com", values.parse_address, pattern=values.ADDRESS_PATTERN
)
PROBE_NAME: Final = _text("a string", values.parse_probe_name, pattern=values.PROBE_NAME_PATTERN)
LISTEN: Final = _text(
    "a listen address like ':10587' or 'HOST:PORT'", parse_listen, pattern=values.LISTEN_PATTERN
)
PASSWORD: Final = Value(
    "a string", str, lambda text, context: values.parse_password(text, context.environ),
    {"type": "string", "minLength": 1},
)  # fmt: skip
PASSWORD_FILE: Final = Value("a file path", str, _secret_file, {"type": "string", **_NOT_BLANK})
TOKEN_SECRET_FILE: Final = Value(
    "a file path", str, _token_secret_file, {"type": "string", **_NOT_BLANK}
)
CA_FILE: Final = Value("a file path", str, _ca_file, {"type": "string", **_NOT_BLANK})
FOLDERS: Final = Value(
    "a list of strings",
    list,
    _folders,
    {"type": "array", "items": {"type": "string", **_NOT_BLANK}},
)


def _default(shown: object) -> dict[str, Any]:
    """The default as the file writes it (``60s``, not ``60.0``), for the JSON Schema."""
    return {"default": shown}


def _seconds(seconds: float) -> dict[str, Any]:
    return _default(values.format_seconds(seconds))


class Section(BaseModel):
    """A mapping of the file: strict, closed to unknown keys, frozen."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)

    plural: ClassVar[str] = "entries"
    """What several of these are called in messages ("expected a list of probes")."""

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """Checks across keys of one mapping, on its raw data; yields what is wrong where."""
        return iter(())


def _credentials(raw: Mapping[str, object], *, username_required: bool) -> Iterator[Violation]:
    """A password from ``password`` or ``password_file`` (one of them), and a username with it."""
    has_password = "password" in raw or "password_file" in raw
    if "password" in raw and "password_file" in raw:
        yield ("password_file",), "give either password or password_file, not both"
    if username_required:
        if not has_password:
            yield (), "needs password or password_file"
    elif has_password and "username" not in raw:
        key = "password" if "password" in raw else "password_file"
        yield (key,), "a password needs a username"
    elif "username" in raw and not has_password:
        yield ("username",), "a username needs password or password_file"


_ONE_PASSWORD: Final[JsonDict] = {"not": {"required": ["password", "password_file"]}}
_A_PASSWORD: Final[JsonDict] = {
    "anyOf": [{"required": ["password"]}, {"required": ["password_file"]}]
}


class Defaults(Section):
    """Values for every probe that does not set its own."""

    interval: Annotated[float, DURATION] = Field(
        values.DEFAULT_INTERVAL,
        description="How often each probe runs: the time between the starts of two runs.",
        json_schema_extra=_seconds(values.DEFAULT_INTERVAL),
    )
    timeout: Annotated[float, DURATION] = Field(
        values.DEFAULT_TIMEOUT,
        description="The deadline of one run, both legs included. An inherited timeout is "
        "capped at the probe's interval, so runs never overlap.",
        json_schema_extra=_seconds(values.DEFAULT_TIMEOUT),
    )
    jitter: Annotated[float, JITTER] = Field(
        values.DEFAULT_JITTER,
        description="Each run starts up to this much earlier or later than its schedule, so "
        "probes don't all fire in the same second. Capped at half the probe's interval; "
        "0s switches it off. Must be shorter than the interval.",
        json_schema_extra=_seconds(values.DEFAULT_JITTER),
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """The default jitter must be shorter than the default interval."""
        interval = DURATION.read(raw.get("interval"))
        jitter = JITTER.read(raw.get("jitter"))
        if interval is not None and jitter is not None:
            yield from timing.check(interval, None, jitter)


_HOST_HELP: Final = "Host name or IP address (IPv6 without brackets). Required."
_VERIFY_HELP: Final = (
    "Verify the server's certificate chain and host name. false is for test servers only: "
    "anyone on the path could read the password."
)
_CA_FILE_HELP: Final = (
    "PEM file of CA certificates to trust instead of the system's, for a private CA. "
    "Relative to the config file's directory."
)
_CREDENTIAL_HELP: Final = (
    "The password, written here. ${VAR} is replaced by the environment variable VAR "
    "(write $${ for a literal ${). Give password or password_file, not both."
)
_CREDENTIAL_FILE_HELP: Final = (
    "File holding the password (less one trailing newline), relative to the config file's "
    "directory. Give password or password_file, not both."
)
_REPLY_TIMEOUT_HELP: Final = "The longest wait for any one reply; the run's timeout still applies."


class SmtpServer(Section):
    """An SMTP server the probes submit through."""

    plural: ClassVar[str] = "SMTP servers"
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                _ONE_PASSWORD,
                {"if": _A_PASSWORD, "then": {"required": ["username"]}},
                {"if": {"required": ["username"]}, "then": _A_PASSWORD},
            ]
        }
    )

    host: Annotated[str, HOST] = Field(description=_HOST_HELP)
    port: Annotated[int | None, PORT] = Field(
        None, description="TCP port. Default by tls: none 25, starttls 587, tls 465."
    )
    tls: Annotated[TlsMode, TLS] = Field(
        values.DEFAULT_SMTP_TLS,
        description="none: plain SMTP; starttls: upgrade with STARTTLS, which must succeed; "
        "tls: implicit TLS from the first byte (SMTPS, port 465).",
    )
    verify: Annotated[bool, BOOL] = Field(values.DEFAULT_VERIFY, description=_VERIFY_HELP)
    ca_file: Annotated[Path | None, CA_FILE] = Field(None, description=_CA_FILE_HELP)
    username: Annotated[str | None, TEXT] = Field(
        None,
        description="Log in with AUTH as this user. Without it the probe submits "
        "unauthenticated (port 25 relays). A username needs a password.",
    )
    password: Annotated[Secret | None, PASSWORD] = Field(None, description=_CREDENTIAL_HELP)
    password_file: Annotated[Secret | None, PASSWORD_FILE] = Field(
        None, description=_CREDENTIAL_FILE_HELP
    )
    helo: Annotated[str | None, HELO] = Field(
        None, description="Name to greet with in EHLO. Default: this host's name."
    )
    timeout: Annotated[float, DURATION] = Field(
        values.DEFAULT_COMMAND_TIMEOUT,
        description=_REPLY_TIMEOUT_HELP,
        json_schema_extra=_seconds(values.DEFAULT_COMMAND_TIMEOUT),
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """At most one password, and a username and a password only together."""
        return _credentials(raw, username_required=False)


class Mailbox(Section):
    """An IMAP mailbox the probes watch for their messages."""

    plural: ClassVar[str] = "mailboxes"
    model_config = ConfigDict(json_schema_extra={"allOf": [_ONE_PASSWORD, _A_PASSWORD]})

    host: Annotated[str, HOST] = Field(description=_HOST_HELP)
    port: Annotated[int | None, PORT] = Field(
        None, description="TCP port. Default by tls: tls 993, otherwise 143."
    )
    tls: Annotated[TlsMode, TLS] = Field(
        values.DEFAULT_IMAP_TLS,
        description="tls: implicit TLS (IMAPS, port 993); starttls: upgrade on 143; none: plain.",
    )
    verify: Annotated[bool, BOOL] = Field(values.DEFAULT_VERIFY, description=_VERIFY_HELP)
    ca_file: Annotated[Path | None, CA_FILE] = Field(None, description=_CA_FILE_HELP)
    username: Annotated[str, TEXT] = Field(description="The login. Required.")
    password: Annotated[Secret | None, PASSWORD] = Field(None, description=_CREDENTIAL_HELP)
    password_file: Annotated[Secret | None, PASSWORD_FILE] = Field(
        None, description=_CREDENTIAL_FILE_HELP
    )
    folder: Annotated[str, TEXT] = Field(
        values.DEFAULT_FOLDER, description="Folder the message should arrive in."
    )
    junk_folders: Annotated[tuple[str, ...] | None, FOLDERS] = Field(
        None,
        description="Folders that count as junk: a message found there is outcome junk. "
        "Leave the key out to use the folder the server marks \\Junk (SPECIAL-USE); "
        "[] means no junk folder at all.",
    )
    poll_interval: Annotated[float, POLL_INTERVAL] = Field(
        values.DEFAULT_POLL_INTERVAL,
        description="While a message is in flight the mailbox is polled (NOOP + SEARCH), "
        "starting at 10ms and doubling up to this interval. At least 10ms.",
        json_schema_extra=_seconds(values.DEFAULT_POLL_INTERVAL),
    )
    idle: Annotated[bool, BOOL] = Field(
        values.DEFAULT_IDLE,
        description="Use IMAP IDLE to wait for new mail where the server supports it; "
        "false polls only.",
    )
    timeout: Annotated[float, DURATION] = Field(
        values.DEFAULT_COMMAND_TIMEOUT,
        description=_REPLY_TIMEOUT_HELP,
        json_schema_extra=_seconds(values.DEFAULT_COMMAND_TIMEOUT),
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """Exactly one password."""
        return _credentials(raw, username_required=True)


class Probe(Section):
    """A route: one tagged message via an SMTP server, (with a mailbox) confirmed on arrival."""

    plural: ClassVar[str] = "probes"

    name: Annotated[str, PROBE_NAME] = Field(
        description="Unique name: the probe label of every metric. 1-64 letters, digits, "
        "'.', '_' or '-', starting with a letter or digit."
    )
    smtp: Annotated[str, REFERENCE] = Field(description="A name from smtp_servers.")
    mailbox: Annotated[str | None, REFERENCE] = Field(
        None,
        description="A name from mailboxes. Without it the run stops after the SMTP leg "
        "(outcome sent).",
    )
    mail_from: Annotated[str, ADDRESS] = Field(
        alias="from", description="Envelope sender and From header: a bare address, no <>."
    )
    rcpt_to: Annotated[str, ADDRESS] = Field(
        alias="to", description="Recipient; normally the address whose mailbox is watched."
    )
    interval: Annotated[float | None, DURATION] = Field(
        None, description="How often this probe runs. Default: defaults.interval."
    )
    timeout: Annotated[float | None, DURATION] = Field(
        None,
        description="The deadline of one run; not longer than the interval. "
        "Default: defaults.timeout, capped at the interval.",
    )
    jitter: Annotated[float | None, JITTER] = Field(
        None,
        description="Random shift of each run; shorter than the interval. "
        "Default: defaults.jitter, capped at half the interval.",
    )


class Server(Section):
    """The HTTP server: /metrics, /-/healthy, /-/ready, /-/reload, /probe and the status page."""

    listen: Annotated[ServerSettings, LISTEN] = Field(
        ServerSettings(),
        description='"HOST:PORT", ":PORT" (all interfaces) or "[IPv6]:PORT".',
        json_schema_extra=_default(f":{values.DEFAULT_LISTEN_PORT}"),
    )


def _null_is_empty(value: object) -> object:
    """``probes:`` with every entry commented out is an empty list, reported as such."""
    return [] if value is None else value


def _at_least_one(probes: tuple[Probe, ...]) -> tuple[Probe, ...]:
    if not probes:
        raise _error("no probes are configured; add at least one")
    return probes


class ConfigFile(Section):
    """The smtp-probe daemon's config file (smtp-probe run --config FILE)."""

    defaults: Defaults | None = Field(
        None, description="Defaults for every probe that does not set its own value."
    )
    token_secret_file: Annotated[Secret | None, TOKEN_SECRET_FILE] = Field(
        None,
        description="File holding the key that signs each run's token (HMAC): at least 16 "
        "bytes, surrounding whitespace ignored (make one with: openssl rand -hex 32). "
        "Without it a random key is made at every start.",
    )
    smtp_servers: dict[str, SmtpServer] | None = Field(
        None, description="SMTP servers the probes submit through, by name."
    )
    mailboxes: dict[str, Mailbox] | None = Field(
        None,
        description="IMAP mailboxes the probes watch, by name. Probes sharing one mailbox "
        "share one connection to it.",
    )
    probes: Annotated[
        tuple[Probe, ...],
        Field(strict=False, json_schema_extra={"minItems": 1}),
        BeforeValidator(_null_is_empty),
        AfterValidator(_at_least_one),
    ] = Field(description="The probes; at least one.")
    server: Server | None = Field(None, description="Where the HTTP server listens.")

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """Probes refer to defined servers and mailboxes, and their timing fits their interval."""
        yield from references.check(raw)
        yield from _probe_timing(raw)


def _probe_timing(raw: Mapping[str, object]) -> Iterator[Violation]:
    """A timeout or jitter written in a probe must fit its interval (its own or the default)."""
    probes = raw.get("probes")
    if not isinstance(probes, list):
        return
    default_interval = _default_interval(raw.get("defaults"))
    for index, probe in enumerate(probes):
        if not isinstance(probe, dict):
            continue
        interval = DURATION.read(probe["interval"]) if "interval" in probe else default_interval
        if interval is None:  # bad, and reported where it is written
            continue
        timeout = DURATION.read(probe.get("timeout"))
        for loc, message in timing.check(interval, timeout, JITTER.read(probe.get("jitter"))):
            yield ("probes", index, *loc), message


def _default_interval(section: object) -> float | None:
    """The ``defaults.interval`` probes inherit; ``None`` when it is bad (reported there)."""
    if section is None:
        return values.DEFAULT_INTERVAL
    if not isinstance(section, dict):
        return None
    if "interval" not in section:
        return values.DEFAULT_INTERVAL
    interval: float | None = DURATION.read(section["interval"])
    return interval
