r"""Hostile foreign messages for stuffing a watched mailbox, made deterministically.

Every message here is somebody else's: a forgery of our header or Subject,
a forged delivery status notification, or plain mail shaped to hurt a parser
(huge or broken headers, deep MIME, 10 MB, no headers at all, a date in the
future). None of them may ever be deleted, moved or flagged by a watcher.
Some are *almost* ours, which is what makes them worth having:

* tokens of the right shape signed with another key (another daemon's, or
  a forger's) for the probe names the watcher knows;
* tokens signed with *our* key for a probe name the watcher does not watch
  (another daemon sharing ``token_secret_file``): not ours to delete;
* a ``multipart/report`` with our header and a valid token for a watched
  probe at the top: a report quoting a run proves it did *not* arrive;
* a report returning a valid token whose ``Original-Envelope-Id`` names
  another run: not believed.

:func:`hostile_messages` takes a seed and gives the same bytes every time.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from smtp_probe.probe.message import PROBE_HEADER, SUBJECT_MARK, TokenSigner

TEN_MB = 10 * 1024 * 1024

_PREFIXES = ("", "Re: ", "RE: AW: ", "Auto: ", "Automatic reply: ", "Fwd: ", "[EXTERNAL] Re: ")
_FUTURE_DATE = "Fri, 31 Dec 2099 23:59:59 +0000"
_FLAGS = ((), (), (), ("\\Seen",), ("\\Flagged", "$Junk"), ("\\Answered", "\\Seen"))
"""What a user (or their spam filter) may have marked them with; kept as they are."""


@dataclass(frozen=True, slots=True)
class Hostile:
    """One hostile message: its kind, bytes, and the flags and date to APPEND it with."""

    kind: str
    raw: bytes
    flags: tuple[str, ...] = ()
    date: datetime | None = None
    """Its INTERNALDATE (``None``: now)."""

    def append_item(self) -> dict[str, object]:
        """The message as an item of imapclient's ``multiappend``."""
        item: dict[str, object] = {"msg": self.raw, "flags": self.flags}
        if self.date is not None:
            item["date"] = self.date
        return item


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _forged_token(rng: random.Random) -> str:
    """Right shape, signature nobody made."""
    return f"{rng.randrange(10**12, 10**13)}-{_hex(rng, 16)}-{_hex(rng, 32)}"


def _headers(
    rng: random.Random, *extra: str, subject: str | None = None, date: str | None = None
) -> str:
    n = rng.getrandbits(32)
    lines = [
        f"From: stranger{n % 97}@elsewhere.test",
        "To: sink@example.test",
        f"Subject: {subject if subject is not None else f'foreign mail {n}'}",
        f"Date: {date or f'Mon, 7 Dec 2026 0{n % 10}:1{n % 6}:00 +0000'}",
        f"Message-ID: <{n:x}.{rng.getrandbits(32):x}@elsewhere.test>",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n"


def _message(
    rng: random.Random,
    *extra: str,
    subject: str | None = None,
    body: str = "",
    date: str | None = None,
) -> bytes:
    text = _headers(rng, *extra, subject=subject, date=date) + "\r\n" + (body or "hello\r\n")
    return text.encode("utf-8", "surrogateescape")


def _report(rng: random.Random, returned: str, *, top: str = "", envid: str = "") -> bytes:
    """A forged RFC 3464 report from MAILER-DAEMON returning ``returned`` headers."""
    boundary = f"b{_hex(rng, 12)}"
    env = f"Original-Envelope-Id: {envid}\r\n" if envid else ""
    text = (
        "From: MAILER-DAEMON@elsewhere.test (Mail Delivery System)\r\n"
        "To: sink@example.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{_hex(rng, 16)}@elsewhere.test>\r\n{top}"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "MIME-Version: 1.0\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.elsewhere.test\r\n{env}\r\n"
        "Final-Recipient: rfc822; sink@example.test\r\nAction: failed\r\n"
        "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{returned}\r\n"
        f"--{boundary}--\r\n"
    )
    return text.encode("utf-8", "surrogateescape")


def _nested(depth: int) -> bytes:
    parts = [
        f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n'
        for level in range(depth)
    ]
    closing = "".join(f"\r\n--n{level}--\r\n" for level in reversed(range(depth)))
    body = "".join(parts) + "Content-Type: text/plain\r\n\r\ndeep\r\n" + closing
    head = "From: deep@elsewhere.test\r\nSubject: deep MIME\r\nMIME-Version: 1.0\r\n"
    return (head + body).encode()


def _kinds(
    rng: random.Random, signer: TokenSigner, probes: Sequence[str], foreign_probe: str
) -> Iterator[Hostile]:
    """An endless, seeded stream of ordinary-sized hostile messages of every kind."""
    other = TokenSigner(rng.randbytes(32))
    while True:
        probe = rng.choice(probes)
        forged = _forged_token(rng)
        theirs = str(other.new(probe))
        ours_elsewhere = str(signer.new(foreign_probe))
        prefix = rng.choice(_PREFIXES)
        yield Hostile("plain", _message(rng))
        yield Hostile("forged-header", _message(rng, f"{PROBE_HEADER}: {forged}"))
        yield Hostile("other-key-header", _message(rng, f"{PROBE_HEADER}: {theirs}"))
        yield Hostile("foreign-probe-header", _message(rng, f"{PROBE_HEADER}: {ours_elsewhere}"))
        yield Hostile(
            "bad-signature-shapes",
            _message(
                rng,
                f"{PROBE_HEADER}: {theirs.upper()}",
                f"{PROBE_HEADER}: {theirs[:-1]}",
                f"{PROBE_HEADER}: {'9' * 5000}-{_hex(rng, 16)}-{_hex(rng, 32)}",
            ),
        )
        yield Hostile("encoded-word-header", _message(rng, f"{PROBE_HEADER}: =?utf-8?q?{theirs}?="))
        yield Hostile(
            "nul-8bit-header",
            _message(rng, f"{PROBE_HEADER}: {forged}\x00\udcff\udcfe é {theirs}\x1b[31m"),
        )
        yield Hostile(
            "forged-subject",
            _message(rng, subject=f"{prefix}{SUBJECT_MARK} {probe} {forged}"),
        )
        yield Hostile(
            "other-key-subject",
            _message(rng, subject=f"{prefix}{SUBJECT_MARK} {probe} {theirs}"),
        )
        yield Hostile(
            "encoded-subject",
            _message(
                rng, subject=f"=?utf-8?b?{_b64(f'{prefix}{SUBJECT_MARK} {probe} ')}?= {theirs}"
            ),
        )
        yield Hostile(
            "forged-report",
            _report(rng, f"From: sink@example.test\r\n{PROBE_HEADER}: {theirs}\r\n"),
        )
        yield Hostile(
            "report-forged-envid",
            _report(
                rng,
                f"{PROBE_HEADER}: {signer.new(probe)}\r\n",
                envid=_hex(rng, 16),
            ),
        )
        yield Hostile(
            "report-with-our-token-on-top",
            _report(rng, "Subject: whatever\r\n", top=f"{PROBE_HEADER}: {signer.new(probe)}\r\n"),
        )
        yield Hostile(
            "broken-encoding",
            _message(
                rng,
                "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=x-no-such-charset",
                "Content-Transfer-Encoding: base64",
                subject="=?x-unknown?q?=FF=FE?= =?utf-8?b?////?=",
                body="!!!! not base64 at all ====\r\n\udcff\udcfe\r\n",
            ),
        )
        yield Hostile(
            "future-date",
            _message(rng, f"{PROBE_HEADER}: {theirs}", subject="from 2099", date=_FUTURE_DATE),
            date=datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
        )
        yield Hostile("no-headers", b"no header here, only text\r\nand more text\r\n")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def big_ones(rng: random.Random, signer: TokenSigner, probe: str) -> list[Hostile]:
    """The few large ones: huge headers, deep MIME, a 10 MB message."""
    huge_token = "1-" + "a" * 16 + "-" + "b" * 200_000
    return [
        Hostile("huge-probe-header", _message(rng, f"{PROBE_HEADER}: {huge_token}")),
        Hostile(
            "repeated-probe-header",
            _message(rng, *[f"{PROBE_HEADER}: {_forged_token(rng)}" for _ in range(2000)]),
        ),
        Hostile(
            "huge-received-chain",
            _message(
                rng,
                *[
                    f"Received: from h{i}.elsewhere.test (h{i} [192.0.2.{i % 250}])"
                    f" by mx.elsewhere.test with ESMTPS id {i:x}; Mon, 7 Dec 2026 00:00:00 +0000"
                    for i in range(5000)
                ],
            ),
        ),
        Hostile("huge-subject", _message(rng, subject=f"{SUBJECT_MARK} {probe} " + "x" * 300_000)),
        Hostile("deep-mime", _nested(500)),
        Hostile(
            "ten-megabytes",
            _message(
                rng,
                f"{PROBE_HEADER}: {_forged_token(rng)}",
                subject=f"Re: {SUBJECT_MARK} {probe} {_forged_token(rng)}",
                body=("x" * 998 + "\r\n") * (TEN_MB // 1000),
            ),
        ),
    ]


def hostile_messages(
    seed: int,
    count: int,
    signer: TokenSigner,
    probes: Sequence[str],
    *,
    foreign_probe: str = "another-daemons-probe",
    big: bool = True,
) -> list[Hostile]:
    """``count`` hostile messages (the big ones first, if ``big``), the same for the same seed.

    ``signer`` is the watcher's own key: a few messages carry tokens it
    signed, but for ``foreign_probe`` (a probe the watcher does not watch)
    or in places that prove nothing (a report's top, a report naming
    another envelope id). ``probes`` are the names the watcher does watch.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    found = big_ones(rng, signer, probes[0]) if big else []
    stream = _kinds(rng, signer, probes, foreign_probe)
    while len(found) < count:
        found.append(next(stream))
    return [replace(one, flags=rng.choice(_FLAGS)) for one in found[:count]]
