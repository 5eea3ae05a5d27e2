"""A payment its server left PROCESSING whose lookups tell nothing backs off as an
UNKNOWN one does: looked up 5 minutes after it was left, then 5 minutes, 1 hour and
daily after each lookup that could not tell, never given up and never charged.

It used to be looked up on every pass 5 minutes after the last (its `updated_at`), at
every replica, for as long as the processor could not answer.
"""

from __future__ import annotations

import pytest

from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.fakes.dying import ServerDied
from tests.unit.test_recovery_scenarios import World

PASS_S = 60  # PAYORCH_RECONCILE_INTERVAL_S


async def left_processing(w: World):
    """A payment whose server died once its row was stored, before any call."""

    async def dies(request):
        raise ServerDied("the server died")

    real = w.sim.authorize
    w.sim.authorize = dies  # type: ignore[method-assign]
    with pytest.raises(ServerDied):
        await w.pay()
    w.sim.authorize = real  # type: ignore[method-assign]
    (stored,) = w.uow.store.values()
    assert stored.status is PaymentStatus.PROCESSING
    return stored


def unanswered_lookups(w: World) -> list[float]:
    """The processor cannot tell (its lookups answer 500): when each lookup came, in
    seconds on the clock's monotonic scale."""
    asked: list[float] = []
    real = w.sim.lookup

    async def unanswered(request, processor_payment_id):
        asked.append(w.clock.monotonic())
        return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")

    w.sim.lookup = unanswered  # type: ignore[method-assign]
    w.real_lookup = real  # type: ignore[attr-defined]
    return asked


async def passes(w: World, seconds: int) -> None:
    """The reconciler's passes, one a minute, for `seconds`."""
    for _ in range(seconds // PASS_S):
        w.clock.advance(PASS_S)
        await w.service.reconcile_due()


async def test_an_interrupted_payment_whose_lookups_tell_nothing_backs_off():
    w = World()
    payment = await left_processing(w)
    asked = unanswered_lookups(w)
    left_at = w.clock.monotonic()

    minute, hour, day = 60, 3600, 86400
    await passes(w, 2 * hour)
    # 5 minutes after it was left (STALE_PROCESSING), then 5 minutes, then an hour on.
    assert [round(t - left_at) for t in asked] == [300, 600, 4200]

    # Then daily: nothing until a day after the last lookup (the passes between are
    # skipped over, as each would find nothing due), then one lookup.
    w.clock.advance(4200 + day - 3 * minute - (w.clock.monotonic() - left_at))
    await passes(w, 2 * minute)
    assert len(asked) == 3
    await passes(w, 2 * minute)
    assert [round(t - left_at) for t in asked] == [300, 600, 4200, 4200 + day]
    stored = await w.service.get(payment.id, None)
    # Not given up: still PROCESSING, its step open, due again a day on.
    assert stored.status is PaymentStatus.PROCESSING
    assert stored.steps[0].status is StepStatus.PENDING
    assert stored.next_reconcile_at is not None
    assert w.charges == 0


async def test_once_the_processor_answers_the_backed_off_payment_settles():
    w = World()
    payment = await left_processing(w)
    asked = unanswered_lookups(w)
    await passes(w, 11 * 60)
    assert len(asked) == 2

    w.sim.lookup = w.real_lookup  # type: ignore[attr-defined,method-assign]
    await passes(w, 60 * 60)

    stored = await w.service.get(payment.id, None)
    assert stored.status is PaymentStatus.FAILED  # nothing was charged: proven, not guessed
    assert stored.steps[0].status is StepStatus.FAILED
    assert w.charges == 0


async def test_a_split_left_after_its_pause_is_taken_5_minutes_on_not_when_the_pause_expired():
    """A run that goes on after a pause (ConfirmPayment) starts the schedule afresh: the
    pause's expiry (an hour) is no back-off, and its server dying mid-plan leaves a
    payment interrupted 5 minutes on."""
    from tests.unit.test_split_execution import ACTION, OK
    from tests.unit.test_split_execution import World as SplitWorld
    from tests.unit.test_split_interrupted import dies_after_charging_step

    w = SplitWorld()
    p = await w.pay(("card", ACTION, 4000), ("apple_pay", OK, None))
    assert p.status is PaymentStatus.REQUIRES_ACTION
    w.sim.complete_action(p.steps[0].processor_payment_id)
    dies_after_charging_step(w, 1)
    with pytest.raises(ServerDied):
        await w.service.confirm(p.id, "m_1")
    (stored,) = w.uow.store.values()
    assert stored.status is PaymentStatus.PROCESSING
    assert stored.next_reconcile_at is None

    w.clock.advance(301)
    assert await w.service.reconcile_due() == 1
    (stored,) = w.uow.store.values()
    assert stored.status is PaymentStatus.SUCCEEDED and w.held() == 10000
