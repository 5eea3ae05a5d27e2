"""Which failures mean the database could not be reached: those the gRPC layer answers
UNAVAILABLE (callers retry) instead of INTERNAL (a fault to look into)."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from payorch.adapters.persistence.availability import storage_unreachable
from payorch.adapters.persistence.engine import DatabaseRefused


def wrapped(orig: BaseException, kind: type[sa_exc.DBAPIError] = sa_exc.OperationalError):
    return kind("INSERT ...", {}, orig)


def caused_by(cause: BaseException) -> BaseException:
    try:
        raise RuntimeError("the write failed") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionRefusedError(111, "connect refused"),
        ConnectionResetError(104, "reset by peer"),
        TimeoutError(),
        OSError(113, "no route to host"),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle of operation"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        wrapped(sqlite3.OperationalError("database is locked")),
        wrapped(sqlite3.OperationalError("disk I/O error")),
        sa_exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        sa_exc.TimeoutError("QueuePool limit reached"),
        caused_by(ConnectionResetError(104, "reset by peer")),
        caused_by(wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))),
        DatabaseRefused('cannot use the database ...: database "payorch" does not exist'),
        asyncpg.InvalidCatalogNameError('database "payorch" does not exist'),
        asyncpg.InvalidPasswordError('password authentication failed for user "payorch"'),
    ],
    ids=repr,
)
def test_the_database_gone_is_unreachable(failure: BaseException) -> None:
    assert storage_unreachable(failure)


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("a bug"),
        ValueError("bad input"),
        wrapped(sqlite3.IntegrityError("UNIQUE constraint failed"), sa_exc.IntegrityError),
        wrapped(sqlite3.OperationalError("no such table: payments")),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.InterfaceError("another operation is in progress"),
        caused_by(KeyError("x")),
    ],
    ids=repr,
)
def test_a_fault_in_what_was_asked_is_not(failure: BaseException) -> None:
    assert not storage_unreachable(failure)


def test_a_cycle_of_causes_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert not storage_unreachable(a)
