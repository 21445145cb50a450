"""parse_queue_id: the queue id in the final 250 of the common MTAs."""

from __future__ import annotations

import pytest

from smtp_probe.probe.smtp import parse_queue_id


def test_postfix_queue_id_is_found() -> None:
    assert parse_queue_id("2.0.0 Ok: queued as 73215210434") == "73215210434"


def test_postfix_long_queue_id_is_found() -> None:
    assert parse_queue_id("2.0.0 Ok: queued as 4Zb8Yq1mQ9z9vVx") == "4Zb8Yq1mQ9z9vVx"


def test_exim_message_id_is_found() -> None:
    assert parse_queue_id("OK id=1tQx2b-000123-4A") == "1tQx2b-000123-4A"


def test_queue_id_in_angle_brackets_is_found_without_them() -> None:
    assert parse_queue_id("2.0.0 Ok: queued as <ABC123@mx.example>") == "ABC123@mx.example"


@pytest.mark.parametrize("reply", ["2.0.0 Ok", "", "250 Message accepted", "Ok: queued as"])
def test_reply_without_a_queue_id_gives_none(reply: str) -> None:
    assert parse_queue_id(reply) is None
