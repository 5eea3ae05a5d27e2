"""Which failures mean the database could not be reached (down, restarting, failing
over, the network between cut), as opposed to a fault in what was asked of it.

The first kind is the caller's to retry: a payment retried under the same request id
is never charged twice, and anything a lost write left unsettled is reconciled. Found
by walking the exception and what caused it, since the drivers and SQLAlchemy wrap
one another's errors.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.persistence.engine import DatabaseRefused

# The server went away, is starting or shutting down, or takes no more connections.
_POSTGRES_GONE = (
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError included
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    # A new connection refused while serving: the database dropped or renamed, the
    # role's password changed, pg_hba.conf edited (the payment writer's own pool
    # raises these bare; the engine's raises DatabaseRefused, below).
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
_NETWORK_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})
# SQLite's file cannot be used: held past the busy timeout, or the disk failed.
_SQLITE_UNUSABLE = ("database is locked", "unable to open database file", "disk i/o error")
_DEPTH = 8


def database_probe(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    """`SELECT 1` on a connection of the engine's pool (app/database_readiness.py): it
    answers only when a connection can be had and the server runs queries, which is
    what every call needs. On PostgreSQL the checkout's pre-ping replaces a dead
    pooled connection first, so a database that came back is seen at once."""
    select_1 = text("SELECT 1")

    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(select_1)

    return probe


def storage_unreachable(exc: BaseException) -> bool:
    return unreachable_cause(exc) is not None


def unreachable_cause(exc: BaseException) -> BaseException | None:
    """The error in `exc` (or what caused it) that says the database could not be
    reached, the driver's own where SQLAlchemy wrapped it; None when there is none."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < _DEPTH:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if _unreachable(e):
            orig = getattr(e, "orig", None)
            return orig if isinstance(orig, BaseException) else e
        if isinstance(e, sa_exc.DBAPIError) and isinstance(e.orig, BaseException):
            todo.append(e.orig)
        todo.extend(c for c in (e.__cause__, e.__context__) if c is not None)
    return None


def _unreachable(e: BaseException) -> bool:
    if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror, *_POSTGRES_GONE)):
        return True
    # Refused a new connection while serving (the database dropped or renamed, the
    # role's password changed, pg_hba.conf edited): at start it stops the process,
    # later it is an outage like any other, not a fault in the call.
    if isinstance(e, DatabaseRefused):
        return True
    if isinstance(e, OSError) and e.errno in _NETWORK_ERRNOS:
        return True
    if isinstance(e, sqlite3.OperationalError):
        return str(e).lower().startswith(_SQLITE_UNUSABLE)
    return False
