"""Split payments followed through: a plan paused on any step, a webhook that settles the
paused step, captures and voids that fail and are owed, refunds retried part by part."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from payorch.app.payments import (
    DeadlineTooShort,
    IdempotencyConflict,
    InvalidState,
    ProcessorEvent,
    ProcessorEvents,
)
from payorch.app.plan_builder import PlanRejected
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.payment import MethodType, Owed, Payment, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.unit.test_split_execution import ACTION, DECLINE, OK, World, assert_captured_whole


class Outage:
    """Makes one of the simulated processor's calls answer 500 for chosen intents."""

    def __init__(self, w: World, operation: str) -> None:
        self.down: set[str] = set()
        self.everywhere = False
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        real: Callable[..., object] = getattr(w.sim, operation)

        async def call(processor_payment_id: str, *args: object, **kwargs: object) -> object:
            self.calls.append((processor_payment_id, args))
            if self.everywhere or processor_payment_id in self.down:
                return ProcessorResponse(
                    ResponseKind.ERROR,
                    processor_payment_id=processor_payment_id,
                    http_status=500,
                    error_type="api_error",
                    message="the processor had a problem",
                )
            return await real(processor_payment_id, *args, **kwargs)  # type: ignore[misc]

        setattr(w.sim, operation, call)


def names(w: World) -> list[str]:
    return [e.name for e in w.uow.events]


def charged(w: World, payment_id: str, index: int) -> ProcessorEvent:
    stored = w.uow.store[payment_id]
    pid = stored.steps[index].processor_payment_id
    return ProcessorEvent(f"evt_{payment_id}_{index}", "stripe", payment_id, index, pid, True)


# -- a plan paused for the customer on any step --------------------------------


async def test_a_split_paused_for_the_customer_on_its_first_step_asks_for_action_and_confirm_finishes_it():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    assert p.status is PaymentStatus.REQUIRES_ACTION
    assert [s.status for s in p.steps] == [StepStatus.REQUIRES_ACTION, StepStatus.PENDING]
    assert p.steps[0].client_secret

    w.clock.advance(600)  # a customer slower than the reconciler's stale PROCESSING cut-off
    assert await w.service.reconcile_due() == 0

    w.sim.complete_action(p.steps[0].processor_payment_id)
    done = await w.service.confirm(p.id, "m_1")
    assert_captured_whole(w, done)


async def test_a_webhook_for_the_first_step_of_a_paused_split_runs_the_rest_of_the_plan():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)

    verdict = await ProcessorEvents(w.uow, w.service, w.clock).apply(charged(w, p.id, 0))

    assert verdict == "applied"
    after = await w.service.confirm(p.id, "m_1")  # the client confirms afterwards: no change
    assert_captured_whole(w, after)
    assert names(w).count("PaymentCompleted") == 1


async def _paused_then_fallback_turned_off(w: World) -> Payment:
    """A split paused for 3-D Secure under version 1 (fallback on), whose next step will be
    declined; the merchant then saves version 2 with fallback off."""
    methods = tuple(
        MethodRule(m) for m in (MethodType.CARD, MethodType.APPLE_PAY, MethodType.GOOGLE_PAY)
    )
    v1 = await w.configs.upsert(MerchantConfig("m_1", methods=methods, fallback_on_failure=True))
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", DECLINE, None), ("google_pay", OK, None))
    assert p.status is PaymentStatus.REQUIRES_ACTION and p.config_version == v1.version == 1
    await w.configs.upsert(MerchantConfig("m_1", methods=methods), expected_version=1)
    w.sim.complete_action(p.steps[0].processor_payment_id)
    return p


async def test_a_split_paused_for_3ds_is_confirmed_under_the_config_version_it_recorded():
    w = World()
    p = await _paused_then_fallback_turned_off(w)

    done = await w.service.confirm(p.id, "m_1")

    # Version 1 moves the declined 7000 to Google Pay; version 2 would void everything.
    assert done.status is PaymentStatus.SUCCEEDED and done.config_version == 1
    assert [(s.method.value, s.status) for s in done.steps] == [
        ("card", StepStatus.CAPTURED),
        ("apple_pay", StepStatus.FAILED),
        ("google_pay", StepStatus.CAPTURED),
    ]
    assert w.held() == 10000


async def test_a_webhook_finishes_a_split_paused_for_3ds_under_the_config_version_it_recorded():
    w = World()
    p = await _paused_then_fallback_turned_off(w)

    await ProcessorEvents(w.uow, w.service, w.clock).apply(charged(w, p.id, 0))

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.SUCCEEDED
    assert [s.method.value for s in stored.steps] == ["card", "apple_pay", "google_pay"]
    assert w.held() == 10000


async def test_a_webhook_for_the_last_step_of_a_paused_split_captures_every_step():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    w.sim.complete_action(p.steps[1].processor_payment_id)

    await ProcessorEvents(w.uow, w.service, w.clock).apply(charged(w, p.id, 1))

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.SUCCEEDED
    assert [i.amount_captured for i in w.sim.ledger.intents.values()] == [6000, 4000]


# -- a capture that fails is owed ----------------------------------------------


async def test_a_failed_capture_keeps_the_payment_authorized_says_why_and_the_reconciler_captures_it():
    w = World()
    outage = Outage(w, "capture")
    outage.everywhere = True
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))

    assert p.status is PaymentStatus.AUTHORIZED and p.owed is Owed.CAPTURE
    assert p.final_error_message == "10000 still authorized: the capture failed and is retried"
    assert p.final_error.value == "processor_error"
    assert p.next_reconcile_at == w.clock.now() + timedelta(minutes=1)

    w.clock.advance(61)
    assert await w.service.reconcile_due() == 0  # still failing: backs off
    again = await w.service.get(p.id, "m_1")
    assert again.owed is Owed.CAPTURE and again.reconcile_attempts == 1

    outage.everywhere = False
    w.clock.advance(5 * 60 + 1)
    assert await w.service.reconcile_due() == 1
    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.SUCCEEDED and done.owed is Owed.NOTHING
    assert (done.final_error_message, done.next_reconcile_at) == ("", None)
    assert w.held() == 10000
    assert names(w).count("PaymentCompleted") == 1
    assert names(w).count("PaymentCaptured") == 1


async def test_a_requested_capture_that_fails_is_retried_by_the_reconciler_too():
    w = World()
    p = await w.pay(("card", OK, None), total=2500, authorize_only=True)
    outage = Outage(w, "capture")
    outage.down = {p.steps[0].processor_payment_id}
    tried = await w.service.capture(p.id, "m_1")
    assert tried.status is PaymentStatus.AUTHORIZED and tried.owed is Owed.CAPTURE

    outage.down.clear()
    w.clock.advance(61)
    await w.service.reconcile_due()
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    assert names(w).count("PaymentCompleted") == 1


async def test_cancelling_a_payment_that_owes_a_capture_voids_it_and_never_captures():
    w = World()
    outage = Outage(w, "capture")
    outage.everywhere = True
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    voids = Outage(w, "cancel")
    voids.down = {p.steps[0].processor_payment_id}

    cancelling = await w.service.cancel(p.id, "m_1", "order withdrawn")
    assert cancelling.owed is Owed.VOID
    assert [s.status for s in cancelling.steps] == [StepStatus.AUTHORIZED, StepStatus.VOIDED]

    outage.everywhere = False
    voids.down.clear()
    w.clock.advance(61)
    await w.service.reconcile_due()
    done = await w.service.get(p.id, "m_1")
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.VOIDED]
    assert w.held() == 0 and not outage.calls[2:]  # no capture after the cancel


# -- a void that fails is owed -------------------------------------------------


async def test_a_failed_void_fails_the_payment_says_what_is_held_and_the_reconciler_voids_it():
    w = World()
    voids = Outage(w, "cancel")
    voids.everywhere = True
    p = await w.pay(("apple_pay", OK, 6000), ("card", DECLINE, None))

    assert p.status is PaymentStatus.FAILED and p.owed is Owed.VOID
    assert p.final_error.value == "card_declined"
    assert p.final_error_message == (
        "step 1 failed: card_declined; 6000 still authorized: the void failed and is retried"
    )
    assert w.held() == 6000
    assert names(w) == ["PaymentProcessing", "StepSucceeded", "StepFailed", "PaymentFailed"]

    voids.everywhere = False
    w.clock.advance(61)
    assert await w.service.reconcile_due() == 1
    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.FAILED and done.owed is Owed.NOTHING
    assert done.final_error_message == "step 1 failed: card_declined"
    assert done.next_reconcile_at is None and w.held() == 0
    assert names(w)[-1] == "StepVoided"


async def test_capture_payment_refuses_a_payment_that_owes_a_void():
    w = World()
    voids = Outage(w, "cancel")
    voids.everywhere = True
    p = await w.pay(("apple_pay", OK, 6000), ("card", DECLINE, None))
    with pytest.raises(InvalidState, match="being released"):
        await w.service.capture(p.id, "m_1")


# -- partial authorizations ----------------------------------------------------


async def test_a_partial_authorization_can_be_captured():
    w = World(allow_partial=True)
    p = await w.pay(("apple_pay", OK, 6000), ("card", DECLINE, None), authorize_only=True)
    assert p.status is PaymentStatus.PARTIALLY_SUCCEEDED

    captured = await w.service.capture(p.id, "m_1")
    assert [s.status for s in captured.steps] == [StepStatus.CAPTURED, StepStatus.FAILED]
    assert captured.status is PaymentStatus.PARTIALLY_SUCCEEDED and captured.captured_minor == 6000
    again = await w.service.capture(p.id, "m_1")
    assert again.captured_minor == 6000


async def test_cancelling_a_failed_payment_that_holds_nothing_changes_nothing():
    w = World()
    p = await w.pay(("card", DECLINE, None))
    after = await w.service.cancel(p.id, "m_1", "no longer wanted")
    assert after.status is PaymentStatus.FAILED
    assert "PaymentCancelled" not in names(w)


async def test_an_authorized_payment_captured_later_completes_once():
    w = World()
    p = await w.pay(("card", OK, None), total=2500, authorize_only=True)
    await w.service.capture(p.id, "m_1")
    assert names(w) == [
        "PaymentProcessing",
        "StepSucceeded",
        "PaymentCompleted",
        "PaymentCaptured",
    ]


# -- refunds retried under their request_id ------------------------------------


async def test_a_refund_retried_after_it_went_through_replays_without_calling_the_processor():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    refunds = Outage(w, "refund")
    first = await w.service.refund(p.id, "m_1", amount_minor=10000, request_id="rf1")
    again = await w.service.refund(p.id, "m_1", amount_minor=10000, request_id="rf1")

    assert first.status is PaymentStatus.REFUNDED and again.status is PaymentStatus.REFUNDED
    assert len(refunds.calls) == 2  # one per step, none on the retry
    assert w.held() == 0


async def test_a_refund_retried_after_one_part_failed_repeats_that_part_with_its_own_amount_and_key():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    refunds = Outage(w, "refund")
    refunds.down = {p.steps[0].processor_payment_id}

    first = await w.service.refund(p.id, "m_1", amount_minor=7000, request_id="rf1")
    assert first.status is PaymentStatus.PARTIALLY_REFUNDED
    assert [s.refunded_minor for s in first.steps] == [0, 4000]
    assert first.final_error_message == (
        "3000 of refund 'rf1' could not be refunded; retry it with the same request_id"
    )

    refunds.down.clear()
    retried = await w.service.refund(p.id, "m_1", amount_minor=7000, request_id="rf1")

    assert [s.refunded_minor for s in retried.steps] == [3000, 4000]
    assert retried.final_error_message == ""
    assert w.held() == 3000
    card, apple_pay = p.steps[1].processor_payment_id, p.steps[0].processor_payment_id
    assert [(pid, args[0]) for pid, args in refunds.calls] == [
        (card, 4000),
        (apple_pay, 3000),
        (apple_pay, 3000),
    ]
    keys = [a.idempotency_key for a in retried.steps[0].attempts if a.operation == "refund"]
    assert len(keys) == 2 and keys[0] == keys[1]


async def test_a_refund_request_id_used_again_for_another_amount_is_a_conflict():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    await w.service.refund(p.id, "m_1", amount_minor=1000, request_id="rf1")
    with pytest.raises(IdempotencyConflict):
        await w.service.refund(p.id, "m_1", amount_minor=2000, request_id="rf1")


# -- a fallback step is stored before it is charged -----------------------------


async def test_a_server_dying_while_a_fallback_method_is_charged_leaves_the_charge_for_the_reconciler():
    w = World(fallback_on_failure=True)
    saves: list[list[StepStatus]] = []
    update = w.uow.update_payment

    async def dies_on_the_final_save(payment: Payment) -> None:
        saves.append([s.status for s in payment.steps])
        if any(s.status is StepStatus.CAPTURED for s in payment.steps):
            raise RuntimeError("the server died")
        await update(payment)

    w.uow.update_payment = dies_on_the_final_save  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await w.pay(("card", DECLINE, None), ("google_pay", OK, None), total=5000)
    assert saves[0] == [StepStatus.FAILED, StepStatus.PENDING]  # stored before its charge
    assert w.sim.ledger.charges_total == 1

    w.uow.update_payment = update  # type: ignore[method-assign]
    w.clock.advance(301)
    await w.service.reconcile_due()
    (stored,) = w.uow.store.values()
    assert stored.status is PaymentStatus.SUCCEEDED
    assert [(s.method.value, s.status) for s in stored.steps] == [
        ("card", StepStatus.FAILED),
        ("google_pay", StepStatus.CAPTURED),
    ]
    assert w.held() == 5000


# -- a capture or void whose answer was an error, though it went through ----------


def answering_500_after_doing_it(w: World, operation: str) -> None:
    real = getattr(w.sim, operation)

    async def call(processor_payment_id: str, *args: object, **kwargs: object) -> ProcessorResponse:
        await real(processor_payment_id, *args, **kwargs)
        return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")

    setattr(w.sim, operation, call)


async def test_a_capture_that_went_through_behind_an_error_is_found_by_a_lookup_not_owed():
    w = World()
    answering_500_after_doing_it(w, "capture")
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))

    assert p.status is PaymentStatus.SUCCEEDED and p.owed is Owed.NOTHING
    assert [s.captured_minor for s in p.steps] == [6000, 4000]
    last = p.steps[0].attempts[-1]
    assert (last.operation, last.retry_decision) == ("lookup", "the capture went through")


async def test_a_void_that_went_through_behind_an_error_is_found_by_a_lookup_not_owed():
    w = World()
    answering_500_after_doing_it(w, "cancel")
    p = await w.pay(("apple_pay", OK, 6000), ("card", DECLINE, None))

    assert p.status is PaymentStatus.FAILED and p.owed is Owed.NOTHING
    assert p.steps[0].status is StepStatus.VOIDED and w.held() == 0
    assert p.final_error_message == "step 1 failed: card_declined"


async def test_refund_parts_whose_errors_hid_them_are_found_not_made_again_once_their_keys_expired():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    answering_500_after_doing_it(w, "refund")
    first = await w.service.refund(p.id, "m_1", amount_minor=7000, request_id="rf1")
    assert [s.refunded_minor for s in first.steps] == [0, 0]
    assert w.held() == 3000  # the processor gave the 7000 back behind its 500s

    w.sim.ledger.stored.clear()  # a day later: the processor has forgotten the keys
    retried = await w.service.refund(p.id, "m_1", amount_minor=7000, request_id="rf1")

    assert [s.refunded_minor for s in retried.steps] == [3000, 4000]
    assert retried.status is PaymentStatus.PARTIALLY_REFUNDED
    assert retried.final_error_message == ""
    assert w.held() == 3000
    for step in retried.steps:
        assert [a.operation for a in step.attempts][-2:] == ["refund", "lookup"]


async def test_confirm_retries_the_steps_after_the_paused_one_only_inside_the_callers_deadline():
    async def attempts_on_the_last_step(deadline_s: float | None) -> int:
        w = World()
        p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
        w.sim.complete_action(p.steps[0].processor_payment_id)
        w.sim.inject("rate_limit", "rate_limit", "rate_limit", "rate_limit")
        done = await w.service.confirm(p.id, "m_1", deadline_s=deadline_s)
        return sum(a.operation == "authorize" for a in done.steps[1].attempts)

    assert await attempts_on_the_last_step(None) > 1
    # Time for one call (MIN_CALL_MS), not for a retry's delay and a second call.
    assert await attempts_on_the_last_step(0.3) == 1


async def test_confirm_with_no_time_to_charge_the_steps_after_the_paused_one_changes_nothing():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)

    with pytest.raises(DeadlineTooShort):
        await w.service.confirm(p.id, "m_1", deadline_s=0.05)

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.REQUIRES_ACTION and stored.version == p.version
    done = await w.service.confirm(p.id, "m_1", deadline_s=5.0)
    assert done.status is PaymentStatus.SUCCEEDED


async def test_a_refund_that_failed_whole_says_so_on_the_payment_it_left_as_it_was():
    w = World()
    p = await w.pay(("card", OK, None), total=2500)
    refunds = Outage(w, "refund")
    refunds.everywhere = True

    tried = await w.service.refund(p.id, "m_1", amount_minor=1000, request_id="rf1")

    assert tried.status is PaymentStatus.SUCCEEDED
    assert tried.final_error_message == (
        "1000 of refund 'rf1' could not be refunded; retry it with the same request_id"
    )
    assert (await w.service.get(p.id, "m_1")).final_error_message == tried.final_error_message


# -- a split the customer left paused is given up --------------------------------

HOUR = 3600


def paused(w: World, p: Payment) -> str:
    return next(s.processor_payment_id for s in p.steps if s.status is StepStatus.REQUIRES_ACTION)


async def test_a_split_left_paused_for_an_hour_releases_what_it_holds_and_is_cancelled():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    assert w.held() == 6000  # the first step is authorized while the customer is asked

    w.clock.advance(HOUR - 60)
    assert await w.service.reconcile_due() == 0  # not yet
    w.clock.advance(60)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.VOIDED]
    assert w.held() == 0
    assert w.sim.ledger.by_id[paused(w, p)].status == "canceled"  # cannot be completed later
    assert names(w)[-1] == "PaymentCancelled"
    assert w.uow.events[-1].reason.startswith("abandoned: not completed within 60 minutes")
    assert done.next_reconcile_at is None
    assert await w.service.reconcile_due() == 0


async def test_a_second_step_asking_the_customer_gets_its_own_hour():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", ACTION, None))
    w.clock.advance(50 * 60)  # the customer takes 50 minutes over the first challenge
    w.sim.complete_action(paused(w, p))
    again = await w.service.confirm(p.id, "m_1")
    assert [s.status for s in again.steps] == [StepStatus.AUTHORIZED, StepStatus.REQUIRES_ACTION]
    assert again.action_expires_at == w.clock.now() + timedelta(hours=1)

    w.clock.advance(HOUR - 60)
    assert await w.service.reconcile_due() == 0  # still inside the second step's hour
    w.sim.complete_action(paused(w, again))
    done = await w.service.confirm(p.id, "m_1")
    assert done.status is PaymentStatus.SUCCEEDED and w.held() == 10000


async def test_a_split_paused_on_its_first_step_runs_no_step_after_the_hour():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.SKIPPED]
    assert done.status is PaymentStatus.CANCELLED
    assert len(w.sim.ledger.intents) == 1  # the second method was never charged
    assert (await w.service.confirm(done.id, "m_1")).status is PaymentStatus.CANCELLED


async def test_a_customer_who_acted_on_the_last_step_with_no_word_to_us_gets_the_payment_captured():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    w.sim.complete_action(paused(w, p))  # no ConfirmPayment, the webhook lost
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert_captured_whole(w, done)


async def test_a_customer_who_acted_on_a_middle_step_too_late_has_every_hold_released():
    w = World()
    p = await w.pay(("apple_pay", OK, 3000), ("card", ACTION, 3000), ("card", OK, None))
    w.sim.complete_action(paused(w, p))
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert [s.status for s in done.steps] == [
        StepStatus.VOIDED,
        StepStatus.VOIDED,
        StepStatus.SKIPPED,
    ]
    assert w.held() == 0
    assert len(w.sim.ledger.intents) == 2


async def test_an_abandoned_split_with_allow_partial_keeps_and_captures_what_it_holds():
    w = World(allow_partial=True)
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.PARTIALLY_SUCCEEDED
    assert [s.status for s in done.steps] == [StepStatus.CAPTURED, StepStatus.VOIDED]
    assert (done.captured_minor, done.remaining_minor) == (6000, 4000)


async def test_a_paused_step_that_cannot_be_closed_is_tried_again_on_the_back_off():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    voids = Outage(w, "cancel")
    voids.everywhere = True
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 0

    stuck = await w.service.get(p.id, "m_1")
    assert stuck.status is PaymentStatus.REQUIRES_ACTION
    assert w.held() == 6000  # nothing released while the paused step may still complete
    voids.everywhere = False
    assert await w.service.reconcile_due() == 0  # not before the back-off
    w.clock.advance(300)
    assert await w.service.reconcile_due() == 1
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.CANCELLED
    assert w.held() == 0


async def test_a_single_step_left_waiting_for_the_customer_for_an_hour_is_cancelled_at_the_processor():
    w = World()
    p = await w.pay(("card", ACTION, None))
    assert p.action_expires_at == p.updated_at + timedelta(hours=1)

    w.clock.advance(HOUR - 60)
    assert await w.service.reconcile_due() == 0  # not yet
    w.clock.advance(60)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED]
    assert w.sim.ledger.by_id[paused(w, p)].status == "canceled"  # cannot be completed later
    assert names(w)[-1] == "PaymentCancelled"
    assert w.uow.events[-1].reason.startswith("abandoned: not completed within 60 minutes")
    assert done.next_reconcile_at is None and done.action_expires_at is None
    assert await w.service.reconcile_due() == 0
    assert (await w.service.confirm(p.id, "m_1")).status is PaymentStatus.CANCELLED
    assert w.held() == 0


async def test_a_single_step_the_customer_completed_with_no_word_to_us_succeeds_at_the_hour():
    w = World()
    p = await w.pay(("card", ACTION, None))
    w.sim.complete_action(paused(w, p))  # no ConfirmPayment, the webhook lost
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.SUCCEEDED and w.held() == 10000


async def test_an_off_session_single_step_waiting_for_the_customer_is_not_given_up():
    # The customer is not at a checkout: the merchant brings them back (an installment's
    # charge, docs/installments.md), which takes longer than an hour.
    w = World()
    p = await w.pay(("card", ACTION, None), off_session=True)
    assert p.status is PaymentStatus.REQUIRES_ACTION and p.action_expires_at is None
    w.clock.advance(30 * 24 * HOUR)
    assert await w.service.reconcile_due() == 0
    w.sim.complete_action(paused(w, p))
    assert (await w.service.confirm(p.id, "m_1")).status is PaymentStatus.SUCCEEDED


async def test_a_hint_that_the_customer_failed_authentication_goes_on_with_the_plan_at_once():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    pid = paused(w, p)
    w.sim.ledger.by_id[pid].status = "requires_payment_method"  # 3-D Secure failed
    hint = ProcessorEvent("evt_failed", "stripe", p.id, 1, pid, False)

    assert await ProcessorEvents(w.uow, w.service, w.clock).apply(hint) == "looked up"

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.FAILED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.FAILED]
    assert w.held() == 0


async def test_a_step_whose_authentication_failed_is_closed_before_it_is_recorded_failed():
    w = World()
    p = await w.pay(("card", ACTION, None))
    pid = paused(w, p)
    w.sim.ledger.by_id[pid].status = "requires_payment_method"  # 3-D Secure failed

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.FAILED
    # The client holds the intent's secret and may confirm it again (another card, say):
    # a payment recorded failed must not be able to charge the customer afterwards.
    assert w.sim.ledger.by_id[pid].status == "canceled"


async def test_a_step_whose_authentication_failed_keeps_waiting_while_it_cannot_be_closed():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    pid = paused(w, p)
    w.sim.ledger.by_id[pid].status = "requires_payment_method"  # 3-D Secure failed
    voids = Outage(w, "cancel")
    voids.down.add(pid)

    waiting = await w.service.confirm(p.id, "m_1")
    assert waiting.status is PaymentStatus.REQUIRES_ACTION and w.held() == 6000

    voids.down.clear()
    done = await w.service.confirm(p.id, "m_1")
    assert done.status is PaymentStatus.FAILED and w.held() == 0
    assert w.sim.ledger.by_id[pid].status == "canceled"


async def test_a_hint_while_the_customer_is_still_asked_keeps_the_hour():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    expires = (await w.service.get(p.id, "m_1")).next_reconcile_at
    w.clock.advance(600)
    hint = ProcessorEvent("evt_action", "stripe", p.id, 1, paused(w, p), False)

    verdict = await ProcessorEvents(w.uow, w.service, w.clock).apply(hint)

    assert verdict == "looked up, still open"
    still = await w.service.get(p.id, "m_1")
    assert still.status is PaymentStatus.REQUIRES_ACTION
    assert still.next_reconcile_at == expires
    w.clock.advance(HOUR - 600 - 1)
    assert await w.service.reconcile_due() == 0


# -- a retry after the merchant changed its config -------------------------------


def _same_request(currency: str = "USD"):
    return parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="r-config-changed",
            amount_minor=10000,
            currency=currency,
            methods=[RawMethodInput("apple_pay", OK, 6000), RawMethodInput("card", OK, None)],
        )
    )


async def test_a_retry_of_a_payment_made_before_the_config_changed_replays_it():
    w = World()
    first = (await w.service.create(_same_request(), deadline_s=None)).payment
    assert first.status is PaymentStatus.SUCCEEDED
    await w.configs.upsert(MerchantConfig("m_1", allowed_currencies=frozenset({"EUR"})))

    again = await w.service.create(_same_request(), deadline_s=None)

    assert again.replayed and again.payment.id == first.id
    assert w.held() == 10000  # charged once


async def test_a_request_id_reused_for_another_payment_the_config_refuses_is_a_conflict():
    w = World()
    await w.service.create(_same_request(), deadline_s=None)
    await w.configs.upsert(MerchantConfig("m_1", allowed_currencies=frozenset({"USD"})))
    with pytest.raises(IdempotencyConflict):
        await w.service.create(_same_request("EUR"), deadline_s=None)


async def test_a_new_request_the_config_refuses_is_still_refused():
    w = World()
    await w.configs.upsert(MerchantConfig("m_1", allowed_currencies=frozenset({"EUR"})))
    with pytest.raises(PlanRejected):
        await w.service.create(_same_request(), deadline_s=None)
