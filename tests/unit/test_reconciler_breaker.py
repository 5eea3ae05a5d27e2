"""The reconciler waits for a processor whose breaker is open.

Each pass looked every due payment up at its processor, down or not: while a processor
was down, every pass added a lookup per payment to the outage. Now a lookup at a
processor whose breaker is open is deferred: nothing is asked, nothing is recorded (a
deferred lookup is never "not found"), and the payment is due again once the breaker
lets a call through. Half-open, a lookup goes as one of its probes.
"""

from __future__ import annotations

import random
from datetime import timedelta

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.app.health import HealthTracker
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import PaymentService
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.health import BreakerState, HealthPolicy, Signal
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Payment, PaymentStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from payorch.domain.retry import RetryPolicy
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory
from tests.integration.helpers import core_request
from tests.unit.test_concurrent_changes import RefundsAtProcessor as Refunds

SIM = "simulated"
POLICY = HealthPolicy(min_requests=5, cooldown_s=3_600.0, half_open_probes=2)
SERVER_ERROR = ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")


class Watched(SimulatedProcessor):
    """Counts the lookups made; answers them 500 while `down`."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(SIM, sleep=clock.sleep)
        self.lookups = 0
        self.down = False

    async def lookup(self, request, processor_payment_id):
        self.lookups += 1
        if self.down:
            return SERVER_ERROR
        return await super().lookup(request, processor_payment_id)


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sim = Watched(self.clock)
        self.uow = FakeUnitOfWorkFactory()
        self.health = HealthTracker(POLICY, self.clock, processors=[SIM])
        router = Router({SIM: self.sim}, self.clock, rng=random.Random(1), health=self.health)
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            [SIM],
            defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=0)),
        )
        self.service = PaymentService(
            self.uow,
            router,
            self.clock,
            configs,
            Settlement(router.processors, self.clock, health=self.health),
        )
        self._ids = 0

    async def pay(self) -> Payment:
        self._ids += 1
        core = core_request(f"r-{self._ids}", amount=10000)
        return (await self.service.create(core, deadline_s=None)).payment

    async def lost(self) -> Payment:
        """A payment charged at the processor whose answer was lost: UNKNOWN."""
        self.sim.inject("lost_response")
        payment = await self.pay()
        assert payment.status is PaymentStatus.UNKNOWN
        return payment

    def trip(self) -> None:
        """The processor failed on infrastructure (its payments' calls): breaker open."""
        for _ in range(POLICY.min_requests):
            self.health.record(SIM, Signal.INFRA_FAILURE, 0.05, authorize=True)
        assert self.health.breaker(SIM) is BreakerState.OPEN

    async def later(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return await self.service.reconcile_due()

    async def get(self, payment: Payment) -> Payment:
        return await self.service.get(payment.id, "m_1")


def looks_the_same(before: Payment, after: Payment) -> bool:
    return (
        after.status is before.status
        and after.reconcile_attempts == before.reconcile_attempts
        and [s.status for s in after.steps] == [s.status for s in before.steps]
        and [len(s.attempts) for s in after.steps] == [len(s.attempts) for s in before.steps]
        and [s.refund_holds for s in after.steps] == [s.refund_holds for s in before.steps]
    )


async def test_an_unknown_payment_is_not_looked_up_while_its_processors_breaker_is_open():
    w = World()
    payment = await w.lost()
    w.trip()
    probes_from = w.health.snapshot(SIM).probes_from

    assert await w.later(120) == 0  # due (1 min), deferred
    assert await w.later(600) == 0  # not due again before the breaker lets a call through
    assert w.sim.lookups == 0
    stored = await w.get(payment)
    assert looks_the_same(payment, stored)
    # Its back-off is where it was: no answer came, so none was inconclusive.
    assert stored.next_reconcile_at == probes_from


async def test_a_deferred_payment_is_looked_up_once_the_breaker_closes():
    w = World()
    payment = await w.lost()
    w.trip()
    assert await w.later(120) == 0 and w.sim.lookups == 0

    w.clock.advance(POLICY.cooldown_s)
    for _ in range(POLICY.half_open_probes):  # payments' probes succeed: closed
        assert (await w.pay()).status is PaymentStatus.SUCCEEDED
    assert w.health.breaker(SIM) is BreakerState.CLOSED

    assert await w.service.reconcile_due() == 1
    assert w.sim.lookups == 1
    stored = await w.get(payment)
    assert stored.status is PaymentStatus.SUCCEEDED
    assert stored.steps[0].attempts[-1].retry_decision == "reconciled: charged"


async def test_half_open_a_lookup_goes_as_a_probe_and_one_that_fails_reopens_the_breaker():
    w = World()
    first, second = await w.lost(), await w.lost()
    w.trip()
    w.sim.down = True

    assert await w.later(POLICY.cooldown_s) == 0  # half-open: one probe, failed
    assert w.sim.lookups == 1
    assert w.health.breaker(SIM) is BreakerState.OPEN
    assert looks_the_same(second, await w.get(second))  # not asked: deferred

    w.sim.down = False
    assert await w.later(POLICY.cooldown_s) == 2  # half-open again: both answered
    assert w.sim.lookups == 3
    for p in (first, second):
        assert (await w.get(p)).status is PaymentStatus.SUCCEEDED
    # An answered lookup says nothing about charging: it does not close the breaker.
    assert w.health.breaker(SIM) is BreakerState.HALF_OPEN


async def test_a_lookup_of_the_reconciler_feeds_the_processors_health():
    w = World()
    await w.lost()
    w.sim.down = True
    w.clock.advance(120)  # the lost charge has left the window: due, and a clean slate
    assert w.health.snapshot(SIM).stats.requests == 0
    await w.service.reconcile_due()
    assert w.sim.lookups == 1
    stats = w.health.snapshot(SIM).stats
    assert (stats.requests, stats.infra_failures) == (1, 1)


# -- refunds in doubt ------------------------------------------------------------------


async def test_a_refund_in_doubt_is_not_failed_while_its_lookups_are_deferred_past_5_minutes():
    w = World()
    p = await w.pay()
    refunds = Refunds(w)  # type: ignore[arg-type]
    key = f"payorch_{p.id}_0_refund_a"
    refunds.lose.add(key)  # refunded at the processor, its answer lost
    held = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert held.steps[0].refund_holds == {"a": 6000}
    w.trip()

    # The first slot (1 min) passes it by: too young for "not found" to prove anything.
    assert await w.later(timedelta(minutes=1).total_seconds()) == 0
    before = await w.get(p)
    for minutes in (5, 30):  # past REFUND_SETTLED_AFTER, the breaker still open
        assert await w.later(timedelta(minutes=minutes).total_seconds()) == 0
    assert refunds.looked == []
    stored = await w.get(p)
    assert looks_the_same(before, stored)
    # Still held: never taken for "not made", nothing recorded under its key.
    assert stored.steps[0].refund_holds == {"a": 6000} and stored.refundable_minor == 4000

    w.clock.advance(POLICY.cooldown_s)  # half-open: looked up as a probe
    assert await w.service.reconcile_due() == 1
    assert refunds.looked == [key]
    stored = await w.get(p)
    assert stored.steps[0].refund_holds == {} and stored.steps[0].refunded_minor == 6000
    assert stored.steps[0].attempts[-1].retry_decision == (
        "the refund went through: recorded as refunded"
    )


async def test_a_refund_lookup_of_the_reconciler_feeds_the_processors_health():
    w = World()
    p = await w.pay()
    refunds = Refunds(w)  # type: ignore[arg-type]
    refunds.lose.add(f"payorch_{p.id}_0_refund_a")
    await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    refunds.lookups_fail = True
    w.clock.advance(timedelta(minutes=6).total_seconds())
    assert w.health.snapshot(SIM).stats.requests == 0  # the charge has left the window

    await w.service.reconcile_due()
    assert len(refunds.looked) == 1
    stats = w.health.snapshot(SIM).stats
    assert (stats.requests, stats.infra_failures) == (1, 1)


async def test_a_payment_deferred_half_open_is_due_at_the_next_pass_not_when_its_claim_ends():
    """Half-open, a payment may find every probe taken (admits_from: None): the next pass
    asks it. The pass's claim on it (PaymentService._take) is given up, not kept."""
    w = World()
    payment = await w.lost()
    w.trip()
    w.service._router.admits_from = lambda deferred: None  # type: ignore[method-assign]

    assert await w.later(120) == 0 and w.sim.lookups == 0
    stored = await w.get(payment)
    assert looks_the_same(payment, stored)
    assert stored.next_reconcile_at is not None
    assert stored.next_reconcile_at <= w.clock.now()
