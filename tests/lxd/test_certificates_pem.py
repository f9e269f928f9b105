"""§10 client certificates; §16 scenario 15."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.lxd.pem import Certificate, CertificateError, fingerprint_of_pem
from app.store.remotes import RemoteStore

FIXTURE_PEM = (Path(__file__).parent / "data" / "fixture-cert.pem").read_bytes()
FIXTURE_FINGERPRINT = "1c5156027fe71cfd0f7db807123e6873879f0f9754e08eab151f224783b2bff0"


@pytest.fixture(scope="module")
def generated() -> Certificate:
    return Certificate.generate()


def test_s15_generated_certificate_validates(generated: Certificate) -> None:
    generated.validate()
    assert generated.name == ""


def test_s15_generated_certificate_is_p384_client_auth_for_ten_years(generated: Certificate) -> None:
    cert = generated.x509()
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"
    assert generated.key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert generated.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    key = serialization.load_pem_private_key(generated.key_pem, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    life = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < life <= dt.timedelta(days=3650)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "linuxcontainers.org"
    assert "@" in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_s15_generated_certificates_differ() -> None:
    a, b = Certificate.generate(), Certificate.generate()
    assert a.fingerprint() != b.fingerprint()
    assert a.x509().serial_number != b.x509().serial_number


def test_s15_missing_cert_is_not_valid() -> None:
    with pytest.raises(CertificateError, match=r"^missing cert PEM not valid$"):
        Certificate.from_pem(b"", b"key").validate()


def test_s15_missing_key_is_not_valid() -> None:
    with pytest.raises(CertificateError, match=r"^missing key PEM not valid$"):
        Certificate.from_pem(b"cert", b"").validate()


def test_s15_cert_is_checked_before_key() -> None:
    with pytest.raises(CertificateError, match="cert"):
        Certificate.from_pem(b"", b"").validate()


def test_s15_validate_does_not_parse_content() -> None:
    Certificate.from_pem(b"not a pem", b"not a key").validate()


def test_s15_identity_files_round_trip_byte_exactly(tmp_path: Path) -> None:
    cert_pem, key_pem = b"\n-----BEGIN X-----\nabc\n-----END X-----\n\n", b"\nkey\n"
    cert_path, key_path = RemoteStore(tmp_path).write_identity("r1", Certificate.from_pem(cert_pem, key_pem))
    assert Path(cert_path).read_bytes() == cert_pem
    assert Path(key_path).read_bytes() == key_pem


def test_s15_identity_without_key_is_not_written(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"^missing key PEM not valid$"):
        RemoteStore(tmp_path).write_identity("r1", Certificate.from_pem(b"cert", b""))
    assert not (tmp_path / "remotes").exists() or not any((tmp_path / "remotes").rglob("client.*"))


def test_s15_fixture_fingerprint() -> None:
    assert Certificate.from_pem(FIXTURE_PEM).fingerprint() == FIXTURE_FINGERPRINT
    assert fingerprint_of_pem(FIXTURE_PEM) == FIXTURE_FINGERPRINT
    assert fingerprint_of_pem(FIXTURE_PEM.decode()) == FIXTURE_FINGERPRINT


def test_s15_fixture_fingerprint_ignores_surrounding_text() -> None:
    assert Certificate.from_pem(b"\nleading text\n" + FIXTURE_PEM + b"trailing").fingerprint() == FIXTURE_FINGERPRINT


def test_s15_x509_parses_fixture() -> None:
    cert = Certificate.from_pem(FIXTURE_PEM).x509()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "esnow@furious"


def test_s15_x509_of_empty_cert() -> None:
    with pytest.raises(CertificateError, match=r"^invalid cert PEM \(0 bytes\)$"):
        Certificate.from_pem(b"").x509()


def test_s15_x509_of_garbage_counts_bytes() -> None:
    with pytest.raises(CertificateError, match=r"^invalid cert PEM \(16 bytes\)$"):
        Certificate.from_pem(b"some-invalid-pem").x509()


def test_s15_x509_of_undecodable_der() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(CertificateError):
        Certificate.from_pem(pem).x509()


def test_s15_create_request(generated: Certificate) -> None:
    cert = Certificate.from_pem(generated.cert_pem, generated.key_pem, name="gateway-client-cert")
    req = cert.as_create_request()
    assert req["name"] == "gateway-client-cert"
    assert req["type"] == "client"
    assert req["certificate"]
    assert "\n" not in req["certificate"]
    der = base64.b64decode(req["certificate"], validate=True)
    assert der == generated.x509().public_bytes(serialization.Encoding.DER)


def test_s15_create_request_of_invalid_pem() -> None:
    cert = Certificate.from_pem(b"some-invalid-pem", name="gateway-client-cert")
    with pytest.raises(CertificateError, match=r"^failed to decode certificate PEM$"):
        cert.as_create_request()


def test_s15_create_request_does_not_parse_der() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert Certificate.from_pem(pem).as_create_request()["certificate"] == "AAAA"


def test_s15_generated_serial_is_positive_and_at_most_128_bits(generated: Certificate) -> None:
    assert 0 < generated.x509().serial_number < 2**128
