"""Turn a RunResult into what a person or a monitoring system reads.

Three shapes: the telnet-like text transcript with a verdict line, one JSON
object, and a Nagios/monitoring-plugin line with performance data. Also the
monitoring-plugin exit code of a result.
"""

from __future__ import annotations

import enum
import time
from datetime import UTC, datetime
from typing import Any, Final

from smtp_probe.probe.result import AuthVerdict, Bounce, Hop, Outcome, RunResult, TlsFacts, Verdicts
from smtp_probe.probe.transcript import Direction


class ExitCode(enum.IntEnum):
    """Monitoring-plugin exit codes (a public contract)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


_COLOURS: Final = {
    ExitCode.OK: "\x1b[32m",
    ExitCode.WARNING: "\x1b[33m",
    ExitCode.CRITICAL: "\x1b[31m",
    ExitCode.UNKNOWN: "\x1b[35m",
}
_DIM: Final = "\x1b[2m"
_RESET: Final = "\x1b[0m"


def exit_code(result: RunResult, *, warning_seconds: float | None = None) -> ExitCode:
    """OK when delivered, sent or rejected; WARNING when slow, junk, throttled or auth_failed; else CRITICAL.

    ``rejected`` is a policy probe refused as it expects: OK.
    ``accepted_unexpectedly`` (an open relay, AUTH in the clear...) is CRITICAL.

    Throttling is a server asking us to slow down for now, not a broken
    route: a warning, like a slow delivery. A message that arrived without
    the authentication results the probe requires did arrive: a warning too.
    route: a warning, like a slow delivery. ``bounced`` (a failed delivery
    status notification came back) is CRITICAL, like ``not_delivered``.
    """
    if result.outcome in (Outcome.JUNK, Outcome.THROTTLED, Outcome.AUTH_FAILED):
        return ExitCode.WARNING
    if result.outcome is Outcome.DELIVERED:
        slow = (
            warning_seconds is not None
            and result.delivery_seconds is not None
            and result.delivery_seconds > warning_seconds
        )
        return ExitCode.WARNING if slow else ExitCode.OK
    if result.outcome in (Outcome.SENT, Outcome.REJECTED):
        return ExitCode.OK
    return ExitCode.CRITICAL


def verdict(result: RunResult, *, warning_seconds: float | None = None) -> str:
    """One line saying how the run went, in words an operator can act on."""
    code = exit_code(result, warning_seconds=warning_seconds)
    smtp = result.smtp
    queue = f", queue id {smtp.queue_id}" if smtp.queue_id else ""
    total = f"run {result.duration_seconds * 1000:.0f} ms"
    if result.outcome in (Outcome.DELIVERED, Outcome.JUNK) and result.delivery_seconds is not None:
        where = result.folder or "?"
        what = "delivered into JUNK folder" if result.outcome is Outcome.JUNK else "delivered to"
        slow = ""
        if code is ExitCode.WARNING and result.outcome is Outcome.DELIVERED:
            slow = f" (slower than {warning_seconds:g}s)"
        legs = result.reflector
        via = ""
        if legs is not None:
            via = (
                f" (via the reflector: out {_ms(legs.outbound_seconds)}, "
                f"back {_ms(legs.return_seconds)})"
            )
        return (
            f"{code.name}: {what} {where} {_ms(result.delivery_seconds)} after the 250{slow}"
            f"{via}{queue}; {total}"
        )
    if result.outcome is Outcome.SENT:
        return f"{code.name}: accepted by SMTP ({smtp.reply_code}){queue}; delivery not checked; {total}"
    policy = f"{result.policy_check}: " if result.policy_check else ""
    if result.outcome is Outcome.REJECTED:
        refusal = f"{smtp.reply_code} {smtp.reply.splitlines()[0] if smtp.reply else ''}".rstrip()
        return f"{code.name}: {policy}refused as expected ({refusal}); {total}"
    reply = f" [{smtp.reply_code}]" if smtp.reply_code and smtp.reply_code >= 400 else ""
    return (
        f"{code.name}: {policy}{result.outcome} at {result.stage}{reply}: {result.error}"
        f"{queue}; {total}"
    )


def render_text(
    result: RunResult, *, colour: bool, verbose: bool = False, warning_seconds: float | None = None
) -> str:
    """The session as a telnet transcript, then the verdict line."""
    lines: list[str] = []
    for line in result.transcript.lines:
        text = line.render()
        if colour and line.direction is Direction.NOTE:
            text = f"{_DIM}{text}{_RESET}"
        lines.append(text)
    if verbose:
        lines.extend(_details(result))
    code = exit_code(result, warning_seconds=warning_seconds)
    final = verdict(result, warning_seconds=warning_seconds)
    lines.append(f"{_COLOURS[code]}{final}{_RESET}" if colour else final)
    return "\n".join(lines)


def _details(result: RunResult) -> list[str]:
    out = ["", "stage timings:"]
    out.extend(
        f"  {stage:<10} {_ms(seconds)}" for stage, seconds in result.smtp.stage_seconds.items()
    )
    if result.arrival is not None:
        arrival = result.arrival
        if arrival.internaldate is not None:
            out.append(f"INTERNALDATE: {arrival.internaldate.isoformat()}")
        if arrival.received:
            out.append("Received (newest first):")
            out.extend(f"  {header}" for header in arrival.received)
        if arrival.hops:
            out.extend(hop_table(arrival.hops))
    if result.bounces:
        out.append("delivery status notifications:")
        out.extend(
            f"  {bounce.action} {bounce.status} "
            f"recipient={bounce.recipient or '?'} remote-mta={bounce.remote_mta or '?'} "
            f"reporting-mta={bounce.reporting_mta or '?'}"
            + (f"\n    {bounce.diagnostic}" if bounce.diagnostic else "")
            for bounce in result.bounces
        )
    out.append("")
    return out


HOPS_CAVEAT: Final = (
    "a delay is the time from the previous hop's stamp to this one's, in whole seconds "
    "from each host's own clock: diagnosis, not the delivery time, which is measured on ours"
)
"""What every display of hops says about their times."""


def hop_table(hops: tuple[Hop, ...]) -> list[str]:
    """The hops as a compact text table (index, by, with, TLS, delay, clock skew), oldest first."""
    rows = [("#", "by", "with", "TLS", "delay", "")]
    for index, hop in enumerate(hops):
        rows.append((
            str(index),
            hop.by or "?",
            hop.with_ or "?",
            "yes" if hop.tls else "no",
            hop_delay(hop, first=index == 0),
            "clock skew" if hop.skewed else "",
        ))  # fmt: skip
    widths = [min(max(len(row[col]) for row in rows), 48) for col in range(5)]
    lines = [f"hops (oldest first; {HOPS_CAVEAT}):"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("  " + "  ".join([*cells, row[5]])).rstrip())
    return lines


def hop_delay(hop: Hop, *, first: bool) -> str:
    """A hop's delay as words: ``3 s``, ``-`` or ``?``.

    ``-`` for the first hop (nothing before it to measure from); ``?``
    when a time is missing or the clocks disagree.
    """
    if hop.delay_seconds is not None:
        return f"{hop.delay_seconds:g} s"
    return "-" if first else "?"


def hop_dict(hop: Hop) -> dict[str, Any]:
    """The JSON shape of one hop (``imap.hops``)."""
    return {
        "by": hop.by,
        "from": hop.from_,
        "with": hop.with_,
        "tls": hop.tls,
        "at": None if hop.at is None else datetime.fromtimestamp(hop.at, UTC).isoformat(),
        "delay_seconds": hop.delay_seconds,
        "skewed": hop.skewed,
    }


def as_dict(result: RunResult, *, warning_seconds: float | None = None) -> dict[str, Any]:
    """The JSON shape of ``check --format json`` (a public contract)."""
    smtp = result.smtp
    arrival = result.arrival
    return {
        "probe": result.probe,
        "run_id": result.run_id,
        "outcome": str(result.outcome),
        "success": result.success,
        "stage": str(result.stage) if result.stage else None,
        "error": result.error or None,
        "exit_code": int(exit_code(result, warning_seconds=warning_seconds)),
        "policy_check": result.policy_check,
        "started_at": result.started_at.isoformat(),
        "duration_seconds": round(result.duration_seconds, 6),
        "smtp": {
            "reply_code": smtp.reply_code,
            "reply": smtp.reply,
            "queue_id": smtp.queue_id,
            "tls_version": smtp.tls_version,
            "tls": tls_dict(smtp.tls),
            "stage_seconds": {str(k): round(v, 6) for k, v in smtp.stage_seconds.items()},
        },
        "delivery_seconds": (
            round(result.delivery_seconds, 6) if result.delivery_seconds is not None else None
        ),
        "folder": result.folder,
        "reflector": None
        if result.reflector is None
        else {
            "outbound_seconds": round(result.reflector.outbound_seconds, 6),
            "return_seconds": round(result.reflector.return_seconds, 6),
        },
        "imap": None
        if arrival is None
        else {
            "uid": arrival.uid,
            "internaldate": arrival.internaldate.isoformat() if arrival.internaldate else None,
            "received": list(arrival.received),
            "hops": [hop_dict(hop) for hop in arrival.hops],
            "deleted": arrival.deleted,
            "tls": tls_dict(arrival.tls),
            "verdicts": verdicts_dict(arrival.verdicts),
        },
        "bounces": [bounce_dict(bounce) for bounce in result.bounces],
        "transcript": result.transcript.render(),
    }


def bounce_dict(bounce: Bounce) -> dict[str, Any]:
    """The JSON shape of one delivery status notification (``bounces[]``)."""
    return {
        "action": bounce.action,
        "status": bounce.status,
        "status_class": bounce.status_class,
        "recipient": bounce.recipient,
        "remote_mta": bounce.remote_mta,
        "diagnostic": bounce.diagnostic,
        "reporting_mta": bounce.reporting_mta,
    }


def render_json(result: RunResult, *, warning_seconds: float | None = None) -> str:
    """One JSON object, on one line."""
    import json  # here: only --format json needs it, and check is started every minute

    return json.dumps(as_dict(result, warning_seconds=warning_seconds), ensure_ascii=False)


def render_nagios(
    result: RunResult, *, verbose: bool = False, warning_seconds: float | None = None
) -> str:
    """``SMTP-PROBE OK - … | perfdata``, with the transcript as long output when verbose."""
    code = exit_code(result, warning_seconds=warning_seconds)
    message = verdict(result, warning_seconds=warning_seconds).split(": ", 1)[1]
    perf = [f"duration={result.duration_seconds:.6f}s;;;0"]
    if result.delivery_seconds is not None:
        warn = f"{warning_seconds:g}" if warning_seconds is not None else ""
        perf.insert(0, f"delivery={result.delivery_seconds:.6f}s;{warn};;0")
    if result.reflector is not None:
        perf.insert(1, f"outbound={result.reflector.outbound_seconds:.6f}s;;;0")
        perf.insert(2, f"return={result.reflector.return_seconds:.6f}s;;;0")
    perf.extend(
        f"{stage}={seconds:.6f}s;;;0" for stage, seconds in result.smtp.stage_seconds.items()
    )
    line = f"SMTP-PROBE {code.name} - {message.replace('|', '/')} | {' '.join(perf)}"
    if verbose:
        line += "\n" + "\n".join(text.replace("|", "/") for text in result.transcript.render())
    return line


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdicts_dict(verdicts: Verdicts | None) -> dict[str, Any] | None:
    """The JSON shape of the arrived message's verdicts (``imap.verdicts``)."""
    if verdicts is None:
        return None

    def one(verdict: AuthVerdict | None) -> dict[str, str] | None:
        if verdict is None:
            return None
        return {"method": verdict.method, "result": verdict.result, "detail": verdict.detail}

    return {
        "authserv_id": verdicts.authserv_id,
        "results": [one(verdict) for verdict in verdicts.results],
        "ignored": verdicts.ignored,
        "spam_score": verdicts.spam_score,
        "spam_threshold": verdicts.spam_threshold,
        "spam_source": verdicts.spam_source,
        "own_dkim": one(verdicts.own_dkim),
        "notes": list(verdicts.notes),
    }


def tls_dict(facts: TlsFacts | None, now: float | None = None) -> dict[str, Any] | None:
    """The JSON shape of one leg's TLS facts (``smtp.tls``, ``imap.tls``); ``None`` without TLS.

    ``days_left`` counts from ``now`` (epoch seconds; the current time by default).
    """
    if facts is None:
        return None
    left = facts.days_left(time.time() if now is None else now)
    return {
        "version": facts.version,
        "cipher": facts.cipher,
        "subject": facts.subject,
        "issuer": facts.issuer,
        "not_after": None
        if facts.not_after is None
        else datetime.fromtimestamp(facts.not_after, UTC).isoformat(),
        "days_left": None if left is None else round(left, 3),
        "verified": facts.verified,
        "chain_length": facts.chain_length,
        "expiring_subject": facts.expiring_subject or None,
    }
