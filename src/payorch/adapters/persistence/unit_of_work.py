"""The unit of work: one transaction; leaving without commit() rolls back."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payorch.adapters.persistence.repository import (
    SqlAlchemyInboundEventLog,
    SqlAlchemyPaymentRepository,
)


class SqlAlchemyUnitOfWork:
    payments: SqlAlchemyPaymentRepository
    inbound_events: SqlAlchemyInboundEventLog

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
    """SQLite has one writer: its transactions queue on a lock instead of failing busy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    def __call__(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine, self._lock)
