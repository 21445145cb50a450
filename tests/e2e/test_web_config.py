"""``--web.config.file`` end to end: a real Prometheus scrapes the real daemon over HTTPS.

Once with basic auth (bcrypt) and once with mutual TLS, each web config
first accepted by ``promtool check web-config`` (Prometheus' own reader of
the format). Without credentials Prometheus' scrape fails (``up == 0``) and
a plain request gets 401 or a refused handshake. The basic-auth daemon is
also the one whose web config is changed while it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import trustme

from tests.support.daemon_proc import Daemon, start_daemon, stop_daemon
from tests.support.mailstack import MailStack
from tests.support.prom import Prometheus

USER = "prometheus"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test credential
NEW_PASSWORD = "a brand new passphrase"  # noqa: S105 - a test credential
ENDPOINTS = [
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/probe?name=submission"),
    ("POST", "/-/reload"),
    ("GET", "/-/healthy"),
    ("GET", "/-/ready"),
]


@dataclass(frozen=True)
class Certs:
    """A server certificate for 127.0.0.1 and a client certificate from another CA."""

    dir: Path
    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path

    def client(self, *, with_cert: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    where = tmp_path_factory.mktemp("certs")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1")
    client = client_ca.issue_cert("prometheus.example.test")
    paths = Certs(*(where / name for name in (
        ".", "ca.pem", "cert.pem", "key.pem", "client-ca.pem", "client.pem", "client-key.pem"
    )))  # fmt: skip
    server_ca.cert_pem.write_to_path(paths.ca)
    server.cert_chain_pems[0].write_to_path(paths.cert)
    server.private_key_pem.write_to_path(paths.key)
    client_ca.cert_pem.write_to_path(paths.client_ca)
    client.cert_chain_pems[0].write_to_path(paths.client_cert)
    client.private_key_pem.write_to_path(paths.client_key)
    return paths


def promtool_accepts(path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is needed"
    done = subprocess.run(
        [promtool, "check", "web-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()


def basic_auth_config(certs: Certs, password: str) -> str:
    return (
        f"tls_server_config:\n  cert_file: {certs.cert}\n  key_file: {certs.key}\n"
        f"  min_version: TLS12\n"
        f"basic_auth_users:\n  {USER}: '{hashed(password)}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n"
    )


def request(daemon: Daemon, method: str, path: str, **kwargs: object) -> tuple[int, dict[str, str]]:
    """Status and headers of one request, with ``daemon``'s TLS and auth unless overridden."""
    context = kwargs.get("tls", daemon.tls)
    assert context is None or isinstance(context, ssl.SSLContext)
    plain = urllib.request.Request(daemon.url(path), method=method)  # noqa: S310
    auth = kwargs.get("auth", daemon.auth)
    if auth is not None:
        import base64

        assert isinstance(auth, tuple)
        token = base64.b64encode(":".join(auth).encode()).decode()
        plain.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(plain, timeout=20, context=context) as reply:  # noqa: S310
            return reply.status, dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.fixture(scope="module")
def auth_daemon(
    mailstack: MailStack, certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Daemon, Path]]:
    workdir = tmp_path_factory.mktemp("web-auth")
    web = workdir / "web.yml"
    web.write_text(basic_auth_config(certs, PASSWORD))
    promtool_accepts(web)
    running = start_daemon(
        mailstack,
        workdir,
        ["submission"],
        args=["--web.config.file", str(web)],
        tls=certs.client(with_cert=False),
        auth=(USER, PASSWORD),
    )
    yield running, web
    stop_daemon(running)


def scrape_options(certs: Certs, *, auth: bool, client_cert: bool) -> str:
    lines = ["scheme: https", "tls_config:", f"  ca_file: {certs.ca}"]
    if client_cert:
        lines += [f"  cert_file: {certs.client_cert}", f"  key_file: {certs.client_key}"]
    if auth:
        lines += ["basic_auth:", f"  username: {USER}", f"  password: '{PASSWORD}'"]
    return "\n".join(lines)


def up_is(want: float) -> Callable[[dict[str, float]], bool]:
    return lambda result: result.get("") == want


@contextmanager
def scraped(daemon: Daemon, *scrapes: tuple[str, float]) -> Iterator[list[Prometheus]]:
    """One Prometheus per ``(options, expected up)``, scraping ``daemon``; each ``up`` awaited.

    They start together and are then waited for one by one: each one's first
    scrape comes only after Prometheus' service discovery sends its targets,
    on a fixed 5 s tick, so servers started one after another wait that long
    each. They are stopped on leaving.
    """
    servers: list[Prometheus] = []
    try:
        for options, _ in scrapes:
            servers.append(Prometheus([f"127.0.0.1:{daemon.port}"], scrape_options=options))
            servers[-1].start()
        for server, (_, expect_up) in zip(servers, scrapes, strict=True):
            server.wait_for("up", up_is(expect_up), timeout=30)
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_prometheus_scrapes_over_https_with_basic_auth(
    auth_daemon: tuple[Daemon, Path], certs: Certs
) -> None:
    daemon, _ = auth_daemon
    with scraped(
        daemon,
        (scrape_options(certs, auth=True, client_cert=False), 1.0),
        (scrape_options(certs, auth=False, client_cert=False), 0.0),
    ) as (server, _):
        # What it scraped is the daemon's own metrics, the probe's success included.
        server.wait_for("smtp_probe_success", lambda r: r.get("submission") == 1.0, timeout=30)


def test_every_endpoint_refuses_requests_without_valid_credentials(
    auth_daemon: tuple[Daemon, Path],
) -> None:
    daemon, _ = auth_daemon
    for method, path in ENDPOINTS:
        for auth in (None, (USER, "wrong"), ("nobody", PASSWORD)):
            status, headers = request(daemon, method, path, auth=auth)
            assert status == 401, (method, path, auth)
            assert headers["WWW-Authenticate"].startswith('Basic realm="smtp-probe"')
            assert headers["X-Frame-Options"] == "deny"
    status, headers = request(daemon, "GET", "/metrics")
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert request(daemon, "GET", "/-/healthy")[0] == 200
    status, headers = request(daemon, "GET", "/no-such-page")
    assert status == 404
    assert headers["X-Frame-Options"] == "deny"
    assert request(daemon, "GET", "/no-such-page", auth=None)[0] == 401
    assert PASSWORD not in daemon.log.read_text()


def test_plain_http_gets_no_answer_from_the_tls_port(auth_daemon: tuple[Daemon, Path]) -> None:
    daemon, _ = auth_daemon
    plain = f"http://127.0.0.1:{daemon.port}/metrics"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(plain, timeout=10)


def test_a_changed_web_config_applies_and_a_bad_change_keeps_the_old(
    auth_daemon: tuple[Daemon, Path], certs: Certs
) -> None:
    daemon, web = auth_daemon
    web.write_text(basic_auth_config(certs, NEW_PASSWORD))
    assert request(daemon, "GET", "/metrics", auth=(USER, NEW_PASSWORD))[0] == 200
    assert request(daemon, "GET", "/metrics", auth=(USER, PASSWORD))[0] == 401
    # A plaintext password where a hash belongs: refused, logged without the value.
    web.write_text(f"basic_auth_users:\n  {USER}: '{PASSWORD}'\n")
    assert request(daemon, "GET", "/metrics", auth=(USER, NEW_PASSWORD))[0] == 200
    assert request(daemon, "GET", "/metrics", auth=(USER, PASSWORD))[0] == 401
    deadline = time.monotonic() + 5
    while "web config change refused" not in daemon.log.read_text():
        assert time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.1)
    log = daemon.log.read_text()
    assert "basic_auth_users.prometheus: must be a bcrypt hash" in log
    assert PASSWORD not in log
    assert NEW_PASSWORD not in log
    web.write_text(basic_auth_config(certs, PASSWORD))
    assert request(daemon, "GET", "/metrics", auth=(USER, PASSWORD))[0] == 200


def test_prometheus_scrapes_with_mutual_tls(
    mailstack: MailStack, certs: Certs, tmp_path: Path
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {certs.cert}\n  key_file: {certs.key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.client_ca}\n"
        "  min_version: TLS13\n"
    )
    promtool_accepts(web)
    daemon = start_daemon(
        mailstack,
        tmp_path,
        ["submission"],
        args=["--web.config.file", str(web)],
        tls=certs.client(with_cert=True),
    )
    try:
        with scraped(
            daemon,
            (scrape_options(certs, auth=False, client_cert=True), 1.0),
            (scrape_options(certs, auth=False, client_cert=False), 0.0),
        ):
            pass  # up == 1 with the client certificate, 0 without: awaited on entering
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            request(daemon, "GET", "/-/healthy", tls=certs.client(with_cert=False))
        assert request(daemon, "GET", "/-/healthy")[0] == 200
    finally:
        stop_daemon(daemon)


def test_health_endpoints_may_be_exempted_from_auth(
    mailstack: MailStack, certs: Certs, tmp_path: Path
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(basic_auth_config(certs, PASSWORD))
    daemon = start_daemon(
        mailstack,
        tmp_path,
        ["submission"],
        args=["--web.config.file", str(web), "--web.health-without-auth"],
        tls=certs.client(with_cert=False),
    )
    try:
        assert request(daemon, "GET", "/-/healthy")[0] == 200
        assert request(daemon, "GET", "/-/ready")[0] == 200
        for method, path in ENDPOINTS[:4]:
            assert request(daemon, method, path)[0] == 401, path
        # The image's own HEALTHCHECK, pointed at the TLS port as the README says.
        command = dockerfile_healthcheck()
        healthy = f"https://127.0.0.1:{daemon.port}/-/healthy"
        for url, code in ((healthy, 0), (healthy.replace("/-/healthy", "/metrics"), 1)):
            done = subprocess.run(
                [sys.executable, *command[1:]],
                env={**os.environ, "SMTP_PROBE_HEALTHCHECK_URL": url},
                capture_output=True,
                timeout=30,
            )
            assert done.returncode == code, done.stderr.decode()[-2000:]
    finally:
        stop_daemon(daemon)


def dockerfile_healthcheck() -> list[str]:
    """The exec form of the Dockerfile's ``HEALTHCHECK ... CMD [...]``."""
    text = (Path(__file__).parents[2] / "Dockerfile").read_text()
    line = text[text.index("HEALTHCHECK ") :].split("CMD ", 1)[1].split("\n", 1)[0]
    command = json.loads(line)
    assert isinstance(command, list)
    return [str(part) for part in command]
