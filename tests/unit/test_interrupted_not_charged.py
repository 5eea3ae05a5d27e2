"""A step the reconciler proves was never charged ends `interrupted`, not `unknown_outcome`.

The step's charge was cut short (its server died, or its answer was lost) and the
processor, asked afterwards, proved nothing was taken. It used to read "step 0 failed:
unknown_outcome", as if the outcome were still unknown; the outcome is known.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from payorch.app.payments import STALE_PROCESSING, run_interrupted
from payorch.domain.installments import judge_charge
from payorch.domain.money import Currency
from payorch.domain.payment import MethodType, Payment, PaymentStatus, Step, StepStatus
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse, ResponseKind
from tests.fakes.dying import ServerDied
from tests.unit.test_recovery_scenarios import World


async def killed_before_any_call(w: World) -> Payment:
    """The payment as a server left it that died once the row was stored, before any
    processor call: PROCESSING, its step pending."""

    async def dies(request):
        raise ServerDied("the server died")

    w.sim.authorize = dies  # type: ignore[method-assign]
    with pytest.raises(ServerDied):
        await w.pay()
    (stored,) = w.uow.store.values()
    assert stored.status is PaymentStatus.PROCESSING
    return stored


def assert_interrupted(payment: Payment) -> None:
    assert payment.status is PaymentStatus.FAILED
    (step,) = payment.steps
    assert step.status is StepStatus.FAILED
    assert (step.outcome, step.error_code) == (Outcome.SOFT, ErrorCode.INTERRUPTED)
    assert payment.final_error is ErrorCode.INTERRUPTED
    assert payment.final_error_message == "step 0 failed: interrupted"


async def test_a_payment_its_server_left_before_any_call_fails_interrupted():
    w = World()
    payment = await killed_before_any_call(w)

    w.clock.advance(301)
    assert await w.service.reconcile_due() == 1

    settled = await w.service.get(payment.id, None)
    assert_interrupted(settled)
    assert w.charges == 0
    failed = [e for e in w.uow.events if type(e).__name__ == "PaymentFailed"]
    assert [e.error_code for e in failed] == [ErrorCode.INTERRUPTED]
    # An installment's charge so interrupted is ours to try again, as before.
    assert judge_charge(settled).retry_later


async def test_a_step_whose_outcome_was_unknown_and_proven_uncharged_fails_interrupted():
    w = World(max_retries=0)
    w.sim.inject("api_error")  # a 500 stored under the key, nothing charged
    real = w.sim.lookup
    lookups = []

    async def unanswered_once(request, processor_payment_id):
        # The lookup after the 500 goes unanswered: the step stays unknown_outcome.
        lookups.append(processor_payment_id)
        if len(lookups) == 1:
            return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")
        return await real(request, processor_payment_id)

    w.sim.lookup = unanswered_once  # type: ignore[method-assign]
    payment = await w.pay()
    assert payment.status is PaymentStatus.UNKNOWN
    assert payment.steps[0].error_code is ErrorCode.UNKNOWN_OUTCOME

    w.clock.advance(61)
    assert await w.service.reconcile_due() == 1

    assert_interrupted(await w.service.get(payment.id, None))
    assert w.charges == 0


def test_a_payment_stored_processing_the_stale_time_ago_counts_as_interrupted():
    """The bound of the reconciler's storage query (updated_at <= now - STALE_PROCESSING):
    an event about the payment and the pass agree on whether its run is over."""
    now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    step = Step(0, MethodType.CARD, "pm_card_visa", 5000, ["simulated"])
    stored = now - STALE_PROCESSING
    payment = Payment("pay_1", "m_1", "r1", "f", Currency("EUR"), 5000, [step], stored, stored)
    assert run_interrupted(payment, now)
    payment.updated_at = stored + timedelta(microseconds=1)
    assert not run_interrupted(payment, now)
    payment.updated_at = stored
    payment.status = PaymentStatus.FAILED
    assert not run_interrupted(payment, now)
