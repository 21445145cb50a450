r"""A private, real Postfix + Dovecot mail stack on loopback, for end-to-end tests.

What: :class:`MailStack` starts Debian's own ``postfix`` and ``dovecot`` binaries
with configuration, queue, mail storage, sockets and logs that all live in one
fresh temporary directory, listening only on free ``127.0.0.1`` ports.  It gives
the tests an MX-style SMTP port, a submission port (STARTTLS + AUTH), an
implicit-TLS submission port, IMAP (STARTTLS) and IMAPS, the virtual users
``probe`` and ``sink``, ``\Junk``/``\Trash``/``\Sent`` SPECIAL-USE folders
(``Junk`` reachable by address: ``sink+Junk@example.test``), a Sieve
``vacation`` reflector and a ``redirect`` forwarder (:data:`REFLECTOR`,
:data:`FORWARDER`), a few fault-injection recipients and, when started with
``oauth=``, OAuth2 bearer-token logins (XOAUTH2 and OAUTHBEARER, or only one
of them with ``oauth_mechanisms=``) on IMAP and submission, checked by RFC 7662
introspection at a test authorization server.

Why: the probe under test measures a real SMTP -> queue -> LMTP -> Maildir ->
IMAP round trip.  Mocks cannot reproduce the queueing, TLS, SASL, special-use
folders or the timing of a real MTA/IMAP pair, so the end-to-end tests run
against the real servers - but never against the machine's own mail system.

Isolation rules this module keeps:

* nothing under ``/etc/postfix``, ``/etc/dovecot``, ``/var/spool/postfix``,
  ``/run/dovecot`` or ``/var/lib/{postfix,dovecot}`` is read for state or
  written; Postfix runs as ``postfix -c <tmp>/postfix`` (its own ``main.cf``,
  ``master.cf``, queue and data directory) and Dovecot as
  ``dovecot -F -c <tmp>/dovecot/dovecot.conf`` (own ``base_dir``,
  ``state_dir``, logs and mail);
* every listener is on ``127.0.0.1`` and on a port chosen by the kernel
  (bind to port 0), never 25/465/587/143/993;
* mail can never leave the machine: only ``example.test`` is deliverable and
  every other destination resolves to Postfix's ``error`` transport;
* logs go to files in the temporary directory (no syslog is needed).

It must run as root (Postfix's ``master`` and Dovecot's master process need
it, exactly as on a real server).  The Debian packages create the system users
it relies on (``postfix``, ``postdrop``, ``dovecot``, ``dovenull``); mail is
stored as the pre-existing unprivileged ``nobody``/``nogroup``, so no user is
created.  Dovecot 2.3 (Debian 12) and 2.4 (Debian 13) are both supported: the
config template is picked from ``dovecot --version``.

Behaviour worth knowing when writing tests against it:

* failed logins never slow the next one down: Dovecot's per-IP auth penalty
  is off and ``auth_failure_delay = 0``.  The failed attempt itself is
  answered at once on 2.4 but after up to 0.5 s on 2.3 (2.3 flushes delayed
  failures on a fixed 500 ms timer);
* Dovecot counts 127.0.0.1 as secure, so plaintext IMAP LOGIN works on
  ``imap_port`` without STARTTLS;
* IMAP IDLE reports new mail ~0.5 s late (Dovecot's fixed notify delay);
  NOOP + SEARCH sees it ~10 ms after Postfix's 250;
* Maildir files hold bare-LF line endings, whatever came over the wire;
* while Dovecot is stopped, connections to the submission/smtps ports are
  dropped (Postfix's smtpd exits without its SASL backend); the MX port
  still queues mail, which is deferred until Dovecot is back;
* OAuth (``MailStack(oauth=...)``): a token is good for the user that
  introspection names (its ``username``), for that user only; passwords work
  only with PLAIN/LOGIN and tokens only with XOAUTH2/OAUTHBEARER.  A bad
  token gets IMAP ``NO [AUTHENTICATIONFAILED]`` and, on SMTP, a ``334``
  base64 JSON error challenge (XOAUTH2 ``{"status":"401","schemes":"bearer",
  ...}``, OAUTHBEARER ``{"status":"invalid_token",...}``; 2.4 adds keys) and
  ``535 5.7.8`` after the client's empty answer.  A good token for another
  user is refused the same way on 2.3, but on 2.4 without a challenge: IMAP
  ``NO [AUTHENTICATIONFAILED]`` at once, SMTP ``535 5.7.8 Error:
  authentication failed: (reason unavailable)``.  Introspection refused or
  hanging past ``oauth_timeout``: IMAP ``NO [UNAVAILABLE]``, but SMTP still
  ``535`` (Postfix has no temporary-failure reply for it; on 2.4 the
  challenge first says ``"status":"500"``/``"internal_failure"``);
* the reflector answers from ``reflector@example.test`` to the envelope
  sender with ``Auto: <original subject>`` (the subject may arrive folded and
  with doubled blanks: compare tokens, not exact text), ``In-Reply-To`` the
  original ``Message-ID``, no custom headers and a null envelope sender; it
  stays silent for ``Auto-Submitted`` mail, as smtp_probe's normal probe
  message is (Dovecot logs "discarding vacation response to auto-submitted
  message"); the sieve users' replies and redirects go out through the MX port.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.support import procs
from tests.support.postfix_instance import queue_records

__all__ = [
    "BOUNCE",
    "DEFER_450",
    "DISCARD",
    "DOMAIN",
    "FORWARDER",
    "HOLD",
    "JUNK_ADDRESS",
    "OUTAGE",
    "REFLECTOR",
    "REJECT_550",
    "SLOW",
    "TRASH_FOLDER",
    "USERS",
    "IntrospectionEndpoint",
    "MailStack",
    "MailStackError",
    "imap_quoted",
]

#: The only mail domain the stack accepts and delivers.
DOMAIN = "example.test"

#: Virtual users (address -> password); Dovecot authenticates these for IMAP
#: and, through Postfix's Dovecot SASL, for SMTP AUTH.
USERS: Mapping[str, str] = {
    "probe@example.test": "probe-secret",
    "sink@example.test": "sink-secret",
    "reflector@example.test": "reflector-secret",
    "forward@example.test": "forward-secret",
}

#: Answers every message with a real Sieve ``vacation`` auto-reply to the
#: envelope sender, subject ``Auto: <original subject>`` (so a probe token in
#: the subject comes back).  Like every RFC 3834 responder it stays silent
#: for mail marked ``Auto-Submitted`` (other than ``no``), for ``Precedence:
#: bulk/list/junk``, mailing-list mail, a null or ``MAILER-DAEMON``-style
#: sender, and mail whose To/Cc does not name this address.
REFLECTOR = "reflector@example.test"
#: Passes every message on unchanged to ``sink@example.test`` (Sieve
#: ``redirect``; the envelope sender stays the original one).
FORWARDER = "forward@example.test"
#: sink's ``\Trash`` SPECIAL-USE folder (also ``\Junk`` ``Junk``, ``\Sent`` ``Sent``).
TRASH_FOLDER = "Trash"

#: Address whose mail lands in sink's ``Junk`` folder (LMTP detail mailbox).
JUNK_ADDRESS = "sink+Junk@example.test"

#: Rejected at RCPT with ``550 5.1.1`` (access(5) table).
REJECT_550 = "reject550@example.test"
#: Rejected at RCPT with ``450 4.2.0`` (access(5) table).
DEFER_450 = "defer450@example.test"
#: Accepted with 250, then parked in Postfix's hold queue; never delivered.
HOLD = "hold@example.test"
#: Accepted with 250, then bounced by Dovecot's LMTP (unknown user there):
#: a DSN goes back to the envelope sender.
BOUNCE = "bounce@example.test"
#: Accepted with 250, then deferred forever (next hop refuses connections).
OUTAGE = "outage@example.test"
#: Accepted with 250, then silently discarded by Postfix.
DISCARD = "discard@example.test"
#: Accepted with 250, then delivered to sink's INBOX over LMTP through the
#: socket ``private/slow-lmtp`` in Postfix's queue directory instead of
#: Dovecot's own: :class:`tests.support.slow_hop.SlowHop` listens there and
#: passes each session on after a delay.  While nothing listens, deferred.
SLOW = "sink+slow@example.test"

_HOST = procs.HOST
_TMP_PREFIX = "mailstack-"
_MAIL_USER = "nobody"
_MAIL_GROUP = "nogroup"
_PACKAGES_HINT = (
    "install them with: DEBIAN_FRONTEND=noninteractive apt-get install -y "
    "postfix dovecot-imapd dovecot-lmtpd dovecot-sieve"
)
# the OAuth2 SASL mechanisms Dovecot can offer, as its config spells them
_TOKEN_MECHANISMS = ("xoauth2", "oauthbearer")
# the reflector and forwarder users need it (Debian package dovecot-sieve)
_SIEVE_PLUGIN = Path("/usr/lib/dovecot/modules/lib90_sieve_plugin.so")


class MailStackError(RuntimeError):
    """The mail stack could not be started or a server command failed."""


class IntrospectionEndpoint(Protocol):
    """Anything with an RFC 7662 token introspection URL (the test OAuth server)."""

    @property
    def introspection_url(self) -> str:
        """``http://127.0.0.1:PORT/...``: where Dovecot POSTs ``token=...``."""
        ...


# Configuration templates live as files beside this module
# (``mailstack_conf/``); ``@name@`` placeholders are filled by procs.render().
_CONF_DIR = Path(__file__).resolve().parent / "mailstack_conf"


def imap_quoted(value: str) -> str:
    """``value`` as an IMAP quoted string (a folder name, a SEARCH argument)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _template(name: str) -> str:
    """The text of the template ``mailstack_conf/<name>``."""
    return (_CONF_DIR / name).read_text(encoding="utf-8")


def _token_mechanisms(oauth: object, wanted: Sequence[str] | None) -> tuple[str, ...]:
    """The token mechanisms to offer, lower case, in Dovecot's spelling (see MailStack).

    Raises:
        ValueError: ``wanted`` is empty, unknown, duplicated, or given without ``oauth``.
    """
    if wanted is None:
        return _TOKEN_MECHANISMS
    if oauth is None:
        raise ValueError("oauth_mechanisms needs oauth= (the stack offers no tokens without it)")
    names = tuple(name.lower() for name in wanted)
    if not names or len(set(names)) != len(names) or not set(names) <= set(_TOKEN_MECHANISMS):
        raise ValueError(
            f"oauth_mechanisms must be distinct names among {_TOKEN_MECHANISMS}, got {tuple(wanted)}"
        )
    return names


def _find_binary(name: str) -> str:
    """Locate a server binary in PATH or the sbin directories (root's PATH may lack them)."""
    found = procs.find_binary(name)
    if found is None:
        raise MailStackError(
            f"MailStack needs the '{name}' binary, which was not found in PATH or "
            f"{procs.searched()}; {_PACKAGES_HINT}"
        )
    return found


def _reap_stale_stacks() -> None:
    """Stop servers and remove temp dirs left behind by crashed sessions.

    ``atexit`` does not run when the Python process is killed (SIGKILL, a CI
    timeout), so every start first looks for ``mailstack-*`` directories
    whose owner process is gone and cleans them up.
    """
    procs.reap_stale(_TMP_PREFIX, _kill_stack_processes)


def _kill_stack_processes(root: Path) -> None:
    """Stop the Postfix and Dovecot process groups whose state lives under ``root``.

    A master is only signalled if it is verifiably this stack's
    (:func:`procs.proc_matches`).  If the master is already gone, children still in
    its process group are orphans of this stack: Linux never hands out a pid
    equal to a live process group's id, so that group cannot be anyone else's.
    """
    for pid_file, exe_name in (
        (root / "spool" / "pid" / "master.pid", "master"),
        (root / "dovecot" / "run" / "master.pid", "dovecot"),
    ):
        leader = procs.read_pid(pid_file)
        if leader is None:
            continue
        if procs.proc_matches(leader, exe_name, str(root)):
            procs.stop_group(leader)
        elif not procs.pid_alive(leader):
            for pid in procs.group_members(leader):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class _Layout:
    """Every path and port of one started stack."""

    root: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    smtp_port: int
    submission_port: int
    smtps_port: int
    imap_port: int
    imaps_port: int

    @property
    def postfix_conf(self) -> Path:
        """Postfix ``config_directory`` (main.cf, master.cf, tables)."""
        return self.root / "postfix"

    @property
    def queue_dir(self) -> Path:
        """Postfix ``queue_directory``; also holds the LMTP/auth sockets."""
        return self.root / "spool"

    @property
    def data_dir(self) -> Path:
        """Postfix ``data_directory`` (master.lock, caches)."""
        return self.root / "postfix-data"

    @property
    def log_dir(self) -> Path:
        """Directory of both servers' log files."""
        return self.root / "log"

    @property
    def postfix_log(self) -> Path:
        """Postfix's ``maillog_file``."""
        return self.log_dir / "postfix.log"

    @property
    def dovecot_log(self) -> Path:
        """Dovecot's ``log_path``."""
        return self.log_dir / "dovecot.log"

    @property
    def dovecot_stderr(self) -> Path:
        """Dovecot's stderr: config errors before logging is set up land here."""
        return self.log_dir / "dovecot.stderr"

    @property
    def dovecot_dir(self) -> Path:
        """Dovecot config directory."""
        return self.root / "dovecot"

    @property
    def dovecot_conf(self) -> Path:
        """The standalone dovecot.conf (no conf.d, no Debian includes)."""
        return self.dovecot_dir / "dovecot.conf"

    @property
    def dovecot_run(self) -> Path:
        """Dovecot ``base_dir`` (its sockets and master.pid)."""
        return self.dovecot_dir / "run"

    @property
    def vmail_dir(self) -> Path:
        """Mail storage root: ``<vmail>/<domain>/<localpart>/Maildir``."""
        return self.root / "vmail"


class MailStack:
    """A private Postfix + Dovecot pair on 127.0.0.1 (see the module docstring).

    Use as ``stack = MailStack(); stack.start(); ...; stack.stop()`` or as a
    context manager.  Connection facts (``host``, the ``*_port`` attributes,
    ``ca_file``, ``users``) are valid once :meth:`start` returned.
    """

    host: str = _HOST
    domain: str = DOMAIN

    def __init__(
        self,
        *,
        oauth: str | IntrospectionEndpoint | None = None,
        oauth_timeout: float = 5.0,
        oauth_mechanisms: Sequence[str] | None = None,
        start_timeout: float = 20.0,
        imap_max_line_length: int | None = None,
    ) -> None:
        """Prepare (but do not start) a stack; ``start_timeout`` bounds start-up.

        ``imap_max_line_length`` (bytes) makes Dovecot refuse longer IMAP
        command lines ("Too long argument"), as servers that keep RFC 7162's
        recommended 8,192 octets do; Dovecot's own default is 64 KB.

        ``oauth``: an introspection URL, or an object with an
        ``introspection_url`` (the test authorization server), turns on the
        XOAUTH2 and OAUTHBEARER mechanisms for IMAP and SMTP submission;
        Dovecot then asks that endpoint about every token, giving up after
        ``oauth_timeout`` seconds.  The URL is read at :meth:`start`.
        Passwords keep working for PLAIN and LOGIN either way.

        ``oauth_mechanisms`` narrows the token mechanisms offered (IMAP
        ``AUTH=`` capabilities and, through Dovecot SASL, Postfix's EHLO
        ``AUTH`` line), e.g. ``("xoauth2",)`` to stand in for Microsoft 365,
        which offers no OAUTHBEARER; None (the default) offers both.

        Raises:
            ValueError: ``oauth_mechanisms`` is empty, names something other
                than ``xoauth2``/``oauthbearer``, or is given without ``oauth``.
        """
        self.start_timeout = start_timeout
        self.imap_max_line_length = imap_max_line_length
        self.oauth = oauth
        self.oauth_timeout = oauth_timeout
        self.oauth_mechanisms = _token_mechanisms(oauth, oauth_mechanisms)
        self.users: dict[str, str] = dict(USERS)
        self.dovecot_version = ""
        self.postfix_version = ""
        #: seconds the last :meth:`start` took
        self.start_seconds = 0.0
        self._layout: _Layout | None = None
        self._dovecot: subprocess.Popen[bytes] | None = None
        self._bins: dict[str, str] = {}
        self._atexit_registered = False

    # ------------------------------------------------------------ attributes

    @property
    def layout(self) -> _Layout:
        """Paths and ports of the running stack; raises if not started."""
        if self._layout is None:
            raise MailStackError("MailStack is not started")
        return self._layout

    @property
    def root(self) -> Path:
        """The stack's private temporary directory."""
        return self.layout.root

    @property
    def ca_file(self) -> Path:
        """PEM file of the throwaway CA that signed both servers' certificate."""
        return self.layout.ca_file

    @property
    def smtp_port(self) -> int:
        """MX-style SMTP: no AUTH, STARTTLS offered, mail for example.test only."""
        return self.layout.smtp_port

    @property
    def submission_port(self) -> int:
        """Submission: STARTTLS required, then SASL AUTH (via Dovecot) required."""
        return self.layout.submission_port

    @property
    def smtps_port(self) -> int:
        """Implicit-TLS submission (smtpd_tls_wrappermode), SASL AUTH required."""
        return self.layout.smtps_port

    @property
    def imap_port(self) -> int:
        """IMAP with STARTTLS offered."""
        return self.layout.imap_port

    @property
    def imaps_port(self) -> int:
        """IMAP over implicit TLS."""
        return self.layout.imaps_port

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._layout is not None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only the stack's CA (hostname checks on)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def __enter__(self) -> MailStack:
        """Start the stack (if needed) for a ``with`` block."""
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the stack at the end of a ``with`` block."""
        self.stop()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Create the temp dir, certificates and configs, start both servers.

        Returns when every port greets (TLS ports after a verified
        handshake) and the LMTP and auth sockets exist.  Raises
        :class:`MailStackError` (a RuntimeError) with the tail of the logs if
        that does not happen within ``start_timeout`` seconds, or if a binary
        is missing or we are not root - it never skips, so a broken CI
        machine fails loudly.
        """
        if self._layout is not None:
            raise MailStackError("MailStack is already started")
        began = time.monotonic()
        self._check_environment()
        _reap_stale_stacks()
        root = procs.new_root(_TMP_PREFIX)
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            ports = procs.free_ports(5)
            layout = _Layout(
                root=root,
                ca_file=root / "tls" / "ca.pem",
                cert_file=root / "tls" / "server-chain.pem",
                key_file=root / "tls" / "server-key.pem",
                smtp_port=ports[0],
                submission_port=ports[1],
                smtps_port=ports[2],
                imap_port=ports[3],
                imaps_port=ports[4],
            )
            self._layout = layout
            self._write_certificates(layout)
            self._write_postfix_config(layout)
            self._write_dovecot_config(layout)
            # Dovecot first: Postfix's submission/smtps smtpd processes die
            # at connect time while the SASL socket is missing (and master
            # then throttles the service), so the auth socket must exist
            # before Postfix takes connections.
            self._spawn_dovecot(layout)
            self._wait_ready(
                [(layout.imap_port, "imap", False), (layout.imaps_port, "imap", True)],
                [
                    layout.queue_dir / "private" / "dovecot-lmtp",
                    layout.queue_dir / "private" / "auth",
                ],
                began + self.start_timeout,
            )
            self._start_postfix(layout)
            self._wait_ready(
                [
                    (layout.smtp_port, "smtp", False),
                    (layout.submission_port, "smtp", False),
                    (layout.smtps_port, "smtp", True),
                ],
                [],
                began + self.start_timeout,
            )
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop both servers and delete the temp dir.  Safe to call repeatedly."""
        layout = self._layout
        if layout is None:
            return
        try:
            self._stop_dovecot_process()
            self._stop_postfix(layout)
            # anything still running from this tree (e.g. a master whose
            # Popen handle we never had) is found via its pid file
            _kill_stack_processes(layout.root)
        finally:
            self._layout = None
            shutil.rmtree(layout.root, ignore_errors=True)

    def stop_dovecot(self) -> None:
        """Stop Dovecot only: IMAP refuses connections, LMTP delivery defers.

        Takes ~0.1 s.  A delivery in flight at that moment is cut off (its
        lmtp process gets SIGKILL after 1 s if it hangs on the vanished auth
        service), so Postfix retries it later; stop Dovecot after the mail
        you care about has arrived if duplicates would confuse the test.
        """
        self.layout  # noqa: B018 - raises if not started
        self._stop_dovecot_process()

    def start_dovecot(self) -> None:
        """Start Dovecot again after :meth:`stop_dovecot`; wait until all ports serve.

        While Dovecot was down, connections to the submission/smtps ports made
        Postfix's smtpd exit (no SASL socket) and master throttle those
        services (for ``service_throttle_time`` = 1 s here), so this also
        waits until they greet again.
        """
        layout = self.layout
        if self._dovecot is not None and self._dovecot.poll() is None:
            return
        deadline = time.monotonic() + self.start_timeout
        self._spawn_dovecot(layout)
        self._wait_ready(
            [(layout.imap_port, "imap", False), (layout.imaps_port, "imap", True)],
            [layout.queue_dir / "private" / "dovecot-lmtp", layout.queue_dir / "private" / "auth"],
            deadline,
        )
        self._wait_ready(
            [(layout.submission_port, "smtp", False), (layout.smtps_port, "smtp", True)],
            [],
            deadline,
        )

    # --------------------------------------------------------- postfix queue

    def queue(self) -> list[dict[str, Any]]:
        """Postfix's queue as parsed ``postqueue -j`` records (one per message).

        Each dict has at least ``queue_name`` (``incoming``/``active``/
        ``deferred``/``hold``), ``queue_id``, ``sender`` and ``recipients``
        (a list of dicts with ``address`` and, when deferred,
        ``delay_reason``).
        """
        return queue_records(self._run_postfix_cmd("postqueue", "-j"))

    def delete_queued(self, queue_id: str = "ALL") -> None:
        """Delete one queued message (or ``ALL``) with ``postsuper -d``."""
        self._run_postfix_cmd("postsuper", "-d", queue_id)

    def flush(self) -> None:
        """Ask Postfix to retry deferred mail now (``postqueue -f``)."""
        self._run_postfix_cmd("postqueue", "-f")

    # -------------------------------------------------------------- mailboxes

    def maildir_path(self, user: str, folder: str = "INBOX") -> Path:
        """Maildir directory of ``folder`` for ``user`` (Maildir++ layout)."""
        address = self._address(user)
        local, _, domain = address.partition("@")
        base = self.layout.vmail_dir / domain / local / "Maildir"
        if folder.upper() == "INBOX":
            return base
        return base / ("." + folder.replace("/", "."))

    def maildir_messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Raw messages in ``folder``, read straight from Maildir ``new/`` and ``cur/``.

        Bypasses IMAP on purpose: tests can check what was really delivered
        without going through the code under test.  Ordered by file name
        (which starts with the delivery time).  Dovecot stores messages with
        bare LF line endings, so CRLF from the wire comes back as LF.
        """
        path = self.maildir_path(user, folder)
        for _ in range(5):
            files: list[Path] = []
            for sub in ("new", "cur"):
                with contextlib.suppress(FileNotFoundError):
                    files.extend(p for p in (path / sub).iterdir() if p.is_file())
            try:
                return [file.read_bytes() for file in sorted(files, key=lambda p: p.name)]
            except FileNotFoundError:
                # Dovecot renamed (new/ -> cur/, flag change) or expunged a
                # file between listing and reading: take a fresh snapshot
                continue
        raise MailStackError(f"Maildir {path} kept changing while being read")

    def append(self, user: str, folder: str, raw: bytes) -> int | None:
        """Plant a raw message in ``folder`` via IMAP APPEND over IMAPS.

        Returns the new message's UID (from Dovecot's APPENDUID) or None.
        Lines are sent with CRLF endings, as IMAP requires.  ``folder`` must
        be ASCII.
        """
        address = self._address(user)
        with imaplib.IMAP4_SSL(
            self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=10
        ) as imap:
            imap.login(address, self.users[address])
            typ, data = imap.append(
                imap_quoted(folder), "", imaplib.Time2Internaldate(time.time()), raw
            )
            if typ != "OK":
                raise MailStackError(f"APPEND to {folder!r} failed: {typ} {data!r}")
            imap.logout()
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
        match = re.search(r"APPENDUID \d+ (\d+)", text)
        return int(match.group(1)) if match else None

    def expunge(
        self, user: str, criteria: tuple[str, ...], error: type[Exception] = MailStackError
    ) -> int:
        """Delete (IMAP, by UID) every message in ``user``'s INBOX and Junk matching ``criteria``.

        ``criteria`` are IMAP ``UID SEARCH`` arguments, strings quoted
        (:func:`imap_quoted`). Returns how many were deleted. ``error`` is
        the harness's error type (the stacks in front of this one pass theirs).

        Raises:
            imaplib.IMAP4.error: the IMAP server refused the login or a command.
            Exception: ``error``, when a folder could not be selected.
        """
        address = user if "@" in user else f"{user}@{DOMAIN}"
        deleted = 0
        with imaplib.IMAP4_SSL(
            self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=10
        ) as imap:
            imap.login(address, self.users[address])
            for folder in ("INBOX", "Junk"):
                typ, _ = imap.select(folder)
                if typ != "OK":
                    raise error(f"SELECT {folder} as {address} failed")
                typ, data = imap.uid("SEARCH", "CHARSET", "UTF-8", *criteria)
                uids = data[0].split() if typ == "OK" and data and data[0] else []
                if uids:
                    uid_set = b",".join(uids).decode()
                    imap.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
                    imap.uid("EXPUNGE", uid_set)
                    deleted += len(uids)
                imap.close()
            imap.logout()
        return deleted

    # ------------------------------------------------------------------- logs

    def postfix_log(self) -> str:
        """Postfix's log so far (``maillog_file``)."""
        return procs.read_log(self.layout.postfix_log)

    def dovecot_log(self) -> str:
        """Dovecot's log so far (``log_path``, plus anything it wrote to stderr)."""
        layout = self.layout
        return procs.read_log(layout.dovecot_stderr) + procs.read_log(layout.dovecot_log)

    # -------------------------------------------------------------- internals

    def _address(self, user: str) -> str:
        """Accept ``sink`` or ``sink@example.test``; must be a known user."""
        address = user if "@" in user else f"{user}@{DOMAIN}"
        address = address.lower()
        if address not in self.users:
            raise KeyError(f"unknown mailstack user {user!r}; known: {sorted(self.users)}")
        return address

    def _check_environment(self) -> None:
        """Fail early and clearly: root, binaries, the users the packages create."""
        if os.geteuid() != 0:
            raise MailStackError(
                "MailStack must run as root: Postfix's master and Dovecot need it (CI runs as root)"
            )
        for name in ("postfix", "postconf", "postqueue", "postsuper", "dovecot"):
            self._bins[name] = _find_binary(name)
        if not _SIEVE_PLUGIN.is_file():
            # Dovecot would refuse to start with a less helpful "Plugin not found"
            raise MailStackError(
                f"Dovecot's Sieve plugin {_SIEVE_PLUGIN} is missing; {_PACKAGES_HINT}"
            )
        for user in ("postfix", "dovecot", "dovenull", _MAIL_USER):
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise MailStackError(f"system user {user!r} is missing; {_PACKAGES_HINT}") from None
        for group in ("postdrop", _MAIL_GROUP):
            try:
                grp.getgrnam(group)
            except KeyError:
                raise MailStackError(
                    f"system group {group!r} is missing; {_PACKAGES_HINT}"
                ) from None
        out = self._run([self._bins["dovecot"], "--version"]).strip()
        self.dovecot_version = out.split()[0] if out else ""
        match = re.match(r"(\d+)\.(\d+)", self.dovecot_version)
        if match is None or (int(match.group(1)), int(match.group(2))) < (2, 3):
            raise MailStackError(f"unsupported Dovecot version {out!r} (need 2.3 or 2.4)")
        self.postfix_version = self._run(
            [self._bins["postconf"], "-d", "-h", "mail_version"]
        ).strip()

    def _dovecot_is_24(self) -> bool:
        match = re.match(r"(\d+)\.(\d+)", self.dovecot_version)
        return match is not None and (int(match.group(1)), int(match.group(2))) >= (2, 4)

    @staticmethod
    def _write_certificates(layout: _Layout) -> None:
        """A throwaway CA and a server cert for localhost/mx.example.test/127.0.0.1."""
        import trustme  # test dependency; imported late so the module imports without it

        tls_dir = layout.ca_file.parent
        tls_dir.mkdir(mode=0o755)
        ca = trustme.CA(organization_name="mailstack test CA")
        leaf = ca.issue_cert("localhost", "mx.example.test", _HOST, common_name="mx.example.test")
        ca.cert_pem.write_to_path(str(layout.ca_file))
        layout.cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        # private key: root only (both servers load it before dropping privileges)
        fd = os.open(layout.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(leaf.private_key_pem.bytes())
        layout.ca_file.chmod(0o644)
        layout.cert_file.chmod(0o644)

    @staticmethod
    def _write_postfix_config(layout: _Layout) -> None:
        """main.cf/master.cf/tables; queue + data dirs are made by ``postfix check``."""
        conf = layout.postfix_conf
        conf.mkdir(mode=0o755)
        layout.queue_dir.mkdir(mode=0o755)
        postfix = pwd.getpwnam("postfix")
        # private/ now, not at "postfix start": Dovecot starts first and puts
        # its LMTP and auth sockets there (owner/mode as post-install sets).
        (layout.queue_dir / "private").mkdir(mode=0o700)
        os.chown(layout.queue_dir / "private", postfix.pw_uid, 0)
        layout.data_dir.mkdir(mode=0o700)
        os.chown(layout.data_dir, postfix.pw_uid, postfix.pw_gid)
        layout.log_dir.mkdir(mode=0o755)
        values: dict[str, object] = {
            "root": layout.root,
            "queue_dir": layout.queue_dir,
            "data_dir": layout.data_dir,
            "conf_dir": conf,
            "postfix_log": layout.postfix_log,
            "cert_file": layout.cert_file,
            "key_file": layout.key_file,
            "smtp_port": layout.smtp_port,
            "submission_port": layout.submission_port,
            "smtps_port": layout.smtps_port,
        }
        for name in ("main.cf", "master.cf", "vmailbox", "recipient_access", "transport"):
            procs.write_past(conf / name, procs.render(_template(f"postfix/{name}"), values))

    def _write_dovecot_config(self, layout: _Layout) -> None:
        """dovecot.conf (2.3 or 2.4 syntax), passwd-file, mail root, Sieve scripts."""
        layout.dovecot_dir.mkdir(mode=0o755)
        (layout.dovecot_dir / "state").mkdir(mode=0o755)
        layout.vmail_dir.mkdir(mode=0o755)
        mail_user = pwd.getpwnam(_MAIL_USER)
        mail_group = grp.getgrnam(_MAIL_GROUP)
        os.chown(layout.vmail_dir, mail_user.pw_uid, mail_group.gr_gid)
        self._write_sieve_scripts(layout, mail_user.pw_uid, mail_group.gr_gid)
        users_file = layout.dovecot_dir / "users"
        # throwaway test credentials; the auth process (user dovecot) reads it
        users_file.write_text(
            "".join(f"{user}:{{PLAIN}}{password}\n" for user, password in self.users.items())
        )
        users_file.chmod(0o644)
        values: dict[str, object] = {
            "dovecot_run": layout.dovecot_run,
            "dovecot_state": layout.dovecot_dir / "state",
            "dovecot_log": layout.dovecot_log,
            "cert_file": layout.cert_file,
            "key_file": layout.key_file,
            "users_file": users_file,
            "mail_user": _MAIL_USER,
            "mail_group": _MAIL_GROUP,
            "vmail_dir": layout.vmail_dir,
            "imap_port": layout.imap_port,
            "imaps_port": layout.imaps_port,
            "queue_dir": layout.queue_dir,
            "smtp_port": layout.smtp_port,
            "auth_mechanisms": "plain login",
        }
        version = "2.4" if self._dovecot_is_24() else "2.3"
        parts = [
            procs.render(_template(f"dovecot/dovecot-{version}.conf"), values),
            procs.render(_template("dovecot/common.conf"), values),
        ]
        url = self._introspection_url()
        if url is not None:
            token_mechanisms = " ".join(self.oauth_mechanisms)
            values |= {
                "auth_mechanisms": f"plain login {token_mechanisms}",
                "oauth_mechanisms": token_mechanisms,
                "introspection_url": url,
                "oauth_timeout_msecs": max(1, round(self.oauth_timeout * 1000)),
                "oauth2_file": layout.dovecot_dir / "dovecot-oauth2.conf.ext",
            }
            parts[1] = procs.render(_template("dovecot/common.conf"), values)
            parts.append(procs.render(_template(f"dovecot/oauth-{version}.conf"), values))
            if version == "2.3":
                ext = layout.dovecot_dir / "dovecot-oauth2.conf.ext"
                ext.write_text(procs.render(_template("dovecot/oauth2-2.3.conf.ext"), values))
                ext.chmod(0o644)
        if self.imap_max_line_length is not None:
            parts.append(f"imap_max_line_length = {self.imap_max_line_length}\n")
        layout.dovecot_conf.write_text("\n".join(parts))

    def _introspection_url(self) -> str | None:
        """The introspection URL from ``oauth`` (a string or a server object), or None.

        Raises MailStackError unless it is plain HTTP to 127.0.0.1 (it may
        carry the introspecting client's credentials as userinfo).
        """
        oauth = self.oauth
        if oauth is None:
            return None
        url = oauth if isinstance(oauth, str) else oauth.introspection_url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname != _HOST or parts.port is None:
            # the stack must never talk to anything off this machine; no
            # https: Dovecot would need the server's CA and nothing gains
            raise MailStackError(
                f"oauth introspection URL must be http://{_HOST}:PORT/..., got "
                f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"
            )
        return url

    @staticmethod
    def _write_sieve_scripts(layout: _Layout, uid: int, gid: int) -> None:
        """The reflector's and forwarder's active Sieve script, in their home directories.

        Dovecot's LMTP (running as the mail user) compiles each on first
        delivery and saves the binary beside it, so the homes belong to that user.
        """
        for address, name in ((REFLECTOR, "reflector.sieve"), (FORWARDER, "forward.sieve")):
            local, _, domain = address.partition("@")
            home = layout.vmail_dir / domain / local
            home.mkdir(parents=True, mode=0o755)
            script = home / ".dovecot.sieve"
            script.write_text(_template(f"sieve/{name}"))
            for path in (home.parent, home, script):
                os.chown(path, uid, gid)

    def _start_postfix(self, layout: _Layout) -> None:
        """``postfix -c DIR start``: creates the queue dirs, checks, daemonizes."""
        self._run([self._bins["postfix"], "-c", str(layout.postfix_conf), "start"])

    def _stop_postfix(self, layout: _Layout) -> None:
        """Stop Postfix's master and every child (its process group), via its pid file."""
        procs.stop_if_ours(layout.queue_dir / "pid" / "master.pid", "master", layout.root)

    def _spawn_dovecot(self, layout: _Layout) -> None:
        """Run ``dovecot -F -c FILE`` as our child; stderr goes to a log file."""
        with open(layout.dovecot_stderr, "ab") as err:
            self._dovecot = subprocess.Popen(
                [self._bins["dovecot"], "-F", "-c", str(layout.dovecot_conf)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # a terminal's ^C goes to pytest only
            )

    def _stop_dovecot_process(self) -> None:
        """Stop Dovecot's master and all its children (its process group), reap it."""
        proc = self._dovecot
        self._dovecot = None
        if proc is not None:
            procs.stop_process(proc)

    def _wait_ready(
        self,
        ports: list[tuple[int, str, bool]],
        sockets: list[Path],
        deadline: float,
    ) -> None:
        """Poll until each (port, protocol, tls) greets and ``sockets`` exist, or raise."""
        tls = self.ssl_context()
        pending = {port: (protocol, use_tls) for port, protocol, use_tls in ports}
        reasons: dict[int, str] = {}
        pending_sockets = list(sockets)
        while True:
            if self._dovecot is not None and self._dovecot.poll() is not None:
                self._fail(f"dovecot exited with status {self._dovecot.returncode}")
            for port, (protocol, use_tls) in list(pending.items()):
                reason = procs.probe_greeting(port, protocol, tls if use_tls else None)
                if reason is None:
                    del pending[port]
                else:
                    reasons[port] = reason
            pending_sockets = [s for s in pending_sockets if not s.exists()]
            if not pending and not pending_sockets:
                return
            if time.monotonic() > deadline:
                self._fail(
                    f"not ready after {self.start_timeout:.0f}s: ports not serving "
                    f"{ {port: reasons.get(port) for port in pending} }, sockets missing "
                    f"{[str(s) for s in pending_sockets]}"
                )
            time.sleep(0.02)

    def _fail(self, reason: str) -> None:
        """Raise MailStackError with ``reason`` and the tail of both logs."""
        layout = self.layout
        raise MailStackError(
            f"mail stack failed: {reason}\n"
            f"--- {layout.dovecot_stderr} (tail) ---\n{procs.tail(layout.dovecot_stderr)}\n"
            f"--- {layout.dovecot_log} (tail) ---\n{procs.tail(layout.dovecot_log)}\n"
            f"--- {layout.postfix_log} (tail) ---\n{procs.tail(layout.postfix_log)}"
        )

    def _run_postfix_cmd(self, name: str, *args: str) -> str:
        """Run a Postfix admin command against this instance (``-c DIR``)."""
        return self._run([self._bins[name], "-c", str(self.layout.postfix_conf), *args])

    def _run(self, argv: list[str]) -> str:
        """Run a command, return stdout; raise MailStackError with all output on failure."""
        log = self._layout.postfix_log if self._layout is not None else None
        return procs.run(argv, MailStackError, log)
