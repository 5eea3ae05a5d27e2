"""A step paused for the customer that payorch voided itself (giving the payment up an
hour on), the void's answer lost and so the lookup's after it: a later lookup that
finds the intent canceled reads what payorch did, as if the void had been answered:
the step voided, the payment cancelled. Never soft `interrupted` (until 2026-12-08),
which a confirm then took for a failed step to fall back from or charge around."""

from __future__ import annotations

from payorch.app.payments import ProcessorEvent, ProcessorEvents
from payorch.domain.payment import Payment, PaymentStatus, StepStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.unit.test_split_execution import ACTION, OK, World
from tests.unit.test_split_follow_through import HOUR, names, paused

LOST = ProcessorResponse(ResponseKind.NO_RESPONSE, exception="ReadTimeout")


class LostVoids:
    """While `lost`, from the first cancel on, the simulated processor's answers are lost:
    the cancel's (`sent`: it goes through all the same), and its lookups'."""

    def __init__(self, w: World, *, sent: bool = True) -> None:
        self.cancelled = False
        self.lost = True
        cancel, lookup = w.sim.cancel, w.sim.lookup

        async def lost_cancel(*args: object, **kwargs: object) -> ProcessorResponse:
            self.cancelled = True
            if not self.lost:
                return await cancel(*args, **kwargs)  # type: ignore[arg-type]
            if sent:
                await cancel(*args, **kwargs)  # type: ignore[arg-type]
            return LOST

        async def lost_lookup(*args: object, **kwargs: object) -> ProcessorResponse:
            if self.cancelled and self.lost:
                return LOST
            return await lookup(*args, **kwargs)  # type: ignore[arg-type]

        w.sim.cancel = lost_cancel  # type: ignore[method-assign]
        w.sim.lookup = lost_lookup  # type: ignore[method-assign]


async def given_up_with_its_void_lost(w: World, p: Payment, *, sent: bool = True) -> str:
    """The reconciler gives `p` up an hour on; its void (`sent`: goes through) unanswered,
    and the lookup after it; the processor answers again from then on."""
    intent = paused(w, p)
    lost = LostVoids(w, sent=sent)
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 0
    stuck = await w.service.get(p.id, "m_1")
    assert stuck.status is PaymentStatus.REQUIRES_ACTION
    assert (w.sim.ledger.by_id[intent].status == "canceled") is sent
    assert "void" in [a.operation for s in stuck.steps for a in s.attempts]
    lost.lost = False
    return intent


async def test_a_paused_step_payorch_voided_unanswered_reads_voided_on_the_next_pass():
    w = World()
    p = await w.pay(("card", ACTION, None))
    await given_up_with_its_void_lost(w, p)

    w.clock.advance(300)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED]
    assert "StepFailed" not in names(w) and names(w)[-1] == "PaymentCancelled"
    assert w.uow.events[-1].reason.startswith("abandoned: not completed within 60 minutes")
    assert done.next_reconcile_at is None
    assert w.held() == 0


async def test_a_split_given_up_with_its_paused_void_lost_releases_the_rest_and_is_cancelled():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    await given_up_with_its_void_lost(w, p)

    w.clock.advance(300)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.VOIDED]
    assert w.held() == 0


async def test_a_confirm_after_payorch_gave_the_payment_up_unanswered_charges_nothing_more():
    """The customer comes back after payorch gave the payment up (its void unanswered):
    the confirm finds the paused step canceled by payorch, and ends as a confirm after
    an answered void does: cancelled, the steps after it never charged, and no
    fallback taken for it."""
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    await given_up_with_its_void_lost(w, p)
    intents = len(w.sim.ledger.intents)

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.SKIPPED]
    assert len(w.sim.ledger.intents) == intents
    assert w.held() == 0


async def test_a_void_that_did_not_go_through_leaves_the_step_waiting_and_is_made_again():
    """The void's answer was lost before it reached the processor: the intent is still
    open, so the step still waits, and the next pass voids it again (never voided, nor
    failed, on a guess)."""
    w = World()
    p = await w.pay(("card", ACTION, None))
    intent = await given_up_with_its_void_lost(w, p, sent=False)

    w.clock.advance(300)
    assert await w.service.reconcile_due() == 1

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED]
    assert w.sim.ledger.by_id[intent].status == "canceled"


async def test_the_processors_cancel_event_after_a_lost_void_ends_the_payment_cancelled():
    """The processor tells of the cancel (Stripe's payment_intent.canceled) before the
    reconciler's next pass: looked up, the step reads voided by payorch, the payment is
    cancelled, and the pass after it has nothing left to do."""
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    intent = await given_up_with_its_void_lost(w, p)
    event = ProcessorEvent("evt_canceled", "stripe", p.id, 1, intent, False)

    assert await ProcessorEvents(w.uow, w.service, w.clock).apply(event) == "looked up"

    done = await w.service.get(p.id, "m_1")
    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.VOIDED]
    assert names(w).count("PaymentCancelled") == 1 and "StepFailed" not in names(w)
    assert w.held() == 0
    w.clock.advance(HOUR)
    assert await w.service.reconcile_due() == 0
