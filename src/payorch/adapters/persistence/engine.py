"""Database URLs as users write them, async engines, and migrations on start."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock's key for migrating on start: a constant of payorch's own
# (the bytes "payorchM"), held until the migrating transaction ends.
MIGRATION_LOCK_KEY = int.from_bytes(b"payorchM", "big")


class UnsupportedDatabase(ValueError):
    pass


class DatabaseRefused(UnsupportedDatabase):
    """PostgreSQL would not have the URL's connection: no such database or role, a
    wrong password, no pg_hba.conf entry, an sslmode it does not know. One line at
    start naming the database (its password hidden), not a traceback."""


def normalize_url(raw: str) -> URL:
    """`sqlite:///x.db` and `postgresql://...` work as written: the async driver is chosen."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # The URL itself is not echoed: it may hold a password.
        raise UnsupportedDatabase(
            "cannot parse the database URL: use sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise UnsupportedDatabase(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def asyncpg_connect_args(url: URL) -> tuple[str, dict[str, Any]]:
    """The DSN and keyword arguments asyncpg.connect takes for a PostgreSQL URL.

    The URL's query is libpq's, as managed PostgreSQL services print it
    (`?sslmode=require&sslrootcert=/etc/ssl/rds.pem`, `application_name=...`): asyncpg
    reads those from a DSN, the parameters it does not know as server settings.
    SQLAlchemy's dialect would pass each one to asyncpg.connect as a keyword argument,
    which takes none of them. SQLAlchemy's own `ssl=` is taken as `sslmode`, and
    `connect_timeout` (seconds) as asyncpg's connect timeout, which no DSN carries.
    SQLAlchemy's own parameters (_SQLALCHEMY_PARAMS) are left out: SQLAlchemy's
    connections take them (create_engine), PostgreSQL would refuse them."""
    query = {k: v for k, v in url.query.items() if k not in _SQLALCHEMY_PARAMS}
    for several in ("host", "port"):
        # SQLAlchemy's multi-host form, `?host=A:5432&host=B:5432`: a DSN lists them
        # comma separated (repeated, asyncpg keeps the last alone).
        if isinstance(query.get(several), tuple):
            query[several] = ",".join(query[several])
    ssl = query.pop("ssl", None)
    if ssl is not None:
        query.setdefault("sslmode", ssl)
    kwargs: dict[str, Any] = {}
    timeout = query.pop("connect_timeout", None)
    if timeout is not None:
        kwargs["timeout"] = _seconds("connect_timeout", timeout, most=3600)
    dsn = url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    return dsn, kwargs


# The URL parameters SQLAlchemy's asyncpg dialect took before its connections were made
# from asyncpg_connect_args: its adapter's prepared statement cache size (0 for
# pgbouncer's transaction pooling) and asyncpg.connect's `command_timeout` (seconds).
# SQLAlchemy's connections still take them; the payment writer's pool, whose
# statements SQLAlchemy does not cache nor time, does not.
_SQLALCHEMY_PARAMS = ("prepared_statement_cache_size", "command_timeout")


def _sqlalchemy_params(url: URL) -> tuple[dict[str, Any], dict[str, Any]]:
    """The URL's _SQLALCHEMY_PARAMS: (the adapter's, asyncpg.connect's)."""
    adapter: dict[str, Any] = {}
    connect: dict[str, Any] = {}
    size = url.query.get("prepared_statement_cache_size")
    if size is not None:
        text_ = str(size)
        if not (text_.isascii() and text_.isdigit()):
            raise UnsupportedDatabase(
                "prepared_statement_cache_size in the database URL must be a count, 0 or more"
            )
        adapter["prepared_statement_cache_size"] = int(text_)
    timeout = url.query.get("command_timeout")
    if timeout is not None:
        connect["command_timeout"] = _seconds("command_timeout", timeout)
    return adapter, connect


def _seconds(name: str, value: object, *, most: float = math.inf) -> float:
    """The URL parameter `name` as seconds above 0 (at most `most`, never infinite);
    UnsupportedDatabase naming it when it is not."""
    try:
        seconds = float(str(value))
    except ValueError:
        seconds = 0.0
    if not (0 < seconds < math.inf and seconds <= most):
        bound = "" if most == math.inf else f", at most {most:g}"
        raise UnsupportedDatabase(f"{name} in the database URL must be seconds above 0{bound}")
    return seconds


def redacted(url: URL | str) -> str:
    """The URL with its password hidden, for logs and messages."""
    return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=True)


def timed_connect_kwargs(
    connect_kwargs: dict[str, Any], timeout_s: float | None, *, connect_s: float | None = None
) -> dict[str, Any]:
    """asyncpg.connect's keyword arguments bounded by `timeout_s`: its connect and each
    statement (a cancel's own connect too), unless the URL gave its own for either
    (`connect_timeout`, `command_timeout`); `connect_s` bounds the connect alone (then
    `timeout_s` None leaves the statements unbounded). Without a bound a database that
    answers nothing (a host dropping packets, a server hung) holds a call until TCP
    gives up, a quarter of an hour later (asyncpg's connect alone waits 60 s)."""
    connect_s = timeout_s if connect_s is None else connect_s
    bounds: dict[str, Any] = {}
    if connect_s is not None:
        bounds["timeout"] = connect_s
    if timeout_s is not None:
        bounds["command_timeout"] = timeout_s
    return {**bounds, **connect_kwargs}


def create_engine(
    raw_url: str,
    *,
    pool_size: int = 10,
    timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
) -> AsyncEngine:
    """`timeout_s` (PostgreSQL): no connect, checkout of a pooled connection or statement
    waits longer (Settings.database_timeout_s); None leaves them as the drivers have
    them, for migrations and one-shot commands. `connect_timeout_s` bounds the connect
    alone (for migrations on start: a database that answers nothing is given up, a
    long migration is not cut)."""
    url = normalize_url(raw_url)
    # A statement's parameters stay out of its errors: the webhook signing keys are
    # among them, stored bare (no whsec_ for log redaction to find), and an error's
    # text reaches the log with its traceback.
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            _writable_directory(Path(url.database))
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy emit BEGIN so a write transaction takes its lock up front.
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    import asyncpg

    dsn, url_kwargs = asyncpg_connect_args(url)
    adapter_kwargs, sqlalchemy_kwargs = _sqlalchemy_params(url)
    connect_kwargs = timed_connect_kwargs(
        {**url_kwargs, **sqlalchemy_kwargs}, timeout_s, connect_s=connect_timeout_s
    )

    async def connect() -> Any:
        try:
            return await asyncpg.connect(dsn, **connect_kwargs)
        except (
            asyncpg.InvalidAuthorizationSpecificationError,  # role, password, pg_hba.conf
            asyncpg.InvalidCatalogNameError,  # no such database
            asyncpg.exceptions.ClientConfigurationError,  # e.g. sslmode=bogus
        ) as exc:
            shown = redacted(url.set(drivername="postgresql"))
            raise DatabaseRefused(f"cannot use the database {shown}: {exc}") from None

    def creator() -> Any:
        # As create_async_engine's async_creator, with the adapter's parameters.
        dbapi: Any = engine.sync_engine.dialect.dbapi
        return dbapi.connect(async_creator_fn=connect, **adapter_kwargs)

    engine = create_async_engine(
        url,
        creator=creator,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # SQLAlchemy's own default, 30 s, when there is no bound.
        pool_timeout=30.0 if timeout_s is None else timeout_s,
        hide_parameters=True,
    )
    return engine


class DatabaseNotWritable(PermissionError):
    """A SQLite file whose directory this user cannot write: one line, not a traceback."""


def _writable_directory(database: Path) -> None:
    """Make the SQLite file's directory if need be, and make sure this user may write
    there: SQLite keeps its -wal, -shm and journal files beside the database, and said
    only "unable to open database file" (a container's volume not writable by its user)."""
    directory = database.parent
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatabaseNotWritable(
            f"cannot write the SQLite database {database}: its directory"
            f" {directory.resolve()} is not writable by this user (uid {os.getuid()})"
        )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # aiosqlite: let SQLAlchemy control transactions.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(url: URL | str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", redacted(url).replace("%", "%%"))
    return cfg


_HEADER = re.compile(
    r'^revision = "(\w+)"\ndown_revision = (?:None|"(\w+)")\n'
    r"branch_labels = .*\ndepends_on = None$",
    re.MULTILINE,
)


def migration_heads() -> frozenset[str] | None:
    """The revisions no other migration builds on, read from the files' headers
    without importing Alembic (0.1-0.2 s of every start); None when a file does not
    have the plain header, and Alembic decides."""
    parents = _migration_parents()
    return None if parents is None else _heads(parents)


def _heads(parents: dict[str, str]) -> frozenset[str] | None:
    return frozenset(parents.keys() - set(parents.values())) or None


def _migration_parents() -> dict[str, str] | None:
    """Each revision this version has and the one it builds on, from the files'
    headers; None when a file does not have the plain header."""
    parents: dict[str, str] = {}
    for path in sorted((MIGRATIONS / "versions").glob("[0-9]*.py")):
        found = _HEADER.findall(path.read_text())
        if len(found) != 1:
            return None
        revision, parent = found[0]
        parents[revision] = parent
    return parents


class DatabaseUnreachable(UnsupportedDatabase):
    """The database could not be reached at start: no answer, the connection dropped
    in its handshake, PostgreSQL still starting or shutting down. One line naming it
    (its password hidden) and the driver's reason, not a traceback; a supervisor's
    restart (compose's `restart: unless-stopped`) tries again. A running server rides
    an outage out instead (docs/recovery.md, The database goes away)."""


class DatabaseNewer(UnsupportedDatabase):
    """The database is at a migration this version does not have: a newer version
    migrated it (a rollback of the code, an old replica started late). Alembic said
    only "Can't locate revision", in a traceback."""


async def migrate(engine: AsyncEngine) -> None:
    """Apply every Alembic migration (idempotent). A database already at every
    head is left as it is without loading Alembic. Processes starting at once on a
    new database (replicas, serve beside the scheduler) take turns: on PostgreSQL
    a transaction-scoped advisory lock, on SQLite the write lock BEGIN takes, so one
    migrates and the others find every head applied."""
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            if not await conn.run_sync(_at_heads):
                await conn.run_sync(_upgrade)
                _log.info("migrated the database to the newest schema")
    except UnsupportedDatabase:
        raise
    except Exception as exc:
        from payorch.adapters.persistence.availability import unreachable_cause

        cause = unreachable_cause(exc)
        if cause is None:
            raise
        url = engine.url.set(drivername=engine.url.get_backend_name())
        reason = str(cause) or _textless(cause)
        raise DatabaseUnreachable(f"cannot reach the database {redacted(url)}: {reason}") from None


def _textless(cause: BaseException) -> str:
    # asyncpg's connect timeout, on a database that answers nothing, has no text.
    if isinstance(cause, TimeoutError):
        return "no answer (TimeoutError)"
    return type(cause).__name__


def _at_heads(connection: Connection) -> bool:
    # The headers read once: both the heads and every known revision come from them.
    parents = _migration_parents()
    if (
        parents is None
        or not (heads := _heads(parents))
        or not inspect(connection).has_table("alembic_version")
    ):
        return False
    stamped = frozenset(
        connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    )
    if unknown := sorted(stamped - parents.keys()):
        raise DatabaseNewer(
            f"the database is at migration {', '.join(unknown)}, which this version of"
            " payorch does not have: a newer version migrated it. Run that version (or a"
            " later one); payorch migrates forward only"
        )
    return stamped == heads


def _upgrade(connection: Connection) -> None:
    from alembic import command

    cfg = alembic_config(connection.engine.url)
    cfg.attributes["connection"] = connection
    # "heads": independent migration branches (one per capability) all apply.
    command.upgrade(cfg, "heads")


def migrate_sync(raw_url: str) -> None:
    async def _run() -> None:
        engine = create_engine(raw_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(_run())
