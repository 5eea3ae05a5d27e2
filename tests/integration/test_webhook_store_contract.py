"""The webhook store's fan-out and stranded-delivery sweep, one contract run against the
in-memory fake (the unit tests' store) and the SQL store on SQLite and PostgreSQL: the
fake means what the real one does, or unit tests on it prove nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.tables import events
from payorch.domain.webhook_delivery import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from payorch.webhooks import generate_secret
from tests.fakes.installments import FakeInstallmentUnitOfWork, FakeWebhooks, OutboxEvent
from tests.integration.installment_helpers import installments_container


class FakeStore:
    def __init__(self) -> None:
        self.tables = FakeWebhooks([])
        self.uow: Callable[[], Any] = lambda: FakeInstallmentUnitOfWork(webhooks=self.tables)

    async def add_event(self, e: OutboxEvent) -> None:
        self.tables.outbox[e.id] = e

    async def deliveries(self) -> list[WebhookDelivery]:
        return list(self.tables.rows.values())


class SqlStore:
    def __init__(self, container: Any) -> None:
        self._container = container
        self.uow = container.installments.uow

    async def add_event(self, e: OutboxEvent) -> None:
        async with self._container.engine.begin() as conn:
            await conn.execute(
                events.insert(),
                [
                    {
                        "id": e.id,
                        "payment_id": e.aggregate_id,
                        "merchant_id": e.merchant_id,
                        "sequence": e.sequence,
                        "name": e.name,
                        "payload": e.payload,
                        "occurred_at": e.occurred_at,
                    }
                ],
            )

    async def deliveries(self) -> list[WebhookDelivery]:
        async with self.uow() as uow:
            return list(
                await uow.webhooks.list_deliveries(
                    None, status=None, endpoint_id=None, limit=100, after=None
                )
            )


def endpoint(clock: ManualClock, id_: str, merchant: str, *types: str) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=id_,
        merchant_id=merchant,
        url=f"https://{id_}.example.com/hook",
        secret=generate_secret(),
        description="",
        event_types=types,
        created_at=clock.now(),
        updated_at=clock.now(),
    )


def event(clock: ManualClock, n: int, name: str, merchant: str = "m_1") -> OutboxEvent:
    return OutboxEvent(
        id=f"ev_{n}",
        aggregate_id=f"ip_plan{n}",
        merchant_id=merchant,
        sequence=1,
        name=name,
        payload={"plan_id": f"ip_plan{n}"},
        occurred_at=clock.now() + timedelta(seconds=n),
    )


async def fan_out_contract(store: Any, clock: ManualClock) -> None:
    async with store.uow() as uow:
        await uow.webhooks.add_endpoint(endpoint(clock, "we_all", "m_1"))
        await uow.webhooks.add_endpoint(endpoint(clock, "we_paid", "m_1", "installment.paid"))
        off = endpoint(clock, "we_off", "m_1")
        off.disable("turned off", clock.now())
        await uow.webhooks.add_endpoint(off)
        await uow.webhooks.add_endpoint(endpoint(clock, "we_other", "m_2"))
        await uow.commit()
    for n, name in enumerate(["PlanCreated", "InstallmentPaid", "PlanCompleted"], start=1):
        await store.add_event(event(clock, n, name))
    await store.add_event(event(clock, 4, "PlanCancelled", merchant="m_3"))  # no endpoint

    async with store.uow() as uow:
        first = await uow.webhooks.fan_out(now=clock.now(), limit=2)
        await uow.commit()
    async with store.uow() as uow:
        rest = await uow.webhooks.fan_out(now=clock.now(), limit=10)
        await uow.commit()
    async with store.uow() as uow:
        none_left = await uow.webhooks.fan_out(now=clock.now(), limit=10)

    assert (first, rest, none_left) == (2, 2, 0), "events handled, each once, oldest first"
    made = sorted((d.event_id, d.endpoint_id) for d in await store.deliveries())
    assert made == [
        ("ev_1", "we_all"),
        ("ev_2", "we_all"),
        ("ev_2", "we_paid"),
        ("ev_3", "we_all"),
    ]
    for d in await store.deliveries():
        assert (d.status, d.merchant_id, d.next_attempt_at) == (
            DeliveryStatus.PENDING,
            "m_1",
            clock.now(),
        )
        assert d.event_type in (
            "installment_plan.created",
            "installment.paid",
            "installment_plan.completed",
        )
        assert d.event_id in d.body


async def stranded_contract(store: Any, clock: ManualClock) -> None:
    async with store.uow() as uow:
        for id_ in ("we_kept", "we_disabled", "we_deleted"):
            await uow.webhooks.add_endpoint(endpoint(clock, id_, "m_1"))
        await uow.commit()
    await store.add_event(event(clock, 1, "PlanCreated"))
    async with store.uow() as uow:
        assert await uow.webhooks.fan_out(now=clock.now(), limit=10) == 1
        for id_, change in (("we_disabled", "disable"), ("we_deleted", "delete")):
            stored = await uow.webhooks.get_endpoint(id_, None)
            if change == "disable":
                stored.disable("the receiver answered 410 Gone", clock.now())
            else:
                stored.delete(clock.now())
            await uow.webhooks.save_endpoint(stored)
        await uow.commit()

    async with store.uow() as uow:
        abandoned = await uow.webhooks.abandon_stranded()
        await uow.commit()
    async with store.uow() as uow:
        again = await uow.webhooks.abandon_stranded()

    assert (abandoned, again) == (2, 0)
    by_endpoint = {d.endpoint_id: (d.status, d.last_error) for d in await store.deliveries()}
    assert by_endpoint == {
        "we_kept": (DeliveryStatus.PENDING, ""),
        "we_disabled": (DeliveryStatus.DEAD, "endpoint disabled"),
        "we_deleted": (DeliveryStatus.DEAD, "endpoint deleted"),
    }


async def test_the_fake_store_fans_out_as_the_sql_store_does(clock):
    await fan_out_contract(FakeStore(), clock)


async def test_the_fake_store_abandons_stranded_deliveries_as_the_sql_store_does(clock):
    await stranded_contract(FakeStore(), clock)


async def test_the_sql_store_fans_out_events_to_the_endpoints_that_want_them(database_url, clock):
    container = await installments_container(database_url, clock)
    try:
        await fan_out_contract(SqlStore(container), clock)
    finally:
        await container.close()


async def test_the_sql_store_abandons_deliveries_whose_endpoint_is_disabled_or_deleted(
    database_url, clock
):
    container = await installments_container(database_url, clock)
    try:
        await stranded_contract(SqlStore(container), clock)
    finally:
        await container.close()
