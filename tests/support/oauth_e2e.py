"""Configs for the OAuth end-to-end tests: real clients of the test server, the real mail stack.

:class:`OAuthConfig` builds a smtp_probe config file the way an operator
writes one: ``oauth_clients`` of each kind (registered with the session's
:class:`~tests.support.oauth_server.OAuthServer` as it goes, their secrets
in files beside the config), the :class:`~tests.support.mailstack.MailStack`'s
submission port and mailboxes logging in with ``oauth:`` or a password,
probes and routes. The tests run it with ``smtp-probe check --config`` or
the daemon, as real processes.

Every such process gets :func:`oauth_env`: proxies that refuse everything
but loopback, so a provider library that tried to reach Entra ID or Google
would fail the test instead of leaving the machine.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml

from tests.support.cli_proc import run_cli
from tests.support.daemon_proc import Daemon
from tests.support.mailstack import MailStack
from tests.support.oauth_server import OAuthServer
from tests.support.routes import SENDER, SINK

TENANT = "contoso.onmicrosoft.com"
"""The Entra tenant of the microsoft clients; the test server serves any tenant."""
TOKEN_SECRET = "a-token-secret-of-enough-length"  # noqa: S105 - the probes' test signing key

_T = TypeVar("_T")


@contextmanager
def refusing_proxy() -> Iterator[str]:
    """A proxy URL on a loopback port bound but not listening: every request through it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def oauth_env(proxy: str) -> dict[str, str]:
    """Environment for a process under test: non-loopback HTTP(S) goes to ``proxy`` (refused)."""
    names = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
    env = dict.fromkeys(names, proxy)
    env |= {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    # the config's ca_file must do the work, not a CA bundle from the environment
    env |= {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""}
    return env


def unique(prefix: str) -> str:
    """A client id no other test uses (the authorization server is the session's)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Legs(NamedTuple):
    """A probe logging in with OAuth on both legs, and the client of each leg."""

    probe: str
    smtp_client: str
    imap_client: str


class OAuthConfig:
    """A config file under construction (see the module docstring); :meth:`write` saves it."""

    def __init__(self, stack: MailStack, server: OAuthServer, directory: Path) -> None:
        self.stack = stack
        self.server = server
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "config.yml"
        (directory / "token").write_text(TOKEN_SECRET + "\n")
        self.doc: dict[str, Any] = {
            "defaults": {"timeout": "15s"},
            "token_secret_file": str(directory / "token"),
            "oauth_clients": {},
            "smtp_servers": {},
            "mailboxes": {},
            "probes": [],
        }
        self.client_ids: dict[str, str] = {}
        """Config client name -> the id the authorization server knows it by."""
        self.secrets: dict[str, str] = {}
        """Every secret the config holds (client secrets, refresh tokens, key material)."""

    # ------------------------------------------------------------ oauth_clients

    def _secret_file(self, name: str, value: str) -> str:
        path = self.dir / f"{name}.secret"
        path.write_text(value + "\n")
        path.chmod(0o600)
        self.secrets[name] = value
        return str(path)

    def _client(self, name: str, client_id: str | None, entry: dict[str, Any]) -> str:
        if client_id is not None:
            self.client_ids[name] = client_id
        self.doc["oauth_clients"][name] = {**entry, "timeout": "5s"}
        return name

    def _endpoint(self) -> dict[str, str]:
        return {"ca_file": str(self.server.ca_file)}

    def generic(self, name: str, user: str, *, secret: str | None = None) -> str:
        """A generic client_credentials client whose tokens are for ``user``."""
        client_id = unique(name)
        secret = secret or "secret-" + uuid.uuid4().hex
        self.server.add_client(client_id, secret, user=user)
        return self._client(name, client_id, {
            "provider": "generic", "token_url": self.server.token_url,
            "grant": "client_credentials", "client_id": client_id,
            "client_secret_file": self._secret_file(name, secret), **self._endpoint(),
        })  # fmt: skip

    def generic_refresh(self, name: str, user: str) -> str:
        """A generic client by the refresh_token grant (a refresh token for ``user``)."""
        client_id = unique(name)
        secret = "secret-" + uuid.uuid4().hex
        self.server.add_client(client_id, secret, user="nobody@example.test")
        refresh = self.server.add_refresh_token(client_id, user, scope="mail")
        return self._client(name, client_id, {
            "provider": "generic", "token_url": self.server.token_url, "grant": "refresh_token",
            "client_id": client_id, "client_secret_file": self._secret_file(name, secret),
            "refresh_token_file": self._secret_file(f"{name}-refresh", refresh), "scope": "mail",
            **self._endpoint(),
        })  # fmt: skip

    def microsoft_secret(self, name: str, user: str) -> str:
        """Entra ID client credentials with a client secret; MSAL's authority is the test server."""
        client_id = unique(name)
        secret = "secret-" + uuid.uuid4().hex
        self.server.add_client(client_id, secret, user=user)
        return self._client(name, client_id, {
            "provider": "microsoft", "tenant": TENANT, "client_id": client_id,
            "client_secret_file": self._secret_file(name, secret), "authority": self.server.url,
            **self._endpoint(),
        })  # fmt: skip

    def microsoft_certificate(self, name: str, user: str) -> str:
        """Entra ID client credentials with a certificate (MSAL signs the client assertion)."""
        client_id = unique(name)
        cert = self.server.add_certificate_client(client_id, user=user)
        certificate = self.dir / f"{name}.pem"
        certificate.write_text(cert.certificate_pem)
        key = self.dir / f"{name}.key"
        key.write_text(cert.private_key_pem)
        key.chmod(0o600)
        self.secrets[f"{name}.key"] = _pem_body(cert.private_key_pem)
        return self._client(name, client_id, {
            "provider": "microsoft", "tenant": TENANT, "client_id": client_id,
            "certificate_file": str(certificate), "private_key_file": str(key),
            "authority": self.server.url, **self._endpoint(),
        })  # fmt: skip

    def google_service_account(self, name: str, user: str, *, override: bool = True) -> str:
        """A Google service account acting for ``user`` (domain-wide delegation).

        ``override``: the key file names Google's endpoint, as a downloaded
        one does, and the config's ``token_uri`` points at the test server;
        else the key file's own ``token_uri`` is the test server.
        """
        email = f"{unique(name)}@probe-project.iam.gserviceaccount.com"
        info = self.server.add_service_account(email)
        entry: dict[str, Any] = {"provider": "google", "subject": user}
        if override:
            info["token_uri"] = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
            entry["token_uri"] = self.server.token_url
        path = self.dir / f"{name}.json"
        path.write_text(json.dumps(info))
        path.chmod(0o600)
        self.secrets[f"{name}.json"] = _pem_body(info["private_key"])
        entry |= {"service_account_file": str(path), **self._endpoint()}
        return self._client(name, email, entry)

    def google_service_account_keyfile(self, name: str, user: str) -> str:
        """:meth:`google_service_account` with the key file's own ``token_uri``."""
        return self.google_service_account(name, user, override=False)

    def google_installed_app(self, name: str, user: str) -> str:
        """A Google installed app's refresh token for ``user``, redeemed at ``token_uri``."""
        client_id = unique(name) + ".apps.googleusercontent.com"
        secret = "GOCSPX-" + uuid.uuid4().hex
        self.server.add_client(client_id, secret, user="nobody@example.test")
        refresh = self.server.add_refresh_token(client_id, user)
        return self._client(name, client_id, {
            "provider": "google", "client_id": client_id,
            "client_secret_file": self._secret_file(name, secret),
            "refresh_token_file": self._secret_file(f"{name}-refresh", refresh),
            "token_uri": self.server.token_url, **self._endpoint(),
        })  # fmt: skip

    def command(self, name: str, script: str, **extra: Any) -> str:
        """A token_command client: ``{name}.py`` (Python source ``script``) run as a program."""
        path = self.dir / f"{name}.py"
        path.write_text(f"#!{sys.executable}\n{script}")
        path.chmod(0o700)
        self._client(name, None, {"token_command": [str(path)]})
        self.doc["oauth_clients"][name] |= extra
        return name

    def fetching_command(self, name: str, user: str, *, output: str = "json") -> str:
        """A token_command that gets a token for ``user`` from the test server and prints it.

        ``output``: ``json`` (``{"access_token": ..., "expires_in": ...}``) or
        ``plain`` (the token alone, as ``oauth2.py`` prints it).
        """
        client_id = unique(name)
        secret = "secret-" + uuid.uuid4().hex
        self.server.add_client(client_id, secret, user=user)
        self.client_ids[name] = client_id
        script = _FETCH_SCRIPT.format(
            url=self.server.token_url, ca=str(self.server.ca_file), client_id=client_id,
            secret_file=self._secret_file(name, secret), output=output,
        )  # fmt: skip
        return self.command(name, script)

    def fetching_command_plain(self, name: str, user: str) -> str:
        """:meth:`fetching_command` printing the bare token."""
        return self.fetching_command(name, user, output="plain")

    # --------------------------------------------------------- servers, probes

    def smtp(self, name: str, *, oauth: str | None = None) -> str:
        """The stack's submission port as probe@, with ``oauth`` or probe@'s password."""
        stack = self.stack
        entry: dict[str, Any] = {
            "host": stack.host, "port": stack.submission_port, "tls": "starttls",
            "ca_file": str(stack.ca_file), "username": SENDER,
        }  # fmt: skip
        if oauth is not None:
            entry["oauth"] = oauth
        else:
            entry["password_file"] = self._secret_file(f"smtp-{name}", stack.users[SENDER])
        self.doc["smtp_servers"][name] = entry
        return name

    def mailbox(self, name: str, *, user: str = SINK, oauth: str | None = None) -> str:
        """``user``'s mailbox over IMAPS, with ``oauth`` or the user's password."""
        stack = self.stack
        entry: dict[str, Any] = {
            "host": stack.host, "port": stack.imaps_port, "tls": "tls",
            "ca_file": str(stack.ca_file), "username": user,
        }  # fmt: skip
        if oauth is not None:
            entry["oauth"] = oauth
        else:
            entry["password_file"] = self._secret_file(f"imap-{name}", stack.users[user])
        self.doc["mailboxes"][name] = entry
        return name

    def probe(self, name: str, smtp: str, mailbox: str, *, to: str = SINK) -> str:
        """A probe from probe@ to ``to`` through ``smtp``, watched in ``mailbox``."""
        self.doc["probes"].append(
            {"name": name, "smtp": smtp, "mailbox": mailbox, "from": SENDER, "to": to}
        )
        return name

    def both_legs(self, kind: str, *, name: str = "oauth-both") -> Legs:
        """A probe logging in to both legs with clients of ``kind`` (one per user: probe@, sink@).

        ``kind`` is a client method's name (``generic``, ``microsoft_secret``
        ...); the clients are named ``{name}-smtp-token`` and ``{name}-imap-token``.
        """
        make: Callable[[str, str], str] = getattr(self, kind)
        smtp_client = make(f"{name}-smtp-token", SENDER)
        imap_client = make(f"{name}-imap-token", SINK)
        self.smtp(f"{name}-smtp", oauth=smtp_client)
        self.mailbox(f"{name}-box", oauth=imap_client)
        return Legs(self.probe(name, f"{name}-smtp", f"{name}-box"), smtp_client, imap_client)

    def write(self) -> Path:
        """Save the config (YAML) and return its path."""
        doc = {key: value for key, value in self.doc.items() if value != []}
        self.path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.path

    def issued(self, *clients: str) -> list[str]:
        """The access tokens the server has issued to the config's ``clients``."""
        return [t for name in clients for t in self.server.issued(self.client_ids[name])]

    # ------------------------------------------------------------------ running

    def check(self, probe: str, *args: str, proxy: str) -> subprocess.CompletedProcess[str]:
        """``smtp-probe check --config F --probe NAME ARGS`` as a process."""
        config = str(self.write())
        return run_cli("check", "--config", config, "--probe", probe, *args, env=oauth_env(proxy))

    def check_json(
        self, probe: str, *args: str, proxy: str
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """:meth:`check` with ``--format json``: the process and its parsed result."""
        proc = self.check(probe, "--format", "json", *args, proxy=proxy)
        try:
            result: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(
                f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            ) from None
        return proc, result


def _pem_body(pem: str) -> str:
    """A line from the middle of a PEM's base64: a leaked key would hold it."""
    lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return lines[len(lines) // 2]


_FETCH_SCRIPT = '''\
"""A token helper (as aerc's or mutt's): client credentials at the test server, printed."""
import json, ssl, urllib.parse, urllib.request

secret = open({secret_file!r}).read().strip()
body = urllib.parse.urlencode({{"grant_type": "client_credentials", "client_id": {client_id!r},
                               "client_secret": secret}}).encode()
ctx = ssl.create_default_context(cafile={ca!r})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}),
                                     urllib.request.HTTPSHandler(context=ctx))
with opener.open(urllib.request.Request({url!r}, data=body), timeout=5) as reply:
    answer = json.load(reply)
if {output!r} == "json":
    print(json.dumps({{"access_token": answer["access_token"], "expires_in": answer["expires_in"]}}))
else:
    print(answer["access_token"])
'''


# ------------------------------------------------------------- what was seen


def leaked(text: str, secrets: Sequence[str]) -> list[str]:
    """The ``secrets`` that appear in ``text``: in clear, or base64-encoded inside anything.

    Base64 of a longer string (a SASL initial response) holds the secret's
    own encoding at one of three alignments; the middle of each is searched.
    """
    found = []
    for secret in secrets:
        forms = [secret]
        for pad in range(3):
            encoded = base64.b64encode(b"\0" * pad + secret.encode()).decode()
            forms.append(encoded[4:-4])
        if any(len(form) >= 8 and form in text for form in forms):
            found.append(secret)
    return found


class PostfixLog:
    """What Postfix logs from now on: did anyone connect to submission, was a message queued."""

    def __init__(self, stack: MailStack) -> None:
        self._stack = stack
        self._start = len(stack.postfix_log())

    def new(self) -> str:
        """The log written since this object was made."""
        return self._stack.postfix_log()[self._start :]

    def submissions(self) -> int:
        """Connections to the submission port since."""
        return len(re.findall(r"/submission/smtpd\[\d+\]: connect from", self.new()))

    def auth_failures(self, mechanism: str = "OAUTHBEARER") -> int:
        """SASL logins refused on submission since."""
        pattern = rf"/submission/smtpd\[\d+\]: warning: .*SASL {mechanism} authentication failed"
        return len(re.findall(pattern, self.new()))

    def messages(self) -> int:
        """Messages Postfix accepted (cleanup gave them a Message-ID line) since."""
        return len(re.findall(r"/cleanup\[\d+\]: \w+: message-id=", self.new()))


# ----------------------------------------------------------------- daemon side


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` with ``labels`` in a /metrics page; 0 if none.

    Raises:
        AssertionError: several samples match.
    """
    from prometheus_client.parser import text_string_to_metric_families

    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(values) <= 1, f"{name}{labels}: {len(values)} samples"
    return float(values[0]) if values else 0.0


def wait_until(condition: Callable[[], _T], timeout: float, what: str) -> _T:
    """Poll ``condition()`` every 0.2 s until it returns something true; return that.

    Raises:
        AssertionError: it did not within ``timeout`` seconds.
    """
    end = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.2)
    return value


def metrics_page(daemon: Daemon) -> str:
    """The daemon's /metrics page.

    Raises:
        AssertionError: it did not answer 200.
    """
    status, text = daemon.get("/metrics")
    assert status == 200, text
    return text


def runs_reaching(daemon: Daemon, probes: Sequence[str], count: float, timeout: float) -> str:
    """Wait until each of ``probes`` has ``count`` scheduled runs; the /metrics page then.

    Raises:
        AssertionError: they did not within ``timeout`` seconds.
    """

    def page() -> str:
        text = metrics_page(daemon)
        runs = [metric(text, "smtp_probe_runs_total", probe=p) for p in probes]
        return text if min(runs) >= count else ""

    return wait_until(page, timeout, f"{count:g} runs of {', '.join(probes)}")
