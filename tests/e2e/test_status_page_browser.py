"""The status page in a real browser: Debian's headless Chromium reads the running daemon.

The daemon is the real process (``python -m smtp_probe run``) probing the
real Postfix + Dovecot stack (a delivered route, a junk placement, a
refused recipient) and three loopback servers of the test's own: two
aiosmtpd servers whose banner and replies hold HTML and a script (one
accepts, one refuses) and a closed port. Once every probe has run a few
times, Chromium dumps the page's DOM and takes a screenshot; the test
asserts on what the browser built and what it painted. The screenshot is
kept as ``test-artifacts/status-page.png``. A missing Chromium is a
failure, never a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.daemon_proc import Daemon, config_text, start_daemon, stop_daemon
from tests.support.html_tree import Element, parse
from tests.support.loopback_smtpd import LOOPBACK, Behaviour, closed_port, smtpd
from tests.support.mailstack import JUNK_ADDRESS, MailStack
from tests.support.routes import SENDER, SINK

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MARKUP = "<script>alert(1)</script> <b>bold</b>"
WIDTH, HEIGHT = 1280, 1600
RUNS_EACH = 4
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # The machine's network is closed: without these Chromium's own calls home
    # are refused and it stalls.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
GREEN, AMBER, RED = (0x1A, 0x7F, 0x37), (0xBF, 0x87, 0x00), (0xCF, 0x22, 0x2E)
"""The strip's cell colours (``--ok``, ``--warn``, ``--bad`` in the page's CSS)."""
TONES = {"submission": "ok", "junk": "warn", "refused": "bad", "hostile": "ok",
         "hostile-refused": "bad", "down": "bad"}  # fmt: skip


def browser_config(
    stack: MailStack, workdir: Path, accepting: int, refusing: int, down: int
) -> str:
    """The stack's routes plus the hostile servers and the closed port, every 2 s."""
    base = config_text(stack, workdir, ["submission", "refused"])
    servers = (
        f"  hostile: {{host: {LOOPBACK}, port: {accepting}, tls: none, helo: probe.test}}\n"
        f"  hostile-refusing: {{host: {LOOPBACK}, port: {refusing}, tls: none, helo: probe.test}}\n"
        f"  down: {{host: {LOOPBACK}, port: {down}, tls: none, helo: probe.test}}\n"
    )
    probes = (
        f"  - {{name: junk, smtp: submission, mailbox: imaps, from: {SENDER}, to: {JUNK_ADDRESS}}}\n"
        f"  - {{name: hostile, smtp: hostile, from: {SENDER}, to: {SINK}}}\n"
        f"  - {{name: hostile-refused, smtp: hostile-refusing, from: {SENDER}, to: {SINK}}}\n"
        f"  - {{name: down, smtp: down, from: {SENDER}, to: {SINK}}}\n"
    )
    return base.replace("mailboxes:\n", servers + "mailboxes:\n") + probes


@pytest.fixture
def daemon(stack: MailStack, tmp_path: Path) -> Iterator[Daemon]:
    """The daemon probing the stack and the test's hostile servers, after a few runs each."""
    accepting = Behaviour(data_reply=f"250 2.0.0 {MARKUP} queued as HOSTILE1")
    refusing = Behaviour(rcpt_reply=f"550 5.7.1 {MARKUP} relaying denied")
    with (
        smtpd(accepting, ident=MARKUP) as accepting_port,
        smtpd(refusing, ident=MARKUP) as refusing_port,
        closed_port() as down_port,
    ):
        config = browser_config(stack, tmp_path, accepting_port, refusing_port, down_port)
        running = start_daemon(stack, tmp_path, [], config=config)
        try:
            wait_for_runs(running, set(TONES), RUNS_EACH)
            yield running
        finally:
            stop_daemon(running)
    log = running.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def wait_for_runs(daemon: Daemon, probes: set[str], runs: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    counts: dict[str, float] = {}
    while time.monotonic() < deadline:
        _, text = daemon.get("/metrics")
        counts = {
            name: float(value)
            for name, value in re.findall(
                r'^smtp_probe_runs_total\{probe="([^"]+)"\} (\S+)$', text, re.MULTILINE
            )
        }
        if set(counts) == probes and min(counts.values()) >= runs:
            return
        time.sleep(0.5)
    raise AssertionError(f"not {runs} runs of every probe in {timeout:g}s: {counts}")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Run Debian's headless Chromium once.

    Raises:
        pytest.fail.Exception: Chromium is not installed (CI installs it: never a skip).
    """
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail(
            "chromium is not installed (apt-get install chromium); the page needs a browser"
        )
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def probe_row(tree: Element, name: str) -> Element:
    rows = [r for r in tree.find_all("tr", cls="probe") if r.attrs.get("data-probe") == name]
    assert len(rows) == 1, name
    return rows[0]


def run_cells(row: Element) -> list[Element]:
    """A row's strip cells that stand for a run (the padding cells have no colour class)."""
    return [c for c in row.find("ol", cls="strip").find_all("li") if len(c.classes) > 1]


def colour_pixels(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of ``colour`` on every channel."""
    bands = image.convert("RGB").split()
    masks = [
        band.point(lambda v, c=c: 255 if abs(v - c) <= tolerance else 0)
        for band, c in zip(bands, colour, strict=True)
    ]
    both = masks[0]
    for mask in masks[1:]:
        both = Image.composite(mask, Image.new("L", image.size, 0), both)
    return sum(both.histogram()[255:])


def test_status_page_in_headless_chromium(daemon: Daemon, tmp_path: Path) -> None:
    url = daemon.url("/")
    dumped = chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "status-page.html").write_text(dumped.stdout)
    tree = parse(dumped.stdout)

    # Every probe is listed, its last outcome in its colour.
    rows = {row.attrs["data-probe"]: row for row in tree.find_all("tr", cls="probe")}
    assert set(rows) == set(TONES)
    for name, colour in TONES.items():
        badge = rows[name].find("td", cls="outcome").find("span", cls="badge")
        assert colour in badge.classes, (name, badge.text())
    assert rows["submission"].find(cls="badge").text() == "delivered"
    assert rows["junk"].find(cls="badge").text() == "junk"
    assert rows["hostile"].find(cls="badge").text() == "sent"
    assert "at connect" in rows["down"].text()
    assert "at rcpt_to [550]" in rows["refused"].text()

    # The strip: one cell per run, each with its outcome's colour and name.
    for name, colour in TONES.items():
        cells = run_cells(rows[name])
        assert len(cells) >= RUNS_EACH, name
        assert cells[-1].classes == {"cell", colour}, name
        assert all(c.text() and c.attrs["title"] for c in cells), name

    # The sparkline: one point per run with a delivery time, none for the others.
    for name in ("submission", "junk"):
        delivered = [c for c in run_cells(rows[name]) if c.text() in ("delivered", "junk")]
        svg = rows[name].find("svg")
        assert len(re.findall(r"[ML]", svg.find("path").attrs["d"])) == len(delivered), name
        assert len(svg.find_all("circle")) == len(delivered), name
        assert "lowest" in svg.find("title").text()
    for name in ("refused", "hostile", "hostile-refused", "down"):
        assert not rows[name].find_all("svg"), name

    # TLS of the last SMTP session, and the mailbox watcher.
    assert "TLSv1.3" in rows["submission"].text()
    mailboxes = tree.find_all("tr", cls="mailbox")
    assert [m.find(cls="state").text() for m in mailboxes] == ["connected"]
    assert SINK in mailboxes[0].text()

    # Transcripts: present, and what the hostile servers said is text, not elements.
    transcripts = {d.find("strong").text(): d for d in tree.find_all("details", cls="transcript")}
    assert set(transcripts) == set(TONES)
    hostile = transcripts["hostile"].find("pre").text()
    assert f"220 mx.test {MARKUP}" in hostile
    assert f"250 2.0.0 {MARKUP} queued as HOSTILE1" in hostile
    assert f"550 5.7.1 {MARKUP} relaying denied" in transcripts["hostile-refused"].text()
    assert not tree.find_all("script")
    assert not tree.find_all("b")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dumped.stdout
    for secret in ("a-token-secret", "sink-secret", "probe-secret"):
        assert secret not in dumped.stdout

    # What the browser painted: a full-size PNG with the strip's green, amber and red.
    screenshot = ARTIFACTS / "status-page.png"
    screenshot.unlink(missing_ok=True)
    shot = chromium(
        f"--screenshot={screenshot}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--hide-scrollbars",
        url,
        profile=tmp_path / "profile-shot",
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    print(f"status page screenshot: {screenshot}")
    with Image.open(screenshot) as image:
        assert image.format == "PNG"
        assert image.size == (WIDTH, HEIGHT)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None
        assert len(colours) > 100, "a blank or nearly blank page"
        # Each strip cell is 6 x 20 pixels; four runs of each probe at least.
        assert colour_pixels(image, GREEN) >= 2 * RUNS_EACH * 6 * 20
        assert colour_pixels(image, RED) >= 3 * RUNS_EACH * 6 * 20
        assert colour_pixels(image, AMBER) >= RUNS_EACH * 6 * 20
