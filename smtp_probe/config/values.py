"""The small value types of the config file and of ``check``'s flags, and their defaults.

One parser per kind of value (duration, host, port, address, probe name,
listen address, password, file path, ...), shared by the file's schema
(:mod:`smtp_probe.config.model`) and the command line, so a value means the
same wherever it is written. Each raises :class:`ValueError` with a message
that says what is expected and never quotes the input: the input may be a
password written under the wrong key, and the caller already knows where it
stands (a config path, a flag). Names a message may show are choices, file
paths the probe resolved itself and environment variable names.

The defaults of every setting are declared once: those of a route (ports
per TLS mode, command timeout, folder, polling, ...) beside the route's
types in :mod:`smtp_probe.probe.spec`, which the engine reads and which must
not depend on the config; the daemon's own (interval, jitter, listen port,
...) here. The schema and the CLI refer to these constants.

Plain Python only, no pydantic or YAML: ``smtp-probe check`` with flags
imports this module and must start fast. Rarely needed modules (``ssl``
behind the CA check, ``ipaddress``, ``difflib``) are imported where used.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final

from smtp_probe.probe.spec import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_FOLDER,
    DEFAULT_IDLE,
    DEFAULT_IMAP_TLS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_SMTP_TLS,
    DEFAULT_VERIFY,
    DMARC_POLICIES,
    IMAP_PORTS,
    MIN_POLL_INTERVAL,
    MTA_STS_MODES,
    SMTP_PORTS,
    DnsCheck,
    TlsMode,
)
from smtp_probe.secret import Secret

__all__ = [  # the route defaults are re-exported: the schema and the CLI read them here
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_FOLDER",
    "DEFAULT_IDLE",
    "DEFAULT_IMAP_TLS",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_RUN_TIMEOUT",
    "DEFAULT_SMTP_TLS",
    "DEFAULT_VERIFY",
    "DMARC_POLICIES",
    "IMAP_PORTS",
    "MIN_POLL_INTERVAL",
    "MTA_STS_MODES",
    "SMTP_PORTS",
    "TlsMode",
]


# ------------------------------------------------------------------- defaults

DEFAULT_INTERVAL: Final = 60.0
"""Seconds between the starts of two runs of a probe."""
DEFAULT_TIMEOUT: Final = 120.0
"""A probe's run deadline from ``defaults``; capped at the probe's interval."""
DEFAULT_JITTER: Final = 5.0
"""Random shift of each run; capped at half the probe's interval."""
DEFAULT_LISTEN_PORT: Final = 10587
MIN_TOKEN_SECRET_BYTES: Final = 16
MAX_DURATION: Final = 31 * 24 * 3600.0
"""A sanity bound: far beyond any useful setting, well inside what timers accept."""
MIN_PORT: Final = 1
MAX_PORT: Final = 65535


class Preset(enum.StrEnum):
    """A mail provider whose servers a ``provider:`` key fills in (host and TLS mode)."""

    MICROSOFT365 = "microsoft365"
    GOOGLE = "google"


SMTP_PRESETS: Final[Mapping[Preset, tuple[str, TlsMode]]] = MappingProxyType(
    {
        Preset.MICROSOFT365: ("smtp.office365.com", TlsMode.STARTTLS),
        Preset.GOOGLE: ("smtp.gmail.com", TlsMode.STARTTLS),
    }
)
"""Host and TLS mode of each provider's submission server; the port follows the TLS mode
(587 for STARTTLS; Gmail also takes implicit TLS on 465, Exchange Online does not)."""
IMAP_PRESETS: Final[Mapping[Preset, tuple[str, TlsMode]]] = MappingProxyType(
    {
        Preset.MICROSOFT365: ("outlook.office365.com", TlsMode.TLS),
        Preset.GOOGLE: ("imap.gmail.com", TlsMode.TLS),
    }
)
"""Host and TLS mode of each provider's IMAP server (993)."""

# ---------------------------------------------------------- what the file says

# Patterns for the JSON Schema (ECMA-262 regular expressions that Python's re
# reads the same way). The parsers below are the authority; the tests hold
# the patterns to them.
DURATION_PATTERN: Final = r"^\s*(?!0+(?:\.0+)?\s*(?:ms|s|m|h)\s*$)\d+(?:\.\d+)?\s*(?:ms|s|m|h)\s*$"
JITTER_PATTERN: Final = r"^\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h)\s*$"
PROBE_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ADDRESS_PATTERN: Final = r"^[^@\s<>]+@[^@\s<>]+$"
HOST_PATTERN: Final = r"^(?:[^\s:\[\]]+|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:%\S+)?)$"
HELO_PATTERN: Final = r"^[!-~]+$"
LISTEN_PATTERN: Final = r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*)(?::\d{1,5})?$"
NOT_BLANK_PATTERN: Final = r"\S"
WORD_PATTERN: Final = r"^\S+$"
URL_PATTERN: Final = (
    r"^(?:https://[^\s/?#]+|http://(?:localhost|127\.[0-9.]+|\[::1\])(?::\d+)?)(?:[/?#]\S*)?$"
)

DURATION_EXAMPLES: Final = "500ms, 30s, 5m or 1h"
ADDRESS_EXPECTED: Final = "a mail address like probe@example.com (one @, no spaces, no <>)"
PROBE_NAME_EXPECTED: Final = (
    "a probe name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
)
PORT_EXPECTED: Final = f"a port number {MIN_PORT}-{MAX_PORT}"

_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PROBE_NAME: Final = re.compile(PROBE_NAME_PATTERN.strip("^$"))
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMES_LISTED: Final = 10


class ValueProblems(ValueError):
    """Several independent problems with one value; each message is reported on its own."""

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages: tuple[str, ...] = tuple(messages)
        super().__init__("; ".join(self.messages))


def kind_of(value: object) -> str:
    """What a value read from YAML is, for "expected X, got Y"; never the value itself."""
    if value is None:
        return "nothing (null)"
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (bytes, "binary data"),
        (list, "a list"),
        (dict, "a mapping"),
    )
    for python_type, description in kinds:
        if isinstance(value, python_type):
            return description
    return "a date" if type(value).__module__ == "datetime" else "a value of another kind"


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice ``word`` was most likely meant to be, if one is close."""
    import difflib  # here, not at the top: only errors need it

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def names_hint(names: Sequence[str]) -> str:
    """`` (defined: a, b)`` for a short list of names, else nothing."""
    if not names or len(names) > _NAMES_LISTED:
        return ""
    return f" (defined: {', '.join(names)})"


def format_seconds(seconds: float) -> str:
    """A computed duration for a message or a schema default: ``120s``, ``0.25s``."""
    return f"{seconds:g}s"


# ------------------------------------------------------------------ durations


def parse_duration(text: str, *, unit_required: bool = False, allow_zero: bool = False) -> float:
    """Seconds in a duration: ``500ms``, ``30s``, ``5m``, ``1h`` (at most 31 days).

    A bare number is seconds (``--timeout 60``) unless ``unit_required``: in
    the config file, which mixes seconds and minutes, ``30`` is ambiguous.
    ``allow_zero`` admits ``0s`` (no jitter).

    Raises:
        ValueError: not such a duration; the message says what is expected.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a duration like {DURATION_EXAMPLES}")
    number, unit = match.groups()
    if unit is None:
        if unit_required:
            raise ValueError(f"a duration needs a unit: {DURATION_EXAMPLES}")
        unit = "s"
    seconds = float(number) * _UNIT_SECONDS[unit]
    if seconds == 0 and not allow_zero:
        raise ValueError("a duration must be longer than zero")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration can be at most {MAX_DURATION / 3600:g}h (31 days)")
    return seconds


def parse_poll_interval(text: str) -> float:
    """A mailbox's poll interval cap: a file duration of at least :data:`MIN_POLL_INTERVAL`.

    Raises:
        ValueError: not a duration, or shorter than the first poll delay.
    """
    seconds = parse_duration(text, unit_required=True)
    if seconds < MIN_POLL_INTERVAL:
        raise ValueError(f"must be at least {MIN_POLL_INTERVAL * 1000:g}ms")
    return seconds


# ----------------------------------------------------------- hosts and ports


def check_port(number: int) -> int:
    """``number`` if it is a TCP port.

    Raises:
        ValueError: outside 1-65535.
    """
    if not MIN_PORT <= number <= MAX_PORT:
        raise ValueError(f"outside the port range {MIN_PORT}-{MAX_PORT}")
    return number


def check_count(number: int) -> int:
    """``number`` if it is a usable limit (at least 1).

    Raises:
        ValueError: below 1.
    """
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def parse_port(text: str) -> int:
    """A port number written as text (after ``host:``).

    Raises:
        ValueError: not digits, or outside 1-65535.
    """
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"expected {PORT_EXPECTED}")
    return check_port(int(text))


def smtp_port(tls: TlsMode) -> int:
    """The SMTP port a TLS mode implies: 25, 587 (``starttls``) or 465 (``tls``)."""
    return SMTP_PORTS[tls]


def imap_port(tls: TlsMode) -> int:
    """The IMAP port a TLS mode implies: 993 for ``tls``, else 143."""
    return IMAP_PORTS[tls]


def parse_tls_mode(text: str) -> TlsMode:
    """An SMTP server's TLS: ``none``, ``starttls``, ``tls`` or ``opportunistic``.

    Raises:
        ValueError: another word; the message suggests the closest mode.
    """
    return _tls_mode(text, tuple(TlsMode))


IMAP_TLS_MODES: Final = (TlsMode.NONE, TlsMode.STARTTLS, TlsMode.TLS)
"""A mailbox's TLS: a login is never sent over a TLS that might not happen."""


def parse_imap_tls_mode(text: str) -> TlsMode:
    """A mailbox's TLS: ``none``, ``starttls`` or ``tls``.

    Raises:
        ValueError: another word (``opportunistic`` is said to be SMTP only).
    """
    if text == TlsMode.OPPORTUNISTIC.value:
        raise ValueError("opportunistic is for SMTP servers only: use tls, starttls or none")
    return _tls_mode(text, IMAP_TLS_MODES)


def _tls_mode(text: str, modes: Sequence[TlsMode]) -> TlsMode:
    choices = [mode.value for mode in modes]
    if text in choices:
        return TlsMode(text)
    suggestion = closest(text, choices)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    raise ValueError(f"expected one of {', '.join(choices)}{hint}")


def parse_host(text: str) -> str:
    """A host name or IP address without a port (IPv6 without brackets).

    Raises:
        ValueError: empty, with whitespace, in brackets, or with a port.
    """
    not_blank(text)
    if any(c.isspace() for c in text):
        raise ValueError("a host name cannot contain whitespace")
    if text.startswith("["):
        raise ValueError("write IPv6 addresses without brackets")
    if ":" in text and not _is_ipv6(text):
        raise ValueError("put the port in 'port', not in the host")
    return text


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Split ``HOST[:PORT]`` (``[v6]:PORT`` for IPv6 literals); ``None`` when no port is given.

    Raises:
        ValueError: the host or the port is missing or malformed.
    """
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected [IPV6]:PORT")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text and not _is_ipv6(text):
        raise ValueError("write IPv6 addresses as [IPV6]:PORT")
    if not host:
        raise ValueError("missing host")
    if port_text is None:
        return parse_host(host), None
    if not port_text:
        raise ValueError("missing port after ':'")
    return parse_host(host), parse_port(port_text)


NAMESERVER_EXPECTED: Final = "a nameserver is IP, IP:PORT or [IPV6]:PORT"


def parse_nameserver(text: str) -> tuple[str, int]:
    """A resolver's address: ``IP``, ``IP:PORT`` or ``[IPV6]:PORT`` (port 53 when none).

    Raises:
        ValueError: not an IP address (a name would need a resolver itself), or a bad port.
    """
    import ipaddress  # here: only a dns section or --dns-server needs it

    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        raise ValueError(f"{exc}: {NAMESERVER_EXPECTED}") from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address: {NAMESERVER_EXPECTED}") from None
    return host, 53 if port is None else port


def parse_expect_auth(text: str) -> tuple[tuple[str, str], ...]:
    """One ``--expect-auth``: ``METHOD=RESULT`` or ``METHOD=RESULT,RESULT`` as pairs.

    Raises:
        ValueError: no ``=``, an unknown method, or a result the method cannot have.
    """
    from smtp_probe.probe.verdicts import METHODS, RESULTS  # here: only this flag needs them

    method, sep, results = text.partition("=")
    method = method.strip().lower()
    if not sep or not results.strip():
        raise ValueError("expected METHOD=RESULT, like dkim=pass or spf=pass,neutral")
    if method not in RESULTS:
        suggestion = closest(method, METHODS)
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        raise ValueError(f"unknown method {method!r}{hint}; expected one of {', '.join(METHODS)}")
    pairs = []
    for result in (word.strip().lower() for word in results.split(",")):
        if result not in RESULTS[method]:
            raise ValueError(f"expected one of {', '.join(RESULTS[method])} for {method}")
        pairs.append((method, result))
    return tuple(pairs)


DEFAULT_CHECK_DNS_CHECKS: Final = (
    DnsCheck.MX,
    DnsCheck.SPF,
    DnsCheck.DMARC,
    DnsCheck.MTA_STS,
    DnsCheck.TLS_RPT,
    DnsCheck.FCRDNS,
)
"""``check --dns-checks`` without a list: every check but ``dnsbl``, which needs zones."""


def _one_of(text: str, choices: Sequence[str]) -> str:
    """``text`` if it is one of ``choices``; else a message with the closest one."""
    if text in choices:
        return text
    suggestion = closest(text, choices)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    raise ValueError(f"expected one of {', '.join(choices)}{hint}")


def parse_dns_check(text: str) -> DnsCheck:
    """One DNS check name: ``mx``, ``spf``, ``dmarc``, ``mta_sts``, ``tls_rpt``, ``dnsbl``, ``fcrdns``.

    Raises:
        ValueError: another word; the message suggests the closest name.
    """
    return DnsCheck(_one_of(text.strip(), [check.value for check in DnsCheck]))


def parse_dns_checks(text: str) -> tuple[DnsCheck, ...]:
    """``check --dns-checks=LIST``: comma-separated check names, each once.

    Raises:
        ValueError: an empty list, an unknown name or a name given twice.
    """
    words = [word.strip() for word in text.split(",")]
    if not any(words):
        raise ValueError("name at least one check")
    checks: list[DnsCheck] = []
    for word in words:
        check = parse_dns_check(word)
        if check in checks:
            raise ValueError(f"{check} is listed twice")
        checks.append(check)
    return tuple(checks)


def parse_ip(text: str) -> str:
    """An IPv4 or IPv6 address (a sending IP), in its normal written form.

    Raises:
        ValueError: not an IP address.
    """
    import ipaddress  # here: only DNS checks need it

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError("expected an IP address like 203.0.113.7 or 2001:db8::7") from None


def parse_domain(text: str) -> str:
    """A DNS name (a DNSBL zone, an MX host): dots and labels, no spaces; lower case, no final dot.

    Raises:
        ValueError: empty, with whitespace or a colon, or an IP address.
    """
    not_blank(text)
    name = text.strip().rstrip(".").lower()
    if not name or any(c.isspace() or c in ":/[]@" for c in name) or ".." in name:
        raise ValueError("expected a DNS name like zen.example.org")
    if all(part.isdigit() for part in name.split(".")):
        raise ValueError("expected a DNS name like zen.example.org, not an IP address")
    return name


def parse_dmarc_policy(text: str) -> str:
    """The weakest acceptable DMARC ``p=``: ``none``, ``quarantine`` or ``reject``.

    Raises:
        ValueError: another word; the message suggests the closest one.
    """
    return _one_of(text.strip(), DMARC_POLICIES)


def parse_mta_sts_mode(text: str) -> str:
    """The weakest acceptable MTA-STS ``mode``: ``none``, ``testing`` or ``enforce``.

    Raises:
        ValueError: another word; the message suggests the closest one.
    """
    return _one_of(text.strip(), MTA_STS_MODES)


def parse_listen(text: str) -> tuple[str, int]:
    """A listen address: ``HOST:PORT``, ``:PORT``, ``[v6]:PORT``, ``HOST`` or ``PORT``.

    An empty host (``:PORT``, ``PORT``) means all interfaces; a missing port
    is :data:`DEFAULT_LISTEN_PORT`.

    Raises:
        ValueError: malformed; the message says why.
    """
    stripped = text.strip()
    if stripped.isdigit() or (stripped.startswith(":") and stripped.count(":") == 1):
        return "", parse_port(stripped.removeprefix(":"))
    host, port = parse_host_port(stripped)
    return host, DEFAULT_LISTEN_PORT if port is None else port


def _is_ipv6(text: str) -> bool:
    import ipaddress  # here, not at the top: only hosts with a colon need it

    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------- names and addresses


def not_blank(text: str) -> str:
    """``text`` if it has a visible character.

    Raises:
        ValueError: empty or whitespace only.
    """
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def parse_address(text: str) -> str:
    """A bare mail address: ``local@domain``, exactly one ``@``, no whitespace, no ``<>``.

    Raises:
        ValueError: anything else.
    """
    local, _, domain = text.partition("@")
    if (
        text.count("@") != 1
        or not local
        or not domain
        or any(c.isspace() or c in "<>" for c in text)
    ):
        raise ValueError(f"expected {ADDRESS_EXPECTED}")
    return text


def parse_helo(text: str) -> str:
    """The name to greet with in ``EHLO``: one word of printable ASCII.

    Raises:
        ValueError: empty, with whitespace, or not ASCII.
    """
    not_blank(text)
    if any(c.isspace() for c in text) or not text.isascii() or not text.isprintable():
        raise ValueError("expected a host name: one word of ASCII, no spaces")
    return text


def parse_word(text: str) -> str:
    """One word without whitespace: a client id, a tenant, a program name.

    Raises:
        ValueError: empty or with whitespace.
    """
    not_blank(text)
    if any(c.isspace() for c in text):
        raise ValueError("expected one word, without spaces")
    return text


def parse_url(text: str) -> str:
    """An ``https://`` URL of a token endpoint or authority (``http://`` to loopback only).

    A client secret or refresh token goes to this URL: in the clear it
    would cross the network readable, so plain ``http`` is for a test
    server on this host.

    Raises:
        ValueError: not an http(s) URL with a host, with whitespace, or
            ``http://`` to another host.
    """
    from urllib.parse import urlsplit  # here, not at the top: only OAuth settings need it

    if not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError("expected a URL without spaces")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises for a malformed port
    except ValueError:
        raise ValueError("expected a URL like https://login.example.com/path") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected a URL like https://login.example.com/path")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            "use https://: over http:// the client's secret would cross the network in the "
            "clear (http:// is allowed to localhost only)"
        )
    return text


def _is_loopback(host: str) -> bool:
    import ipaddress  # here, not at the top: only http:// URLs need it

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_probe_name(text: str) -> str:
    """A probe name, fit for a Prometheus label value and a ``Subject`` header.

    Raises:
        ValueError: not 1-64 of ``[A-Za-z0-9_.-]`` starting with a letter or digit.
    """
    if not _PROBE_NAME.fullmatch(text):
        raise ValueError(f"expected {PROBE_NAME_EXPECTED}")
    return text


# ------------------------------------------------------------ files and secrets


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` by the variable's value and ``$${`` by a literal ``${``.

    Raises:
        ValueProblems: every malformed reference and unset variable, each
            its own message naming the variable, never the text around it.
    """
    parts: list[str] = []
    problems: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("$${", index):
            parts.append("${")
            index += 3
        elif text.startswith("${", index):
            end = text.find("}", index + 2)
            if end < 0:
                problems.append("unterminated '${' (write '$${' for a literal '${')")
                break
            name = text[index + 2 : end]
            if not _ENV_NAME.fullmatch(name):
                problems.append(
                    "'${' must be followed by a variable name and '}' "
                    "(write '$${' for a literal '${')"
                )
            elif name not in environ:
                problems.append(f"environment variable {name} is not set")
            else:
                parts.append(environ[name])
            index = end + 1
        else:
            parts.append(text[index])
            index += 1
    if problems:
        raise ValueProblems(problems)
    return "".join(parts)


def parse_password(text: str, environ: Mapping[str, str]) -> Secret:
    """A password written in the file, ``${VAR}`` references expanded from ``environ``.

    Raises:
        ValueProblems: a reference is malformed or its variable unset.
        ValueError: the password is empty once expanded.
    """
    expanded = expand_env(text, environ)
    if not expanded:
        raise ValueError("must not be empty")
    return Secret(expanded)


def resolve_path(text: str, base_dir: Path) -> Path:
    """A file path; relative paths are relative to ``base_dir``, ``~`` is the home directory.

    ``normpath``, not ``resolve()``: symlinks stay (a Kubernetes secret
    volume swaps one on rotation), but ``a/../b`` shows as ``b`` in errors.

    Raises:
        ValueError: empty, holds a NUL, or ``~`` with no home directory.
    """
    not_blank(text)
    if "\0" in text:
        raise ValueError("a path cannot contain a NUL character")
    try:
        path = Path(text).expanduser()
    except RuntimeError:
        raise ValueError("cannot expand '~': no home directory is known") from None
    return Path(os.path.normpath((base_dir / path).absolute()))


def read_password_file(path: Path) -> Secret:
    """The password in ``path``: its UTF-8 content less ONE trailing newline (LF or CR LF).

    Raises:
        ValueError: the file cannot be read, is not UTF-8 or is empty.
    """
    try:
        content = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if content.endswith("\r\n"):
        content = content[:-2]
    elif content.endswith("\n"):
        content = content[:-1]
    if not content:
        raise ValueError(f"{path} is empty")
    return Secret(content)


def read_token_secret(path: Path) -> Secret:
    """The key that signs run tokens: the file's content without surrounding whitespace.

    Raises:
        ValueError: unreadable, shorter than 16 bytes, or not UTF-8.
    """
    advice = "make one with: openssl rand -hex 32"
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) < MIN_TOKEN_SECRET_BYTES:
        raise ValueError(
            f"{path} holds fewer than {MIN_TOKEN_SECRET_BYTES} bytes; "
            f"at least {MIN_TOKEN_SECRET_BYTES} are needed ({advice})"
        )
    try:
        return Secret(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text ({advice})") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


_PEM_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY: Final = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def check_certificate_file(path: Path) -> Path:
    """``path`` if it is a readable PEM file with a certificate (an app's, not a CA bundle).

    Raises:
        ValueError: unreadable or without a PEM certificate.
    """
    if _PEM_CERTIFICATE not in _read_bytes(path):
        raise ValueError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return path


def check_private_key_file(path: Path) -> Path:
    """``path`` if it is a readable PEM file with a private key; the key is not kept.

    Raises:
        ValueError: unreadable or without a PEM private key.
    """
    if _PEM_PRIVATE_KEY.search(_read_bytes(path)) is None:
        raise ValueError(f"{path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
    return path


def has_private_key(path: Path) -> bool:
    """Whether the PEM file at ``path`` holds a private key (``False`` when unreadable)."""
    try:
        return _PEM_PRIVATE_KEY.search(path.read_bytes()) is not None
    except OSError:
        return False


def check_service_account_file(path: Path) -> Path:
    """``path`` if it is a Google service account key file (JSON); the key is not kept.

    Raises:
        ValueError: unreadable, not JSON, or not a service account's key.
    """
    import json  # here, not at the top: only Google service accounts need it

    content = _read_bytes(path)
    expected = (
        f"{path} is not a service account key file "
        '(JSON with "type": "service_account", client_email and private_key)'
    )
    try:
        data = json.loads(content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError; their text quotes the file
        raise ValueError(expected) from None
    if (
        not isinstance(data, dict)
        or data.get("type") != "service_account"
        or not data.get("client_email")
        or not data.get("private_key")
    ):
        raise ValueError(expected)
    return path


def split_command(text: str) -> tuple[str, ...]:
    """A command line split into its words as a POSIX shell would, without running a shell.

    No variables, globs, pipes or redirections: quotes and backslashes only.

    Raises:
        ValueError: an unclosed quote or a trailing backslash, or no words.
    """
    import shlex  # here, not at the top: only token commands need it

    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:  # shlex's messages ("No closing quotation") quote nothing
        raise ValueError(f"cannot split the command: {str(exc).lower()}") from None
    if not words:
        raise ValueError("must not be empty")
    return words


def check_command(argv: Sequence[str], base_dir: Path) -> tuple[str, ...]:
    """``argv`` with its program checked, so a token command that cannot run fails at load.

    A program written with a ``/`` is resolved against ``base_dir`` and must
    be an executable file; a bare name must be found in ``PATH``, and stays
    as written, looked up in ``PATH`` when it runs, as a
    shell would. The message never names the program (the location does):
    a command line is where people put things they should not.

    Raises:
        ValueError: no program, or it cannot be run.
    """
    import shutil  # here, not at the top: only token commands need it

    if not argv or not argv[0].strip():
        raise ValueError("the command needs a program to run")
    program, *arguments = argv
    if "/" not in program:
        if shutil.which(program) is None:
            raise ValueError("the program is not found in PATH")
        return (program, *arguments)
    path = resolve_path(program, base_dir)
    if not path.is_file():
        raise ValueError(f"the program {path} does not exist")
    if not os.access(path, os.X_OK):
        raise ValueError(f"the program {path} is not executable")
    return (str(path), *arguments)


def check_ca_file(path: Path) -> Path:
    """``path`` if it is a readable PEM file with at least one certificate.

    Raises:
        ValueError: missing, unreadable or without a certificate.
    """
    # Here, not at the top: it imports ssl, which a check without --ca-file never needs.
    from smtp_probe.probe.tls import ca_file_problem

    problem = ca_file_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path
