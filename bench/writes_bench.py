"""A payment's two writes, alone: the unit of work path against payment_writes.py.

Each payment is inserted (the PROCESSING gate), then settled (an attempt, a captured
step, a fallback step, two events) and saved: what `CreatePayment` writes, with no
gRPC, processor or app code around it. K payments at a time, N in all, per mode:

    orm        the SQLAlchemy unit of work (repository add/save + commit), i.e. how
               payments were written before payment_writes.py; on SQLite under the
               process-wide write lock
    single     payment_writes.py with batches of one write (no group commit)
    batched    payment_writes.py as shipped: concurrent writes share a transaction

    python bench/writes_bench.py --database-url sqlite:////tmp/w.db
    python bench/writes_bench.py --database-url postgresql://postgres@127.0.0.1:5432/test

On PostgreSQL a scratch database `payorch_writes_bench_<random>` is created on that
server and dropped after; a SQLite file is emptied first.

Prints payments/s, this process's CPU per payment (the event loop plus, on SQLite, the
writer thread), transactions per payment, and for PostgreSQL the server's CPU per
payment (its backends' CPU from pg_stat_activity pids and /proc, on a local server).
A benchmark aid, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from payorch.adapters.persistence import payment_writes  # noqa: E402
from payorch.adapters.persistence.engine import create_engine, migrate  # noqa: E402
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory  # noqa: E402
from tests.integration.test_payment_writes import new_payment, settle  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def _backend_pids(engine) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        return [r[0] for r in rows]


async def emptied_engine(url: str):
    """The database at `url` migrated, and on SQLite (a file reused between runs) with
    no payments left from an earlier run."""
    engine = create_engine(url)
    await migrate(engine)
    if engine.dialect.name == "sqlite":
        async with engine.begin() as conn:
            for table in ("events", "attempts", "payment_steps", "payments"):
                await conn.exec_driver_sql(f"DELETE FROM {table}")
    return engine


async def run_mode(url: str, mode: str, n: int, concurrency: int, offset: int) -> dict:
    engine = await emptied_engine(url)
    uow = SqlAlchemyUnitOfWorkFactory(engine)
    writer = uow.writer
    if mode == "orm":
        uow.writer = None
    elif mode == "single":
        writer._queue.max_batch = 1  # type: ignore[union-attr]
    thread_cpu = [0.0]
    if isinstance(writer, payment_writes.SqliteGroupCommit):
        inner = writer._write_batch

        def timed(batch):
            t = time.thread_time()
            try:
                return inner(batch)
            finally:
                thread_cpu[0] += time.thread_time() - t

        writer._write_batch = timed  # type: ignore[method-assign]
    payments = [new_payment(offset + i) for i in range(n)]
    limit = asyncio.Semaphore(concurrency)

    async def one(p) -> None:
        async with limit:
            await uow.insert_payment(p)
            settle(p)
            await uow.update_payment(p)

    # Warm up: connections, prepared statements.
    await asyncio.gather(*(one(p) for p in payments[: min(200, n // 10)]))
    rest = payments[min(200, n // 10) :]
    pg = engine.dialect.name == "postgresql"
    pids = await _backend_pids(engine) if pg else []
    pg0 = sum(_proc_cpu_s(p) for p in pids)
    thread_cpu[0] = 0.0
    batches0 = _batches(writer)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(p) for p in rest))
    c1, t1 = time.process_time(), time.perf_counter()
    # Backends opened during the run count from their start (they were not there before).
    pids = sorted(set(pids) | set(await _backend_pids(engine))) if pg else []
    pg1 = sum(_proc_cpu_s(p) for p in pids)
    out = {
        "mode": mode,
        "payments": len(rest),
        "rps": round(len(rest) / (t1 - t0), 1),
        "cpu_ms_per_payment": round(1e3 * (c1 - c0) / len(rest), 3),
        "writer_thread_ms_per_payment": round(1e3 * thread_cpu[0] / len(rest), 3),
        "transactions_per_payment": (
            round((_batches(writer) - batches0) / len(rest), 3) if mode != "orm" else 2.0
        ),
    }
    if pg:
        out["postgres_cpu_ms_per_payment"] = round(1e3 * (pg1 - pg0) / len(rest), 3)
    await uow.close()
    if mode == "orm" and writer is not None:
        await writer.close()
    await engine.dispose()
    return out


def _batches(writer) -> int:
    if writer is None:
        return 0
    return writer.batches


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("-n", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--modes", default="orm,single,batched")
    args = p.parse_args()
    async with scratch_database(args.database_url, "payorch_writes_bench") as url:
        print(f"{url.split(':')[0]}, {args.n} payments, {args.concurrency} at a time")
        for i, mode in enumerate(args.modes.split(",")):
            await _one_mode(url, mode, args, i)


@contextlib.asynccontextmanager
async def scratch_database(url: str, prefix: str) -> AsyncIterator[str]:
    """A PostgreSQL URL's server with a new database `<prefix>_<random>` on it, dropped
    after; a SQLite URL as it is."""
    if not url.startswith("postgres"):
        yield url
        return
    admin = make_url(url).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    scratch = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await _admin(dsn, f'CREATE DATABASE "{scratch}"')
    try:
        yield admin.set(database=scratch).render_as_string(hide_password=False)
    finally:
        await _admin(dsn, f'DROP DATABASE "{scratch}" WITH (FORCE)')


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _one_mode(url: str, mode: str, args: argparse.Namespace, i: int) -> None:
    r = await run_mode(url, mode, args.n, args.concurrency, i * args.n)
    extra = (
        f", PostgreSQL {r['postgres_cpu_ms_per_payment']:.3f} ms"
        if "postgres_cpu_ms_per_payment" in r
        else ""
    )
    print(
        f"  {mode:8} {r['rps']:8.1f}/s  CPU {r['cpu_ms_per_payment']:.3f} ms/payment"
        f" (writer thread {r['writer_thread_ms_per_payment']:.3f}){extra},"
        f" {r['transactions_per_payment']} transactions/payment"
    )


if __name__ == "__main__":
    asyncio.run(main())
