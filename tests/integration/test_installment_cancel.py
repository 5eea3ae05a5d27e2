"""A plan cancelled or breached while installments are claimed, on SQLite and PostgreSQL:
nothing is charged anew, a charge already started is recorded, and no retry is promised."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from payorch.app.payments import STALE_PROCESSING
from payorch.app.plan_builder import PlanRejected
from payorch.domain.installments import InstallmentStatus, PlanStatus
from tests.fakes.dying import ServerDied
from tests.integration.installment_helpers import (
    authenticating_plan_due,
    create_plan,
    intent_of,
    move_to,
    outbox,
    payments_of,
)

LEASE = timedelta(seconds=120)


async def claim_one(app, clock, worker: str = "dead"):
    async with app.uow() as uow:
        (claim,) = await uow.plans.claim_due(
            now=clock.now(), worker=worker, lease_until=clock.now() + LEASE, limit=1
        )
        await uow.commit()
    return claim


async def cancel_while_charging(container, plan_id: str, installment_id: str):
    """Run a scheduler pass and cancel the plan while this installment's charge is in
    flight (its payment not yet made); the pass's stats."""
    real_create = container.payments.create
    started, release = asyncio.Event(), asyncio.Event()

    async def create(request, *, deadline_s, **kw):
        if request.metadata.get("installment_id") == installment_id:
            started.set()
            await release.wait()
        return await real_create(request, deadline_s=deadline_s, **kw)

    container.payments.create = create
    run = asyncio.create_task(container.installments.scheduler.run_once())
    await started.wait()
    await container.installments.plans.cancel(plan_id, "m_1", "customer returned the order")
    release.set()
    return await run


async def test_a_claim_left_by_a_dead_worker_is_not_charged_after_the_plan_is_cancelled(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    move_to(clock, second.due_at)
    await claim_one(app, clock)  # its worker dies before charging
    await app.plans.cancel(plan.id, "m_1", "order returned")

    clock.advance(3600)
    stats = await app.scheduler.run_once()

    assert (stats.reclaimed, stats.withdrawn, stats.paid) == (1, 1, 0)
    assert await payments_of(container, second.id) == []
    assert container.simulated["simulated"].ledger.charges_total == 1, "the checkout only"
    after = await app.plans.get(plan.id, None)
    assert [i.status.value for i in after.installments] == ["paid", "cancelled", "cancelled"]
    assert (await outbox(container, plan.id))[-1] == "PlanCancelled"
    clock.advance(3600)
    assert (await app.scheduler.run_once()).claimed == 0


async def test_a_charge_started_before_the_cancel_is_replayed_and_recorded_not_made_again(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    move_to(clock, second.due_at)
    claim = await claim_one(app, clock)
    read = await app.plans.get(plan.id, None)
    # The worker charges, and dies before it records what the charge came to.
    await app.charger.pay(read, claim.installment_id, claim.attempt)
    await app.plans.cancel(plan.id, "m_1", "order returned")

    clock.advance(3600)
    stats = await app.scheduler.run_once()

    assert (stats.reclaimed, stats.paid, stats.withdrawn) == (1, 1, 0)
    assert await payments_of(container, second.id) == [f"inst_{second.id}_a1"]
    assert container.simulated["simulated"].ledger.charges_total == 2
    after = await app.plans.get(plan.id, None)
    assert after.status is PlanStatus.CANCELLED
    assert after.installments[1].status is InstallmentStatus.PAID
    assert (await outbox(container, plan.id))[-2:] == ["PlanCancelled", "InstallmentPaid"]


async def test_an_installment_claimed_behind_one_in_flight_is_not_charged_once_the_plan_is_cancelled(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    second, third = plan.installments[1], plan.installments[2]
    move_to(clock, third.due_at)  # both due: one claim, charged one after the other

    stats = await cancel_while_charging(container, plan.id, second.id)

    assert (stats.claimed, stats.paid, stats.withdrawn) == (2, 1, 1)
    assert await payments_of(container, third.id) == []
    after = await app.plans.get(plan.id, None)
    assert [i.status.value for i in after.installments] == ["paid", "paid", "cancelled"]


async def test_an_installment_claimed_behind_one_that_breaches_the_plan_waits_for_the_breach_to_heal(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    second, third = plan.installments[1], plan.installments[2]
    move_to(clock, third.due_at)
    real_create = container.payments.create

    async def refuse_second(request, *, deadline_s, **kw):
        if request.metadata.get("installment_id") == second.id:
            raise PlanRejected([("methods[0].method", "card is not enabled for merchant m_1")])
        return await real_create(request, deadline_s=deadline_s, **kw)

    container.payments.create = refuse_second
    stats = await app.scheduler.run_once()

    assert (stats.claimed, stats.failed, stats.withdrawn, stats.postponed) == (2, 1, 1, 0)
    breached = await app.plans.get(plan.id, None)
    assert breached.status is PlanStatus.BREACH
    waiting = breached.installments[2]
    assert (waiting.status, waiting.attempts) == (InstallmentStatus.PENDING, 0)
    assert await payments_of(container, third.id) == []

    container.payments.create = real_create
    healed = await app.plans.retry_now(second.id, "m_1")
    assert healed.status is PlanStatus.ACTIVE
    stats = await app.scheduler.run_once()
    assert (stats.claimed, stats.paid) == (1, 1)
    done = await app.plans.get(plan.id, None)
    assert done.status is PlanStatus.COMPLETED and done.installments[2].attempts == 1
    assert await payments_of(container, third.id) == [f"inst_{third.id}_a1"]


class PausedInCreate:
    """The paused worker's charge, started while its lease held and frozen before its
    payment is stored (between the charger's look at its claim and the payments gate):
    `wake()` lets it go on and returns what pay() came to."""

    def __init__(self, container, read, claim) -> None:
        self._release = asyncio.Event()
        started = asyncio.Event()
        real_create = container.payments.create

        async def create(request, *, deadline_s, **kw):
            ours = request.metadata.get("installment_id") == claim.installment_id
            if ours and not self._release.is_set():
                started.set()
                await self._release.wait()
            return await real_create(request, deadline_s=deadline_s, **kw)

        container.payments.create = create
        self.started = started
        self._task = asyncio.create_task(
            container.installments.charger.pay(read, claim.installment_id, claim.attempt)
        )

    async def wake(self):
        self._release.set()
        return await self._task


async def give_back_while_paused(container, clock, plan, *, in_create: bool = False):
    """Installment 2 claimed by a worker that then freezes (its read of the plan kept;
    `in_create`: in its charge, with nothing stored yet, see PausedInCreate);
    installment 3 refused, so the plan breaches; the frozen claim taken over past its
    lease, and its attempt given back. Returns the frozen claim, its read (or the
    PausedInCreate), and the two scheduler passes' stats."""
    app = container.installments
    third = plan.installments[2]
    move_to(clock, third.due_at)
    paused = await claim_one(app, clock, worker="paused")  # installment 2, the oldest due
    read = await app.plans.get(plan.id, None)  # active: it will charge... then it freezes
    if in_create:
        frozen = PausedInCreate(container, read, paused)
        await frozen.started.wait()
    real_create = container.payments.create

    async def refuse_third(request, *, deadline_s, **kw):
        if request.metadata.get("installment_id") == third.id:
            raise PlanRejected([("methods[0].method", "card is not enabled for merchant m_1")])
        return await real_create(request, deadline_s=deadline_s, **kw)

    container.payments.create = refuse_third
    breaching = await app.scheduler.run_once()
    clock.advance(LEASE.total_seconds() + 1)
    taking_over = await app.scheduler.run_once()
    container.payments.create = real_create
    return paused, frozen if in_create else read, breaching, taking_over


async def test_a_worker_paused_past_its_lease_while_the_plan_breached_has_its_charge_recorded(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    paused, read, breaching, taking_over = await give_back_while_paused(container, clock, plan)
    assert breaching.failed == 1  # installment 3: the plan breached
    assert (taking_over.reclaimed, taking_over.withdrawn) == (1, 1)  # nothing started

    result, _ = await app.charger.charge(read, paused.installment_id, paused.attempt)  # wakes

    assert result.outcome.value == "paid"
    after = await app.plans.get(plan.id, None)
    assert after.status is PlanStatus.BREACH
    paid = after.installments[1]
    assert (paid.status, paid.attempts, paid.payment_id) == (
        InstallmentStatus.PAID,
        1,
        result.payment_id,
    )
    assert (await outbox(container, plan.id))[-1] == "InstallmentPaid"
    await app.plans.cancel(plan.id, "m_1", "order returned")
    clock.advance(3600)
    await app.scheduler.run_once()
    assert await payments_of(container, second.id) == [f"inst_{second.id}_a1"]
    assert container.simulated["simulated"].ledger.charges_total == 2, "checkout, installment 2"
    final = await app.plans.get(plan.id, None)
    assert [i.status.value for i in final.installments] == ["paid", "paid", "failed_final"]


async def test_a_paused_workers_charge_waiting_for_the_customer_is_cancelled_with_the_plan(
    container, clock
):
    """As above, on a card whose bank asks for the customer every time: the paused
    worker's charge of the given-back attempt waits for them. It is in the history, and
    cancelling the plan cancels it at the processor: the customer cannot pay it later."""
    app = container.installments
    sim = container.simulated["simulated"]
    plan = await authenticating_plan_due(container, clock)
    paused, read, breaching, taking_over = await give_back_while_paused(container, clock, plan)
    assert breaching.failed == 1  # installment 3: the plan breached
    assert taking_over.withdrawn == 1  # attempt 1 given back

    result, _ = await app.charger.charge(read, paused.installment_id, paused.attempt)  # wakes

    assert result.error_code == "authentication_required"
    inst = (await app.plans.get(plan.id, None)).installment(paused.installment_id)
    assert (inst.status, inst.attempts) == (InstallmentStatus.FAILED_FINAL, 1)
    assert inst.awaiting_customer == [result.payment_id]
    await app.plans.cancel(plan.id, "m_1", "order returned")
    assert (await intent_of(container, result.payment_id)).status == "canceled"
    sim.complete_action((await intent_of(container, result.payment_id)).id)
    assert sim.ledger.charges_total == 1, "the checkout only"
    assert await payments_of(container, paused.installment_id) == [
        f"inst_{paused.installment_id}_a1"
    ]


async def test_a_paused_worker_waking_after_the_plan_was_cancelled_charges_nothing(
    container, clock
):
    """The breached plan is cancelled while the paused worker (its attempt given back)
    still sleeps: waking past its lease, it looks at its claim as stored, finds the plan
    cancelled and sends nothing. Its read of the plan, made while active, is not enough."""
    app = container.installments
    plan = await authenticating_plan_due(container, clock)
    paused, read, _, taking_over = await give_back_while_paused(container, clock, plan)
    assert taking_over.withdrawn == 1  # attempt 1 given back
    await app.plans.cancel(plan.id, "m_1", "order returned")

    result, _ = await app.charger.charge(read, paused.installment_id, paused.attempt)  # wakes

    assert (result.outcome.value, result.payment_id) == ("withdrawn", "")
    assert await payments_of(container, paused.installment_id) == []
    assert container.simulated["simulated"].ledger.charges_total == 1, "the checkout only"
    inst = (await app.plans.get(plan.id, None)).installment(paused.installment_id)
    assert (inst.status, inst.charges) == (InstallmentStatus.CANCELLED, [])


@pytest.mark.parametrize("paused", ["before its look", "between its look and its insert"])
async def test_a_worker_waking_past_its_lease_on_a_cancelled_plan_charges_nothing(
    container, clock, paused
):
    """No breach: the worker is paused past its lease before its charge, nobody has taken
    its claim over yet, and the plan is cancelled (the claim run out, nothing started).
    Waking, the worker sends nothing: its claim is withdrawn. Paused before its look at
    the claim, the look finds the plan cancelled; paused after it (the lease held then),
    just before its payment is stored, the insert is refused by the database: the claim
    no longer admits a charge."""
    app = container.installments
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    move_to(clock, second.due_at)
    claim = await claim_one(app, clock, worker="paused")
    read = await app.plans.get(plan.id, None)  # active

    async def paused_then_cancelled():
        clock.advance(LEASE.total_seconds() + 1)
        await app.plans.cancel(plan.id, "m_1", "order returned")

    if paused == "before its look":
        await paused_then_cancelled()
    else:
        real_insert = container.uow.insert_payment

        async def insert(payment, **kw):
            container.uow.insert_payment = real_insert
            await paused_then_cancelled()
            return await real_insert(payment, **kw)

        container.uow.insert_payment = insert

    result, _ = await app.charger.charge(read, claim.installment_id, claim.attempt)  # wakes

    assert (result.outcome.value, result.payment_id) == ("withdrawn", "")
    assert await payments_of(container, second.id) == []
    assert container.simulated["simulated"].ledger.charges_total == 1, "the checkout only"
    after = await app.plans.get(plan.id, None)
    assert [i.status.value for i in after.installments] == ["paid", "cancelled", "cancelled"]
    assert (await outbox(container, plan.id))[-1] == "PlanCancelled"


async def test_a_worker_inside_its_lease_still_charges_a_plan_cancelled_meanwhile(container, clock):
    """Within its lease the claim is the worker's (a cancel leaves it to it): the charge
    goes on, as one in flight at the cancel, recorded and announced. No look at the
    stored plan is made for it."""
    app = container.installments
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    move_to(clock, second.due_at)
    claim = await claim_one(app, clock, worker="alive")
    read = await app.plans.get(plan.id, None)
    await app.plans.cancel(plan.id, "m_1", "order returned")

    result, _ = await app.charger.charge(read, claim.installment_id, claim.attempt)

    assert result.outcome.value == "paid"
    assert await payments_of(container, second.id) == [f"inst_{second.id}_a1"]
    assert (await outbox(container, plan.id))[-2:] == ["PlanCancelled", "InstallmentPaid"]


async def test_a_paused_workers_charge_left_unrecorded_is_found_and_cancelled_by_the_plan_cancel(
    container, clock
):
    """The paused worker's charge of the given-back attempt waits for the customer, and
    the worker stops before recording it: the cancel finds it by its request id."""
    app = container.installments
    sim = container.simulated["simulated"]
    plan = await authenticating_plan_due(container, clock)
    paused, frozen, _, taking_over = await give_back_while_paused(
        container, clock, plan, in_create=True
    )
    assert taking_over.withdrawn == 1  # attempt 1 given back
    result = await frozen.wake()  # charges, then dies

    cancelled = await app.plans.cancel(plan.id, "m_1", "order returned")

    assert (await intent_of(container, result.payment_id)).status == "canceled"
    sim.complete_action((await intent_of(container, result.payment_id)).id)
    assert sim.ledger.charges_total == 1, "the checkout only"
    inst = cancelled.installment(paused.installment_id)
    assert [c.payment_id for c in inst.charges] == [result.payment_id]
    assert (await app.plans.get(plan.id, None)).status is PlanStatus.CANCELLED


async def test_a_charge_failing_after_the_plan_was_cancelled_announces_no_retry(container, clock):
    app = container.installments
    token = "pm_card_offSessionDeclinedInsufficientFunds"
    plan = (await create_plan(container, token=token)).plan
    second = plan.installments[1]
    move_to(clock, second.due_at)

    stats = await cancel_while_charging(container, plan.id, second.id)

    assert stats.failed == 1
    inst = (await app.plans.get(plan.id, None)).installments[1]
    assert (inst.status, inst.next_attempt_at) == (InstallmentStatus.CANCELLED, None)
    assert inst.last_error_code == "insufficient_funds" and len(inst.charges) == 1
    assert await outbox(container, plan.id) == ["PlanCreated", "InstallmentPaid", "PlanCancelled"]
    clock.advance(30 * 86400)
    assert (await app.scheduler.run_once()).claimed == 0


class Died(ServerDied):
    """The paused worker's process stopping while its charge was at the processor."""


@contextlib.contextmanager
def dying_at_the_processor(sim):
    """The charge reaches the processor (charged or declined there), and its worker's
    process stops before the answer is back: its payment is left `processing`."""
    real_authorize = sim.authorize

    async def dies(request):
        await real_authorize(request)
        raise Died

    sim.authorize = dies
    try:
        yield
    finally:
        sim.authorize = real_authorize


@pytest.mark.parametrize(
    ("token", "settled"),
    [("pm_card_visa", "paid"), ("pm_card_offSessionDeclinedInsufficientFunds", "failed")],
)
async def test_a_paused_workers_charge_left_processing_is_recorded_once_the_reconciler_settles_it(
    container, clock, token, settled
):
    """The paused worker charges the given-back attempt and dies while the processor has
    it: its payment is left `processing`. The plan is cancelled meanwhile. Once the
    reconciler settles that payment, the scheduler records it in the plan's history
    (paid and announced, or failed for good without an event), and charges nothing."""
    app = container.installments
    sim = container.simulated["simulated"]
    plan = (await create_plan(container, token=token)).plan
    paused, frozen, _, taking_over = await give_back_while_paused(
        container, clock, plan, in_create=True
    )
    assert taking_over.withdrawn == 1  # attempt 1 given back
    with dying_at_the_processor(sim), pytest.raises(Died):
        await frozen.wake()  # charges, dies
    request_id = f"inst_{paused.installment_id}_a{paused.attempt}"
    left = await container.uow.payment_by_request("m_1", request_id)
    assert left.status.value == "processing"

    await app.plans.cancel(plan.id, "m_1", "order returned")
    clock.advance(LEASE.total_seconds() + 1)
    stats = await app.scheduler.run_once()
    assert (stats.reclaimed, stats.unresolved) == (1, 1), "not settled yet: held again"

    clock.advance(STALE_PROCESSING.total_seconds())
    assert await container.payments.reconcile_due() == 1
    clock.advance(300)  # the hold's recheck
    stats = await app.scheduler.run_once()

    assert (stats.paid, stats.failed) == ((1, 0) if settled == "paid" else (0, 1))
    after = await app.plans.get(plan.id, None)
    assert after.status is PlanStatus.CANCELLED
    inst = after.installment(paused.installment_id)
    assert [(c.attempt, c.payment_id) for c in inst.charges] == [(paused.attempt, left.id)]
    assert await payments_of(container, paused.installment_id) == [request_id]
    names = await outbox(container, plan.id)
    if settled == "paid":
        assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, left.id)
        assert names[-2:] == ["PlanCancelled", "InstallmentPaid"]
        assert sim.ledger.charges_total == 2, "checkout, installment 2: none made again"
    else:
        assert (inst.status, inst.last_error_code) == (
            InstallmentStatus.CANCELLED,
            "insufficient_funds",
        )
        assert names[-1] == "PlanCancelled", "a failure on a cancelled plan announces nothing"
    clock.advance(3600)
    assert (await app.scheduler.run_once()).claimed == 0


async def test_a_paused_workers_charge_made_after_a_cancel_and_left_processing_is_recorded(
    container, clock
):
    """The paused worker wakes past its lease, its attempt given back on the breach: it
    claims that attempt again before it sends anything. The plan is cancelled right then
    (the cancel leaves the claimed installment to its worker), and the worker dies with
    its charge at the processor. Its claim runs out; the scheduler takes it over, charges
    nothing, holds the `processing` payment, and records it once the reconciler settles
    it: the money taken is in the cancelled plan's history."""
    app = container.installments
    sim = container.simulated["simulated"]
    plan = (await create_plan(container)).plan
    paused, read, _, taking_over = await give_back_while_paused(container, clock, plan)
    assert taking_over.withdrawn == 1  # attempt 1 given back
    real_create = container.payments.create

    async def cancelled_first(request, *, deadline_s, **kw):
        await app.plans.cancel(plan.id, "m_1", "order returned")
        return await real_create(request, deadline_s=deadline_s, **kw)

    container.payments.create = cancelled_first
    with dying_at_the_processor(sim), pytest.raises(Died):
        await app.charger.pay(read, paused.installment_id, paused.attempt)  # wakes, dies
    container.payments.create = real_create
    request_id = f"inst_{paused.installment_id}_a{paused.attempt}"
    left = await container.uow.payment_by_request("m_1", request_id)
    assert left.status.value == "processing"
    assert (await app.plans.get(plan.id, None)).status is PlanStatus.CANCELLED

    clock.advance(STALE_PROCESSING.total_seconds())
    assert await container.payments.reconcile_due() == 1
    clock.advance(LEASE.total_seconds() + 1)
    stats = await app.scheduler.run_once()

    assert (stats.reclaimed, stats.paid) == (1, 1)
    after = await app.plans.get(plan.id, None)
    inst = after.installment(paused.installment_id)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, left.id)
    assert [(c.attempt, c.payment_id) for c in inst.charges] == [(paused.attempt, left.id)]
    assert (await outbox(container, plan.id))[-2:] == ["PlanCancelled", "InstallmentPaid"]
    assert sim.ledger.charges_total == 2, "checkout, installment 2: none made again"
    clock.advance(3600)
    assert (await app.scheduler.run_once()).claimed == 0


async def test_a_given_back_charge_declined_before_the_cancel_is_in_the_plans_history(
    container, clock
):
    """The paused worker's charge of the given-back attempt is declined, and the worker
    stops before recording it. The cancel finds that payment: it reached the processor,
    so it is in the installment's history, with its error and no event."""
    app = container.installments
    token = "pm_card_offSessionDeclinedInsufficientFunds"
    plan = (await create_plan(container, token=token)).plan
    paused, frozen, _, taking_over = await give_back_while_paused(
        container, clock, plan, in_create=True
    )
    assert taking_over.withdrawn == 1  # attempt 1 given back
    result = await frozen.wake()  # declined; then dies before recording it
    assert (result.outcome.value, result.error_code) == ("failed", "insufficient_funds")
    events_before = await outbox(container, plan.id)

    cancelled = await app.plans.cancel(plan.id, "m_1", "order returned")

    inst = cancelled.installment(paused.installment_id)
    assert [(c.attempt, c.payment_id, c.error_code) for c in inst.charges] == [
        (paused.attempt, result.payment_id, "insufficient_funds")
    ]
    assert (inst.status, inst.next_attempt_at) == (InstallmentStatus.CANCELLED, None)
    stored = (await app.plans.get(plan.id, None)).installment(paused.installment_id)
    assert [c.payment_id for c in stored.charges] == [result.payment_id]
    assert await outbox(container, plan.id) == [*events_before, "PlanCancelled"]
    clock.advance(30 * 86400)
    assert (await app.scheduler.run_once()).claimed == 0
