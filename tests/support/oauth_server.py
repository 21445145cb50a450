"""A real OAuth2 authorization server on loopback for the OAuth tests: authlib's server in a child process.

What it stands for, each through the endpoints and wire formats of the real one:

* **Microsoft Entra ID** (v2.0): a tenant's discovery document at
  ``/<tenant>/v2.0/.well-known/openid-configuration`` (what MSAL fetches for
  ``authority=https://127.0.0.1:PORT/<tenant>``) and its token endpoint
  ``/<tenant>/oauth2/v2.0/token``: client credentials with a client secret or
  a certificate (``private_key_jwt``, the RFC 7523 client assertion MSAL signs
  with PS256 or RS256);
* **Google's token endpoint** (``oauth2.googleapis.com/token``): the RFC 7523
  JWT-bearer grant a service account with domain-wide delegation sends
  (``iss`` = the account, ``sub`` = the mailbox user, a ``scope`` claim), and
  refresh tokens of an installed app;
* **any RFC 6749 authorization server**: ``client_credentials`` and
  ``refresh_token`` with ``client_secret_basic`` or ``client_secret_post``,
  metadata at ``/.well-known/openid-configuration`` and
  ``/.well-known/oauth-authorization-server``;
* **RFC 7662 introspection** (``/introspect``), which Dovecot's ``passdb
  oauth2`` asks to check a bearer token: ``{"active": true, "username": ...}``.

authlib's server framework does the protocol work (grant and client
validation, error responses); this module holds the models, the glue and
the fault knobs. The server runs as a separate process (werkzeug's threaded
server) so that, as in production, it has its own sockets: :meth:`OAuthServer.stop`
makes the endpoint refuse connections and :meth:`OAuthServer.start` brings it
back on the same ports, with the clients and the tokens it issued.

Two listeners on 127.0.0.1: HTTPS (everything; MSAL refuses plain-HTTP
authorities) with a certificate from a throwaway CA (:attr:`OAuthServer.ca_file`),
and plain HTTP for introspection (Dovecot then needs no CA) and for the
test's admin calls. Introspection accepts the dedicated introspecting
client's HTTP basic auth (:attr:`OAuthServer.introspection_url` carries it
as userinfo, the way Dovecot sends it) or no credentials at all.

The test process owns the configuration (clients, refresh tokens, fault
knobs): every change is written to ``config.json`` and pushed to the
server. The server owns what it issued (access tokens, the request log),
kept in ``issued.json`` so a restart keeps them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import os
import secrets
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEFAULT_USER: Final = "sink@example.test"
"""The mailbox user a client's tokens are for unless said otherwise."""
GRANTED_SCOPES: Final = "https://mail.google.com/ https://outlook.office365.com/.default mail"
"""What an installed app's consent granted to a pre-seeded refresh token by default."""
GOOGLE_AUDIENCE: Final = "https://oauth2.googleapis.com/token"
"""The ``aud`` google-auth puts in a service account's assertion, whatever its token_uri."""
INTROSPECTOR: Final = "dovecot"
"""The client id allowed to introspect (the resource server's own credentials)."""

_HOST: Final = "127.0.0.1"
_JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ROOT: Final = Path(__file__).resolve().parents[2]
# Admin and introspection calls go straight to 127.0.0.1, never through a
# proxy: urllib's shared opener keeps the proxy variables of its first use,
# and tests point them at a refusing port (tests.support.oauth_clients).
_DIRECT: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_TEST_CALL: Final = "X-Test-Call"
"""Header of the test's own introspection calls, which introspections() leaves out."""


class OAuthServerError(RuntimeError):
    """The authorization server could not be started or did not answer an admin call."""


@dataclass(frozen=True)
class Certificate:
    """A client certificate as registered with Entra ID, and its private key (both PEM)."""

    certificate_pem: str
    private_key_pem: str


class OAuthServer:
    """The authorization server as the tests drive it (see the module docstring).

    ``with OAuthServer() as srv:`` starts it; :attr:`url`, :attr:`token_url`,
    :attr:`ca_file` and friends are valid from then on. Configuration calls
    take effect at once, also while the server is stopped (it reads them
    when it starts).
    """

    def __init__(
        self,
        *,
        ca: Any = None,
        token_lifetime: int = 3600,
        start_timeout: float = 15.0,
    ) -> None:
        """``ca``: a ``trustme.CA`` to issue the HTTPS certificate (default: a new one)."""
        self._ca = ca
        self._start_timeout = start_timeout
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, int] = {"https": 0, "http": 0}
        self._introspector_secret = secrets.token_urlsafe(16)
        self._config: dict[str, Any] = {
            "clients": {
                INTROSPECTOR: {
                    "secret": self._introspector_secret,
                    "kind": "introspector",
                    "user": None,
                    "disabled": False,
                }
            },
            "refresh_tokens": {},
            "token_lifetime": token_lifetime,
            "fail_with": None,
            "hang": False,
            "tokens_valid_after": 0.0,
        }

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> OAuthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the server process (again, on the same ports, after :meth:`stop`).

        Raises:
            OAuthServerError: it did not come up within the start timeout.
        """
        if self._proc is not None:
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="oauth-server-"))
            self._write_certificates(self._dir)
        self._write_config()
        env = dict(os.environ, PYTHONPATH=str(_ROOT))
        log = (self._dir / "server.log").open("ab")
        with log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.oauth_server",
                    str(self._dir),
                    str(self._ports["https"]),
                    str(self._ports["http"]),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=_ROOT,
            )
        line = self._read_ready_line(self._proc)
        try:
            self._ports = {k: int(v) for k, v in json.loads(line).items()}
        except (ValueError, AttributeError) as exc:
            self.stop()
            raise OAuthServerError(f"oauth server did not start: {self._log_tail()}") from exc

    def stop(self) -> None:
        """Stop the server process: its ports refuse connections until :meth:`start`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        """Stop the server and remove its directory (certificates, state, log)."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._proc is not None

    # --------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """The HTTPS base URL; also the Entra ``authority`` host (add ``/<tenant>``)."""
        return f"https://{_HOST}:{self._ports['https']}"

    @property
    def token_url(self) -> str:
        """The token endpoint (RFC 6749 / Google style)."""
        return f"{self.url}/token"

    def tenant_token_url(self, tenant: str) -> str:
        """Entra's token endpoint of ``tenant`` (what MSAL posts to)."""
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    @property
    def introspection_url(self) -> str:
        """Plain-HTTP introspection with the introspecting client's credentials as userinfo."""
        return (
            f"http://{INTROSPECTOR}:{self._introspector_secret}@{_HOST}:{self._ports['http']}"
            "/introspect"
        )

    @property
    def introspection_credentials(self) -> tuple[str, str]:
        """``(client_id, secret)`` of the client allowed to introspect."""
        return INTROSPECTOR, self._introspector_secret

    @property
    def http_port(self) -> int:
        """The plain-HTTP port (introspection and admin)."""
        return self._ports["http"]

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that issued the HTTPS certificate."""
        return self._path("ca.pem")

    @property
    def log_file(self) -> Path:
        """The server process's stderr (werkzeug's request log, tracebacks)."""
        return self._path("server.log")

    # ------------------------------------------------------------ configuration

    def add_client(
        self,
        client_id: str,
        secret: str | None = None,
        *,
        public_key_pem: str | None = None,
        user: str = DEFAULT_USER,
    ) -> None:
        """Register a confidential client: a secret, or a public key for its signed assertions.

        Its client-credentials tokens are for ``user`` (what introspection answers).
        """
        if (secret is None) == (public_key_pem is None):
            raise ValueError("a client has a secret or a public key, not both or neither")
        self._config["clients"][client_id] = {
            "secret": secret,
            "public_key": public_key_pem,
            "kind": "client",
            "user": user,
            "disabled": False,
        }
        self._push()

    def add_certificate_client(self, client_id: str, *, user: str = DEFAULT_USER) -> Certificate:
        """Register a client that authenticates with a new self-signed certificate, returned."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_id)])
        now = time.time()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - 60))
            .not_valid_after(_utc(now + 86400))
            .sign(key, hashes.SHA256())
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.add_client(client_id, public_key_pem=public_pem.decode(), user=user)
        return Certificate(
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            _private_pem(key),
        )

    def add_refresh_token(self, client_id: str, user: str, *, scope: str = GRANTED_SCOPES) -> str:
        """A refresh token for ``client_id`` acting as ``user``, as an installed-app consent gives."""
        token = "rt-" + secrets.token_urlsafe(24)
        self._config["refresh_tokens"][token] = {
            "client_id": client_id,
            "user": user,
            "scope": scope,
        }
        self._push()
        return token

    def add_service_account(
        self,
        email: str = "smtp-probe@probe-project.iam.gserviceaccount.com",
        *,
        scopes: tuple[str, ...] = ("https://mail.google.com/",),
    ) -> dict[str, str]:
        """A Google service account with domain-wide delegation for ``scopes``.

        Returns its key file's JSON (as Google's console downloads it) with
        ``token_uri`` pointing here. It may act as any user (``sub``); a
        ``scope`` claim outside ``scopes`` gets Google's ``unauthorized_client``.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id = secrets.token_hex(20)
        self._config["clients"][email] = {
            "secret": None,
            "public_key": public_pem.decode(),
            "kind": "service_account",
            "user": None,
            "scopes": list(scopes),
            "disabled": False,
        }
        self._push()
        return {
            "type": "service_account",
            "project_id": "probe-project",
            "private_key_id": key_id,
            "private_key": _private_pem(key),
            "client_email": email,
            "client_id": str(int(key_id[:16], 16)),
            "auth_uri": f"{self.url}/authorize",
            "token_uri": self.token_url,
            "universe_domain": "googleapis.com",
        }

    def revoke_client(self, client_id: str, *, revoked: bool = True) -> None:
        """Disable (or re-enable) a client: its token requests get ``invalid_client``."""
        self._config["clients"][client_id]["disabled"] = revoked
        self._push()

    def set_secret(self, client_id: str, secret: str) -> None:
        """Change a client's secret (the old one gets ``invalid_client``)."""
        self._config["clients"][client_id]["secret"] = secret
        self._push()

    def fail_with(self, status: int | None) -> None:
        """Make the token endpoint answer every request with HTTP ``status`` (``None``: stop)."""
        self._config["fail_with"] = status
        self._push()

    def hang(self, on: bool = True) -> None:
        """Make the token endpoint accept requests and not answer them (until ``hang(False)``)."""
        self._config["hang"] = on
        self._push()

    def revoke_tokens(self) -> None:
        """Every access token issued so far is inactive at introspection from now on."""
        self._config["tokens_valid_after"] = time.time()
        self._push()

    @property
    def token_lifetime(self) -> int:
        """Seconds an access token issued from now on lives (its ``expires_in``)."""
        return int(self._config["token_lifetime"])

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        self._config["token_lifetime"] = seconds
        self._push()

    # ------------------------------------------------------------- observation

    def log(self) -> list[dict[str, Any]]:
        """Every token request so far: ``client_id``, ``grant_type``, ``status`` (``None``: hung)."""
        reply = self._admin("GET", "/admin/log")
        entries: list[dict[str, Any]] = reply["log"]
        return entries

    def introspections(self, client_id: str | None = None) -> list[bool]:
        """What introspection answered (``active``) about each token it was asked about, in order.

        Only the tokens issued to ``client_id`` if given (an unknown token
        belongs to no client). The mail servers ask about every token a
        client logs in with: a ``False`` here is a token a login was refused for.
        """
        reply = self._admin("GET", "/admin/log")
        return [
            entry["active"]
            for entry in reply["introspections"]
            if client_id is None or entry["client_id"] == client_id
        ]

    def requests(self, client_id: str | None = None) -> int:
        """How many token requests came from ``client_id`` (or from anyone)."""
        return sum(1 for e in self.log() if client_id is None or e["client_id"] == client_id)

    def issued(self, client_id: str | None = None) -> list[str]:
        """The access tokens issued so far (to ``client_id``, or to anyone), oldest first.

        For tests that search outputs for the tokens a process under test
        was given. Read from the server's state file, so it works while the
        server is stopped too.
        """
        try:
            state = json.loads(self._path("issued.json").read_text())
        except FileNotFoundError:
            return []
        return [
            token
            for token, record in state["tokens"].items()
            if client_id is None or record["client_id"] == client_id
        ]

    def introspect(self, token: str) -> dict[str, Any]:
        """What introspection says about ``token`` (as the introspecting client asks).

        Not counted in :meth:`introspections`: those are the mail servers' questions.
        """
        body = urllib.parse.urlencode({"token": token}).encode()
        request = urllib.request.Request(
            f"http://{_HOST}:{self._ports['http']}/introspect",
            data=body,
            method="POST",
            headers={
                "Authorization": _basic(INTROSPECTOR, self._introspector_secret),
                _TEST_CALL: "1",
            },
        )
        with _DIRECT.open(request, timeout=5) as reply:
            answer: dict[str, Any] = json.loads(reply.read())
        return answer

    # ----------------------------------------------------------------- private

    def _path(self, name: str) -> Path:
        if self._dir is None:
            raise OAuthServerError("OAuthServer is not started")
        return self._dir / name

    def _write_certificates(self, directory: Path) -> None:
        import trustme  # test dependency

        ca = self._ca if self._ca is not None else trustme.CA(organization_name="oauth test CA")
        leaf = ca.issue_cert(_HOST, "localhost")
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        (directory / "server.pem").write_bytes(
            b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        )
        fd = os.open(directory / "server.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(leaf.private_key_pem.bytes())

    def _write_config(self) -> None:
        path = self._path("config.json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._config))
        tmp.replace(path)

    def _push(self) -> None:
        if self._dir is None:
            return
        self._write_config()
        if self._proc is not None:
            self._admin("PUT", "/admin/config", self._config)

    def _admin(self, method: str, path: str, payload: object = None) -> dict[str, Any]:
        if self._proc is None:
            raise OAuthServerError("the oauth server is stopped")
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"http://{_HOST}:{self._ports['http']}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with _DIRECT.open(request, timeout=5) as reply:
                answer: dict[str, Any] = json.loads(reply.read())
        except OSError as exc:
            raise OAuthServerError(f"admin {path}: {exc}; log: {self._log_tail()}") from exc
        return answer

    def _read_ready_line(self, proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + self._start_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.1):
                    return proc.stdout.readline().decode()
                if proc.poll() is not None:
                    break
        self.stop()
        raise OAuthServerError(f"oauth server did not start: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-30:])
        except OSError as exc:
            return f"<no log: {exc}>"


def _utc(epoch: float) -> Any:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _unverified_claims(jwt: str) -> dict[str, Any]:
    """The payload of a compact JWT, unverified: only to tell who is asking."""
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


# --------------------------------------------------------------------------
# The server process: authlib models and grants, a flask app, two listeners.
# --------------------------------------------------------------------------


class _State:
    """The server's memory: the pushed configuration and what it issued, under one lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.config: dict[str, Any] = json.loads((directory / "config.json").read_text())
        issued_file = directory / "issued.json"
        issued = json.loads(issued_file.read_text()) if issued_file.exists() else {}
        self.tokens: dict[str, dict[str, Any]] = issued.get("tokens", {})
        self.log: list[dict[str, Any]] = issued.get("log", [])
        self.introspections: list[dict[str, Any]] = issued.get("introspections", [])

    def save(self) -> None:
        """Write what was issued (caller holds the lock) so a restart keeps it."""
        path = self.directory / "issued.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"tokens": self.tokens, "log": self.log, "introspections": self.introspections}
            )
        )
        tmp.replace(path)

    def client(self, client_id: str) -> dict[str, Any] | None:
        record = self.config["clients"].get(client_id)
        return None if record is None or record["disabled"] else dict(record)


def _serve(directory: Path, https_port: int, http_port: int) -> None:
    """The server process's main: build the app, listen, print the ports, serve until SIGTERM."""
    from authlib.integrations.flask_oauth2 import (  # type: ignore[import-untyped]
        AuthorizationServer,
    )
    from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
        ClientMixin,
        InvalidClientError,
        TokenMixin,
        UnauthorizedClientError,
        grants,
    )
    from authlib.oauth2.rfc6750 import BearerTokenGenerator  # type: ignore[import-untyped]
    from authlib.oauth2.rfc7523 import (  # type: ignore[import-untyped]
        JWTBearerClientAssertion,
        JWTBearerGrant,
    )
    from authlib.oauth2.rfc7662 import IntrospectionEndpoint  # type: ignore[import-untyped]
    from flask import Flask, Response, jsonify, request
    from joserfc import jws, jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import RSAKey
    from werkzeug.serving import make_server

    state = _State(directory)
    auth_methods = ["client_secret_basic", "client_secret_post", "client_assertion_jwt"]

    class Client(ClientMixin):  # type: ignore[misc]
        def __init__(self, client_id: str, record: Mapping[str, Any]) -> None:
            self.client_id = client_id
            self.record = record

        def get_client_id(self) -> str:
            return self.client_id

        def get_default_redirect_uri(self) -> None:
            return None

        def get_allowed_scope(self, scope: str | None) -> str:
            return scope or ""

        def check_redirect_uri(self, redirect_uri: str) -> bool:
            return False

        def check_client_secret(self, client_secret: str) -> bool:
            secret = self.record.get("secret")
            return secret is not None and hmac.compare_digest(secret, client_secret)

        def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
            kind = self.record["kind"]
            if endpoint == "introspection":
                return kind == "introspector" and method == "client_secret_basic"
            if self.record.get("public_key"):
                return method == "client_assertion_jwt"
            return kind == "client" and method in ("client_secret_basic", "client_secret_post")

        def check_response_type(self, response_type: str) -> bool:
            return False

        def check_grant_type(self, grant_type: str) -> bool:
            if self.record["kind"] == "service_account":
                return grant_type == _JWT_BEARER
            return self.record["kind"] == "client" and grant_type in (
                "client_credentials",
                "refresh_token",
            )

    class Token(TokenMixin):  # type: ignore[misc]
        def __init__(self, record: Mapping[str, Any]) -> None:
            self.record = record

        def check_client(self, client: Client) -> bool:
            return bool(client.client_id == self.record["client_id"])

        def get_scope(self) -> str:
            return str(self.record.get("scope") or "")

        def get_expires_in(self) -> int:
            return int(self.record.get("expires_in", 0))

        def is_expired(self) -> bool:
            expires_at = self.record.get("expires_at")
            return expires_at is not None and time.time() >= expires_at

        def is_revoked(self) -> bool:
            issued_at = self.record.get("issued_at", 0.0)
            return bool(issued_at <= state.config["tokens_valid_after"])

        def get_user(self) -> str:
            return str(self.record["user"])

        def get_client(self) -> Client | None:
            record = state.client(self.record["client_id"])
            return Client(self.record["client_id"], record) if record else None

    def query_client(client_id: str) -> Client | None:
        record = state.client(client_id)
        return Client(client_id, record) if record else None

    def save_token(token: dict[str, Any], req: Any) -> None:
        client: Client = req.client
        user = req.user if req.user is not None else client.record["user"]
        now = time.time()
        with state.lock:
            state.tokens[token["access_token"]] = {
                "client_id": client.client_id,
                "user": user,
                "scope": token.get("scope", ""),
                "issued_at": now,
                "expires_in": token["expires_in"],
                "expires_at": now + token["expires_in"],
            }
            state.save()

    class ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
        """private_key_jwt as Entra takes it.

        PS256 or RS256; an ``x5c`` header (MSAL sends the certificate chain,
        beyond joserfc's default 512-byte header limit); the same assertion
        (same ``jti``) reused until it expires, as MSAL does for nine minutes.
        """

        registry = jws.JWSRegistry(algorithms=["PS256", "RS256"])
        registry.max_header_length = 16384

        def get_audiences(self) -> list[str]:
            return [request.base_url]

        def resolve_client_public_key(self, client: Client) -> RSAKey:
            return RSAKey.import_key(client.record["public_key"])

        def extract_assertion(self, assertion: str) -> tuple[Any, dict[str, Any]]:
            try:
                obj = jws.extract_compact(assertion.encode(), registry=self.registry)
            except (JoseError, ValueError) as exc:
                raise InvalidClientError(description="Invalid JWT assertion.") from exc
            return obj.headers(), _unverified_claims(assertion)

        def process_assertion_claims(self, assertion: str, key: RSAKey) -> Any:
            try:
                token = jwt.decode(assertion, key, registry=self.registry)
            except JoseError as exc:
                raise InvalidClientError(description=exc.description) from exc
            self.verify_claims(token.claims)
            return token.claims

    class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = auth_methods

    class RefreshToken(grants.RefreshTokenGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = auth_methods

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            record = state.config["refresh_tokens"].get(refresh_token)
            return Token(record) if record else None

        def authenticate_user(self, refresh_token: Token) -> str:
            return refresh_token.get_user()

        def revoke_old_credential(self, refresh_token: Token) -> None:
            """Refresh tokens stay valid (Google's and Entra's are long-lived)."""

    class ServiceAccountGrant(JWTBearerGrant):  # type: ignore[misc]
        """Google's JWT-bearer grant: the scope is a claim, ``sub`` the delegated user."""

        def resolve_issuer_client(self, issuer: str) -> Client | None:
            return query_client(issuer)

        def resolve_client_public_key(self, client: Client) -> RSAKey:
            return RSAKey.import_key(client.record["public_key"])

        def authenticate_user(self, subject: str) -> str:
            return subject

        def has_granted_permission(self, client: Client, user: str) -> bool:
            return True

        def get_audiences(self) -> list[str]:
            # google-auth always names Google's endpoint as the audience,
            # whatever token_uri it posts to; Google's accepts that.
            return [request.base_url, GOOGLE_AUDIENCE]

        def create_token_response(self) -> tuple[int, dict[str, Any], Any]:
            claims = _unverified_claims(self.request.form["assertion"])  # verified above
            scope = str(claims.get("scope", ""))
            if not scope or not set(scope.split()) <= set(self.request.client.record["scopes"]):
                raise UnauthorizedClientError(
                    "Client is unauthorized to retrieve access tokens using this method, "
                    "or client not authorized for any of the scopes requested."
                )
            token = self.generate_token(
                scope=scope, user=self.request.user, include_refresh_token=False
            )
            self.save_token(token)
            return 200, token, self.TOKEN_RESPONSE_HEADER

    class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
        def authenticate_endpoint_client(self, req: Any) -> Client | None:
            if "Authorization" not in req.headers:
                return None  # Dovecot without credentials: allowed here, on loopback
            client: Client = super().authenticate_endpoint_client(req)
            return client

        def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
            record = state.tokens.get(token_string)
            return Token(record) if record else None

        def check_permission(self, token: Token, client: Client | None, req: Any) -> bool:
            return True

        def introspect_token(self, token: Token) -> dict[str, Any]:
            record = token.record
            return {
                "active": True,
                "username": record["user"],
                "sub": record["user"],
                "client_id": record["client_id"],
                "scope": record["scope"],
                "token_type": "Bearer",
                "iat": int(record["issued_at"]),
                "exp": int(record["expires_at"]),
            }

    def expires_in(client: Client, grant_type: str) -> int:
        return int(state.config["token_lifetime"])

    def new_token(**_: object) -> str:
        return "at-" + secrets.token_urlsafe(32)

    app = Flask("oauth_server")
    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_token_generator("default", BearerTokenGenerator(new_token, None, expires_in))
    server.register_client_auth_method(
        ClientAssertion.CLIENT_AUTH_METHOD, ClientAssertion(validate_jti=False)
    )
    server.register_grant(ClientCredentials)
    server.register_grant(RefreshToken)
    server.register_grant(ServiceAccountGrant)
    server.register_endpoint(Introspection)

    def requester() -> tuple[str | None, str | None]:
        """Who asks (unverified: for the request log only) and for what grant."""
        form = request.form
        client_id = form.get("client_id")
        if request.authorization and request.authorization.username:
            client_id = request.authorization.username
        if "client_assertion" in form:
            client_id = _unverified_claims(form["client_assertion"]).get("sub", client_id)
        if "assertion" in form:
            client_id = _unverified_claims(form["assertion"]).get("iss", client_id)
        return client_id, form.get("grant_type")

    @app.post("/token")
    @app.post("/<tenant>/oauth2/v2.0/token")
    def token(tenant: str | None = None) -> Any:
        client_id, grant_type = requester()
        entry: dict[str, Any] = {"client_id": client_id, "grant_type": grant_type, "status": None}
        with state.lock:
            state.log.append(entry)
            state.save()
        while state.config["hang"]:
            time.sleep(0.05)
        failing = state.config["fail_with"]
        if failing is not None:
            response: Any = Response("the token service is unavailable\n", status=failing)
        else:
            response = server.create_token_response()
        with state.lock:
            entry["status"] = response.status_code
            state.save()
        return response

    @app.post("/introspect")
    def introspect() -> Any:
        response = server.create_endpoint_response(Introspection.ENDPOINT_NAME)
        if _TEST_CALL in request.headers:
            return response
        answer = response.get_json(silent=True) or {}
        with state.lock:
            record = state.tokens.get(request.form.get("token", ""))
            state.introspections.append(
                {
                    "client_id": record["client_id"] if record else None,
                    "active": answer.get("active") is True,
                }
            )
            state.save()
        return response

    def metadata(base: str, token_endpoint: str, issuer: str) -> dict[str, Any]:
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": token_endpoint,
            "introspection_endpoint": f"{request.host_url}introspect",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "grant_types_supported": ["client_credentials", "refresh_token", _JWT_BEARER],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
            ],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get("/.well-known/openid-configuration")
    @app.get("/.well-known/oauth-authorization-server")
    def root_metadata() -> Any:
        base = request.host_url.rstrip("/")
        return jsonify(metadata(base, f"{base}/token", base))

    @app.get("/<tenant>/v2.0/.well-known/openid-configuration")
    def tenant_metadata(tenant: str) -> Any:
        base = f"{request.host_url.rstrip('/')}/{tenant}"
        return jsonify(metadata(base, f"{base}/oauth2/v2.0/token", f"{base}/v2.0"))

    @app.put("/admin/config")
    def put_config() -> Any:
        state.config = request.get_json()
        return jsonify({"ok": True})

    @app.get("/admin/log")
    def get_log() -> Any:
        with state.lock:
            return jsonify(
                {
                    "log": copy.deepcopy(state.log),
                    "introspections": copy.deepcopy(state.introspections),
                }
            )

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(directory / "server.pem", directory / "server.key")
    listeners = {
        "https": make_server(_HOST, https_port, app, threaded=True, ssl_context=tls),
        "http": make_server(_HOST, http_port, app, threaded=True),
    }
    for listener in listeners.values():
        threading.Thread(target=listener.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=_orphaned, args=(stop,), daemon=True).start()
    print(json.dumps({name: s.server_port for name, s in listeners.items()}), flush=True)
    stop.wait()
    for listener in listeners.values():
        listener.shutdown()


def _orphaned(stop: threading.Event) -> None:
    """Stop when the test process is gone (killed before it could stop us)."""
    parent = os.getppid()
    while not stop.wait(0.5):
        if os.getppid() != parent:
            stop.set()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
