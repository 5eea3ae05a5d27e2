"""Containers for installment tests: the real bootstrap on a test database, a manual clock,
simulated processors, and plain-http webhooks to 127.0.0.1 (the dev setting)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.installments import SqlAlchemyInstallmentPlanRepository
from payorch.adapters.persistence.tables import events
from payorch.app.installments import CreatePlan, PlanCreation
from payorch.bootstrap import Container, bootstrap
from payorch.domain.money import Currency, Money
from payorch.settings import Settings


async def installments_container(
    database_url: str, clock: ManualClock, **settings: Any
) -> Container:
    base: dict[str, Any] = {
        "database_url": database_url,
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
) -> PlanCreation:
    return await container.installments.plans.create(
        CreatePlan(merchant, request_id, order_id, Money(total, Currency(currency)), token),
        deadline_s=None,
    )


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


def move_to(clock: ManualClock, when: datetime) -> None:
    clock.advance((when - clock.now()).total_seconds())


async def outbox(container: Container, plan_id: str) -> list[str]:
    """The names of a plan's events in the outbox, in order."""
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            select(events.c.name).where(events.c.payment_id == plan_id).order_by(events.c.sequence)
        )
        return [r.name for r in rows]
