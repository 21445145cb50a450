"""Stand-alone check that this machine can run the real mail stack.

What: ``python -m tests.support.mailstack_selfcheck`` starts a :class:`MailStack`,
prints the server versions, ports and start-up time, sends one message over
submission (STARTTLS + AUTH, certificate verified) with the standard
library's smtplib, waits for it in the Maildir, waits for the Sieve
reflector's auto-reply to a second message, times a correct login right
after a failed one (SMTP AUTH and IMAP LOGIN), then stops the stack.  Exit
status 0 means the machine is ready for the end-to-end tests.

Why: when the e2e tests fail on a new CI image, this separates "the machine
cannot run Postfix/Dovecot" from "the product is broken", using only the
standard library (plus trustme, which the stack needs for its certificates).
"""

from __future__ import annotations

import imaplib
import smtplib
import time
import uuid
from email.message import EmailMessage

from tests.support.mailstack import REFLECTOR, MailStack

PROBE = "probe@example.test"
SINK = "sink@example.test"


def _timed_smtp_auth(stack: MailStack, password: str) -> tuple[bool, float]:
    """AUTH PLAIN on the submission port; (succeeded, seconds)."""
    start = time.monotonic()
    with smtplib.SMTP(stack.host, stack.submission_port, timeout=20) as smtp:
        smtp.starttls(context=stack.ssl_context())
        try:
            smtp.login(PROBE, password)
            ok = True
        except smtplib.SMTPAuthenticationError:
            ok = False
    return ok, time.monotonic() - start


def _timed_imap_login(stack: MailStack, password: str) -> tuple[bool, float]:
    """IMAP LOGIN over IMAPS; (succeeded, seconds)."""
    start = time.monotonic()
    with imaplib.IMAP4_SSL(
        stack.host, stack.imaps_port, ssl_context=stack.ssl_context(), timeout=20
    ) as imap:
        try:
            imap.login(SINK, password)
            ok = True
        except imaplib.IMAP4.error:
            ok = False
    return ok, time.monotonic() - start


def main() -> int:
    """Run the checks; print one line per step; 0 = all good."""
    stack = MailStack()
    try:
        stack.start()
        print(f"postfix {stack.postfix_version}, dovecot {stack.dovecot_version}")
        print(
            f"started in {stack.start_seconds:.2f}s: smtp={stack.smtp_port} "
            f"submission={stack.submission_port} smtps={stack.smtps_port} "
            f"imap={stack.imap_port} imaps={stack.imaps_port}"
        )
        token = uuid.uuid4().hex
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = PROBE, SINK, f"selfcheck {token}"
        msg.set_content("selfcheck\n")
        sent = time.monotonic()
        with smtplib.SMTP(stack.host, stack.submission_port, timeout=20) as smtp:
            smtp.starttls(context=stack.ssl_context())
            smtp.login(PROBE, stack.users[PROBE])
            smtp.send_message(msg)
        while not any(token.encode() in raw for raw in stack.maildir_messages(SINK)):
            if time.monotonic() - sent > 15:
                print("FAIL: message not delivered within 15 s")
                return 1
            time.sleep(0.01)
        print(f"delivered to the Maildir {1000 * (time.monotonic() - sent):.0f} ms after send")

        # the Sieve reflector (needs dovecot-sieve): its reply reaches sink
        reflect = uuid.uuid4().hex
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = SINK, REFLECTOR, f"selfcheck {reflect}"
        msg.set_content("selfcheck\n")
        sent = time.monotonic()
        with smtplib.SMTP(stack.host, stack.smtp_port, timeout=20) as smtp:
            smtp.send_message(msg)
        while not any(
            b"Auto: selfcheck " + reflect.encode() in raw for raw in stack.maildir_messages(SINK)
        ):
            if time.monotonic() - sent > 15:
                print("FAIL: no reply from the Sieve reflector within 15 s")
                return 1
            time.sleep(0.01)
        print(
            f"reflector's reply in the Maildir {1000 * (time.monotonic() - sent):.0f} ms after send"
        )

        failures = 0
        for name, check, password in (
            ("SMTP AUTH", _timed_smtp_auth, stack.users[PROBE]),
            ("IMAP LOGIN", _timed_imap_login, stack.users[SINK]),
        ):
            bad_ok, bad_secs = check(stack, "wrong-" + token)
            good_ok, good_secs = check(stack, password)
            verdict = "ok" if (not bad_ok and good_ok and good_secs < 0.5) else "FAIL"
            failures += verdict != "ok"
            print(
                f"{verdict}: {name} wrong password rejected in {bad_secs:.2f}s, "
                f"then the right one took {good_secs:.3f}s"
            )
        return 1 if failures else 0
    finally:
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
