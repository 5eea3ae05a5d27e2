"""The unit of work: one transaction; leaving without commit() rolls back."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payorch.adapters.persistence.payment_writes import (
    AsyncpgPaymentWriter,
    PaymentWriter,
    SqliteGroupCommit,
)
from payorch.adapters.persistence.processor_customers import SqlAlchemyProcessorCustomers
from payorch.adapters.persistence.repository import (
    SqlAlchemyInboundEventLog,
    SqlAlchemyPaymentRepository,
)
from payorch.app.ports import ChargeClaim
from payorch.domain.payment import Payment


class SqlAlchemyUnitOfWork:
    payments: SqlAlchemyPaymentRepository
    inbound_events: SqlAlchemyInboundEventLog
    customers: SqlAlchemyProcessorCustomers

    def __init__(self, engine: AsyncEngine, write_lock: asyncio.Lock | None) -> None:
        self._engine = engine
        self._lock = write_lock
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> SqlAlchemyUnitOfWork:
        if self._lock is not None:
            await self._lock.acquire()
        try:
            self._conn = await self._engine.connect()
            await self._conn.begin()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self.payments = SqlAlchemyPaymentRepository(self._conn)
        self.inbound_events = SqlAlchemyInboundEventLog(self._conn)
        self.customers = SqlAlchemyProcessorCustomers(self._conn)
        return self

    @property
    def connection(self) -> AsyncConnection:
        assert self._conn is not None, "outside the unit of work"
        return self._conn

    async def commit(self) -> None:
        await self.connection.commit()

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._conn is not None:
                await self._conn.rollback()
                await self._conn.close()
        finally:
            self._conn = None
            if self._lock is not None:
                self._lock.release()


class SqlAlchemyUnitOfWorkFactory:
    """SQLite has one writer: its transactions queue on a lock instead of failing busy.

    A payment's two hot writes (insert, then save after the processor answered) go
    through a PaymentWriter (payment_writes.py): compiled once, sent to the driver
    directly, group-committed on SQLite. Everything else is a unit of work.
    """

    def __init__(
        self, engine: AsyncEngine, *, pool_size: int = 10, timeout_s: float | None = None
    ) -> None:
        """`timeout_s`: the payment writer's bound, as the engine's (create_engine)."""
        self.engine = engine
        self._lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self.writer = _writer_for(engine, self._lock, pool_size, timeout_s)

    def __call__(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine, self._lock)

    async def insert_payment(self, payment: Payment, *, only_if: ChargeClaim | None = None) -> None:
        if self.writer is None:
            async with self() as uow:
                await uow.payments.add(payment, only_if=only_if)
                await uow.commit()
        else:
            await self.writer.insert(payment, only_if)

    async def update_payment(self, payment: Payment) -> None:
        if self.writer is None:
            async with self() as uow:
                await uow.payments.save(payment)
                await uow.commit()
        else:
            await self.writer.update(payment)

    async def payment_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        if self.writer is None:
            async with self() as uow:
                return await uow.payments.get_by_request(merchant_id, request_id)
        return await self.writer.get_by_request(merchant_id, request_id)

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()


def _writer_for(
    engine: AsyncEngine, lock: asyncio.Lock | None, pool_size: int, timeout_s: float | None
) -> PaymentWriter | None:
    if engine.dialect.name == "postgresql":
        return AsyncpgPaymentWriter(engine, batches=min(pool_size, 4), timeout_s=timeout_s)
    database = engine.url.database
    if lock is not None and database and database != ":memory:":
        return SqliteGroupCommit(database, lock, engine.dialect)
    return None  # an in-memory SQLite database lives in one connection only
