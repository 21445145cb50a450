"""Client TLS contexts: verifying by default, built once and shared.

Building an ``SSLContext`` re-reads the CA bundle (tens of milliseconds of
CPU); a peer exporter spent most of its per-run CPU doing exactly that, so
contexts are cached per (verify, CA file).
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

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
