"""CreateInstallmentPlan retried after its process died between the first charge and the
plan's insert, on SQLite and PostgreSQL: the retry makes the plan from the charge taken,
unless that charge was refunded meanwhile, and under the policy the charge was taken
under, whatever the merchant's config says by then."""

from __future__ import annotations

from datetime import timedelta

import pytest

from payorch.app.installments import FirstChargeRefunded
from payorch.app.plan_builder import PlanRejected
from payorch.domain.merchant_config import InstallmentPolicy as ConfigPolicy
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.payment import MethodType, PaymentStatus
from tests.integration.installment_helpers import (
    create_plan,
    first_charge_only,
)

DAY = timedelta(days=1)


async def plans(container) -> list:
    app = container.installments
    return list(await app.plans.list("m_1", status=None, page_size=10, after=None))


async def test_a_retry_makes_the_plan_from_the_first_charge_its_process_took(container):
    first = await first_charge_only(container)
    assert await plans(container) == []

    created = await create_plan(container)

    assert created.plan is not None and created.replayed is False
    assert created.plan.installments[0].payment_id == first
    assert container.simulated["simulated"].ledger.charges_total == 1


@pytest.mark.parametrize(
    ("refund_minor", "status"),
    [
        pytest.param(0, PaymentStatus.REFUNDED, id="fully"),
        pytest.param(1_000, PaymentStatus.PARTIALLY_REFUNDED, id="partly"),
    ],
)
async def test_a_retry_makes_no_plan_on_a_first_charge_refunded_meanwhile(
    container, refund_minor, status
):
    first = await first_charge_only(container)
    refunded = await container.payments.refund(
        first, "m_1", amount_minor=refund_minor, request_id="rf-1"
    )
    assert refunded.status is status

    with pytest.raises(FirstChargeRefunded) as err:
        await create_plan(container)

    assert err.value.payment_id == first
    assert "refunded" in str(err.value)
    assert await plans(container) == []
    assert container.simulated["simulated"].ledger.charges_total == 1, "never charged again"
    with pytest.raises(FirstChargeRefunded):
        await create_plan(container)  # and so on every retry: the refund stays
    assert await plans(container) == []


async def test_a_new_request_id_after_a_refunded_first_charge_makes_a_new_plan(container):
    first = await first_charge_only(container)
    await container.payments.refund(first, "m_1", amount_minor=0, request_id="rf-1")

    created = await create_plan(container, "plan-2")

    assert created.plan is not None and created.plan.installments[0].payment_id != first
    assert [p.id for p in await plans(container)] == [created.plan.id]


@pytest.mark.parametrize(
    "policy_now",
    [
        pytest.param({"count": 4}, id="count changed"),
        pytest.param({"min_total_minor": 50_000}, id="total now too small"),
    ],
)
async def test_a_retry_makes_the_plan_under_the_policy_its_first_charge_was_taken_under(
    container, policy_now
):
    first = await first_charge_only(container)
    await container.configs.upsert(
        MerchantConfig("m_1", installment_policy=ConfigPolicy(**policy_now))
    )

    created = await create_plan(container)

    assert created.plan is not None
    assert created.plan.installments[0].payment_id == first
    assert [i.amount_minor for i in created.plan.installments] == [3333, 3333, 3334]
    assert container.simulated["simulated"].ledger.charges_total == 1, "never charged again"


async def test_a_new_plan_after_the_config_changed_follows_the_config(container):
    await create_plan(container)
    await container.configs.upsert(MerchantConfig("m_1", installment_policy=ConfigPolicy(count=4)))

    created = await create_plan(container, "plan-2")

    assert created.plan is not None
    assert [i.amount_minor for i in created.plan.installments] == [2500] * 4


async def test_a_retry_of_a_stored_plan_reports_its_first_charge_as_it_is_now(container):
    made = await create_plan(container)
    assert made.plan is not None and made.first_payment_status is PaymentStatus.SUCCEEDED
    await container.payments.refund(made.first_payment_id, "m_1", amount_minor=0, request_id="r")

    again = await create_plan(container)

    assert again.replayed and again.plan is not None and again.plan.id == made.plan.id
    assert again.first_payment_status is PaymentStatus.REFUNDED


async def test_a_plan_whose_last_installment_the_cards_maximum_refuses_is_not_made(container):
    # 100.00 in 3: 33.33 + 33.33 + 33.34. The first part fits under the card's maximum;
    # the last, which carries the remainder, never could: the plan would breach.
    await container.configs.upsert(
        MerchantConfig("m_1", methods=(MethodRule(MethodType.CARD, max_amount_minor=3333),))
    )

    with pytest.raises(PlanRejected) as err:
        await create_plan(container)

    assert err.value.sequence == 3
    assert container.simulated["simulated"].ledger.charges_total == 0, "nothing charged"
    assert await plans(container) == []
    assert (await container.payments.list(None, page_size=10, after=None)) == []


async def test_a_late_retry_schedules_the_plan_from_its_first_charge_not_from_the_retry(
    container, clock
):
    charged_at = clock.now()
    first = await first_charge_only(container)
    clock.advance(10 * DAY.total_seconds())  # the client retries ten days later

    plan = (await create_plan(container)).plan

    assert plan is not None and plan.installments[0].payment_id == first
    assert [i.due_at for i in plan.installments] == [
        charged_at,
        charged_at + 30 * DAY,
        charged_at + 60 * DAY,
    ]
    assert plan.installments[0].paid_at == charged_at
