r"""A real Postfix with one smtpd listener per mail-policy setting, right and wrong.

What: :class:`PolicyStack` starts, beside a started :class:`MailStack`, one
more private instance of Debian's own ``postfix`` (``policy.example.test``)
with several smtpd services in its master.cf, each on a free ``127.0.0.1``
port.  main.cf holds the **secure** baseline; every other listener overrides
exactly one policy with ``-o`` (:data:`LISTENERS`):

* ``secure``: relaying only for SASL-authenticated clients
  (``permit_sasl_authenticated, reject_unauth_destination``): an
  unauthenticated RCPT to a foreign domain gets ``554 5.7.1 <addr>: Relay
  access denied``; AUTH only after STARTTLS (``smtpd_tls_auth_only = yes``:
  the plain EHLO offers no AUTH, an AUTH there gets ``503 5.5.1 Error:
  authentication not enabled``); a logged-in user may send only as its own
  address (``reject_authenticated_sender_login_mismatch``, each MailStack
  user owns its address): otherwise ``553 5.7.1 <addr>: Sender address
  rejected: not owned by user probe@example.test`` at RCPT; only
  ``<CR><LF>.<CR><LF>`` ends DATA (``smtpd_forbid_bare_newline = yes``, no
  exclusions: Postfix 3.7.11 and 3.10 then both "normalize" bare LFs, so
  ``<LF>.<CR><LF>`` + a second transaction stays inside the first message:
  one ``250``, one delivery); a client that sends before the server's reply
  where RFC 2920 forbids it (e.g. message text before ``354``) gets ``554
  5.5.0 Error: SMTP protocol synchronization`` (``smtpd_forbid_unauth_pipelining
  = yes``: the 3.10 default, set here for 3.7 too);
* ``open_relay``: ``mynetworks = 0.0.0.0/0`` and ``permit_mynetworks``
  first (the classic misconfiguration): relays anything, unauthenticated;
* ``auth_in_clear``: ``smtpd_tls_auth_only = no``: AUTH (PLAIN, LOGIN) in the
  plain EHLO, and a wrong password there gets ``535``;
* ``no_login_mismatch``: no sender restriction: a logged-in user may use any
  MAIL FROM;
* ``smuggling``: ``smtpd_forbid_bare_newline = no`` (Debian 12's default;
  Debian 13 defaults to ``normalize``) and ``smtpd_forbid_unauth_pipelining
  = no`` (Debian 13 needs it too): ``<LF>.<CR><LF>`` ends DATA (so do
  ``<LF>.<LF>`` and ``<CR><LF>.<LF>``: :data:`SMUGGLING_ACCEPTED`), so a
  second transaction hidden in the first message's text - sent in one
  write - gets ``250 queued``, ``250``, ``250``, ``354``, ``250 queued`` and
  both messages are delivered.  With the first setting alone (pipelining
  still forbidden, as in the baseline and stock Debian 13), both versions
  queue the first message, answer the hidden MAIL and RCPT with 250 and the
  hidden DATA with ``554 5.5.0 Error: SMTP protocol synchronization`` (its
  text came before its 354) and hang up: nothing is smuggled.

Unauthenticated clients may use any MAIL FROM everywhere (the login check is
the ``authenticated`` form), so MX-style probes (relay, smuggling) need no
login.  Mail for ``example.test`` is relayed to the MailStack's MX port and
delivered there (:data:`LOCAL_RECIPIENT`: sink's INBOX).  Every other domain
(e.g. :data:`OUTSIDE_DOMAIN`) is foreign: sending there is relaying, and
what a listener does relay is rewritten (``virtual_alias_maps``, envelope
only; the headers keep the outside address) to ``sink@example.test``, so it
lands in sink's INBOX too.  Nothing can leave loopback: no DNS
(``smtp_dns_support_level = disabled``), the only next hop is the MailStack
by literal IP, everything else hits the ``error`` transport.

Why: smtp_probe's policy checks (``check: open_relay``, ``auth_requires_tls``,
``sender_mismatch``, ``smtp_smuggling``) must pass on a server configured
right and fail on one configured wrong; only a real Postfix answers the way
production ones do.

Helpers: :meth:`PolicyStack.listener` (host, port), :attr:`~PolicyStack.ca_file`,
:attr:`~PolicyStack.credentials`, :func:`smtp_server` (smtp_probe's
``SmtpServer`` for a listener), :meth:`~PolicyStack.wait_delivered` /
:meth:`~PolicyStack.delete_mail` (sink's mailbox), :func:`unused_port` (a
"down MX") and :func:`left_clean` (the per-test check behind the ``policy``
fixture).

Runs as root (Postfix's master needs it); starts in under half a second.
Postfix 3.7 (Debian 12) and 3.10 (Debian 13) behave the same here.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import email
import email.policy
import os
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support import procs
from tests.support.mailstack import DOMAIN, MailStack, MailStackError, imap_quoted
from tests.support.postfix_instance import Instance, queue_records

if TYPE_CHECKING:
    from smtp_probe.probe.spec import SmtpServer

__all__ = [
    "AUTH_IN_CLEAR",
    "HOSTNAME",
    "LISTENERS",
    "LOCAL_RECIPIENT",
    "NO_LOGIN_MISMATCH",
    "OPEN_RELAY",
    "OUTSIDE_DOMAIN",
    "OUTSIDE_RECIPIENT",
    "OUTSIDE_SENDER",
    "SASL_USER",
    "SECURE",
    "SMUGGLING",
    "SMUGGLING_ACCEPTED",
    "SMUGGLING_ENDINGS",
    "TEST_HEADER",
    "PolicyStack",
    "PolicyStackError",
    "left_clean",
    "smtp_server",
    "unused_port",
]

SECURE = "secure"
OPEN_RELAY = "open_relay"
AUTH_IN_CLEAR = "auth_in_clear"
NO_LOGIN_MISMATCH = "no_login_mismatch"
SMUGGLING = "smuggling"

#: Listener name -> the ``-o`` overrides of the secure baseline (main.cf).
LISTENERS: dict[str, tuple[str, ...]] = {
    SECURE: (),
    OPEN_RELAY: (
        "mynetworks=0.0.0.0/0",
        "smtpd_relay_restrictions=permit_mynetworks,permit_sasl_authenticated,"
        "reject_unauth_destination",
    ),
    AUTH_IN_CLEAR: ("smtpd_tls_auth_only=no",),
    NO_LOGIN_MISMATCH: ("smtpd_sender_restrictions=",),
    SMUGGLING: ("smtpd_forbid_bare_newline=no", "smtpd_forbid_unauth_pipelining=no"),
}

#: End-of-DATA look-alikes by the names of smtp_probe's smuggling variants.
SMUGGLING_ENDINGS: dict[str, bytes] = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "lf_dot_cr": b"\n.\r",
    "cr_dot_cr": b"\r.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "cr_dot_lf": b"\r.\n",
    "crlf_dot_cr": b"\r\n.\r",
}
#: The endings the ``smuggling`` listener takes as the end of DATA (a second
#: transaction behind them is accepted and delivered): Postfix 3.7.11 and
#: 3.10.13 alike.  Postfix treats a bare LF as a line end, a bare CR never;
#: every other ending stays message text there, and every ending does on ``secure``.
SMUGGLING_ACCEPTED: frozenset[str] = frozenset({"lf_dot_lf", "lf_dot_crlf", "crlf_dot_lf"})

HOSTNAME = "policy.example.test"
#: The SASL login (and password ``mailstack.users[SASL_USER]``); owns only this address.
SASL_USER = "probe@example.test"
#: Deliverable without relaying: Postfix passes it to the MailStack (sink's INBOX).
LOCAL_RECIPIENT = "sink@example.test"
#: A foreign domain: RCPT there is relaying.  Relayed mail lands in sink's INBOX.
OUTSIDE_DOMAIN = "outside.test"
OUTSIDE_RECIPIENT = f"relay-test@{OUTSIDE_DOMAIN}"
OUTSIDE_SENDER = f"someone@{OUTSIDE_DOMAIN}"
#: Header the harness' own tests put on their messages; :func:`left_clean`
#: checks that none (nor any with smtp_probe's header) is left behind.
TEST_HEADER = "X-Policystack-Test"

_HOST = procs.HOST
_TMP_PREFIX = "policystack-"
_CONF_DIR = Path(__file__).resolve().parent / "policystack_conf" / "postfix"
#: users whose mailboxes relayed/local mail reaches (checked by left_clean)
_WATCHED = ("sink", "probe")


class PolicyStackError(MailStackError):
    """The policy Postfix could not be started or one of its commands failed."""


class PolicyStack:
    """One Postfix, one listener per policy (see the module docstring).

    ``stack = PolicyStack(mailstack); stack.start(); ...; stack.stop()`` or
    a ``with`` block; the MailStack must be started first and outlive it.
    """

    host: str = _HOST
    hostname: str = HOSTNAME

    def __init__(self, mailstack: MailStack, *, start_timeout: float = 20.0) -> None:
        """Prepare (but do not start) the policy Postfix in front of ``mailstack``."""
        self.mailstack = mailstack
        self.start_timeout = start_timeout
        #: seconds the last :meth:`start` took
        self.start_seconds = 0.0
        #: ``mail_version`` of the Postfix binaries, e.g. "3.7.11"
        self.postfix_version = ""
        self._paths: Instance | None = None
        self._ports: dict[str, int] = {}
        self._bins: dict[str, str] = {}
        self._atexit_registered = False

    # ------------------------------------------------------------ attributes

    @property
    def root(self) -> Path:
        """The instance's private temporary directory."""
        return self._p().root

    def listener(self, name: str) -> tuple[str, int]:
        """(host, port) of listener ``name`` (one of :data:`LISTENERS`).

        Raises:
            ValueError: unknown name.
            PolicyStackError: not started.
        """
        if name not in LISTENERS:
            raise ValueError(f"unknown listener {name!r}; listeners: {tuple(LISTENERS)}")
        self._p()
        return _HOST, self._ports[name]

    def port(self, name: str) -> int:
        """The port of listener ``name`` (see :meth:`listener`)."""
        return self.listener(name)[1]

    @property
    def ports(self) -> dict[str, int]:
        """Every listener's port by name."""
        self._p()
        return dict(self._ports)

    @property
    def credentials(self) -> tuple[str, str]:
        """(user, password) for SASL AUTH: :data:`SASL_USER`'s."""
        return SASL_USER, self.mailstack.users[SASL_USER]

    @property
    def ca_file(self) -> Path:
        """The MailStack CA; every listener presents the MailStack's cert (127.0.0.1 in it)."""
        return self.mailstack.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only :attr:`ca_file` (hostname checks on)."""
        return self.mailstack.ssl_context()

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._paths is not None

    def __enter__(self) -> PolicyStack:
        """Start the instance for a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the instance at the end of a ``with`` block."""
        self.stop()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Write the config, start Postfix; return when every listener greets.

        Raises:
            PolicyStackError: not root, a binary is missing, the MailStack is
                not running, or a listener does not greet within
                ``start_timeout`` seconds (the message has the log's tail).
        """
        if self._paths is not None:
            raise PolicyStackError("PolicyStack is already started")
        if not self.mailstack.running:
            raise PolicyStackError("start the MailStack before the PolicyStack")
        began = time.monotonic()
        self._check_environment()
        procs.reap_stale(_TMP_PREFIX, _stop_stale)
        paths = Instance(procs.new_root(_TMP_PREFIX))
        self._paths = paths
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._ports = dict(zip(LISTENERS, procs.free_ports(len(LISTENERS)), strict=True))
            self._write_config(paths)
            self._postfix("postfix", "start")
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop Postfix and delete the temp dir.  Safe to call repeatedly."""
        paths = self._paths
        if paths is None:
            return
        try:
            _stop_stale(paths.root)
        finally:
            self._paths, self._ports = None, {}
            shutil.rmtree(paths.root, ignore_errors=True)

    # ------------------------------------------------------------------ queue

    def queue(self) -> list[dict[str, Any]]:
        """The policy Postfix's queue as parsed ``postqueue -j`` records (see MailStack.queue)."""
        return queue_records(self._postfix("postqueue", "-j"))

    def delete_queued(self, queue_id: str = "ALL") -> None:
        """Delete one message (or ``ALL``) from the policy Postfix's queue (``postsuper -d``)."""
        self._postfix("postsuper", "-d", queue_id)

    def drain(self, timeout: float = 10.0) -> dict[str, list[str]]:
        """Wait until this queue and the MailStack's are empty; delete what is left after ``timeout``.

        Returns the queue ids deleted per queue (``"policy"``, ``"mx"``),
        empty when everything drained.
        """
        deadline = time.monotonic() + timeout
        while True:
            queues = {"policy": self.queue(), "mx": self.mailstack.queue()}
            if not any(queues.values()):
                return {}
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if queues["policy"]:
            self.delete_queued("ALL")
        if queues["mx"]:
            self.mailstack.delete_queued("ALL")
        return {name: [e["queue_id"] for e in found] for name, found in queues.items() if found}

    def postconf(self, *names: str) -> dict[str, str]:
        """main.cf parameters of the running instance (``postconf -c DIR NAME...``), by name.

        Listener overrides are in :data:`LISTENERS`, not here.

        Raises:
            PolicyStackError: ``postconf`` failed (e.g. an unknown parameter).
        """
        out = self._postfix("postconf", *names)
        found = {}
        for line in out.splitlines():
            name, _, value = line.partition(" = ")
            found[name.strip()] = value.strip()
        return found

    # -------------------------------------------------------------- mailboxes

    def delete_mail(self, user: str, needle: str) -> int:
        """Delete (IMAP, by UID) every message in ``user``'s INBOX and Junk containing ``needle``.

        ``needle`` goes to IMAP ``SEARCH TEXT`` (headers and body); use a
        unique tag.  Returns how many were deleted.

        Raises:
            imaplib.IMAP4.error: the IMAP server refused the login or a command.
            PolicyStackError: a folder could not be selected.
        """
        return self.mailstack.expunge(user, ("TEXT", imap_quoted(needle)), PolicyStackError)

    def wait_delivered(
        self, user: str, needle: str, *, count: int = 1, timeout: float = 15.0
    ) -> list[bytes]:
        """Wait until ``user``'s INBOX holds ``count`` messages containing ``needle``; return them.

        Returns as soon as ``count`` are there (more may follow: a caller
        proving "only one" waits, then re-reads with :meth:`delivered`).

        Raises:
            PolicyStackError: fewer arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.delivered(user, needle)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise PolicyStackError(
                    f"{len(found)} of {count} messages with {needle!r} arrived in {user}'s "
                    f"INBOX within {timeout}s\n{self.logs()}"
                )
            time.sleep(0.05)

    def delivered(self, user: str, needle: str) -> list[bytes]:
        """The messages in ``user``'s INBOX (read from the Maildir) containing ``needle``."""
        return [raw for raw in self.mailstack.maildir_messages(user) if needle.encode() in raw]

    # ------------------------------------------------------------------- logs

    def postfix_log(self) -> str:
        """The policy Postfix's log so far."""
        return procs.read_log(self._p().log_file)

    def logs(self) -> str:
        """Tails of this Postfix's and the MailStack's logs, for assertion messages."""
        return (
            f"--- policy postfix ---\n{procs.tail(self._p().log_file)}\n"
            f"--- mailstack postfix ---\n{procs.tail(self.mailstack.layout.postfix_log)}"
        )

    # -------------------------------------------------------------- internals

    def _p(self) -> Instance:
        if self._paths is None:
            raise PolicyStackError("PolicyStack is not started")
        return self._paths

    def _check_environment(self) -> None:
        if os.geteuid() != 0:
            raise PolicyStackError("PolicyStack must run as root (Postfix's master needs it)")
        for name in ("postfix", "postconf", "postqueue", "postsuper"):
            found = procs.find_binary(name)
            if found is None:
                raise PolicyStackError(
                    f"PolicyStack needs '{name}'; install it with: "
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
                )
            self._bins[name] = found
        postconf = self._bins["postconf"]
        self.postfix_version = procs.run(
            [postconf, "-d", "-h", "mail_version"], PolicyStackError
        ).strip()
        # an unknown parameter prints nothing on stdout (a warning on stderr)
        if not procs.run([postconf, "-d", "-h", "smtpd_forbid_bare_newline"], PolicyStackError):
            raise PolicyStackError(
                f"Postfix {self.postfix_version} has no smtpd_forbid_bare_newline "
                "(the SMTP smuggling fix of December 2023; Debian 12 has 3.7.11)"
            )

    def _write_config(self, paths: Instance) -> None:
        """main.cf, master.cf (one smtpd per listener) and the tables."""
        paths.make_dirs()
        layout = self.mailstack.layout
        services = []
        for name, overrides in LISTENERS.items():
            services.append(f"{_HOST}:{self._ports[name]} inet n - n - - smtpd")
            for option in (f"syslog_name=postfix-policy/{name}", *overrides):
                services.append(f"  -o {option}")
        values: dict[str, object] = {
            "root": paths.root,
            "queue_dir": paths.queue_dir,
            "data_dir": paths.data_dir,
            "conf_dir": paths.conf_dir,
            "log_file": paths.log_file,
            "mailstack_port": self.mailstack.smtp_port,
            "cert_file": layout.cert_file,
            "key_file": layout.key_file,
            "auth_socket": layout.queue_dir / "private" / "auth",
            "listeners": "\n".join(services),
        }
        files = {
            "main.cf": procs.render((_CONF_DIR / "main.cf").read_text(), values),
            "master.cf": procs.render((_CONF_DIR / "master.cf").read_text(), values),
            # each SASL user owns its own address, nothing else
            "sender_owners": "".join(f"{user} {user}\n" for user in self.mailstack.users),
            # every foreign recipient (envelope only) -> sink
            "outside_alias": f"if !/@{DOMAIN.replace('.', '[.]')}$/\n/^/ {LOCAL_RECIPIENT}\nendif\n",
        }
        for name, text in files.items():
            procs.write_past(paths.conf_dir / name, text)

    def _wait_ready(self, deadline: float) -> None:
        pending = dict(self._ports)
        reasons: dict[str, str] = {}
        while pending:
            for name, port in list(pending.items()):
                reason = procs.probe_greeting(port, "smtp", None)
                if reason is None:
                    del pending[name]
                else:
                    reasons[name] = reason
            if pending and time.monotonic() > deadline:
                raise PolicyStackError(
                    f"policy postfix not ready after {self.start_timeout:.0f}s: "
                    f"{ {name: reasons.get(name) for name in pending} }\n{self.logs()}"
                )
            time.sleep(0.05)

    def _postfix(self, command: str, *args: str) -> str:
        """Run a Postfix command against this instance (``-c DIR``); its stdout."""
        paths = self._p()
        argv = [self._bins[command], "-c", str(paths.conf_dir), *args]
        return procs.run(argv, PolicyStackError, paths.log_file)


def smtp_server(stack: PolicyStack, name: str, **changes: object) -> SmtpServer:
    """smtp_probe's :class:`SmtpServer` for listener ``name``.

    STARTTLS verified against :attr:`PolicyStack.ca_file`, :data:`SASL_USER`'s
    credentials, 10 s command timeout; ``changes`` replace fields (e.g.
    ``username=None, password=None`` for an unauthenticated MX-style client).

    Raises:
        ValueError: unknown listener name.
    """
    # imported here: smtp_probe is not needed to run the server
    from smtp_probe.probe.spec import SmtpServer, TlsMode, TlsSettings
    from smtp_probe.secret import Secret

    host, port = stack.listener(name)
    user, password = stack.credentials
    server = SmtpServer(
        host,
        port,
        TlsMode.STARTTLS,
        TlsSettings(ca_file=stack.ca_file),
        user,
        Secret(password),
        timeout=10,
    )
    return dataclasses.replace(server, **changes)  # type: ignore[arg-type]


def unused_port() -> int:
    """A loopback port nobody listens on (a "down MX": connections are refused).

    The kernel picked it free a moment ago; nothing in the tests binds
    ports it did not ask the kernel for, so it stays free.
    """
    port = procs.free_ports(1)[0]
    with contextlib.suppress(OSError), socket.create_connection((_HOST, port), timeout=1):
        raise PolicyStackError(f"port {port} unexpectedly answers")  # pragma: no cover
    return port


@contextlib.contextmanager
def left_clean(stack: PolicyStack, planted: int) -> Iterator[PolicyStack]:
    """Around one test: afterwards the policy Postfix and the mailboxes are as found.

    After the test: both queues (policy Postfix, MailStack) drain within
    10 s, no new message carrying smtp_probe's header or :data:`TEST_HEADER`
    is left in sink's or probe's INBOX or Junk, and the MailStack's planted
    bystanders are intact.  Leftovers (queued or delivered) are deleted
    before the test is failed, so one bad test does not poison the next.

    Raises:
        AssertionError: one of the checks fails.
    """
    # imported here: routes pulls in smtp_probe, which the server does not need
    from smtp_probe.probe.message import PROBE_HEADER
    from tests.support import routes

    needles = (PROBE_HEADER.lower().encode() + b":", TEST_HEADER.lower().encode() + b":")

    def test_mail() -> dict[tuple[str, str], set[bytes]]:
        return {
            (user, folder): {
                raw
                for raw in stack.mailstack.maildir_messages(user, folder)
                if any(needle in raw.lower() for needle in needles)
            }
            for user in _WATCHED
            for folder in ("INBOX", "Junk")
        }

    before = test_mail()
    with routes.left_clean(stack.mailstack, planted):
        yield stack
        problems = []
        stuck = stack.drain(timeout=10.0)
        if stuck:
            problems.append(f"messages left in the queues (now deleted): {stuck}")
        for (user, folder), found in test_mail().items():
            for raw in found - before[(user, folder)]:
                message = email.message_from_bytes(raw, policy=email.policy.compat32)
                message_id = (message["Message-ID"] or "").strip()
                problems.append(
                    f"test mail left in {user}/{folder} (now deleted): "
                    f"Message-ID {message_id or None}, Subject {message['Subject']!r}"
                )
                if message_id:
                    stack.mailstack.expunge(
                        user, ("HEADER", "Message-ID", imap_quoted(message_id)), PolicyStackError
                    )
        assert not problems, "\n".join(problems)


def _stop_stale(root: Path) -> None:
    """Stop the Postfix of ``root`` (a crashed session's or ours), if still ours."""
    Instance(root).stop(root)
