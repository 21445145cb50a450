r"""One blocking IMAP session on imapclient: the only module that knows its exceptions.

An :class:`ImapSession` is one connection to one mailbox: connected (implicit
TLS or STARTTLS), logged in (``LOGIN`` with a password, or ``AUTHENTICATE
OAUTHBEARER``/``XOAUTH2`` with a token from the mailbox's source, asked at
every login), capabilities read. It selects folders, reads their status,
finds and fetches new probe messages, deletes one message by UID (in place,
or by moving it to ``\Trash`` and deleting it there), enters and leaves
IDLE, and logs out, writing what it says and hears to a transcript. Only the
watcher thread uses it (imapclient is blocking and not thread-safe), and
every call is bounded by the socket timeout.

Failures come out as this module's errors: opening a session raises
:class:`ImapError` naming the stage that failed (``oauth`` when no token
could be had); once open, any failed command raises :class:`ConnectionLost`
(the session is of no further use: reconnect), except a failed delete (or
move to trash), which is an :class:`ImapError` at ``cleanup`` and leaves the
session usable.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import imaplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError, ProtocolError
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.imapclient import DELETED, JUNK, TRASH
from imapclient.response_parser import parse_fetch_response, parse_response

from smtp_probe.probe import sasl
from smtp_probe.probe.credentials import AccessToken, TokenError, TokenSource, describe
from smtp_probe.probe.message import PROBE_HEADER, SUBJECT_MARK, decode_subject, header_date
from smtp_probe.probe.result import Stage, TlsFacts
from smtp_probe.probe.spec import Mailbox, TlsMode
from smtp_probe.probe.tls import client_context, describe_facts, describe_verify_error, tls_facts
from smtp_probe.probe.transcript import REDACTED, Transcript
from smtp_probe.probe.verdicts import VERDICT_HEADERS

_VERDICT_FIELDS: Final = " ".join(name.upper() for name in VERDICT_HEADERS if name != "From")
_FETCH_HEADERS: Final = (
    f"BODY.PEEK[HEADER.FIELDS ({PROBE_HEADER.upper()} RECEIVED SUBJECT DATE CONTENT-TYPE "
    f"MESSAGE-ID FROM {_VERDICT_FIELDS})]"
)
_FETCH_BATCH: Final = 500
"""UIDs per header FETCH. 500 UIDs of up to ten digits keep the command line
under the 8,192 octets RFC 7162 (section 4) asks clients to stay within;
Dovecot refuses a line over 64 KB ("Too long argument"), which the first sweep
of a mailbox with ~11,000 candidates used to send."""
MAX_MESSAGE_BYTES: Final = 1 << 20
"""The most of one message :meth:`ImapSession.fetch_message` reads (ours are a few KB)."""
_VERDICT_NAMES: Final = frozenset(name.lower() for name in VERDICT_HEADERS)
REPORT_FETCH_BYTES: Final = 256 * 1024
"""How much of a delivery report is fetched: the status part comes before the
returned message, and ``RET=HDRS`` returns only headers; a huge returned
message must not be read whole."""
_FETCH_REPORT: Final = f"BODY.PEEK[]<0.{REPORT_FETCH_BYTES}>"
TAIL_FETCH: Final = 4
"""How many of a folder's last messages :meth:`ImapSession.fetch_tail` fetches."""
TAIL_HEADER_BYTES: Final = 64 * 1024
"""The most of one message's header fields :meth:`ImapSession.fetch_tail` reads."""
_TAIL_HEADERS: Final = f"{_FETCH_HEADERS}<0.{TAIL_HEADER_BYTES}>"
# compat32: ten times cheaper than the default policy, and we only want strings.
_HEADER_PARSER: Final = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_FAILURES: Final = (OSError, IMAPClientError)
"""What imapclient raises when a command fails or the connection breaks (ssl errors are OSErrors)."""
_TEMPORARY: Final = "[UNAVAILABLE]"
"""RFC 5530: the server could not check the credentials now (Dovecot: its token
introspection endpoint is down); not a verdict on the token."""


class ImapError(Exception):
    """The IMAP leg failed at ``stage`` (``imap_connect`` … ``imap_select``, ``delivery``, ``cleanup``)."""

    def __init__(self, stage: Stage, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class ConnectionLost(Exception):
    """An open session broke (connection dropped, command failed): reconnect to go on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """A folder's numbering: UIDVALIDITY, the next UID to be assigned, and (on SELECT) its size."""

    uidvalidity: int
    uidnext: int
    exists: int | None = None


@dataclass(frozen=True, slots=True)
class Polled:
    """What one :meth:`ImapSession.poll` learnt."""

    news: bool
    """The selected folder may hold messages not looked at yet."""
    exists: int | None
    """The folder's size as last announced (``EXISTS``), if this poll heard one."""
    statuses: list[FolderStatus]
    """The status of each folder asked about, in order."""


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """What the watcher needs of a message carrying the probe header."""

    uid: int
    token: str
    """The probe header's value: the run's token, if the message is ours."""
    internaldate: datetime | None
    received: tuple[str, ...]
    """``Received:`` headers, newest first, each unfolded onto one line."""
    subject: str = ""
    """The Subject, decoded (a reflector's reply carries the token only there)."""
    date: datetime | None = None
    """The ``Date:`` header, if it parses: when the message was written."""
    content_type: str = ""
    """The top-level media type in lower case (``multipart/report`` is a DSN), or ``""``."""
    verdict_headers: tuple[tuple[str, str], ...] = ()
    """``Authentication-Results``, spam score headers and ``From`` (name, value), in
    message order: what :func:`smtp_probe.probe.verdicts.read_verdicts` reads."""
    message_id: str = ""
    """The ``Message-ID`` as written (a DSN's copy in ``\\Trash`` is found by it)."""


class ImapSession:
    """A logged-in IMAP connection; open one with :meth:`open`.

    ``idle_capable`` and ``uidplus`` say what the server offers.
    """

    def __init__(self, client: Any, *, in_tls: bool) -> None:
        """Wrap a connected imapclient client; :meth:`open` is the way to get one."""
        self._client = client
        self.in_tls = in_tls
        """True once the connection is inside TLS: transcript lines are marked so."""
        self.tls: TlsFacts | None = None
        """The connection's TLS facts, once inside TLS."""
        self.idle_capable = False
        self.uidplus = False
        self.selected: str | None = None
        """The folder selected last; deletes happen there."""
        self._news = True
        """The selected folder may hold messages no poll has announced yet (just selected)."""
        self._tail_refused = False
        """The server refused :meth:`fetch_tail`'s FETCH once: search instead on this session."""

    @classmethod
    def open(
        cls,
        mailbox: Mailbox,
        transcript: Transcript,
        timeout: float,
        *,
        token: AccessToken | None = None,
    ) -> ImapSession:
        """Connect, upgrade with STARTTLS if asked, log in and read the capabilities.

        ``timeout`` bounds every socket operation of the session until
        :meth:`set_timeout` changes it.

        A mailbox with ``oauth`` logs in with ``token``, or gets one from its
        source before connecting (from the shared cache, usually), so a token
        that cannot be had costs no connection.

        Raises:
            ImapError: at ``oauth`` (no token within ``timeout``),
                ``imap_connect``, ``imap_starttls``, ``imap_login`` or
                ``imap_select`` (capabilities), with a one-line reason.
        """
        if mailbox.oauth is not None and token is None:
            token = _token(mailbox.oauth, transcript, timeout)
        transcript.note(f"imap: connecting to {mailbox.address} (tls: {mailbox.tls})")
        context = client_context(mailbox.tls_settings) if mailbox.tls is not TlsMode.NONE else None
        try:
            client = IMAPClient(
                mailbox.host,
                port=mailbox.port,
                ssl=mailbox.tls is TlsMode.TLS,
                ssl_context=context,
                timeout=timeout,
            )
        except _FAILURES as exc:
            raise ImapError(Stage.IMAP_CONNECT, _reason(exc)) from None
        client.normalise_times = False
        session = cls(client, in_tls=mailbox.tls is TlsMode.TLS)
        try:
            session._log_in(mailbox, context, transcript, token, timeout)
        except BaseException:
            session.shutdown()
            raise
        return session

    def _log_in(
        self,
        mailbox: Mailbox,
        context: ssl.SSLContext | None,
        transcript: Transcript,
        token: AccessToken | None,
        timeout: float,
    ) -> None:
        client = self._client
        if self.in_tls:
            self._note_tls(mailbox, transcript)
        self._received(_text(client.welcome), transcript)

        if mailbox.tls is TlsMode.STARTTLS:
            self._sent("STARTTLS", transcript)
            try:
                reply = client.starttls(context)
            except _FAILURES as exc:
                raise ImapError(Stage.IMAP_STARTTLS, _reason(exc)) from None
            self.in_tls = True
            self._received(f"OK {_text(reply)}" if reply else "OK", transcript)
            self._note_tls(mailbox, transcript)

        if mailbox.oauth is not None and token is not None:
            self._authenticate(mailbox, mailbox.oauth, token, transcript, timeout)
        else:
            self._login(mailbox, transcript)

        try:
            capabilities = {_text(c).upper() for c in client.capabilities()}
        except _FAILURES as exc:
            raise ImapError(Stage.IMAP_SELECT, _reason(exc)) from None
        self.idle_capable = "IDLE" in capabilities
        self.uidplus = "UIDPLUS" in capabilities

    def _login(self, mailbox: Mailbox, transcript: Transcript) -> None:
        """``LOGIN`` with the mailbox's password.

        Raises:
            ImapError: at ``imap_login``.
        """
        password = mailbox.password.reveal() if mailbox.password else ""
        # The transcript redacts LOGIN's password and scrubs the registered secret.
        self._sent(f"LOGIN {mailbox.username} {password}", transcript)
        try:
            reply = self._client.login(mailbox.username, password)
        except LoginError as exc:
            self._received(f"NO {_reason(exc)}", transcript)
            raise ImapError(Stage.IMAP_LOGIN, f"login refused: {_reason(exc)}") from None
        except _FAILURES as exc:
            raise ImapError(Stage.IMAP_LOGIN, _reason(exc)) from None
        self._received(f"OK {_text(reply)}", transcript)

    def _authenticate(
        self,
        mailbox: Mailbox,
        source: TokenSource,
        token: AccessToken,
        transcript: Transcript,
        timeout: float,
    ) -> None:
        """``AUTHENTICATE OAUTHBEARER`` (or ``XOAUTH2``) as the pre-login capabilities offer.

        A token from the cache that the server refuses is rejected, and the
        login tried once more on the same connection with a fresh one (a
        failed AUTHENTICATE leaves the session unauthenticated, free to try
        again). A fresh token refused, or a temporary failure, is final.

        Raises:
            ImapError: at ``imap_login``, or at ``oauth`` when the new token
                could not be had.
        """
        try:
            capabilities = [_text(c).upper() for c in self._client.capabilities()]
        except _FAILURES as exc:
            raise ImapError(Stage.IMAP_LOGIN, _reason(exc)) from None
        offered = [c.removeprefix("AUTH=") for c in capabilities if c.startswith("AUTH=")]
        mechanism = sasl.choose(offered)
        if mechanism is None:
            names = ", ".join(f"AUTH={name}" for name in offered) or "no AUTH= mechanism"
            raise ImapError(
                Stage.IMAP_LOGIN,
                f"server offers neither AUTH={sasl.OAUTHBEARER} nor AUTH={sasl.XOAUTH2} "
                f"(it offers {names})",
            )
        refusal = self._sasl_exchange(mechanism, mailbox, token, transcript)
        if refusal is None:
            return
        reason, temporary = refusal
        if temporary or token.fresh:
            raise ImapError(Stage.IMAP_LOGIN, reason)
        source.reject(token)
        transcript.note(
            f"imap: the cached token from {source.client} was refused; "
            "trying once more with a new one"
        )
        token = _token(source, transcript, timeout)
        refusal = self._sasl_exchange(mechanism, mailbox, token, transcript)
        if refusal is not None:
            raise ImapError(Stage.IMAP_LOGIN, refusal[0])

    def _sasl_exchange(
        self, mechanism: str, mailbox: Mailbox, token: AccessToken, transcript: Transcript
    ) -> tuple[str, bool] | None:
        """One AUTHENTICATE: ``None`` when logged in, else the reason and whether it is temporary.

        imaplib sends no initial response on the command line; it answers
        the server's first (empty) ``+`` with the token. A second ``+`` is the
        error challenge: it is shown decoded and acknowledged as the
        mechanism requires (imapclient's own ``oauth2_login`` would send the
        token again), and the tagged ``NO`` follows. Anything after that is
        cancelled with ``*``.

        Raises:
            ImapError: at ``imap_login``: the connection broke.
        """
        payload = sasl.initial_response(
            mechanism,
            user=mailbox.username,
            token=token.value.reveal(),
            host=mailbox.host,
            port=mailbox.port,
        )
        transcript.mask(payload.decode())
        challenges: list[bytes] = []
        answered = False

        def respond(challenge: bytes) -> bytes | None:
            nonlocal answered
            if not answered:
                answered = True
                return payload
            if challenges:
                self._received(f"+ {sasl.shown_challenge(challenge)}", transcript)
                self._sent("*", transcript)
                return None  # imaplib sends "*": cancel
            challenges.append(challenge)
            reply = sasl.error_response(mechanism)
            self._received(f"+ {sasl.shown_challenge(challenge)}", transcript)
            self._sent(base64.b64encode(reply).decode(), transcript)
            return reply

        self._sent(f"AUTHENTICATE {mechanism} {REDACTED}", transcript)
        try:
            reply = self._client.sasl_login(mechanism, respond)
        except LoginError as exc:
            text = _reason(exc)
            self._received(f"NO {text}", transcript)
            temporary = _TEMPORARY in text.upper()
            if temporary:
                reason = (
                    f"AUTHENTICATE {mechanism} failed for now: {text} "
                    "(a temporary failure on the server's side, not a refused token)"
                )
            else:
                reason = f"AUTHENTICATE {mechanism} refused: {text}"
                if challenges:
                    reason += f" (token refused: {sasl.challenge_summary(challenges[0])})"
            return reason, temporary
        except _FAILURES as exc:
            raise ImapError(Stage.IMAP_LOGIN, _reason(exc)) from None
        self._received(f"OK {_text(reply)}", transcript)
        return None

    def set_timeout(self, seconds: float) -> None:
        """Bound every later socket operation by ``seconds``."""
        with contextlib.suppress(OSError):
            self._client.socket().settimeout(seconds)

    # ----------------------------------------------------------------- folders

    def select(self, folder: str, transcript: Transcript | None = None) -> FolderStatus:
        """Select ``folder`` (written to ``transcript`` if given).

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        if transcript is not None:
            self._sent(f"SELECT {folder}", transcript)
        with _lost_on_failure():
            info = self._client.select_folder(folder)
        self.selected = folder
        # SELECT flushes imaplib's pending EXISTS: the next poll must look, whatever it hears.
        self._news = True
        status = FolderStatus(
            uidvalidity=int(info.get(b"UIDVALIDITY", 0)),
            uidnext=int(info.get(b"UIDNEXT", 0)),
            exists=int(info[b"EXISTS"]) if b"EXISTS" in info else None,
        )
        if transcript is not None:
            exists = "?" if status.exists is None else status.exists
            self._received(
                f"OK {exists} EXISTS, UIDNEXT {status.uidnext}, UIDVALIDITY {status.uidvalidity}",
                transcript,
            )
        return status

    def status(self, folder: str) -> FolderStatus:
        """``STATUS`` of a folder other than the selected one.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        with _lost_on_failure():
            info = self._client.folder_status(folder, [b"UIDNEXT", b"UIDVALIDITY"])
        return FolderStatus(uidvalidity=int(info[b"UIDVALIDITY"]), uidnext=int(info[b"UIDNEXT"]))

    def junk_folder(self) -> str | None:
        r"""The SPECIAL-USE ``\Junk`` folder (or a well-known junk name), if the server has one.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        return self.special_folder(JUNK)

    def trash_folder(self) -> str | None:
        r"""The SPECIAL-USE ``\Trash`` folder (or a well-known trash name), if the server has one.

        Gmail marks ``[Gmail]/Trash`` (localised: ``[Gmail]/Papierkorb``)
        ``\Trash`` in ``LIST``; Microsoft 365 calls it ``Deleted Items``.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        return self.special_folder(TRASH)

    def special_folder(self, use: bytes) -> str | None:
        r"""The folder ``LIST`` marks with the RFC 6154 attribute ``use`` (``\Junk``, ``\Trash``).

        Without such an attribute, a folder with one of the usual names for
        it in the personal namespace (imapclient's list: ``Junk``/``Spam``,
        ``Trash``/``Deleted Items``/``Deleted Messages``); ``None`` if there
        is neither.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        with _lost_on_failure():
            found: str | None = self._client.find_special_folder(use)
        return found

    def has(self, capability: str) -> bool:
        """True if the server listed ``capability`` after login (imapclient keeps that list)."""
        with _lost_on_failure():
            return bool(self._client.has_capability(capability))

    # ----------------------------------------------------------------- messages

    def noop(self) -> None:
        """``NOOP``: Dovecot's SEARCH sees new mail one command late without it.

        Raises:
            ConnectionLost: the connection broke.
        """
        with _lost_on_failure():
            self._client.noop()

    def poll(self, folders: Sequence[str] = ()) -> Polled:
        """``NOOP`` and a ``STATUS`` of each of ``folders``, pipelined: one round trip.

        Returns whether the selected folder may have new messages, and the
        folders' status in the order asked. New mail is what the server
        announced with ``EXISTS`` (RFC 3501 §7.3.1: it must, at the latest in
        the reply to a ``NOOP``) since the last poll, in the reply to any
        command; or the folder was selected since (SELECT starts afresh). A
        poll without news needs no ``SEARCH``.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        client = self._client
        imap = client._imap
        commands = [b"NOOP"]
        commands += [
            b"STATUS " + _to_bytes(client._normalise_folder(name)) + b" (UIDNEXT UIDVALIDITY)"
            for name in folders
        ]
        with _lost_on_failure():
            replies = self._exchange(commands)
            found = imap.untagged_responses.pop("STATUS", [])
        for (typ, data), command in zip(replies, commands, strict=True):
            if typ != "OK":
                raise ConnectionLost(f"{command.decode()}: {typ} {_text(data[-1] if data else '')}")
        responses = imap.untagged_responses
        announced = responses.pop("EXISTS", None)
        news, self._news = bool(announced) or self._news, False
        # Only the count is of use, and only here: do not let these pile up.
        responses.pop("RECENT", None)
        responses.pop("EXPUNGE", None)
        exists: int | None = None
        if announced:
            # The last count announced. An EXPUNGE since makes it too high, never
            # too low: fetch_tail then fetches fewer of the last messages, still
            # a run that ends at the last one.
            with contextlib.suppress(ValueError, TypeError):
                exists = int(announced[-1])
        return Polled(news, exists, _statuses(folders, found))

    def _exchange(self, commands: Sequence[bytes]) -> list[tuple[str, list[Any]]]:
        """Send ``commands`` in one write (RFC 3501 §5.5) and read every tagged reply, in order.

        Each reply is imaplib's ``(type, data)``; untagged responses are
        filed by imaplib as for any command. All replies are read before
        anything is judged, so the session stays in step.

        Raises:
            OSError, IMAPClientError: the connection broke or a reply was BAD.
        """
        imap = self._client._imap
        for typ in ("OK", "NO", "BAD"):
            imap.untagged_responses.pop(typ, None)
        tags = [imap._new_tag() for _ in commands]
        imap.send(
            b"".join(
                tag + b" " + command + b"\r\n" for tag, command in zip(tags, commands, strict=True)
            )
        )
        replies = []
        failure: BaseException | None = None
        for tag, command in zip(tags, commands, strict=True):
            name = command.split(b" ", 2)[1 if command.startswith(b"UID ") else 0].decode()
            try:
                replies.append(imap._command_complete(name, tag))
            except imaplib.IMAP4.abort:
                raise  # the connection broke: nothing more to read
            except IMAPClientError as exc:  # BAD, its reply read: read the others first
                failure = failure or exc
                replies.append(("BAD", [str(exc).encode()]))
        if failure is not None:
            raise failure
        return replies

    def search_probe_uids(self, from_uid: int, *, subjects: bool = False) -> list[int]:
        """UIDs from ``from_uid`` on of messages that carry the probe header, ascending.

        With ``subjects``, also those whose Subject mentions ``smtp-probe``
        (a reflector's reply drops our header but keeps the Subject): one
        server-side substring search finds every run's reply at once, late
        ones included.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        criteria = ["UID", f"{from_uid}:*", "HEADER", PROBE_HEADER, ""]
        if subjects:
            criteria[2:] = ["OR", "HEADER", PROBE_HEADER, "", "SUBJECT", SUBJECT_MARK]
        with _lost_on_failure():
            found = self._client.search(criteria)
        # "N:*" matches the highest UID even when it is below N (RFC 3501).
        return sorted(uid for uid in found if uid >= from_uid)

    def search_report_uids(self, from_uid: int) -> list[int]:
        """UIDs from ``from_uid`` on of messages that may be delivery reports, ascending.

        Delivery status notifications (``multipart/report``) carry our token
        only inside, in the returned headers: the server finds the candidates,
        :meth:`fetch_reports` brings them for parsing. A candidate's
        Content-Type says ``report``, or it comes from ``MAILER-DAEMON`` or
        ``postmaster`` (the usual senders of reports: Postfix, Gmail,
        Exchange Online), for servers whose HEADER search skips
        Content-Type; the parser throws out what is not a report.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        criteria = ["UID", f"{from_uid}:*", "OR", "OR", "HEADER", "Content-Type", "report"]
        criteria += ["FROM", "MAILER-DAEMON", "FROM", "postmaster"]
        with _lost_on_failure():
            found = self._client.search(criteria)
        return sorted(uid for uid in found if uid >= from_uid)

    def fetch_reports(self, uids: Sequence[int]) -> list[tuple[int, bytes]]:
        """The first :data:`REPORT_FETCH_BYTES` of each of ``uids`` (``BODY.PEEK``: not marked seen).

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        with _lost_on_failure():
            fetched = self._client.fetch(list(uids), [_FETCH_REPORT])
        out = []
        for uid in sorted(fetched):
            body = next(
                (
                    v
                    for k, v in fetched[uid].items()
                    if k.startswith(b"BODY[]") and isinstance(v, bytes)
                ),
                b"",
            )
            out.append((uid, body))
        return out

    def fetch_tail(self, from_uid: int, exists: int) -> list[FetchedMessage] | None:
        """Every message from ``from_uid`` on, headers and all, in one ``FETCH`` of the last few.

        Search and fetch in one exchange: the folder's last
        :data:`TAIL_FETCH` messages (by sequence number, the folder holding
        ``exists``), each message's header fields capped at
        :data:`TAIL_HEADER_BYTES`. Their UIDs ascend, so if the oldest of
        them is below ``from_uid`` (or they are the whole folder), every new
        message is among them: those are returned, ours or not (the caller
        keeps those with the probe header). ``None`` when that is not sure
        (as many new messages as fetched, or one's header fields larger than
        the cap): search instead, as also after the server refused this
        FETCH once. A stranger's message is only read (``BODY.PEEK``),
        never marked.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        if self._tail_refused:
            return None
        if exists < 1:
            return []
        first = max(1, exists - TAIL_FETCH + 1)
        imap = self._client._imap
        imap.untagged_responses.pop("FETCH", None)  # unsolicited flag news of no use here
        command = f"FETCH {first}:* (UID INTERNALDATE {_TAIL_HEADERS})".encode()
        with _lost_on_failure():
            try:
                ((typ, _),) = self._exchange([command])
            except imaplib.IMAP4.abort:
                raise
            except IMAPClientError:
                typ = "BAD"
            raw = imap.untagged_responses.pop("FETCH", [])
            if typ != "OK":
                # A server that will not do it (a partial HEADER.FIELDS, say) is
                # searched from now on, as servers were before.
                self._tail_refused = True
                return None
            try:
                fetched = parse_fetch_response(raw, False, False)
            except ProtocolError as exc:
                raise ConnectionLost(f"FETCH: unreadable reply: {exc}") from None
        tail = sorted(
            (item[b"UID"], item) for item in fetched.values() if isinstance(item.get(b"UID"), int)
        )
        if first > 1 and (not tail or tail[0][0] >= from_uid):
            return None  # perhaps more new messages than we fetched
        new = [(uid, item) for uid, item in tail if uid >= from_uid]
        if any(len(_header_block(item)) >= TAIL_HEADER_BYTES for _, item in new):
            return None  # cut short: a search and a whole fetch read it right
        return [parse_fetched(uid, item) for uid, item in new]

    def fetch_probe_headers(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """The probe header, ``Received`` chain and INTERNALDATE of ``uids`` (ascending), by UID.

        Fetched :data:`_FETCH_BATCH` UIDs at a time, so the command line
        stays short however many candidates a sweep finds.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        found: list[FetchedMessage] = []
        for first in range(0, len(uids), _FETCH_BATCH):
            batch = list(uids[first : first + _FETCH_BATCH])
            with _lost_on_failure():
                fetched = self._client.fetch(batch, ["INTERNALDATE", _FETCH_HEADERS])
            found.extend(parse_fetched(uid, fetched[uid]) for uid in sorted(fetched))
        return found

    def fetch_message(self, uid: int) -> bytes:
        r"""The whole message ``uid`` (at most :data:`MAX_MESSAGE_BYTES`), without setting \Seen.

        Raises:
            ConnectionLost: the server refused or the connection broke.
        """
        with _lost_on_failure():
            fetched = self._client.fetch([uid], [f"BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>"])
        for key, value in fetched.get(uid, {}).items():
            if isinstance(key, bytes) and key.startswith(b"BODY[]") and isinstance(value, bytes):
                return value
        return b""

    def delete(self, uid: int, transcript: Transcript) -> None:
        r"""Delete exactly ``uid`` from the selected folder; the caller has verified it is ours.

        With UIDPLUS that is ``UID EXPUNGE``. Without it, a plain ``EXPUNGE``
        removes every message flagged ``\Deleted``, so it is sent only when
        ours is the only one.

        Raises:
            ImapError: at ``cleanup``: the delete failed or was not safe (the
                session stays usable unless the connection broke).
        """
        client = self._client
        where = f"UID {uid} in {self.selected}"
        try:
            store = f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)"
            self._sent(store, transcript)
            if self.uidplus:
                # Pipelined: UID EXPUNGE removes only UIDs it names that are flagged
                # \Deleted, so it is safe whether or not the STORE worked.
                expunge = f"UID EXPUNGE {uid}"
                self._sent(expunge, transcript)
                replies = self._exchange([store.encode(), expunge.encode()])
                refused = [
                    f"{typ} {_text(data[-1] if data else '')}"
                    for typ, data in replies
                    if typ != "OK"
                ]
                if refused:
                    raise ImapError(Stage.CLEANUP, f"delete of {where} failed: {refused[0]}")
            else:
                client.add_flags([uid], [DELETED], silent=True)
                flagged = set(client.search(["DELETED"]))
                if flagged - {uid}:
                    raise ImapError(
                        Stage.CLEANUP,
                        f"{where}: no UIDPLUS and other messages are flagged \\Deleted; "
                        "left flagged",
                    )
                self._sent("EXPUNGE", transcript)
                client.expunge()
        except _FAILURES as exc:
            raise ImapError(Stage.CLEANUP, f"delete of {where} failed: {_reason(exc)}") from None
        self._received("OK message deleted", transcript)

    def trash(
        self,
        uid: int,
        trash: str,
        transcript: Transcript,
        *,
        search: Sequence[str],
        ours: Callable[[FetchedMessage], bool],
    ) -> None:
        r"""Move ``uid`` (ours, verified by the caller) to ``trash`` and delete it there.

        For Gmail, where deleting from INBOX only takes a label away and the
        message stays in All Mail: only a delete in ``\Trash`` removes it.
        The move is ``UID MOVE`` where the server has MOVE, else ``UID
        COPY`` and a delete of the original (:meth:`delete`). Its UID in
        ``trash`` comes from ``COPYUID`` (UIDPLUS), else from ``UID SEARCH``
        with ``search`` there; either way only messages whose fetched
        headers pass ``ours`` (the caller's token check) are deleted. The
        folder selected before is selected again afterwards.

        Raises:
            ImapError: at ``cleanup``: the move, the search or the delete
                failed (the session stays usable, the original folder
                selected).
            ConnectionLost: the connection broke, or the original folder
                could not be selected again.
        """
        source = self.selected
        if source is None:
            raise ImapError(Stage.CLEANUP, "no folder selected to move the message from")
        copied = self._move(uid, trash, transcript)
        try:
            try:
                self.select(trash, transcript)
            except ConnectionLost as exc:
                raise ImapError(
                    Stage.CLEANUP, f"moved to {trash}, but cannot select it: {exc.reason}"
                ) from None
            self._delete_ours(trash, copied, transcript, search=search, ours=ours)
        finally:
            self.select(source, transcript)

    def _move(self, uid: int, folder: str, transcript: Transcript) -> int | None:
        """Move ``uid`` out of the selected folder into ``folder``; its new UID if the server said.

        Raises:
            ImapError: at ``cleanup`` (the message is still where it was,
                unless the copy worked and only the delete of the original
                failed).
        """
        client = self._client
        where = f"UID {uid} in {self.selected}"
        self._take_copyuid()  # a stale one from an earlier command must not answer for this
        try:
            if self.has("MOVE"):
                self._sent(f"UID MOVE {uid} {folder}", transcript)
                client.move([uid], folder)
                self._received("OK moved", transcript)
                return self._copied_uid(uid)
            self._sent(f"UID COPY {uid} {folder}", transcript)
            client.copy([uid], folder)
            self._received("OK copied", transcript)
        except _FAILURES as exc:
            raise ImapError(
                Stage.CLEANUP, f"move of {where} to {folder} failed: {_reason(exc)}"
            ) from None
        copied = self._copied_uid(uid)
        self.delete(uid, transcript)
        return copied

    def _delete_ours(
        self,
        folder: str,
        copied: int | None,
        transcript: Transcript,
        *,
        search: Sequence[str],
        ours: Callable[[FetchedMessage], bool],
    ) -> None:
        """In the selected ``folder``: delete the copy (``copied``, or found by ``search``) if ours.

        Raises:
            ImapError: at ``cleanup``.
        """
        try:
            if copied is not None:
                candidates = [copied]
            else:
                self._sent(f"UID SEARCH {' '.join(search)}", transcript)
                with _lost_on_failure():
                    candidates = sorted(self._client.search(list(search)))
                self._received(f"SEARCH {' '.join(map(str, candidates))}".rstrip(), transcript)
            mine = (
                [m.uid for m in self.fetch_probe_headers(candidates) if ours(m)]
                if candidates
                else []
            )
        except ConnectionLost as exc:
            raise ImapError(
                Stage.CLEANUP, f"looking for it in {folder} failed: {exc.reason}"
            ) from None
        if not mine:
            raise ImapError(
                Stage.CLEANUP,
                f"moved to {folder}, but no message there carries its token: left in {folder}",
            )
        for uid in mine:
            self.delete(uid, transcript)

    def _take_copyuid(self) -> list[bytes]:
        """The ``COPYUID`` response codes received since the last call (RFC 4315 §3).

        imapclient does not hand response codes back; imaplib files the
        untagged ones (a MOVE's, RFC 6851 §4.3, and many servers' COPY's)
        under their name. A tagged one is not kept: then the UID is found
        by searching.
        """
        responses = getattr(self._client._imap, "untagged_responses", {})
        found: list[bytes] = responses.pop("COPYUID", [])
        return found

    def _copied_uid(self, uid: int) -> int | None:
        """The UID ``uid`` got in the target folder, from ``COPYUID``; ``None`` if not told."""
        if not self.has("UIDPLUS"):
            return None
        for code in self._take_copyuid():
            mapping = _copyuid_mapping(_text(code))
            if uid in mapping:
                return mapping[uid]
        return None

    # ----------------------------------------------------------------- IDLE

    def socket(self) -> Any:
        """The connection's socket, to wait on while idling (an ``ssl.SSLSocket`` in TLS)."""
        return self._client.socket()

    def idle(self) -> None:
        """Enter IDLE; no other command until :meth:`idle_done`.

        Raises:
            ConnectionLost: the connection broke.
        """
        with _lost_on_failure():
            self._client.idle()

    def idle_done(self) -> None:
        """Leave IDLE, reading whatever the server said meanwhile in blocking mode.

        (imapclient's ``idle_check`` reads a non-blocking socket and raises
        on a line that arrives in two pieces, which real servers send.)

        Raises:
            ConnectionLost: the connection broke (an EOF while idling ends here).
        """
        with _lost_on_failure():
            self._client.idle_done()

    # ----------------------------------------------------------------- goodbye

    def logout(self) -> None:
        """Say ``LOGOUT``; close the socket if that fails. Never raises."""
        try:
            self._client.logout()
        except _FAILURES:
            self.shutdown()

    def shutdown(self) -> None:
        """Close the socket without a word. Never raises."""
        with contextlib.suppress(*_FAILURES):
            self._client.shutdown()

    # ----------------------------------------------------------------- transcript

    def _sent(self, text: str, transcript: Transcript) -> None:
        transcript.sent(text, tls=self.in_tls)

    def _received(self, text: str, transcript: Transcript) -> None:
        transcript.received(text, tls=self.in_tls)

    def _note_tls(self, mailbox: Mailbox, transcript: Transcript) -> None:
        """Read the TLS facts of the connection and note them in ``transcript``."""
        sock = self._client.socket()
        if isinstance(sock, ssl.SSLSocket):
            self.tls = tls_facts(sock, verified=mailbox.tls_settings.verify)
        version = self.tls.version if self.tls is not None else None
        transcript.note(f"TLS established ({version or 'unknown version'})")
        if self.tls is not None:
            transcript.note(f"imap: {describe_facts(self.tls, time.time())}")


def _token(source: TokenSource, transcript: Transcript, timeout: float) -> AccessToken:
    """A token from ``source`` within ``timeout``, noted and masked in ``transcript``.

    Raises:
        ImapError: at ``oauth``: the source failed or ran out of time.
    """
    try:
        token = source.token(timeout)
    except TokenError as exc:
        raise ImapError(Stage.OAUTH, f"{source.client}: {exc.reason}") from None
    transcript.mask(token.value.reveal())
    transcript.note(f"imap: oauth token from {source.client} ({describe(token)})")
    return token


@contextlib.contextmanager
def _lost_on_failure() -> Iterator[None]:
    """Turn a failed command of an open session into :class:`ConnectionLost`."""
    try:
        yield
    except _FAILURES as exc:
        raise ConnectionLost(_reason(exc)) from None


def _copyuid_mapping(code: str) -> dict[int, int]:
    """``COPYUID 38505 304,319:320 3956:3958`` as ``{304: 3956, 319: 3957, 320: 3958}``.

    Anything that does not parse gives ``{}``: the caller then searches.
    """
    parts = code.split()
    if len(parts) != 3:
        return {}
    try:
        sources, targets = _uid_set(parts[1]), _uid_set(parts[2])
    except ValueError:
        return {}
    if len(sources) != len(targets):
        return {}
    return dict(zip(sources, targets, strict=True))


def _uid_set(text: str) -> list[int]:
    """An RFC 3501 ``uid-set`` (``4,7:9``) in the order given; ranges may run downwards.

    Raises:
        ValueError: not a uid-set, or one too large to be ours (over 1,000 UIDs).
    """
    uids: list[int] = []
    for item in text.split(","):
        first, _, last = item.partition(":")
        low, high = int(first), int(last or first)
        step = 1 if high >= low else -1
        if abs(high - low) > 1000:
            raise ValueError(text)
        uids.extend(range(low, high + step, step))
    return uids


def parse_fetched(uid: int, data: dict[bytes, Any]) -> FetchedMessage:
    """One message of a ``FETCH (INTERNALDATE BODY.PEEK[HEADER.FIELDS (...)])`` reply, read.

    ``data`` is what the server sent for ``uid``: anyone's message, so
    any bytes at all. Never raises: fields that do not parse are empty.
    """
    headers = _HEADER_PARSER.parsebytes(_header_block(data))
    internaldate = data.get(b"INTERNALDATE")
    return FetchedMessage(
        uid=uid,
        token=str(headers.get(PROBE_HEADER, "")).strip(),
        internaldate=internaldate if isinstance(internaldate, datetime) else None,
        received=tuple(" ".join(str(h).split()) for h in headers.get_all("Received", [])),
        subject=decode_subject(str(headers.get("Subject", ""))),
        date=header_date(str(headers.get("Date", ""))),
        content_type=headers.get_content_type() if "Content-Type" in headers else "",
        verdict_headers=tuple(
            (name, str(value)) for name, value in headers.items() if name.lower() in _VERDICT_NAMES
        ),
        message_id=" ".join(str(headers.get("Message-ID", "")).split()),
    )


def _header_block(data: dict[bytes, Any]) -> bytes:
    """The fetched header fields, whatever order the server names them in.

    Dovecot echoes ``BODY[HEADER.FIELDS (X-SMTP-PROBE RECEIVED)]``; pymap
    sorts the field names, so the reply is found by prefix.
    """
    for key, value in data.items():
        if key.startswith(b"BODY[HEADER.FIELDS") and isinstance(value, bytes):
            return value
    return b""


def _to_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("ascii")


def _statuses(folders: Sequence[str], found: list[Any]) -> list[FolderStatus]:
    """Each of ``folders``' status from ``found``, imaplib's untagged ``STATUS`` data.

    Matched by the folder name the server echoes, else in the order asked
    (a server that spells the name otherwise).

    Raises:
        ConnectionLost: a folder got no usable reply.
    """
    try:
        parsed = parse_response(found) if found else ()
    except ProtocolError as exc:
        raise ConnectionLost(f"STATUS: unreadable reply: {exc}") from None
    by_name: dict[str, FolderStatus] = {}
    in_order: list[FolderStatus] = []
    for name, items in zip(parsed[0::2], parsed[1::2], strict=False):
        try:
            values = dict(zip(items[0::2], items[1::2], strict=False))
            status = FolderStatus(
                uidvalidity=int(values[b"UIDVALIDITY"]), uidnext=int(values[b"UIDNEXT"])
            )
        except (KeyError, ValueError, TypeError):
            continue
        text = decode_utf7(name) if isinstance(name, bytes) else str(name)
        by_name[text] = status
        in_order.append(status)
    out = []
    for index, folder in enumerate(folders):
        match = by_name.get(folder)
        if match is None and len(in_order) == len(folders):
            match = in_order[index]
        if match is None:
            raise ConnectionLost(f"STATUS {folder}: no usable reply")
        out.append(match)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _reason(exc: BaseException) -> str:
    """One line about a failure, plain about certificate problems and timeouts."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return describe_verify_error(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__
