"""A payment's metadata reaches its PaymentIntent: the real Stripe SDK against the fake
Stripe, which refuses metadata as Stripe does (50 keys, keys of 40 characters without
`[` or `]`, values of 500)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from payorch.domain.payment import PaymentStatus
from payorch.domain.request import MAX_METADATA_KEYS
from payorch.domain.results import ResponseKind
from tests.integration.test_recovery_with_stripe import pay, running
from tests.integration.test_stripe_adapter import charge

OURS = {"payorch_step": "0", "payorch_merchant_id": "m_1"}


def intent_metadata(fake, payment) -> dict[str, str]:
    return dict(fake.payment_intent(payment.steps[0].processor_payment_id)["metadata"])


async def test_the_callers_metadata_is_on_the_payment_intent_beside_payorchs_own():
    async with running() as (fake, service, _clock):
        payment = await pay(service, metadata={"order_id": "wc-1001", "channel": "web shop"})

        assert payment.status is PaymentStatus.SUCCEEDED
        assert intent_metadata(fake, payment) == {
            "order_id": "wc-1001",
            "channel": "web shop",
            "payorch_payment_id": payment.id,
            **OURS,
        }


async def test_metadata_at_every_limit_is_taken_by_stripe_with_payorchs_own_keys():
    caller = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(MAX_METADATA_KEYS)}
    async with running() as (fake, service, _clock):
        payment = await pay(service, metadata=caller)

        assert payment.status is PaymentStatus.SUCCEEDED
        sent = intent_metadata(fake, payment)
        assert len(sent) == 50
        assert sent == {**caller, "payorch_payment_id": payment.id, **OURS}


@pytest.mark.parametrize(
    "stored",
    [
        {"k": "v", **{f"k{i}": "v" for i in range(49)}},  # 50 of the caller's: 53 with ours
        {"a[b]": "v", "k": "v"},  # a key Stripe refuses
        {"k" * 41: "v", "k": "v"},
    ],
    ids=["fifty-keys", "bracket", "long-key"],
)
async def test_metadata_stored_before_its_limits_never_gets_a_charge_refused(stored):
    """A payment stored under older rules (more keys, any key) is still charged or
    looked up: what Stripe would refuse is left out of what is sent."""
    async with running() as (fake, service, _clock):
        processor = service._router.processors["stripe"]
        answer = await processor.authorize(replace(charge(), metadata=stored))

        assert answer.kind is ResponseKind.SUCCEEDED
        sent = fake.payment_intent(answer.processor_payment_id)["metadata"]
        assert len(sent) <= 50 and {"payorch_payment_id", "payorch_step"} <= set(sent)
        assert sent["k"] == "v"


async def test_payorchs_own_keys_win_over_a_stored_key_of_the_same_name():
    async with running() as (fake, service, _clock):
        processor = service._router.processors["stripe"]
        forged = {"payorch_payment_id": "pay_other", "payorch_step": "7", "order": "1"}
        answer = await processor.authorize(replace(charge(), metadata=forged))

        sent = fake.payment_intent(answer.processor_payment_id)["metadata"]
        assert (sent["payorch_payment_id"], sent["payorch_step"]) == ("pay_1", "0")
        assert sent["order"] == "1"
