"""Containers for installment tests: the real bootstrap on a test database, a manual clock,
simulated processors, and plain-http webhooks to 127.0.0.1 (the dev setting)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.installments import SqlAlchemyInstallmentPlanRepository
from payorch.adapters.persistence.tables import events, payments
from payorch.adapters.processors.simulated import SimIntent, Simulation
from payorch.app.installments import CreatePlan, PlanCreation
from payorch.bootstrap import Container, bootstrap
from payorch.domain.installments import Installment, InstallmentPlan, InstallmentStatus
from payorch.domain.money import Currency, Money
from payorch.settings import Settings
from tests.conftest import TEST_SECRETS_KEY


async def installments_container(
    database_url: str, clock: ManualClock, **settings: Any
) -> Container:
    base: dict[str, Any] = {
        "database_url": database_url,
        "secrets_key": TEST_SECRETS_KEY,
        "processors": "simulated",
        "webhooks_allow_http_loopback": True,
        "webhook_timeout_s": 2.0,
    }
    return await bootstrap(Settings(**{**base, **settings}), clock=clock)


async def create_plan(
    container: Container,
    request_id: str = "plan-1",
    *,
    merchant: str = "m_1",
    token: str = "pm_card_visa",
    total: int = 10_000,
    currency: str = "EUR",
    order_id: str = "order-1",
    customer: str | None = None,
) -> PlanCreation:
    """A plan for the merchant's own customer unless one is given (a customer is
    bound to the first merchant that names it)."""
    return await container.installments.plans.create(
        CreatePlan(
            merchant,
            request_id,
            order_id,
            Money(total, Currency(currency)),
            token,
            customer_of(merchant) if customer is None else customer,
        ),
        deadline_s=None,
    )


def customer_of(merchant: str) -> str:
    """The processor customer the tests' plans of `merchant` are for."""
    return "cus_" + "".join(ch if ch.isalnum() else "_" for ch in merchant)


class ProcessDied(Exception):
    """The process stopped where a test said it would."""


async def first_charge_only(container: Container, request_id: str = "plan-1", **kw: Any) -> str:
    """CreateInstallmentPlan whose process dies after the first charge went through and
    before the plan was stored. Returns the id of the first charge's payment."""

    async def dies(self: object, plan: object) -> None:
        raise ProcessDied("before the plan was stored")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SqlAlchemyInstallmentPlanRepository, "add", dies)
        with pytest.raises(ProcessDied):
            await create_plan(container, request_id, **kw)
    (payment,) = await container.payments.list(None, page_size=10, after=None)
    return payment.id


async def payments_of(container: Container, installment_id: str) -> list[str]:
    """The request ids of an installment's payments, one per attempt charged."""
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            select(payments.c.request_id).where(
                payments.c.request_id.like(f"inst_{installment_id}_%")
            )
        )
        return sorted(r.request_id for r in rows)


def move_to(clock: ManualClock, when: datetime) -> None:
    clock.advance((when - clock.now()).total_seconds())


async def outbox(container: Container, plan_id: str) -> list[str]:
    """The names of a plan's events in the outbox, in order."""
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.name).where(events.c.payment_id == plan_id).order_by(events.c.sequence)
        )
        return [r.name for r in rows]


AUTHENTICATE = "pm_card_authenticationRequired"  # 4000002760003184: asks every time


async def authenticating_plan_due(container: Container, clock: ManualClock) -> InstallmentPlan:
    """A plan on a card whose bank asks for authentication every time, paid at checkout
    once the customer authenticated; the clock at its second installment's due date."""
    sim = container.simulated["simulated"]
    first = await create_plan(container, token=AUTHENTICATE)
    paused = await container.payments.get(first.first_payment_id, "m_1")
    sim.complete_action(paused.steps[0].processor_payment_id)
    await container.payments.confirm(paused.id, "m_1")
    plan = (await create_plan(container, token=AUTHENTICATE)).plan
    assert plan is not None
    move_to(clock, plan.installments[1].due_at)
    return plan


async def failed_waiting_for_the_customer(container: Container, clock: ManualClock) -> Installment:
    """authenticating_plan_due, its second installment charged off-session and
    failed_final, that charge's payment still waiting for the customer. Returns it."""
    plan = await authenticating_plan_due(container, clock)
    await container.installments.scheduler.run_once()
    inst = (await container.installments.plans.get(plan.id, None)).installments[1]
    assert inst.status is InstallmentStatus.FAILED_FINAL
    return inst


async def declined_when_due(container: Container, clock: ManualClock, *plans: str) -> list[str]:
    """Plans under these request ids (default one), their second installments charged
    when due and failed, the processor still failing every charge. Returns their ids."""
    made = [
        (await create_plan(container, r, order_id=f"order-{r}")).plan for r in plans or ["plan-1"]
    ]
    move_to(clock, made[0].installments[1].due_at)
    container.simulated["simulated"].set_simulation(Simulation(api_error=1.0))
    await container.installments.scheduler.run_once()
    found = [(await container.installments.plans.get(p.id, None)).installments[1] for p in made]
    assert {i.status for i in found} == {InstallmentStatus.FAILED}
    return [i.id for i in found]


async def intent_of(container: Container, payment_id: str) -> SimIntent:
    payment = await container.payments.get(payment_id, "m_1")
    return container.simulated["simulated"].ledger.by_id[payment.steps[0].processor_payment_id]
