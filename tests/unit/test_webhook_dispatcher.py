"""The dispatcher on in-memory fakes: a delivery it claimed is sent while its claim holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.installment_ports import SendResult
from payorch.app.webhook_delivery import WebhookDispatcher
from payorch.domain.webhook_delivery import (
    DeliveryStatus,
    EndpointStatus,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.fakes.installments import FakeInstallmentUnitOfWork, FakeWebhooks
from tests.fakes.outage import (
    FailingUnits,
    one_line_then_traceback,
    outage_then_fault,
    pass_records,
    unreachable,
)

DAY = timedelta(days=1)


class SlowSender:
    """Every request takes the whole timeout and the address check: 15 s of the clock."""

    def __init__(self, clock: ManualClock, webhooks: FakeWebhooks) -> None:
        self.clock, self.webhooks = clock, webhooks
        self.late: list[str] = []

    async def check_url(self, url: str) -> None:
        return None

    async def send(self, url, *, secrets, webhook_id, timestamp, body, timeout_s) -> SendResult:
        lease = self.webhooks.rows[webhook_id].lease_until
        if lease is None or self.clock.now() >= lease:
            self.late.append(webhook_id)  # another dispatcher could have claimed it now
        await asyncio.sleep(0)  # the requests in flight start together
        self.clock.advance(15)
        return SendResult(200)


def due_now(clock: ManualClock, count: int) -> list[WebhookDelivery]:
    return due_now_as(clock, *(f"evt_{n}" for n in range(count)))


def due_now_as(clock: ManualClock, *event_ids: str) -> list[WebhookDelivery]:
    """A delivery due now to endpoint we_1 for each event id (the delivery's id too)."""
    return [
        WebhookDelivery(
            id=event_id,
            endpoint_id="we_1",
            merchant_id="m_1",
            event_id=event_id,
            event_type="installment.paid",
            body="{}",
            created_at=clock.now(),
            next_attempt_at=clock.now(),
        )
        for event_id in event_ids
    ]


def dispatcher_a(
    webhooks: FakeWebhooks, sender: Any, clock: ManualClock, **options: Any
) -> WebhookDispatcher:
    """Worker A's dispatcher on the fakes, `clock` as both its clocks."""
    return WebhookDispatcher(
        lambda: FakeInstallmentUnitOfWork(webhooks=webhooks),
        sender,
        clock,
        wall_clock=clock,
        worker_id="A",
        **options,
    )


@pytest.mark.parametrize(("concurrency", "batch_size"), [(1, 100), (16, 100), (4, 3)])
async def test_every_delivery_is_sent_while_its_claim_still_holds(concurrency, batch_size):
    clock = ManualClock()
    webhooks = FakeWebhooks(due_now(clock, 40))
    sender = SlowSender(clock, webhooks)
    dispatcher = dispatcher_a(
        webhooks, sender, clock, timeout_s=10, batch_size=batch_size, concurrency=concurrency
    )

    stats = await dispatcher.run_once()

    assert stats.delivered == 40
    assert sender.late == []


class ScriptedSender:
    """Answers each webhook id with its script: (status, seconds of the clock it takes)."""

    def __init__(self, clock: ManualClock, script: dict[str, list[tuple[int, float]]]) -> None:
        self.clock, self.script = clock, script
        self.sent: list[str] = []

    async def check_url(self, url: str) -> None:
        return None

    async def send(self, url, *, secrets, webhook_id, timestamp, body, timeout_s) -> SendResult:
        self.sent.append(webhook_id)
        status, takes_s = self.script[webhook_id].pop(0)
        self.clock.advance(takes_s)
        return SendResult(status)


async def test_a_retry_that_falls_due_during_a_pass_is_sent_and_never_left_claimed():
    clock = ManualClock()
    webhooks = FakeWebhooks(due_now_as(clock, "evt_fails_fast", "evt_slow", "evt_last"))
    # The first answers 500 at once, so its retry (5 s on) falls due while the second
    # takes the whole 10 s timeout; the third is still waiting its turn then.
    sender = ScriptedSender(
        clock,
        {
            "evt_fails_fast": [(500, 0), (200, 0)],
            "evt_slow": [(200, 10)],
            "evt_last": [(200, 0)],
        },
    )
    dispatcher = dispatcher_a(webhooks, sender, clock, timeout_s=10, concurrency=1)

    await dispatcher.run_once()

    assert sorted(sender.sent) == ["evt_fails_fast", "evt_fails_fast", "evt_last", "evt_slow"]
    assert all(not d.pending for d in webhooks.rows.values())
    assert all(d.lease_until is None and not d.claimed_by for d in webhooks.rows.values())


class StoppingSender(SlowSender):
    """The process is told to stop while the first deliveries are being sent."""

    def __init__(self, clock: ManualClock, webhooks: FakeWebhooks, stop: asyncio.Event) -> None:
        super().__init__(clock, webhooks)
        self.stop = stop

    async def send(self, url, *, secrets, webhook_id, timestamp, body, timeout_s) -> SendResult:
        self.stop.set()
        return await super().send(
            url,
            secrets=secrets,
            webhook_id=webhook_id,
            timestamp=timestamp,
            body=body,
            timeout_s=timeout_s,
        )


async def test_a_dispatcher_told_to_stop_sends_what_it_claimed_and_claims_no_more():
    clock = ManualClock()
    webhooks = FakeWebhooks(due_now(clock, 40))
    stop = asyncio.Event()
    sender = StoppingSender(clock, webhooks, stop)
    dispatcher = dispatcher_a(webhooks, sender, clock, timeout_s=10, concurrency=4)

    await dispatcher.run_forever(60, stop)

    rows = list(webhooks.rows.values())
    assert sum(not d.pending for d in rows) == 4, "the four claimed are sent and recorded"
    assert all(d.pending and not d.claimed_by for d in rows if d.attempts == 0)
    assert all(d.lease_until is None for d in rows if not d.pending)


def failing_endpoint(clock: ManualClock) -> WebhookEndpoint:
    return WebhookEndpoint(
        id="we_1",
        merchant_id="m_1",
        url="https://example.com/",
        secret="whsec_x",
        description="",
        event_types=(),
        created_at=clock.now(),
        updated_at=clock.now(),
        failing_since=clock.now(),
        dead_since_failing=3,
    )


@pytest.mark.parametrize(
    ("days", "answer", "disabled"),
    [(3, 500, True), (3, 0, True), (2.9, 500, False), (3, 204, False)],
    ids=["500 after 3 days", "no answer after 3 days", "under 3 days", "a success"],
)
async def test_an_endpoint_failing_for_three_days_is_disabled_at_its_next_failure(
    days, answer, disabled, caplog
):
    clock = ManualClock()
    webhooks = FakeWebhooks([], failing_endpoint(clock))
    clock.advance(days * 86_400)
    webhooks.rows.update({d.id: d for d in due_now(clock, 2)})
    sender = ScriptedSender(clock, {"evt_0": [(answer, 0)], "evt_1": [(answer, 0)]})
    dispatcher = dispatcher_a(webhooks, sender, clock, concurrency=1)

    with caplog.at_level(logging.WARNING, logger="payorch.webhooks"):
        stats = await dispatcher.run_once()

    e = webhooks.endpoint
    if disabled:
        assert (stats.disabled, e.status, e.disabled_at) == (
            1,
            EndpointStatus.DISABLED,
            clock.now(),
        )
        assert sender.sent == ["evt_0"], "the other delivery is abandoned, not sent"
        assert {d.status for d in webhooks.rows.values()} == {DeliveryStatus.DEAD}
        (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert "we_1 of merchant m_1 disabled: no successful delivery since" in warning.message
    else:
        assert (stats.disabled, e.status, e.disabled_at) == (0, EndpointStatus.ENABLED, None)
        assert e.failing_since == (None if answer == 204 else clock.now() - days * DAY)


@pytest.mark.parametrize("leave", ["without committing", "by an exception"])
async def test_a_claim_and_a_failure_never_committed_leave_the_delivery_and_endpoint_as_they_were(
    leave,
):
    """As the database rolls them back: a dispatcher that dies between its claim and the
    commit leaves the delivery due for the next one."""
    clock = ManualClock()
    webhooks = FakeWebhooks(due_now(clock, 1), failing_endpoint(clock))

    with pytest.raises(RuntimeError) if leave == "by an exception" else contextlib.nullcontext():
        async with FakeInstallmentUnitOfWork(webhooks=webhooks) as uow:
            (job,) = await uow.webhooks.claim_deliveries(
                now=clock.now(), worker="A", lease_until=clock.now() + DAY, limit=10
            )
            assert await uow.webhooks.note_failure("we_1", now=clock.now(), dead=True)
            if leave == "by an exception":
                raise RuntimeError("the dispatcher died")

    (delivery,) = webhooks.rows.values()
    assert (delivery.claimed_by, delivery.lease_until, delivery.version) == ("", None, 0)
    assert webhooks.endpoint.dead_since_failing == 3
    async with FakeInstallmentUnitOfWork(webhooks=webhooks) as uow:
        again = await uow.webhooks.claim_deliveries(
            now=clock.now(), worker="B", lease_until=clock.now() + DAY, limit=10
        )
    assert [j.delivery.id for j in again] == [job.delivery.id]


async def test_a_pass_the_database_cannot_be_reached_for_is_one_line_and_a_fault_its_traceback(
    caplog,
):
    # As the scheduler's and the reconciler's: before, every pass of an outage logged a
    # full traceback.
    clock = ManualClock()
    stop = asyncio.Event()
    dispatcher = WebhookDispatcher(
        FailingUnits(stop, *outage_then_fault()),
        SlowSender(clock, FakeWebhooks([])),
        clock,
        wall_clock=clock,
        worker_id="A",
        storage_unreachable=unreachable,
    )

    with caplog.at_level(logging.INFO):
        await dispatcher.run_forever(0, stop)

    assert pass_records(caplog.records, "payorch.webhooks") == one_line_then_traceback("webhook")
    assert "hunter2" not in caplog.text
