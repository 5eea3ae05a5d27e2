"""A processor's event about a payment still PROCESSING in payorch.

Such an event used to be ignored and remembered as seen: after a crash only the
reconciler's 5 minute rule settled the payment, and the processor's redelivery was
taken for a duplicate. A payment stored PROCESSING less than STALE_PROCESSING ago may
still be run by a live server (no run lasts longer: RUN_LIMIT_S): the event is not
remembered and is refused, so the processor sends it again. Older, its server died:
the event settles the step as the reconciler would, by a lookup, not by its body.
"""

from __future__ import annotations

import pytest

from payorch.app.observability import Via
from payorch.app.payments import (
    STALE_PROCESSING,
    PaymentInProgress,
    ProcessorEvent,
    ProcessorEvents,
)
from payorch.domain.payment import Payment, PaymentStatus, StepStatus
from tests.unit.test_recovery_scenarios import World
from tests.unit.test_split_execution import ACTION, OK
from tests.unit.test_split_execution import World as SplitWorld


async def killed_at_the_final_save(w: World, token: str = "pm_card_visa") -> Payment:
    """A payment whose server died after the processor answered, before the answer was
    stored: PROCESSING, its step pending, as the insert left it."""
    update = w.uow.update_payment

    async def dies(payment: Payment) -> None:
        raise RuntimeError("the server died")

    w.uow.update_payment = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await w.pay(token=token)
    w.uow.update_payment = update  # type: ignore[method-assign]
    (stored,) = w.uow.store.values()
    assert stored.status is PaymentStatus.PROCESSING
    assert [s.status for s in stored.steps] == [StepStatus.PENDING]
    return stored


def intent_id(w: World) -> str:
    (intent,) = w.sim.ledger.intents.values()
    return intent.id


@pytest.mark.parametrize("charged", [True, False], ids=["succeeded", "payment_failed"])
async def test_an_event_while_the_payment_may_still_run_is_refused_unremembered_and_applied_when_sent_again(
    charged,
):
    w = World()
    payment = await killed_at_the_final_save(w)
    event = ProcessorEvent("evt_1", "webhook", payment.id, 0, intent_id(w), charged)
    events = ProcessorEvents(w.uow, w.service, w.clock)
    calls, looked = w.sim.calls, []
    lookup = w.sim.lookup

    async def counted(request, processor_payment_id):
        looked.append(processor_payment_id)
        return await lookup(request, processor_payment_id)

    w.sim.lookup = counted  # type: ignore[method-assign]

    w.clock.advance(60)  # a live run may still own it
    with pytest.raises(PaymentInProgress):
        await events.apply(event)
    assert "evt_1" not in w.uow.seen_events
    assert w.uow.store[payment.id].status is PaymentStatus.PROCESSING
    assert (w.sim.calls, looked) == (calls, [])  # nothing asked

    w.clock.advance(STALE_PROCESSING.total_seconds())  # no live run can own it now
    assert await events.apply(event) == "looked up"  # Stripe's redelivery

    settled = await w.service.get(payment.id, None)
    assert settled.status is PaymentStatus.SUCCEEDED
    assert [a.operation for a in settled.steps[0].attempts] == ["lookup"]
    assert w.charges == 1
    reconciled = [e for e in w.uow.events if type(e).__name__ == "PaymentReconciled"]
    assert [e.source for e in reconciled] == ["retrieve"]  # learned by the lookup
    assert "evt_1" in w.uow.seen_events
    assert await events.apply(event) == "duplicate"


async def test_a_success_event_about_an_interrupted_payment_never_charged_is_not_believed():
    # The event's body says succeeded; the processor, asked, says nothing was charged
    # (a forged or misrouted event would say so too): the lookup is what counts.
    w = World()
    w.sim.inject("connection_error", "connection_error")  # never reached the processor
    payment = await killed_at_the_final_save(w)
    assert w.charges == 0
    w.clock.advance(STALE_PROCESSING.total_seconds() + 1)

    result = await ProcessorEvents(w.uow, w.service, w.clock).apply(
        ProcessorEvent("evt_2", "webhook", payment.id, 0, "pi_sim_unknown", True)
    )

    assert result == "looked up"
    settled = await w.service.get(payment.id, None)
    assert settled.status is PaymentStatus.FAILED and w.charges == 0


async def test_a_payment_changed_since_it_was_read_is_refused_with_nothing_asked():
    """Another pass claimed it (or changed it) after the event read it: the claim fails,
    and the event is to be sent again, not applied to what it read."""
    w = World()
    stored = await killed_at_the_final_save(w)
    w.clock.advance(STALE_PROCESSING.total_seconds())
    read = await w.service.get(stored.id, None)
    theirs = await w.service.get(stored.id, None)
    async with w.uow() as uow:  # another reconciler's claim, since
        assert await uow.payments.claim(theirs, w.clock.now() + STALE_PROCESSING)
        await uow.commit()
    calls = w.sim.calls

    with pytest.raises(PaymentInProgress):
        await w.service.reconcile_claimed(read, Via.RECONCILER)

    assert w.sim.calls == calls
    assert w.uow.store[read.id].status is PaymentStatus.PROCESSING


async def test_a_charged_event_for_a_step_a_live_run_settled_leaves_the_rest_to_that_run():
    """The customer completed 3-D Secure on a split's first step and ConfirmPayment is
    charging the second (stored PROCESSING, the first settled by the confirm's lookup)
    when the processor's event about the first comes. That event did not settle the
    step: the rest of the plan is the confirm's, never charged from the event as well."""
    w = SplitWorld()
    p = await w.pay(("card", ACTION, 4000), ("google_pay", OK, None), total=10000)
    assert p.status is PaymentStatus.REQUIRES_ACTION
    w.sim.complete_action(p.steps[0].processor_payment_id)
    events = ProcessorEvents(w.uow, w.service, w.clock)
    event = ProcessorEvent("evt_3", "webhook", p.id, 0, p.steps[0].processor_payment_id, True)
    authorize = w.sim.authorize
    second: list[int] = []
    applied: list[str] = []

    async def meanwhile(request):
        if request.step_index == 1:
            second.append(1)
            if len(second) == 1:  # the confirm's call: the event comes while it runs
                stored = w.uow.store[p.id]
                assert stored.status is PaymentStatus.PROCESSING
                assert [s.status for s in stored.steps][1] is StepStatus.PENDING
                applied.append(await events.apply(event))
        return await authorize(request)

    w.sim.authorize = meanwhile  # type: ignore[method-assign]
    done = await w.service.confirm(p.id, "m_1")

    assert applied == ["ignored"]
    assert second == [1]  # charged once, by the confirm
    assert done.status is PaymentStatus.SUCCEEDED and w.held() == 10000
