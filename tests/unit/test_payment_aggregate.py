"""The Payment aggregate: step transitions, derived status and the events raised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from payorch.domain import payment as payment_module
from payorch.domain.classification import classify
from payorch.domain.events import (
    DomainEvent,
    PaymentCompleted,
    PaymentFailed,
    PaymentPartiallySucceeded,
    StepFailed,
    StepSucceeded,
    StepVoided,
)
from payorch.domain.money import Currency
from payorch.domain.payment import (
    OPEN,
    UNRESOLVED,
    Attempt,
    CaptureMode,
    InvalidTransition,
    MethodType,
    Owed,
    Payment,
    PaymentStatus,
    RawError,
    Step,
    StepStatus,
    reconcile_delay,
)
from payorch.domain.results import ErrorCode, ProcessorResponse, ResponseKind

E = TypeVar("E", bound=DomainEvent)

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=2)

DECLINED = classify(
    ProcessorResponse(
        ResponseKind.ERROR, http_status=402, error_type="card_error", decline_code="generic_decline"
    )
)


def payment(*amounts: int, capture: CaptureMode = CaptureMode.AUTOMATIC) -> Payment:
    amounts = amounts or (1999,)
    return Payment(
        id="pay_1",
        merchant_id="shop_1",
        request_id="order-1001",
        fingerprint="fp",
        currency=Currency.parse("USD"),
        amount_minor=sum(amounts),
        steps=[
            Step(index=i, method=MethodType.CARD, token=f"pm_{i}", amount_minor=a, processors=["a"])
            for i, a in enumerate(amounts)
        ],
        created_at=T0,
        updated_at=T0,
        capture_mode=capture,
    )


def raised(event: E, sequence: int) -> E:
    """An expected event as the aggregate raises it: numbered within the payment."""
    event.sequence = sequence
    return event


def event_names(p: Payment) -> list[str]:
    return [e.name for e in p.pending_events]


# -- one step -----------------------------------------------------------------


def test_single_step_success_succeeds_with_step_and_payment_events_in_sequence() -> None:
    p = payment(1999)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=120)
    p.settle(T1, orchestration_ms=130)

    assert p.status is PaymentStatus.SUCCEEDED
    assert p.success
    assert p.steps[0].status is StepStatus.CAPTURED
    assert p.steps[0].captured_minor == 1999
    assert p.updated_at == T1
    assert p.orchestration_ms == 130
    assert event_names(p) == ["StepSucceeded", "PaymentCompleted"]
    assert [e.sequence for e in p.pending_events] == [1, 2]
    assert p.pending_events == [
        raised(StepSucceeded(0, "stripe", 120, 1999), 1),
        raised(PaymentCompleted(1999, "order-1001"), 2),
    ]


def test_single_step_failure_fails_with_the_step_error_and_a_payment_failed_event() -> None:
    p = payment(1999)
    p.step_failed(p.steps[0], DECLINED, processor="stripe", latency_ms=90)
    p.settle(T1)

    assert p.status is PaymentStatus.FAILED
    assert not p.success
    assert p.final_error is ErrorCode.CARD_DECLINED
    assert "card_declined" in p.final_error_message
    assert event_names(p) == ["StepFailed", "PaymentFailed"]
    assert [e.sequence for e in p.pending_events] == [1, 2]
    failed_step, failed = p.pending_events
    assert isinstance(failed_step, StepFailed)
    assert failed_step.error_code is ErrorCode.CARD_DECLINED
    assert failed_step.retry_later is DECLINED.retry_later
    assert isinstance(failed, PaymentFailed)
    assert (failed.error_code, failed.request_id) == (ErrorCode.CARD_DECLINED, "order-1001")
    assert failed.message == p.final_error_message


def test_a_lost_answer_leaves_the_payment_unknown_without_a_final_event() -> None:
    p = payment(1999)
    p.step_unknown(p.steps[0], processor="stripe", error_code=ErrorCode.TIMEOUT)
    p.settle(T1)

    assert p.status is PaymentStatus.UNKNOWN
    assert p.final_error is ErrorCode.UNKNOWN_OUTCOME
    assert p.final_error_message
    assert p.pending_events == []


def _attempt(kind: ResponseKind, operation: str = "authorize") -> Attempt:
    c = classify(ProcessorResponse(kind))
    return Attempt(
        1, "stripe", "k", T0, T1, 5, c.outcome, c.error_code, RawError(), operation=operation
    )


def test_an_unknown_payment_says_whether_its_answer_was_lost_or_is_still_processing() -> None:
    p = payment(1999)
    p.steps[0].attempts.append(_attempt(ResponseKind.NO_RESPONSE))
    p.step_unknown(p.steps[0], processor="stripe", error_code=ErrorCode.TIMEOUT)
    p.settle(T1)
    assert p.final_error_message == "the processor's answer was lost; reconciling"
    due = p.next_reconcile_at

    # The reconciler's lookup: the processor says the charge is under way.
    p.steps[0].attempts.append(_attempt(ResponseKind.PENDING, "lookup"))
    p.settle(T1 + timedelta(seconds=1))

    assert p.status is PaymentStatus.UNKNOWN and p.final_error is ErrorCode.UNKNOWN_OUTCOME
    assert p.final_error_message == (
        "step 0: the processor is still processing the charge; reconciling"
    )
    assert p.next_reconcile_at == due  # its back-off is the reconciler's, as before


def test_an_unknown_payment_reconciled_as_charged_completes_and_clears_the_error() -> None:
    p = payment(1999)
    p.step_unknown(p.steps[0], processor="stripe", error_code=ErrorCode.TIMEOUT)
    p.settle(T1)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=0)
    p.settle(T1)

    assert p.status is PaymentStatus.SUCCEEDED
    assert p.final_error is ErrorCode.NONE
    assert p.final_error_message == ""
    assert event_names(p) == ["StepSucceeded", "PaymentCompleted"]


def test_an_unknown_payment_reconciled_as_declined_reports_the_decline_not_the_lost_answer() -> (
    None
):
    p = payment(1999)
    p.step_unknown(p.steps[0], processor="stripe", error_code=ErrorCode.TIMEOUT)
    p.settle(T1)
    p.step_failed(p.steps[0], DECLINED, processor="stripe", latency_ms=0)
    p.settle(T1)

    assert p.status is PaymentStatus.FAILED
    assert "reconciling" not in p.final_error_message
    assert "card_declined" in p.final_error_message


def test_settling_again_does_not_repeat_the_final_event() -> None:
    p = payment(1999)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.settle(T1)
    p.settle(T1)
    p.settle(T1 + timedelta(seconds=1))

    assert event_names(p) == ["StepSucceeded", "PaymentCompleted"]
    assert p.updated_at == T1 + timedelta(seconds=1)


def test_settling_a_failed_payment_again_does_not_repeat_payment_failed() -> None:
    p = payment(1999)
    p.step_failed(p.steps[0], DECLINED, processor="stripe", latency_ms=1)
    p.settle(T1)
    p.settle(T1)
    assert event_names(p).count("PaymentFailed") == 1


def test_settling_with_a_step_still_pending_keeps_the_payment_processing() -> None:
    p = payment(1000, 999)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.settle(T1)
    assert p.status is PaymentStatus.PROCESSING
    assert event_names(p) == ["StepSucceeded"]


@pytest.mark.parametrize("transition", ["succeeded", "failed"])
def test_a_settled_step_cannot_change_outcome_again(transition: str) -> None:
    p = payment(1999)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    with pytest.raises(InvalidTransition):
        if transition == "succeeded":
            p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
        else:
            p.step_failed(p.steps[0], DECLINED, processor="stripe", latency_ms=1)


# -- manual capture -----------------------------------------------------------


def test_manual_capture_success_authorizes_without_capturing() -> None:
    p = payment(1999, capture=CaptureMode.MANUAL)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.settle(T1)

    assert p.steps[0].status is StepStatus.AUTHORIZED
    assert p.steps[0].captured_minor == 0
    assert p.status is PaymentStatus.AUTHORIZED
    assert p.success
    assert event_names(p) == ["StepSucceeded", "PaymentCompleted"]


def test_an_authorized_step_can_be_voided() -> None:
    p = payment(1999, capture=CaptureMode.MANUAL)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.step_voided(p.steps[0])

    assert p.steps[0].status is StepStatus.VOIDED
    assert p.pending_events[-1] == raised(StepVoided(0, "stripe", 1999), 2)


@pytest.mark.parametrize("state", ["pending", "captured", "failed", "unknown", "voided"])
def test_only_an_authorized_step_can_be_voided(state: str) -> None:
    p = payment(1999, capture=CaptureMode.MANUAL)
    step = p.steps[0]
    if state == "captured":
        p = payment(1999, capture=CaptureMode.AUTOMATIC)
        step = p.steps[0]
        p.step_succeeded(step, processor="stripe", latency_ms=1)
    elif state == "failed":
        p.step_failed(step, DECLINED, processor="stripe", latency_ms=1)
    elif state == "unknown":
        p.step_unknown(step, processor="stripe", error_code=ErrorCode.TIMEOUT)
    elif state == "voided":
        p.step_succeeded(step, processor="stripe", latency_ms=1)
        p.step_voided(step)
    before = list(p.pending_events)

    with pytest.raises(InvalidTransition):
        p.step_voided(step)
    assert p.pending_events == before


def test_voiding_the_only_authorization_cancels_the_payment_instead_of_failing_it() -> None:
    p = payment(1999, capture=CaptureMode.MANUAL)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.settle(T1)
    p.step_voided(p.steps[0])
    p.settle(T1)

    assert p.status is PaymentStatus.CANCELLED
    assert "PaymentFailed" not in event_names(p)


# -- several steps ------------------------------------------------------------


def test_two_step_payment_with_one_success_reports_processed_and_remaining() -> None:
    p = payment(600, 400)
    assert (p.processed_minor, p.remaining_minor) == (0, 1000)

    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.step_failed(p.steps[1], DECLINED, processor="stripe", latency_ms=1)
    p.settle(T1)

    assert p.processed_minor == 600
    assert p.remaining_minor == 400
    assert p.status is PaymentStatus.PARTIALLY_SUCCEEDED
    assert not p.success
    assert event_names(p) == ["StepSucceeded", "StepFailed", "PaymentPartiallySucceeded"]
    assert p.pending_events[-1] == raised(PaymentPartiallySucceeded(600, 400, "order-1001"), 3)
    p.settle(T1)
    assert len(p.pending_events) == 3  # once


def test_refunds_reduce_processed_but_not_remaining() -> None:
    p = payment(600, 400)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.step_succeeded(p.steps[1], processor="stripe", latency_ms=1)
    p.steps[0].refunded_minor = 100
    assert p.processed_minor == 900
    assert p.remaining_minor == 0


def refunded_in_full(*steps: int) -> Payment:
    """A captured 600 + 400 payment with the given steps refunded in full."""
    p = payment(600, 400)
    for step in p.steps:
        p.step_succeeded(step, processor="stripe", latency_ms=1)
    p.settle(T1)
    for i in steps:
        p.step_refunded(p.steps[i], p.steps[i].captured_minor)
    p.settle(T1)
    return p


def test_a_full_refund_leaves_nothing_processed() -> None:
    p = refunded_in_full(0, 1)

    assert p.status is PaymentStatus.REFUNDED
    assert p.processed_minor == 0


def test_a_held_refund_counts_against_what_is_refundable_until_made_or_refused() -> None:
    p = refunded_in_full()
    first = p.steps[0]
    p.refund_held(first, "a", 400)
    assert (first.refundable_minor, p.refundable_minor) == (200, 600)
    with pytest.raises(InvalidTransition):
        p.refund_held(first, "b", 201)  # beyond what the hold of "a" leaves
    p.refund_held(first, "b", 200)

    p.held_refund_made(first, "a")
    p.held_refund_released(first, "b")

    assert (first.refunded_minor, first.refund_holds, first.refundable_minor) == (400, {}, 200)
    p.settle(T1)
    assert p.status is PaymentStatus.PARTIALLY_REFUNDED


@pytest.mark.parametrize("amount", [0, -1])
def test_a_refund_of_nothing_is_refused_and_holds_nothing(amount: int) -> None:
    p = refunded_in_full()
    first = p.steps[0]
    with pytest.raises(InvalidTransition):
        p.step_refunded(first, amount)
    with pytest.raises(InvalidTransition):
        p.refund_held(first, "a", amount)
    assert (first.refunded_minor, first.refund_holds, first.refundable_minor) == (0, {}, 600)


def test_the_least_refund_one_minor_unit_is_held_and_made() -> None:
    p = refunded_in_full()
    first = p.steps[0]
    p.refund_held(first, "a", 1)
    p.held_refund_made(first, "a")
    p.step_refunded(first, 1)
    assert (first.refunded_minor, first.refund_holds, first.refundable_minor) == (2, {}, 598)


def test_a_refund_that_failed_at_the_processor_is_refundable_again() -> None:
    p = refunded_in_full(0)
    first = p.steps[0]
    assert first.status is StepStatus.REFUNDED
    p.pending_events.clear()

    p.step_refund_failed(first, 200, "re_1")

    assert (first.refunded_minor, first.refundable_minor) == (400, 200)
    assert first.status is StepStatus.CAPTURED
    (event,) = p.pending_events
    assert (event.name, event.amount_minor, event.refund_id) == ("PaymentRefundFailed", 200, "re_1")
    for amount in (0, 401):  # nothing, or more than is counted as refunded
        with pytest.raises(InvalidTransition):
            p.step_refund_failed(first, amount, "re_2")
    assert first.refunded_minor == 400
    p.step_refund_failed(first, 1, "re_3")  # the least, then all that is left
    p.step_refund_failed(first, 399, "re_4")
    assert (first.refunded_minor, first.refundable_minor) == (0, 600)


def test_a_deferred_lookup_moves_the_next_one_later_never_sooner() -> None:
    p = payment()
    assert p.reconcile_deferred(T0) is True and p.next_reconcile_at == T0
    assert p.reconcile_deferred(T1) is True and p.next_reconcile_at == T1
    assert p.reconcile_deferred(T1) is False and p.next_reconcile_at == T1
    assert p.reconcile_deferred(T0) is False and p.next_reconcile_at == T1


def test_an_owed_capture_tried_more_than_once_reports_the_last_tries_error() -> None:
    p = payment(1999, capture=CaptureMode.MANUAL)
    step = p.steps[0]
    p.step_succeeded(step, processor="stripe", latency_ms=1)
    assert step.status is StepStatus.AUTHORIZED
    p.add_attempt(step, _attempt(ResponseKind.CONNECTION_ERROR, operation="capture"))
    p.add_attempt(step, _attempt(ResponseKind.NO_RESPONSE, operation="capture"))
    p.owe(Owed.CAPTURE, step)
    p.settle(T1)
    assert p.final_error is ErrorCode.TIMEOUT  # the last try's, not the first's
    assert "the capture failed and is retried" in p.final_error_message


def test_a_refund_in_full_of_one_step_leaves_nothing_remaining() -> None:
    p = refunded_in_full(0)

    assert p.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (p.processed_minor, p.remaining_minor) == (400, 0)


def test_voided_steps_no_longer_count_as_processed() -> None:
    p = payment(600, 400, capture=CaptureMode.MANUAL)
    p.step_succeeded(p.steps[0], processor="stripe", latency_ms=1)
    p.step_failed(p.steps[1], DECLINED, processor="stripe", latency_ms=1)
    p.step_voided(p.steps[0])
    p.settle(T1)

    assert p.processed_minor == 0
    assert p.remaining_minor == 1000
    assert p.status is PaymentStatus.FAILED
    assert p.final_error is ErrorCode.CARD_DECLINED


def test_two_captured_steps_succeed_with_the_full_amount_completed() -> None:
    p = payment(600, 400)
    for step in p.steps:
        p.step_succeeded(step, processor="stripe", latency_ms=1)
    p.settle(T1)

    assert p.status is PaymentStatus.SUCCEEDED
    assert event_names(p) == ["StepSucceeded", "StepSucceeded", "PaymentCompleted"]
    assert [e.sequence for e in p.pending_events] == [1, 2, 3]
    assert p.pending_events[-1] == raised(PaymentCompleted(1000, "order-1001"), 3)


def test_settle_looks_statuses_up_in_tuples_of_the_same_states() -> None:
    """settle() and watch_refund_holds() test `in` tuples (identity, no Enum.__hash__):
    each holds the states of the frozenset it stands for, no more, no fewer."""
    assert len(payment_module._UNRESOLVED) == len(UNRESOLVED)
    assert set(payment_module._UNRESOLVED) == UNRESOLVED
    assert len(payment_module._OPEN) == len(OPEN)
    assert set(payment_module._OPEN) == OPEN == UNRESOLVED | {PaymentStatus.REQUIRES_ACTION}


def _settled_after(
    step_status: StepStatus, held: bool, due: datetime | None, off_session: bool
) -> Payment:
    p = payment()
    p.off_session = off_session
    p.steps[0].status = step_status
    if held:
        p.steps[0].refund_holds["rf_1"] = 100
    p.next_reconcile_at = due
    p.reconcile_attempts = 3
    p.settle(T1)
    return p


def _settled_cases() -> list[Any]:
    """Every step status x hold x due look-up x session that settle() leaves settled;
    the rest (unresolved, or paused with an expiry) keep the reconciler's schedule."""
    cases = []
    for step_status in StepStatus:
        for held in (False, True):
            for due in (None, T0 + timedelta(hours=5)):
                for off_session in (False, True):
                    p = _settled_after(step_status, held, due, off_session)
                    if p.status in UNRESOLVED or p.action_expires_at is not None:
                        continue
                    ids = (
                        step_status.value,
                        "held" if held else "no-hold",
                        "due" if due else "none-due",
                        "off-session" if off_session else "on-session",
                    )
                    cases.append(
                        pytest.param(step_status, held, due, off_session, id="-".join(ids))
                    )
    return cases


@pytest.mark.parametrize(("step_status", "held", "due", "off_session"), _settled_cases())
def test_settle_leaves_the_look_up_due_as_the_refunds_held_say(
    step_status: StepStatus, held: bool, due: datetime | None, off_session: bool
) -> None:
    """A settled payment has no look-up due unless a refund is held on it: then one is
    due, kept if it was, from now on the first back-off if not; a payment paused for
    the customer (waiting, off session) has none, held or not."""
    p = _settled_after(step_status, held, due, off_session)
    if not held or p.status is PaymentStatus.REQUIRES_ACTION:
        assert (p.next_reconcile_at, p.reconcile_attempts) == (None, 3)
    elif due is not None:
        assert (p.next_reconcile_at, p.reconcile_attempts) == (due, 3)
    else:
        assert (p.next_reconcile_at, p.reconcile_attempts) == (T1 + reconcile_delay(0), 0)


# -- the client secret -----------------------------------------------------------


def _paused(capture: CaptureMode = CaptureMode.AUTOMATIC) -> tuple[Payment, Step]:
    p = payment(1999, capture=capture)
    step = p.steps[0]
    p.step_requires_action(
        step, processor="stripe", next_action="use_stripe_sdk", client_secret="pi_1_secret_x"
    )
    p.settle(T1)
    assert (p.status, step.client_secret) == (PaymentStatus.REQUIRES_ACTION, "pi_1_secret_x")
    return p, step


@pytest.mark.parametrize(
    "leaves", ["succeeded", "failed", "voided", "unknown", "held by a lost try"]
)
def test_a_step_leaving_requires_action_keeps_no_client_secret(leaves: str) -> None:
    """The client secret is for the customer's browser while the step waits for them;
    once the step is charged, failed, canceled (or its outcome lost) it is no use to
    anyone but whoever would confirm that intent again: not kept (docs/security.md). What
    the step asked for stays (next_action_type)."""
    p, step = _paused()
    if leaves == "succeeded":
        p.step_succeeded(step, processor="stripe", latency_ms=10)
    elif leaves == "failed":
        p.step_failed(step, DECLINED, processor="stripe", latency_ms=10)
    elif leaves == "voided":
        p.step_voided(step)
    elif leaves == "unknown":
        p.step_unknown(step, processor="stripe", error_code=ErrorCode.TIMEOUT)
    else:
        held = Step(0, MethodType.CARD, "pm_0", 1999, ["a"], status=StepStatus.CAPTURED)
        p.step_held_by_lost_try(step, held)
    p.settle(T1)

    assert step.status is not StepStatus.REQUIRES_ACTION
    assert (step.client_secret, step.next_action_type) == ("", "use_stripe_sdk")


def test_a_step_paused_again_gets_the_secret_its_processor_gives_again() -> None:
    """A lookup that finds the step waiting for the customer once more (its outcome had
    been lost) hands the secret the processor answers with, as the first pause did."""
    p, step = _paused()
    p.step_unknown(step, processor="stripe", error_code=ErrorCode.TIMEOUT)
    p.step_requires_action(
        step, processor="stripe", next_action="use_stripe_sdk", client_secret="pi_1_secret_x"
    )

    assert step.client_secret == "pi_1_secret_x"
