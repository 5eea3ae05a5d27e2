"""Bulk webhook redelivery reads a merchant's events in a window by the index on
(merchant_id, occurred_at, id): PostgreSQL's plan for the very statement
`redelivery_candidates` sends, over an outbox of many merchants' events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.tables import events
from payorch.adapters.persistence.webhooks import SqlAlchemyWebhookRepository
from payorch.app.installment_ports import EventPosition
from tests.conftest import cipher_for_tests, scratch_postgres

pytestmark = pytest.mark.postgres

INDEX = "ix_events_merchant_id_occurred_at_id"
MERCHANTS = 200
EVENTS_EACH = 100  # 20,000 events over 100 days
START = datetime(2026, 1, 1, tzinfo=UTC)


def outbox() -> list[dict[str, Any]]:
    return [
        {
            "id": f"evt_{m:03d}_{i:03d}",
            "payment_id": f"pay_{m:03d}_{i // 2:03d}",
            "merchant_id": f"m_{m:03d}",
            "sequence": i % 2,
            "name": "payment.succeeded",
            "payload": {},
            "occurred_at": START + timedelta(days=i, minutes=m),
            "published_at": START + timedelta(days=i, minutes=m, seconds=1),
        }
        for m in range(MERCHANTS)
        for i in range(EVENTS_EACH)
    ]


@pytest.mark.parametrize(
    "after",
    [None, EventPosition(START + timedelta(days=40, minutes=7), "evt_007_040")],
    ids=["first page", "a later page"],
)
async def test_a_redelivery_page_is_read_by_the_merchant_time_index(after):
    """Planned by PostgreSQL's own choice over 20,000 analyzed rows (no planner setting
    changed): one merchant is 0.5% of them. Without the index its plan was a sequential
    scan of every merchant's events and a sort."""
    with scratch_postgres() as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                await conn.execute(events.insert(), outbox())
                await conn.exec_driver_sql("ANALYZE events")
            sent: list[tuple[str, Any]] = []

            def seen(_conn, _cursor, statement, parameters, _context, _many) -> None:
                if "FROM events" in statement and not sent:
                    sent.append((statement, parameters))

            event.listen(engine.sync_engine, "before_cursor_execute", seen)
            async with engine.connect() as conn:
                await SqlAlchemyWebhookRepository(conn, cipher_for_tests()).redelivery_candidates(
                    "we_1",
                    "m_007",
                    names=[],
                    since=START + timedelta(days=30),
                    until=START + timedelta(days=60),
                    dead_only=False,
                    after=after,
                    limit=100,
                )
                statement, parameters = sent[0]
                plan = "\n".join(
                    row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
                )
        finally:
            await engine.dispose()
    assert f"Index Scan using {INDEX} on events" in plan, plan
    assert "Seq Scan on events" not in plan and "Sort" not in plan, plan
    if after is not None:
        # The page starts at `after` in the index, not at the window's start.
        condition = plan.split("Index Cond: ", 1)[1].splitlines()[0]
        assert "ROW(occurred_at, (id)::text) > ROW(" in condition, plan
