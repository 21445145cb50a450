"""The forms a password could leak in: what tests look for in every output a run leaves."""

from __future__ import annotations

import base64


def password_forms(username: str, password: str) -> list[str]:
    """The password in clear, in base64 alone, and as both AUTH PLAIN payloads of ``username``.

    AUTH PLAIN sends ``authzid NUL authcid NUL password`` in base64; clients
    leave the authorization identity empty or repeat the user, so both
    payloads are listed.
    """
    b64 = base64.b64encode
    return [
        password,
        b64(password.encode()).decode(),
        b64(f"\0{username}\0{password}".encode()).decode(),
        b64(f"{username}\0{username}\0{password}".encode()).decode(),
    ]
