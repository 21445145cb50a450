"""``smtp-probe check`` starts fast: it imports only what its flags need; ``--version`` is right.

A monitor starts ``check`` every minute per route, and most of its start-up
is imports. The daemon's machinery (pydantic and YAML for config files,
structlog, Prometheus, aiohttp, APScheduler, jinja2) and the IMAP leg
(imapclient) stay out of an SMTP-only check with flags; the version is a
literal, not ``importlib.metadata``. Checked on the real program in a
subprocess, from ``python -X importtime``'s account of what it imported
after start-up (``site`` and the ``.pth`` files of the machine are not ours).
bench/bench_check_startup.py measures what this buys.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import smtp_probe
from smtp_probe.check import IMAP_PASSWORD_ENV, SMTP_PASSWORD_ENV
from tests.support.importtime import IMPORT_LINE, heavy
from tests.support.loopback_smtpd import closed_port as refusing_port

REPO = Path(__file__).resolve().parents[2]
PASSWORD_ENVS = (SMTP_PASSWORD_ENV, IMAP_PASSWORD_ENV)
ADDRESSES = ["--from", "probe@sender.test", "--to", "sink@rcpt.test"]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (see :func:`loopback_smtpd.closed_port`)."""
    with refusing_port() as port:
        yield port


def imported_by(
    argv: list[str], env: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime ARGV``; the process and every module it imported after ``site``."""
    # No password from the real environment: it would change which path the check takes.
    inherited = {k: v for k, v in os.environ.items() if k not in PASSWORD_ENVS}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=REPO,
        env={**inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    names = [m["name"] for m in map(IMPORT_LINE.match, done.stderr.splitlines()) if m]
    # -X importtime lists a module once its own imports are done: site (with
    # everything the machine's .pth files import) comes before our program's.
    assert "site" in names, done.stderr[-2000:]
    return done, set(names[names.index("site") + 1 :])


def test_smtp_only_check_imports_the_engine_and_nothing_heavy(closed_port: int) -> None:
    done, modules = imported_by(
        ["-m", "smtp_probe", "check", "--smtp", f"127.0.0.1:{closed_port}", "--smtp-tls", "none",
         *ADDRESSES, "--format", "nagios"],
    )  # fmt: skip

    # The check really ran (connection refused: CRITICAL) and its output got out
    # before the process ended without the interpreter's teardown.
    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert done.stdout.startswith("SMTP-PROBE CRITICAL - send_failed at connect:"), done.stdout
    assert {"smtp_probe.probe.run", "aiosmtplib", "asyncio"} <= modules
    assert heavy(modules) == []
    assert "smtp_probe.probe.imap" not in modules
    assert "json" not in modules, "only --format json needs it"


def test_check_with_a_mailbox_imports_imapclient(closed_port: int) -> None:
    done, modules = imported_by(
        ["-m", "smtp_probe", "check", "--smtp", f"127.0.0.1:{closed_port}", "--smtp-tls", "none",
         *ADDRESSES, "--imap", f"127.0.0.1:{closed_port}", "--imap-tls", "none"],
        env={IMAP_PASSWORD_ENV: "unused-password"},
    )  # fmt: skip

    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert "FAILED at imap_connect" in done.stdout
    assert {"imapclient", "smtp_probe.probe.imap"} <= modules
    # imapclient reads its own version with importlib.metadata: its import, not ours.
    assert {m for m in heavy(modules) if not m.startswith(("imapclient", "importlib."))} == set()


def test_check_with_token_commands_builds_its_oauth_clients_without_an_oauth_library(
    closed_port: int,
) -> None:
    """A token command is the config's token_command client: no msal, google-auth or authlib."""
    command = f"{sys.executable} -c 'print(1)'"
    done, modules = imported_by(
        ["-m", "smtp_probe", "check", "--smtp", f"127.0.0.1:{closed_port}", "--smtp-tls", "none",
         *ADDRESSES, "--smtp-user", "probe", "--smtp-token-command", command,
         "--imap", f"127.0.0.1:{closed_port}", "--imap-tls", "none",
         "--imap-token-command", command, "--format", "nagios"],
    )  # fmt: skip

    assert done.returncode == 2, done.stdout + done.stderr[-2000:]
    assert done.stdout.startswith("SMTP-PROBE CRITICAL"), done.stdout
    assert {"smtp_probe.oauth", "smtp_probe.oauth.settings", "smtp_probe.oauth.cache"} <= modules
    assert {m for m in heavy(modules) if not m.startswith(("imapclient", "importlib."))} == set()


def test_building_every_kind_of_oauth_client_and_its_token_source_imports_no_oauth_library() -> (
    None
):
    code = (
        "from pathlib import Path\n"
        "from smtp_probe.oauth import token_source\n"
        "from smtp_probe.oauth.settings import *\n"
        "from smtp_probe.secret import Secret\n"
        "for provider in (MicrosoftClient('t', 'c', Secret('s')), GoogleClient(Path('sa.json'), "
        "'a@b'), GenericClient('https://idp.test/token', 'c'), CommandClient(('true',))):\n"
        "    token_source(OAuthClient('c', provider))\n"
    )
    done, modules = imported_by(["-c", code])

    assert done.returncode == 0, done.stderr[-2000:]
    assert {"smtp_probe.oauth.settings", "smtp_probe.oauth.cache"} <= modules
    assert heavy(modules) == []


def test_check_from_a_config_file_imports_the_schema(tmp_path: Path) -> None:
    """``check --config FILE --probe NAME`` reads the file: pydantic and YAML are its business."""
    config = tmp_path / "config.yml"
    config.write_text("probes: []\n", encoding="utf-8")
    done, modules = imported_by(
        ["-m", "smtp_probe", "check", "--config", str(config), "--probe", "absent"]
    )

    assert done.returncode == 3, done.stdout + done.stderr[-2000:]
    assert {"pydantic", "yaml"} <= modules


@pytest.mark.parametrize(
    ("code", "module"),
    [
        ("import smtp_probe.config", "smtp_probe.config"),
        ("import smtp_probe.config.values", "smtp_probe.config.values"),
        ("import smtp_probe.probe.spec", "smtp_probe.probe.spec"),
        # Building check's probe from its flags, a mailbox included, as `smtp-probe check` does.
        (
            "from smtp_probe.cli import build_parser\n"
            "from smtp_probe.check import probe_from_args\n"
            "args = build_parser().parse_args(['check', '--smtp', 'mail.example:587', "
            "'--from', 'a@example.test', '--to', 'b@example.test', '--imap', 'mail.example', "
            "'--timeout', '30s', '--helo', 'probe.example'])\n"
            "probe_from_args(args, {'SMTP_PROBE_IMAP_PASSWORD': 'pw'})",
            "smtp_probe.check",
        ),
        # A token source of every provider kind, built but not yet asked for a token.
        (
            "from pathlib import Path\n"
            "from smtp_probe.oauth import token_source\n"
            "from smtp_probe.oauth.settings import *\n"
            "from smtp_probe.secret import Secret\n"
            "for p in (MicrosoftClient('t', 'c', Secret('s')), GenericClient('https://i/t', 'c'),\n"
            "          GoogleClient(service_account_file=Path('sa.json')), CommandClient(('h',))):\n"
            "    token_source(OAuthClient('n', p))",
            "smtp_probe.oauth.cache",
        ),
    ],
)
def test_what_check_needs_imports_nothing_heavy(code: str, module: str) -> None:
    """The config package's values and the route's types are light: the schema and YAML are not."""
    done, modules = imported_by(["-c", code])

    assert done.returncode == 0, done.stderr[-2000:]
    assert module in modules
    assert heavy(modules) == []
    assert "smtp_probe.config.runtime" not in modules, "the daemon's types: imported on first use"


def test_version_is_the_projects_without_importlib_metadata() -> None:
    done, modules = imported_by(["-m", "smtp_probe", "--version"])

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"smtp-probe {smtp_probe.__version__}\n"
    assert "importlib.metadata" not in modules
    # pyproject.toml takes the version from the package: one source, no copy to forget.
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "smtp_probe.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[.+-]\w+)*", smtp_probe.__version__)
