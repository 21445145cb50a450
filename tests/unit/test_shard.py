"""Sharding: every probe runs in exactly one of N instances, by a stable hash of its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtp_probe.config import parse_config
from smtp_probe.shard import config_loader, load_shard, parse_shard, shard, shard_of

CONFIG = """
smtp_servers:
  relay: {host: 127.0.0.1, port: 2525, tls: none}
probes:
""" + "".join(
    f"  - {{name: probe-{i}, smtp: relay, from: a@example.test, to: b@example.test}}\n"
    for i in range(200)
)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_probe_is_in_exactly_one_shard(count: int) -> None:
    config = parse_config(CONFIG)
    shards = [shard(config, index, count) for index in range(count)]

    names = [p.spec.name for shard in shards for p in shard.probes]
    assert sorted(names) == sorted(p.spec.name for p in config.probes)
    assert len(names) == len(set(names))


def test_shards_are_roughly_even() -> None:
    config = parse_config(CONFIG)
    sizes = [len(shard(config, index, 4).probes) for index in range(4)]
    assert min(sizes) > 200 / 4 / 2


def test_shard_of_a_name_is_stable() -> None:
    # crc32 is defined by the name alone: the same on every machine and restart.
    assert shard_of("probe-1", 3) == shard_of("probe-1", 3)
    assert [shard_of(f"probe-{i}", 5) for i in range(5)] == [
        shard_of(f"probe-{i}", 5) for i in range(5)
    ]
    assert shard_of("relay-to-inbox", 1) == 0


@pytest.mark.parametrize(("text", "parsed"), [("0/1", (0, 1)), ("2/3", (2, 3))])
def test_parse_shard(text: str, parsed: tuple[int, int]) -> None:
    assert parse_shard(text) == parsed


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/3", "1/0", ""])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid shard"):
        parse_shard(text)


@pytest.mark.parametrize(("index", "count"), [(3, 3), (-1, 2)])
def test_a_shard_outside_the_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="the index must be in"):
        shard(parse_config(CONFIG), index, count)


def test_load_shard_reads_the_file_and_keeps_the_shard(tmp_path: Path) -> None:
    path = tmp_path / "probes.yml"
    path.write_text(CONFIG)
    whole = parse_config(CONFIG)
    loaded = load_shard(path, 1, 3)
    assert loaded.source == path
    assert loaded.probes == shard(whole, 1, 3).probes
    assert load_shard(path).probes == whole.probes


OAUTH_CONFIG = """\
oauth_clients:
  one: {token_command: [sh, -c, "echo one"]}
  two: {token_command: [sh, -c, "echo two"]}
smtp_servers:
  a: {host: smtp.example.com, username: probe, oauth: one}
  b: {host: smtp.example.com, username: probe, oauth: two}
probes:
  - {name: via-a, smtp: a, from: p@example.com, to: q@example.com}
  - {name: via-b, smtp: b, from: p@example.com, to: q@example.com}
"""


def test_every_shard_keeps_every_oauth_client(tmp_path: Path) -> None:
    path = tmp_path / "probes.yml"
    path.write_text(OAUTH_CONFIG)
    for index in range(3):
        assert set(config_loader(path, index, 3)().oauth_clients) == {"one", "two"}
