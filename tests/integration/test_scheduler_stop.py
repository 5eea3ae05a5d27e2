"""A `payorch scheduler` told to stop (SIGTERM) in the middle of a backlog stops claiming,
finishes and records the charges it has in flight, and exits: no claim left held for its
lease to run out, no charge without its record, and the rest still due for the next
worker. (`payorch serve` running the scheduler: tests/e2e/test_shutdown.py.)"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.tables import installments
from tests.integration.test_scheduler_processes import (
    CLAIMED,
    log_of,
    scheduler,
    seed,
    wait_for_log,
)

pytestmark = pytest.mark.e2e

PLANS = 40  # two installments due each: 80, at 4 charges of 300 ms at once about 6 s


async def statuses(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(installments.c.status, func.count()).group_by(installments.c.status)
            )
            return {status: int(n) for status, n in rows}
    finally:
        await engine.dispose()


async def prepared(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    await seed(url, PLANS)


@pytest.mark.parametrize("once", [False, True], ids=["running", "--once"])
def test_a_scheduler_stopped_mid_backlog_records_what_it_charged_and_claims_no_more(
    database_url: str, tmp_path: Path, once: bool
) -> None:
    asyncio.run(prepared(database_url))
    charges = tmp_path / "charges.log"
    worker = scheduler(database_url, charges, batch=4, concurrency=4, latency_ms=300, once=once)
    try:
        assert wait_for_log([worker], CLAIMED, timeout=60), log_of(worker)[-3000:]
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, log_of(worker)[-3000:]

    counts = asyncio.run(statuses(database_url))
    assert counts.get("processing", 0) == 0, f"claims left held: {counts}"
    charged = len(charges.read_text().splitlines()) if charges.exists() else 0
    # The first installment of each plan was paid before the worker started.
    assert counts["paid"] - PLANS == charged > 0, counts
    assert counts.get("pending", 0) > 0, f"it went on through the backlog: {counts}"
    assert "Traceback" not in log_of(worker)
