"""Certificates and keys made for the tests (cryptography), never read from disk."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def pair(
    cn: str = "gw1.example.test",
    not_before: datetime.datetime | None = None,
    days: int = 365,
) -> tuple[str, str]:
    """(certificate PEM, key PEM), self-signed, valid from ``not_before`` for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)


def rsa_key_pem(bits: int = 2048) -> str:
    """A fresh RSA private key, PKCS#8 PEM (a DKIM signing key)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return key_pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))  # type: ignore[arg-type]
