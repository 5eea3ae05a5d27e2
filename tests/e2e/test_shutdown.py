"""`payorch serve` stopped (SIGTERM) while its background jobs hold work: what they
claimed is finished and recorded within the grace period, not cut off mid-charge."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.server import RunningServer, start_server
from tests.integration.test_scheduler_processes import CLOCK_OFFSET
from tests.integration.test_scheduler_stop import PLANS, prepared, statuses

pytestmark = pytest.mark.e2e

CLAIMED_ALL = re.compile(rf"claimed {2 * PLANS} installments")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'payorch.db'}"
    from tests.conftest import _truncate

    url = str(request.getfixturevalue("postgres_database"))
    asyncio.run(_truncate(url))
    return url


def stopped_while_charging(database: str, tmp_path: Path, grace_s: float) -> RunningServer:
    """A server whose scheduler claimed every due installment, stopped (SIGTERM) while
    its charges are in flight; returned once it exited 0."""
    asyncio.run(prepared(database))
    server = start_server(
        tmp_path,
        database,
        env={
            "PAYORCH_SCHEDULER": "1",
            "PAYORCH_SCHEDULER_BATCH_SIZE": str(2 * PLANS),
            "PAYORCH_SCHEDULER_CONCURRENCY": str(4 * PLANS),
            "PAYORCH_CLOCK_OFFSET": CLOCK_OFFSET,
            # Each plan's two installments are charged one after the other: the pass
            # claims them all at once, finds nothing more due and waits for its charges.
            "PAYORCH_SIMULATE": "latency_ms=1500",
            "PAYORCH_SIM_CHARGE_LOG": str(tmp_path / "charges.log"),
            "PAYORCH_GRACE_PERIOD_S": str(grace_s),
        },
    )
    try:
        deadline = time.monotonic() + 60
        while not CLAIMED_ALL.search(server.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert CLAIMED_ALL.search(server.log()), server.log()[-3000:]
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
    finally:
        server.stop()
    assert "Traceback" not in server.log()
    return server


def test_serve_stopped_while_the_scheduler_charges_records_every_charge_it_made(
    database: str, tmp_path: Path
) -> None:
    stopped_while_charging(database, tmp_path, grace_s=10)

    counts = asyncio.run(statuses(database))
    assert counts.get("processing", 0) == 0, f"claims left held: {counts}"
    charges = tmp_path / "charges.log"
    charged = len(charges.read_text().splitlines()) if charges.exists() else 0
    assert counts["paid"] - PLANS == charged == 2 * PLANS, counts


def test_charges_that_outlast_the_grace_period_are_cut_off_and_said_so(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'payorch.db'}"
    server = stopped_while_charging(database, tmp_path, grace_s=0.2)

    assert "the grace period ended with claimed work in flight" in server.log()
    # Left for the next scheduler (when the lease runs out) and the reconciler.
    assert asyncio.run(statuses(database)).get("processing", 0) > 0
