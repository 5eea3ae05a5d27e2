"""Statements built once as SQLAlchemy Core, and on PostgreSQL sent to the driver.

The installment scheduler reads and saves plans by the dozen per claim and per group
of results (installments.py). Each statement built and run through SQLAlchemy Core
costs ~0.2 ms of CPU (building it, its cache key, its parameters' and its rows'
processing, the greenlet hop into the driver), the same statement prepared on asyncpg
~0.03 ms (docs/performance.md, the scheduler's changes). A `Prepared` is one such
statement, written once as Core with named parameters:

- SQLite runs the Core statement through SQLAlchemy as before (its compiled cache
  now hits, since the statement object is the same each time);
- PostgreSQL compiles it once (payment_writes.Statement: its bind processors, the
  same values SQLAlchemy would bind) and `Sender` runs it on the unit of work's own
  asyncpg connection, inside the unit of work's transaction, decoding the columns
  with SQLAlchemy's own result processors.

SQLAlchemy's asyncpg adapter begins its transaction with the first statement it is
given, so a statement sent while no transaction is open goes through SQLAlchemy
(`exec_driver_sql` with the compiled SQL), never around it: nothing runs outside the
unit of work's transaction, and its commit and rollback stay SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import Executable

from payorch.adapters.persistence.payment_writes import Statement, compiled_once

# A row by column name: an asyncpg Record, a dict, or SQLAlchemy's RowMapping.
Row = Mapping[Any, Any]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement with named parameters; on PostgreSQL, also its SQL for the driver."""

    core: Any
    # PostgreSQL only: the compiled statement, each of its parameters by name (None
    # for a value the statement was built with, given in `fixed`), and the result
    # columns that SQLAlchemy would decode, with their decoders.
    driver: Statement | None = None
    names: tuple[str | None, ...] = ()
    fixed: tuple[Any, ...] = ()
    decoders: tuple[tuple[str, Callable[[Any], Any]], ...] = ()

    @classmethod
    def build(cls, stmt: Executable, dialect: Dialect, params: Sequence[str]) -> Prepared:
        """`stmt` takes the named parameters `params` (a bare INSERT: its columns); any
        other is a value it was built with (a status compared with, say)."""
        if dialect.name != "postgresql":
            return cls(stmt)
        keys = params if isinstance(stmt, Insert) else None
        compiled = compiled_once(cast(Any, stmt), dialect, keys)
        order = list(compiled.positiontup or [])
        binds = [compiled.binds[name] for name in order]
        if unknown := set(params) - {b.key for b in binds}:  # fails at start, not per call
            raise ValueError(f"no parameters {sorted(unknown)} in {compiled}")
        names = tuple(b.key if b.key in params else None for b in binds)
        fixed = tuple(None if b.key in params else b.effective_value for b in binds)
        decoders = []
        for column in cast(Any, stmt).exported_columns:
            impl = column.type.dialect_impl(dialect)
            decode = impl.result_processor(dialect, None)
            if decode is not None:
                decoders.append((column.name, decode))
        return cls(
            stmt,
            # Statement.compile reads `v_<column>` as the column's value: named as is here.
            Statement.compile(
                cast(Any, stmt), dialect, [n.removeprefix("v_") for n in order], keys
            ),
            names,
            fixed,
            tuple(decoders),
        )

    def args(self, params: Row) -> list[Any]:
        """The driver's arguments for `params` (by name)."""
        assert self.driver is not None
        return self.driver.args(
            [
                value if name is None else params[name]
                for name, value in zip(self.names, self.fixed, strict=True)
            ]
        )

    def decoded(self, records: Sequence[Row]) -> list[Row]:
        """Rows from the driver as SQLAlchemy would have decoded them."""
        if not self.decoders:
            return list(records)
        out: list[Row] = []
        for record in records:
            row = dict(record.items())
            for name, decode in self.decoders:
                value = row[name]
                if value is not None:
                    row[name] = decode(value)
            out.append(row)
        return out


class Sender:
    """Runs Prepared statements in a unit of work's transaction (see the module's
    docstring): SQLAlchemy on SQLite, the connection's driver on PostgreSQL."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"
        self._driver: asyncpg.Connection | None = None

    async def rows(self, q: Prepared, params: Row) -> list[Row]:
        if not self._postgres:
            return list((await self._conn.execute(q.core, dict(params))).mappings().all())
        assert q.driver is not None
        args = q.args(params)
        driver = await self._in_transaction()
        if driver is None:
            result = await self._conn.exec_driver_sql(q.driver.sql, tuple(args))
            return q.decoded(list(result.mappings().all()))
        return q.decoded(await driver.fetch(q.driver.sql, *args))

    async def many(self, q: Prepared, rows: Sequence[Row]) -> None:
        """Runs `q` once per row (an executemany)."""
        if not rows:
            return
        if not self._postgres:
            await self._conn.execute(q.core, [dict(r) for r in rows])
            return
        assert q.driver is not None
        args = [q.args(r) for r in rows]
        driver = await self._in_transaction()
        if driver is None:
            await self._conn.exec_driver_sql(q.driver.sql, [tuple(a) for a in args])
        else:
            await driver.executemany(q.driver.sql, args)

    async def _in_transaction(self) -> asyncpg.Connection | None:
        """The asyncpg connection once SQLAlchemy began the transaction on it, else None."""
        if self._driver is None:
            raw = await self._conn.get_raw_connection()
            self._driver = cast(asyncpg.Connection, raw.driver_connection)
        return self._driver if self._driver.is_in_transaction() else None
