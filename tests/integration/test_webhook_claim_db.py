"""A processor's event about a payment its server left PROCESSING takes the reconciler's
claim (PaymentService.reconcile_claimed, PaymentRepository.claim) before it looks the
payment up, on SQLite and PostgreSQL: a reconciler's pass, or another event, meanwhile
asks nothing, and an event that finds the claim held is answered as for a live run
(PaymentInProgress: a 409, not remembered, so Stripe sends it again).

Before, the event claimed nothing and relied on the versioned save: it and a pass (or two
deliveries) both looked the payment up and made its owed calls, and one save was lost."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from payorch.app.observability import Via
from payorch.app.payments import PaymentInProgress, ProcessorEvent
from payorch.bootstrap import Container
from payorch.domain.payment import Payment, PaymentStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.integration.helpers import left_processing, make_container


def hint(payment: Payment, event_id: str) -> ProcessorEvent:
    """A `payment_intent.payment_failed`-like hint about the payment's first step."""
    return ProcessorEvent(event_id, "webhook", payment.id, 0, "", charged=False)


async def the_payment(container: Container) -> Payment:
    (payment,) = await container.payments.list("m_1", page_size=10, after=None)
    return payment


async def seen(container: Container, event_id: str) -> bool:
    """Whether the event is remembered (a redelivery would be taken for a duplicate)."""
    async with container.uow() as uow:
        fresh = await uow.inbound_events.remember(event_id, "webhook", container.clock.now())
    return not fresh  # not committed: nothing is remembered by asking


@contextlib.asynccontextmanager
async def two_replicas(database_url: str, clock: Any) -> AsyncIterator[tuple[Container, ...]]:
    """Two replicas on one database, a payment its server left PROCESSING 301 s ago."""
    first = await make_container(database_url, clock)
    second = await make_container(database_url, clock)
    try:
        await left_processing(first)
        clock.advance(301)
        yield first, second
    finally:
        await second.close()
        await first.close()


def lookups(container: Container, meanwhile: Callable[[], Awaitable[None]] | None = None):
    """The payment ids `container` looks up, each answered by a 500 (nothing learned);
    `meanwhile` runs while the processor holds the lookup."""
    asked: list[str] = []

    async def lookup(request, processor_payment_id):
        asked.append(request.payment_id)
        if meanwhile is not None:
            await meanwhile()
        return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")

    container.simulated["simulated"].lookup = lookup
    return asked


async def refused(call: Awaitable[object]) -> str:
    with pytest.raises(PaymentInProgress) as raised:
        await call
    return str(raised.value)


async def looked_up_once(container: Container) -> None:
    stored = await the_payment(container)
    assert stored.status is PaymentStatus.PROCESSING
    assert [a.operation for a in stored.steps[0].attempts] == ["lookup"]  # the first's


async def test_a_pass_while_an_event_looks_up_an_interrupted_payment_asks_nothing(
    database_url, clock
):
    async with two_replicas(database_url, clock) as (webhook, reconciler):
        payment = await the_payment(webhook)
        settled: list[int] = []

        async def a_pass() -> None:
            settled.append(await reconciler.payments.reconcile_due())

        lookups(webhook, a_pass)
        asked_by_pass = lookups(reconciler)
        event = hint(payment, "evt_1")
        assert await webhook.processor_events.apply(event) == "looked up, still open"
        assert (settled, asked_by_pass) == ([0], [])
        await looked_up_once(webhook)


async def test_an_event_while_a_pass_looks_up_an_interrupted_payment_is_refused_to_be_sent_again(
    database_url, clock
):
    async with two_replicas(database_url, clock) as (reconciler, webhook):
        payment = await the_payment(reconciler)
        said: list[str] = []

        async def an_event() -> None:
            said.append(await refused(webhook.processor_events.apply(hint(payment, "evt_1"))))

        lookups(reconciler, an_event)
        asked_by_event = lookups(webhook)
        assert await reconciler.payments.reconcile_due() == 0
        assert len(said) == 1 and "being processed" in said[0] and asked_by_event == []
        assert not await seen(webhook, "evt_1")  # its redelivery is acted on
        await looked_up_once(reconciler)


async def test_of_two_events_about_an_interrupted_payment_at_once_only_the_first_looks_it_up(
    database_url, clock
):
    async with two_replicas(database_url, clock) as (first, second):
        payment = await the_payment(first)
        said: list[str] = []

        async def another_event() -> None:
            said.append(await refused(second.processor_events.apply(hint(payment, "evt_2"))))

        lookups(first, another_event)
        asked_by_second = lookups(second)
        event = hint(payment, "evt_1")
        assert await first.processor_events.apply(event) == "looked up, still open"
        assert len(said) == 1 and asked_by_second == []
        assert not await seen(second, "evt_2")
        await looked_up_once(first)


async def test_an_event_that_read_the_payment_before_a_pass_claimed_it_does_not_take_it(
    database_url, clock
):
    """The event read the payment (interrupted, unclaimed), then a pass claimed it: the
    event's claim, conditional on the version it read, matches no row."""
    async with two_replicas(database_url, clock) as (reconciler, webhook):
        read_by_event = await the_payment(webhook)
        said: list[str] = []

        async def the_event_goes_on() -> None:
            said.append(
                await refused(webhook.payments.reconcile_claimed(read_by_event, Via.WEBHOOK))
            )

        lookups(reconciler, the_event_goes_on)
        asked_by_event = lookups(webhook)
        assert await reconciler.payments.reconcile_due() == 0
        assert len(said) == 1 and "being reconciled" in said[0] and asked_by_event == []
        await looked_up_once(reconciler)
