"""One run of one probe under one deadline: send, watch, confirm, clean up.

``run_probe`` never raises (cancellation aside): every way a run can end is
turned into a :class:`RunResult` with an outcome and the stage it stopped at.
A run's facts (the SMTP report, the arrival) are written down the moment
they are known, so a later failure can add a verdict but never lose them.

The IMAP leg (imapclient, the header parser) is imported only by a run that
has a mailbox: ``smtp-probe check`` without ``--imap`` starts without it.

A route that logs in with OAuth2 gets its tokens first, before anything
connects: a token that cannot be had fails the run at stage ``oauth`` with
nothing sent. The daemon's shared watchers log in on their own (and go down
at ``oauth`` when they cannot get a token), so a run using one fetches only
the SMTP server's token.

A probe that expects a refusal (``expect``, a built-in ``check``) runs the
same legs; :mod:`smtp_probe.probe.expect` says what the answers mean: the
expected refusal is ``rejected`` (a success), an acceptance
``accepted_unexpectedly``. Without a mailbox such a run never sends a
message (it stops after the last expected stage); with one, an accepted
message is confirmed and deleted like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from smtp_probe.probe import expect as policy
from smtp_probe.probe import verdicts as verdict_lines
from smtp_probe.probe.credentials import AccessToken, TokenError, TokenSource, describe, obtain
from smtp_probe.probe.message import Token, TokenSigner, header_date, template
from smtp_probe.probe.result import (
    Arrival,
    AuthVerdict,
    Bounce,
    Outcome,
    ReflectorLegs,
    RunResult,
    SmtpReport,
    Stage,
    Verdicts,
)
from smtp_probe.probe.slots import Slots, SlotTimeout
from smtp_probe.probe.smtp import SmtpSendError, try_auth_in_clear
from smtp_probe.probe.spec import Mailbox, PolicyCheck, ProbeSpec
from smtp_probe.probe.submit import submit
from smtp_probe.probe.transcript import Transcript

if TYPE_CHECKING:
    from smtp_probe.probe.imap import MailboxWatcher


async def run_probe(
    spec: ProbeSpec,
    *,
    signer: TokenSigner,
    watcher: MailboxWatcher | None = None,
    bounce_watcher: MailboxWatcher | None = None,
    slots: Slots | None = None,
) -> RunResult:
    """Run ``spec`` once and say how it went.

    With a mailbox and no ``watcher`` given, a private watcher is opened for
    this run and closed after it (``smtp-probe check``); the daemon passes
    the shared watcher of the mailbox instead. The mailbox is watched before
    anything is sent: if it can't be reached, no mail is sent at all.

    A probe with a ``bounce_mailbox`` also watches that for delivery status
    notifications about the run: through ``bounce_watcher`` (the daemon's
    shared one, which may be ``watcher`` itself), or a private one next to
    the private delivery watcher. An unreachable bounce mailbox is noted
    and the run goes on without it. A ``failed`` report ends the run
    ``bounced`` at once; ``delayed`` ones are noted and the run waits on.

    With ``slots`` (the daemon's limits) the run first waits for a run
    slot, then for a connection slot of its server around each SMTP
    session, all within its one deadline (noted in the transcript). A run
    that gets no run slot in time ends ``error`` with no stage (it never
    started); one that gets no connection slot ends ``error`` at
    ``connect`` (nothing was sent).
    """
    start = time.monotonic()
    transcript = Transcript()
    if slots is None:
        return await _run_probe(spec, signer, watcher, bounce_watcher, None, start, transcript)
    try:
        async with slots.runs.slot("a run slot", transcript, start + spec.timeout):
            return await _run_probe(spec, signer, watcher, bounce_watcher, slots, start, transcript)
    except SlotTimeout as exc:
        run = _Run(spec, signer.new(spec.name), start=start, transcript=transcript)
        return run.result(Outcome.ERROR, None, exc.reason)


async def _run_probe(
    spec: ProbeSpec,
    signer: TokenSigner,
    watcher: MailboxWatcher | None,
    bounce_watcher: MailboxWatcher | None,
    slots: Slots | None,
    start: float,
    transcript: Transcript,
) -> RunResult:
    """:func:`run_probe` once it may run; ``start`` and ``transcript`` are the run's own."""
    if spec.check is PolicyCheck.SMTP_SMUGGLING:
        # Its own kind of run (many sessions, two tokens each): see smuggling_run.
        from smtp_probe.probe.smuggling_run import run_smuggling

        return await run_smuggling(
            spec, signer=signer, watcher=watcher, slots=slots, start=start, transcript=transcript
        )
    run = _Run(spec, signer.new(spec.name), start=start, transcript=transcript, slots=slots)
    try:
        if spec.check is PolicyCheck.AUTH_REQUIRES_TLS:
            return await _auth_in_clear(run)
        await _fetch_tokens(run, own_watcher=watcher is None)
        if watcher is not None:
            bounces = bounce_watcher if spec.bounce_mailbox is not None else None
            if spec.bounce_mailbox is not None and bounces is None:
                run.transcript.note("bounce mailbox not watched yet: no bounce watching this run")
            return await _imap_failure_reported(run, _send_and_confirm(run, watcher, bounces))
        if spec.mailbox is not None:
            return await _imap_failure_reported(run, _with_own_watcher(run, spec.mailbox, signer))
        await _send(run)
        if spec.expect is not None:
            return run.unexpectedly_accepted()
        run.transcript.note("no mailbox given: stopping after the SMTP leg")
        return run.result(Outcome.SENT)
    except SlotTimeout as exc:
        return run.result(Outcome.ERROR, Stage.CONNECT, exc.reason)
    except _NoToken as exc:
        run.transcript.note(f"FAILED at {Stage.OAUTH}: {exc.reason}")
        return run.result(Outcome.ERROR, Stage.OAUTH, exc.reason)
    except SmtpSendError as exc:
        if spec.expect is not None and exc.stage is not Stage.OAUTH:
            return run.refused(exc)
        if exc.stage is Stage.OAUTH:  # a token that could not be renewed after a refusal
            outcome = Outcome.ERROR
        elif exc.throttled:
            outcome = Outcome.THROTTLED
        else:
            outcome = Outcome.SEND_FAILED
        return run.result(outcome, exc.stage, exc.reason)
    except Exception as exc:  # noqa: BLE001 - a run reports, it never crashes its caller
        run.transcript.note(f"internal error: {exc!r}")
        return run.result(Outcome.ERROR, run.stage, f"internal error: {exc!r}")


class _NoToken(Exception):
    """A token the run needs could not be obtained; ``reason`` names the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _fetch_tokens(run: _Run, *, own_watcher: bool) -> None:
    """Get the OAuth2 tokens the run logs in with, before anything connects.

    Each leg logs in with the token fetched here (the mailbox's only when
    this run opens its own watcher), so a token fetched for this run counts
    as fresh on both legs. One source used by both legs is asked once.

    Raises:
        _NoToken: a source failed, or had no token by the run deadline.
    """
    spec = run.spec
    smtp_source = run.server.oauth
    imap_source = spec.mailbox.oauth if spec.mailbox is not None and own_watcher else None
    if smtp_source is None and imap_source is None:
        return
    before, run.stage = run.stage, Stage.OAUTH
    run.smtp_token = await _token(run, smtp_source) if smtp_source is not None else None
    if imap_source is not None:
        same = imap_source is smtp_source
        run.mailbox_token = run.smtp_token if same else await _token(run, imap_source)
    run.stage = before


async def _token(run: _Run, source: TokenSource) -> AccessToken:
    """A token from ``source`` by the run deadline, masked and noted in the transcript.

    Raises:
        _NoToken: the source failed or ran out of time.
    """
    try:
        token = await obtain(source, run.deadline)
    except TokenError as exc:
        raise _NoToken(f"{source.client}: {exc.reason}") from None
    run.transcript.mask(token.value.reveal())
    run.transcript.note(f"oauth: token from {source.client} ({describe(token)})")
    return token


async def _auth_in_clear(run: _Run) -> RunResult:
    """``auth_requires_tls``: no AUTH in the clear EHLO, and a dummy AUTH in the clear refused.

    Nothing is sent and no mailbox is read: the server's credentials and
    TLS are not used (:func:`policy.server_for`).

    Raises:
        SmtpSendError: the session failed before the AUTH reply.
    """
    expect = run.spec.expect or policy.BUILT_IN[PolicyCheck.AUTH_REQUIRES_TLS]
    run.stage = Stage.DNS
    run.transcript.note("auth_requires_tls: connecting without TLS; a dummy credential only")
    async with run.connecting():
        attempt = await try_auth_in_clear(
            run.server, transcript=run.transcript, deadline=run.deadline
        )
    run.smtp = attempt.report
    return run.verdict(policy.auth_in_clear(expect, attempt.offered, attempt.code, attempt.reply))


async def _imap_failure_reported(run: _Run, leg: Awaitable[RunResult]) -> RunResult:
    """The result of ``leg``, a run with a mailbox; an IMAP failure becomes an ``error`` result.

    Raises:
        SmtpSendError: the SMTP leg failed.
    """
    from smtp_probe.probe.imap import ImapError  # here: an SMTP-only run never needs imapclient

    try:
        return await leg
    except ImapError as exc:
        return run.result(Outcome.ERROR, exc.stage, exc.reason)


async def _with_own_watcher(run: _Run, mailbox: Mailbox, signer: TokenSigner) -> RunResult:
    """A one-shot watcher for this run only; it gives up on the first IMAP failure."""
    from smtp_probe.probe.imap import MailboxWatcher

    watcher = MailboxWatcher(mailbox, signer)
    bounce_watcher: MailboxWatcher | None = None
    try:
        await watcher.start(run.transcript, run.deadline, token=run.mailbox_token)
        bounce_mailbox = run.spec.bounce_mailbox
        if bounce_mailbox is not None and bounce_mailbox.key == mailbox.key:
            bounce_watcher = watcher
        elif bounce_mailbox is not None:
            bounce_watcher = await _own_bounce_watcher(run, bounce_mailbox, signer)
        return await _send_and_confirm(run, watcher, bounce_watcher)
    finally:
        # Logging out takes milliseconds; a hung server must not hold the
        # caller much past the run deadline (the thread is a daemon).
        timeout = min(2.0, max(0.2, run.deadline - time.monotonic()))
        if bounce_watcher is not None and bounce_watcher is not watcher:
            await asyncio.gather(watcher.close(timeout), bounce_watcher.close(timeout))
        else:
            await watcher.close(timeout=timeout)


async def _own_bounce_watcher(
    run: _Run, mailbox: Mailbox, signer: TokenSigner
) -> MailboxWatcher | None:
    """A one-shot watcher on the bounce mailbox; ``None`` (noted) if it cannot be opened.

    The probe is about delivery: a bounce mailbox that is down costs the
    run its bounce watching, not its verdict.
    """
    from smtp_probe.probe.imap import ImapError, MailboxWatcher

    watcher = MailboxWatcher(mailbox, signer)
    try:
        # Its own transcript: its login is not the run's story, only its findings are.
        await watcher.start(Transcript(), run.deadline)
    except ImapError as exc:
        await watcher.close(timeout=0.2)
        run.transcript.note(
            f"bounce mailbox {mailbox.username} at {mailbox.address} unreachable "
            f"({exc.stage}: {exc.reason}); delivery status notifications are not watched"
        )
        return None
    run.transcript.note(f"imap: watching {mailbox.username} at {mailbox.address} for bounces")
    return watcher


async def _send_and_confirm(
    run: _Run, watcher: MailboxWatcher, bounce_watcher: MailboxWatcher | None = None
) -> RunResult:
    """Expect the token, send, wait for the message (or a failed DSN); the watcher deletes it.

    With a ``bounce_watcher`` the run is registered there too before the
    send, and whichever comes first within the one deadline decides: the
    message (delivered) or a ``failed`` delivery status notification
    (bounced).

    Raises:
        SmtpSendError: the SMTP leg failed.
        ImapError: the mailbox was unreachable before the send (nothing was
            sent) or became unreachable after it (stage ``delivery``).
    """
    spec = run.spec
    same = bounce_watcher is watcher
    async with (
        watcher.expecting(
            spec.name,
            run.token,
            run.transcript,
            reflector=spec.reflector,
            whole_message=spec.verify_dkim,
            bounces=same,
            deadline=run.deadline,
        ) as expected,
        contextlib.AsyncExitStack() as stack,
    ):
        if bounce_watcher is not None and not same:
            # Bounce watching is optional: a bounce mailbox that is down (and
            # reconnects slowly) may cost this run a quarter of its time, no more.
            now = time.monotonic()
            await stack.enter_async_context(
                bounce_watcher.watching_bounces(
                    expected, deadline=now + max(0.0, run.deadline - now) / 4
                )
            )
        await _send(run)
        arrival = await expected.arrival(run.deadline)
    run.bounces = expected.bounces
    if spec.expect is not None:
        return run.unexpectedly_accepted(arrival)
    failed = expected.failed
    if arrival is None and failed is not None:
        reason = f"bounced: {failed.describe()}"
        run.transcript.note(f"FAILED at {Stage.DELIVERY}: {reason}")
        return run.result(Outcome.BOUNCED, Stage.DELIVERY, reason)
    if arrival is None:
        reason = f"not in the mailbox {run.spec.timeout:g}s after the run started"
        run.transcript.note(f"FAILED at {Stage.DELIVERY}: {reason}")
        return run.result(Outcome.NOT_DELIVERED, Stage.DELIVERY, reason)
    if spec.verify_dkim:
        arrival = await _with_own_dkim(run, arrival, expected.message)
    return run.arrived(arrival)


async def _with_own_dkim(run: _Run, arrival: Arrival, message: bytes | None) -> Arrival:
    """``arrival`` with our own DKIM verdict on the whole ``message`` (already deleted).

    The check runs in a thread (dkimpy is blocking), each key lookup bounded
    by the resolver timeout and the run deadline; it never fails the run.
    """
    if message is None:
        own = AuthVerdict("dkim", "temperror", "the message itself could not be read")
    else:
        from smtp_probe.probe.own_dkim import check_dkim  # here: loads dkimpy, dnspython

        spec = run.spec
        # The deadline bounds every lookup; this bounds the thread's verdict
        # (a lookup is never cut short inside dnspython, so allow it a second more).
        limit = max(0.0, run.deadline - time.monotonic()) + 1.0
        try:
            async with asyncio.timeout(limit):
                own = await asyncio.to_thread(check_dkim, message, spec.dns, run.deadline)
        except TimeoutError:
            own = AuthVerdict("dkim", "temperror", "no verdict before the run deadline")
    mailbox = run.spec.mailbox
    verdicts = arrival.verdicts or Verdicts(mailbox.authserv_id if mailbox else None)
    return dataclasses.replace(arrival, verdicts=dataclasses.replace(verdicts, own_dkim=own))


async def _send(run: _Run) -> None:
    """The SMTP leg; its report is the run's the moment the leg ends, however it ends.

    Raises:
        SmtpSendError: the SMTP leg failed (its report is kept all the same).
    """
    spec = run.spec
    run.stage = Stage.DNS
    # The probe's template, built at its first run: a run fills in only what is its own.
    message = template(spec.name, spec.mail_from, spec.rcpt_to, spec.reflector).render(run.token)
    expecting = spec.expect is not None
    try:
        async with run.connecting():
            run.smtp = await submit(
                run.server,
                message,
                mail_from=spec.mail_from,
                rcpt_to=spec.rcpt_to,
                transcript=run.transcript,
                deadline=run.deadline,
                token=run.smtp_token,
                dns=spec.dns,
                # No DSN for a message that should have been refused: its
                # sender is often an outside address a bounce must not go to.
                envid=None if expecting else run.token.run_id,
                stop_after=policy.stop_after(spec),
                expecting=expecting,
            )
    except SmtpSendError as exc:
        run.smtp = exc.report
        raise
    run.stage = Stage.DELIVERY


class _Run:
    """One run's facts, written down as they happen; the result is read off them at the end."""

    def __init__(
        self,
        spec: ProbeSpec,
        token: Token,
        *,
        start: float | None = None,
        transcript: Transcript | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.spec = spec
        self.server = policy.server_for(spec)
        """The SMTP server as this run talks to it (a check may drop its login or TLS)."""
        self.token = token
        now = time.monotonic()
        self.start = now if start is None else start
        """When the run began (``time.monotonic``): before any wait for a run slot."""
        self.started_at = datetime.now(UTC) - timedelta(seconds=now - self.start)
        self.deadline = self.start + spec.timeout
        self.transcript = transcript if transcript is not None else Transcript()
        self.slots = slots
        self.stage = Stage.IMAP_CONNECT if spec.mailbox else Stage.DNS
        """Where the run is now: what an unexpected failure is blamed on."""
        self.smtp = SmtpReport()
        self.arrival: Arrival | None = None
        self.smtp_token: AccessToken | None = None
        """The SMTP server's OAuth2 token, fetched before the run connected anywhere."""
        self.mailbox_token: AccessToken | None = None
        """The mailbox's, when this run logs in to it itself."""
        self.reflector: ReflectorLegs | None = None
        self.bounces: tuple[Bounce, ...] = ()

    def connecting(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A connection slot of the run's server for one SMTP session (none without slots).

        Raises:
            SlotTimeout: on entry, no slot came free before the run deadline.
        """
        if self.slots is None:
            return contextlib.nullcontext()
        return self.slots.connecting(self.server, self.transcript, self.deadline)

    def arrived(self, arrival: Arrival) -> RunResult:
        """The message was found: delivered, in junk, found but not cleaned up, or distrusted.

        The verdicts are shown (``-v``) whenever there is something to say.
        A failed cleanup is the worse news and wins; a message in junk stays
        ``junk``; otherwise a message whose believed results miss the
        probe's ``expect_auth`` ends ``auth_failed`` at ``verify`` (it has
        been deleted all the same).
        """
        self.arrival = arrival
        where = f"{arrival.folder} (junk)" if arrival.junk else arrival.folder
        delivery = self._delivery_seconds() or 0.0
        what = "reply delivered" if self.spec.reflector else "delivered"
        self.transcript.note(f"{what} to {where} {delivery * 1000:.1f} ms after the 250")
        if self.spec.reflector:
            self.reflector = self._reflector_legs(arrival, delivery)
        verdicts = arrival.verdicts
        if verdicts is not None and _worth_showing(verdicts, self.spec):
            for line in verdict_lines.describe(verdicts):
                self.transcript.note(line)
        if arrival.cleanup_error:
            self.transcript.note(f"FAILED at {Stage.CLEANUP}: {arrival.cleanup_error}")
            return self.result(Outcome.ERROR, Stage.CLEANUP, arrival.cleanup_error)
        if arrival.junk:
            return self.result(Outcome.JUNK)
        missed = verdict_lines.misses(verdicts, self.spec.expect_auth)
        if missed:
            reason = "; ".join(missed)
            self.transcript.note(f"FAILED at {Stage.VERIFY}: {reason}")
            return self.result(Outcome.AUTH_FAILED, Stage.VERIFY, reason)
        return self.result(Outcome.DELIVERED)

    def refused(self, exc: SmtpSendError) -> RunResult:
        """An expecting run's SMTP leg ended at ``exc.stage``: as expected, or not."""
        expect = self.spec.expect
        assert expect is not None  # noqa: S101 - only expecting runs come here
        return self.verdict(policy.refused(expect, exc.stage, exc.code, exc.reason, self.smtp))

    def unexpectedly_accepted(self, arrival: Arrival | None = None) -> RunResult:
        """An expecting run was accepted where it should have been refused.

        With a mailbox the message was sent: whether it arrived (and was
        deleted) is noted; the outcome stays ``accepted_unexpectedly``.
        """
        expect = self.spec.expect
        assert expect is not None  # noqa: S101 - only expecting runs come here
        if self.spec.mailbox is not None:
            self.arrival = arrival
            if arrival is None:
                self.transcript.note(
                    f"the accepted message was not in the mailbox {self.spec.timeout:g}s "
                    "after the run started"
                )
            elif arrival.cleanup_error:
                self.transcript.note(
                    f"the accepted message arrived in {arrival.folder} and could not be "
                    f"deleted: {arrival.cleanup_error}"
                )
            else:
                self.transcript.note(
                    f"the accepted message arrived in {arrival.folder}"
                    + (" and was deleted" if arrival.deleted else "")
                )
        return self.verdict(policy.accepted(expect, self.smtp))

    def verdict(self, verdict: policy.Verdict) -> RunResult:
        """The result of an expecting run, its verdict noted in the transcript."""
        self.transcript.note(verdict.note)
        return self.result(verdict.outcome, verdict.stage, verdict.reason)

    def result(self, outcome: Outcome, stage: Stage | None = None, error: str = "") -> RunResult:
        """The run's result with the verdict given and every fact gathered so far."""
        return RunResult(
            probe=self.spec.name,
            run_id=self.token.run_id,
            outcome=outcome,
            stage=stage,
            error=error,
            started_at=self.started_at,
            duration_seconds=time.monotonic() - self.start,
            smtp=self.smtp,
            transcript=self.transcript,
            delivery_seconds=self._delivery_seconds(),
            arrival=self.arrival,
            reflector=self.reflector,
            bounces=self.bounces,
            policy_check=self.spec.policy_check,
        )

    def _reflector_legs(self, arrival: Arrival, delivery: float) -> ReflectorLegs | None:
        """Split the delivery time where the reflector answered; note it.

        ``None`` (and a note) when the message gives no time of the reflector's.
        """
        accepted = self.smtp.accepted_at
        if accepted is None:
            return None
        accepted_wall = self.started_at.timestamp() + (accepted - self.start)
        found = _reflector_time(arrival)
        if found is None:
            why = (
                "the reply has no usable Date or Received time"
                if arrival.by_subject
                else "our own message came back (redirected), with no time of the reflector's"
            )
            self.transcript.note(f"reflector: {why}; legs not split")
            return None
        stamp, source = found
        # Another host's clock, to the second: never below 0 nor above the whole.
        outbound = min(max(0.0, stamp - accepted_wall), delivery)
        legs = ReflectorLegs(outbound, delivery - outbound, source)
        self.transcript.note(
            f"reflector: outbound {outbound:.1f} s (our 250 to the reply's {source} header), "
            f"return {legs.return_seconds:.1f} s"
        )
        return legs

    def _delivery_seconds(self) -> float | None:
        """Seconds from the ``250`` to the watcher seeing the message, once it has."""
        if self.arrival is None:
            return None
        accepted = self.smtp.accepted_at
        seen = self.arrival.seen_at
        return max(0.0, seen - (accepted if accepted is not None else seen))


def _worth_showing(verdicts: Verdicts, spec: ProbeSpec) -> bool:
    """Whether the transcript shows ``verdicts``: asked for, or something to say."""
    return bool(
        verdicts.authserv_id
        or spec.expect_auth
        or verdicts.results
        or verdicts.ignored
        or verdicts.own_dkim is not None
        or verdicts.spam_score is not None
        or verdicts.notes
    )


def _reflector_time(arrival: Arrival) -> tuple[float, str] | None:
    """When the reflector wrote its reply (Unix time), and which header said so.

    A reply (known by its Subject) is a new message: its ``Date`` is when
    the reflector wrote it; without one, its oldest ``Received`` is the
    reflector's first hop. A message that came back with our own header
    is our original, redirected: its ``Date`` is ours and nothing tells
    the reflector's hops from ours, so there is no split point (``None``).
    """
    if not arrival.by_subject:
        return None
    if arrival.date is not None:
        return arrival.date.timestamp(), "Date"
    for header in reversed(arrival.received):  # oldest first
        when = header_date(header.rpartition(";")[2])
        if when is not None:
            return when.timestamp(), "Received"
    return None
