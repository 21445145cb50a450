"""How a token endpoint's answer becomes a TokenError: its error code, status, a short summary, no secret."""

from __future__ import annotations

import pytest

from smtp_probe.oauth.endpoint import endpoint_error, http_status_error, no_token, redact

SECRET = "canary-secret-in-an-echo"  # noqa: S105 - a test canary


@pytest.mark.parametrize(
    ("error", "result"),
    [
        ("invalid_client", "invalid_client"),
        ("unauthorized_client", "unauthorized_client"),
        ("invalid_grant", "invalid_grant"),
        ("invalid_scope", "http_error"),
        ("temporarily_unavailable", "http_error"),
    ],
)
def test_the_oauth_error_code_is_the_result_when_it_is_one_of_ours(error: str, result: str) -> None:
    made = endpoint_error(error, None, 400)

    assert (made.result, made.reason) == (result, f"token endpoint: {error} (HTTP 400)")


def test_an_entra_description_is_cut_to_its_first_line() -> None:
    description = (
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
        "request is the client secret value, not the client secret ID.\r\n"
        "Trace ID: 0d5a\r\nCorrelation ID: 9f1b\r\nTimestamp: 2026-12-01 10:00:00Z"
    )

    made = endpoint_error("invalid_client", description, 401)

    assert made.reason == (
        "token endpoint: invalid_client (HTTP 401): AADSTS7000215: Invalid client secret "
        "provided. Ensure the secret being sent in the request is the client secret value, "
        "not the client secret ID."
    )


def test_a_long_description_is_shortened() -> None:
    made = endpoint_error("invalid_request", "x" * 500, 400)

    assert made.reason.endswith("x...")
    assert len(made.reason) < 260


def test_a_secret_the_endpoint_echoes_is_redacted() -> None:
    made = endpoint_error(
        "invalid_client", f"client_secret {SECRET} is not valid", 401, secrets=[SECRET, ""]
    )

    assert SECRET not in made.reason
    assert made.reason.endswith("client_secret <secret> is not valid")


@pytest.mark.parametrize("error", [None, 42, "", "a\nb", "x" * 100, {"nested": "dict"}])
def test_an_unusable_error_field_falls_back_to_the_status(error: object) -> None:
    made = endpoint_error(error, "details", 502)

    assert (made.result, made.reason) == ("http_error", "token endpoint: HTTP 502: details")


def test_bare_http_errors_and_answers_without_a_token() -> None:
    assert http_status_error(503).reason == "token endpoint: HTTP 503"
    assert http_status_error(None).reason == "token endpoint: error"
    assert (no_token(200).result, no_token(200).reason) == (
        "bad_response",
        "token endpoint: no access token in its answer (HTTP 200)",
    )
    assert no_token(None).reason == "token endpoint: no access token in its answer"


def test_redact_leaves_short_values_alone() -> None:
    assert redact("a to b", ["to", SECRET]) == "a to b"
    assert redact(f"[{SECRET}]", [SECRET]) == "[<secret>]"
