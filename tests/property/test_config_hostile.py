"""The config loader on arbitrary YAML: only ``ConfigError``, and never a secret in it.

Three kinds of documents: arbitrary text (mostly not YAML at all),
arbitrary YAML data (mappings, lists and scalars of every YAML type), and
mutations of ``config/example.yml`` (keys dropped, values swapped for
random data, unknown keys added) with a known secret in every password
field, in the ``${VAR}`` environment and in a ``password_file``. Whatever
comes in, :func:`parse_config` and :func:`load_config` return a config or
raise :class:`ConfigError`, and no error text holds the secret; ``smtp-probe
validate`` exits 0 or 3 and prints no secret and no traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_probe import cli
from smtp_probe.config.errors import ConfigError
from smtp_probe.config.load import load_config, parse_config

SECRET = "Hyp0thesis-S3cret-never-shown"  # noqa: S105 - a planted test value
"""The secret planted everywhere a secret may stand; it must never come back out."""
ENVIRON = {"IMAP_PASSWORD": SECRET, "SMTP_PASSWORD": SECRET, "SECRET": SECRET}
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yml"
_SECRET_KEYS = ("password", "client_secret", "refresh_token")
_SECRET_FILE_KEYS = ("password_file", "client_secret_file", "refresh_token_file")


@pytest.fixture(scope="module")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a ``secret`` file with :data:`SECRET` (the ``*_file`` keys' target)."""
    path = tmp_path_factory.mktemp("secrets")
    (path / "secret").write_text(SECRET + "\n")
    return path


def _loads(text: str, source: Path | None = None) -> ConfigError | None:
    """Parse ``text``: ``None`` when valid, the ``ConfigError`` otherwise; anything else fails."""
    try:
        parse_config(text, source=source, environ=ENVIRON)
    except ConfigError as exc:
        return exc
    return None


def _assert_clean(error: ConfigError | None) -> None:
    if error is None:
        return
    assert error.errors, "a ConfigError lists at least one problem"
    for text in (str(error), repr(error), *error.errors):
        assert SECRET not in text


# ------------------------------------------------------------------------ strategies

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["30s", "5m", "0s", "-1s", "1e9h", "${SECRET}", "$${X}", "${NOPE}", "~"])
    | st.binary(max_size=20)
    | st.dates()
)
_keys = st.text(max_size=20) | st.sampled_from(
    ["probes", "smtp_servers", "mailboxes", "defaults", "route", "host", "port", "password"]
)
yaml_data = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _example() -> Any:
    return yaml.safe_load(EXAMPLE.read_text())


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index path in ``node`` (mappings and lists), parents first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*at, key)
            yield from _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*at, index)
            yield from _paths(value, (*at, index))


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        root = root[part]
    return root


def _plant_secrets(node: Any, secret_file: Path) -> None:
    """Put the secret in every secret key and point every secret file key at it."""
    if isinstance(node, dict):
        for key in list(node):
            if key in _SECRET_KEYS:
                node[key] = SECRET
            elif key in _SECRET_FILE_KEYS:
                node[key] = str(secret_file)
            else:
                _plant_secrets(node[key], secret_file)
    elif isinstance(node, list):
        for item in node:
            _plant_secrets(item, secret_file)


@st.composite
def mutated_example(draw: st.DrawFn, secret_file: Path) -> str:
    """``config/example.yml`` with up to six random changes, secrets planted."""
    data = _example()
    for _ in range(draw(st.integers(0, 6))):
        paths = list(_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        action = draw(st.sampled_from(["drop", "replace", "unknown", "secret"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(yaml_data)
        elif action == "unknown" and isinstance(parent, dict):
            parent[draw(_keys)] = draw(yaml_data)
        elif isinstance(parent, dict):
            # A secret key where it may or may not belong: the error names it, never its value.
            parent[draw(st.sampled_from(_SECRET_KEYS))] = draw(
                st.sampled_from([SECRET, "${SECRET}", "pre-${SECRET}-post"])
            )
    _plant_secrets(data, secret_file)
    return _dump(data)


# ---------------------------------------------------------------------------- tests


@given(st.text(max_size=300))
def test_arbitrary_text_is_a_config_error_or_a_config(text: str) -> None:
    _assert_clean(_loads(text))


@given(yaml_data)
def test_arbitrary_yaml_data_is_a_config_error_or_a_config(data: Any) -> None:
    _assert_clean(_loads(_dump(data)))


@given(st.data())
def test_mutated_example_never_leaks_the_secret(secret_dir: Path, data: st.DataObject) -> None:
    text = data.draw(mutated_example(secret_dir / "secret"))
    _assert_clean(_loads(text, source=secret_dir / "config.yml"))


# Nesting is cut off by the recursion limit: up to ~2 s of PyYAML work, bounded.
@settings(deadline=timedelta(seconds=10))
@given(
    st.sampled_from(
        [
            "probes: " + "[" * 1200 + "]" * 1200,
            "probes: " + "{a: " * 1200 + "1" + "}" * 1200,
            # "Billion laughs": aliases that would expand to 9^7 nodes.
            "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
                for p, n in zip("xabcdef", "abcdefg", strict=True)
            ).replace("*x", "x")
            + "probes: [*g]\n",
            "probes: &a [*a]\n",
            "probes: !!python/object/apply:os.system [echo]\n",
            "probes: \x00\n",
            "defaults: {interval: " + "9" * 5000 + "}\nprobes: []\n",
            "? [a, b]\n: 1\nprobes: []\n",
            "%YAML 9.9\n---\nprobes: []\n",
            "--- a\n--- b\n",
            f"smtp_servers: {{r: {{host: h, username: u, password: {SECRET}, port: {SECRET}}}}}\n",
            f"mailboxes: {{m: {{host: h, username: u, password: [{SECRET}]}}}}\n",
            f"mailboxes: {{m: {{host: h, username: u, password: {{{SECRET}: 1}}}}}}\n",
        ]
    )
)
def test_adversarial_yaml_is_a_config_error(text: str) -> None:
    error = _loads(text)
    assert error is not None
    _assert_clean(error)


@given(
    st.binary(max_size=200)
    | st.just(b"\xff\xfeprobes: []\n")
    | st.just(b"\xef\xbb\xbfprobes: [\xc3\x28]\n")
)
def test_load_config_reads_any_bytes_into_a_config_error(secret_dir: Path, raw: bytes) -> None:
    path = secret_dir / "bytes.yml"
    path.write_bytes(raw)
    try:
        load_config(path, environ=ENVIRON)
    except ConfigError as exc:
        _assert_clean(exc)


@given(st.data())
def test_validate_command_exits_0_or_3_without_secret_or_traceback(
    secret_dir: Path, data: st.DataObject
) -> None:
    path = secret_dir / "validate.yml"
    path.write_text(data.draw(mutated_example(secret_dir / "secret")))
    out, err = io.StringIO(), io.StringIO()
    with (
        patch.dict(os.environ, ENVIRON),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = cli.main(["validate", "--config", str(path)])
    text = out.getvalue() + err.getvalue()
    assert code in (0, 3), text
    assert SECRET not in text
    assert "Traceback" not in text
    if code == 3:
        assert f"{path}" in err.getvalue()
