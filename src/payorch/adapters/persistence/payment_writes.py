"""The two writes every payment makes, without a per-statement ORM cost.

`CreatePayment` commits twice: the PROCESSING row that gates a request id (before
the processor is called) and the settled payment (after). These are most of a
payment's database work, so they skip SQLAlchemy's per-call statement building:
each statement is compiled once per dialect from the table definitions, its
values bound to what SQLAlchemy's type processors would make of them (binds.py:
the same values, made with fewer Python calls), and sent to the driver directly.

- PostgreSQL: an asyncpg pool of its own; each write is one statement
  (AloneStatements), concurrent writes share one transaction and those of one shape
  one round trip, and a write with few others waiting is a transaction of its own;
  statements prepared once per connection; the request-id gate is
  `ON CONFLICT DO NOTHING` (no savepoint round trips).
- SQLite: one writer thread owns a connection; concurrent writes are committed
  together in one transaction, one fsync per batch (group commit), each in a
  savepoint of its own so one failing write fails alone. The batch holds the
  process's SQLite write lock, so it never races the other units of work.

Durability is unchanged: a write's caller resumes after the COMMIT that holds it.

An idempotent replay reads the stored payment back the same way (PaymentRead): one
SELECT compiled once, on a reader thread (SQLite) or a reader pool (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import operator
import re
import sqlite3
import threading
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy import JSON, Table, and_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from payorch.adapters.persistence.availability import storage_unreachable
from payorch.adapters.persistence.binds import bind_processor
from payorch.adapters.persistence.engine import asyncpg_connect_args, timed_connect_kwargs
from payorch.adapters.persistence.repository import (
    ATTEMPT_COLUMNS,
    CLAIM_COLUMNS,
    EVENT_COLUMNS,
    PAYMENT_COLUMNS,
    STEP_COLUMNS,
    _attempt,
    _attempt_values,
    _event_values,
    _payment,
    _payment_values,
    _step,
    _step_values,
    claim_values,
    claimed_insert,
)
from payorch.adapters.persistence.tables import attempts, events, payment_steps, payments
from payorch.app.ports import ChargeClaim, ConcurrentUpdate, DuplicateRequest
from payorch.domain.payment import Payment

# Columns a stored payment never changes; every other one is written on save.
_PAYMENT_KEYS = ("id", "created_at")
_STEP_KEYS = ("payment_id", "idx")
# The update's values: the payment row, then its WHERE parameters.
_UPDATE_SOURCE = (*PAYMENT_COLUMNS, "k_id", "k_version")
_VERSION = PAYMENT_COLUMNS.index("version")


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL compiled once for a dialect, and how to turn a row's values into its arguments.

    The values come as a list in the order of the statement's `source`: a row of
    repository.py (`_payment_values`, ...), its table's column order, then any WHERE
    parameters. A column is bound as `v_<column>` (prefixed so it cannot clash with a
    WHERE parameter, `k_...`). When the statement takes the values in another order or
    leaves some out (`positions`), they are picked by position; those whose type has a
    bind processor (`processors`: SQLAlchemy's, or binds.py's giving the same values)
    are converted in place. No dict per row: a payment's write is a few hundred
    values, and this is the hot path.
    """

    sql: str
    # Where each parameter is in the values; None when they are in the statement's order.
    positions: tuple[int, ...] | None = None
    processors: tuple[tuple[int, Callable[[Any], Any]], ...] = ()

    @classmethod
    def compile(
        cls,
        stmt: ClauseElement,
        dialect: Dialect,
        source: Sequence[str],
        column_keys: Sequence[str] | None = None,
    ) -> Statement:
        compiled = compiled_once(stmt, dialect, column_keys)
        names = compiled.positiontup or []
        # A parameter missing from the source fails here, at start-up.
        positions = tuple(source.index(name.removeprefix("v_")) for name in names)
        processors = tuple(
            (i, p)
            for i, name in enumerate(names)
            if (p := bind_processor(compiled.binds[name].type, dialect))
        )
        same_order = positions == tuple(range(len(source)))
        return cls(str(compiled), None if same_order else positions, processors)

    def args(self, values: list[Any]) -> list[Any]:
        """The statement's arguments from `values` (in its source's order); may reuse
        the list."""
        if self.positions is not None:
            values = [values[i] for i in self.positions]
        for i, process in self.processors:
            values[i] = process(values[i])
        return values


def compiled_once(
    stmt: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None
) -> SQLCompiler:
    """`stmt` compiled for `dialect`; `column_keys`: the columns a bare INSERT is given,
    as SQLAlchemy compiles it when it runs with rows of those keys."""
    keys = None if column_keys is None else list(column_keys)
    return cast(SQLCompiler, stmt.compile(dialect=dialect, column_keys=keys))


def _named(table: Table, skip: Sequence[str] = ()) -> dict[Any, Any]:
    return {c: bindparam(f"v_{c.name}") for c in table.c if c.name not in skip}


@dataclass(frozen=True, slots=True)
class PaymentStatements:
    insert_payment: Statement
    # An installment's charge: the gate insert, made only while its claim admits it.
    insert_claimed: Statement
    update_payment: Statement
    # New and saved payments' steps alike: one statement, so a batch holding both
    # sends its steps in one round trip.
    upsert_step: Statement
    insert_attempt: Statement
    insert_event: Statement

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> PaymentStatements:
        dml = postgresql if dialect.name == "postgresql" else sqlite
        gate = (
            dml.insert(payments)
            .values(_named(payments))
            .on_conflict_do_nothing(index_elements=["merchant_id", "request_id"])
        )
        update_payment = (
            update(payments)
            .where(payments.c.id == bindparam("k_id"), payments.c.version == bindparam("k_version"))
            .values(_named(payments, _PAYMENT_KEYS))
        )
        # A save may add a step (a fallback): insert it, or update the stored one.
        upsert = dml.insert(payment_steps).values(_named(payment_steps))
        upsert_step = upsert.on_conflict_do_update(
            index_elements=list(_STEP_KEYS),
            set_={
                c.name: getattr(upsert.excluded, c.name)
                for c in payment_steps.c
                if c.name not in _STEP_KEYS
            },
        )
        return cls(
            insert_payment=Statement.compile(gate, dialect, PAYMENT_COLUMNS),
            insert_claimed=Statement.compile(
                claimed_insert(dialect), dialect, (*PAYMENT_COLUMNS, *CLAIM_COLUMNS)
            ),
            update_payment=Statement.compile(update_payment, dialect, _UPDATE_SOURCE),
            upsert_step=Statement.compile(upsert_step, dialect, STEP_COLUMNS),
            insert_attempt=Statement.compile(
                attempts.insert().values(_named(attempts, ("id",))), dialect, ATTEMPT_COLUMNS
            ),
            insert_event=Statement.compile(
                events.insert().values(_named(events)), dialect, EVENT_COLUMNS
            ),
        )


@dataclass(frozen=True, slots=True)
class PaymentRead:
    """A stored payment by its request id: the payment, its steps and their attempts
    in one SELECT (outer joins, one row per attempt). One call into the driver, one
    round trip, one snapshot, where a unit of work makes five (BEGIN, three SELECTs,
    ROLLBACK), each a thread hop on SQLite. An idempotent replay reads the payment it
    returns this way. Compiled once per dialect, like the writes; values are decoded
    with SQLAlchemy's own result processors.
    """

    statement: Statement
    # Per table (payment, step, attempt): its column names and each column's decoder.
    tables: tuple[tuple[tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]], ...]

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> PaymentRead:
        p, s, a = payments.alias("p"), payment_steps.alias("s"), attempts.alias("a")
        joined = p.outerjoin(s, s.c.payment_id == p.c.id).outerjoin(
            a, and_(a.c.payment_id == s.c.payment_id, a.c.step_index == s.c.idx)
        )
        query = (
            select(*p.c, *s.c, *a.c)
            .select_from(joined)
            .where(
                p.c.merchant_id == bindparam("k_merchant_id"),
                p.c.request_id == bindparam("k_request_id"),
            )
            .order_by(s.c.idx, a.c.number)
        )
        tables = tuple(
            (tuple(c.name for c in t.c), tuple(_decoder(c.type, dialect) for c in t.c))
            for t in (payments, payment_steps, attempts)
        )
        statement = Statement.compile(query, dialect, ("k_merchant_id", "k_request_id"))
        return cls(statement, tables)

    def args(self, merchant_id: str, request_id: str) -> list[Any]:
        return self.statement.args([merchant_id, request_id])

    def payment(self, rows: Sequence[Sequence[Any]]) -> Payment | None:
        if not rows:
            return None
        (p_names, p_dec), (s_names, s_dec), (a_names, a_dec) = self.tables
        s_at, a_at = len(p_names), len(p_names) + len(s_names)
        idx_at = s_at + s_names.index("idx")

        def decoded(row: Sequence[Any], start: int, names: tuple[str, ...], dec: Any) -> Any:
            values = row[start : start + len(names)]
            return {
                n: v if d is None or v is None else d(v)
                for n, v, d in zip(names, values, dec, strict=True)
            }

        steps: dict[int, tuple[dict[str, Any], list[Any]]] = {}
        for row in rows:
            if row[s_at] is None:  # a payment without steps: nothing joined
                continue
            step = steps.get(row[idx_at])
            if step is None:
                step = steps[row[idx_at]] = (decoded(row, s_at, s_names, s_dec), [])
            if row[a_at] is not None:
                step[1].append(_attempt(decoded(row, a_at, a_names, a_dec)))
        return _payment(
            decoded(rows[0], 0, p_names, p_dec),
            [_step(step_row, found) for step_row, found in steps.values()],
        )


def _decoder(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    found = type_.dialect_impl(dialect).result_processor(dialect, None)
    if found is None and isinstance(type_, JSON):
        # The payment writer's asyncpg connections have no JSON codec: JSON comes as text.
        return json.loads
    return cast("Callable[[Any], Any] | None", found)


@dataclass(frozen=True, slots=True)
class Write:
    """One payment's write, as argument lists ready for the driver.

    `guard` is the first statement: inserting the gate row (for an installment's
    charge, only while its claim admits it) or the versioned update of the payment
    row; when it touches no row nothing else runs and `conflict` is raised.
    """

    payment_id: str
    guard: tuple[Statement, list[Any]]
    conflict: Exception
    rows: list[tuple[Statement, list[Any]]]
    # The plan whose row a claimed charge's guard locks (FOR SHARE), "" for none.
    locks: str = ""


def insert_write(
    s: PaymentStatements, payment: Payment, only_if: ChargeClaim | None = None
) -> Write:
    if only_if is None:
        guard = (s.insert_payment, s.insert_payment.args(_payment_values(payment)))
    else:
        values = _payment_values(payment) + claim_values(only_if)
        guard = (s.insert_claimed, s.insert_claimed.args(values))
    return Write(
        payment_id=payment.id,
        guard=guard,
        conflict=DuplicateRequest(payment.request_id),
        rows=_children(s, payment),
        locks="" if only_if is None else only_if.plan_id,
    )


def update_write(s: PaymentStatements, payment: Payment) -> Write:
    values = _payment_values(payment)
    values[_VERSION] = payment.version + 1
    values += (payment.id, payment.version)  # k_id, k_version
    return Write(
        payment_id=payment.id,
        guard=(s.update_payment, s.update_payment.args(values)),
        conflict=ConcurrentUpdate(payment.id),
        rows=_children(s, payment),
    )


def _children(s: PaymentStatements, payment: Payment) -> list[tuple[Statement, list[Any]]]:
    """The rows after the guard: every step (upserted), then new attempts, then events."""
    out: list[tuple[Statement, list[Any]]] = [
        (s.upsert_step, s.upsert_step.args(_step_values(payment, step))) for step in payment.steps
    ]
    out.extend(
        (s.insert_attempt, s.insert_attempt.args(_attempt_values(payment, step, a)))
        for step in payment.steps
        for a in step.attempts[step.stored_attempts :]
    )
    out.extend(
        (s.insert_event, s.insert_event.args(_event_values(payment, e, payment.updated_at)))
        for e in payment.pending_events
    )
    return out


def written(payment: Payment, *, updated: bool) -> None:
    """After the commit: what was written is no longer pending."""
    for step in payment.steps:
        step.stored_attempts = len(step.attempts)
    payment.mark_stored()
    payment.pending_events.clear()
    if updated:
        payment.version += 1


class _Queue:
    """Writes waiting for a batch. A batch never holds two writes of one payment: the
    second would race the first inside one transaction, so it waits for the next."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.pending: list[tuple[Write, asyncio.Future[None]]] = []

    def put(self, write: Write) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((write, done))
        return done

    def take(self) -> list[tuple[Write, asyncio.Future[None]]]:
        batch: list[tuple[Write, asyncio.Future[None]]] = []
        later: list[tuple[Write, asyncio.Future[None]]] = []
        ids: set[str] = set()
        for item in self.pending:
            if len(batch) < self.max_batch and item[0].payment_id not in ids:
                ids.add(item[0].payment_id)
                batch.append(item)
            else:
                later.append(item)
        self.pending = later
        return batch


def _settle(
    batch: list[tuple[Write, asyncio.Future[None]]], errors: Sequence[BaseException | None]
) -> None:
    for (_, done), error in zip(batch, errors, strict=True):
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


class CommitTimes:
    """How long the writer's COMMITs took, as histogram buckets (seconds, upper bounds
    inclusive, the last one +Inf). Kept by the writer, one `observe` per batch, and read
    when /metrics is scraped.

    A payment's answer waits for the COMMIT that holds its write, so the tail of these
    times is a floor under the tail of CreatePayment: on SQLite the COMMIT is the WAL's
    fsync (and winning the GIL back after it), on PostgreSQL the round trip that waits
    for the server to flush its WAL (for a write sent alone or a batch of one shape,
    its one round trip).
    """

    BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
    __slots__ = ("bounds", "counts", "sum_s")

    def __init__(self) -> None:
        self.bounds: tuple[float, ...] = self.BOUNDS
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum_s += seconds


class PaymentWriter:
    """Both writers: a payment's write is queued, batched, and marked written after
    the COMMIT that holds it. Counters: `batches` (transactions) and `writes`; the
    COMMITs' durations in `commit_times`."""

    _statements: PaymentStatements
    _read: PaymentRead
    database: str
    batches: int
    writes: int
    commit_times: CommitTimes
    # Batches past a stall threshold (only the PostgreSQL writer has one).
    stalls: int = 0

    async def insert(self, payment: Payment, only_if: ChargeClaim | None = None) -> None:
        await self._submit(insert_write(self._statements, payment, only_if))
        written(payment, updated=False)

    async def update(self, payment: Payment) -> None:
        await self._submit(update_write(self._statements, payment))
        written(payment, updated=True)

    async def get_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        """The payment stored for this request id (see PaymentRead), or None."""
        read = self._read
        return read.payment(
            await self._fetch(read.statement.sql, read.args(merchant_id, request_id))
        )

    async def _submit(self, write: Write) -> None:
        raise NotImplementedError

    async def _fetch(self, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


_PARAM = re.compile(r"\$(\d+)")
# Writes of more shapes than this (steps, attempts, events) build their statement each time.
_SHAPES_KEPT = 256


@dataclass(frozen=True, slots=True)
class _Child:
    """`INSERT INTO t (...) VALUES (...) [ON CONFLICT ...]` taken apart, to be inserted
    from the guard's CTE: `INSERT INTO t (...) SELECT ... FROM g [ON CONFLICT ...]`."""

    head: str
    values: str
    tail: str
    params: int

    @classmethod
    def of(cls, sql: str) -> _Child:
        head, found, rest = sql.partition(" VALUES (")
        if not found:
            raise ValueError(f"not an INSERT ... VALUES: {sql}")
        depth, end = 1, 0
        while depth:
            depth += {"(": 1, ")": -1}.get(rest[end], 0)
            end += 1
        values, tail = rest[: end - 1], rest[end:]
        tail = tail.partition(" RETURNING ")[0]  # nothing reads a child's ids
        return cls(head, values, tail, len(_PARAM.findall(values)))

    def render(self, name: str, offset: int) -> str:
        values = _PARAM.sub(lambda m: f"${int(m[1]) + offset}", self.values)
        return f"{name} AS ({self.head} SELECT {values} FROM g{self.tail})"


# One shape's statement with the writes of a batch that have it and their arguments,
# a row each: AloneStatements.grouped.
ShapeGroup = tuple[str, list[Write], list[list[Any]]]


def _arguments(write: Write) -> list[Any]:
    """A write's arguments for its one statement: the guard's, then each child row's."""
    out = list(write.guard[1])
    for _, args in write.rows:
        out += args
    return out


class AloneStatements:
    """A PostgreSQL write as one statement: the guard as a data-modifying CTE returning
    the id it wrote, every other row inserted from it, so none lands if the guard
    touches nothing:

        WITH g AS (<guard> RETURNING id),
             c1 AS (INSERT INTO payment_steps (...) SELECT $24, ... FROM g ON CONFLICT ...),
             c2 AS (INSERT INTO attempts (...) SELECT $41, ... FROM g), ...
        SELECT id FROM g

    One statement is its own transaction, so it needs no BEGIN or COMMIT: one round trip
    where a transaction of its own takes about six. A batch sends each shape's
    statement once for all its writes (`grouped`). The SQL depends only on which child
    rows the write has (its shape), so it is built once per shape and prepared once per
    connection by asyncpg's statement cache. Foreign keys are checked at the end of the
    statement, after every CTE has run.
    """

    def __init__(self, statements: PaymentStatements) -> None:
        self.guards = {
            s.sql: f"{s.sql} RETURNING id"
            for s in (
                statements.insert_payment,
                statements.insert_claimed,
                statements.update_payment,
            )
        }
        self._children = {
            s.sql: _Child.of(s.sql)
            for s in (statements.upsert_step, statements.insert_attempt, statements.insert_event)
        }
        self._sql: dict[tuple[str, ...], str] = {}

    def statement(self, write: Write) -> list[Any]:
        """[sql, *args], for asyncpg's fetchval."""
        return [self._sql_of(write), *_arguments(write)]

    def grouped(self, batch: Sequence[Write]) -> list[ShapeGroup]:
        """The batch's writes as their statements, those of one shape together, each
        group as (sql, its writes, their arguments): asyncpg's fetchmany sends a group in
        one round trip and runs it as one transaction.

        Groups in first-seen order, except that claimed charges come last, in the order
        of the plan rows their guards lock (id order, as every save of several plans
        locks them: two transactions never wait for each other in a circle); a claimed
        charge joins the group before it only when that is of its shape, so no group
        locks plans out of order.
        """
        out: dict[str, ShapeGroup] = {}
        locking: list[ShapeGroup] = []
        for write in sorted(batch, key=_LOCKS):
            sql = self._sql_of(write)
            if not write.locks:
                group = out.get(sql)
                if group is None:
                    group = out[sql] = (sql, [], [])
            elif locking and locking[-1][0] == sql:
                group = locking[-1]
            else:
                group = (sql, [], [])
                locking.append(group)
            group[1].append(write)
            group[2].append(_arguments(write))
        return [*out.values(), *locking]

    def _sql_of(self, write: Write) -> str:
        guard, guard_args = write.guard
        shape = (guard.sql, *(stmt.sql for stmt, _ in write.rows))
        sql = self._sql.get(shape)
        if sql is None:
            sql = self._build(shape, len(guard_args))
            if len(self._sql) < _SHAPES_KEPT:
                self._sql[shape] = sql
        return sql

    def _build(self, shape: tuple[str, ...], offset: int) -> str:
        ctes = [f"g AS ({self.guards[shape[0]]})"]
        for n, sql in enumerate(shape[1:], 1):
            child = self._children[sql]
            ctes.append(child.render(f"c{n}", offset))
            offset += child.params
        return f"WITH {', '.join(ctes)} SELECT id FROM g"


class AsyncpgPaymentWriter(PaymentWriter):
    """PostgreSQL: concurrent writes share a transaction and its round trips.

    Counters: `batches`, `writes`, and `stalls` (batches that ran past `stall_s`).

    Every write is one statement (AloneStatements: the guard as a CTE returning its id,
    the other rows inserted from it), and the writes of a batch that have one shape go
    together: asyncpg's fetchmany runs the shape's statement for each of them in one
    round trip, the ids that took effect coming back with it. A batch of one shape is
    that one round trip, a transaction of its own; a batch of several (new payments and
    saves, as under load) is BEGIN, a round trip per shape, COMMIT: four round trips
    for the usual two shapes, where a statement per table took seven. Small batches,
    as a slow processor makes them, pay those per batch more often (docs/performance.md,
    "A batch's writes one statement per shape").

    A batch of `alone` writes or fewer (at low rates, most of them) skips the
    transaction: each write is its statement, committing as it runs, one round trip
    each. Up to three, that costs this process less CPU than the transaction
    (docs/performance.md). If a batch fails (a constraint, a lost connection), its
    writes are retried alone, so only the faulty one fails.

    One batch at a time: writes that arrive while a batch is being written wait for it
    and go together in the next one. Batches stay large, so a payment costs fewer round
    trips on both sides (docs/performance.md: 1.5-1.9x the throughput of up to four
    batches at once, and a lower p99 near capacity). A batch still running after
    `stall_s` (a row lock held by another transaction, a slow disk) no longer counts:
    the writes behind it start another batch on another connection, up to `batches` at
    once, so one stuck write never holds up the others.

    Reads by request id (idempotent replays) use a pool of their own, up to `readers`
    connections, so a storm of replays never takes the connection a batch needs.
    """

    database = "postgresql"

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batches: int = 4,
        max_batch: int = 256,
        stall_s: float = 0.1,
        readers: int = 2,
        alone: int = 3,
        timeout_s: float | None = None,
    ) -> None:
        # The engine's URL as asyncpg takes it: its libpq query (sslmode, ...) too.
        self._dsn, connect_kwargs = asyncpg_connect_args(engine.url)
        # Bounded as the engine's connections are (create_engine): no write or read of a
        # payment waits longer on a database that answers nothing, nor for a connection.
        self._connect_kwargs = timed_connect_kwargs(connect_kwargs, timeout_s)
        self._timeout_s = timeout_s
        self._statements = PaymentStatements.for_dialect(engine.dialect)
        self._read = PaymentRead.for_dialect(engine.dialect)
        # Also the guards of a batch, returning the ids they wrote: which writes took
        # effect comes back with them, in the same round trip.
        self._alone = AloneStatements(self._statements)
        self._alone_up_to = alone
        self._batches = max(1, batches)
        self._stall_s = stall_s
        self._queue = _Queue(max_batch)
        self._running = 0
        # Of the running batches, those past stall_s: they no longer hold the others up.
        self._stalled = 0
        self.stalls = 0
        self._pool = _LazyPool(self._dsn, self._batches, self._connect_kwargs, timeout_s)
        self._read_pool = _LazyPool(self._dsn, max(1, readers), self._connect_kwargs, timeout_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.writes = 0
        self.commit_times = CommitTimes()

    async def _fetch(self, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        async with self._read_pool.connection() as conn:
            return cast("Sequence[Sequence[Any]]", await conn.fetch(sql, *args))

    async def _submit(self, write: Write) -> None:
        done = self._queue.put(write)
        self._start_drain()
        # A cancelled caller does not cancel its write: it may record a charge.
        await asyncio.shield(done)

    def _start_drain(self) -> None:
        """Start writing what is queued, unless a batch that is not stalled is running:
        then the queued writes go in its next batch."""
        if self._running > self._stalled or self._running >= self._batches:
            return
        if not self._queue.pending:
            return
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        stalled = False

        def stall() -> None:
            nonlocal stalled
            stalled = True
            self.stalls += 1
            self._stalled += 1
            self._start_drain()

        try:
            while self._queue.pending:
                batch = self._queue.take()
                timer = loop.call_later(self._stall_s, stall)
                try:
                    errors = await self._write_batch([w for w, _ in batch])
                except BaseException as exc:  # no connection at all
                    errors = [exc] * len(batch)
                finally:
                    timer.cancel()
                    if stalled:
                        stalled = False
                        self._stalled -= 1
                _settle(batch, errors)
        finally:
            self._running -= 1

    async def _write_batch(self, batch: list[Write]) -> list[BaseException | None]:
        async with self._pool.connection() as conn:
            if len(batch) > self._alone_up_to:
                groups = self._alone.grouped(batch)
                try:
                    if len(groups) == 1:
                        # One shape: one statement run for every write, in one round
                        # trip and one transaction of its own (fetchmany is atomic).
                        committing = time.perf_counter()
                        applied = await self._apply_batch(conn, groups)
                    else:
                        async with conn.transaction():
                            applied = await self._apply_batch(conn, groups)
                            committing = time.perf_counter()
                except (asyncpg.PostgresError, asyncpg.InterfaceError):
                    if _lost(conn):
                        raise
                else:
                    self.commit_times.observe(time.perf_counter() - committing)
                    self.batches += 1
                    self.writes += len(batch)
                    return [None if w.payment_id in applied else w.conflict for w in batch]
            errors: list[BaseException | None] = []
            for write in batch:
                sent = time.perf_counter()
                try:
                    await self._apply_alone(conn, write)
                except Exception as exc:
                    errors.append(exc)
                else:
                    # The statement's round trip ends with its commit.
                    self.commit_times.observe(time.perf_counter() - sent)
                    errors.append(None)
                self.batches += 1
                self.writes += 1
            return errors

    async def _apply_alone(self, conn: asyncpg.Connection, write: Write) -> None:
        """The write as one statement, which commits as it runs: one round trip."""
        if await conn.fetchval(*self._alone.statement(write)) is None:
            raise write.conflict

    async def _apply_batch(self, conn: asyncpg.Connection, groups: list[ShapeGroup]) -> set[str]:
        """Each group's statement for all its writes (one round trip); the ids of the
        writes whose guard took effect."""
        applied: set[str] = set()
        for sql, _, rows in groups:
            applied.update(r[0] for r in await conn.fetchmany(sql, rows))
        return applied

    async def close(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pool.close()
        await self._read_pool.close()


class _LazyPool:
    """An asyncpg pool opened on first use (by one caller, however many race for it)."""

    def __init__(
        self,
        dsn: str,
        size: int,
        connect_kwargs: dict[str, Any],
        acquire_timeout_s: float | None = None,
    ) -> None:
        self._dsn = dsn
        self._size = size
        self._connect_kwargs = connect_kwargs
        self._acquire_timeout_s = acquire_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def get(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._size,
                        reset=_keep_session,
                        **self._connect_kwargs,
                    )
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = await self.get()
        async with pool.acquire(timeout=self._acquire_timeout_s) as conn:
            try:
                yield conn
            finally:
                if _lost(conn):
                    # The server went away (a restart, a failover, the network): the
                    # idle connections beside this one are as dead. All are replaced,
                    # so one call finds out, not one per pooled connection.
                    await pool.expire_connections()

    async def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            await pool.close()
        except Exception as exc:
            if not storage_unreachable(exc):
                raise
            # PostgreSQL did not answer a connection's goodbye in time (a silent host):
            # asyncpg dropped every connection of the pool instead, which is all a stop
            # needs. The session ends on the server's side when it sees the socket go.


def _lost(conn: asyncpg.Connection) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True  # asyncpg detaches a connection it lost from the pool's proxy


# A write's plan lock, as a sort key: no Python call per write of a batch.
_LOCKS = operator.attrgetter("locks")


def _grouped(
    rows: Iterable[tuple[Statement, list[Any]]],
) -> list[tuple[str, list[list[Any]]]]:
    """Rows by statement, statements in first-seen order (payments before their children)."""
    out: dict[str, list[list[Any]]] = {}
    for stmt, args in rows:
        out.setdefault(stmt.sql, []).append(args)
    return list(out.items())


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to reset on release: these connections only run the statements above."""


class SqliteGroupCommit(PaymentWriter):
    """SQLite: writes queue here; one thread commits whatever has queued as one transaction.

    While a batch is being written and fsynced the next one gathers, so under load many
    payments share one fsync. Each write runs in its own savepoint: a write that fails
    (a conflict, a constraint) is rolled back alone and its caller gets the error.

    Reads by request id (idempotent replays) run on a reader thread with a connection
    of its own: in WAL mode they never wait for a batch's fsync, nor a batch for them.
    """

    database = "sqlite"

    def __init__(self, path: str, lock: asyncio.Lock, dialect: Dialect, *, max_batch: int = 256):
        self._path = path
        self._lock = lock
        self._statements = PaymentStatements.for_dialect(dialect)
        self._read = PaymentRead.for_dialect(dialect)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="payorch-sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="payorch-sqlite-reader")
        self._local = threading.local()
        self._queue = _Queue(max_batch)
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0
        self.writes = 0
        self.commit_times = CommitTimes()

    async def _submit(self, write: Write) -> None:
        done = self._queue.put(write)
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        # A cancelled caller does not cancel its write: it may record a charge.
        await asyncio.shield(done)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue.pending:
                batch = self._queue.take()
                try:
                    async with self._lock:
                        errors = await loop.run_in_executor(
                            self._executor, self._write_batch, [w for w, _ in batch]
                        )
                except BaseException as exc:  # the COMMIT (or the thread) failed: all fail
                    errors = [exc] * len(batch)
                _settle(batch, errors)
        finally:
            self._drainer = None

    async def _fetch(self, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._select, sql, args)

    def _select(self, sql: str, args: list[Any]) -> list[Any]:
        return self._connection().execute(sql, args).fetchall()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _write_batch(self, batch: list[Write]) -> list[BaseException | None]:
        """In the writer thread: one transaction, one COMMIT (one fsync) for the batch.

        First all writes together, each statement once with all its rows: a few calls
        into sqlite3 per batch instead of several per write (each call gives up the GIL
        and has to win it back from the event loop). If a guard did not take effect (a
        duplicate request, a stale version) or a statement failed, that is rolled back
        and the batch is written again one write at a time, each in a savepoint, so only
        the faulty write fails.
        """
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if len(batch) > 1:
                try:
                    together = _apply_together(conn, batch)
                except sqlite3.DatabaseError:
                    together = False
                if together:
                    self._commit(conn)
                    self.batches += 1
                    self.writes += len(batch)
                    return [None] * len(batch)
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
            errors: list[BaseException | None] = []
            for write in batch:
                conn.execute("SAVEPOINT w")
                try:
                    _apply(conn, write)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO w")
                    errors.append(exc)
                else:
                    errors.append(None)
                conn.execute("RELEASE w")
            self._commit(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.batches += 1
        self.writes += len(batch)
        return errors

    def _commit(self, conn: sqlite3.Connection) -> None:
        started = time.perf_counter()
        conn.execute("COMMIT")
        self.commit_times.observe(time.perf_counter() - started)

    async def close(self) -> None:
        while self._drainer is not None:
            await asyncio.shield(self._drainer)
        loop = asyncio.get_running_loop()
        for executor in (self._executor, self._reader):
            await loop.run_in_executor(executor, self._close_connection)
            executor.shutdown(wait=True)

    def _close_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _apply_together(conn: sqlite3.Connection, batch: list[Write]) -> bool:
    """Every write of the batch, statement by statement; False when a guard missed."""
    for sql, rows in _grouped(w.guard for w in batch):
        if conn.executemany(sql, rows).rowcount != len(rows):
            return False
    for sql, rows in _grouped(row for w in batch for row in w.rows):
        conn.executemany(sql, rows)
    return True


def _apply(conn: sqlite3.Connection, write: Write) -> None:
    stmt, args = write.guard
    if conn.execute(stmt.sql, args).rowcount != 1:
        raise write.conflict
    for stmt, args in write.rows:
        conn.execute(stmt.sql, args)
