"""STARTTLS and implicit TLS against aiosmtpd with trustme certificates: verified by default."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from smtp_probe.probe.result import Outcome, Stage
from smtp_probe.probe.spec import TlsMode, TlsSettings
from smtp_probe.probe.transcript import Direction
from tests.support.loopback_routes import SENDER, loopback_probe, run
from tests.support.loopback_smtpd import LOOPBACK, Authenticator, Behaviour, smtpd


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def other_ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the server's certificate."""
    path = tmp_path_factory.mktemp("other-ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture(scope="module")
def loopback_cert(ca: trustme.CA) -> ssl.SSLContext:
    """A server context whose certificate is valid for 127.0.0.1."""
    return server_context(ca, LOOPBACK, "localhost")


@pytest.fixture(scope="module")
def other_name_cert(ca: trustme.CA) -> ssl.SSLContext:
    """A server context whose certificate, from the trusted CA, names another host."""
    return server_context(ca, "mail.elsewhere.test")


def test_starttls_required_but_not_offered_fails_at_stage_starttls() -> None:
    with smtpd(Behaviour()) as port:
        result = run(loopback_probe(port, tls=TlsMode.STARTTLS))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.STARTTLS
    assert "does not offer STARTTLS" in result.error


# Where the server's certificate goes: aiosmtpd's ``tls_context`` is offered
# through STARTTLS, its ``ssl_context`` wraps the socket from the first byte.
SERVER_TLS = {TlsMode.STARTTLS: "tls_context", TlsMode.TLS: "ssl_context"}


@pytest.mark.parametrize(
    ("mode", "greeting"),
    [
        pytest.param(TlsMode.STARTTLS, Direction.RECEIVED, id="starttls"),
        pytest.param(TlsMode.TLS, Direction.RECEIVED_TLS, id="implicit-tls"),
    ],
)
def test_a_certificate_from_the_trusted_ca_is_verified_and_the_message_sent(
    loopback_cert: ssl.SSLContext, ca_file: Path, mode: TlsMode, greeting: Direction
) -> None:
    handler = Behaviour()
    with smtpd(handler, **{SERVER_TLS[mode]: loopback_cert}) as port:
        result = run(loopback_probe(port, tls=mode, tls_settings=TlsSettings(ca_file=ca_file)))

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert len(handler.messages) == 1
    banner = next(line for line in result.transcript.lines if line.text.startswith("220 "))
    assert banner.direction is greeting


def test_commands_after_starttls_are_marked_as_inside_tls(
    loopback_cert: ssl.SSLContext, ca_file: Path
) -> None:
    with smtpd(Behaviour(), tls_context=loopback_cert) as port:
        result = run(
            loopback_probe(port, tls=TlsMode.STARTTLS, tls_settings=TlsSettings(ca_file=ca_file))
        )

    directions = {line.text: line.direction for line in result.transcript.lines}
    assert directions["STARTTLS"] is Direction.SENT
    assert directions[f"MAIL FROM:<{SENDER}>"] is Direction.SENT_TLS
    assert directions["250 2.0.0 Ok: queued as ABC123"] is Direction.RECEIVED_TLS


@pytest.mark.parametrize(
    ("mode", "cert", "trusted", "stage", "reason"),
    [
        pytest.param(
            TlsMode.STARTTLS,
            "loopback_cert",
            "other_ca_file",
            Stage.STARTTLS,
            "unable to get local issuer certificate",
            id="starttls-another-ca",
        ),
        pytest.param(
            TlsMode.STARTTLS,
            "other_name_cert",
            "ca_file",
            Stage.STARTTLS,
            "IP address mismatch",
            id="starttls-another-host",
        ),
        pytest.param(
            TlsMode.TLS,
            "loopback_cert",
            "other_ca_file",
            Stage.CONNECT,
            "unable to get local issuer certificate",
            id="implicit-tls-another-ca",
        ),
        pytest.param(
            TlsMode.TLS,
            "other_name_cert",
            "ca_file",
            Stage.CONNECT,
            "IP address mismatch",
            id="implicit-tls-another-host",
        ),
    ],
)
def test_an_unverifiable_certificate_fails_at_the_handshake_saying_why(
    request: pytest.FixtureRequest,
    mode: TlsMode,
    cert: str,
    trusted: str,
    stage: Stage,
    reason: str,
) -> None:
    """The handshake is where the run stops: STARTTLS, or the connect of implicit TLS."""
    server_cert: ssl.SSLContext = request.getfixturevalue(cert)
    ca_file: Path = request.getfixturevalue(trusted)
    handler = Behaviour()
    with smtpd(handler, **{SERVER_TLS[mode]: server_cert}) as port:
        result = run(loopback_probe(port, tls=mode, tls_settings=TlsSettings(ca_file=ca_file)))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is stage
    assert result.error.startswith(f"certificate verification failed: {reason}"), result.error
    assert handler.messages == []


def test_starttls_without_verification_accepts_an_untrusted_certificate(
    loopback_cert: ssl.SSLContext,
) -> None:
    with smtpd(Behaviour(), tls_context=loopback_cert) as port:
        result = run(
            loopback_probe(port, tls=TlsMode.STARTTLS, tls_settings=TlsSettings(verify=False))
        )

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.tls_version is not None


def test_auth_after_starttls_goes_inside_tls_and_succeeds(
    loopback_cert: ssl.SSLContext, ca_file: Path
) -> None:
    authenticator = Authenticator("probe", "tls-only-secret")
    with smtpd(Behaviour(), tls_context=loopback_cert, authenticator=authenticator) as port:
        spec = loopback_probe(
            port,
            tls=TlsMode.STARTTLS,
            tls_settings=TlsSettings(ca_file=ca_file),
            username="probe",
            password="tls-only-secret",  # noqa: S106 - the test server's own user
        )
        result = run(spec)

    assert result.outcome is Outcome.SENT, result.error
    assert authenticator.attempts == [("probe", "tls-only-secret")]
    auth = next(line for line in result.transcript.lines if line.text.startswith("AUTH"))
    assert auth.direction is Direction.SENT_TLS


def test_implicit_tls_against_a_plain_smtp_server_fails_at_connect_as_a_handshake_error(
    ca_file: Path,
) -> None:
    """Port 587 configured as ``tls``: the server's plain ``220`` is no TLS record."""
    handler = Behaviour()
    with smtpd(handler) as port:
        result = run(
            loopback_probe(port, tls=TlsMode.TLS, tls_settings=TlsSettings(ca_file=ca_file))
        )

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.CONNECT
    # OpenSSL's reason (WRONG_VERSION_NUMBER here) varies with its version; the words are ours.
    assert result.error.startswith("TLS handshake failed: "), result.error
    assert "certificate" not in result.error
    assert handler.messages == []


@pytest.mark.parametrize("mode", [TlsMode.STARTTLS, TlsMode.TLS], ids=["starttls", "implicit-tls"])
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "verification-off"])
def test_tls_facts_name_a_certificate_expiring_in_two_days_verified_or_not(
    ca: trustme.CA, ca_file: Path, mode: TlsMode, verify: bool
) -> None:
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2, hours=1)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(LOOPBACK, common_name="mx.example.test", not_after=not_after).configure_cert(
        context
    )
    settings = TlsSettings(ca_file=ca_file) if verify else TlsSettings(verify=False)

    with smtpd(Behaviour(), **{SERVER_TLS[mode]: context}) as port:
        result = run(loopback_probe(port, tls=mode, tls_settings=settings))

    assert result.outcome is Outcome.SENT, result.error
    facts = result.smtp.tls
    assert facts is not None
    assert facts.version == result.smtp.tls_version
    assert facts.cipher
    assert facts.subject.startswith("CN=mx.example.test,")
    assert "O=trustme" in facts.issuer
    assert facts.not_after == not_after.timestamp()
    assert facts.verified is verify
    checked = "verified" if verify else "not verified (verification off)"
    expected = f"expires {not_after.date().isoformat()} (2 days), {checked}"
    notes = [line.text for line in result.transcript.lines if "TLS certificate:" in line.text]
    assert len(notes) == 1
    assert notes[0].endswith(expected)


def test_a_plain_connection_has_no_tls_facts() -> None:
    with smtpd(Behaviour()) as port:
        result = run(loopback_probe(port))

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.tls is None
