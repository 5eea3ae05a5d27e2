"""The steps installments are split in (Currency.charge_step) are what Stripe can charge:
every amount made of them goes through, and a currency with no step of its own is one
Stripe charges to the minor unit."""

from __future__ import annotations

import pytest

from payorch.adapters.processors.stripe import _our_amount, _stripe_amount
from payorch.domain.money import EXPONENTS, Currency


@pytest.mark.parametrize("code", sorted(EXPONENTS))
def test_every_whole_number_of_charge_steps_is_an_amount_stripe_can_charge(code):
    step = Currency(code).charge_step
    for steps in (1, 7, 3_333, 10**6 + 1):
        assert _stripe_amount(steps * step, code) is not None
    if step > 1:
        assert _stripe_amount(step + 1, code) is None, "one minor unit more is refused"


@pytest.mark.parametrize(
    ("code", "ours", "stripes"),
    [
        # Stripe keeps two decimals for ISK and UGX (ISO: none): 5 is sent as 500.
        ("ISK", 5, 500),
        ("UGX", 5_000, 500_000),
        # Stripe counts MGA in whole ariary (ISO: two decimals).
        ("MGA", 100_000, 1_000),
        # Everywhere else Stripe's unit is ISO's minor unit.
        ("JPY", 500, 500),
        ("USD", 1_999, 1_999),
        ("KWD", 5_120, 5_120),
        ("HUF", 1_999, 1_999),
        ("TWD", 1_999, 1_999),
    ],
)
def test_an_amount_crosses_to_stripe_in_its_units_and_back_unchanged(code, ours, stripes):
    assert _stripe_amount(ours, code) == stripes
    assert _our_amount(stripes, code.lower()) == ours
