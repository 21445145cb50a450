"""The multi-hop test route itself (tests/support/hopstack.py), with plain SMTP and the Maildir.

These tests pin what the real servers write - the Received chain, rspamd's
Authentication-Results and spam headers, Postfix's DSNs - so that the
smtp_probe tests built on the route can rely on it.  No smtp_probe code is
involved: messages go out with smtplib and are read from Dovecot's Maildir;
each test deletes its own mail over IMAP (the ``hops`` fixture checks it).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import smtplib
import time
import uuid
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime

import dns.exception
import dns.resolver
import pytest

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome
from smtp_probe.probe.run import run_probe
from tests.support.dns_server import TTL
from tests.support.hop_routes import hop_probe
from tests.support.hopstack import (
    AUTHSERV_ID,
    BOUNCE,
    DELAY_WARNING_SECONDS,
    DELAYED,
    DKIM_DOMAIN,
    DKIM_SELECTOR,
    INBOUND,
    INBOUND_HOSTNAME,
    SENDER,
    SUBMISSION,
    SUBMISSION_HOSTNAME,
    TEST_HEADER,
    UNKNOWN,
    HopStack,
)

SINK = "sink@example.test"
#: seconds a message is held at the inbound hop in the delay test
HOLD_SECONDS = 3


def _send(
    hops: HopStack,
    to: str,
    tag: str,
    *,
    extra: str = "",
    mail_options: tuple[str, ...] = (),
    rcpt_options: tuple[str, ...] = (),
) -> None:
    """Submit a tagged message as SENDER at the submission hop (STARTTLS + AUTH PLAIN)."""
    raw = (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: hopstack {tag}\r\n"
        f"Message-ID: <{tag}@example.test>\r\n{TEST_HEADER}: {tag}\r\n{extra}\r\nhello\r\n"
    ).encode()
    with smtplib.SMTP(hops.host, hops.submission_port, timeout=15) as smtp:
        smtp.starttls(context=hops.mailstack.ssl_context())
        smtp.login(*hops.credentials)
        smtp.sendmail(SENDER, [to], raw, mail_options=mail_options, rcpt_options=rcpt_options)


def _arrived(hops: HopStack, user: str, tag: str, timeout: float = 20.0) -> EmailMessage:
    """The one message in ``user``'s INBOX containing ``tag``, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [raw for raw in hops.mailstack.maildir_messages(user) if tag.encode() in raw]
        if found:
            assert len(found) == 1, f"{len(found)} messages with {tag} in {user}'s INBOX"
            parsed = email.message_from_bytes(found[0], policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            return parsed
        if time.monotonic() > deadline:
            raise AssertionError(
                f"nothing with {tag} reached {user} in {timeout}s; queues {hops.queues()}\n"
                + hops.logs()
            )
        time.sleep(0.05)


def _unfolded(message: Message, name: str) -> list[str]:
    """Every ``name`` header, whitespace-folded to single blanks."""
    return [" ".join(str(value).split()) for value in message.get_all(name, [])]


def _received_times(received: list[str]) -> list[datetime]:
    """The timestamps after the last ``;`` of each Received line (newest first)."""
    return [parsedate_to_datetime(line.rsplit(";", 1)[1].strip()) for line in received]


def _our_results(message: Message) -> dict[str, str]:
    """Map method -> result from the one Authentication-Results header of AUTHSERV_ID."""
    ours = [
        line
        for line in _unfolded(message, "Authentication-Results")
        if line.split(";", 1)[0].strip() == AUTHSERV_ID
    ]
    assert len(ours) == 1, _unfolded(message, "Authentication-Results")
    return dict(re.findall(r"\b(dkim|spf|dmarc|arc)=(\w+)", ours[0]))


def _delivery_status(dsn: EmailMessage) -> tuple[Message, Message, str]:
    """(per-message fields, the one per-recipient block, returned headers) of a DSN."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = [part for part in dsn.iter_parts() if isinstance(part, Message)]
    kinds = [part.get_content_type() for part in parts]
    assert kinds == ["text/plain", "message/delivery-status", "text/rfc822-headers"], kinds
    blocks = [block for block in parts[1].get_payload() if isinstance(block, Message)]
    assert len(blocks) == 2, blocks
    returned = parts[2].get_payload(decode=True)
    assert isinstance(returned, bytes)
    return blocks[0], blocks[1], returned.decode()


def _tag() -> str:
    return "hs" + uuid.uuid4().hex[:16]


def test_route_has_four_received_lines_and_passing_verdicts(hops: HopStack) -> None:
    """Submission -> inbound -> MX -> LMTP; rspamd signs, then says dkim/spf/dmarc pass."""
    tag = _tag()
    _send(hops, SINK, tag)
    try:
        message = _arrived(hops, "sink", tag)
        received = _unfolded(message, "Received")
        by = [re.search(r"\bby (\S+)", line).group(1) for line in received]  # type: ignore[union-attr]
        with_ = [re.search(r"\bwith ([A-Z]+)\b", line).group(1) for line in received]  # type: ignore[union-attr]
        assert by == ["mx.example.test", "mx.example.test", INBOUND_HOSTNAME, SUBMISSION_HOSTNAME]
        assert with_ == ["LMTP", "ESMTPS", "ESMTPS", "ESMTPSA"]
        assert _our_results(message) == {"dkim": "pass", "spf": "pass", "dmarc": "pass"}
        (signature,) = _unfolded(message, "DKIM-Signature")
        assert f"d={DKIM_DOMAIN};" in signature
        assert f"s={DKIM_SELECTOR};" in signature
        assert re.fullmatch(r"No, score=-?\d+\.\d\d", str(message["X-Spam-Status"]))
        spamd = _unfolded(message, "X-Spamd-Result")
        assert len(spamd) == 1
        assert re.match(r"default: False \[-?\d+\.\d\d / 15\.00\];", spamd[0])
        assert "R_DKIM_ALLOW" in spamd[0]
        assert "R_SPF_ALLOW" in spamd[0]
    finally:
        assert hops.delete_mail("sink", tag) == 1


def test_a_sender_written_authentication_results_arrives_beside_the_receivers(
    hops: HopStack,
) -> None:
    """The filter leaves foreign A-R headers alone: the probe must pick by authserv-id itself."""
    tag = _tag()
    forged = "Authentication-Results: forger.example.net; dkim=fail; spf=fail; dmarc=fail\r\n"
    _send(hops, SINK, tag, extra=forged)
    try:
        message = _arrived(hops, "sink", tag)
        headers = _unfolded(message, "Authentication-Results")
        assert len(headers) == 2
        assert "forger.example.net; dkim=fail; spf=fail; dmarc=fail" in headers
        assert _our_results(message) == {"dkim": "pass", "spf": "pass", "dmarc": "pass"}
    finally:
        assert hops.delete_mail("sink", tag) == 1


def test_removed_dkim_key_is_not_a_pass(hops: HopStack) -> None:
    """No key in DNS: rspamd says dkim=none (not fail); SPF still passes, so DMARC does too."""
    tag = _tag()
    with hops.dkim_key_removed():
        _send(hops, SINK, tag)
        try:
            message = _arrived(hops, "sink", tag)
            assert _our_results(message) == {"dkim": "none", "spf": "pass", "dmarc": "pass"}
            assert 'dkim=none ("invalid DKIM record") header.d=example.test' in " ".join(
                _unfolded(message, "Authentication-Results")
            )
            assert "R_DKIM_PERMFAIL" in _unfolded(message, "X-Spamd-Result")[0]
        finally:
            assert hops.delete_mail("sink", tag) == 1


def test_replaced_dkim_key_fails_the_signature(hops: HopStack) -> None:
    """Another key under the selector: dkim=fail, R_DKIM_REJECT."""
    tag = _tag()
    with hops.dkim_key_replaced():
        _send(hops, SINK, tag)
        try:
            message = _arrived(hops, "sink", tag)
            assert _our_results(message) == {"dkim": "fail", "spf": "pass", "dmarc": "pass"}
            assert "R_DKIM_REJECT" in _unfolded(message, "X-Spamd-Result")[0]
        finally:
            assert hops.delete_mail("sink", tag) == 1


@pytest.mark.parametrize("hop", [SUBMISSION, INBOUND])
def test_a_hold_at_a_hop_shows_in_the_next_hops_received_time(hops: HopStack, hop: str) -> None:
    """Held 3 s after the hop stamped its Received line: the next hop's stamp is that much later."""
    tag = _tag()
    with hops.held(hop):
        _send(hops, SINK, tag)
        hops.wait_queued(hop, "hold")
        time.sleep(HOLD_SECONDS)
    try:
        message = _arrived(hops, "sink", tag)
        lmtp, mx, inbound, submission = _received_times(_unfolded(message, "Received"))
        gaps = {
            SUBMISSION: (inbound - submission).total_seconds(),
            INBOUND: (mx - inbound).total_seconds(),
            "mx": (lmtp - mx).total_seconds(),
        }
        held = gaps.pop(hop)
        # Received times are whole seconds: a 3 s hold shows as 2..4 s
        assert HOLD_SECONDS - 1 <= held <= HOLD_SECONDS + 1, gaps
        assert all(0 <= gap <= 1 for gap in gaps.values()), gaps
    finally:
        assert hops.delete_mail("sink", tag) == 1


@pytest.mark.parametrize(
    ("recipient", "reporting_mta", "diagnostic"),
    [
        # refused by Dovecot's LMTP after every Postfix said 250
        (BOUNCE, "mx.example.test", "550 5.1.1 <bounce@example.test> User doesn't exist"),
        # refused at RCPT by the last hop: the inbound hop bounces it
        (UNKNOWN, INBOUND_HOSTNAME, "550 5.1.1 <unknown@example.test>: Recipient address rejected"),
    ],
)
def test_a_recipient_unknown_at_the_last_hop_bounces_to_the_sender(
    hops: HopStack, recipient: str, reporting_mta: str, diagnostic: str
) -> None:
    """A real RFC 3464 DSN (5.1.1, our ENVID, our headers) reaches the sender's INBOX."""
    tag = _tag()
    _send(
        hops,
        recipient,
        tag,
        mail_options=("RET=HDRS", f"ENVID={tag}"),
        rcpt_options=("NOTIFY=FAILURE,DELAY",),
    )
    try:
        dsn = _arrived(hops, "probe", tag)
        per_message, per_recipient, returned = _delivery_status(dsn)
        assert per_message["Reporting-MTA"] == f"dns; {reporting_mta}"
        assert per_message["Original-Envelope-Id"] == tag
        assert per_recipient["Final-Recipient"] == f"rfc822; {recipient}"
        assert per_recipient["Action"] == "failed"
        assert per_recipient["Status"] == "5.1.1"
        assert diagnostic in " ".join(str(per_recipient["Diagnostic-Code"]).split())
        assert f"{TEST_HEADER}: {tag}" in returned
        assert "hello" not in str(dsn)  # RET=HDRS: headers only
        assert not [raw for raw in hops.mailstack.maildir_messages("sink") if tag.encode() in raw]
    finally:
        assert hops.delete_mail("probe", tag) == 1


def test_a_deferred_hop_sends_a_delayed_dsn_and_keeps_the_message(hops: HopStack) -> None:
    """The inbound hop cannot reach DELAYED's next hop: a ``delayed`` DSN, no bounce."""
    tag = _tag()
    _send(
        hops,
        DELAYED,
        tag,
        mail_options=("RET=HDRS", f"ENVID={tag}"),
        rcpt_options=("NOTIFY=FAILURE,DELAY",),
    )
    try:
        began = time.monotonic()
        dsn = _arrived(hops, "probe", tag, timeout=DELAY_WARNING_SECONDS + 15)
        per_message, per_recipient, returned = _delivery_status(dsn)
        assert time.monotonic() - began < DELAY_WARNING_SECONDS + 10
        assert per_message["Reporting-MTA"] == f"dns; {INBOUND_HOSTNAME}"
        assert per_message["Original-Envelope-Id"] == tag
        assert per_recipient["Action"] == "delayed"
        assert per_recipient["Status"] == "4.4.1"
        assert str(dsn["Subject"]).startswith("Delayed Mail")
        assert f"{TEST_HEADER}: {tag}" in returned
        (queued,) = hops.queue(INBOUND)
        assert queued["queue_name"] in ("deferred", "active")
        assert queued["recipients"][0]["address"] == DELAYED
    finally:
        hops.delete_queued(INBOUND)
        assert hops.delete_mail("probe", tag) == 1


def test_dns_server_changes_are_live_and_other_names_refused(hopstack: HopStack) -> None:
    """set_txt/remove take effect at once; a long TXT comes back whole; no recursion."""
    resolver = dns.resolver.Resolver(configure=False)
    host, port = hopstack.dns.address
    resolver.nameservers, resolver.port = [host], port
    resolver.cache = None
    answer = resolver.resolve(f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}", "TXT")
    assert b"".join(answer[0].strings).decode() == hopstack.dkim_txt
    assert answer.rrset is not None
    assert answer.rrset.ttl == TTL
    value = "x" * 600
    hopstack.dns.set_txt("harness-check", value)
    try:
        answer = resolver.resolve(f"harness-check.{DKIM_DOMAIN}", "TXT")
        assert [len(s) for s in answer[0].strings] == [255, 255, 90]
    finally:
        hopstack.dns.remove("harness-check")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(f"harness-check.{DKIM_DOMAIN}", "TXT")
    with pytest.raises((dns.resolver.NoNameservers, dns.exception.Timeout)):
        resolver.resolve("example.com", "A", lifetime=3)
    (mx,) = resolver.resolve(DKIM_DOMAIN, "MX")
    assert mx.to_text() == "10 mx.example.test."


def test_a_smtp_probe_run_through_the_route_is_delivered(hops: HopStack) -> None:
    """hop_routes' spec works with the real engine: delivered, 4 Received lines, deleted."""
    result = asyncio.run(run_probe(hop_probe(hops), signer=TokenSigner()))
    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.arrival is not None
    assert result.arrival.deleted
    assert len(result.arrival.received) == 4
    assert f"by {SUBMISSION_HOSTNAME} (Postfix) with ESMTPSA" in result.arrival.received[-1]
