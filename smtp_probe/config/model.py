"""The schema of the config file, declared once: pydantic models of every section and key.

Each key says its Python type, its default, its help text (the JSON
Schema's ``description``, which editors show) and its :class:`Value`: how a
YAML scalar becomes that type, through the parsers of
:mod:`smtp_probe.config.values` that the CLI uses too. Models are strict
(a quoted ``"yes"`` is not a boolean, ``true`` is not a port), reject
unknown keys and are frozen.

Reading a value may need the world outside the file: ``${VAR}`` in a
``password`` (or an OAuth ``client_secret`` or ``refresh_token``) comes from
the environment; ``*_file`` keys are read relative to the config file, and
a ``token_command``'s program must be there to run. Validation takes a
:class:`Context` with both, so a validated :class:`ConfigFile` holds secrets
and checked paths, not text still to be resolved.

Rules that tie keys together (one password, not two; the keys each kind of
OAuth client takes; a jitter shorter than the interval; references between
sections) are each model's :meth:`rules`: they run on the raw mapping even
when some of its keys are bad, so one load reports every error.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from pydantic.config import JsonDict, JsonValue
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from smtp_probe.config import references, timing, values
from smtp_probe.config.errors import Loc
from smtp_probe.config.runtime import ServerSettings, parse_listen
from smtp_probe.config.values import Preset, TlsMode
from smtp_probe.oauth import settings as oauth_settings
from smtp_probe.probe import expect as expectations
from smtp_probe.probe import verdicts as verdict_words
from smtp_probe.probe.result import Stage
from smtp_probe.probe.spec import (
    DEFAULT_DNS_INTERVAL,
    DEFAULT_DNS_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_RUNS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SWEEP_GRACE,
    DMARC_POLICIES,
    MTA_STS_MODES,
    Cleanup,
    DnsCheck,
    Expectation,
    PolicyCheck,
)
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


def _in_file_dir(check: Callable[[Path], Path]) -> Callable[[Any, Context], Path]:
    """A path relative to the config file, checked by ``check`` (exists, holds the right thing)."""
    return lambda text, context: check(values.resolve_path(text, context.base_dir))


def _strings(items: list[Any], *, blank_ok: bool = False) -> tuple[str, ...]:
    """The items of a list of strings; every item that is not one is reported at its index."""
    bad = [(index, item) for index, item in enumerate(items) if not TEXT.accepts(item)]
    blank = [
        index
        for index, item in enumerate(items)
        if TEXT.accepts(item) and not item.strip() and not blank_ok
    ]
    if bad or blank:
        problems = [(f"expected a string, got {values.kind_of(item)}", (i,)) for i, item in bad]
        problems += [("must not be empty", (i,)) for i in blank]
        problems.sort(key=lambda problem: problem[1])
        raise _problems(tuple(m for m, _ in problems), tuple(loc for _, loc in problems))
    return tuple(items)


def _folders(items: list[Any], context: Context) -> tuple[str, ...]:
    return _strings(items)


def _command(value: str | list[Any], context: Context) -> tuple[str, ...]:
    """A token command: an argv list as written, or a string split into words (no shell)."""
    if isinstance(value, str):
        argv = values.split_command(value)
    else:
        if not value:
            raise ValueError("must not be empty")
        argv = _strings(value, blank_ok=True)  # an empty argument is an argument
    return values.check_command(argv, context.base_dir)


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
COUNT: Final = Value(
    "a whole number of at least 1",
    int,
    _plain(values.check_count),
    {"type": "integer", "minimum": 1},
)
TLS: Final = _text(
    f"one of {', '.join(mode.value for mode in TlsMode)}",
    values.parse_tls_mode,
    enum=[mode.value for mode in TlsMode],
)
IMAP_TLS: Final = _text(
    f"one of {', '.join(mode.value for mode in values.IMAP_TLS_MODES)}",
    values.parse_imap_tls_mode,
    enum=[mode.value for mode in values.IMAP_TLS_MODES],
)


def _choice(choices: type[enum.StrEnum]) -> Value:
    """One word of an enum; a near miss gets "did you mean"."""
    words = [choice.value for choice in choices]

    def parse(text: str) -> enum.StrEnum:
        try:
            return choices(text)
        except ValueError:
            suggestion = values.closest(text, words)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise ValueError(f"expected one of {', '.join(words)}{hint}") from None

    return _text(f"one of {', '.join(words)}", parse, enum=words)


class OAuthProvider(enum.StrEnum):
    """Where an ``oauth_clients`` entry gets its tokens (``token_command`` is the fourth way)."""

    MICROSOFT = "microsoft"
    GOOGLE = "google"
    GENERIC = "generic"


PRESET: Final = _choice(Preset)
CHECK: Final = _choice(PolicyCheck)
CLEANUP: Final = _choice(Cleanup)
OAUTH_PROVIDER: Final = _choice(OAuthProvider)
GRANT: Final = _choice(oauth_settings.Grant)


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
CERTIFICATE_FILE: Final = Value(
    "a file path",
    str,
    _in_file_dir(values.check_certificate_file),
    {"type": "string", **_NOT_BLANK},
)
PRIVATE_KEY_FILE: Final = Value(
    "a file path",
    str,
    _in_file_dir(values.check_private_key_file),
    {"type": "string", **_NOT_BLANK},
)
SERVICE_ACCOUNT_FILE: Final = Value(
    "a file path",
    str,
    _in_file_dir(values.check_service_account_file),
    {"type": "string", **_NOT_BLANK},
)
WORD: Final = _text("a string", values.parse_word, pattern=values.WORD_PATTERN)
URL: Final = _text("a URL", values.parse_url, pattern=values.URL_PATTERN)
COMMAND: Final = Value(
    "a command: a list of words, or a string",
    (str, list),
    _command,
    {
        "anyOf": [
            {"type": "string", **_NOT_BLANK},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
        ]
    },
)
FOLDERS: Final = Value(
    "a list of strings",
    list,
    _folders,
    {"type": "array", "items": {"type": "string", **_NOT_BLANK}},
)


def _expect_auth(value: dict[Any, Any], context: Context) -> tuple[tuple[str, str], ...]:
    """``{method: result or [results]}`` as (method, result) pairs; each bad entry located.

    Raises:
        ValidationError: an unknown method, or a result the method cannot have.
    """
    problems: list[tuple[str, Loc]] = []
    pairs: list[tuple[str, str]] = []
    if not value:
        raise ValueError("must name at least one method (spf, dkim, dmarc or arc)")
    for method, accepted in value.items():
        if not isinstance(method, str) or method not in verdict_words.RESULTS:
            suggestion = values.closest(str(method), verdict_words.METHODS)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            problems.append(
                (
                    f"unknown method{hint}; expected one of {', '.join(verdict_words.METHODS)}",
                    (str(method),),
                )
            )
            continue
        words = verdict_words.RESULTS[method]
        items = accepted if isinstance(accepted, list) else [accepted]
        if not items:
            problems.append(("must name at least one result", (method,)))
        for index, item in enumerate(items):
            at: Loc = (method, index) if isinstance(accepted, list) else (method,)
            if not isinstance(item, str):
                problems.append((f"expected a result, got {values.kind_of(item)}", at))
            elif item not in words:
                problems.append((f"expected one of {', '.join(words)} for {method}", at))
            else:
                pairs.append((method, item))
    if problems:
        raise _problems(tuple(m for m, _ in problems), tuple(loc for _, loc in problems))
    return tuple(pairs)


def _nameservers(items: list[Any], context: Context) -> tuple[tuple[str, int], ...]:
    """Resolver addresses ``IP``, ``IP:PORT`` or ``[IPV6]:PORT``; each bad one located.

    Raises:
        ValidationError: an item is not a string or not an IP address with an optional port.
    """
    problems: list[tuple[str, Loc]] = []
    found: list[tuple[str, int]] = []
    if not items:
        raise ValueError("must list at least one nameserver (leave dns out for the system's)")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            problems.append((f"expected a string, got {values.kind_of(item)}", (index,)))
            continue
        try:
            found.append(values.parse_nameserver(item))
        except ValueError as exc:
            problems.append((str(exc), (index,)))
    if problems:
        raise _problems(tuple(m for m, _ in problems), tuple(loc for _, loc in problems))
    return tuple(found)


def _expect(value: dict[Any, Any], context: Context) -> Expectation:
    """``{reject_at: STAGE or [STAGES], codes: [CODES]}``; each bad entry located.

    ``reject_at`` left out gives ``stages == ()``: the probe's check's own
    stages (a probe without a check is told it needs one, in its rules).

    Raises:
        ValidationError: an unknown key, a stage that is not one, a bad code.
    """
    problems: list[tuple[str, Loc]] = []
    allowed = ("reject_at", "codes")
    for key in value:
        if key not in allowed:
            problems.append((f"unknown key; allowed keys: {', '.join(allowed)}", (str(key),)))
    stages: list[Any] = []
    raw_stages = value.get("reject_at")
    if "reject_at" in value:
        items = raw_stages if isinstance(raw_stages, list) else [raw_stages]
        if not items:
            problems.append(("must name at least one stage", ("reject_at",)))
        for index, item in enumerate(items):
            at: Loc = ("reject_at", index) if isinstance(raw_stages, list) else ("reject_at",)
            if not isinstance(item, str):
                problems.append((f"expected an SMTP stage, got {values.kind_of(item)}", at))
                continue
            try:
                stages.append(expectations.parse_stage(item))
            except ValueError as exc:
                problems.append((str(exc), at))
    codes: list[str] = []
    raw_codes = value.get("codes")
    if "codes" in value:
        items = raw_codes if isinstance(raw_codes, list) else [raw_codes]
        if not items:
            problems.append(("must name at least one code", ("codes",)))
        for index, item in enumerate(items):
            at = ("codes", index) if isinstance(raw_codes, list) else ("codes",)
            try:
                codes.append(expectations.parse_code(item))
            except ValueError as exc:
                problems.append((str(exc), at))
    if problems:
        raise _problems(tuple(m for m, _ in problems), tuple(loc for _, loc in problems))
    return Expectation(
        tuple(dict.fromkeys(stages)),
        tuple(dict.fromkeys(codes)) if codes else expectations.DEFAULT_CODES,
    )


def _smuggling_variants(items: list[Any], context: Context) -> tuple[str, ...]:
    if not items:
        raise ValueError("must name at least one variant (leave it out for all of them)")
    return tuple(dict.fromkeys(_strings(items)))


_STAGE_NAMES: Final = [str(stage) for stage in expectations.REJECT_STAGES]
_CODE_SCHEMA: Final = {
    "anyOf": [
        {"type": "integer", "minimum": 400, "maximum": 599},
        {"type": "string", "pattern": "^[45][0-9xX][0-9xX]$"},
    ]
}
EXPECT: Final = Value(
    "a mapping like {reject_at: rcpt_to, codes: [550, 554]}",
    dict,
    _expect,
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reject_at": {
                "description": "The SMTP stage(s) the refusal must come at: "
                + ", ".join(_STAGE_NAMES)
                + ". Default with check: its own stages.",
                "anyOf": [
                    {"enum": _STAGE_NAMES},
                    {"type": "array", "items": {"enum": _STAGE_NAMES}, "minItems": 1},
                ],
            },
            "codes": {
                "description": "Reply codes (550) or classes (5xx, 55x) the refusal must have; "
                "default [5xx].",
                "anyOf": [_CODE_SCHEMA, {"type": "array", "items": _CODE_SCHEMA, "minItems": 1}],
            },
        },
    },
)
SMUGGLING_VARIANTS: Final = Value(
    "a list of variant names",
    list,
    _smuggling_variants,
    {"type": "array", "minItems": 1, "items": {"type": "string", **_NOT_BLANK}},
)
EXPECT_AUTH: Final = Value(
    "a mapping of method to result, like {dkim: pass}",
    dict,
    _expect_auth,
    {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            method: {
                "anyOf": [
                    {"enum": list(words)},
                    {"type": "array", "items": {"enum": list(words)}, "minItems": 1},
                ]
            }
            for method, words in verdict_words.RESULTS.items()
        },
    },
)
NAMESERVERS: Final = Value(
    "a list of nameservers",
    list,
    _nameservers,
    {"type": "array", "minItems": 1, "items": {"type": "string", **_NOT_BLANK}},
)


@dataclass(frozen=True, slots=True)
class DnsChecksEntry:
    """A probe's ``dns_checks`` as written: which checks, and their options.

    The loader adds the domains (from ``to`` and ``from``) and the interval
    to make the engine's :class:`~smtp_probe.probe.spec.DnsChecks`.
    """

    checks: tuple[DnsCheck, ...]
    """In :class:`DnsCheck` order, each once."""
    sending_ips: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()
    dmarc_policy: str = "none"
    mta_sts_mode: str = "enforce"
    dnsbl_zones: tuple[str, ...] = ()
    ca_file: Path | None = None


DNS_CHECK_SETTINGS: Final = ("sending_ip", "ca_file")
"""Keys of a ``dns_checks`` mapping that are not checks but apply to them."""
DNS_CHECK_OPTIONS: Final[Mapping[DnsCheck, tuple[str, ...]]] = {
    DnsCheck.MX: ("hosts",),
    DnsCheck.SPF: (),
    DnsCheck.DMARC: ("policy",),
    DnsCheck.MTA_STS: ("mode",),
    DnsCheck.TLS_RPT: (),
    DnsCheck.DNSBL: ("zones",),
    DnsCheck.FCRDNS: (),
}
"""The options each check takes in a ``dns_checks`` mapping."""
_DNSBL_NEEDS_ZONES: Final = (
    "dnsbl needs zones, like dnsbl: {zones: [zen.example.org]} (none by default: "
    "public blocklists have terms of use)"
)
_CHECK_NAMES: Final = tuple(check.value for check in DnsCheck)


class _Found:
    """Problems found in one value, each with its location inside the value."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Loc]] = []

    def add(self, message: str, loc: Loc = ()) -> None:
        self.items.append((message, loc))

    def parsed(self, parse: Callable[[str], Any], item: object, loc: Loc) -> Any | None:
        """``parse(item)`` for a string item; ``None`` (and a problem) otherwise."""
        if not isinstance(item, str):
            self.add(f"expected a string, got {values.kind_of(item)}", loc)
            return None
        try:
            return parse(item)
        except ValueError as exc:
            self.add(str(exc), loc)
            return None

    def many(
        self, parse: Callable[[str], Any], value: object, loc: Loc, *, single_ok: bool = False
    ) -> tuple[Any, ...]:
        """Each item of a list (or a lone string if ``single_ok``) through ``parse``."""
        if single_ok and isinstance(value, str):
            one = self.parsed(parse, value, loc)
            return () if one is None else (one,)
        if not isinstance(value, list):
            wanted = "a string or a list of strings" if single_ok else "a list of strings"
            self.add(f"expected {wanted}, got {values.kind_of(value)}", loc)
            return ()
        if not value:
            self.add("must not be empty", loc)
        found = [self.parsed(parse, item, (*loc, index)) for index, item in enumerate(value)]
        return tuple(item for item in found if item is not None)

    def raise_if_any(self) -> None:
        if self.items:
            raise _problems(tuple(m for m, _ in self.items), tuple(loc for _, loc in self.items))


def _check_name(found: _Found, word: object, loc: Loc, *, settings: bool) -> DnsCheck | None:
    """A check name, or a located "unknown check" (with did-you-mean)."""
    if isinstance(word, str) and word in _CHECK_NAMES:
        return DnsCheck(word)
    choices = (*_CHECK_NAMES, *DNS_CHECK_SETTINGS) if settings else _CHECK_NAMES
    suggestion = values.closest(str(word), choices)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    extra = f", or {' or '.join(DNS_CHECK_SETTINGS)}" if settings else ""
    found.add(f"unknown check{hint}; expected one of {', '.join(_CHECK_NAMES)}{extra}", loc)
    return None


def _dns_checks(value: list[Any] | dict[Any, Any], context: Context) -> DnsChecksEntry:
    """``dns_checks``: a list of check names, or a mapping of check name to its options.

    Raises:
        ValidationError: every bad name, option or value, each at its place.
    """
    found = _Found()
    checks: list[DnsCheck] = []
    if isinstance(value, list):
        if not value:
            found.add(f"name at least one check: {', '.join(_CHECK_NAMES)}")
        for index, word in enumerate(value):
            check = _check_name(found, word, (index,), settings=False)
            if check is None:
                continue
            if check in checks:
                found.add("listed twice", (index,))
            elif check is DnsCheck.DNSBL:
                found.add(_DNSBL_NEEDS_ZONES, (index,))
            checks.append(check)
        found.raise_if_any()
        return DnsChecksEntry(tuple(c for c in DnsCheck if c in checks))
    options: dict[str, Any] = {}
    unknown = False
    for key, given in value.items():
        if key == "sending_ip":
            options["sending_ips"] = found.many(values.parse_ip, given, (key,), single_ok=True)
        elif key == "ca_file":
            options["ca_file"] = found.parsed(lambda text: _ca_file(text, context), given, (key,))
        else:
            check = _check_name(found, key, (str(key),), settings=True)
            if check is None:
                unknown = True
            else:
                checks.append(check)
                options.update(_check_options(found, check, given))
    if not checks and not unknown:  # a misspelt check is reported as that
        found.add(f"name at least one check: {', '.join(_CHECK_NAMES)}")
    found.raise_if_any()
    return DnsChecksEntry(tuple(c for c in DnsCheck if c in checks), **options)


def _check_options(found: _Found, check: DnsCheck, given: object) -> dict[str, Any]:
    """The options of one check in a ``dns_checks`` mapping (``{}`` or nothing: its defaults)."""
    at: Loc = (str(check),)
    if given is None:
        given = {}
    if not isinstance(given, dict):
        found.add(f"expected a mapping of options ({{}} for the defaults), got "
                  f"{values.kind_of(given)}", at)  # fmt: skip
        return {}
    allowed = DNS_CHECK_OPTIONS[check]
    options: dict[str, Any] = {}
    for key, option in given.items():
        loc = (*at, str(key))
        if key == "hosts" and key in allowed:
            options["mx_hosts"] = found.many(values.parse_domain, option, loc)
        elif key == "policy" and key in allowed:
            options["dmarc_policy"] = found.parsed(values.parse_dmarc_policy, option, loc)
        elif key == "mode" and key in allowed:
            options["mta_sts_mode"] = found.parsed(values.parse_mta_sts_mode, option, loc)
        elif key == "zones" and key in allowed:
            options["dnsbl_zones"] = found.many(values.parse_domain, option, loc)
        elif allowed:
            suggestion = values.closest(str(key), allowed)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            found.add(f"unknown option{hint}; {check} takes {', '.join(allowed)}", loc)
        else:
            found.add(f"unknown option; {check} takes no options (write {check}: {{}})", loc)
    if check is DnsCheck.DNSBL and "zones" not in given:
        found.add(_DNSBL_NEEDS_ZONES, at)
    return {key: option for key, option in options.items() if option is not None}


def _option_schema(check: DnsCheck) -> JsonDict:
    item: JsonDict = {"type": "string", "minLength": 1, "pattern": values.NOT_BLANK_PATTERN}
    strings: JsonDict = {"type": "array", "minItems": 1, "items": item}
    properties: dict[str, JsonValue] = {
        "hosts": strings,
        "policy": {"enum": list(DMARC_POLICIES)},
        "mode": {"enum": list(MTA_STS_MODES)},
        "zones": strings,
    }
    schema: JsonDict = {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: properties[key] for key in DNS_CHECK_OPTIONS[check]},
    }
    if check is DnsCheck.DNSBL:
        schema["required"] = ["zones"]
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


DNS_CHECKS: Final = Value(
    "a list of check names, or a mapping of check name to options",
    (list, dict),
    _dns_checks,
    {
        "anyOf": [
            {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": [c.value for c in DnsCheck if c is not DnsCheck.DNSBL]},
            },
            {
                "type": "object",
                "additionalProperties": False,
                "anyOf": [{"required": [check.value]} for check in DnsCheck],
                "properties": {
                    **{check.value: _option_schema(check) for check in DnsCheck},
                    "sending_ip": {
                        "anyOf": [
                            {"type": "string", **_NOT_BLANK},
                            {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", **_NOT_BLANK},
                            },
                        ]
                    },
                    "ca_file": {"type": "string", **_NOT_BLANK},
                },
            },
        ]
    },
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


_CREDENTIAL_KEYS: Final = ("password", "password_file", "oauth")


def _credentials(raw: Mapping[str, object], *, username_required: bool) -> Iterator[Violation]:
    """One way to log in (``password``, ``password_file`` or ``oauth``), and a username with it."""
    given = [key for key in _CREDENTIAL_KEYS if key in raw]
    if "password" in raw and "password_file" in raw:
        yield ("password_file",), "give either password or password_file, not both"
    if "oauth" in raw and len(given) > 1:
        yield ("oauth",), "give either oauth or a password, not both"
    if username_required:
        if not given:
            yield (), "needs password, password_file or oauth"
    elif given and "username" not in raw:
        key = given[0]
        if key == "oauth":
            yield (key,), "oauth needs a username (the account the token is for)"
        else:
            yield (key,), "a password needs a username"
    elif "username" in raw and not given:
        yield ("username",), "a username needs password, password_file or oauth"


def _required(keys: Sequence[str]) -> list[JsonValue]:
    return [{"required": [key]} for key in keys]


def _not_together(*pairs: tuple[str, str]) -> list[JsonValue]:
    return [{"not": {"required": list(pair)}} for pair in pairs]


_ONE_CREDENTIAL: Final = _not_together(
    ("password", "password_file"), ("oauth", "password"), ("oauth", "password_file")
)
_A_CREDENTIAL: Final[JsonDict] = {"anyOf": _required(_CREDENTIAL_KEYS)}
_A_HOST: Final[JsonDict] = {"anyOf": _required(["host", "provider"])}


def _host(raw: Mapping[str, object]) -> Iterator[Violation]:
    """A host, unless a provider preset gives one."""
    if "host" not in raw and "provider" not in raw:
        yield ("host",), "required key is missing"


_DNS_INTERVAL_HELP: Final = (
    "How often a probe's dns_checks run, as their own job beside delivery: any duration, "
    "meant to be slower than the delivery interval (DNS changes slowly and answers are "
    "cached for their TTL)."
)


_AN_SMTP_HOST: Final[JsonDict] = {"anyOf": _required(["host", "provider", "mx"])}


def _smtp_host(raw: Mapping[str, object]) -> Iterator[Violation]:
    """A host, a provider or an ``mx`` domain; ``mx`` alone, and never with implicit TLS."""
    if "mx" not in raw:
        if "host" not in raw and "provider" not in raw:
            yield ("host",), "required key is missing"
        return
    for key in ("host", "provider"):
        if key in raw:
            yield (key,), f"give either mx or {key}, not both"
    if raw.get("tls") == TlsMode.TLS.value:
        yield (
            ("tls",),
            "mx servers are reached on port 25 with STARTTLS: use opportunistic, starttls or none",
        )


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
    dns_interval: Annotated[float, DURATION] = Field(
        DEFAULT_DNS_INTERVAL,
        description=_DNS_INTERVAL_HELP,
        json_schema_extra=_seconds(DEFAULT_DNS_INTERVAL),
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """The default jitter must be shorter than the default interval."""
        interval = DURATION.read(raw.get("interval"))
        jitter = JITTER.read(raw.get("jitter"))
        if interval is not None and jitter is not None:
            yield from timing.check(interval, None, jitter)


_HOST_HELP: Final = (
    "Host name or IP address (IPv6 without brackets). Required unless provider gives it."
)
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
    "(write $${ for a literal ${). Give one of password, password_file or oauth."
)
_CREDENTIAL_FILE_HELP: Final = (
    "File holding the password (less one trailing newline), relative to the config file's "
    "directory. Give one of password, password_file or oauth."
)
_OAUTH_HELP: Final = (
    "Log in with an OAuth2 access token (SASL XOAUTH2 or OAUTHBEARER) from this "
    "oauth_clients entry, instead of a password; needs username. Servers and mailboxes "
    "naming one client share its tokens."
)
_REPLY_TIMEOUT_HELP: Final = "The longest wait for any one reply; the run's timeout still applies."


def _preset_help(presets: Mapping[Preset, tuple[str, TlsMode]], port: Callable[..., int]) -> str:
    filled = "; ".join(
        f"{preset.value}: {host}:{port(tls)} {tls.value}" for preset, (host, tls) in presets.items()
    )
    return f"Fill in host and tls for a mail provider ({filled}). Keys written here win."


class SmtpServer(Section):
    """An SMTP server the probes submit through."""

    plural: ClassVar[str] = "SMTP servers"
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                _AN_SMTP_HOST,
                *_ONE_CREDENTIAL,
                {"if": _A_CREDENTIAL, "then": {"required": ["username"]}},
                {"if": {"required": ["username"]}, "then": _A_CREDENTIAL},
            ]
        }
    )

    provider: Annotated[Preset | None, PRESET] = Field(
        None,
        description=_preset_help(values.SMTP_PRESETS, values.smtp_port)
        + " google with tls: tls is port 465.",
    )
    host: Annotated[str | None, HOST] = Field(None, description=_HOST_HELP)
    mx: Annotated[str | None, HOST] = Field(
        None,
        description="A mail domain instead of host: send as an MTA does, to its MX hosts by "
        "preference with fallback (A/AAAA when it has no MX), port 25, TLS as the domain's "
        "MTA-STS policy demands (enforce: STARTTLS with a verified certificate for an MX the "
        "policy names, or no delivery). Default tls: opportunistic.",
    )
    port: Annotated[int | None, PORT] = Field(
        None,
        description="TCP port. Default by tls: none 25, starttls 587, tls 465; 25 for mx servers.",
    )
    tls: Annotated[TlsMode, TLS] = Field(
        values.DEFAULT_SMTP_TLS,
        description="none: plain SMTP; starttls: upgrade with STARTTLS, which must succeed; "
        "tls: implicit TLS from the first byte (SMTPS, port 465); opportunistic: STARTTLS "
        "when offered, certificate not verified, else plain (the default for mx servers).",
    )
    verify: Annotated[bool, BOOL] = Field(values.DEFAULT_VERIFY, description=_VERIFY_HELP)
    ca_file: Annotated[Path | None, CA_FILE] = Field(None, description=_CA_FILE_HELP)
    username: Annotated[str | None, TEXT] = Field(
        None,
        description="Log in with AUTH as this user. Without it the probe submits "
        "unauthenticated (port 25 relays). A username needs a password or oauth.",
    )
    password: Annotated[Secret | None, PASSWORD] = Field(None, description=_CREDENTIAL_HELP)
    password_file: Annotated[Secret | None, PASSWORD_FILE] = Field(
        None, description=_CREDENTIAL_FILE_HELP
    )
    oauth: Annotated[str | None, REFERENCE] = Field(None, description=_OAUTH_HELP)
    helo: Annotated[str | None, HELO] = Field(
        None, description="Name to greet with in EHLO. Default: this host's name."
    )
    timeout: Annotated[float, DURATION] = Field(
        values.DEFAULT_COMMAND_TIMEOUT,
        description=_REPLY_TIMEOUT_HELP,
        json_schema_extra=_seconds(values.DEFAULT_COMMAND_TIMEOUT),
    )
    max_connections: Annotated[int, COUNT] = Field(
        DEFAULT_MAX_CONNECTIONS,
        description="The daemon opens at most this many SMTP sessions at once to this server "
        "(counted per host and port; an mx server per domain; entries naming the same server "
        "share the smallest limit). Runs beyond it wait, within their own timeout.",
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """A host, a provider or an mx domain; at most one way to log in, and a username only with one."""
        yield from _smtp_host(raw)
        yield from _credentials(raw, username_required=False)


class Mailbox(Section):
    """An IMAP mailbox the probes watch for their messages."""

    plural: ClassVar[str] = "mailboxes"
    model_config = ConfigDict(
        json_schema_extra={"allOf": [_A_HOST, *_ONE_CREDENTIAL, _A_CREDENTIAL]}
    )

    provider: Annotated[Preset | None, PRESET] = Field(
        None, description=_preset_help(values.IMAP_PRESETS, values.imap_port)
    )
    host: Annotated[str | None, HOST] = Field(None, description=_HOST_HELP)
    port: Annotated[int | None, PORT] = Field(
        None, description="TCP port. Default by tls: tls 993, otherwise 143."
    )
    tls: Annotated[TlsMode, IMAP_TLS] = Field(
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
    oauth: Annotated[str | None, REFERENCE] = Field(None, description=_OAUTH_HELP)
    folder: Annotated[str, TEXT] = Field(
        values.DEFAULT_FOLDER, description="Folder the message should arrive in."
    )
    junk_folders: Annotated[tuple[str, ...] | None, FOLDERS] = Field(
        None,
        description="Folders that count as junk: a message found there is outcome junk. "
        "Leave the key out to use the folder the server marks \\Junk (SPECIAL-USE); "
        "[] means no junk folder at all.",
    )
    cleanup: Annotated[Cleanup | None, CLEANUP] = Field(
        None,
        description="How our message is removed once found. expunge: flag it \\Deleted and "
        "expunge it where it is; trash: move it to the \\Trash folder (SPECIAL-USE) and expunge "
        "it there, as Gmail needs (expunging from INBOX only removes a label). "
        "Default: trash on Gmail (X-GM-EXT-1), else expunge.",
    )
    poll_interval: Annotated[float, POLL_INTERVAL] = Field(
        values.DEFAULT_POLL_INTERVAL,
        description="While a message is in flight the mailbox is polled (NOOP; a search "
        "only when the server announces new mail, and at least this often): every 10ms "
        "for 60ms after the 250, then doubling up to this interval. At least 10ms.",
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
    authserv_id: Annotated[str | None, WORD] = Field(
        None,
        description="The authserv-id the receiving side writes in its Authentication-Results "
        "headers (RFC 8601), e.g. mx.example.net: only those headers are believed, any other "
        "may be forged by a sender. Needed by a probe's expect_auth.",
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """A host or a provider, and exactly one way to log in."""
        yield from _host(raw)
        yield from _credentials(raw, username_required=True)


COMMAND_KIND: Final = "token_command"
"""The kind of an ``oauth_clients`` entry that runs a program instead of naming a provider."""

_OAUTH_KEYS: Final[Mapping[str, frozenset[str]]] = {
    OAuthProvider.MICROSOFT: frozenset(
        {"provider", "tenant", "client_id", "client_secret", "client_secret_file",
         "certificate_file", "private_key_file", "scope", "authority", "timeout", "ca_file"}
    ),
    OAuthProvider.GOOGLE: frozenset(
        {"provider", "service_account_file", "subject", "client_id", "client_secret",
         "client_secret_file", "refresh_token", "refresh_token_file", "scope", "token_uri",
         "timeout", "ca_file"}
    ),
    OAuthProvider.GENERIC: frozenset(
        {"provider", "token_url", "grant", "client_id", "client_secret", "client_secret_file",
         "refresh_token", "refresh_token_file", "scope", "timeout", "ca_file"}
    ),
    COMMAND_KIND: frozenset({"token_command", "lifetime", "timeout"}),
}  # fmt: skip
"""The keys each kind of OAuth client takes; any other key of the entry is an error."""

_CLIENT_SECRET: Final = ("client_secret", "client_secret_file")
_REFRESH_TOKEN: Final = ("refresh_token", "refresh_token_file")
_INSTALLED_APP: Final = ("client_id", *_CLIENT_SECRET, *_REFRESH_TOKEN)
_GOOGLE_NEEDS: Final = (
    "service_account_file and subject (a service account with domain-wide delegation), "
    "or client_id, client_secret and refresh_token (an installed app)"
)


def _kind_name(kind: str) -> str:
    return kind if kind == COMMAND_KIND else f"provider: {kind}"


def _or(words: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join(filter(None, [", ".join(words[:-1]), words[-1]]))


def _used_by(key: str) -> str:
    """Which kinds of client take ``key``, for "only with ..."."""
    providers = [kind.value for kind in OAuthProvider if key in _OAUTH_KEYS[kind]]
    kinds = [f"provider: {_or(providers)}"] if providers else []
    if key in _OAUTH_KEYS[COMMAND_KIND]:
        kinds.append(COMMAND_KIND)
    return _or(kinds)


def _oauth_kind(raw: Mapping[str, object]) -> Iterator[Violation | str]:
    """The entry's kind (a provider or ``token_command``), after what is wrong with choosing it.

    Yields violations, then the kind as the last item if there is one.
    """
    if "provider" in raw and COMMAND_KIND in raw:
        yield (COMMAND_KIND,), "give either provider or token_command, not both"
    elif COMMAND_KIND in raw:
        yield COMMAND_KIND
    elif "provider" not in raw:
        yield (), "needs provider (microsoft, google or generic) or token_command"
    else:
        provider = OAUTH_PROVIDER.read(raw["provider"])
        if provider is not None:  # else reported where it is written
            yield str(provider)


def _one_of(raw: Mapping[str, object], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` written in ``raw``."""
    return next((key for key in keys if key in raw), None)


def _microsoft(raw: Mapping[str, object]) -> Iterator[Violation]:
    """Tenant and client id, and a client secret or a certificate (its key beside it)."""
    for key in ("tenant", "client_id"):
        if key not in raw:
            yield (key,), "required with provider: microsoft"
    secret = _one_of(raw, _CLIENT_SECRET)
    if secret is None and "certificate_file" not in raw:
        yield (), "provider microsoft needs client_secret, client_secret_file or certificate_file"
    elif secret is not None and "certificate_file" in raw:
        yield ("certificate_file",), f"give either {secret} or certificate_file, not both"
    if "private_key_file" in raw and "certificate_file" not in raw:
        yield ("private_key_file",), "a private key needs certificate_file"


def _google(raw: Mapping[str, object]) -> Iterator[Violation]:
    """A service account acting for a subject, or an installed app's refresh token; not both."""
    app_key = _one_of(raw, _INSTALLED_APP)
    if "service_account_file" in raw:
        if app_key is not None:
            yield (
                (app_key,),
                (
                    "not used with service_account_file: give a service account "
                    "(service_account_file, subject) or an installed app "
                    "(client_id, client_secret, refresh_token), not both"
                ),
            )
        if "subject" not in raw:
            yield (
                ("subject",),
                (
                    "required with service_account_file: the mailbox user the service account "
                    "acts for (domain-wide delegation)"
                ),
            )
    elif app_key is not None:
        if "subject" in raw:
            yield ("subject",), "only used with service_account_file"
        for keys in (("client_id",), _CLIENT_SECRET, _REFRESH_TOKEN):
            if _one_of(raw, keys) is None:
                yield (
                    (keys[0],),
                    ("required for an installed app (client_id, client_secret, refresh_token)"),
                )
    else:
        yield (), f"provider google needs {_GOOGLE_NEEDS}"


def _generic(raw: Mapping[str, object]) -> Iterator[Violation]:
    """Token URL and client id, and what the grant needs."""
    for key in ("token_url", "client_id"):
        if key not in raw:
            yield (key,), "required with provider: generic"
    grant = GRANT.read(raw["grant"]) if "grant" in raw else oauth_settings.Grant.CLIENT_CREDENTIALS
    if grant == oauth_settings.Grant.CLIENT_CREDENTIALS:
        if _one_of(raw, _CLIENT_SECRET) is None:
            yield (), "grant client_credentials needs client_secret or client_secret_file"
        refresh = _one_of(raw, _REFRESH_TOKEN)
        if refresh is not None:
            yield (refresh,), "only used with grant: refresh_token"
    elif grant == oauth_settings.Grant.REFRESH_TOKEN and _one_of(raw, _REFRESH_TOKEN) is None:
        yield (), "grant refresh_token needs refresh_token or refresh_token_file"


_PROVIDER_RULES: Final[Mapping[str, Callable[[Mapping[str, object]], Iterator[Violation]]]] = {
    OAuthProvider.MICROSOFT: _microsoft,
    OAuthProvider.GOOGLE: _google,
    OAuthProvider.GENERIC: _generic,
}


def _forbidden(kind: str) -> JsonDict:
    others = sorted(set().union(*_OAUTH_KEYS.values()) - _OAUTH_KEYS[kind])
    return {"not": {"anyOf": _required(others)}}


def _either(keys: Sequence[str]) -> JsonDict:
    return {"anyOf": _required(keys)}


def _when_provider(provider: OAuthProvider, then: list[JsonValue]) -> JsonDict:
    return {
        "if": {"required": ["provider"], "properties": {"provider": {"const": provider.value}}},
        "then": {"allOf": [_forbidden(provider), *then]},
    }


_OAUTH_SCHEMA: Final[JsonDict] = {
    "allOf": [
        {"oneOf": _required(["provider", COMMAND_KIND])},
        *_not_together(_CLIENT_SECRET, _REFRESH_TOKEN),
        _when_provider(
            OAuthProvider.MICROSOFT,
            [
                {"required": ["tenant", "client_id"]},
                _either([*_CLIENT_SECRET, "certificate_file"]),
                *_not_together(*((key, "certificate_file") for key in _CLIENT_SECRET)),
                {"if": {"required": ["private_key_file"]}, "then": {"required": ["certificate_file"]}},
            ],
        ),
        _when_provider(
            OAuthProvider.GOOGLE,
            [
                {
                    "oneOf": [
                        {"required": ["service_account_file", "subject"],
                         "not": _either(_INSTALLED_APP)},
                        {"required": ["client_id"],
                         "allOf": [_either(_CLIENT_SECRET), _either(_REFRESH_TOKEN)],
                         "not": _either(["service_account_file", "subject"])},
                    ]
                }
            ],
        ),
        _when_provider(
            OAuthProvider.GENERIC,
            [
                {"required": ["token_url", "client_id"]},
                {
                    "if": {"required": ["grant"],
                           "properties": {"grant": {"const": oauth_settings.Grant.REFRESH_TOKEN.value}}},
                    "then": _either(_REFRESH_TOKEN),
                    "else": {"allOf": [_either(_CLIENT_SECRET),
                                       {"not": _either(_REFRESH_TOKEN)}]},
                },
            ],
        ),
        {"if": {"required": [COMMAND_KIND]}, "then": _forbidden(COMMAND_KIND)},
    ]
}  # fmt: skip
_WRITTEN_HELP: Final = (
    "written here; ${VAR} is replaced by the environment variable VAR (write $${ for a "
    "literal ${). Or give {key}_file, not both."
)
_FROM_FILE_HELP: Final = (
    "File holding the {what} (less one trailing newline), relative to the config file's "
    "directory. Or give {key}, not both."
)


class OAuthClient(Section):
    """Where OAuth2 access tokens come from: an identity provider, or a command that prints one."""

    plural: ClassVar[str] = "OAuth clients"
    model_config = ConfigDict(json_schema_extra=_OAUTH_SCHEMA)

    provider: Annotated[OAuthProvider | None, OAUTH_PROVIDER] = Field(
        None,
        description="microsoft: Entra ID client credentials (MSAL); google: a service account "
        "with domain-wide delegation, or an installed app's refresh token (google-auth); "
        "generic: any OAuth2 token endpoint (authlib). Or give token_command instead.",
    )
    token_command: Annotated[tuple[str, ...] | None, COMMAND] = Field(
        None,
        description="Run this program for a token instead (no provider then): a list of words, "
        "or a string split like a shell would (quotes, backslashes; no shell runs). It prints "
        "the access token, or JSON with access_token and expires_in. A program written with a "
        "/ is relative to the config file's directory; a bare name is looked up in PATH.",
    )
    tenant: Annotated[str | None, WORD] = Field(
        None,
        description="microsoft: the Entra ID tenant: its domain (contoso.onmicrosoft.com) "
        "or its id.",
    )
    client_id: Annotated[str | None, WORD] = Field(
        None,
        description="microsoft, generic, google installed app: the application (client) id.",
    )
    client_secret: Annotated[Secret | None, PASSWORD] = Field(
        None, description="The client secret, " + _WRITTEN_HELP.replace("{key}", "client_secret")
    )
    client_secret_file: Annotated[Secret | None, PASSWORD_FILE] = Field(
        None,
        description=_FROM_FILE_HELP.format(what="client secret", key="client_secret"),
    )
    certificate_file: Annotated[Path | None, CERTIFICATE_FILE] = Field(
        None,
        description="microsoft: PEM certificate registered with the app, instead of a client "
        "secret; its private key in private_key_file or in the same file. Relative to the "
        "config file's directory.",
    )
    private_key_file: Annotated[Path | None, PRIVATE_KEY_FILE] = Field(
        None,
        description="microsoft: PEM private key of certificate_file, if not in that file.",
    )
    service_account_file: Annotated[Path | None, SERVICE_ACCOUNT_FILE] = Field(
        None,
        description="google: the service account's JSON key file; the service account needs "
        "domain-wide delegation of the scope. Relative to the config file's directory.",
    )
    subject: Annotated[str | None, ADDRESS] = Field(
        None,
        description="google with service_account_file: the mailbox user the service account "
        "acts for.",
    )
    token_url: Annotated[str | None, URL] = Field(
        None, description="generic: the token endpoint (https://; http:// to localhost only)."
    )
    grant: Annotated[oauth_settings.Grant, GRANT] = Field(
        oauth_settings.Grant.CLIENT_CREDENTIALS,
        description="generic: client_credentials (needs a client secret) or refresh_token "
        "(needs refresh_token; a client secret is optional).",
    )
    refresh_token: Annotated[Secret | None, PASSWORD] = Field(
        None,
        description="google installed app, generic refresh_token grant: the refresh token, "
        + _WRITTEN_HELP.replace("{key}", "refresh_token"),
    )
    refresh_token_file: Annotated[Secret | None, PASSWORD_FILE] = Field(
        None,
        description=_FROM_FILE_HELP.format(what="refresh token", key="refresh_token"),
    )
    scope: Annotated[str | None, TEXT] = Field(
        None,
        description=f"The scope(s) to ask for, space-separated. Default: microsoft "
        f"{oauth_settings.MICROSOFT_SCOPE}, google {oauth_settings.GOOGLE_SCOPE}, generic none.",
    )
    authority: Annotated[str | None, URL] = Field(
        None,
        description=f"microsoft: the Entra ID cloud. Default {oauth_settings.MICROSOFT_AUTHORITY}; "
        "sovereign clouds have their own (https://login.microsoftonline.us).",
    )
    token_uri: Annotated[str | None, URL] = Field(
        None,
        description="google: override of the token endpoint. Default: the service account "
        f"file's, or {oauth_settings.GOOGLE_TOKEN_URI}.",
    )
    lifetime: Annotated[float, DURATION] = Field(
        oauth_settings.DEFAULT_COMMAND_LIFETIME,
        description="token_command: how long a token whose output says nothing about its "
        "expiry is reused.",
        json_schema_extra=_seconds(oauth_settings.DEFAULT_COMMAND_LIFETIME),
    )
    timeout: Annotated[float, DURATION] = Field(
        oauth_settings.DEFAULT_TOKEN_TIMEOUT,
        description="The longest wait for one token (request or command); the run's timeout "
        "still applies.",
        json_schema_extra=_seconds(oauth_settings.DEFAULT_TOKEN_TIMEOUT),
    )
    ca_file: Annotated[Path | None, CA_FILE] = Field(
        None,
        description="PEM file of CA certificates to trust for the token endpoint instead of "
        "the system's. Relative to the config file's directory.",
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """A provider or a command; the keys of that kind and no others; each secret once."""
        kind: str | None = None
        for found in _oauth_kind(raw):
            if isinstance(found, str):
                kind = found
            else:
                yield found
        for pair in (_CLIENT_SECRET, _REFRESH_TOKEN):
            if all(key in raw for key in pair):
                yield (pair[1],), f"give either {pair[0]} or {pair[1]}, not both"
        if kind is None:
            return
        known = set().union(*_OAUTH_KEYS.values())
        for key in raw:
            if key in known and key not in _OAUTH_KEYS[kind]:
                yield (key,), f"not used with {_kind_name(kind)}; only with {_used_by(key)}"
        if kind in _PROVIDER_RULES:
            yield from _PROVIDER_RULES[kind](raw)


class Dns(Section):
    """The resolver for smtp-probe's own DNS lookups (DKIM keys, dns_checks, mx: servers)."""

    nameservers: Annotated[tuple[tuple[str, int], ...], NAMESERVERS] = Field(
        (),
        description="Nameservers asked in order: IP, IP:PORT or [IPV6]:PORT (port 53 if "
        "none). Leave dns out to use the system's resolver.",
    )
    timeout: Annotated[float, DURATION] = Field(
        DEFAULT_DNS_TIMEOUT,
        description="The longest wait for one lookup; the run's timeout still applies.",
        json_schema_extra=_seconds(DEFAULT_DNS_TIMEOUT),
    )


_INTERVAL_HELP: Final = "How often this probe runs. Default: defaults.interval."
_TIMEOUT_HELP: Final = (
    "The deadline of one run; not longer than the interval. "
    "Default: defaults.timeout, capped at the interval."
)
_JITTER_HELP: Final = (
    "Random shift of each run; shorter than the interval. "
    "Default: defaults.jitter, capped at half the interval."
)
_REFLECTOR_HELP: Final = (
    "to is an address we don't own that auto-replies or forwards to the mailbox: the run "
    "is delivered when the reply, carrying the run's signed token in its subject, arrives "
    "there. Needs mailbox."
)


def _check_is(*checks: PolicyCheck) -> JsonDict:
    return {"required": ["check"], "properties": {"check": {"enum": [str(c) for c in checks]}}}


class Probe(Section):
    """A route: one tagged message via an SMTP server, (with a mailbox) confirmed on arrival."""

    plural: ClassVar[str] = "probes"
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"required": ["reflector"], "properties": {"reflector": {"const": True}}},
            "then": {"required": ["mailbox"]},
            "dependentRequired": {
                "bounce_mailbox": ["mailbox"],
                "dns_interval": ["dns_checks"],
            },
            "allOf": [
                {
                    "if": _check_is(PolicyCheck.SMTP_SMUGGLING),
                    "then": {"required": ["mailbox"]},
                    "else": {"not": {"required": ["smuggling_variants"]}},
                },
                {
                    "if": _check_is(PolicyCheck.AUTH_REQUIRES_TLS, PolicyCheck.SMTP_SMUGGLING),
                    "then": {"not": {"required": ["expect"]}},
                },
            ],
        }
    )

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
    interval: Annotated[float | None, DURATION] = Field(None, description=_INTERVAL_HELP)
    timeout: Annotated[float | None, DURATION] = Field(None, description=_TIMEOUT_HELP)
    jitter: Annotated[float | None, JITTER] = Field(None, description=_JITTER_HELP)
    reflector: Annotated[bool, BOOL] = Field(False, description=_REFLECTOR_HELP)
    expect_auth: Annotated[tuple[tuple[str, str], ...], EXPECT_AUTH] = Field(
        (),
        description="Results the receiver's Authentication-Results must give, per method "
        "(spf, dkim, dmarc, arc): one result or a list of accepted ones, e.g. "
        "{dkim: pass, dmarc: pass, spf: [pass, neutral]}. A delivered message that misses one "
        "ends auth_failed (a missing result is none). Needs the mailbox's authserv_id.",
    )
    verify_dkim: Annotated[bool, BOOL] = Field(
        False,
        description="Also verify the arrived message's DKIM signature ourselves (keys looked "
        "up through dns), shown beside the receiver's verdict. Needs mailbox.",
    )
    bounce_mailbox: Annotated[str | None, REFERENCE] = Field(
        None,
        description="A name from mailboxes: the envelope sender's (from) mailbox, watched for "
        "delivery status notifications (RFC 3464) about this probe's messages. A failed one "
        "ends the run bounced at once; only reports returning the run's signed token are "
        "believed and deleted. Needs mailbox, and an SMTP server that offers DSN.",
    )
    dns_checks: Annotated[DnsChecksEntry | None, DNS_CHECKS] = Field(
        None,
        description="DNS checks of this probe's domains, run as their own job every "
        "dns_interval (not part of a delivery run): mx, mta_sts, tls_rpt of the to domain; "
        "spf, dmarc of the from domain; dnsbl, fcrdns of the sending IPs. A list of names "
        "([mx, spf, dmarc]), or a mapping of name to options: mx: {hosts: [...]} (expected "
        "MX hosts), dmarc: {policy: quarantine} (weakest acceptable p=, default none), "
        "mta_sts: {mode: enforce} (weakest acceptable mode, default enforce), dnsbl: "
        "{zones: [...]} (required: none by default, public blocklists have terms of use), "
        "{} for the defaults; plus sending_ip (one IP or a list; default: the SMTP server's "
        "addresses) and ca_file (CA for the MTA-STS policy's HTTPS, relative to the config "
        "file).",
    )
    dns_interval: Annotated[float | None, DURATION] = Field(
        None,
        description=_DNS_INTERVAL_HELP.replace("How often", "How often this")
        + " Default: defaults.dns_interval (15m). Needs dns_checks.",
    )
    dns: Dns | None = Field(
        None,
        description="This probe's own resolver (same keys as the top-level dns, which it "
        "replaces for this probe): for its dns_checks and verify_dkim.",
    )
    check: Annotated[PolicyCheck | None, CHECK] = Field(
        None,
        description="A built-in policy check: the run succeeds (outcome rejected) when the "
        "server refuses, and ends accepted_unexpectedly when it does not. open_relay: "
        "unauthenticated mail from an outside from to an outside to must be refused at "
        "mail_from, rcpt_to or data (never logs in). auth_requires_tls: connects without TLS; "
        "the EHLO must not offer AUTH and an AUTH PLAIN with a dummy credential must be "
        "refused (500, 502, 503, 504, 530 or 538). sender_mismatch: logged in with the "
        "server's credentials, sending as from (another user's address) must be refused. "
        "smtp_smuggling: a second message smuggled behind a non-standard end of DATA must "
        "never arrive (needs mailbox). Without a mailbox nothing is ever sent: an acceptance "
        "stops the transaction there.",
    )
    expect: Annotated[Expectation | None, EXPECT] = Field(
        None,
        description="The run expects a refusal: {reject_at: STAGE or [STAGES], codes: [CODES]} "
        "(codes default [5xx]); refused there with such a code is outcome rejected (a "
        "success), accepted is accepted_unexpectedly, anything else send_failed. With check "
        "open_relay or sender_mismatch it overrides the check's stages and codes; not with "
        "auth_requires_tls or smtp_smuggling.",
    )
    smuggling_variants: Annotated[tuple[str, ...], SMUGGLING_VARIANTS] = Field(
        (),
        description="check smtp_smuggling: the end-of-data variants to try (e.g. lf_dot_lf, "
        "lf_dot_crlf); default all.",
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """A reflector probe needs the mailbox the reply comes back to; so do verdicts and a bounce watch."""
        if BOOL.read(raw.get("reflector")) and "mailbox" not in raw:
            yield ("reflector",), "a reflector probe needs a mailbox: the reply is seen there"
        if "expect_auth" in raw and "mailbox" not in raw:
            yield ("expect_auth",), "expect_auth needs a mailbox: the verdicts are read there"
        if BOOL.read(raw.get("verify_dkim")) and "mailbox" not in raw:
            yield ("verify_dkim",), "verify_dkim needs a mailbox: the message is read there"
        if raw.get("bounce_mailbox") is not None and "mailbox" not in raw:
            yield (
                ("bounce_mailbox",),
                "bounce_mailbox needs mailbox: the run waits for its message or its bounce",
            )
        if "dns_interval" in raw and "dns_checks" not in raw:
            yield ("dns_interval",), "dns_interval needs dns_checks: it is how often they run"
        yield from _policy_rules(raw)


def _policy_rules(raw: Mapping[str, object]) -> Iterator[Violation]:
    """``check``, ``expect`` and ``smuggling_variants`` fit together."""
    check = CHECK.read(raw.get("check"))
    if check is PolicyCheck.SMTP_SMUGGLING and "mailbox" not in raw:
        yield (
            ("check",),
            "smtp_smuggling needs a mailbox: the smuggled message is looked for there",
        )
    if "smuggling_variants" in raw and check is not PolicyCheck.SMTP_SMUGGLING:
        yield ("smuggling_variants",), "smuggling_variants needs check: smtp_smuggling"
    if "expect" in raw and check is not None and check not in expectations.OVERRIDABLE:
        yield (
            ("expect",),
            f"expect does not go with check: {check} (it expects its own refusal); "
            "only open_relay and sender_mismatch take one",
        )
    expect = EXPECT.read(raw.get("expect"))
    if expect is not None and not expect.stages and check is None:
        yield ("expect",), "expect needs reject_at (the stage the refusal must come at)"
    if expect is not None and check is PolicyCheck.OPEN_RELAY and Stage.AUTH in expect.stages:
        yield ("expect", "reject_at"), "open_relay never logs in: a refusal at auth cannot come"
    if BOOL.read(raw.get("reflector")) and (check is not None or "expect" in raw):
        key = "check" if check is not None else "expect"
        yield (key,), f"a reflector probe cannot have {key}: it waits for a reply"


class RouteSender(Section):
    """One way out of a route: an SMTP server and the sender address used through it."""

    plural: ClassVar[str] = "senders"

    smtp: Annotated[str, REFERENCE] = Field(description="A name from smtp_servers.")
    mail_from: Annotated[str, ADDRESS] = Field(
        alias="from", description="Envelope sender and From header: a bare address, no <>."
    )


class RouteMailbox(Section):
    """One destination of a route: a mailbox and the address that delivers into it."""

    plural: ClassVar[str] = "mailboxes"

    mailbox: Annotated[str, REFERENCE] = Field(description="A name from mailboxes.")
    rcpt_to: Annotated[str, ADDRESS] = Field(
        alias="to", description="Recipient, delivered into the mailbox."
    )


def _null_is_empty(value: object) -> object:
    """A list with every entry commented out is an empty list, reported as such."""
    return [] if value is None else value


def _not_empty(what: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def check(items: tuple[Any, ...]) -> tuple[Any, ...]:
        if not items:
            raise _error(f"a route needs at least one {what}")
        return items

    return check


class Route(Section):
    """Senders x mailboxes: one probe per pair, named ``{route}-{smtp}-to-{mailbox}``."""

    plural: ClassVar[str] = "routes"

    senders: Annotated[
        tuple[RouteSender, ...],
        Field(strict=False, json_schema_extra={"minItems": 1}),
        BeforeValidator(_null_is_empty),
        AfterValidator(_not_empty("sender")),
    ] = Field(description="Where the messages leave: {smtp: SERVER, from: ADDRESS} each.")
    mailboxes: Annotated[
        tuple[RouteMailbox, ...],
        Field(strict=False, json_schema_extra={"minItems": 1}),
        BeforeValidator(_null_is_empty),
        AfterValidator(_not_empty("mailbox")),
    ] = Field(description="Where they arrive: {mailbox: MAILBOX, to: ADDRESS} each.")
    interval: Annotated[float | None, DURATION] = Field(None, description=_INTERVAL_HELP)
    timeout: Annotated[float | None, DURATION] = Field(None, description=_TIMEOUT_HELP)
    jitter: Annotated[float | None, JITTER] = Field(None, description=_JITTER_HELP)
    reflector: Annotated[bool, BOOL] = Field(False, description=_REFLECTOR_HELP)


class Server(Section):
    """The HTTP server: /metrics, /-/healthy, /-/ready, /-/reload, /probe and the status page."""

    listen: Annotated[ServerSettings, LISTEN] = Field(
        ServerSettings(),
        description='"HOST:PORT", ":PORT" (all interfaces) or "[IPv6]:PORT".',
        json_schema_extra=_default(f":{values.DEFAULT_LISTEN_PORT}"),
    )


class Limits(Section):
    """How much the daemon does at once (smtp-probe check runs one probe and ignores them)."""

    max_concurrent_runs: Annotated[int, COUNT] = Field(
        DEFAULT_MAX_CONCURRENT_RUNS,
        description="Runs in progress at once, across all probes. A run beyond it waits for a "
        "slot within its own timeout; one that gets none ends error.",
    )
    sweep_grace: Annotated[float, DURATION] = Field(
        DEFAULT_SWEEP_GRACE,
        description="Replicas sharing a mailbox (one token_secret_file): a probe message, "
        "reply or bounce of another instance is deleted only once its send time is older "
        "than the longest probe timeout plus this; younger ones may still be awaited by "
        "their replica and are left alone. Also absorbs clock skew between the hosts.",
        json_schema_extra=_default(f"{DEFAULT_SWEEP_GRACE / 60:g}m"),
    )


_SOME_PROBES: Final[JsonDict] = {
    "anyOf": [
        {"required": ["probes"], "properties": {"probes": {"minItems": 1}}},
        {"required": ["routes"], "properties": {"routes": {"minProperties": 1}}},
    ]
}


class ConfigFile(Section):
    """The smtp-probe daemon's config file (smtp-probe run --config FILE)."""

    model_config = ConfigDict(json_schema_extra=_SOME_PROBES)

    defaults: Defaults | None = Field(
        None, description="Defaults for every probe that does not set its own value."
    )
    token_secret_file: Annotated[Secret | None, TOKEN_SECRET_FILE] = Field(
        None,
        description="File holding the key that signs each run's token (HMAC): at least 16 "
        "bytes, surrounding whitespace ignored (make one with: openssl rand -hex 32). "
        "Without it a random key is made at every start.",
    )
    oauth_clients: dict[str, OAuthClient] | None = Field(
        None,
        description="Where OAuth2 access tokens come from, by name; smtp_servers and "
        "mailboxes refer to a name with oauth. Tokens are cached in memory per client and "
        "shared by everything that names it.",
    )
    smtp_servers: dict[str, SmtpServer] | None = Field(
        None, description="SMTP servers the probes submit through, by name."
    )
    mailboxes: dict[str, Mailbox] | None = Field(
        None,
        description="IMAP mailboxes the probes watch, by name. Probes sharing one mailbox "
        "share one connection to it.",
    )
    probes: Annotated[tuple[Probe, ...], Field(strict=False), BeforeValidator(_null_is_empty)] = (
        Field((), description="The probes. At least one probe, here or made by routes.")
    )
    routes: dict[str, Route] | None = Field(
        None,
        description="Probes by the pair: each route makes one probe per sender and mailbox, "
        "named ROUTE-SMTP-to-MAILBOX, each an ordinary probe.",
    )
    server: Server | None = Field(None, description="Where the HTTP server listens.")
    limits: Limits | None = Field(
        None, description="How many runs the daemon has in progress at once."
    )
    dns: Dns | None = Field(
        None,
        description="The resolver for smtp-probe's own DNS lookups (DKIM keys of verify_dkim, "
        "dns_checks); default: the system's. A probe's own dns replaces it for that probe.",
    )

    @classmethod
    def rules(cls, raw: Mapping[str, object]) -> Iterator[Violation]:
        """Some probes; references between sections hold; each probe's timing fits its interval."""
        yield from _some_probes(raw)
        yield from references.check(raw)
        yield from _probe_timing(raw)
        yield from _expect_auth_ids(raw)
        yield from _policy_servers(raw)


def _some_probes(raw: Mapping[str, object]) -> Iterator[Violation]:
    """At least one probe, written in probes or made by a route."""
    routes = raw.get("routes")
    if routes is not None and (not isinstance(routes, dict) or routes):
        return  # a route makes probes (or is malformed, and reported as such)
    if "probes" not in raw:
        yield ("probes",), "required key is missing"
    elif raw["probes"] is None or raw["probes"] == []:
        yield ("probes",), "no probes are configured; add at least one"


def _expect_auth_ids(raw: Mapping[str, object]) -> Iterator[Violation]:
    """A probe's expect_auth needs its mailbox's authserv_id: nothing else is believed."""
    mailboxes = raw.get("mailboxes")
    probes = raw.get("probes")
    if not isinstance(mailboxes, dict) or not isinstance(probes, list):
        return
    for index, probe in enumerate(probes):
        if not isinstance(probe, dict) or "expect_auth" not in probe:
            continue
        name = probe.get("mailbox")
        entry = mailboxes.get(name) if isinstance(name, str) else None
        if isinstance(entry, dict) and "authserv_id" not in entry:
            yield (
                ("probes", index, "expect_auth"),
                f"expect_auth needs mailboxes.{name}.authserv_id: only the receiver's "
                "Authentication-Results headers are believed",
            )


def _policy_servers(raw: Mapping[str, object]) -> Iterator[Violation]:
    """A check's server fits it.

    ``sender_mismatch`` needs a server it logs in to (the test is what a
    user may send); ``auth_requires_tls`` talks to one host, not an ``mx``
    domain (give the MX host you mean).
    """
    servers = raw.get("smtp_servers")
    probes = raw.get("probes")
    if not isinstance(servers, dict) or not isinstance(probes, list):
        return
    for index, probe in enumerate(probes):
        if not isinstance(probe, dict):
            continue
        check = CHECK.read(probe.get("check"))
        name = probe.get("smtp")
        entry = servers.get(name) if isinstance(name, str) else None
        if check is PolicyCheck.AUTH_REQUIRES_TLS and isinstance(entry, dict) and "mx" in entry:
            yield (
                ("probes", index, "check"),
                f"auth_requires_tls talks to one host: smtp_servers.{name} is an mx domain; "
                "give a server with the MX host you mean",
            )
        if check is not PolicyCheck.SENDER_MISMATCH:
            continue
        if isinstance(entry, dict) and "username" not in entry:
            yield (
                ("probes", index, "check"),
                f"sender_mismatch needs smtp_servers.{name}.username: the check logs in and "
                "sends as another address",
            )


def _probe_timing(raw: Mapping[str, object]) -> Iterator[Violation]:
    """A timeout or jitter written in a probe or route must fit its interval (or the default's)."""
    default_interval = _default_interval(raw.get("defaults"))
    scheduled: list[tuple[Loc, object]] = []
    probes = raw.get("probes")
    if isinstance(probes, list):
        scheduled += [(("probes", index), probe) for index, probe in enumerate(probes)]
    routes = raw.get("routes")
    if isinstance(routes, dict):
        scheduled += [(("routes", name), route) for name, route in routes.items()]
    for at, entry in scheduled:
        if not isinstance(entry, dict):
            continue
        interval = DURATION.read(entry["interval"]) if "interval" in entry else default_interval
        if interval is None:  # bad, and reported where it is written
            continue
        timeout = DURATION.read(entry.get("timeout"))
        for loc, message in timing.check(interval, timeout, JITTER.read(entry.get("jitter"))):
            yield (*at, *loc), message


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
