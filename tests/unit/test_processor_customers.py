"""A processor customer belongs to the merchant that used it first: PaymentService on
in-memory fakes. One processor account serves every merchant, so another merchant naming
the customer must be refused before anything is stored or sent to a processor."""

from __future__ import annotations

import random

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import CustomerNotOwned, IdempotencyConflict, PaymentService
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory

CUSTOMER = "cus_Alice"


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sim = SimulatedProcessor("simulated", sleep=self.clock.sleep)
        self.uow = FakeUnitOfWorkFactory()
        router = Router({"simulated": self.sim}, self.clock, rng=random.Random(1))
        configs = MerchantConfigs(
            FakeMerchantConfigStore(), self.clock, ["simulated"], defaults=MerchantConfig("")
        )
        self.service = PaymentService(
            self.uow, router, self.clock, configs, Settlement(router.processors, self.clock)
        )

    async def pay(self, merchant: str, request_id: str, *, own: bool = False, **fields):
        fields.setdefault("payment_method", "pm_card_visa")
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id=merchant,
                request_id=request_id,
                amount_minor=1999,
                currency="USD",
                off_session=True,
                **fields,
            )
        )
        vouched = {"own_customers": True} if own else {}
        return await self.service.create(core, deadline_s=None, **vouched)

    def charges(self) -> int:
        return len(self.sim.ledger.intents)


@pytest.fixture
def w() -> World:
    return World()


async def test_another_merchant_naming_a_customer_is_refused_before_any_charge(w):
    first = await w.pay("m_1", "r-1", customer_id=CUSTOMER)
    assert first.payment.status is PaymentStatus.SUCCEEDED

    with pytest.raises(CustomerNotOwned) as refused:
        await w.pay("m_2", "r-1", customer_id=CUSTOMER)

    assert refused.value.fields == ["customer_id"]
    assert str(refused.value) == "customer_id: unknown customer for this merchant"
    assert "m_1" not in str(refused.value)
    assert w.charges() == 1, "the processor never saw the refused request"
    assert [p.merchant_id for p in w.uow.store.values()] == ["m_1"], "nothing stored for m_2"
    assert w.uow.customer_owners == {CUSTOMER: "m_1"}


async def test_the_owner_keeps_using_its_customer(w):
    await w.pay("m_1", "r-1", customer_id=CUSTOMER)
    again = await w.pay("m_1", "r-2", customer_id=CUSTOMER)
    assert again.payment.status is PaymentStatus.SUCCEEDED and w.charges() == 2


async def test_a_customer_of_another_merchant_in_a_split_is_named_by_its_method(w):
    await w.pay("m_1", "r-1", customer_id=CUSTOMER)
    methods = [
        RawMethodInput("card", "pm_card_visa", 1000, customer_id="cus_Bob"),
        RawMethodInput("card", "pm_card_visa", None, customer_id=CUSTOMER),
    ]
    with pytest.raises(CustomerNotOwned) as refused:
        await w.pay("m_2", "r-1", payment_method="", methods=methods)
    assert refused.value.fields == ["methods[1].customer_id"]
    assert w.charges() == 1


async def test_a_payment_without_a_customer_claims_nothing(w):
    await w.pay("m_1", "r-1")
    assert w.uow.customer_claims == []


async def test_a_charge_whose_caller_vouches_for_its_customer_claims_nothing(w):
    """An installment plan's scheduled charge: its customer was claimed with the plan."""
    await w.pay("m_1", "r-1", customer_id=CUSTOMER)
    claims = list(w.uow.customer_claims)
    await w.pay("m_1", "inst_1_a1", own=True, customer_id=CUSTOMER)
    assert w.uow.customer_claims == claims


async def test_a_replay_is_answered_without_a_claim(w):
    first = await w.pay("m_1", "r-1", customer_id=CUSTOMER)
    claims = list(w.uow.customer_claims)
    replay = await w.pay("m_1", "r-1", customer_id=CUSTOMER)
    assert replay.replayed and replay.payment.id == first.payment.id
    assert w.uow.customer_claims == claims


async def test_a_request_refused_as_an_idempotency_conflict_binds_no_customer(w):
    await w.pay("m_1", "r-1")
    with pytest.raises(IdempotencyConflict):
        await w.pay("m_1", "r-1", customer_id=CUSTOMER)
    assert w.uow.customer_owners == {}


async def test_a_new_customer_is_bound_to_the_first_merchant_that_uses_it(w):
    await w.pay("m_2", "r-1", customer_id="cus_New")
    assert w.uow.customer_owners == {"cus_New": "m_2"}
    with pytest.raises(CustomerNotOwned):
        await w.pay("m_1", "r-1", customer_id="cus_New")
