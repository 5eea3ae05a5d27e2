"""Query pieces shared by the repositories."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import ARRAY, any_, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement


def one_of(dialect: Dialect, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """`column IN values` that is one statement whatever the number of values.

    On PostgreSQL it is `column = ANY($1::type[])`. An IN list is a different statement
    for each length, and the batch paths (claims, plan loads, version checks) run with
    every length from 1 to the batch size: each new length is another prepare (a
    round trip, parsed and planned again) and pushes a statement out of the driver's
    prepared-statement cache.
    """
    return _one_of(dialect, column, None, list(values))


def one_of_param(dialect: Dialect, column: Any, name: str) -> ColumnElement[bool]:
    """`one_of` for a statement built once: its values bound at each run, as `name`."""
    return _one_of(dialect, column, name, None)


def _one_of(dialect: Dialect, column: Any, name: str | None, values: Any) -> ColumnElement[bool]:
    if dialect.name == "postgresql":
        clause = column == any_(bindparam(name, values, type_=ARRAY(column.type)))
    else:
        clause = column.in_(bindparam(name, values, expanding=True))
    return cast(ColumnElement[bool], clause)
