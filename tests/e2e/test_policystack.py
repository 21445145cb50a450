"""The policy Postfix itself (tests/support/policystack.py): each listener does what it says.

smtp_probe's policy checks are tested against these listeners, so these
tests pin, with plain SMTP clients (smtplib, a raw socket for smuggling) and
the Maildir, that the secure listener refuses each abuse and that every
misconfigured one really allows its one abuse.  No smtp_probe code is
involved; each test deletes its own mail (the ``policy`` fixture checks it).
"""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib
import socket
import uuid

import pytest

from tests.support.policystack import (
    AUTH_IN_CLEAR,
    LISTENERS,
    LOCAL_RECIPIENT,
    NO_LOGIN_MISMATCH,
    OPEN_RELAY,
    OUTSIDE_RECIPIENT,
    OUTSIDE_SENDER,
    SASL_USER,
    SECURE,
    SMUGGLING,
    SMUGGLING_ACCEPTED,
    SMUGGLING_ENDINGS,
    TEST_HEADER,
    PolicyStack,
    left_clean,
    smtp_server,
    unused_port,
)

#: a MailStack user's address that SASL_USER does not own
FORGED = LOCAL_RECIPIENT


def _tag() -> str:
    return f"policy-{uuid.uuid4().hex}"


def _message(tag: str, sender: str, to: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: policystack {tag}\r\n"
        f"Message-ID: <{tag}@example.test>\r\n{TEST_HEADER}: {tag}\r\n\r\nhello {tag}\r\n"
    ).encode()


def _connect(stack: PolicyStack, name: str, *, login: bool = False) -> smtplib.SMTP:
    """An SMTP session to listener ``name`` after EHLO (STARTTLS and AUTH if ``login``)."""
    smtp = smtplib.SMTP(*stack.listener(name), timeout=15)
    smtp.ehlo("client.example.test")
    if login:
        smtp.starttls(context=stack.ssl_context())
        smtp.ehlo("client.example.test")
        smtp.login(*stack.credentials)
    return smtp


def _transaction(smtp: smtplib.SMTP, sender: str, to: str) -> tuple[int, bytes]:
    """MAIL FROM + RCPT TO; the RCPT reply (MAIL FROM must be accepted)."""
    code, reply = smtp.mail(sender)
    assert code == 250, reply
    return smtp.rcpt(to)


@pytest.mark.parametrize("name", list(LISTENERS))
def test_every_listener_greets_as_the_policy_host(policy: PolicyStack, name: str) -> None:
    host, port = policy.listener(name)
    assert host == "127.0.0.1"
    with smtplib.SMTP(host, port, timeout=15) as smtp:
        code, _ = smtp.ehlo("client.example.test")
        assert code == 250
        assert smtp.ehlo_resp is not None
        assert smtp.ehlo_resp.startswith(b"policy.example.test")
    assert len(set(policy.ports.values())) == len(LISTENERS)


def test_listener_rejects_unknown_names(policy: PolicyStack) -> None:
    with pytest.raises(ValueError, match="open_relay"):
        policy.listener("openrelay")


@pytest.mark.parametrize("to", [OUTSIDE_RECIPIENT, "someone@elsewhere.example"])
def test_open_relay_relays_to_outside_and_the_message_arrives(policy: PolicyStack, to: str) -> None:
    tag = _tag()
    with _connect(policy, OPEN_RELAY) as smtp:
        assert _transaction(smtp, OUTSIDE_SENDER, to)[0] == 250
        code, _ = smtp.data(_message(tag, OUTSIDE_SENDER, to))
        assert code == 250
    (raw,) = policy.wait_delivered("sink", tag)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == to
    assert f"for <{LOCAL_RECIPIENT}>" in str(message["Received"]).replace("\n\t", " ")
    assert policy.delete_mail("sink", tag) == 1


@pytest.mark.parametrize("name", [n for n in LISTENERS if n != OPEN_RELAY])
def test_other_listeners_refuse_unauthenticated_relaying(policy: PolicyStack, name: str) -> None:
    with _connect(policy, name) as smtp:
        code, reply = _transaction(smtp, OUTSIDE_SENDER, OUTSIDE_RECIPIENT)
    assert (code, reply) == (554, f"5.7.1 <{OUTSIDE_RECIPIENT}>: Relay access denied".encode())


def test_secure_relays_for_a_logged_in_user(policy: PolicyStack) -> None:
    tag = _tag()
    with _connect(policy, SECURE, login=True) as smtp:
        assert _transaction(smtp, SASL_USER, OUTSIDE_RECIPIENT)[0] == 250
        assert smtp.data(_message(tag, SASL_USER, OUTSIDE_RECIPIENT))[0] == 250
    policy.wait_delivered("sink", tag)
    assert policy.delete_mail("sink", tag) == 1


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_secure_offers_auth_only_after_starttls(policy: PolicyStack) -> None:
    with _connect(policy, SECURE) as smtp:
        assert not smtp.has_extn("auth")
        code, reply = smtp.docmd("AUTH", "PLAIN " + _plain("nobody@example.test", "wrong"))
        assert (code, reply) == (503, b"5.5.1 Error: authentication not enabled")
        smtp.starttls(context=policy.ssl_context())
        smtp.ehlo("client.example.test")
        assert "PLAIN" in smtp.esmtp_features["auth"].split()


def test_auth_in_clear_offers_auth_before_starttls(policy: PolicyStack) -> None:
    with _connect(policy, AUTH_IN_CLEAR) as smtp:
        assert "PLAIN" in smtp.esmtp_features["auth"].split()
        code, reply = smtp.docmd("AUTH", "PLAIN " + _plain("nobody@example.test", "wrong"))
        assert code == 535, reply
        # the real credentials work in the clear too
        smtp.login(*policy.credentials)


def test_secure_refuses_a_logged_in_user_sending_as_another(policy: PolicyStack) -> None:
    with _connect(policy, SECURE, login=True) as smtp:
        code, reply = _transaction(smtp, FORGED, LOCAL_RECIPIENT)
        assert (code, reply) == (
            553,
            f"5.7.1 <{FORGED}>: Sender address rejected: not owned by user {SASL_USER}".encode(),
        )
        smtp.rset()
        # its own address is fine
        assert _transaction(smtp, SASL_USER, LOCAL_RECIPIENT)[0] == 250


def test_unauthenticated_clients_may_use_the_users_addresses(policy: PolicyStack) -> None:
    # MX-style probes (relay, smuggling) need no login
    with _connect(policy, SECURE) as smtp:
        assert _transaction(smtp, FORGED, LOCAL_RECIPIENT)[0] == 250


def test_no_login_mismatch_accepts_and_delivers_a_forged_sender(policy: PolicyStack) -> None:
    tag = _tag()
    with _connect(policy, NO_LOGIN_MISMATCH, login=True) as smtp:
        assert _transaction(smtp, FORGED, LOCAL_RECIPIENT)[0] == 250
        assert smtp.data(_message(tag, FORGED, LOCAL_RECIPIENT))[0] == 250
    (raw,) = policy.wait_delivered("sink", tag)
    assert raw.startswith(f"Return-Path: <{FORGED}>".encode())
    assert policy.delete_mail("sink", tag) == 1


def _smuggle(stack: PolicyStack, name: str, tag: str, ending: bytes) -> list[str]:
    """One DATA whose text has ``ending`` + a second transaction, then the real end; every reply.

    The carrier's DATA is sent after its 354, the rest (hidden commands,
    hidden message, real ``<CR><LF>.<CR><LF>``, QUIT) in one write.
    """
    sock = socket.create_connection(stack.listener(name), timeout=10)
    with sock, sock.makefile("rb") as replies:

        def command(line: str) -> str:
            sock.sendall(line.encode() + b"\r\n")
            while (reply := replies.readline().decode()).startswith(("250-", "220-")):
                pass
            return reply.strip()

        assert replies.readline().startswith(b"220 ")
        assert command("EHLO client.example.test").startswith("250 ")
        assert command(f"MAIL FROM:<{OUTSIDE_SENDER}>").startswith("250 ")
        assert command(f"RCPT TO:<{LOCAL_RECIPIENT}>").startswith("250 ")
        assert command("DATA").startswith("354 ")
        carrier = _message(f"{tag}-carrier", OUTSIDE_SENDER, LOCAL_RECIPIENT)
        smuggled = _message(f"{tag}-smuggled", OUTSIDE_SENDER, LOCAL_RECIPIENT)
        sock.sendall(
            carrier.removesuffix(b"\r\n")
            + ending
            + f"MAIL FROM:<{OUTSIDE_SENDER}>\r\nRCPT TO:<{LOCAL_RECIPIENT}>\r\nDATA\r\n".encode()
            + smuggled
            + b".\r\nQUIT\r\n"
        )
        # until the server hangs up after QUIT
        return [line.decode().strip() for line in replies]


def _message_ids(raws: list[bytes]) -> set[str]:
    return {
        str(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"])
        for raw in raws
    }


@pytest.mark.parametrize("variant", sorted(SMUGGLING_ACCEPTED))
def test_smuggling_delivers_a_message_hidden_behind_a_bare_lf_ending(
    policy: PolicyStack, variant: str
) -> None:
    tag = _tag()
    replies = _smuggle(policy, SMUGGLING, tag, SMUGGLING_ENDINGS[variant])
    assert [r[:3] for r in replies] == ["250", "250", "250", "354", "250", "221"], replies
    delivered = policy.wait_delivered("sink", tag, count=2)
    assert _message_ids(delivered) == {
        f"<{tag}-carrier@example.test>",
        f"<{tag}-smuggled@example.test>",
    }
    assert policy.delete_mail("sink", tag) == 2


@pytest.mark.parametrize(
    ("name", "variant"),
    [(SECURE, variant) for variant in SMUGGLING_ENDINGS]
    + [(SMUGGLING, variant) for variant in SMUGGLING_ENDINGS if variant not in SMUGGLING_ACCEPTED],
)
def test_other_endings_and_secure_keep_the_hidden_message_inside_the_first(
    policy: PolicyStack, name: str, variant: str
) -> None:
    tag = _tag()
    replies = _smuggle(policy, name, tag, SMUGGLING_ENDINGS[variant])
    # one "queued as": the server made one message of it all
    assert [r[:3] for r in replies] == ["250", "221"], replies
    (carrier,) = policy.wait_delivered("sink", tag)
    assert _message_ids([carrier]) == {f"<{tag}-carrier@example.test>"}
    assert f"Message-ID: <{tag}-smuggled@example.test>".encode() in carrier
    assert len(policy.delivered("sink", tag)) == 1
    assert policy.delete_mail("sink", tag) == 1


def test_nothing_can_leave_loopback(policy: PolicyStack) -> None:
    found = policy.postconf(
        "default_transport", "relay_transport", "smtp_dns_support_level", "relay_domains"
    )
    assert found["default_transport"].startswith("error:")
    assert found["relay_transport"] == f"smtp:[127.0.0.1]:{policy.mailstack.smtp_port}"
    assert found["smtp_dns_support_level"] == "disabled"
    assert found["relay_domains"] == "example.test"


def test_smtp_server_points_at_the_listener(policy: PolicyStack) -> None:
    server = smtp_server(policy, SMUGGLING, username=None, password=None)
    assert (server.host, server.port) == policy.listener(SMUGGLING)
    assert server.tls_settings.ca_file == policy.ca_file
    assert server.username is None
    with_login = smtp_server(policy, SECURE)
    assert with_login.username == SASL_USER
    assert with_login.password is not None
    assert with_login.password.reveal() == policy.credentials[1]


def test_unused_port_refuses_connections() -> None:
    port = unused_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_left_clean_fails_on_and_removes_a_leftover_message(
    policystack: PolicyStack, planted: int
) -> None:
    tag = _tag()
    check = left_clean(policystack, planted)
    check.__enter__()
    with _connect(policystack, SECURE) as smtp:
        assert _transaction(smtp, OUTSIDE_SENDER, LOCAL_RECIPIENT)[0] == 250
        assert smtp.data(_message(tag, OUTSIDE_SENDER, LOCAL_RECIPIENT))[0] == 250
    policystack.wait_delivered("sink", tag)
    with pytest.raises(AssertionError, match=f"test mail left in sink/INBOX.*<{tag}@"):
        check.__exit__(None, None, None)
    assert policystack.delivered("sink", tag) == []
