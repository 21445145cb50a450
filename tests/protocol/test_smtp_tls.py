"""STARTTLS and implicit TLS against aiosmtpd with trustme certificates: verified by default."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from smtp_probe.probe.message import TokenSigner
from smtp_probe.probe.result import Outcome, RunResult, Stage
from smtp_probe.probe.run import run_probe
from smtp_probe.probe.spec import ProbeSpec, SmtpServer, TlsMode, TlsSettings
from smtp_probe.probe.transcript import Direction
from smtp_probe.secret import Secret
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


def tls_spec(
    port: int,
    mode: TlsMode,
    settings: TlsSettings,
    *,
    username: str | None = None,
    password: str | None = None,
) -> ProbeSpec:
    return ProbeSpec(
        name="tls",
        smtp=SmtpServer(
            host=LOOPBACK,
            port=port,
            tls=mode,
            tls_settings=settings,
            username=username,
            password=Secret(password) if password else None,
            helo="probe.test",
            timeout=5.0,
        ),
        mail_from="probe@sender.test",
        rcpt_to="sink@rcpt.test",
        timeout=5.0,
    )


def run(spec: ProbeSpec) -> RunResult:
    return asyncio.run(run_probe(spec, signer=TokenSigner()))


def test_starttls_required_but_not_offered_fails_at_stage_starttls() -> None:
    with smtpd(Behaviour()) as port:
        result = run(tls_spec(port, TlsMode.STARTTLS, TlsSettings()))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.STARTTLS
    assert "does not offer STARTTLS" in result.error


def test_starttls_with_a_certificate_from_the_trusted_ca_is_verified_and_sends(
    loopback_cert: ssl.SSLContext, ca_file: Path
) -> None:
    handler = Behaviour()
    with smtpd(handler, tls_context=loopback_cert) as port:
        result = run(tls_spec(port, TlsMode.STARTTLS, TlsSettings(ca_file=ca_file)))

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert len(handler.messages) == 1


def test_commands_after_starttls_are_marked_as_inside_tls(
    loopback_cert: ssl.SSLContext, ca_file: Path
) -> None:
    with smtpd(Behaviour(), tls_context=loopback_cert) as port:
        result = run(tls_spec(port, TlsMode.STARTTLS, TlsSettings(ca_file=ca_file)))

    directions = {line.text: line.direction for line in result.transcript.lines}
    assert directions["STARTTLS"] is Direction.SENT
    assert directions["MAIL FROM:<probe@sender.test>"] is Direction.SENT_TLS
    assert directions["250 2.0.0 Ok: queued as ABC123"] is Direction.RECEIVED_TLS


def test_starttls_with_a_certificate_from_another_ca_fails_verification_at_stage_starttls(
    loopback_cert: ssl.SSLContext, other_ca_file: Path
) -> None:
    handler = Behaviour()
    with smtpd(handler, tls_context=loopback_cert) as port:
        result = run(tls_spec(port, TlsMode.STARTTLS, TlsSettings(ca_file=other_ca_file)))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.STARTTLS
    assert "certificate verification failed" in result.error
    assert handler.messages == []


def test_starttls_with_a_certificate_for_another_host_name_fails_verification(
    ca: trustme.CA, ca_file: Path
) -> None:
    wrong_name = server_context(ca, "mail.elsewhere.test")
    with smtpd(Behaviour(), tls_context=wrong_name) as port:
        result = run(tls_spec(port, TlsMode.STARTTLS, TlsSettings(ca_file=ca_file)))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.STARTTLS
    assert "certificate verification failed" in result.error


def test_starttls_without_verification_accepts_an_untrusted_certificate(
    loopback_cert: ssl.SSLContext,
) -> None:
    with smtpd(Behaviour(), tls_context=loopback_cert) as port:
        result = run(tls_spec(port, TlsMode.STARTTLS, TlsSettings(verify=False)))

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.tls_version is not None


def test_implicit_tls_with_a_certificate_from_the_trusted_ca_sends(
    loopback_cert: ssl.SSLContext, ca_file: Path
) -> None:
    with smtpd(Behaviour(), ssl_context=loopback_cert) as port:
        result = run(tls_spec(port, TlsMode.TLS, TlsSettings(ca_file=ca_file)))

    assert result.outcome is Outcome.SENT, result.error
    assert result.smtp.tls_version in {"TLSv1.2", "TLSv1.3"}
    greeting = next(line for line in result.transcript.lines if line.text.startswith("220"))
    assert greeting.direction is Direction.RECEIVED_TLS


def test_implicit_tls_with_a_certificate_from_another_ca_fails_verification_at_stage_connect(
    loopback_cert: ssl.SSLContext, other_ca_file: Path
) -> None:
    with smtpd(Behaviour(), ssl_context=loopback_cert) as port:
        result = run(tls_spec(port, TlsMode.TLS, TlsSettings(ca_file=other_ca_file)))

    assert result.outcome is Outcome.SEND_FAILED
    assert result.stage is Stage.CONNECT
    assert "certificate verification failed" in result.error


def test_auth_after_starttls_goes_inside_tls_and_succeeds(
    loopback_cert: ssl.SSLContext, ca_file: Path
) -> None:
    authenticator = Authenticator("probe", "tls-only-secret")
    with smtpd(Behaviour(), tls_context=loopback_cert, authenticator=authenticator) as port:
        spec = tls_spec(
            port,
            TlsMode.STARTTLS,
            TlsSettings(ca_file=ca_file),
            username="probe",
            password="tls-only-secret",  # noqa: S106 - the test server's own user
        )
        result = run(spec)

    assert result.outcome is Outcome.SENT, result.error
    assert authenticator.attempts == [("probe", "tls-only-secret")]
    auth = next(line for line in result.transcript.lines if line.text.startswith("AUTH"))
    assert auth.direction is Direction.SENT_TLS
