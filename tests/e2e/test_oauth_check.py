"""``smtp-probe check --config F --probe NAME`` with OAuth2 on both legs, against the real servers.

The config is written as an operator would: ``oauth_clients`` of every kind
(generic, microsoft with a secret or a certificate, google service account
or installed app, token_command), each a real client of the session's
authorization server (:class:`tests.support.oauth_server.OAuthServer`);
Postfix submission and Dovecot IMAPS check the tokens by introspection. A
token is good for the one user its client names. Every child process has
proxies that refuse anything but loopback.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mailstack import MailStack
from tests.support.oauth_e2e import OAuthConfig, PostfixLog, leaked, refusing_proxy
from tests.support.oauth_server import OAuthServer
from tests.support.routes import SENDER, SINK

pytestmark = pytest.mark.e2e

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    """A proxy that refuses: the only way out of loopback for the processes under test."""
    with refusing_proxy() as url:
        yield url


@pytest.fixture
def config(stack: MailStack, oauth_server: OAuthServer, tmp_path: Path) -> OAuthConfig:
    return OAuthConfig(stack, oauth_server, tmp_path)


def test_check_delivers_with_oauth_on_both_legs(config: OAuthConfig, proxy: str) -> None:
    probe, smtp_client, imap_client = config.both_legs("generic")

    proc = config.check(probe, proxy=proxy)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("OK: delivered to INBOX ")
    for client in (smtp_client, imap_client):
        assert any(f"=== oauth: token from {client} (fresh, expires in 59m)" in x for x in lines)
    # both logins with a token, OAUTHBEARER (offered on both legs), payload masked
    assert any(x.endswith("~> AUTHENTICATE OAUTHBEARER ********") for x in lines)
    assert any(x.endswith("<~ OK Logged in") for x in lines)
    assert any(x.endswith("~> AUTH OAUTHBEARER ********") for x in lines)
    assert any(x.endswith("<~ 235 2.7.0 Authentication successful") for x in lines)
    for client in (smtp_client, imap_client):  # Dovecot checked each token once, for its login
        assert config.server.introspections(config.client_ids[client]) == [True]
    tokens = config.issued(smtp_client, imap_client)
    assert len(tokens) == 2
    assert leaked(proc.stdout + proc.stderr, [*tokens, *config.secrets.values()]) == []
    assert proc.stderr == ""


KINDS = {
    # kind: (method of OAuthConfig, the grant the server must have seen)
    "generic client_credentials": ("generic", "client_credentials"),
    "generic refresh_token": ("generic_refresh", "refresh_token"),
    "microsoft client secret": ("microsoft_secret", "client_credentials"),
    "microsoft certificate": ("microsoft_certificate", "client_credentials"),
    "google service account, token_uri": ("google_service_account", JWT_BEARER),
    "google service account, key file's token_uri": ("google_service_account_keyfile", JWT_BEARER),
    "google installed app": ("google_installed_app", "refresh_token"),
    "token_command json": ("fetching_command", "client_credentials"),
    "token_command plain": ("fetching_command_plain", "client_credentials"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_client_delivers_through_dovecot(
    config: OAuthConfig, oauth_server: OAuthServer, proxy: str, kind: str
) -> None:
    method, grant = KINDS[kind]
    probe, smtp_client, imap_client = config.both_legs(method)

    proc, result = config.check_json(probe, proxy=proxy)

    assert (proc.returncode, result["outcome"]) == (0, "delivered"), result["transcript"]
    transcript = result["transcript"]
    assert f"oauth: token from {smtp_client} (fresh" in transcript[0]
    assert f"oauth: token from {imap_client} (fresh" in transcript[1]
    # each client asked the server once, by the grant of its kind
    for name in (smtp_client, imap_client):
        asked = [e for e in oauth_server.log() if e["client_id"] == config.client_ids[name]]
        assert [(e["grant_type"], e["status"]) for e in asked] == [(grant, 200)], name
    tokens = config.issued(smtp_client, imap_client)
    assert len(tokens) == 2
    assert leaked(proc.stdout + proc.stderr, [*tokens, *config.secrets.values()]) == []


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("wrong secret", "microsoft_secret"),
        ("wrong secret", "google_installed_app"),
        ("revoked client", "generic"),
    ],
)
def test_a_refused_client_fails_at_oauth_and_nothing_is_sent(
    stack: MailStack,
    config: OAuthConfig,
    oauth_server: OAuthServer,
    proxy: str,
    fault: str,
    kind: str,
) -> None:
    probe, smtp_client, imap_client = config.both_legs(kind)
    if fault == "wrong secret":  # the secret in the config expired: a new one was made
        client = smtp_client
        oauth_server.set_secret(config.client_ids[client], "a-new-secret-" + "x" * 20)
    else:
        client = imap_client
        oauth_server.revoke_client(config.client_ids[client])
    postfix = PostfixLog(stack)

    proc = config.check(probe, "--format", "nagios", proxy=proxy)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    # authlib's server answers 401 to HTTP basic client auth (authlib, google-auth), else 400 (MSAL)
    assert re.match(
        rf"SMTP-PROBE CRITICAL - error at oauth: {client}: "
        r"token endpoint: invalid_client \(HTTP 40[01]\): \S",
        proc.stdout,
    ), proc.stdout
    assert postfix.submissions() == 0, "nothing may be sent without a token"
    assert leaked(proc.stdout + proc.stderr, list(config.secrets.values())) == []
    if client == imap_client:  # the SMTP token was had first, and never used
        assert len(config.issued(smtp_client)) == 1


def test_a_token_the_smtp_server_refuses_fails_at_auth_with_the_decoded_challenge(
    stack: MailStack, config: OAuthConfig, proxy: str
) -> None:
    # a helper that prints a good token, for the wrong user
    smtp_client = config.fetching_command("sink-token", SINK)
    config.smtp("submission", oauth=smtp_client)
    config.mailbox("sink", oauth=config.generic("sink", SINK))
    probe = config.probe("refused", "submission", "sink")
    postfix = PostfixLog(stack)

    proc, result = config.check_json(probe, proxy=proxy)

    assert (proc.returncode, result["outcome"], result["stage"]) == (2, "send_failed", "auth")
    assert result["smtp"]["reply_code"] == 535
    transcript = result["transcript"]
    auth = next(
        i for i, line in enumerate(transcript) if line.endswith("~> AUTH OAUTHBEARER ********")
    )
    if stack.dovecot_version.startswith("2.3"):
        assert result["error"].startswith("535 5.7.8 ")
        assert result["error"].endswith("(token refused: status invalid_token)")
        assert '<~ 334 {"status":"invalid_token"' in transcript[auth + 1]
        assert transcript[auth + 2].endswith("~> AQ==")  # RFC 7628's %x01 answer
        assert "<~ 535 5.7.8" in transcript[auth + 3]
    else:  # 2.4 refuses another user's live token with no error challenge
        assert result["error"] == "535 5.7.8 Error: authentication failed: (reason unavailable)"
        assert "<~ 535 5.7.8" in transcript[auth + 1]
    assert not any("MAIL FROM" in line for line in transcript)
    assert postfix.messages() == 0
    # Dovecot checked the token: alive, but sink@'s, not probe@'s
    assert config.server.introspections(config.client_ids["sink-token"]) == [True]
    tokens = config.issued("sink-token", "sink")
    assert leaked(proc.stdout + proc.stderr, [*tokens, *config.secrets.values()]) == []


def test_a_token_the_imap_server_refuses_fails_at_imap_login_and_nothing_is_sent(
    stack: MailStack, config: OAuthConfig, proxy: str
) -> None:
    config.smtp("submission", oauth=config.generic("probe", SENDER))
    config.mailbox("sink", oauth=config.fetching_command("probe-token", SENDER, output="plain"))
    probe = config.probe("refused", "submission", "sink")
    postfix = PostfixLog(stack)

    proc, result = config.check_json(probe, proxy=proxy)

    assert (proc.returncode, result["outcome"], result["stage"]) == (2, "error", "imap_login")
    refused = "AUTHENTICATE OAUTHBEARER refused: [AUTHENTICATIONFAILED] Authentication failed."
    transcript = result["transcript"]
    if stack.dovecot_version.startswith("2.3"):
        assert result["error"] == f"{refused} (token refused: status invalid_token)"
        assert any('<~ + {"status":"invalid_token"' in line for line in transcript)
    else:  # 2.4 refuses another user's live token with no error challenge
        assert result["error"] == refused
        assert not any("<~ + {" in line for line in transcript)
    # Dovecot checked the token: alive, but probe@'s, not sink@'s
    assert config.server.introspections(config.client_ids["probe-token"]) == [True]
    assert postfix.submissions() == 0
    tokens = config.issued("probe", "probe-token")
    assert leaked(proc.stdout + proc.stderr, [*tokens, *config.secrets.values()]) == []


@pytest.fixture
def endpoint_fault(oauth_server: OAuthServer) -> Iterator[None]:
    """Whatever the test does to the token endpoint is undone afterwards."""
    try:
        yield
    finally:
        oauth_server.hang(False)
        oauth_server.fail_with(None)
        if not oauth_server.running:
            oauth_server.start()


# A hanging endpoint: the HTTP library's timeout runs from the request,
# which comes after the provider library's first import, so under load the
# token cache's wait (or the run's deadline, when that binds) may end first
# and say so in its own words.
_HUNG = r"(token endpoint 127\.0\.0\.1:PORT: no answer within {s}s|no answer from the token endpoint within {s}s)"
FAULTS = {
    # fault: (kind, client timeout, run timeout, reason after "<client>: " (a regex), longest run)
    "stopped": ("microsoft_secret", "5s", "10s", r"token endpoint 127\.0\.0\.1:PORT: connection refused", 1.5),
    "HTTP 503": ("generic", "5s", "10s", r"token endpoint: HTTP 503", 1.5),
    "hanging, client timeout first": ("google_service_account", "2s", "10s", _HUNG.format(s="2"), 2.5),
    "hanging, run deadline first": ("generic_refresh", "30s", "3s", _HUNG.format(s=r"[23](\.\d)?") + r"|no token within 3s \(the run deadline\)", 3.1),
}  # fmt: skip


@pytest.mark.usefixtures("endpoint_fault")
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_token_endpoint_down_or_hanging_fails_fast_at_oauth_and_nothing_is_sent(
    stack: MailStack, config: OAuthConfig, oauth_server: OAuthServer, proxy: str, fault: str
) -> None:
    kind, client_timeout, run_timeout, reason, longest = FAULTS[fault]
    probe, smtp_client, _ = config.both_legs(kind)
    for entry in config.doc["oauth_clients"].values():
        entry["timeout"] = client_timeout
    port = oauth_server.url.rsplit(":", 1)[1]
    if fault == "stopped":
        oauth_server.stop()
    elif fault == "HTTP 503":
        oauth_server.fail_with(503)
    else:
        oauth_server.hang()
    postfix = PostfixLog(stack)

    started = time.monotonic()
    proc, result = config.check_json(probe, "--timeout", run_timeout, proxy=proxy)
    took = time.monotonic() - started

    assert (proc.returncode, result["outcome"], result["stage"]) == (2, "error", "oauth")
    assert re.fullmatch(f"{smtp_client}: ({reason.replace('PORT', port)})", result["error"])
    assert result["duration_seconds"] < longest
    assert took < longest + 5  # the process too: start-up, then out (no helper thread holds it)
    assert result["smtp"]["reply_code"] is None
    assert postfix.submissions() == 0
    assert leaked(proc.stdout + proc.stderr, list(config.secrets.values())) == []


def test_a_hanging_token_command_is_killed_at_its_deadline(
    stack: MailStack, config: OAuthConfig, proxy: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "helper.pid"
    config.command(
        "hangs",
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n",
        timeout="1500ms",
    )
    config.smtp("submission", oauth="hangs")
    config.mailbox("sink", oauth=config.generic("sink", SINK))
    probe = config.probe("hanging-helper", "submission", "sink")
    postfix = PostfixLog(stack)

    proc, result = config.check_json(probe, "--timeout", "10s", proxy=proxy)

    helper = int(pid_file.read_text())
    outlived = _alive(helper)
    if outlived:  # a test that fails leaves nothing behind
        os.kill(helper, signal.SIGKILL)
    assert (proc.returncode, result["outcome"], result["stage"]) == (2, "error", "oauth")
    assert result["error"] == "hangs: token command hangs.py: no token within 1.5s (killed)"
    assert 1.5 <= result["duration_seconds"] < 2.5
    assert not outlived, "the hanging token command outlived smtp-probe check"
    assert postfix.submissions() == 0


def test_a_token_command_printing_garbage_fails_at_oauth_without_echoing_it(
    stack: MailStack, config: OAuthConfig, proxy: str
) -> None:
    garbage = "Traceback: refresh failed for canary-helper-output-5d1e {secret: hunter2}"
    config.command("garbage", f"import sys\nprint({garbage!r})\nprint('x', file=sys.stderr)\n")
    config.smtp("submission", oauth="garbage")
    config.mailbox("sink", oauth=config.generic("sink", SINK))
    probe = config.probe("garbage-helper", "submission", "sink")
    postfix = PostfixLog(stack)

    for output in ("text", "json", "nagios"):
        proc = config.check(probe, "--format", output, proxy=proxy)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert (
            "garbage: token command garbage.py: printed something that is not a bearer token"
            in proc.stdout
        )
        assert "error at oauth" in proc.stdout or '"stage": "oauth"' in proc.stdout
        for fragment in ("canary-helper-output", "hunter2", "Traceback"):
            assert fragment not in proc.stdout + proc.stderr
    assert postfix.submissions() == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return re.split(r"\) ", stat, maxsplit=1)[1][0] != "Z"
