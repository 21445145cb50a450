"""CPU of the pieces of one run, in-process and without a mail server: where the 3 ms go.

``bench_run_cpu`` says how much CPU a whole run costs; this says what the
pieces cost, one at a time, so a change to one of them can be checked in
seconds. Each piece runs ``--repeats`` times (after a warm-up) and is
reported in microseconds of CPU per call (``time.process_time``, so the
executor hop's worker thread counts too):

* building the probe message and encoding it for DATA: before, with the
  ``email`` package per run (``build_message`` + ``as_bytes(policy=SMTP)``),
  and now, filling in the probe's template (``MessageTemplate.render``);
* the client side of one whole SMTP session (connect, EHLO, MAIL, RCPT,
  DATA, the message, QUIT; no TLS, no AUTH) through ``send_message``
  against aiosmtpd in a child process (its CPU not counted), with the
  server offering ``PIPELINING`` and without: CPU and wall time per session;
* parsing the fetched ``X-Smtp-Probe`` + ``Received`` header block the way
  the watcher does (``email.policy.default``), and with ``compat32`` for
  comparison;
* signing and verifying a token;
* ``loop.getaddrinfo`` for a numeric host, which asyncio always hands to
  its default executor (one thread wake-up per run), against a direct
  ``socket.getaddrinfo``;
* the client side of one TLS 1.3 handshake (ECDSA P-256 certificate from
  trustme, the context ``probe/tls.py`` builds), as STARTTLS does per run;
* reading the TLS facts of a finished connection (``tls_facts``: the DER
  certificate parsed with ``cryptography``; on Python 3.13+ the presented
  chain too, here leaf + intermediate), once per leg and run;
* ``Metrics.record`` and ``Config.probe`` with 1,000 probes configured;
* one ``run finished`` JSON log line (structlog, to /dev/null);
* a run's transcript (30 lines, two secrets masked).

Run: ``python -m bench.bench_parts``.
"""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import email.policy
import multiprocessing
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import trustme
from prometheus_client import CollectorRegistry

from bench.bench_metrics import config_text, fake_results
from bench.benchkit import background_load, machine_info, print_table, write_json
from smtp_probe import log
from smtp_probe.config import parse_config
from smtp_probe.metrics import Metrics
from smtp_probe.probe.message import PROBE_HEADER, MessageTemplate, TokenSigner, build_message
from smtp_probe.probe.smtp import send_message
from smtp_probe.probe.spec import SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.tls import client_context, tls_facts
from smtp_probe.probe.transcript import Transcript
from tests.support.loopback_smtpd import Behaviour, smtpd
from tests.support.tls_certs import chain, handshake

RECEIVED = (
    "Received: from mx.example.test\r\n"
    "\tby mx.example.test with LMTP\r\n"
    "\tid 7LiCBeK9CmvVKgAAg+zDdQ\r\n"
    "\t(envelope-from <probe@example.test>)\r\n"
    "\tfor <sink@example.test>; Sat, 28 Nov 2026 11:41:22 +0000\r\n"
    "Received: from localhost (unknown [127.0.0.1])\r\n"
    "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
    "\t key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256)\r\n"
    "\t(No client certificate requested)\r\n"
    "\t(Authenticated sender: probe@example.test)\r\n"
    "\tby mx.example.test (Postfix) with ESMTPSA id 0F42920C861\r\n"
    "\tfor <sink@example.test>; Sat, 28 Nov 2026 11:41:22 +0000 (UTC)\r\n"
)
"""The two ``Received`` headers the local stack adds (LMTP hop, submission hop)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=2000, help="calls per piece")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--postfix",
        action="store_true",
        help="also time SMTP sessions against a private Postfix (root, Postfix + Dovecot)",
    )
    return parser.parse_args(argv)


def cpu_per_call(call: Callable[[], object], repeats: int, warmup: int = 20) -> float:
    """CPU seconds (this process, all threads) per call of ``call``."""
    for _ in range(warmup):
        call()
    began = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - began) / repeats


def header_parsers(block: bytes) -> dict[str, Callable[[], object]]:
    """The watcher's header parsing (policy.default) and a compat32 variant."""
    default = email.parser.BytesHeaderParser(policy=email.policy.default)
    compat = email.parser.BytesHeaderParser(policy=email.policy.compat32)

    def as_watcher() -> object:
        headers = default.parsebytes(block)
        value = str(headers.get(PROBE_HEADER, "")).strip()
        received = tuple(" ".join(str(h).split()) for h in headers.get_all("Received", []))
        return value, received

    def with_compat32() -> object:
        headers = compat.parsebytes(block)
        value = str(headers.get(PROBE_HEADER, "")).strip()
        received = tuple(" ".join(str(h).split()) for h in headers.get_all("Received", []))
        return value, received

    return {"policy.default (as the watcher)": as_watcher, "compat32": with_compat32}


def tls_handshake(repeats: int) -> float:
    """Client-side CPU seconds of one TLS handshake over memory BIOs (server side not counted)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_ctx)
    with tempfile.TemporaryDirectory() as tmp:
        ca_file = Path(tmp, "ca.pem")
        ca.cert_pem.write_to_path(str(ca_file))
        client_ctx = client_context(TlsSettings(ca_file=ca_file))

    def one() -> float:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        spent = 0.0
        client_done = server_done = False
        while not (client_done and server_done):
            began = time.process_time()
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
            spent += time.process_time() - began
            s_in.write(c_out.read())
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            c_in.write(s_out.read())
        return spent

    for _ in range(5):
        one()
    return sum(one() for _ in range(repeats)) / repeats


def tls_facts_cost(repeats: int) -> float:
    """CPU seconds of ``tls_facts`` on a finished connection presenting leaf + intermediate."""
    with tempfile.TemporaryDirectory() as tmp:
        certs = chain(Path(tmp), leaf_days=90, intermediate_days=365)
        end = handshake(certs.server_context(), certs.client_context())
    return cpu_per_call(lambda: tls_facts(end, verified=True), repeats)


async def getaddrinfo_hop(repeats: int) -> tuple[float, float]:
    """CPU per ``loop.getaddrinfo('127.0.0.1')`` after a pause (as between runs), and direct."""
    loop = asyncio.get_running_loop()
    await loop.getaddrinfo("127.0.0.1", 587, type=socket.SOCK_STREAM)
    spent = 0.0
    for _ in range(repeats):
        await asyncio.sleep(0.002)  # the executor's worker goes back to sleep, as between runs
        began = time.process_time()
        await loop.getaddrinfo("127.0.0.1", 587, type=socket.SOCK_STREAM)
        spent += time.process_time() - began
    direct = cpu_per_call(
        lambda: socket.getaddrinfo("127.0.0.1", 587, type=socket.SOCK_STREAM), repeats
    )
    return spent / repeats, direct


def _serve_smtp(pipelining: bool, port: Any, stop: Any) -> None:
    """Child process: aiosmtpd (as the protocol tests run it) until ``stop`` is set."""
    with smtpd(Behaviour(offer_pipelining=pipelining)) as bound:
        port.value = bound
        stop.wait()


def smtp_sessions(sessions: int, *, pipelining: bool) -> tuple[float, float]:
    """Client CPU and wall seconds per SMTP session against aiosmtpd in a child process."""
    context = multiprocessing.get_context("spawn")
    port, stop = context.Value("i", 0), context.Event()
    child = context.Process(target=_serve_smtp, args=(pipelining, port, stop), daemon=True)
    child.start()
    try:
        while port.value == 0:
            if not child.is_alive():
                raise RuntimeError("the aiosmtpd child process died")
            time.sleep(0.01)
        return client_sessions(port.value, sessions)
    finally:
        stop.set()
        child.join(timeout=10)


def postfix_sessions(sessions: int) -> dict[str, float]:
    """Client CPU and wall seconds per session against the real Postfix, with and without PIPELINING.

    A private Postfix + Dovecot (``tests/support/mailstack.py``, root);
    its MX port, no TLS. PIPELINING is taken out of the EHLO reply with
    ``smtpd_discard_ehlo_keywords`` and a reload for the second half.
    """
    from tests.support.mailstack import MailStack  # here: only --postfix needs it (and root)

    found: dict[str, float] = {}
    with MailStack() as stack:
        conf = str(stack.layout.postfix_conf)
        for pipelining in (True, False):
            if not pipelining:
                postconf = shutil.which("postconf") or "/usr/sbin/postconf"
                postfix = shutil.which("postfix") or "/usr/sbin/postfix"
                subprocess.run(  # noqa: S603 - our own stack's config
                    [postconf, "-c", conf, "-e", "smtpd_discard_ehlo_keywords=pipelining"],
                    check=True,
                )
                subprocess.run([postfix, "-c", conf, "reload"], check=True, capture_output=True)  # noqa: S603
                time.sleep(2)  # smtpd processes of the old config finish their sessions
            cpu, wall = client_sessions(stack.smtp_port, sessions, rcpt_to="sink@example.test")
            kind = "PIPELINING" if pipelining else "one command per round trip"
            found[f"Postfix SMTP session, client CPU ({kind})"] = cpu
            found[f"Postfix SMTP session, wall time ({kind})"] = wall
    return found


def client_sessions(
    port: int, sessions: int, *, rcpt_to: str = "sink@example.test"
) -> tuple[float, float]:
    """CPU and wall seconds per ``send_message`` session to 127.0.0.1:``port`` (20 warm-up first)."""
    server = SmtpServer(
        host="127.0.0.1", port=port, tls=TlsMode.NONE, helo="bench.test", timeout=10
    )
    signer = TokenSigner(b"bench-token-secret-of-enough-length")
    template = MessageTemplate(
        probe="probe-name", mail_from="probe@example.test", rcpt_to="sink@example.test"
    )

    async def one() -> None:
        await send_message(
            server,
            template.render(signer.new("probe-name")),
            mail_from="probe@example.test",
            rcpt_to=rcpt_to,
            transcript=Transcript(),
            deadline=time.monotonic() + 10,
        )

    async def many() -> tuple[float, float]:
        for _ in range(20):
            await one()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(sessions):
            await one()
        return (
            (time.process_time() - cpu) / sessions,
            (time.perf_counter() - wall) / sessions,
        )

    return asyncio.run(many())


def main(argv: list[str] | None = None) -> int:
    """Run every piece and print microseconds of CPU per call."""
    args = parse_args(argv)
    load_before = background_load()
    n = args.repeats
    signer = TokenSigner(b"bench-token-secret-of-enough-length")
    token = signer.new("probe-name")
    block = (RECEIVED + f"{PROBE_HEADER}: {token}\r\n\r\n").encode()

    def message_bytes() -> bytes:
        message = build_message(
            token=signer.new("probe-name"),
            probe="probe-name",
            mail_from="probe@example.test",
            rcpt_to="sink@example.test",
        )
        return message.as_bytes(policy=SMTP_POLICY)

    template = MessageTemplate(
        probe="probe-name", mail_from="probe@example.test", rcpt_to="sink@example.test"
    )

    results: dict[str, float] = {}
    results["message: build_message + as_bytes(SMTP) (before)"] = cpu_per_call(message_bytes, n)
    results["message: MessageTemplate.render (now)"] = cpu_per_call(
        lambda: template.render(signer.new("probe-name")), n
    )
    sessions = max(50, min(n // 4, 500))
    for pipelining in (True, False):
        cpu, wall = smtp_sessions(sessions, pipelining=pipelining)
        kind = "PIPELINING" if pipelining else "one command per round trip"
        results[f"SMTP session, client CPU ({kind})"] = cpu
        results[f"SMTP session, wall time ({kind})"] = wall
    if args.postfix:
        results.update(postfix_sessions(sessions))
    for name, call in header_parsers(block).items():
        results[f"header parse: {name}"] = cpu_per_call(call, n)
    results["TokenSigner.new"] = cpu_per_call(lambda: signer.new("probe-name"), n)
    text = str(token)
    results["TokenSigner.verify"] = cpu_per_call(lambda: signer.verify("probe-name", text), n)
    hop, direct = asyncio.run(getaddrinfo_hop(min(n, 500)))
    results["loop.getaddrinfo(127.0.0.1) via executor"] = hop
    results["socket.getaddrinfo(127.0.0.1) direct"] = direct
    results["TLS 1.3 handshake, client side"] = tls_handshake(min(n, 200))
    results["tls_facts of a finished connection"] = tls_facts_cost(n)

    config = parse_config(config_text(1000))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(config.probes)
    fakes = fake_results(config, 1, random.Random(1))  # noqa: S311 - fake timings
    cycle = iter(fakes * (n // len(fakes) + 2))
    results["Metrics.record (1,000 probes)"] = cpu_per_call(lambda: metrics.record(next(cycle)), n)
    last = config.probes[-1].name
    results["Config.probe(name), 1,000 probes, last"] = cpu_per_call(lambda: config.probe(last), n)

    with open(os.devnull, "w") as devnull:
        log.setup("info", stream=devnull, json=True)
        logger = log.get("bench")
        fields: dict[str, Any] = {
            "probe": "probe-name",
            "run_id": "9f2c4e1ab07d5c33",
            "outcome": "delivered",
            "stage": None,
            "error": None,
            "duration_seconds": 0.0712,
            "delivery_seconds": 0.0153,
            "reply_code": 250,
            "queue_id": "0F42920C861",
            "folder": "INBOX",
        }
        results["run log line (structlog JSON)"] = cpu_per_call(
            lambda: logger.info("run finished", **fields), n
        )

    def transcript() -> Transcript:
        record = Transcript()
        record.mask("probe-secret")
        record.mask("sink-secret")
        for i in range(15):
            record.sent(f"COMMAND {i} with some arguments", tls=True)
            record.received(f"250 2.0.0 reply number {i}", tls=True)
        return record

    results["Transcript, 30 lines, 2 secrets"] = cpu_per_call(transcript, n)

    rows = [(name, f"{seconds * 1e6:8.1f} us") for name, seconds in results.items()]
    rows.append(("machine busy before start", f"{100 * load_before:.0f} %"))
    print_table(f"bench_parts: CPU per call ({n} calls each)", rows)
    write_json(
        args.out,
        {
            "benchmark": "bench_parts",
            "machine": machine_info(),
            "repeats": n,
            "machine_busy_before_start": load_before,
            "at": datetime.now(UTC).isoformat(),
            "cpu_seconds_per_call": results,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
