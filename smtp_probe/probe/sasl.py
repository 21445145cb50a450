"""The OAuth2 SASL mechanisms both legs speak: ``OAUTHBEARER`` (RFC 7628) and ``XOAUTH2``.

SMTP ``AUTH`` and IMAP ``AUTHENTICATE`` carry the same bytes; this module
builds them, picks the mechanism from what the server offers, and reads the
server's error challenge. The exchange is the same on both legs: the client
sends its initial response; a server that refuses the token answers with a
base64 JSON error challenge (``{"status":"401","schemes":"bearer",...}``)
instead of failing at once, the client acknowledges it with the response
the mechanism prescribes, and only then comes the final refusal. The
challenge holds no secret, so it is shown decoded.

The OAuth libraries never come here: a mechanism only needs the token text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

XOAUTH2: Final = "XOAUTH2"
"""Google's mechanism, also Microsoft 365's and Dovecot's."""
OAUTHBEARER: Final = "OAUTHBEARER"
"""RFC 7628, the standard one; preferred where offered."""
PREFERENCE: Final = (OAUTHBEARER, XOAUTH2)

_MAX_SHOWN: Final = 300
"""A challenge is one line of a transcript and a run's reason: cut a hostile server's novel."""


def choose(offered: Iterable[str]) -> str | None:
    """The mechanism to use among ``offered`` (names, any case): OAUTHBEARER, else XOAUTH2."""
    names = {name.upper() for name in offered}
    return next((mechanism for mechanism in PREFERENCE if mechanism in names), None)


def initial_response(mechanism: str, *, user: str, token: str, host: str, port: int) -> bytes:
    """The client's first message for ``mechanism``, before base64; it holds the token.

    XOAUTH2: ``user=U^Aauth=Bearer T^A^A``. OAUTHBEARER: the RFC 5801 GS2
    header naming the user (``n,a=U,``), then ``host``, ``port`` and
    ``auth`` key-value pairs, each ended by ``^A``, and a final ``^A``
    (RFC 7628 §3.1). ``^A`` is the byte 0x01.

    Raises:
        ValueError: ``mechanism`` is neither of the two.
    """
    if mechanism == XOAUTH2:
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    if mechanism == OAUTHBEARER:
        # RFC 5801 §4: "," and "=" in the authzid are escaped as =2C and =3D.
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        return (
            f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()
        )
    raise ValueError(f"not an OAuth2 SASL mechanism: {mechanism}")


def error_response(mechanism: str) -> bytes:
    """What acknowledges the server's error challenge, before base64.

    XOAUTH2 wants an empty response (Google's protocol page; Dovecot
    documents the same); OAUTHBEARER the single byte 0x01 (RFC 7628 §3.2.3:
    ``AQ==`` on the wire). Dovecot fails the attempt on any response,
    Gmail expects these.
    """
    return b"\x01" if mechanism == OAUTHBEARER else b""


def shown_challenge(data: bytes) -> str:
    """The decoded error challenge as one printable line, for the transcript."""
    text = data.decode("utf-8", "replace")
    line = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return line if len(line) <= _MAX_SHOWN else line[:_MAX_SHOWN] + "..."


def challenge_summary(data: bytes) -> str:
    """What the server said about the token, for a run's reason.

    A JSON object becomes its scalar fields in order (``status 401,
    schemes bearer, scope mail``); anything else is shown as it came.
    """
    import json  # here: a refused token is rare, and ``check`` starts without json

    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        fields = [
            f"{key} {value}"
            for key, value in parsed.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        ]
        if fields:
            return shown_challenge(", ".join(fields).encode())
    return shown_challenge(data) or "an empty challenge"
