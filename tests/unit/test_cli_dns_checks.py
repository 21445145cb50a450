"""check's DNS check flags: what they build, and each mistake exiting 3 naming its flag.

--dns-checks[=LIST], --sending-ip, --dnsbl-zone, --dmarc-policy, --mta-sts-mode, --mx-host.

The checks running for real (against Knot) are in tests/e2e/test_dns_checks_wiring.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pytest
import trustme

from smtp_probe.check import dns_checks_from_args, probe_from_args
from smtp_probe.cli import build_parser
from smtp_probe.probe.spec import DnsCheck, DnsChecks, DnsSettings, ProbeSpec, TlsSettings
from tests.unit.test_cli import ADDRESSES, SMTP, assert_usage_error, run_main

# ADDRESSES are probe@sender.example -> sink@rcpt.example
DEFAULTS = (
    DnsCheck.MX,
    DnsCheck.SPF,
    DnsCheck.DMARC,
    DnsCheck.MTA_STS,
    DnsCheck.TLS_RPT,
    DnsCheck.FCRDNS,
)


def _namespace(args: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(["check", *SMTP, *ADDRESSES, *args])


def checks_of(args: Sequence[str], spec: ProbeSpec | None = None) -> DnsChecks | None:
    namespace = _namespace(args)
    if spec is None:
        return dns_checks_from_args(namespace, probe_from_args(namespace, {}), from_config=False)
    return dns_checks_from_args(namespace, spec, from_config=True)


def test_without_dns_checks_none_run() -> None:
    assert checks_of([]) is None


def test_bare_dns_checks_runs_every_check_but_dnsbl_for_the_to_and_from_domains() -> None:
    assert checks_of(["--dns-checks"]) == DnsChecks(
        checks=DEFAULTS, recipient_domain="rcpt.example", sender_domain="sender.example"
    )


def test_a_dnsbl_zone_adds_dnsbl_to_the_default_checks() -> None:
    checks = checks_of(["--dns-checks", "--dnsbl-zone", "bl.example.", "--dnsbl-zone", "b2.test"])
    assert checks is not None
    assert checks.checks == (*DEFAULTS[:5], DnsCheck.DNSBL, DnsCheck.FCRDNS)
    assert checks.dnsbl_zones == ("bl.example", "b2.test")


def test_a_list_and_every_option_reach_the_checks(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    checks = checks_of(
        [
            "--dns-checks=spf,mx,dmarc,mta_sts,dnsbl", "--sending-ip", "203.0.113.7",
            "--sending-ip", "2001:db8::7", "--mx-host", "MX1.rcpt.example", "--dmarc-policy",
            "reject", "--mta-sts-mode", "testing", "--dnsbl-zone", "bl.example",
            "--ca-file", str(ca),
        ]
    )  # fmt: skip
    assert checks == DnsChecks(
        checks=(DnsCheck.MX, DnsCheck.SPF, DnsCheck.DMARC, DnsCheck.MTA_STS, DnsCheck.DNSBL),
        recipient_domain="rcpt.example",
        sender_domain="sender.example",
        sending_ips=("203.0.113.7", "2001:db8::7"),
        mx_hosts=("mx1.rcpt.example",),
        dmarc_policy="reject",
        mta_sts_mode="testing",
        dnsbl_zones=("bl.example",),
        tls_settings=TlsSettings(ca_file=ca),
    )


def test_dns_server_is_allowed_with_dns_checks_alone() -> None:
    namespace = _namespace(["--dns-checks=mx", "--dns-server", "127.0.0.1:5353"])
    assert probe_from_args(namespace, {}).dns == DnsSettings((("127.0.0.1", 5353),))


def test_a_config_probes_own_checks_run_with_the_flags_replacing_its_options() -> None:
    spec = ProbeSpec(
        name="p",
        smtp=probe_from_args(_namespace([]), {}).smtp,
        mail_from="a@from.example",
        rcpt_to="b@to.example",
        dns_checks=DnsChecks(
            checks=(DnsCheck.DMARC, DnsCheck.DNSBL),
            recipient_domain="to.example",
            sender_domain="from.example",
            interval=60.0,
            dmarc_policy="reject",
            dnsbl_zones=("own.example",),
        ),
    )
    own = checks_of(["--dns-checks", "--dmarc-policy", "none"], spec)
    assert own is not None
    assert own.checks == (DnsCheck.DMARC, DnsCheck.DNSBL)
    assert (own.dmarc_policy, own.dnsbl_zones, own.interval) == ("none", ("own.example",), 60.0)
    listed = checks_of(["--dns-checks=dmarc"], spec)
    assert listed is not None
    assert listed.checks == (DnsCheck.DMARC,)
    assert listed.dmarc_policy == "reject"


@pytest.mark.parametrize(
    ("extra", "flag", "says"),
    [
        (["--dns-checks=mx,sfp"], "--dns-checks", "did you mean 'spf'"),
        (["--dns-checks=mx,mx"], "--dns-checks", "mx is listed twice"),
        (["--dns-checks="], "--dns-checks", "name at least one check"),
        (["--dns-checks=dnsbl"], "--dns-checks", "dnsbl needs --dnsbl-zone"),
        (["--sending-ip", "10.0.0"], "--sending-ip", "expected an IP address"),
        (["--sending-ip", "127.0.0.1"], "--sending-ip", "needs --dns-checks"),
        (["--dnsbl-zone", "127.0.0.2", "--dns-checks"], "--dnsbl-zone", "not an IP address"),
        (["--dnsbl-zone", "bl.example"], "--dnsbl-zone", "needs --dns-checks"),
        (["--dns-checks=spf", "--dnsbl-zone", "bl.example"], "--dnsbl-zone", "dnsbl is not"),
        (["--dns-checks", "--dmarc-policy", "strict"], "--dmarc-policy", "expected one of"),
        (["--dns-checks=mx", "--dmarc-policy", "reject"], "--dmarc-policy", "dmarc is not"),
        (["--dns-checks", "--mta-sts-mode", "enforcing"], "--mta-sts-mode", "'enforce'"),
        (["--dns-checks=spf", "--mta-sts-mode", "enforce"], "--mta-sts-mode", "mta_sts is not"),
        (["--dns-checks=spf", "--mx-host", "mx.example"], "--mx-host", "mx is not"),
        (["--mx-host", "a b"], "--mx-host", "expected a DNS name"),
        (["--dns-checks", "--ca-file", "/nonexistent/ca.pem"], "--ca-file", "does not exist"),
    ],
)
def test_a_bad_dns_flag_exits_3_naming_it(
    extra: list[str], flag: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([*SMTP, *ADDRESSES, *extra], capsys)
    assert_usage_error(code, err, flag)
    assert says in err
