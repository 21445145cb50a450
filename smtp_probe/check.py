"""``smtp-probe check``: one run now, from flags or from a probe of a config; printed; an exit code.

The flags go through the same value types as the config file
(:mod:`smtp_probe.config.values`: the parser turns each flag into its value,
and the defaults are the same constants), so ``check`` and the daemon read
a route alike. This module puts the flags together into a
:class:`ProbeSpec` (which flags need which), runs it and renders the result.

Passwords never come from argv, where ``ps`` would show them: from a file
(``--smtp-password-file``, one trailing newline stripped, as in the
config) or from the environment. Instead of a password, either leg can log
in with OAuth2 tokens printed by a program (``--smtp-token-command``,
``--imap-token-command``): the config's ``token_command`` client, built
here without loading any OAuth library.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smtp_probe.config import load_config, values
from smtp_probe.probe.result import Stage
from smtp_probe.probe.spec import (
    DnsCheck,
    DnsChecks,
    DnsSettings,
    Expectation,
    Mailbox,
    PolicyCheck,
    ProbeSpec,
    SmtpServer,
    TlsSettings,
)
from smtp_probe.secret import Secret

if TYPE_CHECKING:
    from smtp_probe.oauth.cache import TokenCache
    from smtp_probe.oauth.settings import OAuthClient
    from smtp_probe.probe.message import TokenSigner
    from smtp_probe.probe.result import DnsReport, RunResult

SMTP_PASSWORD_ENV: Final = "SMTP_PROBE_SMTP_PASSWORD"  # noqa: S105 - a variable name
IMAP_PASSWORD_ENV: Final = "SMTP_PROBE_IMAP_PASSWORD"  # noqa: S105 - a variable name
CHECK_PROBE_NAME: Final = "check"
SMTP_TOKEN_CLIENT: Final = "smtp-token-command"  # noqa: S105 - a client name
"""The name of ``--smtp-token-command``'s OAuth client (as an ``oauth_clients`` key would be)."""
IMAP_TOKEN_CLIENT: Final = "imap-token-command"  # noqa: S105 - a client name
DNS_CHECKS_DEFAULT: Final[tuple[DnsCheck, ...]] = ()
"""``--dns-checks`` without a list: the probe's own checks (``--config``), else the defaults.
Not a string: argparse would run a string ``const`` through the flag's parser."""
_DNS_OPTION_FLAGS: Final = {
    "--sending-ip": "sending_ip",
    "--dnsbl-zone": "dnsbl_zone",
    "--dmarc-policy": "dmarc_policy",
    "--mta-sts-mode": "mta_sts_mode",
    "--mx-host": "mx_host",
}
_OPTION_CHECKS: Final = {
    "--dnsbl-zone": DnsCheck.DNSBL,
    "--dmarc-policy": DnsCheck.DMARC,
    "--mta-sts-mode": DnsCheck.MTA_STS,
    "--mx-host": DnsCheck.MX,
}
"""The check each option flag is for: giving it without that check is a mistake."""


class UsageError(Exception):
    """Flags that do not fit together, or a file a flag names is unusable; names the flag."""


def run_check(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run the probe ``args`` describe, print the result in ``args.format``; the exit code.

    Raises:
        UsageError: the flags do not describe one probe.
        ConfigError: ``--config`` does not validate.
    """
    from smtp_probe.probe.message import TokenSigner  # the engine: only once flags are fine
    from smtp_probe.probe.run import run_probe
    from smtp_probe.report import exit_code, render_json, render_nagios, render_text

    environ = os.environ if environ is None else environ
    from_config = args.config is not None or args.probe is not None
    if from_config:
        spec, signer = probe_from_config(args)
    else:
        spec, signer = probe_from_args(args, environ), TokenSigner()
    spec = replace(spec, dns_checks=dns_checks_from_args(args, spec, from_config=from_config))
    warning: float | None = args.warning
    if spec.dns_checks is not None:
        result, report = run_interruptible(_run_with_dns_checks(spec, signer))
        return _print_with_dns(args, result, report, environ)
    result = run_interruptible(run_probe(spec, signer=signer))
    if args.format == "json":
        print(render_json(result, warning_seconds=warning))
    elif args.format == "nagios":
        print(render_nagios(result, verbose=args.verbose, warning_seconds=warning))
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in environ
        print(render_text(result, colour=colour, verbose=args.verbose, warning_seconds=warning))
    return exit_code(result, warning_seconds=warning)


async def _run_with_dns_checks(spec: ProbeSpec, signer: TokenSigner) -> tuple[RunResult, DnsReport]:
    """The run and the DNS checks side by side, each under the probe's timeout."""
    import time

    from smtp_probe.probe.dns_checks import run_dns_checks  # only with --dns-checks
    from smtp_probe.probe.run import run_probe

    deadline = time.monotonic() + spec.timeout
    return await asyncio.gather(
        run_probe(spec, signer=signer), run_dns_checks(spec, deadline=deadline)
    )


def _print_with_dns(
    args: argparse.Namespace, result: RunResult, report: DnsReport, environ: Mapping[str, str]
) -> int:
    """Print the run and its DNS checks in ``args.format``; the combined exit code."""
    from smtp_probe import report_dns
    from smtp_probe.report import render_text

    warning: float | None = args.warning
    if args.format == "json":
        print(report_dns.render_json(result, report, warning_seconds=warning))
    elif args.format == "nagios":
        print(report_dns.render_nagios(result, report, verbose=args.verbose,
                                       warning_seconds=warning))  # fmt: skip
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in environ
        print(render_text(result, colour=colour, verbose=args.verbose, warning_seconds=warning))
        print(report_dns.render_text(report, colour=colour, verbose=args.verbose))
    return report_dns.combined_exit_code(result, report, warning_seconds=warning)


def dns_checks_from_args(
    args: argparse.Namespace, spec: ProbeSpec, *, from_config: bool
) -> DnsChecks | None:
    """The DNS checks ``check`` runs beside the run: ``None`` without ``--dns-checks``.

    The checks are the list given, else (bare ``--dns-checks``) the probe's
    own from ``--config``, else every check but ``dnsbl`` (``dnsbl`` too with
    ``--dnsbl-zone``). The option flags replace the probe's options; the
    domains are those of ``to`` and ``from``; ``--ca-file`` verifies the
    MTA-STS policy's HTTPS.

    Raises:
        UsageError: an option flag without ``--dns-checks`` or without its
            check, or ``dnsbl`` without a zone.
    """
    given = {flag: getattr(args, name) for flag, name in _DNS_OPTION_FLAGS.items()}
    if args.dns_checks is None:
        for flag, value in given.items():
            if value:
                raise UsageError(f"{flag}: needs --dns-checks")
        return None
    own = spec.dns_checks if from_config else None
    if args.dns_checks != DNS_CHECKS_DEFAULT:
        checks: tuple[DnsCheck, ...] = args.dns_checks
    elif own is not None:
        checks = own.checks
    else:
        checks = values.DEFAULT_CHECK_DNS_CHECKS + ((DnsCheck.DNSBL,) if args.dnsbl_zone else ())
    for flag, check in _OPTION_CHECKS.items():
        if given[flag] and check not in checks:
            raise UsageError(f"{flag}: {check} is not among the checks of --dns-checks")
    base = own or DnsChecks(
        checks=checks,
        recipient_domain=spec.rcpt_to.rpartition("@")[2].lower(),
        sender_domain=spec.mail_from.rpartition("@")[2].lower(),
    )
    tls_settings = base.tls_settings
    if args.ca_file is not None:
        tls_settings = TlsSettings(ca_file=_ca_file(args.ca_file))
    dns = replace(
        base,
        checks=tuple(check for check in DnsCheck if check in checks),
        sending_ips=tuple(args.sending_ip or base.sending_ips),
        mx_hosts=tuple(args.mx_host or base.mx_hosts),
        dmarc_policy=args.dmarc_policy or base.dmarc_policy,
        mta_sts_mode=args.mta_sts_mode or base.mta_sts_mode,
        dnsbl_zones=tuple(args.dnsbl_zone or base.dnsbl_zones),
        tls_settings=tls_settings,
    )
    if DnsCheck.DNSBL in dns.checks and not dns.dnsbl_zones:
        raise UsageError(
            "--dns-checks: dnsbl needs --dnsbl-zone ZONE (none by default: public "
            "blocklists have terms of use)"
        )
    return dns


_T = TypeVar("_T")


def run_interruptible(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)``, with Ctrl-C (SIGINT) cancelling it from inside the event loop.

    ``asyncio.run``'s own SIGINT handler cancels the run from a Python signal
    handler, which may fire in the middle of an event-loop callback: when it
    cancels the socket future a connect callback is about to complete,
    asyncio logs an ``InvalidStateError`` traceback on stderr (seen in CI).
    A handler added with ``add_signal_handler`` runs as a loop callback, between
    callbacks, so the run unwinds cleanly.

    Raises:
        KeyboardInterrupt: SIGINT arrived; the run was cancelled.
    """
    interrupted = False

    async def guarded() -> _T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - asyncio.run runs this as a task

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise


def probe_from_config(args: argparse.Namespace) -> tuple[ProbeSpec, TokenSigner]:
    """The probe ``--probe`` of ``--config``, with its token key and ``--timeout`` applied.

    Raises:
        UsageError: one of the two flags is missing, a route flag is given
            too, or the config has no such probe.
        ConfigError: the config does not validate.
    """
    from smtp_probe.probe.message import TokenSigner

    if args.config is None or args.probe is None:
        raise UsageError("--config and --probe go together")
    route_flags = {"--smtp": args.smtp, "--smtp-mx": args.smtp_mx,
                   "--from": args.mail_from, "--to": args.rcpt_to,
                   "--imap": args.imap, "--smtp-user": args.smtp_user,
                   "--imap-user": args.imap_user, "--smtp-token-command": args.smtp_token_command,
                   "--imap-token-command": args.imap_token_command,
                   "--authserv-id": args.authserv_id, "--expect-auth": args.expect_auth,
                   "--verify-dkim": args.verify_dkim, "--dns-server": args.dns_server,
                   "--expect-reject": args.expect_reject, "--check": args.check,
                   "--smuggling-variant": args.smuggling_variant}  # fmt: skip
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
    if args.timeout is not None:
        spec = replace(spec, timeout=args.timeout)
    return spec, TokenSigner(secret)


def probe_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ProbeSpec:
    """Build the one-off probe of ``check`` from its (already parsed) flags.

    Raises:
        UsageError: a flag is missing, contradicts another, or names a
            file that cannot be used.
    """
    if args.smtp and args.smtp_mx:
        raise UsageError("--smtp-mx: give either --smtp HOST or --smtp-mx DOMAIN, not both")
    if not args.smtp and not args.smtp_mx:
        raise UsageError("--smtp: required, or --smtp-mx (or use --config FILE --probe NAME)")
    for flag, value in (("--from", args.mail_from), ("--to", args.rcpt_to)):
        if not value:
            raise UsageError(f"{flag}: required (or use --config FILE --probe NAME)")
    timeout: float = values.DEFAULT_RUN_TIMEOUT if args.timeout is None else args.timeout
    command_timeout = min(values.DEFAULT_COMMAND_TIMEOUT, timeout)
    tls_settings = TlsSettings(verify=not args.insecure, ca_file=_ca_file(args.ca_file))

    mx = args.smtp_mx is not None
    smtp_host, smtp_port = args.smtp_mx if mx else args.smtp
    smtp_tls = args.smtp_tls or (values.TlsMode.OPPORTUNISTIC if mx else values.DEFAULT_SMTP_TLS)
    if mx and smtp_tls is values.TlsMode.TLS:
        raise UsageError(
            "--smtp-tls: MX hosts are reached on port 25 with STARTTLS: "
            "use opportunistic, starttls or none with --smtp-mx"
        )
    smtp_password = smtp_oauth = None
    if args.smtp_user:
        smtp_password, smtp_oauth = _login(
            "smtp",
            args.smtp_password_file,
            args.smtp_token_command,
            SMTP_PASSWORD_ENV,
            SMTP_TOKEN_CLIENT,
            environ,
            needed_by="--smtp-user",
        )
    elif args.smtp_password_file:
        raise UsageError("--smtp-password-file: given without --smtp-user")
    elif args.smtp_token_command:
        raise UsageError("--smtp-token-command: needs --smtp-user (the account the token is for)")
    smtp = SmtpServer(
        host=smtp_host,
        port=(25 if mx else values.smtp_port(smtp_tls)) if smtp_port is None else smtp_port,
        tls=smtp_tls,
        tls_settings=tls_settings,
        username=args.smtp_user,
        password=smtp_password,
        oauth=smtp_oauth,
        helo=args.helo,
        timeout=command_timeout,
        mx=mx,
    )

    mailbox = None
    if args.imap:
        imap_host, imap_port = args.imap
        imap_password, imap_oauth = _login(
            "imap",
            args.imap_password_file,
            args.imap_token_command,
            IMAP_PASSWORD_ENV,
            IMAP_TOKEN_CLIENT,
            environ,
            needed_by="--imap",
        )
        mailbox = Mailbox(
            host=imap_host,
            port=values.imap_port(args.imap_tls) if imap_port is None else imap_port,
            tls=args.imap_tls,
            tls_settings=tls_settings,
            username=args.imap_user or args.rcpt_to,
            password=imap_password,
            oauth=imap_oauth,
            folder=args.folder,
            idle=not args.no_idle,
            timeout=command_timeout,
            authserv_id=args.authserv_id,
        )
    else:
        for flag, value in (
            ("--imap-user", args.imap_user),
            ("--imap-password-file", args.imap_password_file),
            ("--imap-token-command", args.imap_token_command),
            ("--authserv-id", args.authserv_id),
            ("--expect-auth", args.expect_auth),
            ("--verify-dkim", args.verify_dkim),
        ):
            if value:
                raise UsageError(f"{flag}: given without --imap")
    if args.expect_auth and not args.authserv_id:
        raise UsageError(
            "--expect-auth: needs --authserv-id (only the receiver's Authentication-Results "
            "are believed)"
        )
    if args.dns_server and not (args.verify_dkim or mx) and args.dns_checks is None:
        raise UsageError(
            "--dns-server: only --verify-dkim, --dns-checks and --smtp-mx look anything up"
        )
    check, expect = _policy(args)
    return ProbeSpec(
        name=CHECK_PROBE_NAME,
        smtp=smtp,
        mail_from=args.mail_from,
        rcpt_to=args.rcpt_to,
        mailbox=mailbox,
        timeout=timeout,
        expect_auth=tuple(pair for pairs in args.expect_auth or () for pair in pairs),
        verify_dkim=args.verify_dkim,
        dns=DnsSettings(tuple(args.dns_server or ())),
        check=check,
        expect=expect,
        smuggling_variants=tuple(dict.fromkeys(args.smuggling_variant or ())),
    )


def _policy(args: argparse.Namespace) -> tuple[PolicyCheck | None, Expectation | None]:
    """``--check`` and ``--expect-reject`` (already parsed) as the probe's check and expectation.

    The same rules as the config's ``check``/``expect`` keys.

    Raises:
        UsageError: the flags do not fit together or with the route.
    """
    from smtp_probe.probe.expect import OVERRIDABLE, expectation

    check: PolicyCheck | None = args.check
    given: Expectation | None = args.expect_reject
    if given is not None and check is not None and check not in OVERRIDABLE:
        raise UsageError(
            f"--expect-reject: does not go with --check {check} (it expects its own refusal)"
        )
    if check is PolicyCheck.AUTH_REQUIRES_TLS and args.smtp_mx is not None:
        raise UsageError(
            "--check auth_requires_tls: talks to one host; use --smtp with the MX host you mean"
        )
    if check is PolicyCheck.SENDER_MISMATCH and not args.smtp_user:
        raise UsageError(
            "--check sender_mismatch: needs --smtp-user (it logs in and sends as --from)"
        )
    if check is PolicyCheck.SMTP_SMUGGLING and not args.imap:
        raise UsageError(
            "--check smtp_smuggling: needs --imap (the smuggled message is looked for there)"
        )
    if args.smuggling_variant and check is not PolicyCheck.SMTP_SMUGGLING:
        raise UsageError("--smuggling-variant: needs --check smtp_smuggling")
    if check is PolicyCheck.OPEN_RELAY and given is not None and Stage.AUTH in given.stages:
        raise UsageError("--expect-reject: open_relay never logs in: no refusal can come at auth")
    return check, expectation(check, given)


def _ca_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    try:
        return values.check_ca_file(path)
    except ValueError as exc:
        raise UsageError(f"--ca-file: {exc}") from None


def _login(
    leg: str,
    password_file: Path | None,
    token_command: tuple[str, ...] | None,
    env: str,
    client: str,
    environ: Mapping[str, str],
    *,
    needed_by: str,
) -> tuple[Secret | None, TokenCache | None]:
    """One leg's password or token source, from ``--LEG-password-file``/``env`` or ``--LEG-token-command``.

    Raises:
        UsageError: neither or both are given, or either cannot be used.
    """
    password = _password(password_file, f"--{leg}-password-file", env, environ)
    oauth = _token_command(
        token_command,
        f"--{leg}-token-command",
        client,
        f"--{leg}-password-file or ${env}" if password else None,
    )
    if password is None and oauth is None:
        raise UsageError(
            f"{needed_by} needs a password (--{leg}-password-file FILE or "
            f"${env}) or --{leg}-token-command CMD"
        )
    return password, oauth


def _token_command(
    argv: tuple[str, ...] | None, flag: str, name: str, password_from: str | None
) -> TokenCache | None:
    """The token source of ``flag``'s command (already split into words), if it is given.

    ``password_from`` says where the leg's password came from, if it has one.

    Raises:
        UsageError: a password is given too, or the program cannot be run.
    """
    if argv is None:
        return None
    if password_from is not None:
        raise UsageError(
            f"{flag}: give either a token command or a password ({password_from}), not both"
        )
    from smtp_probe.oauth import token_source  # a light module: no OAuth library until a fetch

    return token_source(token_command_client(argv, flag, name))


def token_command_client(argv: tuple[str, ...], flag: str, name: str) -> OAuthClient:
    """The OAuth client that runs ``argv`` for tokens, as a config's ``token_command`` does.

    A bare program name is looked up in ``PATH``; a path is relative to the
    working directory, as in a shell.

    Raises:
        UsageError: the program cannot be run; names ``flag``.
    """
    from smtp_probe.oauth.settings import CommandClient, OAuthClient

    try:
        command = values.check_command(argv, Path.cwd())
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    return OAuthClient(name=name, provider=CommandClient(command=command))


def _password(path: Path | None, flag: str, env: str, environ: Mapping[str, str]) -> Secret | None:
    """The password from ``flag``'s file (as the config reads one), else from ``env``."""
    if path is not None:
        try:
            return values.read_password_file(path)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    from_env = environ.get(env)
    return Secret(from_env) if from_env else None
