"""`payorch prune`: what may be deleted without losing what payorch promises.

Only webhook deliveries that are over: delivered, or dead-lettered, for longer than the
retention. Payments, steps, attempts, refunds and events are the record of money and
are never deleted; a pending delivery is still owed to its receiver. The outbox event a
delivery was made from stays (its `published_at` keeps it from being fanned out again),
so a receiver's copy can still be told from the event; where delivered ones were pruned
up to is kept (`webhook_retention`), so a bulk redelivery does not take their events for
never given (WebhookEndpoints.redeliver_missed). Deleted in batches, each its own
short transaction, so neither PostgreSQL nor SQLite holds a lock for long
(docs/operations.md, Retention).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payorch.adapters.persistence.tables import webhook_deliveries, webhook_retention
from payorch.domain.webhook_delivery import DeliveryStatus

# The least retention `payorch prune` takes: a dead delivery stays on the dead-letter
# list (to be redelivered once its receiver is fixed) for at least a week after it was
# made, and a delivered one can be looked up for a week of support questions. Its
# eight attempts span some 42 hours, so none is older than this while still tried.
MIN_RETENTION_DAYS = 7
BATCH = 1000

_d = webhook_deliveries
_DELIVERED, _DEAD = DeliveryStatus.DELIVERED.value, DeliveryStatus.DEAD.value


def _over(before: datetime) -> ColumnElement[bool]:
    """Deliveries done with before `before`: delivered then, or dead-lettered and made
    then (a dead delivery keeps no time of its death; it died within some 42 hours of
    being made, or of a redelivery, which `delivered_at` does not record either)."""
    return or_(
        and_(_d.c.status == _DELIVERED, _d.c.delivered_at < before),
        and_(_d.c.status == _DEAD, _d.c.created_at < before),
    )


async def prune_webhook_deliveries(
    engine: AsyncEngine, *, before: datetime, dry_run: bool = False, batch: int = BATCH
) -> int:
    """Delete the deliveries over before `before`, `batch` at a time; how many (with
    `dry_run`, how many would be, and nothing is deleted)."""
    if dry_run:
        async with engine.connect() as conn:
            counted = await conn.scalar(select(func.count()).select_from(_d).where(_over(before)))
            return int(counted or 0)
    async with engine.begin() as conn:
        # Kept before any is deleted: a prune that dies half-way leaves it said.
        await record_delivered_pruned(conn, before)
    deleted = 0
    while True:
        async with engine.begin() as conn:
            ids = (await conn.scalars(select(_d.c.id).where(_over(before)).limit(batch))).all()
            if not ids:
                return deleted
            # Still over when deleted: a redelivery made meanwhile made it pending again.
            done = await conn.execute(delete(_d).where(_d.c.id.in_(ids), _over(before)))
        deleted += done.rowcount


async def record_delivered_pruned(conn: AsyncConnection, before: datetime) -> None:
    """Keep `before` as where delivered deliveries were pruned up to, when one is over
    and it is later than the horizon kept (it only moves on)."""
    r = webhook_retention
    over = select(_d.c.id).where(_d.c.status == _DELIVERED, _d.c.delivered_at < before)
    if await conn.scalar(over.limit(1)) is None:
        return
    # One statement, an upsert on both databases: two prunes at once on an empty table
    # cannot both insert the row. On PostgreSQL the second waits for the first's
    # uncommitted row, then moves it on (or not); SQLite runs one writer at a time.
    dml = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dml.insert(r).values(id=1, delivered_pruned_before=before)
    await conn.execute(
        upsert.on_conflict_do_update(
            index_elements=[r.c.id],
            set_={"delivered_pruned_before": upsert.excluded.delivered_pruned_before},
            where=or_(
                r.c.delivered_pruned_before.is_(None),
                r.c.delivered_pruned_before < upsert.excluded.delivered_pruned_before,
            ),
        )
    )
