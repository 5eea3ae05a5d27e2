"""Stateful property: failing over between two processors never charges twice.

Like tests/recovery_machine.py, with two simulated processors that keep separate
ledgers, health-aware routing with small thresholds (so steps fail over, breakers
open and probes run), outages that come and go, and crashes mid-payment. Whatever
the interleaving, a payment is charged at most once across both processors, and
once reconciled our record names the processor that holds the charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation
from payorch.app.health import HealthTracker
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import IdempotencyConflict, PaymentService, RequestInProgress
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.health import HealthPolicy
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.domain.retry import RetryPolicy
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory
from tests.recovery_machine import FAULTS, TOKENS, Crash, CrashingUnitOfWorkFactory

NAMES = ("sim_a", "sim_b")
OUTAGES = st.sampled_from(
    ["", "", "api_error=1.0", "rate_limit=1.0", "connection_error=0.5", "timeout=0.3",
     "lost_response=0.3", "api_error=0.5,rate_limit=0.3"]
)  # fmt: skip
# A lost answer, then a failure that alone would allow a failover: the tempting case.
LOST_THEN_SOFT = st.tuples(
    st.sampled_from(["lost_response", "timeout"]),
    st.sampled_from(["rate_limit", "connection_error", "api_error"]),
).map(list)
SCRIPTS = st.one_of(st.lists(FAULTS, max_size=3), LOST_THEN_SOFT)
POLICY = HealthPolicy(min_requests=3, cooldown_s=30, half_open_probes=1, degraded_trial_every=2)


class FailoverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        self.uow = CrashingUnitOfWorkFactory(FakeUnitOfWorkFactory())
        self.sims = {
            n: SimulatedProcessor(n, Simulation(seed=i), sleep=self.clock.sleep)
            for i, n in enumerate(NAMES)
        }
        self.retries = 1
        self.service = self._service()
        self.payment_ids: set[str] = set()
        self.fresh = 100

    def _service(self) -> PaymentService:
        # A new process starts with fresh health: it is per replica, in memory.
        health = HealthTracker(POLICY, self.clock, processors=NAMES)
        router = Router(self.sims, self.clock, rng=random.Random(0), health=health)
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            list(NAMES),
            defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=self.retries)),
        )
        return PaymentService(
            self.uow, router, self.clock, configs, Settlement(router.processors, self.clock)
        )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.check_agreement_after_reconciling()
        finally:
            self.loop.close()

    async def _pay(self, request_id: str, token: str = "") -> None:
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=request_id,
                amount_minor=1000 + int(request_id[1:]),
                currency="USD",
                payment_method=token or TOKENS[request_id],
            )
        )
        try:
            result = await self.service.create(core, deadline_s=None)
        except (IdempotencyConflict, RequestInProgress):
            return
        self.payment_ids.add(result.payment.id)

    def _script(self, faults_a: list[str | None], faults_b: list[str | None]) -> None:
        self.sims["sim_a"].inject(*faults_a)
        self.sims["sim_b"].inject(*faults_b)

    def _unscript(self) -> None:
        for sim in self.sims.values():
            sim._script.clear()

    @rule(
        request_id=st.sampled_from(sorted(TOKENS)),
        fresh=st.booleans(),
        faults_a=SCRIPTS,
        faults_b=SCRIPTS,
    )
    def pay(
        self,
        request_id: str,
        fresh: bool,
        faults_a: list[str | None],
        faults_b: list[str | None],
    ) -> None:
        """A payment, new or a replay of an earlier request id, meeting scripted faults."""
        self._script(faults_a, faults_b)
        token = TOKENS[request_id]
        if fresh:
            self.fresh += 1
            request_id = f"f{self.fresh}"
        self.run(self._pay(request_id, token))
        self._unscript()
        self.clock.advance(1)

    @rule(n=st.integers(1, 8))
    def traffic_flows(self, n: int) -> None:
        """New card payments, one a second: enough calls for health to judge."""
        for _ in range(n):
            self.fresh += 1
            self.run(self._pay(f"t{self.fresh}", "pm_card_visa"))
            self.clock.advance(1)

    @rule(
        request_id=st.sampled_from(sorted(TOKENS)),
        faults_a=st.lists(FAULTS, max_size=2),
        faults_b=st.lists(FAULTS, max_size=2),
    )
    def server_dies_mid_payment_and_restarts(
        self, request_id: str, faults_a: list[str | None], faults_b: list[str | None]
    ) -> None:
        self._script(faults_a, faults_b)
        self.uow.crash_next_save = True
        with contextlib.suppress(Crash):
            self.run(self._pay(request_id))
        self.uow.crash_next_save = False
        self._unscript()
        self.service = self._service()

    @rule(name=st.sampled_from(NAMES), spec=OUTAGES)
    def a_processor_fails_or_recovers(self, name: str, spec: str) -> None:
        self.sims[name].set_simulation(Simulation.parse(spec))

    @rule(retries=st.integers(0, 3))
    def merchant_changes_retry_policy(self, retries: int) -> None:
        self.retries = retries
        self.service = self._service()

    @rule(seconds=st.sampled_from([1, 31, 61, 301, 3601]))
    def time_passes_and_the_reconciler_runs(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.run(self.service.reconcile_due())

    def _charges(self, payment_id: str) -> dict[str, int]:
        key = f"payorch_{payment_id}_0"
        return {
            n: s.ledger.intents[key].charges
            for n, s in self.sims.items()
            if key in s.ledger.intents and s.ledger.intents[key].charges
        }

    @invariant()
    def never_more_than_one_charge_across_processors(self) -> None:
        for payment_id in self.payment_ids:
            charges = self._charges(payment_id)
            assert sum(charges.values()) <= 1, f"{payment_id} charged {charges}"

    def check_agreement_after_reconciling(self) -> None:
        for _ in range(8):
            self.clock.advance(86_401)
            self.run(self.service.reconcile_due())
        for payment_id in self.payment_ids:
            payment = self.run(self.service.get(payment_id, None))
            charges = self._charges(payment_id)
            assert sum(charges.values()) <= 1, f"{payment_id} charged {charges}"
            assert payment.status not in (PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN), (
                f"{payment_id} still {payment.status}"
            )
            if payment.status is PaymentStatus.SUCCEEDED:
                assert list(charges) == [payment.steps[0].processor], (
                    f"{payment_id} succeeded on {payment.steps[0].processor}, charged {charges}"
                )
            else:
                assert not charges, f"{payment_id} is {payment.status} here but charged {charges}"


TestFailoverNeverChargesTwice = FailoverMachine.TestCase
TestFailoverNeverChargesTwice.settings = settings(settings.default, stateful_step_count=30)
