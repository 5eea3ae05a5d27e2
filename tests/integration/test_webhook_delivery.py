"""Outbound webhooks end to end: outbox -> deliveries -> a real local HTTP receiver that
verifies signatures with payorch.webhooks.verify. SQLite and PostgreSQL, injected clock."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.exc import DBAPIError

from payorch.adapters.persistence.tables import webhook_deliveries
from payorch.adapters.persistence.webhooks import SqlAlchemyWebhookRepository
from payorch.app.installment_ports import SendResult
from payorch.app.webhook_delivery import (
    MAX_ENDPOINTS_PER_MERCHANT,
    CannotRedeliver,
    DeliveryNotFound,
    EndpointCreation,
    EndpointNotFound,
    InvalidEndpoint,
    WebhookDispatcher,
)
from payorch.domain.webhook_delivery import (
    BACKOFF_S,
    DeliveryStatus,
    EndpointStatus,
    WebhookEndpoint,
)
from payorch.entrypoints.grpc.installment_mappers import endpoint_pb
from payorch.webhooks import generate_secret, verify
from tests.conftest import _truncate
from tests.integration.installment_helpers import create_plan, installments_container
from tests.integration.webhook_receiver import Receiver

CREATED = ["installment_plan.created"]


async def deliveries(container, status=None):
    return list(
        await container.installments.endpoints.deliveries(
            "m_1", status=status, endpoint_id=None, page_size=100, after=None
        )
    )


async def test_a_receiver_verifies_each_webhook_and_sees_the_same_id_after_answering_500(
    container, clock, receiver
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", CREATED)).endpoint
    plan = (await create_plan(container)).plan
    receiver.script = [500]

    first = await app.dispatcher.run_once()
    assert (first.attempted, first.failed) == (1, 1)
    (pending,) = await deliveries(container)
    wait = pending.next_attempt_at - clock.now()
    assert timedelta(seconds=4) <= wait <= timedelta(seconds=6), "retried after 5 s, jittered"

    clock.advance(3)
    assert (await app.dispatcher.run_once()).attempted == 0, "not before its time"
    clock.advance(4)
    assert (await app.dispatcher.run_once()).delivered == 1

    assert len(receiver.requests) == 2
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1, "every retry carries the same webhook-id"
    assert receiver.requests[0].body == receiver.requests[1].body
    assert (
        receiver.requests[0].headers["webhook-timestamp"]
        != (receiver.requests[1].headers["webhook-timestamp"])
    )
    for r in receiver.requests:
        event = verify(endpoint.secret, r.headers, r.body, now=clock.now())
        assert event["type"] == "installment_plan.created"
        assert event["data"]["plan_id"] == plan.id and event["data"]["event_id"] in ids
        assert r.headers["content-type"] == "application/json"
    (done,) = await deliveries(container)
    assert (done.status, done.attempts, done.last_status_code) == (DeliveryStatus.DELIVERED, 2, 204)


async def test_a_receiver_hears_of_a_payment_from_processing_to_completed_in_sequence(
    container, clock, receiver
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", [])).endpoint  # all
    other = await Receiver().start()
    try:
        await app.endpoints.create("m_2", other.url, "", [])
        first = await create_plan(container)  # its first installment is a payment of m_1

        await app.dispatcher.run_once()
        assert other.requests == []  # never another merchant's events
    finally:
        await other.stop()
    told = [verify(endpoint.secret, r.headers, r.body, now=clock.now()) for r in receiver.requests]
    payment = sorted(
        (e for e in told if e["type"].startswith("payment.")), key=lambda e: e["data"]["sequence"]
    )
    assert [(e["type"], e["data"]["sequence"]) for e in payment] == [
        ("payment.processing", 1),
        ("payment.step.succeeded", 2),
        ("payment.completed", 3),
    ]
    assert {e["data"]["payment_id"] for e in payment} == {first.first_payment_id}
    assert payment[0]["data"]["total_minor"] == payment[2]["data"]["total_minor"]


async def test_a_payment_webhook_names_the_currency_of_its_amounts(container, clock, receiver):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", [])).endpoint
    await create_plan(container, currency="JPY", total=9_000)

    await app.dispatcher.run_once()
    told = [verify(endpoint.secret, r.headers, r.body, now=clock.now()) for r in receiver.requests]
    payment = [e["data"] for e in told if e["type"].startswith("payment.")]
    # 3000 of what: minor units mean nothing without their currency (JPY has none).
    assert {d.get("currency") for d in payment} == {"JPY"}
    assert payment and all(d.get("total_minor", d.get("amount_minor")) == 3000 for d in payment)


async def test_a_410_disables_the_endpoint_and_nothing_more_is_sent(container, clock, receiver):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", [])).endpoint
    await create_plan(container)  # several events: the first 410 stops them all
    receiver.script = [410]
    stats = await app.dispatcher.run_once()
    assert stats.disabled == 1
    (listed,) = await app.endpoints.list("m_1")
    assert listed.id == endpoint.id and listed.status is EndpointStatus.DISABLED
    sent = len(receiver.requests)
    dead = await deliveries(container, DeliveryStatus.DEAD)
    assert dead, "the 410's delivery and those still waiting go to the dead-letter list"
    assert await deliveries(container, DeliveryStatus.PENDING) == []

    await create_plan(container, "plan-2")
    clock.advance(86_400)
    await app.dispatcher.run_once()
    assert len(receiver.requests) == sent, "a disabled endpoint receives nothing more"
    with pytest.raises(CannotRedeliver, match="disabled"):
        await app.endpoints.redeliver(dead[0].id, "m_1")


async def test_an_endpoint_enabled_after_a_410_receives_new_events_signed_with_its_secret(
    container, clock, receiver
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", CREATED)).endpoint
    await create_plan(container, "plan-1")
    receiver.script = [410]
    assert (await app.dispatcher.run_once()).disabled == 1
    await create_plan(container, "plan-2")  # while disabled: not sent, now or later
    await app.dispatcher.run_once()
    (dead,) = await deliveries(container, DeliveryStatus.DEAD)

    clock.advance(60)
    enabled = await app.endpoints.enable(endpoint.id, "m_1")
    assert (enabled.id, enabled.status, enabled.disabled_reason) == (
        endpoint.id,
        EndpointStatus.ENABLED,
        "",
    )
    again = await app.endpoints.enable(endpoint.id, "m_1")
    assert again.status is EndpointStatus.ENABLED and again.version == enabled.version
    (listed,) = await app.endpoints.list("m_1")
    assert (listed.url, listed.secret, listed.status) == (
        receiver.url,
        endpoint.secret,
        EndpointStatus.ENABLED,
    )

    plan = (await create_plan(container, "plan-3")).plan
    stats = await app.dispatcher.run_once()

    assert (stats.attempted, stats.delivered) == (1, 1), "plan-3's event only"
    last = receiver.requests[-1]
    event = verify(endpoint.secret, last.headers, last.body, now=clock.now())
    assert event["data"]["plan_id"] == plan.id
    assert len(receiver.requests) == 2
    still_dead = await deliveries(container, DeliveryStatus.DEAD)
    assert [(d.id, d.attempts) for d in still_dead] == [(dead.id, 1)], "redelivery is asked for"
    redelivered = await app.endpoints.redeliver(dead.id, "m_1")
    assert redelivered.status is DeliveryStatus.PENDING


async def test_a_delivery_fanned_out_as_its_endpoint_answered_410_stays_unsent_when_enabled(
    container, clock, receiver
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", CREATED)).endpoint
    await create_plan(container)
    # What a fan-out racing the 410 leaves: the endpoint disabled, a delivery pending,
    # for the next pass to abandon.
    async with app.uow() as uow:
        await uow.webhooks.fan_out(now=clock.now(), limit=10)
        stored = await uow.webhooks.get_endpoint(endpoint.id, None)
        stored.disable("the receiver answered 410 Gone", clock.now())
        await uow.webhooks.save_endpoint(stored)
        await uow.commit()

    await app.endpoints.enable(endpoint.id, "m_1")
    await app.dispatcher.run_once()

    assert receiver.requests == []
    (d,) = await deliveries(container)
    assert (d.status, d.last_error) == (DeliveryStatus.DEAD, "endpoint disabled")


async def test_only_the_merchant_of_an_endpoint_or_ops_enables_it(container, clock, receiver):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", CREATED)).endpoint
    await create_plan(container)
    receiver.script = [410]
    await app.dispatcher.run_once()

    with pytest.raises(EndpointNotFound):
        await app.endpoints.enable(endpoint.id, "m_2")
    with pytest.raises(EndpointNotFound):
        await app.endpoints.enable("we_unknown", "m_1")
    (listed,) = await app.endpoints.list("m_1")
    assert listed.status is EndpointStatus.DISABLED

    assert (await app.endpoints.enable(endpoint.id, None)).status is EndpointStatus.ENABLED

    await app.endpoints.delete(endpoint.id, "m_1")
    with pytest.raises(EndpointNotFound):
        await app.endpoints.enable(endpoint.id, "m_1")
    assert await app.endpoints.list("m_1") == []


async def test_an_endpoint_answering_410_to_every_delivery_at_once_is_disabled_once(
    container, clock, receiver
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", [])).endpoint
    for n in range(3):
        await create_plan(container, f"plan-{n}")
    receiver.script = [410] * 100  # every request in flight is answered 410 together

    stats = await app.dispatcher.run_once()

    assert stats.disabled == 1
    (listed,) = await app.endpoints.list("m_1")
    assert listed.id == endpoint.id and listed.status is EndpointStatus.DISABLED
    everything = await deliveries(container)
    assert len(everything) == stats.fanned_out > 1
    assert {d.status for d in everything} == {DeliveryStatus.DEAD}


async def test_exhausted_deliveries_land_in_the_dead_letter_list_and_can_be_redelivered(
    container, clock, receiver
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", CREATED)).endpoint
    await create_plan(container)
    receiver.script = [503] * len(BACKOFF_S)
    for _ in BACKOFF_S:
        await app.dispatcher.run_once()
        clock.advance(2 * 86_400)
    (dead,) = await deliveries(container, DeliveryStatus.DEAD)
    assert dead.attempts == len(BACKOFF_S) == 8
    assert dead.last_status_code == 503 and dead.last_error == "HTTP 503"
    assert len(receiver.requests) == 8

    again = await app.endpoints.redeliver(dead.id, "m_1")
    assert again.status is DeliveryStatus.PENDING
    (read,) = await deliveries(container)
    assert (read.status, read.attempts, read.last_status_code, read.last_error) == (
        DeliveryStatus.PENDING,
        0,
        0,
        "",
    ), "the 503s were answers to the schedule before, not to the redelivery"
    assert read.next_attempt_at == clock.now()
    assert (await app.dispatcher.run_once()).delivered == 1
    last = receiver.requests[-1]
    assert last.headers["webhook-id"] == dead.event_id
    verify(endpoint.secret, last.headers, last.body, now=clock.now())
    with pytest.raises(DeliveryNotFound):
        await app.endpoints.redeliver(dead.id, "m_2")
    assert [d.status for d in await deliveries(container)] == [DeliveryStatus.DELIVERED]


async def test_a_receiver_that_does_not_answer_in_time_is_retried_later(
    database_url, clock, receiver
):
    container = await installments_container(database_url, clock, webhook_timeout_s=0.2)
    try:
        app = container.installments
        await app.endpoints.create("m_1", receiver.url, "", CREATED)
        await create_plan(container)
        receiver.hold = asyncio.Event()  # never released during the attempt
        stats = await app.dispatcher.run_once()
        assert stats.failed == 1
        (d,) = await deliveries(container)
        assert d.status is DeliveryStatus.PENDING
        assert d.last_error == "no answer within 0.2 s" and d.attempts == 1
    finally:
        await container.close()


async def test_a_2xx_whose_body_never_comes_is_delivered(database_url, clock, receiver):
    """The status is the answer: a receiver that said 200 has the webhook, whatever
    becomes of the rest of its response."""
    container = await installments_container(database_url, clock, webhook_timeout_s=0.5)
    try:
        app = container.installments
        await app.endpoints.create("m_1", receiver.url, "", CREATED)
        await create_plan(container)
        receiver.script = [200]
        receiver.stalled_body_len = 10_000_000
        receiver.hold = asyncio.Event()  # never released during the attempt
        stats = await app.dispatcher.run_once()
        assert stats.delivered == 1
        (d,) = await deliveries(container)
        assert (d.status, d.last_status_code) == (DeliveryStatus.DELIVERED, 200)
    finally:
        await container.close()


class CountingSender:
    """Answers 200; each request takes `takes_s` of the clock, and may run `during` first."""

    def __init__(self, clock, takes_s: float, during=None) -> None:
        self.clock, self.takes_s, self.during = clock, takes_s, during
        self.sent: Counter[str] = Counter()

    async def check_url(self, url):
        return None

    async def send(self, url, *, secrets, webhook_id, timestamp, body, timeout_s):
        self.sent[webhook_id] += 1
        if self.during is not None:
            await self.during(self)
        self.clock.advance(self.takes_s)
        return SendResult(200)


async def test_deliveries_a_dispatcher_claimed_are_sent_by_it_alone_however_slow_it_is(
    container, clock
):
    app = container.installments
    await app.endpoints.create("m_1", "http://127.0.0.1:9/hooks", "", [])
    for n in range(3):
        await create_plan(container, f"plan-{n}")
    # A second dispatcher with a fast receiver runs while the first is on its fourth
    # request, each of which takes the whole timeout and the address check (15 s).
    fast = CountingSender(clock, 0)
    other = WebhookDispatcher(app.uow, fast, clock, wall_clock=clock, worker_id="B", timeout_s=10)

    async def run_other(sender):
        if sender.sent.total() == 4:
            await other.run_once()

    slow = CountingSender(clock, 15, during=run_other)
    one = WebhookDispatcher(
        app.uow, slow, clock, wall_clock=clock, worker_id="A", timeout_s=10, concurrency=1
    )
    stats = await one.run_once()

    sent = slow.sent + fast.sent
    assert len(sent) == stats.fanned_out > 4 and fast.sent
    assert set(sent.values()) == {1}, "no webhook went out twice"
    assert all(d.status is DeliveryStatus.DELIVERED for d in await deliveries(container))


async def test_a_hanging_receiver_never_holds_up_the_scheduler(container, clock, receiver):
    app = container.installments
    await app.endpoints.create("m_1", receiver.url, "", CREATED)
    plan = (await create_plan(container)).plan
    receiver.hold = asyncio.Event()
    dispatching = asyncio.create_task(app.dispatcher.run_once())
    await asyncio.wait_for(receiver.arrived.wait(), timeout=5)  # it holds the request now
    clock.advance((plan.installments[1].due_at - clock.now()).total_seconds())
    stats = await asyncio.wait_for(app.scheduler.run_once(), timeout=5)
    assert stats.paid == 1 and not dispatching.done()
    receiver.hold.set()
    assert (await dispatching).delivered == 1


async def test_redirects_are_not_followed(container, receiver):
    canary = await Receiver().start()
    try:
        receiver.redirect_to = canary.url
        receiver.script = [302]
        app = container.installments
        await app.endpoints.create("m_1", receiver.url, "", CREATED)
        await create_plan(container)
        assert (await app.dispatcher.run_once()).failed == 1
        assert canary.requests == []
        (d,) = await deliveries(container)
        assert d.last_status_code == 302
    finally:
        await canary.stop()


@pytest.mark.parametrize(
    "spelling",
    [
        "http://2130706433:{port}/",
        "http://0x7f.0.0.1:{port}/",
        "http://0177.0.0.1:{port}/",
        "http://127.1:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://[::ffff:7f00:1]:{port}/",
        "https://127.0.0.1:{port}/",
        "http://localhost.:{port}/",
        "http://0.0.0.0:{port}/",
    ],
)
async def test_a_loopback_canary_receives_nothing_from_a_refused_url(container, spelling):
    """Even an endpoint that got into the database somehow (older rules, a name that now
    resolves elsewhere) is checked again at every delivery, before any connection."""
    canary = await Receiver().start()
    try:
        url = spelling.format(port=canary.port)
        app = container.installments
        app.guard.allow_http_loopback = False  # production rules
        with pytest.raises(InvalidEndpoint):
            await app.endpoints.create("m_1", url, "", CREATED)
        now = container.clock.now()
        smuggled = WebhookEndpoint(
            id=f"we_{uuid.uuid4().hex}",
            merchant_id="m_1",
            url=url,
            secret=generate_secret(),
            description="",
            event_types=tuple(CREATED),
            created_at=now,
            updated_at=now,
        )
        async with app.uow() as uow:
            await uow.webhooks.add_endpoint(smuggled)
            await uow.commit()
        await create_plan(container)
        stats = await app.dispatcher.run_once()
        assert stats.attempted == 1 and stats.delivered == 0
        assert canary.requests == [], f"{url} reached the canary"
        (d,) = await deliveries(container)
        assert d.last_error.startswith("refused:") and d.last_status_code == 0
    finally:
        await canary.stop()


async def test_a_secret_is_shown_once_and_never_listed_or_logged(container, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    app = container.installments
    created = await app.endpoints.create("m_1", receiver.url, "mine", CREATED)
    assert created.secret.startswith("whsec_")
    (listed,) = await app.endpoints.list("m_1")
    assert listed.secret == created.secret, "kept to sign with"
    assert "secret" not in {f.name for f, _ in endpoint_pb(listed).ListFields()}
    assert created.secret not in repr(listed)
    receiver.script = [500]
    await create_plan(container)
    await app.dispatcher.run_once()
    assert created.secret not in caplog.text and "whsec_" not in caplog.text
    assert await app.endpoints.list("m_2") == []


async def test_a_database_error_writing_an_endpoint_does_not_carry_its_signing_key(container):
    """Such an error is logged with its traceback (an RPC's unhandled error, a failed
    dispatcher pass), and the key is stored without its whsec_ prefix, which the log
    redaction looks for."""
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", "http://127.0.0.1:9/hooks", "", CREATED)).endpoint
    key = endpoint.secret.removeprefix("whsec_")
    with pytest.raises(DBAPIError) as failed:
        async with app.uow() as uow:
            await uow.webhooks.add_endpoint(endpoint)  # the same id again
    assert "webhook_endpoints" in str(failed.value)
    assert key not in str(failed.value)


@pytest.fixture
async def pg_container(postgres_database, clock):
    """PostgreSQL only: transactions that interleave have no SQLite twin."""
    await _truncate(postgres_database)
    c = await installments_container(postgres_database, clock)
    yield c
    await c.close()


class ConnectionThatPauses:
    """A connection that runs `first` just before the first statement `when` picks."""

    def __init__(self, conn, when, first) -> None:
        self._conn, self._when, self._first = conn, when, first
        self.dialect = conn.dialect

    async def execute(self, statement, *args, **kw):
        if self._first is not None and self._when(statement):
            first, self._first = self._first, None
            await first()
        return await self._conn.execute(statement, *args, **kw)


async def test_deliveries_fanned_out_to_an_endpoint_deleted_meanwhile_go_to_dead_letters(
    pg_container, monkeypatch
):
    container = pg_container
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", "http://127.0.0.1:9/hooks", "", CREATED)).endpoint
    await create_plan(container)
    fan_out = SqlAlchemyWebhookRepository.fan_out

    async def deleted_while_fanning_out(self, *, now, limit):
        # The merchant deletes the endpoint after the fan-out read it as enabled and
        # before it wrote the deliveries.
        self._conn = ConnectionThatPauses(
            self._conn,
            lambda s: getattr(s, "table", None) is webhook_deliveries,
            lambda: app.endpoints.delete(endpoint.id, "m_1"),
        )
        return await fan_out(self, now=now, limit=limit)

    monkeypatch.setattr(SqlAlchemyWebhookRepository, "fan_out", deleted_while_fanning_out)
    await app.dispatcher.run_once()
    monkeypatch.undo()
    await app.dispatcher.run_once()

    assert await app.endpoints.list("m_1") == []
    (d,) = await deliveries(container)
    assert (d.status, d.last_error) == (DeliveryStatus.DEAD, "endpoint deleted")


async def test_the_endpoint_limit_holds_for_creates_racing_on_two_replicas(
    container, database_url, clock, receiver
):
    endpoints = container.installments.endpoints
    gone = (await endpoints.create("m_1", receiver.url, "deleted: not counted", [])).endpoint
    await endpoints.delete(gone.id, "m_1")
    off = (await endpoints.create("m_1", receiver.url, "disabled: counted", [])).endpoint
    async with container.installments.uow() as uow:
        stored = await uow.webhooks.get_endpoint(off.id, "m_1")
        stored.disable("410 Gone", clock.now())
        await uow.webhooks.save_endpoint(stored)
        await uow.commit()
    other = await installments_container(database_url, clock)  # a second replica
    try:
        tries = await asyncio.gather(
            *(
                (endpoints if n % 2 else other.installments.endpoints).create(
                    "m_1", receiver.url, f"racing {n}", []
                )
                for n in range(MAX_ENDPOINTS_PER_MERCHANT + 5)
            ),
            return_exceptions=True,
        )
    finally:
        await other.close()

    made = [t for t in tries if isinstance(t, EndpointCreation)]
    refused = [t for t in tries if isinstance(t, InvalidEndpoint)]
    assert [t for t in tries if t not in made and t not in refused] == [], (
        "neither made nor refused"
    )
    assert (len(made), len(refused)) == (MAX_ENDPOINTS_PER_MERCHANT - 1, 6)
    assert len(await endpoints.list("m_1")) == MAX_ENDPOINTS_PER_MERCHANT
    await endpoints.create("m_2", receiver.url, "another merchant's own 20", [])


async def test_two_replicas_dispatching_together_send_each_event_once_to_each_endpoint(
    pg_container, postgres_database, clock
):
    one = pg_container
    other = await installments_container(postgres_database, clock)  # a second replica
    receivers = [await Receiver().start() for _ in range(3)]
    try:
        merchants = ["m_1", "m_1", "m_2"]
        endpoints = [
            await one.installments.endpoints.create(m, r.url, "", [])
            for m, r in zip(merchants, receivers, strict=True)
        ]
        for n in range(8):
            await create_plan(one, f"p-{n}", merchant="m_1")
            await create_plan(other, f"q-{n}", merchant="m_2")
        receivers[0].script = [500] * 5  # retried, by either replica
        for _ in range(3):
            await asyncio.gather(
                one.installments.dispatcher.run_once(), other.installments.dispatcher.run_once()
            )
            clock.advance(10)

        sent = []
        for merchant, r, endpoint in zip(merchants, receivers, endpoints, strict=True):
            for request in r.requests:
                event = verify(endpoint.secret, request.headers, request.body, now=clock.now())
                assert event["data"]["merchant_id"] == merchant, "only its merchant's events"
            sent.append(Counter(request.headers["webhook-id"] for request in r.requests))
        assert set(sent[0]) == set(sent[1]) and not set(sent[1]) & set(sent[2])
        assert sent[0].total() == len(sent[0]) + 5
        assert set(sent[1].values()) == set(sent[2].values()) == {1}, "no event sent twice"
        assert {d.status for d in await deliveries(one)} == {DeliveryStatus.DELIVERED}
    finally:
        for r in receivers:
            await r.stop()
        await other.close()


async def test_creates_racing_under_one_request_id_on_two_replicas_make_one_endpoint(
    container, database_url, clock, receiver
):
    endpoints = container.installments.endpoints
    other = await installments_container(database_url, clock)  # a second replica
    try:
        tries = await asyncio.gather(
            *(
                (endpoints if n % 2 else other.installments.endpoints).create(
                    "m_1", receiver.url, "one", [], request_id="ep-race"
                )
                for n in range(6)
            )
        )
    finally:
        await other.close()

    assert len({t.endpoint.id for t in tries}) == 1
    assert sorted(t.replayed for t in tries) == [False] + [True] * 5
    assert {t.secret for t in tries} == {tries[0].endpoint.secret}
    assert [e.id for e in await endpoints.list("m_1")] == [tries[0].endpoint.id]


async def test_rotations_racing_on_two_replicas_run_one_after_the_other(
    container, database_url, clock, receiver
):
    endpoints = container.installments.endpoints
    made = await endpoints.create("m_1", receiver.url, "", [])
    other = await installments_container(database_url, clock)  # a second replica
    try:
        rotations = await asyncio.gather(
            *(
                (endpoints if n % 2 else other.installments.endpoints).rotate_secret(
                    made.endpoint.id, "m_1"
                )
                for n in range(4)
            )
        )
    finally:
        await other.close()

    # Each replaced the secret the one before it left: none failed, and the secret
    # signing beside the last is the third's, never one a concurrent rotation lost.
    async with container.installments.uow() as uow:
        stored = await uow.webhooks.get_endpoint(made.endpoint.id, "m_1")
    assert stored is not None
    news = [r.secret for r in rotations]
    assert len(set(news)) == 4 and made.secret not in news
    assert stored.secret in news and stored.previous_secret in news
    assert stored.previous_secret != stored.secret
    assert stored.version == made.endpoint.version + 4


async def fail_for(container, clock, receiver, *, hours: int, every_h: int = 2, plans_from=0):
    """A receiver answering 500 to everything for `hours`: a plan (one event) every 12 h,
    a dispatcher pass every `every_h` hours. The passes' stats, with the clock's time."""
    receiver.script = [500] * 10_000
    passes = []
    for step in range(hours // every_h):
        if step * every_h % 12 == 0:
            await create_plan(container, f"plan-{plans_from + step}")
        passes.append((clock.now(), await container.installments.dispatcher.run_once()))
        clock.advance(every_h * 3600)
    return passes


async def test_an_endpoint_failing_for_days_is_disabled_once_and_sent_nothing_more(
    container, clock, receiver, caplog
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", CREATED)).endpoint
    first_failure = clock.now()

    with caplog.at_level(logging.WARNING, logger="payorch.webhooks"):
        passes = await fail_for(container, clock, receiver, hours=5 * 24)

    disabling = [(at, stats) for at, stats in passes if stats.disabled]
    assert len(disabling) == 1 and disabling[0][1].disabled == 1
    disabled_at = disabling[0][0]
    assert disabled_at >= first_failure + timedelta(days=3), "not before three days"
    (listed,) = await app.endpoints.list("m_1")
    assert (listed.id, listed.status) == (endpoint.id, EndpointStatus.DISABLED)
    assert listed.disabled_at == disabled_at
    assert listed.disabled_reason.startswith("no successful delivery since ")
    assert await deliveries(container, DeliveryStatus.PENDING) == []
    warned = [r for r in caplog.records if "disabled" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert endpoint.id in warned[0].getMessage()
    sent = len(receiver.requests)
    assert all(at <= disabled_at for at, stats in passes if stats.attempted)
    await create_plan(container, "plan-after")
    clock.advance(86_400)
    await app.dispatcher.run_once()
    assert len(receiver.requests) == sent
    pb = endpoint_pb(listed)
    assert pb.disabled_reason == listed.disabled_reason
    assert pb.disabled_at.ToDatetime(tzinfo=disabled_at.tzinfo) == disabled_at


async def test_a_success_or_an_enable_starts_the_endpoints_failing_time_again(
    container, clock, receiver
):
    app = container.installments
    endpoint = (await app.endpoints.create("m_1", receiver.url, "", CREATED)).endpoint
    passes = await fail_for(container, clock, receiver, hours=66)
    assert not any(stats.disabled for _, stats in passes)
    assert await deliveries(container, DeliveryStatus.DEAD), "jittered: one at least"
    receiver.script = []  # one success: the endpoint works again
    await create_plan(container, "plan-works")
    assert (await app.dispatcher.run_once()).delivered >= 1
    (listed,) = await app.endpoints.list("m_1")
    assert listed.failing_since is None

    passes = await fail_for(container, clock, receiver, hours=66, plans_from=100)
    assert not any(stats.disabled for _, stats in passes), "66 h since the success"
    # Three dead by 88 h however the retries are jittered (and passes 2 h apart).
    passes = await fail_for(container, clock, receiver, hours=48, plans_from=200)
    assert sum(stats.disabled for _, stats in passes) == 1

    enabled = await app.endpoints.enable(endpoint.id, "m_1")
    assert (enabled.status, enabled.disabled_at, enabled.failing_since) == (
        EndpointStatus.ENABLED,
        None,
        None,
    )
    passes = await fail_for(container, clock, receiver, hours=24, plans_from=300)
    assert not any(stats.disabled for _, stats in passes), "the failing time began again"


async def test_replicas_recording_an_endpoints_failures_together_disable_it_once(
    pg_container, postgres_database, clock, caplog
):
    one = pg_container
    other = await installments_container(postgres_database, clock)  # a second replica
    receiver = await Receiver().start()
    try:
        endpoint = (await one.installments.endpoints.create("m_1", receiver.url, "", [])).endpoint
        for n in range(6):
            await create_plan(one, f"p-{n}")
        # Failing for three days with three dead already: any failure now disables it.
        async with one.installments.uow() as uow:
            stored = await uow.webhooks.get_endpoint(endpoint.id, None)
            assert await uow.webhooks.note_failure(endpoint.id, now=clock.now(), dead=True)
            await uow.webhooks.note_failure(endpoint.id, now=clock.now(), dead=True)
            await uow.webhooks.note_failure(endpoint.id, now=clock.now(), dead=True)
            await uow.commit()
        clock.advance(3 * 86_400)
        receiver.script = [500] * 1000

        with caplog.at_level(logging.WARNING, logger="payorch.webhooks"):
            passes = await asyncio.gather(
                one.installments.dispatcher.run_once(), other.installments.dispatcher.run_once()
            )

        assert sum(p.disabled for p in passes) == 1
        warned = [r for r in caplog.records if f"{endpoint.id} of merchant" in r.getMessage()]
        assert len(warned) == 1
        (listed,) = await one.installments.endpoints.list("m_1")
        assert listed.status is EndpointStatus.DISABLED
        assert listed.version == stored.version + 1, "one change of state"
        assert listed.disabled_at == clock.now()
        assert {d.status for d in await deliveries(one)} == {DeliveryStatus.DEAD}
    finally:
        await receiver.stop()
        await other.close()
