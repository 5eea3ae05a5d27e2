"""Processor customers bound to the merchant that used them first, on SQLite and
PostgreSQL: the claim under a race, the refusal before anything is stored or charged,
and installment plans (refused at creation, never at their scheduled charges)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select

from payorch.adapters.persistence.tables import installment_plans, payments, processor_customers
from payorch.app.installments import CreatePlan
from payorch.app.payments import CustomerNotOwned
from payorch.domain.installments import InstallmentStatus
from payorch.domain.money import Currency, Money
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from tests.integration.installment_helpers import move_to

CUSTOMER = "cus_Alice"


def request(merchant: str, request_id: str, customer: str = CUSTOMER):
    return parse_payment_request(
        RawPaymentRequest(
            merchant_id=merchant,
            request_id=request_id,
            amount_minor=1999,
            currency="USD",
            payment_method="pm_card_visa",
            customer_id=customer,
            off_session=True,
        )
    )


async def pay(container, merchant: str, request_id: str, customer: str = CUSTOMER):
    return await container.payments.create(request(merchant, request_id, customer), deadline_s=None)


async def plan(container, merchant: str, request_id: str, customer: str = CUSTOMER):
    return await container.installments.plans.create(
        CreatePlan(
            merchant,
            request_id,
            "order-1",
            Money(10_000, Currency("EUR")),
            "pm_card_visa",
            customer,
        ),
        deadline_s=None,
    )


async def count(container, table, **where) -> int:
    async with container.engine.connect() as conn:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return int((await conn.execute(query)).scalar_one())


@contextlib.contextmanager
def statements(container) -> Iterator[list[str]]:
    """Every statement sent through the container's engine meanwhile."""
    sent: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    engine = container.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def charges(container) -> int:
    return len(container.simulated["simulated"].ledger.intents)


@pytest.mark.parametrize("make", [pay, plan], ids=["payment", "installment plan"])
async def test_another_merchant_naming_the_customer_is_refused_and_stores_nothing(container, make):
    await pay(container, "m_1", "r-1")

    with pytest.raises(CustomerNotOwned) as refused:
        await make(container, "m_2", "r-2")

    assert refused.value.fields == ["customer_id"]
    assert charges(container) == 1
    assert await count(container, payments, merchant_id="m_2") == 0
    assert await count(container, installment_plans) == 0
    assert await count(container, processor_customers, merchant_id="m_2") == 0
    again = await pay(container, "m_1", "r-3")  # the owner goes on using it
    assert again.payment.status.value == "succeeded"


async def test_two_merchants_claiming_a_new_customer_at_once_one_gets_it(container):
    """Exactly one wins, whichever it is, and the other is refused before any charge."""
    results = await asyncio.gather(
        *(pay(container, m, "r-1", "cus_New") for m in ("m_1", "m_2", "m_3", "m_4")),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(e, CustomerNotOwned) for e in lost), results
    owner = won[0].payment.merchant_id
    async with container.engine.connect() as conn:
        rows = (await conn.execute(select(processor_customers))).all()
    assert [(r.customer_id, r.merchant_id) for r in rows] == [("cus_New", owner)]
    assert charges(container) == 1
    assert await count(container, payments) == 1


async def test_the_claims_race_alone_on_the_repository(container, clock):
    """Many transactions claiming the same new customers for different merchants: all
    agree on one owner per customer, the one stored."""
    ids = ["cus_A", "cus_B", "cus_C"]

    async def claim(merchant: str) -> dict[str, str]:
        async with container.uow() as uow:
            owners = await uow.customers.claim(merchant, ids, clock.now())
            await uow.commit()
        return owners

    answers = await asyncio.gather(*(claim(f"m_{n}") for n in range(8)))
    async with container.engine.connect() as conn:
        stored = dict((await conn.execute(select(processor_customers.c[0:2]))).all())
    assert all(a == stored for a in answers) and sorted(stored) == ids


async def test_a_payment_without_a_customer_sends_no_statement_about_customers(container):
    with statements(container) as sent:
        await container.payments.create(request("m_1", "r-1", customer=""), deadline_s=None)
    assert not [s for s in sent if "processor_customers" in s]
    assert await count(container, processor_customers) == 0


async def test_a_plans_scheduled_charges_go_on_without_a_claim(container, clock):
    created = await plan(container, "m_1", "plan-1")
    assert created.plan is not None
    move_to(clock, created.plan.installments[1].due_at)

    with statements(container) as sent:
        stats = await container.installments.scheduler.run_once()

    assert stats.paid == 1
    assert not [s for s in sent if "processor_customers" in s]
    stored = await container.installments.plans.get(created.plan.id, "m_1")
    assert stored.installments[1].status is InstallmentStatus.PAID
