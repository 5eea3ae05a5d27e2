"""Health-aware routing on two simulated processors, an injected clock, in-memory storage.

sim_a is configured first, sim_b second. Time moves only through the ManualClock:
the simulators' latency and the router's back-off sleep on it.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from prometheus_client import CollectorRegistry

from payorch.adapters.clock import ManualClock
from payorch.adapters.metrics import Metrics, PrometheusHealthObserver
from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation
from payorch.app.health import HealthTracker
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import PaymentService
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.health import BreakerState, HealthPolicy, HealthState, Signal
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse, ResponseKind
from payorch.domain.retry import RetryPolicy
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory

A, B = "sim_a", "sim_b"


class Transitions:
    """A HealthObserver that writes down what it hears."""

    def __init__(self) -> None:
        self.states: dict[str, list[HealthState]] = {}
        self.breakers: dict[str, list[BreakerState]] = {}
        self.availability: list[bool] = []
        self.calls = 0

    def call_recorded(self, processor: str, signal: Signal, latency_s: float) -> None:
        self.calls += 1

    def state_changed(self, processor: str, state: HealthState) -> None:
        self.states.setdefault(processor, []).append(state)

    def breaker_changed(self, processor: str, state: BreakerState) -> None:
        self.breakers.setdefault(processor, []).append(state)

    def availability_changed(self, available: bool) -> None:
        self.availability.append(available)


class TwoProcessors:
    def __init__(
        self,
        policy: HealthPolicy | None = None,
        *,
        max_retries: int = 1,
        latency_ms: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.clock = ManualClock()
        self.a = SimulatedProcessor(A, Simulation(latency_ms=latency_ms[0]), sleep=self.clock.sleep)
        self.b = SimulatedProcessor(B, Simulation(latency_ms=latency_ms[1]), sleep=self.clock.sleep)
        self.seen = Transitions()
        self.registry = CollectorRegistry()
        self.health = HealthTracker(
            policy or HealthPolicy(min_requests=10),
            self.clock,
            processors=[A, B],
            observers=[self.seen, PrometheusHealthObserver(Metrics(self.registry))],
        )
        self.router = Router(
            {A: self.a, B: self.b}, self.clock, rng=random.Random(1), health=self.health
        )
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            [A, B],
            defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=max_retries)),
        )
        self.uow = FakeUnitOfWorkFactory()
        self.service = PaymentService(
            self.uow,
            self.router,
            self.clock,
            configs,
            Settlement(self.router.processors, self.clock),
        )
        self._ids = itertools.count()

    async def pay(self, token: str = "pm_card_visa", deadline_s: float | None = None):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=f"r-{next(self._ids)}",
                amount_minor=2500,
                currency="EUR",
                payment_method=token,
            )
        )
        payment = (await self.service.create(core, deadline_s=deadline_s)).payment
        # The fake copies its whole store per unit of work: keep it small in long runs.
        while len(self.uow.store) > 5:
            del self.uow.store[next(iter(self.uow.store))]
        return payment

    async def pay_every_second(self, n: int, token: str = "pm_card_visa"):
        payments = []
        for _ in range(n):
            payments.append(await self.pay(token))
            self.clock.advance(1.0)
        return payments

    def outage(self, name: str, spec: str = "api_error=1.0") -> None:
        {A: self.a, B: self.b}[name].set_simulation(Simulation.parse(spec))

    def charges(self, payment) -> int:
        key = f"payorch_{payment.id}_0"
        return sum(
            s.ledger.intents[key].charges for s in (self.a, self.b) if key in s.ledger.intents
        )

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def processors_called(payment) -> list[str]:
    return [a.processor for a in payment.steps[0].attempts if a.operation == "authorize"]


# -- an outage of the first processor ------------------------------------------------
async def test_an_outage_of_the_first_processor_degrades_it_then_opens_its_breaker():
    w = TwoProcessors()
    await w.pay_every_second(20)  # sim_a takes everything while healthy
    w.outage(A)
    payments = await w.pay_every_second(80)

    assert w.seen.states[A] == [HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY]
    assert w.seen.breakers[A] == [BreakerState.OPEN]
    assert w.health.breaker(B) is BreakerState.CLOSED
    report = w.health.snapshot(A)
    assert report is not None and "infrastructure failures" in report.reason
    assert report.probes_from is not None
    # Once the breaker is open sim_a gets nothing; the routing says why.
    after = payments[-5:]
    assert all(processors_called(p) == [B] for p in after)
    assert "sim_a skipped: breaker open" in after[-1].steps[0].attempts[0].routing_reason


async def test_no_payment_fails_during_the_outage_that_the_second_processor_could_serve():
    w = TwoProcessors()
    await w.pay_every_second(20)
    w.outage(A)
    payments = await w.pay_every_second(80)

    assert all(p.status is PaymentStatus.SUCCEEDED for p in payments)
    assert all(w.charges(p) == 1 for p in payments)
    assert all(p.steps[0].processor == B for p in payments)
    failed_over = [p for p in payments if processors_called(p)[0] == A]
    assert failed_over, "some payments met sim_a down and moved"
    first = failed_over[0].steps[0].attempts
    last_on_a = [a for a in first if a.processor == A and a.operation == "authorize"][-1]
    assert "failing over to sim_b: a lookup found nothing charged" in last_on_a.retry_decision
    assert first[-1].routing_reason.startswith("failover from sim_a")


async def test_a_degraded_processor_gets_a_trial_share_and_is_not_retried_on_a_soft_failure():
    w = TwoProcessors(HealthPolicy(min_requests=10, degraded_trial_every=5))
    await w.pay_every_second(20)
    w.outage(A)
    await w.pay_every_second(2)
    assert w.health.state(A) is HealthState.DEGRADED
    payments = await w.pay_every_second(10)

    trials = [p for p in payments if processors_called(p)[0] == A]
    assert len(trials) == 2
    for trial in trials:
        attempts = trial.steps[0].attempts
        assert "trial request to a degraded processor" in attempts[0].routing_reason
        assert processors_called(trial) == [A, B], "no second try on degraded sim_a"
        assert "sim_a is degraded: no retry on it" in attempts[0].retry_decision
    others = [p for p in payments if p not in trials]
    assert "preferred over degraded sim_a" in others[0].steps[0].attempts[0].routing_reason


async def test_when_the_first_recovers_half_open_probes_close_its_breaker():
    policy = HealthPolicy(min_requests=10, cooldown_s=30, half_open_probes=3)
    w = TwoProcessors(policy)
    w.outage(A)
    await w.pay_every_second(10)
    assert w.health.breaker(A) is BreakerState.OPEN

    w.outage(A, "")  # sim_a is back
    w.clock.advance(30)
    probes = await w.pay_every_second(3)
    assert all(processors_called(p) == [A] for p in probes)
    assert "half-open probe 1 of 3" in probes[0].steps[0].attempts[0].routing_reason
    assert w.seen.breakers[A] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    assert w.health.state(A) is HealthState.HEALTHY

    back = await w.pay_every_second(5)
    assert all(processors_called(p) == [A] for p in back), "traffic came back"
    assert w.seen.states[A][-2:] == [HealthState.UNHEALTHY, HealthState.HEALTHY]


async def test_a_probe_that_fails_reopens_the_breaker_and_the_payment_still_succeeds_on_the_second():
    w = TwoProcessors(HealthPolicy(min_requests=10, cooldown_s=30))
    w.outage(A)
    await w.pay_every_second(10)
    w.clock.advance(30)

    probe = await w.pay()
    assert processors_called(probe) == [A, B]
    assert probe.status is PaymentStatus.SUCCEEDED and w.charges(probe) == 1
    assert w.seen.breakers[A] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN]
    assert processors_called(await w.pay()) == [B]


async def test_half_open_sends_no_more_than_its_probes_at_once():
    w = TwoProcessors(HealthPolicy(min_requests=10, cooldown_s=30, half_open_probes=2))
    w.outage(A)
    await w.pay_every_second(10)
    w.clock.advance(30)
    picks = [w.health.choose([A, B]) for _ in range(4)]
    assert [(c.processor, c.probe) for c in picks if c] == [
        (A, True),
        (A, True),
        (B, False),
        (B, False),
    ]


# -- latency and declines ------------------------------------------------------------
async def test_a_latency_only_degradation_is_detected():
    policy = HealthPolicy(min_requests=10, degraded_p95_ms=2_000, unhealthy_p95_ms=8_000)
    w = TwoProcessors(policy, latency_ms=(2_500.0, 50.0))
    payments = await w.pay_every_second(10)

    assert all(p.status is PaymentStatus.SUCCEEDED for p in payments), "no errors at all"
    report = w.health.snapshot(A)
    assert report is not None
    assert report.state is HealthState.DEGRADED and report.stats.infra_failures == 0
    assert "p95 latency" in report.reason and report.stats.p95_latency_ms >= 2_000
    assert processors_called(await w.pay()) == [B]


async def test_a_latency_beyond_the_unhealthy_threshold_opens_the_breaker():
    policy = HealthPolicy(min_requests=5, degraded_p95_ms=2_000, unhealthy_p95_ms=5_000)
    w = TwoProcessors(policy, latency_ms=(6_000.0, 50.0))
    await w.pay_every_second(5)
    assert w.health.breaker(A) is BreakerState.OPEN


@pytest.mark.parametrize("decline_share", [0.0, 0.5, 0.9, 1.0])
async def test_declines_at_any_rate_never_change_health(decline_share):
    w = TwoProcessors()
    declines = int(200 * decline_share)
    tokens = ["pm_card_chargeDeclined"] * declines + ["pm_card_visa"] * (200 - declines)
    random.Random(7).shuffle(tokens)
    for token in tokens:
        await w.pay(token)
        w.clock.advance(0.1)

    report = w.health.snapshot(A)
    assert report is not None
    assert report.stats.declines == declines
    assert report.stats.decline_rate == pytest.approx(decline_share, abs=0.01)
    assert w.seen.states[A] == [HealthState.HEALTHY], "never changed"
    assert w.seen.breakers.get(A) is None


# -- a charge still processing ---------------------------------------------------------
# Ours: a payment method the bank settles later (a bank debit, some wallets). Stripe
# answers such a charge with `processing`, which the adapter reads as PENDING.
BANK_DEBIT = "pm_bank_debit_processing"


class SettlesLater(SimulatedProcessor):
    """Answers BANK_DEBIT as Stripe answers an asynchronous charge: still processing."""

    async def authorize(self, request):
        if request.token != BANK_DEBIT:
            return await super().authorize(request)
        await self._sleep(0.2)
        return ProcessorResponse(
            ResponseKind.PENDING, processor_payment_id="pi_debit", message="status processing"
        )


def settling_later(w: TwoProcessors) -> None:
    w.a = SettlesLater(A, sleep=w.clock.sleep)
    w.router.processors[A] = w.a  # type: ignore[index]


async def test_a_run_of_charges_still_processing_never_opens_the_breaker():
    """`processing` is a charge under way, not a failing processor: neither a success nor
    a failure of the failure rate. Its latency is the processor's answer time: counted."""
    w = TwoProcessors()
    settling_later(w)
    payments = await w.pay_every_second(40, token=BANK_DEBIT)

    assert all(p.steps[0].processor == A for p in payments)
    assert all(p.steps[0].status is StepStatus.UNKNOWN for p in payments)
    report = w.health.snapshot(A)
    assert report is not None
    assert (report.stats.infra_failures, report.stats.successes) == (0, 0)
    assert report.stats.requests == 40
    assert report.stats.average_latency_ms == pytest.approx(200.0)
    assert w.seen.states[A] == [HealthState.HEALTHY] and w.seen.breakers.get(A) is None
    assert w.metric("payorch_processor_requests_total", processor=A, outcome="other") == 40

    # Real infrastructure failures among them still open it.
    w.outage(A)
    await w.pay_every_second(20)
    assert w.health.breaker(A) is BreakerState.OPEN


async def test_charges_still_processing_neither_dilute_nor_add_to_the_failure_rate():
    w = TwoProcessors(HealthPolicy(min_requests=100), max_retries=0)
    settling_later(w)
    w.outage(A)  # every card charge on sim_a fails on infrastructure
    for _ in range(10):
        await w.pay(BANK_DEBIT)
        await w.pay()
        w.clock.advance(1.0)

    report = w.health.snapshot(A)
    assert report is not None
    assert report.stats.failure_rate == 1.0  # not diluted by the ten still processing
    assert report.stats.sample == report.stats.infra_failures == 10  # nor added to


# -- retries and the budget ----------------------------------------------------------
async def test_the_retry_budget_holds_under_a_total_failure_storm():
    # No verdict ever (min_requests out of reach): only the budget stands between a
    # storm and three retries per payment.
    policy = HealthPolicy(
        window_s=3_600, min_requests=1_000_000, retry_budget_ratio=0.1, retry_budget_min=10
    )
    w = TwoProcessors(policy, max_retries=3)
    w.outage(A, "rate_limit=1.0")
    w.outage(B, "rate_limit=1.0")
    payments = await w.pay_every_second(500)

    for name in (A, B):
        authorizes = [
            a
            for p in payments
            for a in p.steps[0].attempts
            if a.processor == name and a.operation == "authorize"
        ]
        retries = [a for a in authorizes if "retry" in a.routing_reason]
        assert len(retries) <= max(10, 0.1 * len(authorizes)), name
        assert len(retries) >= 10, "the budget is used, not just refused"
    refused = [p for p in payments if "retry budget of sim_a spent" in _decisions(p)]
    assert refused, "the budget said no, and said why"
    assert all(p.status is PaymentStatus.FAILED for p in payments)


def _decisions(payment) -> str:
    return " | ".join(a.retry_decision for a in payment.steps[0].attempts)


async def test_a_rate_limited_call_fails_over_at_once_when_retries_are_spent():
    w = TwoProcessors(max_retries=0)
    w.a.inject("rate_limit")
    payment = await w.pay()
    attempts = payment.steps[0].attempts
    assert [(a.processor, a.error_code) for a in attempts] == [
        (A, ErrorCode.RATE_LIMITED),
        (B, ErrorCode.NONE),
    ]
    assert "a 429 is refused before any processing" in attempts[0].retry_decision
    assert attempts[1].delay_before_ms == 0
    assert payment.status is PaymentStatus.SUCCEEDED and w.charges(payment) == 1


async def test_a_connection_error_fails_over_to_the_next_processor():
    w = TwoProcessors(max_retries=0)
    w.a.inject("connection_error")
    payment = await w.pay()
    assert processors_called(payment) == [A, B]
    assert "before the request was sent" in payment.steps[0].attempts[0].retry_decision


async def test_a_500_fails_over_only_after_the_lookup_proves_nothing_was_charged():
    w = TwoProcessors(max_retries=0)
    w.a.inject("api_error")
    payment = await w.pay()
    attempts = payment.steps[0].attempts
    assert [(a.processor, a.operation) for a in attempts] == [
        (A, "authorize"),
        (A, "lookup"),
        (B, "authorize"),
    ]
    assert attempts[2].idempotency_key.endswith("_g1")
    assert payment.steps[0].processor_payment_id.startswith("pi_sim_")
    assert w.b.ledger.intents[f"payorch_{payment.id}_0"].charges == 1
    assert w.a.ledger.intents[f"payorch_{payment.id}_0"].charges == 0


async def test_a_500_that_did_charge_is_found_by_the_lookup_and_never_moves():
    w = TwoProcessors(max_retries=0)
    w.a.inject("charged_api_error")
    payment = await w.pay()
    assert processors_called(payment) == [A]
    assert payment.status is PaymentStatus.SUCCEEDED and w.charges(payment) == 1
    assert w.b.calls == 0


@pytest.mark.parametrize("first", ["lost_response", "timeout"])
async def test_a_lost_answer_never_fails_over_the_step_stays_unknown_with_its_processor(first):
    w = TwoProcessors(max_retries=1)
    w.a.inject(first, "timeout")
    payment = await w.pay()
    step = payment.steps[0]
    assert step.status is StepStatus.UNKNOWN and step.processor == A
    assert processors_called(payment) == [A, A], "the same key, on the same processor"
    assert w.b.calls == 0


async def test_a_429_after_a_lost_answer_does_not_fail_over():
    w = TwoProcessors(max_retries=1)
    w.a.inject("lost_response", "rate_limit")
    payment = await w.pay()
    step = payment.steps[0]
    assert step.status is StepStatus.UNKNOWN and step.processor == A
    assert "an earlier answer was lost" in step.attempts[-1].retry_decision
    assert w.b.calls == 0 and w.charges(payment) == 1
    # The reconciler finds the charge where it happened.
    w.clock.advance(120)
    assert await w.service.reconcile_due() == 1
    assert (await w.service.get(payment.id, "m_1")).status is PaymentStatus.SUCCEEDED


async def test_a_hard_decline_never_moves_to_another_processor():
    w = TwoProcessors(max_retries=3)
    payment = await w.pay("pm_card_chargeDeclined")
    assert processors_called(payment) == [A] and w.b.calls == 0


async def test_with_every_breaker_open_the_step_fails_hard_without_calling_anyone():
    w = TwoProcessors(HealthPolicy(min_requests=10, cooldown_s=30))
    w.outage(A)
    w.outage(B)
    await w.pay_every_second(10)
    assert not w.health.available and w.seen.availability[-1] is False
    calls = (w.a.calls, w.b.calls)

    payment = await w.pay()
    assert payment.status is PaymentStatus.FAILED
    assert payment.steps[0].error_code is ErrorCode.NO_PROCESSOR_AVAILABLE
    assert payment.steps[0].outcome is Outcome.HARD
    assert payment.steps[0].attempts == [] and (w.a.calls, w.b.calls) == calls

    w.clock.advance(30)
    assert w.health.available and w.seen.availability[-1] is True


async def test_a_step_no_processor_could_take_says_to_charge_again_later():
    """Every breaker open is an outage of ours: the same method is worth charging again
    once a processor is back (installment plans do so), so StepFailed says retry_later.
    It is still HARD: nothing is retried now, nobody was called."""
    w = TwoProcessors(HealthPolicy(min_requests=10, cooldown_s=30))
    w.outage(A)
    w.outage(B)
    await w.pay_every_second(10)
    assert not w.health.available
    w.uow.events.clear()

    payment = await w.pay()

    assert payment.steps[0].error_code is ErrorCode.NO_PROCESSOR_AVAILABLE
    (failed,) = [e for e in w.uow.events if e.name == "StepFailed"]
    assert failed.error_code is ErrorCode.NO_PROCESSOR_AVAILABLE
    assert (failed.outcome, failed.retry_later) == (Outcome.HARD, True)


async def test_an_unknown_step_is_reconciled_with_its_own_processor_only():
    w = TwoProcessors(max_retries=0)
    w.a.inject("rate_limit")  # moves the step to sim_b...
    w.b.inject("lost_response")  # ...which charges, and the answer is lost
    payment = await w.pay()
    assert payment.steps[0].status is StepStatus.UNKNOWN and payment.steps[0].processor == B

    calls_a = w.a.calls
    w.clock.advance(120)
    assert await w.service.reconcile_due() == 1
    resolved = await w.service.get(payment.id, "m_1")
    assert resolved.status is PaymentStatus.SUCCEEDED and resolved.steps[0].processor == B
    assert w.a.calls == calls_a and w.charges(resolved) == 1


# -- what the observers see ------------------------------------------------------------
async def test_metrics_count_outcomes_and_follow_state_and_breaker():
    w = TwoProcessors()
    await w.pay_every_second(3)
    await w.pay("pm_card_chargeDeclined")
    w.outage(A)
    await w.pay_every_second(10)

    assert w.metric("payorch_processor_requests_total", processor=A, outcome="success") == 3
    assert w.metric("payorch_processor_requests_total", processor=A, outcome="decline") == 1
    failures = w.metric("payorch_processor_requests_total", processor=A, outcome="infra_failure")
    assert failures == w.health.snapshot(A).stats.infra_failures >= 5
    assert w.metric("payorch_processor_latency_seconds_count", processor=A) == (
        w.health.snapshot(A).stats.requests
    )
    assert w.metric("payorch_processor_health_state", processor=A) == 2
    assert w.metric("payorch_processor_health_state", processor=B) == 0
    assert w.metric("payorch_processor_breaker_transitions_total", processor=A, to="open") == 1
    assert w.metric("payorch_processors_available") == 1
    labels = {tuple(sorted(s.labels)) for m in w.registry.collect() for s in m.samples if s.labels}
    assert all(set(k) <= {"processor", "outcome", "to", "le"} for k in labels)


class BrokenObserver(Transitions):
    def call_recorded(self, processor: str, signal: Signal, latency_s: float) -> None:
        raise RuntimeError("metrics backend down")

    def breaker_changed(self, processor: str, state: BreakerState) -> None:
        raise RuntimeError("metrics backend down")


async def test_a_failing_observer_never_breaks_a_payment(caplog):
    w = TwoProcessors()
    w.health.add_observer(BrokenObserver())
    w.outage(A)
    payments = await w.pay_every_second(6)
    assert all(p.status is PaymentStatus.SUCCEEDED for p in payments)
    assert w.health.breaker(A) is BreakerState.OPEN
    assert "health observer BrokenObserver failed" in caplog.text


class GivesUpAtTheTimeout:
    """Answers in 300 ms; gives up (no answer) at the call's timeout, as the Stripe
    adapter does when it runs out of the time the router gave it."""

    def __init__(self, name: str, clock: ManualClock) -> None:
        self.name, self.clock, self.charged = name, clock, 0

    async def authorize(self, request):
        if request.timeout_s < 0.3:
            await self.clock.sleep(request.timeout_s)
            return ProcessorResponse(ResponseKind.NO_RESPONSE, exception="TimeoutError")
        await self.clock.sleep(0.3)
        self.charged += 1
        return ProcessorResponse(ResponseKind.SUCCEEDED, processor_payment_id=f"pi_{self.charged}")

    async def lookup(self, request, processor_payment_id):
        return ProcessorResponse(ResponseKind.NOT_FOUND)


@pytest.mark.parametrize("caller_deadline_s", [0.25, None])
async def test_a_callers_short_deadline_is_not_blamed_on_the_processor(caller_deadline_s):
    clock = ManualClock()
    slow = GivesUpAtTheTimeout(A, clock)
    health = HealthTracker(HealthPolicy(min_requests=10), clock, processors=[A])
    # Without a caller's deadline, the router's own timeout (0.25 s) is the processor's.
    router = Router(
        {A: slow},
        clock,
        rng=random.Random(1),
        health=health,
        call_timeout_s=10.0 if caller_deadline_s else 0.25,
    )
    configs = MerchantConfigs(
        FakeMerchantConfigStore(),
        clock,
        [A],
        defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=0)),
    )
    service = PaymentService(
        FakeUnitOfWorkFactory(), router, clock, configs, Settlement(router.processors, clock)
    )
    for n in range(25):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_hasty",
                request_id=f"r-{n}",
                amount_minor=2500,
                currency="EUR",
                payment_method="pm_card_visa",
            )
        )
        await service.create(core, deadline_s=caller_deadline_s)
        clock.advance(1.0)

    if caller_deadline_s:
        assert (health.state(A), health.breaker(A)) == (HealthState.HEALTHY, BreakerState.CLOSED)
    else:
        assert health.breaker(A) is BreakerState.OPEN


# -- what changes while a retry waits ---------------------------------------------------
def _open_breaker_of(w: TwoProcessors, name: str) -> None:
    """Other payments' failures, answered while this one waits: the breaker opens."""
    for _ in range(w.health.policy.min_requests):
        w.health.record(name, Signal.INFRA_FAILURE, 0.01, authorize=True)
    assert w.health.breaker(name) is BreakerState.OPEN


@pytest.mark.parametrize("meanwhile", ["open", "half_open_probes_taken"])
async def test_a_retry_is_not_sent_to_a_processor_whose_breaker_opened_during_its_back_off(
    meanwhile,
):
    # The back-off is 200-400 ms: a cool-down of 0.1 s ends during it, one of 30 s does not.
    cooldown_s = 30.0 if meanwhile == "open" else 0.1
    w = TwoProcessors(HealthPolicy(min_requests=10, cooldown_s=cooldown_s, half_open_probes=1))
    w.a.inject("rate_limit")  # sim_a is healthy: the 429 is retried there after a back-off
    backing_off = w.clock.sleep

    async def sleep(seconds: float) -> None:
        _open_breaker_of(w, A)
        if meanwhile == "half_open_probes_taken":
            w.clock.advance(0.1)
            taken = w.health.choose([A])
            assert taken is not None and taken.probe  # another payment's probe, in flight
        await backing_off(seconds)

    w.clock.sleep = sleep  # type: ignore[method-assign]
    payment = await w.pay()

    attempts = payment.steps[0].attempts
    assert processors_called(payment) == [A, B], "no retry on sim_a once its breaker left closed"
    assert "withheld: sim_a is unhealthy: no retry on it" in attempts[0].retry_decision
    assert "failing over to sim_b: a 429 is refused before any processing" in (
        attempts[0].retry_decision
    )
    assert payment.status is PaymentStatus.SUCCEEDED and w.charges(payment) == 1
    if meanwhile == "half_open_probes_taken":
        assert w.health.breaker(A) is BreakerState.HALF_OPEN


class CutShort:
    """A processor whose call is cut short (the caller went away, the adapter raised)
    after `meanwhile` has run: no answer to judge."""

    def __init__(self, name: str, meanwhile) -> None:
        self.name, self.meanwhile = name, meanwhile

    async def authorize(self, request):
        self.meanwhile()
        raise asyncio.CancelledError


async def test_a_probe_cut_short_after_its_half_open_period_ended_frees_no_slot_of_the_next():
    w = TwoProcessors(HealthPolicy(min_requests=10, cooldown_s=5, half_open_probes=2))
    _open_breaker_of(w, A)
    w.clock.advance(5)

    def meanwhile() -> None:
        # This payment is probe 1. Probe 2, another payment's, fails: open again; after
        # the next cool-down two more payments take both probes of the new period.
        other = w.health.choose([A])
        assert other is not None and other.probe
        w.clock.advance(0.1)
        w.health.record(A, Signal.INFRA_FAILURE, 0.01, authorize=True, probe=True)
        assert w.health.breaker(A) is BreakerState.OPEN
        w.clock.advance(5)
        assert [c.probe for c in (w.health.choose([A]), w.health.choose([A])) if c] == [True] * 2

    w.router.processors[A] = CutShort(A, meanwhile)  # type: ignore[index]
    with pytest.raises(asyncio.CancelledError):
        await w.pay()

    assert w.health.breaker(A) is BreakerState.HALF_OPEN
    assert w.health.choose([A]) is None, "both probes of this period are still out"


async def test_a_failover_is_timed_by_the_next_processors_usual_latency_not_the_first_ones():
    w = TwoProcessors(max_retries=0)
    for _ in range(5):  # sim_b usually takes 300 ms
        w.health.record(B, Signal.SUCCESS, 0.3, authorize=True)
    slow = GivesUpAtTheTimeout(B, w.clock)
    w.router.processors[B] = slow  # type: ignore[index]
    w.a.inject("rate_limit")  # sim_a refuses at once: nothing charged there

    # 300 ms left: enough for sim_a's usual answer, not for sim_b's plus the reserve.
    payment = await w.pay(deadline_s=0.3)

    step = payment.steps[0]
    assert processors_called(payment) == [A], "sim_b would be cut off by the deadline"
    assert "ms left before the deadline" in step.attempts[0].retry_decision
    assert step.status is StepStatus.FAILED and step.error_code is ErrorCode.RATE_LIMITED
    assert slow.charged == 0


async def test_a_processor_refusing_our_key_fails_over_at_once():
    """A 401 (our API key revoked or rolled) is refused before anything is processed:
    nothing was charged there, so the step moves to the other processor."""
    w = TwoProcessors(max_retries=0)

    async def refused(request):
        return ProcessorResponse(
            ResponseKind.ERROR, http_status=401, error_type="authentication_error"
        )

    w.a.authorize = refused  # type: ignore[method-assign]
    payment = await w.pay()

    assert processors_called(payment) == [A, B]
    assert "a refused API key (or permission) is refused before any processing" in (
        payment.steps[0].attempts[0].retry_decision
    )
    assert payment.status is PaymentStatus.SUCCEEDED and w.charges(payment) == 1


async def test_a_failover_to_a_processor_with_no_calls_yet_is_timed_by_the_failed_call():
    """sim_b has answered nothing yet: its usual time is unknown, and sim_a's 1.5 s call
    stands in for it. 0.5 s left cannot hold it: no failover, nothing charged twice."""
    w = TwoProcessors(max_retries=0)
    real = w.a.authorize

    async def slow_429(request):
        await w.clock.sleep(1.5)
        return await real(request)

    w.a.authorize = slow_429  # type: ignore[method-assign]
    w.a.inject("rate_limit")

    payment = await w.pay(deadline_s=2.0)

    step = payment.steps[0]
    assert processors_called(payment) == [A]
    assert "ms left before the deadline" in step.attempts[0].retry_decision
    assert step.status is StepStatus.FAILED and step.error_code is ErrorCode.RATE_LIMITED


async def test_a_probe_cut_short_in_its_own_half_open_period_frees_its_slot():
    w = TwoProcessors(HealthPolicy(min_requests=10, cooldown_s=5, half_open_probes=1))
    _open_breaker_of(w, A)
    w.clock.advance(5)
    w.router.processors[A] = CutShort(A, lambda: None)  # type: ignore[index]

    with pytest.raises(asyncio.CancelledError):
        await w.pay()

    assert w.health.breaker(A) is BreakerState.HALF_OPEN
    again = w.health.choose([A])
    assert again is not None and again.probe, "the cut-short probe's slot is free again"
