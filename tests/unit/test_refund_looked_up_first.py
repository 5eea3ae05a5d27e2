"""A refund's part is looked for at the processor before it is sent when it may already
have been made: a try under its key went without an answer, or another call held it (in
flight, or stopped after the processor refunded). Sent again instead, it relies on the
processor still replaying the key; one that forgot it refunds twice. A part on a
processor no longer configured is not sent, and not counted as refunded either."""

from __future__ import annotations

import pytest

from payorch.app.settlement import Settlement
from tests.unit.test_concurrent_changes import (
    Died,
    card_payment_refunds_watched,
    intent,
    refund_key,
)


async def test_a_refund_whose_server_died_after_the_processor_made_it_is_found_not_sent_again():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.die_after = True
    with pytest.raises(Died):
        await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    refunds.die_after = False
    held = await w.service.get(p.id, None)
    assert held.steps[0].refund_holds == {"a": 6000}
    assert [a.operation for a in held.steps[0].attempts].count("refund") == 0  # none recorded

    found = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")

    assert refunds.looked == [key]  # held by the call that died: looked for first
    assert refunds.sent("a") == [key]  # sent once, by the call that died
    assert (found.steps[0].refunded_minor, found.refundable_minor) == (6000, 4000)
    assert intent(w, p).amount_refunded == 6000


async def test_a_part_tried_without_an_answer_is_looked_for_even_by_the_call_holding_it():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.lose.add(key)
    lost = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert lost.steps[0].refund_holds == {"a": 6000}
    settlement = Settlement({"simulated": w.sim}, w.clock)

    made = await settlement.refund(lost, lost.steps[0], 6000, "a", look_first=False)

    assert made is True
    assert refunds.looked == [key]
    assert refunds.sent("a") == [key]  # the lost try only
    assert lost.steps[0].refunded_minor == 6000 and lost.steps[0].refund_holds == {}
    assert intent(w, p).amount_refunded == 6000


async def test_a_part_on_a_processor_no_longer_configured_is_neither_sent_nor_counted():
    w, p, refunds = await card_payment_refunds_watched()
    refunds.lose.add(refund_key(p, "a"))
    held = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    step = held.steps[0]
    attempts = len(step.attempts)

    made = await Settlement({}, w.clock).refund(held, step, 6000, "a", look_first=True)

    assert made is False
    assert (step.refunded_minor, step.refund_holds) == (0, {"a": 6000})  # still held
    assert len(step.attempts) == attempts and len(refunds.keys) == 1
