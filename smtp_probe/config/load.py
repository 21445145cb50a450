"""Loading a config: file -> YAML -> schema -> rules -> the frozen :class:`Config` the daemon runs.

Every stage adds what it finds to one list of problems, so a file with
several mistakes gets all of them in one report, in document order:

1. :mod:`.document` reads the YAML (syntax errors end it here);
2. the schema (:mod:`.model`) validates every key, reads secrets and checks
   files; :mod:`.messages` locates and words its errors;
3. each model's rules run on the raw mappings, valid or not: passwords,
   timing against the interval, references between sections;
4. only a document without problems is built into a :class:`Config`:
   routes expanded into probes, one token source per OAuth client (kept
   from the config it replaces when the client is unchanged), presets
   filled in; one last check each: definitions of one shared mailbox
   agree, an app certificate without ``private_key_file`` holds its key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from pydantic import ValidationError

from smtp_probe import oauth
from smtp_probe.config import messages, references, timing, tree, values
from smtp_probe.config.document import Document, compose
from smtp_probe.config.errors import ConfigError, Problems
from smtp_probe.config.model import ConfigFile, Context, Defaults, DnsChecksEntry, OAuthProvider
from smtp_probe.config.model import Dns as DnsEntry
from smtp_probe.config.model import Mailbox as MailboxEntry
from smtp_probe.config.model import OAuthClient as OAuthClientEntry
from smtp_probe.config.model import Probe as ProbeEntry
from smtp_probe.config.model import SmtpServer as SmtpServerEntry
from smtp_probe.config.runtime import Config, ScheduledProbe, ServerSettings
from smtp_probe.config.values import imap_port, kind_of, smtp_port
from smtp_probe.oauth.cache import TokenCache
from smtp_probe.oauth.settings import (
    CommandClient,
    GenericClient,
    GoogleClient,
    MicrosoftClient,
    OAuthClient,
    Provider,
)
from smtp_probe.probe import expect as expectations
from smtp_probe.probe.spec import (
    DEFAULT_MAX_CONCURRENT_RUNS,
    DEFAULT_SWEEP_GRACE,
    DnsChecks,
    DnsSettings,
    Expectation,
    Mailbox,
    ProbeSpec,
    SmtpServer,
    TlsMode,
    TlsSettings,
)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``.

    ``environ`` supplies ``${VAR}`` references in passwords and OAuth
    secrets (default: ``os.environ``). Every OAuth client gets a new, empty
    token cache; the daemon keeps its running caches across a reload
    (:func:`smtp_probe.app.keep_unchanged_oauth_clients`).

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or does not
            validate; it lists every problem with its location.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"], path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text"], path) from None
    return parse_config(text, source=path, environ=environ)


def parse_config(
    text: str,
    *,
    source: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate the YAML document ``text`` into a :class:`Config`.

    ``source`` is the file it came from: it names the file in errors and is
    the directory relative paths are resolved against (the current directory
    without it). ``environ`` supplies ``${VAR}`` references in passwords
    and OAuth secrets (default: ``os.environ``).

    Raises:
        ConfigError: every problem found, in document order, with its location.
    """
    problems = Problems(source)
    document = compose(text, problems)
    if document is None:
        raise problems.whole_file("the file is empty; it needs at least a 'probes' list")
    if not isinstance(document.data, dict):
        sections = ", ".join(tree.fields(ConfigFile))
        raise problems.whole_file(
            f"expected a mapping of sections ({sections}), got {kind_of(document.data)}",
            document.position(()),
        )
    context = Context(
        base_dir=source.parent if source is not None else Path(),
        environ=os.environ if environ is None else environ,
    )
    model: ConfigFile | None = None
    try:
        model = ConfigFile.model_validate(document.data, context=context)
    except ValidationError as exc:
        messages.report(exc, document)
    for loc, section, mapping in tree.mappings(document.data):
        for where, message in section.rules(mapping):
            at = (*loc, *where)
            problems.add(document.position(at), at, message)
    if problems or model is None:
        raise problems.error()
    return _build(model, document, source)


def _build(model: ConfigFile, document: Document, source: Path | None) -> Config:
    """The runtime config of a valid document.

    Raises:
        ConfigError: two definitions of one shared mailbox disagree, or an
            app certificate holds no private key and none is given.
    """
    defaults = model.defaults or Defaults()
    clients = {
        name: _oauth_client(name, entry) for name, entry in (model.oauth_clients or {}).items()
    }
    sources = {name: oauth.token_source(client) for name, client in clients.items()}
    servers = {
        name: _smtp_server(entry, sources) for name, entry in (model.smtp_servers or {}).items()
    }
    mailboxes = {name: _mailbox(entry, sources) for name, entry in (model.mailboxes or {}).items()}
    dns = _dns_settings(model.dns, DnsSettings())
    probes: list[ScheduledProbe] = []
    bounce_boxes: list[tuple[str, Mailbox]] = []

    def schedule(
        name: str,
        smtp: str,
        mailbox: str | None,
        mail_from: str,
        rcpt_to: str,
        times: tuple[float | None, float | None, float | None],
        reflector: bool,
        checks: tuple[tuple[tuple[str, str], ...], bool] = ((), False),
        bounce_mailbox: str | None = None,
        dns_checks: tuple[DnsChecksEntry | None, float | None, DnsEntry | None] = (
            None,
            None,
            None,
        ),
        policy: ProbeEntry | None = None,
    ) -> None:
        interval, timeout, jitter = times
        fitted = timing.fit(
            defaults.interval if interval is None else interval,
            timeout,
            jitter,
            default_timeout=defaults.timeout,
            default_jitter=defaults.jitter,
        )
        spec = ProbeSpec(
            name=name,
            smtp=servers[smtp],
            mail_from=mail_from,
            rcpt_to=rcpt_to,
            mailbox=None if mailbox is None else mailboxes[mailbox],
            timeout=fitted.timeout,
            reflector=reflector,
            expect_auth=checks[0],
            verify_dkim=checks[1],
            dns=_dns_settings(dns_checks[2], dns),
            bounce_mailbox=None if bounce_mailbox is None else mailboxes[bounce_mailbox],
            dns_checks=_dns_checks(
                dns_checks[0],
                defaults.dns_interval if dns_checks[1] is None else dns_checks[1],
                mail_from,
                rcpt_to,
            ),
            check=policy.check if policy is not None else None,
            expect=_expectation(policy) if policy is not None else None,
            smuggling_variants=policy.smuggling_variants if policy is not None else (),
        )
        if bounce_mailbox is not None:
            bounce_boxes.append((bounce_mailbox, mailboxes[bounce_mailbox]))
        probes.append(
            ScheduledProbe(
                spec, fitted.interval, fitted.jitter, smtp_name=smtp, mailbox_name=mailbox
            )
        )

    for probe in model.probes:
        schedule(
            probe.name,
            probe.smtp,
            probe.mailbox,
            probe.mail_from,
            probe.rcpt_to,
            (probe.interval, probe.timeout, probe.jitter),
            probe.reflector,
            (probe.expect_auth, probe.verify_dkim),
            probe.bounce_mailbox,
            (probe.dns_checks, probe.dns_interval, probe.dns),
            probe,
        )
    for route_name, route in (model.routes or {}).items():
        for sender in route.senders:
            for target in route.mailboxes:
                schedule(
                    references.route_probe_name(route_name, sender.smtp, target.mailbox),
                    sender.smtp,
                    target.mailbox,
                    sender.mail_from,
                    target.rcpt_to,
                    (route.interval, route.timeout, route.jitter),
                    route.reflector,
                )
    used = [(p.mailbox_name, mailboxes[p.mailbox_name]) for p in probes if p.mailbox_name]
    used += bounce_boxes
    for loc, message in references.shared_mailbox_conflicts(used):
        document.problems.add(document.position(loc), loc, message)
    for name, client in clients.items():
        provider = client.provider
        if (
            isinstance(provider, MicrosoftClient)
            and provider.certificate_file is not None
            and provider.private_key_file is None
            and not values.has_private_key(provider.certificate_file)
        ):
            loc = ("oauth_clients", name, "certificate_file")
            document.problems.add(
                document.position(loc),
                loc,
                f"{provider.certificate_file} holds no private key; give private_key_file",
            )
    if document.problems:
        raise document.problems.error()
    return Config(
        probes=tuple(probes),
        server=model.server.listen if model.server is not None else ServerSettings(),
        max_concurrent_runs=(
            model.limits.max_concurrent_runs
            if model.limits is not None
            else DEFAULT_MAX_CONCURRENT_RUNS
        ),
        sweep_grace=model.limits.sweep_grace if model.limits is not None else DEFAULT_SWEEP_GRACE,
        token_secret=model.token_secret_file,
        source=source,
        oauth_clients=MappingProxyType(sources),
        oauth_settings=MappingProxyType(clients),
    )


def _dns_settings(entry: DnsEntry | None, inherited: DnsSettings) -> DnsSettings:
    """A ``dns`` section's resolver; ``inherited`` (the top level's) where there is none."""
    return inherited if entry is None else DnsSettings(entry.nameservers, entry.timeout)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _dns_checks(
    entry: DnsChecksEntry | None, interval: float, mail_from: str, rcpt_to: str
) -> DnsChecks | None:
    """The engine's DNS checks of a probe: what ``dns_checks`` says, for its ``to``/``from`` domains."""
    if entry is None:
        return None
    return DnsChecks(
        checks=entry.checks,
        recipient_domain=_domain(rcpt_to),
        sender_domain=_domain(mail_from),
        interval=interval,
        sending_ips=entry.sending_ips,
        mx_hosts=entry.mx_hosts,
        dmarc_policy=entry.dmarc_policy,
        mta_sts_mode=entry.mta_sts_mode,
        dnsbl_zones=entry.dnsbl_zones,
        tls_settings=TlsSettings(ca_file=entry.ca_file),
    )


def _expectation(probe: ProbeEntry) -> Expectation | None:
    """The refusal a valid probe expects: its ``expect`` over its check's built-in one.

    An ``expect`` without ``reject_at`` keeps the check's stages (its rules
    demand a check then); with ``codes`` left out it expects any ``5xx``.
    """
    built_in = expectations.expectation(probe.check, None)
    given = probe.expect
    if given is None:
        return built_in
    if not given.stages and built_in is not None:
        return Expectation(built_in.stages, given.codes)
    return given


def _oauth_client(name: str, entry: OAuthClientEntry) -> OAuthClient:
    """The settings of a valid ``oauth_clients`` entry (its rules hold)."""
    client_secret = entry.client_secret or entry.client_secret_file
    refresh_token = entry.refresh_token or entry.refresh_token_file
    provider: Provider
    if entry.token_command is not None:
        provider = CommandClient(command=entry.token_command, lifetime=entry.lifetime)
    elif entry.provider == OAuthProvider.MICROSOFT:
        provider = MicrosoftClient(
            tenant=_given(entry.tenant),
            client_id=_given(entry.client_id),
            client_secret=client_secret,
            certificate_file=entry.certificate_file,
            private_key_file=entry.private_key_file,
            **_set(scope=entry.scope, authority=entry.authority),
        )
    elif entry.provider == OAuthProvider.GOOGLE:
        provider = GoogleClient(
            service_account_file=entry.service_account_file,
            subject=entry.subject,
            client_id=entry.client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            token_uri=entry.token_uri,
            **_set(scope=entry.scope),
        )
    else:
        provider = GenericClient(
            token_url=_given(entry.token_url),
            client_id=_given(entry.client_id),
            grant=entry.grant,
            client_secret=client_secret,
            refresh_token=refresh_token,
            scope=entry.scope,
        )
    return OAuthClient(name=name, provider=provider, timeout=entry.timeout, ca_file=entry.ca_file)


def _given(value: str | None) -> str:
    if value is None:  # pragma: no cover - the entry's rules demand it
        raise AssertionError("a valid oauth_clients entry has this key")
    return value


def _set(**keys: str | None) -> dict[str, str]:
    """The keys that are written; the settings' own defaults stand for the others."""
    return {key: value for key, value in keys.items() if value is not None}


def _smtp_server(entry: SmtpServerEntry, sources: Mapping[str, TokenCache]) -> SmtpServer:
    host, tls = entry.host, entry.tls
    if entry.mx is not None:
        host = entry.mx
        if "tls" not in entry.model_fields_set:
            tls = TlsMode.OPPORTUNISTIC
    if entry.provider is not None:
        preset_host, preset_tls = values.SMTP_PRESETS[entry.provider]
        host = host or preset_host
        tls = tls if "tls" in entry.model_fields_set else preset_tls
    return SmtpServer(
        host=_given(host),
        port=(25 if entry.mx is not None else smtp_port(tls)) if entry.port is None else entry.port,
        tls=tls,
        tls_settings=TlsSettings(verify=entry.verify, ca_file=entry.ca_file),
        username=entry.username,
        password=entry.password or entry.password_file,
        oauth=None if entry.oauth is None else sources[entry.oauth],
        helo=entry.helo,
        timeout=entry.timeout,
        mx=entry.mx is not None,
        max_connections=entry.max_connections,
    )


def _mailbox(entry: MailboxEntry, sources: Mapping[str, TokenCache]) -> Mailbox:
    host, tls = entry.host, entry.tls
    if entry.provider is not None:
        preset_host, preset_tls = values.IMAP_PRESETS[entry.provider]
        host = host or preset_host
        tls = tls if "tls" in entry.model_fields_set else preset_tls
    return Mailbox(
        host=_given(host),
        port=imap_port(tls) if entry.port is None else entry.port,
        username=entry.username,
        password=entry.password or entry.password_file,
        oauth=None if entry.oauth is None else sources[entry.oauth],
        tls=tls,
        tls_settings=TlsSettings(verify=entry.verify, ca_file=entry.ca_file),
        folder=entry.folder,
        junk_folders=entry.junk_folders,
        cleanup=entry.cleanup,
        idle=entry.idle,
        poll_interval=entry.poll_interval,
        timeout=entry.timeout,
        authserv_id=entry.authserv_id,
    )


def validate(path: Path) -> str:
    """``smtp-probe validate``: a valid config's summary line, then each probe it runs.

    One line per probe, routes expanded: ``NAME: SMTP -> MAILBOX, FROM -> TO``
    (names from the file; ``(no mailbox)`` for a submit-only probe,
    `` (reflector)`` for a reflector probe, `` (expects a refusal: CHECK)``
    for a policy probe; ``; dns checks mx,spf every 900s`` for a probe with
    DNS checks).

    Raises:
        ConfigError: the file does not validate.
    """
    config = load_config(path)
    lines = [f"{path}: valid: {len(config.probes)} probe(s), {len(config.mailboxes)} mailbox(es)"]
    for probe in config.probes:
        spec = probe.spec
        mailbox = probe.mailbox_name if probe.mailbox_name is not None else "(no mailbox)"
        reflector = " (reflector)" if spec.reflector else ""
        policy = f" (expects a refusal: {spec.policy_check})" if spec.policy_check else ""
        dns = spec.dns_checks
        checks = (
            f"; dns checks {','.join(dns.checks)} every {values.format_seconds(dns.interval)}"
            if dns is not None
            else ""
        )
        lines.append(
            f"  {probe.name}: {probe.smtp_name} -> {mailbox}, "
            f"{spec.mail_from} -> {spec.rcpt_to}{reflector}{policy}{checks}"
        )
    return "\n".join(lines)
