"""``--web.config.file``: TLS, basic auth and extra headers, in the Prometheus exporter-toolkit format.

Every Prometheus exporter and Prometheus itself read this file
(https://github.com/prometheus/exporter-toolkit, docs/web-configuration.md),
so operators secure smtp_probe as they secure the rest: ``promtool check
web-config`` accepts what this module accepts. Supported keys:

* ``tls_server_config``: ``cert_file``, ``key_file``, ``client_auth_type``
  (``NoClientCert``, ``VerifyClientCertIfGiven``,
  ``RequireAndVerifyClientCert``), ``client_ca_file``, ``min_version`` and
  ``max_version`` (``TLS10`` to ``TLS13``). ``RequestClientCert`` and
  ``RequireAnyClientCert`` accept a client certificate *without verifying
  it*, which Python's ``ssl`` cannot do, and which authenticates nobody:
  they are refused with that reason rather than silently strengthened or
  weakened. Other exporter-toolkit keys (cipher suites, curves, inline
  certificates, allowed SANs) are refused by name for the same reason.
* ``http_server_config``: ``headers`` (added to every response) and
  ``http2`` (accepted, ignored: this server speaks HTTP/1.1).
* ``basic_auth_users``: ``username: bcrypt hash``.

Like exporter-toolkit, the file (and the certificate files it names) is
re-read when it changes, checked on every new connection and request: a
change that is bad is logged and the previous settings stay, so a typo never
takes down a running server. Turning TLS on or off, or changing the client
certificate policy or the TLS versions, needs a restart (an accepted TLS
connection keeps the verification mode of the listener); certificates, keys,
CAs, users and headers apply to the next connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

from smtp_probe import log
from smtp_probe.config.document import Document, compose
from smtp_probe.config.errors import ConfigError, Loc, Problems

_LOG: Final = log.get(__name__)

REALM: Final = "smtp-probe"
"""The realm of the ``WWW-Authenticate`` challenge."""

HEALTH_PATHS: Final = frozenset({"/-/healthy", "/-/ready"})
"""Paths ``--web.health-without-auth`` exempts from basic auth (never from TLS)."""

AUTH_CACHE_SECONDS: Final = 60.0
"""How long a successful bcrypt check is remembered: bcrypt takes ~0.1 s by
design, and Prometheus sends the same credentials every scrape
(exporter-toolkit caches checks for the same reason)."""
_AUTH_CACHE_MAX: Final = 100

_CLIENT_AUTH: Final = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH: Final = frozenset({"RequestClientCert", "RequireAnyClientCert"})
_VERSIONS: Final = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TLS_KEYS: Final = frozenset(
    {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
)
_TLS_UNSUPPORTED: Final = frozenset(
    {
        "cert", "key", "client_ca", "cipher_suites", "curve_preferences",
        "prefer_server_cipher_suites", "client_allowed_sans",
    }
)  # fmt: skip
_HTTP_KEYS: Final = frozenset({"headers", "http2"})
# Headers the server itself owns (exporter-toolkit refuses to override them too).
_RESERVED_HEADERS: Final = frozenset(
    {
        "authorization", "www-authenticate", "content-length", "content-encoding",
        "content-type", "transfer-encoding", "connection", "server", "date",
    }
)  # fmt: skip
_BCRYPT_PREFIXES: Final = ("$2a$", "$2b$", "$2y$")


@dataclass(frozen=True)
class TlsSettings:
    """``tls_server_config``, its paths resolved against the web config's directory."""

    cert_file: Path
    key_file: Path
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion | None = None

    def policy(self) -> tuple[ssl.VerifyMode, ssl.TLSVersion, ssl.TLSVersion | None]:
        """What an accepted connection cannot change after the listener starts."""
        return (self.client_auth, self.min_version, self.max_version)

    def context(self) -> ssl.SSLContext:
        """A server context with these files loaded.

        Raises:
            ssl.SSLError, OSError: a file is missing, unreadable or not what it should be.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        if self.max_version is not None:
            context.maximum_version = self.max_version
        context.load_cert_chain(self.cert_file, self.key_file)
        context.verify_mode = self.client_auth
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=self.client_ca_file)
        return context


@dataclass(frozen=True)
class WebConfig:
    """A parsed web config; the empty one (no file) serves plain HTTP without auth."""

    tls: TlsSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    """Username -> bcrypt hash."""
    headers: Mapping[str, str] = field(default_factory=dict)


def parse(text: str, source: Path) -> WebConfig:
    """Parse the text of a web config; relative paths are relative to ``source``'s directory.

    Raises:
        ConfigError: every problem, each located ``FILE:LINE:COL: KEY: MESSAGE``.
            No message quotes a value (a hash or key path is shown by position only).
    """
    problems = Problems(source)
    doc = compose(text, problems)
    if doc is None or doc.data is None:
        return WebConfig()
    if not isinstance(doc.data, dict):
        raise problems.whole_file("a web config is a mapping of sections")
    data: dict[str, object] = doc.data
    base = source.parent
    for key in data:
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users"):
            _add(doc, (key,), "unknown key", key=True)
    tls = _tls(doc, data.get("tls_server_config"), base)
    headers = _headers(doc, data.get("http_server_config"))
    users = _users(doc, data.get("basic_auth_users"))
    if problems:
        raise problems.error()
    return WebConfig(tls, users, headers)


def load(path: Path) -> WebConfig:
    """Read and parse the web config at ``path``, and check its TLS files load.

    Raises:
        ConfigError: the file is unreadable or invalid, or a certificate or key does not load.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError([f"{path}: cannot read the web config: {reason}"], path) from None
    config = parse(text, path)
    if config.tls is not None:
        _check_files(config.tls, path)
    return config


def _check_files(tls: TlsSettings, path: Path) -> None:
    """Load each TLS file so an error names the key whose file is wrong.

    Raises:
        ConfigError: a file is missing or unreadable, or not a certificate, key or CA.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("cert_file", lambda: context.load_verify_locations(cafile=tls.cert_file)),
        ("key_file", lambda: context.load_cert_chain(tls.cert_file, tls.key_file)),
    ]
    if tls.client_ca_file is not None:
        ca = tls.client_ca_file
        steps.append(("client_ca_file", lambda: context.load_verify_locations(cafile=ca)))
    for key, step in steps:
        try:
            step()
        except (ssl.SSLError, OSError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "unusable"
            message = f"{path}: tls_server_config.{key}: cannot load: {why}"
            if key == "key_file":
                message += " (or it does not match cert_file)"
            raise ConfigError([message], path) from None


def _add(doc: Document, loc: Loc, message: str, *, key: bool = False) -> None:
    doc.problems.add(doc.position(loc, key=key), loc, message)


def _mapping(doc: Document, value: object, loc: Loc) -> dict[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _add(doc, loc, "must be a mapping")
        return None
    return value


def _string(doc: Document, data: dict[str, object], loc: Loc) -> str | None:
    value = data.get(str(loc[-1]))
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        _add(doc, loc, "must be a non-empty string")
        return None
    return value


def _tls(doc: Document, value: object, base: Path) -> TlsSettings | None:
    where: Loc = ("tls_server_config",)
    data = _mapping(doc, value, where)
    if data is None:
        return None
    for key in data:
        if key in _TLS_UNSUPPORTED:
            _add(doc, (*where, key), "not supported by smtp-probe (see the README)", key=True)
        elif key not in _TLS_KEYS:
            _add(doc, (*where, key), "unknown key", key=True)
    strings = {key: _string(doc, data, (*where, key)) for key in _TLS_KEYS}
    cert, key_file = strings["cert_file"], strings["key_file"]
    if cert is None and "cert_file" not in data:
        _add(doc, where, "missing cert_file")
    if key_file is None and "key_file" not in data:
        _add(doc, where, "missing key_file")
    auth_name = strings["client_auth_type"] or "NoClientCert"
    auth = _CLIENT_AUTH.get(auth_name)
    if auth is None:
        reason = (
            "accepts a client certificate without verifying it, which Python's ssl cannot "
            "do and which authenticates nobody: use VerifyClientCertIfGiven or "
            "RequireAndVerifyClientCert with client_ca_file"
            if auth_name in _UNVERIFIED_CLIENT_AUTH
            else f"must be one of {', '.join(_CLIENT_AUTH)}"
        )
        _add(doc, (*where, "client_auth_type"), reason)
    ca = strings["client_ca_file"]
    if ca is not None and auth == ssl.CERT_NONE:
        _add(doc, (*where, "client_ca_file"), "set without a verifying client_auth_type")
    if ca is None and auth in (ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
        _add(doc, (*where, "client_auth_type"), f"{auth_name} needs client_ca_file")
    versions: dict[str, ssl.TLSVersion | None] = {}
    for name in ("min_version", "max_version"):
        text = strings[name]
        versions[name] = _VERSIONS.get(text) if text is not None else None
        if text is not None and versions[name] is None:
            _add(doc, (*where, name), f"must be one of {', '.join(_VERSIONS)}")
    low = versions["min_version"] or ssl.TLSVersion.TLSv1_2
    high = versions["max_version"]
    if high is not None and high < low:
        _add(doc, (*where, "max_version"), "is lower than min_version")
    if cert is None or key_file is None or auth is None:
        return None
    return TlsSettings(base / cert, base / key_file, auth, base / ca if ca else None, low, high)


def _headers(doc: Document, value: object) -> dict[str, str]:
    where: Loc = ("http_server_config",)
    data = _mapping(doc, value, where)
    if data is None:
        return {}
    for key in data:
        if key not in _HTTP_KEYS:
            _add(doc, (*where, key), "unknown key", key=True)
    if "http2" in data and not isinstance(data["http2"], bool):
        _add(doc, (*where, "http2"), "must be true or false")
    headers = _mapping(doc, data.get("headers"), (*where, "headers")) or {}
    out: dict[str, str] = {}
    for name, text in headers.items():
        loc: Loc = (*where, "headers", name)
        if name.lower() in _RESERVED_HEADERS:
            _add(doc, loc, "is set by the server and cannot be configured", key=True)
        elif not name.isascii() or not all(c.isalnum() or c in "-_" for c in name):
            _add(doc, loc, "is not a valid header name", key=True)
        elif not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            _add(doc, loc, "must be a one-line string")
        else:
            out[name] = text
    return out


def _users(doc: Document, value: object) -> dict[str, bytes]:
    where: Loc = ("basic_auth_users",)
    data = _mapping(doc, value, where)
    if data is None:
        return {}
    out: dict[str, bytes] = {}
    for name, hashed in data.items():
        loc: Loc = (*where, name)
        if ":" in name:
            _add(doc, loc, "a username cannot contain ':' (basic auth splits on it)", key=True)
        elif (
            not isinstance(hashed, str)
            or not hashed.startswith(_BCRYPT_PREFIXES)
            or len(hashed) != 60
        ):
            # Never quote it: someone may have pasted a password instead of its hash.
            _add(doc, loc, "must be a bcrypt hash ($2y$..., 60 characters; htpasswd -nBC 10 '')")
        else:
            out[name] = hashed.encode("ascii")
    return out


def _fingerprint(paths: list[Path]) -> tuple[tuple[int, int, int] | None, ...]:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class WebGuard:
    """The web config in force: serves its TLS context and checks each request.

    :meth:`refresh` (called on every new TLS connection and request) re-reads
    the file when it or a file it names changed; a bad change is logged and
    the previous settings stay.
    """

    def __init__(self, path: Path, *, health_without_auth: bool = False) -> None:
        """Load ``path``.

        Raises:
            ConfigError: the file is unreadable or invalid, or its TLS files do not load.
        """
        self.path = path
        self.health_without_auth = health_without_auth
        self.config = load(path)
        self._context = self.config.tls.context() if self.config.tls else None
        self._seen = self._stat()
        self._cache: dict[bytes, float] = {}
        self._dummy: bytes | None = None

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        tls = self.config.tls
        files = [self.path]
        if tls is not None:
            files += [tls.cert_file, tls.key_file]
            if tls.client_ca_file is not None:
                files.append(tls.client_ca_file)
        return _fingerprint(files)

    def refresh(self) -> None:
        """Re-read the file if it (or a TLS file it names) changed; keep the old settings if bad."""
        seen = self._stat()
        if seen == self._seen:
            return
        self._seen = seen
        try:
            config = load(self.path)
        except ConfigError as exc:
            _LOG.error("web config change refused, previous settings kept", errors=list(exc.errors))
            return
        old, new = self.config.tls, config.tls
        if (old is None) != (new is None) or (
            old is not None and new is not None and old.policy() != new.policy()
        ):
            _LOG.error(
                "web config change refused: turning TLS on or off, client_auth_type and "
                "TLS versions need a restart; previous settings kept"
            )
            return
        self.config = config
        self._context = new.context() if new is not None else None
        self._cache.clear()
        self._seen = self._stat()
        _LOG.info("web config reloaded", users=len(config.users), tls=new is not None)

    def server_context(self) -> ssl.SSLContext | None:
        """The listener's TLS context (``None``: plain HTTP); each handshake gets the newest."""
        if self._context is None:
            return None
        listener = self._context

        def newest(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
            self.refresh()
            if self._context is not None and self._context is not listener:
                sock.context = self._context

        listener.sni_callback = newest
        return listener

    async def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header holds a configured user's password.

        Unknown users are checked against a dummy hash so the answer takes as
        long as for a known one (no user enumeration by timing).
        """
        users = self.config.users
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        name = user.decode("utf-8", "replace")
        hashed = users.get(name)
        key = hashlib.sha256(b"\0".join([user, password, hashed or b""])).digest()
        now = time.monotonic()
        if hashed is not None and self._cache.get(key, 0.0) > now:
            return True
        if hashed is None:
            hashed = await self._dummy_hash()
        import bcrypt  # ~20 ms to import; only daemons with users load it

        ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed)
        ok = ok and name in users
        if ok:
            if len(self._cache) >= _AUTH_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = now + AUTH_CACHE_SECONDS
        return ok

    async def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            import bcrypt

            self._dummy = await asyncio.to_thread(bcrypt.hashpw, b"-", bcrypt.gensalt(10))
        return self._dummy

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Refuse requests without valid credentials (401) and add the configured headers."""
        self.refresh()
        config = self.config
        exempt = self.health_without_auth and request.path in HEALTH_PATHS
        if (
            config.users
            and not exempt
            and not await self.authorized(request.headers.get("Authorization"))
        ):
            response: web.StreamResponse = web.Response(
                status=401,
                text="401 Unauthorized\n",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # 404, 405...: the headers belong on them too
                exc.headers.update(config.headers)
                raise
        for name, value in config.headers.items():
            response.headers[name] = value
        return response
