"""No processor call is started with less time left than it needs to be answered.

A call cut off by the caller's deadline may still charge, its answer lost by design:
the payment would read UNKNOWN for the reconciler, the caller told nothing it can act
on. With less than MIN_CALL_MS (plus the time kept back to store the result) left,
nothing is sent: the request is refused before anything is stored, or, once the plan
is running, the step fails with DEADLINE_EXCEEDED, nothing charged.
"""

from __future__ import annotations

import random

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.payments import DeadlineTooShort
from payorch.app.router import Deadline, Router
from payorch.domain.money import Currency
from payorch.domain.payment import MethodType, Payment, PaymentStatus, Step, StepStatus
from payorch.domain.results import ErrorCode, Outcome
from payorch.domain.retry import DEADLINE_RESERVE_MS, MIN_CALL_MS, RetryPolicy
from tests.unit.test_recovery_scenarios import World


class Counting(World):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []
        authorize = self.sim.authorize

        async def counted(request):
            self.sent.append(request.timeout_s)
            return await authorize(request)

        self.sim.authorize = counted


TOO_SHORT_S = (MIN_CALL_MS + DEADLINE_RESERVE_MS - 1) / 1000
JUST_ENOUGH_S = (MIN_CALL_MS + DEADLINE_RESERVE_MS) / 1000


@pytest.mark.parametrize("deadline_s", [0.0, 0.001, TOO_SHORT_S])
async def test_a_payment_with_too_little_time_left_is_refused_with_nothing_sent_or_stored(
    deadline_s,
):
    w = Counting()
    with pytest.raises(DeadlineTooShort):
        await w.pay(request_id="r-late", deadline_s=deadline_s)

    assert w.sent == [] and w.charges == 0
    # Nothing stored under the request id: the caller's retry with time to spare pays.
    again = await w.pay(request_id="r-late", deadline_s=5.0)
    assert again.status is PaymentStatus.SUCCEEDED and w.charges == 1


async def test_a_payment_with_just_enough_time_left_is_sent_with_that_time():
    w = Counting()
    payment = await w.pay(deadline_s=JUST_ENOUGH_S)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert w.sent == [pytest.approx(MIN_CALL_MS / 1000)]


async def test_a_repeat_with_too_little_time_left_still_replays_the_payment():
    w = Counting()
    first = await w.pay(request_id="r1")
    replayed = await w.pay(request_id="r1", deadline_s=0.0)
    assert replayed.id == first.id and replayed.status is PaymentStatus.SUCCEEDED
    assert len(w.sent) == 1


async def test_the_router_fails_a_step_it_has_no_time_to_send_without_calling_anyone():
    w = Counting()
    clock = ManualClock()
    router = Router({"simulated": w.sim}, clock, rng=random.Random(0))
    now = clock.now()
    step = Step(0, MethodType.CARD, "pm_card_visa", 5000, ["simulated"])
    payment = Payment("pay_1", "m_1", "r1", "f", Currency("EUR"), 5000, [step], now, now)

    await router.authorize(
        payment,
        step,
        policy=RetryPolicy(),
        deadline=Deadline(clock.monotonic() + TOO_SHORT_S),
    )

    assert w.sent == [] and step.attempts == []
    assert step.status is StepStatus.FAILED
    assert (step.outcome, step.error_code) == (Outcome.SOFT, ErrorCode.DEADLINE_EXCEEDED)
    payment.settle(clock.now())
    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.DEADLINE_EXCEEDED


async def test_a_split_step_left_no_time_fails_uncharged_and_releases_the_rest_without_fallbacks():
    from dataclasses import replace

    from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
    from tests.unit.test_split_execution import OK
    from tests.unit.test_split_execution import World as SplitWorld

    w = SplitWorld(fallback_on_failure=True)
    w.sim.simulation = replace(w.sim.simulation, latency_ms=800)  # each charge takes 0.8 s
    core = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="r-split",
            amount_minor=10000,
            currency="USD",
            methods=[
                RawMethodInput("apple_pay", OK, 6000),
                RawMethodInput("card", OK, None),
                RawMethodInput("google_pay", OK, None),
            ],
        )
    )
    # Time for the first step's charge, not for a second one after it.
    payment = (await w.service.create(core, deadline_s=1.0)).payment

    assert [s.status for s in payment.steps] == [StepStatus.VOIDED, StepStatus.FAILED]
    assert payment.steps[1].attempts == [] and w.held() == 0
    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.DEADLINE_EXCEEDED
    assert len(w.sim.ledger.intents) == 1  # no fallback charged either
