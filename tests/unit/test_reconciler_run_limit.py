"""The reconciler's work on one payment is held to RUN_LIMIT_S, as a live run is, and
the payment is claimed while it lasts: no other reconciler would take it meanwhile.

Before, a pass on an interrupted split whose lookups were slow went on as long as they
took (eight steps of 29 s: four minutes), and the payment, PROCESSING and untouched in
storage since its server died, was listed at every call for any other replica's pass.
Each call here takes its time on the injected clock (tests/unit/test_run_limit.py)."""

from __future__ import annotations

import pytest

from payorch.app.router import RUN_LIMIT_S
from payorch.domain.payment import Owed, PaymentStatus, StepStatus
from tests.fakes.dying import ServerDied
from tests.unit.test_run_limit import World


async def left_processing(w: World, steps: int):
    async def dies(request):
        raise ServerDied("the server died")

    w.processor.authorize = dies  # type: ignore[method-assign]
    with pytest.raises(ServerDied):
        await w.pay_split(steps, None)
    (stored,) = w.uow.store.values()
    assert stored.status is PaymentStatus.PROCESSING
    return stored


async def test_a_pass_on_a_slow_interrupted_split_ends_inside_the_run_limit_and_holds_it():
    w = World(latency_s=29.0, call_timeout_s=30.0)
    payment = await left_processing(w, 8)
    w.clock.advance(301)
    w.started = w.clock.monotonic()  # run time from the pass's start

    await w.service.reconcile_due()

    assert w.processor.calls, "the pass looked nothing up"
    assert all(started < RUN_LIMIT_S for _, started in w.processor.calls)
    assert w.run_time() <= RUN_LIMIT_S
    assert w.processor.taken == []  # no other pass would have listed it at any call
    stored = await w.service.get(payment.id, None)
    # What the limit left unasked is the next pass's: still open, never skipped.
    assert stored.status is PaymentStatus.PROCESSING
    assert StepStatus.PENDING in [s.status for s in stored.steps]

    w.clock.advance(301)
    w.started = w.clock.monotonic()
    await w.service.reconcile_due()
    w.clock.advance(301)
    await w.service.reconcile_due()
    done = await w.service.get(payment.id, None)
    assert done.status is PaymentStatus.FAILED  # nothing was charged: every step asked
    assert [s.status for s in done.steps] == [StepStatus.FAILED] * 8


async def test_with_calls_too_slow_for_any_capture_in_a_run_the_reconciler_still_makes_it():
    """With 60 s calls no capture fits in a run (2 x 70 s at its longest): the live run
    owes it, and the reconciler's pass, not held to the limit then, makes it."""
    w = World(latency_s=1.0, call_timeout_s=60.0)
    payment = await w.pay_split(2, None)
    assert (payment.status, payment.owed) == (PaymentStatus.AUTHORIZED, Owed.CAPTURE)

    w.clock.advance(60)
    await w.service.reconcile_due()
    done = await w.service.get(payment.id, None)
    assert (done.status, done.owed) == (PaymentStatus.SUCCEEDED, Owed.NOTHING)
