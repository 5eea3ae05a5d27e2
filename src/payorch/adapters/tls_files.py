"""The server's TLS certificate, key and client CAs, parsed as grpc will take them.

grpc says why it cannot use one only in its own log: `add_secure_port` fails as if
the address were in use. Parsed here, a file is refused before anything starts."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization


class UnusableTlsFile(ValueError):
    """A TLS file holds nothing grpc could use."""


def certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a chain, or client CAs): at least one."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise UnusableTlsFile("holds no readable PEM certificate (BEGIN CERTIFICATE)") from None


def check_private_key(pem: bytes, certificate: x509.Certificate) -> None:
    """`pem` is the unencrypted private key of `certificate` (the first of its chain)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        # grpc takes no passphrase.
        raise UnusableTlsFile("holds an encrypted private key: grpc takes none") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UnusableTlsFile("holds no readable PEM private key (BEGIN PRIVATE KEY)") from None
    if _public(key.public_key()) != _public(certificate.public_key()):
        raise UnusableTlsFile(
            "is not the private key of the first certificate of PAYORCH_TLS_CERT_FILE"
        )


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
