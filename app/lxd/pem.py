"""Client certificates for LXD's trust store.

A `Certificate` holds PEM bytes as given; it can generate a new ECDSA P-384 client certificate (10 years, client
auth, as LXD's own tools make them), validate itself, compute LXD's fingerprint (lowercase hex sha256 of the DER),
write its PEM blocks, and build the body that adds it to LXD's trust store (base64 of the DER: LXD 5.0 rejects a
full PEM there).

`cryptography` (about 8 MiB once loaded) is imported by the methods that parse or make a certificate, not by this
module: fingerprints of PEM text need only hashlib, and a gateway that never does either does not carry it.
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import hashlib
import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

VALIDITY = dt.timedelta(days=3650)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.S)


class CertificateError(ValueError):
    """A certificate or key is missing or cannot be decoded."""


def _as_bytes(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v


def first_pem_block(pem: bytes | str) -> bytes | None:
    """The DER bytes of the first PEM block, whatever its type, or None."""
    data = pem.encode() if isinstance(pem, str) else pem
    m = _PEM_BLOCK.search(data)
    if not m:
        return None
    try:
        return base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except ValueError:
        return None


def fingerprint_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(pem: bytes | str) -> str:
    der = first_pem_block(pem)
    if der is None:
        raise CertificateError(f"invalid cert PEM ({len(pem)} bytes)")
    return fingerprint_of_der(der)


@dataclass
class Certificate:
    """A client certificate and its key, both PEM. `name` is what LXD's trust store will call it."""

    cert_pem: bytes
    key_pem: bytes
    name: str = ""

    @classmethod
    def generate(cls, name: str = "", *, common_name: str | None = None) -> Certificate:
        """A new self-signed ECDSA P-384 client certificate, valid for 10 years from now."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP384R1())
        host = socket.gethostname() or "UNKNOWN"
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "UNKNOWN"
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "linuxcontainers.org"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"{user}@{host}"),
        ])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(secrets.randbits(128) | 1)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(host),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]), critical=False)
            .sign(key, hashes.SHA384())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        return cls(cert_pem=cert_pem, key_pem=key_pem, name=name)

    @classmethod
    def from_pem(cls, cert_pem: bytes | str, key_pem: bytes | str = b"", name: str = "") -> Certificate:
        return cls(cert_pem=_as_bytes(cert_pem), key_pem=_as_bytes(key_pem), name=name)

    def validate(self) -> None:
        """Both PEMs must be present (the certificate is checked first); the content is not parsed here."""
        if not self.cert_pem:
            raise CertificateError("missing cert PEM not valid")
        if not self.key_pem:
            raise CertificateError("missing key PEM not valid")

    def x509(self) -> x509.Certificate:
        from cryptography import x509

        der = first_pem_block(self.cert_pem)
        if der is None:
            raise CertificateError(f"invalid cert PEM ({len(self.cert_pem)} bytes)")
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CertificateError(f"cannot parse certificate: {exc}") from exc

    def fingerprint(self) -> str:
        """Lowercase hex sha256 of the DER, as LXD computes it."""
        from cryptography.hazmat.primitives import serialization

        return fingerprint_of_der(self.x509().public_bytes(serialization.Encoding.DER))

    def as_create_request(self) -> dict[str, Any]:
        """The body of `POST /1.0/certificates` that adds this certificate to LXD's trust store."""
        der = first_pem_block(self.cert_pem)
        if der is None:
            raise CertificateError("failed to decode certificate PEM")
        return {"certificate": base64.b64encode(der).decode(), "name": self.name, "type": "client"}
