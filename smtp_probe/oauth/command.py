"""``token_command``: run a helper program that prints an access token, with a deadline.

The habit of mutt, aerc and git credential helpers (``oauth2.py``,
``az account get-access-token``, ``gcloud auth print-access-token``). The
command runs without a shell, with stdin closed, in a process group of its
own that is killed whole when the deadline passes. Its stdout is one line
with the token, or a JSON object with ``access_token`` (``accessToken``) and
``expires_in`` or ``expires_at`` (``expires_on``, epoch seconds); a bare JWT's
``exp`` claim is read (not verified) for its expiry. Anything else is a
failure. Neither stdout nor stderr is ever shown: either may hold a secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from typing import Any, Final

from smtp_probe.oauth.cache import Fetched
from smtp_probe.oauth.settings import CommandClient
from smtp_probe.probe.credentials import TokenError, seconds_text
from smtp_probe.secret import Secret

BEARER_TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750's ``b64token``: what a bearer token may look like (a JWT does)."""
_OUTPUT_LIMIT: Final = 64 * 1024
"""More than this on stdout is not a token (bounds the memory a runaway helper costs)."""


class CommandFetch:
    """Runs one ``token_command`` per fetch."""

    def __init__(self, settings: CommandClient) -> None:
        self._settings = settings
        self._name = os.path.basename(settings.command[0]) if settings.command else "?"

    def __call__(self, timeout: float) -> Fetched:
        """Run the command and read its token within ``timeout`` seconds.

        Raises:
            TokenError: the command could not start, failed, printed no
                usable token (``command_failed``) or ran past ``timeout``
                (``timeout``); the reason never quotes its output.
        """
        out = self._run(timeout)
        return self._parse(out)

    def _fail(self, what: str, result: str = "command_failed") -> TokenError:
        return TokenError(f"token command {self._name}: {what}", result)

    def _run(self, timeout: float) -> bytes:
        try:
            proc = subprocess.Popen(  # noqa: S603 - the configured argv, no shell
                self._settings.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise self._fail(f"cannot run it ({exc.strerror or type(exc).__name__})") from None
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise self._fail(
                f"no token within {seconds_text(timeout)}s (killed)", "timeout"
            ) from None
        if proc.returncode < 0:
            name = _signal_name(-proc.returncode)
            raise self._fail(f"killed by {name} (its output is not shown)")
        if proc.returncode != 0:
            raise self._fail(f"exited with status {proc.returncode} (its output is not shown)")
        return out

    def _parse(self, out: bytes) -> Fetched:
        if len(out) > _OUTPUT_LIMIT:
            raise self._fail("printed more than 64 KiB, not a token")
        try:
            text = out.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._fail("printed something that is not UTF-8 text, not a token") from None
        if not text:
            raise self._fail("printed nothing")
        if text.startswith("{"):
            return self._parse_json(text)
        lines = text.splitlines()
        if len(lines) > 1:
            raise self._fail(
                f"printed {len(lines)} lines; expected one line with the token, or JSON"
            )
        if not BEARER_TOKEN.fullmatch(text):
            raise self._fail("printed something that is not a bearer token")
        expires_at = _jwt_expiry(text)
        if expires_at is None:
            expires_at = time.time() + self._settings.lifetime
        return Fetched(Secret(text), expires_at)

    def _parse_json(self, text: str) -> Fetched:
        try:
            document = json.loads(text)
        except ValueError:
            raise self._fail("printed something that is neither a token nor JSON") from None
        if not isinstance(document, dict):
            raise self._fail("printed JSON that is not an object")
        token = document.get("access_token", document.get("accessToken"))
        if not isinstance(token, str) or not BEARER_TOKEN.fullmatch(token):
            raise self._fail("printed JSON without a usable access_token")
        expires_at = _number(document.get("expires_at", document.get("expires_on")))
        expires_in = _number(document.get("expires_in"))
        if expires_at is None and expires_in is not None:
            expires_at = time.time() + expires_in
        if expires_at is None:
            expires_at = _jwt_expiry(token) or time.time() + self._settings.lifetime
        return Fetched(Secret(token), expires_at)


def _number(value: Any) -> float | None:
    """A JSON number, or a string of digits (``az`` prints ``expires_on`` as one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return float(value)
    return None


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: only to know when to ask again), else ``None``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return _number(payload.get("exp")) if isinstance(payload, dict) else None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the helper and everything it started (still unreaped: its group id is its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=1)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
