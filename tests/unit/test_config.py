"""The YAML config: strict, every error at once with its location, secrets never shown.

Each file under ``configs/bad/`` holds one mistake and is mapped below to the
exact error line(s) it must produce, as blackbox_exporter's config tests do.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import trustme
import yaml

from smtp_probe.app import keep_unchanged_oauth_clients
from smtp_probe.config import load_config, messages, parse_config
from smtp_probe.config.errors import ConfigError
from smtp_probe.config.runtime import Config, ScheduledProbe, ServerSettings, parse_listen
from smtp_probe.oauth.cache import TokenCache
from smtp_probe.oauth.settings import (
    CommandClient,
    GenericClient,
    GoogleClient,
    Grant,
    MicrosoftClient,
    OAuthClient,
)
from smtp_probe.probe.spec import Cleanup, Mailbox, ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.tls import ca_file_problem
from smtp_probe.secret import Secret

REPO = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
BAD = CONFIGS / "bad"
# Fake passwords, here to be looked for in everything the loader shows. Every
# bad config holds CANARY as a password written in the file.
CANARY = "hunter2-canary-written-in-the-file"
SMTP_PASSWORD = "hunter2-smtp-env"  # noqa: S105
IMAP_PASSWORD = "hunter2-imap-env"  # noqa: S105
CLIENT_SECRET = "hunter2-client-secret-env"  # noqa: S105
REFRESH_TOKEN = "hunter2-refresh-token-env"  # noqa: S105
ENVIRON = {
    "SMTP_PASSWORD": SMTP_PASSWORD,
    "IMAP_PASSWORD": IMAP_PASSWORD,
    "CLIENT_SECRET": CLIENT_SECRET,
    "REFRESH_TOKEN": REFRESH_TOKEN,
}
SECRETS = (
    CANARY,
    SMTP_PASSWORD,
    IMAP_PASSWORD,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    "hunter2-from-file",
    "hunter2-client-secret-file",
    "hunter2-service-account-key",
    "hunter2-app-key",
    "0123456789abcdef0123456789abcdef",
)

_ALLOWED_TOP = (
    "defaults, token_secret_file, oauth_clients, smtp_servers, mailboxes, probes, routes, server, "
    "limits, dns"
)
_ALLOWED_SMTP = (
    "provider, host, mx, port, tls, verify, ca_file, username, password, password_file, oauth, "
    "helo, timeout, max_connections"
)
_ALLOWED_PROBE = (
    "name, smtp, mailbox, from, to, interval, timeout, jitter, reflector, expect_auth, verify_dkim, "
    "bounce_mailbox, dns_checks, dns_interval, dns, check, expect, smuggling_variants"
)
_DURATION_UNIT = "a duration needs a unit: 500ms, 30s, 5m or 1h"
_PROBE_NAME = "a probe name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

# file stem -> the exact errors, in order. {file} is the config's path, {dir}
# its directory, {secrets} the shared secrets directory, {not_pem} what
# tls.ca_file_problem says about a file without certificates.
BAD_CONFIGS: dict[str, list[str]] = {
    "yaml_syntax": [
        "{file}:9:7: invalid YAML: while parsing a flow mapping started at line 8, "
        "column 10: expected ',' or '}}', but got ':'"
    ],
    "empty": ["{file}: the file is empty; it needs at least a 'probes' list"],
    "not_a_mapping": [f"{{file}}:2:1: expected a mapping of sections ({_ALLOWED_TOP}), got a list"],
    "unknown_top_key": [
        f"{{file}}:7:1: mailbox: unknown key (did you mean 'mailboxes'?); allowed keys: {_ALLOWED_TOP}"
    ],
    "unknown_server_key": [
        "{file}:4:5: smtp_servers.relay.hots: unknown key (did you mean 'host'?); "
        f"allowed keys: {_ALLOWED_SMTP}",
        "{file}:4:5: smtp_servers.relay.host: required key is missing",
    ],
    "missing_host": ["{file}:4:5: smtp_servers.relay.host: required key is missing"],
    "port_not_a_number": [
        "{file}:5:11: smtp_servers.relay.port: expected a port number 1-65535, got a string"
    ],
    "port_out_of_range": ["{file}:10:11: mailboxes.inbox.port: outside the port range 1-65535"],
    "tls_unknown": [
        "{file}:5:10: smtp_servers.relay.tls: expected one of none, starttls, tls, opportunistic "
        "(did you mean 'starttls'?)"
    ],
    "verify_string": [
        "{file}:5:13: smtp_servers.relay.verify: expected true or false, got a string"
    ],
    "ca_file_missing": [
        "{file}:5:14: smtp_servers.relay.ca_file: CA file {dir}/no-such-ca.pem does not exist"
    ],
    "ca_file_not_pem": ["{file}:10:14: mailboxes.inbox.ca_file: {not_pem}"],
    "host_with_port": [
        "{file}:4:11: smtp_servers.relay.host: put the port in 'port', not in the host"
    ],
    "password_and_password_file": [
        "{file}:7:20: smtp_servers.relay.password_file: "
        "give either password or password_file, not both"
    ],
    "password_without_username": [
        "{file}:5:15: smtp_servers.relay.password: a password needs a username"
    ],
    "username_without_password": [
        "{file}:5:15: smtp_servers.relay.username: a username needs password, password_file "
        "or oauth"
    ],
    "password_env_missing": [
        "{file}:11:15: mailboxes.inbox.password: environment variable IMAP_PASWORD is not set"
    ],
    "password_env_bad_reference": [
        "{file}:11:15: mailboxes.inbox.password: unterminated '${{' (write '$${{' for a literal '${{')"
    ],
    "password_file_missing": [
        "{file}:6:20: smtp_servers.relay.password_file: cannot read {secrets}/no-such-file: "
        "No such file or directory"
    ],
    "password_file_empty": [
        "{file}:11:20: mailboxes.inbox.password_file: {secrets}/empty is empty"
    ],
    "mailbox_missing_username": ["{file}:9:5: mailboxes.inbox.username: required key is missing"],
    "mailbox_missing_password": [
        "{file}:9:5: mailboxes.inbox: needs password, password_file or oauth"
    ],
    "junk_folders_not_a_list": [
        "{file}:12:19: mailboxes.inbox.junk_folders: expected a list of strings, got a string"
    ],
    "poll_interval_too_short": [
        "{file}:12:20: mailboxes.inbox.poll_interval: must be at least 10ms"
    ],
    "idle_not_boolean": [
        "{file}:12:11: mailboxes.inbox.idle: expected true or false, got an integer"
    ],
    "duration_without_unit": [f"{{file}}:23:15: probes[1].interval: {_DURATION_UNIT}"],
    "duration_zero": ["{file}:18:14: probes[0].timeout: a duration must be longer than zero"],
    "defaults_unknown_key": [
        "{file}:3:3: defaults.intreval: unknown key (did you mean 'interval'?); "
        "allowed keys: interval, timeout, jitter, dns_interval"
    ],
    "defaults_jitter_not_shorter": [
        "{file}:4:11: defaults.jitter: 10s is not shorter than the interval 10s"
    ],
    "section_wrong_type": ["{file}:3:3: smtp_servers: expected a mapping, got a list"],
    "duplicate_key": ["{file}:17:5: probes[0].from: duplicate key"],
    "expect_auth_bad": [
        "{file}:19:38: probes[0].expect_auth.dmark: unknown method (did you mean 'dmarc'?); "
        "expected one of spf, dkim, dmarc, arc",
        "{file}:19:56: probes[0].expect_auth.spf[1]: expected one of none, neutral, "
        "pass, fail, softfail, temperror, permerror, policy for spf",
    ],
    "expect_auth_without_authserv_id": [
        "{file}:18:18: probes[0].expect_auth: expect_auth needs mailboxes.inbox.authserv_id: "
        "only the receiver's Authentication-Results headers are believed"
    ],
    "policy_check_unknown": [
        "{file}:12:12: probes[0].check: expected one of open_relay, auth_requires_tls, "
        "sender_mismatch, smtp_smuggling (did you mean 'open_relay'?)",
        "{file}:17:25: probes[1].smuggling_variants: smuggling_variants needs check: smtp_smuggling",
    ],
    "policy_expect_bad": [
        "{file}:12:37: probes[0].expect.reject_at[1]: not an SMTP stage a refusal can come at "
        "(did you mean 'rcpt_to'?); expected one of banner, ehlo, starttls, auth, mail_from, "
        "rcpt_to, data",
        "{file}:12:57: probes[0].expect.codes[1]: not a refusal code: expected a 4xx or 5xx "
        "reply code like 550, or a class like 5xx or 55x",
        "{file}:12:62: probes[0].expect.codes[2]: not a refusal code: expected a 4xx or 5xx "
        "reply code like 550, or a class like 5xx or 55x",
        "{file}:12:75: probes[0].expect.when: unknown key; allowed keys: reject_at, codes",
    ],
    "policy_expect_not_with_check": [
        "{file}:13:13: probes[0].expect: expect does not go with check: auth_requires_tls "
        "(it expects its own refusal); only open_relay and sender_mismatch take one",
        "{file}:18:13: probes[1].expect: expect needs reject_at (the stage the refusal must "
        "come at)",
    ],
    "policy_expect_misplaced": [
        "{file}:18:25: probes[0].expect.reject_at: open_relay never logs in: a refusal at auth "
        "cannot come",
        "{file}:25:13: probes[1].expect: a reflector probe cannot have expect: it waits for a "
        "reply",
    ],
    "policy_check_needs": [
        "{file}:16:12: probes[0].check: sender_mismatch needs smtp_servers.mx.username: "
        "the check logs in and sends as another address",
        "{file}:21:12: probes[1].check: smtp_smuggling needs a mailbox: the smuggled message "
        "is looked for there",
    ],
    "dns_bad_nameserver": [
        "{file}:3:35: dns.nameservers[1]: 'resolver.example' is not an IP address: "
        "a nameserver is IP, IP:PORT or [IPV6]:PORT",
        "{file}:3:55: dns.nameservers[2]: outside the port range 1-65535: "
        "a nameserver is IP, IP:PORT or [IPV6]:PORT",
    ],
    "dns_checks_bad": [
        "{file}:14:19: probes[0].dns_checks.sending_ip: expected an IP address like "
        "203.0.113.7 or 2001:db8::7",
        "{file}:15:12: probes[0].dns_checks.sfp: unknown check (did you mean 'spf'?); "
        "expected one of mx, spf, dmarc, mta_sts, tls_rpt, dnsbl, fcrdns, or sending_ip or "
        "ca_file",
        "{file}:16:23: probes[0].dns_checks.dmarc.policy: expected one of none, quarantine, reject",
        "{file}:17:14: probes[0].dns_checks.dnsbl: dnsbl needs zones, like dnsbl: "
        "{{zones: [zen.example.org]}} (none by default: public blocklists have terms of use)",
        "{file}:22:19: probes[1].dns_interval: dns_interval needs dns_checks: it is how often "
        "they run",
    ],
    "probes_missing": ["{file}:2:1: probes: required key is missing"],
    "probes_not_a_list": ["{file}:13:3: probes: expected a list of probes, got a mapping"],
    "probes_empty": ["{file}:12:9: probes: no probes are configured; add at least one"],
    "probe_not_a_mapping": ["{file}:18:5: probes[1]: expected a mapping, got a string"],
    "probe_missing_to": ["{file}:13:5: probes[0].to: required key is missing"],
    "probe_unknown_key": [
        "{file}:18:5: probes[0].intervall: unknown key (did you mean 'interval'?); "
        f"allowed keys: {_ALLOWED_PROBE}"
    ],
    "probe_bad_name": [
        "{file}:13:11: probes[0].name: expected a probe name: 1-64 letters, digits, "
        "'.', '_' or '-', starting with a letter or digit"
    ],
    "probe_duplicate_name": ["{file}:18:11: probes[1].name: duplicate probe name (also probes[0])"],
    "probe_bad_address": [
        "{file}:17:9: probes[0].to: expected a mail address like probe@example.com "
        "(one @, no spaces, no <>)"
    ],
    "probe_unknown_server": ["{file}:14:11: probes[0].smtp: unknown server; did you mean 'relay'?"],
    "probe_unknown_mailbox": ["{file}:15:14: probes[0].mailbox: unknown mailbox (defined: inbox)"],
    "bounce_mailbox_unknown": [
        "{file}:16:21: probes[0].bounce_mailbox: unknown mailbox (defined: inbox)"
    ],
    "bounce_mailbox_without_mailbox": [
        "{file}:15:21: probes[0].bounce_mailbox: bounce_mailbox needs mailbox: "
        "the run waits for its message or its bounce"
    ],
    "probe_timeout_longer_than_interval": [
        "{file}:18:14: probes[0].timeout: 120s is longer than the interval 60s; runs would overlap"
    ],
    "probe_jitter_not_shorter": [
        "{file}:19:13: probes[0].jitter: 30s is not shorter than the interval 30s"
    ],
    "shared_mailbox_conflict": [
        "{file}:13:5: mailboxes.inbox-again: watches the same mailbox (host, port, username "
        "and folder) as mailboxes.inbox with different settings; probes watching one mailbox "
        "share one connection, so define it once"
    ],
    "token_secret_short": [
        "{file}:2:20: token_secret_file: {secrets}/short-token holds fewer than 16 bytes; "
        "at least 16 are needed (make one with: openssl rand -hex 32)"
    ],
    "token_secret_missing": [
        "{file}:2:20: token_secret_file: cannot read {secrets}/no-such-token: "
        "No such file or directory"
    ],
    "listen_bad": ["{file}:19:11: server.listen: expected a port number 1-65535"],
    "server_unknown_key": ["{file}:19:3: server.port: unknown key; allowed keys: listen"],
    # OAuth clients, presets, cleanup, reflector, routes
    "oauth_client_secret_and_file": [
        "{file}:8:25: oauth_clients.m365.client_secret_file: "
        "give either client_secret or client_secret_file, not both"
    ],
    "oauth_provider_unknown": [
        "{file}:4:15: oauth_clients.m365.provider: expected one of microsoft, google, generic "
        "(did you mean 'microsoft'?)"
    ],
    "oauth_key_of_another_provider": [
        "{file}:5:13: oauth_clients.workspace.tenant: not used with provider: google; "
        "only with provider: microsoft"
    ],
    "oauth_microsoft_incomplete": [
        "{file}:4:5: oauth_clients.m365.tenant: required with provider: microsoft",
        "{file}:4:5: oauth_clients.m365: provider microsoft needs client_secret, "
        "client_secret_file or certificate_file",
        "{file}:6:23: oauth_clients.m365.private_key_file: a private key needs certificate_file",
    ],
    "oauth_certificate_without_key": [
        "{file}:7:23: oauth_clients.m365.certificate_file: {secrets}/app-cert.pem holds no "
        "private key; give private_key_file"
    ],
    "oauth_certificate_file_missing": [
        "{file}:7:23: oauth_clients.m365.certificate_file: cannot read {dir}/no-such-cert.pem: "
        "No such file or directory"
    ],
    "oauth_google_installed_app_incomplete": [
        "{file}:4:5: oauth_clients.workspace.refresh_token: required for an installed app "
        "(client_id, client_secret, refresh_token)",
        "{file}:7:14: oauth_clients.workspace.subject: only used with service_account_file",
    ],
    "oauth_google_service_account_without_subject": [
        "{file}:4:5: oauth_clients.workspace.subject: required with service_account_file: "
        "the mailbox user the service account acts for (domain-wide delegation)",
        "{file}:6:20: oauth_clients.workspace.client_secret: not used with service_account_file: "
        "give a service account (service_account_file, subject) or an installed app "
        "(client_id, client_secret, refresh_token), not both",
    ],
    "oauth_service_account_file_not_json": [
        "{file}:5:27: oauth_clients.workspace.service_account_file: {secrets}/smtp-password is "
        'not a service account key file (JSON with "type": "service_account", client_email '
        "and private_key)"
    ],
    "oauth_generic_grant_needs": [
        "{file}:4:5: oauth_clients.idp: grant refresh_token needs refresh_token or "
        "refresh_token_file",
        "{file}:14:20: oauth_clients.idp2.refresh_token: only used with grant: refresh_token",
    ],
    "oauth_generic_http_token_url": [
        "{file}:5:16: oauth_clients.idp.token_url: use https://: over http:// the client's "
        "secret would cross the network in the clear (http:// is allowed to localhost only)"
    ],
    "oauth_command_and_provider": [
        "{file}:5:20: oauth_clients.idp.token_command: give either provider or token_command, "
        "not both",
        "{file}:14:15: oauth_clients.idp2.lifetime: not used with provider: generic; "
        "only with token_command",
    ],
    "oauth_command_bad": [
        "{file}:4:20: oauth_clients.unclosed.token_command: cannot split the command: "
        "no closing quotation",
        "{file}:6:20: oauth_clients.missing.token_command: the program {dir}/no-such-helper "
        "does not exist",
        "{file}:8:20: oauth_clients.not-executable.token_command: the program {secrets}/token "
        "is not executable",
        "{file}:10:5: oauth_clients.nothing: needs provider (microsoft, google or generic) "
        "or token_command",
    ],
    "oauth_secret_env_missing": [
        "{file}:7:20: oauth_clients.workspace.refresh_token: environment variable REFRESH_TOKNE "
        "is not set"
    ],
    "oauth_unknown_client": [
        "{file}:9:70: smtp_servers.m365.oauth: unknown OAuth client; did you mean 'm365'?"
    ],
    "oauth_and_password": [
        "{file}:9:41: smtp_servers.m365.oauth: oauth needs a username "
        "(the account the token is for)",
        "{file}:14:12: mailboxes.m365.oauth: give either oauth or a password, not both",
    ],
    "oauth_client_of_another_provider": [
        "{file}:11:70: mailboxes.m365.oauth: provider microsoft365 takes tokens of a provider: "
        "microsoft client; oauth_clients.workspace is provider: google"
    ],
    "preset_unknown": [
        "{file}:4:15: smtp_servers.m365.provider: expected one of microsoft365, google "
        "(did you mean 'microsoft365'?)"
    ],
    "cleanup_unknown": ["{file}:9:14: mailboxes.gmail.cleanup: expected one of expunge, trash"],
    "reflector_without_mailbox": [
        "{file}:12:16: probes[0].reflector: a reflector probe needs a mailbox: "
        "the reply is seen there"
    ],
    "route_unknown_references": [
        "{file}:11:22: routes.outbound.senders[0].smtp: unknown server; did you mean 'relay'?",
        "{file}:12:27: routes.outbound.mailboxes[0].mailbox: unknown mailbox (defined: inbox)",
    ],
    "route_name_taken": [
        "{file}:13:5: routes.out: senders[0] x mailboxes[0] makes the probe name "
        "'out-relay-to-inbox', which probes[0] has already",
        "{file}:13:5: routes.out: senders[1] x mailboxes[0] makes the probe name "
        "'out-relay-to-inbox', which probes[0] has already",
    ],
    "route_bad_names": [
        "{file}:13:5: routes['out bound']: a route name starts the names of its probes: "
        f"expected {_PROBE_NAME}",
        "{file}:16:5: routes.out: senders[0] x mailboxes[0] makes the probe name "
        "'out-a-server-with-a-rather-long-name-for-a-probe-name-part-to-inbox', "
        f"which is not {_PROBE_NAME}",
    ],
    "route_incomplete": [
        "{file}:9:15: routes.out.senders[0]: expected a mapping, got a string",
        "{file}:10:16: routes.out.mailboxes: a route needs at least one mailbox",
        "{file}:12:14: routes.out.timeout: 120s is longer than the interval 60s; "
        "runs would overlap",
    ],
    "routes_empty": ["{file}:2:1: probes: required key is missing"],
}

# A valid base document, for tests that vary one thing.
BASE = """\
smtp_servers:
  relay:
    host: smtp.example.com
    username: probe@example.com
    password: ${SMTP_PASSWORD}
mailboxes:
  inbox:
    host: imap.example.net
    username: probe@example.net
    password: ${IMAP_PASSWORD}
probes:
  - name: relay-to-inbox
    smtp: relay
    mailbox: inbox
    from: probe@example.com
    to: probe@example.net
"""


def _errors(
    text: str, environ: dict[str, str] | None = None, source: Path | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source=source, environ=ENVIRON if environ is None else environ)
    return list(caught.value.errors)


# ------------------------------------------------------------ bad configs


def test_every_bad_config_file_has_an_expected_error_and_every_entry_a_file() -> None:
    assert sorted(p.stem for p in BAD.glob("*.yml")) == sorted(BAD_CONFIGS)


@pytest.mark.parametrize("stem", sorted(BAD_CONFIGS))
def test_bad_config_reports_exactly_its_errors(stem: str) -> None:
    path = BAD / f"{stem}.yml"
    placeholders = {
        "file": str(path),
        "dir": str(BAD),
        "secrets": str(CONFIGS / "secrets"),
        "not_pem": ca_file_problem(BAD / "ca_file_not_pem.yml"),
    }
    expected = [line.format(**placeholders) for line in BAD_CONFIGS[stem]]
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENVIRON)
    assert list(caught.value.errors) == expected
    assert caught.value.source == path


def test_a_file_that_is_not_a_ca_bundle_is_refused_as_a_ca_file() -> None:
    """The ca_file_not_pem case really is a CA problem, whatever words tls.py uses for it."""
    problem = ca_file_problem(BAD / "ca_file_not_pem.yml")
    assert problem is not None
    assert problem.startswith(f"CA file {BAD / 'ca_file_not_pem.yml'}")


def test_every_bad_config_holds_the_canary_password_written_in_the_file() -> None:
    """So the test below proves something for every file, whatever its mistake."""
    for path in sorted(BAD.glob("*.yml")):
        assert CANARY in path.read_text(encoding="utf-8"), path.name


def test_bad_configs_never_show_a_secret() -> None:
    for path in sorted(BAD.glob("*.yml")):
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ=ENVIRON)
        shown = str(caught.value) + repr(caught.value) + "".join(caught.value.errors)
        for secret in SECRETS:
            assert secret not in shown, path.name


# --------------------------------------------------- no value is ever echoed

# Invalid almost everywhere (whitespace, angle brackets, two @, no unit) and
# unlike any name, choice or path an error may show.
ECHO = "canary <value> @@ 9x"


def _echo_cases() -> list[tuple[str, str, bool]]:
    """(key, BASE with ECHO written into that key, whether that key must be reported).

    Keys where any string is valid are written too: their value must not
    leak into the report of the other error every case has. File paths
    (password_file, ca_file, token_secret_file) are left out on purpose: an
    error shows the path it could not read, never what the file holds.
    """
    v = f'"{ECHO}"'
    smtp, imap = "    host: smtp.example.com\n", "    host: imap.example.net\n"

    def after(anchor: str, line: str) -> str:
        return BASE.replace(anchor, anchor + line, 1)

    def swap(old: str, new: str) -> str:
        return BASE.replace(old, new, 1)

    return [
        ("smtp_servers.relay.host", swap("host: smtp.example.com", f"host: {v}"), True),
        ("smtp_servers.relay.tls", after(smtp, f"    tls: {v}\n"), True),
        ("smtp_servers.relay.port", after(smtp, f"    port: {v}\n"), True),
        ("smtp_servers.relay.verify", after(smtp, f"    verify: {v}\n"), True),
        ("smtp_servers.relay.helo", after(smtp, f"    helo: {v}\n"), True),
        ("smtp_servers.relay.timeout", after(smtp, f"    timeout: {v}\n"), True),
        (
            "smtp_servers.relay.username",
            swap("username: probe@example.com", f"username: {v}"),
            False,
        ),
        (
            "smtp_servers.relay.password",
            swap("password: ${SMTP_PASSWORD}", f"password: {v}"),
            False,
        ),
        (
            "smtp_servers.relay.password",
            swap("password: ${SMTP_PASSWORD}", f'password: "{ECHO} ${{UNSET_VARIABLE}}"'),
            True,
        ),
        ("mailboxes.inbox.host", swap("host: imap.example.net", f"host: {v}"), True),
        ("mailboxes.inbox.folder", after(imap, f"    folder: {v}\n"), False),
        ("mailboxes.inbox.junk_folders[0]", after(imap, f"    junk_folders: [{v}]\n"), False),
        ("mailboxes.inbox.idle", after(imap, f"    idle: {v}\n"), True),
        ("mailboxes.inbox.poll_interval", after(imap, f"    poll_interval: {v}\n"), True),
        ("probes[0].name", swap("name: relay-to-inbox", f"name: {v}"), True),
        ("probes[0].smtp", swap("smtp: relay", f"smtp: {v}"), True),
        ("probes[0].mailbox", swap("mailbox: inbox", f"mailbox: {v}"), True),
        ("probes[0].from", swap("from: probe@example.com", f"from: {v}"), True),
        ("probes[0].to", swap("to: probe@example.net", f"to: {v}"), True),
        ("probes[0].interval", BASE + f"    interval: {v}\n", True),
        ("probes[0].timeout", BASE + f"    timeout: {v}\n", True),
        ("probes[0].jitter", BASE + f"    jitter: {v}\n", True),
        ("server.listen", BASE + f"server:\n  listen: {v}\n", True),
        ("defaults.interval", f"defaults:\n  interval: {v}\n" + BASE, True),
    ]


@pytest.mark.parametrize(("key", "text", "reported"), _echo_cases())
def test_a_value_in_any_key_is_never_echoed_in_an_error(
    key: str, text: str, reported: bool
) -> None:
    """ECHO written into each key in turn: an error may point at it, never show it."""
    assert ECHO in text
    errors = _errors(text + "not_a_section: 1\n")
    assert not any(ECHO in error for error in errors), errors
    assert any(f": {key}: " in error for error in errors) == reported, errors
    assert errors[-1].endswith(f"not_a_section: unknown key; allowed keys: {_ALLOWED_TOP}")


# ------------------------------------------------------- all errors at once


def test_all_errors_are_reported_at_once_in_document_order() -> None:
    """Probes come before the servers here: order follows the file, not the validation."""
    text = """\
probes:
  - name: a
    smtp: relya
    from: probe@example.com
    to: not-an-address
    interval: "30"
  - name: a
    smtp: relay
    from: probe@example.com
    to: probe@example.net
    timeout: 2m
smtp_servers:
  relay:
    host: smtp.example.com
    port: abc
    tls: startls
    verify: "yes"
defaults:
  jitter: 5
server:
  listen: ":0"
"""
    assert _errors(text) == [
        "<config>:3:11: probes[0].smtp: unknown server; did you mean 'relay'?",
        "<config>:5:9: probes[0].to: expected a mail address like probe@example.com "
        "(one @, no spaces, no <>)",
        f"<config>:6:15: probes[0].interval: {_DURATION_UNIT}",
        "<config>:7:11: probes[1].name: duplicate probe name (also probes[0])",
        "<config>:11:14: probes[1].timeout: 120s is longer than the interval 60s; "
        "runs would overlap",
        "<config>:15:11: smtp_servers.relay.port: expected a port number 1-65535, got a string",
        "<config>:16:10: smtp_servers.relay.tls: expected one of none, starttls, tls, opportunistic "
        "(did you mean 'starttls'?)",
        "<config>:17:13: smtp_servers.relay.verify: expected true or false, got a string",
        f"<config>:19:11: defaults.jitter: {_DURATION_UNIT}",
        "<config>:21:11: server.listen: outside the port range 1-65535",
    ]


def test_rules_across_keys_are_checked_even_when_a_key_beside_them_is_bad() -> None:
    """A bad port does not hide that the server's username has no password."""
    text = BASE.replace(
        "    username: probe@example.com\n    password: ${SMTP_PASSWORD}\n",
        "    username: probe@example.com\n    port: x\n",
    )
    assert _errors(text) == [
        "<config>:4:15: smtp_servers.relay.username: a username needs password, password_file "
        "or oauth",
        "<config>:5:11: smtp_servers.relay.port: expected a port number 1-65535, got a string",
    ]


def test_pydantic_tags_are_no_part_of_a_location() -> None:
    """Unions and validators add parts like ``function-after[...]`` to pydantic's locations."""
    data = {"smtp_servers": {"relay": {"port": "x"}}}
    tagged = ("smtp_servers", "function-after[check(), dict]", "relay", "int", "port")
    assert messages._in_document(tagged, data) == ("smtp_servers", "relay", "port")
    assert messages._in_document(("smtp_servers", "relay", "host"), data) == (
        "smtp_servers",
        "relay",
        "host",
    )


def test_errors_within_one_flow_mapping_follow_column_order() -> None:
    text = BASE.replace(
        "  relay:\n    host: smtp.example.com\n",
        "  relay: {verify: 1, host: '', tls: x, port: 0,\n"
        "          username: probe@example.com, password: p}\n"
        "  other:\n    host: smtp.example.com\n",
    ).replace("    username: probe@example.com\n    password: ${SMTP_PASSWORD}\n", "", 1)
    assert [error.split(": ")[1] for error in _errors(text)] == [
        "smtp_servers.relay.verify",
        "smtp_servers.relay.host",
        "smtp_servers.relay.tls",
        "smtp_servers.relay.port",
    ]
    assert [error.split(":")[2] for error in _errors(text)] == ["19", "28", "37", "46"]


def test_config_error_str_is_one_readable_report_headed_by_the_file(tmp_path: Path) -> None:
    path = tmp_path / "probe.yml"
    path.write_text(BASE.replace("relay-to-inbox", "bad name").replace("smtp: relay", "smtp: x"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENVIRON)
    assert str(caught.value) == (
        f"{path}: 2 errors:\n"
        f"  - {path}:12:11: probes[0].name: expected a probe name: 1-64 letters, digits, "
        "'.', '_' or '-', starting with a letter or digit\n"
        f"  - {path}:13:11: probes[0].smtp: unknown server (defined: relay)"
    )


def test_config_error_str_says_one_error_in_the_singular() -> None:
    assert str(ConfigError(["<config>:1:1: probes: required key is missing"])) == (
        "<config>: 1 error:\n  - <config>:1:1: probes: required key is missing"
    )


def test_a_missing_config_file_is_one_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == (f"{path}: cannot read: No such file or directory",)


def test_a_directory_as_config_file_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.errors == (f"{tmp_path}: cannot read: Is a directory",)


def test_a_config_file_that_is_not_utf8_is_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"probes: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.errors == (f"{path}:2: not UTF-8 text",)


def test_yaml_syntax_error_without_a_file_is_located_in_config() -> None:
    assert _errors("probes:\n  - name: a\n\tsmtp: b\n") == [
        "<config>:3:1: invalid YAML: while scanning for the next token: "
        "found character '\\t' that cannot start any token"
    ]


def test_a_yaml_syntax_error_does_not_quote_the_line_it_is_on() -> None:
    """PyYAML's own message quotes the offending line, which may hold a password."""
    text = 'mailboxes:\n  inbox: {password: "hunter2-typed-in, username: x\n'
    (error,) = _errors(text)
    assert "hunter2" not in error
    assert error == (
        "<config>:3:1: invalid YAML: while scanning a quoted scalar started at line 2, "
        "column 21: found unexpected end of stream"
    )


def test_more_than_one_yaml_document_is_an_error() -> None:
    (error,) = _errors(BASE + "---\n" + BASE)
    assert error == (
        "<config>:17:1: invalid YAML: expected a single document in the stream "
        "started at line 1, column 1: but found another document"
    )


def test_a_control_character_is_a_located_yaml_error() -> None:
    assert _errors("probes:\n  - a\x00b\n") == [
        "<config>:2:6: invalid YAML: character #x0000 is not allowed"
    ]


def test_a_document_nested_too_deeply_is_an_error_not_a_crash() -> None:
    assert _errors("probes: " + "[" * 5000 + "]" * 5000) == [
        "<config>: invalid YAML: nested too deeply"
    ]


def test_an_alias_to_the_value_that_contains_it_is_an_error_not_a_crash() -> None:
    """PyYAML keeps no position for an alias: the error points at the value it names."""
    assert _errors(BASE + "    junk: &loop [*loop]\n") == [
        f"<config>:17:5: probes[0].junk: unknown key; allowed keys: {_ALLOWED_PROBE}",
        "<config>:17:11: probes[0].junk[0]: an alias cannot refer to the value that contains it",
    ]


def test_an_alias_used_many_times_is_read_once() -> None:
    """A "billion laughs" document: nine levels of ten aliases each would be 10**9 strings."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)
    ]
    text = "defaults:\n" + "".join(f"  {level}\n" for level in levels) + BASE
    errors = _errors(text)
    assert len(errors) == 10
    assert all(": defaults.a" in error and "unknown key" in error for error in errors)


def test_an_explicit_tag_that_does_not_fit_its_value_is_an_error() -> None:
    assert _errors(BASE + "    interval: !!int x\n") == [
        "<config>:17:15: probes[0].interval: cannot read this value as tag:yaml.org,2002:int"
    ]


def test_unknown_yaml_tag_is_an_error_at_its_value() -> None:
    assert _errors(BASE.replace("password: ${SMTP_PASSWORD}", "password: !env SMTP")) == [
        "<config>:5:15: smtp_servers.relay.password: "
        "could not determine a constructor for the tag '!env'"
    ]


def test_a_key_that_is_not_a_string_is_an_error() -> None:
    assert _errors(BASE.replace("smtp_servers:\n", "smtp_servers:\n  25: {host: x}\n")) == [
        "<config>:2:3: smtp_servers: keys must be non-empty strings, got an integer"
    ]


def test_merging_something_that_is_not_a_mapping_is_an_error() -> None:
    text = BASE.replace("  relay:\n", "  relay:\n    <<: [x]\n")
    assert _errors(text) == [
        "<config>:3:10: smtp_servers.relay: '<<' must merge a mapping or a list of them"
    ]


def test_a_reference_into_a_malformed_section_is_not_reported_again() -> None:
    """The one real error (mailboxes is not a mapping) is not buried under unknown references."""
    text = BASE.replace("mailboxes:\n  inbox:\n", "mailboxes:\n- inbox:\n")
    assert _errors(text) == ["<config>:7:1: mailboxes: expected a mapping, got a list"]


def test_a_reference_to_a_definition_with_errors_reports_only_the_definition() -> None:
    assert _errors(BASE.replace("host: smtp.example.com", "host: ''")) == [
        "<config>:3:11: smtp_servers.relay.host: must not be empty"
    ]


def test_a_dangling_reference_is_reported_beside_errors_in_other_sections() -> None:
    text = BASE.replace("host: smtp.example.com", "host: ''").replace("smtp: relay", "smtp: zzz")
    assert _errors(text) == [
        "<config>:3:11: smtp_servers.relay.host: must not be empty",
        "<config>:13:11: probes[0].smtp: unknown server (defined: relay)",
    ]


def test_unknown_reference_without_close_match_lists_the_defined_names() -> None:
    assert _errors(BASE.replace("smtp: relay", "smtp: zzz")) == [
        "<config>:13:11: probes[0].smtp: unknown server (defined: relay)"
    ]


def test_unknown_reference_when_the_section_is_absent_says_so() -> None:
    text = BASE.replace("mailboxes:\n  inbox:\n", "unused:\n  inbox:\n")
    assert (
        _errors(text)[-1]
        == "<config>:14:14: probes[0].mailbox: unknown mailbox (mailboxes defines none)"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", "expected a duration like 500ms, 30s, 5m or 1h, got a boolean"),
        ("[30s]", "expected a duration like 500ms, 30s, 5m or 1h, got a list"),
        ("''", "expected a duration like 500ms, 30s, 5m or 1h"),
        ("30 sec", "expected a duration like 500ms, 30s, 5m or 1h"),
        ("-5s", "expected a duration like 500ms, 30s, 5m or 1h"),
        ("1.5", _DURATION_UNIT),
        ("30", _DURATION_UNIT),
        ("0ms", "a duration must be longer than zero"),
        ("745h", "a duration can be at most 744h (31 days)"),
    ],
)
def test_bad_interval_values(value: str, message: str) -> None:
    assert _errors(BASE + f"    interval: {value}\n") == [
        f"<config>:17:15: probes[0].interval: {message}"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "outside the port range 1-65535"),
        ("65536", "outside the port range 1-65535"),
        ("true", "expected a port number 1-65535, got a boolean"),
        ("'587'", "expected a port number 1-65535, got a string"),
        ("587.0", "expected a port number 1-65535, got a number"),
        ("~", "expected a port number 1-65535, got nothing (null)"),
    ],
)
def test_bad_port_values(value: str, message: str) -> None:
    text = BASE.replace("host: smtp.example.com", f"host: smtp.example.com\n    port: {value}")
    assert _errors(text) == [f"<config>:4:11: smtp_servers.relay.port: {message}"]


@pytest.mark.parametrize(
    "address",
    ["probe", "@example.net", "probe@", "a@b@example.net", "probe @example.net", "'a\\r\\n@b'"],
)
def test_addresses_must_be_bare_local_at_domain(address: str) -> None:
    text = BASE.replace("to: probe@example.net", f'to: "{address}"')
    assert _errors(text) == [
        "<config>:16:9: probes[0].to: expected a mail address like probe@example.com "
        "(one @, no spaces, no <>)"
    ]


@pytest.mark.parametrize(
    "name",
    ["-starts-with-dash", ".dot", "has space", "x" * 65, "a/b", "naïve", "trailing\\n"],
)
def test_probe_names_must_fit_a_label_and_a_subject(name: str) -> None:
    (error,) = _errors(BASE.replace("name: relay-to-inbox", f'name: "{name}"'))
    assert error.startswith("<config>:12:11: probes[0].name: expected a probe name: ")


@pytest.mark.parametrize("name", ["a", "A1", "relay_to.inbox-2", "9" * 64])
def test_probe_names_that_are_allowed(name: str) -> None:
    config = parse_config(BASE.replace("name: relay-to-inbox", f'name: "{name}"'), environ=ENVIRON)
    assert config.probes[0].name == name


def test_a_probe_name_that_yaml_reads_as_a_number_is_a_type_error() -> None:
    assert _errors(BASE.replace("name: relay-to-inbox", "name: 2024")) == [
        "<config>:12:11: probes[0].name: expected a string, got an integer"
    ]


def test_a_key_given_as_null_is_an_error_not_its_default() -> None:
    """``helo:`` with nothing after it is a mistake, not "use the default"."""
    text = BASE.replace("host: smtp.example.com", "host: smtp.example.com\n    helo:")
    assert _errors(text) == [
        "<config>:4:10: smtp_servers.relay.helo: expected a host name, got nothing (null)"
    ]


# ----------------------------------------------------------- good config


GOOD_OAUTH: dict[str, OAuthClient] = {
    "m365": OAuthClient(
        "m365",
        MicrosoftClient(
            tenant="contoso.onmicrosoft.com",
            client_id="11111111-2222-3333-4444-555555555555",
            client_secret=Secret("hunter2-client-secret-file"),
        ),
    ),
    "m365-cert": OAuthClient(
        "m365-cert",
        MicrosoftClient(
            tenant="7f8e9d0c-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
            client_id="11111111-2222-3333-4444-555555555555",
            certificate_file=CONFIGS / "secrets" / "app-cert.pem",
            private_key_file=CONFIGS / "secrets" / "app-key.pem",
            authority="https://login.microsoftonline.us",
        ),
        timeout=5.0,
    ),
    "workspace": OAuthClient(
        "workspace",
        GoogleClient(
            service_account_file=CONFIGS / "secrets" / "service-account.json",
            subject="probe@example.com",
        ),
    ),
    "installed-app": OAuthClient(
        "installed-app",
        GoogleClient(
            client_id="1234-abc.apps.googleusercontent.com",
            client_secret=Secret(CLIENT_SECRET),
            refresh_token=Secret(REFRESH_TOKEN),
        ),
    ),
    "idp": OAuthClient(
        "idp",
        GenericClient(
            token_url="https://idp.example.com/oauth2/token",  # noqa: S106 - a URL
            client_id="smtp-probe",
            grant=Grant.REFRESH_TOKEN,
            refresh_token=Secret(f"pre-{REFRESH_TOKEN}"),
            scope="mail.send mail.read",
        ),
    ),
    "helper": OAuthClient(
        "helper",
        CommandClient(
            command=(str(CONFIGS / "secrets" / "oauth2-helper"), "--account", "probe one"),
            lifetime=600.0,
        ),
    ),
}


def _good_expected(oauth: Mapping[str, TokenCache]) -> Config:
    """What good.yml says, spelt out; its token caches are ``oauth`` (live objects: by identity)."""
    smtp_password = Secret("hunter2-from-file")
    imap_password = Secret(IMAP_PASSWORD)
    relay = SmtpServer(
        host="smtp.example.com",
        port=587,
        tls=TlsMode.STARTTLS,
        username="probe@example.com",
        password=smtp_password,
        helo="probe.example.com",
        timeout=20.0,
    )
    submissions = SmtpServer(
        host="smtp.example.com",
        port=465,
        tls=TlsMode.TLS,
        username="probe@example.com",
        password=Secret(f"pre-{SMTP_PASSWORD}-${{literal}}"),
    )
    unverified = replace(submissions, tls_settings=TlsSettings(verify=False))
    mx = SmtpServer(host="2001:db8::25", port=25, tls=TlsMode.NONE)
    gmail_smtp = SmtpServer(
        host="smtp.gmail.com",
        port=465,
        tls=TlsMode.TLS,
        username="probe@example.com",
        oauth=oauth["workspace"],
    )
    inbox = Mailbox(
        host="imap.example.net", port=993, username="probe@example.net", password=imap_password
    )
    plain = Mailbox(
        host="imap.example.net",
        port=143,
        username="probe@example.net",
        password=imap_password,
        tls=TlsMode.STARTTLS,
        folder="Probes",
        junk_folders=(),
        idle=False,
        poll_interval=0.25,
        timeout=10.0,
    )
    m365 = Mailbox(
        host="outlook.office365.com", port=993, username="probe@contoso.com", oauth=oauth["m365"]
    )
    gmail = Mailbox(
        host="imap.example.org",
        port=993,
        username="probe@example.com",
        oauth=oauth["workspace"],
        cleanup=Cleanup.TRASH,
    )
    from_, to = "probe@example.com", "probe@example.net"
    outbound = [
        (f"outbound-{smtp_name}-to-{mailbox_name}", smtp, mailbox, rcpt)
        for smtp_name, smtp in (("relay", relay), ("gmail", gmail_smtp))
        for mailbox_name, mailbox, rcpt in (
            ("m365", m365, "probe@contoso.com"),
            ("gmail", gmail, "probe@example.com"),
        )
    ]
    return Config(
        probes=(
            ScheduledProbe(ProbeSpec("relay-to-inbox", relay, from_, to, inbox, 90.0), 120.0, 10.0),
            ScheduledProbe(
                ProbeSpec("implicit.tls_to-plain", submissions, from_, to, plain, 25.0), 30.0, 10.0
            ),
            ScheduledProbe(
                ProbeSpec("unverified-to-inbox", unverified, from_, to, inbox, 10.0), 10.0, 5.0
            ),
            ScheduledProbe(
                ProbeSpec("mx-submit-only", mx, from_, "postmaster@example.net", None, 300.0),
                300.0,
                0.0,
            ),
            ScheduledProbe(
                ProbeSpec(
                    "via-autoreply",
                    relay,
                    from_,
                    "autoreply@elsewhere.example",
                    inbox,
                    90.0,
                    reflector=True,
                ),
                120.0,
                10.0,
            ),
            *(
                ScheduledProbe(ProbeSpec(name, smtp, from_, rcpt, mailbox, 90.0), 300.0, 0.0)
                for name, smtp, mailbox, rcpt in outbound
            ),
        ),
        server=ServerSettings("::1", 9100),
        token_secret=Secret("0123456789abcdef0123456789abcdef"),
        source=CONFIGS / "good.yml",
        oauth_clients=oauth,
        oauth_settings=GOOD_OAUTH,
    )


def _load_good() -> Config:
    return load_config(CONFIGS / "good.yml", environ=ENVIRON)


def test_good_config_becomes_exactly_the_expected_values() -> None:
    config = _load_good()
    assert config == _good_expected(config.oauth_clients)


def test_good_config_loads_the_same_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative secret paths are relative to the config file, not to where the daemon runs."""
    monkeypatch.chdir(tmp_path)
    config = _load_good()
    assert config == _good_expected(config.oauth_clients)


def test_each_oauth_client_is_one_token_source_shared_by_all_that_name_it() -> None:
    config = _load_good()
    assert set(config.oauth_clients) == set(GOOD_OAUTH)
    by_name = {p.name: p.spec for p in config.probes}
    m365 = config.oauth_clients["m365"]
    workspace = config.oauth_clients["workspace"]
    assert len({id(source) for source in config.oauth_clients.values()}) == len(GOOD_OAUTH)
    assert isinstance(m365, TokenCache)
    assert m365.client == "m365"
    # smtp_servers.gmail and mailboxes.gmail name one client: one object, every probe.
    for name in ("outbound-gmail-to-m365", "outbound-gmail-to-gmail"):
        assert by_name[name].smtp.oauth is workspace
    for name in ("outbound-relay-to-m365", "outbound-gmail-to-m365"):
        mailbox = by_name[name].mailbox
        assert mailbox is not None
        assert mailbox.oauth is m365
    assert by_name["relay-to-inbox"].smtp.oauth is None


def test_a_reload_keeps_the_token_sources_of_unchanged_clients_only() -> None:
    first = _load_good()
    second = keep_unchanged_oauth_clients(first, _load_good())
    assert second == first
    assert hash(second) == hash(first)
    rotated = keep_unchanged_oauth_clients(
        second, load_config(CONFIGS / "good.yml", environ={**ENVIRON, "CLIENT_SECRET": "rotated"})
    )
    kept = {name for name in GOOD_OAUTH if rotated.oauth_clients[name] is first.oauth_clients[name]}
    assert kept == set(GOOD_OAUTH) - {"installed-app"}
    assert rotated != first


def test_two_loads_without_the_previous_config_have_their_own_token_sources() -> None:
    """A token cache is a live object, equal only to itself.

    A config given no previous one starts with empty caches, and differs
    from one whose caches may already hold tokens.
    """
    first, second = _load_good(), _load_good()
    assert first.oauth_settings == second.oauth_settings
    assert all(first.oauth_clients[n] is not second.oauth_clients[n] for n in GOOD_OAUTH)
    assert first != second


def test_two_loads_of_a_file_without_oauth_are_equal_and_hash_alike() -> None:
    first = parse_config(BASE, environ=ENVIRON)
    second = parse_config(BASE, environ=ENVIRON)
    assert first == second
    assert hash(first) == hash(second)


def test_a_changed_password_makes_the_configs_unequal() -> None:
    first = _load_good()
    second = keep_unchanged_oauth_clients(
        first, load_config(CONFIGS / "good.yml", environ={**ENVIRON, "IMAP_PASSWORD": "rotated"})
    )
    assert first != second


def test_config_is_frozen_all_the_way_down() -> None:
    config = load_config(CONFIGS / "good.yml", environ=ENVIRON)
    assert isinstance(config.probes, tuple)
    with pytest.raises(FrozenInstanceError):
        config.probes[0].interval = 1.0  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        config.server = ServerSettings()  # type: ignore[misc]


def test_probe_finds_a_probe_by_name() -> None:
    config = load_config(CONFIGS / "good.yml", environ=ENVIRON)
    found = config.probe("mx-submit-only")
    assert found is not None
    assert found.spec.smtp.host == "2001:db8::25"
    assert config.probe("no-such-probe") is None


def test_mailboxes_lists_each_watched_mailbox_once_in_order_of_first_use() -> None:
    config = load_config(CONFIGS / "good.yml", environ=ENVIRON)
    assert [(m.host, m.folder) for m in config.mailboxes] == [
        ("imap.example.net", "INBOX"),
        ("imap.example.net", "Probes"),
        ("outlook.office365.com", "INBOX"),
        ("imap.example.org", "INBOX"),
    ]


def test_identical_definitions_of_one_mailbox_are_one_mailbox() -> None:
    text = BASE.replace(
        "probes:\n",
        "  inbox-again:\n    host: imap.example.net\n    username: probe@example.net\n"
        "    password: ${IMAP_PASSWORD}\nprobes:\n",
    ) + (
        "  - name: second\n    smtp: relay\n    mailbox: inbox-again\n"
        "    from: probe@example.com\n    to: probe@example.net\n"
    )
    config = parse_config(text, environ=ENVIRON)
    assert len(config.probes) == 2
    assert len(config.mailboxes) == 1


def test_built_in_defaults_fit_the_probe() -> None:
    """60s interval, 5s jitter, and the 120s default timeout capped at the interval."""
    (probe,) = parse_config(BASE, environ=ENVIRON).probes
    assert (probe.interval, probe.spec.timeout, probe.jitter) == (60.0, 60.0, 5.0)


def test_inherited_timeout_and_jitter_are_capped_by_a_short_interval() -> None:
    (probe,) = parse_config(BASE + "    interval: 4s\n", environ=ENVIRON).probes
    assert (probe.interval, probe.spec.timeout, probe.jitter) == (4.0, 4.0, 2.0)


def test_a_timeout_equal_to_the_interval_is_allowed() -> None:
    (probe,) = parse_config(BASE + "    interval: 1m\n    timeout: 60s\n", environ=ENVIRON).probes
    assert probe.spec.timeout == 60.0


def test_defaults_apply_to_probes_without_their_own_values() -> None:
    text = "defaults: {interval: 10m, timeout: 3m, jitter: 30s}\n" + BASE
    (probe,) = parse_config(text, environ=ENVIRON).probes
    assert (probe.interval, probe.spec.timeout, probe.jitter) == (600.0, 180.0, 30.0)


def test_empty_sections_read_as_empty() -> None:
    """A section whose entries are all commented out is empty, not a type error."""
    text = """\
defaults:
mailboxes:
#  inbox: ...
server:
smtp_servers:
  relay: {host: smtp.example.com}
probes:
  - {name: submit-only, smtp: relay, from: probe@example.com, to: probe@example.net}
"""
    config = parse_config(text, environ={})
    assert config.server == ServerSettings("", 10587)
    assert config.mailboxes == ()
    assert config.probes[0].interval == 60.0


@pytest.mark.parametrize(
    ("tls", "smtp_port", "imap_port"),
    [("none", 25, 143), ("starttls", 587, 143), ("tls", 465, 993)],
)
def test_ports_default_by_tls_mode(tls: str, smtp_port: int, imap_port: int) -> None:
    text = BASE.replace("host: smtp.example.com", f"host: smtp.example.com\n    tls: {tls}")
    text = text.replace("host: imap.example.net", f"host: imap.example.net\n    tls: {tls}")
    spec = parse_config(text, environ=ENVIRON).probes[0].spec
    assert spec.mailbox is not None
    assert (spec.smtp.port, spec.mailbox.port) == (smtp_port, imap_port)


def test_absent_junk_folders_means_discover_and_empty_list_means_none() -> None:
    discover = parse_config(BASE, environ=ENVIRON).mailboxes[0]
    none = parse_config(
        BASE.replace("host: imap.example.net", "host: imap.example.net\n    junk_folders: []"),
        environ=ENVIRON,
    ).mailboxes[0]
    assert discover.junk_folders is None
    assert none.junk_folders == ()


def test_an_smtp_server_without_login_has_no_username_and_no_password() -> None:
    text = BASE.replace("    username: probe@example.com\n    password: ${SMTP_PASSWORD}\n", "")
    smtp = parse_config(text, environ=ENVIRON).probes[0].spec.smtp
    assert (smtp.username, smtp.password) == (None, None)


def test_verify_is_on_unless_switched_off() -> None:
    smtp = parse_config(BASE, environ=ENVIRON).probes[0].spec.smtp
    assert smtp.tls_settings == TlsSettings(verify=True, ca_file=None)


def test_yaml_merge_keys_are_honoured_and_may_be_overridden() -> None:
    text = BASE.replace(
        "smtp_servers:\n  relay:\n    host: smtp.example.com\n",
        "smtp_servers:\n"
        "  base: &base {host: smtp.example.com, port: 2525, tls: none}\n"
        "  relay:\n"
        "    <<: *base\n"
        "    port: 2526\n",
    )
    smtp = parse_config(text, environ=ENVIRON).probes[0].spec.smtp
    assert (smtp.host, smtp.port, smtp.tls) == ("smtp.example.com", 2526, TlsMode.NONE)


def test_a_key_written_twice_is_an_error_but_a_merged_key_may_be_overridden() -> None:
    text = BASE.replace(
        "smtp_servers:\n  relay:\n    host: smtp.example.com\n",
        "smtp_servers:\n"
        "  base: &base {host: smtp.example.com, port: 2525}\n"
        "  relay:\n"
        "    <<: *base\n"
        "    port: 2526\n"
        "    port: 2527\n",
    )
    assert _errors(text) == ["<config>:6:5: smtp_servers.relay.port: duplicate key"]


# ---------------------------------------------------------------- secrets


def test_passwords_are_secrets_and_repr_of_config_shows_none_of_them() -> None:
    config = load_config(CONFIGS / "good.yml", environ=ENVIRON)
    spec = config.probes[0].spec
    assert isinstance(spec.smtp.password, Secret)
    assert spec.mailbox is not None
    assert spec.mailbox.password is not None
    assert spec.mailbox.password.reveal() == IMAP_PASSWORD
    shown = repr(config) + str(config) + repr(config.mailboxes)
    for secret in SECRETS:
        assert secret not in shown
    assert "<secret>" in shown


def test_errors_never_show_a_secret_even_when_it_lands_in_the_wrong_place(
    tmp_path: Path,
) -> None:
    """A mis-indented password, a password of the wrong type, bad references around secrets."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("hunter2-in-a-file\n")
    text = f"""\
token_secret_file: {secret_file}
smtp_servers:
  relay:
    host: smtp.example.com
    username: probe@example.com
    port: hunter2-as-port
  password: hunter2-misindented
mailboxes:
  inbox:
    host: imap.example.net
    username: probe@example.net
    password: 123456789
    ca_file: {secret_file}
  other:
    host: imap.example.net
    username: probe@example.net
    password: "hunter2-${{UNSET}}-hunter2-${{bad name}}"
  third:
    host: imap.example.net
    username: probe@example.net
    password: [hunter2-in-a-list]
    password_file: {secret_file}
probes:
  - name: x
    smtp: relay
    from: a@b
    to: c@d
    password: hunter2-in-a-probe
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    shown = str(caught.value) + repr(caught.value) + "".join(caught.value.errors)
    for secret in ("hunter2", "123456789"):
        assert secret not in shown
    assert len(caught.value.errors) == 10


# ------------------------------------------------------ ${VAR} expansion


@pytest.mark.parametrize(
    ("written", "environ", "password"),
    [
        ("${A}", {"A": "alpha"}, "alpha"),
        ("pre${A}post", {"A": "alpha"}, "prealphapost"),
        ("${A}${B_2}", {"A": "alpha", "B_2": "beta"}, "alphabeta"),
        ("$${A}", {}, "${A}"),
        ("a$${b}c", {}, "a${b}c"),
        ("cost$5", {}, "cost$5"),
        ("$", {}, "$"),
        ("{A}", {}, "{A}"),
        ("${A}", {"A": "${B}"}, "${B}"),
    ],
)
def test_password_expands_environment_variables(
    written: str, environ: dict[str, str], password: str
) -> None:
    text = BASE.replace("password: ${IMAP_PASSWORD}", f'password: "{written}"')
    mailbox = parse_config(text, environ={"SMTP_PASSWORD": "s", **environ}).mailboxes[0]
    assert mailbox.password is not None
    assert mailbox.password.reveal() == password


def test_every_missing_variable_is_reported() -> None:
    text = BASE.replace("${IMAP_PASSWORD}", '"${ONE}-${TWO}"')
    assert _errors(text, environ={"SMTP_PASSWORD": "s"}) == [
        "<config>:10:15: mailboxes.inbox.password: environment variable ONE is not set",
        "<config>:10:15: mailboxes.inbox.password: environment variable TWO is not set",
    ]


def test_a_variable_set_to_empty_gives_an_empty_password_error() -> None:
    assert _errors(BASE, environ={"SMTP_PASSWORD": "s", "IMAP_PASSWORD": ""}) == [
        "<config>:10:15: mailboxes.inbox.password: must not be empty"
    ]


def test_a_reference_that_is_not_a_variable_name_is_an_error() -> None:
    assert _errors(BASE.replace("${IMAP_PASSWORD}", '"${1X}"')) == [
        "<config>:10:15: mailboxes.inbox.password: '${' must be followed by a variable name and '}' "
        "(write '$${' for a literal '${')"
    ]


def test_expansion_applies_to_passwords_only() -> None:
    text = BASE.replace("host: imap.example.net", 'host: imap.example.net\n    folder: "${X}"')
    mailbox = parse_config(text, environ={**ENVIRON, "X": "expanded"}).mailboxes[0]
    assert mailbox.folder == "${X}"


def test_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "from-os-environ")
    monkeypatch.setenv("IMAP_PASSWORD", "imap")
    config = parse_config(BASE)
    password = config.probes[0].spec.smtp.password
    assert password is not None
    assert password.reveal() == "from-os-environ"


# ------------------------------------------------------- files and paths


def _with_smtp_password_file(path: str) -> str:
    return BASE.replace("password: ${SMTP_PASSWORD}", f"password_file: {path}")


@pytest.mark.parametrize(
    ("content", "password"),
    [
        (b"secret\n", "secret"),
        (b"secret\r\n", "secret"),
        (b"secret", "secret"),
        (b"secret\n\n", "secret\n"),
        (b" spaced secret \n", " spaced secret "),
    ],
)
def test_password_file_loses_exactly_one_trailing_newline(
    tmp_path: Path, content: bytes, password: str
) -> None:
    (tmp_path / "pw").write_bytes(content)
    config = parse_config(
        _with_smtp_password_file("pw"), source=tmp_path / "c.yml", environ=ENVIRON
    )
    secret = config.probes[0].spec.smtp.password
    assert secret is not None
    assert secret.reveal() == password


def test_a_password_file_holding_only_a_newline_is_empty(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"\n")
    assert _errors(_with_smtp_password_file("pw"), source=tmp_path / "c.yml") == [
        f"{tmp_path}/c.yml:5:20: smtp_servers.relay.password_file: {tmp_path}/pw is empty"
    ]


def test_a_password_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"\xff\xfe")
    assert _errors(_with_smtp_password_file("pw"), source=tmp_path / "c.yml") == [
        f"{tmp_path}/c.yml:5:20: smtp_servers.relay.password_file: {tmp_path}/pw is not UTF-8 text"
    ]


def test_relative_paths_are_relative_to_the_config_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    (conf_dir / "secrets").mkdir(parents=True)
    (conf_dir / "secrets" / "pw").write_text("from-etc\n")
    (conf_dir / "token").write_text("t" * 16)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(conf_dir / "ca.pem"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secrets").mkdir()
    (elsewhere / "secrets" / "pw").write_text("from-cwd\n")
    monkeypatch.chdir(elsewhere)
    config_path = conf_dir / "probe.yml"
    config_path.write_text(
        "token_secret_file: token\n"
        + _with_smtp_password_file("secrets/pw").replace(
            "host: smtp.example.com", "host: smtp.example.com\n    ca_file: ./ca.pem"
        )
    )
    config = load_config(config_path, environ=ENVIRON)
    smtp = config.probes[0].spec.smtp
    assert smtp.password is not None
    assert smtp.password.reveal() == "from-etc"
    assert smtp.tls_settings.ca_file == conf_dir / "ca.pem"
    assert config.token_secret == Secret("t" * 16)


def test_absolute_and_home_relative_paths_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pw").write_text("from-home\n")
    config = parse_config(
        _with_smtp_password_file("~/pw"), source=Path("/nonexistent/c.yml"), environ=ENVIRON
    )
    password = config.probes[0].spec.smtp.password
    assert password is not None
    assert password.reveal() == "from-home"


def test_without_a_source_relative_paths_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pw").write_text("here\n")
    password = (
        parse_config(_with_smtp_password_file("pw"), environ=ENVIRON).probes[0].spec.smtp.password
    )
    assert password is not None
    assert password.reveal() == "here"


def test_a_good_ca_file_is_kept_with_verification_on(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    text = BASE.replace("host: imap.example.net", "host: imap.example.net\n    ca_file: ca.pem")
    mailbox = parse_config(text, source=tmp_path / "c.yml", environ=ENVIRON).mailboxes[0]
    assert mailbox.tls_settings == TlsSettings(verify=True, ca_file=tmp_path / "ca.pem")


def test_token_secret_is_stripped_of_surrounding_whitespace(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(b"  \n" + b"k" * 16 + b"\n\n")
    config = parse_config(
        "token_secret_file: token\n" + BASE, source=tmp_path / "c.yml", environ=ENVIRON
    )
    assert config.token_secret == Secret("k" * 16)


def test_token_secret_of_fifteen_bytes_is_too_short(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(b"k" * 15 + b"\n")
    assert _errors("token_secret_file: token\n" + BASE, source=tmp_path / "c.yml") == [
        f"{tmp_path}/c.yml:1:20: token_secret_file: {tmp_path}/token holds fewer than 16 "
        "bytes; at least 16 are needed (make one with: openssl rand -hex 32)"
    ]


def test_token_secret_must_be_text(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(bytes(range(128, 160)))
    assert _errors("token_secret_file: token\n" + BASE, source=tmp_path / "c.yml") == [
        f"{tmp_path}/c.yml:1:20: token_secret_file: {tmp_path}/token is not UTF-8 text "
        "(make one with: openssl rand -hex 32)"
    ]


def test_without_token_secret_file_there_is_no_token_secret() -> None:
    assert parse_config(BASE, environ=ENVIRON).token_secret is None


# ---------------------------------------------------------------- listen


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        (":10587", ServerSettings("", 10587)),
        ("9100", ServerSettings("", 9100)),
        ("127.0.0.1:9100", ServerSettings("127.0.0.1", 9100)),
        ("localhost", ServerSettings("localhost", 10587)),
        ("[::1]:9100", ServerSettings("::1", 9100)),
        ("[::]:9100", ServerSettings("::", 9100)),
    ],
)
def test_parse_listen_accepts_host_port_forms(text: str, settings: ServerSettings) -> None:
    assert parse_listen(text) == settings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":", "expected a port number 1-65535"),
        (":0", "outside the port range 1-65535"),
        (":65536", "outside the port range 1-65535"),
        (":x", "expected a port number 1-65535"),
        ("host:", "missing port after ':'"),
        ("[::1", "missing ']' after the IPv6 address"),
        ("[::1]x", "expected [IPV6]:PORT"),
        ("", "missing host"),
        ("a b:25", "a host name cannot contain whitespace"),
    ],
)
def test_parse_listen_refuses_malformed_addresses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_listen(text)


def test_listen_defaults_to_all_interfaces_on_10587() -> None:
    assert parse_config(BASE, environ=ENVIRON).server == ServerSettings("", 10587)


# --------------------------------------------------------------- example


def test_example_config_validates(tmp_path: Path) -> None:
    """config/example.yml, with its /run/secrets files provided here, is a valid config."""
    example = (REPO / "config" / "example.yml").read_text()
    assert "/run/secrets/" in example
    (tmp_path / "smtp-password").write_text("smtp\n")
    (tmp_path / "probe-token").write_text("0" * 64 + "\n")
    path = tmp_path / "example.yml"
    path.write_text(example.replace("/run/secrets/", f"{tmp_path}/"))
    config = load_config(path, environ={"IMAP_PASSWORD": "imap"})
    assert [p.name for p in config.probes] == ["relay-to-inbox", "mx-to-inbox"]
    assert config.server == ServerSettings("", 10587)
    assert config.token_secret is not None
    assert len(config.mailboxes) == 1


def test_example_config_states_every_key() -> None:
    """Every key the loader accepts is written (or shown commented out) in the example."""
    example = (REPO / "config" / "example.yml").read_text()
    keys = {
        "defaults", "token_secret_file", "smtp_servers", "mailboxes", "probes", "server",
        "interval", "timeout", "jitter", "host", "port", "tls", "verify", "ca_file",
        "username", "password", "password_file", "helo", "folder", "junk_folders",
        "poll_interval", "idle", "name", "smtp", "mailbox", "from", "to", "listen",
        "oauth_clients", "provider", "tenant", "client_id", "client_secret",
        "client_secret_file", "certificate_file", "private_key_file", "scope", "authority",
        "service_account_file", "subject", "token_uri", "token_url", "grant", "refresh_token",
        "refresh_token_file", "token_command", "lifetime", "oauth", "cleanup", "reflector",
        "routes", "senders", "authserv_id", "expect_auth", "verify_dkim", "dns", "nameservers",
        "dns_checks", "dns_interval", "sending_ip", "hosts", "policy", "mode", "zones",
    }  # fmt: skip
    missing = {key for key in keys if f"{key}:" not in example}
    assert missing == set()


# The example's commented-out blocks for OAuth, presets, reflector and routes, by first line.
EXAMPLE_BLOCKS = (
    "# oauth_clients:",
    "  # m365:",
    "  # - name: via-partner-autoreply",
    "  # - name: dns-example-net",
    "# routes:",
    "# dns:",
)


def uncomment(text: str, first_lines: tuple[str, ...]) -> str:
    """``text`` with each commented block starting at one of ``first_lines`` uncommented.

    A block runs on while lines start with the first line's indent and ``#``;
    one ``# `` is taken off each, so ``# #`` lines stay comments.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    prefix: str | None = None
    for line in lines:
        if prefix is not None and not line.startswith(prefix):
            prefix = None
        if prefix is None and line.rstrip("\n") in first_lines:
            prefix = line[: line.index("#") + 1]
        if prefix is not None:
            line = prefix[:-1] + line[len(prefix) :].removeprefix(" ")
        out.append(line)
    return "".join(out)


def test_example_config_with_its_oauth_preset_reflector_and_route_examples_uncommented_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commented examples are a config too.

    Uncommented, with the files they name given, the example loads and is
    valid by the schema.
    """
    example = (REPO / "config" / "example.yml").read_text()
    text = uncomment(example, EXAMPLE_BLOCKS)
    assert text.count("\n") == example.count("\n")
    for name, content in {
        "smtp-password": "smtp\n",
        "probe-token": "0" * 64 + "\n",
        "entra-secret": "entra\n",
        "idp-secret": "idp\n",
        "google-service-account.json": (CONFIGS / "secrets" / "service-account.json").read_text(),
    }.items():
        (tmp_path / name).write_text(content)
    helper = tmp_path / "bin" / "oauth2-helper"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\necho not-a-real-token\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ.get('PATH', '')}")
    path = tmp_path / "example.yml"
    path.write_text(text.replace("/run/secrets/", f"{tmp_path}/"))

    config = load_config(path, environ={"IMAP_PASSWORD": "imap"})

    assert [p.name for p in config.probes] == [
        "relay-to-inbox",
        "mx-to-inbox",
        "dns-example-net",
        "via-partner-autoreply",
        "outbound-relay-to-m365",
        "outbound-relay-to-gmail",
        "outbound-gmail-to-m365",
        "outbound-gmail-to-gmail",
    ]
    assert list(config.oauth_settings) == ["m365", "workspace", "idp", "helper"]
    assert [type(c.provider) for c in config.oauth_settings.values()] == [
        MicrosoftClient,
        GoogleClient,
        GenericClient,
        CommandClient,
    ]
    gmail = config.probe("outbound-gmail-to-gmail")
    assert gmail is not None
    assert gmail.spec.mailbox is not None
    assert gmail.spec.mailbox.cleanup is Cleanup.TRASH
    assert gmail.spec.smtp.host == "smtp.gmail.com"
    reflector = config.probe("via-partner-autoreply")
    assert reflector is not None
    assert reflector.spec.reflector
    inbound = config.probe("mx-to-inbox")
    assert inbound is not None
    assert inbound.spec.dns.nameservers == (("192.0.2.53", 53), ("2001:db8::53", 53))
    assert ("dkim", "pass") in inbound.spec.expect_auth
    schema = json.loads((REPO / "config" / "smtp-probe.schema.json").read_text())
    problems = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(text)))
    assert problems == []


# ------------------------------------------- OAuth clients, presets, routes

OAUTH_BASE = """\
oauth_clients:
  m365:
    provider: microsoft
    tenant: contoso.onmicrosoft.com
    client_id: 11111111-2222-3333-4444-555555555555
    client_secret: ${CLIENT_SECRET}
smtp_servers:
  m365: {provider: microsoft365, username: probe@contoso.com, oauth: m365}
mailboxes:
  m365: {provider: microsoft365, username: probe@contoso.com, oauth: m365}
probes:
  - {name: m365-to-m365, smtp: m365, mailbox: m365, from: probe@contoso.com, to: probe@contoso.com}
"""


@pytest.mark.parametrize(
    ("entry", "host", "port", "tls"),
    [
        ("{provider: microsoft365}", "smtp.office365.com", 587, TlsMode.STARTTLS),
        ("{provider: google}", "smtp.gmail.com", 587, TlsMode.STARTTLS),
        ("{provider: google, tls: tls}", "smtp.gmail.com", 465, TlsMode.TLS),
        ("{provider: google, port: 2525}", "smtp.gmail.com", 2525, TlsMode.STARTTLS),
        ("{provider: microsoft365, host: relay.example}", "relay.example", 587, TlsMode.STARTTLS),
    ],
)
def test_an_smtp_provider_preset_fills_host_port_and_tls_and_written_keys_win(
    entry: str, host: str, port: int, tls: TlsMode
) -> None:
    text = f"smtp_servers: {{s: {entry}}}\nprobes: [{{name: p, smtp: s, from: a@b.c, to: d@e.f}}]\n"
    smtp = parse_config(text, environ={}).probes[0].spec.smtp
    assert (smtp.host, smtp.port, smtp.tls) == (host, port, tls)


@pytest.mark.parametrize(
    ("preset", "host"), [("microsoft365", "outlook.office365.com"), ("google", "imap.gmail.com")]
)
def test_an_imap_provider_preset_fills_host_port_and_tls(preset: str, host: str) -> None:
    text = BASE.replace("host: imap.example.net", f"provider: {preset}")
    mailbox = parse_config(text, environ=ENVIRON).mailboxes[0]
    assert (mailbox.host, mailbox.port, mailbox.tls) == (host, 993, TlsMode.TLS)


def test_a_mailbox_with_oauth_has_no_password_and_shares_the_servers_token_source() -> None:
    config = parse_config(OAUTH_BASE, environ=ENVIRON)
    spec = config.probes[0].spec
    assert spec.mailbox is not None
    assert spec.mailbox.password is None
    assert spec.mailbox.oauth is spec.smtp.oauth is config.oauth_clients["m365"]
    assert spec.smtp.username == "probe@contoso.com"


def test_oauth_secrets_are_secrets_that_no_repr_or_str_shows() -> None:
    config = load_config(CONFIGS / "good.yml", environ=ENVIRON)
    settings = config.oauth_settings
    m365, app, idp = (settings[name].provider for name in ("m365", "installed-app", "idp"))
    assert isinstance(m365, MicrosoftClient)
    assert isinstance(app, GoogleClient)
    assert isinstance(idp, GenericClient)
    revealed = {
        "m365": m365.client_secret,
        "installed-app": app.client_secret,
        "installed-app refresh": app.refresh_token,
        "idp": idp.refresh_token,
    }
    assert {name: secret.reveal() for name, secret in revealed.items() if secret} == {
        "m365": "hunter2-client-secret-file",
        "installed-app": CLIENT_SECRET,
        "installed-app refresh": REFRESH_TOKEN,
        "idp": f"pre-{REFRESH_TOKEN}",
    }
    shown = "".join(
        [repr(config), str(config), repr(dict(settings)), repr(dict(config.oauth_clients))]
    )
    assert shown.count("<secret>") >= len(revealed)
    for secret in SECRETS:
        assert secret not in shown


def test_a_canary_client_secret_and_refresh_token_never_appear_in_errors() -> None:
    """Every other key of the client wrong, and the secrets written in the file or expanded."""
    text = OAUTH_BASE.replace(
        "    client_secret: ${CLIENT_SECRET}\n",
        f"    client_secret: {CANARY}\n"
        "    client_secret_file: no-such-file\n"
        f"    refresh_token: {CANARY}-refresh\n"
        "    scope: ''\n"
        "    tenant_id: x\n",
    )
    errors = _errors(text, environ={"CLIENT_SECRET": CANARY})
    assert len(errors) >= 5, errors
    assert not any(CANARY in error for error in errors), errors


def test_a_certificate_holding_its_own_key_needs_no_private_key_file(tmp_path: Path) -> None:
    secrets = CONFIGS / "secrets"
    (tmp_path / "app.pem").write_text(
        (secrets / "app-cert.pem").read_text() + (secrets / "app-key.pem").read_text()
    )
    text = OAUTH_BASE.replace("client_secret: ${CLIENT_SECRET}", "certificate_file: app.pem")
    config = parse_config(text, source=tmp_path / "c.yml", environ={})
    provider = config.oauth_settings["m365"].provider
    assert provider == MicrosoftClient(
        tenant="contoso.onmicrosoft.com",
        client_id="11111111-2222-3333-4444-555555555555",
        certificate_file=tmp_path / "app.pem",
    )


def test_a_token_command_list_is_taken_word_for_word_and_each_bad_word_reported() -> None:
    good = OAUTH_BASE.replace(
        "    provider: microsoft\n    tenant: contoso.onmicrosoft.com\n"
        "    client_id: 11111111-2222-3333-4444-555555555555\n"
        "    client_secret: ${CLIENT_SECRET}\n",
        "    token_command: [sh, -c, 'echo $TOKEN', '']\n    timeout: 3s\n",
    )
    client = parse_config(good, environ={}).oauth_settings["m365"]
    assert client == OAuthClient("m365", CommandClient(("sh", "-c", "echo $TOKEN", "")), 3.0)
    bad = good.replace("[sh, -c, 'echo $TOKEN', '']", "[sh, 5, [x]]")
    assert _errors(bad, environ={}) == [
        "<config>:3:25: oauth_clients.m365.token_command[1]: expected a string, got an integer",
        "<config>:3:28: oauth_clients.m365.token_command[2]: expected a string, got a list",
    ]


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("oauth_clients.m365.provider", "    provider: {v}\n"),
        ("oauth_clients.m365.tenant", "    tenant: {v}\n"),
        ("oauth_clients.m365.client_id", "    client_id: {v}\n"),
        ("oauth_clients.m365.authority", "    authority: {v}\n"),
        ("oauth_clients.m365.scope", None),
        ("oauth_clients.m365.timeout", "    timeout: {v}\n"),
    ],
)
def test_a_value_in_an_oauth_key_is_never_echoed(key: str, line: str | None) -> None:
    """As for every other key: an error may point at the value, never show it."""
    v = f'"{ECHO}"'
    lines = OAUTH_BASE.splitlines(keepends=True)
    name = key.rsplit(".", 1)[1]
    kept = [existing for existing in lines if not existing.startswith(f"    {name}:")]
    written = (line or f"    {name}: {{v}}\n").format(v=v)
    text = "".join([*kept[:3], written, *kept[3:]])
    errors = _errors(text + "not_a_section: 1\n")
    assert not any(ECHO in error for error in errors), errors
    assert any(f": {key}: " in error for error in errors) == (name != "scope"), errors


def test_a_value_in_a_token_command_is_never_echoed() -> None:
    text = OAUTH_BASE.replace(
        "    provider: microsoft\n    tenant: contoso.onmicrosoft.com\n"
        "    client_id: 11111111-2222-3333-4444-555555555555\n"
        "    client_secret: ${CLIENT_SECRET}\n",
        f'    token_command: "{ECHO} --password hunter2"\n',
    )
    assert _errors(text) == [
        "<config>:3:20: oauth_clients.m365.token_command: the program is not found in PATH"
    ]


def test_mailbox_cleanup_is_expunge_or_trash_and_absent_means_auto() -> None:
    auto = parse_config(OAUTH_BASE, environ=ENVIRON).mailboxes[0]
    assert auto.cleanup is None
    for mode in Cleanup:
        text = OAUTH_BASE.replace("oauth: m365}\nprobes", f"oauth: m365, cleanup: {mode}}}\nprobes")
        assert parse_config(text, environ=ENVIRON).mailboxes[0].cleanup is mode


def test_a_reflector_probe_is_an_ordinary_probe_with_reflector_set() -> None:
    text = BASE + "    reflector: true\n"
    (probe,) = parse_config(text, environ=ENVIRON).probes
    assert probe.spec.reflector is True
    assert parse_config(BASE, environ=ENVIRON).probes[0].spec.reflector is False


ROUTES = """\
defaults: {interval: 2m, timeout: 90s, jitter: 10s}
smtp_servers:
  internal: {host: smtp.example.com}
  gmail: {provider: google, username: probe@example.com, password: "${SMTP_PASSWORD}"}
mailboxes:
  m365: {provider: microsoft365, username: probe@contoso.com, password: "${IMAP_PASSWORD}"}
  gmail: {provider: google, username: probe@example.com, password: "${IMAP_PASSWORD}"}
routes:
  outbound:
    senders: [{smtp: internal, from: probe@example.com}, {smtp: gmail, from: probe@example.com}]
    mailboxes: [{mailbox: m365, to: probe@contoso.com}, {mailbox: gmail, to: probe@example.com}]
  echo:
    senders: [{smtp: internal, from: probe@example.com}]
    mailboxes: [{mailbox: m365, to: autoreply@elsewhere.example}]
    interval: 30s
    reflector: true
"""


def test_routes_alone_make_ordinary_probes_named_route_smtp_to_mailbox() -> None:
    """Senders x mailboxes, senders first; each a plain ScheduledProbe with the route's timing."""
    config = parse_config(ROUTES, environ=ENVIRON)
    made = [
        (p.name, p.smtp_name, p.mailbox_name, p.spec.rcpt_to, p.interval, p.spec.timeout, p.jitter)
        for p in config.probes
    ]
    assert made == [
        ("outbound-internal-to-m365", "internal", "m365", "probe@contoso.com", 120, 90, 10),
        ("outbound-internal-to-gmail", "internal", "gmail", "probe@example.com", 120, 90, 10),
        ("outbound-gmail-to-m365", "gmail", "m365", "probe@contoso.com", 120, 90, 10),
        ("outbound-gmail-to-gmail", "gmail", "gmail", "probe@example.com", 120, 90, 10),
        ("echo-internal-to-m365", "internal", "m365", "autoreply@elsewhere.example", 30, 30, 10),
    ]
    assert [p.spec.reflector for p in config.probes] == [False] * 4 + [True]
    assert config.probe("outbound-gmail-to-m365") is config.probes[2]
    gmail = config.probes[2].spec.smtp
    assert (gmail.host, gmail.port) == ("smtp.gmail.com", 587)
    assert len(config.mailboxes) == 2


def test_routes_and_probes_together_list_the_probes_first() -> None:
    text = ROUTES + (
        "probes:\n"
        "  - {name: internal-to-m365, smtp: internal, mailbox: m365,\n"
        "     from: probe@example.com, to: probe@contoso.com}\n"
    )
    names = [p.name for p in parse_config(text, environ=ENVIRON).probes]
    assert names[0] == "internal-to-m365"
    assert len(names) == 6


def test_a_route_name_taken_by_a_later_route_names_the_first_route() -> None:
    """Route ``a`` via ``b-c`` and route ``a-b`` via ``c`` both make ``a-b-c-to-m``."""
    text = """\
smtp_servers: {b-c: {host: smtp.example.com}, c: {host: smtp.example.com}}
mailboxes: {m: {host: imap.example.net, username: u, password: p}}
routes:
  a: {senders: [{smtp: b-c, from: a@b.c}], mailboxes: [{mailbox: m, to: a@b.c}]}
  a-b: {senders: [{smtp: c, from: a@b.c}], mailboxes: [{mailbox: m, to: a@b.c}]}
"""
    assert _errors(text) == [
        "<config>:5:8: routes.a-b: senders[0] x mailboxes[0] makes the probe name "
        "'a-b-c-to-m', which routes.a (senders[0] x mailboxes[0]) has already"
    ]


def test_a_shared_mailbox_defined_twice_differently_is_caught_through_routes_too() -> None:
    text = ROUTES.replace(
        "routes:\n",
        '  gmail2: {provider: google, username: probe@example.com, password: "other"}\nroutes:\n',
    ).replace("{mailbox: m365, to: autoreply@elsewhere.example}", "{mailbox: gmail2, to: a@b.c}")
    assert _errors(text) == [
        "<config>:8:11: mailboxes.gmail2: watches the same mailbox (host, port, username and "
        "folder) as mailboxes.gmail with different settings; probes watching one mailbox "
        "share one connection, so define it once"
    ]


@pytest.mark.parametrize(
    ("client", "errors"),
    [
        (
            "{provider: google}",
            [
                "<config>:3:6: oauth_clients.c: provider google needs service_account_file and "
                "subject (a service account with domain-wide delegation), or client_id, "
                "client_secret and refresh_token (an installed app)"
            ],
        ),
        (
            "{provider: generic}",
            [
                "<config>:3:6: oauth_clients.c.token_url: required with provider: generic",
                "<config>:3:6: oauth_clients.c.client_id: required with provider: generic",
                "<config>:3:6: oauth_clients.c: grant client_credentials needs client_secret "
                "or client_secret_file",
            ],
        ),
        (
            "{provider: microsoft, tenant: t, client_id: c, client_secret: s, "
            "certificate_file: x.pem}",
            [
                "<config>:3:89: oauth_clients.c.certificate_file: cannot read "
                "{cwd}/x.pem: No such file or directory",
                "<config>:3:89: oauth_clients.c.certificate_file: give either client_secret or "
                "certificate_file, not both",
            ],
        ),
        (
            "{token_command: []}",
            ["<config>:3:22: oauth_clients.c.token_command: must not be empty"],
        ),
        (
            "{token_command: ['  ', x]}",
            ["<config>:3:22: oauth_clients.c.token_command: the command needs a program to run"],
        ),
    ],
)
def test_what_each_kind_of_oauth_client_needs(
    client: str, errors: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = (
        "smtp_servers: {s: {host: smtp.example.com}}\n"
        "oauth_clients:\n"
        f"  c: {client}\n"
        "probes: [{name: p, smtp: s, from: a@b.c, to: d@e.f}]\n"
    )
    assert _errors(text) == [error.format(cwd=tmp_path) for error in errors]


def test_verdict_keys_reach_the_probe_spec() -> None:
    text = (
        "dns:\n  nameservers: ['127.0.0.1:5353', '::1', '[::1]:54']\n  timeout: 2s\n"
        + BASE.replace(
            "host: imap.example.net", "host: imap.example.net\n    authserv_id: MX.example.net"
        )
        + "    expect_auth: {dkim: pass, spf: [pass, neutral]}\n    verify_dkim: true\n"
    )
    spec = parse_config(text, environ=ENVIRON).probes[0].spec
    assert spec.expect_auth == (("dkim", "pass"), ("spf", "pass"), ("spf", "neutral"))
    assert spec.verify_dkim is True
    assert spec.dns.nameservers == (("127.0.0.1", 5353), ("::1", 53), ("::1", 54))
    assert spec.dns.timeout == 2.0
    assert spec.mailbox is not None
    assert spec.mailbox.authserv_id == "MX.example.net"


def test_without_verdict_keys_nothing_is_expected_and_the_system_resolver_is_used() -> None:
    spec = parse_config(BASE, environ=ENVIRON).probes[0].spec
    assert spec.expect_auth == ()
    assert spec.verify_dkim is False
    assert spec.dns.nameservers == ()
    assert spec.mailbox is not None
    assert spec.mailbox.authserv_id is None


def test_bounce_mailbox_names_a_mailboxes_entry_the_spec_carries() -> None:
    text = BASE.replace(
        "mailboxes:\n",
        "mailboxes:\n  sender:\n    host: imap.example.com\n    username: probe@example.com\n"
        "    password: ${IMAP_PASSWORD}\n",
    ).replace("    mailbox: inbox\n", "    mailbox: inbox\n    bounce_mailbox: sender\n")
    text += (
        "  - {name: own-bounces, smtp: relay, mailbox: inbox, bounce_mailbox: inbox, "
        "from: probe@example.net, to: probe@example.com}\n"
        "  - {name: no-bounces, smtp: relay, mailbox: inbox, from: a@example.com, "
        "to: b@example.com}\n"
    )
    config = parse_config(text, environ=ENVIRON)

    specs = {probe.spec.name: probe.spec for probe in config.probes}
    sender = specs["relay-to-inbox"].bounce_mailbox
    assert sender is not None
    assert (sender.host, sender.username) == ("imap.example.com", "probe@example.com")
    # The same entry as the delivery mailbox: the same value, so one shared watcher.
    assert specs["own-bounces"].bounce_mailbox == specs["own-bounces"].mailbox
    assert specs["no-bounces"].bounce_mailbox is None
