"""A hypothesis state machine over faults, crashes, duplicates and reconciliation.

Whatever interleaving it draws, every payment ends with at most one charge at the
processor, and once reconciled our record agrees with the processor's ledger.
Used by tests/unit (in-memory fakes) and tests/integration (SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import Ledger, SimulatedProcessor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import IdempotencyConflict, PaymentService, RequestInProgress
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.domain.retry import RetryPolicy
from tests.fakes.memory import FakeMerchantConfigStore

FAULTS = st.sampled_from(
    [None, None, "api_error", "charged_api_error", "rate_limit", "timeout", "lost_response",
     "connection_error"]
)  # fmt: skip
TOKENS = {
    "r0": "pm_card_visa",
    "r1": "pm_card_visa",
    "r2": "pm_card_chargeDeclined",
    "r3": "pm_card_chargeDeclinedInsufficientFunds",
    "r4": "pm_card_authenticationRequired",
    "r5": "pm_card_visa",
}


class Crash(Exception):
    """The server died: the write in progress never happened."""


class CrashingUnitOfWorkFactory:
    """Wraps a real factory; can make the next final save die before it commits."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crash_next_save = False

    def __call__(self) -> Any:
        uow = self.inner()
        factory = self

        class _Uow:
            async def __aenter__(self) -> Any:
                await uow.__aenter__()
                self.payments = _Payments(uow.payments)
                self.inbound_events = uow.inbound_events
                self.customers = uow.customers
                return self

            async def __aexit__(self, *exc: object) -> None:
                await uow.__aexit__(*exc)

            async def commit(self) -> None:
                await uow.commit()

        class _Payments:
            def __init__(self, repo: Any) -> None:
                self._repo = repo

            def __getattr__(self, name: str) -> Any:
                return getattr(self._repo, name)

            async def save(self, payment: Any) -> None:
                if factory.crash_next_save:
                    factory.crash_next_save = False
                    raise Crash
                await self._repo.save(payment)

        return _Uow()

    async def insert_payment(self, payment: Any, *, only_if: Any = None) -> None:
        await self.inner.insert_payment(payment, only_if=only_if)

    async def payment_by_request(self, merchant_id: str, request_id: str) -> Any:
        return await self.inner.payment_by_request(merchant_id, request_id)

    async def update_payment(self, payment: Any) -> None:
        if self.crash_next_save:
            self.crash_next_save = False
            raise Crash
        await self.inner.update_payment(payment)


# (uow factory, cleanup) for a fresh store
StoreFactory = Callable[[], Awaitable[tuple[Any, Callable[[], Awaitable[None]]]]]


class RecoveryMachine(RuleBasedStateMachine):
    store_factory: StoreFactory

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        inner, self._cleanup = self.loop.run_until_complete(type(self).store_factory())
        self.clock = ManualClock()
        self.ledger = Ledger()
        self.uow = CrashingUnitOfWorkFactory(inner)
        self.sim = SimulatedProcessor("simulated", ledger=self.ledger, sleep=self.clock.sleep)
        self.retries = 1
        self.service = self._service()
        self.payment_ids: set[str] = set()

    def _service(self) -> PaymentService:
        router = Router({"simulated": self.sim}, self.clock, rng=random.Random(0))
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            ["simulated"],
            defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=self.retries)),
        )
        return PaymentService(
            self.uow, router, self.clock, configs, Settlement(router.processors, self.clock)
        )

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.check_agreement_after_reconciling()
        finally:
            self.run(self._cleanup())
            self.loop.close()

    async def _pay(self, request_id: str) -> None:
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=request_id,
                amount_minor=1000 + int(request_id[1:]),
                currency="USD",
                payment_method=TOKENS[request_id],
            )
        )
        try:
            result = await self.service.create(core, deadline_s=None)
        except (IdempotencyConflict, RequestInProgress):
            return
        self.payment_ids.add(result.payment.id)

    @rule(request_id=st.sampled_from(sorted(TOKENS)), faults=st.lists(FAULTS, max_size=4))
    def pay(self, request_id: str, faults: list[str | None]) -> None:
        self.sim.inject(*faults)
        self.run(self._pay(request_id))
        self.sim._script.clear()

    @rule(request_id=st.sampled_from(sorted(TOKENS)), faults=st.lists(FAULTS, max_size=2))
    def server_dies_mid_payment_and_restarts(
        self, request_id: str, faults: list[str | None]
    ) -> None:
        self.sim.inject(*faults)
        self.uow.crash_next_save = True
        with contextlib.suppress(Crash):
            self.run(self._pay(request_id))
        self.uow.crash_next_save = False
        self.sim._script.clear()
        self.service = self._service()  # a new process: nothing survives but storage

    @rule(retries=st.integers(0, 3))
    def merchant_changes_retry_policy(self, retries: int) -> None:
        self.retries = retries
        self.service = self._service()

    @rule(seconds=st.sampled_from([1, 61, 301, 3601, 86401]))
    def time_passes_and_the_reconciler_runs(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.run(self.service.reconcile_due())

    @invariant()
    def never_more_than_one_charge_per_payment(self) -> None:
        for intent in self.ledger.intents.values():
            assert intent.charges <= 1, f"{intent.id} charged {intent.charges} times"

    def check_agreement_after_reconciling(self) -> None:
        for _ in range(8):
            self.clock.advance(86_401)
            self.run(self.service.reconcile_due())
        for payment_id in self.payment_ids:
            payment = self.run(self.service.get(payment_id, None))
            intent = self.ledger.intents.get(f"payorch_{payment_id}_0")
            charged = intent is not None and intent.charges == 1
            assert payment.status not in (PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN), (
                f"{payment_id} still {payment.status}"
            )
            if payment.status is PaymentStatus.SUCCEEDED:
                assert charged, f"{payment_id} succeeded here but not at the processor"
            else:
                assert not charged, f"{payment_id} is {payment.status} here but was charged"
