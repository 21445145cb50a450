"""A ``routes:`` matrix of 2 senders x 2 mailboxes, password and OAuth mixed, through the daemon.

Senders: the stack's submission port as probe@ with its password, and the
same port with a token (microsoft client, MSAL against the test server).
Mailboxes: sink@ with its password, and probe@'s own mailbox with a token
(google service account acting for probe@). ``validate`` prints the four
probes the route makes; the daemon runs them, and each one delivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli_proc import run_cli
from tests.support.daemon_proc import start_daemon, stop_daemon
from tests.support.mailstack import MailStack
from tests.support.oauth_e2e import (
    OAuthConfig,
    leaked,
    metric,
    oauth_env,
    refusing_proxy,
    runs_reaching,
)
from tests.support.oauth_server import OAuthServer
from tests.support.routes import SENDER, SINK, probe_messages

pytestmark = pytest.mark.e2e

PROBES = [
    "matrix-password-to-sink",
    "matrix-password-to-probe-box",
    "matrix-oauth-to-sink",
    "matrix-oauth-to-probe-box",
]


@pytest.fixture
def matrix(stack: MailStack, oauth_server: OAuthServer, tmp_path: Path) -> OAuthConfig:
    config = OAuthConfig(stack, oauth_server, tmp_path)
    config.doc["defaults"] = {"interval": "4s", "timeout": "3900ms", "jitter": "200ms"}
    config.smtp("password")
    config.smtp("oauth", oauth=config.microsoft_secret("m365", SENDER))
    config.mailbox("sink")
    config.mailbox(
        "probe-box", user=SENDER, oauth=config.google_service_account("workspace", SENDER)
    )
    config.doc["routes"] = {
        "matrix": {
            "senders": [{"smtp": "password", "from": SENDER}, {"smtp": "oauth", "from": SENDER}],
            "mailboxes": [{"mailbox": "sink", "to": SINK}, {"mailbox": "probe-box", "to": SENDER}],
        }
    }
    return config


@pytest.fixture
def probe_box_clean(stack: MailStack) -> Iterator[None]:
    """probe@'s mailbox is watched too: no probe message may be left there either."""
    yield
    assert probe_messages(stack, SENDER) == [], "a probe message was left in probe@'s mailbox"


def test_validate_lists_the_four_probes_the_route_makes(matrix: OAuthConfig) -> None:
    proc = run_cli("validate", "--config", str(matrix.write()))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"{matrix.path}: valid: 4 probe(s), 2 mailbox(es)",
        f"  matrix-password-to-sink: password -> sink, {SENDER} -> {SINK}",
        f"  matrix-password-to-probe-box: password -> probe-box, {SENDER} -> {SENDER}",
        f"  matrix-oauth-to-sink: oauth -> sink, {SENDER} -> {SINK}",
        f"  matrix-oauth-to-probe-box: oauth -> probe-box, {SENDER} -> {SENDER}",
    ]
    assert leaked(proc.stdout + proc.stderr, list(matrix.secrets.values())) == []


@pytest.mark.usefixtures("probe_box_clean")
def test_every_probe_of_the_matrix_delivers_through_the_daemon(
    stack: MailStack, matrix: OAuthConfig
) -> None:
    with refusing_proxy() as proxy:
        text = matrix.write().read_text()
        daemon = start_daemon(stack, matrix.dir, [], config=text, env=oauth_env(proxy))
        try:
            page = runs_reaching(daemon, PROBES, 2, 40)
        finally:
            stop_daemon(daemon)
    assert daemon.proc.returncode == 0
    for probe in PROBES:
        runs = metric(page, "smtp_probe_runs_total", probe=probe)
        assert metric(page, "smtp_probe_outcomes_total", probe=probe, outcome="delivered") == runs
        assert metric(page, "smtp_probe_success", probe=probe) == 1, probe
    for client in ("m365", "workspace"):
        assert metric(page, "smtp_probe_oauth_token_requests_total", client=client,
                      result="success") == 1  # fmt: skip
    assert "Traceback" not in daemon.log.read_text()
