"""The recovery scenarios end to end through the router and the real Stripe SDK,
against the fake Stripe: the same rules hold on Stripe as on the simulated processor."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.adapters.processors.stripe import StripeProcessor
from payorch.app.health import HealthTracker
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import PaymentService, ProcessorEvent, ProcessorEvents
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.contracts import attempt_violation
from payorch.domain.health import BreakerState, HealthPolicy
from payorch.domain.installments import judge_charge
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Owed, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome
from payorch.domain.retry import RetryPolicy
from tests.fakes.fake_stripe import FakeStripe, Fault
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory
from tests.integration.helpers import make_stripe_container


@contextlib.asynccontextmanager
async def running(
    *, max_retries=2, fallback_on_failure=False, clock=None, then=None, api_key=None, health=None
):
    """The service on the fake Stripe; `then` is another processor to fail over to;
    `api_key` one the fake Stripe does not take (it takes only its own then)."""
    clock = clock or ManualClock()
    async with FakeStripe(clock=clock, api_key="sk_test_" + "k" * 24 if api_key else None) as fake:
        # 0.8 s: far above a confirm's time on a loaded machine, below every stall
        # the tests inject to be "past our timeout" (1.0 s and more).
        stripe = StripeProcessor(
            api_key or fake.api_key, api_base=fake.url, timeout_s=0.8, clock=clock
        )
        processors = {"stripe": stripe, **({then.name: then} if then else {})}
        router = Router(
            processors,
            clock,
            call_timeout_s=0.8,
            rng=random.Random(3),
            health=health and HealthTracker(health, clock, processors=processors),
        )
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            clock,
            list(processors),
            defaults=MerchantConfig(
                "",
                retry_policy=RetryPolicy(max_retries=max_retries),
                fallback_on_failure=fallback_on_failure,
            ),
        )
        service = PaymentService(
            FakeUnitOfWorkFactory(), router, clock, configs, Settlement(router.processors, clock)
        )
        yield fake, service, clock
        await stripe.aclose()
        await fake.wait_idle()


@pytest.fixture
async def world():
    async with running() as (fake, service, _clock):
        yield fake, service


def events_raised(service):
    """Names of every event the service stored, in order (the fake outbox)."""
    return [e.name for e in service._uow.events]


def card_then_google_pay() -> list[RawMethodInput]:
    """A card step with Google Pay as its fallback, both on the same test card."""
    return [RawMethodInput("card", "pm_card_visa"), RawMethodInput("google_pay", "pm_card_visa")]


async def pay(
    service,
    request_id="r1",
    token="pm_card_visa",
    methods=None,
    total=5000,
    currency="USD",
    authorize_only=False,
    metadata=None,
    off_session=False,
):
    raw = RawPaymentRequest(
        merchant_id="m_1",
        request_id=request_id,
        amount_minor=total,
        currency=currency,
        payment_method="" if methods else token,
        methods=methods or [],
        authorize_only=authorize_only,
        metadata=metadata or {},
        off_session=off_session,
    )
    return (await service.create(parse_payment_request(raw), deadline_s=None)).payment


async def test_a_stripe_500_is_looked_up_then_charged_once_under_the_next_key(world):
    fake, service = world
    fake.inject(Fault.api_error())
    payment = await pay(service)
    assert payment.status is PaymentStatus.SUCCEEDED
    keys = [a.idempotency_key for a in payment.steps[0].attempts if a.operation == "authorize"]
    assert keys[0].endswith("_g0") and keys[1].endswith("_g1")
    assert fake.charges_total == 1


async def test_a_stripe_500_that_charged_is_found_and_not_charged_again(world):
    fake, service = world
    fake.inject(Fault.api_error(charged=True))
    payment = await pay(service)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert [a.operation for a in payment.steps[0].attempts] == ["authorize", "lookup"]
    assert fake.charges_total == 1


@pytest.mark.parametrize(
    "fault",
    [
        # A dependency outside Stripe failed; stored under the key like a 500.
        Fault.dependency_failed(),
        # Stripe sends Stripe-Should-Retry: false with most 500s: the same key would only
        # replay the stored 500. Once a lookup proved nothing was charged, the next key
        # is a new request, which the header says nothing about.
        Fault.api_error(should_retry=False),
    ],
    ids=["424", "500-should-retry-false"],
)
async def test_a_stored_stripe_failure_is_looked_up_then_charged_once_under_the_next_key(
    world, fault
):
    fake, service = world
    fake.inject(fault)
    payment = await pay(service)

    assert payment.status is PaymentStatus.SUCCEEDED
    attempts = payment.steps[0].attempts
    assert [a.operation for a in attempts] == ["authorize", "lookup", "authorize"]
    assert [a.idempotency_key[-3:] for a in attempts if a.operation == "authorize"] == [
        "_g0",
        "_g1",
    ]
    assert fake.charges_total == 1


async def test_a_stripe_424_that_charged_is_found_and_never_failed_or_charged_again():
    async with running(fallback_on_failure=True) as (fake, service, _clock):
        fake.inject(Fault.dependency_failed(charged=True))
        payment = await pay(service, methods=card_then_google_pay())

        assert payment.status is PaymentStatus.SUCCEEDED
        assert [s.status for s in payment.steps] == [StepStatus.CAPTURED]
        assert [a.operation for a in payment.steps[0].attempts] == ["authorize", "lookup"]
        assert fake.charges_total == 1


async def test_a_card_stripe_used_up_fails_the_payment_as_the_callers_to_replace_not_ours(world):
    fake, service = world
    card = fake.create_payment_method()  # as Stripe.js makes one at checkout
    assert (await pay(service, token=card)).status is PaymentStatus.SUCCEEDED

    again = await pay(service, request_id="r2", token=card)  # not saved: used up

    assert again.status is PaymentStatus.FAILED
    assert again.final_error.value == "payment_method_unusable"
    step = again.steps[0]
    assert step.outcome is Outcome.HARD and len(step.attempts) == 1  # never retried
    assert "may not be used again" in step.attempts[0].raw.message
    assert fake.charges_total == 1


async def test_a_single_use_card_spent_by_a_decline_is_the_callers_to_replace_on_the_retry(world):
    fake, service = world
    # Declined with processing_error, a retry now: Stripe has spent the single-use card.
    card = fake.create_payment_method(like="pm_card_chargeDeclinedProcessingError")

    payment = await pay(service, token=card)

    assert payment.status is PaymentStatus.FAILED
    attempts = payment.steps[0].attempts
    assert [(a.error_code.value, a.raw.http_status) for a in attempts] == [
        ("processing_error", 402),
        ("payment_method_unusable", 400),
    ]
    assert payment.final_error.value == "payment_method_unusable"  # collect it again
    assert payment.steps[0].outcome is Outcome.HARD
    [failed] = [e for e in service._uow.events if e.name == "StepFailed"]
    assert failed.retry_later is False  # no later retry of a card that cannot be charged
    assert fake.used_up(card) and fake.charges_total == 0


async def test_a_429_is_retried_with_the_same_key(world):
    fake, service = world
    fake.inject(Fault.rate_limit(retry_after_s=0.1))
    payment = await pay(service)
    authorizes = [a for a in payment.steps[0].attempts if a.operation == "authorize"]
    assert authorizes[0].raw.http_status == 429
    assert authorizes[0].idempotency_key == authorizes[1].idempotency_key
    assert payment.status is PaymentStatus.SUCCEEDED and fake.charges_total == 1


@pytest.mark.parametrize(
    "fault",
    [Fault.drop_after_processing(), Fault.slow(1.0, process=True)],
    ids=["answer dropped", "answer past the timeout"],
)
async def test_a_lost_answer_is_retried_with_the_same_key_and_parameters_and_replayed(world, fault):
    fake, service = world
    fake.inject(fault)
    payment = await pay(service)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert fake.charges_total == 1
    # Stripe replays the stored answer only to the same key with the same parameters
    # (other parameters are refused, and the adapter would then look the intent up:
    # the payment would succeed all the same, so the requests are checked here).
    lost, retry = fake.requests_to("confirm")
    assert (retry.idempotency_key, retry.params) == (lost.idempotency_key, lost.params)
    assert (retry.status, retry.replayed) == (200, True)


async def test_a_split_with_a_declined_card_voids_the_stripe_authorization(world):
    fake, service = world
    payment = await pay(
        service,
        methods=[
            RawMethodInput("apple_pay", "pm_card_visa", 3000),
            RawMethodInput("card", "pm_card_chargeDeclined"),
        ],
    )
    assert payment.status is PaymentStatus.FAILED
    first = fake.payment_intent(payment.steps[0].processor_payment_id)
    assert first["status"] == "canceled"


async def test_a_processing_error_is_retried_under_a_new_key_so_stripe_declines_it_afresh(world):
    fake, service = world
    payment = await pay(service, token="pm_card_chargeDeclinedProcessingError")

    confirms = fake.requests_to("confirm")
    assert [r.idempotency_key[-3:] for r in confirms] == ["_g0", "_g1", "_g2"]
    assert not any(r.replayed for r in confirms)
    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.PROCESSING_ERROR
    assert fake.charges_total == 0


async def test_a_stolen_card_decline_whose_answer_was_lost_reconciles_as_stolen_not_for_later():
    async with running(max_retries=0) as (fake, service, _clock):
        fake.inject(Fault.drop_after_processing())  # Stripe declined; the answer is lost
        payment = await pay(service, token="pm_card_chargeDeclinedStolenCard")
        assert payment.status is PaymentStatus.UNKNOWN

        assert await service.reconcile(payment)

        step = payment.steps[0]
        assert payment.status is PaymentStatus.FAILED
        assert (step.outcome, step.error_code) == (Outcome.HARD, ErrorCode.STOLEN_CARD)
        # The lookup read the bank's reason from last_payment_error (which the cancel
        # that closes the intent then clears).
        ops = [(a.operation, a.raw.decline_code) for a in step.attempts]
        assert ops[1:] == [("lookup", "stolen_card"), ("void", ""), ("lookup", "")]
        [failed] = [e for e in service._uow.events if e.name == "StepFailed"]
        assert failed.retry_later is False  # dunning must not charge a stolen card again
        assert fake.charges_total == 0


@pytest.mark.parametrize(
    ("code", "decline_code", "error_code"),
    [
        ("processing_error", "processing_error", ErrorCode.PROCESSING_ERROR),
        ("card_declined", "do_not_honor", ErrorCode.DO_NOT_HONOR),
        ("card_declined", "insufficient_funds", ErrorCode.INSUFFICIENT_FUNDS),
    ],
)
async def test_a_decline_the_issuer_advises_not_to_try_again_is_never_tried_again(
    world, code, decline_code, error_code
):
    """Stripe's advice_code do_not_try_again: the networks charge for retrying it, now
    (a processing_error would be tried again at once) or on the dunning ladder."""
    fake, service = world
    fake.register_declined_payment_method(
        "pm_live_declined", code=code, decline_code=decline_code, advice_code="do_not_try_again"
    )
    payment = await pay(service, token="pm_live_declined")

    step = payment.steps[0]
    assert payment.status is PaymentStatus.FAILED
    assert (step.outcome, step.error_code) == (Outcome.HARD, error_code)
    assert len(fake.requests_to("confirm")) == 1  # not tried again under the next key
    [failed] = [e for e in service._uow.events if e.name == "StepFailed"]
    assert failed.retry_later is False
    assert judge_charge(payment).retry_later is False  # nor on the dunning ladder


async def test_a_500_stored_over_a_stolen_card_decline_fails_the_step_without_a_second_try(world):
    fake, service = world
    fake.inject(Fault.api_error(charged=True))  # the bank declined, then Stripe stored a 500
    payment = await pay(service, token="pm_card_chargeDeclinedStolenCard")

    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.STOLEN_CARD
    assert len(fake.requests_to("confirm")) == 1  # the stolen card is not tried again
    assert fake.charges_total == 0


# -- a create that failed: nothing was confirmed -------------------------------------


async def test_one_500_on_the_create_is_made_good_under_the_next_create_key_and_charged_once(world):
    fake, service = world
    fake.inject(Fault.api_error(), endpoint="create")  # stored, and replayed for a day

    payment = await pay(service)

    assert payment.status is PaymentStatus.SUCCEEDED
    assert [r.idempotency_key[-9:] for r in fake.requests_to("create")] == [
        "_0:create",
        "_0:create",
        ":create:1",
    ]
    assert len(fake.requests_to("confirm")) == 1 and fake.charges_total == 1


async def test_a_lost_create_answer_fails_over_since_no_confirm_was_sent():
    simulated = SimulatedProcessor("simulated")
    async with running(max_retries=1, then=simulated) as (fake, service, _clock):
        fake.inject(*[Fault.slow(2.0, process=False)] * 2, endpoint="create")
        payment = await pay(service)

        assert payment.status is PaymentStatus.SUCCEEDED
        assert payment.steps[0].processor == "simulated"
        assert fake.requests_to("confirm") == [] and fake.charges_total == 0
        assert simulated.ledger.charges_total == 1


async def test_a_lost_create_answer_with_nowhere_to_fail_over_fails_instead_of_staying_unknown():
    async with running(max_retries=1) as (fake, service, _clock):
        fake.inject(*[Fault.slow(2.0, process=False)] * 2, endpoint="create")
        payment = await pay(service)

        assert payment.status is PaymentStatus.FAILED  # nothing to reconcile: none charged
        assert payment.steps[0].outcome is Outcome.SOFT
        assert fake.requests_to("confirm") == [] and fake.charges_total == 0


# -- a confirm Stripe is still working on ---------------------------------------------


async def test_a_confirm_still_running_at_stripe_leaves_the_payment_unknown_then_reconciles_to_the_charge():
    async with running(max_retries=1) as (fake, service, clock):
        fake.inject(Fault.stall(1.0))  # past our timeout; the retry gets a 409 meanwhile
        payment = await pay(service)

        step = payment.steps[0]
        assert payment.status is PaymentStatus.UNKNOWN
        assert step.status is StepStatus.UNKNOWN
        assert step.error_code is ErrorCode.IDEMPOTENCY_CONFLICT
        assert [r.status for r in fake.requests_to("confirm")][1:] == [409]
        assert {a.idempotency_key[-3:] for a in step.attempts} == {"_g0"}
        assert "lookup" not in [a.operation for a in step.attempts]

        await fake.wait_idle()  # the stalled confirm charges
        clock.advance(120)
        assert await service.reconcile_due() == 1
        settled = await service.get(payment.id, "m_1")
        assert settled.status is PaymentStatus.SUCCEEDED
        assert fake.charges_total == 1


async def test_a_confirm_still_running_at_stripe_never_lets_the_fallback_method_be_charged():
    async with running(max_retries=1, fallback_on_failure=True) as (fake, service, _clock):
        fake.inject(Fault.stall(1.0))
        payment = await pay(service, methods=card_then_google_pay())
        await fake.wait_idle()

        assert [s.status for s in payment.steps] == [StepStatus.UNKNOWN]
        assert payment.status is PaymentStatus.UNKNOWN
        assert len(fake.payment_intents) == 1
        assert fake.charges_total == 1


async def hint(service, payment, event_id="evt_1"):
    """A Stripe event that is no final good news: a hint to look the payment up now."""
    events = ProcessorEvents(service._uow, service, service._clock)
    pi = payment.steps[0].processor_payment_id
    return await events.apply(ProcessorEvent(event_id, "webhook", payment.id, 0, pi, False))


async def test_a_hint_while_the_confirm_still_runs_never_fails_a_step_stripe_then_charges():
    async with running(max_retries=1, fallback_on_failure=True) as (fake, service, clock):
        fake.inject(Fault.stall(1.5))  # our call times out, the retry gets a 409
        payment = await pay(service, methods=card_then_google_pay())
        assert payment.status is PaymentStatus.UNKNOWN
        pi = payment.steps[0].processor_payment_id
        assert fake.payment_intent(pi)["status"] == "requires_confirmation"

        # The intent reads as before the confirm, which is still running at Stripe.
        assert await hint(service, payment) == "looked up, still open"
        assert (await service.get(payment.id, "m_1")).status is PaymentStatus.UNKNOWN

        await fake.wait_idle()  # the confirm finishes and charges
        clock.advance(360)  # the hint's inconclusive lookup put the next one 5 min off
        assert await service.reconcile_due() == 1
        settled = await service.get(payment.id, "m_1")
        assert settled.status is PaymentStatus.SUCCEEDED
        assert len(settled.steps) == 1 and fake.charges_total == 1


def interrupted(service, payment):
    """The payment as a server left it that died during its charge, before storing what
    Stripe answered: PROCESSING, its step pending with no attempt, no PaymentIntent id."""
    stored = service._uow.store[payment.id]
    stored.status = PaymentStatus.PROCESSING
    stored.steps[0].status = StepStatus.PENDING
    stored.steps[0].processor_payment_id = ""
    stored.steps[0].attempts.clear()
    stored.steps[0].stored_attempts = 0


async def test_a_charge_interrupted_before_its_intent_id_was_kept_is_found_after_stripe_forgot_its_keys():
    async with running() as (fake, service, clock):
        payment = await pay(service)
        pi = payment.steps[0].processor_payment_id
        interrupted(service, payment)
        clock.advance(25 * 3600)  # reconciled a day later: Stripe pruned the create's key

        assert await service.reconcile_due() == 1

        resolved = await service.get(payment.id, "m_1")
        assert resolved.status is PaymentStatus.SUCCEEDED
        assert resolved.steps[0].processor_payment_id == pi
        assert fake.charges_total == 1
        assert list(fake.payment_intents) == [pi]  # no second intent made to find it
        assert fake.requests_to("create")[-1:] == fake.requests_to("create")[:1]


async def test_a_charge_interrupted_before_anything_reached_stripe_fails_a_day_later_charging_nothing():
    async with running(max_retries=0) as (fake, service, clock):
        fake.inject(Fault.drop_before_processing(), endpoint="create")
        payment = await pay(service)
        assert payment.status is PaymentStatus.FAILED and not fake.payment_intents
        interrupted(service, payment)
        clock.advance(25 * 3600)

        assert await service.reconcile_due() == 1

        resolved = await service.get(payment.id, "m_1")
        assert resolved.status is PaymentStatus.FAILED
        assert fake.charges_total == 0
        assert [pi["status"] for pi in fake.payment_intents.values()] in ([], ["canceled"])


async def test_a_lost_answer_is_reconciled_as_not_charged_only_once_the_intent_is_canceled():
    async with running(max_retries=0) as (fake, service, _clock):
        fake.inject(Fault.drop_before_processing())  # the confirm never reached Stripe
        payment = await pay(service)
        assert payment.status is PaymentStatus.UNKNOWN

        assert await hint(service, payment) == "looked up"

        settled = await service.get(payment.id, "m_1")
        pi = settled.steps[0].processor_payment_id
        assert settled.status is PaymentStatus.FAILED
        # Canceled, no confirm can charge it any more.
        assert fake.payment_intent(pi)["status"] == "canceled"
        assert [a.operation for a in settled.steps[0].attempts][-3:] == ["lookup", "void", "lookup"]
        assert fake.charges_total == 0


class BeforeEachRetry(ManualClock):
    """Runs `then` when the router sleeps before its next retry."""

    then = None

    async def sleep(self, seconds):
        if self.then is not None:
            self.then()
        await super().sleep(seconds)


async def test_an_intent_stripe_is_already_processing_is_unknown_and_never_charges_the_fallback():
    clock = BeforeEachRetry()
    async with running(max_retries=1, fallback_on_failure=True, clock=clock) as (fake, service, _):
        fake.inject(Fault.api_error())  # g0: a 500, nothing charged: looked up, then g1
        clock.then = lambda: [fake.set_status(pi, "processing") for pi in fake.payment_intents]
        payment = await pay(service, methods=card_then_google_pay())

        assert [s.status for s in payment.steps] == [StepStatus.UNKNOWN]
        assert fake.requests_to("confirm")[-1].status == 400  # payment_intent_unexpected_state
        assert payment.steps[0].attempts[-1].raw.message == "status processing"
        assert len(fake.payment_intents) == 1 and fake.charges_total == 0


async def test_an_intent_stripe_says_is_processing_reads_so_and_is_reconciled_once_it_ends():
    """Stripe answered: still processing. The answer was not lost, and the payment says
    so; the reconciler waits (never cancels, never charges again) until it ends."""
    clock = BeforeEachRetry()
    async with running(max_retries=1, clock=clock) as (fake, service, _):
        fake.inject(Fault.api_error())  # g0: a 500, nothing charged: looked up, then g1
        clock.then = lambda: [fake.set_status(pi, "processing") for pi in fake.payment_intents]
        payment = await pay(service)
        assert payment.status is PaymentStatus.UNKNOWN
        assert payment.final_error is ErrorCode.UNKNOWN_OUTCOME
        assert payment.final_error_message == (
            "step 0: the processor is still processing the charge; reconciling"
        )
        assert "lost" not in payment.final_error_message
        clock.then = None
        (pi,) = fake.payment_intents

        clock.advance(3600)
        await service.reconcile_due()
        waiting = await service.get(payment.id, "m_1")
        assert waiting.status is PaymentStatus.UNKNOWN
        assert waiting.final_error_message == payment.final_error_message
        assert waiting.steps[0].attempts[-1].operation == "lookup"
        assert fake.payment_intent(pi)["status"] == "processing"  # not canceled

        fake.set_status(pi, "succeeded")
        fake.payment_intent(pi)["amount_received"] = 5000
        clock.advance(3600)
        await service.reconcile_due()
        settled = await service.get(payment.id, "m_1")
        assert settled.status is PaymentStatus.SUCCEEDED
        assert (settled.final_error, settled.final_error_message) == (ErrorCode.NONE, "")
        assert not fake.requests_to("cancel")


async def test_an_intent_canceled_at_stripe_before_the_retry_fails_uncharged_and_the_fallback_pays():
    """Between the lookup after a 500 and the retry, the intent is canceled at Stripe
    (the dashboard, a raced request): the retry's confirm is refused, nothing was or can
    be charged there, and that is no request of ours Stripe calls invalid."""
    clock = BeforeEachRetry()
    async with running(max_retries=1, fallback_on_failure=True, clock=clock) as (fake, service, _):
        fake.inject(Fault.api_error())  # g0: a 500, nothing charged: looked up, then g1
        clock.then = lambda: [fake.set_status(pi, "canceled") for pi in list(fake.payment_intents)]
        payment = await pay(service, methods=card_then_google_pay())
        clock.then = None

        first = payment.steps[0]
        assert fake.requests_to("confirm")[1].status == 400  # payment_intent_unexpected_state
        assert first.status is StepStatus.FAILED
        assert first.error_code is ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR
        assert [attempt_violation(a) for a in first.attempts] == [None] * len(first.attempts)
        assert payment.status is PaymentStatus.SUCCEEDED  # the fallback method paid
        assert fake.charges_total == 1


async def test_a_confirm_refused_on_an_intent_whose_customer_failed_authentication_fails_at_once(
    monkeypatch,
):
    """The retry's confirm is refused (the intent moved on without it) and the lookup
    shows the customer's failed 3-D Secure: the step fails there and then as the
    reconciler would fail it (`authentication_failed`, the intent canceled so that no
    confirm with its client secret can charge it), not UNKNOWN for a later pass."""
    clock = BeforeEachRetry()
    async with running(max_retries=1, clock=clock) as (fake, service, _):
        fake.inject(Fault.api_error())  # g0: a 500, nothing charged: looked up, then g1
        clock.then = lambda: [fake.set_status(pi, "processing") for pi in fake.payment_intents]
        refuse = fake._do_confirm

        def refuse_then_fail_authentication(pi, params):
            try:
                return refuse(pi, params)
            finally:
                fake.fail_action(pi)

        monkeypatch.setattr(fake, "_do_confirm", refuse_then_fail_authentication)
        payment = await pay(service)
        clock.then = None

        step = payment.steps[0]
        assert fake.requests_to("confirm")[-1].status == 400  # payment_intent_unexpected_state
        assert (payment.status, step.status, step.outcome, step.error_code) == (
            PaymentStatus.FAILED,
            StepStatus.FAILED,
            Outcome.HARD,
            ErrorCode.AUTHENTICATION_FAILED,
        )
        assert fake.payment_intent(step.processor_payment_id)["status"] == "canceled"
        assert "PaymentReconciled" not in events_raised(service)
        assert fake.charges_total == 0


@pytest.mark.parametrize("cancel_fails", [False, True], ids=["canceled", "cancel-failed"])
async def test_a_confirm_answered_with_a_failed_authentication_fails_only_once_its_intent_is_closed(
    cancel_fails,
):
    """The customer's 3-D Secure failed within the confirm (Stripe's 400
    payment_intent_authentication_failure): the intent is canceled, then the step fails
    `authentication_failed` and the fallback method pays. A cancel that fails leaves the
    step UNKNOWN (the intent still open to another card: no fallback charged beside it)
    until the reconciler closes it and fails it the same way, then ends the plan as after
    any lost answer, the fallback not charged long after the customer left
    (docs/split-payments.md): never charged twice."""
    async with running(max_retries=1, fallback_on_failure=True) as (fake, service, _):
        fake.register_failing_authentication("pm_live_failsAuthentication")
        if cancel_fails:
            fake.inject(Fault.api_error(), endpoint="cancel")
        methods = [
            RawMethodInput("card", "pm_live_failsAuthentication"),
            RawMethodInput("google_pay", "pm_card_visa"),
        ]
        payment = await pay(service, methods=methods)
        first = payment.steps[0]
        intent = first.processor_payment_id
        if cancel_fails:
            assert (payment.status, first.status) == (PaymentStatus.UNKNOWN, StepStatus.UNKNOWN)
            assert fake.payment_intent(intent)["status"] == "requires_payment_method"
            assert fake.charges_total == 0
            assert await service.reconcile(payment)
            payment = await service.get(payment.id, "m_1")
            first = payment.steps[0]

        assert (first.status, first.outcome, first.error_code) == (
            StepStatus.FAILED,
            Outcome.HARD,
            ErrorCode.AUTHENTICATION_FAILED,
        )
        assert fake.payment_intent(intent)["status"] == "canceled"
        assert [attempt_violation(a) for a in first.attempts] == [None] * len(first.attempts)
        if cancel_fails:
            assert payment.status is PaymentStatus.FAILED
            assert fake.charges_total == 0
        else:
            assert payment.status is PaymentStatus.SUCCEEDED  # the fallback method paid
            assert fake.charges_total == 1


async def test_a_failed_authentication_whose_intent_payorch_closed_unseen_is_not_canceled_elsewhere():
    """The customer's 3-D Secure failed within the confirm and the adapter canceled the
    intent, but the lookup after its cancel went unanswered: the step waits for the
    reconciler. It finds the intent canceled with last_payment_error cleared (Stripe
    clears it on a cancel): payorch canceled it, so the step fails as the confirm's
    answer said (`authentication_failed`, never retried), not `payment_canceled_at_processor`
    and not soft, to retry later (until 2026-12-08)."""
    async with running(max_retries=1) as (fake, service, _):
        fake.register_failing_authentication("pm_live_failsAuthentication")
        fake.inject(Fault.api_error(), endpoint="retrieve")
        payment = await pay(
            service, methods=[RawMethodInput("card", "pm_live_failsAuthentication")]
        )
        (step,) = payment.steps
        assert step.status is StepStatus.UNKNOWN
        assert fake.payment_intent(step.processor_payment_id)["status"] == "canceled"
        assert fake.payment_intent(step.processor_payment_id)["last_payment_error"] is None

        assert await service.reconcile(payment)

        settled = await service.get(payment.id, "m_1")
        (step,) = settled.steps
        assert (settled.status, step.status, step.outcome, step.error_code) == (
            PaymentStatus.FAILED,
            StepStatus.FAILED,
            Outcome.HARD,
            ErrorCode.AUTHENTICATION_FAILED,
        )
        judged = judge_charge(settled)
        assert (judged.error_code, judged.retry_later) == ("authentication_failed", False)
        assert fake.charges_total == 0


# -- a revoked or rolled API key ------------------------------------------------------


async def test_a_revoked_stripe_key_fails_over_and_counts_against_stripes_health():
    simulated = SimulatedProcessor("simulated")
    async with running(then=simulated, api_key="sk_test_rolled_" + "x" * 20) as (
        fake,
        service,
        _clock,
    ):
        payment = await pay(service)

        assert payment.status is PaymentStatus.SUCCEEDED
        step = payment.steps[0]
        assert step.processor == "simulated"
        assert [(a.processor, a.raw.http_status) for a in step.attempts] == [
            ("stripe", 401),  # not retried on Stripe: the same key is refused again
            ("simulated", 0),
        ]
        assert "failing over to simulated" in step.attempts[0].retry_decision
        assert simulated.ledger.charges_total == 1 and fake.charges_total == 0
        stats = service._router.health.snapshot("stripe").stats
        assert (stats.infra_failures, stats.other) == (1, 0)


@pytest.mark.parametrize("endpoint", ["create", "confirm"])
async def test_a_stripe_key_without_a_permission_fails_over_and_stays_neutral_to_health(endpoint):
    """A 403 is refused before Stripe processes anything, as a 401 is: the step moves to
    the next processor. It may concern one endpoint only, so Stripe's health is not
    held against it."""
    simulated = SimulatedProcessor("simulated")
    async with running(then=simulated) as (fake, service, _clock):
        fake.inject(Fault.permission_error(), endpoint=endpoint)
        payment = await pay(service)

        assert payment.status is PaymentStatus.SUCCEEDED
        step = payment.steps[0]
        assert [(a.processor, a.raw.http_status) for a in step.attempts] == [
            ("stripe", 403),
            ("simulated", 0),
        ]
        assert "failing over to simulated" in step.attempts[0].retry_decision
        assert simulated.ledger.charges_total == 1 and fake.charges_total == 0
        stats = service._router.health.snapshot("stripe").stats
        assert (stats.infra_failures, stats.other) == (0, 1)


async def test_a_revoked_stripe_key_opens_its_breaker_so_payments_go_straight_elsewhere():
    simulated = SimulatedProcessor("simulated")
    async with running(
        then=simulated,
        api_key="sk_test_rolled_" + "x" * 20,
        health=HealthPolicy(min_requests=3),
    ) as (fake, service, _clock):
        for n in range(3):
            assert (await pay(service, request_id=f"r{n}")).status is PaymentStatus.SUCCEEDED

        payment = await pay(service, request_id="r3")

        assert service._router.health.breaker("stripe") is BreakerState.OPEN
        [attempt] = payment.steps[0].attempts
        assert attempt.processor == "simulated"
        assert "stripe skipped: breaker open" in attempt.routing_reason
        assert len(fake.requests) == 3 and simulated.ledger.charges_total == 4


async def test_a_revoked_stripe_key_alone_fails_the_charge_for_a_later_try_not_for_good():
    async with running(api_key="sk_test_rolled_" + "x" * 20) as (fake, service, _clock):
        payment = await pay(service)

        assert payment.status is PaymentStatus.FAILED
        assert payment.final_error is ErrorCode.PROCESSOR_AUTHENTICATION
        assert len(payment.steps[0].attempts) == 1
        # Nothing the customer did: an installment charged now is tried again later,
        # not failed for good (and its plan breached) for a key of ours.
        assert judge_charge(payment).retry_later is True
        assert fake.charges_total == 0


async def test_a_stripe_key_without_a_permission_fails_the_charge_for_a_later_try_not_for_good(
    world,
):
    """A restricted key without the permission the endpoint needs (403): our set-up,
    refused before anything was made, not the customer's doing."""
    fake, service = world
    fake.inject(Fault.permission_error(), endpoint="create")
    payment = await pay(service)

    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.PROCESSOR_PERMISSION
    # An installment charged now is tried again later (once the key is given the
    # permission), not failed for good and its plan breached for a key of ours.
    assert judge_charge(payment).retry_later is True
    assert fake.charges_total == 0


# -- a step paused for the customer ---------------------------------------------------


async def test_confirming_a_payment_the_customer_has_not_authenticated_yet_changes_nothing(world):
    fake, service = world
    payment = await pay(service, token="pm_card_authenticationRequired")
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    secret = payment.steps[0].client_secret

    for _ in range(2):  # the client asks before the customer has acted, twice
        payment = await service.confirm(payment.id, "m_1")

    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert payment.steps[0].client_secret == secret
    assert "PaymentReconciled" not in events_raised(service)
    assert fake.charges_total == 0


@pytest.mark.parametrize(
    "token",
    [
        "pm_card_authenticationRequired",
        "pm_card_threeDSecureRequired",
        "pm_card_threeDSecure2Required",
    ],
)
async def test_an_off_session_charge_stripe_declines_for_authentication_waits_for_the_customer(
    world, token
):
    """Stripe answers the off-session confirm 402 authentication_required and leaves the
    PaymentIntent open: the payment waits for the customer (as on the simulated
    processor) with that intent's client secret, so they can confirm it on-session."""
    fake, service = world
    payment = await pay(service, token=token, off_session=True)

    step = payment.steps[0]
    pi = fake.payment_intent(step.processor_payment_id)
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert step.status is StepStatus.REQUIRES_ACTION
    assert (step.next_action_type, step.client_secret) == ("use_stripe_sdk", pi["client_secret"])
    assert pi["status"] == "requires_payment_method"
    [attempt] = step.attempts
    assert (attempt.raw.http_status, attempt.raw.decline_code) == (402, "authentication_required")
    assert len(fake.requests_to("confirm")) == 1  # no retry, no other key
    # An installment charge that ends so fails for good, naming this payment to complete.
    judged = judge_charge(payment)
    assert (judged.error_code, judged.payment_id) == ("authentication_required", payment.id)

    payment = await service.confirm(payment.id, "m_1")  # before the customer acted
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert payment.steps[0].client_secret == pi["client_secret"]

    fake.complete_action(step.processor_payment_id)  # on-session, with the client secret
    payment = await service.confirm(payment.id, "m_1")
    assert payment.status is PaymentStatus.SUCCEEDED
    assert fake.charges_total == 1
    assert len(fake.requests_to("confirm")) == 1  # payorch never confirmed it again


async def test_an_off_session_authentication_decline_whose_answer_was_lost_waits_the_same(world):
    fake, service = world
    fake.inject(Fault.drop_after_processing())  # Stripe declined; the 402 never arrived

    payment = await pay(service, token="pm_card_authenticationRequired", off_session=True)

    step = payment.steps[0]
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert step.client_secret == fake.payment_intent(step.processor_payment_id)["client_secret"]
    assert fake.charges_total == 0


async def test_an_off_session_payment_whose_customer_failed_authentication_fails(world):
    fake, service = world
    payment = await pay(service, token="pm_card_authenticationRequired", off_session=True)
    fake.fail_action(payment.steps[0].processor_payment_id)

    payment = await service.confirm(payment.id, "m_1")

    assert payment.status is PaymentStatus.FAILED
    assert fake.payment_intent(payment.steps[0].processor_payment_id)["status"] == "canceled"
    assert fake.charges_total == 0


# -- refunds retried under their request_id, after Stripe forgot the key ---------------


async def refund(service, payment, request_id="rf-1", amount_minor=0):
    return await service.refund(payment.id, "m_1", amount_minor=amount_minor, request_id=request_id)


@pytest.mark.parametrize(
    "fault",
    [Fault.drop_after_processing(), Fault.api_error(charged=True)],
    ids=["answer lost", "500 over the refund"],
)
async def test_a_refund_whose_answer_was_lost_is_found_not_made_again_after_stripe_forgot_its_key(
    world, fault
):
    fake, service = world
    payment = await pay(service)
    pi = payment.steps[0].processor_payment_id
    fake.inject(fault, endpoint="refund")  # Stripe refunds; we never learn it
    tried = await refund(service, payment, amount_minor=2000)
    assert tried.steps[0].refunded_minor == 0 and tried.final_error_message

    fake.expire_idempotency_keys()  # the merchant retries a day later
    retried = await refund(service, payment, amount_minor=2000)

    assert [r["amount"] for r in fake.refunds_for(pi)] == [2000]
    assert fake.refunded_for(pi) == 2000
    assert len(fake.requests_to("refund")) == 1
    assert retried.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (retried.steps[0].refunded_minor, retried.final_error_message) == (2000, "")
    attempts = retried.steps[0].attempts
    assert [(a.operation, a.outcome) for a in attempts[1:]] == [
        ("refund", tried.steps[0].attempts[-1].outcome),
        ("lookup", Outcome.SUCCESS),
    ]
    assert attempts[-1].retry_decision == "the refund went through: not sent again"
    assert events_raised(service).count("PaymentRefunded") == 1

    again = await refund(service, payment, amount_minor=2000)  # the same once more: a replay
    assert again.steps[0].refunded_minor == 2000
    assert len(fake.requests_to("list_refunds")) == 1 and len(fake.refunds_for(pi)) == 1


async def test_a_refund_retried_after_stripe_made_none_under_its_key_is_looked_up_then_sent_once(
    world,
):
    fake, service = world
    payment = await pay(service)
    pi = payment.steps[0].processor_payment_id
    fake.inject(Fault.drop_before_processing(), endpoint="refund")  # never reached Stripe
    tried = await refund(service, payment)
    assert tried.steps[0].attempts[-1].outcome is Outcome.UNKNOWN

    fake.expire_idempotency_keys()
    retried = await refund(service, payment)

    assert retried.status is PaymentStatus.REFUNDED
    assert [r["amount"] for r in fake.refunds_for(pi)] == [5000]
    assert [a.operation for a in retried.steps[0].attempts] == [
        "authorize",
        "refund",
        "lookup",
        "refund",
    ]
    assert len(fake.requests_to("list_refunds")) == 1
    sent = fake.requests_to("refund")
    assert len(sent) == 2 and sent[0].idempotency_key == sent[1].idempotency_key
    assert sent[0].params == sent[1].params


async def test_the_first_try_of_a_refund_part_sends_it_with_its_key_and_looks_nothing_up(world):
    fake, service = world
    payment = await pay(
        service,
        methods=[
            RawMethodInput("apple_pay", "pm_card_visa", 3000),
            RawMethodInput("card", "pm_card_visa"),
        ],
    )

    refunded = await refund(service, payment, amount_minor=4000)

    assert refunded.status is PaymentStatus.PARTIALLY_REFUNDED
    assert fake.requests_to("list_refunds") == []
    sent = fake.requests_to("refund")
    assert [r.params["amount"] for r in sent] == ["2000", "2000"]
    assert [r.params["metadata"] for r in sent] == [
        {"payorch_refund_key": r.idempotency_key} for r in sent
    ]


async def test_a_refund_lookup_stripe_cannot_answer_sends_nothing_and_the_next_retry_finds_it(
    world,
):
    fake, service = world
    payment = await pay(service)
    pi = payment.steps[0].processor_payment_id
    fake.inject(Fault.drop_after_processing(), endpoint="refund")
    await refund(service, payment)
    fake.expire_idempotency_keys()
    fake.inject(Fault.api_error(), endpoint="list_refunds")

    unsure = await refund(service, payment)

    assert unsure.steps[0].refunded_minor == 0
    assert unsure.final_error_message == (
        "5000 of refund 'rf-1' could not be refunded; retry it with the same request_id"
    )
    lookup = unsure.steps[0].attempts[-1]
    assert (lookup.operation, lookup.outcome) == ("lookup", Outcome.SOFT)
    assert lookup.retry_decision == "no answer: the refund is not sent again"
    assert len(fake.requests_to("refund")) == 1

    settled = await refund(service, payment)

    assert settled.status is PaymentStatus.REFUNDED
    assert len(fake.requests_to("refund")) == 1 and len(fake.refunds_for(pi)) == 1


# -- amounts in Stripe's units, which are not always ISO-4217's minor units -------------


@pytest.mark.parametrize(
    ("currency", "total", "refunded", "at_stripe"),
    [
        # ISO-4217 gives ISK no decimals; Stripe's API keeps two (100 is 1 krona).
        ("ISK", 500, 200, (50_000, 20_000)),
        # UGX too: none in ISO-4217, two in Stripe's API (sent unscaled, Stripe charged a
        # hundredth of it).
        ("UGX", 5_000, 2_000, (500_000, 200_000)),
        # ISO-4217 gives MGA two decimals; Stripe counts it in whole ariary.
        ("MGA", 100_000, 30_000, (1_000, 300)),
    ],
    ids=["500 kronur", "5000 shillings", "1000.00 ariary"],
)
async def test_a_payment_is_charged_and_refunded_in_the_units_stripe_counts_its_currency_in(
    world, currency, total, refunded, at_stripe
):
    fake, service = world
    payment = await pay(service, total=total, currency=currency)
    pi = payment.steps[0].processor_payment_id
    assert payment.status is PaymentStatus.SUCCEEDED

    after = await refund(service, payment, amount_minor=refunded)

    assert after.steps[0].refunded_minor == refunded
    charged, given_back = at_stripe
    assert fake.payment_intent(pi)["amount"] == charged
    assert [r["amount"] for r in fake.refunds_for(pi)] == [given_back]


@pytest.mark.parametrize(
    ("total", "currency"),
    [(100_050, "MGA"), (5_124, "KWD")],
    ids=["half an ariary", "a fils off the ten"],
)
async def test_an_amount_stripe_cannot_charge_in_its_currency_is_refused_before_any_call(
    world, total, currency
):
    fake, service = world
    payment = await pay(service, total=total, currency=currency)

    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.INVALID_REQUEST
    attempt = payment.steps[0].attempts[-1]
    assert attempt.raw.code == "amount_not_chargeable_in_currency"
    assert currency in attempt.raw.message
    assert fake.requests == [] and fake.charges_total == 0


async def test_a_three_decimal_amount_ending_in_zero_is_sent_as_it_is(world):
    fake, service = world
    payment = await pay(service, total=5_120, currency="KWD")  # 5.120 dinar
    assert payment.status is PaymentStatus.SUCCEEDED
    assert fake.payment_intent(payment.steps[0].processor_payment_id)["amount"] == 5_120


@pytest.fixture
async def stored(database_url, clock):
    """The stored service (SQLite, PostgreSQL) on the fake Stripe, through the real SDK."""
    async with FakeStripe(clock=clock) as fake:
        container = await make_stripe_container(database_url, clock, fake)
        yield fake, container.payments
        await container.close()
        await fake.wait_idle()


def split_request(request_id, *, authorize_only=False):
    raw = RawPaymentRequest(
        merchant_id="m_1",
        request_id=request_id,
        amount_minor=10000,
        currency="USD",
        methods=[
            RawMethodInput("apple_pay", "pm_card_visa", 6000),
            RawMethodInput("card", "pm_card_visa"),
        ],
        authorize_only=authorize_only,
    )
    return parse_payment_request(raw)


class Died(Exception):
    """The server died here."""


async def test_a_stored_charge_whose_server_died_is_found_a_day_later_after_stripe_forgot_its_keys(
    stored, clock
):
    fake, payments = stored
    uow = payments._uow

    async def die(payment):
        raise Died  # after Stripe charged, before the answer was stored

    uow.update_payment = die
    with pytest.raises(Died):
        await payments.create(
            parse_payment_request(
                RawPaymentRequest(
                    merchant_id="m_1",
                    request_id="r-died",
                    amount_minor=5000,
                    currency="USD",
                    payment_method="pm_card_visa",
                )
            ),
            deadline_s=None,
        )
    del uow.update_payment
    [pi] = fake.payment_intents
    assert fake.charges_total == 1

    clock.advance(25 * 3600)  # reconciled a day later: Stripe pruned the create's key
    assert await payments.reconcile_due() == 1

    [found] = await payments.list("m_1", page_size=10, after=None)
    assert found.status is PaymentStatus.SUCCEEDED
    assert found.steps[0].processor_payment_id == pi
    assert list(fake.payment_intents) == [pi] and fake.charges_total == 1


def tries(fake, step, endpoint):
    """Whether each of the step's calls to `endpoint` got an answer Stripe replayed."""
    return [r.replayed for r in fake.requests_to(endpoint) if step.processor_payment_id in r.path]


# Stripe stores a 424 (External Dependency Failed) under the key as it stores a 500.
STORED_FAILURES = pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault.api_error(), 500), (Fault.dependency_failed(), 424)],
    ids=["500", "424"],
)


@STORED_FAILURES
async def test_a_capture_owed_after_a_stored_failure_is_made_under_the_next_key_within_the_day(
    stored, clock, fault, status
):
    fake, payments = stored
    fake.inject(fault, endpoint="capture")
    created = (await payments.create(split_request("r-owed-capture"), deadline_s=None)).payment
    owed = await payments.get(created.id, "m_1")
    assert (owed.status, owed.owed) == (PaymentStatus.AUTHORIZED, Owed.CAPTURE)

    # Within Stripe's 24 hours the first key only replays its stored failure; the lookup
    # shows the intent still requires_capture, so the capture is made under the next key.
    clock.advance(61)
    assert await payments.reconcile_due() == 1
    done = await payments.get(created.id, "m_1")
    assert (done.status, done.owed) == (PaymentStatus.SUCCEEDED, Owed.NOTHING)
    first = done.steps[0]
    assert fake.payment_intent(first.processor_payment_id)["status"] == "succeeded"
    captures = [a for a in first.attempts if a.operation == "capture"]
    assert [a.raw.http_status for a in captures] == [status, status, 0]
    keys = [a.idempotency_key for a in captures]
    assert keys[0] == keys[1] and keys[2] == keys[0] + "_g1"
    assert tries(fake, first, "capture") == [False, True, False]


@STORED_FAILURES
async def test_a_void_owed_after_a_stored_failure_is_made_under_the_next_key_within_the_day(
    stored, clock, fault, status
):
    fake, payments = stored
    request = split_request("r-owed-void", authorize_only=True)
    created = (await payments.create(request, deadline_s=None)).payment
    fake.inject(fault, endpoint="cancel")
    await payments.cancel(created.id, "m_1", "customer changed their mind")
    owed = await payments.get(created.id, "m_1")
    assert owed.owed is Owed.VOID and owed.steps[0].status is StepStatus.AUTHORIZED

    clock.advance(61)
    assert await payments.reconcile_due() == 1
    done = await payments.get(created.id, "m_1")
    assert done.owed is Owed.NOTHING
    first = done.steps[0]
    assert first.status is StepStatus.VOIDED
    assert fake.payment_intent(first.processor_payment_id)["status"] == "canceled"
    voids = [a.idempotency_key for a in first.attempts if a.operation == "void"]
    assert voids[0] == voids[1] and voids[2] == voids[0] + "_g1"
    assert tries(fake, first, "cancel") == [False, True, False]


async def test_an_owed_capture_whose_answer_was_lost_is_tried_again_under_the_same_key(
    stored, clock
):
    fake, payments = stored
    fake.inject(Fault.drop_before_processing(), endpoint="capture")
    created = (await payments.create(split_request("r-owed-lost"), deadline_s=None)).payment
    assert (await payments.get(created.id, "m_1")).owed is Owed.CAPTURE

    clock.advance(61)
    assert await payments.reconcile_due() == 1
    first = (await payments.get(created.id, "m_1")).steps[0]
    keys = {a.idempotency_key for a in first.attempts if a.operation == "capture"}
    assert len(keys) == 1 and first.status is StepStatus.CAPTURED


@pytest.mark.parametrize(
    ("operation", "at_stripe", "recorded"),
    [
        ("capture", "succeeded", StepStatus.CAPTURED),
        ("cancel", "canceled", StepStatus.VOIDED),
    ],
)
async def test_a_capture_or_cancel_whose_caller_went_away_still_records_what_stripe_did(
    world, operation, at_stripe, recorded
):
    """The client's deadline passed, or the server stopping cancelled the RPC, while
    Stripe made the call: it is recorded all the same, not left looking held with
    nothing owed (which no reconciler looks at)."""
    fake, service = world
    held = await pay(service, request_id="r-cut", authorize_only=True)
    pi_id = held.steps[0].processor_payment_id
    fake.inject(Fault.slow(0.3, process=True), endpoint=operation)
    made, late = asyncio.Event(), fake._sleep

    async def made_then_answered_late(seconds: float) -> None:
        made.set()
        await late(seconds)

    fake._sleep = made_then_answered_late
    if operation == "capture":
        calling = asyncio.ensure_future(service.capture(held.id, "m_1"))
    else:
        calling = asyncio.ensure_future(service.cancel(held.id, "m_1", "order withdrawn"))
    await made.wait()
    assert fake.payment_intent(pi_id)["status"] == at_stripe
    calling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await calling

    await service.finish_in_flight()
    stored = await service.get(held.id, "m_1")
    assert stored.steps[0].status is recorded


# -- a paused payment payorch gave up, its void's answer lost -----------------------------


@pytest.mark.parametrize("sent", [True, False], ids=["canceled", "cancel-never-sent"])
async def test_a_paused_payment_given_up_with_its_void_unanswered_ends_cancelled(sent):
    """An hour on, the reconciler gives a payment paused for 3-D Secure up: the cancel
    reaches Stripe (or not) and its answer is lost, and the lookup after it too. The
    next pass finds the intent canceled: payorch's void, read as answered, the step
    voided and the payment cancelled (until 2026-12-08 it failed soft, `interrupted`).
    A cancel that never reached Stripe leaves the intent open: it is made again."""
    async with running() as (fake, service, clock):
        payment = await pay(service, token="pm_card_authenticationRequired")
        (step,) = payment.steps
        assert step.status is StepStatus.REQUIRES_ACTION
        dropped = Fault.drop_after_processing() if sent else Fault.drop_before_processing()
        fake.inject(dropped, endpoint="cancel")
        # The lookup before the cancel is answered; none after it is.
        fake.inject(Fault.none(), *[Fault.drop_before_processing()] * 3, endpoint="retrieve")
        clock.advance(3600)
        assert await service.reconcile_due() == 0
        fake.clear_faults()
        assert (fake.payment_intent(step.processor_payment_id)["status"] == "canceled") is sent
        assert (await service.get(payment.id, "m_1")).status is PaymentStatus.REQUIRES_ACTION

        clock.advance(300)
        assert await service.reconcile_due() == 1

        done = await service.get(payment.id, "m_1")
        assert (done.status, [s.status for s in done.steps]) == (
            PaymentStatus.CANCELLED,
            [StepStatus.VOIDED],
        )
        assert "StepFailed" not in events_raised(service)
        assert events_raised(service)[-1] == "PaymentCancelled"
        assert fake.payment_intent(step.processor_payment_id)["status"] == "canceled"
        assert fake.charges_total == 0
