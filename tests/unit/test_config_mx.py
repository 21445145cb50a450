"""``smtp_servers.X.mx``: a mail domain to send to as an MTA does; ``opportunistic`` TLS for SMTP only."""

from __future__ import annotations

import pytest

from smtp_probe.config import parse_config
from smtp_probe.config.errors import ConfigError
from smtp_probe.probe.spec import SmtpServer, TlsMode

ROUTE = """\
probes:
  - name: to-the-mx
    smtp: theirs
    from: probe@example.org
    to: sink@example.net
smtp_servers:
  theirs:
"""


def server(lines: str) -> SmtpServer:
    config = parse_config(ROUTE + lines, environ={})
    return config.probes[0].spec.smtp


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return list(caught.value.errors)


def test_an_mx_server_defaults_to_port_25_and_opportunistic_tls() -> None:
    loaded = server("    mx: example.net\n")
    assert (loaded.host, loaded.port, loaded.tls, loaded.mx) == (
        "example.net",
        25,
        TlsMode.OPPORTUNISTIC,
        True,
    )
    assert loaded.address == "MX example.net"


def test_an_mx_server_takes_a_port_and_a_tls_mode() -> None:
    loaded = server("    mx: example.net\n    port: 2525\n    tls: starttls\n")
    assert (loaded.port, loaded.tls) == (2525, TlsMode.STARTTLS)


def test_a_host_may_be_opportunistic_too() -> None:
    loaded = server("    host: mail.example.net\n    tls: opportunistic\n")
    assert (loaded.port, loaded.tls, loaded.mx) == (25, TlsMode.OPPORTUNISTIC, False)


def test_mx_and_host_together_are_refused() -> None:
    assert errors(ROUTE + "    mx: example.net\n    host: mail.example.net\n") == [
        "<config>:9:11: smtp_servers.theirs.host: give either mx or host, not both"
    ]


def test_mx_with_implicit_tls_is_refused() -> None:
    assert errors(ROUTE + "    mx: example.net\n    tls: tls\n") == [
        "<config>:9:10: smtp_servers.theirs.tls: mx servers are reached on port 25 with "
        "STARTTLS: use opportunistic, starttls or none"
    ]


def test_an_opportunistic_mailbox_is_refused() -> None:
    text = (
        ROUTE
        + "    host: mail.example.net\n"
        + "mailboxes:\n  box:\n    host: imap.example.net\n    tls: opportunistic\n"
        + "    username: sink\n    password: x\n"
    ).replace("    to: sink@example.net\n", "    to: sink@example.net\n    mailbox: box\n")
    assert errors(text) == [
        "<config>:13:10: mailboxes.box.tls: opportunistic is for SMTP servers only: "
        "use tls, starttls or none"
    ]
