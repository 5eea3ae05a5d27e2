"""A refund whose outcome nobody learnt is the reconciler's.

A refund part answered with nothing sure (no answer, a 500, a 429) used to be advanced
only by its caller repeating RefundPayment under the same request_id, each repeat a
lookup and a send, without bound; and a caller that never repeated left its amount held
forever, the customer refunded or not. Now the reconciler looks such a part up on the
payments' back-off and records it refunded, or not made with its hold released, and a
caller's repeats send a part at most MAX_REFUND_SENDS times. Nothing is refunded twice.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from payorch.app.payments import ProcessorEvents, RefundEvent, RefundsUnknown
from payorch.app.settlement import MAX_REFUND_SENDS, REFUND_SETTLED_AFTER
from payorch.domain.payment import Payment, PaymentStatus
from payorch.domain.results import ChargeRefunds, Outcome
from tests.unit.test_concurrent_changes import (
    SERVER_ERROR,
    Died,
    card_payment_refunds_watched,
    refund_key,
)
from tests.unit.test_split_execution import World


def refunded_at_processor(w: World, p: Payment) -> int:
    return int(w.sim.ledger.by_id[p.steps[0].processor_payment_id].amount_refunded)


def names(w: World) -> list[str]:
    return [e.name for e in w.uow.events]


async def later(w: World, delay: timedelta) -> int:
    w.clock.advance(delay.total_seconds())
    return await w.service.reconcile_due()


async def past_the_first_lookup(w: World) -> int:
    """The reconciler's passes at 1 min (too soon to look a refund up) and 5 min later."""
    await later(w, timedelta(minutes=1))
    return await later(w, timedelta(minutes=5))


async def test_a_refund_whose_answer_was_lost_is_recorded_by_the_reconciler_with_no_retry():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.lose.add(key)

    lost = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert lost.steps[0].refund_holds == {"a": 6000} and lost.next_reconcile_at is not None

    # The first slot (1 min) is too soon to trust "not found": nothing is asked yet.
    assert await later(w, timedelta(minutes=1)) == 0
    assert refunds.looked == []
    assert await later(w, timedelta(minutes=5)) == 1

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (stored.steps[0].refunded_minor, stored.steps[0].refund_holds) == (6000, {})
    assert stored.refundable_minor == 4000 and stored.next_reconcile_at is None
    assert refunds.keys == [key] and refunds.looked == [key]
    assert refunded_at_processor(w, p) == 6000
    assert names(w).count("PaymentRefunded") == 1
    lookup = stored.steps[0].attempts[-1]
    assert (lookup.operation, lookup.retry_decision) == (
        "lookup",
        "the refund went through: recorded as refunded",
    )

    # The caller's retry now replays what the reconciler recorded: no call.
    again = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert again.steps[0].refunded_minor == 6000 and again.final_error_message == ""
    assert refunds.keys == [key] and refunds.looked == [key]


async def test_a_refund_the_processor_never_made_is_failed_by_the_reconciler_and_released():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.fail.add(key)

    failed = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert failed.refundable_minor == 4000  # held: the 500 proves nothing

    assert await past_the_first_lookup(w) == 1

    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].refund_holds == {} and stored.refundable_minor == 10000
    assert stored.steps[0].refunded_minor == 0 and stored.next_reconcile_at is None
    assert stored.final_error_message == (
        "6000 of refund 'a' was not made at the processor: nothing more is sent under this"
        " request_id; refund under a new one"
    )
    assert [(a.operation, a.outcome) for a in stored.steps[0].attempts[1:]] == [
        ("refund", Outcome.SOFT),
        ("lookup", Outcome.SUCCESS),
        ("refund", Outcome.HARD),
    ]
    assert refunded_at_processor(w, p) == 0 and "PaymentRefunded" not in names(w)

    # Over for "a": a repeat sends nothing and is told; the amount goes to a new one.
    sent = len(refunds.keys)
    again = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert "refused by the processor (refund_failed)" in again.final_error_message
    assert len(refunds.keys) == sent
    full = await w.service.refund(p.id, "m_1", amount_minor=0, request_id="b")
    assert full.status is PaymentStatus.REFUNDED and refunded_at_processor(w, p) == 10000


async def test_a_caller_repeating_a_refund_in_doubt_sends_it_a_bounded_number_of_times():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.fail.add(key)

    answers = [
        await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a") for _ in range(10)
    ]

    assert refunds.keys == [key] * MAX_REFUND_SENDS
    assert len(refunds.looked) == MAX_REFUND_SENDS - 1  # one before each send again
    stored = await w.service.get(p.id, "m_1")
    assert len(stored.steps[0].attempts) == 1 + 2 * MAX_REFUND_SENDS - 1
    assert stored.steps[0].refund_holds == {"a": 6000}
    assert answers[-1].final_error_message == (
        f"6000 of refund 'a' was sent {MAX_REFUND_SENDS} times with no sure answer: it is not"
        " sent again; the reconciler looks it up at the processor and records it refunded,"
        " or not made and refundable again"
    )
    # The reconciler settles it; the processor back, the answer is "not made".
    refunds.fail.clear()
    await past_the_first_lookup(w)
    assert (await w.service.get(p.id, "m_1")).refundable_minor == 10000
    assert refunded_at_processor(w, p) == 0


async def test_a_refund_lookup_that_fails_backs_off_as_an_unknown_payment_does():
    w, p, refunds = await card_payment_refunds_watched()
    refunds.lose.add(refund_key(p, "a"))
    await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    refunds.lookups_fail = True

    gaps = []
    for _ in range(5):
        before = (await w.service.get(p.id, "m_1")).next_reconcile_at
        assert before is not None
        w.clock.advance((before - w.clock.now()).total_seconds())
        await w.service.reconcile_due()
        after = (await w.service.get(p.id, "m_1")).next_reconcile_at
        assert after is not None
        gaps.append(after - w.clock.now())
    assert gaps == [
        timedelta(minutes=5),
        timedelta(hours=1),
        timedelta(days=1),
        timedelta(days=1),
        timedelta(days=1),
    ]
    assert len(refunds.looked) == 4  # none at 1 min: too soon to trust "not found"

    refunds.lookups_fail = False
    w.clock.advance(timedelta(days=1).total_seconds())
    assert await w.service.reconcile_due() == 1
    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].refunded_minor == 6000 and stored.steps[0].refund_holds == {}


async def test_a_refund_held_by_a_server_that_died_before_sending_it_is_released():
    w, p, refunds = await card_payment_refunds_watched()
    refunds.die = True
    with pytest.raises(Died):
        await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    held = await w.service.get(p.id, "m_1")
    assert held.steps[0].refund_holds == {"a": 6000} and held.steps[0].attempts[1:] == []

    await later(w, timedelta(minutes=1))
    assert refunds.looked == []  # it may still be in flight: not looked up so soon
    await later(w, timedelta(minutes=5))

    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].refund_holds == {} and stored.refundable_minor == 10000
    assert refunded_at_processor(w, p) == 0


async def test_a_refund_made_by_a_server_that_died_before_storing_it_is_recorded():
    w, p, refunds = await card_payment_refunds_watched()
    refunds.die_after = True
    with pytest.raises(Died):
        await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")

    await past_the_first_lookup(w)

    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].refunded_minor == 6000 and stored.steps[0].refund_holds == {}
    assert refunded_at_processor(w, p) == 6000 and names(w).count("PaymentRefunded") == 1


async def test_a_repeat_sent_while_the_reconciler_finds_nothing_is_recorded_made_not_twice():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.fail.add(key)
    await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    refunds.fail.clear()
    w.clock.advance(REFUND_SETTLED_AFTER.total_seconds() + 60)

    async def reconciler() -> None:
        await w.service.reconcile_due()  # looks before the repeat's send reaches it

    refunds.meanwhile = reconciler
    repeat = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")

    assert refunded_at_processor(w, p) == 6000
    stored = await w.service.get(p.id, "m_1")
    for answer in (repeat, stored):
        assert answer.steps[0].refunded_minor == 6000 and answer.refundable_minor == 4000
        assert answer.final_error_message == ""
    assert names(w).count("PaymentRefunded") == 1
    # Not refundable twice: "b" cannot take the 6000 again.
    more = await w.service.refund(p.id, "m_1", amount_minor=0, request_id="b")
    assert more.steps[0].refunded_minor == 10000 and refunded_at_processor(w, p) == 10000


async def test_a_refund_made_after_the_reconciler_found_none_is_counted_from_its_event():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.fail.add(key)
    await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    await past_the_first_lookup(w)
    assert (await w.service.get(p.id, "m_1")).refundable_minor == 10000  # recorded not made
    # Its call ran at the processor past every bound after all; the processor says so.
    pi = p.steps[0].processor_payment_id
    refunds.fail.clear()
    await w.sim.refund(pi, 6000, key, currency="USD")

    assert await w.service.record_refunds("simulated", pi) == "recorded"

    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].refunded_minor == 6000 and stored.refundable_minor == 4000
    assert names(w).count("PaymentRefunded") == 1
    assert await w.service.record_refunds("simulated", pi) == "nothing new"


async def test_a_refund_of_ours_that_failed_at_the_processor_is_uncounted_once():
    """Two refunds made through payorch; the processor then tells the first one failed
    (the money stayed with the merchant): it is no longer counted, once, however many
    times its event comes."""
    w, p, _ = await card_payment_refunds_watched()
    await w.service.refund(p.id, "m_1", amount_minor=3000, request_id="a")
    await w.service.refund(p.id, "m_1", amount_minor=3000, request_id="b")
    pi = p.steps[0].processor_payment_id
    real = w.sim.refunds
    failed_key = refund_key(p, "a")

    async def refunds(processor_payment_id: str) -> ChargeRefunds:
        held = await real(processor_payment_id)
        return replace(
            held,
            refunds=tuple(replace(r, made=r.payorch_key != failed_key) for r in held.refunds),
        )

    w.sim.refunds = refunds  # type: ignore[method-assign]

    assert await w.service.record_refunds("simulated", pi) == "recorded"
    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].refunded_minor == 3000 and stored.refundable_minor == 7000
    assert await w.service.record_refunds("simulated", pi) == "nothing new"
    again = await w.service.get(p.id, "m_1")
    assert again.steps[0].refunded_minor == 3000 and again.refundable_minor == 7000
    assert [
        a.idempotency_key for a in again.steps[0].attempts if a.raw.code == "refund_failed"
    ] == [next(r.refund_id for r in (await real(pi)).refunds if r.payorch_key == failed_key)]


async def test_a_refund_event_whose_refunds_cannot_be_read_is_forgotten_to_be_sent_again():
    """The processor failed the read: nothing is known of the refunds, so nothing is
    recorded and the event is not taken as done (not "not ours"): its redelivery is
    applied, and a refund of ours that failed there is uncounted then."""
    w, p, _ = await card_payment_refunds_watched()
    await w.service.refund(p.id, "m_1", amount_minor=3000, request_id="a")
    pi = p.steps[0].processor_payment_id
    real = w.sim.refunds

    async def unreadable(processor_payment_id: str) -> ChargeRefunds:
        return ChargeRefunds(SERVER_ERROR)

    async def failed(processor_payment_id: str) -> ChargeRefunds:
        held = await real(processor_payment_id)
        return replace(held, refunds=tuple(replace(r, made=False) for r in held.refunds))

    events = ProcessorEvents(w.uow, w.service, w.clock)
    event = RefundEvent("evt_r1", "webhook", "simulated", pi)
    w.sim.refunds = unreadable  # type: ignore[method-assign]
    with pytest.raises(RefundsUnknown):
        await events.apply_refunds(event)
    assert (await w.service.get(p.id, "m_1")).steps[0].refunded_minor == 3000

    w.sim.refunds = failed  # type: ignore[method-assign]
    assert await events.apply_refunds(event) == "recorded"  # the redelivery
    assert (await w.service.get(p.id, "m_1")).steps[0].refunded_minor == 0
