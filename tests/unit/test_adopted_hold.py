"""A hold a lost try left, adopted by the call that won a cancel: what the payment says
of it, and what it announces, until the reconciler releases it."""

from __future__ import annotations

import copy

from payorch.app.payments import PaymentService
from payorch.domain.payment import Owed, Payment, PaymentStatus, StepStatus
from payorch.domain.results import ErrorCode
from tests.unit.test_split_execution import ACTION, OK, World
from tests.unit.test_split_follow_through import names


async def adopted_after_a_cancel(w: World) -> Payment:
    """A cancelled split whose step 1 a confirm that lost its save to the cancel had
    authorized at the processor (a real hold, made by another payment's charge)."""
    paused = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None), authorize_only=True)
    cancelled = await w.service.cancel(paused.id, "m_1", "abandoned")
    assert cancelled.status is PaymentStatus.CANCELLED
    assert cancelled.steps[1].status is StepStatus.SKIPPED
    hold = await w.pay(("apple_pay", OK, None), total=7000, authorize_only=True)
    lost = copy.deepcopy(cancelled)
    held = lost.steps[1]
    held.status, held.processor = StepStatus.AUTHORIZED, hold.steps[0].processor
    held.processor_payment_id = hold.steps[0].processor_payment_id
    w.uow.events.clear()

    assert PaymentService._adopt(lost, cancelled)
    cancelled.settle(w.clock.now())
    return cancelled


async def test_a_hold_adopted_after_a_cancel_says_its_void_is_owed_not_that_it_failed():
    w = World()
    adopted = await adopted_after_a_cancel(w)

    # No void was tried: none failed, and none is said to have.
    assert adopted.owed is Owed.VOID and adopted.status is PaymentStatus.FAILED
    assert adopted.final_error_message == (
        "7000 still authorized: the void is owed, not yet tried: the reconciler makes it"
    )
    assert adopted.final_error is ErrorCode.NONE


async def test_a_hold_adopted_after_a_cancel_is_released_and_never_announced_failed():
    w = World()
    adopted = await adopted_after_a_cancel(w)
    await w.uow.update_payment(adopted)
    held = w.held()

    assert adopted.next_reconcile_at is not None
    w.clock.advance((adopted.next_reconcile_at - w.clock.now()).total_seconds())
    await w.service.reconcile_due()

    released = await w.service.get(adopted.id, "m_1")
    assert released.status is PaymentStatus.CANCELLED and w.held() == held - 7000
    # The merchant cancelled it and was told so at the cancel: not failed, nor again.
    assert "PaymentFailed" not in names(w) and "PaymentCancelled" not in names(w)
