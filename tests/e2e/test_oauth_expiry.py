"""Tokens that expire every few seconds, and a daemon that runs for two minutes without a failed run.

The first test is the one long OAuth end-to-end test. The authorization server issues tokens
that live :data:`LIFETIME` seconds; three probes submit every two seconds
with tokens of a generic client, a microsoft client (MSAL) and a token
command (JSON with ``expires_in``), into a mailbox watched with a token too.
Every run must deliver, each client must have fetched a new token many
times, and no expired token may ever reach Postfix: the cache renews them
ahead of expiry (a refused cached token would be retried and so hide a
missed renewal from the run's outcome, but not from Postfix's log). The
second cuts the mailbox watcher's IMAP session once its token has expired:
it must log in again with a new one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon_proc import start_daemon, stop_daemon
from tests.support.mailstack import MailStack
from tests.support.oauth_e2e import (
    OAuthConfig,
    PostfixLog,
    leaked,
    metric,
    metrics_page,
    oauth_env,
    refusing_proxy,
    runs_reaching,
    wait_until,
)
from tests.support.oauth_server import OAuthServer
from tests.support.routes import SENDER, SINK

pytestmark = pytest.mark.e2e

LIFETIME = 6
"""Seconds an access token lives: three runs' worth."""
RUNNING = 110.0
"""Seconds the daemon runs its probes."""
INTERVAL = 2.0


@pytest.fixture
def short_lived_tokens(oauth_server: OAuthServer) -> Iterator[None]:
    before = oauth_server.token_lifetime
    oauth_server.token_lifetime = LIFETIME
    try:
        yield
    finally:
        oauth_server.token_lifetime = before


@pytest.mark.usefixtures("short_lived_tokens")
def test_expiring_tokens_are_renewed_and_no_run_fails_for_minutes(
    stack: MailStack, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    config = OAuthConfig(stack, oauth_server, tmp_path)
    config.doc["defaults"] = {"interval": f"{INTERVAL:g}s", "timeout": "1800ms", "jitter": "100ms"}
    clients = [
        config.generic("generic", SENDER),
        config.microsoft_secret("m365", SENDER),
        config.fetching_command("helper", SENDER),
    ]
    config.mailbox("sink", oauth=config.generic("sink", SINK))
    probes = []
    for client in clients:
        config.smtp(client, oauth=client)
        probes.append(config.probe(f"expiring-{client}", client, "sink"))
    postfix = PostfixLog(stack)

    with refusing_proxy() as proxy:
        text = config.write().read_text()
        daemon = start_daemon(stack, config.dir, [], config=text, env=oauth_env(proxy))
        try:
            end = time.monotonic() + RUNNING
            while time.monotonic() < end:
                # fail early, with what failed, rather than after two minutes
                _, page = daemon.get("/metrics")
                for probe in probes:
                    runs = metric(page, "smtp_probe_runs_total", probe=probe)
                    delivered = metric(
                        page, "smtp_probe_outcomes_total", probe=probe, outcome="delivered"
                    )
                    assert delivered == runs, daemon.get(f"/probe?name={probe}")[1]
                time.sleep(5)
            # the daemon keeps fetching: bracket the last page with the server's counts
            before = {c: oauth_server.requests(config.client_ids[c]) for c in clients}
            _, page = daemon.get("/metrics")
            after = {c: oauth_server.requests(config.client_ids[c]) for c in clients}
        finally:
            stop_daemon(daemon)
    log = daemon.log.read_text()
    assert daemon.proc.returncode == 0, log[-3000:]

    expected_runs = RUNNING / INTERVAL * 0.8
    for probe in probes:
        runs = metric(page, "smtp_probe_runs_total", probe=probe)
        assert runs >= expected_runs, probe
        assert metric(page, "smtp_probe_outcomes_total", probe=probe, outcome="delivered") == runs
    # a token for every few runs, each asked for before the last one expired
    assert postfix.auth_failures() == 0, "a run logged in with an expired token"
    for client in [*clients, "sink"]:
        shown = oauth_server.introspections(config.client_ids[client])
        assert shown, client
        assert all(shown), f"{client}: Dovecot was shown an expired token"
    for client in clients:
        asked = after[client]
        assert asked >= RUNNING / LIFETIME * 0.6, client
        # the command's requests are not the daemon's: it counts runs of the helper.
        # One fetch at a time per client: at most one was in flight while the page was read.
        counted = metric(page, "smtp_probe_oauth_token_requests_total", client=client,
                         result="success")  # fmt: skip
        assert before[client] - 1 <= counted <= asked, (client, before[client], counted, asked)
        first = config.issued(client)[0]
        assert oauth_server.introspect(first) == {"active": False}, "tokens really expired"
    tokens = config.issued(*clients, "sink")
    assert leaked(log, [*tokens, *config.secrets.values()]) == []


@pytest.mark.usefixtures("short_lived_tokens")
def test_the_watcher_logs_in_again_with_a_new_token_after_its_session_is_cut(
    stack: MailStack, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    config = OAuthConfig(stack, oauth_server, tmp_path)
    config.doc["defaults"] = {"interval": f"{INTERVAL:g}s", "timeout": "1800ms", "jitter": "100ms"}
    probe, _, imap_client = config.both_legs("microsoft_certificate")
    dovecot_23 = stack.dovecot_version.startswith("2.3")
    # Dovecot's words for a successful login and for doveadm kick, by version
    login = f"{'Login' if dovecot_23 else 'Logged in'}: user=<{SINK}>, method=OAUTHBEARER"
    kicked = "Disconnected: " + ("Server shutting down" if dovecot_23 else "User kicked")

    with refusing_proxy() as proxy:
        text = config.write().read_text()
        daemon = start_daemon(stack, config.dir, [], config=text, env=oauth_env(proxy))
        try:

            def runs() -> float:
                return metric(metrics_page(daemon), "smtp_probe_runs_total", probe=probe)

            first = config.issued(imap_client)[0]
            expired = {"active": False}
            wait_until(lambda: oauth_server.introspect(first) == expired, 10, "token expiry")
            # right after a run, so that none is cut off with the session
            done = runs()
            wait_until(lambda: runs() > done, 10, "a run")
            dovecot = len(stack.dovecot_log())
            subprocess.run(
                ["doveadm", "-c", str(stack.layout.dovecot_conf), "kick", SINK],
                check=True, capture_output=True, timeout=10,
            )  # fmt: skip
            page = runs_reaching(daemon, [probe], runs() + 2, 15)
        finally:
            stop_daemon(daemon)
    since = stack.dovecot_log()[dovecot:]
    assert kicked in since  # the watcher's session was cut
    assert since.count(login) == 1, since  # and it logged in again
    # with a new token at the first try: Dovecot was shown no expired one
    assert oauth_server.introspections(config.client_ids[imap_client]) == [True, True]
    total = metric(page, "smtp_probe_runs_total", probe=probe)
    assert metric(page, "smtp_probe_outcomes_total", probe=probe, outcome="delivered") == total
    assert oauth_server.requests(config.client_ids[imap_client]) == 2
    assert metric(page, "smtp_probe_oauth_token_requests_total", client=imap_client,
                  result="success") == 2  # fmt: skip
