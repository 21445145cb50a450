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

SMTP_PASSWORD_ENV: Final = "SMTP_PROBE_SMTP_PASSWORD"  # noqa: S105 - a variable name
IMAP_PASSWORD_ENV: Final = "SMTP_PROBE_IMAP_PASSWORD"  # noqa: S105 - a variable name
CHECK_PROBE_NAME: Final = "check"
SMTP_TOKEN_CLIENT: Final = "smtp-token-command"  # noqa: S105 - a client name
"""The name of ``--smtp-token-command``'s OAuth client (as an ``oauth_clients`` key would be)."""
IMAP_TOKEN_CLIENT: Final = "imap-token-command"  # noqa: S105 - a client name


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
    if args.config is not None or args.probe is not None:
        spec, signer = probe_from_config(args)
    else:
        spec, signer = probe_from_args(args, environ), TokenSigner()
    warning: float | None = args.warning
    result = run_interruptible(run_probe(spec, signer=signer))
    if args.format == "json":
        print(render_json(result, warning_seconds=warning))
    elif args.format == "nagios":
        print(render_nagios(result, verbose=args.verbose, warning_seconds=warning))
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in environ
        print(render_text(result, colour=colour, verbose=args.verbose, warning_seconds=warning))
    return exit_code(result, warning_seconds=warning)


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
    route_flags = {"--smtp": args.smtp, "--from": args.mail_from, "--to": args.rcpt_to,
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
    for flag, value in (("--smtp", args.smtp), ("--from", args.mail_from), ("--to", args.rcpt_to)):
        if not value:
            raise UsageError(f"{flag}: required (or use --config FILE --probe NAME)")
    timeout: float = values.DEFAULT_RUN_TIMEOUT if args.timeout is None else args.timeout
    command_timeout = min(values.DEFAULT_COMMAND_TIMEOUT, timeout)
    tls_settings = TlsSettings(verify=not args.insecure, ca_file=_ca_file(args.ca_file))

    smtp_host, smtp_port = args.smtp
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
        port=values.smtp_port(args.smtp_tls) if smtp_port is None else smtp_port,
        tls=args.smtp_tls,
        tls_settings=tls_settings,
        username=args.smtp_user,
        password=smtp_password,
        oauth=smtp_oauth,
        helo=args.helo,
        timeout=command_timeout,
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
    if args.dns_server and not args.verify_dkim:
        raise UsageError("--dns-server: only --verify-dkim looks anything up")
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
