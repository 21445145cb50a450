"""The status page rendered from a Status snapshot: what a person sees, and that it stays text.

No daemon and no network: each test builds the snapshot the daemon would
hand the page and reads the rendered HTML back as an element tree.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from smtp_probe.history import RunHistory
from smtp_probe.probe.result import Bounce, Outcome, RunResult, Stage, TlsFacts
from smtp_probe.probe.spec import Mailbox, TlsSettings
from smtp_probe.probe.tls import client_context, tls_facts
from smtp_probe.probe.transcript import Transcript
from smtp_probe.secret import Secret
from smtp_probe.server.interface import MailboxStatus, ProbeStatus, Status
from smtp_probe.server.status_page import (
    SPARK_HEIGHT,
    SPARK_WIDTH,
    Tone,
    render_status_page,
    sparkline,
    tone,
)
from tests.support import received_samples as samples
from tests.support.html_tree import Element, parse
from tests.support.results import STARTED, run_result
from tests.support.tls_certs import chain, handshake

NOW = STARTED.timestamp() + 600
MARKUP = "<script>alert(1)</script> <b>bold</b>"
MAILBOX_PASSWORD = "mailbox-Pa55word-xyzzy"  # noqa: S105 - a made-up secret to look for


def runs(probe: str, outcomes: Sequence[Outcome | float]) -> list[RunResult]:
    """One run per item, a minute apart: a float is a delivery of that many seconds."""
    results = []
    for index, item in enumerate(outcomes):
        at = STARTED + timedelta(minutes=index)
        if isinstance(item, Outcome):
            failed = item not in (Outcome.DELIVERED, Outcome.JUNK, Outcome.SENT)
            results.append(
                run_result(
                    probe,
                    item,
                    stage=Stage.RCPT_TO if failed else None,
                    reply_code=550 if failed else 250,
                    error="550 5.1.1 user unknown" if failed else "",
                    started_at=at,
                )
            )
        else:
            results.append(run_result(probe, Outcome.DELIVERED, delivery=item, started_at=at))
    return results


def status(
    *probes: tuple[str, Sequence[RunResult]],
    mailboxes: Sequence[MailboxStatus] = (),
    running: Sequence[str] = (),
    size: int = 30,
) -> Status:
    history = RunHistory(size)
    history.configure(name for name, _ in probes)
    for _, results in probes:
        for result in results:
            history.record(result)
    return Status(
        probes=tuple(
            ProbeStatus(
                name=name,
                interval=120.0,
                recent=history.recent(name),
                last=history.last(name),
                last_success_at=None,
                running=name in running,
            )
            for name, _ in probes
        ),
        mailboxes=tuple(mailboxes),
        history_size=size,
    )


def page(snapshot: Status) -> Element:
    return parse(render_status_page(snapshot, now=NOW))


def row(tree: Element, name: str) -> Element:
    rows = [r for r in tree.find_all("tr", cls="probe") if r.attrs["data-probe"] == name]
    assert len(rows) == 1, name
    return rows[0]


def strip_cells(tree: Element, name: str) -> list[Element]:
    """The strip cells of a probe's row that stand for a run (not the empty padding)."""
    return [c for c in row(tree, name).find("ol", cls="strip").find_all("li") if len(c.classes) > 1]


def path_points(svg: Element) -> list[str]:
    """The commands of the sparkline's path: one ``M`` or ``L`` per point."""
    return re.findall(r"[ML]", svg.find("path").attrs["d"])


# ---------------------------------------------------------------- colours


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome.DELIVERED, Tone.OK),
        (Outcome.SENT, Tone.OK),
        (Outcome.JUNK, Tone.WARN),
        (Outcome.SEND_FAILED, Tone.BAD),
        (Outcome.NOT_DELIVERED, Tone.BAD),
        (Outcome.BOUNCED, Tone.BAD),
        (Outcome.ERROR, Tone.BAD),
        (Outcome.REJECTED, Tone.OK),
        (Outcome.ACCEPTED_UNEXPECTEDLY, Tone.BAD),
    ],
)
def test_outcomes_are_green_amber_or_red(outcome: Outcome, expected: Tone) -> None:
    assert tone(outcome) is expected


def test_every_outcome_has_a_colour() -> None:
    assert {tone(outcome) for outcome in Outcome} == {Tone.OK, Tone.WARN, Tone.BAD}


# ---------------------------------------------------------------- probe rows


def test_every_probe_is_listed_in_config_order_with_its_last_outcome_coloured() -> None:
    tree = page(
        status(
            ("alpha", runs("alpha", [0.2])),
            ("beta", runs("beta", [Outcome.JUNK])),
            ("gamma", runs("gamma", [Outcome.SEND_FAILED])),
            ("delta", []),
        )
    )

    rows = tree.find_all("tr", cls="probe")
    assert [r.attrs["data-probe"] for r in rows] == ["alpha", "beta", "gamma", "delta"]
    badges = [r.find("td", cls="outcome").find("span", cls="badge") for r in rows]
    assert [(b.text(), b.classes) for b in badges] == [
        ("delivered", {"badge", "ok"}),
        ("junk", {"badge", "warn"}),
        ("send_failed", {"badge", "bad"}),
        ("no run yet", {"badge", "none"}),
    ]


def test_a_throttled_run_is_amber_like_junk_and_counted_as_a_warning() -> None:
    tree = page(status(("alpha", runs("alpha", [Outcome.THROTTLED]))))

    badge = row(tree, "alpha").find("td", cls="outcome").find("span", cls="badge")
    assert (badge.text(), badge.classes) == ("throttled", {"badge", "warn"})
    summary = [b.text() for b in tree.find("p", cls="summary").find_all("span", cls="badge")]
    assert "1 warning" in summary


def test_a_failed_run_shows_its_stage_reply_code_and_error() -> None:
    tree = page(status(("alpha", runs("alpha", [Outcome.SEND_FAILED]))))

    outcome = row(tree, "alpha").find("td", cls="outcome")
    assert "at rcpt_to [550]" in outcome.text()
    assert outcome.find("div", cls="error").text() == "550 5.1.1 user unknown"


def test_a_bounced_run_shows_its_last_delivery_status_notification() -> None:
    delayed = Bounce("delayed", "4.4.1", "x@example.test")
    failed = Bounce(
        "failed", "5.1.1", "x@example.test", "mx.example.test", "smtp; 550 5.1.1 <x@example.test>"
    )
    result = replace(
        run_result("alpha", Outcome.BOUNCED, stage=Stage.DELIVERY, error="bounced: 5.1.1"),
        bounces=(delayed, failed),
    )
    tree = page(status(("alpha", [result]), ("beta", runs("beta", [1.0]))))

    outcome = row(tree, "alpha").find("td", cls="outcome")
    assert outcome.find("span", cls="badge").text() == "bounced"
    assert "badge bad" in str(outcome.find("span", cls="badge").attrs.get("class", ""))
    assert outcome.find("div", cls="bounce").text() == (
        "DSN: failed 5.1.1 <x@example.test> "
        "(remote mta: mx.example.test; smtp; 550 5.1.1 <x@example.test>)"
    )
    assert row(tree, "beta").find("td", cls="outcome").find_all("div", cls="bounce") == []


def test_a_delivered_run_shows_its_delivery_time_folder_and_tls_version() -> None:
    result = run_result("alpha", delivery=0.4321, tls_version="TLSv1.3")
    tree = page(status(("alpha", [result])))

    cells = [td.text().strip() for td in row(tree, "alpha").find_all("td")]
    assert "432 ms" in cells
    assert "TLSv1.3" in cells
    assert "in INBOX" in row(tree, "alpha").find("td", cls="outcome").text()


def test_a_probe_with_a_scheduled_run_in_progress_is_marked_running() -> None:
    tree = page(status(("alpha", []), ("beta", []), running=["beta"]))

    assert not row(tree, "alpha").find_all(cls="running")
    assert row(tree, "beta").find(cls="running").text() == "running"


# ---------------------------------------------------------------- outcome strip


def test_the_strip_has_one_coloured_cell_per_recent_run_oldest_first() -> None:
    outcomes = [Outcome.DELIVERED, Outcome.JUNK, Outcome.SEND_FAILED, Outcome.DELIVERED]
    tree = page(status(("alpha", runs("alpha", outcomes))))

    cells = strip_cells(tree, "alpha")
    assert [c.classes - {"cell"} for c in cells] == [{"ok"}, {"warn"}, {"bad"}, {"ok"}]
    assert [c.text() for c in cells] == [str(o) for o in outcomes]
    assert all(f": {o}" in c.attrs["title"] for c, o in zip(cells, outcomes, strict=True))
    assert cells[0].attrs["title"].endswith(": delivered in 250 ms")


def test_the_strip_is_padded_to_the_history_size_with_blank_cells() -> None:
    tree = page(status(("alpha", runs("alpha", [0.1, 0.2])), size=10))

    every = row(tree, "alpha").find("ol", cls="strip").find_all("li")
    assert len(every) == 10
    assert [c.classes for c in every[:8]] == [{"cell"}] * 8
    assert all(c.attrs.get("aria-hidden") == "true" for c in every[:8])


# ---------------------------------------------------------------- sparkline


def test_the_sparkline_has_one_point_per_run_with_a_delivery_time() -> None:
    tree = page(status(("alpha", runs("alpha", [0.1, 0.3, 0.2, 0.25]))))

    svg = row(tree, "alpha").find("svg")
    assert path_points(svg) == ["M", "L", "L", "L"]
    assert len(svg.find_all("circle")) == 4


def test_runs_without_a_delivery_time_break_the_line() -> None:
    items: list[Outcome | float] = [0.1, Outcome.SEND_FAILED, 0.2, 0.3, Outcome.ERROR, 0.4]
    tree = page(status(("alpha", runs("alpha", items))))

    svg = row(tree, "alpha").find("svg")
    assert path_points(svg) == ["M", "M", "L", "M"]
    assert len(svg.find_all("circle")) == 4
    assert "2 run(s) without a delivery leave gaps" in svg.find("title").text()


def test_the_sparkline_title_and_labels_give_the_lowest_and_highest_time() -> None:
    tree = page(status(("alpha", runs("alpha", [0.120, 1.5, 0.480]))))

    cell = row(tree, "alpha").find(cls="spark")
    assert "lowest 120 ms, highest 1.50 s" in cell.find("title").text()
    assert [s.text() for s in cell.find(cls="range").find_all("span")] == ["1.50 s", "120 ms"]


def test_a_probe_without_any_delivery_has_no_sparkline() -> None:
    tree = page(status(("alpha", runs("alpha", [Outcome.SEND_FAILED])), ("beta", [])))

    for name in ("alpha", "beta"):
        assert not row(tree, name).find_all("svg")
        assert "no delivery yet" in row(tree, name).text()


def test_the_newest_point_is_at_the_right_edge_the_highest_at_the_top() -> None:
    points = RunHistory(30)
    points.configure(["alpha"])
    for result in runs("alpha", [0.1, 0.5, 0.3]):
        points.record(result)

    line = sparkline(points.recent("alpha"), 30)

    assert line is not None
    xs = [p.x for p in line.points]
    ys = [p.y for p in line.points]
    assert xs[-1] == pytest.approx(SPARK_WIDTH - 4.0)
    assert xs == sorted(xs)
    assert xs[1] - xs[0] == pytest.approx((SPARK_WIDTH - 8.0) / 29, abs=0.1)
    assert ys[1] == pytest.approx(4.0)  # 0.5 s, the highest, at the top
    assert ys[0] == pytest.approx(SPARK_HEIGHT - 4.0)  # 0.1 s, the lowest, at the bottom


def test_equal_delivery_times_draw_a_flat_line_in_the_middle() -> None:
    points = RunHistory(30)
    points.configure(["alpha"])
    for result in runs("alpha", [0.2, 0.2]):
        points.record(result)

    line = sparkline(points.recent("alpha"), 30)

    assert line is not None
    assert [p.y for p in line.points] == [SPARK_HEIGHT / 2] * 2


# ---------------------------------------------------------------- transcripts


def test_the_last_transcript_is_shown_line_by_line_with_who_spoke() -> None:
    transcript = Transcript(clock=lambda: 0.0)
    transcript.received("220 mx.example ESMTP", tls=False)
    transcript.sent("EHLO probe.test", tls=False)
    transcript.note("TLS established")
    tree = page(status(("alpha", [run_result("alpha", transcript=transcript)])))

    details = tree.find("details", cls="transcript")
    lines = details.find("pre").find_all("span")
    assert [(line.classes, line.text().split(maxsplit=2)[-1]) for line in lines[:3]] == [
        ({"server"}, "220 mx.example ESMTP"),
        ({"client"}, "EHLO probe.test"),
        ({"note"}, "TLS established"),
    ]
    assert lines[-1].classes == {"result", "ok"}
    assert lines[-1].text().startswith("OK: delivered to INBOX")


def test_a_failing_probe_s_transcript_is_open_and_a_passing_one_closed() -> None:
    tree = page(status(("good", runs("good", [0.1])), ("bad", runs("bad", [Outcome.SEND_FAILED]))))

    shown = {d.find("strong").text(): "open" in d.attrs for d in tree.find_all("details")}
    assert shown == {"good": False, "bad": True}


def test_a_probe_without_a_run_has_no_transcript() -> None:
    tree = page(status(("alpha", [])))

    assert not tree.find_all("details")
    assert "No scheduled run has finished yet." in tree.text()


def hop_rows(tree: Element) -> list[list[str]]:
    return [[td.text() for td in tr.find_all("td")] for tr in tree.find_all("tr", cls="hop")]


def test_the_last_run_s_hops_are_a_table_with_delays_tls_and_clock_skew() -> None:
    tree = page(status(("alpha", [run_result("alpha", received=samples.SKEWED)])))

    details = tree.find("details", cls="transcript")
    assert hop_rows(details) == [
        ["0", "submit.example.org", "[192.0.2.99]", "ESMTPSA", "yes",
         "2026-12-07 02:50:37 UTC", "-", ""],
        ["1", "relay.example.org", "submit.example.org", "ESMTPS", "yes",
         "2026-12-07 02:47:30 UTC", "?", "skew"],
        ["2", "mx.example.net", "relay.example.org", "LMTP", "no",
         "2026-12-07 02:51:00 UTC", "210 s", ""],
    ]  # fmt: skip
    note = details.find("p", cls="hops-note").text()
    assert note.startswith("3 hop(s), oldest first; a delay is the time from the previous hop")
    assert "whole seconds from each host's own clock" in note


def test_a_run_without_an_arrival_has_no_hop_table() -> None:
    tree = page(status(("alpha", runs("alpha", [Outcome.SEND_FAILED]))))

    assert tree.find("details", cls="transcript")
    assert not tree.find_all("table", cls="hops")


# ---------------------------------------------------------------- mailboxes


def mailbox(user: str, port: int) -> Mailbox:
    return Mailbox(host="127.0.0.1", port=port, username=user, password=Secret(MAILBOX_PASSWORD))


def test_each_mailbox_is_shown_connected_or_unreachable() -> None:
    snapshot = status(
        ("alpha", []),
        mailboxes=[
            MailboxStatus(mailbox("sink@example.test", 993), up=True),
            MailboxStatus(
                mailbox("other@example.test", 143),
                up=False,
                down_reason="imap_login: login refused: <b>Authentication failed.</b>",
            ),
        ],
    )
    html = render_status_page(snapshot, now=NOW)
    tree = parse(html)

    rows = [[td.text() for td in tr.find_all("td")] for tr in tree.find_all("tr", cls="mailbox")]
    assert rows == [
        ["sink@example.test", "127.0.0.1:993", "INBOX", "connected"],
        [
            "other@example.test",
            "127.0.0.1:143",
            "INBOX",
            "unreachableimap_login: login refused: <b>Authentication failed.</b>",
        ],
    ]
    assert "<b>Authentication" not in html  # the server's words are text, not markup
    states = [s.classes for s in tree.find_all(cls="state")]
    assert states == [{"state", "up"}, {"state", "down"}]
    assert "1/2 mailboxes connected" in tree.text()
    assert MAILBOX_PASSWORD not in html


def test_without_mailboxes_there_is_no_mailbox_section() -> None:
    tree = page(status(("alpha", [])))

    assert "Mailboxes" not in [h.text() for h in tree.find_all("h2")]


# ---------------------------------------------------------------- text, never markup


def test_markup_from_a_server_stays_text_in_the_error_line_and_the_transcript() -> None:
    transcript = Transcript(clock=lambda: 0.0)
    transcript.received(f"220 {MARKUP}", tls=False)
    result = run_result(
        "alpha",
        Outcome.SEND_FAILED,
        stage=Stage.RCPT_TO,
        reply_code=550,
        error=f"550 {MARKUP}",
        transcript=transcript,
    )
    html = render_status_page(status(("alpha", [result])), now=NOW)
    tree = parse(html)

    assert not tree.find_all("script")
    assert not tree.find_all("b")
    assert row(tree, "alpha").find("div", cls="error").text() == f"550 {MARKUP}"
    assert f"220 {MARKUP}" in tree.find("pre").text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_markup_in_received_lines_stays_text_in_the_hop_table() -> None:
    received = ("from <i>a</i> by <b>mx</b>.example with <script>x</script> id 1; "
                "Mon, 7 Dec 2026 02:50:37 +0000",)  # fmt: skip
    html = render_status_page(status(("alpha", [run_result("alpha", received=received)])), now=NOW)
    tree = parse(html)

    assert not tree.find_all("script")
    assert not tree.find_all("b")
    assert not tree.find_all("i")
    (cells,) = hop_rows(tree)
    assert cells[1:4] == ["<b>mx</b>.example", "<i>a</i>", "<script>x</script>"]
    assert "&lt;b&gt;mx&lt;/b&gt;.example" in html


def test_a_probe_name_is_text_too() -> None:
    html = render_status_page(status(('x"><script>y', [])), now=NOW)

    assert not parse(html).find_all("script")
    assert 'data-probe="x&#34;&gt;&lt;script&gt;y"' in html


def test_the_page_refreshes_itself_and_has_no_script_or_external_asset() -> None:
    tree = page(status(("alpha", runs("alpha", [0.1]))))

    refresh = [m for m in tree.find_all("meta") if m.attrs.get("http-equiv") == "refresh"]
    assert [m.attrs["content"] for m in refresh] == ["15"]
    assert not tree.find_all("script")
    assert not tree.find_all("link")
    assert not tree.find_all("img")
    sources = [e.attrs.get("src", "") + e.attrs.get("href", "") for e in tree.iter()]
    assert all(not s.startswith(("http:", "https:", "//")) for s in sources)


# ---------------------------------------------------------------- TLS certificates


def tls_rows(tree: Element) -> dict[tuple[str, str], Element]:
    return {(r.attrs["data-probe"], r.attrs["data-leg"]): r for r in tree.find_all("tr", cls="tls")}


def with_tls(result: RunResult, smtp: TlsFacts | None, imap: TlsFacts | None) -> RunResult:
    arrival = result.arrival
    return replace(
        result,
        smtp=replace(result.smtp, tls=smtp),
        arrival=replace(arrival, tls=imap) if arrival is not None else None,
    )


def test_each_leg_shows_protocol_certificate_verification_and_days_left_from_a_real_handshake(
    tmp_path: Path,
) -> None:
    """Facts from real handshakes: a leaf expiring in 2 days (SMTP, verified), 200 (IMAP, not)."""
    now = time.time()
    short = chain(tmp_path / "short", leaf_days=2, intermediate_days=400)
    long = chain(tmp_path / "long", leaf_days=200, intermediate_days=400)
    smtp = tls_facts(handshake(short.server_context(), short.client_context()), verified=True)
    off = client_context(TlsSettings(verify=False))
    imap = tls_facts(handshake(long.server_context(), off), verified=False)

    html = render_status_page(
        status(("alpha", [with_tls(run_result("alpha"), smtp, imap)])), now=now
    )
    rows = tls_rows(parse(html))

    assert list(rows) == [("alpha", "smtp"), ("alpha", "imap")]
    cells = [td.text() for td in rows["alpha", "smtp"].find_all("td")]
    assert cells[1] == "smtp"
    assert cells[2].startswith(("TLSv1.2", "TLSv1.3"))
    assert smtp.cipher is not None
    assert smtp.cipher in cells[2]
    assert cells[3] == "CN=mx.example.testissuer: CN=Test Intermediate"
    assert cells[4] == "verified"
    days = rows["alpha", "smtp"].find("span", cls="days")
    assert days.text() == "2.0 days"
    assert days.classes == {"badge", "days", "bad"}
    assert days.attrs["title"] == "expires " + short.leaf_not_after.strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )
    imap_days = rows["alpha", "imap"].find("span", cls="days")
    assert imap_days.text() == "200 days"
    assert imap_days.classes == {"badge", "days", "ok"}
    assert rows["alpha", "imap"].find("td", cls="verified").text() == (
        "not verified (verification off)"
    )


@pytest.mark.parametrize(
    ("days", "shown", "colour"),
    [
        (14.5, "14 days", "ok"),
        (13.9, "13.9 days", "warn"),
        (3.0, "3.0 days", "warn"),
        (2.99, "3.0 days", "bad"),
        (-1.5, "expired 1.5 days ago", "bad"),
    ],
)
def test_days_left_are_amber_under_14_and_red_under_3_like_the_alerts(
    days: float, shown: str, colour: str
) -> None:
    facts = TlsFacts("TLSv1.3", "X", "CN=a", "CN=b", not_after=NOW + days * 86400, verified=True)
    tree = page(status(("alpha", [with_tls(run_result("alpha"), facts, None)])))

    [(key, tls_row)] = tls_rows(tree).items()
    assert key == ("alpha", "smtp")
    badge = tls_row.find("span", cls="days")
    assert (badge.text(), badge.classes - {"badge", "days"}) == (shown, {colour})


def test_a_run_without_tls_has_no_tls_row_and_an_unreadable_certificate_says_unknown() -> None:
    unreadable = TlsFacts("TLSv1.2", None, "", "", not_after=None, verified=False)
    tree = page(
        status(
            ("plain", [run_result("plain")]),
            ("odd", [with_tls(run_result("odd"), unreadable, None)]),
        )
    )

    rows = tls_rows(tree)
    assert list(rows) == [("odd", "smtp")]
    assert rows["odd", "smtp"].find("span", cls="days").text() == "unknown"
    assert "(no subject)" in rows["odd", "smtp"].find("td", cls="subject").text()


def test_certificate_names_are_text_never_markup() -> None:
    facts = TlsFacts("TLSv1.3", MARKUP, f"CN={MARKUP}", f"O={MARKUP}", NOW + 86400, True)
    html = render_status_page(
        status(("alpha", [with_tls(run_result("alpha"), facts, facts)])), now=NOW
    )
    tree = parse(html)

    assert not tree.find_all("script")
    assert not tree.find_all("b")
    assert (
        tls_rows(tree)["alpha", "imap"].find("td", cls="subject").text().startswith(f"CN={MARKUP}")
    )


def test_an_intermediate_that_expires_first_is_named_under_the_days_left() -> None:
    facts = replace(
        TlsFacts("TLSv1.3", "X", "CN=mx", "CN=Mid", NOW + 86400, True),
        chain_length=2,
        expiring_subject=f"CN=Mid {MARKUP}",
    )
    tree = page(status(("alpha", [with_tls(run_result("alpha"), facts, None)])))

    cell = tls_rows(tree)["alpha", "smtp"].find("span", cls="expiring")
    assert cell.text() == f"first to expire: CN=Mid {MARKUP}"
    assert not tree.find_all("script")
    leaf_only = page(
        status(
            ("alpha", [with_tls(run_result("alpha"), replace(facts, expiring_subject=""), None)])
        )
    )
    assert not leaf_only.find_all("span", cls="expiring")
