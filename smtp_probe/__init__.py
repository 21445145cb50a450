"""smtp_probe: end-to-end mail-flow monitoring (SMTP in, IMAP out, Prometheus).

``__version__`` is the project's one version number: ``pyproject.toml``
reads it from here (``[tool.setuptools.dynamic]``), so the package metadata,
``smtp-probe --version`` and the ``build_info`` metric cannot disagree. A
literal rather than ``importlib.metadata.version()``: that costs ~20-30 ms
at every start of ``smtp-probe check``, and is stale in an editable install.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
