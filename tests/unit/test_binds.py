"""The payment writes' own bind processors (binds.py) give what SQLAlchemy's give, value
for value, on both dialects: the stored text (SQLite's datetimes, JSON on both) stays
byte for byte what it was, and what SQLAlchemy refuses is still refused."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import JSON, Boolean
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.dialects.sqlite import aiosqlite
from sqlalchemy.engine import Dialect

from payorch.adapters.persistence import binds
from payorch.adapters.persistence.binds import bind_processor
from payorch.adapters.persistence.payment_writes import PaymentStatements
from payorch.adapters.persistence.tables import UTCDateTime
from tests.unit.test_json_text import json_values

DIALECTS = [aiosqlite.dialect(), pg_asyncpg.dialect()]
AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _sqlalchemy(type_: Any, dialect: Dialect) -> Any:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _outcome(process: Any, value: Any) -> tuple[Any, ...]:
    try:
        out = process(value)
    except Exception as exc:  # the error is what is compared
        return ("raised", type(exc), str(exc))
    if isinstance(out, datetime):
        return ("datetime", out, out.tzinfo, out.utcoffset())
    if isinstance(out, float) and math.isnan(out):
        return ("nan",)
    return ("value", type(out), out)


def _same(type_: Any, value: Any) -> None:
    for dialect in DIALECTS:
        fast = bind_processor(type_, dialect)
        assert _outcome(fast, value) == _outcome(_sqlalchemy(type_, dialect), value), dialect.name


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("type_", [UTCDateTime(), JSON(), Boolean()], ids=repr)
def test_the_payment_writes_use_their_own_processors_for_datetimes_json_and_booleans(
    type_: Any, dialect: Dialect
) -> None:
    fast = bind_processor(type_, dialect)
    assert fast is not None
    assert fast.__module__ == binds.__name__


def test_every_processor_of_a_payment_write_is_the_fast_one_where_there_is_one() -> None:
    for dialect in DIALECTS:
        statements = PaymentStatements.for_dialect(dialect)
        for name in ("insert_payment", "update_payment", "upsert_step", "insert_event"):
            processors = getattr(statements, name).processors
            assert processors, name
            assert all(p.__module__ == binds.__name__ for _, p in processors), name


_offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59)
)


@given(st.datetimes(timezones=st.none() | st.just(UTC) | _offsets))
@example(AT)
@example(AT.replace(microsecond=0))
@example(AT.replace(tzinfo=None))
@example(datetime(1, 1, 1, tzinfo=UTC))
@example(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
@example(datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=5))))  # the day before
@example(datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))))  # past 9999
def test_a_datetime_binds_as_sqlalchemy_binds_it(value: datetime) -> None:
    _same(UTCDateTime(), value)


def test_none_and_other_values_bind_as_sqlalchemy_binds_them() -> None:
    for type_ in (UTCDateTime(), JSON(), Boolean()):
        for value in (None, 0, 1, "2026-03-01", [], {}, True, False, 1.0, object()):
            _same(type_, value)


def test_a_datetime_on_sqlite_is_its_utc_text_with_microseconds() -> None:
    process = bind_processor(UTCDateTime(), aiosqlite.dialect())
    assert process is not None
    assert process(AT) == "2026-03-01 12:00:00.123456"
    assert process(AT.replace(microsecond=0)) == "2026-03-01 12:00:00.000000"
    assert process(AT.astimezone(timezone(timedelta(hours=-3)))) == "2026-03-01 12:00:00.123456"


@given(json_values)
@example({})
@example([])
@example({"note": "café ☕", "nested": {"list": [1, 2.5, None, True], "empty": {}}})
@example([["card", "pm_card_visa", "cus_1"], ["apple_pay", "pm_x", ""]])
@example({"amount_minor": 10000, "status": "succeeded", "at": "2026-03-01T12:00:00+00:00"})
@example([float("nan"), float("inf"), -0.0, 10**30])
def test_a_json_value_binds_as_sqlalchemy_binds_it(value: Any) -> None:
    _same(JSON(), value)
    _same(JSON(), [value])
    _same(JSON(), {"k": value})


def test_json_that_json_dumps_refuses_is_refused_the_same_way() -> None:
    circular: list[Any] = []
    circular.append(circular)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    for value in ({"at": AT}, [{1, 2}], {(1, 2): "tuple key"}, circular, looped):
        _same(JSON(), value)
    # Not left half-way: the next value encodes as before.
    _same(JSON(), {"after": [1, 2]})


def test_a_utc_datetime_bound_again_on_sqlite_is_the_same_text_and_few_are_kept() -> None:
    process = bind_processor(UTCDateTime(), aiosqlite.dialect())
    assert process is not None
    binds._UTC_TEXT.clear()
    assert process(AT) == process(AT) == "2026-03-01 12:00:00.123456"
    # Equal instants in other zones are not taken from, nor added to, what is kept.
    assert process(AT.astimezone(timezone(timedelta(hours=2)))) == "2026-03-01 12:00:00.123456"
    assert list(binds._UTC_TEXT) == [AT]
    for n in range(binds._UTC_TEXT_MAX * 2 + 1):
        value = AT + timedelta(microseconds=n)
        assert process(value) == _sqlalchemy(UTCDateTime(), aiosqlite.dialect())(value)
    assert 0 < len(binds._UTC_TEXT) <= binds._UTC_TEXT_MAX
