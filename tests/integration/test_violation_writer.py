"""The buffered contract-violation writer against a real database, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncTransaction

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.contract_violations import BufferedViolationWriter
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.tables import contract_violations
from payorch.domain.contracts import ContractViolation, new_violation
from tests.tcp_proxy import TcpProxy


def _violation(i: int) -> ContractViolation:
    return new_violation(
        f"cv_{i}", "input/amount", message="m", request_id="r", merchant_id="m_1",
        at=ManualClock().now(),
    )  # fmt: skip


async def test_a_batch_committed_as_the_writer_was_cancelled_is_kept_by_the_final_flush(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shutdown cancels the writer while its COMMIT runs: the await is cancelled, yet
    # the COMMIT finishes (aiosqlite's thread, the server). The batch goes back to the
    # buffer, and the final flush writes it again: it must not fail on the ids stored.
    engine = create_engine(database_url)
    await migrate(engine)
    writer = BufferedViolationWriter(engine)
    committed_then_cancelled = AsyncTransaction.__aexit__

    async def commit_then_cancel(self: AsyncTransaction, *exc: Any) -> None:
        await committed_then_cancelled(self, *exc)
        monkeypatch.undo()
        raise asyncio.CancelledError

    try:
        for i in range(3):
            writer.record(_violation(i))
        monkeypatch.setattr(AsyncTransaction, "__aexit__", commit_then_cancel)
        with pytest.raises(asyncio.CancelledError):
            await writer.flush()
        assert len(writer) == 3  # back in the buffer
        writer.record(_violation(3))
        assert await writer.flush() == 4
        async with engine.connect() as conn:
            stored = await conn.scalar(select(func.count()).select_from(contract_violations))
    finally:
        await engine.dispose()
    assert writer.dropped == 0 and stored == 4


@pytest.mark.postgres
async def test_violations_seen_while_the_database_is_away_are_written_once_it_is_back(
    postgres_database: str,
) -> None:
    database = make_url(postgres_database)
    proxy = TcpProxy((database.host or "127.0.0.1", database.port or 5432)).start()
    engine = create_engine(database.set(port=proxy.port).render_as_string(hide_password=False))
    await migrate(engine)
    writer = BufferedViolationWriter(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(contract_violations))
        proxy.cut()
        for i in range(3):
            writer.record(_violation(100 + i))

        assert await writer.flush() == 0
        assert (len(writer), writer.dropped) == (3, 0)  # kept, not dropped

        proxy.restore()
        writer.record(_violation(103))
        written = 0
        for _ in range(3):  # a pooled connection the outage killed fails one try
            written += await writer.flush()
            if not len(writer):
                break
        async with engine.connect() as conn:
            stored = await conn.scalar(select(func.count()).select_from(contract_violations))
    finally:
        proxy.cut()
        await engine.dispose()
    assert (written, stored, writer.dropped) == (4, 4, 0)
