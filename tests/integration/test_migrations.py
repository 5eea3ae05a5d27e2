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


async def test_the_stats_indexes_cover_their_reads_on_postgresql(database_url):
    """GetPaymentStats by processor is answered from two attempts indexes alone on
    PostgreSQL (INCLUDE columns); SQLite keeps the same indexes without them."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                rows = await conn.exec_driver_sql(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'attempts'"
                )
            else:
                rows = await conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'attempts' "
                    "AND type = 'index' AND sql IS NOT NULL"
                )
            definitions = {name: sql for name, sql in rows}
            postgres = conn.dialect.name == "postgresql"
    finally:
        await engine.dispose()
    by_processor = definitions["ix_attempts_processor_started_at"]
    failures = definitions["ix_attempts_error_code_started_at_outcome_payment_id"]
    assert "(processor, started_at)" in by_processor
    assert "(error_code, started_at, outcome, payment_id)" in failures
    if postgres:
        assert by_processor.endswith("INCLUDE (payment_id, outcome, error_code, delay_before_ms)")
        assert failures.endswith("INCLUDE (merchant_id, processor)")
    else:
        assert "INCLUDE" not in by_processor + failures
