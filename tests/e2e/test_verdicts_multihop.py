"""Verdicts on the real multi-hop route: rspamd signs and verifies, Knot serves the key.

A probe submits at the hop stack's submission Postfix (rspamd DKIM-signs),
the inbound Postfix's rspamd checks SPF, DKIM and DMARC against the real
Knot DNS server and writes ``Authentication-Results: inbound.example.test``
and its spam headers, and the message lands in the MailStack's Dovecot.
The run reads the verdicts before deleting the message; with
``verify_dkim`` it checks the signature itself through the same DNS server.
The ``hops`` fixture checks after each test that no probe mail is left and
every other message is untouched.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from smtp_probe.check import IMAP_PASSWORD_ENV, SMTP_PASSWORD_ENV
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import DnsSettings, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.report import ExitCode, exit_code, render_text
from tests.support import hop_routes
from tests.support.cli_proc import run_cli
from tests.support.hopstack import AUTHSERV_ID, HopStack
from tests.support.results import own_dkim_of, verdicts_of
from tests.support.routes import SENDER, SINK
from tests.support.stamping_smtpd import Stamping, stamping_hop

ALL_PASS = (("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass"))


def hop_probe(hops: HopStack, **changes: object) -> ProbeSpec:
    """The hop route's probe, requiring every result, checking DKIM itself through Knot."""
    host, _, port = hops.nameserver.rpartition(":")
    wanted: dict[str, object] = {
        "expect_auth": ALL_PASS,
        "verify_dkim": True,
        "dns": DnsSettings(((host, int(port)),), 3.0),
        **changes,
    }
    return replace(hop_routes.hop_probe(hops, name="signed-route", timeout=30.0), **wanted)  # type: ignore[arg-type]


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def test_a_signed_route_passes_dkim_spf_and_dmarc_with_our_own_check_beside(
    hops: HopStack,
) -> None:
    result = run(hop_probe(hops))

    assert result.outcome is Outcome.DELIVERED, (result.error, result.transcript.render())
    verdicts = verdicts_of(result)
    assert {m: verdicts.result(m) for m in ("dkim", "spf", "dmarc")} == dict.fromkeys(
        ("dkim", "spf", "dmarc"), "pass"
    )
    dkim = next(v for v in verdicts.results if v.method == "dkim")
    assert f"header.d={hops.dkim_domain}" in dkim.detail
    assert own_dkim_of(result).result == "pass", own_dkim_of(result)
    assert verdicts.spam_source == "X-Spamd-Result"
    assert verdicts.spam_score is not None
    assert verdicts.spam_threshold is not None
    assert verdicts.spam_score < verdicts.spam_threshold
    text = render_text(result, colour=False)
    assert f"verify: {AUTHSERV_ID}: dkim=pass" in text
    assert "verify: own DKIM check: dkim=pass" in text


def test_the_selectors_key_removed_turns_the_route_auth_failed(hops: HopStack) -> None:
    with hops.dkim_key_removed():
        result = run(hop_probe(hops))

    assert result.outcome is Outcome.AUTH_FAILED, (result.error, result.transcript.render())
    assert result.stage is Stage.VERIFY
    # rspamd writes dkim=none for a missing key; spf (and so dmarc) still pass.
    assert result.error == "dkim=none (expected pass)"
    assert exit_code(result) is ExitCode.WARNING
    assert own_dkim_of(result).result == "permerror"
    assert "no key published" in own_dkim_of(result).detail


def test_another_key_published_fails_the_signature_for_both_checks(hops: HopStack) -> None:
    with hops.dkim_key_replaced():
        result = run(hop_probe(hops))

    assert result.outcome is Outcome.AUTH_FAILED
    assert result.error.startswith("dkim=fail (expected pass)")
    assert own_dkim_of(result).result == "fail"


def test_a_forged_pass_with_another_authserv_id_is_ignored(hops: HopStack) -> None:
    """A hop before the receiver writes a passing header of its own; only the receiver's counts.

    The probe submits to a filter hop of ours (standing for a sender-side
    filter) that adds the forged header and relays, unsigned, to the
    inbound Postfix: rspamd keeps the forged header and adds its own.
    """
    forged = (
        "Authentication-Results: forger.example.net; dkim=pass header.d=example.test; "
        "spf=pass; dmarc=pass"
    )

    async def scenario() -> RunResult:
        stamping = Stamping((hops.host, hops.inbound_port), [forged])
        async with stamping_hop(stamping) as port:
            spec = hop_probe(
                hops,
                smtp=SmtpServer("127.0.0.1", port, TlsMode.NONE, timeout=10),
                expect_auth=(("dkim", "pass"),),
                verify_dkim=False,
            )
            return await run_probe(spec, signer=TokenSigner())

    result = asyncio.run(scenario())

    assert result.outcome is Outcome.AUTH_FAILED, (result.error, result.transcript.render())
    assert result.error == "dkim=none (expected pass)"
    verdicts = verdicts_of(result)
    assert verdicts.ignored == 1
    assert verdicts.result("spf") == "pass"  # the receiver's own, from our loopback address
    assert "ignored 1 Authentication-Results header(s)" in render_text(result, colour=False)


def check_config(hops: HopStack, tmp_path: Path) -> Path:
    """A config for ``smtp-probe check --config``: the signed route with every verdict key."""
    stack = hops.mailstack
    user, password = hops.credentials
    (tmp_path / "smtp").write_text(password)
    (tmp_path / "imap").write_text(stack.users[SINK])
    path = tmp_path / "verdicts.yml"
    path.write_text(
        f"dns: {{nameservers: ['{hops.nameserver}'], timeout: 3s}}\n"
        "smtp_servers:\n"
        f"  submit: {{host: {hops.host}, port: {hops.submission_port}, tls: starttls,"
        f" ca_file: {stack.ca_file}, username: {user}, password_file: {tmp_path / 'smtp'}}}\n"
        "mailboxes:\n"
        f"  sink: {{host: {stack.host}, port: {stack.imaps_port}, tls: tls,"
        f" ca_file: {stack.ca_file}, username: {SINK}, password_file: {tmp_path / 'imap'},"
        f" authserv_id: {AUTHSERV_ID}}}\n"
        "probes:\n"
        f"  - {{name: signed-route, smtp: submit, mailbox: sink, from: {SENDER}, to: {SINK},"
        " timeout: 30s, expect_auth: {dkim: pass, spf: pass, dmarc: pass}, verify_dkim: true}\n"
    )
    return path


def test_check_shows_the_verdicts_and_warns_when_the_key_is_gone(
    hops: HopStack, tmp_path: Path
) -> None:
    """``smtp-probe check -v`` as an operator runs it: 0 with passing verdicts, 1 without."""
    path = check_config(hops, tmp_path)
    argv = ("check", "--config", str(path), "--probe", "signed-route", "-v")

    good = run_cli(*argv)
    with hops.dkim_key_removed():
        broken = run_cli(*argv)

    assert good.returncode == 0, good.stdout + good.stderr
    assert f"verify: {AUTHSERV_ID}: dkim=pass" in good.stdout
    assert "verify: own DKIM check: dkim=pass" in good.stdout
    assert "spam score" in good.stdout
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"verify: {AUTHSERV_ID}: dkim=none" in broken.stdout
    assert "verify: own DKIM check: dkim=permerror" in broken.stdout
    last = broken.stdout.rstrip().splitlines()[-1]
    assert last.startswith("WARNING: auth_failed at verify: dkim=none (expected pass)"), last


def test_check_flags_require_results_without_a_config(hops: HopStack) -> None:
    """The same route by flags: --authserv-id, --expect-auth, --verify-dkim, --dns-server."""
    stack = hops.mailstack
    user, password = hops.credentials
    result = run_cli(
        "check",
        "--smtp", f"{hops.host}:{hops.submission_port}", "--smtp-user", user,
        "--from", SENDER, "--to", SINK,
        "--imap", f"{stack.host}:{stack.imaps_port}", "--ca-file", str(stack.ca_file),
        "--authserv-id", AUTHSERV_ID, "--expect-auth", "dkim=pass", "--expect-auth", "dmarc=pass",
        "--expect-auth", "arc=pass",
        "--verify-dkim", "--dns-server", hops.nameserver, "--timeout", "30s",
        env={SMTP_PASSWORD_ENV: password, IMAP_PASSWORD_ENV: stack.users[SINK]},
    )  # fmt: skip

    # rspamd writes no arc result for a message without ARC headers: none, not pass.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "verify: own DKIM check: dkim=pass" in result.stdout
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("WARNING: auth_failed at verify: arc=none (expected pass)"), last
