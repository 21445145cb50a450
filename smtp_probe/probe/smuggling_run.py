"""One run of an ``smtp_smuggling`` probe: every variant, then the mailbox decides.

The mailbox is watched before anything is sent (as in every run), and both
tokens of every variant (the carrier's and the smuggled message's) are
registered with the watcher first, so neither can slip by or be swept away
as a leftover. Then one session per variant (:mod:`.smuggling`), then the
mailbox is watched until every variant is decided or the run deadline:

* **vulnerable**: the smuggled message arrived (its own signed token), or
  the server acknowledged it with a ``250`` after its ``DATA`` (then it is
  awaited too, for its clean-up);
* **safe**: the server refused the carrier (``521``, a disconnect); or the
  carrier arrived with the smuggled message's token inside its body (the
  server read it all as one message); or the server ended the carrier early
  but refused the smuggled transaction; or the deadline passed without the
  smuggled message.

Once any smuggled message has arrived the outcome is known, and only what
the server acknowledged is still awaited (to delete it). Both messages are
ours and deleted by UID after their signature is verified, like any probe
message; one that comes after the run is a late message (deleted, counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from smtp_probe.probe.credentials import AccessToken, TokenError, obtain
from smtp_probe.probe.message import Token, TokenSigner, build_message
from smtp_probe.probe.result import (
    Arrival,
    Outcome,
    RunResult,
    SmtpReport,
    SmugglingVerdict,
    Stage,
)
from smtp_probe.probe.slots import Slots, SlotTimeout
from smtp_probe.probe.smuggling import VARIANTS, Attempt, escape, try_variant, unknown_variants
from smtp_probe.probe.spec import Mailbox, PolicyCheck, ProbeSpec
from smtp_probe.probe.transcript import Transcript

if TYPE_CHECKING:
    from smtp_probe.probe.imap import Expected, MailboxWatcher

_CARRIER = "carrier"
_SMUGGLED = "smuggled"


@dataclass
class _Variant:
    """One variant's tokens, session and what the mailbox showed of it."""

    name: str
    carrier_token: Token
    smuggled_token: Token
    expected: dict[str, Expected] = field(default_factory=dict)
    """The watcher registrations, by kind (carrier, smuggled)."""
    attempt: Attempt | None = None
    carrier: Arrival | None = None
    smuggled: Arrival | None = None
    swallowed: bool = False
    """The carrier arrived with the smuggled message's token in its body."""

    def wanted(self, run_vulnerable: bool) -> list[str]:
        """Which of its messages the run still waits for (see the module docstring)."""
        attempt = self.attempt
        if attempt is None or not attempt.written:
            return []
        carrier = [_CARRIER] if attempt.carrier_accepted and self.carrier is None else []
        if self.smuggled is not None:
            return carrier
        if attempt.smuggled_accepted:
            return [*carrier, _SMUGGLED]
        if run_vulnerable or not attempt.carrier_accepted:
            return carrier
        if self.carrier is None:
            return [_CARRIER, _SMUGGLED]
        if self.swallowed or attempt.ended_early:
            return []
        return [_SMUGGLED]

    def verdict(self, attempt: Attempt) -> SmugglingVerdict:
        """What this variant proved, by its ``attempt`` (whose content was sent)."""
        replies = f"replies {attempt.describe()}"
        if self.smuggled is not None:
            return SmugglingVerdict(
                self.name,
                True,
                f"the smuggled message (token {self.smuggled_token.run_id}) arrived in "
                f"{self.smuggled.folder}; {replies}",
            )
        if attempt.smuggled_accepted:
            return SmugglingVerdict(
                self.name,
                True,
                f"the server queued the smuggled message ({replies}); "
                "it was not in the mailbox by the deadline",
            )
        if not attempt.carrier_accepted:
            failure = attempt.failure
            why = failure.reason if failure is not None else replies
            # A refusal (521, a hang-up) is the server's answer; silence is not.
            return SmugglingVerdict(
                self.name, False, f"{'not answered' if attempt.unanswered else 'refused'}: {why}"
            )
        if self.swallowed:
            return SmugglingVerdict(
                self.name,
                False,
                f"one message: the smuggled one arrived inside the carrier's body; {replies}",
            )
        if attempt.ended_early:
            return SmugglingVerdict(
                self.name,
                False,
                f"the server ended DATA at {escape(VARIANTS[self.name])} but refused the "
                f"smuggled message; {replies}",
            )
        seen = "carrier arrived without it" if self.carrier else "carrier not seen either"
        return SmugglingVerdict(
            self.name, False, f"no smuggled message by the deadline ({seen}); {replies}"
        )


class _SmugglingRun:
    """One smuggling run's facts, written down as they happen."""

    def __init__(
        self,
        spec: ProbeSpec,
        signer: TokenSigner,
        *,
        slots: Slots | None = None,
        start: float | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        self.spec = spec
        self.signer = signer
        self.slots = slots
        """The daemon's limits: each session takes a connection slot of the server."""
        self.run_id = signer.new(spec.name).run_id
        now = time.monotonic()
        self.start = now if start is None else start
        self.started_at = datetime.now(UTC) - timedelta(seconds=now - self.start)
        self.deadline = self.start + spec.timeout
        self.transcript = transcript if transcript is not None else Transcript()
        self.smtp = SmtpReport()
        self.smtp_token: AccessToken | None = None
        self.variants: list[_Variant] = []
        self.failure: tuple[Outcome, Stage, str] | None = None
        """A session that failed before its content went out: the run could not judge the rest."""
        self.lost: str | None = None
        """Why the mailbox went away while the run waited."""

    @property
    def vulnerable(self) -> bool:
        return any(variant.smuggled is not None for variant in self.variants)

    async def watched(self, watcher: MailboxWatcher) -> RunResult:
        """Register every token, try every variant, watch the mailbox, judge.

        Raises:
            ImapError: the mailbox is unreachable before the send (nothing is sent).
        """
        spec = self.spec
        async with contextlib.AsyncExitStack() as stack:
            for variant in self.variants:
                # The carrier whole: a safe server has the smuggled message in its body.
                variant.expected[_CARRIER] = await stack.enter_async_context(
                    watcher.expecting(
                        spec.name,
                        variant.carrier_token,
                        self.transcript,
                        whole_message=True,
                        deadline=self.deadline,
                    )
                )
                variant.expected[_SMUGGLED] = await stack.enter_async_context(
                    watcher.expecting(
                        spec.name, variant.smuggled_token, self.transcript, deadline=self.deadline
                    )
                )
            for variant in self.variants:
                if not await self._try(variant):
                    break
            await self._watch()
        return self._judge()

    async def _try(self, variant: _Variant) -> bool:
        """One variant's session; False when it failed before its content (stop trying)."""
        spec = self.spec
        carrier = build_message(
            token=variant.carrier_token,
            probe=spec.name,
            mail_from=spec.mail_from,
            rcpt_to=spec.rcpt_to,
        )
        smuggled = build_message(
            token=variant.smuggled_token,
            probe=spec.name,
            mail_from=spec.mail_from,
            rcpt_to=spec.rcpt_to,
        )
        connecting = (
            contextlib.nullcontext()
            if self.slots is None
            else self.slots.connecting(spec.smtp, self.transcript, self.deadline)
        )
        try:
            async with connecting:
                attempt = await try_variant(
                    variant.name,
                    spec.smtp,
                    carrier,
                    smuggled,
                    mail_from=spec.mail_from,
                    rcpt_to=spec.rcpt_to,
                    transcript=self.transcript,
                    deadline=self.deadline,
                    token=self.smtp_token,
                    dns=spec.dns,
                )
        except SlotTimeout as exc:
            self.failure = (Outcome.ERROR, Stage.CONNECT, f"variant {variant.name}: {exc.reason}")
            return False
        variant.attempt = attempt
        self.smtp = attempt.report
        failure = attempt.failure
        if failure is not None and not attempt.written:
            if failure.stage is Stage.OAUTH:
                outcome = Outcome.ERROR
            elif failure.throttled:
                outcome = Outcome.THROTTLED
            else:
                outcome = Outcome.SEND_FAILED
            self.failure = (outcome, failure.stage, f"variant {variant.name}: {failure.reason}")
            return False
        return True

    async def _watch(self) -> None:
        """Wait for the messages still wanted until none is, or the deadline."""
        tasks: dict[tuple[str, str], asyncio.Task[Arrival | None]] = {}
        by_name = {variant.name: variant for variant in self.variants}
        try:
            while time.monotonic() < self.deadline:
                wanted = [
                    (variant.name, kind)
                    for variant in self.variants
                    for kind in variant.wanted(self.vulnerable)
                ]
                if not wanted:
                    return
                for key in wanted:
                    if key not in tasks:
                        expected = by_name[key[0]].expected[key[1]]
                        tasks[key] = asyncio.create_task(expected.arrival(self.deadline))
                done, _ = await asyncio.wait(
                    [tasks[key] for key in wanted], return_when=asyncio.FIRST_COMPLETED
                )
                for key in wanted:
                    if tasks[key] in done and not self._found(by_name[key[0]], key[1], tasks[key]):
                        return
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    def _found(self, variant: _Variant, kind: str, task: asyncio.Task[Arrival | None]) -> bool:
        """Record a finished wait; False when waiting is over (the deadline, a lost mailbox)."""
        from smtp_probe.probe.imap import ImapError

        try:
            arrival = task.result()
        except ImapError as exc:
            self.lost = exc.reason
            return False
        if arrival is None:
            return False
        if kind == _SMUGGLED:
            variant.smuggled = arrival
            self.transcript.note(
                f"smuggling: {variant.name}: the SMUGGLED message arrived in {arrival.folder}"
            )
            return True
        variant.carrier = arrival
        body = variant.expected[_CARRIER].message
        variant.swallowed = body is not None and str(variant.smuggled_token).encode() in body
        inside = "with" if variant.swallowed else "without"
        self.transcript.note(
            f"smuggling: {variant.name}: the carrier arrived in {arrival.folder}, "
            f"{inside} the smuggled message's token in its body"
        )
        return True

    def _judge(self) -> RunResult:
        verdicts = tuple(
            variant.verdict(variant.attempt)
            for variant in self.variants
            if variant.attempt is not None and variant.attempt.written
        )
        for verdict in verdicts:
            state = "VULNERABLE" if verdict.accepted else "safe"
            self.transcript.note(f"smuggling: {verdict.variant} {state}: {verdict.evidence}")
        accepted = [verdict.variant for verdict in verdicts if verdict.accepted]
        if accepted:
            # The report of the first session that let a message in: its replies are the evidence.
            first = next(v.attempt for v in self.variants if v.name == accepted[0])
            self.smtp = first.report if first is not None else self.smtp
            reason = f"smuggled message accepted with {', '.join(accepted)}"
            self.transcript.note(f"FAILED at {Stage.DATA}: {reason}")
            return self.result(Outcome.ACCEPTED_UNEXPECTEDLY, Stage.DATA, reason, verdicts)
        if self.failure is not None:
            outcome, stage, reason = self.failure
            return self.result(outcome, stage, reason, verdicts)
        silent = [v.name for v in self.variants if v.attempt is not None and v.attempt.unanswered]
        if silent:
            # Silence proves nothing either way: such a variant cannot count as safe.
            reason = f"no reply to the end of data for {', '.join(silent)}: no verdict"
            self.transcript.note(f"FAILED at {Stage.DATA}: {reason}")
            return self.result(Outcome.SEND_FAILED, Stage.DATA, reason, verdicts)
        if self.lost is not None:
            reason = f"mailbox became unreachable while waiting for the messages: {self.lost}"
            self.transcript.note(f"FAILED at {Stage.DELIVERY}: {reason}")
            return self.result(Outcome.ERROR, Stage.DELIVERY, reason, verdicts)
        cleanup = [
            f"{variant.name}: {arrival.cleanup_error}"
            for variant in self.variants
            for arrival in (variant.carrier, variant.smuggled)
            if arrival is not None and arrival.cleanup_error
        ]
        if cleanup:
            reason = "; ".join(cleanup)
            self.transcript.note(f"FAILED at {Stage.CLEANUP}: {reason}")
            return self.result(Outcome.ERROR, Stage.CLEANUP, reason, verdicts)
        queued = [v for v in self.variants if v.attempt is not None and v.attempt.carrier_accepted]
        if queued and all(variant.carrier is None for variant in queued):
            reason = (
                "no carrier message arrived: this mailbox does not show the route's mail, "
                "so a smuggled message would not be seen either"
            )
            self.transcript.note(f"FAILED at {Stage.DELIVERY}: {reason}")
            return self.result(Outcome.NOT_DELIVERED, Stage.DELIVERY, reason, verdicts)
        self.transcript.note(f"no smuggled message accepted ({len(verdicts)} variant(s))")
        return self.result(Outcome.REJECTED, None, "", verdicts)

    def result(
        self,
        outcome: Outcome,
        stage: Stage | None,
        error: str,
        verdicts: tuple[SmugglingVerdict, ...] = (),
    ) -> RunResult:
        return RunResult(
            probe=self.spec.name,
            run_id=self.run_id,
            outcome=outcome,
            stage=stage,
            error=error,
            started_at=self.started_at,
            duration_seconds=time.monotonic() - self.start,
            smtp=self.smtp,
            transcript=self.transcript,
            policy_check=str(PolicyCheck.SMTP_SMUGGLING),
            smuggling=verdicts,
        )


async def run_smuggling(
    spec: ProbeSpec,
    *,
    signer: TokenSigner,
    watcher: MailboxWatcher | None = None,
    slots: Slots | None = None,
    start: float | None = None,
    transcript: Transcript | None = None,
) -> RunResult:
    """Run the ``smtp_smuggling`` check of ``spec`` once; never raises (cancellation aside).

    ``watcher`` is the daemon's shared watcher of the probe's mailbox; without
    one a private watcher is opened for the run and closed after it. The
    outcome is ``accepted_unexpectedly`` at ``data`` when any variant's
    smuggled message was accepted, else ``rejected``; a session that fails
    before its content ends the run as a delivery run would (``send_failed``
    at its stage), an unreachable mailbox ``error`` with nothing sent.

    With ``slots`` each session holds a connection slot of the server; a
    session that gets none by the deadline ends the run ``error`` at
    ``connect``. ``start`` and ``transcript`` are the run's when
    :func:`~smtp_probe.probe.run.run_probe` waited for a run slot first.
    """
    from smtp_probe.probe.imap import ImapError

    run = _SmugglingRun(spec, signer, slots=slots, start=start, transcript=transcript)
    try:
        names = spec.smuggling_variants or tuple(VARIANTS)
        unknown = unknown_variants(names)
        if unknown:
            reason = (
                f"smuggling_variants: unknown variant(s) {', '.join(unknown)}; "
                f"known: {', '.join(VARIANTS)}"
            )
            return run.result(Outcome.ERROR, None, reason)
        if spec.mailbox is None:
            reason = "smtp_smuggling needs a mailbox: the smuggled message arriving is the proof"
            return run.result(Outcome.ERROR, None, reason)
        run.variants = [
            _Variant(name, signer.new(spec.name), signer.new(spec.name)) for name in names
        ]
        run.transcript.note(
            f"smtp_smuggling: {len(names)} variant(s), one session each: {', '.join(names)}"
        )
        source = spec.smtp.oauth
        if source is not None:
            # Once, before anything connects: every session logs in with it.
            try:
                run.smtp_token = await obtain(source, run.deadline)
            except TokenError as exc:
                reason = f"{source.client}: {exc.reason}"
                run.transcript.note(f"FAILED at {Stage.OAUTH}: {reason}")
                return run.result(Outcome.ERROR, Stage.OAUTH, reason)
            run.transcript.mask(run.smtp_token.value.reveal())
        if watcher is not None:
            return await run.watched(watcher)
        return await _with_own_watcher(run, spec.mailbox)
    except ImapError as exc:
        return run.result(Outcome.ERROR, exc.stage, exc.reason)
    except Exception as exc:  # noqa: BLE001 - a run reports, it never crashes its caller
        run.transcript.note(f"internal error: {exc!r}")
        return run.result(Outcome.ERROR, None, f"internal error: {exc!r}")


async def _with_own_watcher(run: _SmugglingRun, mailbox: Mailbox) -> RunResult:
    """A one-shot watcher for this run only (``smtp-probe check``).

    Raises:
        ImapError: the mailbox could not be watched (nothing was sent).
    """
    from smtp_probe.probe.imap import MailboxWatcher

    watcher = MailboxWatcher(mailbox, run.signer)
    try:
        await watcher.start(run.transcript, run.deadline)
        return await run.watched(watcher)
    finally:
        await watcher.close(timeout=min(2.0, max(0.2, run.deadline - time.monotonic())))
