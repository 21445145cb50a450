"""The smuggling check against a raw SMTP server that ends DATA where we tell it to.

The server (:mod:`tests.support.splitting_smtpd`) stands for a vulnerable
MTA (Postfix 3.7 with ``smtpd_forbid_bare_newline = no``) or a strict one;
what it accepts it appends to the demo sandbox's IMAP mailbox (pymap), where
the run's real watcher has to find (and delete) it. The run against real
Postfix is in tests/e2e/test_smuggling.py.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from dataclasses import replace

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.message import PROBE_HEADER, TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.smuggling import VARIANTS, content
from smtp_probe.probe.spec import PolicyCheck, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.probe.transcript import Transcript
from smtp_probe.sandbox import DEMO_USER, SandboxAddress
from tests.support.loopback_smtpd import closed_port
from tests.support.sandbox_imap import append, messages_in, run, sandbox, sandbox_mailbox
from tests.support.splitting_smtpd import LOOPBACK, SplittingSmtpd
from tests.support.waiting import eventually

SENDER = "probe@sender.test"
PROBE = "smuggling"


def _spec(address: SandboxAddress, *variants: str, mailbox: bool = True) -> ProbeSpec:
    """A smuggling probe into the sandbox's INBOX; the server's port is filled in by :func:`_run`."""
    return ProbeSpec(
        name=PROBE,
        smtp=SmtpServer(LOOPBACK, 0, TlsMode.NONE, timeout=5),
        mail_from=SENDER,
        rcpt_to=address.user,
        mailbox=sandbox_mailbox(address) if mailbox else None,
        timeout=10,
        check=PolicyCheck.SMTP_SMUGGLING,
        smuggling_variants=variants,
    )


async def _run(
    spec: ProbeSpec, address: SandboxAddress, signer: TokenSigner, **server: object
) -> tuple[RunResult, SplittingSmtpd]:
    async def deliver(raw: bytes) -> None:
        await asyncio.to_thread(append, address, "INBOX", raw)

    smtpd = SplittingSmtpd(deliver, **server)  # type: ignore[arg-type]
    async with smtpd as port:
        spec = replace(spec, smtp=replace(spec.smtp, port=port))
        return await run_probe(spec, signer=signer), smtpd


def _inbox(address: SandboxAddress) -> list[email.message.Message]:
    return messages_in(address, "INBOX")


def test_a_server_ending_data_at_lf_dot_crlf_is_vulnerable_and_both_messages_are_cleaned_up() -> (
    None
):
    signer = TokenSigner()

    async def scenario() -> tuple[RunResult, SplittingSmtpd, int]:
        async with sandbox() as address:
            result, smtpd = await _run(_spec(address), address, signer, terminators=(b"\n.\r\n",))
            left = len(await asyncio.to_thread(_inbox, address))
            return result, smtpd, left

    result, smtpd, left = run(scenario, timeout=30)

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, result.error
    assert result.stage is Stage.DATA
    assert not result.success
    assert result.policy_check == "smtp_smuggling"
    assert result.error == "smuggled message accepted with lf_dot_crlf"
    # The SMTP report is the vulnerable session's (the second: lf_dot_lf's carrier was Q1).
    assert result.smtp.reply_code == 250
    assert result.smtp.queue_id == "Q2"
    verdicts = {verdict.variant: verdict for verdict in result.smuggling}
    assert list(verdicts) == list(VARIANTS)
    assert [name for name, verdict in verdicts.items() if verdict.accepted] == ["lf_dot_crlf"]
    assert "smuggled message" in verdicts["lf_dot_crlf"].evidence
    assert "arrived in INBOX" in verdicts["lf_dot_crlf"].evidence
    assert "250, 250, 250, 354, 250, 221" in verdicts["lf_dot_crlf"].evidence
    assert "inside the carrier's body" in verdicts["cr_dot_cr"].evidence
    # one session per variant; the vulnerable one queued two messages, the others one
    assert len(smtpd.contents) == len(VARIANTS)
    assert smtpd.accepted == len(VARIANTS) + 1
    assert left == 0
    text = "\n".join(result.transcript.render())
    assert "<LF>.<CR><LF>   (end of data variant lf_dot_crlf)" in text
    assert "MAIL FROM:<probe@sender.test><CR><LF>" in text
    assert "the SMUGGLED message arrived in INBOX" in text


def test_a_strict_server_is_safe_the_smuggled_message_inside_the_carrier() -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[RunResult, SplittingSmtpd, int]:
        async with sandbox() as address:
            result, smtpd = await _run(_spec(address), address, signer)
            left = len(await asyncio.to_thread(_inbox, address))
            return result, smtpd, left

    result, smtpd, left = run(scenario, timeout=30)

    assert result.outcome is Outcome.REJECTED, result.error
    assert result.success
    assert result.stage is None
    assert result.policy_check == "smtp_smuggling"
    assert len(result.smuggling) == len(VARIANTS)
    for verdict in result.smuggling:
        assert not verdict.accepted
        assert "inside the carrier's body; replies 250, 221" in verdict.evidence
    assert smtpd.accepted == len(VARIANTS)
    assert left == 0


def test_the_server_receives_exactly_the_variant_bytes_then_our_quit() -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[RunResult, SplittingSmtpd]:
        async with sandbox() as address:
            return await _run(_spec(address, "cr_dot_crlf"), address, signer)

    result, smtpd = run(scenario, timeout=30)

    assert result.outcome is Outcome.REJECTED, result.error
    [received] = smtpd.contents
    commands = b"MAIL FROM:<probe@sender.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % DEMO_USER.encode()
    carrier, found, rest = received.partition(b"\r.\r\n" + commands)
    assert found
    smuggled = rest.removesuffix(b"\r\n.\r\nQUIT\r\n")
    assert received == (
        content(VARIANTS["cr_dot_crlf"], carrier, smuggled, mail_from=SENDER, rcpt_to=DEMO_USER)
        + b"QUIT\r\n"
    )
    tokens = set()
    for part in (carrier, smuggled):
        # Every line of each message ends in <CR><LF>: only the variant is sloppy.
        assert b"\r" not in part.replace(b"\r\n", b"")
        assert b"\n" not in part.replace(b"\r\n", b"")
        message = email.message_from_bytes(part, policy=email.policy.default)
        token = signer.verify(PROBE, str(message[PROBE_HEADER]))
        assert token is not None
        tokens.add(str(token))
    assert len(tokens) == 2


def test_a_server_refusing_bare_lf_refused_those_variants_and_is_safe() -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[RunResult, int]:
        async with sandbox() as address:
            result, _smtpd = await _run(
                _spec(address, "lf_dot_crlf", "cr_dot_cr"),
                address,
                signer,
                terminators=(b"\n.\r\n",),
                refuse_bare_lf=True,
            )
            return result, len(await asyncio.to_thread(_inbox, address))

    result, left = run(scenario, timeout=30)

    assert result.outcome is Outcome.REJECTED, result.error
    verdicts = {verdict.variant: verdict for verdict in result.smuggling}
    assert not verdicts["lf_dot_crlf"].accepted
    assert verdicts["lf_dot_crlf"].evidence.startswith("refused: server replied 521 5.5.2")
    assert "inside the carrier's body" in verdicts["cr_dot_cr"].evidence
    assert left == 0


def test_a_server_that_never_answers_the_end_of_data_gets_no_verdict() -> None:
    signer = TokenSigner()

    async def scenario() -> RunResult:
        async with sandbox() as address:
            spec = _spec(address, "lf_dot_crlf")
            spec = replace(spec, smtp=replace(spec.smtp, timeout=0.5))
            result, _smtpd = await _run(spec, address, signer, silent=True)
            return result

    result = run(scenario, timeout=30)

    [verdict] = result.smuggling
    assert not verdict.accepted
    assert verdict.evidence == "not answered: no reply to the end of data within 0.5s"
    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.DATA
    assert result.error == "no reply to the end of data for lf_dot_crlf: no verdict"


def test_a_hang_up_on_bare_lf_is_a_refusal() -> None:
    signer = TokenSigner()

    async def scenario() -> RunResult:
        async with sandbox() as address:
            spec = _spec(address, "lf_dot_lf", "crlf_dot_cr")
            result, _smtpd = await _run(spec, address, signer, hang_up_on_bare_lf=True)
            return result

    result = run(scenario, timeout=30)

    assert result.outcome is Outcome.REJECTED, result.error
    verdicts = {verdict.variant: verdict for verdict in result.smuggling}
    assert verdicts["lf_dot_lf"].evidence == (
        "refused: server closed the connection without a reply to the end of data"
    )
    assert not verdicts["lf_dot_lf"].accepted
    assert not verdicts["crlf_dot_cr"].accepted


def test_a_server_closing_on_quit_without_221_ends_the_reading_there() -> None:
    signer = TokenSigner()

    async def scenario() -> RunResult:
        async with sandbox() as address:
            spec = _spec(address, "lf_dot_crlf")
            result, _smtpd = await _run(
                spec, address, signer, terminators=(b"\n.\r\n",), answer_quit=False
            )
            return result

    result = run(scenario, timeout=30)

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, result.error
    [verdict] = result.smuggling
    assert verdict.evidence.endswith("replies 250, 250, 250, 354, 250")
    assert "=== the server closed the connection" in "\n".join(result.transcript.render())


def test_a_route_whose_mailbox_never_shows_the_carrier_cannot_vouch_for_safety() -> None:
    signer = TokenSigner()

    async def scenario() -> RunResult:
        async with sandbox() as address:

            async def lose(raw: bytes) -> None:
                del raw  # accepted, never delivered anywhere

            spec = replace(_spec(address, "lf_dot_lf"), timeout=2.0)
            async with SplittingSmtpd(lose) as port:
                spec = replace(spec, smtp=replace(spec.smtp, port=port))
                return await run_probe(spec, signer=signer)

    result = run(scenario, timeout=30)

    assert result.outcome is Outcome.NOT_DELIVERED
    assert result.stage is Stage.DELIVERY
    assert "no carrier message arrived" in result.error
    [verdict] = result.smuggling
    assert not verdict.accepted
    assert verdict.evidence.startswith("no smuggled message by the deadline (carrier not seen")


def test_a_session_failing_before_its_content_ends_the_run_at_its_stage() -> None:
    signer = TokenSigner()

    async def scenario() -> RunResult:
        async with sandbox() as address:
            spec = _spec(address)
            with closed_port() as port:
                return await run_probe(
                    replace(spec, smtp=replace(spec.smtp, port=port)), signer=signer
                )

    result = run(scenario, timeout=30)

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.CONNECT
    assert result.error.startswith("variant lf_dot_lf: cannot connect to 127.0.0.1:")
    assert result.error.endswith("connection refused")
    assert result.smuggling == ()


def test_only_the_configured_variants_are_tried() -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[RunResult, SplittingSmtpd]:
        async with sandbox() as address:
            return await _run(_spec(address, "lf_dot_lf", "cr_dot_cr"), address, signer)

    result, smtpd = run(scenario, timeout=30)

    assert [verdict.variant for verdict in result.smuggling] == ["lf_dot_lf", "cr_dot_cr"]
    assert len(smtpd.contents) == 2


def test_an_unknown_variant_is_an_error_naming_the_key_and_sends_nothing() -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[RunResult, SplittingSmtpd]:
        async with sandbox() as address:
            return await _run(_spec(address, "lf_dot_lf", "dot_dot_dot"), address, signer)

    result, smtpd = run(scenario, timeout=30)

    assert result.outcome is Outcome.ERROR
    assert "smuggling_variants" in result.error
    assert "dot_dot_dot" in result.error
    assert smtpd.contents == []


def test_without_a_mailbox_nothing_is_sent() -> None:
    signer = TokenSigner()

    async def scenario() -> tuple[RunResult, SplittingSmtpd]:
        async with sandbox() as address:
            return await _run(_spec(address, mailbox=False), address, signer)

    result, smtpd = run(scenario, timeout=30)

    assert result.outcome is Outcome.ERROR
    assert "needs a mailbox" in result.error
    assert smtpd.contents == []


def test_a_smuggled_message_queued_but_late_is_vulnerable_and_later_deleted_as_late() -> None:
    """The server's 250 to the smuggled DATA is evidence; the message itself comes after the run."""
    signer = TokenSigner()
    late: list[str] = []

    async def scenario() -> tuple[RunResult, int]:
        async with sandbox() as address:
            delivered = 0
            pending: list[asyncio.Task[None]] = []

            async def deliver(raw: bytes) -> None:
                nonlocal delivered
                delivered += 1
                if delivered == 2:  # the smuggled one: lands after the run's deadline
                    pending.append(asyncio.create_task(_later(address, raw, 3.5)))
                else:
                    await asyncio.to_thread(append, address, "INBOX", raw)

            spec = replace(_spec(address, "lf_dot_crlf"), timeout=2.5)
            box = spec.mailbox
            assert box is not None
            watcher = MailboxWatcher(
                box, signer, persistent=True, probe_names=[PROBE], on_late=late.append
            )
            await watcher.start(Transcript(), time.monotonic() + 5)
            try:
                async with SplittingSmtpd(deliver, terminators=(b"\n.\r\n",)) as port:
                    spec = replace(spec, smtp=replace(spec.smtp, port=port))
                    result = await run_probe(spec, signer=signer, watcher=watcher)
                await asyncio.gather(*pending)
                await eventually(lambda: late == [PROBE], timeout=5)
            finally:
                await watcher.close()
            return result, len(await asyncio.to_thread(_inbox, address))

    result, left = run(scenario, timeout=30)

    assert result.outcome is Outcome.ACCEPTED_UNEXPECTEDLY, result.error
    [verdict] = result.smuggling
    assert verdict.accepted
    assert verdict.evidence == (
        "the server queued the smuggled message (replies 250, 250, 250, 354, 250, 221); "
        "it was not in the mailbox by the deadline"
    )
    assert late == [PROBE]
    assert left == 0


async def _later(address: SandboxAddress, raw: bytes, delay: float) -> None:
    await asyncio.sleep(delay)
    await asyncio.to_thread(append, address, "INBOX", raw)
