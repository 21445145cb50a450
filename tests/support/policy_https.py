"""A real HTTPS web server for MTA-STS policies: stunnel on loopback port 443 in front of a tiny HTTP server.

It stands for the nginx/Apache that hosts ``https://mta-sts.<domain>/.well-known/mta-sts.txt``.
TLS is real (``stunnel``, a production TLS terminator, with certificates
from a throwaway trustme CA); behind it a stdlib ``http.server`` answers
per ``Host`` header with what the test put there (a policy, a 404, a
redirect). RFC 8461 fixes the port to 443, so each front listens on port
443 of its own loopback address (127.x.y.z, picked free at start, so
parallel test runs do not collide); tests point ``mta-sts.<domain>`` A
records at :attr:`good`, :attr:`wrong_name` or :attr:`untrusted`:

- ``good``: a certificate for every name in ``names``, from :attr:`ca_file`'s CA;
- ``wrong_name``: a certificate from the same CA, but for ``wrong-name.example.test`` only;
- ``untrusted``: a certificate for ``names`` from a CA nobody trusts.

Binding port 443 needs root (CI runs as root).
"""

from __future__ import annotations

import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from tests.support.prom import stop_process

HTTPS_PORT = 443


@dataclass(frozen=True)
class Page:
    """What the backend answers for one host."""

    status: int = 200
    body: str = ""
    content_type: str = "text/plain"
    location: str | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Backend

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":", 1)[0].lower()
        self.server.requests.append((host, self.path))
        page = self.server.pages.get(host)
        if page is None or self.path != "/.well-known/mta-sts.txt":
            page = Page(404, "not found\n")
        data = page.body.encode()
        self.send_response(page.status)
        self.send_header("Content-Type", page.content_type)
        self.send_header("Content-Length", str(len(data)))
        if page.location:
            self.send_header("Location", page.location)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


class _Backend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pages: dict[str, Page] = {}
        self.requests: list[tuple[str, str]] = []


def free_loopback_443() -> str:
    """A 127.x.y.z address whose port 443 is free right now."""
    rng = random.Random()  # noqa: S311 (picks an address, not a secret)
    for _ in range(200):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 254)}.{rng.randint(2, 254)}"
        with socket.socket() as sock:
            try:
                sock.bind((address, HTTPS_PORT))
            except OSError:
                continue
            return address
    raise AssertionError("no free loopback address for port 443 (tests must run as root)")


class PolicyWebServer:
    """Three HTTPS fronts on port 443 (see the module docstring) sharing one page table."""

    def __init__(self, names: list[str]) -> None:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            pytest.fail("stunnel is not installed: apt-get install stunnel4 (the tests need it)")
        self.dir = Path(tempfile.mkdtemp(prefix="policy-https-"))
        ca, stranger = trustme.CA(), trustme.CA()
        self.ca_file = self.dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        certs = {
            "good": ca.issue_cert(*names),
            "wrong_name": ca.issue_cert("wrong-name.example.test"),
            "untrusted": stranger.issue_cert(*names),
        }
        self.backend = _Backend()
        self._thread = threading.Thread(target=self.backend.serve_forever, daemon=True)
        self._thread.start()
        backend_port = self.backend.server_address[1]
        self.addresses: dict[str, str] = {}
        sections = []
        for label, leaf in certs.items():
            chain, key = self.dir / f"{label}.pem", self.dir / f"{label}.key"
            chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(str(key))
            address = self.addresses[label] = free_loopback_443()
            sections.append(
                f"[{label}]\naccept = {address}:{HTTPS_PORT}\n"
                f"connect = 127.0.0.1:{backend_port}\ncert = {chain}\nkey = {key}\n"
            )
        (self.dir / "stunnel.conf").write_text(
            "foreground = yes\npid =\ndebug = notice\n" + "".join(sections)
        )
        self._log = (self.dir / "stunnel.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, str(self.dir / "stunnel.conf")], stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_listening(20.0)

    @property
    def good(self) -> str:
        return self.addresses["good"]

    @property
    def wrong_name(self) -> str:
        return self.addresses["wrong_name"]

    @property
    def untrusted(self) -> str:
        return self.addresses["untrusted"]

    def serve(self, host: str, page: Page) -> None:
        """Answer ``page`` for requests to ``host`` (``mta-sts.<domain>``)."""
        self.backend.pages[host.lower()] = page

    def log(self) -> str:
        return (self.dir / "stunnel.log").read_text(errors="replace")[-3000:]

    def _wait_listening(self, timeout: float) -> None:
        """Wait until every front completes a TLS handshake (unverified: this only checks it is up)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        end = time.monotonic() + timeout
        pending = set(self.addresses.values())
        while pending and time.monotonic() < end:
            assert self.proc.poll() is None, f"stunnel exited:\n{self.log()}"
            for address in list(pending):
                try:
                    with (
                        socket.create_connection((address, HTTPS_PORT), timeout=2) as raw,
                        context.wrap_socket(raw),
                    ):
                        pending.discard(address)
                except OSError:
                    pass
            time.sleep(0.1)
        if pending:
            raise AssertionError(f"stunnel not listening on {pending}:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
        self.backend.shutdown()
        self.backend.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)
