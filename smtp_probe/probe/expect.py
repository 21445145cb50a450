"""Expected refusals: what a policy probe expects, and what the server's answers mean.

A probe with ``expect`` or a built-in ``check`` (``open_relay``,
``auth_requires_tls``, ``sender_mismatch``) succeeds when the server
refuses it (outcome ``rejected``) and fails when the server takes what it
should have refused (``accepted_unexpectedly``). This module holds that
policy and nothing else: the built-in expectations, how each check changes
the server it talks to (no AUTH for an open-relay test, no TLS for the AUTH
test), where an unexpected acceptance stops, and the verdict read off a
refusal or an acceptance. The conversation is
:mod:`smtp_probe.probe.smtp`'s and the run's flow
:mod:`smtp_probe.probe.run`'s; this module imports neither, so the config
and ``check``'s flags can parse expectations without loading the engine.

``smtp_smuggling`` is not decided here (:mod:`smtp_probe.probe.smuggling`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeVar

from smtp_probe.probe.result import SMTP_STAGES, Outcome, SmtpReport, Stage
from smtp_probe.probe.spec import Expectation, PolicyCheck, ProbeSpec, SmtpServer, TlsMode

REJECT_STAGES: Final = tuple(
    stage for stage in SMTP_STAGES if stage not in (Stage.DNS, Stage.CONNECT)
)
"""Stages a refusal can be expected at (``reject_at``): each ends with a reply code.
``dns`` and ``connect`` have none, so no refusal there can match."""
DEFAULT_CODES: Final = ("5xx",)
"""The codes a refusal is expected with when none are given: any permanent refusal."""
TRANSACTION_STAGES: Final = (Stage.MAIL_FROM, Stage.RCPT_TO, Stage.DATA)
"""Where ``open_relay`` and ``sender_mismatch`` expect their refusal by default."""
AUTH_IN_CLEAR_REFUSALS: Final = ("500", "502", "503", "504", "530", "538")
"""Replies to an ``AUTH`` in the clear that mean "not here": unknown or
unavailable command (500, 502, 503), mechanism not offered (504),
authentication or encryption required first (530, 538; RFC 4954)."""
AUTH_IN_CLEAR_TAKEN: Final = frozenset({235, 334, 535})
"""Replies that show the server processing credentials in the clear: logged
in (235), asking for more (334), or checking and refusing them (535)."""

BUILT_IN: Final[Mapping[PolicyCheck, Expectation]] = MappingProxyType(
    {
        PolicyCheck.OPEN_RELAY: Expectation(TRANSACTION_STAGES, DEFAULT_CODES),
        PolicyCheck.SENDER_MISMATCH: Expectation(TRANSACTION_STAGES, DEFAULT_CODES),
        PolicyCheck.AUTH_REQUIRES_TLS: Expectation((Stage.AUTH,), AUTH_IN_CLEAR_REFUSALS),
    }
)
"""The refusal each built-in check expects when ``expect`` does not override it."""
OVERRIDABLE: Final = frozenset({PolicyCheck.OPEN_RELAY, PolicyCheck.SENDER_MISMATCH})
"""Checks whose stages and codes ``expect`` may override; the other two fix their own."""

_T = TypeVar("_T")
_S = TypeVar("_S", bound=enum.StrEnum)
_CODE: Final = re.compile(r"[45][0-9xX][0-9xX]")


def parse_code(value: object) -> str:
    """One reply code or class (``550``, ``"5xx"``, ``"55x"``) as the pattern ``Expectation`` takes.

    Raises:
        ValueError: not a 4xx/5xx code or class (a refusal is never 2xx or 3xx).
    """
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or _CODE.fullmatch(text) is None:
        raise ValueError(
            "not a refusal code: expected a 4xx or 5xx reply code like 550, "
            "or a class like 5xx or 55x"
        )
    return text.lower()


def parse_stage(text: str) -> Stage:
    """A ``reject_at`` stage by name.

    Raises:
        ValueError: not one of :data:`REJECT_STAGES` (with a did-you-mean).
    """
    return _named(text, REJECT_STAGES, "not an SMTP stage a refusal can come at")


def parse_check(text: str) -> PolicyCheck:
    """A built-in check by name.

    Raises:
        ValueError: not a :class:`PolicyCheck` (with a did-you-mean).
    """
    return _named(text, tuple(PolicyCheck), "unknown check")


def parse_expect_reject(text: str) -> Expectation:
    """``check --expect-reject``: ``STAGE[,STAGE][:CODE,CODE]``, e.g. ``rcpt_to:550,5xx``.

    Raises:
        ValueError: an empty part, an unknown stage or a bad code.
    """
    stages_text, _, codes_text = text.partition(":")
    stages = _unique(parse_stage(part.strip()) for part in stages_text.split(",") if part.strip())
    if not stages:
        raise ValueError("names no stage; expected STAGE[,STAGE][:CODE,CODE] like rcpt_to:550,5xx")
    codes: tuple[str, ...] = DEFAULT_CODES
    if ":" in text:
        codes = _unique(parse_code(part.strip()) for part in codes_text.split(",") if part.strip())
        if not codes:
            raise ValueError("names no code after ':'; expected codes like 550 or 5xx")
    return Expectation(_in_order(stages), codes)


def expectation(check: PolicyCheck | None, expect: Expectation | None) -> Expectation | None:
    """``ProbeSpec.expect`` of a probe: its own ``expect``, else its check's built-in one.

    ``smtp_smuggling`` has none: its verdict is the smuggling module's.
    """
    if expect is not None:
        return expect
    return BUILT_IN.get(check) if check is not None else None


def describe(expect: Expectation) -> str:
    """``rcpt_to (5xx)``, ``mail_from, rcpt_to or data (550 or 554)``: for reasons and notes."""
    return f"{_or([str(stage) for stage in expect.stages])} ({_or(list(expect.codes))})"


def server_for(spec: ProbeSpec) -> SmtpServer:
    """The server as the probe's check talks to it.

    ``open_relay`` never logs in (the test is what anyone may do);
    ``auth_requires_tls`` connects in the clear, whatever TLS the server
    is configured with, and offers only a dummy credential, so its own
    are dropped too. Everything else talks to the server as configured.
    """
    server = spec.smtp
    if spec.check is PolicyCheck.OPEN_RELAY:
        return dataclasses.replace(server, username=None, password=None, oauth=None)
    if spec.check is PolicyCheck.AUTH_REQUIRES_TLS:
        return dataclasses.replace(
            server, tls=TlsMode.NONE, username=None, password=None, oauth=None
        )
    return server


def stop_after(spec: ProbeSpec) -> Stage | None:
    """Where an unexpected acceptance ends the SMTP leg: the last expected stage.

    Without a mailbox nothing that could be cleaned up may be sent: the
    transaction stops after the last stage the refusal was expected at (an
    ``RSET`` and ``QUIT``; after ``DATA``'s ``354`` the connection is closed
    without the message). With a mailbox the message goes through, is
    confirmed and deleted like any other (``None``: no stop).
    """
    if spec.expect is None or spec.mailbox is not None:
        return None
    return _in_order(spec.expect.stages)[-1]


@dataclass(frozen=True, slots=True)
class Verdict:
    """How an expecting run ended: outcome, stage, reason (empty when refused as expected)."""

    outcome: Outcome
    stage: Stage | None
    reason: str
    note: str
    """The transcript's verdict line (without the ``===``)."""


def refused(
    expect: Expectation, stage: Stage, code: int | None, reason: str, report: SmtpReport
) -> Verdict:
    """The verdict on an SMTP leg that ended at ``stage``: with reply ``code``, or none.

    The expected refusal is a success (``rejected``). A refusal after every
    expected stage was passed (a probe with a mailbox sends on) leaves the
    acceptance the verdict. Anything else, a refusal at another stage or
    with another code, a timeout, a lost connection, is ``send_failed``
    there, saying what was expected and what came.
    """
    if expect.matches(stage, code):
        text = f"{code} {_first_line(report.reply)}".rstrip()
        return Verdict(Outcome.REJECTED, None, "", f"refused as expected at {stage}: {text}")
    passed = [s for s in expect.stages if _order(s) < _order(stage)]
    if len(passed) == len(expect.stages):
        accepted_at = _in_order(passed)[-1]
        why = f"accepted at {accepted_at}; expected a refusal at {describe(expect)}"
        return Verdict(
            Outcome.ACCEPTED_UNEXPECTEDLY,
            accepted_at,
            why,
            f"ACCEPTED UNEXPECTEDLY at {accepted_at} (later {stage}: {reason})",
        )
    got = f"{code} {_first_line(report.reply)}".rstrip() if code is not None else reason
    why = f"expected a refusal at {describe(expect)}; got {got} at {stage}"
    return Verdict(Outcome.SEND_FAILED, stage, why, f"FAILED at {stage}: {why}")


def accepted(expect: Expectation, report: SmtpReport) -> Verdict:
    """The verdict on an SMTP leg that ended without a refusal: ``accepted_unexpectedly``.

    It is blamed on the last expected stage the leg passed (every stage in
    ``report.stage_seconds`` was answered positively, since the leg ended
    without an error). A leg that never came to an expected stage (no AUTH
    without credentials) is blamed on the last stage it passed.
    """
    reached = [stage for stage in report.stage_seconds if stage in SMTP_STAGES]
    expected = [stage for stage in expect.stages if stage in reached]
    if expected:
        stage = _in_order(expected)[-1]
        why = f"accepted at {stage}; expected a refusal at {describe(expect)}"
    else:
        stage = _in_order(reached)[-1] if reached else expect.stages[-1]
        why = f"never refused: the session never came to {describe(expect)}"
    return Verdict(Outcome.ACCEPTED_UNEXPECTEDLY, stage, why, f"ACCEPTED UNEXPECTEDLY: {why}")


def auth_in_clear(expect: Expectation, offered: bool, code: int | None, reply: str) -> Verdict:
    """``auth_requires_tls``'s verdict: AUTH offered before STARTTLS, then the dummy AUTH's reply.

    ``offered``: the EHLO in the clear listed AUTH (``accepted_unexpectedly``
    at ``ehlo``). Else the reply ``code`` to ``AUTH PLAIN`` with a dummy
    credential: one of :data:`AUTH_IN_CLEAR_TAKEN` is ``accepted_unexpectedly``
    at ``auth``, an expected refusal is ``rejected``, anything else
    ``send_failed`` at ``auth``.
    """
    if offered:
        why = "the EHLO before STARTTLS offers AUTH"
        return Verdict(
            Outcome.ACCEPTED_UNEXPECTEDLY, Stage.EHLO, why, f"ACCEPTED UNEXPECTEDLY at ehlo: {why}"
        )
    text = f"{code} {_first_line(reply)}".rstrip() if code is not None else "no reply"
    if code in AUTH_IN_CLEAR_TAKEN:
        why = f"AUTH in the clear was processed ({text}); expected a refusal at {describe(expect)}"
        return Verdict(
            Outcome.ACCEPTED_UNEXPECTEDLY, Stage.AUTH, why, f"ACCEPTED UNEXPECTEDLY at auth: {why}"
        )
    if expect.matches(Stage.AUTH, code):
        return Verdict(Outcome.REJECTED, None, "", f"refused as expected at auth: {text}")
    why = f"expected a refusal at {describe(expect)}; got {text} at auth"
    return Verdict(Outcome.SEND_FAILED, Stage.AUTH, why, f"FAILED at auth: {why}")


def _order(stage: Stage) -> int:
    """Position in the SMTP session; a stage before it (``oauth``) comes first."""
    return SMTP_STAGES.index(stage) if stage in SMTP_STAGES else -1


def _in_order(stages: Iterable[Stage]) -> tuple[Stage, ...]:
    return tuple(sorted(stages, key=_order))


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _named(text: str, choices: tuple[_S, ...], problem: str) -> _S:
    """The choice whose value is ``text``.

    Raises:
        ValueError: none is; ``problem``, a did-you-mean and the choices.
    """
    for choice in choices:
        if text == choice.value:
            return choice
    names = [str(choice) for choice in choices]
    close = _closest(text, names)
    hint = f" (did you mean {close!r}?)" if close else ""
    raise ValueError(f"{problem}{hint}; expected one of {', '.join(names)}")


def _closest(word: str, choices: list[str]) -> str | None:
    import difflib  # here: only a misspelt name needs it

    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None
