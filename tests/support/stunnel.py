"""A real stunnel that terminates TLS in front of the mail stack's Postfix, with our certificate.

Many sites put implicit TLS (SMTPS, port 465) in front of an MTA with
stunnel or a load balancer; the certificate a client sees is then the
front's, not Postfix's. Tests use it to present a certificate of their
choosing (one that expires in two days) on a real, delivering route
without restarting the shared Postfix: the bytes inside TLS go to Postfix's
plain SMTP port unchanged.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.prom import free_port, stop_process


class Stunnel:
    """``stunnel`` accepting TLS on a free 127.0.0.1 port, forwarding to ``backend_port``."""

    def __init__(self, backend_port: int, cert_chain: Path, key: Path, ca_file: Path) -> None:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            pytest.fail("stunnel is not installed: apt-get install stunnel4 (the tests need it)")
        self.dir = Path(tempfile.mkdtemp(prefix="stunnel-"))
        self.port = free_port()
        self.ca_file = ca_file
        (self.dir / "stunnel.conf").write_text(
            "foreground = yes\npid =\ndebug = notice\n"
            f"[smtps]\naccept = 127.0.0.1:{self.port}\nconnect = 127.0.0.1:{backend_port}\n"
            f"cert = {cert_chain}\nkey = {key}\n"
        )
        self._log = (self.dir / "stunnel.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, str(self.dir / "stunnel.conf")], stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_greeting(20.0)

    def log(self) -> str:
        return (self.dir / "stunnel.log").read_text(errors="replace")[-3000:]

    def _wait_greeting(self, timeout: float) -> None:
        """Wait until a verifying TLS client gets Postfix's ``220`` through the front."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"stunnel exited:\n{self.log()}"
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw,
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
                ):
                    if tls.recv(512).startswith(b"220"):
                        tls.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"stunnel gave no greeting in {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
