"""Which merchant each processor customer belongs to (table `processor_customers`)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from payorch.adapters.persistence.sql import one_of
from payorch.adapters.persistence.tables import processor_customers

_TABLE = processor_customers


class SqlAlchemyProcessorCustomers:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(
        self, merchant_id: str, customer_ids: Collection[str], now: datetime
    ) -> dict[str, str]:
        """A customer seen before costs one read. A new one is inserted, unless another
        transaction did first: `ON CONFLICT DO NOTHING` waits for that transaction on
        PostgreSQL (and SQLite has one writer), and the read after it, a statement of
        its own under READ COMMITTED, sees whichever insert won."""
        owners = await self._owners(customer_ids)
        new = sorted(set(customer_ids) - owners.keys())  # one order: no deadlock
        if new:
            dml = postgresql if self._conn.dialect.name == "postgresql" else sqlite
            await self._conn.execute(
                dml.insert(_TABLE).on_conflict_do_nothing(index_elements=["customer_id"]),
                [{"customer_id": c, "merchant_id": merchant_id, "first_used_at": now} for c in new],
            )
            owners.update(await self._owners(new))
        return owners

    async def _owners(self, customer_ids: Collection[str]) -> dict[str, str]:
        rows = await self._conn.execute(
            select(_TABLE.c.customer_id, _TABLE.c.merchant_id).where(
                one_of(self._conn.dialect, _TABLE.c.customer_id, customer_ids)
            )
        )
        return {c: m for c, m in rows}
