"""The DNS checks against real servers: Knot for every zone, stunnel + HTTP for MTA-STS policies.

One Knot serves ``example.test`` (each case its own subdomain, good or
broken) and the reverse zone ``0.0.127.in-addr.arpa``; it refuses every
other name, and every resolver here is pointed at it, so nothing leaves
loopback. Every check has a passing and a failing case, asserted on its
reason and evidence, not only on ``ok``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from smtp_probe.probe import mta_sts
from smtp_probe.probe.dns_checks import run_dns_checks
from smtp_probe.probe.resolver import Resolver
from smtp_probe.probe.result import DnsCheckResult, DnsReport
from smtp_probe.probe.spec import (
    DnsCheck,
    DnsChecks,
    DnsSettings,
    ProbeSpec,
    SmtpServer,
    TlsSettings,
)
from tests.support.dns_server import DnsServer, txt_rdata
from tests.support.policy_https import Page, PolicyWebServer

pytestmark = pytest.mark.e2e

GOOD = "good.example.test"
LISTED_IP = "127.0.0.2"
"""In the DNSBL zone; its PTR names a host that does not exist."""
REFUSED_IP = "127.0.0.3"
"""The DNSBL answers 127.255.255.254 for it (query refused); it has no PTR."""
STS_DOMAINS = ("good", "testing", "stsmismatch", "nosts")
ENFORCE = (
    "version: STSv1\nmode: enforce\nmx: mx1.good.example.test\nmx: *.mx.good.example.test\n"
    "max_age: 86400\n"
)


def _records(web: PolicyWebServer) -> list[tuple[str, str, str]]:
    txt = txt_rdata
    records: list[tuple[str, str, str]] = [
        # the sending host: PTR 127.0.0.1 -> mail.example.test -> 127.0.0.1
        ("mail", "A", "127.0.0.1"),
        # good: two MX that resolve, SPF via mx + include, DMARC reject, TLS-RPT, MTA-STS
        ("good", "MX", "10 mx1.good.example.test."),
        ("good", "MX", "20 b.mx.good.example.test."),
        ("mx1.good", "A", "127.0.0.1"),
        ("b.mx.good", "AAAA", "::1"),
        ("good", "TXT", txt("v=spf1 mx include:_spf.good.example.test -all")),
        ("good", "TXT", txt("google-site-verification=not-spf")),
        ("_spf.good", "TXT", txt("v=spf1 ip4:127.0.0.0/29 -all")),
        ("_dmarc.good", "TXT", txt("v=DMARC1; p=reject; rua=mailto:dmarc@good.example.test")),
        ("_smtp._tls.good", "TXT", txt("v=TLSRPTv1; rua=mailto:tls@good.example.test")),
        # MX broken three ways
        ("nomx", "A", "127.0.0.1"),
        ("nullmx", "MX", "0 ."),
        ("deadmx", "MX", "10 mx1.deadmx.example.test."),
        ("deadmx", "MX", "20 gone.deadmx.example.test."),
        ("mx1.deadmx", "A", "127.0.0.1"),
        # SPF broken four ways
        ("spfnotauth", "TXT", txt("v=spf1 ip4:127.0.0.9 -all")),
        ("spftwo", "TXT", txt("v=spf1 ip4:127.0.0.1 -all")),
        ("spftwo", "TXT", txt("v=spf1 mx -all")),
        ("nospf", "TXT", txt("v=DKIM1; k=rsa; p=")),
        # 11 DNS-querying terms: 127.0.0.1 passes at the first, an IP matched by none
        # walks all 11: permerror
        (
            "spf11",
            "TXT",
            txt(
                "v=spf1 "
                + " ".join(f"include:i{n}.spf11.example.test" for n in range(1, 11))
                + " a:mail.example.test -all"
            ),
        ),
        # DMARC too weak, DMARC missing (only a stray record), DMARC broken
        ("_dmarc.dmarcnone", "TXT", txt("v=DMARC1; p=none")),
        ("_dmarc.nodmarc", "TXT", txt("some other text")),
        ("_dmarc.dmarcbad", "TXT", txt("v=DMARC1; p=discard")),
        # TLS-RPT: missing (only an unrelated TXT), and without rua
        ("_smtp._tls.notlsrpt", "TXT", txt("v=spf1 -all")),
        ("_smtp._tls.tlsrptnorua", "TXT", txt("v=TLSRPTv1;")),
        # DNSBL: 127.0.0.2 listed, 127.0.0.3 refused (Spamhaus-style error code)
        ("2.0.0.127.dnsbl", "A", "127.0.0.2"),
        ("2.0.0.127.dnsbl", "TXT", txt("listed for testing: see dnsbl.example.test")),
        ("3.0.0.127.dnsbl", "A", "127.255.255.254"),
        # MTA-STS: an enforce policy matching good's MX; testing; patterns not matching the MX
        ("testing", "MX", "10 mx1.good.example.test."),
        ("stsmismatch", "MX", "10 mx1.good.example.test."),
        ("stsmismatch", "MX", "20 mx1.deadmx.example.test."),
        ("nosts", "MX", "10 mx1.good.example.test."),
    ]
    records.append(("i1.spf11", "TXT", txt("v=spf1 ip4:127.0.0.1 -all")))
    records += [(f"i{n}.spf11", "TXT", txt("v=spf1 -all")) for n in range(2, 11)]
    for name in STS_DOMAINS:
        records.append((f"mta-sts.{name}", "A", web.good))
        if name != "nosts":
            records.append((f"_mta-sts.{name}", "TXT", txt("v=STSv1; id=20261207")))
    return records


REVERSE = [
    ("1", "PTR", "mail.example.test."),
    ("2", "PTR", "ghost.example.test."),
]


@pytest.fixture(scope="module")
def web() -> Iterator[PolicyWebServer]:
    server = PolicyWebServer([f"mta-sts.{name}.example.test" for name in STS_DOMAINS])
    server.serve("mta-sts.good.example.test", Page(body=ENFORCE))
    server.serve(
        "mta-sts.testing.example.test",
        Page(body="version: STSv1\nmode: testing\nmx: mx1.good.example.test\nmax_age: 600\n"),
    )
    server.serve(
        "mta-sts.stsmismatch.example.test",
        Page(
            body="version: STSv1\nmode: enforce\nmx: mx1.good.example.test\n"
            "mx: other.example.test\nmax_age: 600\n"
        ),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def knot(web: PolicyWebServer) -> Iterator[DnsServer]:
    with DnsServer(
        "example.test", _records(web), extra_zones={"0.0.127.in-addr.arpa": REVERSE}
    ) as server:
        yield server


@pytest.fixture
def settings(knot: DnsServer) -> DnsSettings:
    mta_sts.clear_cache()
    return DnsSettings(nameservers=(knot.address,), timeout=3.0)


def run(
    settings: DnsSettings,
    check: DnsCheck,
    *,
    recipient: str = GOOD,
    sender: str = GOOD,
    server: SmtpServer | None = None,
    deadline: float = 20.0,
    resolver: Resolver | None = None,
    **options: object,
) -> tuple[DnsCheckResult, DnsReport]:
    """One check through a fresh resolver for the test Knot; (its result, the report)."""
    spec = ProbeSpec(
        name="dns",
        smtp=server or SmtpServer("127.0.0.1", 25),
        mail_from=f"probe@{sender}",
        rcpt_to=f"probe@{recipient}",
        dns=settings,
        dns_checks=DnsChecks(
            checks=(check,),
            recipient_domain=recipient,
            sender_domain=sender,
            **options,  # type: ignore[arg-type]
        ),
    )
    report = asyncio.run(
        run_dns_checks(
            spec, deadline=time.monotonic() + deadline, resolver=resolver or Resolver(settings)
        )
    )
    assert [r.check for r in report.results] == [check.value]
    return report.results[0], report


def evidence(result: DnsCheckResult) -> str:
    return "\n".join(result.evidence)


# ------------------------------------------------------------------ mx


def test_mx_passes_when_every_mx_host_resolves(settings: DnsSettings) -> None:
    result, report = run(settings, DnsCheck.MX)
    assert (result.ok, result.reason) == (True, "2 MX, all resolve")
    assert (
        "good.example.test MX: 10 mx1.good.example.test.; 20 b.mx.good.example.test."
        in evidence(result)
    )
    assert "b.mx.good.example.test AAAA: ::1" in evidence(result)
    assert report.success
    assert any("dns check mx: ok: 2 MX, all resolve" in line for line in report.transcript.render())


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("nomx.example.test", "nomx.example.test has no MX record"),
        ("absent.example.test", "absent.example.test does not exist"),
        (
            "nullmx.example.test",
            "nullmx.example.test publishes a null MX (0 .): it accepts no mail",
        ),
        ("deadmx.example.test", "MX host gone.deadmx.example.test does not resolve (no A/AAAA)"),
    ],
)
def test_mx_fails_without_usable_mx(settings: DnsSettings, domain: str, reason: str) -> None:
    result, report = run(settings, DnsCheck.MX, recipient=domain)
    assert (result.ok, result.reason) == (False, reason)
    assert not report.success


def test_mx_matches_the_expected_hosts_ignoring_case_and_trailing_dot(
    settings: DnsSettings,
) -> None:
    result, _ = run(
        settings, DnsCheck.MX, mx_hosts=("B.MX.good.example.test.", "mx1.good.example.test")
    )
    assert (result.ok, result.reason) == (True, "2 MX, all resolve, as expected")


def test_mx_fails_when_the_hosts_differ_from_the_expected(settings: DnsSettings) -> None:
    result, _ = run(
        settings, DnsCheck.MX, mx_hosts=("mx1.good.example.test", "mx9.good.example.test")
    )
    assert not result.ok
    assert result.reason == (
        "MX hosts differ from the expected: missing mx9.good.example.test; "
        "unexpected b.mx.good.example.test"
    )


# ------------------------------------------------------------------ spf


def test_spf_passes_for_an_authorised_ip_and_counts_lookups(settings: DnsSettings) -> None:
    result, _ = run(settings, DnsCheck.SPF, sending_ips=("127.0.0.1", "127.0.0.2"))
    assert result.ok, result
    # worst case: mx (1) + include (1) = 2 DNS-querying terms
    assert result.reason == "127.0.0.1 pass, 127.0.0.2 pass (2 of 10 DNS lookups)"
    text = evidence(result)
    assert "good.example.test TXT: " in text
    assert "_spf.good.example.test TXT: v=spf1 ip4:127.0.0.0/29 -all" in text
    assert "spf 127.0.0.1: pass" in text


def test_spf_takes_the_sending_ip_from_the_smtp_server_name(settings: DnsSettings) -> None:
    result, _ = run(settings, DnsCheck.SPF, server=SmtpServer("mail.example.test", 587))
    assert result.ok, result
    assert "sending IPs (SMTP server mail.example.test:587): 127.0.0.1" in evidence(result)


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("spfnotauth.example.test", "not authorised: 127.0.0.1 fail"),
        ("spftwo.example.test", "spftwo.example.test has 2 SPF records (permerror: one allowed)"),
        ("nospf.example.test", "nospf.example.test has no SPF (v=spf1) record"),
        ("spf11.example.test", "permerror: Too many DNS lookups"),
    ],
)
def test_spf_fails(settings: DnsSettings, domain: str, reason: str) -> None:
    result, _ = run(settings, DnsCheck.SPF, sender=domain, sending_ips=("127.0.0.1",))
    assert (result.ok, result.reason) == (False, reason)


def test_spf_with_eleven_lookups_fails_even_where_the_ip_matches_early(
    settings: DnsSettings,
) -> None:
    # 127.0.0.1 is authorised by the first include, so its own evaluation
    # stops after one lookup; the worst-case walk finds the 11 terms
    result, _ = run(settings, DnsCheck.SPF, sender="spf11.example.test", sending_ips=("127.0.0.1",))
    assert (result.ok, result.reason) == (False, "permerror: Too many DNS lookups")
    text = evidence(result)
    assert "spf 127.0.0.1: pass (1 DNS lookups)" in text
    assert "spf every term (worst case): permerror (11 DNS lookups)" in text
    assert "i10.spf11.example.test TXT: v=spf1 -all" in text


# ------------------------------------------------------------------ dmarc


def test_dmarc_passes_when_the_policy_is_at_least_the_expected(settings: DnsSettings) -> None:
    result, _ = run(settings, DnsCheck.DMARC, dmarc_policy="quarantine")
    assert (result.ok, result.reason, result.policy) == (
        True,
        "p=reject (at least quarantine)",
        "reject",
    )
    assert "_dmarc.good.example.test TXT: v=DMARC1; p=reject;" in evidence(result)


@pytest.mark.parametrize(
    ("domain", "reason", "policy"),
    [
        ("dmarcnone.example.test", "p=none is weaker than the expected quarantine", "none"),
        ("nodmarc.example.test", "no DMARC record at _dmarc.nodmarc.example.test", None),
        ("absent.example.test", "no DMARC record at _dmarc.absent.example.test", None),
        (
            "dmarcbad.example.test",
            "DMARC record at _dmarc.dmarcbad.example.test p=discard is not one of none, quarantine, reject",
            None,
        ),
    ],
)
def test_dmarc_fails(settings: DnsSettings, domain: str, reason: str, policy: str | None) -> None:
    result, _ = run(settings, DnsCheck.DMARC, sender=domain, dmarc_policy="quarantine")
    assert (result.ok, result.reason, result.policy) == (False, reason, policy)


# ------------------------------------------------------------------ tls_rpt


def test_tls_rpt_passes_with_a_report_address(settings: DnsSettings) -> None:
    result, _ = run(settings, DnsCheck.TLS_RPT)
    assert (result.ok, result.reason) == (True, "reports to mailto:tls@good.example.test")


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("notlsrpt.example.test", "no TLS-RPT record at _smtp._tls.notlsrpt.example.test"),
        ("absent.example.test", "no TLS-RPT record at _smtp._tls.absent.example.test"),
        (
            "tlsrptnorua.example.test",
            "TLS-RPT record at _smtp._tls.tlsrptnorua.example.test has no rua= tag",
        ),
    ],
)
def test_tls_rpt_fails(settings: DnsSettings, domain: str, reason: str) -> None:
    result, _ = run(settings, DnsCheck.TLS_RPT, recipient=domain)
    assert (result.ok, result.reason) == (False, reason)


# ------------------------------------------------------------------ dnsbl


def test_dnsbl_passes_for_an_ip_listed_nowhere(settings: DnsSettings) -> None:
    result, _ = run(
        settings, DnsCheck.DNSBL, sending_ips=("127.0.0.1",), dnsbl_zones=("dnsbl.example.test",)
    )
    assert (result.ok, result.listed) == (True, (("dnsbl.example.test", False),))
    assert "1.0.0.127.dnsbl.example.test A: nxdomain" in evidence(result)


def test_dnsbl_fails_for_a_listed_ip_with_the_lists_reason(settings: DnsSettings) -> None:
    result, _ = run(
        settings,
        DnsCheck.DNSBL,
        sending_ips=("127.0.0.1", LISTED_IP),
        dnsbl_zones=("dnsbl.example.test",),
    )
    assert (result.ok, result.reason) == (False, "listed: 127.0.0.2 in dnsbl.example.test")
    assert result.listed == (("dnsbl.example.test", True),)
    assert (
        "127.0.0.2 listed in dnsbl.example.test: listed for testing: see dnsbl.example.test"
        in evidence(result)
    )


def test_dnsbl_error_codes_are_a_failure_to_check_not_a_listing(settings: DnsSettings) -> None:
    result, _ = run(
        settings, DnsCheck.DNSBL, sending_ips=(REFUSED_IP,), dnsbl_zones=("dnsbl.example.test",)
    )
    assert not result.ok
    assert result.listed == (("dnsbl.example.test", False),)
    assert result.reason == (
        "could not check: dnsbl.example.test refused the query for 127.0.0.3 (127.255.255.254)"
    )


def test_dnsbl_a_refused_zone_is_a_failure_to_check(settings: DnsSettings) -> None:
    # Knot is not authoritative for this zone and answers REFUSED
    result, _ = run(
        settings, DnsCheck.DNSBL, sending_ips=("127.0.0.1",), dnsbl_zones=("bl.elsewhere.test",)
    )
    assert not result.ok
    assert result.reason.startswith("could not check: bl.elsewhere.test: ")
    assert "REFUSED" in result.reason


# ------------------------------------------------------------------ fcrdns


def test_fcrdns_passes_when_the_ptr_name_resolves_back(settings: DnsSettings) -> None:
    result, _ = run(settings, DnsCheck.FCRDNS, server=SmtpServer("mail.example.test", 25))
    assert (result.ok, result.reason) == (True, "127.0.0.1 -> mail.example.test -> 127.0.0.1")
    assert "1.0.0.127.in-addr.arpa PTR: mail.example.test." in evidence(result)


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        (LISTED_IP, "127.0.0.2 -> ghost.example.test, which does not resolve back to 127.0.0.2"),
        (REFUSED_IP, "127.0.0.3 has no PTR record"),
    ],
)
def test_fcrdns_fails(settings: DnsSettings, ip: str, reason: str) -> None:
    result, _ = run(settings, DnsCheck.FCRDNS, sending_ips=(ip,))
    assert (result.ok, result.reason) == (False, reason)


def test_sending_ips_of_an_mx_server_are_its_mx_hosts_addresses(settings: DnsSettings) -> None:
    result, _ = run(settings, DnsCheck.FCRDNS, server=SmtpServer(GOOD, 25, mx=True))
    # mx1 -> 127.0.0.1 (confirmed), b.mx -> ::1 (no PTR in our zones: REFUSED)
    assert "sending IPs (SMTP server MX good.example.test): 127.0.0.1, ::1" in evidence(result)
    assert not result.ok
    # only the failure is the reason: ::1's reverse zone is not served, Knot refuses
    assert result.reason == "::1: 1." + "0." * 31 + "ip6.arpa PTR: REFUSED"
    assert "1.0.0.127.in-addr.arpa PTR: mail.example.test." in evidence(result)
    assert "mail.example.test A: 127.0.0.1" in evidence(result)


@pytest.mark.parametrize("check", [DnsCheck.SPF, DnsCheck.DNSBL, DnsCheck.FCRDNS])
def test_a_configured_sending_ip_that_is_no_ip_fails_the_checks_needing_it(
    settings: DnsSettings, check: DnsCheck
) -> None:
    result, _ = run(
        settings,
        check,
        sending_ips=("127.0.0.1", "mail.example.test"),
        dnsbl_zones=("dnsbl.example.test",),
    )
    assert (result.ok, result.reason) == (
        False,
        "sending IP mail.example.test is not an IP address",
    )


# ------------------------------------------------------------------ mta_sts


def test_mta_sts_passes_for_an_enforce_policy_matching_every_mx(
    settings: DnsSettings, web: PolicyWebServer
) -> None:
    result, _ = run(settings, DnsCheck.MTA_STS, tls_settings=TlsSettings(ca_file=web.ca_file))
    assert (result.ok, result.reason, result.policy) == (
        True,
        "mode enforce, 2 MX all match the policy",
        "enforce",
    )
    assert "_mta-sts.good.example.test TXT: v=STSv1; id=20261207" in evidence(result)


@pytest.mark.parametrize(
    ("domain", "reason", "policy"),
    [
        ("testing.example.test", "mode testing is weaker than the expected enforce", "testing"),
        (
            "stsmismatch.example.test",
            "MX mx1.deadmx.example.test not in the policy; pattern other.example.test matches no MX",
            "enforce",
        ),
        (
            "nosts.example.test",
            "nosts.example.test publishes no MTA-STS policy (no valid _mta-sts TXT record)",
            None,
        ),
    ],
)
def test_mta_sts_fails(
    settings: DnsSettings, web: PolicyWebServer, domain: str, reason: str, policy: str | None
) -> None:
    result, _ = run(
        settings,
        DnsCheck.MTA_STS,
        recipient=domain,
        tls_settings=TlsSettings(ca_file=web.ca_file),
    )
    assert (result.ok, result.reason, result.policy) == (False, reason, policy)


def test_mta_sts_testing_is_enough_when_testing_is_expected(
    settings: DnsSettings, web: PolicyWebServer
) -> None:
    result, _ = run(
        settings,
        DnsCheck.MTA_STS,
        recipient="testing.example.test",
        mta_sts_mode="testing",
        tls_settings=TlsSettings(ca_file=web.ca_file),
    )
    assert (result.ok, result.policy) == (True, "testing")


def test_mta_sts_fails_when_the_certificate_is_not_trusted(settings: DnsSettings) -> None:
    # no ca_file: the system store does not know the test CA
    result, _ = run(settings, DnsCheck.MTA_STS)
    assert not result.ok
    assert "certificate of mta-sts.good.example.test not verified" in result.reason


# ------------------------------------------------------------------ all together


def test_all_checks_run_together_in_order_with_evidence_in_the_transcript(
    settings: DnsSettings, web: PolicyWebServer
) -> None:
    spec = ProbeSpec(
        name="dns-all",
        smtp=SmtpServer("mail.example.test", 587),
        mail_from=f"probe@{GOOD}",
        rcpt_to=f"probe@{GOOD}",
        dns=settings,
        dns_checks=DnsChecks(
            checks=tuple(DnsCheck),
            recipient_domain=GOOD,
            sender_domain=GOOD,
            dmarc_policy="reject",
            dnsbl_zones=("dnsbl.example.test",),
            tls_settings=TlsSettings(ca_file=web.ca_file),
        ),
    )
    report = asyncio.run(
        run_dns_checks(spec, deadline=time.monotonic() + 20, resolver=Resolver(settings))
    )
    assert [(r.check, r.ok) for r in report.results] == [(c.value, True) for c in DnsCheck]
    assert report.success
    assert report.probe == "dns-all"
    text = "\n".join(report.transcript.render())
    for check in DnsCheck:
        assert f"dns check {check.value}: ok:" in text
    assert "1.0.0.127.in-addr.arpa PTR: mail.example.test." in text
    assert all(r.seconds > 0 for r in report.results)


def test_a_passed_deadline_fails_every_check_without_raising(settings: DnsSettings) -> None:
    spec = ProbeSpec(
        name="late",
        smtp=SmtpServer("mail.example.test", 587),
        mail_from=f"probe@{GOOD}",
        rcpt_to=f"probe@{GOOD}",
        dns=settings,
        dns_checks=DnsChecks(
            checks=tuple(DnsCheck),
            recipient_domain=GOOD,
            sender_domain=GOOD,
            dnsbl_zones=("dnsbl.example.test",),
        ),
    )
    began = time.monotonic()
    report = asyncio.run(run_dns_checks(spec, deadline=began - 1, resolver=Resolver(settings)))
    assert time.monotonic() - began < 5
    assert len(report.results) == len(DnsCheck)
    assert not any(r.ok for r in report.results)
    assert not report.success


# ------------------------------------------------------------------ the resolver's TTL cache


def test_a_changed_record_is_seen_once_its_ttl_has_run_out(knot: DnsServer) -> None:
    resolver = Resolver(DnsSettings(nameservers=(knot.address,), timeout=3.0))
    ttl = 4

    async def txt() -> tuple[str, ...]:
        answer = await resolver.lookup("ttl.example.test", "TXT", deadline=time.monotonic() + 5)
        return answer.records

    knot.set_txt("ttl", "v=first", ttl=ttl)
    try:
        first_asked = time.monotonic()
        assert asyncio.run(txt()) == ("v=first",)
        knot.set_txt("ttl", "v=second", ttl=ttl)
        # Knot has the new record now (asked directly, past our cache) ...
        assert asyncio.run(
            Resolver(resolver.settings).lookup(
                "ttl.example.test", "TXT", deadline=time.monotonic() + 5
            )
        ).records == ("v=second",)
        # ... but within the TTL our resolver answers from its cache
        assert asyncio.run(txt()) == ("v=first",)
        time.sleep(max(0.0, first_asked + ttl + 0.2 - time.monotonic()))
        assert asyncio.run(txt()) == ("v=second",)
    finally:
        knot.remove("ttl", "TXT")
