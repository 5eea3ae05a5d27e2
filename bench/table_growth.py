"""What each payment leaves in each table: bytes per payment, tables and indexes.

N single-step payments (the simulated processor, `pm_card_visa`) go through the real
write path (PaymentService.create, as CreatePayment calls it), with one webhook
endpoint subscribed to every event, and the dispatcher delivers every webhook to a
local receiver; then each table's size (its indexes and TOAST included) is read, less
what it held before. Then as many rows as payments are stored the way an applied
Stripe event (inbound_events) and a contract violation are, which no successful
payment writes, for their bytes per row.

    python bench/table_growth.py --database-url sqlite:////tmp/g.db -n 5000
    python bench/table_growth.py --database-url postgresql://postgres@127.0.0.1:5432/test

Sizes: PostgreSQL's pg_total_relation_size after VACUUM; SQLite's dbstat (pages in
use, each index counted to its table). On PostgreSQL a scratch database is created and
dropped after; a SQLite file is emptied first. A measuring aid, not a test
(docs/operations.md, Table growth).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.writes_bench import scratch_database  # noqa: E402
from payorch.adapters.persistence.tables import contract_violations, metadata  # noqa: E402
from payorch.adapters.secret_cipher import new_key_text  # noqa: E402
from payorch.bootstrap import bootstrap  # noqa: E402
from payorch.settings import Settings  # noqa: E402
from tests.integration.helpers import core_request  # noqa: E402
from tests.integration.webhook_receiver import Receiver  # noqa: E402

TABLES = sorted(metadata.tables)


async def sizes(engine) -> dict[str, int]:
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.commit()
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute("VACUUM")
            rows = await conn.execute(
                text(
                    "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname = ANY(:t)"
                ),
                {"t": TABLES},
            )
        else:
            rows = await conn.execute(
                text(
                    "SELECT m.tbl_name, SUM(d.pgsize - d.unused) FROM dbstat d"
                    " JOIN sqlite_master m ON m.name = d.name GROUP BY m.tbl_name"
                )
            )
        return {name: int(size) for name, size in rows}


async def measure(url: str, n: int, concurrency: int) -> None:
    settings = Settings(
        database_url=url,
        # A scratch database: a key of its own (PostgreSQL needs one; docs/security.md).
        secrets_key=os.environ.get("PAYORCH_SECRETS_KEY") or new_key_text(),
        webhooks_allow_http_loopback=True,
    )
    container = await bootstrap(settings)
    receiver = Receiver()
    await receiver.start()
    try:
        app = container.installments
        await app.endpoints.create("m_1", receiver.url, "growth", [])
        before = await sizes(container.engine)
        queue = iter(range(n))

        async def worker() -> None:
            for i in queue:
                await container.payments.create(
                    core_request(f"growth-{i}-{uuid.uuid4().hex[:8]}"), deadline_s=None
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        while (await app.dispatcher.run_once()).as_dict().get("fanned_out", 0) or (
            await pending(container.engine)
        ):
            pass
        after = await sizes(container.engine)
        now = datetime.now(UTC)
        async with container.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO inbound_events (id, source, received_at) VALUES (:i, 'stripe', :t)"
                ),
                [{"i": f"evt_{uuid.uuid4().hex[:24]}", "t": now} for _ in range(n)],
            )
            await conn.execute(
                insert(contract_violations),
                [
                    {
                        "id": uuid.uuid4().hex,
                        "contract_id": "input/amount_positive",
                        "request_id": f"req-{i}",
                        "merchant_id": "m_1",
                        "severity": "error",
                        "owner": "merchant",
                        "message": "amount_minor: must be positive",
                        "occurred_at": now,
                    }
                    for i in range(n)
                ],
            )
        rows_after = await sizes(container.engine)
    finally:
        await receiver.stop()
        await container.close()
    print(f"{url.split(':')[0]}: {n} payments, {len(receiver.requests)} webhooks delivered")
    print(f"{'table':24} {'bytes/payment':>14}")
    for table in TABLES:
        grew = after.get(table, 0) - before.get(table, 0)
        if grew > 0:
            print(f"{table:24} {grew / n:14.0f}")
    total = sum(after.values()) - sum(before.values())
    print(f"{'all tables':24} {total / n:14.0f}")
    for table in ("inbound_events", "contract_violations"):
        grew = rows_after.get(table, 0) - after.get(table, 0)
        print(f"{table:24} {grew / n:14.0f} bytes per row")


async def pending(engine) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
        )
        return int(found.scalar_one())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    if not args.database_url.startswith("postgres"):
        database = make_url(args.database_url).database
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    asyncio.run(run(args.database_url, args.n, args.concurrency))


async def run(url: str, n: int, concurrency: int) -> None:
    async with scratch_database(url, "payorch_growth_bench") as scratch:
        await measure(scratch, n, concurrency)


if __name__ == "__main__":
    main()
