"""Shared fixtures: databases (SQLite always, PostgreSQL when configured), clocks, servers."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url

from payorch.adapters.clock import ManualClock
from payorch.adapters.secret_cipher import SecretCipher, parse_keys

settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

POSTGRES_URL = os.environ.get("PAYORCH_TEST_POSTGRES_URL", "")

# The key sealing stored secrets on PostgreSQL, where payorch refuses to start without one
# (docs/security.md, Secrets at rest): one key for every test, its processes and the CLI
# commands they run, on both databases. The tests of the default (a key file beside a
# SQLite database) take it out of their settings and environment.
TEST_SECRETS_KEY = "test1:" + base64.b64encode(bytes(range(32))).decode()
os.environ.setdefault("PAYORCH_SECRETS_KEY", TEST_SECRETS_KEY)


def _postgres_admin(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def require_postgres() -> str:
    """The PostgreSQL server's URL. Unset, the test is skipped on a developer machine
    and fails in CI (`CI` set), where `.ci/run` always sets it: never a silent skip."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("PAYORCH_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("PAYORCH_TEST_POSTGRES_URL is not set")
    return POSTGRES_URL


async def as_postgres_admin(sql: str) -> None:
    """Run `sql` on the configured server's admin database (CREATE/DROP DATABASE)."""
    import asyncpg

    conn = await asyncpg.connect(_postgres_admin(require_postgres()))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh database on the configured server for this test session, dropped after."""
    with scratch_postgres() as url:
        yield url


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """A new, empty database on the configured server, dropped after."""
    require_postgres()
    import asyncpg

    name = f"payorch_test_{uuid.uuid4().hex[:10]}"
    admin = _postgres_admin(POSTGRES_URL)

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def run(sql: str) -> None:
        # Its own thread: the fixture may be requested while an event loop runs.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, execute(sql)).result()

    run(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _truncate(url: str) -> None:
    from payorch.adapters.persistence.engine import create_engine, migrate
    from payorch.adapters.persistence.tables import metadata

    engine = create_engine(url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            await conn.exec_driver_sql(f"TRUNCATE {names} CASCADE")
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """Every integration test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'payorch.db'}"
        return
    url = request.getfixturevalue("postgres_database")
    await _truncate(url)
    yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database no one has migrated yet, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
        return
    with scratch_postgres() as url:
        yield url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def cipher_for_tests() -> SecretCipher:
    """The cipher of TEST_SECRETS_KEY, for tests that build repositories themselves."""
    return SecretCipher(parse_keys(TEST_SECRETS_KEY))
