"""A split interrupted by a server dying mid-plan, finished by the reconciler: a step
the processor could not say anything about is looked up again, never given up."""

from __future__ import annotations

import pytest

from payorch.app.ports import ChargeRequest
from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from payorch.domain.retry import RetryPolicy
from tests.fakes.dying import ServerDied
from tests.unit.test_split_execution import ACTION, OK, World, assert_captured_whole


def dies_after_charging_step(w: World, index: int) -> None:
    """The server dies once the processor charged step `index`, before anything is saved."""
    real = w.sim.authorize

    async def authorize(request: ChargeRequest) -> ProcessorResponse:
        answer = await real(request)
        if request.step_index == index:
            raise ServerDied("the server died")
        return answer

    w.sim.authorize = authorize  # type: ignore[method-assign]


def lookups_unanswered_for_step(w: World, index: int) -> list[bool]:
    """Lookups of step `index` answer 500 while the returned switch is on."""
    down = [True]
    real = w.sim.lookup

    async def lookup(request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        if down[0] and request.step_index == index:
            return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")
        return await real(request, processor_payment_id)

    w.sim.lookup = lookup  # type: ignore[method-assign]
    return down


async def test_a_step_whose_lookup_went_unanswered_is_not_skipped_while_the_processor_holds_it():
    w = World()
    dies_after_charging_step(w, 1)
    with pytest.raises(ServerDied):
        await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    assert w.held() == 10000  # both authorized at the processor, nothing stored
    down = lookups_unanswered_for_step(w, 1)

    w.clock.advance(301)
    await w.service.reconcile_due()
    (stored,) = w.uow.store.values()
    # Step 1 may hold money: the plan is not finished around it.
    assert stored.steps[1].status is StepStatus.PENDING
    assert stored.status is PaymentStatus.PROCESSING

    down[0] = False
    w.clock.advance(301)
    await w.service.reconcile_due()
    (stored,) = w.uow.store.values()
    assert_captured_whole(w, stored)


async def test_a_step_after_a_lost_answer_was_never_charged_and_is_skipped_without_an_answer():
    w = World(retry_policy=RetryPolicy(max_retries=0))
    w.sim.inject("lost_response")  # step 0 charged, its answer lost
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    assert [s.status for s in p.steps] == [StepStatus.UNKNOWN, StepStatus.PENDING]
    lookups_unanswered_for_step(w, 1)

    w.clock.advance(61)
    await w.service.reconcile_due()

    (stored,) = w.uow.store.values()
    assert [s.status for s in stored.steps] == [StepStatus.VOIDED, StepStatus.SKIPPED]
    assert stored.status is PaymentStatus.CANCELLED and w.held() == 0


async def test_a_step_after_a_lost_answer_is_skipped_not_looked_up_when_the_processor_answers():
    # The plan stopped at the lost answer: the step after it was never sent. Looked up
    # anyway, it was recorded failed ("unknown_outcome") and the payment FAILED, where
    # the same payment read CANCELLED when that pointless lookup went unanswered; at
    # Stripe the lookup even made a PaymentIntent for it (replaying a create never made).
    w = World(retry_policy=RetryPolicy(max_retries=0))
    w.sim.inject("lost_response")  # step 0 charged, its answer lost
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    assert [s.status for s in p.steps] == [StepStatus.UNKNOWN, StepStatus.PENDING]

    w.clock.advance(61)
    await w.service.reconcile_due()

    (stored,) = w.uow.store.values()
    assert [s.status for s in stored.steps] == [StepStatus.VOIDED, StepStatus.SKIPPED]
    assert stored.steps[1].attempts == []
    assert stored.status is PaymentStatus.CANCELLED and w.held() == 0
    assert "StepFailed" not in [e.name for e in w.uow.events]
    assert len(w.sim.ledger.intents) == 1


async def test_a_lost_answer_found_waiting_for_the_customer_pauses_the_plan_for_the_steps_after_it():
    w = World(retry_policy=RetryPolicy(max_retries=0))
    w.sim.inject("lost_response")  # step 0 asked for 3-D Secure; the answer was lost
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    assert [s.status for s in p.steps] == [StepStatus.UNKNOWN, StepStatus.PENDING]

    w.clock.advance(61)
    await w.service.reconcile_due()
    found = await w.service.get(p.id, "m_1")
    # Step 1 was never tried: it waits with the paused step, as in any paused plan.
    assert [s.status for s in found.steps] == [StepStatus.REQUIRES_ACTION, StepStatus.PENDING]
    assert found.status is PaymentStatus.REQUIRES_ACTION and found.steps[0].client_secret

    w.sim.complete_action(found.steps[0].processor_payment_id)
    done = await w.service.confirm(p.id, "m_1")
    assert_captured_whole(w, done)


async def test_a_confirm_that_died_charging_the_steps_after_the_paused_one_leaves_them_looked_up():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)
    # ConfirmPayment (its server stopped past the grace period, or killed) dies once the
    # step after the paused one is authorized, before anything is saved.
    dies_after_charging_step(w, 1)
    with pytest.raises(ServerDied):
        await w.service.confirm(p.id, "m_1")
    assert w.held() == 10000

    w.clock.advance(3600)  # past the stale PROCESSING cut-off, and the paused split's hour
    await w.service.reconcile_due()
    (stored,) = w.uow.store.values()
    # Step 1 holds money at the processor: it is looked up and captured, not skipped.
    assert_captured_whole(w, stored)
