"""The seven retry scenarios of the seed, against the app on in-memory fakes.

Each ends with exactly one charge at the processor, whatever failed on the way.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation
from payorch.app.contract_monitor import ContractMonitor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.observability import Observers
from payorch.app.payment_observation import PaymentObservation
from payorch.app.payments import PaymentService
from payorch.app.router import Deadline, Router
from payorch.app.settlement import Settlement
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.money import Currency
from payorch.domain.payment import MethodType, Payment, PaymentStatus, Step, StepStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse, ResponseKind
from payorch.domain.retry import RetryPolicy
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory
from tests.unit.test_observability import ListSink


class World:
    def __init__(self, *, max_retries: int = 1, latency_ms: float = 0.0) -> None:
        self.clock = ManualClock()
        self.violations = ListSink()
        self.sim = SimulatedProcessor(
            "simulated", Simulation(latency_ms=latency_ms), sleep=self.clock.sleep
        )
        self.uow = FakeUnitOfWorkFactory()
        self.router = Router({"simulated": self.sim}, self.clock, rng=random.Random(1))
        self.configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            ["simulated"],
            defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=max_retries)),
        )
        self.service = PaymentService(
            self.uow,
            self.router,
            self.clock,
            self.configs,
            Settlement(self.router.processors, self.clock),
            observation=PaymentObservation(
                monitor=ContractMonitor(self.violations, self.clock, Observers())
            ),
        )

    async def pay(self, request_id: str = "r1", token: str = "pm_card_visa", deadline_s=None):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=request_id,
                amount_minor=5000,
                currency="EUR",
                payment_method=token,
            )
        )
        return (await self.service.create(core, deadline_s=deadline_s)).payment

    @property
    def charges(self) -> int:
        return self.sim.ledger.charges_total


def authorize_attempts(payment):
    return [a for a in payment.steps[0].attempts if a.operation == "authorize"]


async def test_scenario_1_api_error_is_looked_up_then_retried_with_a_new_key_and_charged_once():
    w = World()
    w.sim.inject("api_error", None)
    payment = await w.pay()

    assert payment.status is PaymentStatus.SUCCEEDED
    attempts = payment.steps[0].attempts
    assert [a.operation for a in attempts] == ["authorize", "lookup", "authorize"]
    assert attempts[0].outcome is Outcome.SOFT and attempts[0].raw.http_status == 500
    assert attempts[0].idempotency_key.endswith("_g0")
    assert attempts[2].idempotency_key.endswith("_g1")
    assert attempts[2].delay_before_ms > 0
    assert w.charges == 1


async def test_scenario_1_an_api_error_whose_lookup_finds_no_payment_is_retried_with_a_new_key():
    """The lookup found nothing under the key (Stripe: the 500 came before any
    PaymentIntent was made): as proof of no charge as one found not charged."""
    w = World()
    w.sim.inject("api_error", None)

    async def nothing_found(request, processor_payment_id):
        return ProcessorResponse(ResponseKind.NOT_FOUND)

    w.sim.lookup = nothing_found  # type: ignore[method-assign]
    payment = await w.pay()

    assert payment.status is PaymentStatus.SUCCEEDED
    attempts = payment.steps[0].attempts
    assert [a.operation for a in attempts] == ["authorize", "lookup", "authorize"]
    assert attempts[2].idempotency_key.endswith("_g1")
    assert w.charges == 1


async def test_scenario_1_an_api_error_whose_lookup_finds_a_decline_keeps_it_and_charges_nothing():
    """The bank declined under the key before the 500 (Stripe's last_payment_error): a
    stolen card is its answer, never tried again under the next key."""
    w = World()
    w.sim.inject("api_error", None)

    async def declined(request, processor_payment_id):
        return ProcessorResponse(
            ResponseKind.NOT_CHARGED,
            http_status=402,
            error_type="card_error",
            code="card_declined",
            decline_code="stolen_card",
        )

    w.sim.lookup = declined  # type: ignore[method-assign]
    payment = await w.pay()

    assert payment.status is PaymentStatus.FAILED
    assert payment.steps[0].error_code is ErrorCode.STOLEN_CARD
    assert [a.operation for a in payment.steps[0].attempts] == ["authorize", "lookup"]
    assert w.charges == 0


async def test_scenario_1_an_api_error_that_did_charge_is_found_by_lookup_not_retried():
    w = World()
    w.sim.inject("charged_api_error")
    payment = await w.pay()

    attempts = payment.steps[0].attempts
    assert [a.operation for a in attempts] == ["authorize", "lookup"]
    assert "had charged" in attempts[1].retry_decision
    assert payment.status is PaymentStatus.SUCCEEDED and w.charges == 1


async def test_scenario_2_rate_limit_is_retried_with_the_same_key():
    w = World()
    w.sim.inject("rate_limit", None)
    payment = await w.pay()

    attempts = authorize_attempts(payment)
    assert [a.error_code for a in attempts] == [ErrorCode.RATE_LIMITED, ErrorCode.NONE]
    assert attempts[0].idempotency_key == attempts[1].idempotency_key
    assert attempts[0].delay_before_ms == 0 and attempts[1].delay_before_ms < 3000
    assert payment.status is PaymentStatus.SUCCEEDED and w.charges == 1


async def test_scenario_3_timeout_before_the_response_is_retried_with_the_same_key():
    w = World()
    w.sim.inject("lost_response", None)  # processed, answer lost
    payment = await w.pay()

    attempts = authorize_attempts(payment)
    assert attempts[0].outcome is Outcome.UNKNOWN and attempts[0].error_code is ErrorCode.TIMEOUT
    assert attempts[0].idempotency_key == attempts[1].idempotency_key
    assert payment.status is PaymentStatus.SUCCEEDED
    assert w.charges == 1, "the retry replayed the stored answer instead of charging again"


async def test_scenario_4_a_connection_failure_is_retried():
    w = World()
    w.sim.inject("connection_error", None)
    payment = await w.pay()
    attempts = authorize_attempts(payment)
    assert attempts[0].error_code is ErrorCode.NETWORK_ERROR
    assert payment.status is PaymentStatus.SUCCEEDED and w.charges == 1


async def test_scenario_5_a_lost_answer_with_no_retry_left_is_reconciled_later():
    w = World(max_retries=0)
    w.sim.inject("lost_response")
    payment = await w.pay()
    assert payment.status is PaymentStatus.UNKNOWN
    assert payment.steps[0].status is StepStatus.UNKNOWN

    w.clock.advance(120)
    assert await w.service.reconcile_due() == 1
    resolved = await w.service.get(payment.id, "m_1")
    assert resolved.status is PaymentStatus.SUCCEEDED
    assert resolved.steps[0].attempts[-1].operation == "lookup"
    assert w.charges == 1


async def test_scenario_5_a_timeout_that_never_reached_the_processor_reconciles_to_failed():
    w = World(max_retries=0)
    w.sim.inject("timeout")
    payment = await w.pay()
    assert payment.status is PaymentStatus.UNKNOWN
    w.clock.advance(120)
    assert await w.service.reconcile_due() == 1
    resolved = await w.service.get(payment.id, "m_1")
    assert resolved.status is PaymentStatus.FAILED and w.charges == 0


async def test_a_stolen_card_whose_decline_was_lost_reconciles_as_stolen_never_to_be_retried():
    w = World(max_retries=0)
    w.sim.inject("lost_response")  # the bank's stolen_card decline is stored, then lost
    payment = await w.pay(token="pm_card_chargeDeclinedStolenCard")
    assert payment.status is PaymentStatus.UNKNOWN

    assert await w.service.reconcile(payment)

    step = payment.steps[0]
    assert payment.status is PaymentStatus.FAILED
    assert (step.outcome, step.error_code) == (Outcome.HARD, ErrorCode.STOLEN_CARD)
    [failed] = [e for e in w.uow.events if e.name == "StepFailed"]
    assert failed.retry_later is False  # dunning must not charge a stolen card again
    assert w.charges == 0


async def test_scenario_6_replaying_a_request_in_unknown_state_never_charges_again():
    w = World(max_retries=0)
    w.sim.inject("lost_response")
    first = await w.pay("same")
    again = await w.pay("same")
    assert first.status is PaymentStatus.UNKNOWN and again.id == first.id
    assert w.sim.calls == 1 and w.charges == 1


async def test_scenario_6_a_payment_interrupted_mid_flight_is_finished_by_the_reconciler():
    w = World()
    # A server died after the processor charged but before the result was stored.
    w.sim.inject(None)
    payment = await w.pay("crash")
    stored = w.uow.store[payment.id]
    stored.status = PaymentStatus.PROCESSING
    stored.steps[0].status = StepStatus.PENDING
    stored.steps[0].attempts.clear()
    stored.steps[0].stored_attempts = 0

    w.clock.advance(600)
    assert await w.service.reconcile_due() == 1
    resolved = await w.service.get(payment.id, "m_1")
    assert resolved.status is PaymentStatus.SUCCEEDED and w.charges == 1


async def test_scenario_7_no_retry_past_the_callers_deadline():
    w = World(latency_ms=400)
    w.sim.inject("rate_limit", None)
    payment = await w.pay(deadline_s=0.6)
    (attempt,) = authorize_attempts(payment)
    assert "deadline" in attempt.retry_decision
    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.RATE_LIMITED and w.charges == 0


async def test_hard_declines_are_never_retried():
    w = World(max_retries=3)
    payment = await w.pay(token="pm_card_chargeDeclinedStolenCard")
    assert len(payment.steps[0].attempts) == 1
    assert payment.final_error is ErrorCode.STOLEN_CARD
    assert "not retryable" in payment.steps[0].attempts[0].retry_decision


async def test_insufficient_funds_is_not_retried_now():
    w = World(max_retries=3)
    payment = await w.pay(token="pm_card_chargeDeclinedInsufficientFunds")
    assert len(payment.steps[0].attempts) == 1
    assert payment.steps[0].outcome is Outcome.SOFT
    assert payment.final_error is ErrorCode.INSUFFICIENT_FUNDS


async def test_requires_action_pauses_with_the_client_secret():
    w = World()
    payment = await w.pay(token="pm_card_authenticationRequired")
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert payment.steps[0].client_secret and payment.steps[0].next_action_type == "use_stripe_sdk"
    assert w.charges == 0


@pytest.mark.parametrize("retries", [0, 1, 2, 3])
async def test_retries_stop_at_the_policy_limit(retries):
    w = World(max_retries=retries)
    w.sim.inject(*["rate_limit"] * 5)
    payment = await w.pay()
    assert len(authorize_attempts(payment)) == retries + 1
    assert payment.status is PaymentStatus.FAILED and w.charges == 0


class BlindLookups(SimulatedProcessor):
    """A processor whose lookups time out: reconciliation learns nothing."""

    async def lookup(self, request, processor_payment_id):
        return ProcessorResponse(ResponseKind.NO_RESPONSE)


async def test_inconclusive_lookups_back_off_one_minute_five_minutes_one_hour_then_daily():
    w = World(max_retries=0)
    blind = BlindLookups("simulated", sleep=w.clock.sleep)
    w.router.processors = {"simulated": blind}
    blind.inject("lost_response")
    payment = await w.pay()
    assert payment.status is PaymentStatus.UNKNOWN

    gaps = []
    for _ in range(5):
        before = (await w.service.get(payment.id, "m_1")).next_reconcile_at
        gap = before - w.clock.now()
        gaps.append(gap.total_seconds())
        w.clock.advance(gap.total_seconds() - 1)
        assert await w.service.reconcile_due() == 0  # not due yet: nothing looked up
        w.clock.advance(1)
        assert await w.service.reconcile_due() == 0  # due, looked up, still unknown
    assert gaps == [60, 300, 3600, 86400, 86400]
    lookups = [
        a
        for a in (await w.service.get(payment.id, "m_1")).steps[0].attempts
        if a.operation == "lookup"
    ]
    assert len(lookups) == 5


async def test_payments_at_a_processor_taken_out_of_the_settings_wait_for_it_and_name_it_each_pass():
    w = World(max_retries=0)
    w.sim.inject("lost_response", "lost_response")
    unknown = [await w.pay("r1"), await w.pay("r2")]
    assert {p.status for p in unknown} == {PaymentStatus.UNKNOWN}
    removed = w.router.processors.pop("simulated")  # the server restarted without it

    async def a_pass() -> list[str]:
        before = len(w.violations.violations)
        assert await w.service.reconcile_due() == 0
        return [f"{v.contract_id}: {v.message}" for v in w.violations.violations[before:]]

    w.clock.advance(60)
    [named] = await a_pass()  # one for the processor, however many payments it holds
    assert named.startswith("processor/not_configured: processor 'simulated'")
    assert all(p.id in named for p in unknown)
    for p in unknown:  # no outcome guessed, nothing asked: it stays unknown, backed off
        kept = await w.service.get(p.id, "m_1")
        assert kept.status is PaymentStatus.UNKNOWN
        assert kept.steps[0].attempts == p.steps[0].attempts
        assert (kept.next_reconcile_at - w.clock.now()).total_seconds() == 300
    w.clock.advance(60)
    assert await a_pass() == []  # backed off: not due, not named again
    w.clock.advance(240)
    assert len(await a_pass()) == 1

    w.router.processors["simulated"] = removed  # configured again: they settle
    w.clock.advance(3600)
    assert await w.service.reconcile_due() == 2
    for p in unknown:
        assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    assert w.charges == 2


# -- a request still in flight under the key (Stripe's 409 idempotency_key_in_use) ----


class Scripted(SimulatedProcessor):
    """Answers authorize calls from a script, and lookups with one fixed answer."""

    def __init__(self, name, answers, *, looked_up=None):
        super().__init__(name)
        self.answers = list(answers)
        self.looked_up = looked_up or ProcessorResponse(ResponseKind.PENDING)
        self.keys: list[str] = []

    async def authorize(self, request):
        self.keys.append(request.idempotency_key)
        return self.answers.pop(0)

    async def lookup(self, request, processor_payment_id):
        return self.looked_up


LOST = ProcessorResponse(ResponseKind.NO_RESPONSE, exception="ReadTimeout")
IN_FLIGHT = ProcessorResponse(
    ResponseKind.ERROR,
    processor_payment_id="pi_1",
    http_status=409,
    error_type="idempotency_error",
    code="idempotency_key_in_use",
)
NOT_CONFIRMED = ProcessorResponse(
    ResponseKind.NOT_CHARGED, processor_payment_id="pi_1", message="status requires_confirmation"
)


async def authorize_step(processors, *, max_retries=1):
    clock = ManualClock()
    router = Router(processors, clock, rng=random.Random(0))
    now = clock.now()
    step = Step(0, MethodType.CARD, "pm_card_visa", 5000, list(processors))
    payment = Payment("pay_1", "m_1", "r1", "f", Currency("EUR"), 5000, [step], now, now)
    await router.authorize(
        payment, step, policy=RetryPolicy(max_retries=max_retries), deadline=Deadline(None)
    )
    return step


async def test_a_key_still_in_flight_after_a_lost_answer_leaves_the_step_unknown_not_failed():
    p = Scripted("p", [LOST, IN_FLIGHT])
    step = await authorize_step({"p": p})

    assert step.status is StepStatus.UNKNOWN
    assert step.generation == 0 and p.keys == ["payorch_pay_1_0_g0"] * 2
    assert [a.operation for a in step.attempts] == ["authorize", "authorize"]


async def test_a_key_in_flight_is_never_looked_up_into_a_new_key_generation():
    # Even flagged indeterminate, and with a lookup that reads requires_confirmation:
    # the confirm still running under the key may charge after the lookup.
    flagged = dataclasses.replace(IN_FLIGHT, indeterminate=True)
    p = Scripted("p", [flagged, flagged], looked_up=NOT_CONFIRMED)
    step = await authorize_step({"p": p})

    assert step.status is StepStatus.UNKNOWN
    assert step.generation == 0 and set(p.keys) == {"payorch_pay_1_0_g0"}
    assert "lookup" not in [a.operation for a in step.attempts]


async def test_a_key_in_flight_never_fails_over_even_when_the_retry_is_refused_with_a_429():
    # A 429 alone proves nothing was charged, but the request in flight may still charge.
    refused = ProcessorResponse(
        ResponseKind.ERROR, http_status=429, error_type="invalid_request_error", code="rate_limit"
    )
    first = Scripted("first", [IN_FLIGHT, refused])
    second = Scripted("second", [ProcessorResponse(ResponseKind.SUCCEEDED)])
    step = await authorize_step({"first": first, "second": second})

    assert step.status is StepStatus.UNKNOWN and step.processor == "first"
    assert second.keys == []


async def test_a_key_in_flight_settles_when_a_later_retry_under_it_gets_the_answer():
    charged = ProcessorResponse(ResponseKind.SUCCEEDED, processor_payment_id="pi_1")
    p = Scripted("p", [LOST, IN_FLIGHT, charged])
    step = await authorize_step({"p": p}, max_retries=2)

    assert step.status is StepStatus.CAPTURED
    assert set(p.keys) == {"payorch_pay_1_0_g0"}


# -- processing_error: a decline the bank asks to repeat ------------------------------


async def test_a_processing_error_is_retried_under_the_next_key_generation_not_replayed():
    w = World(max_retries=2)
    payment = await w.pay(token="pm_card_chargeDeclinedProcessingError")

    attempts = authorize_attempts(payment)
    assert [a.idempotency_key[-3:] for a in attempts] == ["_g0", "_g1", "_g2"]
    assert "next key generation g1" in attempts[0].retry_decision
    assert w.sim.calls == 3 and w.charges == 0
    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.PROCESSING_ERROR


async def test_a_processing_error_after_a_lost_answer_settles_the_key_and_moves_to_the_next():
    declined = ProcessorResponse(
        ResponseKind.ERROR,
        http_status=402,
        error_type="card_error",
        code="processing_error",
        decline_code="processing_error",
    )
    p = Scripted("p", [LOST, declined, declined])
    step = await authorize_step({"p": p}, max_retries=2)

    assert [k[-3:] for k in p.keys] == ["_g0", "_g0", "_g1"]
    assert step.status is StepStatus.FAILED
    assert step.error_code is ErrorCode.PROCESSING_ERROR


async def test_the_lookup_after_a_500_is_given_only_the_time_left_before_the_deadline():
    w = World(latency_ms=1500)
    w.sim.inject("api_error")
    lookup, timeouts = w.sim.lookup, []

    async def timed_lookup(request, processor_payment_id):
        timeouts.append((request.timeout_s, w.clock.monotonic()))
        return await lookup(request, processor_payment_id)

    w.sim.lookup = timed_lookup
    started = w.clock.monotonic()
    payment = await w.pay(deadline_s=2.0)

    ((timeout_s, asked_at),) = timeouts
    assert asked_at - started == pytest.approx(1.5)  # the 500 took 1.5 s of the 2
    assert timeout_s <= 0.5 - 0.05  # what is left, less the time kept to store the result
    assert payment.steps[0].attempts[1].operation == "lookup" and w.charges <= 1


async def test_no_retry_after_an_instant_429_when_a_charge_takes_longer_than_the_time_left():
    w = World(latency_ms=1500)  # every charge takes the processor 1.5 s
    for n in range(3):
        assert (await w.pay(request_id=f"before-{n}")).status is PaymentStatus.SUCCEEDED
    authorize, answered = w.sim.authorize, []

    async def refused_at_once_then_slow(request):
        answered.append(request.idempotency_key)
        if len(answered) == 1:  # a 429 comes back at once: nothing was processed
            return ProcessorResponse(
                ResponseKind.ERROR, http_status=429, error_type="invalid_request_error"
            )
        return await authorize(request)

    w.sim.authorize = refused_at_once_then_slow

    payment = await w.pay(request_id="r-429", deadline_s=1.0)

    (attempt,) = authorize_attempts(payment)
    assert "deadline" in attempt.retry_decision and len(answered) == 1
    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.RATE_LIMITED and w.charges == 3


async def test_a_500_that_said_do_not_retry_is_retried_under_the_next_key_once_found_uncharged():
    """Stripe-Should-Retry: false spoke of the key the 500 is stored under; a lookup that
    finds nothing charged retires it, and the next key is a new request it said nothing
    about: retried there, not failed."""
    vetoed = ProcessorResponse(
        ResponseKind.ERROR,
        http_status=500,
        error_type="api_error",
        should_retry=False,
        indeterminate=True,
    )
    charged = ProcessorResponse(ResponseKind.SUCCEEDED, processor_payment_id="pi_2")
    p = Scripted("p", [vetoed, charged], looked_up=ProcessorResponse(ResponseKind.NOT_FOUND))
    step = await authorize_step({"p": p})

    assert p.keys == ["payorch_pay_1_0_g0", "payorch_pay_1_0_g1"]
    assert step.status is StepStatus.CAPTURED
