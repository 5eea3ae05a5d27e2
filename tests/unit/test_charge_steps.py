"""The steps installments are split in (Currency.charge_step) are what Stripe can charge:
every amount made of them goes through, and a currency with no step of its own is one
Stripe charges to the minor unit."""

from __future__ import annotations

import pytest

from payorch.adapters.processors.stripe import _stripe_amount
from payorch.domain.money import EXPONENTS, Currency


@pytest.mark.parametrize("code", sorted(EXPONENTS))
def test_every_whole_number_of_charge_steps_is_an_amount_stripe_can_charge(code):
    step = Currency(code).charge_step
    for steps in (1, 7, 3_333, 10**6 + 1):
        assert _stripe_amount(steps * step, code) is not None
    if step > 1:
        assert _stripe_amount(step + 1, code) is None, "one minor unit more is refused"
