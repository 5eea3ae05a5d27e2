"""The hot-path payment writes (payment_writes.py) on SQLite and PostgreSQL: what they
store reads back field for field through the SQLAlchemy repository, conflicts fail
alone, and SQLite commits concurrent writes together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import func, select

from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.payment_writes import (
    AsyncpgPaymentWriter,
    _children,
    insert_write,
)
from payorch.adapters.persistence.tables import attempts, events, payment_steps, payments
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.app.ports import ConcurrentUpdate, DuplicateRequest
from payorch.domain.money import Currency
from payorch.domain.payment import (
    Attempt,
    CaptureMode,
    FallbackMethod,
    MethodType,
    Payment,
    PaymentStatus,
    RawError,
    Step,
)
from payorch.domain.results import ErrorCode, Outcome
from tests.conftest import _truncate

AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def pg_url(postgres_database):
    """PostgreSQL only: a row lock held by another transaction has no SQLite twin."""
    await _truncate(postgres_database)
    return postgres_database


@pytest.fixture
async def uow(database_url):
    engine = create_engine(database_url)
    await migrate(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    assert factory.writer is not None
    yield factory
    await factory.close()
    await engine.dispose()


def new_payment(n: int, *, request_id: str | None = None, steps: int = 1) -> Payment:
    return Payment(
        id=f"pay_w{n:05d}",
        merchant_id="m_1",
        request_id=request_id or f"req-{n}",
        fingerprint="f" * 64,
        currency=Currency.parse("EUR"),
        amount_minor=10_000,
        steps=[
            Step(
                i,
                MethodType.CARD if i else MethodType.APPLE_PAY,
                f"tok_{i}",
                10_000 // steps,
                ["simulated", "stripe"],
                customer_id="cus_1",
            )
            for i in range(steps)
        ],
        created_at=AT,
        updated_at=AT,
        capture_mode=CaptureMode.MANUAL,
        allow_partial=True,
        config_version=7,
        metadata={"order": "o-1", "note": "é ✓"},
        off_session=True,
        fallbacks=[FallbackMethod(MethodType.CARD, "tok_fb", "cus_2")],
        authorize_only=False,
    )


def settle(p: Payment) -> None:
    """What a finished payment looks like: an attempt, a captured step, a fallback step."""
    later = AT + timedelta(seconds=2)
    step = p.steps[0]
    step.attempts.append(
        Attempt(
            number=1,
            processor="simulated",
            idempotency_key=f"{p.id}_0_g0",
            started_at=AT,
            ended_at=later,
            latency_ms=2000,
            outcome=Outcome.SUCCESS,
            error_code=ErrorCode.NONE,
            raw=RawError("api_error", "x", "", 200, "req_1", "ok"),
            delay_before_ms=5,
            routing_reason="healthy",
            retry_decision="none",
            processor_payment_id="pi_1",
        )
    )
    p.step_succeeded(step, processor="simulated", latency_ms=2000)  # an event
    p.step_captured(step)
    p.captured(step.amount_minor)  # another event
    step.processor_payment_id = "pi_1"
    step.generation = 1
    p.add_fallback_step(MethodType.CARD, "tok_fb", "cus_2", 1, ["simulated"])
    p.status = PaymentStatus.SUCCEEDED
    p.final_error_message = "done"
    p.orchestration_ms = 2001
    p.next_reconcile_at = later
    p.reconcile_attempts = 2
    p.updated_at = later


def same(a: Payment, b: Payment) -> None:
    assert a.version == b.version
    for name in [
        "id",
        "merchant_id",
        "request_id",
        "fingerprint",
        "currency",
        "amount_minor",
        "capture_mode",
        "allow_partial",
        "config_version",
        "metadata",
        "off_session",
        "status",
        "orchestration_ms",
        "final_error",
        "final_error_message",
        "event_sequence",
        "reconcile_attempts",
        "next_reconcile_at",
        "fallbacks",
        "authorize_only",
        "created_at",
        "updated_at",
    ]:
        assert getattr(a, name) == getattr(b, name), name
    assert len(a.steps) == len(b.steps)
    for x, y in zip(a.steps, b.steps, strict=True):
        for name in [
            "index",
            "method",
            "token",
            "customer_id",
            "amount_minor",
            "processors",
            "status",
            "outcome",
            "error_code",
            "processor",
            "processor_payment_id",
            "next_action_type",
            "client_secret",
            "captured_minor",
            "refunded_minor",
            "generation",
            "refund_holds",
        ]:
            assert getattr(x, name) == getattr(y, name), name
        assert x.attempts == y.attempts


async def load(uow, payment_id: str) -> Payment:
    async with uow() as tx:
        found = await tx.payments.get(payment_id, None)
    assert found is not None
    return found


async def count(uow, table) -> int:
    async with uow.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_a_payment_read_by_request_id_is_the_one_the_repository_reads(uow):
    """The one-statement read of a replay (PaymentRead) against the unit of work's."""
    p = new_payment(1, steps=2)
    await uow.insert_payment(p)
    processing = await uow.payment_by_request("m_1", p.request_id)
    assert processing is not None and all(not s.attempts for s in processing.steps)
    same(processing, await load(uow, p.id))

    settle(p)
    second = p.steps[1]
    for number in (1, 2):  # two attempts on another step, stored out of order
        second.attempts.insert(
            0,
            Attempt(
                number=number,
                processor="stripe",
                idempotency_key=f"{p.id}_1_g{number}",
                started_at=AT,
                ended_at=AT,
                latency_ms=number,
                outcome=Outcome.SOFT,
                error_code=ErrorCode.PROCESSOR_ERROR,
                raw=RawError("api_error", "", "", 503, "", "down"),
            ),
        )
    await uow.update_payment(p)
    stored = await load(uow, p.id)
    read = await uow.payment_by_request("m_1", p.request_id)
    assert read is not None
    same(read, stored)
    assert [len(s.attempts) for s in read.steps] == [1, 2, 0]
    assert [a.number for a in read.steps[1].attempts] == [1, 2]
    assert [s.stored_attempts for s in read.steps] == [s.stored_attempts for s in stored.steps]
    assert read.metadata == {"order": "o-1", "note": "é ✓"} and read.next_reconcile_at.tzinfo
    assert await uow.payment_by_request("m_1", "req-unknown") is None
    assert await uow.payment_by_request("m_2", p.request_id) is None  # another merchant's id


async def test_an_inserted_then_updated_payment_reads_back_field_for_field(uow):
    p = new_payment(1, steps=2)
    await uow.insert_payment(p)
    same(await load(uow, p.id), p)

    settle(p)
    pending = [(e.sequence, e.name, dataclasses.asdict(e)) for e in p.pending_events]
    await uow.update_payment(p)
    assert p.version == 1 and not p.pending_events
    stored = await load(uow, p.id)
    same(stored, p)
    assert len(stored.steps) == 3  # the fallback step was inserted by the update
    assert stored.steps[0].attempts[0].raw == RawError("api_error", "x", "", 200, "req_1", "ok")
    assert stored.created_at.tzinfo is not None and stored.next_reconcile_at == p.next_reconcile_at
    assert p.event_sequence == 2 and await count(uow, events) == 2
    async with uow() as tx:
        outbox = await tx.payments.events_of(p.id)
    assert [(e.sequence, e.name, e.payload) for e in outbox] == pending
    assert {(e.payment_id, e.merchant_id, e.occurred_at) for e in outbox} == {
        (p.id, "m_1", p.updated_at)
    }
    assert len({e.event_id for e in outbox}) == 2


async def test_a_taken_request_id_is_a_duplicate_and_writes_nothing(uow):
    await uow.insert_payment(new_payment(1, request_id="same"))
    with pytest.raises(DuplicateRequest):
        await uow.insert_payment(new_payment(2, request_id="same", steps=2))
    assert await count(uow, payments) == 1
    assert await count(uow, payment_steps) == 1


async def test_a_create_that_loses_its_request_id_leaves_no_event_alone_or_in_a_batch(uow):
    """A payment's first event goes with its PROCESSING row: the create whose request id
    was taken (an idempotent replay, a race) must leave none, or its webhook would tell
    of a payment that does not exist."""
    first = new_payment(1, request_id="same")
    first.started()
    await uow.insert_payment(first)
    twin = new_payment(2, request_id="same")
    twin.started()
    with pytest.raises(DuplicateRequest):
        await uow.insert_payment(twin)  # alone
    batch = [new_payment(n) for n in range(10, 40)]
    batch.append(new_payment(999, request_id="req-17"))  # the same request id as #17
    for p in batch:
        p.started()
    results = await asyncio.gather(*(uow.insert_payment(p) for p in batch), return_exceptions=True)
    assert [type(r).__name__ for r in results if r is not None] == ["DuplicateRequest"]

    async with uow.engine.connect() as conn:
        stored = set((await conn.execute(select(payments.c.id))).scalars())
        outbox = (await conn.execute(select(events.c.payment_id, events.c.name))).all()
    assert len(stored) == 31
    assert sorted(outbox) == sorted((p, "PaymentProcessing") for p in stored)


async def test_a_stale_version_is_a_concurrent_update_and_writes_nothing(uow):
    p = new_payment(1)
    await uow.insert_payment(p)
    stale = await load(uow, p.id)
    settle(p)
    await uow.update_payment(p)

    settle(stale)
    with pytest.raises(ConcurrentUpdate):
        await uow.update_payment(stale)
    assert stale.version == 0 and stale.pending_events  # nothing marked written
    assert await count(uow, attempts) == 1
    same(await load(uow, p.id), p)


async def test_concurrent_writes_all_land_and_a_duplicate_among_them_fails_alone(uow):
    batch = [new_payment(n) for n in range(60)]
    batch.append(new_payment(999, request_id="req-7"))  # the same request id as #7
    results = await asyncio.gather(*(uow.insert_payment(p) for p in batch), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], DuplicateRequest)
    assert await count(uow, payments) == 60
    # #7 or its twin got the request id, whichever committed first.
    stored = [p for p, r in zip(batch, results, strict=True) if r is None]

    for p in stored:
        settle(p)
    await asyncio.gather(*(uow.update_payment(p) for p in stored))
    assert await count(uow, attempts) == 60
    assert {(await load(uow, p.id)).status for p in stored} == {PaymentStatus.SUCCEEDED}
    # 121 writes in far fewer transactions: they were committed together.
    assert uow.writer.writes == 121
    assert uow.writer.batches < 40


async def test_every_committed_batch_has_its_commit_timed(uow):
    batch = [new_payment(n) for n in range(30)]
    await asyncio.gather(*(uow.insert_payment(p) for p in batch))
    for p in batch:
        settle(p)
    await asyncio.gather(*(uow.update_payment(p) for p in batch))
    await uow.insert_payment(new_payment(100))  # alone: a batch of one write
    times = uow.writer.commit_times
    assert uow.writer.writes == 61
    assert sum(times.counts) == uow.writer.batches
    assert times.sum_s > 0


async def test_two_saves_of_one_payment_at_once_one_wins_the_other_is_a_conflict(uow):
    p = new_payment(1)
    await uow.insert_payment(p)
    a, b = await load(uow, p.id), await load(uow, p.id)
    settle(a)
    settle(b)
    results = await asyncio.gather(
        uow.update_payment(a), uow.update_payment(b), return_exceptions=True
    )
    # Which one wins is a race (on PostgreSQL the two may run on two connections).
    assert sorted(type(r).__name__ for r in results) == ["ConcurrentUpdate", "NoneType"]
    assert await count(uow, attempts) == 1
    assert (await load(uow, p.id)).version == 1


async def test_a_write_failing_half_way_is_rolled_back_alone(uow):
    good = new_payment(1)
    bad = new_payment(2)
    write = insert_write(uow.writer._statements, bad)
    # An attempt row for a payment that does not exist: a foreign key violation
    # after the payment row and its step were already written.
    orphan = new_payment(3)
    settle(orphan)
    write.rows.extend(_children(uow.writer._statements, orphan))
    # Both land in one batch: on SQLite the bad one's savepoint is rolled back; on
    # PostgreSQL the batch fails and each write is retried in its own transaction.
    results = await asyncio.gather(
        uow.writer._submit(write), uow.insert_payment(good), return_exceptions=True
    )
    assert isinstance(results[0], Exception) and results[1] is None
    assert await count(uow, payments) == 1
    assert await count(uow, payment_steps) == 1
    assert (await load(uow, good.id)).id == good.id


def _count_batches_at_once(writer) -> list[int]:
    """Wrap the writer's batch method: [batches running now, most at once, batches]."""
    seen = [0, 0, 0]
    inner = writer._write_batch

    def enter() -> None:
        seen[0] += 1
        seen[1] = max(seen[1], seen[0])
        seen[2] += 1

    if asyncio.iscoroutinefunction(inner):

        async def wrapped(batch):
            enter()
            try:
                return await inner(batch)
            finally:
                seen[0] -= 1

    else:  # SQLite: run in the writer thread

        def wrapped(batch):
            enter()
            try:
                return inner(batch)
            finally:
                seen[0] -= 1

    writer._write_batch = wrapped
    return seen


async def test_writes_arriving_during_a_batch_wait_and_go_together_in_the_next(uow):
    if isinstance(uow.writer, AsyncpgPaymentWriter):
        # Not about stalls: a first batch slowed past 0.1 s by a busy machine (it also
        # opens the pool) would let a second batch start beside it.
        uow.writer._stall_s = 60.0
    seen = _count_batches_at_once(uow.writer)
    first = asyncio.ensure_future(uow.insert_payment(new_payment(0)))
    # The others arrive one by one while the first batch is being written.
    later = []
    for n in range(1, 41):
        later.append(asyncio.ensure_future(uow.insert_payment(new_payment(n))))
        await asyncio.sleep(0)
    await asyncio.gather(first, *later)
    assert await count(uow, payments) == 41
    # One batch at a time (none stalls here), and far fewer batches than writes.
    assert seen[1] == 1, seen
    assert seen[2] < 20, seen


async def test_a_batch_stuck_on_a_row_lock_does_not_hold_up_the_writes_behind_it(pg_url):
    engine = create_engine(pg_url)
    await migrate(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    writer = factory.writer
    assert isinstance(writer, AsyncpgPaymentWriter)
    writer._stall_s = 0.05
    locker = await asyncpg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    try:
        stuck = new_payment(1)
        await factory.insert_payment(stuck)
        # Another transaction holds the payment row: its update has to wait.
        tx = locker.transaction()
        await tx.start()
        await locker.execute("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE", stuck.id)
        settle(stuck)
        begun = asyncio.Event()
        inner = writer._write_batch

        async def write_batch(batch):
            begun.set()
            return await inner(batch)

        writer._write_batch = write_batch  # type: ignore[method-assign]
        waiting = asyncio.ensure_future(factory.update_payment(stuck))
        await begun.wait()  # its batch has begun
        # Behind it: new payments, which go in a batch of their own on another connection.
        others = [new_payment(n) for n in range(2, 12)]
        await asyncio.wait_for(
            asyncio.gather(*(factory.insert_payment(p) for p in others)), timeout=10
        )
        assert not waiting.done()
        assert writer.stalls >= 1
        await tx.rollback()
        await asyncio.wait_for(waiting, timeout=10)
        assert (await load(factory, stuck.id)).status is PaymentStatus.SUCCEEDED
        assert await count(factory, payments) == 11
    finally:
        await locker.close()
        await factory.close()
        await engine.dispose()


@pytest.fixture
async def pg_uow(pg_url):
    engine = create_engine(pg_url)
    await migrate(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    assert isinstance(factory.writer, AsyncpgPaymentWriter)
    yield factory
    await factory.close()
    await engine.dispose()


def _spy_batches(writer: AsyncpgPaymentWriter) -> list[int]:
    """Batches written together (not each write alone), by size."""
    sizes: list[int] = []
    inner = writer._apply_batch

    async def spied(conn, groups):
        sizes.append(sum(len(writes) for _, writes, _ in groups))
        return await inner(conn, groups)

    writer._apply_batch = spied  # type: ignore[method-assign]
    return sizes


def _log_queries(writer: AsyncpgPaymentWriter) -> list[str]:
    """The SQL of every call the writer's connections send (one per round trip: asyncpg
    logs an executemany or fetchmany once, a BEGIN or COMMIT each)."""
    sent: list[str] = []
    inner = writer._pool.connection

    def log(query: object) -> None:
        sent.append(query.query)  # type: ignore[attr-defined]

    @contextlib.asynccontextmanager
    async def logged():
        async with inner() as conn:
            conn.add_query_logger(log)
            try:
                yield conn
            finally:
                conn.remove_query_logger(log)

    writer._pool.connection = logged  # type: ignore[method-assign]
    return sent


async def test_a_write_alone_is_one_statement_that_lands_whole_or_not_at_all(pg_uow):
    writer = pg_uow.writer
    sent = _log_queries(writer)
    p = new_payment(1, steps=2)
    await pg_uow.insert_payment(p)
    settle(p)
    await pg_uow.update_payment(p)
    same(await load(pg_uow, p.id), p)
    with pytest.raises(DuplicateRequest):
        await pg_uow.insert_payment(new_payment(2, request_id=p.request_id))

    # A foreign key broken by the write's last row: the statement fails as a whole.
    bad = new_payment(3)
    write = insert_write(writer._statements, bad)
    orphan = new_payment(4)
    settle(orphan)
    write.rows.extend(_children(writer._statements, orphan))
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await writer._submit(write)

    await asyncio.sleep(0)
    assert len(sent) == 4 and all(q.startswith("WITH g AS (") for q in sent), sent
    assert writer.writes == writer.batches == 4
    assert await count(pg_uow, payments) == 1
    assert await count(pg_uow, payment_steps) == 3
    assert await count(pg_uow, attempts) == 1
    assert await count(pg_uow, events) == 2


async def test_a_batch_is_one_round_trip_per_shape_of_write(pg_uow):
    writer = pg_uow.writer
    writer._stall_s = 60.0  # one batch at a time, however slow the machine
    sent = _log_queries(writer)
    first = [new_payment(n) for n in range(8)]
    await asyncio.gather(*(pg_uow.insert_payment(p) for p in first))
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not at once
    # Eight new payments, one shape: one statement for all, no BEGIN or COMMIT.
    assert len(sent) == 1 and sent[0].startswith("WITH g AS (INSERT INTO payments "), sent
    sent.clear()
    for p in first:
        settle(p)
    # Saves and new payments at once, two shapes: a statement each, in one transaction.
    later = [new_payment(n) for n in range(8, 16)]
    writes = [pg_uow.update_payment(p) for p in first] + [pg_uow.insert_payment(p) for p in later]
    await asyncio.gather(*writes)
    await asyncio.sleep(0)
    assert len(sent) == 4, sent
    assert sent[0].startswith("BEGIN") and sent[-1].startswith("COMMIT"), sent
    assert {q.removeprefix("WITH g AS (").split(" ", 1)[0] for q in sent[1:3]} == {
        "UPDATE",
        "INSERT",
    }, sent
    assert writer.writes == 24 and writer.batches == 2
    assert await count(pg_uow, payments) == 16
    assert await count(pg_uow, attempts) == 8
    for p in first:
        same(await load(pg_uow, p.id), p)


async def test_more_writes_at_once_than_go_alone_share_one_transaction(pg_uow):
    writer = pg_uow.writer
    writer._stall_s = 60.0  # one batch at a time, however slow the machine
    transactions = _spy_batches(writer)
    batch = [new_payment(n) for n in range(writer._alone_up_to + 5)]
    await asyncio.gather(*(pg_uow.insert_payment(p) for p in batch))
    # The first write went alone; the ones queued behind it went together.
    assert transactions and max(transactions) > writer._alone_up_to
    assert writer.writes == len(batch) and writer.batches < len(batch)
    assert await count(pg_uow, payments) == len(batch)


async def test_a_write_failing_among_writes_of_its_shape_fails_alone(pg_uow):
    writer = pg_uow.writer
    writer._stall_s = 60.0
    good = [new_payment(n) for n in range(4)]
    bad = new_payment(4)
    write = insert_write(writer._statements, bad)
    # Its rows for a payment that does not exist, of the same shape as its own: a
    # foreign key broken in the same statement as the good writes.
    write.rows[:] = _children(writer._statements, new_payment(5))
    first = asyncio.ensure_future(pg_uow.insert_payment(new_payment(6)))  # alone
    await asyncio.sleep(0)
    results = await asyncio.gather(
        *(pg_uow.insert_payment(p) for p in good[:2]),
        writer._submit(write),
        *(pg_uow.insert_payment(p) for p in good[2:]),
        return_exceptions=True,
    )
    await first
    assert isinstance(results[2], asyncpg.ForeignKeyViolationError), results
    assert [r for n, r in enumerate(results) if n != 2] == [None] * 4
    assert await count(pg_uow, payments) == 5
    assert await count(pg_uow, payment_steps) == 5


async def test_an_in_memory_sqlite_database_writes_and_reads_through_units_of_work():
    """One connection holds an in-memory database: no writer thread, no reader thread;
    the hot-path writes and the replay's read go through the unit of work instead."""
    engine = create_engine("sqlite:///:memory:")
    await migrate(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        assert factory.writer is None
        p = new_payment(1, steps=2)
        await factory.insert_payment(p)
        with pytest.raises(DuplicateRequest):
            await factory.insert_payment(new_payment(2, request_id=p.request_id))
        settle(p)
        await factory.update_payment(p)
        read = await factory.payment_by_request("m_1", p.request_id)
        assert read is not None
        same(read, await load(factory, p.id))
        assert read.status is PaymentStatus.SUCCEEDED and len(read.steps) == 3
        assert await factory.payment_by_request("m_1", "req-unknown") is None
    finally:
        await factory.close()
        await engine.dispose()
