"""The daemon with OAuth2 on both legs against the real servers: metrics, refused tokens, canaries.

``python -m smtp_probe run`` as a process, on a config with ``oauth_clients``
that are real clients of the session's authorization server; Postfix
submission and Dovecot check every token by introspection. Scheduled runs
are read off ``/metrics``; what the servers saw off their logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli_proc import run_cli
from tests.support.daemon_proc import Daemon, start_daemon, stop_daemon
from tests.support.mailstack import MailStack
from tests.support.oauth_clients import CANARY_SECRET
from tests.support.oauth_e2e import (
    OAuthConfig,
    PostfixLog,
    leaked,
    metric,
    metrics_page,
    oauth_env,
    refusing_proxy,
    runs_reaching,
)
from tests.support.oauth_server import OAuthServer
from tests.support.routes import SENDER, SINK
from tests.support.tokens import CANARY as CANARY_TOKEN

pytestmark = pytest.mark.e2e

EVERY_2S = {"interval": "2s", "timeout": "1800ms", "jitter": "100ms"}


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    """A proxy that refuses: the only way out of loopback for the processes under test."""
    with refusing_proxy() as url:
        yield url


@pytest.fixture
def config(stack: MailStack, oauth_server: OAuthServer, tmp_path: Path) -> OAuthConfig:
    built = OAuthConfig(stack, oauth_server, tmp_path)
    built.doc["defaults"] = dict(EVERY_2S)
    return built


def start(stack: MailStack, config: OAuthConfig, proxy: str, *args: str) -> Daemon:
    """The daemon for ``config``, proxies refusing, on a free port."""
    text = config.write().read_text()
    return start_daemon(stack, config.dir, [], config=text, args=args, env=oauth_env(proxy))


def stopped_cleanly(daemon: Daemon) -> str:
    """SIGTERM the daemon; it must exit 0 and log no traceback. Its log."""
    stop_daemon(daemon)
    log = daemon.log.read_text()
    assert daemon.proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    return log


def test_the_daemon_delivers_with_oauth_and_a_refused_cached_token_is_replaced_at_once(
    stack: MailStack, oauth_server: OAuthServer, config: OAuthConfig, proxy: str
) -> None:
    probe, smtp_client, imap_client = config.both_legs("generic")
    daemon = start(stack, config, proxy)
    try:
        text = runs_reaching(daemon, [probe], 3, 30)
        runs = metric(text, "smtp_probe_runs_total", probe=probe)
        assert metric(text, "smtp_probe_success", probe=probe) == 1
        assert metric(text, "smtp_probe_outcomes_total", probe=probe, outcome="delivered") == runs
        # one token per client, cached for every run (the watcher logged in once)
        for client in (smtp_client, imap_client):
            requests = oauth_server.requests(config.client_ids[client])
            assert requests == 1, client
            assert metric(text, "smtp_probe_oauth_token_requests_total", client=client,
                          result="success") == requests  # fmt: skip
            expiry = metric(text, "smtp_probe_oauth_token_expiry_timestamp_seconds", client=client)
            assert time.time() + 3000 < expiry <= time.time() + 3600
            assert metric(text, "smtp_probe_oauth_token_request_duration_seconds_count",
                          client=client) == 1  # fmt: skip

        # Every token the server issued so far is refused from now on: the
        # next run's cached SMTP token is refused, dropped, and a new one
        # fetched and used on the same connection; no run fails.
        postfix = PostfixLog(stack)
        oauth_server.revoke_tokens()
        text = runs_reaching(daemon, [probe], runs + 2, 30)
        after = metric(text, "smtp_probe_runs_total", probe=probe)
        assert metric(text, "smtp_probe_outcomes_total", probe=probe, outcome="delivered") == after
        assert metric(text, "smtp_probe_success", probe=probe) == 1
        assert postfix.auth_failures() == 1, postfix.new()
        # what Dovecot was shown: the revoked token once, then only the new one
        shown = oauth_server.introspections(config.client_ids[smtp_client])
        refused = shown.index(False)
        assert shown[refused + 1 :] == [True] * (len(shown) - refused - 1) != []
        requests = oauth_server.requests(config.client_ids[smtp_client])
        assert requests == 2
        assert metric(text, "smtp_probe_oauth_token_requests_total", client=smtp_client,
                      result="success") == 2  # fmt: skip
        failed = [
            metric(text, "smtp_probe_oauth_token_requests_total", client=smtp_client, result=r)
            for r in ("invalid_client", "timeout", "unreachable", "http_error", "bad_response")
        ]
        assert failed == [0, 0, 0, 0, 0]
        # the logged-in watcher is not disturbed by its token's revocation
        assert oauth_server.requests(config.client_ids[imap_client]) == 1
    finally:
        log = stopped_cleanly(daemon)
    tokens = config.issued(smtp_client, imap_client)
    assert len(tokens) == 3
    assert leaked(log, [*tokens, *config.secrets.values()]) == []


def test_no_secret_and_no_token_shows_in_any_output(
    stack: MailStack, oauth_server: OAuthServer, config: OAuthConfig, proxy: str
) -> None:
    # A route that works, its client secret a canary; the mailbox's client an
    # installed app (its refresh token is a secret too).
    config.smtp(
        "canary-secret", oauth=config.generic("canary-secret", SENDER, secret=CANARY_SECRET)
    )
    config.mailbox("sink", oauth=config.google_installed_app("sink-app", SINK))
    config.probe("good", "canary-secret", "sink")
    # A helper that prints a canary access token, which the servers refuse:
    # on the SMTP leg of one probe, as the mailbox login of another.
    canary = config.command(
        "canary-token",
        f"print({json.dumps({'access_token': CANARY_TOKEN, 'expires_in': 3600})!r})\n",
    )
    config.smtp("canary-token", oauth=canary)
    config.mailbox("canary-box", user=SENDER, oauth=canary)
    config.probe("token-refused", "canary-token", "sink")
    config.probe("mailbox-refused", "canary-secret", "canary-box", to=SENDER)
    outputs: dict[str, str] = {}

    proc = run_cli("validate", "--config", str(config.write()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs["validate"] = proc.stdout + proc.stderr
    for probe, output in [("good", "text"), ("token-refused", "text"), ("token-refused", "json"),
                          ("token-refused", "nagios"), ("mailbox-refused", "json")]:  # fmt: skip
        proc = config.check(probe, "--format", output, proxy=proxy)
        outputs[f"check {probe} {output}"] = proc.stdout + proc.stderr
    # what makes the outputs worth searching: the canaries were used and refused
    assert "OK: delivered to INBOX" in outputs["check good text"]
    assert outputs["check token-refused nagios"].startswith(
        "SMTP-PROBE CRITICAL - send_failed at auth [535]"
    )
    assert '"stage": "imap_login"' in outputs["check mailbox-refused json"]

    daemon = start(stack, config, proxy, "--log-level", "debug")
    try:
        runs_reaching(daemon, ["good", "token-refused", "mailbox-refused"], 2, 30)
        for probe in ("good", "token-refused", "mailbox-refused"):
            status, outputs[f"/probe {probe}"] = daemon.get(f"/probe?name={probe}&format=json")
            assert status == 200
        status, outputs["/"] = daemon.get("/")
        assert status == 200
        outputs["/metrics"] = metrics_page(daemon)
    finally:
        outputs["daemon log"] = stopped_cleanly(daemon)

    page = outputs["/"]
    assert "send_failed" in page
    assert "imap_login" in page
    assert '"outcome": "delivered"' in outputs["/probe good"]
    assert "token refused: status invalid_token" in outputs["/probe token-refused"]
    assert "run finished" in outputs["daemon log"]
    assert '"level": "debug"' in outputs["daemon log"]
    secrets = [CANARY_SECRET, CANARY_TOKEN, *config.secrets.values()]
    secrets += config.issued("canary-secret", "sink-app")
    assert len(secrets) >= 6
    found = {where: leaked(text, secrets) for where, text in outputs.items()}
    assert found == {where: [] for where in outputs}
