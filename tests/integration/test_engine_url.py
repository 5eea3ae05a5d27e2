"""A PostgreSQL URL's forms the engine took before it connected through
asyncpg_connect_args (libpq's parameters in the DSN) still work: SQLAlchemy's
`prepared_statement_cache_size` (0 for pgbouncer's transaction pooling) and asyncpg's
`command_timeout`, which PostgreSQL refused as server settings ("unrecognized
configuration parameter"), and several hosts, of which the DSN kept the last."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from payorch.adapters.persistence.engine import (
    asyncpg_connect_args,
    create_engine,
    timed_connect_kwargs,
)
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


async def test_a_url_naming_several_hosts_tries_each_on_every_connection():
    """SQLAlchemy's form of a multi-host URL, `?host=A:5432&host=B:5432`: a connection
    goes to the first host that answers. The DSN kept only the last host."""
    import asyncpg
    from sqlalchemy.engine import URL, make_url

    with scratch_postgres() as plain:
        url = make_url(plain)
        live = f"{url.host}:{url.port or 5432}"
        several = URL.create(
            url.drivername,
            url.username,
            url.password,
            database=url.database,
            query={"host": (live, "127.0.0.1:1")},
        )
        engine = create_engine(several.render_as_string(hide_password=False))
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await engine.dispose()
        # The payment writer's connections too.
        dsn, kwargs = asyncpg_connect_args(engine.url)
        conn = await asyncpg.connect(dsn, **kwargs)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()


async def test_the_database_timeout_bounds_the_engines_connections_unless_the_url_says_otherwise():
    """PAYORCH_DATABASE_TIMEOUT_S (create_engine's timeout_s) is each connection's
    statement bound and the pool's checkout wait; a `command_timeout` in the URL is
    SQLAlchemy's connections' own, as before, and a `connect_timeout` every connect's."""
    with scratch_postgres() as plain:
        for url, statements in ((plain, 0.5), (f"{plain}?command_timeout=30", 30)):
            engine = create_engine(url, timeout_s=0.5)
            try:
                assert engine.pool.timeout() == 0.5  # type: ignore[attr-defined]
                async with engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    config = raw.dbapi_connection._connection._config
                    assert config.command_timeout == statements
            finally:
                await engine.dispose()
    _, kwargs = asyncpg_connect_args(make_url(f"{plain}?connect_timeout=7"))
    assert timed_connect_kwargs(kwargs, 0.5) == {"timeout": 7, "command_timeout": 0.5}
    assert timed_connect_kwargs({}, None) == {}


async def test_a_connect_bound_alone_leaves_the_statements_unbounded():
    """Migrations on start (bootstrap.migrate_untimed): PAYORCH_DATABASE_TIMEOUT_S bounds
    their connect, not their statements, which may build an index on a large table."""
    with scratch_postgres() as plain:
        engine = create_engine(plain, pool_size=1, connect_timeout_s=0.5)
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                assert raw.dbapi_connection._connection._config.command_timeout is None
        finally:
            await engine.dispose()
    assert timed_connect_kwargs({}, None, connect_s=0.5) == {"timeout": 0.5}
    assert timed_connect_kwargs({"timeout": 7}, None, connect_s=0.5) == {"timeout": 7}
