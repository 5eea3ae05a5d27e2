"""Client certificates their CA revoked, from a PEM CRL file (PAYORCH_TLS_CLIENT_CRL_FILE).

grpc Python's server credentials take no CRL (grpcio 1.85: `ssl_server_credentials`
and `ssl_server_certificate_configuration` have no such argument; grpc core's
`crl_directory` and CRL provider are not exposed), so the handshake lets a revoked
certificate through and every call checks it instead (`grpc/handlers.py`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

log = logging.getLogger("payorch.tls")
_CRL_PEM = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
# Verdicts kept per certificate until the file changes: a client sends the same one
# on every call of a connection.
_VERDICTS = 1_024


class UnusableRevocationList(ValueError):
    """The CRL file holds no CRL, or one that no client CA signed."""


def load_crls(
    pem: bytes, client_cas: Sequence[x509.Certificate]
) -> list[x509.CertificateRevocationList]:
    """Every CRL in `pem`, each signed by one of `client_cas`: a CRL of another CA
    would revoke nothing the server accepts, which is a mistake to say at once."""
    blocks = _CRL_PEM.findall(pem)
    if not blocks:
        raise UnusableRevocationList("the client CRL file holds no PEM CRL (BEGIN X509 CRL)")
    crls = []
    for block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as exc:
            raise UnusableRevocationList(
                f"the client CRL file holds an unreadable CRL: {exc}"
            ) from exc
        if not any(_signed_by(crl, ca) for ca in client_cas):
            raise UnusableRevocationList(
                f"the client CRL of {crl.issuer.rfc4514_string()} is not signed by a client CA"
            )
        crls.append(crl)
    return crls


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    if crl.issuer != ca.subject:
        return False
    try:
        # A CA key that cannot sign (X25519, X448) raises TypeError: signed by no one.
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, UnsupportedAlgorithm):
        return False


class RevokedClientCertificates:
    """`is_revoked(certificate PEM)`: whether a CRL of the certificate's issuer lists
    its serial number. The file is read again when it changes (a new CRL is taken
    without a restart); one that cannot be used then leaves the last good one in force
    and is logged."""

    def __init__(self, path: Path, client_ca_pem: bytes) -> None:
        self._path = path
        try:
            self._cas = x509.load_pem_x509_certificates(client_ca_pem)
        except ValueError as exc:
            raise UnusableRevocationList(
                "the client CA file (PAYORCH_TLS_CLIENT_CA_FILE) holds no readable certificate"
            ) from exc
        self._seen = self._stamp()
        self._verdict = self._judge(load_crls(path.read_bytes(), self._cas))

    def is_revoked(self, certificate_pem: bytes) -> bool:
        stamp = self._stamp()
        if stamp != self._seen:
            self._seen = stamp
            self._reload()
        return self._verdict(certificate_pem)

    def _stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self._path)
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload(self) -> None:
        try:
            self._verdict = self._judge(load_crls(self._path.read_bytes(), self._cas))
        except (OSError, UnusableRevocationList) as exc:
            log.error("the client CRL file changed and cannot be used; the last one stays: %s", exc)
            return
        log.info("read the client CRL file again")

    @staticmethod
    def _judge(crls: list[x509.CertificateRevocationList]) -> Callable[[bytes], bool]:
        now = dt.datetime.now(dt.UTC)
        for crl in crls:
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                # Kept: refusing every client for a late CRL would stop the service.
                log.warning(
                    "the client CRL of %s was due for an update at %s",
                    crl.issuer.rfc4514_string(),
                    crl.next_update_utc.isoformat(),
                )

        @functools.lru_cache(maxsize=_VERDICTS)
        def revoked(certificate_pem: bytes) -> bool:
            try:
                cert = x509.load_pem_x509_certificate(certificate_pem)
            except ValueError:
                # The handshake took what cannot be read here: unchecked is refused.
                log.warning("a client certificate cannot be read to check it against the CRL")
                return True
            return any(
                crl.issuer == cert.issuer
                and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
                for crl in crls
            )

        return revoked
