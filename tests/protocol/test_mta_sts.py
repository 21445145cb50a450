"""MTA-STS discovery against real servers: the tests' Knot for the TXT and host records, stunnel + HTTP for the policy.

Each case has its own domain under ``example.test`` so the policy cache of
one case never answers for another.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtp_probe.probe import mta_sts
from smtp_probe.probe.mta_sts import MtaStsError, MtaStsPolicy
from smtp_probe.probe.resolver import Resolver
from smtp_probe.probe.spec import DnsSettings, TlsSettings
from tests.support.dns_server import DnsServer, txt_rdata
from tests.support.policy_https import Page, PolicyWebServer, free_loopback_443
from tests.support.prom import free_port

DOMAINS = (
    "big",
    "refused",
    "noaddr",
    "noid",
    "other",
    "silent",
    "good",
    "testing",
    "wrongname",
    "untrusted",
    "notfound",
    "redirect",
    "nosts",
    "two",
    "html",
)
ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.backup.example.test\r\nmax_age: 86400\r\n"
TESTING = "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 600\n"


@pytest.fixture(scope="module")
def web() -> Iterator[PolicyWebServer]:
    server = PolicyWebServer([f"mta-sts.{name}.example.test" for name in DOMAINS])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    """A loopback address whose port 443 takes the TCP connection and never says a word."""
    address = free_loopback_443()
    with socket.create_server((address, 443), backlog=8):
        yield address


@pytest.fixture(scope="module")
def knot(web: PolicyWebServer, silent: str) -> Iterator[DnsServer]:
    front = {
        "wrongname": web.wrong_name,
        "untrusted": web.untrusted,
        "refused": "127.0.0.9",
        "silent": silent,
    }
    txt = {"noid": "v=STSv1;", "other": "v=spf1 -all"}
    records: list[tuple[str, str, str]] = []
    for name in DOMAINS:
        if name != "noaddr":
            records.append((f"mta-sts.{name}", "A", front.get(name, web.good)))
        if name != "nosts":
            record = txt.get(name, "v=STSv1; id=20261207")
            records.append((f"_mta-sts.{name}", "TXT", txt_rdata(record)))
    records.append(("_mta-sts.two", "TXT", txt_rdata("v=STSv1; id=second")))
    with DnsServer("example.test", records) as server:
        yield server


@pytest.fixture
def resolver(knot: DnsServer) -> Resolver:
    mta_sts.clear_cache()
    return Resolver(DnsSettings(nameservers=(knot.address,), timeout=3.0))


def discover(
    web: PolicyWebServer,
    resolver: Resolver,
    name: str,
    evidence: list[str] | None = None,
    *,
    seconds: float = 10.0,
    ca_file: Path | None = None,
) -> MtaStsPolicy | None:
    return asyncio.run(
        mta_sts.discover(
            f"{name}.example.test",
            resolver,
            tls_settings=TlsSettings(ca_file=ca_file or web.ca_file),
            deadline=time.monotonic() + seconds,
            evidence=evidence,
        )
    )


def test_an_enforce_policy_is_fetched_over_verified_https_and_parsed(
    web: PolicyWebServer, resolver: Resolver
) -> None:
    web.serve("mta-sts.good.example.test", Page(body=ENFORCE))
    evidence: list[str] = []
    policy = discover(web, resolver, "good", evidence)
    assert policy == MtaStsPolicy(
        "good.example.test",
        "20261207",
        "enforce",
        ("mx.example.test", "*.backup.example.test"),
        86400,
    )
    assert policy.matches("MX.example.test.")
    assert policy.matches("a.backup.example.test")
    assert not policy.matches("other.example.test")
    text = "\n".join(evidence)
    assert "_mta-sts.good.example.test TXT: v=STSv1; id=20261207" in text
    assert f"[{web.good}]:443: HTTP 200 OK, text/plain" in text
    assert ("mta-sts.good.example.test", "/.well-known/mta-sts.txt") in web.backend.requests


def test_a_testing_policy_is_reported_as_testing(web: PolicyWebServer, resolver: Resolver) -> None:
    web.serve("mta-sts.testing.example.test", Page(body=TESTING))
    policy = discover(web, resolver, "testing")
    assert policy is not None
    assert (policy.mode, policy.mx, policy.max_age) == ("testing", ("mx.example.test",), 600)


def test_the_policy_is_cached_while_the_id_is_unchanged_and_fetched_again_when_it_changes(
    web: PolicyWebServer, resolver: Resolver, knot: DnsServer
) -> None:
    web.serve("mta-sts.good.example.test", Page(body=ENFORCE))
    assert discover(web, resolver, "good") is not None
    web.serve("mta-sts.good.example.test", Page(body=TESTING))
    evidence: list[str] = []
    cached = discover(web, resolver, "good", evidence)
    assert cached is not None
    assert cached.mode == "enforce"
    assert "policy id 20261207 unchanged: cached policy used" in evidence
    try:
        knot.set_txt("_mta-sts.good", "v=STSv1; id=changed")
        time.sleep(1.1)  # the resolver keeps the old TXT for its 1 s TTL
        fresh = discover(web, resolver, "good")
        assert fresh is not None
        assert (fresh.mode, fresh.policy_id) == ("testing", "changed")
    finally:
        knot.set_txt("_mta-sts.good", "v=STSv1; id=20261207")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "wrongname",
            "certificate of mta-sts.wrongname.example.test not verified: Hostname mismatch",
        ),
        (
            "untrusted",
            "certificate of mta-sts.untrusted.example.test not verified: unable to get local issuer",
        ),
    ],
)
def test_a_policy_host_with_a_bad_certificate_is_not_believed(
    web: PolicyWebServer, resolver: Resolver, name: str, reason: str
) -> None:
    web.serve(f"mta-sts.{name}.example.test", Page(body=ENFORCE))
    with pytest.raises(MtaStsError) as caught:
        discover(web, resolver, name)
    assert reason in caught.value.reason
    assert (f"mta-sts.{name}.example.test", "/.well-known/mta-sts.txt") not in web.backend.requests


def test_a_404_is_an_error_naming_the_status(web: PolicyWebServer, resolver: Resolver) -> None:
    with pytest.raises(
        MtaStsError, match=r"mta-sts\.notfound.example.test/.well-known/mta-sts.txt: HTTP 404"
    ):
        discover(web, resolver, "notfound")


def test_a_redirect_is_not_followed(web: PolicyWebServer, resolver: Resolver) -> None:
    web.serve(
        "mta-sts.redirect.example.test",
        Page(301, "moved\n", location="https://mta-sts.good.example.test/.well-known/mta-sts.txt"),
    )
    with pytest.raises(
        MtaStsError, match=r"HTTP 301 redirect to https://mta-sts\.good.example.test/"
    ):
        discover(web, resolver, "redirect")


def test_a_policy_that_is_not_text_plain_is_refused(
    web: PolicyWebServer, resolver: Resolver
) -> None:
    web.serve("mta-sts.html.example.test", Page(body=ENFORCE, content_type="text/html"))
    with pytest.raises(MtaStsError, match="Content-Type 'text/html', not text/plain"):
        discover(web, resolver, "html")


def test_no_txt_record_means_no_policy(web: PolicyWebServer, resolver: Resolver) -> None:
    web.serve("mta-sts.nosts.example.test", Page(body=ENFORCE))
    evidence: list[str] = []
    assert discover(web, resolver, "nosts", evidence) is None
    assert evidence == ["_mta-sts.nosts.example.test TXT: nxdomain"]


def test_two_sts_records_mean_no_policy(web: PolicyWebServer, resolver: Resolver) -> None:
    web.serve("mta-sts.two.example.test", Page(body=ENFORCE))
    evidence: list[str] = []
    assert discover(web, resolver, "two", evidence) is None
    assert "2 v=STSv1 records: no MTA-STS policy" in "\n".join(evidence)


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("noid", "_mta-sts.noid.example.test: no valid id= in the record: no MTA-STS policy"),
        ("other", "_mta-sts.other.example.test: no record starts with v=STSv1: no MTA-STS policy"),
    ],
)
def test_a_record_without_id_or_version_means_no_policy(
    web: PolicyWebServer, resolver: Resolver, name: str, note: str
) -> None:
    web.serve(f"mta-sts.{name}.example.test", Page(body=ENFORCE))
    evidence: list[str] = []
    assert discover(web, resolver, name, evidence) is None
    assert any(line.startswith(note) for line in evidence), evidence
    assert (f"mta-sts.{name}.example.test", "/.well-known/mta-sts.txt") not in web.backend.requests


def test_a_policy_host_without_an_address_is_an_error(
    web: PolicyWebServer, resolver: Resolver
) -> None:
    with pytest.raises(MtaStsError) as caught:
        discover(web, resolver, "noaddr")
    assert caught.value.reason == (
        "policy host mta-sts.noaddr.example.test has no address: no A or AAAA record"
    )


def test_a_policy_host_refusing_port_443_is_an_error(
    web: PolicyWebServer, resolver: Resolver
) -> None:
    with pytest.raises(MtaStsError) as caught:
        discover(web, resolver, "refused")
    assert caught.value.reason == (
        "https://mta-sts.refused.example.test/.well-known/mta-sts.txt not fetched: "
        "[127.0.0.9]:443: connection refused"
    )


def test_a_silent_policy_host_is_given_up_at_the_deadline(
    web: PolicyWebServer, resolver: Resolver
) -> None:
    began = time.monotonic()
    with pytest.raises(
        MtaStsError, match=r"not fetched: \[127\.[0-9.]+\]:443: (timed out|no answer)"
    ):
        discover(web, resolver, "silent", seconds=1.5)
    assert time.monotonic() - began < 5


def test_a_policy_over_64_kib_is_refused(web: PolicyWebServer, resolver: Resolver) -> None:
    web.serve("mta-sts.big.example.test", Page(body=ENFORCE + "x: " + "y" * 70_000 + "\n"))
    with pytest.raises(MtaStsError, match="policy larger than 65536 bytes"):
        discover(web, resolver, "big")


def test_a_ca_file_without_certificates_is_an_error_naming_it(
    web: PolicyWebServer, resolver: Resolver, tmp_path: Path
) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    web.serve("mta-sts.good.example.test", Page(body=ENFORCE))
    with pytest.raises(MtaStsError, match=f"CA file {bad} unusable"):
        discover(web, resolver, "good", ca_file=bad)


def test_a_txt_lookup_failure_is_an_error(web: PolicyWebServer) -> None:
    dead = Resolver(DnsSettings(nameservers=(("127.0.0.1", free_port()),), timeout=0.5))
    with pytest.raises(MtaStsError, match=r"_mta-sts\.good\.example\.test TXT lookup failed"):
        discover(web, dead, "good")
