"""The buffered contract-violation writer against a real database, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncTransaction

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.contract_violations import BufferedViolationWriter
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.tables import contract_violations
from payorch.domain.contracts import ContractViolation, new_violation


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
