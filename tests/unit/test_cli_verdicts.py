"""check's verdict flags: --authserv-id, --expect-auth, --verify-dkim, --dns-server."""

from __future__ import annotations

import pytest

from smtp_probe.check import IMAP_PASSWORD_ENV
from smtp_probe.probe.spec import DEFAULT_DNS_TIMEOUT
from tests.unit.test_cli import ADDRESSES, SMTP, assert_usage_error, run_main, spec_of

IMAP = ["--imap", "127.0.0.1:9"]
ENV = {IMAP_PASSWORD_ENV: "imap-secret"}


def test_verdict_flags_reach_the_spec() -> None:
    spec = spec_of(
        [
            *SMTP, *ADDRESSES, *IMAP, "--authserv-id", "mx.example.net",
            "--expect-auth", "dkim=pass", "--expect-auth", "SPF=pass,neutral",
            "--verify-dkim", "--dns-server", "127.0.0.1:5353", "--dns-server", "[::1]:53",
        ],
        ENV,
    )  # fmt: skip
    assert spec.mailbox is not None
    assert spec.mailbox.authserv_id == "mx.example.net"
    assert spec.expect_auth == (("dkim", "pass"), ("spf", "pass"), ("spf", "neutral"))
    assert spec.verify_dkim is True
    assert spec.dns.nameservers == (("127.0.0.1", 5353), ("::1", 53))
    assert spec.dns.timeout == DEFAULT_DNS_TIMEOUT


def test_without_verdict_flags_nothing_is_expected() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, *IMAP], ENV)
    assert spec.expect_auth == ()
    assert not spec.verify_dkim
    assert spec.dns.nameservers == ()
    assert spec.mailbox is not None
    assert spec.mailbox.authserv_id is None


@pytest.mark.parametrize(
    ("extra", "flag", "says"),
    [
        (["--expect-auth", "dkim"], "--expect-auth", "METHOD=RESULT"),
        (["--expect-auth", "dkmi=pass"], "--expect-auth", "did you mean 'dkim'"),
        (
            ["--expect-auth", "arc=softfail"],
            "--expect-auth",
            "expected one of none, pass, fail for arc",
        ),
        (["--expect-auth", "dkim=pass"], "--expect-auth", "needs --authserv-id"),
        (["--dns-server", "resolver.example"], "--dns-server", "not an IP address"),
        (["--dns-server", "127.0.0.1:0"], "--dns-server", "port"),
        (["--dns-server", "127.0.0.1"], "--dns-server", "only --verify-dkim"),
        (["--authserv-id", "two words"], "--authserv-id", ""),
    ],
)
def test_a_bad_verdict_flag_exits_3_naming_it(
    extra: list[str],
    flag: str,
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(IMAP_PASSWORD_ENV, "imap-secret")
    code, err = run_main([*SMTP, *ADDRESSES, *IMAP, *extra], capsys)
    assert_usage_error(code, err, flag)
    assert says in err


@pytest.mark.parametrize(
    "extra",
    [["--authserv-id", "mx.example.net"], ["--expect-auth", "dkim=pass"], ["--verify-dkim"]],
)
def test_verdict_flags_need_imap(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, *extra], capsys)
    assert_usage_error(code, err, extra[0])
    assert "without --imap" in err
