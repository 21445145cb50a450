"""``smtp-probe demo``: the embedded mail sandbox plus the daemon, for a first look.

The sandbox listens on the loopback ports named in the packaged ``demo.yml``
(``config/demo.yml`` in the source tree), the daemon runs that config, and
the status page and metrics URLs are printed. Ctrl-C stops both.
"""

from __future__ import annotations

import sys
from importlib import resources

from smtp_probe.app import serve
from smtp_probe.config import parse_config
from smtp_probe.config.runtime import Config, ServerSettings
from smtp_probe.sandbox import MailSandbox, SandboxError
from smtp_probe.server.webconfig import WebGuard


def demo_config() -> Config:
    """The packaged demo config (``smtp_probe/demo.yml``)."""
    text = resources.files("smtp_probe").joinpath("demo.yml").read_text(encoding="utf-8")
    return parse_config(text)


async def run_demo(listen: ServerSettings, guard: WebGuard | None = None) -> int:
    """Start the sandbox and the daemon; return the exit code when stopped.

    ``guard`` is the ``--web.config.file`` the demo's endpoints obey.
    """
    config = demo_config()
    smtp = config.probes[0].spec.smtp
    mailbox = config.probes[0].spec.mailbox
    assert mailbox is not None  # noqa: S101 - the packaged demo config has one
    sandbox = MailSandbox(host=smtp.host, smtp_port=smtp.port, imap_port=mailbox.port)
    try:
        await sandbox.start()
    except SandboxError as exc:
        print(f"smtp-probe demo: error: {exc}", file=sys.stderr)
        return 3

    def announce(bound: ServerSettings) -> None:
        scheme = "https" if guard is not None and guard.config.tls is not None else "http"
        base = f"{scheme}://{bound.host or '127.0.0.1'}:{bound.port}"
        print(
            f"\nsmtp-probe demo is running: mail sandbox on {smtp.host} "
            f"(SMTP :{smtp.port}, IMAP :{mailbox.port})\n"
            f"  status page: {base}/\n"
            f"  metrics:     {base}/metrics\n"
            f"  run now:     {base}/probe?name={config.probes[0].spec.name}\n"
            "Press Ctrl-C to stop.\n",
            file=sys.stderr,
            flush=True,
        )

    try:
        return await serve(config, listen=listen, on_started=announce, guard=guard)
    except OSError as exc:
        print(f"smtp-probe demo: error: cannot listen on {listen.host}:{listen.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)  # fmt: skip
        return 3
    finally:
        await sandbox.stop()
