"""The web config reader: exporter-toolkit keys, each bad key located, no value ever quoted.

Also the command line: a bad ``--web.config.file`` at start is exit 3 with
the located errors, never a traceback, and the basic-auth check itself
(bcrypt, the credentials cache, unknown users) against real hashes.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
from importlib import resources
from pathlib import Path

import bcrypt
import pytest
import trustme

from smtp_probe.cli import main
from smtp_probe.config.errors import ConfigError
from smtp_probe.server.webconfig import WebGuard, load, parse
from tests.support.tls_certs import handshake

SOURCE = Path("/etc/smtp-probe/web.yml")
HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, SOURCE)
    return list(caught.value.errors)


def test_a_full_config_is_read_with_paths_relative_to_the_file() -> None:
    config = parse(
        "tls_server_config:\n"
        "  cert_file: tls/cert.pem\n  key_file: /abs/key.pem\n"
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
        "  min_version: TLS13\n  max_version: TLS13\n"
        f"basic_auth_users:\n  alice: '{HASH}'\n"
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n",
        SOURCE,
    )
    assert config.tls is not None
    assert config.tls.cert_file == Path("/etc/smtp-probe/tls/cert.pem")
    assert config.tls.key_file == Path("/abs/key.pem")
    assert config.tls.client_ca_file == Path("/etc/smtp-probe/ca.pem")
    assert config.tls.client_auth == ssl.CERT_OPTIONAL
    assert config.tls.min_version == config.tls.max_version == ssl.TLSVersion.TLSv1_3
    assert config.users == {"alice": HASH.encode()}
    assert config.headers == {"X-Frame-Options": "deny"}


def test_an_empty_file_means_plain_http_without_auth() -> None:
    config = parse("", SOURCE)
    assert config.tls is None
    assert not config.users
    assert not config.headers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_server_config:\n  key_file: k\n", ":2:3: tls_server_config: missing cert_file"),
        ("tls_server_config:\n  cert_file: c\n", ":2:3: tls_server_config: missing key_file"),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Maybe\n",
            ":4:21: tls_server_config.client_auth_type: must be one of NoClientCert,",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n",
            ":4:21: tls_server_config.client_auth_type: accepts a client certificate without",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            ":4:21: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
            ":4:19: tls_server_config.client_ca_file: set without a verifying client_auth_type",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS14\n",
            ":4:16: tls_server_config.min_version: must be one of TLS10, TLS11, TLS12, TLS13",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  max_version: TLS11\n",
            ":4:16: tls_server_config.max_version: is lower than min_version",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [x]\n",
            ":4:3: tls_server_config.cipher_suites: not supported by smtp-probe",
        ),
        ("tls_server_config:\n  cert_file: 5\n  key_file: k\n", ":2:14: tls_server_config.cert_file: must be a non-empty string"),
        ("tls_server_config: [a]\n", ":1:20: tls_server_config: must be a mapping"),
        ("basic_auth_users:\n  bob: hunter2\n", ":2:8: basic_auth_users.bob: must be a bcrypt hash"),
        (f"basic_auth_users:\n  'b:c': '{HASH}'\n", ":2:3: basic_auth_users['b:c']: a username cannot contain ':'"),
        (
            "http_server_config:\n  headers:\n    Content-Type: text/plain\n",
            ":3:5: http_server_config.headers.Content-Type: is set by the server",
        ),
        ("http_server_config:\n  headers:\n    X-A: [1]\n", ":3:10: http_server_config.headers.X-A: must be a one-line string"),
        ("http_server_config:\n  http2: yes please\n", ":2:10: http_server_config.http2: must be true or false"),
        ("http_server_config:\n  compress: true\n", ":2:3: http_server_config.compress: unknown key"),
        ("basic_auth:\n  a: b\n", ":1:1: basic_auth: unknown key"),
        ("- a\n", "a web config is a mapping of sections"),
        ("tls_server_config: {\n", "invalid YAML"),
    ],
)  # fmt: skip
def test_each_bad_key_is_located(text: str, expected: str) -> None:
    found = errors(text)
    assert any(expected in error for error in found), found
    assert all(error.startswith(str(SOURCE)) for error in found)


def test_every_problem_is_reported_at_once_and_no_value_is_quoted() -> None:
    found = errors(
        "tls_server_config:\n  cert_file: c\n  min_version: TLS9\n"
        "basic_auth_users:\n  bob: my-plaintext-password\nextra: 1\n"
    )
    assert len(found) == 4, found
    assert not any("my-plaintext-password" in e or "TLS9" in e for e in found)


def certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    return cert, key, ca_file


def test_a_tls_file_that_does_not_load_names_its_key(tmp_path: Path) -> None:
    cert, key, _ = certificate(tmp_path)
    web = tmp_path / "web.yml"
    cases = {
        "cert_file: missing.pem\n  key_file: key.pem": "tls_server_config.cert_file: cannot load",
        "cert_file: cert.pem\n  key_file: cert.pem": "tls_server_config.key_file: cannot load",
        "cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: VerifyClientCertIfGiven\n"
        "  client_ca_file: key.pem": "tls_server_config.client_ca_file: cannot load",
    }
    for body, expected in cases.items():
        web.write_text(f"tls_server_config:\n  {body}\n")
        with pytest.raises(ConfigError) as caught:
            load(web)
        assert expected in str(caught.value), str(caught.value)
        assert "BEGIN" not in str(caught.value)
    web.write_text(f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n")
    assert load(web).tls is not None


def test_a_bad_web_config_at_start_is_exit_3_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  bob: hunter2\n")
    demo = resources.files("smtp_probe").joinpath("demo.yml")
    with resources.as_file(demo) as config:
        code = main(["run", "--config", str(config), "--web.config.file", str(web),
                     "--listen", "127.0.0.1:1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert f"{web}:2:8: basic_auth_users.bob: must be a bcrypt hash" in err
    assert "Traceback" not in err
    assert "hunter2" not in err
    assert main(["demo", "--web.config.file", str(tmp_path / "none.yml")]) == 3
    assert "cannot read the web config: No such file or directory" in capsys.readouterr().err


def test_health_exemption_needs_a_web_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--web.health-without-auth"]) == 3
    assert "--web.health-without-auth needs --web.config.file" in capsys.readouterr().err


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_checks_bcrypt_and_remembers_only_successes(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n")
    guard = WebGuard(web)

    async def check() -> None:
        assert await guard.authorized(basic("alice", "pw"))
        assert len(guard._cache) == 1  # the next scrape skips bcrypt
        assert await guard.authorized(basic("alice", "pw"))
        for header in (
            basic("alice", "nope"),
            basic("mallory", "pw"),
            "Basic !!!",
            "Bearer x",
            None,
        ):
            assert not await guard.authorized(header)
        assert len(guard._cache) == 1

    asyncio.run(check())


def test_the_readme_example_is_read_and_promtool_accepts_it(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Securing the endpoints") :]
    example = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    tls = tmp_path / "tls"
    tls.mkdir()
    cert, key, ca = certificate(tls)
    cert.rename(tls / "server.pem")
    key.rename(tls / "server-key.pem")
    ca.rename(tls / "clients-ca.pem")
    web = tmp_path / "web.yml"
    web.write_text(example)
    config = load(web)
    assert config.tls is not None
    assert config.tls.client_auth == ssl.CERT_REQUIRED
    assert set(config.users) == {"prometheus"}
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is needed"
    done = subprocess.run(
        [promtool, "check", "web-config", str(web)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rotated_certificates_serve_the_next_handshake_and_policy_changes_wait(
    tmp_path: Path,
) -> None:
    """Real handshakes (memory BIOs) against the listener's context, by IP: no SNI sent."""
    first, second = trustme.CA(), trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"

    def install(ca: trustme.CA) -> None:
        leaf = ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(cert)
        leaf.private_key_pem.write_to_path(key)

    def trusting(ca: trustme.CA) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return context

    install(first)
    web = tmp_path / "web.yml"
    tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
    web.write_text(tls)
    guard = WebGuard(web)
    listener = guard.server_context()
    assert listener is not None
    handshake(listener, trusting(first), host="127.0.0.1")
    install(second)
    handshake(listener, trusting(second), host="127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(listener, trusting(first), host="127.0.0.1")
    # A broken key is refused and the rotated certificate stays in service.
    key.write_text("not a key\n")
    handshake(listener, trusting(second), host="127.0.0.1")
    install(second)
    # client_auth_type needs a restart: the change is refused as a whole.
    web.write_text(tls + "  min_version: TLS13\n")
    guard.refresh()
    assert guard.config.tls is not None
    assert guard.config.tls.min_version == ssl.TLSVersion.TLSv1_2
