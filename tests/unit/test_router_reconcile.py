"""The router's reconcile of one step, answered by a scripted processor: it says True
only when the step settled, and never fails a step whose intent may still be charged."""

from __future__ import annotations

import dataclasses
import random

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.router import Deadline, Router
from payorch.app.settlement import Settlement
from payorch.domain.classification import classify
from payorch.domain.events import StepFailed, StepVoided
from payorch.domain.money import Currency
from payorch.domain.payment import MethodType, Payment, Step, StepStatus
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse, ResponseKind
from payorch.domain.retry import RetryPolicy
from tests.unit.test_recovery_scenarios import LOST, NOT_CONFIRMED, Scripted

WAITING = ProcessorResponse(
    ResponseKind.REQUIRES_ACTION,
    processor_payment_id="pi_1",
    next_action_type="use_stripe_sdk",
    client_secret="pi_1_secret_x",
)


# The bank's decline of a charge it will not take without the customer (3-D Secure).
AUTHENTICATION_REQUIRED = ProcessorResponse(
    ResponseKind.ERROR,
    processor_payment_id="pi_1",
    http_status=402,
    error_type="card_error",
    code="authentication_required",
    decline_code="authentication_required",
)


async def authorized(
    answers: list[ProcessorResponse], *, off_session: bool = False
) -> tuple[Router, Scripted, Payment]:
    """A one-step payment authorized at "p" with `answers`; its lookups answer PENDING."""
    p = Scripted("p", answers)
    clock = ManualClock()
    router = Router({"p": p}, clock, rng=random.Random(0))
    now = clock.now()
    step = Step(0, MethodType.CARD, "pm_card_visa", 5000, ["p"])
    payment = Payment(
        "pay_1", "m_1", "r1", "f", Currency("EUR"), 5000, [step], now, now, off_session=off_session
    )
    await router.authorize(
        payment, step, policy=RetryPolicy(max_retries=1), deadline=Deadline(None)
    )
    return router, p, payment


async def test_a_step_not_closed_with_time_for_one_call_only_stays_unknown():
    """The lookup reads "not charged" on an intent still open: a request running under
    its key may charge it yet. With no time left in the run to close it, the step is
    left as it was for the next pass, not failed."""
    router, p, payment = await authorized([LOST, LOST])
    (step,) = payment.steps
    assert step.status is StepStatus.UNKNOWN
    p.looked_up = NOT_CONFIRMED
    cancels: list[str] = []

    async def cancel(*args, **kwargs):
        cancels.append("void")
        return ProcessorResponse(ResponseKind.NOT_CHARGED, processor_payment_id="pi_1")

    p.cancel = cancel  # type: ignore[method-assign]
    # Time for one call (the lookup), not for two (the close and its lookup).
    run = Deadline(router.clock.monotonic() + 0.4)

    assert await router.reconcile(payment, step, run=run) is False

    assert step.status is StepStatus.UNKNOWN
    assert cancels == []
    (looked,) = [a for a in step.attempts if a.operation == "lookup"][-1:]
    assert "no time left in this run to close it" in looked.retry_decision


async def test_a_step_still_waiting_for_the_customer_has_not_settled():
    router, p, payment = await authorized([WAITING])
    (step,) = payment.steps
    assert step.status is StepStatus.REQUIRES_ACTION
    p.looked_up = WAITING

    assert await router.reconcile(payment, step) is False

    assert step.status is StepStatus.REQUIRES_ACTION
    assert step.attempts[-1].retry_decision == "still waiting for the customer"


async def test_a_step_whose_processor_is_no_longer_configured_is_left_as_it_is():
    router, _, payment = await authorized([LOST, LOST])
    (step,) = payment.steps
    attempts = len(step.attempts)
    without = Router({}, router.clock, rng=random.Random(0))

    assert await without.reconcile(payment, step) is False
    assert await without.reconcile(payment, step, deferred=set()) is False

    assert step.status is StepStatus.UNKNOWN and len(step.attempts) == attempts


def _failed(payment: Payment) -> tuple[StepStatus, Outcome | None, ErrorCode, bool]:
    """The step's verdict, and whether its StepFailed says to charge again later."""
    (step,) = payment.steps
    (event,) = [e for e in payment.pending_events if isinstance(e, StepFailed)]
    return step.status, step.outcome, step.error_code, event.retry_later


# A canceled intent as a processor shows it: Stripe clears last_payment_error when a
# PaymentIntent is updated for any reason, a cancel included (so does the simulation).
CANCELED = ProcessorResponse(ResponseKind.NOT_CHARGED, processor_payment_id="pi_1", closed=True)


def cancel_goes_through(p: Scripted, then: ProcessorResponse) -> None:
    """`p` cancels the intent, and its lookups answer `then` from there on."""

    async def cancel(*args, **kwargs):
        p.looked_up = then
        return ProcessorResponse(ResponseKind.DONE, processor_payment_id="pi_1")

    p.cancel = cancel  # type: ignore[method-assign]


@pytest.mark.parametrize("passes", [1, 2], ids=["closed-in-this-pass", "closed-a-pass-before"])
async def test_an_off_session_authentication_decline_on_an_intent_not_waiting_reads_as_answered(
    passes,
):
    """Off-session, the bank's `authentication_required` decline found by the reconciler on
    an intent no customer can resume (open but not read as waiting, which the reconciler
    closes) fails the unknown step as the confirm's own 402 fails it when it leaves
    nothing to resume: never retried, now or later. Until 2026-12-08 it read soft, its
    lost answer's `timeout` and retry later, so an installment went on charging a card
    only its customer can clear. The cancel clears the decline from the intent, as
    Stripe's does; so does a pass that finds the intent canceled by an earlier one whose
    last lookup went unanswered (until 2026-12-08 that pass read it soft again)."""
    _, _, direct = await authorized([AUTHENTICATION_REQUIRED], off_session=True)
    router, p, looked = await authorized([LOST, LOST], off_session=True)
    (step,) = looked.steps
    assert step.status is StepStatus.UNKNOWN
    p.looked_up = dataclasses.replace(AUTHENTICATION_REQUIRED, kind=ResponseKind.NOT_CHARGED)

    cancel_goes_through(p, CANCELED if passes == 1 else LOST)
    if passes == 2:
        assert await router.reconcile(looked, step) is False
        assert step.status is StepStatus.UNKNOWN
        p.looked_up = CANCELED

    assert await router.reconcile(looked, step) is True

    expected = classify(AUTHENTICATION_REQUIRED)
    assert (expected.outcome, expected.error_code) == (
        Outcome.REQUIRES_ACTION,
        ErrorCode.AUTHENTICATION_REQUIRED,
    )
    assert _failed(direct) == (
        StepStatus.FAILED,
        Outcome.REQUIRES_ACTION,
        ErrorCode.AUTHENTICATION_REQUIRED,
        False,
    )
    assert _failed(looked) == _failed(direct)
    assert step.attempts[-1].retry_decision == (
        "reconciled: never charged, declined (authentication_required)"
    )


async def test_a_decline_seen_before_payorch_closed_the_intent_stands_on_a_later_pass():
    """A stolen card's decline found by the reconciler on a lost answer's intent, which it
    closes; the cancel goes through but its lookup goes unanswered. The next pass finds
    the intent canceled and, as at Stripe, the decline cleared from it: the step fails
    as the decline said (hard, never charged again), not soft with its lost answer's
    `timeout` (until 2026-12-08), nor as canceled by someone else: payorch closed it."""
    router, p, payment = await authorized([LOST, LOST])
    (step,) = payment.steps
    p.looked_up = ProcessorResponse(
        ResponseKind.NOT_CHARGED,
        processor_payment_id="pi_1",
        http_status=402,
        error_type="card_error",
        code="card_declined",
        decline_code="stolen_card",
    )

    cancel_goes_through(p, LOST)
    assert await router.reconcile(payment, step) is False
    p.looked_up = CANCELED

    assert await router.reconcile(payment, step) is True

    assert _failed(payment) == (StepStatus.FAILED, Outcome.HARD, ErrorCode.STOLEN_CARD, False)
    assert step.attempts[-1].retry_decision == "reconciled: never charged, declined (stolen_card)"


# The Stripe adapter's answer when the customer's 3-D Secure failed within the confirm
# and the cancel it makes of the intent (under its `_close` key) went unanswered.
AUTHENTICATION_FAILED_CLOSING = ProcessorResponse(
    ResponseKind.PENDING,
    processor_payment_id="pi_1",
    http_status=400,
    error_type="invalid_request_error",
    code="payment_intent_authentication_failure",
)


@pytest.mark.parametrize("off_session", [False, True], ids=["on-session", "off-session"])
@pytest.mark.parametrize("waiting", [False, True], ids=["answer-lost", "paused"])
async def test_an_intent_canceled_by_someone_else_reads_canceled_at_the_processor(
    waiting, off_session
):
    """An intent found canceled that payorch never asked to cancel (the merchant in
    Stripe's dashboard, another system), no decline on it: whether the step was paused
    for the customer or its answer was lost, it fails `hard`,
    `payment_canceled_at_processor`, and is never to be charged again (StepFailed's
    retry later: no), nor by the dunning ladder. Until 2026-12-08 a lost answer's step
    read soft, its `timeout`, to retry later: a retry charged what the merchant canceled."""
    router, p, payment = await authorized(
        [WAITING] if waiting else [LOST, LOST], off_session=off_session
    )
    (step,) = payment.steps
    p.looked_up = CANCELED

    assert await router.reconcile(payment, step) is True

    assert _failed(payment) == (
        StepStatus.FAILED,
        Outcome.HARD,
        ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR,
        False,
    )
    assert [a.operation for a in step.attempts][-1:] == ["lookup"]
    assert step.attempts[-1].retry_decision == (
        "reconciled: never charged, canceled at the processor"
    )


@pytest.mark.parametrize("how", ["reconciler", "adapter"])
async def test_an_intent_payorch_canceled_itself_never_reads_canceled_by_someone_else(how):
    """payorch cancels intents itself: the reconciler's close (a void attempt), and the
    Stripe adapter's after the customer's 3-D Secure failed within the confirm (its
    answer says that failure). Found canceled later, with the failure cleared from the
    intent, such a step reads what payorch saw (the failed 3-D Secure: `hard`,
    `authentication_failed`), never `payment_canceled_at_processor`."""
    if how == "adapter":
        router, p, payment = await authorized([AUTHENTICATION_FAILED_CLOSING])
    else:
        router, p, payment = await authorized([LOST, LOST])
        p.looked_up = dataclasses.replace(
            AUTHENTICATION_FAILED_CLOSING, kind=ResponseKind.NOT_CHARGED
        )

        cancel_goes_through(p, LOST)
        assert await router.reconcile(payment, payment.steps[0]) is False
    (step,) = payment.steps
    assert step.status is StepStatus.UNKNOWN
    p.looked_up = CANCELED

    assert await router.reconcile(payment, step) is True

    assert _failed(payment) == (
        StepStatus.FAILED,
        Outcome.HARD,
        ErrorCode.AUTHENTICATION_FAILED,
        False,
    )
    assert step.attempts[-1].retry_decision == (
        "reconciled: never charged, failed (authentication_failed)"
    )


async def test_a_failed_authentication_only_seen_by_a_lookup_is_no_cancel_of_payorchs():
    """A lookup saw the customer's failed 3-D Secure on an intent still open, and the run
    had no time left to close it; the merchant then canceled it in the dashboard. payorch
    never asked for that cancel (only an authorize answered so makes the adapter cancel):
    it reads `payment_canceled_at_processor`, as any cancel of someone else's does."""
    router, p, payment = await authorized([WAITING])
    (step,) = payment.steps
    p.looked_up = dataclasses.replace(AUTHENTICATION_FAILED_CLOSING, kind=ResponseKind.NOT_CHARGED)
    run = Deadline(router.clock.monotonic() + 0.4)  # time for the lookup, not the close
    assert await router.reconcile(payment, step, run=run) is False
    p.looked_up = CANCELED

    assert await router.reconcile(payment, step) is True

    assert _failed(payment) == (
        StepStatus.FAILED,
        Outcome.HARD,
        ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR,
        False,
    )
    assert "void" not in [a.operation for a in step.attempts]


@pytest.mark.parametrize("passes", [1, 2], ids=["closed-in-this-pass", "closed-a-pass-before"])
async def test_payorchs_close_at_one_processor_is_no_cancel_of_its_at_another(passes):
    """A server died while a step's processors were tried in turn: the reconciler asks
    each. It closes the intent at "a" (still open there), and finds the one at "b"
    canceled by someone else. Each processor holds its own intent: payorch's close at
    "a" says nothing of "b", whose cancel reads `payment_canceled_at_processor`, never
    charged again. Until 2026-12-08 any void of the step counted for every processor:
    the step read soft, `interrupted`, to retry later."""
    a = Scripted("a", [], looked_up=NOT_CONFIRMED)
    b = Scripted("b", [], looked_up=CANCELED)
    clock = ManualClock()
    router = Router({"a": a, "b": b}, clock, rng=random.Random(0))
    now = clock.now()
    step = Step(0, MethodType.CARD, "pm_card_visa", 5000, ["a", "b"])
    payment = Payment("pay_1", "m_1", "r1", "f", Currency("EUR"), 5000, [step], now, now)
    cancel_goes_through(a, CANCELED if passes == 1 else LOST)
    if passes == 2:
        assert await router.reconcile(payment, step) is False
        a.looked_up = CANCELED

    assert await router.reconcile(payment, step) is True

    assert [(x.processor, x.operation) for x in step.attempts if x.operation == "void"] == [
        ("a", "void")
    ]
    assert _failed(payment) == (
        StepStatus.FAILED,
        Outcome.HARD,
        ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR,
        False,
    )
    assert step.attempts[-1].retry_decision == (
        "reconciled: never charged, canceled at the processor"
    )


async def test_a_paused_step_payorch_voided_with_the_answer_lost_reads_voided_when_found_canceled():
    """payorch voided a step paused for the customer (Settlement.void: giving the payment
    up), and neither the void's answer nor its lookup's came back. Found canceled later,
    the step reads as the void answered would have left it: voided, no StepFailed (until
    2026-12-08 it failed soft, `interrupted`). The router's own close is no such void."""
    router, p, payment = await authorized([WAITING])
    (step,) = payment.steps

    async def lost_cancel(*args, **kwargs):
        return LOST

    p.cancel = lost_cancel  # type: ignore[method-assign]
    p.looked_up = LOST
    assert await Settlement(router.processors, router.clock).void(payment, step) is False
    assert step.status is StepStatus.REQUIRES_ACTION
    p.looked_up = CANCELED

    assert await router.reconcile(payment, step) is True

    assert step.status is StepStatus.VOIDED
    assert [type(e) for e in payment.pending_events if isinstance(e, (StepFailed, StepVoided))] == [
        StepVoided
    ]
    assert step.attempts[-1].retry_decision == "reconciled: voided by payorch, its answer lost"
