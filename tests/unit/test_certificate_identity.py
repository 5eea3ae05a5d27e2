"""Who a client certificate's subject CN names: `merchant:<id>`, with the id held to
the rules every RPC applies to a merchant id, or `ops`."""

from __future__ import annotations

import pytest

from payorch.app.auth import Principal, Scope, Unauthenticated, principal_from_certificate


def test_a_merchant_cn_names_that_merchant_and_ops_an_operator():
    assert principal_from_certificate("merchant:m_1.eu-2") == Principal(
        Scope.MERCHANT, "m_1.eu-2", "cert:m_1.eu-2"
    )
    assert principal_from_certificate("ops") == Principal(Scope.OPS, None, "cert:ops")


@pytest.mark.parametrize("cn", ["just-a-name", "ops:m_1", "Merchant:m_1", "OPS", ""])
def test_a_cn_of_no_payorch_identity_names_no_one(cn):
    assert principal_from_certificate(cn) is None


@pytest.mark.parametrize(
    "merchant",
    [
        "",
        "m 1",
        " m_1",
        "m_1\u200b",
        "m_1:eu",
        "m/1",
        "a" * 65,
        "4242424242424242",
        "m_\u0661",  # an Arabic-Indic digit
    ],
)
def test_a_merchant_cn_whose_id_breaks_the_merchant_id_rules_is_refused(merchant):
    with pytest.raises(Unauthenticated) as refused:
        principal_from_certificate(f"merchant:{merchant}")
    message = str(refused.value)
    assert "client certificate" in message
    assert "1-64 letters, digits, '_', '-' or '.'" in message
    if merchant:
        assert merchant not in message
