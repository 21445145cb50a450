"""Loading a config: file -> YAML -> schema -> rules -> the frozen :class:`Config` the daemon runs.

Every stage adds what it finds to one list of problems, so a file with
several mistakes gets all of them in one report, in document order:

1. :mod:`.document` reads the YAML (syntax errors end it here);
2. the schema (:mod:`.model`) validates every key, reads secrets and checks
   files; :mod:`.messages` locates and words its errors;
3. each model's rules run on the raw mappings, valid or not: passwords,
   timing against the interval, references between sections;
4. only a document without problems is built into a :class:`Config`
   (one last check: definitions of one shared mailbox must agree).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from smtp_probe.config import messages, references, timing, tree
from smtp_probe.config.document import Document, compose
from smtp_probe.config.errors import ConfigError, Problems
from smtp_probe.config.model import ConfigFile, Context, Defaults
from smtp_probe.config.model import Mailbox as MailboxEntry
from smtp_probe.config.model import SmtpServer as SmtpServerEntry
from smtp_probe.config.runtime import Config, ScheduledProbe, ServerSettings
from smtp_probe.config.values import imap_port, kind_of, smtp_port
from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsSettings


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``.

    ``environ`` supplies ``${VAR}`` references in passwords (default:
    ``os.environ``).

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
    text: str, *, source: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate the YAML document ``text`` into a :class:`Config`.

    ``source`` is the file it came from: it names the file in errors and is
    the directory relative paths are resolved against (the current directory
    without it). ``environ`` supplies ``${VAR}`` references in passwords
    (default: ``os.environ``).

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
        ConfigError: two definitions of one shared mailbox disagree.
    """
    defaults = model.defaults or Defaults()
    servers = {name: _smtp_server(entry) for name, entry in (model.smtp_servers or {}).items()}
    mailboxes = {name: _mailbox(entry) for name, entry in (model.mailboxes or {}).items()}
    probes: list[ScheduledProbe] = []
    for probe in model.probes:
        fitted = timing.fit(
            defaults.interval if probe.interval is None else probe.interval,
            probe.timeout,
            probe.jitter,
            default_timeout=defaults.timeout,
            default_jitter=defaults.jitter,
        )
        spec = ProbeSpec(
            name=probe.name,
            smtp=servers[probe.smtp],
            mail_from=probe.mail_from,
            rcpt_to=probe.rcpt_to,
            mailbox=None if probe.mailbox is None else mailboxes[probe.mailbox],
            timeout=fitted.timeout,
        )
        probes.append(ScheduledProbe(spec=spec, interval=fitted.interval, jitter=fitted.jitter))
    used = [
        (probe.mailbox, mailboxes[probe.mailbox])
        for probe in model.probes
        if probe.mailbox is not None
    ]
    for loc, message in references.shared_mailbox_conflicts(used):
        document.problems.add(document.position(loc), loc, message)
    if document.problems:
        raise document.problems.error()
    return Config(
        probes=tuple(probes),
        server=model.server.listen if model.server is not None else ServerSettings(),
        token_secret=model.token_secret_file,
        source=source,
    )


def _smtp_server(entry: SmtpServerEntry) -> SmtpServer:
    return SmtpServer(
        host=entry.host,
        port=smtp_port(entry.tls) if entry.port is None else entry.port,
        tls=entry.tls,
        tls_settings=TlsSettings(verify=entry.verify, ca_file=entry.ca_file),
        username=entry.username,
        password=entry.password or entry.password_file,
        helo=entry.helo,
        timeout=entry.timeout,
    )


def _mailbox(entry: MailboxEntry) -> Mailbox:
    password = entry.password or entry.password_file
    if password is None:  # pragma: no cover - Mailbox.rules demands one
        raise AssertionError("a valid mailbox has a password")
    return Mailbox(
        host=entry.host,
        port=imap_port(entry.tls) if entry.port is None else entry.port,
        username=entry.username,
        password=password,
        tls=entry.tls,
        tls_settings=TlsSettings(verify=entry.verify, ca_file=entry.ca_file),
        folder=entry.folder,
        junk_folders=entry.junk_folders,
        idle=entry.idle,
        poll_interval=entry.poll_interval,
        timeout=entry.timeout,
    )


def validate(path: Path) -> str:
    """``smtp-probe validate``: the one-line summary of a valid config file.

    Raises:
        ConfigError: the file does not validate.
    """
    config = load_config(path)
    return f"{path}: valid: {len(config.probes)} probe(s), {len(config.mailboxes)} mailbox(es)"
