"""Split payments on the app with in-memory storage: all-or-nothing, partial, fallback,
confirm, capture, cancel and refund."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payment_observation import PaymentObservation
from payorch.app.payments import InvalidState, PaymentService, RefundRejected
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Payment, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory

OK, DECLINE, STOLEN = "pm_card_visa", "pm_card_chargeDeclined", "pm_card_chargeDeclinedStolenCard"
ACTION = "pm_card_authenticationRequired"


class World:
    """The payment service on the simulated processor and in-memory storage; `config`
    is the merchants' default config, `observation` what hears the payments."""

    currency = "USD"

    def __init__(self, observation: PaymentObservation | None = None, **config) -> None:
        self.clock = ManualClock()
        self.sim = SimulatedProcessor("simulated", sleep=self.clock.sleep)
        self.uow = FakeUnitOfWorkFactory()
        router = Router({"simulated": self.sim}, self.clock, rng=random.Random(1))
        self.configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            ["simulated"],
            defaults=MerchantConfig("", **config),
        )
        self.service = PaymentService(
            self.uow,
            router,
            self.clock,
            self.configs,
            Settlement(router.processors, self.clock),
            observation=observation,
        )

    async def pay(self, *methods: tuple[str, str, int | None], total: int = 10000, **extra):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=f"r-{uuid.uuid4()}",
                amount_minor=total,
                currency=self.currency,
                methods=[RawMethodInput(m, t, a) for m, t, a in methods],
                **extra,
            )
        )
        return (await self.service.create(core, deadline_s=None)).payment

    def held(self) -> int:
        """Money the processor holds or took, net of voids and refunds."""
        return sum(
            i.amount_minor - i.amount_refunded
            for i in self.sim.ledger.intents.values()
            if i.status in ("succeeded", "requires_capture")
        )


def assert_captured_whole(w: World, p: Payment) -> None:
    """`p`, a split of 10000, succeeded: every step captured, all of it held."""
    assert p.status is PaymentStatus.SUCCEEDED
    assert [s.status for s in p.steps] == [StepStatus.CAPTURED] * len(p.steps)
    assert w.held() == 10000


async def test_a_hundred_dollars_split_sixty_apple_pay_forty_card_is_captured_whole():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    assert p.status is PaymentStatus.SUCCEEDED
    assert [(s.method.value, s.amount_minor, s.status) for s in p.steps] == [
        ("apple_pay", 6000, StepStatus.CAPTURED),
        ("card", 4000, StepStatus.CAPTURED),
    ]
    assert w.held() == 10000
    names = [e.name for e in w.uow.events]
    assert names == [
        "PaymentProcessing",
        "StepSucceeded",
        "StepSucceeded",
        "PaymentCaptured",
        "PaymentCompleted",
    ]


async def test_a_declined_card_step_voids_the_apple_pay_authorization():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", DECLINE, None))
    assert p.status is PaymentStatus.FAILED
    assert [s.status for s in p.steps] == [StepStatus.VOIDED, StepStatus.FAILED]
    assert w.held() == 0
    names = [e.name for e in w.uow.events]
    assert names == [
        "PaymentProcessing",
        "StepSucceeded",
        "StepFailed",
        "StepVoided",
        "PaymentFailed",
    ]


async def test_a_failed_step_falls_back_to_the_next_requested_method():
    w = World(fallback_on_failure=True)
    p = await w.pay(("apple_pay", OK, 6000), ("card", STOLEN, None), ("google_pay", OK, None))
    assert p.status is PaymentStatus.SUCCEEDED
    assert [(s.method.value, s.amount_minor, s.status) for s in p.steps] == [
        ("apple_pay", 6000, StepStatus.CAPTURED),
        ("card", 4000, StepStatus.FAILED),
        ("google_pay", 4000, StepStatus.CAPTURED),
    ]
    assert w.held() == 10000


async def test_with_allow_partial_what_succeeded_is_kept_and_the_rest_reported():
    w = World(allow_partial=True)
    p = await w.pay(("apple_pay", OK, 6000), ("card", DECLINE, None))
    assert p.status is PaymentStatus.PARTIALLY_SUCCEEDED
    assert (p.processed_minor, p.remaining_minor) == (6000, 4000)
    assert w.held() == 6000


async def test_a_step_needing_the_customer_pauses_and_confirm_resumes_the_plan():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    assert p.status is PaymentStatus.REQUIRES_ACTION
    assert p.steps[1].client_secret
    w.sim.complete_action(p.steps[1].processor_payment_id)
    done = await w.service.confirm(p.id, "m_1")
    assert done.status is PaymentStatus.SUCCEEDED and w.held() == 10000


async def test_authorize_only_waits_for_capture_and_cancel_voids():
    w = World()
    p = await w.pay(("card", OK, None), total=2500, authorize_only=True)
    assert p.status is PaymentStatus.AUTHORIZED
    captured = await w.service.capture(p.id, "m_1")
    assert captured.status is PaymentStatus.SUCCEEDED and w.held() == 2500

    q = await w.pay(("card", OK, None), total=700, authorize_only=True)
    cancelled = await w.service.cancel(q.id, "m_1", "customer changed their mind")
    assert cancelled.status is PaymentStatus.CANCELLED
    with pytest.raises(InvalidState):
        await w.service.cancel(p.id, "m_1", "too late")


async def test_refunds_are_partial_or_full_idempotent_and_never_exceed_the_capture():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    part = await w.service.refund(p.id, "m_1", amount_minor=5000, request_id="rf1")
    assert part.status is PaymentStatus.PARTIALLY_REFUNDED and w.held() == 5000
    again = await w.service.refund(p.id, "m_1", amount_minor=5000, request_id="rf1")
    assert again.refundable_minor == 5000 and w.held() == 5000
    with pytest.raises(RefundRejected):
        await w.service.refund(p.id, "m_1", amount_minor=5001, request_id="rf2")
    full = await w.service.refund(p.id, "m_1", amount_minor=0, request_id="rf3")
    assert full.status is PaymentStatus.REFUNDED and w.held() == 0


outcomes = st.lists(st.sampled_from([OK, OK, DECLINE, STOLEN]), min_size=2, max_size=4)


@given(tokens=outcomes, partial=st.booleans())
async def test_any_step_outcomes_end_all_or_nothing_or_partial_with_nothing_lost(tokens, partial):
    w = World(allow_partial=partial)
    share = 10000 // len(tokens)
    methods = [("card", t, share) for t in tokens[:-1]] + [("card", tokens[-1], None)]
    p = await w.pay(*methods)
    captured = sum(s.captured_minor for s in p.steps)
    assert captured == w.held()
    assert not any(s.status is StepStatus.AUTHORIZED for s in p.steps)
    if not partial:
        assert captured in (0, 10000)
        assert (p.status is PaymentStatus.SUCCEEDED) == (captured == 10000)
    else:
        assert captured + p.remaining_minor == 10000
