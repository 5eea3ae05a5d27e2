"""Count what one CreatePayment costs the database: statements, transactions and driver
round trips (each `await_` of SQLAlchemy's async adaption is one hop to the aiosqlite
thread or one asyncpg network round trip), plus wall time per phase.

Runs the real gRPC server in-process (bootstrap + create_server, as `serve` does)
and calls it with a real client, sequentially, so the counts are per payment:

    python bench/trace_payment.py --database-url sqlite:////tmp/t.db [--body split] [-n 50]
    python bench/trace_payment.py --database-url postgresql://postgres@127.0.0.1:5432/DB

It prints the statements of the last payment in order. A benchmark aid, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--body", choices=["single", "split"], default="single")
    p.add_argument("-n", type=int, default=50, help="payments to average over")
    args = p.parse_args()

    import grpc
    from loadgen import PATH, Requests
    from sqlalchemy import event
    from sqlalchemy.util import concurrency

    from payorch.adapters.secret_cipher import new_key_text
    from payorch.app.auth import Scope
    from payorch.bootstrap import bootstrap
    from payorch.entrypoints.grpc.server import create_server
    from payorch.settings import Settings

    settings = Settings(
        database_url=args.database_url,
        listen="127.0.0.1:0",
        auth_cache_s=5.0,
        # No endpoint is made here: any key will do (PostgreSQL needs one).
        secrets_key=os.environ.get("PAYORCH_SECRETS_KEY") or new_key_text(),
    )
    container = await bootstrap(settings)
    key = await container.api_keys.create(
        merchant_id="m_bench",
        scope=Scope.MERCHANT,
        label="trace",
        now=container.clock.now(),
    )
    server, port, _health = create_server(container, "127.0.0.1:0")
    await server.start()

    statements: list[str] = []
    awaits = Counter[str]()
    engine = container.engine.sync_engine

    @event.listens_for(engine, "before_cursor_execute")
    def _stmt(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        statements.append(" ".join(sql.split())[:110])

    @event.listens_for(engine, "commit")
    def _commit(_conn: Any) -> None:
        statements.append("<commit>")

    original = concurrency.await_

    def counting_await(awaitable: Any) -> Any:
        awaits[type(awaitable).__qualname__] += 1
        return original(awaitable)

    # Every module that imported await_ by name gets the counting one.
    patched = []
    for name, module in list(sys.modules.items()):
        if name.startswith("sqlalchemy") and getattr(module, "await_", None) is original:
            module.await_ = counting_await  # type: ignore[attr-defined]
            patched.append(module)

    requests = Requests(args.body, f"trace{time.time_ns() % 10**6}", 0)
    metadata = (("authorization", f"Bearer {key.plaintext}"),)
    per_stmt: list[int] = []
    per_await: list[int] = []
    per_commit: list[int] = []
    wall: list[float] = []
    last: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(PATH, request_serializer=None, response_deserializer=None)
        for _ in range(3):  # warm caches: auth, compiled statements, pool
            await call(requests.next(), metadata=metadata)
        for _ in range(args.n):
            statements.clear()
            awaits.clear()
            t0 = time.perf_counter()
            await call(requests.next(), metadata=metadata)
            wall.append((time.perf_counter() - t0) * 1000)
            per_stmt.append(sum(1 for s in statements if s != "<commit>"))
            per_commit.append(statements.count("<commit>"))
            per_await.append(sum(awaits.values()))
            last = list(statements)
    for module in patched:
        module.await_ = original  # type: ignore[attr-defined]
    await server.stop(None)
    await container.close()

    print(f"{args.body} payment on {engine.dialect.name}, {args.n} sequential calls:")
    print(f"  statements per payment:      {statistics.mean(per_stmt):.1f}")
    print(f"  commits per payment:         {statistics.mean(per_commit):.1f}")
    print(f"  driver round trips per call: {statistics.mean(per_await):.1f}")
    print(
        f"  wall ms per call: p50 {statistics.median(wall):.2f}, mean {statistics.mean(wall):.2f}"
    )
    print("  statements of the last payment:")
    for s in last:
        print(f"    {s}")


if __name__ == "__main__":
    asyncio.run(main())
