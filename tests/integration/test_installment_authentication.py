"""An off-session installment charge that waits for the customer, on SQLite and PostgreSQL:
its payment is cancelled at the processor before a retry charges again, and one the
customer completed first is recorded instead of a second charge; a plan cancelled while
such a charge is in flight leaves no payment open."""

from __future__ import annotations

from datetime import timedelta

import pytest

from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.app.installments import InstallmentCharger, RecordCharge
from payorch.domain.installments import (
    InstallmentStatus,
    InvalidTransition,
    PlanStatus,
    charge_request_id,
)
from payorch.domain.merchant_config import InstallmentPolicy as ConfigPolicy
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.integration.helpers import event_payloads
from tests.integration.installment_helpers import (
    AUTHENTICATE,
    authenticating_plan_due,
    create_plan,
    failed_waiting_for_the_customer,
    intent_of,
    move_to,
    outbox,
    payments_of,
)


async def test_a_retry_cancels_the_payment_waiting_for_the_customer_so_it_can_never_be_completed(
    container, clock
):
    sim = container.simulated["simulated"]
    inst = await failed_waiting_for_the_customer(container, clock)
    waiting = inst.payment_id

    plan = await container.installments.plans.retry_now(inst.id, "m_1")

    assert (await container.payments.get(waiting, "m_1")).status is PaymentStatus.CANCELLED
    assert (await intent_of(container, waiting)).status == "canceled"
    # The customer follows the merchant's earlier link to authenticate: nothing is taken.
    sim.complete_action((await intent_of(container, waiting)).id)
    assert sim.ledger.charges_total == 1, "the checkout only"
    # The retry's own charge asked for the customer again (this card always does).
    again = plan.installment(inst.id)
    assert (again.status, again.attempts) == (InstallmentStatus.FAILED_FINAL, 2)
    assert (await intent_of(container, again.payment_id)).status == "requires_action"


async def test_a_payment_the_customer_completed_unannounced_is_recorded_by_the_retry_not_charged_again(
    container, clock
):
    sim = container.simulated["simulated"]
    inst = await failed_waiting_for_the_customer(container, clock)
    # Completed at the processor; no ConfirmPayment or webhook has told us yet.
    sim.complete_action((await intent_of(container, inst.payment_id)).id)

    plan = await container.installments.plans.retry_now(inst.id, "m_1")

    paid = plan.installment(inst.id)
    assert (paid.status, paid.payment_id) == (InstallmentStatus.PAID, inst.payment_id)
    assert plan.status is PlanStatus.ACTIVE
    assert await payments_of(container, inst.id) == [charge_request_id(inst.id, 1)]
    assert sim.ledger.charges_total == 2, "the checkout and the completed payment"
    stored = await container.payments.get(inst.payment_id, "m_1")
    assert stored.status is PaymentStatus.SUCCEEDED


async def test_a_cancelled_plan_cancels_the_payment_waiting_for_the_customer(container, clock):
    sim = container.simulated["simulated"]
    inst = await failed_waiting_for_the_customer(container, clock)

    plan = await container.installments.plans.cancel(inst.plan_id, "m_1", "order returned")

    assert plan.status is PlanStatus.CANCELLED
    assert (await intent_of(container, inst.payment_id)).status == "canceled"
    sim.complete_action((await intent_of(container, inst.payment_id)).id)
    assert sim.ledger.charges_total == 1, "the checkout only"


async def test_cancelling_a_plan_whose_last_installment_the_customer_completed_records_it_paid(
    container, clock
):
    await container.configs.upsert(MerchantConfig("m_1", installment_policy=ConfigPolicy(count=2)))
    sim = container.simulated["simulated"]
    last = await failed_waiting_for_the_customer(container, clock)  # the plan in breach
    sim.complete_action((await intent_of(container, last.payment_id)).id)

    with pytest.raises(InvalidTransition, match="completed"):
        await container.installments.plans.cancel(last.plan_id, "m_1", "order returned")

    plan = await container.installments.plans.get(last.plan_id, "m_1")
    assert plan.status is PlanStatus.COMPLETED, "paid in full, not left in breach"
    paid = plan.installment(last.id)
    assert (paid.status, paid.payment_id) == (InstallmentStatus.PAID, last.payment_id)
    assert (await outbox(container, plan.id))[-2:] == ["InstallmentPaid", "PlanCompleted"]
    assert sim.ledger.charges_total == 2, "the checkout and the completed payment"


async def test_the_failed_final_event_names_the_payment_the_customer_is_to_complete(
    container, clock
):
    inst = await failed_waiting_for_the_customer(container, clock)

    (final,) = await event_payloads(container, inst.plan_id, "InstallmentFailedFinal")

    assert (final["error_code"], final["payment_id"]) == (
        "authentication_required",
        inst.payment_id,
    )
    assert (await container.payments.get(final["payment_id"], "m_1")).status is (
        PaymentStatus.REQUIRES_ACTION
    )


def cancel_in_flight(container, monkeypatch) -> None:
    """The merchant cancels the plan while a charge is in flight: its payment was made
    and has come back, and it is not recorded yet."""
    pay = InstallmentCharger.pay

    async def pay_then_cancel(self, plan, installment_id, attempt):
        result = await pay(self, plan, installment_id, attempt)
        await container.installments.plans.cancel(plan.id, "m_1", "order returned")
        return result

    monkeypatch.setattr(InstallmentCharger, "pay", pay_then_cancel)


async def test_a_scheduled_charge_in_flight_at_the_cancel_leaves_no_payment_waiting(
    container, clock, monkeypatch
):
    sim = container.simulated["simulated"]
    plan = await authenticating_plan_due(container, clock)
    cancel_in_flight(container, monkeypatch)

    await container.installments.scheduler.run_once()

    plan = await container.installments.plans.get(plan.id, None)
    inst = plan.installments[1]
    assert plan.status is PlanStatus.CANCELLED
    assert (inst.status, inst.last_error_code) == (
        InstallmentStatus.CANCELLED,
        "authentication_required",
    )
    assert (await intent_of(container, inst.payment_id)).status == "canceled"
    # The customer follows the bank's prompt anyway: nothing is taken.
    sim.complete_action((await intent_of(container, inst.payment_id)).id)
    assert sim.ledger.charges_total == 1, "the checkout only"
    assert await outbox(container, plan.id) == [
        "PlanCreated",
        "InstallmentPaid",
        "PlanCancelled",
    ]


async def test_a_manual_retry_in_flight_at_the_cancel_leaves_no_payment_waiting(
    container, clock, monkeypatch
):
    sim = container.simulated["simulated"]
    inst = await failed_waiting_for_the_customer(container, clock)
    cancel_in_flight(container, monkeypatch)

    plan = await container.installments.plans.retry_now(inst.id, "m_1")

    retried = plan.installment(inst.id)
    assert plan.status is PlanStatus.CANCELLED
    assert (retried.status, retried.attempts) == (InstallmentStatus.CANCELLED, 2)
    for payment_id in (inst.payment_id, retried.payment_id):
        assert (await intent_of(container, payment_id)).status == "canceled"
        sim.complete_action((await intent_of(container, payment_id)).id)
    assert sim.ledger.charges_total == 1, "the checkout only"


async def test_a_charge_held_because_its_cancel_is_undecided_is_handed_back_as_stored(
    container, clock, monkeypatch
):
    """The scheduler records its charges together (record_many). One on a plan cancelled
    while it was in flight waits for the customer, and the processor does not say whether
    its cancel went through: the claim is held for a later look, which changes the row,
    so the plan handed back for the plan's next charge in the pass is the stored one."""
    app = container.installments
    plan = await authenticating_plan_due(container, clock)
    inst_id = plan.installments[1].id
    async with app.uow() as uow:
        (claim,) = await uow.plans.claim_due(
            now=clock.now(), worker="w", lease_until=clock.now() + timedelta(seconds=120), limit=1
        )
        await uow.commit()
    read = await app.plans.get(plan.id, None)
    result = await app.charger.pay(read, inst_id, claim.attempt)
    assert result.error_code == "authentication_required"
    await app.plans.cancel(plan.id, "m_1", "order returned")  # left to its worker
    cancelled = await app.plans.get(plan.id, None)

    async def undecided(self, processor_payment_id, idempotency_key):
        # Stripe's 500: whether the cancel went through is unknown.
        return ProcessorResponse(
            ResponseKind.ERROR,
            processor_payment_id=processor_payment_id,
            http_status=500,
            error_type="api_error",
            indeterminate=True,
        )

    monkeypatch.setattr(SimulatedProcessor, "cancel", undecided)
    (handed_back,) = await app.charger.record_many(
        [RecordCharge(cancelled, inst_id, claim.attempt, result)]
    )

    stored = await app.plans.get(plan.id, None)
    held, kept = handed_back.installment(inst_id), stored.installment(inst_id)
    assert (kept.status, kept.attempts) == (InstallmentStatus.PROCESSING, claim.attempt)
    assert kept.lease_until == clock.now() + timedelta(seconds=300), "held for a later look"
    assert (held.lease_until, held.version) == (kept.lease_until, kept.version)
    assert (await intent_of(container, result.payment_id)).status == "requires_action"


async def test_on_stripe_an_installment_the_bank_wants_authenticated_waits_for_the_customer(
    database_url, clock
):
    """Stripe declines the scheduled off-session charge (402 authentication_required)
    and leaves its PaymentIntent open: the installment fails for good as on the
    simulated processor, its payment waiting with that intent's client secret; a retry
    cancels that intent before charging again, so the customer can pay only once."""
    from tests.fakes.fake_stripe import FakeStripe
    from tests.integration.helpers import make_stripe_container

    async with FakeStripe() as fake:
        fake.register_customer("cus_buyer")
        c = await make_stripe_container(database_url, clock, fake)
        try:
            first = await create_plan(c, token=AUTHENTICATE, customer="cus_buyer")
            paused = await c.payments.get(first.first_payment_id, "m_1")
            fake.complete_action(paused.steps[0].processor_payment_id)  # at checkout
            await c.payments.confirm(paused.id, "m_1")
            plan = (await create_plan(c, token=AUTHENTICATE, customer="cus_buyer")).plan
            assert plan is not None
            move_to(clock, plan.installments[1].due_at)

            await c.installments.scheduler.run_once()

            inst = (await c.installments.plans.get(plan.id, None)).installments[1]
            waiting = await c.payments.get(inst.payment_id, "m_1")
            step = waiting.steps[0]
            pi = fake.payment_intent(step.processor_payment_id)
            (final,) = await event_payloads(c, plan.id, "InstallmentFailedFinal")

            retried = (await c.installments.plans.retry_now(inst.id, "m_1")).installment(inst.id)
            again = await c.payments.get(retried.payment_id, "m_1")
        finally:
            await c.close()
        await fake.wait_idle()

    assert (inst.status, inst.last_error_code) == (
        InstallmentStatus.FAILED_FINAL,
        "authentication_required",
    )
    assert waiting.status is PaymentStatus.REQUIRES_ACTION
    assert (step.next_action_type, step.client_secret) == ("use_stripe_sdk", pi["client_secret"])
    assert (final["error_code"], final["payment_id"]) == ("authentication_required", waiting.id)
    # RetryInstallment canceled the waiting intent, and its own charge waits in turn.
    assert pi["status"] == "canceled"
    assert (retried.status, retried.attempts) == (InstallmentStatus.FAILED_FINAL, 2)
    assert again.status is PaymentStatus.REQUIRES_ACTION
    assert fake.charges_total == 1, "the checkout only"
