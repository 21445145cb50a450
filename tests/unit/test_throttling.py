"""is_throttling: which temporary SMTP replies mean "slow down" (outcome ``throttled``)."""

from __future__ import annotations

import pytest

from smtp_probe.probe.smtp import is_throttling


@pytest.mark.parametrize(
    ("code", "text"),
    [
        pytest.param(451, "4.3.2 Concurrent connections limit exceeded", id="m365-concurrency"),
        pytest.param(
            421,
            "4.3.2 The maximum number of concurrent server connections has exceeded a limit, "
            "closing transmission channel",
            id="m365-421",
        ),
        pytest.param(
            432,
            "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded "
            "[Hostname=AM0PR01MB1234.eurprd01.prod.exchangelabs.com]",
            id="m365-sender-thread",
        ),
        pytest.param(451, "4.7.0 Temporary server error. Throttled.", id="4.7-throttled"),
        pytest.param(
            450,
            "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
            "additional messages from being delivered. Please resend your message at a later "
            "time. https://support.google.com/mail/answer/6592",
            id="gmail-4.2.1",
        ),
        pytest.param(
            454, "4.7.0 Too many login attempts, please try again later.", id="gmail-auth"
        ),
        pytest.param(
            421, "4.7.0 mx.example.com Error: too many connections from 192.0.2.1", id="postfix"
        ),
        pytest.param(452, "4.5.3 Error: too many recipients", id="too-many-recipients"),
        pytest.param(450, "4.7.1 <probe@example.com>: Rate limit exceeded", id="policyd"),
        pytest.param(451, "ratelimited, try again later", id="no-enhanced-code"),
    ],
)
def test_a_temporary_reply_about_rates_or_limits_is_throttling(code: int, text: str) -> None:
    assert is_throttling(code, text)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        pytest.param(450, "4.7.1 Greylisted, see https://postgrey.schweikert.ch/", id="greylist"),
        pytest.param(451, "4.3.0 Error: queue file write error", id="queue-file"),
        pytest.param(450, "4.1.8 <a@b.example>: Sender address rejected: Domain not found"),
        pytest.param(421, "4.7.0 mx.example.com Error: too many errors", id="postfix-errors"),
        pytest.param(452, "4.3.1 Insufficient system storage", id="disk"),
        pytest.param(421, "4.3.20 Service shutting down", id="4.3.20-is-not-4.3.2"),
    ],
)
def test_other_temporary_replies_are_not_throttling(code: int, text: str) -> None:
    assert not is_throttling(code, text)


@pytest.mark.parametrize("code", [250, 354, 550, 554, None])
def test_only_a_4xx_reply_can_be_throttling(code: int | None) -> None:
    """A permanent refusal that mentions a limit is a refusal: the route is broken for good."""
    assert not is_throttling(code, "5.7.1 too many recipients, rate limit exceeded")
