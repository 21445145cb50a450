"""MTA-STS (RFC 8461): discover a domain's policy, fetch it over verified HTTPS, match MX hosts.

Discovery is the ``_mta-sts.<domain>`` TXT record (``v=STSv1; id=...``);
the policy itself is ``https://mta-sts.<domain>/.well-known/mta-sts.txt``.
Both go through *our* resolver (:mod:`smtp_probe.probe.resolver`), not the
system's: the policy host must be looked up in the same view of DNS as the
MX (a split horizon, the tests' Knot), so the HTTPS connection is made to
the addresses we resolved, on port 443 (the RFC fixes it), with the
certificate verified for ``mta-sts.<domain>`` by the CA file of the
settings or the system store -- never unverified, whatever
``TlsSettings.verify`` says: an unverified policy is worth nothing.
Redirects are not followed (RFC 8461 §3.3), the answer must be ``200``,
``text/plain`` and at most 64 KiB.

Policies are cached per domain for their ``max_age`` while the TXT ``id``
stays the same (§5.1). :func:`cached_policy` hands a sender the cached,
unexpired policy when discovery fails or the TXT record vanished, as
§5.1 asks, so stripping the TXT record does not downgrade delivery.

Only the stdlib (``http.client``, ``ssl``) is used; the blocking fetch runs
in a worker thread with socket timeouts derived from the caller's deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Final

from smtp_probe.probe.resolver import DnsLookupError, Resolver
from smtp_probe.probe.spec import TlsSettings

POLICY_PATH: Final = "/.well-known/mta-sts.txt"
HTTPS_PORT: Final = 443
"""RFC 8461 §3.3: the policy is served on port 443; no other port is ever tried."""
MAX_POLICY_BYTES: Final = 64 * 1024
"""RFC 8461 §3.3: senders may refuse a policy larger than 64 KiB."""
MAX_AGE_LIMIT: Final = 31_557_600
"""RFC 8461 §3.2: ``max_age`` is at most 31557600 seconds (about one year)."""
MODES: Final = ("none", "testing", "enforce")

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class MtaStsError(Exception):
    """A published policy could not be had or read: ``reason`` is one line naming what failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MtaStsPolicy:
    """A domain's MTA-STS policy as fetched from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``."""

    domain: str
    policy_id: str
    """The ``id=`` of the ``_mta-sts`` TXT record."""
    mode: str
    """``enforce``, ``testing`` or ``none``."""
    mx: tuple[str, ...]
    """MX host patterns (``mx1.example.net``, ``*.example.net``)."""
    max_age: int

    def matches(self, host: str) -> bool:
        """True when MX ``host`` matches one of the policy's ``mx`` patterns (RFC 8461 §4.1).

        Case does not matter and a trailing dot is ignored; ``*.example.net``
        matches exactly one leftmost label (``mx.example.net``, not
        ``a.b.example.net`` nor ``example.net``).
        """
        name = host.lower().rstrip(".")
        for pattern in self.mx:
            wanted = pattern.lower().rstrip(".")
            if wanted.startswith("*."):
                first, dot, rest = name.partition(".")
                if first and dot and rest == wanted[2:]:
                    return True
            elif name == wanted:
                return True
        return False

    def describe(self) -> str:
        """One transcript line: ``MTA-STS policy of example.net: mode enforce, id 2024, mx mx.example.net, max_age 86400``."""
        patterns = ", ".join(self.mx) or "(none)"
        return (
            f"MTA-STS policy of {self.domain}: mode {self.mode}, id {self.policy_id}, "
            f"mx {patterns}, max_age {self.max_age}"
        )


_CACHE: dict[str, tuple[float, MtaStsPolicy]] = {}
_CACHE_LOCK = threading.Lock()


def cached_policy(domain: str) -> MtaStsPolicy | None:
    """The cached, unexpired policy of ``domain``, or ``None``.

    A sender uses it when discovery fails or the TXT record is gone
    (RFC 8461 §5.1): a policy once seen holds until its ``max_age`` runs out.
    """
    key = domain.lower().rstrip(".")
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
    if entry is None or entry[0] <= time.monotonic():
        return None
    return entry[1]


def clear_cache() -> None:
    """Forget every cached policy."""
    with _CACHE_LOCK:
        _CACHE.clear()


async def discover(
    domain: str,
    resolver: Resolver,
    *,
    tls_settings: TlsSettings,
    deadline: float,
    evidence: list[str] | None = None,
) -> MtaStsPolicy | None:
    """The MTA-STS policy of ``domain``, or ``None`` when it publishes no ``_mta-sts`` record.

    The policy is fetched over HTTPS with the certificate verified for
    ``mta-sts.<domain>`` (``tls_settings.ca_file`` or the system store), the
    host resolved through ``resolver``; cached for its ``max_age`` while the
    TXT ``id`` is unchanged. Lines of what was asked and answered are
    appended to ``evidence``. Several ``v=STSv1`` records, or a record
    without a valid ``id``, count as none (RFC 8461 §3.1), noted in
    ``evidence``.

    Raises:
        MtaStsError: a TXT record is published but the policy could not be
            fetched (certificate, HTTP status, timeout) or parsed, or the
            TXT lookup itself failed.
    """
    notes: list[str] = evidence if evidence is not None else []
    domain = domain.lower().rstrip(".")
    txt_name = f"_mta-sts.{domain}"
    try:
        answer = await resolver.lookup(txt_name, "TXT", deadline=deadline)
    except DnsLookupError as exc:
        notes.append(f"{txt_name} TXT: lookup failed: {exc.reason}")
        raise MtaStsError(f"{txt_name} TXT lookup failed: {exc.reason}") from None
    notes.append(answer.describe())
    records = [r for r in answer.records if _is_sts_record(r)]
    if not records:
        if answer.exists:
            notes.append(f"{txt_name}: no record starts with v=STSv1: no MTA-STS policy")
        return None
    if len(records) > 1:
        notes.append(
            f"{txt_name}: {len(records)} v=STSv1 records: no MTA-STS policy (RFC 8461 §3.1)"
        )
        return None
    policy_id = _record_id(records[0])
    if policy_id is None:
        notes.append(f"{txt_name}: no valid id= in the record: no MTA-STS policy (RFC 8461 §3.1)")
        return None

    now = time.monotonic()
    with _CACHE_LOCK:
        entry = _CACHE.get(domain)
    if entry is not None and entry[0] > now and entry[1].policy_id == policy_id:
        notes.append(f"policy id {policy_id} unchanged: cached policy used")
        notes.append(entry[1].describe())
        return entry[1]

    host = f"mta-sts.{domain}"
    addresses = await _addresses(host, resolver, deadline, notes)
    text = await _fetch(host, addresses, tls_settings, deadline, notes)
    policy = parse_policy(text, domain=domain, policy_id=policy_id)
    notes.append(policy.describe())
    with _CACHE_LOCK:
        _CACHE[domain] = (time.monotonic() + policy.max_age, policy)
    return policy


def parse_policy(text: str, *, domain: str, policy_id: str) -> MtaStsPolicy:
    """The policy in ``text`` (``key: value`` lines, RFC 8461 §3.2).

    Unknown keys are ignored; ``version: STSv1``, ``mode`` and ``max_age``
    are required, and ``mx`` at least once unless the mode is ``none``.

    Raises:
        MtaStsError: a required field is missing or invalid.
    """
    fields: dict[str, str] = {}
    patterns: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise MtaStsError(f"policy of {domain}: line {raw[:60]!r} is not 'key: value'")
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            patterns.append(value)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise MtaStsError(
            f"policy of {domain}: version is {fields.get('version', '(missing)')!r}, not STSv1"
        )
    mode = fields.get("mode")
    if mode not in MODES:
        raise MtaStsError(
            f"policy of {domain}: mode {mode or '(missing)'!r} is not one of {', '.join(MODES)}"
        )
    max_age_text = fields.get("max_age", "")
    # ASCII digits only: "²" is a digit to isdigit() and not to int().
    if not (max_age_text.isascii() and max_age_text.isdigit()) or len(max_age_text) > 20:
        raise MtaStsError(
            f"policy of {domain}: max_age {max_age_text or '(missing)'!r} is not a number of seconds"
        )
    if mode != "none" and not patterns:
        raise MtaStsError(f"policy of {domain}: mode {mode} without any mx: line")
    return MtaStsPolicy(
        domain=domain,
        policy_id=policy_id,
        mode=mode,
        mx=tuple(patterns),
        max_age=min(int(max_age_text), MAX_AGE_LIMIT),
    )


def _is_sts_record(record: str) -> bool:
    first = record.split(";", 1)[0].strip()
    return first.replace(" ", "") == "v=STSv1"


def _record_id(record: str) -> str | None:
    """The ``id`` of a ``v=STSv1`` record, or ``None`` when it has no valid one."""
    for part in record.split(";")[1:]:
        key, equals, value = part.strip().partition("=")
        if equals and key.strip() == "id":
            value = value.strip()
            return value if _ID.match(value) else None
    return None


async def _addresses(host: str, resolver: Resolver, deadline: float, notes: list[str]) -> list[str]:
    """The A then AAAA addresses of the policy host, through our resolver.

    Raises:
        MtaStsError: the host has no address or the lookups failed.
    """
    result = await resolver.addresses(host, deadline=deadline)
    for rdtype, step in result.steps:
        if isinstance(step, DnsLookupError):
            notes.append(f"{host} {rdtype}: lookup failed: {step.reason}")
        else:
            notes.append(step.describe())
    if not result.found:
        raise MtaStsError(f"policy host {host} has no address: {result.why_none()}")
    return result.found


async def _fetch(
    host: str, addresses: list[str], tls_settings: TlsSettings, deadline: float, notes: list[str]
) -> str:
    """The policy text from ``https://host/.well-known/mta-sts.txt``, trying ``addresses`` in turn.

    Raises:
        MtaStsError: no address answered, or the answer is not a usable policy.
    """
    from smtp_probe.probe import tls

    try:
        # Always verified: the settings' CA file, else the system store.
        context = tls.client_context(TlsSettings(verify=True, ca_file=tls_settings.ca_file))
    except OSError as exc:  # ssl.SSLError included
        raise MtaStsError(f"CA file {tls_settings.ca_file} unusable: {exc}") from None
    url = f"https://{host}{POLICY_PATH}"
    failures: list[str] = []
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        where = f"[{address}]:{HTTPS_PORT}"
        try:
            # The worker thread's sockets time out on their own; wait_for
            # returns to the caller at the deadline even so.
            status, reason, headers, body = await asyncio.wait_for(
                asyncio.to_thread(_get, host, address, context, remaining), remaining
            )
        except TimeoutError:
            failures.append(f"{where}: no answer before the deadline")
            notes.append(f"GET {url} {where}: no answer before the deadline")
            break
        except ssl.SSLCertVerificationError as exc:
            why = f"certificate of {host} not verified: {exc.verify_message or exc.reason}"
            notes.append(f"GET {url} {where}: {why}")
            raise MtaStsError(f"{why} ({where})") from None
        except ssl.SSLError as exc:
            why = f"TLS handshake with {host} failed: {exc.reason or exc}"
            notes.append(f"GET {url} {where}: {why}")
            raise MtaStsError(f"{why} ({where})") from None
        except (OSError, http.client.HTTPException) as exc:
            why = _describe_os_error(exc)
            failures.append(f"{where}: {why}")
            notes.append(f"GET {url} {where}: {why}")
            continue
        content_type = headers.get("content-type", "")
        notes.append(
            f"GET {url} {where}: HTTP {status} {reason}, {content_type or 'no Content-Type'}, "
            f"{len(body)} bytes"
        )
        if 300 <= status < 400:
            target = headers.get("location", "(no Location)")
            raise MtaStsError(
                f"{url}: HTTP {status} redirect to {target} not followed (RFC 8461 §3.3)"
            )
        if status != 200:
            raise MtaStsError(f"{url}: HTTP {status} {reason}")
        if content_type.split(";", 1)[0].strip().lower() != "text/plain":
            raise MtaStsError(f"{url}: Content-Type {content_type or '(none)'!r}, not text/plain")
        if len(body) > MAX_POLICY_BYTES:
            raise MtaStsError(f"{url}: policy larger than {MAX_POLICY_BYTES} bytes")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise MtaStsError(f"{url}: policy is not UTF-8 text") from None
    raise MtaStsError(f"{url} not fetched: " + ("; ".join(failures) or "deadline reached"))


def _get(
    host: str, address: str, context: ssl.SSLContext, timeout: float
) -> tuple[int, str, dict[str, str], bytes]:
    """One blocking ``GET`` of the policy from ``address``, TLS verified for ``host``.

    Raises:
        ssl.SSLError: the handshake or the verification failed.
        OSError: no connection, or a timeout.
        http.client.HTTPException: the answer is not HTTP.
    """
    connection = _PinnedHTTPSConnection(host, address, context, timeout)
    try:
        connection.request(
            "GET", POLICY_PATH, headers={"User-Agent": "smtp-probe", "Accept": "text/plain"}
        )
        response = connection.getresponse()
        body = response.read(MAX_POLICY_BYTES + 1)
        headers = {key.lower(): value for key, value in response.getheaders()}
        return response.status, response.reason, headers, body
    finally:
        connection.close()


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a given address (ours, resolved) with SNI and verification for ``host``.

    ``HTTPSConnection`` would look ``host`` up through the system resolver;
    this one connects to ``address`` instead.
    """

    def __init__(self, host: str, address: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, HTTPS_PORT, timeout=timeout, context=context)
        self._address = address
        self._verify_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, HTTPS_PORT), self.timeout)
        try:
            self.sock = self._verify_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
