"""The OAuth2 SASL messages both legs send, and how a server's error challenge is read."""

from __future__ import annotations

import pytest

from smtp_probe.probe import sasl

TOKEN = "ya29.abc"  # noqa: S105 - a made-up token


def test_xoauth2_initial_response_is_googles_format() -> None:
    payload = sasl.initial_response(
        sasl.XOAUTH2, user="probe@example.com", token=TOKEN, host="h", port=1
    )

    assert payload == b"user=probe@example.com\x01auth=Bearer ya29.abc\x01\x01"


def test_oauthbearer_initial_response_is_rfc_7628_with_host_and_port() -> None:
    payload = sasl.initial_response(
        sasl.OAUTHBEARER,
        user="probe@example.com",
        token=TOKEN,
        host="smtp.example.com",
        port=587,
    )

    assert payload == (
        b"n,a=probe@example.com,\x01host=smtp.example.com\x01port=587"
        b"\x01auth=Bearer ya29.abc\x01\x01"
    )


def test_oauthbearer_escapes_comma_and_equals_in_the_user_as_rfc_5801_asks() -> None:
    payload = sasl.initial_response(sasl.OAUTHBEARER, user="a=b,c", token=TOKEN, host="h", port=1)

    assert payload.startswith(b"n,a=a=3Db=2Cc,\x01")


def test_an_unknown_mechanism_is_refused() -> None:
    with pytest.raises(ValueError, match="PLAIN"):
        sasl.initial_response("PLAIN", user="u", token=TOKEN, host="h", port=1)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"], sasl.OAUTHBEARER),
        (["xoauth2", "oauthbearer"], sasl.OAUTHBEARER),
        (["PLAIN", "xoauth2"], sasl.XOAUTH2),
        (["PLAIN", "LOGIN"], None),
        ([], None),
    ],
)
def test_oauthbearer_is_preferred_then_xoauth2(offered: list[str], chosen: str | None) -> None:
    assert sasl.choose(offered) == chosen


def test_the_error_challenge_is_acknowledged_as_each_mechanism_prescribes() -> None:
    assert sasl.error_response(sasl.XOAUTH2) == b""
    assert sasl.error_response(sasl.OAUTHBEARER) == b"\x01"


def test_a_json_error_challenge_is_summarised_field_by_field_in_order() -> None:
    challenge = b'{"status":"401","schemes":"bearer","scope":"mail"}'

    assert sasl.challenge_summary(challenge) == "status 401, schemes bearer, scope mail"


def test_nested_and_boolean_fields_are_left_out_of_the_summary() -> None:
    challenge = b'{"status":"invalid_token","x":{"y":1},"ok":false,"n":3}'

    assert sasl.challenge_summary(challenge) == "status invalid_token, n 3"


@pytest.mark.parametrize(
    ("challenge", "summary"),
    [
        (b"not json at all", "not json at all"),
        (b"[1, 2]", "[1, 2]"),
        (b"", "an empty challenge"),
        (b"\xff\xfebad\x00bytes", "\ufffd\ufffdbad bytes"),
    ],
)
def test_a_challenge_that_is_not_a_json_object_is_shown_as_it_came(
    challenge: bytes, summary: str
) -> None:
    assert sasl.challenge_summary(challenge) == summary


def test_a_shown_challenge_is_one_line_and_cut_short() -> None:
    shown = sasl.shown_challenge(b"line one\r\nline two" + b"x" * 1000)

    assert "\n" not in shown
    assert shown.startswith("line one  line two")
    assert shown.endswith("...")
    assert len(shown) < 400
