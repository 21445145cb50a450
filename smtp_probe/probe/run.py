"""One run of one probe under one deadline: send, watch, confirm, clean up.

``run_probe`` never raises (cancellation aside): every way a run can end is
turned into a :class:`RunResult` with an outcome and the stage it stopped at.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from smtp_probe.probe.imap import ImapError, MailboxWatcher
from smtp_probe.probe.message import TokenSigner, build_message
from smtp_probe.probe.result import Arrival, Outcome, RunResult, SmtpReport, Stage
from smtp_probe.probe.smtp import SmtpSendError, send_message
from smtp_probe.probe.spec import ProbeSpec
from smtp_probe.probe.transcript import Transcript


async def run_probe(
    spec: ProbeSpec,
    *,
    signer: TokenSigner,
    watcher: MailboxWatcher | None = None,
) -> RunResult:
    """Run ``spec`` once and say how it went.

    With a mailbox and no ``watcher`` given, a private watcher is opened for
    this run and closed after it (``smtp-probe check``); the daemon passes
    the shared watcher of the mailbox instead. The mailbox is watched before
    anything is sent: if it can't be reached, no mail is sent at all.
    """
    started_at = datetime.now(UTC)
    start = time.monotonic()
    deadline = start + spec.timeout
    transcript = Transcript()
    token = signer.new(spec.name)
    run = _Run(spec, token.run_id, started_at, start, transcript)
    own_watcher = watcher is None and spec.mailbox is not None
    if own_watcher and spec.mailbox is not None:
        watcher = MailboxWatcher(spec.mailbox, signer)
    try:
        if watcher is not None and own_watcher:
            await watcher.start(transcript, deadline)
        elif watcher is not None:
            watcher.require_up()
        message = build_message(
            token=token, probe=spec.name, mail_from=spec.mail_from, rcpt_to=spec.rcpt_to
        )
        pending = watcher.expect(spec.name, token, transcript) if watcher else None
        try:
            report = await send_message(
                spec.smtp,
                message,
                mail_from=spec.mail_from,
                rcpt_to=spec.rcpt_to,
                transcript=transcript,
                deadline=deadline,
            )
        except BaseException:
            if watcher is not None and pending is not None:
                watcher.forget(pending)
            raise
        if watcher is None or pending is None:
            transcript.note("no mailbox given: stopping after the SMTP leg")
            return run.finish(Outcome.SENT, None, "", report)
        arrival = await watcher.wait_for(pending, deadline)
        if arrival is None:
            reason = f"not in the mailbox {spec.timeout:g}s after the run started"
            transcript.note(f"FAILED at delivery: {reason}")
            return run.finish(Outcome.NOT_DELIVERED, Stage.DELIVERY, reason, report)
        return run.arrived(report, arrival)
    except SmtpSendError as exc:
        return run.finish(Outcome.SEND_FAILED, exc.stage, exc.reason, exc.report)
    except ImapError as exc:
        return run.finish(Outcome.ERROR, exc.stage, exc.reason, run.smtp)
    except Exception as exc:  # noqa: BLE001 - a run reports, it never crashes its caller
        transcript.note(f"internal error: {exc!r}")
        return run.finish(Outcome.ERROR, run.stage, f"internal error: {exc!r}", run.smtp)
    finally:
        if own_watcher and watcher is not None:
            # Logging out takes milliseconds; a hung server must not hold the
            # caller much past the run deadline (the thread is a daemon).
            await watcher.close(timeout=min(2.0, max(0.2, deadline - time.monotonic())))


class _Run:
    """Collects the pieces of a result as a run goes along."""

    def __init__(
        self,
        spec: ProbeSpec,
        run_id: str,
        started_at: datetime,
        start: float,
        transcript: Transcript,
    ) -> None:
        self.spec = spec
        self.run_id = run_id
        self.started_at = started_at
        self.start = start
        self.transcript = transcript
        self.smtp = SmtpReport()
        self.stage = Stage.IMAP_CONNECT if spec.mailbox else Stage.DNS

    def arrived(self, report: SmtpReport, arrival: Arrival) -> RunResult:
        accepted = report.accepted_at if report.accepted_at is not None else arrival.seen_at
        delivery = max(0.0, arrival.seen_at - accepted)
        where = f"{arrival.folder} (junk)" if arrival.junk else arrival.folder
        self.transcript.note(f"delivered to {where} {delivery * 1000:.1f} ms after the 250")
        if arrival.cleanup_error:
            self.transcript.note(f"FAILED at cleanup: {arrival.cleanup_error}")
            return self.finish(
                Outcome.ERROR, Stage.CLEANUP, arrival.cleanup_error, report, arrival, delivery
            )
        outcome = Outcome.JUNK if arrival.junk else Outcome.DELIVERED
        return self.finish(outcome, None, "", report, arrival, delivery)

    def finish(
        self,
        outcome: Outcome,
        stage: Stage | None,
        error: str,
        report: SmtpReport,
        arrival: Arrival | None = None,
        delivery: float | None = None,
    ) -> RunResult:
        return RunResult(
            probe=self.spec.name,
            run_id=self.run_id,
            outcome=outcome,
            stage=stage,
            error=error,
            started_at=self.started_at,
            duration_seconds=time.monotonic() - self.start,
            smtp=report,
            transcript=self.transcript,
            delivery_seconds=delivery,
            arrival=arrival,
        )
