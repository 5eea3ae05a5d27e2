"""The test proxy's cut must end the database's side too: a session left open behind
it keeps its transaction, and the next test's TRUNCATE waits on it for ever."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.tcp_proxy import TcpProxy


@pytest.mark.postgres
async def test_a_cut_ends_the_database_session_and_its_open_transaction(
    postgres_database: str,
) -> None:
    database = make_url(postgres_database)
    target = (database.host or "127.0.0.1", database.port or 5432)
    name = f"proxy-{uuid.uuid4().hex[:12]}"
    proxy = TcpProxy(target).start()
    through = await asyncpg.connect(
        host="127.0.0.1",
        port=proxy.port,
        user=database.username,
        database=database.database,
        server_settings={"application_name": name},
    )
    direct = await asyncpg.connect(
        host=target[0], port=target[1], user=database.username, database=database.database
    )
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    try:
        await through.execute("BEGIN; SELECT 1")
        assert await direct.fetchval(sessions, name) == 1
        proxy.cut()
        # The backend learns at once when its socket ends; a bounded wait for that.
        for _ in range(200):
            if await direct.fetchval(sessions, name) == 0:
                break
            await asyncio.sleep(0.025)
        assert await direct.fetchval(sessions, name) == 0, "the session outlived the cut"
    finally:
        await direct.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            name,
        )
        await direct.close()
        through.terminate()
