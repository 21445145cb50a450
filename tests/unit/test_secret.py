"""Secret: never shows itself, except through reveal()."""

from __future__ import annotations

import copy
import pickle

from smtp_probe.secret import Secret

VALUE = "hunter2-very-secret"


def test_repr_is_masked() -> None:
    assert repr(Secret(VALUE)) == "<secret>"


def test_str_is_masked() -> None:
    assert str(Secret(VALUE)) == "<secret>"


def test_f_string_is_masked_with_and_without_format_spec_or_conversion() -> None:
    secret = Secret(VALUE)
    rendered = f"{secret} {secret!r} {secret!s} {secret:>40} {secret:s}"
    assert VALUE not in rendered
    assert rendered == "<secret> <secret> <secret> <secret> <secret>"


def test_format_and_percent_formatting_are_masked() -> None:
    secret = Secret(VALUE)
    assert format(secret, "") == "<secret>"
    assert "{}".format(secret) == "<secret>"  # noqa: UP032 - str.format is the behaviour under test
    assert "%s %r" % (secret, secret) == "<secret> <secret>"  # noqa: UP031 - same, for %


def test_secret_inside_a_container_repr_is_masked() -> None:
    assert VALUE not in repr({"password": Secret(VALUE)})


def test_reveal_returns_the_value() -> None:
    assert Secret(VALUE).reveal() == VALUE


def test_equal_values_are_equal_and_hash_alike() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert hash(Secret(VALUE)) == hash(Secret(VALUE))


def test_different_values_are_not_equal() -> None:
    assert Secret(VALUE) != Secret(VALUE + "x")


def test_secret_is_not_equal_to_its_plain_value() -> None:
    assert Secret(VALUE) != VALUE


def test_truthiness_follows_the_value() -> None:
    assert Secret(VALUE)
    assert not Secret("")


def test_copies_keep_the_value() -> None:
    secret = Secret(VALUE)
    assert copy.deepcopy(secret).reveal() == VALUE
    assert pickle.loads(pickle.dumps(secret)).reveal() == VALUE  # noqa: S301 - our own bytes
