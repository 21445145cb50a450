"""check's policy flags: --expect-reject, --check, --smuggling-variant; and the parsing behind them."""

from __future__ import annotations

import pytest

from smtp_probe.check import IMAP_PASSWORD_ENV, SMTP_PASSWORD_ENV
from smtp_probe.probe.expect import BUILT_IN, parse_code, parse_expect_reject
from smtp_probe.probe.result import Stage
from smtp_probe.probe.spec import Expectation, PolicyCheck
from tests.unit.test_cli import ADDRESSES, SMTP, assert_usage_error, run_main, spec_of

IMAP = ["--imap", "127.0.0.1:9"]
ENV = {IMAP_PASSWORD_ENV: "imap-secret", SMTP_PASSWORD_ENV: "smtp-secret"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rcpt_to", Expectation((Stage.RCPT_TO,), ("5xx",))),
        ("rcpt_to:550,5xx", Expectation((Stage.RCPT_TO,), ("550", "5xx"))),
        ("data,mail_from:554", Expectation((Stage.MAIL_FROM, Stage.DATA), ("554",))),
        ("banner:5XX", Expectation((Stage.BANNER,), ("5xx",))),
    ],
)
def test_expect_reject_parses_stages_in_session_order_and_codes(
    text: str, expected: Expectation
) -> None:
    assert parse_expect_reject(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "names no stage"),
        ("rcpt:550", "did you mean 'rcpt_to'"),
        ("connect", "not an SMTP stage a refusal can come at"),
        ("rcpt_to:", "names no code"),
        ("rcpt_to:250", "not a refusal code"),
        ("rcpt_to:5x", "not a refusal code"),
    ],
)
def test_expect_reject_refuses_what_is_no_refusal(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_expect_reject(text)


@pytest.mark.parametrize(("value", "code"), [(550, "550"), ("55X", "55x"), ("4xx", "4xx")])
def test_codes_may_be_numbers_or_classes(value: object, code: str) -> None:
    assert parse_code(value) == code


@pytest.mark.parametrize("value", [True, 600, "2xx", "5555", 3.5, None])
def test_a_code_that_is_no_refusal_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="not a refusal code"):
        parse_code(value)


def test_expect_reject_reaches_the_spec_as_a_plain_expectation() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--expect-reject", "rcpt_to:550,554"])
    assert spec.check is None
    assert spec.expect == Expectation((Stage.RCPT_TO,), ("550", "554"))
    assert spec.policy_check == "expect"


@pytest.mark.parametrize("check", [PolicyCheck.OPEN_RELAY, PolicyCheck.AUTH_REQUIRES_TLS])
def test_check_brings_its_built_in_expectation(check: PolicyCheck) -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--check", str(check)])
    assert spec.check is check
    assert spec.expect == BUILT_IN[check]
    assert spec.policy_check == str(check)


def test_expect_reject_overrides_open_relay_stages_and_codes() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--check", "open_relay", "--expect-reject", "rcpt_to:554"])
    assert spec.check is PolicyCheck.OPEN_RELAY
    assert spec.expect == Expectation((Stage.RCPT_TO,), ("554",))


def test_sender_mismatch_logs_in() -> None:
    spec = spec_of([*SMTP, *ADDRESSES, "--smtp-user", "alice", "--check", "sender_mismatch"], ENV)
    assert spec.check is PolicyCheck.SENDER_MISMATCH
    assert spec.smtp.username == "alice"


def test_smuggling_variants_reach_the_spec_once_each() -> None:
    spec = spec_of(
        [
            *SMTP, *ADDRESSES, *IMAP, "--check", "smtp_smuggling",
            "--smuggling-variant", "lf_dot_lf", "--smuggling-variant", "lf_dot_crlf",
            "--smuggling-variant", "lf_dot_lf",
        ],
        ENV,
    )  # fmt: skip
    assert spec.check is PolicyCheck.SMTP_SMUGGLING
    assert spec.smuggling_variants == ("lf_dot_lf", "lf_dot_crlf")
    assert spec.expect is None


def test_without_policy_flags_the_probe_is_a_delivery_probe() -> None:
    spec = spec_of([*SMTP, *ADDRESSES])
    assert (spec.check, spec.expect, spec.smuggling_variants, spec.policy_check) == (
        None,
        None,
        (),
        None,
    )


@pytest.mark.parametrize(
    ("extra", "flag", "says"),
    [
        (["--check", "open_rely"], "--check", "did you mean 'open_relay'"),
        (["--expect-reject", "rcpt:550"], "--expect-reject", "did you mean 'rcpt_to'"),
        (["--expect-reject", "rcpt_to:250"], "--expect-reject", "not a refusal code"),
        (
            ["--check", "auth_requires_tls", "--expect-reject", "auth"],
            "--expect-reject",
            "does not go with --check auth_requires_tls",
        ),
        (["--check", "sender_mismatch"], "--check", "needs --smtp-user"),
        (["--check", "smtp_smuggling"], "--check", "needs --imap"),
        (["--smuggling-variant", "lf_dot_lf"], "--smuggling-variant", "needs --check"),
        (
            ["--check", "open_relay", "--expect-reject", "auth"],
            "--expect-reject",
            "never logs in",
        ),
    ],
)
def test_a_bad_policy_flag_exits_3_naming_it(
    extra: list[str], flag: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, *extra], capsys)
    assert_usage_error(code, err, flag)
    assert says in err


@pytest.mark.parametrize(
    "extra",
    [["--check", "open_relay"], ["--expect-reject", "rcpt_to"], ["--smuggling-variant", "x"]],
)
def test_policy_flags_do_not_go_with_a_config_probe(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--config", "probes.yml", "--probe", "p", *extra], capsys)
    assert_usage_error(code, err, extra[0])
    assert "the route comes from --config" in err
