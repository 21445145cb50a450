"""Real TLS handshakes in memory and certificate chains with chosen expiry dates, for TLS tests.

:func:`handshake` runs the stdlib's own TLS between two ``ssl.SSLObject``
ends over memory BIOs (no network). :func:`chain` builds a root, an
intermediate and a leaf with ``cryptography`` (trustme cannot give an
intermediate its own notAfter), so a test can make the intermediate expire
before the leaf.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:  # trustme is only a type here: the module loads where trustme is missing
    import trustme

HOST = "mx.example.test"


def handshake(
    server: trustme.LeafCert | ssl.SSLContext, client: ssl.SSLContext, host: str = HOST
) -> ssl.SSLObject:
    """A finished TLS handshake against a server presenting ``server``; the client's end.

    ``server`` is a trustme leaf (its chain is presented) or a ready server context.

    Raises:
        AssertionError: the handshake did not finish in 20 rounds.
    """
    if isinstance(server, ssl.SSLContext):
        server_context = server
    else:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.configure_cert(server_context)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_end = client.wrap_bio(c_in, c_out, server_hostname=host)
    server_end = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client_end), ("server", server_end)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_end
    raise AssertionError("handshake did not finish")


@dataclass(frozen=True)
class Chain:
    """A root CA, an intermediate and a leaf for :data:`HOST`, as PEM files."""

    root_pem: Path
    chain_pem: Path
    """Leaf then intermediate: what a server presents."""
    key_pem: Path
    leaf_not_after: datetime
    intermediate_not_after: datetime

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting leaf + intermediate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.chain_pem, self.key_pem)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the root."""
        return ssl.create_default_context(cafile=str(self.root_pem))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_after: datetime,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Python 3.13's default contexts verify with X509_STRICT, which wants both.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def chain(directory: Path, *, leaf_days: float, intermediate_days: float) -> Chain:
    """Write a root (10 years), an intermediate and a leaf expiring in the given days.

    ``directory`` is created if missing.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Test Root", root_key, "Test Root", root_key,
                        now + timedelta(days=3650), ca=True)  # fmt: skip
    mid_after = now + timedelta(days=intermediate_days)
    mid = _certificate("Test Intermediate", mid_key, "Test Root", root_key, mid_after, ca=True)
    leaf_after = now + timedelta(days=leaf_days)
    leaf = _certificate(HOST, leaf_key, "Test Intermediate", mid_key, leaf_after, ca=False)
    pem = serialization.Encoding.PEM
    paths = Chain(
        root_pem=directory / "root.pem",
        chain_pem=directory / "chain.pem",
        key_pem=directory / "key.pem",
        leaf_not_after=leaf_after,
        intermediate_not_after=mid_after,
    )
    paths.root_pem.write_bytes(root.public_bytes(pem))
    paths.chain_pem.write_bytes(leaf.public_bytes(pem) + mid.public_bytes(pem))
    paths.key_pem.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths
