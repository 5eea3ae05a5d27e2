"""A payment whose reconciling raises is backed off through the real repositories on
SQLite and PostgreSQL while the pass settles the others (tests/unit/
test_reconciler_pass_errors.py, in memory), and the container tells the service which
errors mean the database is unreachable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from payorch.adapters.persistence.availability import storage_unreachable
from payorch.domain.payment import PaymentStatus
from tests.fakes.dying import ServerDied
from tests.integration.helpers import core_request, make_container


async def test_a_payment_whose_work_raises_is_backed_off_and_the_others_settle(database_url, clock):
    container = await make_container(database_url, clock)
    try:
        assert container.payments._storage_unreachable is storage_unreachable
        sim = container.simulated["simulated"]
        real_authorize = sim.authorize

        async def dies(request):
            raise ServerDied("the server died")

        sim.authorize = dies
        for n in range(3):  # left PROCESSING by a dying server, the first the oldest
            with pytest.raises(ServerDied):
                await container.payments.create(core_request(f"r-{n}"), deadline_s=None)
            clock.advance(1)
        sim.authorize = real_authorize
        listed = await container.payments.list("m_1", page_size=10, after=None)
        ids = [p.id for p in sorted(listed, key=lambda p: p.created_at)]
        poison = ids[0]
        router = container.payments._router
        real_reconcile = router.reconcile

        async def reconcile(payment, step, **kwargs):
            if payment.id == poison:
                raise ValueError("a bug in the plan's code")
            return await real_reconcile(payment, step, **kwargs)

        router.reconcile = reconcile
        clock.advance(300)

        stats = await container.payments.reconcile_pass()

        assert (stats.settled, stats.errors) == (2, 1)
        for payment_id in ids[1:]:
            settled = await container.payments.get(payment_id, None)
            assert settled.status is PaymentStatus.FAILED  # never charged: looked up
        kept = await container.payments.get(poison, None)
        assert kept.status is PaymentStatus.PROCESSING
        assert kept.next_reconcile_at == clock.now() + timedelta(minutes=5)
    finally:
        await container.close()


CORRUPTIONS = {
    # A step's status no version of the code writes.
    "unknown step status": ("UPDATE payment_steps SET status = :v WHERE payment_id = :id", "bogus"),
    # Valid JSON (PostgreSQL's json type takes nothing else) of the wrong shape.
    "metadata of the wrong shape": ("UPDATE payments SET metadata = :v WHERE id = :id", "[1, 2]"),
    # A payment's capture mode no version of the code writes.
    "unknown capture mode": ("UPDATE payments SET capture_mode = :v WHERE id = :id", "sometimes"),
}


async def left_processing(container, clock, count: int) -> list[str]:
    """`count` payments a dying server left PROCESSING, oldest first, due for the pass."""
    sim = container.simulated["simulated"]
    real_authorize = sim.authorize

    async def dies(request):
        raise ServerDied("the server died")

    sim.authorize = dies
    for n in range(count):
        with pytest.raises(ServerDied):
            await container.payments.create(core_request(f"r-{n}"), deadline_s=None)
        clock.advance(1)
    sim.authorize = real_authorize
    listed = await container.payments.list("m_1", page_size=10, after=None)
    clock.advance(300)
    return [p.id for p in sorted(listed, key=lambda p: p.created_at)]


async def raw_payment(container, payment_id: str) -> dict:
    async with container.engine.connect() as conn:
        # As stored: no type reads its JSON.
        row = await conn.execute(text("SELECT * FROM payments WHERE id = :id"), {"id": payment_id})
        return dict(row.mappings().one())


@pytest.mark.parametrize("corruption", CORRUPTIONS)
async def test_a_payment_row_that_cannot_be_read_is_skipped_and_the_others_settle(
    corruption, database_url, clock, caplog
):
    statement, value = CORRUPTIONS[corruption]
    await skipped_and_the_others_settle(database_url, clock, caplog, statement, value)


async def test_a_payment_whose_json_is_broken_is_skipped_and_the_others_settle(
    tmp_path, clock, caplog
):
    """SQLite only: PostgreSQL's json type refuses text that is not JSON."""
    await skipped_and_the_others_settle(
        f"sqlite:///{tmp_path / 'payorch.db'}",
        clock,
        caplog,
        "UPDATE payments SET metadata = :v WHERE id = :id",
        "{broken",
    )


async def skipped_and_the_others_settle(database_url, clock, caplog, statement, value) -> None:
    container = await make_container(database_url, clock)
    try:
        ids = await left_processing(container, clock, 3)
        poison = ids[1]
        async with container.engine.begin() as conn:
            await conn.execute(text(statement), {"v": value, "id": poison})
        before = await raw_payment(container, poison)
        counted = REGISTRY.get_sample_value("payorch_reconciler_errors_total") or 0.0

        stats = await container.payments.reconcile_pass()

        assert (stats.settled, stats.errors) == (2, 1)
        for payment_id in (ids[0], ids[2]):
            settled = await container.payments.get(payment_id, None)
            assert settled.status is PaymentStatus.FAILED  # never charged: looked up
        assert await raw_payment(container, poison) == before, "left as it is"
        assert REGISTRY.get_sample_value("payorch_reconciler_errors_total") == counted + 1
        (logged,) = [r for r in caplog.records if "cannot be read" in r.getMessage()]
        assert logged.levelname == "ERROR" and poison in logged.getMessage()
        # What could not be read, clipped, without card numbers; no traceback.
        assert logged.exc_info is None and "Error" in logged.getMessage()

        # Named again by the next pass, until repaired; nothing else is listed.
        assert (await container.payments.reconcile_pass()).errors == 1
    finally:
        await container.close()
