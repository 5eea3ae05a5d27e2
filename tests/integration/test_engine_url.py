"""A PostgreSQL URL's SQLAlchemy parameters still reach SQLAlchemy's connections now
that they connect through asyncpg_connect_args (libpq's parameters in the DSN):
`prepared_statement_cache_size` (0 for pgbouncer's transaction pooling) and asyncpg's
`command_timeout`, which the engine took before. Neither goes to PostgreSQL as a
server setting, which refused them: "unrecognized configuration parameter"."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from payorch.adapters.persistence.engine import asyncpg_connect_args, create_engine
from tests.conftest import scratch_postgres

pytestmark = pytest.mark.postgres


async def test_sqlalchemy_s_url_parameters_reach_its_connections_not_the_server():
    with scratch_postgres() as plain:
        url = f"{plain}?prepared_statement_cache_size=0&command_timeout=30&application_name=px"
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("SHOW application_name"))).scalar() == "px"
                raw = await conn.get_raw_connection()
                adapted = raw.dbapi_connection
                assert adapted._prepared_statement_cache is None  # size 0: none kept
                assert adapted._connection._config.command_timeout == 30
        finally:
            await engine.dispose()
        # The payment writer's pool takes neither: SQLAlchemy's cache is not its own,
        # and its statements are timed by its stall watch.
        dsn, kwargs = asyncpg_connect_args(engine.url)
        assert "prepared_statement_cache_size" not in dsn and "command_timeout" not in dsn
        assert kwargs == {}


@pytest.mark.parametrize("query", ["command_timeout=soon", "prepared_statement_cache_size=-1"])
def test_a_sqlalchemy_url_parameter_that_is_no_number_is_one_line_naming_it(query):
    from payorch.adapters.persistence.engine import UnsupportedDatabase

    name = query.split("=")[0]
    with pytest.raises(UnsupportedDatabase, match=name):
        create_engine(f"postgresql://payorch@127.0.0.1:1/x?{query}")
