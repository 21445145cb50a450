"""The demo mail sandbox, driven by the real clients the probe uses: aiosmtplib and imapclient.

Every sandbox here listens on 127.0.0.1 on ports the kernel picked.  The
IMAP client is blocking, so its calls run in a worker thread while the
sandbox serves them from the test's event loop, exactly as the daemon's
watcher threads will.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, TypeVar

import aiosmtplib
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from imapclient.imapclient import DELETED, JUNK, SEEN, TRASH

from smtp_probe.probe.message import PROBE_HEADER
from smtp_probe.sandbox import (
    DEMO_PASSWORD,
    DEMO_USER,
    JUNK_FOLDER,
    JUNK_RECIPIENT,
    TRASH_FOLDER,
    MailSandbox,
    SandboxAddress,
    SandboxError,
)
from tests.support.loopback_smtpd import LOOPBACK, silent_listener
from tests.support.prom import free_port

SENDER = "probe@sender.test"
# The fetch the run engine makes; the field order in the reply's key is the server's choice.
FETCH_HEADERS = f"BODY.PEEK[HEADER.FIELDS ({PROBE_HEADER.upper()} RECEIVED)]"

T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one async scenario under a deadline, so a hung server fails the test quickly."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=15)

    return asyncio.run(bounded())


@asynccontextmanager
async def sandbox_running(**options: Any) -> AsyncIterator[tuple[MailSandbox, SandboxAddress]]:
    sandbox = MailSandbox(**options)
    address = await sandbox.start()
    try:
        yield sandbox, address
    finally:
        await sandbox.stop()


def probe_message(token: str, to: str = DEMO_USER) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = f"smtp-probe {token}"
    message[PROBE_HEADER] = token
    message.set_content("probe body\n")
    return message


async def send(address: SandboxAddress, message: EmailMessage, *recipients: str) -> str:
    """Submit over SMTP; return the text of the final 250."""
    _, reply = await aiosmtplib.send(
        message,
        sender=SENDER,
        recipients=list(recipients) or [DEMO_USER],
        hostname=address.host,
        port=address.smtp_port,
        timeout=5,
    )
    return reply


def imap_login(address: SandboxAddress, folder: str = "INBOX") -> IMAPClient:
    client = IMAPClient(address.host, port=address.imap_port, ssl=False, timeout=5)
    client.login(address.user, address.password)
    client.select_folder(folder)
    return client


def probe_uids(client: IMAPClient, from_uid: int = 1) -> list[int]:
    """The run engine's detection round: ``NOOP``, then search by the probe header."""
    client.noop()
    uids: list[int] = client.search(["UID", f"{from_uid}:*", "HEADER", PROBE_HEADER, ""])
    return uids


def header_fields(fetched: dict[bytes, Any]) -> bytes:
    [key] = [key for key in fetched if key.startswith(b"BODY[HEADER.FIELDS")]
    value: bytes = fetched[key]
    return value


def repr_bytes(response: tuple[Any, ...]) -> bytes:
    return b" ".join(part if isinstance(part, bytes) else str(part).encode() for part in response)


# ------------------------------------------------------------------ delivery


def test_message_accepted_over_smtp_is_found_over_imap_by_its_probe_header() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (sandbox, address):
            reply = await send(address, probe_message("token-1"))
            await asyncio.sleep(0.05)

            def find() -> tuple[list[int], dict[bytes, Any]]:
                with imap_login(address) as client:
                    uids = probe_uids(client)
                    fetched = client.fetch(uids, ["INTERNALDATE", FETCH_HEADERS, "FLAGS"])
                    return uids, fetched[uids[0]]

            uids, fetched = await asyncio.to_thread(find)
            assert "queued as" in reply
            assert sandbox.delivered == 1

        assert len(uids) == 1
        headers = header_fields(fetched).decode()
        assert f"{PROBE_HEADER}: token-1" in headers
        queue_id = reply.rsplit(" ", 1)[1]
        assert f"by sandbox.test (smtp-probe sandbox) with ESMTP id {queue_id}" in headers
        # imapclient gives INTERNALDATE as naive local time.
        assert abs(fetched[b"INTERNALDATE"] - datetime.now()) < timedelta(seconds=30)
        assert SEEN not in fetched[b"FLAGS"], "BODY.PEEK must not mark the message read"

    run(scenario)


def test_status_uidnext_moves_past_a_delivered_message_and_uidvalidity_stays() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (_, address):

            def status() -> dict[bytes, int]:
                with imap_login(address) as client:
                    result: dict[bytes, int] = client.folder_status(
                        "INBOX", [b"UIDNEXT", b"UIDVALIDITY"]
                    )
                    return result

            before = await asyncio.to_thread(status)
            await send(address, probe_message("token-2"))
            await asyncio.sleep(0.05)
            after = await asyncio.to_thread(status)

        assert after[b"UIDNEXT"] == before[b"UIDNEXT"] + 1
        assert after[b"UIDVALIDITY"] == before[b"UIDVALIDITY"]

    run(scenario)


def test_search_from_the_uid_seen_before_sending_finds_only_the_new_message() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (_, address):
            await send(address, probe_message("old"))
            await asyncio.sleep(0.05)
            client = await asyncio.to_thread(imap_login, address)
            try:
                uidnext = int(
                    (await asyncio.to_thread(client.folder_status, "INBOX", [b"UIDNEXT"]))[
                        b"UIDNEXT"
                    ]
                )
                await send(address, probe_message("new"))
                await asyncio.sleep(0.05)
                uids = await asyncio.to_thread(probe_uids, client, uidnext)
                fetched = await asyncio.to_thread(client.fetch, uids, [FETCH_HEADERS])
            finally:
                await asyncio.to_thread(client.logout)

        assert uids == [uidnext]
        assert f"{PROBE_HEADER}: new" in header_fields(fetched[uidnext]).decode()

    run(scenario)


def test_delete_by_uid_with_uid_expunge_removes_that_message_only() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (_, address):
            await send(address, probe_message("keep"))
            await send(address, probe_message("delete"))
            await asyncio.sleep(0.05)

            def delete_second() -> tuple[bool, list[int], list[int]]:
                with imap_login(address) as client:
                    uidplus = client.has_capability("UIDPLUS")
                    keep, delete = probe_uids(client)
                    client.add_flags([delete], [DELETED], silent=True)
                    client.uid_expunge([delete])
                    return uidplus, [keep], probe_uids(client)

            uidplus, kept, remaining = await asyncio.to_thread(delete_second)

        assert uidplus
        assert remaining == kept

    run(scenario)


def test_idle_announces_a_delivered_message() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (_, address):
            client = await asyncio.to_thread(imap_login, address)
            try:
                idle_capable = await asyncio.to_thread(client.has_capability, "IDLE")
                await asyncio.to_thread(client.idle)
                await send(address, probe_message("token-idle"))
                responses = await asyncio.to_thread(client.idle_check, 5)
                await asyncio.to_thread(client.idle_done)
            finally:
                await asyncio.to_thread(client.logout)

        assert idle_capable
        assert (1, b"EXISTS") in responses

    run(scenario)


def test_delivery_delay_holds_a_message_back_before_it_is_visible() -> None:
    async def scenario() -> None:
        async with sandbox_running(delivery_delay=1.5) as (sandbox, address):
            client = await asyncio.to_thread(imap_login, address)
            try:
                await asyncio.to_thread(client.idle)
                sending = time.monotonic()
                await send(address, probe_message("token-late"))
                # Wait for the IDLE notice with select, then read it with DONE in
                # blocking mode: imapclient's idle_check raises on a line that
                # arrives in two pieces.
                sock = client.socket()
                early: tuple[list[Any], ...] = await asyncio.to_thread(
                    select.select, [sock], [], [], 0.2
                )
                late: tuple[list[Any], ...] = await asyncio.to_thread(
                    select.select, [sock], [], [], 5
                )
                visible = time.monotonic()
                _, responses = await asyncio.to_thread(client.idle_done)
            finally:
                # Not LOGOUT: under load pymap's untagged FETCH can trail the
                # IDLE exchange, and imaplib's LOGOUT chokes on it.
                await asyncio.to_thread(client.shutdown)
            assert sandbox.delivered == 1

        assert early[0] == []
        assert late[0] != []
        assert (1, b"EXISTS") in responses
        assert visible - sending >= 1.5

    run(scenario)


def test_junk_folder_is_listed_as_junk_and_the_junk_address_lands_there() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (_, address):
            await send(address, probe_message("spam", JUNK_RECIPIENT), JUNK_RECIPIENT)
            await asyncio.sleep(0.05)

            def look() -> tuple[list[Any], str | None, list[int], list[int]]:
                with imap_login(address) as client:
                    folders = client.list_folders()
                    junk = client.find_special_folder(JUNK)
                    in_inbox = probe_uids(client)
                    client.select_folder(JUNK_FOLDER)
                    return folders, junk, in_inbox, probe_uids(client)

            folders, junk, in_inbox, in_junk = await asyncio.to_thread(look)

        assert (JUNK_FOLDER, True) in [(name, b"\\Junk" in flags) for flags, _, name in folders]
        assert junk == JUNK_FOLDER
        assert in_inbox == []
        assert len(in_junk) == 1

    run(scenario)


def test_trash_folder_is_listed_as_trash() -> None:
    async def scenario() -> str | None:
        async with sandbox_running() as (_, address):

            def look() -> str | None:
                client = imap_login(address)
                try:
                    found: str | None = client.find_special_folder(TRASH)
                    flags = {name: flags for flags, _, name in client.list_folders()}
                    assert b"\\Trash" in flags[TRASH_FOLDER]
                    return found
                finally:
                    client.logout()

            return await asyncio.to_thread(look)

    assert run(scenario) == TRASH_FOLDER


def test_capabilities_after_login_can_gain_gmails_and_lose_move_and_uidplus() -> None:
    """So that protocol tests can stand the sandbox in for Gmail, or for an older server."""

    async def capabilities(**options: Any) -> set[bytes]:
        async with sandbox_running(**options) as (_, address):

            def look() -> set[bytes]:
                client = imap_login(address)
                try:
                    return set(client.capabilities())
                finally:
                    client.logout()

            return await asyncio.to_thread(look)

    async def scenario() -> tuple[set[bytes], set[bytes]]:
        plain = await capabilities()
        changed = await capabilities(
            imap_extensions=["x-gm-ext-1"], imap_withheld=["MOVE", "UIDPLUS"]
        )
        return plain, changed

    plain, changed = run(scenario)
    assert {b"MOVE", b"UIDPLUS", b"IDLE"} <= plain
    assert b"X-GM-EXT-1" not in plain
    assert changed == (plain - {b"MOVE", b"UIDPLUS"}) | {b"X-GM-EXT-1"}


# ------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        pytest.param(
            "someone@example.com",
            "5.7.1 <someone@example.com>: Relay access denied",
            id="outside-domain-is-not-relayed",
        ),
        pytest.param(
            "nobody@sandbox.test",
            "5.1.1 <nobody@sandbox.test>: Recipient address rejected",
            id="unknown-user-at-the-sandbox-domain",
        ),
    ],
)
def test_a_recipient_without_a_mailbox_here_is_refused_with_550_and_nothing_is_delivered(
    recipient: str, reply: str
) -> None:
    """The sandbox refuses as Postfix does (smtpd_relay_restrictions, virtual mailbox maps)."""

    async def scenario() -> None:
        async with sandbox_running() as (sandbox, address):
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                await send(address, probe_message("refused"), recipient)
            assert sandbox.delivered == 0

        [error] = refused.value.recipients
        assert error.code == 550
        assert error.message.startswith(reply)

    run(scenario)


def test_mixed_envelope_delivers_to_the_demo_mailbox_and_refuses_the_outside_recipient() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (sandbox, address):
            errors, _ = await aiosmtplib.send(
                probe_message("mixed"),
                sender=SENDER,
                recipients=["someone@example.com", DEMO_USER],
                hostname=address.host,
                port=address.smtp_port,
                timeout=5,
            )
            await asyncio.sleep(0.05)

            def count() -> int:
                with imap_login(address) as client:
                    return len(probe_uids(client))

            assert await asyncio.to_thread(count) == 1
            assert sandbox.delivered == 1

        assert [(rcpt, error.code) for rcpt, error in errors.items()] == [
            ("someone@example.com", 550)
        ]

    run(scenario)


def test_imap_login_with_a_wrong_password_is_refused() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (_, address):

            def login() -> None:
                with IMAPClient(address.host, port=address.imap_port, ssl=False, timeout=5) as c:
                    c.login(DEMO_USER, DEMO_PASSWORD + "-wrong")

            with pytest.raises(LoginError):
                await asyncio.to_thread(login)

    run(scenario)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "mail.example.com"])  # noqa: S104
def test_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(SandboxError, match="loopback only"):
        MailSandbox(host=host)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"smtp_port": 70000}, "smtp_port 70000 is not a TCP port"),
        ({"imap_port": -1}, "imap_port -1 is not a TCP port"),
        ({"smtp_port": 10025, "imap_port": 10025}, "cannot share port 10025"),
        ({"delivery_delay": -1.0}, "delivery_delay must be"),
        ({"delivery_delay": float("nan")}, "delivery_delay must be"),
        ({"imap_extensions": ["X GM"]}, "imap_extensions: 'X GM' is not an IMAP capability"),
        ({"imap_withheld": [""]}, "imap_withheld: '' is not an IMAP capability name"),
    ],
)
def test_out_of_range_ports_and_delays_are_refused(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(SandboxError, match=complaint):
        MailSandbox(**options)


def test_localhost_is_accepted_as_127_0_0_1() -> None:
    async def scenario() -> SandboxAddress:
        async with sandbox_running(host="localhost") as (_, address):
            return address

    assert run(scenario).host == LOOPBACK


# ---------------------------------------------------------------- ports, stop


def test_smtp_port_in_use_is_a_sandbox_error_naming_the_port() -> None:
    async def scenario() -> None:
        with (
            silent_listener() as port,
            pytest.raises(SandboxError, match=f"port {port} on 127.0.0.1 is in use"),
        ):
            await MailSandbox(smtp_port=port).start()

    run(scenario)


def test_imap_port_in_use_is_a_sandbox_error_and_releases_the_smtp_port() -> None:
    async def scenario() -> None:
        smtp_port = free_port()
        with (
            silent_listener() as imap_port,
            pytest.raises(SandboxError, match=f"IMAP server: port {imap_port} .* in use"),
        ):
            await MailSandbox(smtp_port=smtp_port, imap_port=imap_port).start()
        async with sandbox_running(smtp_port=smtp_port) as (_, address):
            assert address.smtp_port == smtp_port

    run(scenario)


def test_stop_closes_connections_and_releases_both_ports_for_a_new_sandbox() -> None:
    async def scenario() -> None:
        first = MailSandbox()
        address = await first.start()
        client = await asyncio.to_thread(imap_login, address)
        await asyncio.to_thread(client.idle)
        await first.stop()
        await first.stop()  # idempotent
        try:
            # The idling client hears the server go away instead of hanging.
            goodbye = await asyncio.to_thread(client.idle_check, 5)
        finally:
            await asyncio.to_thread(client.shutdown)
        assert any(b"BYE" in line for line in map(repr_bytes, goodbye))

        async with sandbox_running(smtp_port=address.smtp_port, imap_port=address.imap_port) as (
            second,
            again,
        ):
            assert (again.smtp_port, again.imap_port) == (address.smtp_port, address.imap_port)
            await send(again, probe_message("after-restart"))
            assert second.delivered == 1

    run(scenario)


def test_starting_a_running_sandbox_twice_is_refused() -> None:
    async def scenario() -> None:
        async with sandbox_running() as (sandbox, _):
            with pytest.raises(SandboxError, match="already running"):
                await sandbox.start()

    run(scenario)
