"""How the engine waits for a token (never past the run deadline) and how it describes one."""

from __future__ import annotations

import asyncio
import time

import pytest

from smtp_probe.probe.credentials import AccessToken, TokenError, describe, obtain, seconds_text
from smtp_probe.secret import Secret
from tests.support.tokens import CANARY, StaticTokens

NOW = 1_800_000_000.0


def token(expires_in: float | None, *, fresh: bool = False) -> AccessToken:
    expires_at = None if expires_in is None else NOW + expires_in
    return AccessToken(Secret(CANARY), expires_at, fresh)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (token(57 * 60 + 10), "cached, expires in 57m"),
        (token(3 * 3600 + 5 * 60, fresh=True), "fresh, expires in 3h05m"),
        (token(42), "cached, expires in 42s"),
        (token(None), "cached, expiry unknown"),
        (token(-90), "cached, expired 90s ago"),
    ],
)
def test_a_token_is_described_by_origin_and_lifetime_never_by_value(
    value: AccessToken, text: str
) -> None:
    described = describe(value, now=NOW)

    assert described == text
    assert CANARY not in described


def test_obtain_hands_over_the_sources_token() -> None:
    source = StaticTokens()

    got = asyncio.run(obtain(source, time.monotonic() + 5))

    assert got.value.reveal() == CANARY
    assert source.token_calls == 1
    assert 4 < source.timeouts[0] <= 5


def test_obtain_passes_the_sources_error_on() -> None:
    source = StaticTokens(error=TokenError("invalid_client (HTTP 401)", "invalid_client"))

    with pytest.raises(TokenError) as caught:
        asyncio.run(obtain(source, time.monotonic() + 5))

    assert caught.value.result == "invalid_client"
    assert caught.value.reason == "invalid_client (HTTP 401)"


def test_obtain_gives_up_at_the_deadline_on_a_source_that_ignores_its_timeout() -> None:
    source = StaticTokens(block=True, obey_timeout=False)
    started = time.monotonic()
    try:
        with pytest.raises(TokenError) as caught:
            asyncio.run(obtain(source, started + 0.3))
        waited = time.monotonic() - started
    finally:
        source.release()

    assert caught.value.result == "timeout"
    assert "run deadline" in caught.value.reason
    assert waited < 2.0, "the hung source held the caller (or asyncio.run's shutdown)"


def test_obtain_with_no_time_left_does_not_ask_the_source() -> None:
    source = StaticTokens()

    with pytest.raises(TokenError, match="no time left"):
        asyncio.run(obtain(source, time.monotonic() - 1))

    assert source.token_calls == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(2.0, "2"), (2.8512, "2.9"), (0.299997, "0.3"), (10.0, "10"), (0.04, "0.04"), (0.0, "0")],
)
def test_a_wait_in_a_reason_has_no_more_digits_than_a_reader_needs(
    seconds: float, text: str
) -> None:
    # what a deadline left over is, e.g. "no answer within 2.84923s" before
    assert seconds_text(seconds) == text
