"""Replicas on one mailbox: the instance id in run tokens, and when another's leftover is swept.

The watcher's side against a real IMAP server is in
tests/protocol/test_replica_sweep.py; two real daemons on Postfix + Dovecot
in tests/e2e/test_replicas.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from prometheus_client import CollectorRegistry

from smtp_probe.app import Daemon
from smtp_probe.config import parse_config
from smtp_probe.probe.imap import sweep_delay
from smtp_probe.probe.message import INSTANCE_ID, Token, TokenSigner, parse_subject
from smtp_probe.probe.spec import DEFAULT_SWEEP_GRACE
from smtp_probe.server.interface import Status
from smtp_probe.server.status_page import render_status_page

KEY = b"k" * 32
ME = "0123abcd"
OTHER = "fedc9876"
NOW = 1_765_000_000.0
TIMEOUT = 60.0
GRACE = 300.0
AFTER = TIMEOUT + GRACE


def token(instance: str, *, sent: float) -> Token:
    """A token of ``instance`` sent at Unix time ``sent``."""
    return TokenSigner(KEY, instance=instance).new("route", now=sent)


# ---------------------------------------------------------------- the token


def test_a_token_carries_its_signers_instance_in_the_first_half_of_its_run_id() -> None:
    made = TokenSigner(KEY, instance=ME).new("route")

    assert made.instance == ME
    assert re.fullmatch(rf"{ME}[0-9a-f]{{8}}", made.run_id)
    assert TokenSigner(KEY, instance=ME).is_own(made)
    assert not TokenSigner(KEY, instance=OTHER).is_own(made)


def test_two_runs_of_one_instance_have_different_run_ids() -> None:
    signer = TokenSigner(KEY, instance=ME)

    assert len({signer.new("route").run_id for _ in range(50)}) == 50


def test_the_token_keeps_its_shape_so_the_subject_parser_still_finds_it() -> None:
    made = TokenSigner(KEY, instance=ME).new("route")

    parsed = parse_subject(f"Re: smtp-probe route {made}")

    assert parsed is not None
    assert parsed.token == str(made)


def test_replicas_with_one_key_verify_each_others_tokens_and_see_whose_they_are() -> None:
    """A replica must recognise a replica's message as a probe message (and so never as junk)."""
    mine, theirs = TokenSigner(KEY, instance=ME), TokenSigner(KEY, instance=OTHER)
    made = theirs.new("route")

    verified = mine.verify("route", str(made))

    assert verified == made
    assert verified is not None
    assert not mine.is_own(verified)


def test_a_token_whose_instance_was_changed_does_not_verify() -> None:
    """The signature covers the instance: nobody can make a message look like our own."""
    made = TokenSigner(KEY, instance=OTHER).new("route")
    forged = f"{made.sent_ms}-{ME}{made.run_id[8:]}-{made.signature}"

    assert TokenSigner(KEY, instance=ME).verify("route", forged) is None


def test_a_token_made_before_instance_ids_still_verifies_and_belongs_to_no_live_instance() -> None:
    """The old signer's run id was 16 random hex digits over the same HMAC payload."""
    run_id, sent_ms = "9f2c4e1ab07d5c33", 1_764_322_545_123
    payload = f"smtp-probe/1\0route\0{sent_ms}\0{run_id}".encode()
    signature = hmac.new(KEY, payload, hashlib.sha256).hexdigest()[:32]

    verified = TokenSigner(KEY, instance=ME).verify("route", f"{sent_ms}-{run_id}-{signature}")

    assert verified is not None
    assert verified.instance == "9f2c4e1a"
    assert not TokenSigner(KEY, instance=ME).is_own(verified)


def test_the_process_instance_is_8_hex_digits_and_the_default_of_every_signer() -> None:
    assert re.fullmatch(r"[0-9a-f]{8}", INSTANCE_ID)
    assert TokenSigner().instance == TokenSigner(KEY).instance == INSTANCE_ID


@pytest.mark.parametrize("bad", ["", "0123abc", "0123abcde", "0123ABCD", "0123abcg", "0123 abc"])
def test_an_instance_id_that_is_not_8_lower_case_hex_digits_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="8 lower-case hex digits"):
        TokenSigner(KEY, instance=bad)


def test_the_signer_repr_shows_the_instance_and_never_the_key() -> None:
    text = repr(TokenSigner(KEY, instance=ME))

    assert ME in text
    assert "kkkk" not in text


# ---------------------------------------------------------------- when a leftover may be swept


@pytest.mark.parametrize(
    ("instance", "age", "expected"),
    [
        # Our own: no run of ours waits for it (those are matched before), swept at once.
        (ME, 0.0, 0.0),
        (ME, -3600.0, 0.0),
        (ME, 10 * AFTER, 0.0),
        # Another instance's, sent just now: it may be in flight for a whole timeout.
        (OTHER, 0.0, AFTER),
        (OTHER, 3.0, AFTER - 3.0),
        (OTHER, TIMEOUT, GRACE),
        (OTHER, AFTER - 0.5, 0.5),
        # Old enough (the boundary included): nobody waits for it any more.
        (OTHER, AFTER, 0.0),
        (OTHER, AFTER + 1.0, 0.0),
        (OTHER, 30 * 24 * 3600.0, 0.0),
        # Sent "in the future" (the sender's clock runs ahead): never pinned for longer than
        # sweep_after from now, since it was sent before we saw it.
        (OTHER, -120.0, AFTER),
        (OTHER, -365 * 24 * 3600.0, AFTER),
    ],
)
def test_sweep_delay_decision_table(instance: str, age: float, expected: float) -> None:
    found = token(instance, sent=NOW - age)

    delay = sweep_delay(found, instance=ME, now=NOW, sweep_after=AFTER)

    # Send times are whole milliseconds.
    assert delay == pytest.approx(expected, abs=0.002)


def test_a_sender_clock_behind_by_less_than_the_grace_leaves_its_run_a_whole_timeout() -> None:
    """Clock skew makes a message look older; the grace is what keeps it safe."""
    skew = GRACE - 1.0
    found = token(OTHER, sent=NOW - skew)  # sent now, by a clock ``skew`` seconds behind

    assert sweep_delay(found, instance=ME, now=NOW, sweep_after=AFTER) > TIMEOUT


# ---------------------------------------------------------------- config, metrics, status page

CONFIG = """\
smtp_servers:
  relay: {host: 127.0.0.1, port: 9, tls: none}
probes:
  - {name: fast, smtp: relay, from: a@x.test, to: b@y.test, interval: 1h, timeout: 20s}
  - {name: slow, smtp: relay, from: a@x.test, to: b@y.test, interval: 1h, timeout: 3m}
"""


def test_leftovers_of_others_are_swept_after_the_longest_timeout_plus_the_grace() -> None:
    default = parse_config(CONFIG, environ={})
    tuned = parse_config(CONFIG + "limits: {sweep_grace: 90s}\n", environ={})

    assert default.sweep_grace == DEFAULT_SWEEP_GRACE == 300.0
    assert default.sweep_after == 180.0 + 300.0
    assert tuned.sweep_after == 180.0 + 90.0


def test_swept_foreign_leftovers_are_counted_apart_from_late_arrivals() -> None:
    registry = CollectorRegistry()
    daemon = Daemon(parse_config(CONFIG, environ={}), registry=registry)
    daemon.metrics.configure(daemon.config.probes)

    def sample(name: str, probe: str) -> float | None:
        return registry.get_sample_value(name, {"probe": probe})

    assert sample("smtp_probe_foreign_leftovers_total", "fast") == 0
    daemon._swept_foreign("fast", OTHER)
    daemon._swept_foreign("fast", OTHER)
    daemon.metrics.foreign_leftover("gone")  # a probe no longer configured: ignored

    assert sample("smtp_probe_foreign_leftovers_total", "fast") == 2
    assert sample("smtp_probe_foreign_leftovers_total", "slow") == 0
    assert sample("smtp_probe_late_messages_total", "fast") == 0


def test_the_status_page_shows_the_instance_id() -> None:
    daemon = Daemon(parse_config(CONFIG, environ={}))

    snapshot = daemon.status()
    html = render_status_page(snapshot, now=NOW)

    assert snapshot.instance == INSTANCE_ID
    assert "Instance <code" in html
    assert f">{INSTANCE_ID}</code>" in html
    assert "Instance <code" not in render_status_page(Status((), (), history_size=3), now=NOW)
