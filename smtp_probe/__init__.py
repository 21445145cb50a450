"""smtp_probe: end-to-end mail-flow monitoring (SMTP in, IMAP out, Prometheus)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smtp-probe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
