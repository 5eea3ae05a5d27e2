"""Certificates, CAs and CRLs made in a test: the TLS and mutual TLS tests use real ones."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Ca = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(
    subject: str, issuer: x509.Name, public_key: Any, serial: int | None = None
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def ca(cn: str) -> Ca:
    key = _key()
    cert = (
        _builder(cn, _name(cn), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def leaf(issuer: Ca, cn: str, *, server: bool, serial: int | None = None) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) of a server or client certificate `issuer` signed."""
    key = _key()
    builder = (
        _builder(cn, issuer[1].subject, key.public_key(), serial)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return _key_pem(key), pem(builder.sign(issuer[0], hashes.SHA256()))


def self_signed(cn: str) -> tuple[bytes, bytes]:
    key = _key()
    cert = _builder(cn, _name(cn), key.public_key()).sign(key, hashes.SHA256())
    return _key_pem(key), pem(cert)


def serial(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def crl(issuer: Ca, revoked: Iterable[bytes], *, next_update_days: float = 7) -> bytes:
    """A PEM CRL of `issuer` listing the certificates (PEM) in `revoked`."""
    now = dt.datetime.now(dt.UTC)
    next_update = now + dt.timedelta(days=next_update_days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer[1].subject)
        .last_update(min(now, next_update) - dt.timedelta(days=1))
        .next_update(next_update)
    )
    for cert_pem in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial(cert_pem))
            .revocation_date(now - dt.timedelta(minutes=5))
            .build()
        )
    return builder.sign(issuer[0], hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
