"""A refund whose outcome nobody learnt, settled by the reconciler on a real database
(SQLite and PostgreSQL) through the real Stripe SDK against the fake Stripe: found
made, or not made and released, with exactly one refund at Stripe either way."""

from __future__ import annotations

from datetime import timedelta

import pytest

from payorch.app.settlement import MAX_REFUND_SENDS
from payorch.domain.payment import PaymentStatus
from payorch.domain.results import Outcome
from tests.fakes.dying import ServerDied
from tests.fakes.fake_stripe import FakeStripe, Fault
from tests.integration.helpers import core_request, make_container, make_stripe_container


@pytest.fixture
async def on_stripe(database_url, clock):
    async with FakeStripe(clock=clock) as fake:
        c = await make_stripe_container(database_url, clock, fake)
        try:
            yield fake, c, clock
        finally:
            await c.close()


async def passes(c, clock, *delays: timedelta) -> int:
    settled = 0
    for delay in delays:
        clock.advance(delay.total_seconds())
        settled += await c.payments.reconcile_due()
    return settled


SLOTS = (timedelta(minutes=1), timedelta(minutes=5))


async def test_a_refund_whose_answer_stripe_lost_is_recorded_by_the_reconciler(on_stripe):
    fake, c, clock = on_stripe
    paid = (await c.payments.create(core_request(amount=5000), deadline_s=None)).payment
    pi = paid.steps[0].processor_payment_id
    fake.inject(Fault.drop_after_processing(), endpoint="refund")  # refunded; answer lost

    lost = await c.payments.refund(paid.id, "m_1", amount_minor=2000, request_id="rf-1")
    assert lost.steps[0].refund_holds == {"rf-1": 2000}

    assert await passes(c, clock, *SLOTS) == 1

    stored = await c.payments.get(paid.id, "m_1")
    assert stored.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (stored.steps[0].refunded_minor, stored.steps[0].refund_holds) == (2000, {})
    assert stored.next_reconcile_at is None and stored.final_error_message == ""
    assert [(a.operation, a.outcome) for a in stored.steps[0].attempts[1:]] == [
        ("refund", Outcome.UNKNOWN),
        ("lookup", Outcome.SUCCESS),
    ]
    assert fake.refunded_for(pi) == 2000 and len(fake.refunds_for(pi)) == 1
    assert len(fake.requests_to("refund")) == 1 and len(fake.requests_to("list_refunds")) == 1
    assert await passes(c, clock, timedelta(days=1)) == 0  # nothing left to look at


async def test_a_refund_that_never_reached_stripe_is_released_and_refundable_anew(on_stripe):
    fake, c, clock = on_stripe
    paid = (await c.payments.create(core_request(amount=5000), deadline_s=None)).payment
    pi = paid.steps[0].processor_payment_id
    fake.inject(*[Fault.drop_before_processing()] * MAX_REFUND_SENDS, endpoint="refund")

    for _ in range(MAX_REFUND_SENDS + 3):  # a caller retrying in a loop
        tried = await c.payments.refund(paid.id, "m_1", amount_minor=2000, request_id="rf-1")
        assert tried.steps[0].refunded_minor == 0
    assert len(fake.requests_to("refund")) == MAX_REFUND_SENDS

    assert await passes(c, clock, *SLOTS) == 1

    stored = await c.payments.get(paid.id, "m_1")
    assert stored.steps[0].refund_holds == {} and stored.refundable_minor == 5000
    assert fake.refunds_for(pi) == []
    again = await c.payments.refund(paid.id, "m_1", amount_minor=2000, request_id="rf-1")
    assert "refused by the processor (refund_failed)" in again.final_error_message
    full = await c.payments.refund(paid.id, "m_1", amount_minor=0, request_id="rf-2")
    assert full.status is PaymentStatus.REFUNDED
    assert [r["amount"] for r in fake.refunds_for(pi)] == [5000]


class Died(ServerDied):
    """The server stopping between the hold's commit and the refund call's answer."""


@pytest.mark.parametrize("refunded", [False, True], ids=["before sending", "after refunding"])
async def test_a_refund_held_by_a_server_that_died_is_settled_from_its_stored_hold(
    database_url, clock, refunded
):
    c = await make_container(database_url, clock)
    try:
        sim = c.simulated["simulated"]
        paid = (await c.payments.create(core_request(amount=5000), deadline_s=None)).payment
        real = sim.refund

        async def dies(processor_payment_id, amount, key, *, currency):
            if refunded:
                await real(processor_payment_id, amount, key, currency=currency)
            raise Died

        sim.refund = dies
        with pytest.raises(Died):
            await c.payments.refund(paid.id, "m_1", amount_minor=2000, request_id="rf-1")
        held = await c.payments.get(paid.id, "m_1")
        assert held.steps[0].refund_holds == {"rf-1": 2000} and held.next_reconcile_at

        assert await passes(c, clock, *SLOTS) == 1

        stored = await c.payments.get(paid.id, "m_1")
        assert stored.steps[0].refund_holds == {} and stored.next_reconcile_at is None
        assert stored.steps[0].refunded_minor == (2000 if refunded else 0)
        assert stored.refundable_minor == (3000 if refunded else 5000)
        intent = sim.ledger.by_id[paid.steps[0].processor_payment_id]
        assert intent.amount_refunded == (2000 if refunded else 0)
    finally:
        await c.close()
