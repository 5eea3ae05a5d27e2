"""PaymentService.create of an installment's charge (`only_if`) on in-memory fakes: the
gate insert takes place only while the claim admits the charge, as the SQL insert
decides it on the plan as committed; refused, nothing is stored or sent (ClaimLost),
unless a payment under the request id was made before, which is replayed."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import ClaimLost, PaymentService
from payorch.app.ports import ChargeClaim
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.installments import InstallmentStatus, charge_request_id
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from tests.fakes.installments import FakePlans
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory
from tests.unit.test_installment_plan import new_plan

LEASE = timedelta(seconds=120)


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sim = SimulatedProcessor("simulated", sleep=self.clock.sleep)
        plan = new_plan()
        inst = plan.installments[1]
        inst._move(InstallmentStatus.PROCESSING)
        inst.attempts = 1
        inst.claimed_by, inst.lease_until = "w-1", self.clock.now() + LEASE
        self.plans = FakePlans(plan)
        self.claim = ChargeClaim(plan.id, inst.id, 1, inst.lease_until)
        self.uow = FakeUnitOfWorkFactory()
        self.uow.plans = self.plans.plans
        router = Router({"simulated": self.sim}, self.clock, rng=random.Random(1))
        configs = MerchantConfigs(
            FakeMerchantConfigStore(), self.clock, ["simulated"], defaults=MerchantConfig("")
        )
        self.service = PaymentService(
            self.uow, router, self.clock, configs, Settlement(router.processors, self.clock)
        )

    async def charge(self, only_if: ChargeClaim | None):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=charge_request_id(self.claim.installment_id, self.claim.attempt),
                amount_minor=3333,
                currency="EUR",
                payment_method="pm_card_visa",
                customer_id="cus_1",
                off_session=True,
            )
        )
        return await self.service.create(core, deadline_s=None, own_customers=True, only_if=only_if)

    def cancel(self, after: timedelta) -> None:
        self.plans.plan.cancel("order returned", self.clock.now() + after)


@pytest.fixture
def w() -> World:
    return World()


async def test_a_charge_whose_claim_holds_is_made(w):
    made = await w.charge(w.claim)
    assert made.payment.status is PaymentStatus.SUCCEEDED and not made.replayed
    assert len(w.sim.ledger.intents) == 1


async def test_a_charge_on_a_plan_cancelled_past_the_lease_is_refused_and_nothing_is_sent(w):
    w.cancel(LEASE + timedelta(seconds=1))

    with pytest.raises(ClaimLost):
        await w.charge(w.claim)

    assert w.sim.ledger.intents == {} and w.uow.store == {}


async def test_a_refused_charge_made_before_under_its_request_id_is_replayed(w):
    first = await w.charge(w.claim)
    w.cancel(LEASE + timedelta(seconds=1))

    again = await w.charge(w.claim)

    assert again.replayed and again.payment.id == first.payment.id
    assert len(w.sim.ledger.intents) == 1
