"""Bind processors for the payment writes (payment_writes.py), cheaper than SQLAlchemy's.

A payment's two writes bind about a dozen datetimes and a dozen JSON values. Through
SQLAlchemy's processors each datetime is two to three Python calls (UTCDateTime's,
then on SQLite the text formatting of a `%`-format with a dict of seven fields), and
each JSON value three more (`json.dumps`, `JSONEncoder.encode`, `iterencode`, which
builds a new C encoder per call; json_text.py builds it once). These give the same
values, byte for byte (tests/unit/test_binds.py holds them to SQLAlchemy's on both
dialects), for the values a payment binds: aware datetimes and None, dicts and lists,
True and False. Anything else (a naive datetime, a JSON None, a value json.dumps
refuses) goes to SQLAlchemy's own processor, which stores it or raises as before.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean
from sqlalchemy.engine import Dialect

from payorch.adapters.persistence.tables import UTCDateTime
from payorch.domain.json_text import encoder

Processor = Callable[[Any], Any]

# json.dumps(value) with its defaults (no indent, ", " and ": ", ASCII only).
_DUMPS = encoder()


def bind_processor(type_: Any, dialect: Dialect) -> Processor | None:
    """The processor for `type_` on `dialect`: SQLAlchemy's, or one of the faster ones
    below where they give the same values."""
    slow: Processor | None = type_.dialect_impl(dialect).bind_processor(dialect)
    if slow is None:
        return None
    sqlite = dialect.name == "sqlite"
    if isinstance(type_, UTCDateTime) and dialect.name in ("sqlite", "postgresql"):
        return _sqlite_datetime(slow) if sqlite else _aware_datetime(slow)
    if isinstance(type_, JSON) and dialect._json_serializer is None:
        return _json(slow)
    if isinstance(type_, Boolean) and dialect.name in ("sqlite", "postgresql"):
        return _sqlite_bool(slow) if sqlite else _native_bool(slow)
    return slow


# SQLite's text of UTC datetimes bound lately. A payment binds the same few times over
# and over (created_at in both writes, updated_at in its row and in each event's), and
# the text costs more than a look-up. Only datetimes in UTC itself are kept: between
# them equal means the same instant (with other time zones two equal datetimes may
# differ by `fold` in an ambiguous hour). Emptied when full.
_UTC_TEXT: dict[datetime, str] = {}
_UTC_TEXT_MAX = 1024


def _sqlite_datetime(slow: Processor) -> Processor:
    """Naive UTC as text, "YYYY-MM-DD HH:MM:SS.ffffff" (SQLite's DATETIME format)."""

    def process(
        value: Any,
        _dt: type[datetime] = datetime,
        _utc: Any = UTC,
        _texts: dict[datetime, str] = _UTC_TEXT,
    ) -> Any:
        if type(value) is _dt:
            if value.tzinfo is _utc:
                text = _texts.get(value)
                if text is None:
                    if len(_texts) >= _UTC_TEXT_MAX:
                        _texts.clear()
                    # In UTC, the text ends in "+00:00".
                    text = _texts[value] = value.isoformat(" ", "microseconds")[:-6]
                return text
            if value.tzinfo is not None:
                return value.astimezone(_utc).isoformat(" ", "microseconds")[:-6]
        return None if value is None else slow(value)

    return process


def _aware_datetime(slow: Processor) -> Processor:
    """In UTC, as a datetime (asyncpg encodes it)."""

    def process(value: Any, _dt: type[datetime] = datetime, _utc: Any = UTC) -> Any:
        if type(value) is _dt and value.tzinfo is not None:
            return value.astimezone(_utc)
        return None if value is None else slow(value)

    return process


def _json(slow: Processor) -> Processor:
    """json.dumps(value) of a dict or a list."""

    def process(value: Any, _dumps: Callable[[Any], str] = _DUMPS) -> Any:
        kind = type(value)
        if kind is dict:
            return _dumps(value) if value else "{}"
        if kind is list:
            return _dumps(value) if value else "[]"
        return slow(value)

    return process


def _sqlite_bool(slow: Processor) -> Processor:
    def process(value: Any) -> Any:
        if value is True:
            return 1
        if value is False:
            return 0
        return slow(value)

    return process


def _native_bool(slow: Processor) -> Processor:
    def process(value: Any) -> Any:
        if value is True or value is False:
            return value
        return slow(value)

    return process
