"""Command line: argument parsing and exit codes only; the work happens elsewhere.

Usage errors exit 3 (UNKNOWN, as monitoring plugins do) with one line naming
the flag, never a traceback. Passwords are read from files or the
environment, never from argv, where ``ps`` would show them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from smtp_probe import __version__, log
from smtp_probe.config import (
    Config,
    ConfigError,
    ServerSettings,
    load_config,
    parse_listen,
    parse_shard,
)
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.tls import ca_file_problem
from smtp_probe.report import ExitCode, exit_code, render_json, render_nagios, render_text
from smtp_probe.secret import Secret
from smtp_probe.units import parse_duration, parse_host_port

SMTP_PASSWORD_ENV = "SMTP_PROBE_SMTP_PASSWORD"  # noqa: S105 - a variable name, not a password
IMAP_PASSWORD_ENV = "SMTP_PROBE_IMAP_PASSWORD"  # noqa: S105 - a variable name, not a password
_SMTP_PORTS = {TlsMode.NONE: 25, TlsMode.STARTTLS: 587, TlsMode.TLS: 465}
_IMAP_PORTS = {TlsMode.NONE: 143, TlsMode.STARTTLS: 143, TlsMode.TLS: 993}


class UsageError(Exception):
    """Bad command-line input; the message names the flag."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 3, not 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.UNKNOWN, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``smtp-probe`` argument parser."""
    parser = _Parser(
        prog="smtp-probe",
        description="End-to-end mail-flow monitor: send a tagged message over SMTP, "
        "confirm it arrives over IMAP.",
    )
    parser.add_argument("--version", action="version", version=f"smtp-probe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    check = commands.add_parser(
        "check",
        help="run one probe now and print the session",
        description="Run one probe by hand and print the SMTP/IMAP session as a readable, "
        "redacted transcript. Exit codes: 0 OK, 1 WARNING (slow or junk), 2 CRITICAL, 3 UNKNOWN.",
    )
    smtp = check.add_argument_group("SMTP (sending)")
    from_config = check.add_argument_group("or run a probe of a config file")
    from_config.add_argument("--config", metavar="FILE", type=Path, help="the daemon's config")
    from_config.add_argument("--probe", metavar="NAME", help="the probe of --config to run")
    smtp.add_argument("--smtp", metavar="HOST[:PORT]", help="server to submit to")
    smtp.add_argument(
        "--smtp-tls",
        choices=[m.value for m in TlsMode],
        default="starttls",
        help="none, starttls (default; port 587) or tls (implicit, port 465)",
    )
    smtp.add_argument("--smtp-user", metavar="USER", help="log in with AUTH as USER")
    smtp.add_argument(
        "--smtp-password-file",
        metavar="FILE",
        type=Path,
        help=f"file holding the SMTP password (or set {SMTP_PASSWORD_ENV})",
    )
    smtp.add_argument("--from", dest="mail_from", metavar="ADDR", help="envelope sender")
    smtp.add_argument("--to", dest="rcpt_to", metavar="ADDR", help="recipient")
    smtp.add_argument(
        "--helo", metavar="NAME", help="name to greet with (default: this host's name)"
    )

    imap = check.add_argument_group("IMAP (confirming delivery; without --imap, stop after SMTP)")
    imap.add_argument("--imap", metavar="HOST[:PORT]", help="mailbox server to watch")
    imap.add_argument(
        "--imap-tls",
        choices=[m.value for m in TlsMode],
        default="tls",
        help="none, starttls (port 143) or tls (default; port 993)",
    )
    imap.add_argument(
        "--imap-user", metavar="USER", help="mailbox login (default: the --to address)"
    )
    imap.add_argument(
        "--imap-password-file",
        metavar="FILE",
        type=Path,
        help=f"file holding the IMAP password (or set {IMAP_PASSWORD_ENV})",
    )
    imap.add_argument("--folder", default="INBOX", help="folder the message should land in")
    imap.add_argument("--no-idle", action="store_true", help="never use IMAP IDLE; poll only")

    common = check.add_argument_group("common")
    verify = common.add_mutually_exclusive_group()
    verify.add_argument("--ca-file", metavar="PEM", type=Path, help="trust these CAs (both legs)")
    verify.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (both legs)"
    )
    common.add_argument(
        "--timeout",
        metavar="DURATION",
        help="deadline for the whole run, e.g. 30s, 2m (default 60s, or the probe's own)",
    )
    common.add_argument(
        "--warning",
        metavar="DURATION",
        help="exit 1 (WARNING) when delivery takes longer than this",
    )
    common.add_argument("--format", choices=["text", "json", "nagios"], default="text")
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also print timings and headers"
    )

    run = commands.add_parser(
        "run",
        help="run the monitoring daemon",
        description="Run every probe of the config on its schedule and serve /metrics, "
        "/-/healthy, /-/ready, /-/reload, /probe?name= and a status page. SIGHUP reloads.",
    )
    run.add_argument("--config", metavar="FILE", type=Path, required=True)
    run.add_argument("--listen", metavar="[HOST]:PORT", help="HTTP address (default from config)")
    run.add_argument("--log-level", choices=log.LEVELS, default="info")
    run.add_argument(
        "--shard",
        metavar="i/N",
        help="run only the probes of shard i of N (stable hash of the probe name), "
        "for N instances sharing one config",
    )

    validate = commands.add_parser(
        "validate", help="check a config file", description="Exit 0 if valid, 3 with every error."
    )
    validate.add_argument("--config", metavar="FILE", type=Path, required=True)

    demo = commands.add_parser(
        "demo",
        help="watch it work against an embedded loopback mail sandbox",
        description="Start an embedded mail sandbox on 127.0.0.1 and the daemon against it; "
        "Ctrl-C stops both.",
    )
    demo.add_argument("--listen", metavar="[HOST]:PORT", default="127.0.0.1:10587")
    demo.add_argument("--log-level", choices=log.LEVELS, default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``smtp-probe``; returns the process exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"check": _check, "run": _run, "validate": _validate, "demo": _demo}
    try:
        return commands[args.command](args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.UNKNOWN
    except UsageError as exc:
        print(f"smtp-probe {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN
    except KeyboardInterrupt:
        print("smtp-probe: interrupted", file=sys.stderr)
        return ExitCode.UNKNOWN


def _check(args: argparse.Namespace) -> int:
    signer = TokenSigner()
    if args.config is not None or args.probe is not None:
        spec, signer = _probe_from_config(args)
    else:
        spec = probe_from_args(args, os.environ)
    warning = _duration(args.warning, "--warning") if args.warning else None
    result = asyncio.run(run_probe(spec, signer=signer))
    if args.format == "json":
        print(render_json(result, warning_seconds=warning))
    elif args.format == "nagios":
        print(render_nagios(result, verbose=args.verbose, warning_seconds=warning))
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        print(render_text(result, colour=colour, verbose=args.verbose, warning_seconds=warning))
    return exit_code(result, warning_seconds=warning)


def _probe_from_config(args: argparse.Namespace) -> tuple[ProbeSpec, TokenSigner]:
    if args.config is None or args.probe is None:
        raise UsageError("--config and --probe go together")
    route_flags = {"--smtp": args.smtp, "--from": args.mail_from, "--to": args.rcpt_to,
                   "--imap": args.imap, "--smtp-user": args.smtp_user,
                   "--imap-user": args.imap_user}  # fmt: skip
    for flag, value in route_flags.items():
        if value:
            raise UsageError(f"{flag}: the route comes from --config; drop the flag")
    config = load_config(args.config)
    probe = config.probe(args.probe)
    if probe is None:
        names = ", ".join(p.spec.name for p in config.probes)
        raise UsageError(f"--probe: no probe named {args.probe!r} in {args.config} (have: {names})")
    secret = config.token_secret.reveal().encode() if config.token_secret else None
    spec = probe.spec
    if args.timeout:
        spec = replace(spec, timeout=_duration(args.timeout, "--timeout"))
    return spec, TokenSigner(secret)


def _run(args: argparse.Namespace) -> int:
    from smtp_probe.app import serve

    log.setup(args.log_level)
    listen = _listen(args.listen) if args.listen else None
    index, count = _shard(args.shard) if args.shard else (0, 1)

    def load() -> Config:
        return load_config(args.config).shard(index, count)

    config = load()
    if args.shard:
        log.get(__name__).info("shard", shard=args.shard, probes=len(config.probes))
    try:
        return asyncio.run(serve(config, load=load, listen=listen))
    except OSError as exc:
        print(f"smtp-probe run: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.UNKNOWN


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise UsageError(f"--shard: {exc}") from None


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    mailboxes = len(config.mailboxes)
    print(f"{args.config}: valid: {len(config.probes)} probe(s), {mailboxes} mailbox(es)")
    return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    from smtp_probe.demo import run_demo

    log.setup(args.log_level)
    return asyncio.run(run_demo(_listen(args.listen)))


def _listen(text: str) -> ServerSettings:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None


def probe_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ProbeSpec:
    """Build the one-off probe of ``check`` from its flags.

    Raises:
        UsageError: a flag is missing, malformed or contradicts another.
    """
    for flag, value in (("--smtp", args.smtp), ("--from", args.mail_from), ("--to", args.rcpt_to)):
        if not value:
            raise UsageError(f"{flag}: required (or use --config FILE --probe NAME)")
    timeout = _duration(args.timeout or "60s", "--timeout")
    tls_settings = TlsSettings(verify=not args.insecure, ca_file=args.ca_file)
    if args.ca_file is not None:
        problem = ca_file_problem(args.ca_file)
        if problem:
            raise UsageError(f"--ca-file: {problem}")
    mail_from = _address(args.mail_from, "--from")
    rcpt_to = _address(args.rcpt_to, "--to")

    smtp_tls = TlsMode(args.smtp_tls)
    smtp_host, smtp_port = _host_port(args.smtp, "--smtp", _SMTP_PORTS[smtp_tls])
    smtp_password = None
    if args.smtp_user:
        smtp_password = _password(
            args.smtp_password_file, "--smtp-password-file", SMTP_PASSWORD_ENV, environ
        )
        if smtp_password is None:
            raise UsageError(
                f"--smtp-user needs a password: --smtp-password-file FILE or ${SMTP_PASSWORD_ENV}"
            )
    elif args.smtp_password_file:
        raise UsageError("--smtp-password-file: given without --smtp-user")
    smtp = SmtpServer(
        host=smtp_host,
        port=smtp_port,
        tls=smtp_tls,
        tls_settings=tls_settings,
        username=args.smtp_user,
        password=smtp_password,
        helo=_helo(args.helo),
        timeout=min(30.0, timeout),
    )

    mailbox = None
    if args.imap:
        imap_tls = TlsMode(args.imap_tls)
        imap_host, imap_port = _host_port(args.imap, "--imap", _IMAP_PORTS[imap_tls])
        imap_password = _password(
            args.imap_password_file, "--imap-password-file", IMAP_PASSWORD_ENV, environ
        )
        if imap_password is None:
            raise UsageError(
                f"--imap needs a password: --imap-password-file FILE or ${IMAP_PASSWORD_ENV}"
            )
        mailbox = Mailbox(
            host=imap_host,
            port=imap_port,
            tls=imap_tls,
            tls_settings=tls_settings,
            username=args.imap_user or rcpt_to,
            password=imap_password,
            folder=args.folder,
            idle=not args.no_idle,
            timeout=min(30.0, timeout),
        )
    else:
        for flag, value in (
            ("--imap-user", args.imap_user),
            ("--imap-password-file", args.imap_password_file),
        ):
            if value:
                raise UsageError(f"{flag}: given without --imap")
    return ProbeSpec(
        name="check",
        smtp=smtp,
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        mailbox=mailbox,
        timeout=timeout,
    )


def _duration(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _host_port(text: str, flag: str, default_port: int) -> tuple[str, int]:
    try:
        return parse_host_port(text, default_port)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _address(text: str, flag: str) -> str:
    address = text.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or c in "<>" for c in address):
        raise UsageError(f"{flag}: {text!r} is not a mail address like probe@example.com")
    return address


def _helo(text: str | None) -> str | None:
    if text is None:
        return None
    name = text.strip()
    if not name or any(c.isspace() for c in name) or not name.isascii():
        raise UsageError(f"--helo: {text!r} is not a host name")
    return name


def _password(path: Path | None, flag: str, env: str, environ: Mapping[str, str]) -> Secret | None:
    if path is not None:
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
        if not value:
            raise UsageError(f"{flag}: {path} is empty")
        return Secret(value)
    from_env = environ.get(env)
    return Secret(from_env) if from_env else None
