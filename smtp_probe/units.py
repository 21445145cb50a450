"""Parsing of the small value types shared by the CLI and the config file."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Final

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Return the number of seconds in a duration such as ``500ms``, ``30s``, ``5m``, ``1h``.

    A bare number is taken as seconds, as operators type ``--timeout 60``.

    Raises:
        ValueError: the text is not a positive duration; the message says what is expected.
    """
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        match = _DURATION.match(stripped)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number with a unit, like 500ms, 30s, 5m or 1h"
            ) from None
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero and finite")
    return seconds


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` (``[v6]:PORT`` for IPv6 literals) into its parts.

    Raises:
        ValueError: the host is empty or the port is not a number in 1..65535.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"invalid address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid address {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:
            raise ValueError(f"invalid address {text!r}: empty port after ':'")
    elif ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(
                f"invalid address {text!r}: write IPv6 addresses as [addr]:port"
            ) from None
    if not host:
        raise ValueError(f"invalid address {text!r}: empty host")
    if not port_text:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port {port_text!r} in {text!r}: expected 1-65535")
    return host, int(port_text)
