"""The payment writer at a fixed batch size: what a write costs as batches shrink.

With a slow processor the writes reach the writer spread out, so its batches are
smaller than under a 0 ms closed loop (docs/performance.md, "The 200 ms scenario's
CPU per payment"). This runs the writer (`payment_writes.py`, through the unit of
work factory as the server builds it) with batches of exactly `--batch` writes: each
round submits, at once, the inserts of batch/2 new payments and the saves of the
batch/2 inserted the round before (settled as `writes_bench.py` settles them), and
waits for all of them. Every round is one batch of both shapes, as in the server,
whatever the machine's speed, so the figures can be counted in instructions:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.b16.600 \\
        .venv/bin/python bench/batch_writes.py --database-url URL --batch 16 -n 600
    (the same with -n 200; (N600 - N200) / 400 is the figure per payment)

Prints this process's CPU per payment and, on PostgreSQL, the server's (its backends'
CPU from /proc); a scratch PostgreSQL database is made and dropped as in
`writes_bench.py`. A benchmark aid, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from writes_bench import _backend_pids, _proc_cpu_s, emptied_engine, scratch_database

from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from tests.integration.test_payment_writes import new_payment, settle


async def run(url: str, n: int, batch: int) -> None:
    engine = await emptied_engine(url)
    uow = SqlAlchemyUnitOfWorkFactory(engine)
    writer = uow.writer
    assert writer is not None
    if hasattr(writer, "_stall_s"):
        writer._stall_s = 3600.0  # one batch at a time however slow (callgrind)
    half = batch // 2
    payments = [new_payment(i) for i in range(n + half)]

    async def rounds(start: int, end: int) -> None:
        for first in range(start, end, half):
            fresh = payments[first : first + half]
            earlier = payments[first - half : first] if first >= half else []
            for p in earlier:
                settle(p)
            await asyncio.gather(
                *(uow.insert_payment(p) for p in fresh),
                *(uow.update_payment(p) for p in earlier),
            )

    warm = max(half, (n // 10) // half * half)
    await rounds(0, warm)  # connections, prepared statements, caches
    pg = engine.dialect.name == "postgresql"
    pids = await _backend_pids(engine) if pg else []
    pg0 = sum(_proc_cpu_s(p) for p in pids)
    batches0, writes0 = writer.batches, writer.writes
    c0, t0 = time.process_time(), time.perf_counter()
    await rounds(warm, n + half)
    c1, t1 = time.process_time(), time.perf_counter()
    done = n + half - warm
    line = (
        f"{engine.dialect.name}, batches of {batch}: {done} payments, {done / (t1 - t0):.0f}/s,"
        f" CPU {1e3 * (c1 - c0) / done:.3f} ms/payment,"
        f" {(writer.writes - writes0) / max(1, writer.batches - batches0):.1f} writes per commit"
    )
    if pg:
        pids = sorted(set(pids) | set(await _backend_pids(engine)))
        line += f", PostgreSQL {1e3 * (sum(_proc_cpu_s(p) for p in pids) - pg0) / done:.3f} ms"
    print(line)
    await uow.close()
    await engine.dispose()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("-n", type=int, default=2000, help="payments (each two writes)")
    p.add_argument("--batch", type=int, default=16, help="writes per batch (even)")
    args = p.parse_args()
    if args.batch < 2 or args.batch % 2:
        raise SystemExit("--batch: an even number, 2 or more")
    async with scratch_database(args.database_url, "payorch_batch_writes") as url:
        await run(url, args.n, args.batch)


if __name__ == "__main__":
    asyncio.run(main())
