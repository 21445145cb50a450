"""Command line: argument parsing and exit codes only; the work happens elsewhere.

Usage errors exit 3 (UNKNOWN, as monitoring plugins do) with one line naming
the flag, never a traceback. Each flag's value goes through the parser of
its value type (:mod:`smtp_probe.config.values`, the same as the config
file's), so a malformed value is refused while the arguments are parsed.
Passwords are read from files or the environment, never from argv, where
``ps`` would show them (a token command is a program to run, not a secret).

A monitor starts ``smtp-probe check`` every minute per route, so this
module and what it imports at the top stay light: each command imports its
machinery when it is chosen (the daemon its HTTP server and scheduler,
``validate`` the config schema, ``check`` the engine once its flags are
fine), and :func:`program` skips the interpreter's teardown after ``check``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from smtp_probe import __version__, log
from smtp_probe.check import (
    DNS_CHECKS_DEFAULT,
    IMAP_PASSWORD_ENV,
    SMTP_PASSWORD_ENV,
    UsageError,
    run_check,
)
from smtp_probe.config import values
from smtp_probe.config.errors import ConfigError
from smtp_probe.probe import expect
from smtp_probe.report import ExitCode
from smtp_probe.shard import config_loader, parse_shard

if TYPE_CHECKING:
    from smtp_probe.config.runtime import ServerSettings
    from smtp_probe.server.webconfig import WebGuard

__all__ = ["build_parser", "main", "program"]

_T = TypeVar("_T")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 3, not 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.UNKNOWN, f"{self.prog}: error: {message} (see --help)\n")


def _flag(parse: Callable[[str], _T], name: str) -> Callable[[str], _T]:
    """An argparse ``type=`` from a value parser: its message, never argparse's echo of the value."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _parse_listen(text: str) -> ServerSettings:
    from smtp_probe.config.runtime import parse_listen  # the daemon's settings: not for check

    return parse_listen(text)


def _parse_probe_rate(text: str) -> int:
    """A positive whole number of on-demand runs per minute.

    Raises:
        ValueError: not a whole number, or below 1 (switch the endpoint off instead).
    """
    try:
        rate = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if rate < 1:
        raise ValueError(
            "must be at least 1; use --web.disable-probe-endpoint to switch /probe off"
        )
    return rate


_DURATION = _flag(values.parse_duration, "duration")
_ADDRESS = _flag(values.parse_address, "address")
_HOST_PORT = _flag(values.parse_host_port, "HOST[:PORT]")
_TLS_MODE = _flag(values.parse_tls_mode, "TLS mode")
_LISTEN = _flag(_parse_listen, "listen address")
_PROBE_RATE = _flag(_parse_probe_rate, "runs per minute")
_COMMAND = _flag(values.split_command, "command")
_EXPECT_AUTH = _flag(values.parse_expect_auth, "METHOD=RESULT")
_NAMESERVER = _flag(values.parse_nameserver, "nameserver")
_DNS_CHECKS = _flag(values.parse_dns_checks, "check list")
_IP = _flag(values.parse_ip, "IP address")
_DOMAIN = _flag(values.parse_domain, "DNS name")
_DMARC_POLICY = _flag(values.parse_dmarc_policy, "DMARC policy")
_MTA_STS_MODE = _flag(values.parse_mta_sts_mode, "MTA-STS mode")
_EXPECT_REJECT = _flag(expect.parse_expect_reject, "STAGE[,STAGE][:CODE,CODE]")
_CHECK = _flag(expect.parse_check, "check")
_IMAP_TLS_MODE = _flag(values.parse_imap_tls_mode, "TLS mode")
_TLS_CHOICES = "|".join(mode.value for mode in values.TlsMode)
_IMAP_TLS_CHOICES = "|".join(mode.value for mode in values.IMAP_TLS_MODES)


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
        "redacted transcript. Exit codes: 0 OK (a policy probe: refused as expected), "
        "1 WARNING (slow, junk, throttled or auth_failed), 2 CRITICAL (a policy probe: "
        "accepted_unexpectedly), 3 UNKNOWN.",
    )
    smtp = check.add_argument_group("SMTP (sending)")
    from_config = check.add_argument_group("or run a probe of a config file")
    from_config.add_argument("--config", metavar="FILE", type=Path, help="the daemon's config")
    from_config.add_argument("--probe", metavar="NAME", help="the probe of --config to run")
    smtp.add_argument("--smtp", metavar="HOST[:PORT]", type=_HOST_PORT, help="server to submit to")
    smtp.add_argument(
        "--smtp-mx",
        metavar="DOMAIN[:PORT]",
        type=_HOST_PORT,
        help="instead of --smtp: send as an MTA does, to DOMAIN's MX hosts by preference "
        "(port 25), TLS as its MTA-STS policy demands; lookups via --dns-server",
    )
    smtp.add_argument(
        "--smtp-tls",
        metavar=_TLS_CHOICES,
        type=_TLS_MODE,
        default=None,
        help="none, starttls (default; port 587), tls (implicit, port 465) or opportunistic "
        "(STARTTLS when offered, unverified; the default with --smtp-mx)",
    )
    smtp.add_argument("--smtp-user", metavar="USER", help="log in with AUTH as USER")
    smtp.add_argument(
        "--smtp-password-file",
        metavar="FILE",
        type=Path,
        help=f"file holding the SMTP password (or set {SMTP_PASSWORD_ENV})",
    )
    smtp.add_argument(
        "--smtp-token-command",
        metavar="CMD",
        type=_COMMAND,
        help="log in with an OAuth2 token (XOAUTH2/OAUTHBEARER) that CMD prints, instead of "
        "a password; CMD is split like a shell would, but no shell runs",
    )
    smtp.add_argument(
        "--from", dest="mail_from", metavar="ADDR", type=_ADDRESS, help="envelope sender"
    )
    smtp.add_argument("--to", dest="rcpt_to", metavar="ADDR", type=_ADDRESS, help="recipient")
    smtp.add_argument(
        "--helo",
        metavar="NAME",
        type=_flag(values.parse_helo, "host name"),
        help="name to greet with (default: this host's name)",
    )

    imap = check.add_argument_group("IMAP (confirming delivery; without --imap, stop after SMTP)")
    imap.add_argument(
        "--imap", metavar="HOST[:PORT]", type=_HOST_PORT, help="mailbox server to watch"
    )
    imap.add_argument(
        "--imap-tls",
        metavar=_IMAP_TLS_CHOICES,
        type=_IMAP_TLS_MODE,
        default=values.DEFAULT_IMAP_TLS,
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
    imap.add_argument(
        "--imap-token-command",
        metavar="CMD",
        type=_COMMAND,
        help="log in with an OAuth2 token that CMD prints, instead of a password",
    )
    imap.add_argument(
        "--folder",
        default=values.DEFAULT_FOLDER,
        type=_flag(values.not_blank, "folder"),
        help=f"folder the message should land in (default {values.DEFAULT_FOLDER})",
    )
    imap.add_argument("--no-idle", action="store_true", help="never use IMAP IDLE; poll only")
    imap.add_argument(
        "--authserv-id",
        metavar="ID",
        type=_flag(values.parse_word, "authserv-id"),
        help="believe only the Authentication-Results headers of this authserv-id "
        "(the receiver's, e.g. mx.example.net)",
    )
    imap.add_argument(
        "--expect-auth",
        metavar="METHOD=RESULT",
        type=_EXPECT_AUTH,
        action="append",
        help="require this result of spf, dkim, dmarc or arc (several: dkim=pass,neutral); "
        "repeatable; a miss is auth_failed, exit 1; needs --authserv-id",
    )
    imap.add_argument(
        "--verify-dkim",
        action="store_true",
        help="also verify the arrived message's DKIM signature here",
    )
    imap.add_argument(
        "--dns-server",
        metavar="IP[:PORT]",
        type=_NAMESERVER,
        action="append",
        help="resolver for --verify-dkim's key lookups, --dns-checks and --smtp-mx's MX and "
        "MTA-STS lookups (repeatable; default: the system's)",
    )

    dns = check.add_argument_group(
        "DNS checks (beside the run; a failing check is exit 1 WARNING unless the run is worse)"
    )
    dns.add_argument(
        "--dns-checks",
        metavar="LIST",
        nargs="?",
        const=DNS_CHECKS_DEFAULT,
        type=_DNS_CHECKS,
        help="run these DNS checks of the --to/--from domains too, e.g. --dns-checks=spf,dmarc "
        f"(default: {','.join(values.DEFAULT_CHECK_DNS_CHECKS)}, plus dnsbl with --dnsbl-zone; "
        "with --config: the probe's own dns_checks if it has any)",
    )
    dns.add_argument(
        "--sending-ip",
        metavar="IP",
        type=_IP,
        action="append",
        help="a public IP mail leaves from, for spf, dnsbl and fcrdns (repeatable; default: "
        "the SMTP server's addresses)",
    )
    dns.add_argument(
        "--dnsbl-zone",
        metavar="ZONE",
        type=_DOMAIN,
        action="append",
        help="a blocklist zone to ask about each sending IP (repeatable; none by default: "
        "public blocklists have terms of use)",
    )
    dns.add_argument(
        "--dmarc-policy",
        metavar="|".join(values.DMARC_POLICIES),
        type=_DMARC_POLICY,
        help="the weakest acceptable DMARC p= (default none)",
    )
    dns.add_argument(
        "--mta-sts-mode",
        metavar="|".join(values.MTA_STS_MODES),
        type=_MTA_STS_MODE,
        help="the weakest acceptable MTA-STS mode (default enforce); the policy's HTTPS "
        "certificate is always verified (--ca-file applies, --insecure does not)",
    )
    dns.add_argument(
        "--mx-host",
        metavar="HOST",
        type=_DOMAIN,
        action="append",
        help="an MX host the recipient domain must have (repeatable; default: any that resolve)",
    )

    policy = check.add_argument_group(
        "policy (the run succeeds when the server REFUSES: outcome rejected, exit 0; "
        "accepted_unexpectedly exits 2; without --imap nothing is ever delivered)"
    )
    policy.add_argument(
        "--expect-reject",
        metavar="STAGE[,STAGE][:CODE,CODE]",
        type=_EXPECT_REJECT,
        help="expect a refusal at one of these SMTP stages (banner, ehlo, starttls, auth, "
        "mail_from, rcpt_to, data) with one of these codes or classes (default 5xx), "
        "e.g. rcpt_to:550,5xx",
    )
    policy.add_argument(
        "--check",
        metavar="NAME",
        type=_CHECK,
        help="a built-in policy check: open_relay (never logs in), auth_requires_tls "
        "(connects without TLS, offers a dummy credential), sender_mismatch (logs in with "
        "--smtp-user, sends as --from), smtp_smuggling (needs --imap)",
    )
    policy.add_argument(
        "--smuggling-variant",
        metavar="V",
        action="append",
        help="--check smtp_smuggling: an end-of-data variant to try, e.g. lf_dot_crlf "
        "(repeatable; default all)",
    )

    common = check.add_argument_group("common")
    verify = common.add_mutually_exclusive_group()
    verify.add_argument("--ca-file", metavar="PEM", type=Path, help="trust these CAs (both legs)")
    verify.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (both legs)"
    )
    common.add_argument(
        "--timeout",
        metavar="DURATION",
        type=_DURATION,
        help="deadline for the whole run, e.g. 30s, 2m; a bare number is seconds "
        f"(default {values.format_seconds(values.DEFAULT_RUN_TIMEOUT)}, or the probe's own)",
    )
    common.add_argument(
        "--warning",
        metavar="DURATION",
        type=_DURATION,
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
        "/-/healthy, /-/ready, /-/reload (with --web.enable-lifecycle), /probe?name= and a "
        "status page. SIGHUP always reloads.",
    )
    run.add_argument("--config", metavar="FILE", type=Path, required=True)
    run.add_argument(
        "--listen", metavar="[HOST]:PORT", type=_LISTEN, help="HTTP address (default from config)"
    )
    run.add_argument("--log-level", choices=log.LEVELS, default="info")
    run.add_argument(
        "--shard",
        metavar="i/N",
        type=_flag(parse_shard, "shard"),
        help="run only the probes of shard i of N (stable hash of the probe name), "
        "for N instances sharing one config",
    )
    web = run.add_argument_group("web")
    web.add_argument(
        "--web.enable-lifecycle",
        dest="web_enable_lifecycle",
        action="store_true",
        help="let POST /-/reload reload the config (without it: 403; SIGHUP always reloads)",
    )
    web.add_argument(
        "--web.disable-probe-endpoint",
        dest="web_disable_probe_endpoint",
        action="store_true",
        help="switch /probe?name= (runs on demand) off: 403",
    )
    web.add_argument(
        "--web.probe-rate",
        dest="web_probe_rate",
        metavar="N",
        type=_PROBE_RATE,
        default=None,
        help="at most N /probe runs started per minute, all probes together (default "
        "30; besides one run per probe at a time and 5s between two), else 429",
    )
    _web_flags(run)

    validate = commands.add_parser(
        "validate", help="check a config file", description="Exit 0 if valid, 3 with every error."
    )
    validate.add_argument("--config", metavar="FILE", type=Path, required=True)

    commands.add_parser(
        "config-schema",
        help="print the JSON Schema of the config file",
        description="Print the JSON Schema of the config file (for editors: "
        "# yaml-language-server: $schema=FILE). config/smtp-probe.schema.json is this output.",
    )

    demo = commands.add_parser(
        "demo",
        help="watch it work against an embedded loopback mail sandbox",
        description="Start an embedded mail sandbox on 127.0.0.1 and the daemon against it; "
        "Ctrl-C stops both.",
    )
    demo.add_argument("--listen", metavar="[HOST]:PORT", type=_LISTEN, default="127.0.0.1:10587")
    demo.add_argument("--log-level", choices=log.LEVELS, default="info")
    _web_flags(demo)
    return parser


def _web_flags(command: argparse.ArgumentParser) -> None:
    web = command.add_argument_group("securing the HTTP endpoints (see the README)")
    web.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        type=Path,
        help="TLS, basic auth users and response headers in the Prometheus exporter-toolkit "
        "format; re-read when it changes",
    )
    web.add_argument(
        "--web.health-without-auth",
        dest="health_without_auth",
        action="store_true",
        help="answer /-/healthy and /-/ready without basic auth (for container health checks)",
    )


def _guard(args: argparse.Namespace) -> WebGuard | None:
    """The ``--web.config.file`` guard, or ``None``.

    Raises:
        ConfigError: the web config is unreadable or invalid.
        UsageError: --web.health-without-auth without --web.config.file.
    """
    if args.web_config_file is None:
        if args.health_without_auth:
            raise UsageError("--web.health-without-auth needs --web.config.file")
        return None
    from smtp_probe.server.webconfig import WebGuard

    return WebGuard(args.web_config_file, health_without_auth=args.health_without_auth)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: the process's arguments) names; its exit code.

    Raises:
        SystemExit: ``--help``, ``--version`` or a usage error (exit code 3).
    """
    return _dispatch(_parse(argv))


def program() -> NoReturn:
    """The ``smtp-probe`` executable: :func:`main`, then exit with its code.

    After ``check`` the process ends with :func:`os._exit` once its output is
    flushed: a check leaves no files, servers or threads that need an orderly
    shutdown (its IMAP watcher is closed by then), and the interpreter's
    teardown, freeing every module and object one by one, takes about a tenth
    of a check's wall time. Other commands exit normally: the daemon and the
    demo have log handlers and temporary directories to finish.
    """
    args = _parse(None)
    code = _dispatch(args)
    if args.command == "check":
        logging.shutdown()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: let the interpreter report it as it always does
            sys.exit(code)
        os._exit(code)
    sys.exit(code)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return build_parser().parse_args(argv)


def _dispatch(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "check": run_check,
        "run": _run,
        "validate": _validate,
        "config-schema": _config_schema,
        "demo": _demo,
    }
    try:
        return commands[args.command](args)
    except UsageError as exc:
        print(f"smtp-probe {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.UNKNOWN
    except KeyboardInterrupt:
        print("smtp-probe: interrupted", file=sys.stderr)
        return ExitCode.UNKNOWN
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.UNKNOWN


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from smtp_probe.app import ON_DEMAND_PER_MINUTE, serve
    from smtp_probe.server.http import WebOptions

    log.setup(args.log_level)
    web_options = WebOptions(
        enable_lifecycle=args.web_enable_lifecycle,
        probe_endpoint=not args.web_disable_probe_endpoint,
    )
    probe_rate = args.web_probe_rate or ON_DEMAND_PER_MINUTE
    index, count = args.shard or (0, 1)
    load = config_loader(args.config, index, count)
    config = load()
    guard = _guard(args)
    if args.shard:
        log.get(__name__).info("shard", shard=f"{index}/{count}", probes=len(config.probes))
    try:
        return asyncio.run(
            serve(
                config,
                load=load,
                listen=args.listen,
                web_options=web_options,
                probe_rate=probe_rate,
                guard=guard,
            )
        )
    except OSError as exc:
        print(f"smtp-probe run: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.UNKNOWN


def _validate(args: argparse.Namespace) -> int:
    from smtp_probe.config.load import validate

    print(validate(args.config))
    return ExitCode.OK


def _config_schema(args: argparse.Namespace) -> int:
    from smtp_probe.config.schema import schema_text

    sys.stdout.write(schema_text())
    return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from smtp_probe.demo import run_demo

    log.setup(args.log_level)
    return asyncio.run(run_demo(args.listen, _guard(args)))
