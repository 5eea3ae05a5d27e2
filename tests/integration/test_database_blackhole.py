"""The pools against a PostgreSQL that answers nothing (tests/tcp_proxy.py,
`blackhole()`: no refusal, no reset). SQLAlchemy's pool (create_engine) and the
payment writer's asyncpg pools bound each connect, checkout and statement by
`timeout_s`: each call fails as the database unreachable, none holds a connection for
good, and both serve again once the database answers. Before, a statement on a pooled
connection waited as long as the silence lasted, and a new connection 60 s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.persistence.availability import storage_unreachable
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.payment_writes import AsyncpgPaymentWriter
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

TIMEOUT_S = 0.3
# However long the old code would have waited: a call not ended in this long hangs.
HANGS_S = 20.0


async def refused(call: Callable[[], Awaitable[Any]]) -> BaseException:
    """What `call` raised while the database is silent; a failed test if it waits
    HANGS_S (told apart from the call's own TimeoutError) or answers."""
    task = asyncio.ensure_future(call())
    done, _ = await asyncio.wait({task}, timeout=HANGS_S)
    if not done:
        task.cancel()
        pytest.fail(f"no answer in {HANGS_S} s: the call waits on the silent database")
    exc = task.exception()
    assert exc is not None, f"answered while the database is silent: {task.result()}"
    assert storage_unreachable(exc), repr(exc)
    return exc


@pytest.fixture
async def proxy(postgres_database: str) -> AsyncIterator[TcpProxy]:
    database = make_url(postgres_database)
    running = TcpProxy((database.host or "127.0.0.1", database.port or 5432)).start()
    yield running
    running.cut()


@pytest.fixture
async def engine(postgres_database: str, proxy: TcpProxy) -> AsyncIterator[AsyncEngine]:
    through = make_url(postgres_database).set(port=proxy.port)
    # One pooled connection and one overflow: calls beyond them queue for a checkout.
    made = create_engine(
        through.render_as_string(hide_password=False), pool_size=1, timeout_s=TIMEOUT_S
    )
    await migrate(made)
    yield made
    await made.dispose()


async def select_1(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT 1"))).scalar_one())


async def test_the_engines_calls_fail_while_the_database_is_silent_and_its_pool_serves_after(
    engine: AsyncEngine, proxy: TcpProxy
) -> None:
    assert await select_1(engine) == 1  # a pooled connection, now silent
    proxy.blackhole()
    # More calls than connections: some wait for a checkout, the others on the socket.
    await asyncio.gather(*(refused(lambda: select_1(engine)) for _ in range(4)))
    assert engine.pool.checkedout() == 0, "a connection held by a call that failed"  # type: ignore[attr-defined]

    proxy.restore()
    assert await asyncio.gather(*(select_1(engine) for _ in range(4))) == [1] * 4


async def test_the_payment_writers_reads_fail_while_the_database_is_silent_and_serve_after(
    engine: AsyncEngine, proxy: TcpProxy
) -> None:
    writer = AsyncpgPaymentWriter(engine, readers=1, timeout_s=TIMEOUT_S)
    try:
        assert await writer.get_by_request("m_1", "none") is None
        proxy.blackhole()
        # One reader connection: the second read waits for it, bounded as well.
        await asyncio.gather(
            *(refused(lambda: writer.get_by_request("m_1", "none")) for _ in range(3))
        )
        proxy.restore()
        reads = [writer.get_by_request("m_1", "none") for _ in range(3)]
        assert await asyncio.gather(*reads) == [None] * 3
    finally:
        proxy.cut()
        await writer.close()


async def test_the_pools_close_while_the_database_is_silent(
    engine: AsyncEngine, proxy: TcpProxy
) -> None:
    """A stop while the database is silent: PostgreSQL never answers the pools' goodbye,
    so each connection is dropped once it has waited its bound. Before, the writer's
    close raised that wait's TimeoutError (`payorch serve` stopping exited 2,
    "payorch: "), and with no bound it waited for good."""
    writer = AsyncpgPaymentWriter(engine, readers=1, timeout_s=TIMEOUT_S)
    assert await writer.get_by_request("m_1", "none") is None  # a pooled connection
    assert await select_1(engine) == 1
    proxy.blackhole()

    async def close() -> None:
        await writer.close()
        await engine.dispose()

    task = asyncio.ensure_future(close())
    done, _ = await asyncio.wait({task}, timeout=HANGS_S)
    if not done:
        task.cancel()
        pytest.fail(f"not closed in {HANGS_S} s: the close waits on the silent database")
    task.result()
