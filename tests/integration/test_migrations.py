"""The migrations build exactly the schema the code describes, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.tables import metadata


async def test_migrations_match_the_table_definitions(database_url):
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        await migrate(engine)  # applying twice is harmless
        async with engine.connect() as conn:

            def diff(sync_conn):
                return compare_metadata(MigrationContext.configure(sync_conn), metadata)

            changes = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert changes == []
