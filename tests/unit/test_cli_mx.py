"""``check --smtp-mx DOMAIN[:PORT]``: send to a domain's MX as an MTA does."""

from __future__ import annotations

import pytest

from smtp_probe.probe.spec import DnsSettings, TlsMode
from tests.unit.test_cli import ADDRESSES, assert_usage_error, run_main, spec_of


def test_smtp_mx_defaults_to_port_25_and_opportunistic_tls() -> None:
    spec = spec_of(["--smtp-mx", "example.net", *ADDRESSES, "--dns-server", "127.0.0.1:5353"])
    assert (spec.smtp.host, spec.smtp.port, spec.smtp.tls, spec.smtp.mx) == (
        "example.net",
        25,
        TlsMode.OPPORTUNISTIC,
        True,
    )
    assert spec.dns == DnsSettings((("127.0.0.1", 5353),))


def test_smtp_mx_takes_a_port_and_a_tls_mode() -> None:
    spec = spec_of(["--smtp-mx", "example.net:2525", "--smtp-tls", "starttls", *ADDRESSES])
    assert (spec.smtp.port, spec.smtp.tls, spec.smtp.mx) == (2525, TlsMode.STARTTLS, True)


def test_smtp_without_mx_keeps_its_starttls_default() -> None:
    spec = spec_of(["--smtp", "mail.example", *ADDRESSES])
    assert (spec.smtp.tls, spec.smtp.port, spec.smtp.mx) == (TlsMode.STARTTLS, 587, False)


@pytest.mark.parametrize(
    ("argv", "flag", "says"),
    [
        (["--smtp", "a.example", "--smtp-mx", "b.example", *ADDRESSES], "--smtp-mx", "not both"),
        (["--smtp-mx", "b.example", "--smtp-tls", "tls", *ADDRESSES], "--smtp-tls", "port 25"),
        (["--smtp-mx", "b.example:0", *ADDRESSES], "--smtp-mx", ""),
        (
            [
                "--smtp-mx",
                "b.example",
                *ADDRESSES,
                "--imap",
                "i.example",
                "--imap-tls",
                "opportunistic",
            ],
            "--imap-tls",
            "SMTP servers only",
        ),
    ],
    ids=["with-smtp", "implicit-tls", "port-0", "imap-opportunistic"],
)
def test_smtp_mx_usage_errors_name_the_flag(
    argv: list[str], flag: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(argv, capsys)
    assert_usage_error(code, err, flag)
    assert says in err
