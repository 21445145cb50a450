r"""A real multi-hop mail route on loopback: submission hop -> filter hop -> MailStack.

What: :class:`HopStack` adds, in front of a started :class:`MailStack`, two
more private instances of Debian's ``postfix`` plus one ``rspamd`` (Debian's
rspamd, as a Postfix milter) and one Knot DNS server (:class:`DnsServer`):

* **submission hop** (``submit.example.test``, :attr:`HopStack.submission_port`):
  SMTP AUTH (PLAIN/LOGIN, the MailStack's users, checked by the MailStack's
  Dovecot through its auth socket), STARTTLS offered but not required; rspamd
  DKIM-signs mail of authenticated senders (``d=example.test``,
  ``s=``:data:`DKIM_SELECTOR`); relays everything for ``example.test`` to
* **inbound hop** (``inbound.example.test``, :attr:`HopStack.inbound_port`,
  MX-style: no AUTH, mail for ``example.test`` only): rspamd checks SPF, DKIM
  and DMARC against the DNS server and adds ``Authentication-Results:
  inbound.example.test; ...`` (:data:`AUTHSERV_ID`), ``X-Spamd-Result`` and
  ``X-Spam-Status``; relays to the MailStack's MX port, which hands the mail
  to Dovecot over LMTP.

So a message sent to :attr:`HopStack.submission_port` arrives with four
``Received`` lines (submission, inbound, MailStack's Postfix, Dovecot LMTP).
The hops talk STARTTLS to each other (``ESMTPS``), as real MTAs do
opportunistically.

Why: smtp_probe diagnoses routes by their ``Received`` chain, the receiver's
``Authentication-Results`` and DSNs; only real MTAs and a real filter with
real DNS produce those headers the way production does.

The DNS zone ``example.test`` (:attr:`HopStack.dns`, Knot, TTL 1 s) holds:
``MX 10 mx.example.test``, ``A 127.0.0.1`` for ``mx``/``submit``/``inbound``,
SPF ``v=spf1 ip4:127.0.0.0/8 -all``, ``_dmarc`` ``v=DMARC1; p=reject`` and the
DKIM key ``hopstack._domainkey``.  rspamd uses no other resolver and no other
network source (maps, updates, RBLs, fuzzy and Redis-based modules are off),
so nothing leaves the machine.

Fault injection (each puts the stack back as it found it):

* :meth:`HopStack.held` (or :meth:`hold_on` + :meth:`release`): the hop's
  smtpd parks every message it accepts from then on in its hold queue
  (access(5) ``HOLD`` in a regexp table, applied by ``postfix reload``; the
  call returns once the old smtpd processes are gone); release runs
  ``postsuper -H ALL`` + ``postqueue -f``, so the next hop's ``Received``
  time is later by the hold (:meth:`wait_queued` sees the held message);
* :meth:`HopStack.dkim_key_removed`: the selector's TXT record is deleted
  (NXDOMAIN); rspamd 3.4 and 3.12 then both write ``dkim=none ("invalid
  DKIM record")`` - not ``fail`` - with spf and dmarc still ``pass`` (SPF
  is aligned); :meth:`HopStack.dkim_key_replaced`: another key is published,
  the signature fails: ``dkim=fail ("headers rsa verify failed")``.  Each
  waits 2.1 s after the change and after restoring (rspamd caches a key for
  its 1 s TTL, compared in whole seconds); SPF records are cached the same
  way, so after ``dns.set_txt`` wait 2 s before relying on rspamd seeing it;
* :data:`UNKNOWN`: accepted by both hops, refused at RCPT by the last hop
  (``550 5.1.1 ... User unknown in virtual mailbox table``): the inbound
  hop returns a DSN (``Reporting-MTA: dns; inbound.example.test``,
  ``Remote-MTA: dns; 127.0.0.1``) to the envelope sender; MailStack's
  :data:`BOUNCE`: accepted by every Postfix, refused by Dovecot's LMTP
  (``550 5.1.1 <bounce@example.test> User doesn't exist``): the last hop
  returns the DSN (``Reporting-MTA: dns; mx.example.test``);
* :data:`DELAYED`: accepted by both hops, then deferred at the inbound hop
  (its next hop refuses connections, ``4.4.1``); after
  :data:`DELAY_WARNING_SECONDS` the inbound hop sends a ``delayed`` DSN
  (``Subject: Delayed Mail (still being retried)``; it arrived 1-3 s after
  sending) and keeps retrying until the message is deleted
  (``delete_queued(INBOUND)``).

DSNs travel like any mail: from the hop that writes them, through the rest of
the chain, into the envelope sender's MailStack mailbox (``probe@`` when
sending as :data:`SENDER`), with ``From: Mail Delivery System
<MAILER-DAEMON@example.test>``.

rspamd keeps ``Authentication-Results`` headers that senders wrote (its
default would strip them all): a forged one with another authserv-id
arrives beside the inbound hop's, as it does at many real receivers.

Runs as root (Postfix's master and rspamd's need it).  Start-up is mostly
rspamd's: 1.2-3.3 s on Debian 12 (rspamd 3.4), 2.3-5 s on Debian 13 (3.12),
two shared cores; :attr:`HopStack.start_seconds`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import procs
from tests.support.dns_server import TTL, DnsServer, txt_rdata
from tests.support.mailstack import BOUNCE, DOMAIN, MailStack, MailStackError, imap_quoted
from tests.support.postfix_instance import Instance, queue_records

__all__ = [
    "AUTHSERV_ID",
    "BOUNCE",
    "DELAYED",
    "DELAY_WARNING_SECONDS",
    "DKIM_DOMAIN",
    "DKIM_SELECTOR",
    "HOPS",
    "INBOUND",
    "INBOUND_HOSTNAME",
    "SENDER",
    "SUBMISSION",
    "SUBMISSION_HOSTNAME",
    "TEST_HEADER",
    "UNKNOWN",
    "HopStack",
    "HopStackError",
    "left_clean",
]

#: Hop names, in route order.
SUBMISSION = "submission"
INBOUND = "inbound"
HOPS = (SUBMISSION, INBOUND)

SUBMISSION_HOSTNAME = "submit.example.test"
INBOUND_HOSTNAME = "inbound.example.test"
#: The authserv-id of the inbound hop's Authentication-Results (its Postfix
#: ``myhostname``, which rspamd takes from the milter ``{j}`` macro).
AUTHSERV_ID = INBOUND_HOSTNAME

DKIM_DOMAIN = DOMAIN
DKIM_SELECTOR = "hopstack"

#: The MailStack user the tests send as (password: ``mailstack.users[SENDER]``);
#: DSNs come back to its INBOX.
SENDER = "probe@example.test"

#: Accepted by both hops, then refused at RCPT by the last hop (550 5.1.1, no
#: such user there): the inbound hop bounces it.
UNKNOWN = "unknown@example.test"
#: Accepted by both hops, then deferred forever at the inbound hop (its
#: transport points at a closed port); a ``delayed`` DSN follows.
DELAYED = "delayed@example.test"
#: The inbound hop's ``delay_warning_time``.
DELAY_WARNING_SECONDS = 2

#: Header the harness' own tests put on their messages; the per-test
#: fixture checks that no message carrying it (or smtp_probe's) is left.
TEST_HEADER = "X-Hopstack-Test"

_HOST = procs.HOST
_TMP_PREFIX = "hopstack-"
_CONF_DIR = Path(__file__).resolve().parent / "hopstack_conf"
_RSPAMD_USER = "_rspamd"
_PACKAGES_HINT = (
    "install them with: DEBIAN_FRONTEND=noninteractive apt-get install -y "
    "postfix rspamd knot (and MailStack's packages)"
)
# rspamd modules that would fetch maps/updates from the Internet, query RBLs
# or need Redis; everything else (SPF, DKIM, DMARC, ARC, regexp rules,
# hfilter, ...) stays as Debian ships it.
_RSPAMD_DISABLED = (
    "asn",
    "bimi",
    "clickhouse",
    "dcc",
    "elastic",
    "emails",
    "fuzzy_check",
    "greylist",
    "history_redis",
    "metric_exporter",
    "mid",
    "mime_types",
    "multimap",
    "neural",
    "p0f",
    "phishing",
    "ratelimit",
    "rbl",
    "replies",
    "reputation",
    "rspamd_update",
    "spamassassin",
    "url_redirector",
    "whitelist",
)


class HopStackError(MailStackError):
    """The hop chain could not be started or a server command failed."""


@dataclass(frozen=True)
class _Hop(Instance):
    """One Postfix instance of the chain (below ``root``, see :class:`Instance`)."""

    name: str
    hostname: str
    port: int
    next_port: int


class HopStack:
    """Submission hop -> filter hop -> ``mailstack`` (see the module docstring).

    ``stack = HopStack(mailstack); stack.start(); ...; stack.stop()`` or a
    ``with`` block; the MailStack must be started first and outlive it.
    """

    host: str = _HOST
    authserv_id: str = AUTHSERV_ID
    dkim_domain: str = DKIM_DOMAIN
    dkim_selector: str = DKIM_SELECTOR

    def __init__(self, mailstack: MailStack, *, start_timeout: float = 20.0) -> None:
        """Prepare (but do not start) the chain in front of ``mailstack``."""
        self.mailstack = mailstack
        self.start_timeout = start_timeout
        #: seconds the last :meth:`start` took
        self.start_seconds = 0.0
        self.rspamd_version = ""
        self.dns = DnsServer(DOMAIN)
        #: the DKIM key record's TXT value (``v=DKIM1; k=rsa; p=...``)
        self.dkim_txt = ""
        self._root: Path | None = None
        self._hops: dict[str, _Hop] = {}
        self._rspamd: subprocess.Popen[bytes] | None = None
        self._rspamd_port = 0
        self._bins: dict[str, str] = {}
        self._atexit_registered = False
        #: hops currently holding (see :meth:`hold_on`)
        self.holding: set[str] = set()
        #: True inside :meth:`dkim_key_removed` / :meth:`dkim_key_replaced`
        self.dkim_key_missing = False

    # ------------------------------------------------------------ attributes

    @property
    def root(self) -> Path:
        """The chain's private temporary directory."""
        if self._root is None:
            raise HopStackError("HopStack is not started")
        return self._root

    @property
    def submission_port(self) -> int:
        """The submission hop: AUTH PLAIN/LOGIN (with or without STARTTLS) required."""
        return self._hop(SUBMISSION).port

    @property
    def inbound_port(self) -> int:
        """The inbound (filter) hop: MX-style, no AUTH, example.test recipients only."""
        return self._hop(INBOUND).port

    @property
    def credentials(self) -> tuple[str, str]:
        """(user, password) for AUTH at the submission hop: :data:`SENDER`'s."""
        return SENDER, self.mailstack.users[SENDER]

    @property
    def ca_file(self) -> Path:
        """The MailStack CA; every hop presents the MailStack's certificate (127.0.0.1 in it)."""
        return self.mailstack.ca_file

    @property
    def nameserver(self) -> str:
        """The DNS server as ``127.0.0.1:PORT`` (for ``dns.nameservers``)."""
        return self.dns.nameserver

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._root is not None

    def __enter__(self) -> HopStack:
        """Start the chain for a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the chain at the end of a ``with`` block."""
        self.stop()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start DNS, rspamd and both Postfix hops; return when all serve.

        Raises:
            HopStackError: a binary or system user is missing, the MailStack
                is not running, or a server is not ready within
                ``start_timeout`` seconds (the message has the logs' tails).
        """
        if self._root is not None:
            raise HopStackError("HopStack is already started")
        if not self.mailstack.running:
            raise HopStackError("start the MailStack before the HopStack")
        began = time.monotonic()
        self._check_environment()
        _reap_stale()
        root = procs.new_root(_TMP_PREFIX)
        self._root = root
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            sub_port, in_port, self._rspamd_port = procs.free_ports(3)
            self._hops = {
                SUBMISSION: _Hop(
                    root=root / SUBMISSION,
                    name=SUBMISSION,
                    hostname=SUBMISSION_HOSTNAME,
                    port=sub_port,
                    next_port=in_port,
                ),
                INBOUND: _Hop(
                    root=root / INBOUND,
                    name=INBOUND,
                    hostname=INBOUND_HOSTNAME,
                    port=in_port,
                    next_port=self.mailstack.smtp_port,
                ),
            }
            self.dkim_txt = self._write_dkim_key(root / "rspamd")
            self.dns.records = _zone_records(self.dkim_txt)
            self.dns.start()
            self._spawn_rspamd(root / "rspamd")
            for hop in self._hops.values():
                self._write_postfix(hop)
                self._postfix(hop, "postfix", "start")
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop both hops, rspamd and DNS; delete the temp dir.  Safe to call repeatedly."""
        root = self._root
        if root is None:
            return
        try:
            for hop in self._hops.values():
                hop.stop(root)
            if self._rspamd is not None:
                procs.stop_process(self._rspamd)
            self.dns.stop()
        finally:
            self._root, self._rspamd, self._hops = None, None, {}
            shutil.rmtree(root, ignore_errors=True)

    # --------------------------------------------------------- fault injection

    def hold_on(self, hop: str) -> None:
        """From now on ``hop`` parks every message it accepts in its hold queue.

        Returns once no smtpd process with the old rules is left.
        """
        self._set_hold(self._hop(hop), f"/^/ HOLD hopstack: held at the {hop} hop\n")
        self.holding.add(hop)

    def release(self, hop: str) -> None:
        """Stop holding at ``hop`` and send its held messages on now (``postsuper -H ALL``)."""
        target = self._hop(hop)
        self._set_hold(target, "")
        self.holding.discard(hop)
        if any(entry["queue_name"] == "hold" for entry in self.queue(hop)):
            self._postfix(target, "postsuper", "-H", "ALL")
        self._postfix(target, "postqueue", "-f")

    @contextlib.contextmanager
    def held(self, hop: str) -> Iterator[None]:
        """Hold at ``hop`` inside the block, release at its end (also on error)."""
        self.hold_on(hop)
        try:
            yield
        finally:
            self.release(hop)

    @contextlib.contextmanager
    def dkim_key_removed(self) -> Iterator[None]:
        """The DKIM key record is absent (NXDOMAIN) inside the block, restored after."""
        with self._dkim_record(None):
            yield

    @contextlib.contextmanager
    def dkim_key_replaced(self) -> Iterator[None]:
        """Another RSA key is published under the selector inside the block, restored after.

        Signatures made with the real key then fail verification (``dkim=fail``).
        """
        other = _dkim_key()[1]
        with self._dkim_record(other):
            yield

    @contextlib.contextmanager
    def _dkim_record(self, value: str | None) -> Iterator[None]:
        """Publish ``value`` (None: nothing) as the DKIM key inside the block.

        Waits two TTLs after each change: rspamd keeps a fetched key for the
        record's TTL (1 s) and compares whole seconds, so a key fetched for a
        message checked 1.1 s earlier was still used (seen on 3.4).
        """
        name = f"{DKIM_SELECTOR}._domainkey"
        if value is None:
            self.dns.remove(name, "TXT")
        else:
            self.dns.set_txt(name, value)
        self.dkim_key_missing = True
        time.sleep(2 * TTL + 0.1)
        try:
            yield
        finally:
            self.dns.set_txt(name, self.dkim_txt)
            self.dkim_key_missing = False
            time.sleep(2 * TTL + 0.1)

    # ---------------------------------------------------------------- mailboxes

    def delete_mail(self, user: str, needle: str) -> int:
        """Delete (IMAP, by UID) every message in ``user``'s INBOX and Junk containing ``needle``.

        ``needle`` is searched with IMAP ``SEARCH TEXT`` (headers and body,
        so a DSN's returned headers count); use a unique tag.  Returns how
        many were deleted.

        Raises:
            imaplib.IMAP4.error: the IMAP server refused the login or a command.
            HopStackError: a folder could not be selected.
        """
        return self.mailstack.expunge(user, ("TEXT", imap_quoted(needle)), HopStackError)

    # ------------------------------------------------------------------ queues

    def queue(self, hop: str) -> list[dict[str, Any]]:
        """``hop``'s queue as parsed ``postqueue -j`` records (see MailStack.queue)."""
        return queue_records(self._postfix(self._hop(hop), "postqueue", "-j"))

    def drain(self, timeout: float = 10.0) -> dict[str, list[str]]:
        """Wait until every queue is empty; delete what is still queued after ``timeout``.

        Returns the queue ids deleted per queue (``"mx"`` = the MailStack),
        empty when everything drained.
        """
        deadline = time.monotonic() + timeout
        while True:
            queues = self.queues()
            if not any(queues.values()):
                return {}
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        stuck = {
            name: [e["queue_id"] for e in entries] for name, entries in queues.items() if entries
        }
        for name in stuck:
            if name == "mx":
                self.mailstack.delete_queued("ALL")
            else:
                self.delete_queued(name, "ALL")
        return stuck

    def queues(self) -> dict[str, list[dict[str, Any]]]:
        """Every hop's queue, the MailStack's (``"mx"``) included."""
        found = {name: self.queue(name) for name in HOPS}
        found["mx"] = self.mailstack.queue()
        return found

    def delete_queued(self, hop: str, queue_id: str = "ALL") -> None:
        """Delete one message (or ``ALL``) from ``hop``'s queue (``postsuper -d``)."""
        self._postfix(self._hop(hop), "postsuper", "-d", queue_id)

    def flush(self, hop: str) -> None:
        """Retry ``hop``'s deferred mail now (``postqueue -f``)."""
        self._postfix(self._hop(hop), "postqueue", "-f")

    def wait_queued(
        self, hop: str, queue_name: str | None = None, *, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until ``hop``'s queue has a message (in ``queue_name`` if given); return them.

        Raises:
            HopStackError: nothing showed up within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            entries = [
                entry
                for entry in self.queue(hop)
                if queue_name is None or entry["queue_name"] == queue_name
            ]
            if entries:
                return entries
            if time.monotonic() > deadline:
                raise HopStackError(f"no message in the {hop} hop's {queue_name or 'any'} queue")
            time.sleep(0.05)

    # -------------------------------------------------------------------- logs

    def postfix_log(self, hop: str) -> str:
        """``hop``'s Postfix log so far."""
        return procs.read_log(self._hop(hop).log_file)

    def rspamd_log(self) -> str:
        """The log of rspamd so far."""
        return procs.read_log(self.root / "rspamd" / "log" / "rspamd.log")

    def logs(self) -> str:
        """Every log of the chain (hops, rspamd, DNS), for assertion messages."""
        parts = [f"--- {name} ---\n{procs.tail(self._hop(name).log_file)}" for name in self._hops]
        parts.append(f"--- rspamd ---\n{procs.tail(self.root / 'rspamd' / 'log' / 'rspamd.log')}")
        parts.append(f"--- dns ---\n{procs.tail(self.dns.log_file)}")
        return "\n".join(parts)

    # --------------------------------------------------------------- internals

    def _hop(self, name: str) -> _Hop:
        if self._root is None:
            raise HopStackError("HopStack is not started")
        try:
            return self._hops[name]
        except KeyError:
            raise ValueError(f"unknown hop {name!r}; hops: {HOPS}") from None

    def _check_environment(self) -> None:
        if os.geteuid() != 0:
            raise HopStackError("HopStack must run as root (Postfix's master and rspamd need it)")
        for name in ("postfix", "postqueue", "postsuper", "rspamd"):
            found = procs.find_binary(name)
            if found is None:
                raise HopStackError(f"HopStack needs '{name}'; {_PACKAGES_HINT}")
            self._bins[name] = found
        try:
            pwd.getpwnam(_RSPAMD_USER)
        except KeyError:
            raise HopStackError(
                f"system user {_RSPAMD_USER!r} is missing; {_PACKAGES_HINT}"
            ) from None
        out = subprocess.run(
            [self._bins["rspamd"], "--version"], capture_output=True, timeout=30, check=False
        )
        # "Rspamd daemon version 3.4" (3.12 adds lines about build features)
        first = out.stdout.decode(errors="replace").strip().splitlines()
        self.rspamd_version = first[0].split()[-1] if first else ""

    @staticmethod
    def _write_dkim_key(directory: Path) -> str:
        """A fresh DKIM key for rspamd (readable by user _rspamd only); its TXT value."""
        directory.mkdir(mode=0o755)
        pem, txt = _dkim_key()
        user = pwd.getpwnam(_RSPAMD_USER)
        path = directory / "dkim.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chown(path, user.pw_uid, user.pw_gid)
        return txt

    def _spawn_rspamd(self, directory: Path) -> None:
        """Write rspamd's config under ``directory`` and start it in the foreground."""
        user = pwd.getpwnam(_RSPAMD_USER)
        for sub in ("local.d", "db", "run", "log"):
            (directory / sub).mkdir(mode=0o755)
        for sub in ("db", "run", "log"):
            os.chown(directory / sub, user.pw_uid, user.pw_gid)
        (directory / "tld.dat").write_text("test\nexample\n")
        values: dict[str, object] = {
            "rspamd_port": self._rspamd_port,
            "nameserver": self.dns.nameserver,
            "db_dir": directory / "db",
            "root": directory,
            "dkim_key": directory / "dkim.key",
            "dkim_selector": DKIM_SELECTOR,
        }
        (directory / "rspamd.conf").write_text(
            procs.render((_CONF_DIR / "rspamd" / "rspamd.conf").read_text(), values)
        )
        for name in (
            "options.inc",
            "dkim_signing.conf",
            "milter_headers.conf",
            "spf.conf",
            "dkim.conf",
            "dmarc.conf",
        ):
            text = procs.render((_CONF_DIR / "rspamd" / name).read_text(), values)
            (directory / "local.d" / name).write_text(text)
        for module in _RSPAMD_DISABLED:
            (directory / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
        argv = [self._bins["rspamd"], "-f", "-c", str(directory / "rspamd.conf")]
        argv += ["-u", _RSPAMD_USER, "-g", _RSPAMD_USER]
        for var, path in (
            ("LOCAL_CONFDIR", directory),
            ("DBDIR", directory / "db"),
            ("RUNDIR", directory / "run"),
            ("LOGDIR", directory / "log"),
        ):
            argv += ["--var", f"{var}={path}"]
        with open(directory / "log" / "rspamd.stderr", "ab") as err:
            # cwd marks the process as ours for _reap_stale (rspamd rewrites
            # its command line and writes no pid file in the foreground)
            self._rspamd = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=directory,
                start_new_session=True,
            )
        (directory / "rspamd.pid").write_text(f"{self._rspamd.pid}\n")

    def _write_postfix(self, hop: _Hop) -> None:
        """main.cf/master.cf/tables of one hop; queue dirs are made by ``postfix start``."""
        hop.root.mkdir(mode=0o755)
        hop.make_dirs()
        layout = self.mailstack.layout
        if hop.name == SUBMISSION:
            options = [
                f"syslog_name=postfix-{hop.name}/submission",
                "smtpd_sasl_auth_enable=yes",
                "smtpd_client_restrictions=permit_sasl_authenticated,reject",
                "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
            ]
            transport = ""
        else:
            options = []
            # a closed port (discard/9): connection refused, deferred forever
            transport = f"{DELAYED} smtp:[{_HOST}]:9\n"
        values: dict[str, object] = {
            "root": hop.root,
            "hop": hop.name,
            "hostname": hop.hostname,
            "queue_dir": hop.queue_dir,
            "data_dir": hop.data_dir,
            "conf_dir": hop.conf_dir,
            "log_file": hop.log_file,
            "next_port": hop.next_port,
            "smtp_port": hop.port,
            "cert_file": layout.cert_file,
            "key_file": layout.key_file,
            "auth_socket": layout.queue_dir / "private" / "auth",
            "rspamd_port": self._rspamd_port,
            "delay_warning": f"{DELAY_WARNING_SECONDS}s" if hop.name == INBOUND else "0h",
            "smtpd_options": "\n".join(f"  -o {option}" for option in options),
        }
        files = {
            "main.cf": procs.render((_CONF_DIR / "postfix" / "main.cf").read_text(), values),
            "master.cf": procs.render((_CONF_DIR / "postfix" / "master.cf").read_text(), values),
            "transport": transport,
            "hold_access": "",
        }
        for name, text in files.items():
            procs.write_past(hop.conf_dir / name, text)

    def _set_hold(self, hop: _Hop, rules: str) -> None:
        """Write the hop's hold table, reload it and wait for the old smtpds to go."""
        procs.write_past(hop.conf_dir / "hold_access", rules)
        master = procs.read_pid(hop.queue_dir / "pid" / "master.pid")
        before = set(_smtpd_pids(master)) if master is not None else set()
        self._postfix(hop, "postfix", "reload")
        deadline = time.monotonic() + 10
        while before & set(_smtpd_pids(master) if master is not None else []):
            if time.monotonic() > deadline:
                raise HopStackError(f"the {hop.name} hop's smtpd did not restart after reload")
            time.sleep(0.02)

    def _wait_ready(self, deadline: float) -> None:
        """Poll until both hops greet and rspamd accepts milter connections."""
        pending = {hop.name: hop.port for hop in self._hops.values()}
        reasons: dict[str, str] = {}
        rspamd_ready = False
        while True:
            if self._rspamd is not None and self._rspamd.poll() is not None:
                self._fail(f"rspamd exited with status {self._rspamd.returncode}")
            for name, port in list(pending.items()):
                reason = procs.probe_greeting(port, "smtp", None)
                if reason is None:
                    del pending[name]
                else:
                    reasons[name] = reason
            if not rspamd_ready:
                # the proxy worker listens once the config is loaded and
                # the worker forked; a log line says so
                rspamd_ready = f"listen on: {_HOST}:{self._rspamd_port}" in self.rspamd_log()
                rspamd_ready = rspamd_ready and _port_open(self._rspamd_port)
            if not pending and rspamd_ready:
                return
            if time.monotonic() > deadline:
                self._fail(
                    f"not ready after {self.start_timeout:.0f}s: hops not serving "
                    f"{ {name: reasons.get(name) for name in pending} }, rspamd ready: {rspamd_ready}"
                )
            time.sleep(0.05)

    def _fail(self, reason: str) -> None:
        stderr = procs.tail(self.root / "rspamd" / "log" / "rspamd.stderr")
        raise HopStackError(
            f"hop stack failed: {reason}\n{self.logs()}\n--- rspamd stderr ---\n{stderr}"
        )

    def _postfix(self, hop: _Hop, command: str, *args: str) -> str:
        """Run a Postfix command against ``hop`` (``-c DIR``); its stdout."""
        argv = [self._bins[command], "-c", str(hop.conf_dir), *args]
        return procs.run(argv, HopStackError, hop.log_file)


@contextlib.contextmanager
def left_clean(hops: HopStack, planted: int) -> Iterator[HopStack]:
    """Around one test: afterwards the chain is as the test found it.

    After the test: every queue (both hops and the MailStack) drains within
    10 s, no hop holds, the DKIM key is published, no new message carrying
    smtp_probe's header or :data:`TEST_HEADER` (DSNs included: their
    returned headers count) is left in sink's or probe's INBOX or Junk, and
    the MailStack's planted bystanders are intact.  Messages left in a queue
    are deleted after they are reported, so one failing test does not
    poison the next.

    Raises:
        AssertionError: one of the checks fails.
    """
    # imported here: routes pulls in smtp_probe, which the servers do not need
    from smtp_probe.probe.message import PROBE_HEADER
    from tests.support import routes

    needles = (PROBE_HEADER.lower().encode() + b":", TEST_HEADER.lower().encode() + b":")

    def test_mail() -> dict[str, set[bytes]]:
        return {
            f"{user}/{folder}": {
                raw
                for raw in hops.mailstack.maildir_messages(user, folder)
                if any(needle in raw.lower() for needle in needles)
            }
            for user in ("sink", "probe")
            for folder in ("INBOX", "Junk")
        }

    # only what this test adds counts: other (MailStack-only) tests may have
    # left DSNs in probe's INBOX, which is theirs to answer for
    before = test_mail()
    with routes.left_clean(hops.mailstack, planted):
        yield hops
        stuck = hops.drain(timeout=10.0)
        assert not stuck, f"messages left in the queues (now deleted): {stuck}"
        assert not hops.holding, f"hops still holding: {hops.holding}"
        assert not hops.dkim_key_missing, "the DKIM key was not put back"
        for place, found in test_mail().items():
            left = found - before[place]
            assert not left, f"test mail left in {place}: {sorted(left)[0][:300]!r}"


def _dkim_key() -> tuple[bytes, str]:
    """A fresh 2048-bit RSA key: (PKCS#1 PEM, DKIM TXT value ``v=DKIM1; k=rsa; p=...``)."""
    # imported here: the stamping hop's module pulls in aiosmtpd and dkimpy
    from tests.support.stamping_smtpd import make_key

    key = make_key(DKIM_DOMAIN, DKIM_SELECTOR)
    return key.private_pem, "v=DKIM1; k=rsa; p=" + key.public_b64


def _zone_records(dkim_txt: str) -> list[tuple[str, str, str]]:
    """example.test's records (see the module docstring)."""
    return [
        ("@", "MX", "10 mx"),
        ("mx", "A", _HOST),
        ("submit", "A", _HOST),
        ("inbound", "A", _HOST),
        ("@", "TXT", txt_rdata("v=spf1 ip4:127.0.0.0/8 -all")),
        ("_dmarc", "TXT", txt_rdata("v=DMARC1; p=reject")),
        (f"{DKIM_SELECTOR}._domainkey", "TXT", txt_rdata(dkim_txt)),
    ]


def _smtpd_pids(master: int) -> list[int]:
    """The smtpd processes of the Postfix instance whose master is ``master``."""
    found = []
    for pid in procs.group_members(master):
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{pid}/exe")).name == "smtpd":
                found.append(pid)
    return found


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((_HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _reap_stale() -> None:
    """Stop the servers of ``hopstack-*`` dirs whose owner process is gone; remove the dirs."""
    procs.reap_stale(_TMP_PREFIX, _stop_stale)


def _stop_stale(root: Path) -> None:
    """Stop both hops' Postfix and rspamd of a crashed session's ``root``, if still ours."""
    for hop in HOPS:
        Instance(root / hop).stop(root)
    procs.stop_if_ours(root / "rspamd" / "rspamd.pid", "rspamd", root)
