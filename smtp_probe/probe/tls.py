"""Client TLS contexts: verifying by default, built once and shared.

Building an ``SSLContext`` re-reads the CA bundle (tens of milliseconds of
CPU); a peer exporter spent most of its per-run CPU doing exactly that, so
contexts are cached per (verify, CA file).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from datetime import UTC, datetime
from pathlib import Path

from smtp_probe.probe.result import TlsFacts
from smtp_probe.probe.spec import TlsSettings


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """Return the shared client context for ``settings``.

    Raises:
        OSError: the CA file cannot be read.
        ssl.SSLError: the CA file holds no usable certificate.
    """
    return _context(settings.verify, str(settings.ca_file) if settings.ca_file else None)


@functools.lru_cache(maxsize=32)
def _context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    # create_default_context verifies chain and host name, unlike the
    # stdlib's implicit contexts for smtplib/imaplib (which verify nothing).
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_verify_error(exc: BaseException) -> str:
    """A one-line reason for a failed handshake, saying plainly when verification failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return str(exc)


def ca_file_problem(path: Path) -> str | None:
    """Say why ``path`` can't be used as a CA file, or ``None`` if it can."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        return f"CA file {path} does not exist"
    except ssl.SSLError:  # a subclass of OSError: test it first
        return f"CA file {path} holds no PEM certificate"
    except OSError as exc:
        return f"CA file {path} cannot be read: {exc.strerror or exc}"
    return None


def tls_facts(connection: ssl.SSLObject | ssl.SSLSocket, *, verified: bool) -> TlsFacts:
    """The facts of an established TLS ``connection``, its certificates read in binary form.

    ``getpeercert()`` returns an empty dict when verification is off, so
    the DER certificate is parsed with ``cryptography`` instead. Where
    Python hands over the presented chain (3.13+), ``not_after`` is its
    earliest; otherwise the leaf's (see :class:`TlsFacts`). A certificate
    that cannot be parsed gives empty subject and issuer and no
    ``not_after`` rather than an error: the run itself went fine.
    """
    cipher = connection.cipher()
    der = connection.getpeercert(binary_form=True)
    subject = issuer = expiring = ""
    not_after: float | None = None
    if der:
        with contextlib.suppress(ValueError):
            subject, issuer, not_after = certificate_facts(der)
    chain = presented_chain(connection)
    if chain is not None and not_after is not None:
        for cert in chain[1:]:
            try:
                other_subject, _, other_after = certificate_facts(cert)
            except ValueError:
                continue
            if other_after < not_after:
                not_after, expiring = other_after, other_subject
    return TlsFacts(
        version=connection.version(),
        cipher=cipher[0] if cipher else None,
        subject=subject,
        issuer=issuer,
        not_after=not_after,
        verified=verified,
        chain_length=None if chain is None else len(chain),
        expiring_subject=expiring,
    )


def presented_chain(connection: ssl.SSLObject | ssl.SSLSocket) -> list[bytes] | None:
    """The DER certificates the peer presented, leaf first; ``None`` where Python can't tell.

    ``get_unverified_chain()`` is public from Python 3.13. Before that the
    chain is reachable only through the private ``_sslobj``, which this
    does not use; the caller then has the leaf alone. An early 3.13 that
    returned certificate objects instead of bytes counts as "can't tell".
    """
    getter = getattr(connection, "get_unverified_chain", None)
    if getter is None:
        return None
    chain = getter()
    if not isinstance(chain, list) or not all(isinstance(c, bytes) for c in chain):
        return None
    return chain


def certificate_facts(der: bytes) -> tuple[str, str, float]:
    """Subject, issuer (RFC 4514) and notAfter (epoch) of a DER certificate.

    Raises:
        ValueError: ``der`` is not a certificate.
    """
    # Imported here: ``check`` start-up stays free of cryptography's x509 until TLS is used.
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(der)
    return (
        certificate.subject.rfc4514_string(),
        certificate.issuer.rfc4514_string(),
        certificate.not_valid_after_utc.timestamp(),
    )


def describe_facts(facts: TlsFacts, now: float) -> str:
    """One transcript line, e.g. ``TLS certificate: CN=mx, issuer CN=CA, expires 2027-03-01 (84 days), verified``."""
    if facts.not_after is None:
        expiry = "no certificate read"
    else:
        day = datetime.fromtimestamp(facts.not_after, UTC).date().isoformat()
        left = facts.days_left(now)
        expiry = f"expires {day} ({int(left // 1) if left is not None else '?'} days)"
    if facts.expiring_subject:
        expiry += f" (first to expire in the chain: {facts.expiring_subject})"
    checked = "verified" if facts.verified else "not verified (verification off)"
    subject = facts.subject or "(no subject)"
    issuer = facts.issuer or "(no issuer)"
    return f"TLS certificate: {subject}, issuer {issuer}, {expiry}, {checked}"
