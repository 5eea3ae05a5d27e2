"""The readiness probe against real databases: SQLite whose file can no longer be
opened, a PostgreSQL database dropped under the pool and made again, and a pool
pointed at a port nothing listens on."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.availability import database_probe
from payorch.adapters.persistence.engine import create_engine
from payorch.app.database_readiness import DatabaseReadiness
from payorch.bootstrap import database_readiness
from payorch.settings import Settings
from tests.conftest import _postgres_admin, as_postgres_admin, require_postgres


async def test_sqlite_whose_file_cannot_be_opened_is_not_ready_until_it_can(tmp_path: Path):
    directory = tmp_path / "data"
    directory.mkdir()
    engine = create_engine(f"sqlite:///{directory / 'payorch.db'}")
    readiness = database_readiness(Settings(), ManualClock(), engine)
    try:
        assert await readiness.check() is True
        assert REGISTRY.get_sample_value("payorch_database_up") == 1
        # The volume goes away: pooled connections dropped, new ones cannot open the file.
        await engine.dispose()
        directory.rename(tmp_path / "gone")
        assert await readiness.check() is True, "one failed probe is not an outage"
        assert await readiness.check() is False
        assert REGISTRY.get_sample_value("payorch_database_up") == 0
        (tmp_path / "gone").rename(directory)
        assert await readiness.check() is True
        assert REGISTRY.get_sample_value("payorch_database_up") == 1
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_postgres_database_dropped_under_the_pool_is_not_ready_until_it_is_back():
    admin_url = make_url(_postgres_admin(require_postgres()))
    name = f"payorch_ready_{uuid.uuid4().hex[:10]}"
    await as_postgres_admin(f'CREATE DATABASE "{name}"')
    engine = create_engine(admin_url.set(database=name).render_as_string(hide_password=False))
    readiness = DatabaseReadiness(database_probe(engine), ManualClock(), timeout_s=5.0)
    try:
        assert await readiness.check() is True  # a pooled connection now
        await as_postgres_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        assert await readiness.check() is True
        assert await readiness.check() is False
        await as_postgres_admin(f'CREATE DATABASE "{name}"')
        assert await readiness.check() is True
    finally:
        await engine.dispose()
        await as_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
async def test_a_pool_pointed_at_a_closed_port_is_not_ready():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free again once closed: nothing listens there
    url = make_url(_postgres_admin(require_postgres())).set(host="127.0.0.1", port=port)
    engine = create_engine(url.render_as_string(hide_password=False))
    readiness = DatabaseReadiness(database_probe(engine), ManualClock(), timeout_s=5.0)
    try:
        assert await readiness.check() is True
        assert await readiness.check() is False
    finally:
        await engine.dispose()
