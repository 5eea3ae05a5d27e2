"""Micro-experiments behind the optimizations proposed in docs/performance.md.

They use payorch's own tables (and, for SQLite, its engine settings: WAL,
synchronous=FULL, BEGIN IMMEDIATE) but not its repository, so each one isolates a
single cost. CPU is process time (all threads), so the figures hold up on a busy
machine better than wall-clock throughput does; wall figures are printed too.

    python bench/experiments.py dml          # UPDATE built per call vs prebuilt
    python bench/experiments.py sqlite       # per-statement thread hops vs one hop vs group commit
    python bench/experiments.py pgping       # pool_pre_ping's cost per transaction
    python bench/experiments.py all

A benchmark aid, not a test: nothing here is imported by payorch.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _now() -> datetime:
    return datetime.now(UTC)


def payment_row(pid: str, request_id: str) -> dict[str, Any]:
    now = _now()
    return complete(
        tables().payments,
        {
            "id": pid,
            "merchant_id": "m_bench",
            "request_id": request_id,
            "fingerprint": "f" * 64,
            "currency": "USD",
            "amount_minor": 10000,
            "capture_mode": "automatic",
            "allow_partial": False,
            "config_version": 0,
            "metadata": {},
            "off_session": False,
            "status": "processing",
            "orchestration_ms": 0,
            "final_error": "none",
            "final_error_message": "",
            "version": 0,
            "event_sequence": 0,
            "reconcile_attempts": 0,
            "next_reconcile_at": None,
            "created_at": now,
            "updated_at": now,
        },
    )


def step_row(pid: str) -> dict[str, Any]:
    return complete(
        tables().payment_steps,
        {
            "payment_id": pid,
            "idx": 0,
            "method": "card",
            "token": "pm_card_visa",
            "customer_id": "",
            "amount_minor": 10000,
            "processors": ["simulated"],
            "status": "pending",
            "outcome": None,
            "error_code": "none",
            "processor": "",
            "processor_payment_id": "",
            "next_action_type": "",
            "client_secret": "",
            "captured_minor": 0,
            "refunded_minor": 0,
            "generation": 0,
        },
    )


def attempt_row(pid: str) -> dict[str, Any]:
    now = _now()
    return complete(
        tables().attempts,
        {
            "payment_id": pid,
            "merchant_id": "m_bench",
            "step_index": 0,
            "number": 1,
            "operation": "authorize",
            "processor": "simulated",
            "idempotency_key": f"payorch_{pid}_0_g0",
            "started_at": now,
            "ended_at": now,
            "latency_ms": 0,
            "outcome": "success",
            "error_code": "none",
            "raw_type": "",
            "raw_code": "",
            "raw_decline_code": "",
            "raw_http_status": 0,
            "raw_request_id": "req_sim_1",
            "raw_message": "",
            "delay_before_ms": 0,
            "routing_reason": "first configured processor for card",
            "retry_decision": "",
            "processor_payment_id": "pi_sim_x",
        },
    )


def event_row(pid: str) -> dict[str, Any]:
    return complete(
        tables().events,
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "payment_id": pid,
            "merchant_id": "m_bench",
            "sequence": 1,
            "name": "PaymentCompleted",
            "payload": {"payment_id": pid, "amount_minor": 10000},
            "occurred_at": _now(),
            "published_at": None,
        },
    )


def tables() -> Any:
    from payorch.adapters.persistence import tables as t

    return t


def complete(table: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Columns other branches added since: None when nullable, else a zero value."""
    from sqlalchemy import JSON, Boolean, Integer, String

    for col in table.c:
        if col.name in row or col.autoincrement is True or (col.primary_key and col.name == "id"):
            continue
        if col.nullable:
            row[col.name] = None
        elif isinstance(col.type, Boolean):
            row[col.name] = False
        elif isinstance(col.type, Integer):
            row[col.name] = 0
        elif isinstance(col.type, JSON):
            row[col.name] = {}
        elif isinstance(col.type, String):
            row[col.name] = ""
    return row


class Meter:
    """Wall and CPU (process time, every thread) over a block."""

    def __enter__(self) -> Meter:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0

    def line(self, label: str, n: int) -> str:
        return (
            f"  {label:<58} {n / self.wall:8.0f}/s   wall {1e3 * self.wall / n:7.3f} ms"
            f"   cpu {1e3 * self.cpu / n:7.3f} ms  per payment"
        )


# -- 1. DML built per call vs prebuilt -----------------------------------------------
def experiment_dml(n: int) -> None:
    from sqlalchemy import bindparam, create_engine, update

    t = tables()
    engine = create_engine("sqlite://")
    t.metadata.create_all(engine)
    cols = [c.name for c in t.payments.c if c.name not in ("id", "created_at")]
    with engine.begin() as conn:
        conn.execute(t.payments.insert(), [payment_row("pay_x", "r1")])
    row = payment_row("pay_x", "r1")

    def per_call(conn: Any, version: int) -> None:
        # What SqlAlchemyPaymentRepository.save() does for the payments row.
        values = {k: v for k, v in row.items() if k in cols}
        values["version"] = version + 1
        conn.execute(
            update(t.payments)
            .where(t.payments.c.id == "pay_x", t.payments.c.version == version)
            .values(**values)
        )

    prebuilt = (
        update(t.payments)
        .where(t.payments.c.id == bindparam("k_id"), t.payments.c.version == bindparam("k_v"))
        .values({c: bindparam(c) for c in cols})
    )

    def with_binds(conn: Any, version: int) -> None:
        values = {k: v for k, v in row.items() if k in cols}
        values["version"] = version + 1
        conn.execute(prebuilt, {**values, "k_id": "pay_x", "k_v": version})

    changed = ["status", "version", "updated_at", "orchestration_ms", "event_sequence"]
    narrow = (
        update(t.payments)
        .where(t.payments.c.id == bindparam("k_id"), t.payments.c.version == bindparam("k_v"))
        .values({c: bindparam(c) for c in changed})
    )

    def only_changed(conn: Any, version: int) -> None:
        conn.execute(
            narrow,
            {
                "status": "succeeded",
                "version": version + 1,
                "updated_at": _now(),
                "orchestration_ms": 3,
                "event_sequence": 2,
                "k_id": "pay_x",
                "k_v": version,
            },
        )

    print(f"dml: one UPDATE of the payments row, sync SQLite in memory, {n} times")
    version = 0
    for label, fn in (
        ("update().values(**row) built per call (today)", per_call),
        ("prebuilt update with bindparam(), same columns", with_binds),
        ("prebuilt update of the 5 columns that change", only_changed),
    ):
        with engine.begin() as conn:
            for _ in range(200):  # warm the compiled cache
                fn(conn, version)
                version += 1
            with Meter() as m:
                for _ in range(n):
                    fn(conn, version)
                    version += 1
        print(m.line(label, n).replace("per payment", "per statement"))
    engine.dispose()


# -- 2. SQLite: thread hops ------------------------------------------------------------
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def _sync_engine(path: Path) -> Any:
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _rec: Any) -> None:
        dbapi.isolation_level = None
        cur = dbapi.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(pragma)
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _txn1(conn: Any, t: Any, pid: str, rid: str) -> None:
    with conn.begin_nested():
        conn.execute(t.payments.insert(), [payment_row(pid, rid)])
    conn.execute(t.payment_steps.insert(), [step_row(pid)])


def _txn2(conn: Any, t: Any, pid: str, rid: str) -> None:
    from sqlalchemy import update

    row = payment_row(pid, rid)
    row.update(status="succeeded", version=1)
    conn.execute(
        update(t.payments)
        .where(t.payments.c.id == pid, t.payments.c.version == 0)
        .values(**{k: v for k, v in row.items() if k not in ("id", "created_at")})
    )
    step = step_row(pid)
    step.update(status="captured", outcome="success", processor="simulated")
    conn.execute(
        update(t.payment_steps)
        .where(t.payment_steps.c.payment_id == pid, t.payment_steps.c.idx == 0)
        .values(**{k: v for k, v in step.items() if k not in ("payment_id", "idx")})
    )
    conn.execute(t.attempts.insert(), [attempt_row(pid)])
    conn.execute(t.events.insert(), [event_row(pid)])


async def _async_txn(
    engine: Any, lock: asyncio.Lock, t: Any, which: int, pid: str, rid: str
) -> None:
    from sqlalchemy import update

    async with lock:
        conn = await engine.connect()
        try:
            await conn.begin()
            if which == 1:
                async with conn.begin_nested():
                    await conn.execute(t.payments.insert(), [payment_row(pid, rid)])
                await conn.execute(t.payment_steps.insert(), [step_row(pid)])
            else:
                row = payment_row(pid, rid)
                row.update(status="succeeded", version=1)
                await conn.execute(
                    update(t.payments)
                    .where(t.payments.c.id == pid, t.payments.c.version == 0)
                    .values(**{k: v for k, v in row.items() if k not in ("id", "created_at")})
                )
                step = step_row(pid)
                step.update(status="captured", outcome="success", processor="simulated")
                await conn.execute(
                    update(t.payment_steps)
                    .where(t.payment_steps.c.payment_id == pid, t.payment_steps.c.idx == 0)
                    .values(**{k: v for k, v in step.items() if k not in ("payment_id", "idx")})
                )
                await conn.execute(t.attempts.insert(), [attempt_row(pid)])
                await conn.execute(t.events.insert(), [event_row(pid)])
            await conn.commit()
        finally:
            await conn.rollback()
            await conn.close()


async def _drive(n: int, concurrency: int, pay: Callable[[int], Any]) -> None:
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await pay(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def experiment_sqlite(n: int, concurrency: int) -> None:
    from payorch.adapters.persistence.engine import create_engine, migrate

    t = tables()
    print(
        f"sqlite: {n} payments x 2 transactions (payorch's statements), {concurrency} "
        "concurrent on one event loop, WAL + synchronous=FULL"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # (a) today: SQLAlchemy async + aiosqlite, one thread hop per driver call, under a lock.
        path = Path(tmp) / "a.db"
        engine = create_engine(f"sqlite:///{path}")
        asyncio.run(migrate(engine))
        lock: asyncio.Lock

        async def run_a() -> None:
            nonlocal lock
            lock = asyncio.Lock()

            async def pay(i: int) -> None:
                pid = f"pay_a{i}"
                await _async_txn(engine, lock, t, 1, pid, f"ra{i}")
                await asyncio.sleep(0)  # the processor call
                await _async_txn(engine, lock, t, 2, pid, f"ra{i}")

            await _drive(n // 10, concurrency, pay)  # warm-up
            with Meter() as m:
                await _drive(n, concurrency, pay_offset(pay, n))
            print(m.line("aiosqlite, a hop per statement, global lock (today)", n))
            await engine.dispose()

        asyncio.run(run_a())

        # (b) one hop per transaction: a single writer thread runs the whole transaction.
        path_b = Path(tmp) / "b.db"
        eng = create_engine(f"sqlite:///{path_b}")
        asyncio.run(migrate(eng))
        asyncio.run(eng.dispose())
        sync = _sync_engine(path_b)
        writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

        def txn_in_thread(which: int, pid: str, rid: str) -> None:
            with sync.begin() as conn:
                (_txn1 if which == 1 else _txn2)(conn, t, pid, rid)

        async def run_b() -> None:
            loop = asyncio.get_running_loop()

            async def pay(i: int) -> None:
                pid = f"pay_b{i}"
                await loop.run_in_executor(writer, txn_in_thread, 1, pid, f"rb{i}")
                await asyncio.sleep(0)
                await loop.run_in_executor(writer, txn_in_thread, 2, pid, f"rb{i}")

            await _drive(n // 10, concurrency, pay)
            with Meter() as m:
                await _drive(n, concurrency, pay_offset(pay, n))
            print(m.line("one hop per transaction (writer thread, sync SQLAlchemy)", n))

        asyncio.run(run_b())

        # (c) group commit: the writer thread takes every queued transaction, one COMMIT.
        batcher = GroupCommit(sync, t)

        async def run_c() -> None:
            batcher.start(asyncio.get_running_loop())

            async def pay(i: int) -> None:
                pid = f"pay_c{i}"
                await batcher.submit(1, pid, f"rc{i}")
                await asyncio.sleep(0)
                await batcher.submit(2, pid, f"rc{i}")

            await _drive(n // 10, concurrency, pay)
            batcher.batches = batcher.items = 0
            with Meter() as m:
                await _drive(n, concurrency, pay_offset(pay, n))
            print(
                m.line(
                    f"group commit (avg {batcher.items / max(1, batcher.batches):.1f} txns/COMMIT)",
                    n,
                )
            )
            batcher.stop()

        asyncio.run(run_c())
        writer.shutdown()
        sync.dispose()


def pay_offset(pay: Callable[[int], Any], offset: int) -> Callable[[int], Any]:
    return lambda i: pay(i + offset)


class GroupCommit:
    """One writer thread; each loop takes everything queued and commits it at once
    (a savepoint per item, so one item's conflict does not fail the others)."""

    def __init__(self, engine: Any, t: Any) -> None:
        self.engine = engine
        self.t = t
        self.queue: list[tuple[int, str, str, asyncio.Future[None]]] = []
        self.cond = threading.Condition()
        self.running = False
        self.batches = self.items = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify()
        self.thread.join()

    async def submit(self, which: int, pid: str, rid: str) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()
        with self.cond:
            self.queue.append((which, pid, rid, fut))
            self.cond.notify()
        await fut

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and self.running:
                    self.cond.wait()
                if not self.queue and not self.running:
                    return
                batch, self.queue = self.queue, []
            with self.engine.begin() as conn:
                for which, pid, rid, _ in batch:
                    with conn.begin_nested():
                        (_txn1 if which == 1 else _txn2)(conn, self.t, pid, rid)
            self.batches += 1
            self.items += len(batch)
            for *_, fut in batch:
                self.loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# -- 3. PostgreSQL: pool_pre_ping, savepoint, SQLAlchemy vs asyncpg ----------------------
def experiment_pgping(n: int, admin_url: str) -> None:
    import asyncpg
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.ext.asyncio import create_async_engine

    from payorch.adapters.persistence.engine import migrate, normalize_url

    t = tables()
    name = f"payorch_exp_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = normalize_url(admin_url).set(database=name)
    print(f"pg: {n} sequential transactions of payorch's first kind (insert payment + step)")
    upsert = pg_insert(t.payments).on_conflict_do_nothing(
        index_elements=[t.payments.c.merchant_id, t.payments.c.request_id]
    )

    async def sqlalchemy_variant(ping: bool, savepoint: bool) -> None:
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=ping)
        await migrate(engine)

        async def one(i: int) -> None:
            async with engine.connect() as conn:
                await conn.begin()
                pid = f"pay_{ping}_{savepoint}_{i}"
                if savepoint:
                    async with conn.begin_nested():
                        await conn.execute(t.payments.insert(), [payment_row(pid, pid)])
                else:
                    result = await conn.execute(upsert, payment_row(pid, pid))
                    assert result.rowcount == 1
                await conn.execute(t.payment_steps.insert(), [step_row(pid)])
                await conn.commit()

        for i in range(50):
            await one(-1 - i)
        with Meter() as m:
            for i in range(n):
                await one(i)
        label = f"SQLAlchemy, pool_pre_ping={ping}, " + (
            "SAVEPOINT + INSERT (today)"
            if savepoint and ping
            else "SAVEPOINT + INSERT"
            if savepoint
            else "INSERT .. ON CONFLICT DO NOTHING"
        )
        print(m.line(label, n).replace("per payment", "per transaction"))
        await engine.dispose()

    async def asyncpg_variant() -> None:
        pool = await asyncpg.create_pool(
            url.set(drivername="postgresql").render_as_string(hide_password=False),
            min_size=1,
            max_size=10,
        )
        row = payment_row("x", "x")
        cols = [c for c in row if c != "metadata"]
        pay_sql = (
            f"INSERT INTO payments ({', '.join(cols)}, metadata) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(cols)))}, '{{}}'::json) "
            "ON CONFLICT (merchant_id, request_id) DO NOTHING"
        )
        step = step_row("x")
        scols = [c for c in step if c != "processors"]
        step_sql = (
            f"INSERT INTO payment_steps ({', '.join(scols)}, processors) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(scols)))}, '[\"simulated\"]'::json)"
        )

        async def one(i: int) -> None:
            pid = f"pay_raw_{i}"
            r = payment_row(pid, pid)
            s = step_row(pid)
            async with pool.acquire() as conn, conn.transaction():
                status = await conn.execute(pay_sql, *(r[c] for c in cols))
                assert status.endswith(" 1")
                await conn.execute(step_sql, *(s[c] for c in scols))

        for i in range(50):
            await one(-1 - i)
        with Meter() as m:
            for i in range(n):
                await one(i)
        label = "asyncpg direct, prepared, ON CONFLICT DO NOTHING"
        print(m.line(label, n).replace("per payment", "per transaction"))
        await pool.close()

    try:
        asyncio.run(sqlalchemy_variant(True, True))
        asyncio.run(sqlalchemy_variant(False, True))
        asyncio.run(sqlalchemy_variant(False, False))
        asyncio.run(asyncpg_variant())
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=["dml", "sqlite", "pgping", "all"])
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("PAYORCH_BENCH_POSTGRES_URL")
        or os.environ.get("PAYORCH_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES,
    )
    p.add_argument("--src", help="another source tree (its src/ goes first on sys.path)")
    args = p.parse_args()
    if args.src:
        src = Path(args.src)
        sys.path.insert(0, str(src / "src" if (src / "src").is_dir() else src))
    print(f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f})")
    if args.which in ("dml", "all"):
        experiment_dml(args.n * 5)
    if args.which in ("sqlite", "all"):
        experiment_sqlite(args.n, args.concurrency)
    if args.which in ("pgping", "all"):
        experiment_pgping(args.n // 2, args.postgres_url.replace("+asyncpg", ""))


if __name__ == "__main__":
    main()
