"""Talking to a token endpoint over HTTPS: one ``requests`` session per client, errors in our words.

The provider libraries (msal, google-auth, authlib) all speak HTTP through
``requests``. :class:`TokenSession` is the session we hand them: every
request gets our deadline and our CA file whatever the library passes (a
``REQUESTS_CA_BUNDLE`` in the environment would otherwise override a
session's ``verify``), and it remembers the HTTP status of the last answer,
which the libraries' error objects drop. The functions below turn what went
wrong into a :class:`~smtp_probe.probe.credentials.TokenError` whose reason
names the endpoint's error and never a secret.

Imports ``requests``: only the provider modules import this, at the first fetch.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import requests

from smtp_probe.probe.credentials import TokenError, seconds_text

OAUTH_RESULTS: Final = frozenset({"invalid_client", "unauthorized_client", "invalid_grant"})
"""OAuth error codes that are their own metric result; any other is ``http_error``."""
_SUMMARY_LENGTH: Final = 200
_REDACTED: Final = "<secret>"


class Deadline:
    """Mixed into a ``requests.Session``: our deadline and CA on every request, the last status seen."""

    timeout: float = 10.0
    """Seconds each request may take (connect, and each read); set before every fetch."""

    def setup_deadline(self, ca_file: Path | None) -> None:
        """Trust ``ca_file`` (``None``: the system's CAs) for every request from now on."""
        self._verify: str | bool = str(ca_file) if ca_file is not None else True
        self._last = threading.local()

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        """Send with our timeout and CA, whatever the library asked for (google-auth asks 120 s)."""
        kwargs["timeout"] = self.timeout
        kwargs["verify"] = self._verify
        self._last.status = None
        response = super().request(method, url, *args, **kwargs)  # type: ignore[misc]
        self._last.status = response.status_code
        return response

    @property
    def last_status(self) -> int | None:
        """The HTTP status of this thread's last answer; ``None`` if none came."""
        status: int | None = getattr(self._last, "status", None)
        return status


class TokenSession(Deadline, requests.Session):
    """The session MSAL and google-auth send through."""

    def __init__(self, ca_file: Path | None) -> None:
        super().__init__()
        self.setup_deadline(ca_file)


def endpoint_error(
    error: object,
    description: object,
    status: int | None,
    *,
    secrets: Iterable[str] = (),
) -> TokenError:
    """The endpoint answered with an OAuth error (RFC 6749 section 5.2) or a bare HTTP error.

    ``error`` and ``description`` are the answer's fields (anything: they
    are checked); ``secrets`` are values that must not appear in the reason
    even if the endpoint echoed them.
    """
    code = error if isinstance(error, str) and re.fullmatch(r"[\x20-\x7e]{1,64}", error) else None
    reason = "token endpoint: " + (code or "error")
    if code is None and status is not None:
        reason = f"token endpoint: HTTP {status}"
    elif status is not None:
        reason += f" (HTTP {status})"
    summary = _summary(description, secrets)
    if summary:
        reason += f": {summary}"
    return TokenError(reason, code if code in OAUTH_RESULTS else "http_error")


def http_status_error(status: int | None, *, secrets: Iterable[str] = ()) -> TokenError:
    """An answer that was an HTTP error and not an OAuth error document."""
    return endpoint_error(None, None, status, secrets=secrets)


def no_token(status: int | None) -> TokenError:
    """An answer that looked successful but held no usable access token."""
    where = f" (HTTP {status})" if status is not None else ""
    return TokenError(f"token endpoint: no access token in its answer{where}", "bad_response")


def transport_error(exc: BaseException, url: str, timeout: float) -> TokenError:
    """No answer: a timeout, a refused connection, a name or TLS failure (``exc`` from requests)."""
    where = urlsplit(url).hostname or "?"
    port = urlsplit(url).port
    if port is not None:
        where += f":{port}"
    if _caused_by(exc, requests.Timeout) or _caused_by(exc, TimeoutError):
        return TokenError(
            f"token endpoint {where}: no answer within {seconds_text(timeout)}s", "timeout"
        )
    return TokenError(f"token endpoint {where}: {_cause(exc)}", "unreachable")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value in it replaced (values under 4 characters are not secrets)."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    return text


def _summary(description: object, secrets: Iterable[str]) -> str:
    """The first line of an endpoint's error description, short and without secrets."""
    if not isinstance(description, str):
        return ""
    lines = description.strip().splitlines()
    line = " ".join(lines[0].split()) if lines else ""
    line = redact(line, secrets)
    if len(line) > _SUMMARY_LENGTH:
        line = line[: _SUMMARY_LENGTH - 3] + "..."
    return line


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: causes, contexts, and urllib3's ``reason`` and ``args``."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is s for s in seen) or len(seen) > 20:
            continue
        seen.append(current)
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        wrapped += list(current.args)
        todo += [w for w in wrapped if isinstance(w, BaseException)]
    return seen


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in _chain(exc))


def _cause(exc: BaseException) -> str:
    """What an operator can act on: "connection refused", "TLS certificate not trusted (...)"."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({e.verify_message})"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return f"TLS handshake failed ({e.reason or type(e).__name__})"
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror[:1].lower() + e.strerror[1:]
    return f"no connection ({type(exc).__name__})"
