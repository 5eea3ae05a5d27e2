"""One run of a payment is held to RUN_LIMIT_S, well inside STALE_PROCESSING.

The reconciler takes a payment stored PROCESSING for STALE_PROCESSING (5 minutes) as one
its server left when it died. That is only true if no live run lasts that long: with no
deadline from the caller (or the CLI's day), retries, lookups, several split steps and
their captures added up past it, and the reconciler (another replica, `payorch
reconcile`) then worked on a payment a live server was still running. Each call here
takes its time on the injected clock; at every call the test asks storage what the
reconciler would take.
"""

from __future__ import annotations

import random
import uuid

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import STALE_PROCESSING, PaymentService
from payorch.app.ports import UnitOfWorkFactory
from payorch.app.router import RUN_LIMIT_S, Router
from payorch.app.settlement import LOOKUP_TIMEOUT_S, Settlement
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Owed, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory

OK = "pm_card_visa"
METHODS = ["card", "apple_pay", "google_pay", "card", "apple_pay", "google_pay", "card", "card"]


class Slow:
    """The simulated processor, each call taking `latency_s` of the injected clock (an
    authorization or lookup no longer than the time its caller gave it, as a real
    adapter's timeout cuts it). Before and after each call it asks storage whether the
    reconciler would take the payment now."""

    def __init__(self, world: World, latency_s: float) -> None:
        self.world = world
        self.sim = SimulatedProcessor("simulated", sleep=world.clock.sleep)
        self.name = self.sim.name
        self.latency_s = latency_s
        self.taken: list[float] = []  # run time at which the reconciler would take it
        self.calls: list[tuple[str, float]] = []  # operation, run time at its start

    async def _timed(self, operation, seconds, call):
        await self._check()
        self.calls.append((operation, self.world.run_time()))
        await self.world.clock.sleep(seconds)
        answer = await call
        await self._check()
        return answer

    async def _check(self) -> None:
        now = self.world.clock.now()
        async with self.world.uow() as uow:
            due = await uow.payments.list_unresolved(
                now=now, processing_before=now - STALE_PROCESSING, limit=100
            )
        if any(p.status is PaymentStatus.PROCESSING for p in due):
            self.taken.append(self.world.run_time())

    async def authorize(self, request):
        seconds = min(self.latency_s, request.timeout_s)
        return await self._timed("authorize", seconds, self.sim.authorize(request))

    async def lookup(self, request, processor_payment_id):
        seconds = min(self.latency_s, request.timeout_s)
        return await self._timed("lookup", seconds, self.sim.lookup(request, processor_payment_id))

    async def capture(self, *args, **kwargs):
        return await self._timed("capture", self.latency_s, self.sim.capture(*args, **kwargs))

    async def cancel(self, *args, **kwargs):
        return await self._timed("void", self.latency_s, self.sim.cancel(*args, **kwargs))


class World:
    def __init__(
        self,
        *,
        latency_s: float,
        call_timeout_s: float,
        clock: ManualClock | None = None,
        uow: UnitOfWorkFactory | None = None,
        **config,
    ) -> None:
        """`uow`: storage (in memory unless given), on `clock`; `config`: the merchants'
        default config."""
        self.clock = clock or ManualClock()
        self.started = self.clock.monotonic()
        self.uow = uow or FakeUnitOfWorkFactory()
        self.processor = Slow(self, latency_s)
        self.router = Router(
            {"simulated": self.processor},
            self.clock,
            call_timeout_s=call_timeout_s,
            rng=random.Random(1),
        )
        self.configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            ["simulated"],
            defaults=MerchantConfig("", **config),
        )
        self.service = PaymentService(
            self.uow,
            self.router,
            self.clock,
            self.configs,
            Settlement(self.router.processors, self.clock),
        )

    def run_time(self) -> float:
        return self.clock.monotonic() - self.started

    async def pay_split(self, steps: int, deadline_s: float | None, *, fallbacks: int = 0):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=f"r-{uuid.uuid4()}",
                amount_minor=1000 * steps,
                currency="USD",
                methods=[RawMethodInput(m, OK, 1000) for m in METHODS[:steps]]
                + [RawMethodInput("card", OK, None)] * fallbacks,
            )
        )
        return (await self.service.create(core, deadline_s=deadline_s)).payment


def test_the_run_limit_is_well_inside_the_time_after_which_a_payment_counts_as_interrupted():
    assert STALE_PROCESSING.total_seconds() >= RUN_LIMIT_S * 2


@pytest.mark.parametrize("deadline_s", [None, 86400.0], ids=["no deadline", "a day"])
async def test_a_long_split_is_never_taken_by_the_reconciler_while_its_run_goes_on(deadline_s):
    # Eight steps whose calls each take 29 s (PAYORCH_CALL_TIMEOUT_S=30): eight
    # authorizations and eight captures were 464 s of one run, the payment stored
    # PROCESSING all along.
    w = World(latency_s=29.0, call_timeout_s=30.0)
    payment = await w.pay_split(8, deadline_s)

    assert w.processor.taken == []  # at no call would the reconciler have taken it
    assert all(started < RUN_LIMIT_S for _, started in w.processor.calls)
    assert w.run_time() <= RUN_LIMIT_S
    # The limit came before the sixth step: it fails as a step with no time left does
    # (soft, retry later), nothing sent for it, and the plan ends as after any failure:
    # all-or-nothing releases what it holds. No void could end inside the limit either:
    # each is owed, not tried, and the reconciler makes it. The step reads what cut it,
    # payorch's own limit (run_limit_reached), not a deadline of the caller's, who gave
    # none or one longer.
    statuses = [s.status for s in payment.steps]
    assert statuses == [StepStatus.AUTHORIZED] * 5 + [StepStatus.FAILED] + [StepStatus.SKIPPED] * 2
    failed = payment.steps[5]
    assert (failed.outcome, failed.error_code, failed.attempts) == (
        Outcome.SOFT,
        ErrorCode.RUN_LIMIT_REACHED,
        [],
    )
    assert payment.final_error is ErrorCode.RUN_LIMIT_REACHED
    assert payment.final_error_message.startswith("step 5 failed: run_limit_reached")
    assert payment.status is PaymentStatus.FAILED and payment.owed is Owed.VOID
    assert "the void is owed, not yet tried: the reconciler makes it" in (
        payment.final_error_message
    )
    assert [op for op, _ in w.processor.calls] == ["authorize"] * 5

    # The reconciler's work on the payment is held to the run's limit too: two voids a
    # pass (each may take 80 s at its longest), the rest at the next passes, a minute
    # apart, not on the back-off (nothing failed).
    voided = []
    for _ in range(3):
        w.clock.advance(60)
        await w.service.reconcile_due()
        stored = await w.service.get(payment.id, None)
        voided.append(sum(s.status is StepStatus.VOIDED for s in stored.steps))
    assert voided == [2, 4, 5]
    settled = await w.service.get(payment.id, None)
    assert [s.status for s in settled.steps][:5] == [StepStatus.VOIDED] * 5
    assert settled.owed is Owed.NOTHING
    intents = w.processor.sim.ledger.intents.values()
    assert len(intents) == 5 and all(i.status == "canceled" for i in intents)


async def test_a_step_the_run_limit_cut_is_not_followed_by_a_fallback_with_no_time_either():
    w = World(latency_s=29.0, call_timeout_s=30.0, fallback_on_failure=True)

    payment = await w.pay_split(7, None, fallbacks=1)

    assert len(payment.steps) == 7 and len(payment.fallbacks) == 1
    assert payment.steps[5].error_code is ErrorCode.RUN_LIMIT_REACHED
    assert [op for op, _ in w.processor.calls] == ["authorize"] * 5


async def test_captures_that_could_not_end_inside_the_run_limit_are_owed_and_made_by_the_reconciler():
    # Eight authorizations of 10 s leave 40 s of the limit: the first capture may take
    # that long at the longest (two tries, each looked up), the rest not.
    w = World(latency_s=10.0, call_timeout_s=10.0)
    longest = 2 * (10.0 + LOOKUP_TIMEOUT_S)
    payment = await w.pay_split(8, None)

    ops = [op for op, _ in w.processor.calls]
    assert ops == ["authorize"] * 8 + ["capture"]
    assert RUN_LIMIT_S - w.processor.calls[-1][1] >= longest
    assert w.processor.taken == []
    assert [s.status for s in payment.steps] == [StepStatus.CAPTURED] + [StepStatus.AUTHORIZED] * 7
    assert payment.owed is Owed.CAPTURE and payment.status is PaymentStatus.AUTHORIZED
    assert "the capture is owed, not yet tried: the reconciler makes it" in (
        payment.final_error_message
    )

    w.clock.advance(60)
    await w.service.reconcile_due()
    settled = await w.service.get(payment.id, None)
    assert settled.status is PaymentStatus.SUCCEEDED
    assert [s.status for s in settled.steps] == [StepStatus.CAPTURED] * 8
    assert w.processor.sim.ledger.charges_total == 8


@pytest.mark.parametrize("seconds", ["0", "60", "239", "nan"])
def test_payorch_reconcile_refuses_to_take_payments_a_live_server_may_still_run(seconds, capsys):
    from payorch.entrypoints.cli import main

    assert main(["reconcile", f"--processing-stale-after={seconds}"]) == 2
    assert capsys.readouterr().err.startswith(
        "payorch reconcile: --processing-stale-after must be at least 240 s (default 300)"
    )
