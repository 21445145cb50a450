"""``mx:`` sending against real servers: Knot for MX/A/TXT, stunnel for MTA-STS policies, Postfix or aiosmtpd as the MX.

Every MX host name resolves (through the tests' Knot, never the system's
resolver) to a loopback address: ``mx``/``mx2`` to 127.0.0.1 where the
MailStack's Postfix listens (its certificate names ``mx.example.test``, not
``mx2``), ``down`` to 127.0.0.9 where nothing listens. The MX hosts of one
server share its ``port:`` (the MailStack's MX-style port, or the port of a
STARTTLS-less aiosmtpd). The mail domain looked up is a sub-domain of
``example.test`` per case; the recipient stays sink@example.test, the one
domain the MailStack takes mail for.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtp_probe.check import IMAP_PASSWORD_ENV
from smtp_probe.probe import mta_sts
from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import DnsSettings, ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.report import as_dict, render_text
from tests.support.cli_proc import run_cli
from tests.support.dns_server import DnsServer, txt_rdata
from tests.support.loopback_smtpd import Behaviour, smtpd
from tests.support.mailstack import MailStack
from tests.support.policy_https import Page, PolicyWebServer
from tests.support.routes import SENDER, SINK, mailbox

pytestmark = pytest.mark.e2e

POLICY_DOMAINS = ("enforce", "badcert", "notlisted", "clear", "testing", "testcert")


def policy(mode: str, *mx: str) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {host}" for host in mx), "max_age: 3600"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def web() -> Iterator[PolicyWebServer]:
    server = PolicyWebServer([f"mta-sts.{name}.example.test" for name in POLICY_DOMAINS])
    server.serve("mta-sts.enforce.example.test", Page(body=policy("enforce", "mx.example.test")))
    server.serve("mta-sts.badcert.example.test", Page(body=policy("enforce", "mx2.example.test")))
    server.serve("mta-sts.notlisted.example.test", Page(body=policy("enforce", "mx9.example.test")))
    server.serve("mta-sts.clear.example.test", Page(body=policy("enforce", "plain.example.test")))
    server.serve("mta-sts.testing.example.test", Page(body=policy("testing", "other.example.test")))
    server.serve("mta-sts.testcert.example.test", Page(body=policy("testing", "*.example.test")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def knot(web: PolicyWebServer) -> Iterator[DnsServer]:
    records = [
        ("mx", "A", "127.0.0.1"),
        ("mx2", "A", "127.0.0.1"),
        ("plain", "A", "127.0.0.1"),
        ("down", "A", "127.0.0.9"),
        ("first", "MX", "10 mx.example.test."),
        ("first", "MX", "20 mx2.example.test."),
        ("second", "MX", "20 mx.example.test."),
        ("second", "MX", "10 mx2.example.test."),
        ("fallback", "MX", "10 down.example.test."),
        ("fallback", "MX", "20 mx.example.test."),
        ("nullmx", "MX", "0 ."),
        ("busy", "A", "127.0.0.2"),
        ("greylist", "MX", "10 busy.example.test."),
        ("greylist", "MX", "20 mx.example.test."),
        ("alldown", "MX", "5 ghost.example.test."),
        ("alldown", "MX", "10 down.example.test."),
        ("nomx", "A", "127.0.0.1"),
        ("enforce", "MX", "10 mx.example.test."),
        ("badcert", "MX", "10 mx2.example.test."),
        ("notlisted", "MX", "10 mx.example.test."),
        ("clear", "MX", "10 plain.example.test."),
        ("testing", "MX", "10 plain.example.test."),
        ("testcert", "MX", "10 mx2.example.test."),
        ("unfetched", "MX", "10 mx.example.test."),
        ("_mta-sts.unfetched", "TXT", txt_rdata("v=STSv1; id=1")),
        ("mta-sts.unfetched", "A", web.wrong_name),
    ]
    for name in POLICY_DOMAINS:
        records.append((f"_mta-sts.{name}", "TXT", txt_rdata("v=STSv1; id=20261207")))
        records.append((f"mta-sts.{name}", "A", web.good))
    with DnsServer("example.test", records) as server:
        yield server


@pytest.fixture(scope="module")
def ca_bundle(
    web: PolicyWebServer, mailstack: MailStack, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One CA file trusting both the policy web server and the MailStack's Postfix."""
    bundle = tmp_path_factory.mktemp("ca") / "bundle.pem"
    bundle.write_bytes(web.ca_file.read_bytes() + mailstack.ca_file.read_bytes())
    return bundle


@pytest.fixture(autouse=True)
def fresh_policies() -> None:
    mta_sts.clear_cache()


def mx_probe(
    knot: DnsServer,
    ca: Path,
    domain: str,
    port: int,
    *,
    box: bool = True,
    stack: MailStack | None = None,
) -> ProbeSpec:
    server = SmtpServer(
        f"{domain}.example.test",
        port,
        TlsMode.OPPORTUNISTIC,
        TlsSettings(ca_file=ca),
        timeout=10,
        mx=True,
    )
    return ProbeSpec(
        name="mx",
        smtp=server,
        mail_from=SENDER,
        rcpt_to=SINK,
        mailbox=mailbox(stack) if box and stack is not None else None,
        timeout=20.0,
        dns=DnsSettings(nameservers=(knot.address,), timeout=3.0),
    )


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def text_of(result: RunResult) -> str:
    return "\n".join(result.transcript.render())


@pytest.mark.parametrize(
    ("domain", "chosen"), [("first", "mx.example.test"), ("second", "mx2.example.test")]
)
def test_the_preferred_mx_takes_the_message(
    stack: MailStack, knot: DnsServer, ca_bundle: Path, domain: str, chosen: str
) -> None:
    result = run(mx_probe(knot, ca_bundle, domain, stack.smtp_port, stack=stack))

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.smtp.mx_host == chosen
    text = text_of(result)
    assert f"=== delivered to MX 10 {chosen} [127.0.0.1]:{stack.smtp_port}" in text
    assert f"MTA-STS: {domain}.example.test publishes no policy: opportunistic delivery" in text
    assert result.smtp.tls_version is not None  # Postfix offers STARTTLS: taken, unverified
    assert result.smtp.tls is not None
    assert not result.smtp.tls.verified
    assert as_dict(result)["smtp"]["mx_host"] == chosen
    assert f"via MX {chosen}" in render_text(result, colour=False)


def test_a_down_preferred_mx_falls_back_to_the_next(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    result = run(mx_probe(knot, ca_bundle, "fallback", stack.smtp_port, stack=stack))

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.smtp.mx_host == "mx.example.test"
    text = text_of(result)
    assert (
        f"=== MX 10 down.example.test [127.0.0.9]:{stack.smtp_port}: cannot connect to "
        f"down.example.test:{stack.smtp_port}: connection refused, trying the next"
    ) in text
    assert text.index("down.example.test [127.0.0.9]") < text.index(
        "delivered to MX 20 mx.example.test"
    )


def test_an_mx_greeting_with_421_falls_back_to_the_next(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"421 4.7.0 busy.example.test closing, come back later\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> RunResult:
        # Another address, the MailStack's port: the MX hosts of one server share it.
        busy = await asyncio.start_server(greet, "127.0.0.2", stack.smtp_port)
        async with busy:
            spec = mx_probe(knot, ca_bundle, "greylist", stack.smtp_port, stack=stack)
            return await run_probe(spec, signer=TokenSigner())

    result = asyncio.run(scenario())

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.smtp.mx_host == "mx.example.test"
    assert (
        f"MX 10 busy.example.test [127.0.0.2]:{stack.smtp_port}: server greeted with 421 "
        "4.7.0 busy.example.test closing, come back later, trying the next"
    ) in text_of(result)


def test_every_mx_down_fails_at_connect_naming_the_last(knot: DnsServer, ca_bundle: Path) -> None:
    result = run(mx_probe(knot, ca_bundle, "alldown", 2525, box=False))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.CONNECT
    assert result.error == (
        "no MX host of alldown.example.test took the message; last: down.example.test "
        "[127.0.0.9]:2525: cannot connect to down.example.test:2525: connection refused"
    )
    assert result.smtp.mx_host is None
    assert (
        "MX 5 ghost.example.test: ghost.example.test has no address (no A or AAAA record), "
        "trying the next"
    ) in text_of(result)


def test_a_domain_without_mx_is_its_own_mx(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    result = run(mx_probe(knot, ca_bundle, "nomx", stack.smtp_port, stack=stack))

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.smtp.mx_host == "nomx.example.test"
    assert "nomx.example.test has no MX: its own address is the MX" in text_of(result)


@pytest.mark.parametrize(
    ("domain", "error"),
    [
        ("nullmx", "nullmx.example.test accepts no mail (null MX, RFC 7505)"),
        ("nowhere", "nowhere.example.test does not exist (NXDOMAIN)"),
    ],
)
def test_a_null_mx_or_no_domain_fails_at_dns(
    knot: DnsServer, ca_bundle: Path, domain: str, error: str
) -> None:
    result = run(mx_probe(knot, ca_bundle, domain, 25, box=False))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DNS
    assert result.error == error


def test_a_refusal_after_the_envelope_began_is_final(knot: DnsServer, ca_bundle: Path) -> None:
    handler = Behaviour(rcpt_reply="550 5.1.1 <sink@example.test>: no such user")
    with smtpd(handler) as port:
        result = run(mx_probe(knot, ca_bundle, "first", port, box=False))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.RCPT_TO
    assert result.smtp.mx_host == "mx.example.test"
    assert result.smtp.reply_code == 550
    assert len(handler.greetings) == 1  # mx2 (preference 20) was never asked
    assert (
        text_of(result)
        .splitlines()[-1]
        .endswith(
            "=== FAILED at rcpt_to: server replied 550 5.1.1 <sink@example.test>: no such user"
        )
    )


def test_enforce_delivers_over_verified_starttls_to_a_listed_mx(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    result = run(mx_probe(knot, ca_bundle, "enforce", stack.smtp_port, stack=stack))

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.smtp.mx_host == "mx.example.test"
    assert result.smtp.tls is not None
    assert result.smtp.tls.verified
    text = text_of(result)
    assert "MTA-STS: mode enforce (id 20261207) applies" in text
    assert f"=== MX 10 mx.example.test [127.0.0.1]:{stack.smtp_port} (MTA-STS)" in text


def test_enforce_refuses_an_mx_whose_certificate_does_not_name_it(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    result = run(mx_probe(knot, ca_bundle, "badcert", stack.smtp_port, stack=stack))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.STARTTLS
    error = result.error or ""
    assert error.startswith("MTA-STS enforce (badcert.example.test, id 20261207): mx2.example.test")
    assert "certificate verification failed" in error
    assert "MAIL FROM" not in text_of(result)


def test_enforce_skips_an_mx_the_policy_does_not_list(
    knot: DnsServer, ca_bundle: Path, stack: MailStack
) -> None:
    result = run(mx_probe(knot, ca_bundle, "notlisted", stack.smtp_port, box=False))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.STARTTLS
    assert "mx.example.test is not among the MTA-STS policy's mx (mx9.example.test)" in (
        result.error or ""
    )
    assert "connecting to" not in text_of(result)


def test_enforce_never_sends_in_the_clear_to_an_mx_without_starttls(
    knot: DnsServer, ca_bundle: Path
) -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        refused = run(mx_probe(knot, ca_bundle, "clear", port, box=False))
        # The same listener without a policy in the way takes the message in the clear.
        opportunistic = run(mx_probe(knot, ca_bundle, "plain", port, box=False))

    assert refused.outcome is Outcome.SEND_FAILED
    assert refused.stage is Stage.STARTTLS
    assert "server does not offer STARTTLS" in (refused.error or "")
    assert (refused.error or "").startswith("MTA-STS enforce (clear.example.test")
    assert opportunistic.outcome is Outcome.SENT, opportunistic.error
    assert "no STARTTLS offered: continuing without TLS (opportunistic)" in text_of(opportunistic)
    assert len(handler.messages) == 1  # the opportunistic one only


def test_testing_mode_notes_the_violation_and_delivers(knot: DnsServer, ca_bundle: Path) -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        result = run(mx_probe(knot, ca_bundle, "testing", port, box=False))

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.mx_host == "plain.example.test"
    text = text_of(result)
    assert "MTA-STS: mode testing (id 20261207) applies" in text
    assert (
        "MX 10 plain.example.test: MTA-STS testing violation: plain.example.test is not among "
        "the MTA-STS policy's mx (other.example.test); delivering anyway"
    ) in text
    assert (
        "=== MX 10 plain.example.test: MTA-STS testing violation: server does not offer "
        "STARTTLS; once more without the policy"
    ) in text
    assert len(handler.messages) == 1


def test_testing_mode_delivers_despite_a_certificate_for_another_name(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    result = run(mx_probe(knot, ca_bundle, "testcert", stack.smtp_port, stack=stack))

    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.smtp.mx_host == "mx2.example.test"
    assert "MTA-STS testing violation: certificate verification failed" in text_of(result)


def test_a_policy_that_cannot_be_fetched_counts_as_none(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    result = run(mx_probe(knot, ca_bundle, "unfetched", stack.smtp_port, stack=stack))

    assert result.outcome is Outcome.DELIVERED, result.error
    text = text_of(result)
    assert "MTA-STS: policy not fetched (certificate of mta-sts.unfetched.example.test" in text
    assert "delivering as without a policy (RFC 8461 §5)" in text


def test_a_cached_enforce_policy_outlives_its_vanished_txt_record(
    knot: DnsServer, ca_bundle: Path
) -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        first = run(mx_probe(knot, ca_bundle, "clear", port, box=False))
        try:
            knot.remove("_mta-sts.clear", "TXT")
            time.sleep(1.1)  # past the TXT's 1 s TTL in our resolver's cache
            second = run(mx_probe(knot, ca_bundle, "clear", port, box=False))
        finally:
            knot.set_txt("_mta-sts.clear", "v=STSv1; id=20261207")

    assert first.stage is Stage.STARTTLS
    assert second.stage is Stage.STARTTLS
    assert "no record now, but a cached policy has not expired" in text_of(second)
    assert handler.messages == []


def test_check_smtp_mx_delivers_via_the_fallback_mx_and_says_which(
    stack: MailStack, knot: DnsServer, ca_bundle: Path
) -> None:
    proc = run_cli(
        "check",
        "--smtp-mx", f"fallback.example.test:{stack.smtp_port}",
        "--dns-server", knot.nameserver,
        "--from", SENDER, "--to", SINK,
        "--imap", f"{stack.host}:{stack.imaps_port}",
        "--ca-file", str(ca_bundle), "--timeout", "20s", "--format", "json",
        env={IMAP_PASSWORD_ENV: stack.users[SINK]},
    )  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["outcome"] == "delivered"
    assert result["smtp"]["mx_host"] == "mx.example.test"
    assert any(
        "MX 10 down.example.test [127.0.0.9]" in line and "trying the next" in line
        for line in result["transcript"]
    )


def test_check_smtp_mx_refuses_an_enforce_domain_without_starttls(
    knot: DnsServer, ca_bundle: Path
) -> None:
    handler = Behaviour()
    with smtpd(handler) as port:
        proc = run_cli(
            "check",
            "--smtp-mx", f"clear.example.test:{port}",
            "--dns-server", knot.nameserver,
            "--from", SENDER, "--to", SINK,
            "--ca-file", str(ca_bundle), "--timeout", "20s",
        )  # fmt: skip

    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("CRITICAL: send_failed at starttls")
    assert "MTA-STS enforce (clear.example.test, id 20261207)" in last
    assert handler.mail_from == []
