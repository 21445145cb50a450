"""TLS facts read from the peer's binary certificate: with verification on and off.

The handshakes run between two real ``ssl.SSLObject`` ends over memory BIOs
(the stdlib's own TLS, no network), with certificates from a trustme CA.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest
import trustme

from smtp_probe.probe.result import TlsFacts
from smtp_probe.probe.spec import TlsSettings
from smtp_probe.probe.tls import certificate_facts, client_context, describe_facts, tls_facts
from smtp_probe.report import tls_dict

HOST = "mx.example.test"


def handshake(leaf: trustme.LeafCert, client: ssl.SSLContext, host: str = HOST) -> ssl.SSLObject:
    """A finished TLS handshake against a server presenting ``leaf``; the client's end."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_context)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_end = client.wrap_bio(c_in, c_out, server_hostname=host)
    server_end = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client_end), ("server", server_end)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_end
    raise AssertionError("handshake did not finish")


def context(ca: trustme.CA | None) -> ssl.SSLContext:
    """The probe's own client context: trusting ``ca``, or verification off."""
    if ca is None:
        return client_context(TlsSettings(verify=False))
    result = ssl.create_default_context()
    ca.configure_trust(result)
    return result


def test_facts_with_verification_on_name_subject_issuer_expiry_and_protocol() -> None:
    ca = trustme.CA(organization_name="Test CA")
    not_after = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
    leaf = ca.issue_cert(HOST, common_name=HOST, not_after=not_after)

    facts = tls_facts(handshake(leaf, context(ca)), verified=True)

    assert facts.version in {"TLSv1.2", "TLSv1.3"}
    assert facts.cipher
    assert f"CN={HOST}" in facts.subject
    assert "O=Test CA" in facts.issuer
    assert facts.not_after == not_after.timestamp()
    assert facts.verified is True


def test_facts_with_verification_off_come_from_the_binary_certificate() -> None:
    """``getpeercert()`` is empty without verification; the DER form is not."""
    ca = trustme.CA()
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    leaf = ca.issue_cert(
        "other.example.test", common_name="other.example.test", not_after=not_after
    )

    end = handshake(leaf, context(None))
    facts = tls_facts(end, verified=False)

    assert end.getpeercert() == {}
    assert facts.subject.startswith("CN=other.example.test,")
    assert facts.not_after == not_after.timestamp()
    assert facts.verified is False
    days = facts.days_left(datetime.now(UTC).timestamp())
    assert days is not None
    assert 1.9 < days <= 2.0


def test_a_certificate_expiring_in_two_days_says_so_in_the_transcript_and_json() -> None:
    now = datetime(2027, 2, 27, 0, 0, tzinfo=UTC).timestamp()
    facts = TlsFacts(
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        subject="CN=mx.example.test",
        issuer="CN=Test CA",
        not_after=datetime(2027, 3, 1, 0, 0, tzinfo=UTC).timestamp(),
        verified=True,
    )

    assert describe_facts(facts, now) == (
        "TLS certificate: CN=mx.example.test, issuer CN=Test CA, expires 2027-03-01 (2 days), "
        "verified"
    )
    assert tls_dict(facts, now) == {
        "version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "subject": "CN=mx.example.test",
        "issuer": "CN=Test CA",
        "not_after": "2027-03-01T00:00:00+00:00",
        "days_left": 2.0,
        "verified": True,
    }
    assert tls_dict(None) is None


def test_an_expired_certificate_has_negative_days_left() -> None:
    facts = TlsFacts("TLSv1.2", "X", "CN=a", "CN=b", not_after=1_000_000.0, verified=False)

    assert facts.days_left(1_000_000.0 + 86400 * 3) == pytest.approx(-3.0)
    assert "(-3 days), not verified (verification off)" in describe_facts(
        facts, 1_000_000.0 + 86400 * 3
    )


def test_bytes_that_are_no_certificate_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="asn1"):
        certificate_facts(b"\x30\x03\x02\x01\x00")
