"""This process's own stalls are not the processors' latency.

A worker frozen (SIGSTOP, a paused VM) with calls in flight used to count the
freeze as those calls' latency: the processor was judged unhealthy, its breaker
opened, and every payment after the resume failed with no processor available.
Time moves only through the ManualClock; `freeze` is the process not running.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation
from payorch.app.health import HealthTracker
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import PaymentService
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.app.stalls import StallWatch
from payorch.domain.classification import classify
from payorch.domain.health import HealthPolicy, HealthState, Signal, signal_despite_stall
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.domain.results import ProcessorResponse, ResponseKind
from payorch.domain.retry import RetryPolicy
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory

SIM = "sim"


# --- the watch -------------------------------------------------------------------


def watched(**kw) -> tuple[ManualClock, StallWatch]:
    """A manual clock and a watch on it that ticks every 0.1 s; a stall is 1 s late."""
    clock = ManualClock()
    return clock, StallWatch(clock, interval_s=0.1, threshold_s=1.0, **kw)


def test_ticks_on_time_are_no_stall():
    clock, watch = watched()
    start = clock.monotonic()
    for _ in range(50):
        clock.advance(0.1)
        watch.tick()
    assert watch.stalled_s(start, clock.monotonic()) == 0.0


def test_a_late_tick_is_a_stall_from_when_it_was_due():
    clock, watch = watched()
    t0 = clock.monotonic()
    clock.advance(10.1)
    watch.tick()
    # Due at t0 + 0.1, ran at t0 + 10.1: 10 s stalled.
    assert watch.stalled_s(t0, clock.monotonic()) == pytest.approx(10.0)
    # Only the overlap with the span asked about.
    assert watch.stalled_s(t0 + 5.1, t0 + 7.1) == pytest.approx(2.0)
    assert watch.stalled_s(t0 + 10.1, t0 + 10.5) == 0.0  # after it


def test_a_tick_late_by_less_than_the_threshold_is_not_a_stall():
    clock, watch = watched()
    t0 = clock.monotonic()
    clock.advance(0.9)
    watch.tick()
    assert watch.stalled_s(t0, clock.monotonic()) == 0.0


def test_a_stall_still_in_progress_counts_before_the_late_tick():
    """After a resume, a call's answer can be handled before the watch's tick runs."""
    seen: list[float] = []
    clock, watch = watched(on_stall=seen.append)
    watch.tick()
    t0 = clock.monotonic()
    clock.advance(8.1)
    assert watch.stalled_s(t0, clock.monotonic()) == pytest.approx(8.0)
    assert seen == []
    watch.tick()
    assert seen == [pytest.approx(8.0)]
    # Counted once, not as a recorded stall and an ongoing one.
    assert watch.stalled_s(t0, clock.monotonic()) == pytest.approx(8.0)


def test_a_watch_that_is_not_running_sees_no_stall():
    """Not started (a manual clock, a tool that never ran it) or stopped: a call is
    not taken for a stall because no tick came."""
    clock, watch = watched()
    t0 = clock.monotonic()
    clock.advance(30.0)
    assert watch.stalled_s(t0, clock.monotonic()) == 0.0


async def test_a_stopped_watch_sees_no_stall():
    clock, watch = watched()
    task = asyncio.create_task(watch.run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = clock.monotonic()
    clock.advance(30.0)
    assert watch.stalled_s(t0, clock.monotonic()) == 0.0


def test_the_stalled_time_never_exceeds_the_span():
    clock, watch = watched()
    t0 = clock.monotonic()
    clock.advance(30.0)
    watch.tick()
    assert watch.stalled_s(t0 + 2.0, t0 + 3.0) == pytest.approx(1.0)


def test_a_watch_needs_a_positive_interval_and_threshold():
    with pytest.raises(ValueError):
        StallWatch(ManualClock(), interval_s=0.0)
    with pytest.raises(ValueError):
        StallWatch(ManualClock(), threshold_s=-1.0)


async def test_run_ticks_on_the_clock_until_cancelled():
    clock, watch = watched()
    task = asyncio.create_task(watch.run())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.slept[:3] == [0.1, 0.1, 0.1]


# --- what a stall does to a call's signal -----------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # No answer in time, a dropped connection: possibly the stall's doing.
        (ProcessorResponse(ResponseKind.NO_RESPONSE, exception="Timeout"), Signal.OTHER),
        (ProcessorResponse(ResponseKind.CONNECTION_ERROR), Signal.OTHER),
        # The processor answered: its answer is its own.
        (
            ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error"),
            Signal.INFRA_FAILURE,
        ),
        (ProcessorResponse(ResponseKind.SUCCEEDED, processor_payment_id="pi_1"), Signal.SUCCESS),
    ],
)
def test_a_stall_makes_timeouts_and_dropped_connections_neutral_only(response, expected):
    from payorch.domain.health import signal_of

    c = classify(response)
    assert signal_despite_stall(signal_of(response, c, lookup=False), c) is expected


# --- a freeze with calls in flight -------------------------------------------------


class FrozenWorker:
    """One simulated processor whose calls wait on a gate: calls in flight when the
    process freezes finish only when it resumes, `freeze_s` later."""

    def __init__(self, *, watch: bool) -> None:
        self.clock = ManualClock()
        self.gate = asyncio.Event()
        self.gate.set()
        self.sim = SimulatedProcessor(SIM, Simulation(latency_ms=500), sleep=self._sleep)
        self.stalls = StallWatch(self.clock) if watch else None
        self.health = HealthTracker(HealthPolicy(), self.clock, processors=[SIM])
        router = Router(
            {SIM: self.sim},
            self.clock,
            rng=random.Random(1),
            health=self.health,
            stalls=self.stalls,
        )
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            [SIM],
            defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=1)),
        )
        self.service = PaymentService(
            FakeUnitOfWorkFactory(),
            router,
            self.clock,
            configs,
            Settlement({SIM: self.sim}, self.clock),
        )
        self._ids = itertools.count()

    async def _sleep(self, seconds: float) -> None:
        if self.gate.is_set():
            self.clock.advance(seconds)
            self._tick()
        else:
            await self.gate.wait()  # answered while frozen: handled on resume

    def _tick(self) -> None:
        if self.stalls is not None:
            self.stalls.tick()

    async def pay(self):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=f"r-{next(self._ids)}",
                amount_minor=2500,
                currency="EUR",
                payment_method="pm_card_visa",
            )
        )
        return (await self.service.create(core, deadline_s=None)).payment

    async def freeze_with_calls_in_flight(self, calls: int, freeze_s: float):
        self._tick()
        self.gate.clear()
        in_flight = [asyncio.create_task(self.pay()) for _ in range(calls)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert self.sim.calls == calls, "every call is in flight before the freeze"
        self.clock.advance(freeze_s)  # the process does not run
        self.gate.set()  # resumed: the answers are handled before the watch's tick
        return await asyncio.gather(*in_flight)


async def test_calls_in_flight_through_a_freeze_leave_the_processor_healthy():
    worker = FrozenWorker(watch=True)
    frozen = await worker.freeze_with_calls_in_flight(16, freeze_s=10.0)
    after = [await worker.pay() for _ in range(10)]

    assert all(p.status is PaymentStatus.SUCCEEDED for p in frozen + after)
    assert worker.health.state(SIM) is HealthState.HEALTHY
    snap = worker.health.snapshot(SIM)
    assert snap is not None and snap.stats.requests == 26
    # The attempts keep what was measured; only health leaves the freeze out.
    assert min(p.steps[0].attempts[0].latency_ms for p in frozen) >= 10_000


async def test_without_the_watch_a_freeze_reads_as_an_unhealthy_processor():
    """The failure the watch prevents, shown on the same scenario."""
    worker = FrozenWorker(watch=False)
    await worker.freeze_with_calls_in_flight(16, freeze_s=10.0)
    for _ in range(10):
        await worker.pay()

    assert worker.health.state(SIM) is HealthState.UNHEALTHY


async def test_connections_dropped_during_a_freeze_are_not_held_against_the_processor():
    worker = FrozenWorker(watch=True)
    worker.sim.inject(*["connection_error"] * 16)
    frozen = await worker.freeze_with_calls_in_flight(16, freeze_s=10.0)

    # Those the retry budget let through were retried on the same key and charged.
    retried = [p for p in frozen if p.status is PaymentStatus.SUCCEEDED]
    assert retried and all(len(p.steps[0].attempts) == 2 for p in retried)
    snap = worker.health.snapshot(SIM)
    assert snap is not None
    assert (snap.stats.infra_failures, snap.stats.successes) == (0, len(retried))
    assert worker.health.state(SIM) is HealthState.HEALTHY
