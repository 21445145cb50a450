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
import hashlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from imapclient import IMAPClient

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import PROBE_HEADER, SUBJECT_MARK, TokenSigner
from smtp_probe.probe.result import Bounce
from smtp_probe.probe.spec import Mailbox, ProbeSpec
from smtp_probe.secret import Secret
from tests.support.mailstack import REFLECTOR, TRASH_FOLDER, MailStack
from tests.support.routes import SENDER, SINK, mailbox, probe, smtp_server

TEN_MB = 10 * 1024 * 1024
PLAIN, REFLECT = "plain", "reflect"
"""The probes a stuffed mailbox is watched for: an ordinary one and a reflector one."""
FOLDERS = ("INBOX", "Junk", TRASH_FOLDER)
"""sink's folders a snapshot covers: where a message could be, or be moved to."""

Snapshot = dict[str, dict[int, tuple[frozenset[bytes], bytes]]]
"""Folder -> UID -> (flags but ``\\Recent``, SHA-256 of the whole message)."""

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
                body=("x" * 998 + "\r\n") * (TEN_MB // 1000 + 1),
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


# ----------------------------------------------------------------------- the mailbox


def _client(stack: MailStack, user: str) -> IMAPClient:
    client = IMAPClient(
        stack.host, port=stack.imaps_port, ssl_context=stack.ssl_context(), timeout=60
    )
    client.login(user, stack.users[user])
    return client


def stuff(stack: MailStack, folder: str, messages: Sequence[Hostile], user: str = SINK) -> None:
    """APPEND ``messages`` to ``user``'s ``folder``, 200 per MULTIAPPEND (one by one is 5x slower)."""
    with _client(stack, user) as client:
        for first in range(0, len(messages), 200):
            client.multiappend(folder, [m.append_item() for m in messages[first : first + 200]])


def snapshot(stack: MailStack, user: str = SINK) -> Snapshot:
    r"""Every message of ``user``'s :data:`FOLDERS`: UID -> (flags but ``\Recent``, its SHA-256).

    Read-only selects and ``BODY.PEEK``: taking the snapshot changes nothing.
    """
    found: Snapshot = {}
    with _client(stack, user) as client:
        for folder in FOLDERS:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            messages: dict[int, tuple[frozenset[bytes], bytes]] = {}
            for first in range(0, len(uids), 500):
                fetched = client.fetch(uids[first : first + 500], ["FLAGS", "BODY.PEEK[]"])
                for uid, data in fetched.items():
                    flags = frozenset(data[b"FLAGS"]) - {b"\\Recent"}
                    messages[uid] = (flags, hashlib.sha256(data[b"BODY[]"]).digest())
            found[folder] = messages
    return found


def changed(before: Snapshot, after: Snapshot) -> dict[str, set[int]]:
    """Per folder, the UIDs that appeared, went away, or differ in flags or bytes."""
    return {
        folder: {
            uid
            for uid in before[folder].keys() | after[folder].keys()
            if before[folder].get(uid) != after[folder].get(uid)
        }
        for folder in FOLDERS
    }


def ordinary(count: int, folder: str) -> list[Hostile]:
    """Plain foreign mail: what most of a real mailbox is, after the hostile part."""
    return [
        Hostile(
            "ordinary",
            (
                f"From: friend{n}@elsewhere.test\r\nTo: {SINK}\r\nSubject: lunch {folder} {n}\r\n"
                f"Message-ID: <{folder}-{n}@elsewhere.test>\r\n\r\nsee you\r\n"
            ).encode(),
        )
        for n in range(count)
    ]


def our_leftovers(
    signer: TokenSigner, plain: str = PLAIN, reflect: str = REFLECT
) -> tuple[bytes, bytes, bytes]:
    """Ours, from an earlier life: a message and a report of ``plain``, a reply to ``reflect``.

    A persistent watcher's first sweep must find and delete all three.
    """
    message = (
        f"From: {SENDER}\r\nTo: {SINK}\r\n{PROBE_HEADER}: {signer.new(plain)}\r\n"
        "Subject: leftover\r\n\r\nours\r\n"
    ).encode()
    reply = (
        f"From: {REFLECTOR}\r\nTo: {SINK}\r\n"
        f"Subject: Auto: {SUBJECT_MARK} {reflect} {signer.new(reflect)}\r\n\r\nanswer\r\n"
    ).encode()
    report = (
        "From: MAILER-DAEMON@example.test\r\nTo: sink@example.test\r\n"
        "Message-ID: <leftover-report@example.test>\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n'
        "MIME-Version: 1.0\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nbounced\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n"
        "Final-Recipient: rfc822; nobody@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--r\r\nContent-Type: text/rfc822-headers\r\n\r\n{PROBE_HEADER}: {signer.new(plain)}\r\n"
        "\r\n--r--\r\n"
    ).encode()
    return message, reply, report


# ----------------------------------------------------------------------- watching it


def box_of(stack: MailStack, user: str) -> Mailbox:
    """The mailbox of ``user`` over IMAPS, with a short command timeout."""
    return replace(mailbox(stack), username=user, password=Secret(stack.users[user]))


def specs(stack: MailStack, box: Mailbox) -> tuple[ProbeSpec, ProbeSpec]:
    """A plain probe to ``box``'s user and a reflector probe answered to them, watched in ``box``."""
    user = box.username
    plain = replace(probe(stack, box=box, to=user, name=PLAIN), timeout=20.0)
    reflect = replace(
        probe(stack, smtp=smtp_server(stack, "mx"), box=box, to=REFLECTOR, name=REFLECT),
        mail_from=user,
        reflector=True,
        timeout=20.0,
    )
    return plain, reflect


def watcher_for(
    box: Mailbox, signer: TokenSigner, late: list[tuple[str, str, float]]
) -> MailboxWatcher:
    """A persistent watcher as the daemon makes it, looking for replies and reports as well."""

    def on_late(probe_name: str) -> None:
        late.append(("message", probe_name, time.monotonic()))

    def on_late_bounce(probe_name: str, bounce: Bounce) -> None:
        late.append(("report", probe_name, time.monotonic()))

    return MailboxWatcher(
        box,
        signer,
        persistent=True,
        probe_names=(PLAIN, REFLECT),
        reflector_probes=(REFLECT,),
        bounce_probes=(PLAIN,),
        on_late=on_late,
        on_late_bounce=on_late_bounce,
    )
