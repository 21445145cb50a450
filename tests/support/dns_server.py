"""A real authoritative DNS server (Knot DNS, Debian's ``knot``) for test zones on loopback.

What: :class:`DnsServer` runs ``knotd`` in the foreground with a private
config, zone file, database and control socket in a fresh temporary
directory, answering UDP and TCP on ``127.0.0.1`` and a free port.  It is
authoritative for one zone (``example.test`` by default), plus any
``extra_zones`` (the DNS checks' reverse zone), and answers
``REFUSED`` for every other name, so a resolver pointed at it can never
reach the Internet.  Records change at runtime through Knot's own control
channel (``knotc zone-begin`` / ``zone-set`` / ``zone-unset`` /
``zone-commit``): the change is live when the call returns.

Why: the filter hop's SPF/DKIM/DMARC checks and smtp_probe's own DKIM check
must see real DNS answers (TXT strings split at 255 octets, NXDOMAIN for a
removed key), not a stub.

TTLs: every record is published with a TTL of :data:`TTL` (1 s) and the SOA
negative-caching TTL is 1 s as well, so even a caching resolver forgets a
removed record within a second.  The consumers in the test stack do not
cache (rspamd and dnspython ask again every time).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.support import procs

__all__ = ["TTL", "DnsServer", "DnsServerError", "txt_rdata"]

#: TTL (seconds) of every record and of negative answers.
TTL = 1

_HOST = procs.HOST
_TMP_PREFIX = "knot-"
_PACKAGES_HINT = "install it with: DEBIAN_FRONTEND=noninteractive apt-get install -y knot"


class DnsServerError(RuntimeError):
    """The DNS server could not be started or a record change failed."""


def txt_rdata(value: str) -> str:
    """``value`` as zone-file TXT rdata: quoted, split into strings of at most 255 octets.

    DKIM keys are longer than one TXT string may be; verifiers join the
    strings back together (RFC 6376 3.6.2.2).

    Raises:
        ValueError: ``value`` is not printable ASCII.
    """
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"TXT value must be printable ASCII: {value!r}")
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


class DnsServer:
    """Knot DNS, authoritative for ``zone`` on 127.0.0.1:<free port> (see the module docstring).

    ``records`` are (owner, type, rdata) triples in zone-file syntax, the
    owner relative to the zone (``"@"``, ``"mx"``, ``"_dmarc"``) or absolute
    with a trailing dot; use :func:`txt_rdata` for TXT values.  The SOA and
    NS records are added automatically.  Must run as root or as a user that
    can bind a port (any user can: the port is above 1024).
    """

    def __init__(
        self,
        zone: str = "example.test",
        records: Iterable[tuple[str, str, str]] = (),
        *,
        extra_zones: Mapping[str, Iterable[tuple[str, str, str]]] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        """Prepare (but do not start) a server for ``zone`` with ``records``.

        ``extra_zones`` maps more zones (a reverse zone such as
        ``0.0.127.in-addr.arpa``) to their records, owners relative to that
        zone; every other name is still refused.
        """
        self.zone = zone.rstrip(".").lower()
        self.records = list(records)
        self.extra_zones = {
            name.rstrip(".").lower(): list(recs) for name, recs in (extra_zones or {}).items()
        }
        self.start_timeout = start_timeout
        #: seconds the last :meth:`start` took
        self.start_seconds = 0.0
        self._root: Path | None = None
        self._port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._bins: dict[str, str] = {}

    # ------------------------------------------------------------ attributes

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server answers on (UDP and TCP); raises if not started."""
        if self._root is None:
            raise DnsServerError("DnsServer is not started")
        return (_HOST, self._port)

    @property
    def nameserver(self) -> str:
        """``host:port``, the spelling of smtp_probe's ``dns.nameservers`` and rspamd's."""
        host, port = self.address
        return f"{host}:{port}"

    @property
    def root(self) -> Path:
        """The server's private directory (config, zone file, log)."""
        if self._root is None:
            raise DnsServerError("DnsServer is not started")
        return self._root

    @property
    def log_file(self) -> Path:
        """Knot's log file (every control command is logged)."""
        return self.root / "knot.log"

    def log(self) -> str:
        """Knot's log so far."""
        return procs.read_log(self.log_file)

    def __enter__(self) -> DnsServer:
        """Start the server for a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server at the end of a ``with`` block."""
        self.stop()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Write the config and zone, start ``knotd``, return once the zone is served.

        Raises:
            DnsServerError: knot is not installed, or the zone is not loaded
                within ``start_timeout`` seconds (the message has the log tail).
        """
        if self._root is not None:
            raise DnsServerError("DnsServer is already started")
        began = time.monotonic()
        for name in ("knotd", "knotc"):
            found = procs.find_binary(name)
            if found is None:
                raise DnsServerError(f"DnsServer needs '{name}'; {_PACKAGES_HINT}")
            self._bins[name] = found
        _reap_stale()
        root = procs.new_root(_TMP_PREFIX)
        self._root = root
        atexit.register(self.stop)
        try:
            self._port = procs.free_ports(1)[0]
            (root / "db").mkdir()
            (root / "knot.conf").write_text(self._config(root))
            for zone, records in self._zones().items():
                (root / f"{zone}.zone").write_text(self._zone_file(zone, records))
            with open(root / "knotd.stderr", "ab") as err:
                self._proc = subprocess.Popen(
                    [self._bins["knotd"], "-c", str(root / "knot.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                )
            deadline = began + self.start_timeout
            while True:
                if self._proc.poll() is not None:
                    self._fail(f"knotd exited with status {self._proc.returncode}")
                statuses = [
                    subprocess.run(
                        [*self._knotc(), "zone-status", zone],
                        capture_output=True,
                        timeout=10,
                        check=False,
                    )
                    for zone in self._zones()
                ]
                if all(st.returncode == 0 and b"serial" in st.stdout for st in statuses):
                    break
                if time.monotonic() > deadline:
                    self._fail(
                        f"zones {', '.join(self._zones())} not served after {self.start_timeout:.0f}s"
                    )
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop knotd and delete its directory.  Safe to call repeatedly."""
        root, proc = self._root, self._proc
        self._root, self._proc = None, None
        if proc is not None:
            procs.stop_process(proc, timeout=5)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    # -------------------------------------------------------------- records

    def set_txt(self, name: str, value: str, *, ttl: int = TTL) -> None:
        """Replace every TXT record at ``name`` with one holding ``value``; live on return.

        ``name`` is relative to the zone (``"_dmarc"``, ``"@"``) or absolute.

        Raises:
            DnsServerError: Knot refused the change.
        """
        self.set_records(name, "TXT", [txt_rdata(value)], ttl=ttl)

    def set_records(self, name: str, rtype: str, rdatas: Sequence[str], *, ttl: int = TTL) -> None:
        """Replace the ``rtype`` records at ``name`` with ``rdatas`` (zone-file syntax), TTL ``ttl``.

        An absolute ``name`` under one of the ``extra_zones`` changes that zone.

        Raises:
            DnsServerError: Knot refused the change.
        """
        owner = self._owner(name)
        zone = self._zone_of(owner)
        commands = [["zone-unset", zone, owner, rtype]]
        commands += [["zone-set", zone, owner, str(ttl), rtype, rdata] for rdata in rdatas]
        self._transaction(zone, commands, ignore_first_missing=True)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Delete the ``rtype`` records at ``name`` (all types if None); live on return.

        Removing what is not there is not an error.

        Raises:
            DnsServerError: Knot refused the change.
        """
        owner = self._owner(name)
        zone = self._zone_of(owner)
        args = [zone, owner] + ([rtype] if rtype else [])
        self._transaction(zone, [["zone-unset", *args]], ignore_first_missing=True)

    # -------------------------------------------------------------- internals

    def _owner(self, name: str) -> str:
        """An absolute owner name (trailing dot) for ``name`` (relative names are in the main zone)."""
        if name in ("@", ""):
            return f"{self.zone}."
        if name.endswith("."):
            return name
        lowered = name.lower()
        if any(lowered == zone or lowered.endswith("." + zone) for zone in self._zones()):
            return f"{name}."
        return f"{name}.{self.zone}."

    def _zones(self) -> dict[str, list[tuple[str, str, str]]]:
        """Every zone served, the main one first, with its records."""
        return {self.zone: self.records, **self.extra_zones}

    def _zone_of(self, owner: str) -> str:
        """The served zone an absolute ``owner`` belongs to (the longest matching one)."""
        name = owner.rstrip(".").lower()
        matches = [z for z in self._zones() if name == z or name.endswith("." + z)]
        return max(matches, key=len) if matches else self.zone

    def _knotc(self) -> list[str]:
        return [self._bins["knotc"], "-s", str(self.root / "knot.sock"), "-t", "5"]

    def _transaction(
        self, zone: str, commands: list[list[str]], *, ignore_first_missing: bool
    ) -> None:
        """Run ``commands`` inside zone-begin/zone-commit of ``zone``; abort and raise on failure."""
        self._knotc_run(["zone-begin", zone])
        try:
            for index, command in enumerate(commands):
                try:
                    self._knotc_run(command)
                except DnsServerError as exc:
                    # zone-unset of an absent record says "no such record"
                    if not (ignore_first_missing and index == 0 and "no such" in str(exc)):
                        raise
            self._knotc_run(["zone-commit", zone])
        except BaseException:
            with contextlib.suppress(DnsServerError):
                self._knotc_run(["zone-abort", zone])
            raise

    def _knotc_run(self, args: list[str]) -> None:
        proc = subprocess.run([*self._knotc(), *args], capture_output=True, timeout=15, check=False)
        text = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        if proc.returncode != 0 or "error:" in text:
            raise DnsServerError(f"knotc {' '.join(args)}: {text}")

    def _config(self, root: Path) -> str:
        zones = "".join(f"  - domain: {zone}\n    file: {zone}.zone\n" for zone in self._zones())
        return f"""# Knot DNS test server (tests/support/dns_server.py)
server:
    rundir: {root}
    pidfile: {root}/knot.pid
    listen: {_HOST}@{self._port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: {root}/knot.sock
database:
    storage: {root}/db
log:
  - target: {root}/knot.log
    any: info
template:
  - id: default
    storage: {root}
    # the zone lives in memory; changes are never written back or journaled
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
{zones}"""

    def _zone_file(self, zone: str, records: list[tuple[str, str, str]]) -> str:
        # every zone names the main zone's ns as its server
        lines = [
            f"$ORIGIN {zone}.",
            f"$TTL {TTL}",
            # the last field is the negative-caching TTL (RFC 2308)
            f"@ SOA ns.{self.zone}. hostmaster.{self.zone}. 1 60 60 600 {TTL}",
            f"@ NS ns.{self.zone}.",
        ]
        if zone == self.zone and not any(
            owner == "ns" and rtype == "A" for owner, rtype, _ in records
        ):
            lines.append(f"ns A {_HOST}")
        lines += [f"{owner} {rtype} {rdata}" for owner, rtype, rdata in records]
        return "\n".join(lines) + "\n"

    def _fail(self, reason: str) -> None:
        root = self.root
        raise DnsServerError(
            f"DNS server failed: {reason}\n"
            f"--- knotd stderr ---\n{procs.tail(root / 'knotd.stderr')}\n"
            f"--- knot.log ---\n{procs.tail(root / 'knot.log')}"
        )


def _reap_stale() -> None:
    """Stop knotd and remove the directory of servers whose owner process is gone.

    ``atexit`` does not run when the test process is killed; the next start
    cleans up.  A pid is only signalled if it runs ``knotd`` with that
    directory in its command line (:func:`procs.stop_if_ours`).
    """
    procs.reap_stale(_TMP_PREFIX, lambda root: procs.stop_if_ours(root / "knot.pid", "knotd", root))
