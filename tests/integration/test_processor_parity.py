"""One scenario table, run against both processors: Stripe's test PaymentMethods mean
the same thing to the simulated processor as to Stripe (docs/recovery.md, "One suite
for both processors").

Every row is a test PaymentMethod both processors know, charged on-session and
off-session through the real PaymentService and router: a sale then a refund, an
authorization then a capture, an authorization then a void (completing 3-D Secure
first where the card asks for it). The expected values come from this table alone,
written from Stripe's documentation of its test cards and from docs/classification.md,
never from either processor: a row that passes on one and fails on the other is a bug
in that processor (or in the fake Stripe), not a second truth.

Only what payorch shows is compared. Where a processor keeps its own state that
payorch never reads the same way, the row says so: a 3-D Secure charge paused
off-session leaves Stripe's PaymentIntent in ``requires_payment_method`` (the 402
``authentication_required``), the simulated one in ``requires_action``; for payorch
both are the same pause, with a client secret for the customer.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors import simulated
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.adapters.processors.stripe import StripeProcessor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import PaymentService
from payorch.app.ports import Processor
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.installments import judge_charge
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Payment, PaymentStatus, StepStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome
from payorch.domain.retry import RetryPolicy
from tests.fakes.fake_stripe import FakeStripe, Fault
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory

AMOUNT = 5000
MAX_RETRIES = 2


@dataclass(frozen=True)
class Declined:
    """A card the bank declines: what payorch makes of it (the classification table's
    row for Stripe's error) and Stripe's raw error code and decline code."""

    outcome: Outcome
    error_code: ErrorCode
    retry_later: bool
    code: str
    decline_code: str
    # Authorize calls: a processing_error is retried now, each time under the next key.
    authorize_calls: int = 1


SUCCEEDS = "succeeds"
# 3-D Secure whatever the session (4000002760003184, 4000000000003063, 4000000000003220).
AUTHENTICATES = "authenticates"
# 3-D Secure on-session; off-session it goes through once set up (4000002500003155).
AUTHENTICATES_ON_SESSION = "authenticates on-session"

Behaviour = str | Declined

# Stripe's test PaymentMethods both processors know, and what each means
# (docs.stripe.com/testing: "Declined payments", "Authentication and setup").
CARDS: dict[str, Behaviour] = {
    **{
        pm: SUCCEEDS
        for pm in (
            "pm_card_visa",
            "pm_card_visa_debit",
            "pm_card_mastercard",
            "pm_card_mastercard_debit",
            "pm_card_mastercard_prepaid",
            "pm_card_amex",
            "pm_card_discover",
            "pm_card_diners",
            "pm_card_jcb",
            "pm_card_unionpay",
            "pm_card_us",
            "pm_card_gb",
            "pm_card_de",
            "pm_card_fr",
            "pm_card_br",
        )
    },
    "pm_card_chargeDeclined": Declined(
        Outcome.HARD, ErrorCode.CARD_DECLINED, True, "card_declined", "generic_decline"
    ),
    "pm_card_chargeDeclinedInsufficientFunds": Declined(
        Outcome.SOFT, ErrorCode.INSUFFICIENT_FUNDS, True, "card_declined", "insufficient_funds"
    ),
    "pm_card_chargeDeclinedLostCard": Declined(
        Outcome.HARD, ErrorCode.LOST_CARD, False, "card_declined", "lost_card"
    ),
    "pm_card_chargeDeclinedStolenCard": Declined(
        Outcome.HARD, ErrorCode.STOLEN_CARD, False, "card_declined", "stolen_card"
    ),
    "pm_card_chargeDeclinedFraudulent": Declined(
        Outcome.HARD, ErrorCode.FRAUDULENT, False, "card_declined", "fraudulent"
    ),
    "pm_card_chargeDeclinedVelocityLimitExceeded": Declined(
        Outcome.SOFT, ErrorCode.CARD_DECLINED, True, "card_declined", "card_velocity_exceeded"
    ),
    # Stripe names these three by their error code, not card_declined.
    "pm_card_chargeDeclinedExpiredCard": Declined(
        Outcome.HARD, ErrorCode.EXPIRED_CARD, False, "expired_card", "expired_card"
    ),
    "pm_card_chargeDeclinedIncorrectCvc": Declined(
        Outcome.HARD, ErrorCode.INCORRECT_CVC, False, "incorrect_cvc", "incorrect_cvc"
    ),
    "pm_card_chargeDeclinedProcessingError": Declined(
        Outcome.SOFT,
        ErrorCode.PROCESSING_ERROR,
        True,
        "processing_error",
        "processing_error",
        authorize_calls=1 + MAX_RETRIES,
    ),
    "pm_card_authenticationRequired": AUTHENTICATES,
    "pm_card_threeDSecureRequired": AUTHENTICATES,
    "pm_card_threeDSecure2Required": AUTHENTICATES,
    "pm_card_authenticationRequiredOnSetup": AUTHENTICATES_ON_SESSION,
}

ROWS = [
    pytest.param(token, off_session, id=f"{token}-{'off' if off_session else 'on'}-session")
    for token in CARDS
    for off_session in (False, True)
]


@dataclass
class Rig:
    service: PaymentService
    # The customer completes 3-D Secure for the processor's payment (Stripe.js's part).
    complete_action: Callable[[str], None]
    charges: Callable[[], int]
    # The customer fails 3-D Secure for the processor's payment.
    fail_action: Callable[[str], None]
    # The processor's own status of its payment object.
    status_of: Callable[[str], str]
    # Someone else cancels the processor's payment (its dashboard, another system).
    cancel_there: Callable[[str], None]
    # The bank declines the PaymentMethod `authentication_required` whatever the session,
    # as a live issuer may (Stripe has no test card that does so on-session).
    declined_for_authentication: Callable[[str], None]
    # The next charge is processed, then its answer is lost: "500" (a 500 stored under
    # its key) or "lost" (no answer, to it and to the retries under the same key).
    lose_answer: Callable[[str], None]
    # The processor's payment objects, oldest first.
    intents: Callable[[], list[str]]


@contextlib.asynccontextmanager
async def _service(processor: Processor, clock: ManualClock) -> AsyncIterator[PaymentService]:
    processors = {processor.name: processor}
    router = Router(processors, clock, call_timeout_s=5.0, rng=random.Random(3))
    configs = MerchantConfigs(
        FakeMerchantConfigStore(),
        clock,
        list(processors),
        defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=MAX_RETRIES)),
    )
    yield PaymentService(
        FakeUnitOfWorkFactory(), router, clock, configs, Settlement(router.processors, clock)
    )


async def _no_sleep(_seconds: float) -> None:
    return None


AUTHENTICATION_REQUIRED = simulated.AUTHENTICATION_REQUIRED


@pytest.fixture(params=["simulated", "stripe"])
async def rig(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    clock = ManualClock()
    if request.param == "simulated":
        sim = SimulatedProcessor("simulated", sleep=_no_sleep)
        async with _service(sim, clock) as service:

            def fail(pi: str) -> None:
                sim.authenticate(pi, sim.ledger.by_id[pi].client_secret, passed=False)

            def lose_answer(how: str) -> None:
                # A replay of a stored answer is answered: the retries reach nothing.
                sim.inject(
                    *(["charged_api_error"] if how == "500" else ["lost_response"])
                    + ["timeout"] * MAX_RETRIES * (how == "lost")
                )

            yield Rig(
                service,
                sim.complete_action,
                lambda: sim.ledger.charges_total,
                fail,
                lambda pi: sim.ledger.by_id[pi].status,
                lambda pi: sim.ledger.by_id[pi].cancel(),
                lambda pm: monkeypatch.setitem(simulated.DECLINES, pm, AUTHENTICATION_REQUIRED),
                lose_answer,
                lambda: list(sim.ledger.by_id),
            )
        return
    async with FakeStripe(clock=clock) as fake:
        stripe = StripeProcessor(fake.api_key, api_base=fake.url, timeout_s=5.0, clock=clock)
        async with _service(stripe, clock) as service:

            def decline_for_authentication(pm: str) -> None:
                code, decline_code, _ = AUTHENTICATION_REQUIRED
                fake.register_declined_payment_method(pm, code=code, decline_code=decline_code)

            def lose_answer_at_stripe(how: str) -> None:
                if how == "500":
                    fake.inject(Fault.api_error(charged=True))
                else:
                    fake.inject(*[Fault.drop_after_processing()] * (1 + MAX_RETRIES))

            yield Rig(
                service,
                fake.complete_action,
                lambda: fake.charges_total,
                fake.fail_action,
                lambda pi: str(fake.payment_intent(pi)["status"]),
                lambda pi: fake.set_status(pi, "canceled"),
                decline_for_authentication,
                lose_answer_at_stripe,
                lambda: list(fake.payment_intents),
            )
        await stripe.aclose()
        await fake.wait_idle()


async def _pay(rig: Rig, name: str, token: str, *, off_session: bool, authorize_only: bool):
    raw = RawPaymentRequest(
        merchant_id="m_1",
        request_id=name,
        amount_minor=AMOUNT,
        currency="USD",
        payment_method=token,
        authorize_only=authorize_only,
        off_session=off_session,
    )
    return (await rig.service.create(parse_payment_request(raw), deadline_s=None)).payment


def _seen(payment: Payment) -> tuple[PaymentStatus, StepStatus, Outcome | None, ErrorCode]:
    [step] = payment.steps
    return payment.status, step.status, step.outcome, payment.final_error


def _asks_for_authentication(behaviour: Behaviour, off_session: bool) -> bool:
    return behaviour == AUTHENTICATES or (behaviour == AUTHENTICATES_ON_SESSION and not off_session)


def _assert_paused(payment: Payment) -> None:
    """Waiting for the customer, with what Stripe.js needs to bring them back."""
    [step] = payment.steps
    assert _seen(payment) == (
        PaymentStatus.REQUIRES_ACTION,
        StepStatus.REQUIRES_ACTION,
        Outcome.REQUIRES_ACTION,
        ErrorCode.NONE,
    )
    # The attempt's own classification too. Its raw fields are Stripe's: off-session, the
    # 402 authentication_required Stripe answers (docs/classification.md), on both
    # processors (until 2026-12-08 the simulated one gave none); on-session, none.
    assert [(a.outcome, a.error_code) for a in step.attempts] == [
        (Outcome.REQUIRES_ACTION, ErrorCode.NONE)
    ]
    raw = step.attempts[0].raw
    assert (raw.http_status, raw.type, raw.code, raw.decline_code) == (
        (402, "card_error", "authentication_required", "authentication_required")
        if payment.off_session
        else (0, "", "", "")
    )
    assert step.next_action_type == "use_stripe_sdk"
    assert step.client_secret.startswith(step.processor_payment_id + "_secret_")
    # An installment charged so waits for its customer: never retried later.
    judged = judge_charge(payment)
    assert (judged.error_code, judged.retry_later) == ("authentication_required", False)


def _assert_no_action(payment: Payment) -> None:
    [step] = payment.steps
    assert (step.next_action_type, step.client_secret) == ("", "")


def _assert_failed_for_good(payment: Payment, outcome: Outcome, error_code: ErrorCode) -> None:
    """Failed with nothing for the customer to do, and never charged again: not now, not
    on the dunning ladder."""
    assert _seen(payment) == (PaymentStatus.FAILED, StepStatus.FAILED, outcome, error_code)
    _assert_no_action(payment)
    judged = judge_charge(payment)
    assert (judged.error_code, judged.retry_later) == (error_code.value, False)


async def _charged(rig: Rig, payment: Payment, behaviour: Behaviour, off_session: bool) -> Payment:
    """The payment once its card went through: after 3-D Secure if it asked for it."""
    if not _asks_for_authentication(behaviour, off_session):
        _assert_no_action(payment)
        return payment
    _assert_paused(payment)
    unchanged = await rig.service.confirm(payment.id, "m_1")  # before the customer acted
    assert unchanged.status is PaymentStatus.REQUIRES_ACTION
    rig.complete_action(payment.steps[0].processor_payment_id)
    return await rig.service.confirm(payment.id, "m_1")


@pytest.mark.parametrize(("token", "off_session"), ROWS)
async def test_a_test_card_means_the_same_on_both_processors(rig: Rig, token, off_session):
    behaviour = CARDS[token]
    if isinstance(behaviour, Declined):
        await _declined(rig, token, behaviour, off_session=off_session)
        return

    # A sale, then a refund of all of it.
    sale = await _pay(rig, "sale", token, off_session=off_session, authorize_only=False)
    sale = await _charged(rig, sale, behaviour, off_session)
    assert _seen(sale) == (
        PaymentStatus.SUCCEEDED,
        StepStatus.CAPTURED,
        Outcome.SUCCESS,
        ErrorCode.NONE,
    )
    assert sale.steps[0].captured_minor == AMOUNT
    refunded = await rig.service.refund(sale.id, "m_1", amount_minor=0, request_id="rf")
    assert (refunded.status, refunded.steps[0].status) == (
        PaymentStatus.REFUNDED,
        StepStatus.REFUNDED,
    )
    assert refunded.steps[0].refunded_minor == AMOUNT

    # An authorization, then its capture.
    held = await _pay(rig, "held", token, off_session=off_session, authorize_only=True)
    held = await _charged(rig, held, behaviour, off_session)
    assert _seen(held) == (
        PaymentStatus.AUTHORIZED,
        StepStatus.AUTHORIZED,
        Outcome.SUCCESS,
        ErrorCode.NONE,
    )
    captured = await rig.service.capture(held.id, "m_1")
    assert _seen(captured)[:2] == (PaymentStatus.SUCCEEDED, StepStatus.CAPTURED)
    assert captured.steps[0].captured_minor == AMOUNT

    # An authorization (or a charge waiting for the customer), then its void.
    voided = await _pay(rig, "voided", token, off_session=off_session, authorize_only=True)
    if _asks_for_authentication(behaviour, off_session):
        _assert_paused(voided)
    else:
        assert voided.status is PaymentStatus.AUTHORIZED
    voided = await rig.service.cancel(voided.id, "m_1", "requested_by_customer")
    assert (voided.status, voided.steps[0].status) == (PaymentStatus.CANCELLED, StepStatus.VOIDED)

    # The sale's charge and two authorizations; one waiting for the customer charged nothing.
    assert rig.charges() == (2 if _asks_for_authentication(behaviour, off_session) else 3)


async def _declined(rig: Rig, token: str, declined: Declined, *, off_session: bool) -> None:
    for authorize_only in (False, True):
        name = "held" if authorize_only else "sale"
        payment = await _pay(
            rig, name, token, off_session=off_session, authorize_only=authorize_only
        )
        assert _seen(payment) == (
            PaymentStatus.FAILED,
            StepStatus.FAILED,
            declined.outcome,
            declined.error_code,
        )
        _assert_no_action(payment)
        judged = judge_charge(payment)
        assert (judged.error_code, judged.retry_later) == (
            declined.error_code.value,
            declined.retry_later,
        )
        authorizes = [a for a in payment.steps[0].attempts if a.operation == "authorize"]
        assert len(authorizes) == declined.authorize_calls
        assert {(a.raw.http_status, a.raw.code, a.raw.decline_code) for a in authorizes} == {
            (402, declined.code, declined.decline_code)
        }
    assert rig.charges() == 0


@pytest.mark.parametrize(
    ("token", "off_session"),
    [
        pytest.param(token, off_session, id=f"{token}-{'off' if off_session else 'on'}-session")
        for token, behaviour in CARDS.items()
        for off_session in (False, True)
        if isinstance(behaviour, str) and _asks_for_authentication(behaviour, off_session)
    ],
)
@pytest.mark.parametrize("authorize_only", [False, True], ids=["sale", "authorization"])
async def test_a_failed_challenge_ends_the_same_on_both_processors(
    rig: Rig, token, off_session, authorize_only
):
    """The customer failed 3-D Secure: nothing charged, the intent canceled so that no
    later confirm (another card) can charge a payment recorded failed, and the payment
    failed as docs/classification.md says (Off-session authentication)."""
    paused = await _pay(
        rig, "failed", token, off_session=off_session, authorize_only=authorize_only
    )
    _assert_paused(paused)
    intent = paused.steps[0].processor_payment_id

    rig.fail_action(intent)
    failed = await rig.service.confirm(paused.id, "m_1")

    # The customer's failed authentication, as Stripe's last_payment_error says: hard,
    # never retried by payorch (docs/classification.md, `authentication_failed`).
    assert _seen(failed) == (
        PaymentStatus.FAILED,
        StepStatus.FAILED,
        Outcome.HARD,
        ErrorCode.AUTHENTICATION_FAILED,
    )
    assert failed.final_error is ErrorCode.AUTHENTICATION_FAILED
    # No charge tried again: the pause's authorize, then the close of the intent.
    assert [a.operation for a in failed.steps[0].attempts] == [
        "authorize",
        "lookup",
        "void",
        "lookup",
    ]
    assert failed.steps[0].attempts[1].raw.code == "payment_intent_authentication_failure"
    assert rig.status_of(intent) == "canceled"
    assert rig.charges() == 0
    again = await rig.service.confirm(paused.id, "m_1")
    assert _seen(again) == _seen(failed)


@pytest.mark.parametrize(
    ("token", "off_session"),
    [
        pytest.param(token, off_session, id=f"{token}-{'off' if off_session else 'on'}-session")
        for token, behaviour in CARDS.items()
        for off_session in (False, True)
        if isinstance(behaviour, str) and _asks_for_authentication(behaviour, off_session)
    ],
)
async def test_a_paused_payment_canceled_at_the_processor_ends_the_same_on_both_processors(
    rig: Rig, token, off_session
):
    """Waiting for the customer, its payment canceled at the processor by someone else:
    not interrupted, nor canceled by payorch: `payment_canceled_at_processor`, nothing
    charged, nothing tried again (docs/classification.md)."""
    paused = await _pay(rig, "canceled", token, off_session=off_session, authorize_only=False)
    _assert_paused(paused)
    intent = paused.steps[0].processor_payment_id

    rig.cancel_there(intent)
    failed = await rig.service.confirm(paused.id, "m_1")

    assert _seen(failed) == (
        PaymentStatus.FAILED,
        StepStatus.FAILED,
        Outcome.HARD,
        ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR,
    )
    assert [a.operation for a in failed.steps[0].attempts] == ["authorize", "lookup"]
    assert rig.charges() == 0


async def _declined_for_authentication_answered_and_lost(
    rig: Rig, how: str, *, off_session: bool
) -> tuple[Payment, Payment]:
    """Two payments the bank declines `authentication_required`: one answered at once,
    one whose answer is lost `how` ("500", "lost"), settled by its lookup (the router's
    after the 500, the reconciler's after the timeouts)."""
    # Two cards: a PaymentMethod not saved on a customer is spent by its decline.
    for card in ("pm_live_authRequired1", "pm_live_authRequired2"):
        rig.declined_for_authentication(card)
    direct = await _pay(
        rig, "direct", "pm_live_authRequired1", off_session=off_session, authorize_only=False
    )
    rig.lose_answer(how)
    looked = await _pay(
        rig, "looked", "pm_live_authRequired2", off_session=off_session, authorize_only=False
    )
    if how == "lost":
        assert looked.status is PaymentStatus.UNKNOWN
        assert await rig.service.reconcile(looked)
        looked = await rig.service.get(looked.id, "m_1")
    return direct, looked


@pytest.mark.parametrize("how", ["500", "lost"])
async def test_an_on_session_authentication_decline_found_by_a_lookup_reads_as_answered(
    rig: Rig, how
):
    """The bank declined an on-session charge `authentication_required` and the answer was
    lost (a 500 stored over it, or no answer at all): the lookup that finds the decline on
    the processor's payment (the router's after the 500, the reconciler's after the
    timeouts) reads it as the confirm's answer read, not as `interrupted` or the lost
    answer's own code. The customer was there: the decline is no pause, and no one
    charges the card again for it (docs/classification.md, Off-session authentication)."""
    direct, looked = await _declined_for_authentication_answered_and_lost(
        rig, how, off_session=False
    )

    expected = (
        PaymentStatus.FAILED,
        StepStatus.FAILED,
        Outcome.REQUIRES_ACTION,
        ErrorCode.AUTHENTICATION_REQUIRED,
    )
    assert _seen(direct) == _seen(looked) == expected
    for payment in (direct, looked):
        _assert_no_action(payment)
        judged = judge_charge(payment)
        assert (judged.error_code, judged.retry_later) == ("authentication_required", False)
        authorizes = [a for a in payment.steps[0].attempts if a.operation == "authorize"]
        assert len({a.idempotency_key for a in authorizes}) == 1  # never under another key
    assert rig.charges() == 0


@pytest.mark.parametrize("off_session", [False, True], ids=["on-session", "off-session"])
async def test_a_bank_asking_for_authentication_means_the_same_on_both_processors(
    rig: Rig, off_session
):
    """A live card the bank declines `authentication_required` whatever the session (no
    Stripe test card does so on-session). Off-session, Stripe answers the confirm with the
    402 and leaves the PaymentIntent open, its client secret letting the customer confirm
    it on-session: payorch pauses the step for them, and once they pass 3-D Secure the
    payment goes on, charged once. On-session the customer was there: the decline stands,
    `authentication_required`, never retried (docs/classification.md, Off-session
    authentication). Until 2026-12-08 the simulated processor failed it off-session too,
    where Stripe pauses it."""
    rig.declined_for_authentication("pm_live_authRequired")
    payment = await _pay(
        rig, "asked", "pm_live_authRequired", off_session=off_session, authorize_only=False
    )

    if off_session:
        _assert_paused(payment)
        rig.complete_action(payment.steps[0].processor_payment_id)
        charged = await rig.service.confirm(payment.id, "m_1")
        assert _seen(charged) == (
            PaymentStatus.SUCCEEDED,
            StepStatus.CAPTURED,
            Outcome.SUCCESS,
            ErrorCode.NONE,
        )
        assert charged.steps[0].client_secret == ""  # kept only while it waited
        assert rig.charges() == 1
        return
    _assert_failed_for_good(payment, Outcome.REQUIRES_ACTION, ErrorCode.AUTHENTICATION_REQUIRED)
    [authorize] = payment.steps[0].attempts
    assert (authorize.raw.http_status, authorize.raw.code) == (402, "authentication_required")
    assert rig.charges() == 0


def _read(payment: Payment) -> tuple[object, ...]:
    """What payorch shows of a one-step payment: its verdict, the step's own error code,
    what it hands the frontend, and what an installment charged so would do next."""
    [step] = payment.steps
    judged = judge_charge(payment)
    return (
        *_seen(payment),
        step.error_code,
        step.next_action_type,
        bool(step.client_secret),
        judged.error_code,
        judged.retry_later,
    )


@pytest.mark.parametrize("how", ["500", "lost"])
async def test_an_off_session_authentication_decline_found_by_a_lookup_reads_as_answered(
    rig: Rig, how
):
    """Off-session, the bank declined a charge `authentication_required` and the answer
    was lost (a 500 stored over it, or no answer at all): the lookup that finds the
    decline (the router's after the 500, the reconciler's after the timeouts) reads as
    the confirm's own answer read: the pause for the customer (the intent left open,
    its client secret), on both processors (until 2026-12-08 the simulated one failed
    it). Never soft, to charge again later: only the customer can clear it
    (docs/classification.md, Off-session authentication)."""
    direct, looked = await _declined_for_authentication_answered_and_lost(
        rig, how, off_session=True
    )

    _assert_paused(direct)
    assert _read(looked) == _read(direct)
    judged = judge_charge(looked)
    assert (judged.error_code, judged.retry_later) == ("authentication_required", False)
    for payment in (direct, looked):
        authorizes = [a for a in payment.steps[0].attempts if a.operation == "authorize"]
        assert len({a.idempotency_key for a in authorizes}) == 1  # never under another key
    assert rig.charges() == 0


@pytest.mark.parametrize("off_session", [False, True], ids=["on-session", "off-session"])
async def test_a_lost_answer_whose_intent_was_canceled_at_the_processor_ends_as_a_paused_one(
    rig: Rig, off_session
):
    """An authorization whose answer was lost, its payment then canceled at the processor
    by someone else (the merchant in its dashboard, another system) before the reconciler
    looked: the hold is gone and the merchant meant it. It ends as a paused payment
    canceled there does: `hard`, `payment_canceled_at_processor`, never charged again,
    now or on the dunning ladder (until 2026-12-08: soft, its `timeout`, to retry later)."""
    rig.lose_answer("lost")
    lost = await _pay(rig, "lost", "pm_card_visa", off_session=off_session, authorize_only=True)
    assert lost.status is PaymentStatus.UNKNOWN
    [intent] = rig.intents()
    rig.cancel_there(intent)

    assert await rig.service.reconcile(lost)
    failed = await rig.service.get(lost.id, "m_1")

    _assert_failed_for_good(failed, Outcome.HARD, ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR)
    authorizes = [a for a in failed.steps[0].attempts if a.operation == "authorize"]
    assert len({a.idempotency_key for a in authorizes}) == 1  # never under another key
    assert "void" not in [a.operation for a in failed.steps[0].attempts]
    assert rig.status_of(intent) == "canceled"
