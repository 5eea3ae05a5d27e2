"""Bulk redelivery on the in-memory fakes: what an endpoint was not delivered is queued
again once, in event order, and only for that endpoint; a disabled endpoint, a window
too long or a type it does not take are refused. The same story on SQLite and
PostgreSQL: tests/integration/test_webhook_store_contract.py."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.webhook_delivery import (
    MAX_REDELIVERY_WINDOW,
    CannotRedeliver,
    EndpointNotFound,
    InvalidRedelivery,
    WebhookEndpoints,
)
from payorch.domain.webhook_delivery import (
    DeliveryStatus,
    EndpointStatus,
    WebhookDelivery,
    WebhookEndpoint,
    event_type,
)
from tests.fakes.installments import FakeInstallmentUnitOfWork, FakeWebhooks, OutboxEvent

START = datetime(2027, 1, 4, tzinfo=UTC)
HOUR = timedelta(hours=1)


def an_endpoint(id_: str = "we_1", merchant: str = "m_1", *types: str) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=id_,
        merchant_id=merchant,
        url=f"https://{id_}.example.com/hook",
        secret="whsec_c2VjcmV0",
        description="",
        event_types=types,
        created_at=START,
        updated_at=START,
    )


def published(n: int, name: str = "PlanCreated", merchant: str = "m_1") -> OutboxEvent:
    """Event ev_<n>, n minutes after START, fanned out while no endpoint took it."""
    at = START + timedelta(minutes=n)
    return OutboxEvent(
        id=f"ev_{n:03}",
        aggregate_id=f"ip_{n}",
        merchant_id=merchant,
        sequence=1,
        name=name,
        payload={"plan_id": f"ip_{n}"},
        occurred_at=at,
        published_at=at,
    )


def dead(e: OutboxEvent, endpoint_id: str = "we_1") -> WebhookDelivery:
    return WebhookDelivery(
        id=f"whd_{endpoint_id}_{e.id}",
        endpoint_id=endpoint_id,
        merchant_id=e.merchant_id,
        event_id=e.id,
        event_type=event_type(e.name),
        body=json.dumps({"data": {"event_id": e.id}}),
        created_at=e.occurred_at,
        next_attempt_at=None,
        status=DeliveryStatus.DEAD,
        attempts=8,
        last_status_code=500,
        last_error="HTTP 500",
    )


class Stores:
    def __init__(self, webhooks: FakeWebhooks, clock: ManualClock) -> None:
        self.webhooks, self.clock = webhooks, clock
        self.opened = 0
        self.service = WebhookEndpoints(self.uow, NoSender(), clock, new_secret=lambda: "")

    def uow(self) -> FakeInstallmentUnitOfWork:
        self.opened += 1
        return FakeInstallmentUnitOfWork(webhooks=self.webhooks)

    def pending(self) -> list[str]:
        return sorted(d.event_id for d in self.webhooks.rows.values() if d.pending)


class NoSender:
    async def check_url(self, url: str) -> None:
        raise AssertionError("no address check expected")

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing is sent by a redelivery")


def stores(
    *endpoints: WebhookEndpoint, outbox=(), deliveries=(), clock: ManualClock | None = None
) -> Stores:
    webhooks = FakeWebhooks(list(deliveries), outbox=outbox)
    for ep in endpoints:
        webhooks.endpoints[ep.id] = ep
    return Stores(webhooks, clock or ManualClock(START + 30 * HOUR))


WINDOW = {"since": START, "until": START + 24 * HOUR}


async def test_each_missed_event_is_queued_once_in_event_order_a_batch_a_transaction():
    outbox = [published(n) for n in range(12)]
    random.Random(7).shuffle(outbox)
    s = stores(an_endpoint(), outbox=outbox)
    order: list[str] = []
    opened = s.uow

    def watching() -> FakeInstallmentUnitOfWork:
        order.extend(e for e in s.pending() if e not in order)  # what the last one added
        return opened()

    s.service._uow = watching

    done = await s.service.redeliver_missed("we_1", **WINDOW, batch=5)

    assert done.queued == 12
    assert order == [f"ev_{n:03}" for n in range(10)], "two batches of 5 committed, in order"
    assert s.pending() == [f"ev_{n:03}" for n in range(12)]
    assert {d.next_attempt_at for d in s.webhooks.rows.values()} == {s.clock.now()}


async def test_a_disabled_endpoint_is_refused_telling_to_enable_it_first():
    off = an_endpoint()
    off.disable("the receiver answered 410 Gone", START)
    s = stores(off, outbox=[published(1)], deliveries=[dead(published(2))])

    for ask in ({**WINDOW}, {"dead": True}):
        with pytest.raises(CannotRedeliver, match="disabled: enable it first") as refused:
            await s.service.redeliver_missed("we_1", **ask)
        assert "payorch webhooks enable-endpoint we_1" in str(refused.value)
    assert s.pending() == []


async def test_an_endpoint_disabled_during_the_run_stops_it_keeping_the_batches_done():
    s = stores(an_endpoint(), outbox=[published(n) for n in range(4)])
    opened = s.uow

    def disabling_after_the_first_batch() -> FakeInstallmentUnitOfWork:
        if s.pending():  # the first batch is committed: a 410 comes in
            s.webhooks.endpoints["we_1"].status = EndpointStatus.DISABLED
        return opened()

    s.service._uow = disabling_after_the_first_batch

    with pytest.raises(CannotRedeliver, match=r"\(2 queued and 0 requeued before it was\)"):
        await s.service.redeliver_missed("we_1", **WINDOW, batch=2)
    assert s.pending() == ["ev_000", "ev_001"]


@pytest.mark.parametrize("gone", ["deleted", "unknown"])
async def test_a_deleted_or_unknown_endpoint_is_not_found(gone):
    ep = an_endpoint()
    ep.delete(START)
    s = stores(*([ep] if gone == "deleted" else []), outbox=[published(1)])

    with pytest.raises(EndpointNotFound):
        await s.service.redeliver_missed("we_1", **WINDOW)


@pytest.mark.parametrize(
    ("ask", "says"),
    [
        (
            {"since": START, "until": START + MAX_REDELIVERY_WINDOW + timedelta(seconds=1)},
            "over 31",
        ),
        ({"since": START, "until": START}, "before until"),
        ({"since": START + HOUR, "until": START}, "before until"),
        ({"since": START.replace(tzinfo=None), "until": START + HOUR}, "time zone"),
        ({"since": START}, "give a window"),
        ({}, "give a window"),
        ({**WINDOW, "dead": True}, "either"),
        ({"dead": True, "types": ["installment.paied"]}, "unknown event type"),
    ],
)
async def test_a_window_too_long_or_wrong_or_an_unknown_type_is_refused(ask, says):
    s = stores(an_endpoint(), outbox=[published(1)])

    with pytest.raises(InvalidRedelivery, match=says):
        await s.service.redeliver_missed("we_1", **ask)
    assert s.opened == 0 and s.pending() == []


async def test_a_window_of_exactly_the_bound_is_taken():
    s = stores(an_endpoint(), outbox=[published(1)])

    done = await s.service.redeliver_missed(
        "we_1", since=START, until=START + MAX_REDELIVERY_WINDOW
    )

    assert done.queued == 1


async def test_a_window_reaching_before_pruned_delivered_deliveries_is_refused_naming_it():
    """ev_001 was delivered and its delivery pruned: it reads as never given. A window
    reaching before the prune's horizon is refused; one from it on, and the dead
    letters, are taken."""
    s = stores(an_endpoint(), outbox=[published(1), published(90)], deliveries=[])
    horizon = START + HOUR
    s.webhooks.delivered_pruned_before = horizon

    with pytest.raises(InvalidRedelivery, match="give a window from 2027-01-04T01:00:00"):
        await s.service.redeliver_missed("we_1", **WINDOW)
    assert s.pending() == []
    later = await s.service.redeliver_missed("we_1", since=horizon, until=WINDOW["until"])
    assert (later.queued, s.pending()) == (1, ["ev_090"])
    assert (await s.service.redeliver_missed("we_1", dead=True)).requeued == 0


async def test_only_the_types_the_endpoint_takes_and_asked_for_are_queued():
    outbox = [
        published(1, "PlanCreated"),
        published(2, "InstallmentPaid"),
        published(3, "InstallmentFailed"),
        published(4, "InstallmentPaid"),
    ]
    paid_only = an_endpoint("we_1", "m_1", "installment.paid", "installment.failed")
    s = stores(paid_only, outbox=outbox)

    with pytest.raises(InvalidRedelivery, match=r"not subscribed to installment_plan\.created"):
        await s.service.redeliver_missed("we_1", **WINDOW, types=["installment_plan.created"])
    asked = await s.service.redeliver_missed("we_1", **WINDOW, types=["installment.paid"])
    pending_then = s.pending()
    rest = await s.service.redeliver_missed("we_1", **WINDOW)

    assert (asked.queued, pending_then) == (2, ["ev_002", "ev_004"])
    assert (rest.queued, rest.already_pending) == (1, 2)
    assert s.pending() == ["ev_002", "ev_003", "ev_004"], "never the plan's creation"


async def test_only_the_endpoint_asked_for_is_touched_and_only_its_merchants_events():
    outbox = [published(1), published(2), published(3, merchant="m_2")]
    s = stores(
        an_endpoint("we_1"),
        an_endpoint("we_sibling"),
        an_endpoint("we_other", "m_2"),
        outbox=outbox,
        deliveries=[dead(outbox[0], "we_sibling"), dead(outbox[2], "we_other")],
    )

    done = await s.service.redeliver_missed("we_1", **WINDOW)
    dead_left = await s.service.redeliver_missed("we_1", dead=True)

    assert (done.queued, done.requeued, dead_left.requeued) == (2, 0, 0)
    by_endpoint = sorted(
        (d.endpoint_id, d.event_id, d.status.value) for d in s.webhooks.rows.values()
    )
    assert by_endpoint == [
        ("we_1", "ev_001", "pending"),
        ("we_1", "ev_002", "pending"),
        ("we_other", "ev_003", "dead"),
        ("we_sibling", "ev_001", "dead"),
    ]


async def test_a_dry_run_counts_and_changes_nothing():
    outbox = [published(1), published(2)]
    s = stores(an_endpoint(), outbox=outbox, deliveries=[dead(outbox[0])])
    before = {k: (v.status, v.version) for k, v in s.webhooks.rows.items()}

    done = await s.service.redeliver_missed("we_1", **WINDOW, dry_run=True)

    assert (done.dry_run, done.queued, done.requeued) == (True, 1, 1)
    assert {k: (v.status, v.version) for k, v in s.webhooks.rows.items()} == before


async def test_a_requeued_dead_delivery_keeps_its_webhook_id_and_body_with_a_fresh_schedule():
    e = published(1)
    s = stores(an_endpoint(), outbox=[e], deliveries=[dead(e)])

    done = await s.service.redeliver_missed("we_1", dead=True)

    (d,) = s.webhooks.rows.values()
    assert done.requeued == 1
    assert (d.id, d.event_id, d.body) == (dead(e).id, e.id, dead(e).body)
    assert (d.status, d.attempts, d.last_status_code, d.last_error, d.next_attempt_at) == (
        DeliveryStatus.PENDING,
        0,
        0,
        "",
        s.clock.now(),
    )


async def test_a_dead_delivery_redelivered_by_another_meanwhile_is_left_to_it_and_the_rest_done():
    outbox = [published(1), published(2)]
    s = stores(an_endpoint(), outbox=outbox, deliveries=[dead(outbox[0]), dead(outbox[1])])
    opened = s.uow

    def racing_a_redeliver_webhook() -> FakeInstallmentUnitOfWork:
        uow = opened()
        read = uow.webhooks.redelivery_candidates

        async def then_redelivered_by_another(*args: Any, **kwargs: Any) -> Any:
            page = await read(*args, **kwargs)
            other = s.webhooks.rows[dead(outbox[0]).id]  # RedeliverWebhook commits
            other.redeliver(s.clock.now())
            other.version += 1
            return page

        uow.webhooks.redelivery_candidates = then_redelivered_by_another
        return uow

    s.service._uow = racing_a_redeliver_webhook

    done = await s.service.redeliver_missed("we_1", dead=True)

    assert (done.requeued, done.changed_meanwhile) == (1, 1)
    assert s.pending() == ["ev_001", "ev_002"]
