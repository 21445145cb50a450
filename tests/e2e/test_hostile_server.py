"""A hostile MTA's banner and replies, through a real daemon process: text, never markup.

The daemon (:mod:`tests.support.daemon_proc`) probes the hostile server of
:mod:`tests.support.hostile_smtpd`, whose ``220`` greeting and ``550``
reply hold ``<script>``, event-handler attributes and a ``javascript:``
link. Its status page must show them, escaped; ``/probe`` must return them
as text that no browser sniffs into HTML, and as JSON in which they stay
the same strings but hold no ``<``, ``>`` or ``&`` at all.
"""

from __future__ import annotations

import html
import json
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support.daemon_proc import Daemon, spawn_daemon, stop_daemon
from tests.support.hostile_smtpd import BANNER_MARKUP, PAYLOADS, REPLY_MARKUP, hostile_smtpd
from tests.support.loopback_smtpd import LOOPBACK

pytestmark = pytest.mark.e2e


class _Elements(HTMLParser):
    """Every start tag, attribute and text of a page, as a browser's tokenizer sees them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        """The character data, entities decoded: what a reader sees."""
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _config(port: int) -> str:
    return (
        "defaults: {interval: 2s, timeout: 3s, jitter: 0s}\n"
        "smtp_servers:\n"
        f"  hostile: {{host: {LOOPBACK}, port: {port}, tls: none, helo: probe.test}}\n"
        "probes:\n"
        "  - {name: hostile, smtp: hostile, from: probe@sender.test, to: sink@rcpt.test}\n"
    )


def _page_after_a_run(daemon: Daemon) -> str:
    end = time.monotonic() + 20
    while True:
        status, page = daemon.get("/")
        assert status == 200
        if 'data-probe="hostile"' in page and "send_failed" in page:
            return page
        assert time.monotonic() < end, f"no scheduled run shown within 20 s:\n{page}"
        time.sleep(0.3)


def test_a_hostile_servers_banner_and_reply_are_text_on_the_status_page_and_in_probe(
    tmp_path: Path,
) -> None:
    with hostile_smtpd() as port:
        daemon = spawn_daemon(tmp_path, _config(port))
        try:
            page = _page_after_a_run(daemon)
            text_status, text = daemon.get("/probe?name=hostile")
            time.sleep(5.2)  # the per-probe pause between two on-demand runs
            json_status, body = daemon.get("/probe?name=hostile&format=json")
        finally:
            stop_daemon(daemon)

    # Shown, escaped: the banner and the reply reached the page as text.
    elements = _Elements(page)
    shown = "".join(elements.text)
    assert f"220 mx.hostile.test {BANNER_MARKUP}" in shown
    assert REPLY_MARKUP in shown
    assert html.escape(BANNER_MARKUP) in page
    for payload in PAYLOADS:
        assert payload not in page
    assert not {"script", "img"} & set(elements.tags), elements.tags  # the page has its own <a>
    assert not [name for name, _ in elements.attributes if name.startswith("on")]
    # The reply may be an attribute's text (a title), but never where a URL goes.
    assert [v for n, v in elements.attributes if n == "title" and v and REPLY_MARKUP in v]
    assert not [
        v for n, v in elements.attributes if n in {"href", "src"} and "javascript:" in (v or "")
    ]

    # /probe as text: the transcript says what the server said, verbatim.
    assert text_status == 200
    assert f"220 mx.hostile.test {BANNER_MARKUP}" in text
    assert REPLY_MARKUP in text

    # /probe as JSON: the same strings, with no character that could open markup.
    assert json_status == 200
    assert not {"<", ">", "&"} & set(body)
    decoded = json.dumps(json.loads(body), ensure_ascii=False)
    for payload in PAYLOADS:
        assert json.dumps(payload, ensure_ascii=False)[1:-1] in decoded
