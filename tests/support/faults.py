"""Faults switched on and off on a running :class:`~tests.support.mailstack.MailStack`.

What: each :class:`Fault` breaks one part of the real Postfix + Dovecot route
that a probe takes (submission with STARTTLS + AUTH as ``probe``, delivery to
``sink``'s INBOX, confirmation over IMAPS) and heals it again, without
restarting the daemon under test and, where it can, without restarting the
servers either. It knows what a run should report while it is on
(:class:`Expect`: outcome, stage, reply class). :func:`all_faults` builds the
set the fault soak (``bench/bench_soak.py``) and its short CI twin
(``tests/e2e/test_fault_soak.py``) use:

========================  ======================================================  ==========================
fault                     how                                                     a run reports
========================  ======================================================  ==========================
``deferred_delivery``     ``defer_transports = lmtp`` + ``postfix reload``: the   ``not_delivered`` at
                          250 comes, the queue manager holds every delivery       ``delivery``
``slow_delivery``         ``virtual_transport`` through the slow hop in front of  ``delivered``, at least
                          Dovecot's LMTP (:mod:`tests.support.slow_hop`)          the delay later
``rejected_recipient``    ``sink`` in a ``check_recipient_access`` map: ``550``   ``send_failed`` at
                                                                                  ``rcpt_to`` (5xx)
``tempfail``              the same map: ``451 4.3.0`` (not worded as a rate       ``send_failed`` at
                          limit, so not ``throttled``)                            ``rcpt_to`` (4xx)
``wrong_password``        ``probe``'s password changed in Dovecot's passwd-file   ``send_failed`` at
                          (Dovecot re-reads it when it changes)                   ``auth`` (535)
``imap_down``             Dovecot stopped (IMAP, LMTP and SASL with it)           ``error`` at
                                                                                  ``imap_connect``
``smtp_down``             ``postfix stop``                                        ``send_failed`` at
                                                                                  ``connect``
========================  ======================================================  ==========================

Healing undoes the change, waits until the route verifiably works again
where that can be checked without sending mail (an SMTP dialogue up to
``RCPT TO``, then ``RSET``), and asks Postfix to retry its deferred mail
(``postqueue -f``) so that messages held during the fault arrive now (late:
the daemon counts and deletes them) instead of minutes later.

Why here and not in MailStack: these are the soak's faults, switched
while a daemon keeps running; MailStack's own fault recipients
(``REJECT_550`` ...) are fixed addresses a single run is aimed at.

Must run as root, like the stack. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smtp_probe.probe.result import Outcome, Stage
from tests.support import procs
from tests.support.mailstack import MailStack, MailStackError
from tests.support.slow_hop import TRANSPORT, SlowHop

__all__ = [
    "Expect",
    "Fault",
    "FaultError",
    "all_faults",
]

SENDER: Final = "probe@example.test"
"""Who the soak's probes log in and send as (the fault ``wrong_password`` is about this user)."""
RECIPIENT: Final = "sink@example.test"
"""Where the soak's probes send (the recipient faults name this address)."""
WRONG_PASSWORD: Final = "soak-wrong-password-of-another-length"  # noqa: S105 - throwaway
_SOAK_ACCESS: Final = "soak_access"
"""The recipient access map the recipient faults write (prepended to the restrictions)."""
_SETTLE_SECONDS: Final = 10.0
"""How long a switch may take to be seen by new SMTP sessions before it is an error."""


class FaultError(MailStackError):
    """A fault could not be switched (a server command failed or the change never took)."""


@dataclass(frozen=True, slots=True)
class Expect:
    """What a run that starts and ends while a fault is on reports."""

    outcome: Outcome
    stage: Stage | None
    reply_class: int | None = None
    """First digit of the SMTP reply code the run logs (2, 4, 5), or None: no reply at all."""
    min_delivery_seconds: float = 0.0
    """A delivered run's reported delivery time is at least this (a slow hop)."""

    def mismatch(self, run: dict[str, object]) -> str | None:
        """Why ``run`` (a ``run finished`` log event) is not what this expects; None if it is."""
        got_stage = run.get("stage") or None
        if run.get("outcome") != str(self.outcome) or got_stage != (
            str(self.stage) if self.stage else None
        ):
            return f"{run.get('outcome')}@{got_stage}: {run.get('error')}"
        code = run.get("reply_code")
        got_class = int(code) // 100 if isinstance(code, int) else None
        if got_class != self.reply_class:
            return f"reply code {code}, expected {self.reply_class}xx"
        if self.min_delivery_seconds:
            seconds = run.get("delivery_seconds")
            if not isinstance(seconds, int | float) or seconds < self.min_delivery_seconds:
                return f"delivered after {seconds} s, expected >= {self.min_delivery_seconds} s"
        return None

    def label(self) -> str:
        """``outcome@stage`` (with the reply class), as the soak's table shows it."""
        text = f"{self.outcome}@{self.stage}" if self.stage else str(self.outcome)
        if self.reply_class is not None:
            text += f" ({self.reply_class}xx)"
        if self.min_delivery_seconds:
            text += f" (>= {self.min_delivery_seconds:g} s)"
        return text


HEALTHY: Final = Expect(Outcome.DELIVERED, None, 2)
"""What every run reports while no fault is on."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: its name, what runs report while it is on, and how to switch it."""

    name: str
    expect: Expect
    on: Callable[[], None]
    """Switch the fault on; returns once new sessions see it (where that can be checked)."""
    off: Callable[[], None]
    """Heal; returns once the route works again for new sessions."""


class _Postfix:
    """Admin commands against the stack's private Postfix (``-c DIR``)."""

    def __init__(self, stack: MailStack) -> None:
        self.stack = stack
        self.conf = stack.layout.postfix_conf
        self._bins: dict[str, str] = {}

    def _bin(self, name: str) -> str:
        if name not in self._bins:
            found = procs.find_binary(name)
            if found is None:
                raise FaultError(f"the '{name}' binary was not found")
            self._bins[name] = found
        return self._bins[name]

    def run(self, name: str, *args: str) -> str:
        """Run ``name -c DIR args``; its stdout. Raises FaultError when it fails."""
        return procs.run(
            [self._bin(name), "-c", str(self.conf), *args],
            FaultError,
            self.stack.layout.postfix_log,
        )

    def get(self, key: str) -> str:
        """A main.cf value as written (``postconf -h``)."""
        return self.run("postconf", "-h", key).strip()

    def set(self, **values: str) -> None:
        """``postconf -e`` each value, then age main.cf (see :func:`procs.write_past`)."""
        self.run("postconf", "-e", *(f"{key}={value}" for key, value in values.items()))
        _age(self.conf / "main.cf")

    def unset(self, key: str) -> None:
        """``postconf -X key`` (back to the built-in default)."""
        self.run("postconf", "-X", key)
        _age(self.conf / "main.cf")

    def reload(self) -> None:
        """``postfix reload``: processes pick up the new config as they finish their session."""
        self.run("postfix", "reload")

    def running(self) -> bool:
        """``postfix status`` says the master runs."""
        try:
            self.run("postfix", "status")
        except FaultError:
            return False
        return True

    def flush(self) -> None:
        """``postqueue -f``: retry deferred mail now (ignored while Postfix is down)."""
        with contextlib.suppress(FaultError):
            self.run("postqueue", "-f")


def _age(path: Path) -> None:
    past = time.time() - 60
    os.utime(path, (past, past))


def _until(check: Callable[[], str | None], what: str, timeout: float = _SETTLE_SECONDS) -> None:
    """Call ``check`` until it returns None (done); raise FaultError with its last word."""
    deadline = time.monotonic() + timeout
    while True:
        reason = check()
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise FaultError(f"{what} not in effect after {timeout:.0f} s: {reason}")
        time.sleep(0.1)


def _rcpt_reply(stack: MailStack, password: str) -> tuple[int, str]:
    """An SMTP dialogue as the probe up to ``RCPT TO:<sink>`` on submission; (code, stage).

    Sends no message (``RSET`` instead of ``DATA``). ``(0, "connect")`` when
    the port refuses or drops us, ``(code, "auth")`` when the login is refused.
    """
    try:
        with smtplib.SMTP(stack.host, stack.submission_port, timeout=5) as smtp:
            smtp.starttls(context=stack.ssl_context())
            try:
                smtp.login(SENDER, password)
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code, "auth"
            smtp.mail(SENDER)
            code, _ = smtp.rcpt(RECIPIENT)
            smtp.rset()
            return code, "rcpt_to"
    except (OSError, smtplib.SMTPException):
        return 0, "connect"


def _expect_rcpt(
    stack: MailStack, password: str, code: int, stage: str
) -> Callable[[], str | None]:
    def check() -> str | None:
        got = _rcpt_reply(stack, password)
        return None if got == (code, stage) else f"got {got}, want {(code, stage)}"

    return check


def all_faults(
    stack: MailStack, *, slow_seconds: float = 2.0
) -> tuple[list[Fault], Callable[[], None]]:
    """Every fault of the module table for ``stack`` (started), and a ``close`` for the slow hop.

    Prepares what the faults share once: a ``soak_access`` recipient map in
    front of the stack's own restrictions (empty: no effect) and the
    :class:`~tests.support.slow_hop.SlowHop` of ``slow_seconds``. Call
    ``close`` after the last fault was healed.

    Raises:
        FaultError: a Postfix command failed.
        OSError: the slow hop's socket could not be made.
    """
    postfix = _Postfix(stack)
    conf = postfix.conf
    access = conf / _SOAK_ACCESS
    procs.write_past(access, "")
    restrictions = postfix.get("smtpd_recipient_restrictions")
    postfix.set(
        smtpd_recipient_restrictions=(f"check_recipient_access texthash:{access}, {restrictions}")
    )
    postfix.reload()
    transport = postfix.get("virtual_transport")
    hop = SlowHop(stack, slow_seconds)
    hop.start()
    password = stack.users[SENDER]
    users_file = stack.layout.dovecot_dir / "users"
    healthy = _expect_rcpt(stack, password, 250, "rcpt_to")

    def access_map(line: str) -> Callable[[], None]:
        def switch() -> None:
            procs.write_past(access, line)
            postfix.reload()

        return switch

    def heal_access() -> None:
        access_map("")()
        _until(healthy, "recipient map cleared")
        postfix.flush()

    def rejected_on() -> None:
        access_map(f"{RECIPIENT} 550 5.1.1 soak: recipient rejected\n")()
        _until(_expect_rcpt(stack, password, 550, "rcpt_to"), "550 at RCPT")

    def tempfail_on() -> None:
        access_map(f"{RECIPIENT} 451 4.3.0 soak: simulated temporary failure\n")()
        _until(_expect_rcpt(stack, password, 451, "rcpt_to"), "451 at RCPT")

    def deferred_on() -> None:
        postfix.set(defer_transports="lmtp")
        postfix.reload()
        # the queue manager restarts with it; nothing to ask without sending mail
        time.sleep(1.0)

    def deferred_off() -> None:
        postfix.unset("defer_transports")
        postfix.reload()
        time.sleep(1.0)
        postfix.flush()

    def slow_on() -> None:
        postfix.set(virtual_transport=TRANSPORT)
        postfix.reload()
        time.sleep(1.0)

    def slow_off() -> None:
        postfix.set(virtual_transport=transport)
        postfix.reload()
        time.sleep(1.0)
        postfix.flush()

    def write_users(changes: dict[str, str]) -> None:
        # a new file (new inode, other size): Dovecot's passwd-file sees the change at once
        users = stack.users | changes
        temp = users_file.with_suffix(".new")
        temp.write_text("".join(f"{user}:{{PLAIN}}{pw}\n" for user, pw in users.items()))
        temp.chmod(0o644)
        temp.replace(users_file)

    def wrong_password_on() -> None:
        write_users({SENDER: WRONG_PASSWORD})
        _until(_expect_rcpt(stack, password, 535, "auth"), "password change")

    def wrong_password_off() -> None:
        write_users({})
        _until(healthy, "password restored")

    def imap_down_on() -> None:
        stack.stop_dovecot()

    def imap_down_off() -> None:
        stack.start_dovecot()
        _until(healthy, "Dovecot back")
        postfix.flush()

    def smtp_down_on() -> None:
        postfix.run("postfix", "stop")
        _until(lambda: "still running" if postfix.running() else None, "postfix stop")
        _until(_expect_rcpt(stack, password, 0, "connect"), "submission port closed")

    def smtp_down_off() -> None:
        postfix.run("postfix", "start")
        _until(healthy, "Postfix back", timeout=20)
        postfix.flush()

    faults = [
        Fault(
            "deferred_delivery",
            Expect(Outcome.NOT_DELIVERED, Stage.DELIVERY, 2),
            deferred_on,
            deferred_off,
        ),
        Fault(
            "slow_delivery",
            Expect(Outcome.DELIVERED, None, 2, min_delivery_seconds=slow_seconds),
            slow_on,
            slow_off,
        ),
        Fault(
            "rejected_recipient",
            Expect(Outcome.SEND_FAILED, Stage.RCPT_TO, 5),
            rejected_on,
            heal_access,
        ),
        Fault("tempfail", Expect(Outcome.SEND_FAILED, Stage.RCPT_TO, 4), tempfail_on, heal_access),
        Fault(
            "wrong_password",
            Expect(Outcome.SEND_FAILED, Stage.AUTH, 5),
            wrong_password_on,
            wrong_password_off,
        ),
        Fault("imap_down", Expect(Outcome.ERROR, Stage.IMAP_CONNECT), imap_down_on, imap_down_off),
        Fault("smtp_down", Expect(Outcome.SEND_FAILED, Stage.CONNECT), smtp_down_on, smtp_down_off),
    ]
    return faults, hop.close


def by_name(faults: Sequence[Fault], names: Sequence[str]) -> list[Fault]:
    """The faults called ``names``, in that order.

    Raises:
        ValueError: a name is not a fault (the message lists the known ones).
    """
    known = {fault.name: fault for fault in faults}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(known)}")
    return [known[name] for name in names]


def drain(stack: MailStack, timeout: float) -> list[dict[str, object]]:
    """Flush Postfix's queue until it is empty or ``timeout`` passed; what is left.

    Raises:
        FaultError: a Postfix command failed.
    """
    postfix = _Postfix(stack)
    deadline = time.monotonic() + timeout
    while True:
        left = stack.queue()
        if not left or time.monotonic() > deadline:
            return left
        postfix.flush()
        time.sleep(0.5)
