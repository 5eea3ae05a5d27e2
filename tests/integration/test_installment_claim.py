"""The scheduler's claim on SQLite and PostgreSQL: oldest due first, stale leases before
anything else, and read in order from the partial index of claimable installments, so a
claim costs the same with 1,000 due installments as with 1,000,000."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from payorch.adapters.persistence.tables import installment_plans, installments
from payorch.domain.installments import (
    ChargeOutcome,
    ChargeResult,
    InstallmentPlan,
    InstallmentPolicy,
    InstallmentStatus,
    PlanStatus,
)
from payorch.domain.money import Currency, Money

START = datetime(2026, 1, 1, tzinfo=UTC)
PLANS = 600
# One plan starts every hour: 30 days later their second installments fall due hour by hour.
DUE_AT_PLAN_0 = START + timedelta(days=30)


def plan(n: int, start: datetime = START) -> InstallmentPlan:
    return InstallmentPlan.start(
        merchant_id="m_claim",
        request_id=f"claim-{start.isoformat()}-{n}",
        order_id=f"order-{n}",
        fingerprint="f" * 64,
        total=Money(30_000, Currency("USD")),
        token="pm_card_visa",
        customer_id="cus_1",
        policy=InstallmentPolicy(count=3, interval_days=30),
        first_payment_id=f"pay_{n}",
        first_processor_payment_id=f"sim_{n}",
        now=start + timedelta(hours=n),
    )


async def seeded(container, start: datetime = START, count: int = PLANS) -> list[InstallmentPlan]:
    """`count` plans (first installment paid, two pending), statistics up to date."""
    plans = [plan(n, start) for n in range(count)]
    async with container.installments.uow() as uow:
        for p in plans:
            await uow.plans.add(p)
        await uow.commit()
    async with container.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql("COMMIT")
            await conn.exec_driver_sql("ANALYZE installments, installment_plans")
        else:
            await conn.exec_driver_sql("ANALYZE")
            await conn.commit()
    return plans


async def claim(container, now: datetime, limit: int, worker: str = "w1") -> list[Any]:
    async with container.installments.uow() as uow:
        claims = await uow.plans.claim_due(
            now=now, worker=worker, lease_until=now + timedelta(minutes=2), limit=limit
        )
        await uow.commit()
    return list(claims)


async def claim_as_run(container, now: datetime, limit: int) -> tuple[list[Any], str, Any]:
    """`claim`, with the one SELECT of it that joins (the claim's query) as the database
    was sent it: its statement and parameters."""
    statements: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "JOIN" in statement:
            statements.append((statement, parameters))

    sync_engine = container.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        claims = await claim(container, now, limit=limit)
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
    ((statement, parameters),) = statements
    return claims, statement, parameters


async def test_the_oldest_due_installments_are_claimed_first_up_to_the_limit(container):
    plans = await seeded(container)
    # 100 plans' second installments are due; the first claim takes the 40 oldest.
    now = DUE_AT_PLAN_0 + timedelta(hours=99)
    first = await claim(container, now, limit=40)
    assert [c.installment_id for c in first] == [p.installments[1].id for p in plans[:40]]
    assert all(c.attempt == 1 and not c.reclaimed for c in first)
    second = await claim(container, now, limit=100)
    assert [c.installment_id for c in second] == [p.installments[1].id for p in plans[40:100]]
    assert await claim(container, now, limit=100) == []


async def test_installments_of_a_plan_that_is_not_active_are_not_claimed(container):
    plans = await seeded(container)
    async with container.engine.begin() as conn:
        await conn.execute(
            installment_plans.update()
            .where(installment_plans.c.id.in_([plans[0].id, plans[2].id]))
            .values(status=PlanStatus.CANCELLED.value)
        )
    claims = await claim(container, DUE_AT_PLAN_0 + timedelta(hours=3), limit=10)
    assert [c.plan_id for c in claims] == [plans[1].id, plans[3].id]


async def test_stale_claims_are_taken_over_before_newly_due_ones(container):
    plans = await seeded(container)
    now = DUE_AT_PLAN_0 + timedelta(hours=9)
    paused = await claim(container, now, limit=3, worker="paused")
    later = now + timedelta(minutes=3)  # the paused worker's leases ran out
    claims = await claim(container, later, limit=5, worker="w2")
    assert [(c.installment_id, c.reclaimed, c.attempt) for c in claims] == [
        *[(c.installment_id, True, 1) for c in paused],
        *[(p.installments[1].id, False, 1) for p in plans[3:5]],
    ]


async def test_the_claim_reads_the_partial_index_in_order_even_as_a_generic_plan(container):
    await seeded(container)
    claims, statement, parameters = await claim_as_run(
        container, DUE_AT_PLAN_0 + timedelta(days=60), limit=50
    )
    assert claims
    assert installments.name in statement
    async with container.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # A prepared statement run often is planned once for any parameters: the
            # index predicate must still be implied by the query's own text.
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            plan_text = "\n".join(r[0] for r in rows)
            assert "ix_installments_claimable" in plan_text, plan_text
            assert "Sort" not in plan_text, plan_text
        else:
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan_text = "\n".join(str(r[-1]) for r in rows)
            assert "ix_installments_claimable" in plan_text, plan_text
            assert "TEMP B-TREE" not in plan_text, plan_text


STOLEN = ChargeResult(ChargeOutcome.FAILED, "pay_s", "", "stolen_card", "stolen", retry_later=False)


async def breach(container, plans: list[InstallmentPlan], at: datetime) -> None:
    """Installment 2 of each plan fails for good: the plan in breach, installment 3
    still pending (and due, long ago, once its date is past)."""
    for p in plans:
        second = p.installments[1]
        second._move(InstallmentStatus.PROCESSING)
        second.attempts += 1
        p.record(second.id, second.attempts, STOLEN, at)
        assert p.status is PlanStatus.BREACH
    async with container.installments.uow() as uow:
        await uow.plans.save_many(plans)
        await uow.commit()


async def test_a_claim_does_not_walk_past_the_due_installments_of_breached_plans(container):
    # 500 plans breached months ago: their third installments, still pending, are the
    # oldest due. Then 100 active plans, whose second installments are due.
    breached = await seeded(container, START - timedelta(days=90), count=500)
    await breach(container, breached, START - timedelta(days=59))
    active = await seeded(container, START, count=100)
    async with container.engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # the breach's old row versions gone
            await conn.exec_driver_sql("COMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE installments, installment_plans")
    now = DUE_AT_PLAN_0 + timedelta(hours=100)
    claims, statement, parameters = await claim_as_run(container, now, limit=10)
    assert [c.installment_id for c in claims] == [p.installments[1].id for p in active[:10]]

    async with container.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
            )
            (plan_json,) = rows.one()
            await conn.rollback()
            read = _index_rows(plan_json[0]["Plan"], "ix_installments_claimable")
            # Read from the index: at most the active plans' due installments (the ten
            # claimed when read in order), never the 500 breached plans' before them.
            assert read and sum(read) <= 2 * len(active), plan_json

    # Healed by a manual retry, a plan's installments are claimable again.
    healed = (await container.installments.plans.get(breached[0].id, None)).installments[1]
    async with container.installments.uow() as uow:
        p = await uow.plans.get(breached[0].id, None)
        attempt = p.start_manual_retry(healed.id, worker="w", lease_until=now, now=now)
        p.record(healed.id, attempt, ChargeResult(ChargeOutcome.PAID, "pay_h"), now)
        assert p.status is PlanStatus.ACTIVE
        await uow.plans.save(p)
        await uow.commit()
    again = {c.installment_id for c in await claim(container, now, limit=PLANS)}
    assert breached[0].installments[2].id in again
    assert again.isdisjoint(p.installments[2].id for p in breached[1:])


def _index_rows(node: dict[str, Any], index: str) -> list[int]:
    """The rows each scan of `index` in an EXPLAIN ANALYZE plan returned."""
    found = [node["Actual Rows"]] if node.get("Index Name") == index else []
    for child in node.get("Plans", []):
        found += _index_rows(child, index)
    return found
