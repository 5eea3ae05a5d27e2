"""`payorch prune`: webhook deliveries over (delivered, dead) for longer than the
retention are deleted, in batches; pending ones, recent ones, and the payments and
events they came from are kept. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.installment_uow import SqlAlchemyInstallmentUnitOfWorkFactory
from payorch.adapters.persistence.retention import (
    prune_webhook_deliveries,
    record_delivered_pruned,
)
from payorch.adapters.persistence.tables import (
    events,
    payments,
    webhook_deliveries,
    webhook_retention,
)
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.bootstrap import Container
from payorch.domain.webhook_delivery import DeliveryStatus, WebhookEndpoint
from payorch.entrypoints.cli import main
from payorch.webhooks import generate_secret
from tests.conftest import _truncate, cipher_for_tests
from tests.integration.helpers import core_request
from tests.integration.installment_helpers import installments_container
from tests.integration.test_claimed_charge_insert import waiting_on_a_lock

DAY = timedelta(days=1)


async def add_endpoint(uow_factory, now: datetime) -> None:
    async with uow_factory() as uow:
        await uow.webhooks.add_endpoint(
            WebhookEndpoint(
                id="we_1",
                merchant_id="m_1",
                url="https://receiver.example.com/hook",
                secret=generate_secret(),
                description="",
                event_types=(),
                created_at=now,
                updated_at=now,
            )
        )
        await uow.commit()


def delivery(id_: str, status: DeliveryStatus, made: datetime, delivered: datetime | None):
    return {
        "id": id_,
        "endpoint_id": "we_1",
        "merchant_id": "m_1",
        "event_id": f"ev_{id_}",
        "event_type": "payment.completed",
        "body": "{}",
        "status": status.value,
        "attempts": 1 if status is DeliveryStatus.DELIVERED else 8,
        "next_attempt_at": made if status is DeliveryStatus.PENDING else None,
        "last_status_code": 204 if status is DeliveryStatus.DELIVERED else 500,
        "last_error": "",
        "claimed_by": "",
        "lease_until": None,
        "version": 1,
        "created_at": made,
        "delivered_at": delivered,
    }


def seed_rows(now: datetime) -> list[dict]:
    old, recent = now - 40 * DAY, now - 2 * DAY
    rows = [
        delivery(f"whd_old_delivered_{i}", DeliveryStatus.DELIVERED, old, old) for i in range(5)
    ]
    rows += [
        delivery("whd_old_dead", DeliveryStatus.DEAD, old, None),
        # Made long ago, delivered lately (a redelivery): kept.
        delivery("whd_redelivered", DeliveryStatus.DELIVERED, old, recent),
        delivery("whd_recent_delivered", DeliveryStatus.DELIVERED, recent, recent),
        delivery("whd_recent_dead", DeliveryStatus.DEAD, recent, None),
        # Still owed to its receiver, however old: kept.
        delivery("whd_old_pending", DeliveryStatus.PENDING, old, None),
    ]
    return rows


async def seed_file(url: str, now: datetime) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
        uow = SqlAlchemyInstallmentUnitOfWorkFactory(
            SqlAlchemyUnitOfWorkFactory(engine), cipher_for_tests()
        )
        await add_endpoint(uow, now)
        async with engine.begin() as conn:
            await conn.execute(webhook_deliveries.insert(), seed_rows(now))
    finally:
        await engine.dispose()


async def left(engine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.scalars(select(webhook_deliveries.c.id))).all())


async def test_prune_deletes_only_deliveries_over_before_the_retention_in_batches(
    container: Container, clock: ManualClock
):
    now = clock.now()
    await container.payments.create(core_request("r-prune"), deadline_s=None)
    await add_endpoint(container.installments.uow, now)
    async with container.engine.begin() as conn:
        await conn.execute(webhook_deliveries.insert(), seed_rows(now))
    every = await left(container.engine)

    before = now - 30 * DAY
    would = await prune_webhook_deliveries(container.engine, before=before, dry_run=True)
    assert (would, await left(container.engine)) == (6, every)

    deleted = await prune_webhook_deliveries(container.engine, before=before, batch=4)
    assert deleted == 6
    assert await left(container.engine) == {
        "whd_redelivered",
        "whd_recent_delivered",
        "whd_recent_dead",
        "whd_old_pending",
    }
    async with container.engine.connect() as conn:
        kept = (
            await conn.scalar(select(func.count()).select_from(payments)),
            await conn.scalar(select(func.count()).select_from(events)),
        )
    assert kept[0] == 1 and kept[1] >= 2  # the money's record is never pruned
    assert await prune_webhook_deliveries(container.engine, before=before) == 0


async def test_prune_keeps_where_it_pruned_delivered_deliveries_up_to_and_only_then(
    container: Container, clock: ManualClock
):
    """Dead deliveries pruned were never received: their events are still to be
    redelivered, so they set no horizon; a delivered one does, and it only moves on."""
    now = clock.now()
    await add_endpoint(container.installments.uow, now)
    old = now - 40 * DAY
    async with container.engine.begin() as conn:
        await conn.execute(
            webhook_deliveries.insert(),
            [
                delivery("whd_dead", DeliveryStatus.DEAD, old, None),
                delivery("whd_delivered", DeliveryStatus.DELIVERED, old + 5 * DAY, old + 5 * DAY),
            ],
        )

    async def horizon():
        async with container.installments.uow() as uow:
            return await uow.webhooks.delivered_pruned_before()

    assert await prune_webhook_deliveries(container.engine, before=old - DAY) == 0
    assert await prune_webhook_deliveries(container.engine, before=old + DAY) == 1
    assert await horizon() is None  # only a dead one went
    assert await prune_webhook_deliveries(container.engine, before=now - 30 * DAY) == 1
    assert await horizon() == now - 30 * DAY


@pytest.mark.parametrize("days", ["0", "6", "-1"])
def test_prune_refuses_a_retention_below_a_week_with_exit_2(days, capsys, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert main(["prune", "--database-url", url, f"--older-than-days={days}"]) == 2
    assert capsys.readouterr().err.startswith("payorch prune: --older-than-days must be at least 7")
    assert not (tmp_path / "p.db").exists()  # refused before the database is opened


def test_prune_on_the_command_line_counts_then_deletes(capsys, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    now = datetime.now(UTC)

    async def remaining() -> int:
        engine = create_engine(url)
        try:
            return len(await left(engine))
        finally:
            await engine.dispose()

    asyncio.run(seed_file(url, now))
    assert main(["prune", "--database-url", url, "--older-than-days", "30", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would delete 6 webhook deliveries")
    assert asyncio.run(remaining()) == 10
    assert main(["prune", "--database-url", url, "--older-than-days", "30"]) == 0
    assert capsys.readouterr().out.startswith("deleted 6 webhook deliveries")
    assert asyncio.run(remaining()) == 4


def test_prune_counts_days_on_the_clock_the_service_stamps_with(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # PAYORCH_CLOCK_OFFSET shifts the clock serve and the scheduler stamp deliveries
    # with; prune counts its days on that clock too, not the system's.
    monkeypatch.setenv("PAYORCH_CLOCK_OFFSET", "30d")
    url = f"sqlite:///{tmp_path / 'p.db'}"
    now = datetime.now(UTC) + 30 * DAY

    asyncio.run(seed_file(url, now))
    assert main(["prune", "--database-url", url, "--older-than-days", "30", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would delete 6 webhook deliveries")


async def delivered_long_ago(container: Container, now: datetime) -> None:
    await add_endpoint(container.installments.uow, now)
    old = now - 40 * DAY
    async with container.engine.begin() as conn:
        await conn.execute(
            webhook_deliveries.insert(), [delivery("whd_old", DeliveryStatus.DELIVERED, old, old)]
        )


async def retention_rows(container: Container) -> list[tuple[int, datetime | None]]:
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            select(webhook_retention.c.id, webhook_retention.c.delivered_pruned_before)
        )
        return [tuple(r) for r in rows]


async def test_the_horizon_is_kept_in_one_row_whichever_prune_comes_first(
    container: Container, clock: ManualClock
):
    """On an empty table the first prune makes the row and later ones move it on (an
    upsert: on PostgreSQL two at once cannot both insert it, below)."""
    now = clock.now()
    await delivered_long_ago(container, now)
    for before in (now - 30 * DAY, now - 35 * DAY, now - 20 * DAY):
        async with container.engine.begin() as conn:
            await record_delivered_pruned(conn, before)
    assert await retention_rows(container) == [(1, now - 20 * DAY)]  # only ever moves on


@pytest.mark.postgres
@pytest.mark.parametrize("second_later", [True, False])
async def test_two_prunes_at_once_on_an_empty_table_both_keep_the_horizon(
    postgres_database: str, clock: ManualClock, second_later: bool
):
    """Two `payorch prune` runs at once, the table still empty: the second's insert waits
    for the first's uncommitted row, then moves it on (or leaves it), never refused."""
    await _truncate(postgres_database)
    container = await installments_container(postgres_database, clock)
    watcher = await asyncpg.connect(
        container.engine.url.set(drivername="postgresql").render_as_string(False)
    )
    try:
        now = clock.now()
        await delivered_long_ago(container, now)
        first, second = now - 30 * DAY, now - (20 if second_later else 35) * DAY
        async with container.engine.connect() as holding:
            async with holding.begin():
                await record_delivered_pruned(holding, first)  # the row, not committed

                async def other_prune() -> None:
                    async with container.engine.begin() as conn:
                        await record_delivered_pruned(conn, second)

                behind = asyncio.ensure_future(other_prune())
                await waiting_on_a_lock(watcher)
                assert not behind.done()
            await behind  # the first committed: the second goes on, no duplicate key
        assert await retention_rows(container) == [(1, max(first, second))]
    finally:
        await watcher.close()
        await container.close()
