"""The client CRL: which certificates it revokes, which files it refuses at start, and
how a file replaced while serving is taken (real certificates and CRLs, made here)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from payorch.adapters.certificate_revocation import (
    RevokedClientCertificates,
    UnusableRevocationList,
)
from payorch.entrypoints.grpc.server import revoked_client_certificates
from payorch.settings import InvalidSettings, Settings
from tests import certificates

CA = certificates.ca("payorch test CA")
OTHER_CA = certificates.ca("partner CA")
CAS_PEM = certificates.pem(CA[1]) + certificates.pem(OTHER_CA[1])


def client(issuer: certificates.Ca = CA, serial: int | None = None) -> bytes:
    return certificates.leaf(issuer, "merchant:m_1", server=False, serial=serial)[1]


def revocations(tmp_path: Path, crl_pem: bytes) -> RevokedClientCertificates:
    path = tmp_path / "clients.crl.pem"
    path.write_bytes(crl_pem)
    return RevokedClientCertificates(path, CAS_PEM)


def replace(path: Path, content: bytes) -> None:
    """A new file in place of the old one, as an operator's `mv` makes."""
    staged = path.with_suffix(".new")
    staged.write_bytes(content)
    os.replace(staged, path)


def test_a_listed_certificate_is_revoked_and_another_of_its_ca_is_not(tmp_path):
    listed, other = client(), client()
    revoked = revocations(tmp_path, certificates.crl(CA, [listed]))
    assert revoked.is_revoked(listed)
    assert not revoked.is_revoked(other)


def test_a_serial_is_revoked_only_for_the_ca_whose_crl_lists_it(tmp_path):
    listed = client(CA, serial=4242)
    same_serial_of_another_ca = client(OTHER_CA, serial=4242)
    revoked = revocations(tmp_path, certificates.crl(CA, [listed]))
    assert revoked.is_revoked(listed)
    assert not revoked.is_revoked(same_serial_of_another_ca)


def test_every_crl_in_the_file_counts(tmp_path):
    ours, partners = client(CA), client(OTHER_CA)
    both = certificates.crl(CA, [ours]) + certificates.crl(OTHER_CA, [partners])
    revoked = revocations(tmp_path, both)
    assert revoked.is_revoked(ours)
    assert revoked.is_revoked(partners)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "holds no PEM CRL"),
        (certificates.pem(CA[1]), "holds no PEM CRL"),
        (
            b"-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
            "unreadable CRL",
        ),
        (certificates.crl(certificates.ca("unrelated CA"), []), "not signed by a client CA"),
        # The client CA's name, another key: a forged CRL.
        (certificates.crl(certificates.ca("payorch test CA"), []), "not signed by a client CA"),
    ],
    ids=["empty", "a certificate", "garbage", "another CA's", "forged"],
)
def test_a_file_that_is_no_crl_of_a_client_ca_is_refused_at_start(tmp_path, content, says):
    with pytest.raises(UnusableRevocationList, match=says):
        revocations(tmp_path, content)


def test_a_crl_replaced_while_serving_is_taken_and_a_broken_one_leaves_the_last(tmp_path, caplog):
    first, second = client(), client()
    revoked = revocations(tmp_path, certificates.crl(CA, [first]))
    path = tmp_path / "clients.crl.pem"
    assert (revoked.is_revoked(first), revoked.is_revoked(second)) == (True, False)
    replace(path, certificates.crl(CA, [second]))
    assert (revoked.is_revoked(first), revoked.is_revoked(second)) == (False, True)
    with caplog.at_level(logging.ERROR, logger="payorch.tls"):
        replace(path, b"half a CRL")
        assert (revoked.is_revoked(first), revoked.is_revoked(second)) == (False, True)
        path.unlink()
        assert (revoked.is_revoked(first), revoked.is_revoked(second)) == (False, True)
    # Errors only: a test before this one that ran `configure` left the root logger at
    # INFO, and the reload of the good CRL above is logged at INFO.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(";")[0] for r in errors] == [
        "the client CRL file changed and cannot be used"
    ] * 2


def test_a_crl_past_its_next_update_stays_in_force_and_is_reported(tmp_path, caplog):
    listed = client()
    with caplog.at_level(logging.WARNING, logger="payorch.tls"):
        revoked = revocations(tmp_path, certificates.crl(CA, [listed], next_update_days=-1))
    assert revoked.is_revoked(listed)
    assert "was due for an update" in caplog.text


def test_a_certificate_that_cannot_be_read_is_refused(tmp_path):
    revoked = revocations(tmp_path, certificates.crl(CA, []))
    assert revoked.is_revoked(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def _settings(tmp_path: Path, crl_pem: bytes, *, client_ca: bool = True) -> Settings:
    (tmp_path / "ca.pem").write_bytes(CAS_PEM)
    (tmp_path / "clients.crl.pem").write_bytes(crl_pem)
    return Settings(
        tls_client_ca_file=str(tmp_path / "ca.pem") if client_ca else "",
        tls_client_crl_file=str(tmp_path / "clients.crl.pem"),
    )


def test_the_server_takes_a_crl_of_its_client_ca_and_no_other(tmp_path):
    listed = client()
    revoked = revoked_client_certificates(_settings(tmp_path, certificates.crl(CA, [listed])))
    assert revoked is not None and revoked(listed)
    assert revoked_client_certificates(Settings()) is None
    forged = certificates.crl(certificates.ca("payorch test CA"), [])
    with pytest.raises(InvalidSettings, match=r"PAYORCH_TLS_CLIENT_CRL_FILE: .*not signed"):
        revoked_client_certificates(_settings(tmp_path, forged))
    with pytest.raises(InvalidSettings, match="needs PAYORCH_TLS_CLIENT_CA_FILE"):
        revoked_client_certificates(
            _settings(tmp_path, certificates.crl(CA, [listed]), client_ca=False)
        )
