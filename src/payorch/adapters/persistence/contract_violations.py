"""Contract violations and merchant complaints in the database.

Writes are buffered: `record` appends to a bounded in-memory buffer and never
waits; a background task (`run`, started by `payorch serve`) writes batches, and
`flush` writes what is left on shutdown. A full buffer or a failed write drops
violations and counts them; it never slows or fails the request that saw them.
While the database cannot be reached, what is buffered is kept and written once it
is back (the buffer's bound still holds): an outage's violations are the ones a
retrospective needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.persistence.availability import storage_unreachable
from payorch.adapters.persistence.tables import contract_violations, merchant_complaints
from payorch.app.contract_reports import (
    ContractCount,
    MerchantComplaint,
    ViolationCursor,
    ViolationFilter,
)
from payorch.domain.contracts import ContractViolation
from payorch.domain.request import Severity

log = logging.getLogger("payorch.contracts")

DEFAULT_CAPACITY = 10_000
BATCH = 500
# How long `run` waits before trying again a write the database was not there for.
RETRY_S = 5.0


def _row(v: ContractViolation) -> dict[str, object]:
    return {
        "id": v.id,
        "contract_id": v.contract_id,
        "request_id": v.request_id,
        "merchant_id": v.merchant_id,
        "severity": v.severity.value,
        "owner": v.owner,
        "message": v.message,
        "occurred_at": v.occurred_at,
    }


class BufferedViolationWriter:
    """The ViolationSink port: bounded, non-blocking, written in the background."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        capacity: int = DEFAULT_CAPACITY,
        on_dropped: Callable[[int], None] = lambda n: None,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._capacity = capacity
        self._buffer: collections.deque[ContractViolation] = collections.deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._on_dropped = on_dropped
        self._on_error = on_error
        self.dropped = 0
        self.written = 0
        # INSERT ... ON CONFLICT (id) DO NOTHING: a batch written twice is stored once.
        dml = postgresql if engine is not None and engine.dialect.name == "postgresql" else sqlite
        self._insert = dml.insert(contract_violations).on_conflict_do_nothing(index_elements=["id"])

    def __len__(self) -> int:
        return len(self._buffer)

    def record(self, violation: ContractViolation) -> bool:
        if len(self._buffer) >= self._capacity:
            self.dropped += 1
            return False
        self._buffer.append(violation)
        self._wake.set()
        return True

    async def flush(self) -> int:
        """Write everything buffered now; a failed batch is dropped and counted, unless
        the database could not be reached: then it stays buffered, with the rest."""
        written = 0
        async with self._lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                try:
                    async with self._engine.begin() as conn:
                        await conn.execute(self._insert, [_row(v) for v in batch])
                except asyncio.CancelledError:
                    # Stopped mid-write: the batch goes back for the final flush. The
                    # COMMIT may have finished all the same (aiosqlite commits in its
                    # thread), so writing it again skips the ids already stored.
                    self._buffer.extendleft(reversed(batch))
                    raise
                except Exception as exc:
                    if storage_unreachable(exc):
                        self._buffer.extendleft(reversed(batch))
                        log.warning(
                            "the database cannot be reached: %d contract violations kept"
                            " to write again (%s)",
                            len(self._buffer),
                            type(exc).__name__,
                        )
                        break
                    log.warning("could not store %d contract violations", len(batch), exc_info=True)
                    self.dropped += len(batch)
                    with contextlib.suppress(Exception):
                        self._on_error()
                        self._on_dropped(len(batch))
                    continue
                written += len(batch)
        self.written += written
        return written

    async def run(self, retry_s: float = RETRY_S) -> None:
        """Write as violations arrive, in batches, until cancelled; what the database
        was not there for is tried again every `retry_s`, or with the next arrival."""
        while True:
            if self._buffer:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), retry_s)
            else:
                await self._wake.wait()
            self._wake.clear()
            await self.flush()


def _violation(r: object) -> ContractViolation:
    m = r._mapping  # type: ignore[attr-defined]
    return ContractViolation(
        id=m["id"],
        contract_id=m["contract_id"],
        request_id=m["request_id"],
        merchant_id=m["merchant_id"],
        severity=Severity(m["severity"]),
        owner=m["owner"],
        message=m["message"],
        occurred_at=m["occurred_at"],
    )


class SqlAlchemyViolationStore:
    """The read side of violations, and merchant complaints."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list(
        self, f: ViolationFilter, *, limit: int, after: ViolationCursor | None
    ) -> Sequence[ContractViolation]:
        t = contract_violations
        query = select(t).order_by(t.c.occurred_at.desc(), t.c.id.desc()).limit(limit)
        if f.contract_id:
            query = query.where(t.c.contract_id == f.contract_id)
        if f.severity is not None:
            query = query.where(t.c.severity == f.severity.value)
        if f.merchant_id:
            query = query.where(t.c.merchant_id == f.merchant_id)
        if f.since is not None:
            query = query.where(t.c.occurred_at >= f.since)
        if f.until is not None:
            query = query.where(t.c.occurred_at < f.until)
        if after is not None:
            query = query.where(
                or_(
                    t.c.occurred_at < after.occurred_at,
                    and_(t.c.occurred_at == after.occurred_at, t.c.id < after.violation_id),
                )
            )
        async with self._engine.connect() as conn:
            return [_violation(r) for r in await conn.execute(query)]

    async def counts(
        self, since: datetime, until: datetime, merchant_id: str | None = None
    ) -> Sequence[ContractCount]:
        t = contract_violations
        query = (
            select(t.c.contract_id, t.c.severity, func.count())
            .where(t.c.occurred_at >= since, t.c.occurred_at < until)
            .group_by(t.c.contract_id, t.c.severity)
            .order_by(t.c.contract_id, t.c.severity)
        )
        if merchant_id:
            query = query.where(t.c.merchant_id == merchant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ContractCount(c, Severity(s), int(n)) for c, s, n in rows]

    async def add_complaint(self, complaint: MerchantComplaint) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(merchant_complaints).values(
                    id=complaint.id,
                    merchant_id=complaint.merchant_id,
                    contract_id=complaint.contract_id,
                    category=complaint.category,
                    counted_as=complaint.counted_as,
                    text=complaint.text,
                    occurred_at=complaint.occurred_at,
                    reported_at=complaint.reported_at,
                )
            )

    async def complaint_counts(self, since: datetime, until: datetime) -> dict[str, int]:
        t = merchant_complaints
        query = (
            select(t.c.counted_as, func.count())
            .where(t.c.reported_at >= since, t.c.reported_at < until)
            .group_by(t.c.counted_as)
        )
        async with self._engine.connect() as conn:
            return {c: int(n) for c, n in (await conn.execute(query)).all()}
