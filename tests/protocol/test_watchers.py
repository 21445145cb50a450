"""The daemon's watcher pool against a real IMAP server: the demo sandbox's pymap on 127.0.0.1.

The sandbox (aiosmtpd in, pymap out, in the test's own event loop) stands
for the mail stack's Dovecot: each watcher logs in over IMAP and watches a
folder; runs send through the sandbox's SMTP and are confirmed by the
pool's watcher. A mailbox is identified by server, user and folder, so
``INBOX`` and ``Junk`` of the one sandbox user are two mailboxes here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from smtp_probe.probe.imap import MailboxWatcher
from smtp_probe.probe.result import Outcome, RunResult
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import Mailbox, ProbeSpec, SmtpServer, TlsMode
from smtp_probe.sandbox import DEMO_PASSWORD, DEMO_USER, MailSandbox, SandboxAddress
from smtp_probe.secret import Secret
from smtp_probe.watchers import WatcherPool
from tests.support.loopback_smtpd import LOOPBACK, closed_port
from tests.support.waiting import eventually


@asynccontextmanager
async def sandbox() -> AsyncIterator[SandboxAddress]:
    server = MailSandbox()
    address = await server.start()
    try:
        yield address
    finally:
        await server.stop()


def mailbox(port: int, folder: str = "INBOX") -> Mailbox:
    return Mailbox(
        host=LOOPBACK,
        port=port,
        username=DEMO_USER,
        password=Secret(DEMO_PASSWORD),
        tls=TlsMode.NONE,
        folder=folder,
    )


def probe(name: str, box: Mailbox | None, smtp_port: int = 25) -> ProbeSpec:
    return ProbeSpec(
        name=name,
        smtp=SmtpServer(host=LOOPBACK, port=smtp_port, tls=TlsMode.NONE),
        mail_from="probe@sender.test",
        rcpt_to=DEMO_USER,
        mailbox=box,
        timeout=5.0,
    )


@asynccontextmanager
async def pool_for(*probes: ProbeSpec, key: bytes | None = None) -> AsyncIterator[WatcherPool]:
    pool = WatcherPool(key, start_wait=3.0)
    try:
        await pool.sync(probes, key=key)
        yield pool
    finally:
        await pool.close()


@dataclass(frozen=True)
class Sandbox:
    """A started sandbox and its one user's two folders, each a mailbox of its own."""

    address: SandboxAddress
    inbox: Mailbox
    junk: Mailbox


def on_sandbox(body: Callable[[Sandbox], Coroutine[Any, Any, None]]) -> None:
    """Run ``body`` in a fresh event loop beside a started sandbox, stopped afterwards."""

    async def main() -> None:
        async with sandbox() as address:
            port = address.imap_port
            await body(Sandbox(address, mailbox(port), mailbox(port, "Junk")))

    asyncio.run(main())


async def borrowed_across_sync(
    pool: WatcherPool, box: Mailbox, probes: list[ProbeSpec], key: bytes | None
) -> tuple[MailboxWatcher | None, MailboxWatcher | None]:
    """The watcher a run borrows for ``box`` before and after ``pool.sync(probes, key=key)``."""
    async with pool.use(box) as before:
        pass
    await pool.sync(probes, key=key)
    async with pool.use(box) as after:
        pass
    return before, after


# ---------------------------------------------------------------- sync


def test_sync_opens_one_connected_watcher_per_mailbox_in_use() -> None:
    async def body(box: Sandbox) -> None:
        inbox, junk = box.inbox, box.junk
        probes = (probe("a", inbox), probe("b", inbox), probe("c", junk), probe("d", None))
        async with pool_for(*probes) as pool:
            assert pool.states() == [(inbox, True, None), (junk, True, None)]

    on_sandbox(body)


def test_probes_of_one_mailbox_borrow_the_same_watcher() -> None:
    async def body(box: Sandbox) -> None:
        inbox, junk = box.inbox, box.junk
        async with pool_for(probe("a", inbox), probe("b", inbox), probe("c", junk)) as pool:
            async with pool.use(inbox) as first, pool.use(inbox) as second:
                assert first is not None
                assert first is second
            async with pool.use(junk) as other:
                assert other is not None
                assert other is not first
                assert other.mailbox == junk

    on_sandbox(body)


def test_a_bounce_mailbox_gets_a_watcher_shared_with_its_delivery_role() -> None:
    async def body(box: Sandbox) -> None:
        inbox, junk = box.inbox, box.junk
        # a: bounces to Junk (a mailbox of its own); b: bounces to its own delivery mailbox.
        a = replace(probe("a", inbox), bounce_mailbox=junk)
        b = replace(probe("b", junk), bounce_mailbox=junk)
        async with pool_for(a) as pool:
            assert pool.states() == [(inbox, True, None), (junk, True, None)]
            async with pool.use(junk) as bounces, pool.use(inbox) as delivery:
                assert bounces is not None
                assert bounces is not delivery
            await pool.sync([a, b], key=None)
            async with pool.use(junk) as shared, pool.use(b.mailbox) as delivery:
                assert shared is bounces, "one watcher per mailbox, whatever its roles"
                assert delivery is shared

    on_sandbox(body)


def test_use_yields_none_without_a_mailbox_or_for_a_mailbox_not_in_the_pool() -> None:
    async def body(box: Sandbox) -> None:
        async with pool_for(probe("a", box.inbox)) as pool:
            async with pool.use(None) as none:
                assert none is None
            async with pool.use(box.junk) as unknown:
                assert unknown is None

    on_sandbox(body)


def test_an_unreachable_mailbox_is_listed_down_and_sync_returns_after_the_start_wait() -> None:
    async def main() -> None:
        with closed_port() as port:
            down = mailbox(port)
            pool = WatcherPool(None, start_wait=0.5)
            began = time.monotonic()
            try:
                await pool.sync([probe("a", down)], key=None)
                waited = time.monotonic() - began
                [state] = pool.states()
                assert (state.mailbox, state.up) == (down, False)
                assert state.reason is not None
                assert state.reason.startswith("imap_connect: ")
            finally:
                await pool.close()
        assert waited < 3.0

    asyncio.run(main())


# ---------------------------------------------------------------- retiring


def test_a_mailbox_no_probe_uses_any_more_is_closed_at_once_when_no_run_has_it() -> None:
    async def body(box: Sandbox) -> None:
        inbox, junk = box.inbox, box.junk
        async with pool_for(probe("a", inbox), probe("c", junk)) as pool:
            async with pool.use(junk) as watcher:
                assert watcher is not None
            await pool.sync([probe("a", inbox)], key=None)

            assert pool.states() == [(inbox, True, None)]
            await eventually(lambda: not watcher.is_up)

    on_sandbox(body)


def test_a_retired_watcher_stays_open_until_its_last_run_gives_it_back() -> None:
    async def body(box: Sandbox) -> None:
        inbox, junk = box.inbox, box.junk
        async with pool_for(probe("a", inbox), probe("c", junk)) as pool:
            async with pool.use(junk) as watcher, pool.use(junk):
                assert watcher is not None
                await pool.sync([probe("a", inbox)], key=None)
                assert pool.states() == [(inbox, True, None)]
                async with pool.use(junk) as after_retiring:
                    assert after_retiring is None  # new runs do not get it
                await asyncio.sleep(0.3)
                assert watcher.is_up, "closed while two runs still had it"
            await eventually(lambda: not watcher.is_up)

    on_sandbox(body)


def test_a_mailbox_still_in_use_keeps_its_watcher_across_a_sync() -> None:
    async def body(box: Sandbox) -> None:
        inbox = box.inbox
        async with pool_for(probe("a", inbox)) as pool:
            before, after = await borrowed_across_sync(
                pool, inbox, [probe("a", inbox), probe("b", inbox)], key=None
            )
            assert after is before
            assert before is not None
            assert before.is_up

    on_sandbox(body)


# ---------------------------------------------------------------- token key


def test_a_new_token_key_reopens_every_watcher_with_a_new_signer() -> None:
    async def body(box: Sandbox) -> None:
        inbox = box.inbox
        async with pool_for(probe("a", inbox), key=b"first-key") as pool:
            token = str(pool.signer.new("a"))

            old, new = await borrowed_across_sync(
                pool, inbox, [probe("a", inbox)], key=b"second-key"
            )

            assert new is not None
            assert new is not old
            assert new.is_up
            assert pool.signer.verify("a", token) is None
            assert old is not None
            await eventually(lambda: not old.is_up)

    on_sandbox(body)


def test_the_same_token_key_keeps_the_signer_and_the_watchers() -> None:
    async def body(box: Sandbox) -> None:
        inbox = box.inbox
        async with pool_for(probe("a", inbox), key=b"a-key") as pool:
            signer = pool.signer

            before, after = await borrowed_across_sync(
                pool, inbox, [probe("a", inbox)], key=b"a-key"
            )

            assert after is before
            assert pool.signer is signer

    on_sandbox(body)


def test_a_run_after_a_re_key_is_confirmed_by_the_new_watcher() -> None:
    """Runs sign with ``pool.signer``; the re-keyed watcher recognises (and deletes) the message."""
    results: list[RunResult] = []

    async def body(box: Sandbox) -> None:
        spec = probe("a", box.inbox, smtp_port=box.address.smtp_port)
        async with pool_for(spec, key=b"first-key") as pool:
            await pool.sync([spec], key=b"second-key")
            async with pool.use(spec.mailbox) as watcher:
                results.append(await run_probe(spec, signer=pool.signer, watcher=watcher))

    on_sandbox(body)

    [result] = results
    assert result.outcome is Outcome.DELIVERED, result.error
    assert result.arrival is not None
    assert result.arrival.deleted


# ---------------------------------------------------------------- close


def test_close_closes_every_watcher_even_one_a_run_still_has() -> None:
    async def body(box: Sandbox) -> None:
        pool = WatcherPool(None, start_wait=3.0)
        await pool.sync([probe("a", box.inbox), probe("c", box.junk)], key=None)
        async with pool.use(box.inbox) as borrowed:
            async with pool.use(box.junk) as idle:
                pass
            await pool.close()
            assert borrowed is not None
            assert idle is not None
            assert not borrowed.is_up
            assert not idle.is_up
            assert pool.states() == []

    on_sandbox(body)


def test_a_mailbox_spec_change_is_a_new_mailbox() -> None:
    """Another folder (or server, or user) is another watcher; the old one is retired."""

    async def body(box: Sandbox) -> None:
        renamed = replace(box.inbox, folder="Junk")
        async with pool_for(probe("a", box.inbox)) as pool:
            await pool.sync([probe("a", renamed)], key=None)
            assert pool.states() == [(renamed, True, None)]

    on_sandbox(body)
