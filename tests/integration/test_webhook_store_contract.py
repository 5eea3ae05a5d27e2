"""The webhook store's fan-out, stranded-delivery sweep and bulk redelivery, one contract
run against the in-memory fake (the unit tests' store) and the SQL store on SQLite and
PostgreSQL: the fake means what the real one does, or unit tests on it prove nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.retention import prune_webhook_deliveries
from payorch.adapters.persistence.tables import events
from payorch.app.webhook_delivery import InvalidRedelivery, WebhookEndpoints
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


class NoSender:
    """Bulk redelivery sends nothing itself: the dispatcher does."""

    async def check_url(self, url: str) -> None:
        raise AssertionError("no address check expected")

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing is sent by a redelivery")


def endpoints_service(store: Any, clock: ManualClock) -> WebhookEndpoints:
    return WebhookEndpoints(store.uow, NoSender(), clock, new_secret=generate_secret)


async def fan_out_all(store: Any, clock: ManualClock) -> None:
    async with store.uow() as uow:
        await uow.webhooks.fan_out(now=clock.now(), limit=100)
        await uow.commit()


async def change_delivery(store: Any, event_id: str, change: Callable[[Any], None]) -> None:
    (made,) = [
        x for x in await store.deliveries() if (x.endpoint_id, x.event_id) == ("we_1", event_id)
    ]
    async with store.uow() as uow:
        d = await uow.webhooks.get_delivery(made.id, None)
        change(d)
        await uow.webhooks.save_delivery(d)
        await uow.commit()


async def change_endpoint(store: Any, endpoint_id: str, change: Callable[[Any], None]) -> None:
    async with store.uow() as uow:
        ep = await uow.webhooks.get_endpoint(endpoint_id, None)
        change(ep)
        await uow.webhooks.save_endpoint(ep)
        await uow.commit()


async def outage_of_we_1(store: Any, clock: ManualClock) -> datetime:
    """Endpoint we_1 of m_1 (every type) after an outage: ev_0 came before it existed,
    ev_1 was delivered, ev_2 dead-lettered, ev_3 is still waiting, ev_4 and ev_5 were
    raised while it was disabled (no delivery), ev_6 is another merchant's and ev_7 is
    not fanned out yet. It is enabled again. Returns when the story began."""
    began = clock.now()
    await store.add_event(event(clock, 0, "PlanCreated"))
    await fan_out_all(store, clock)  # no endpoint yet
    clock.advance(60)
    async with store.uow() as uow:
        await uow.webhooks.add_endpoint(endpoint(clock, "we_1", "m_1"))
        await uow.webhooks.add_endpoint(endpoint(clock, "we_2", "m_2"))
        await uow.commit()
    for n, name in ((1, "PlanCreated"), (2, "InstallmentPaid"), (3, "InstallmentFailed")):
        await store.add_event(event(clock, n, name))
    await fan_out_all(store, clock)
    await change_delivery(store, "ev_1", lambda d: d.succeeded(204, clock.now()))
    await change_delivery(store, "ev_2", lambda d: d.gone(410, "410 Gone: endpoint disabled"))
    await change_endpoint(store, "we_1", lambda ep: ep.disable("410", clock.now()))
    clock.advance(3600)
    await store.add_event(event(clock, 4, "InstallmentPaid"))
    await store.add_event(event(clock, 5, "PlanCompleted"))
    await store.add_event(event(clock, 6, "PlanCreated", merchant="m_2"))
    await fan_out_all(store, clock)
    clock.advance(3600)
    await change_endpoint(store, "we_1", lambda ep: ep.enable(clock.now()))
    await store.add_event(event(clock, 7, "PlanCreated"))  # unpublished: the fan-out's
    return began


async def bulk_redelivery_contract(store: Any, clock: ManualClock) -> None:
    began = await outage_of_we_1(store, clock)
    before = {(d.endpoint_id, d.event_id): d for d in await store.deliveries()}
    service = endpoints_service(store, clock)
    window = {"since": began - timedelta(hours=1), "until": clock.now() + timedelta(hours=1)}

    dry = await service.redeliver_missed("we_1", **window, dry_run=True, batch=2)
    assert {(d.endpoint_id, d.event_id): d for d in await store.deliveries()} == before
    clock.advance(10)
    done = await service.redeliver_missed("we_1", **window, batch=2)

    counts = {
        "queued": 2,  # ev_4, ev_5
        "requeued": 1,  # ev_2
        "already_pending": 1,  # ev_3
        "already_delivered": 1,  # ev_1
        "before_endpoint": 1,  # ev_0
        "changed_meanwhile": 0,
    }
    assert dry.as_dict() == {"endpoint_id": "we_1", "merchant_id": "m_1", "dry_run": True, **counts}
    assert done.as_dict() == {**dry.as_dict(), "dry_run": False}
    after = {(d.endpoint_id, d.event_id): d for d in await store.deliveries()}
    assert sorted(k for k in after if k not in before) == [("we_1", "ev_4"), ("we_1", "ev_5")]
    for event_id in ("ev_2", "ev_4", "ev_5"):
        d = after[("we_1", event_id)]
        assert (d.status, d.attempts, d.next_attempt_at, d.merchant_id) == (
            DeliveryStatus.PENDING,
            0,
            clock.now(),
            "m_1",
        )
        assert json.loads(d.body)["data"]["event_id"] == event_id  # the webhook-id
    assert after[("we_1", "ev_2")].body == before[("we_1", "ev_2")].body
    assert json.loads(after[("we_1", "ev_4")].body)["type"] == "installment.paid"
    for kept in (("we_1", "ev_1"), ("we_1", "ev_3")):
        assert after[kept] == before[kept]

    again = await service.redeliver_missed("we_1", **window, batch=2)
    assert (again.queued, again.requeued, again.already_pending) == (0, 0, 4)
    assert len(await store.deliveries()) == len(after)


async def dead_letters_contract(store: Any, clock: ManualClock) -> None:
    """--dead: every dead delivery of the endpoint, of the types asked, and no other."""
    async with store.uow() as uow:
        await uow.webhooks.add_endpoint(endpoint(clock, "we_1", "m_1"))
        await uow.commit()
    names = ["PlanCreated", "InstallmentPaid", "InstallmentPaid", "PlanCompleted"]
    for n, name in enumerate(names, start=1):
        await store.add_event(event(clock, n, name))
    await fan_out_all(store, clock)
    for event_id in ("ev_1", "ev_2", "ev_3"):
        await change_delivery(store, event_id, lambda d: d.abandon("endpoint disabled"))
    await change_delivery(store, "ev_4", lambda d: d.succeeded(204, clock.now()))
    service = endpoints_service(store, clock)

    paid = await service.redeliver_missed("we_1", dead=True, types=["installment.paid"], batch=1)
    status = {d.event_id: d.status for d in await store.deliveries()}
    rest = await service.redeliver_missed("we_1", dead=True, batch=1)
    none_left = await service.redeliver_missed("we_1", dead=True)

    assert (paid.requeued, paid.queued) == (2, 0)
    assert status == {
        "ev_1": DeliveryStatus.DEAD,
        "ev_2": DeliveryStatus.PENDING,
        "ev_3": DeliveryStatus.PENDING,
        "ev_4": DeliveryStatus.DELIVERED,
    }
    assert (rest.requeued, none_left.requeued) == (1, 0)
    assert len(await store.deliveries()) == 4


async def test_the_fake_store_redelivers_what_an_endpoint_missed_as_the_sql_store_does(clock):
    await bulk_redelivery_contract(FakeStore(), clock)


async def test_the_fake_store_redelivers_dead_letters_as_the_sql_store_does(clock):
    await dead_letters_contract(FakeStore(), clock)


async def test_the_sql_store_redelivers_what_an_endpoint_missed_once(database_url, clock):
    container = await installments_container(database_url, clock)
    try:
        await bulk_redelivery_contract(SqlStore(container), clock)
    finally:
        await container.close()


async def test_the_sql_store_redelivers_an_endpoints_dead_letters(database_url, clock):
    container = await installments_container(database_url, clock)
    try:
        await dead_letters_contract(SqlStore(container), clock)
    finally:
        await container.close()


async def test_a_window_reaching_before_delivered_deliveries_were_pruned_is_refused(
    database_url, clock
):
    """`payorch prune` deleted ev_1's delivered delivery: ev_1 would read as never given
    to we_1, and be sent again. A window reaching before the prune's horizon is refused,
    naming it; one from it on is taken. Before, ev_1 was queued again."""
    container = await installments_container(database_url, clock)
    try:
        store = SqlStore(container)
        began = await outage_of_we_1(store, clock)
        clock.advance(40 * 86400)
        horizon = clock.now() - timedelta(days=30)
        service = endpoints_service(store, clock)
        window = {"since": began - timedelta(hours=1), "until": began + timedelta(days=20)}
        assert await prune_webhook_deliveries(container.engine, before=horizon, dry_run=True)
        kept = await service.redeliver_missed("we_1", **window, dry_run=True)
        assert kept.already_delivered == 1  # a dry run prunes nothing and keeps nothing

        assert await prune_webhook_deliveries(container.engine, before=horizon) == 2
        with pytest.raises(InvalidRedelivery) as refused:
            await service.redeliver_missed("we_1", **window)
        assert f"deliveries delivered before {horizon.isoformat()} were pruned" in str(
            refused.value
        )
        assert f"give a window from {horizon.isoformat()} on" in str(refused.value)
        later = await service.redeliver_missed(
            "we_1", since=horizon, until=clock.now(), dry_run=False
        )
        assert later.queued == 0  # nothing happened since
        # A later prune with an earlier horizon does not move it back.
        assert await prune_webhook_deliveries(container.engine, before=began) == 0
        async with store.uow() as uow:
            assert await uow.webhooks.delivered_pruned_before() == horizon
    finally:
        await container.close()


async def test_two_bulk_redeliveries_of_one_endpoint_at_once_make_each_delivery_once(
    database_url, clock
):
    container = await installments_container(database_url, clock)
    try:
        store = SqlStore(container)
        began = await outage_of_we_1(store, clock)
        service = endpoints_service(store, clock)
        window = {"since": began, "until": clock.now() + timedelta(hours=1)}

        runs = await asyncio.gather(
            *(service.redeliver_missed("we_1", **window, batch=1) for _ in range(2))
        )

        assert sorted(r.queued for r in runs) == [0, 2]
        assert sorted(r.requeued for r in runs) == [0, 1]
        made = [d.event_id for d in await store.deliveries() if d.endpoint_id == "we_1"]
        assert sorted(made) == ["ev_1", "ev_2", "ev_3", "ev_4", "ev_5"]
    finally:
        await container.close()
