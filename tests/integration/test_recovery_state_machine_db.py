"""The recovery state machine on real storage: SQLite, and PostgreSQL when configured."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.tables import metadata
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from tests.recovery_machine import RecoveryMachine

DB_SETTINGS = settings(max_examples=12, stateful_step_count=15, deadline=None)


async def _sqlite_store():
    folder = tempfile.TemporaryDirectory()
    engine = create_engine(f"sqlite:///{Path(folder.name) / 'machine.db'}")
    await migrate(engine)

    uow = SqlAlchemyUnitOfWorkFactory(engine)

    async def cleanup() -> None:
        await uow.close()
        await engine.dispose()
        folder.cleanup()

    return uow, cleanup


class SqliteRecovery(RecoveryMachine):
    store_factory = staticmethod(_sqlite_store)


TestRecoveryOnSqlite = SqliteRecovery.TestCase
TestRecoveryOnSqlite.settings = DB_SETTINGS


@pytest.fixture(scope="module")
def postgres_url(postgres_database: str) -> str:
    return postgres_database


async def _postgres_store():
    engine = create_engine(PostgresRecovery.url)
    await migrate(engine)
    async with engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        await conn.exec_driver_sql(f"TRUNCATE {names} CASCADE")

    uow = SqlAlchemyUnitOfWorkFactory(engine)

    async def cleanup() -> None:
        await uow.close()
        await engine.dispose()

    return uow, cleanup


class PostgresRecovery(RecoveryMachine):
    url = ""
    store_factory = staticmethod(_postgres_store)


@pytest.mark.postgres
def test_recovery_state_machine_on_postgres(postgres_url: str) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    PostgresRecovery.url = postgres_url
    run_state_machine_as_test(PostgresRecovery, settings=DB_SETTINGS)
