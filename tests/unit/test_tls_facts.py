"""TLS facts read from the peer's binary certificate: with verification on and off.

The handshakes run between two real ``ssl.SSLObject`` ends over memory BIOs
(the stdlib's own TLS, no network; :mod:`tests.support.tls_certs`), with
certificates from a trustme CA or a chain built with ``cryptography``.
"""

from __future__ import annotations

import _ssl
import ssl
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import trustme

from smtp_probe.probe.result import TlsFacts
from smtp_probe.probe.spec import TlsSettings
from smtp_probe.probe.tls import certificate_facts, client_context, describe_facts, tls_facts
from smtp_probe.report import tls_dict
from tests.support.tls_certs import HOST, chain, handshake


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
        "chain_length": None,
        "expiring_subject": None,
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


CHAIN_IN_PUBLIC_API = sys.version_info >= (3, 13)
"""``SSLObject.get_unverified_chain()`` is public from Python 3.13 (Debian 13); 3.11 has the leaf only."""


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "verification-off"])
def test_an_intermediate_expiring_first_sets_not_after_where_python_hands_over_the_chain(
    tmp_path: Path, verify: bool
) -> None:
    """Runs on whichever Python runs the tests: 3.13+ sees the chain, older ones the leaf."""
    certs = chain(tmp_path, leaf_days=300, intermediate_days=2)
    client = certs.client_context() if verify else context(None)

    facts = tls_facts(handshake(certs.server_context(), client), verified=verify)

    assert facts.subject == f"CN={HOST}"
    assert facts.issuer == "CN=Test Intermediate"
    if CHAIN_IN_PUBLIC_API:
        assert facts.chain_length == 2
        assert facts.not_after == certs.intermediate_not_after.timestamp()
        assert facts.expiring_subject == "CN=Test Intermediate"
        assert "(first to expire in the chain: CN=Test Intermediate)" in describe_facts(
            facts, datetime.now(UTC).timestamp()
        )
    else:
        assert facts.chain_length is None
        assert facts.not_after == certs.leaf_not_after.timestamp()
        assert facts.expiring_subject == ""


def test_a_leaf_expiring_first_is_the_chain_s_not_after_with_no_other_subject_named(
    tmp_path: Path,
) -> None:
    certs = chain(tmp_path, leaf_days=2, intermediate_days=300)

    facts = tls_facts(handshake(certs.server_context(), certs.client_context()), verified=True)

    assert facts.not_after == certs.leaf_not_after.timestamp()
    assert facts.expiring_subject == ""
    assert facts.chain_length == (2 if CHAIN_IN_PUBLIC_API else None)
    assert "first to expire" not in describe_facts(facts, datetime.now(UTC).timestamp())


class PublicChain:
    """A real client end that offers Python 3.13's public ``get_unverified_chain()`` anywhere.

    Before 3.13 the chain is there only through CPython's private
    ``_sslobj.get_unverified_chain()`` (3.10+), which smtp_probe does not
    use. This test-only wrapper converts it as 3.13's ``ssl.py`` does, so the
    chain logic of :func:`tls_facts` runs on the Python CI runs too, over the
    real chain of a real handshake. ``as_objects`` hands the certificate
    objects over unconverted, as 3.13's betas did.
    """

    def __init__(self, end: ssl.SSLObject, *, as_objects: bool = False) -> None:
        self._end = end
        self._as_objects = as_objects

    def __getattr__(self, name: str) -> object:
        return getattr(self._end, name)

    def get_unverified_chain(self) -> list[object]:
        native: Any = getattr(self._end, "_sslobj", None) or self._end
        chain_objects: list[Any] = native.get_unverified_chain() or []
        if self._as_objects:
            return list(chain_objects)
        der = _ssl.ENCODING_DER
        return [c if isinstance(c, bytes) else c.public_bytes(der) for c in chain_objects]


def test_the_earliest_not_after_of_the_presented_chain_is_taken_when_python_offers_it(
    tmp_path: Path,
) -> None:
    certs = chain(tmp_path, leaf_days=300, intermediate_days=2)
    end = handshake(certs.server_context(), context(None))

    facts = tls_facts(cast(ssl.SSLObject, PublicChain(end)), verified=False)

    assert facts.chain_length == 2
    assert facts.not_after == certs.intermediate_not_after.timestamp()
    assert facts.expiring_subject == "CN=Test Intermediate"
    assert facts.subject == f"CN={HOST}"
    assert tls_dict(facts)["chain_length"] == 2  # type: ignore[index]


def test_a_chain_of_certificate_objects_instead_of_bytes_falls_back_to_the_leaf(
    tmp_path: Path,
) -> None:
    certs = chain(tmp_path, leaf_days=300, intermediate_days=2)
    end = handshake(certs.server_context(), certs.client_context())

    facts = tls_facts(cast(ssl.SSLObject, PublicChain(end, as_objects=True)), verified=True)

    assert facts.chain_length is None
    assert facts.not_after == certs.leaf_not_after.timestamp()
    assert facts.expiring_subject == ""
