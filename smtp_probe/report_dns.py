"""``smtp-probe check --dns-checks``: the DNS checks beside the run, in each output format.

The run is rendered by :mod:`smtp_probe.report` as always; this module adds
the DNS checks to it: a "DNS checks" block after the text transcript, a
``dns_checks`` list in the JSON, failing checks in the Nagios summary and
perfdata. A failing check makes the exit code at least WARNING; a run
that is worse keeps its own code.
"""

from __future__ import annotations

from typing import Any, Final

from smtp_probe import report as run_report
from smtp_probe.probe.result import DnsCheckResult, DnsReport, RunResult
from smtp_probe.report import ExitCode, as_dict, exit_code

_COLOURS: Final = {True: "\x1b[32m", False: "\x1b[33m"}
_RESET: Final = "\x1b[0m"


def combined_exit_code(
    result: RunResult, report: DnsReport | None, *, warning_seconds: float | None = None
) -> ExitCode:
    """The run's exit code, raised to WARNING when a DNS check failed."""
    code = exit_code(result, warning_seconds=warning_seconds)
    if report is not None and not report.success:
        return max(code, ExitCode.WARNING)
    return code


def failing(report: DnsReport) -> list[str]:
    """The names of the checks that failed, in the report's order."""
    return [result.check for result in report.results if not result.ok]


def check_line(result: DnsCheckResult) -> str:
    """``OK spf: pass for 127.0.0.1`` or ``FAILED dmarc: p=none, expected at least quarantine``."""
    return f"{'OK' if result.ok else 'FAILED'} {result.check}: {result.reason}"


def render_text(report: DnsReport, *, colour: bool, verbose: bool = False) -> str:
    """The "DNS checks" block: one line per check, its evidence indented with ``verbose``."""
    lines = ["", "DNS checks:"]
    for result in report.results:
        line = check_line(result)
        lines.append(f"{_COLOURS[result.ok]}{line}{_RESET}" if colour else line)
        if verbose:
            lines.extend(f"    {evidence}" for evidence in result.evidence)
    bad = failing(report)
    summary = (
        f"WARNING: DNS checks failing: {', '.join(bad)}"
        if bad
        else f"OK: {len(report.results)} DNS check(s) passed"
    )
    lines.append(f"{_COLOURS[not bad]}{summary}{_RESET}" if colour else summary)
    return "\n".join(lines)


def as_dicts(report: DnsReport) -> list[dict[str, Any]]:
    """The JSON shape of ``dns_checks`` (a public contract): one object per check."""
    return [
        {
            "check": result.check,
            "ok": result.ok,
            "reason": result.reason,
            "evidence": list(result.evidence),
            "policy": result.policy,
            "listed": [zone for zone, listed in result.listed if listed],
            "seconds": round(result.seconds, 6),
        }
        for result in report.results
    ]


def render_json(
    result: RunResult, report: DnsReport, *, warning_seconds: float | None = None
) -> str:
    """The run's JSON object with ``dns_checks`` added and ``exit_code`` combined."""
    import json  # here: only --format json needs it

    shape = as_dict(result, warning_seconds=warning_seconds)
    shape["exit_code"] = int(combined_exit_code(result, report, warning_seconds=warning_seconds))
    shape["dns_checks"] = as_dicts(report)
    return json.dumps(shape, ensure_ascii=False)


def render_nagios(
    result: RunResult,
    report: DnsReport,
    *,
    verbose: bool = False,
    warning_seconds: float | None = None,
) -> str:
    """The run's Nagios line with the combined status, failing checks and DNS perfdata.

    ``dns_failed`` counts failing checks; with ``verbose`` each check's line
    follows the run's transcript.
    """
    line = run_report.render_nagios(result, verbose=verbose, warning_seconds=warning_seconds)
    first, _, long_output = line.partition("\n")
    head, _, perf = first.partition(" | ")
    run_code = exit_code(result, warning_seconds=warning_seconds)
    code = combined_exit_code(result, report, warning_seconds=warning_seconds)
    head = head.replace(f"SMTP-PROBE {run_code.name} - ", f"SMTP-PROBE {code.name} - ", 1)
    bad = failing(report)
    if bad:
        head += f"; DNS checks failing: {', '.join(bad)}"
    else:
        head += f"; {len(report.results)} DNS check(s) ok"
    perf += f" dns_failed={len(bad)};;;0;{len(report.results)}"
    out = f"{head} | {perf}"
    if verbose:
        checks = "\n".join(check_line(r).replace("|", "/") for r in report.results)
        out += "\n" + "\n".join(filter(None, [long_output, checks]))
    return out
