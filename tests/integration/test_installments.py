"""Installment plans through the real bootstrap, on SQLite and PostgreSQL, with an injected
clock: plans run to completion, walk the dunning ladder, breach, and never charge twice."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from payorch.adapters.persistence.tables import installment_charges, installment_plans, payments
from payorch.adapters.processors.simulated import Simulation
from payorch.adapters.worker_lock import AnotherWorkerRunning, single_worker
from payorch.app.installment_ports import Cursor
from payorch.app.installment_scheduler import InstallmentScheduler
from payorch.app.installments import InvalidPlanRequest, PlanConflict, PlanNotFound, RecordCharge
from payorch.app.ports import ConcurrentUpdate
from payorch.domain.health import Signal
from payorch.domain.installments import InstallmentStatus, InvalidTransition, PlanStatus
from payorch.domain.payment import PaymentStatus
from payorch.webhooks import verify
from tests.integration.installment_helpers import (
    create_plan,
    installments_container,
    move_to,
    outbox,
)

DAY = timedelta(days=1)


def statuses(plan) -> list[str]:
    return [i.status.value for i in plan.installments]


async def test_a_plan_runs_to_completed_with_an_injected_clock(container, clock):
    app = container.installments
    plan = (await create_plan(container)).plan
    assert statuses(plan) == ["paid", "pending", "pending"]

    move_to(clock, plan.installments[1].due_at - timedelta(seconds=1))
    assert (await app.scheduler.run_once()).claimed == 0, "nothing is charged before it is due"
    for inst in plan.installments[1:]:
        move_to(clock, inst.due_at)
        assert (await app.scheduler.run_once()).paid == 1

    done = await app.plans.get(plan.id, "m_1")
    assert done.status is PlanStatus.COMPLETED
    assert statuses(done) == ["paid", "paid", "paid"]
    assert [i.amount_minor for i in done.installments] == [3333, 3333, 3334]
    assert all(i.payment_id and i.processor_payment_id for i in done.installments)
    assert container.simulated["simulated"].ledger.charges_total == 3
    assert (await outbox(container, plan.id))[-1] == "PlanCompleted"


async def test_a_plan_stored_before_customers_were_required_keeps_charging(container, clock):
    app = container.installments
    plan = (await create_plan(container)).plan
    async with container.engine.begin() as conn:
        await conn.execute(
            update(installment_plans)
            .where(installment_plans.c.id == plan.id)
            .values(customer_id="")
        )
    for inst in plan.installments[1:]:
        move_to(clock, inst.due_at)
        assert (await app.scheduler.run_once()).paid == 1

    done = await app.plans.get(plan.id, "m_1")
    assert (done.customer_id, done.status) == ("", PlanStatus.COMPLETED)


async def test_an_insufficient_funds_card_walks_the_ladder_to_breach_and_emits_the_webhook(
    container, clock, receiver
):
    app = container.installments
    endpoint = (
        await app.endpoints.create(
            "m_1",
            receiver.url,
            "dunning",
            ["installment.failed", "installment.failed_final", "installment_plan.breached"],
        )
    ).endpoint
    plan = (await create_plan(container, token="pm_card_offSessionDeclinedInsufficientFunds")).plan
    due = plan.installments[1].due_at
    ladder = []
    for at in (due, due + 3 * DAY, due + 7 * DAY, due + 14 * DAY):
        move_to(clock, at)
        assert (await app.scheduler.run_once()).failed == 1
        inst = (await app.plans.get(plan.id, "m_1")).installments[1]
        ladder.append((inst.status.value, inst.next_attempt_at))
    assert ladder == [
        ("failed", due + 3 * DAY),
        ("failed", due + 7 * DAY),
        ("failed", due + 14 * DAY),
        ("failed_final", None),
    ]
    breached = await app.plans.get(plan.id, "m_1")
    assert breached.status is PlanStatus.BREACH
    second = breached.installments[1]
    assert second.attempts == 4 and second.last_error_code == "insufficient_funds"
    assert [c.attempt for c in second.charges] == [1, 2, 3, 4]

    move_to(clock, plan.installments[2].due_at + DAY)
    assert (await app.scheduler.run_once()).claimed == 0, "a breached plan charges nothing more"

    await app.dispatcher.run_once()
    got = [verify(endpoint.secret, r.headers, r.body, now=clock.now()) for r in receiver.requests]
    assert sorted(g["type"] for g in got) == [
        "installment.failed",
        "installment.failed",
        "installment.failed",
        "installment.failed_final",
        "installment_plan.breached",
    ]
    final = next(g for g in got if g["type"] == "installment.failed_final")
    assert final["data"]["installment_id"] == second.id and final["data"]["attempts"] == 4


async def test_each_failed_charge_is_logged_rescheduled_or_failed_for_good(
    container, clock, caplog
):
    """Before, a pass logged only its counts: which installment failed, why, and when it
    would be charged again was in no log line."""
    app = container.installments
    plan = (await create_plan(container, token="pm_card_offSessionDeclinedInsufficientFunds")).plan
    inst_id, due = plan.installments[1].id, plan.installments[1].due_at
    with caplog.at_level("INFO", logger="payorch.scheduler"):
        for at in (due, due + 3 * DAY, due + 7 * DAY, due + 14 * DAY):
            move_to(clock, at)
            await app.scheduler.run_once()

    lines = [
        (r.levelname, r.getMessage(), r.merchant_id)
        for r in caplog.records
        if r.getMessage().startswith(f"installment {inst_id}")
    ]
    prefix = f"installment {inst_id} of plan {plan.id} failed"
    assert lines == [
        (
            "INFO",
            f"{prefix} (insufficient_funds): next attempt at {(due + 3 * DAY).isoformat()}",
            "m_1",
        ),
        (
            "INFO",
            f"{prefix} (insufficient_funds): next attempt at {(due + 7 * DAY).isoformat()}",
            "m_1",
        ),
        (
            "INFO",
            f"{prefix} (insufficient_funds): next attempt at {(due + 14 * DAY).isoformat()}",
            "m_1",
        ),
        (
            "WARNING",
            f"{prefix} for good (insufficient_funds) after 4 attempt(s): the plan is in breach",
            "m_1",
        ),
    ]


async def test_a_stolen_card_skips_the_ladder(container, clock):
    app = container.installments
    plan = (await create_plan(container, token="pm_card_offSessionDeclinedStolenCard")).plan
    move_to(clock, plan.installments[1].due_at)
    await app.scheduler.run_once()
    after = await app.plans.get(plan.id, None)
    assert after.status is PlanStatus.BREACH
    assert after.installments[1].status is InstallmentStatus.FAILED_FINAL
    assert after.installments[1].attempts == 1
    assert after.installments[1].last_error_code == "stolen_card"
    assert "InstallmentFailed" not in await outbox(container, plan.id)


async def test_a_scheduler_back_after_two_missed_ladder_steps_charges_both_and_leaves_no_claim(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container, token="pm_card_offSessionDeclinedInsufficientFunds")).plan
    due = plan.installments[1].due_at
    move_to(clock, due)
    await app.scheduler.run_once()  # first failure F: retries at F+3, F+7, F+14
    move_to(clock, due + 10 * DAY)  # the scheduler was down past F+3 and F+7

    stats = await app.scheduler.run_once()

    inst = (await app.plans.get(plan.id, "m_1")).installments[1]
    assert (stats.claimed, stats.failed, stats.reclaimed) == (2, 2, 0)
    assert inst.status is InstallmentStatus.FAILED, "not left claimed and uncharged"
    assert (inst.claimed_by, inst.lease_until) == ("", None)
    assert [c.attempt for c in inst.charges] == [1, 2, 3]
    assert inst.next_attempt_at == due + 14 * DAY


async def test_a_part_above_the_cards_maximum_fails_for_good_breaches_and_sends_the_webhook(
    container, clock, receiver
):
    from payorch.domain.merchant_config import MerchantConfig, MethodRule
    from payorch.domain.payment import MethodType

    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", [])).endpoint
    plan = (await create_plan(container)).plan
    # Lowered after the plan was made: the second part (33.33) fits under the card's
    # maximum; the last (33.34) does not.
    await container.configs.upsert(
        MerchantConfig("m_1", methods=(MethodRule(MethodType.CARD, max_amount_minor=3333),))
    )
    move_to(clock, plan.installments[2].due_at)

    stats = await app.scheduler.run_once()

    assert (stats.claimed, stats.paid, stats.failed, stats.errors) == (2, 1, 1, 0)
    breached = await app.plans.get(plan.id, None)
    assert breached.status is PlanStatus.BREACH
    last = breached.installments[2]
    assert (last.status, last.attempts) == (InstallmentStatus.FAILED_FINAL, 1)
    assert last.last_error_code == "invalid_request" and "not covered" in last.last_error
    clock.advance(121)
    assert (await app.scheduler.run_once()).claimed == 0, "not left claimed, not reclaimed"

    await app.dispatcher.run_once()
    got = [verify(endpoint.secret, r.headers, r.body, now=clock.now()) for r in receiver.requests]
    assert {"installment.failed_final", "installment_plan.breached"} <= {g["type"] for g in got}


async def test_a_currency_the_merchant_stopped_accepting_fails_the_installment_for_good(
    container, clock
):
    from payorch.domain.merchant_config import MerchantConfig

    app = container.installments
    plan = (await create_plan(container)).plan
    await container.configs.upsert(MerchantConfig("m_1", allowed_currencies=frozenset({"USD"})))
    move_to(clock, plan.installments[1].due_at)

    assert (await app.scheduler.run_once()).failed == 1

    inst = (await app.plans.get(plan.id, None)).installments[1]
    assert inst.status is InstallmentStatus.FAILED_FINAL
    assert inst.last_error_code == "invalid_request"
    assert "EUR is not accepted" in inst.last_error
    assert (await outbox(container, plan.id))[-2:] == ["InstallmentFailedFinal", "PlanBreached"]


async def test_a_failed_first_charge_creates_no_plan(container):
    created = await create_plan(container, token="pm_card_chargeDeclinedInsufficientFunds")
    assert created.plan is None
    assert created.first_payment_status is PaymentStatus.FAILED
    assert created.error_code == "insufficient_funds"
    app = container.installments
    assert list(await app.plans.list("m_1", status=None, page_size=10, after=None)) == []
    again = await create_plan(container, token="pm_card_chargeDeclinedInsufficientFunds")
    assert again.plan is None and again.replayed, "a retried request replays the failed charge"
    assert again.first_payment_id == created.first_payment_id


async def test_creating_a_plan_twice_with_one_request_id_charges_once(container):
    first = await create_plan(container)
    second = await create_plan(container)
    assert second.replayed and second.plan.id == first.plan.id
    assert container.simulated["simulated"].ledger.charges_total == 1


async def test_reusing_a_request_id_for_another_order_is_a_conflict(container):
    await create_plan(container)
    with pytest.raises(PlanConflict):
        await create_plan(container, order_id="order-2")


async def test_one_failing_installment_never_stops_the_batch(container, clock):
    app = container.installments
    plans = [(await create_plan(container, f"plan-{n}")).plan for n in range(4)]
    broken = plans[1].installments[1]
    real_create = container.payments.create

    async def create(request, *, deadline_s, **kw):
        if request.metadata.get("installment_id") == broken.id:
            raise RuntimeError("the database went away for this one")
        return await real_create(request, deadline_s=deadline_s, **kw)

    container.payments.create = create
    move_to(clock, broken.due_at)
    stats = await app.scheduler.run_once()
    assert (stats.claimed, stats.paid, stats.errors) == (4, 3, 1)
    stuck = (await app.plans.get(plans[1].id, None)).installments[1]
    assert stuck.status is InstallmentStatus.PROCESSING

    container.payments.create = real_create
    clock.advance(121)  # its claim's lease runs out
    stats = await app.scheduler.run_once()
    assert (stats.claimed, stats.reclaimed, stats.paid) == (1, 1, 1)
    healed = (await app.plans.get(plans[1].id, None)).installments[1]
    assert (healed.status, healed.attempts) == (InstallmentStatus.PAID, 1)


async def test_a_worker_resumed_after_its_lease_ran_out_replays_instead_of_charging_again(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    move_to(clock, plan.installments[1].due_at)
    async with app.uow() as uow:
        (paused,) = await uow.plans.claim_due(
            now=clock.now(),
            worker="paused",
            lease_until=clock.now() + 120 * timedelta(seconds=1),
            limit=10,
        )
        await uow.commit()
    clock.advance(121)

    stats = await app.scheduler.run_once()
    assert (stats.reclaimed, stats.paid) == (1, 1)
    # The paused worker wakes up and carries on with its old claim: the same attempt.
    stale = await app.plans.get(plan.id, None)
    result, _ = await app.charger.charge(stale, paused.installment_id, paused.attempt)
    assert result.outcome.value == "paid"

    assert container.simulated["simulated"].ledger.charges_total == 2  # installments 1 and 2
    async with container.engine.connect() as conn:
        charged = (
            await conn.execute(
                select(func.count())
                .select_from(payments)
                .where(payments.c.request_id.like(f"inst_{paused.installment_id}_%"))
            )
        ).scalar_one()
        rows = (
            await conn.execute(
                select(func.count())
                .select_from(installment_charges)
                .where(installment_charges.c.installment_id == paused.installment_id)
            )
        ).scalar_one()
    assert (charged, rows) == (1, 1)


async def test_a_charge_refunded_before_it_was_recorded_is_recorded_paid_not_held_forever(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    move_to(clock, second.due_at)
    async with app.uow() as uow:
        (claim,) = await uow.plans.claim_due(
            now=clock.now(), worker="dies", lease_until=clock.now() + timedelta(minutes=2), limit=1
        )
        await uow.commit()
    read = await app.plans.get(plan.id, None)
    charged = await app.charger.pay(read, claim.installment_id, claim.attempt)  # then it dies
    await container.payments.refund(charged.payment_id, "m_1", amount_minor=0, request_id="rf-1")

    clock.advance(121)
    stats = await app.scheduler.run_once()

    assert (stats.reclaimed, stats.paid, stats.unresolved) == (1, 1, 0)
    inst = (await app.plans.get(plan.id, None)).installments[1]
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, charged.payment_id)
    async with container.engine.connect() as conn:
        count = select(func.count()).select_from(payments)
        assert (await conn.execute(count)).scalar_one() == 2


async def test_a_soft_failure_goes_on_the_ladder_and_a_manual_retry_pays_it_now(container, clock):
    app = container.installments
    sim = container.simulated["simulated"]
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    move_to(clock, second.due_at)
    sim.set_simulation(Simulation(api_error=1.0))
    await app.scheduler.run_once()
    failed = (await app.plans.get(plan.id, None)).installments[1]
    assert failed.status is InstallmentStatus.FAILED
    assert failed.last_error_code == "processor_error"
    assert failed.next_attempt_at == failed.first_failed_at + 3 * DAY

    sim.set_simulation(Simulation())
    clock.advance(3600)
    healed = await app.plans.retry_now(second.id, "m_1")
    inst = healed.installments[1]
    assert (inst.status, inst.attempts, inst.next_attempt_at) == (InstallmentStatus.PAID, 2, None)
    assert [c.kind.value for c in inst.charges] == ["scheduled", "manual"]
    with pytest.raises(InvalidTransition):
        await app.plans.retry_now(second.id, "m_1")


async def test_merchants_never_see_or_touch_each_others_plans(container):
    app = container.installments
    plan = (await create_plan(container, merchant="m_1")).plan
    with pytest.raises(PlanNotFound):
        await app.plans.get(plan.id, "m_2")
    with pytest.raises(PlanNotFound):
        await app.plans.cancel(plan.id, "m_2", "not mine")
    with pytest.raises(PlanNotFound):
        await app.plans.retry_now(plan.installments[1].id, "m_2")
    assert list(await app.plans.list("m_2", status=None, page_size=10, after=None)) == []
    assert (await app.plans.get(plan.id, None)).id == plan.id, "ops read any merchant's plan"


async def test_a_cancelled_plan_charges_nothing_more(container, clock):
    app = container.installments
    plan = (await create_plan(container)).plan
    cancelled = await app.plans.cancel(plan.id, "m_1", "order returned")
    assert cancelled.status is PlanStatus.CANCELLED
    assert statuses(cancelled) == ["paid", "cancelled", "cancelled"]
    move_to(clock, plan.installments[2].due_at + DAY)
    assert (await app.scheduler.run_once()).claimed == 0
    assert (await outbox(container, plan.id))[-1] == "PlanCancelled"


async def test_a_cancel_reason_is_cut_before_its_card_scan_never_through_a_number(container):
    app = container.installments
    plan = (await create_plan(container)).plan
    # 17 digits failing Luhn: cut blindly at 500 they would end in a card number.
    reason = "x" * 484 + "40000566556655561"
    cancelled = await app.plans.cancel(plan.id, "m_1", reason)
    assert cancelled.cancel_reason == "x" * 484
    with pytest.raises(InvalidPlanRequest):
        await app.plans.cancel(plan.id, "m_1", "card 4000 0566 5566 5556 was stolen")


async def test_plans_are_listed_newest_first_by_status_a_page_at_a_time(container, clock):
    app = container.installments
    ids = []
    for n, token in enumerate(
        ["pm_card_visa", "pm_card_offSessionDeclinedStolenCard", "pm_card_visa"]
    ):
        ids.append((await create_plan(container, f"plan-{n}", token=token)).plan.id)
        clock.advance(60)
    move_to(clock, clock.now() + 31 * DAY)
    await app.scheduler.run_once()

    active = await app.plans.list("m_1", status=PlanStatus.ACTIVE, page_size=10, after=None)
    assert [p.id for p in active] == [ids[2], ids[0]]
    breach = await app.plans.list("m_1", status=PlanStatus.BREACH, page_size=10, after=None)
    assert [p.id for p in breach] == [ids[1]]
    first = await app.plans.list("m_1", status=None, page_size=1, after=None)
    rest = await app.plans.list(
        "m_1", status=None, page_size=10, after=Cursor(first[0].created_at, first[0].id)
    )
    assert [p.id for p in [*first, *rest]] == ids[::-1]


async def test_plans_are_listed_by_order_and_by_customer(container, clock):
    """The plan of an order a customer asks about, found without paging through every
    plan of the merchant (before, ListInstallmentPlans filtered by status alone)."""
    app = container.installments
    created = {}
    for request_id, order, customer in [
        ("plan-a", "order-1001", "cus_alice"),
        ("plan-b", "order-1002", "cus_bob"),
        ("plan-c", "order-1001", "cus_alice"),  # the same order, paid again after a cancel
        ("plan-d", "order-1003", "cus_alice"),
    ]:
        plan = (await create_plan(container, request_id, order_id=order, customer=customer)).plan
        created[request_id] = plan.id
        clock.advance(60)
    other = (await create_plan(container, "plan-x", merchant="m_2", order_id="order-1001")).plan

    async def listed(merchant, **filters) -> list[str]:
        plans = await app.plans.list(merchant, status=None, page_size=10, after=None, **filters)
        return [p.id for p in plans]

    assert await listed("m_1", order_id="order-1001") == [created["plan-c"], created["plan-a"]]
    assert await listed("m_1", customer_id="cus_alice") == [
        created["plan-d"],
        created["plan-c"],
        created["plan-a"],
    ]
    assert await listed("m_1", order_id="order-1001", customer_id="cus_bob") == []
    # Given as a plan request gives it: surrounding spaces are not part of the order id.
    assert await listed("m_1", order_id=" order-1002 ") == [created["plan-b"]]
    assert await listed("m_1", order_id="order-404") == [], "no such order: none, no error"
    # A merchant sees its own plans of the order; an operator (None) every merchant's.
    assert await listed("m_2", order_id="order-1001") == [other.id]
    assert set(await listed(None, order_id="order-1001")) == {
        created["plan-a"],
        created["plan-c"],
        other.id,
    }
    first = await app.plans.list(
        "m_1", status=None, page_size=1, after=None, customer_id="cus_alice"
    )
    rest = await app.plans.list(
        "m_1",
        status=None,
        page_size=10,
        after=Cursor(first[0].created_at, first[0].id),
        customer_id="cus_alice",
    )
    assert [p.id for p in rest] == [created["plan-c"], created["plan-a"]]


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"order_id": "   "}, "order_id"),
        ({"order_id": "o" * 129}, "order_id"),
        ({"order_id": "order 1"}, "order_id"),
        ({"order_id": "4000 0566 5566 5556"}, "order_id"),
        ({"customer_id": "  "}, "customer_id"),
        ({"customer_id": "alice"}, "customer_id"),
        ({"customer_id": "cus_4000056655665556"}, "customer_id"),
    ],
    ids=[
        "blank order",
        "order too long",
        "order with a space",
        "card number",
        "blank customer",
        "not a customer id",
        "card number in a customer id",
    ],
)
async def test_a_filter_no_plan_can_match_is_refused_never_widened(container, filters, field):
    with pytest.raises(InvalidPlanRequest) as refused:
        await container.installments.plans.list(
            "m_1", status=None, page_size=10, after=None, **filters
        )
    assert [f for f, _ in refused.value.problems] == [field]
    assert "4000" not in str(refused.value), "a card number is never repeated"


async def test_a_second_scheduler_on_one_sqlite_database_is_refused(database_url):
    if not database_url.startswith("sqlite"):
        with single_worker(database_url, "scheduler"), single_worker(database_url, "scheduler"):
            return  # PostgreSQL: workers coordinate through row locks and leases
    with (
        single_worker(database_url, "scheduler"),
        pytest.raises(AnotherWorkerRunning, match="another scheduler is already running"),
        single_worker(database_url, "scheduler"),
    ):
        pass
    with single_worker(database_url, "scheduler"):
        pass  # released with the first


async def test_the_merchant_config_sets_count_interval_and_eligibility(container):
    from payorch.domain.merchant_config import InstallmentPolicy as ConfigPolicy
    from payorch.domain.merchant_config import MerchantConfig

    await container.configs.upsert(
        MerchantConfig(
            "m_1", installment_policy=ConfigPolicy(min_total_minor=5000, count=4, interval_days=14)
        )
    )
    plan = (await create_plan(container, total=6000)).plan
    assert [i.amount_minor for i in plan.installments] == [1500, 1500, 1500, 1500]
    gaps = [(b.due_at - a.due_at).days for a, b in itertools.pairwise(plan.installments)]
    assert gaps == [14, 14, 14]


def scheduler(app, clock, *, batch_size: int, concurrency: int) -> InstallmentScheduler:
    return InstallmentScheduler(
        app.uow,
        app.charger,
        clock,
        worker_id="w-test",
        batch_size=batch_size,
        concurrency=concurrency,
    )


async def claim_and_pay(app, clock) -> list[RecordCharge]:
    """Claim what is due and charge it, without recording: what a worker has in hand."""
    now = clock.now()
    async with app.uow() as uow:
        claims = await uow.plans.claim_due(
            now=now, worker="w-test", lease_until=now + timedelta(minutes=2), limit=10
        )
        await uow.commit()
    async with app.uow() as uow:
        read = await uow.plans.get_many([c.plan_id for c in claims])
    return [
        RecordCharge(
            read[c.plan_id],
            c.installment_id,
            c.attempt,
            await app.charger.pay(read[c.plan_id], c.installment_id, c.attempt),
        )
        for c in claims
    ]


async def count_rows(container, table, *where) -> int:
    async with container.engine.connect() as conn:
        query = select(func.count()).select_from(table)
        return int((await conn.execute(query.where(*where) if where else query)).scalar_one())


async def test_a_pass_claims_again_as_room_frees_and_charges_each_installment_once(
    container, clock
):
    app = container.installments
    plans = [(await create_plan(container, f"plan-{n}")).plan for n in range(7)]
    move_to(clock, plans[0].installments[2].due_at)  # installments 2 and 3 of every plan due

    stats = await scheduler(app, clock, batch_size=2, concurrency=3).run_once()

    assert (stats.claimed, stats.paid, stats.errors, stats.reclaimed) == (14, 14, 0, 0)
    for plan in plans:
        stored = await app.plans.get(plan.id, None)
        assert stored.status is PlanStatus.COMPLETED
        assert [i.attempts for i in stored.installments] == [1, 1, 1]
    assert container.simulated["simulated"].ledger.charges_total == 7 + 14
    # Each first installment was paid at checkout, under the same kind of request id.
    assert await count_rows(container, payments, payments.c.request_id.like("inst_%")) == 7 + 14
    scheduled = installment_charges.c.kind == "scheduled"
    assert await count_rows(container, installment_charges, scheduled) == 14


async def test_installments_of_one_plan_claimed_apart_are_charged_one_after_the_other(
    container, clock
):
    app = container.installments
    plan = (await create_plan(container)).plan
    move_to(clock, plan.installments[2].due_at)
    # One installment per claim, two in flight: the second claim comes while the plan's
    # first charge is running, and waits for it instead of racing it.
    stats = await scheduler(app, clock, batch_size=1, concurrency=2).run_once()

    assert (stats.claimed, stats.paid, stats.errors) == (2, 2, 0)
    stored = await app.plans.get(plan.id, None)
    assert stored.status is PlanStatus.COMPLETED
    assert (await outbox(container, plan.id))[-1] == "PlanCompleted"


async def test_charges_recorded_together_fall_back_one_by_one_when_a_plan_changed(container, clock):
    app = container.installments
    plans = [(await create_plan(container, f"plan-{n}")).plan for n in range(3)]
    move_to(clock, plans[0].installments[1].due_at)
    charges = await claim_and_pay(app, clock)
    assert len(charges) == 3
    # Meanwhile something else touches one of them: its version moves on.
    async with app.uow() as uow:
        await uow.plans.hold(charges[0].installment_id, charges[0].attempt, clock.now())
        await uow.commit()

    stored = await app.charger.record_many(charges)

    assert [
        p.installment(c.installment_id).status for p, c in zip(stored, charges, strict=True)
    ] == [InstallmentStatus.PAID] * 3
    for c in charges:
        again = await app.plans.get(c.plan.id, None)
        assert again.installment(c.installment_id).status is InstallmentStatus.PAID
    scheduled = installment_charges.c.kind == "scheduled"
    assert await count_rows(container, installment_charges, scheduled) == 3


async def test_saving_plans_together_stores_none_when_one_is_stale(container, clock):
    app = container.installments
    for n in range(2):
        await create_plan(container, f"plan-{n}")
    move_to(clock, clock.now() + 31 * DAY)
    fresh, stale = await claim_and_pay(app, clock)
    async with app.uow() as uow:
        await uow.plans.hold(stale.installment_id, stale.attempt, clock.now())
        await uow.commit()
    for c in (fresh, stale):
        assert c.plan.record(c.installment_id, c.attempt, c.result, clock.now())

    with pytest.raises(ConcurrentUpdate):
        async with app.uow() as uow:
            await uow.plans.save_many([fresh.plan, stale.plan])
            await uow.commit()

    untouched = await app.plans.get(fresh.plan.id, None)
    assert untouched.installment(fresh.installment_id).status is InstallmentStatus.PROCESSING
    assert (
        await count_rows(container, installment_charges, installment_charges.c.kind == "scheduled")
        == 0
    )


async def test_with_no_processor_to_take_charges_a_pass_postpones_one_batch_and_stops(
    container, clock
):
    app = container.installments
    plans = [(await create_plan(container, f"plan-{n}")).plan for n in range(6)]
    move_to(clock, plans[0].installments[1].due_at)
    # The simulated processor's breaker opens: every call of the last minute failed.
    for _ in range(20):
        container.health.record("simulated", Signal.INFRA_FAILURE, 0.01, authorize=True)
    assert not container.health.available

    stats = await scheduler(app, clock, batch_size=2, concurrency=2).run_once()

    # One batch was tried; claiming the rest would only have postponed them too.
    assert (stats.claimed, stats.postponed, stats.failed, stats.paid) == (2, 2, 0, 0)
    stored = [(await app.plans.get(p.id, None)).installments[1] for p in plans]
    postponed = [i for i in stored if i.attempts]
    assert len(postponed) == 2
    for inst in postponed:
        assert inst.status is InstallmentStatus.PENDING
        assert inst.next_attempt_at == clock.now() + timedelta(minutes=1)
        assert (inst.dunning_step, inst.last_error_code) == (0, "no_processor_available")
    assert all(i.status is InstallmentStatus.PENDING for i in stored)
    for plan in plans:
        assert "InstallmentFailed" not in await outbox(container, plan.id)
    assert container.simulated["simulated"].ledger.charges_total == 6, "checkouts only"

    # The breaker's cool-down passes and its probes succeed: everything due is paid.
    clock.advance(60)
    paid = 0
    for _ in range(3):
        paid += (await app.scheduler.run_once()).paid
    assert paid == 6
    for plan in plans:
        inst = (await app.plans.get(plan.id, None)).installments[1]
        assert inst.status is InstallmentStatus.PAID and inst.dunning_step == 0


async def test_an_outage_s_pauses_are_stored_as_one_row_that_a_claim_loads(database_url, clock):
    """Every scheduled charge no processor could take was a row of its own, and every
    claim of the plan loaded them all: a long outage made each claim load thousands.
    A run of them is one row now, with its count and first time; the answer says so."""
    # The breakers stay open an hour once tripped: the pauses below fit in it.
    container = await installments_container(database_url, clock, health_cooldown_s=3600)
    try:
        app = container.installments
        plan = (await create_plan(container)).plan
        second = plan.installments[1]
        move_to(clock, second.due_at)
        started = clock.now()
        for _ in range(20):  # every call of the last minute failed: the breaker opens
            container.health.record("simulated", Signal.INFRA_FAILURE, 0.01, authorize=True)
        for _ in range(6):  # paused 1, 2, 4, 8, 16 minutes between them
            assert (await app.scheduler.run_once()).postponed == 1
            inst = (await app.plans.get(plan.id, None)).installments[1]
            move_to(clock, inst.next_attempt_at)
        last_at = inst.charges[-1].at

        where = installment_charges.c.installment_id == second.id
        assert await count_rows(container, installment_charges, where) == 1
        (run,) = inst.charges
        assert (run.attempt, run.times, run.first_at, run.at) == (6, 6, started, last_at)
        assert inst.next_attempt_at == last_at + timedelta(minutes=32), "the pauses still grow"

        # Past the breaker's cool-down (clock at the next try): the charge goes through.
        assert (await app.scheduler.run_once()).paid == 1
        paid = (await app.plans.get(plan.id, None)).installments[1]
        assert [(c.attempt, c.times, c.outcome.value) for c in paid.charges] == [
            (6, 6, "failed"),
            (7, 1, "paid"),
        ]
        assert await count_rows(container, installment_charges, where) == 2
    finally:
        await container.close()


async def test_a_manual_retry_that_pays_a_breached_plan_reinstates_it_and_says_so(
    container, clock, receiver
):
    app = container.installments
    sim = container.simulated["simulated"]
    endpoint = (
        await app.endpoints.create(
            "m_1", receiver.url, "reinstated", ["installment_plan.reinstated"]
        )
    ).endpoint
    plan = (await create_plan(container)).plan
    second = plan.installments[1]
    sim.set_simulation(Simulation(api_error=1.0))  # a processor outage the whole ladder long
    move_to(clock, second.due_at)
    while (await app.scheduler.run_once()).failed:
        failed = (await app.plans.get(plan.id, "m_1")).installments[1]
        if failed.next_attempt_at is None:
            break
        move_to(clock, failed.next_attempt_at)
    breached = await app.plans.get(plan.id, "m_1")
    assert breached.status is PlanStatus.BREACH and breached.installments[1].attempts == 4

    sim.set_simulation(Simulation())
    reinstated = await app.plans.retry_now(second.id, "m_1")

    assert reinstated.status is PlanStatus.ACTIVE
    assert (await outbox(container, plan.id))[-2:] == ["InstallmentPaid", "PlanReinstated"]
    await app.dispatcher.run_once()
    got = [verify(endpoint.secret, r.headers, r.body, now=clock.now()) for r in receiver.requests]
    assert [g["type"] for g in got] == ["installment_plan.reinstated"]
    assert got[0]["data"]["plan_id"] == plan.id and got[0]["data"]["installment_id"] == second.id
    # The plan charges again: its last installment is paid when due.
    move_to(clock, plan.installments[2].due_at)
    assert (await app.scheduler.run_once()).paid == 1
    assert (await app.plans.get(plan.id, "m_1")).status is PlanStatus.COMPLETED


async def _plan_for_cus_buyer(c, total: int, currency: str):
    """Plan "plan-1" for order-1 of `total` in `currency`, charged to pm_card_visa on
    cus_buyer."""
    from payorch.app.installments import CreatePlan
    from payorch.domain.money import Currency, Money

    plan = CreatePlan(
        "m_1", "plan-1", "order-1", Money(total, Currency(currency)), "pm_card_visa", "cus_buyer"
    )
    return await c.installments.plans.create(plan, deadline_s=None)


@pytest.mark.parametrize(
    ("currency", "total", "parts"),
    [
        # Stripe takes these three-decimal currencies in tens of fils only.
        pytest.param("KWD", 100_000, [33_330, 33_330, 33_340], id="KWD"),
        pytest.param("BHD", 100_010, [33_330, 33_340, 33_340], id="BHD"),
        # Stripe counts MGA in whole ariary: ISO's two decimals, in hundreds.
        pytest.param("MGA", 10_000_000, [3_333_300, 3_333_300, 3_333_400], id="MGA"),
    ],
)
async def test_a_plan_in_a_currency_stripe_takes_in_steps_is_split_in_those_steps_and_charged(
    database_url, clock, currency, total, parts
):
    from tests.fakes.fake_stripe import FakeStripe
    from tests.integration.helpers import make_stripe_container

    async with FakeStripe() as fake:
        fake.register_customer("cus_buyer")
        c = await make_stripe_container(database_url, clock, fake)
        try:
            created = await _plan_for_cus_buyer(c, total, currency)
            assert created.plan is not None, created.error_message
            assert [i.amount_minor for i in created.plan.installments] == parts
            for inst in created.plan.installments[1:]:
                move_to(clock, inst.due_at)
                assert (await c.installments.scheduler.run_once()).paid == 1
            done = await c.installments.plans.get(created.plan.id, None)
        finally:
            await c.close()
        await fake.wait_idle()
    assert done.status is PlanStatus.COMPLETED
    assert fake.charges_total == 3


@pytest.mark.parametrize(
    ("currency", "total"),
    [pytest.param("KWD", 100_005, id="KWD"), pytest.param("MGA", 10_000_050, id="MGA")],
)
async def test_a_plan_whose_total_is_off_the_charge_steps_is_refused_before_any_charge(
    database_url, clock, currency, total
):
    # Split, its last installment (33.345 KWD) would be one Stripe never takes: the
    # plan would take the first ones and then breach.
    from payorch.domain.installments import NotEligible
    from tests.fakes.fake_stripe import FakeStripe
    from tests.integration.helpers import make_stripe_container

    async with FakeStripe() as fake:
        fake.register_customer("cus_buyer")
        c = await make_stripe_container(database_url, clock, fake)
        try:
            with pytest.raises(NotEligible, match=f"not a whole number of .* {currency}"):
                await _plan_for_cus_buyer(c, total, currency)
            assert list(await c.payments.list("m_1", page_size=10, after=None)) == []
        finally:
            await c.close()
    assert fake.charges_total == 0 and fake.requests == []


async def test_a_card_typed_at_checkout_pays_every_installment_on_stripe(database_url, clock):
    """A PaymentMethod made at checkout is single use at Stripe until it is saved on a
    customer: the plan's first charge saves it on the plan's customer, so the scheduler
    can charge it off-session for the later installments."""
    from payorch.app.installments import CreatePlan
    from payorch.domain.money import Currency, Money
    from tests.fakes.fake_stripe import FakeStripe
    from tests.integration.helpers import make_stripe_container

    async with FakeStripe() as fake:
        card = fake.create_payment_method()
        fake.register_customer("cus_buyer")
        c = await make_stripe_container(database_url, clock, fake)
        try:
            created = await c.installments.plans.create(
                CreatePlan(
                    "m_1", "plan-1", "order-1", Money(10_000, Currency("EUR")), card, "cus_buyer"
                ),
                deadline_s=None,
            )
            assert created.plan is not None, created.error_message
            for inst in created.plan.installments[1:]:
                move_to(clock, inst.due_at)
                await c.installments.scheduler.run_once()
            done = await c.installments.plans.get(created.plan.id, None)
            # Stored with the payment: a later call for the first charge (a retry under its
            # key, the reconciler's) asks Stripe the same as the first call.
            saved = [
                (await c.payments.get(i.payment_id, None)).save_for_off_session
                for i in done.installments
            ]
        finally:
            await c.close()
        await fake.wait_idle()
    assert saved == [True, False, False]
    assert [(i.status.value, i.last_error) for i in done.installments] == [("paid", "")] * 3
    assert done.status is PlanStatus.COMPLETED
    assert fake.charges_total == 3
    assert fake.customer_of(card) == "cus_buyer"
    first, *later = fake.requests_to("create")
    assert first.params["setup_future_usage"] == "off_session"
    assert [r.params["customer"] for r in later] == ["cus_buyer"] * 2
