"""What a run says about TLS problems: unusable CA files and handshakes cut short."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from smtp_probe.probe.tls import ca_file_problem, describe_verify_error


def test_a_pem_ca_bundle_has_no_problem(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    assert ca_file_problem(path) is None


def test_a_missing_ca_file_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "nope.pem"
    assert ca_file_problem(path) == f"CA file {path} does not exist"


def test_a_ca_file_without_a_pem_certificate_says_so(tmp_path: Path) -> None:
    """A DER certificate is a certificate, but not one the CA file may hold."""
    der = tmp_path / "ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(trustme.CA().cert_pem.bytes().decode()))
    text = tmp_path / "ca.txt"
    text.write_text("not a certificate\n")
    for path in (der, text):
        assert ca_file_problem(path) == f"CA file {path} holds no PEM certificate"


def test_a_ca_file_that_cannot_be_read_says_why_in_the_systems_words(tmp_path: Path) -> None:
    """A directory where the file should be: the OS's reason, not a traceback."""
    assert ca_file_problem(tmp_path) == f"CA file {tmp_path} cannot be read: Is a directory"


def test_a_handshake_cut_short_by_the_network_is_described_in_its_own_words() -> None:
    """Not every handshake failure is TLS's: a reset reads as the reset, not as verification."""
    reset = ConnectionResetError(104, "Connection reset by peer")
    assert describe_verify_error(reset) == "[Errno 104] Connection reset by peer"
