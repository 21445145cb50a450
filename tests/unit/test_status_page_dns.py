"""The status page's DNS checks section: each check's verdict, reason, evidence and last run.

Reasons and evidence are DNS and HTTPS text: they must come out as text, never markup.
"""

from __future__ import annotations

from datetime import UTC, datetime

from smtp_probe.probe.result import DnsCheckResult, DnsReport
from smtp_probe.probe.transcript import Transcript
from smtp_probe.server.interface import ProbeStatus, Status
from smtp_probe.server.status_page import Tone, dns_views, render_status_page
from tests.support.html_tree import Element, parse

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC).timestamp()
MARKUP = "<script>alert(1)</script>"
REPORT = DnsReport(
    probe="dns",
    started_at=datetime.fromtimestamp(NOW - 95, UTC),
    duration_seconds=5.0,
    results=(
        DnsCheckResult("spf", True, "127.0.0.1 pass", ("example.test TXT: v=spf1 -all",)),
        DnsCheckResult(
            "dmarc",
            False,
            f"p=none is weaker than the expected quarantine {MARKUP}",
            (f"_dmarc.example.test TXT: v=DMARC1; p=none; x={MARKUP}",),
            policy="none",
        ),
        DnsCheckResult(
            "dnsbl", False, "127.0.0.2 listed", (), listed=(("a.test", True), ("b.test", False))
        ),
    ),
    transcript=Transcript(),
)


def _probe(name: str, **dns: object) -> ProbeStatus:
    return ProbeStatus(
        name=name, interval=60.0, recent=(), last=None, last_success_at=None, running=False,
        **dns,  # type: ignore[arg-type]
    )  # fmt: skip


STATUS = Status(
    probes=(
        _probe("plain"),
        _probe("dns", dns_checks=("spf", "dmarc", "dnsbl"), dns_interval=900.0, dns=REPORT),
        _probe("pending", dns_checks=("mx", "fcrdns"), dns_interval=1800.0),
    ),
    mailboxes=(),
    history_size=30,
)


def rows(tree: Element, probe: str) -> dict[str, Element]:
    found = [r for r in tree.find_all("tr", cls="dns") if r.attrs["data-probe"] == probe]
    return {r.attrs["data-check"] or "": r for r in found}


def test_each_probe_with_dns_checks_has_a_row_per_check_and_others_none() -> None:
    tree = parse(render_status_page(STATUS, now=NOW))
    assert rows(tree, "plain") == {}
    assert list(rows(tree, "dns")) == ["spf", "dmarc", "dnsbl"]
    assert list(rows(tree, "pending")) == ["mx", "fcrdns"]


def test_a_check_shows_its_verdict_reason_evidence_and_when_it_ran() -> None:
    tree = parse(render_status_page(STATUS, now=NOW))
    checks = rows(tree, "dns")
    assert checks["spf"].find(cls="badge").text() == "ok"
    assert "ok" in checks["spf"].find(cls="badge").classes
    dmarc = checks["dmarc"]
    assert dmarc.find(cls="badge").text() == "failed"
    assert "bad" in dmarc.find(cls="badge").classes
    assert (
        dmarc.find(cls="dns-reason")
        .text()
        .startswith(f"p=none is weaker than the expected quarantine {MARKUP}")
    )
    assert (
        dmarc.find("pre").text().strip() == f"_dmarc.example.test TXT: v=DMARC1; p=none; x={MARKUP}"
    )
    assert "none" in dmarc.text()  # the published policy
    assert "listed: a.test" in checks["dnsbl"].text()
    assert "b.test" not in checks["dnsbl"].text()
    assert "90s ago" in checks["spf"].text()
    assert "every 15 min" in checks["spf"].text()


def test_server_text_is_escaped_never_markup() -> None:
    text = render_status_page(STATUS, now=NOW)
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_checks_not_run_yet_are_grey() -> None:
    views = {view.probe: view for view in dns_views(STATUS, NOW)}
    assert [c.verdict for c in views["pending"].checks] == ["not run yet", "not run yet"]
    assert views["pending"].tone is Tone.NONE
    assert views["pending"].ago == ""
    assert views["dns"].tone is Tone.BAD
    assert "plain" not in views


def test_no_section_without_dns_checks() -> None:
    plain = Status(probes=(_probe("plain"),), mailboxes=(), history_size=30)
    assert "DNS checks" not in render_status_page(plain, now=NOW)
