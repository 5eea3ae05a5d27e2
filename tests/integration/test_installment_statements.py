"""The scheduler's statements as the database runs them, on SQLite and PostgreSQL: a
claim, its plans' read and a group save (on PostgreSQL sent to the driver,
driver_sql.py) happen inside their unit of work's transaction, check versions, store
what SQLAlchemy stored, and read back what it read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from payorch.adapters.persistence.driver_sql import Sender
from payorch.adapters.persistence.installments import InstallmentStatements
from payorch.adapters.persistence.tables import (
    events,
    installment_charges,
    installment_plans,
    installments,
)
from payorch.app.ports import ConcurrentUpdate
from payorch.domain.installments import (
    ChargeOutcome,
    ChargeResult,
    InstallmentPlan,
    InstallmentPolicy,
    InstallmentStatus,
)
from payorch.domain.money import Currency, Money

START = datetime(2026, 1, 1, tzinfo=UTC)
DUE = START + timedelta(days=31)


def new_plan(n: int) -> InstallmentPlan:
    return InstallmentPlan.start(
        merchant_id="m_sql",
        request_id=f"sql-{n}",
        order_id=f"order-{n}",
        fingerprint="f" * 64,
        total=Money(30_000 + n, Currency("USD")),
        token="pm_card_visa",
        customer_id="cus_1",
        policy=InstallmentPolicy(count=3, interval_days=30, dunning_days=(2, 5)),
        first_payment_id=f"pay_{n}",
        first_processor_payment_id=f"sim_{n}",
        now=START + timedelta(minutes=n),
    )


async def stored(container, count: int) -> list[InstallmentPlan]:
    plans = [new_plan(n) for n in range(count)]
    async with container.installments.uow() as uow:
        for p in plans:
            await uow.plans.add(p)
        await uow.commit()
    return plans


async def claimed(container, limit: int, *, worker: str = "w1", commit: bool = True):
    """A claim and its plans' read in one unit of work, as the scheduler makes them."""
    async with container.installments.uow() as uow:
        claims = await uow.plans.claim_due(
            now=DUE, worker=worker, lease_until=DUE + timedelta(minutes=2), limit=limit
        )
        plans = await uow.plans.get_many([c.plan_id for c in claims])
        if commit:
            await uow.commit()
    return claims, plans


def paid(claims, plans) -> list[InstallmentPlan]:
    """Each claimed installment recorded paid on its plan (not saved)."""
    for c in claims:
        result = ChargeResult(ChargeOutcome.PAID, f"pay_{c.installment_id}")
        assert plans[c.plan_id].record(c.installment_id, c.attempt, result, DUE)
    return [plans[c.plan_id] for c in claims]


async def count(container, table, *where) -> int:
    async with container.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar()


async def test_a_claim_stores_its_worker_lease_and_attempt_and_reads_its_plans_as_stored(
    container,
):
    plans = await stored(container, 3)
    claims, read = await claimed(container, 10)

    assert sorted(c.installment_id for c in claims) == sorted(p.installments[1].id for p in plans)
    assert all(c.attempt == 1 and not c.reclaimed for c in claims)
    for p in plans:
        again = await container.installments.plans.get(p.id, None)
        # The claim's read gives what a read of one plan gives, field by field.
        assert read[p.id] == again
        inst = again.installments[1]
        assert inst.status is InstallmentStatus.PROCESSING
        assert (inst.claimed_by, inst.attempts, inst.version) == ("w1", 1, 1)
        assert inst.lease_until == DUE + timedelta(minutes=2)
        assert inst.lease_until.tzinfo is UTC
        assert again.dunning_days == (2, 5)
        assert again.installments[0].charges == p.installments[0].charges


async def test_a_claim_left_without_commit_claims_nothing(container):
    plans = await stored(container, 2)
    claims, _ = await claimed(container, 10, commit=False)
    assert len(claims) == 2

    for p in plans:
        again = await container.installments.plans.get(p.id, None)
        assert again.installments[1].status is InstallmentStatus.PENDING
        assert again.installments[1].version == 0
    claims, _ = await claimed(container, 10)
    assert len(claims) == 2


async def test_a_claim_taken_over_keeps_its_attempt_under_the_new_worker(container):
    await stored(container, 1)
    (first,), _ = await claimed(container, 10, worker="paused")
    async with container.installments.uow() as uow:
        (taken,) = await uow.plans.claim_due(
            now=DUE + timedelta(minutes=3),
            worker="w2",
            lease_until=DUE + timedelta(minutes=5),
            limit=10,
        )
        await uow.commit()

    assert (taken.installment_id, taken.attempt, taken.reclaimed) == (first.installment_id, 1, True)
    plan = await container.installments.plans.get(taken.plan_id, None)
    inst = plan.installment(taken.installment_id)
    assert (inst.claimed_by, inst.attempts, inst.version) == ("w2", 1, 2)
    assert inst.lease_until == DUE + timedelta(minutes=5)


async def test_a_group_save_stores_the_plans_charges_and_events(container):
    await stored(container, 3)
    claims, plans = await claimed(container, 10)
    recorded = paid(claims, plans)
    pending = [e.name for p in recorded for e in p.pending_events]
    assert pending
    events_before = await count(container, events)

    async with container.installments.uow() as uow:
        await uow.plans.save_many(recorded)
        await uow.commit()

    for p in recorded:
        again = await container.installments.plans.get(p.id, None)
        assert again == p
        inst = again.installments[1]
        assert inst.status is InstallmentStatus.PAID
        assert inst.paid_at == DUE
        assert [(c.attempt, c.outcome, c.at) for c in inst.charges] == [
            (1, ChargeOutcome.PAID, DUE)
        ]
    assert await count(container, events) - events_before == len(pending)


async def test_a_group_save_left_without_commit_stores_nothing(container):
    await stored(container, 2)
    claims, plans = await claimed(container, 10)
    events_before = await count(container, events)

    async with container.installments.uow() as uow:
        await uow.plans.save_many(paid(claims, plans))

    assert (
        await count(container, installment_charges, installment_charges.c.kind == "scheduled") == 0
    )
    assert await count(container, events) == events_before
    assert await count(container, installments, installments.c.status == "paid") == 2  # firsts
    assert await count(container, installment_plans, installment_plans.c.version != 0) == 0


async def test_a_group_save_with_a_plan_changed_meanwhile_stores_none_of_them(container):
    await stored(container, 2)
    claims, plans = await claimed(container, 10)
    recorded = paid(claims, plans)
    # Another writer saved the second plan since it was read: its version moved on.
    async with container.engine.begin() as conn:
        await conn.execute(
            update(installment_plans)
            .where(installment_plans.c.id == recorded[1].id)
            .values(version=installment_plans.c.version + 1)
        )

    with pytest.raises(ConcurrentUpdate) as raised:
        async with container.installments.uow() as uow:
            await uow.plans.save_many(recorded)
            await uow.commit()

    assert str(raised.value) == recorded[1].id
    assert (
        await count(container, installment_charges, installment_charges.c.kind == "scheduled") == 0
    )
    assert await count(container, installments, installments.c.status == "processing") == 2


async def test_a_group_save_of_an_attempt_recorded_already_stores_none_of_them(container):
    await stored(container, 2)
    claims, plans = await claimed(container, 10)
    recorded = paid(claims, plans)
    # The second plan's attempt has its charge row already (recorded by another worker
    # whose save left the versions as read: only the row's key tells).
    second = recorded[1].installment(claims[1].installment_id)
    async with container.engine.begin() as conn:
        await conn.execute(
            installment_charges.insert().values(
                installment_id=second.id,
                attempt=1,
                kind="scheduled",
                payment_id="pay_other",
                outcome="paid",
                error_code="",
                message="",
                at=DUE,
            )
        )

    with pytest.raises(ConcurrentUpdate):
        async with container.installments.uow() as uow:
            await uow.plans.save_many(recorded)
            await uow.commit()

    assert (
        await count(container, installment_charges, installment_charges.c.kind == "scheduled") == 1
    )
    assert await count(container, installments, installments.c.status == "processing") == 2
    assert await count(container, installment_plans, installment_plans.c.version != 0) == 0


async def test_statements_sent_before_the_transaction_began_are_in_it(container):
    """The first statement of a unit of work begins its transaction, on the driver too:
    left without commit, nothing of it stays."""
    (plan,) = await stored(container, 1)
    statements = InstallmentStatements.for_dialect(container.engine.dialect)
    row = {
        "id": "evt_first",
        "payment_id": plan.id,
        "merchant_id": plan.merchant_id,
        "sequence": 99,
        "name": "Probe",
        "payload": {"n": 1},
        "occurred_at": DUE,
        "published_at": None,
    }
    async with container.engine.connect() as conn:
        await conn.begin()  # as a unit of work begins
        send = Sender(conn)
        await send.many(statements.insert_events, [row])
        (found,) = await send.rows(statements.plans, {"ids": [plan.id]})
        assert found["id"] == plan.id
    assert await count(container, events, events.c.id == "evt_first") == 0

    async with container.engine.connect() as conn:
        await conn.begin()
        send = Sender(conn)
        (found,) = await send.rows(statements.plans, {"ids": [plan.id]})
        await send.many(statements.insert_events, [row])
        await conn.commit()
    async with container.engine.connect() as conn:
        stored_row = (await conn.execute(select(events).where(events.c.id == "evt_first"))).one()
    assert stored_row.payload == {"n": 1}
    assert stored_row.occurred_at == DUE
    assert found["created_at"] == plan.created_at
    assert found["dunning_days"] == [2, 5]
