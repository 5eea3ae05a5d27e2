"""Clocks: the system's, and one tests and demos move by hand."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    # time.monotonic itself, not a method calling it: read a dozen times per payment
    # (deadlines, health windows, the read cache), a Python call each time otherwise.
    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Time moves only when told to; sleeping advances it instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Forward only: a monotonic clock never goes back, and code under test may
        rely on it (deadlines, back-offs, leases)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


# What a shifted clock may read when its process starts. datetime (and a protobuf
# Timestamp) hold 0001-01-01..9999-12-31, and a clock outside raised OverflowError at
# its first reading, or at a date counted from it: a traceback, after the database was
# opened. The code counts at most 25 years on from now (24 installments a year apart,
# dunning up to a year after the last) and back a few weeks (reports, expiries): a
# century of room each way, and a century more to run forward, cover both with round
# numbers no demo or cron replay comes near.
EARLIEST = datetime(101, 1, 1, tzinfo=UTC)
LATEST = datetime(9800, 1, 1, tzinfo=UTC)
CLOCK_RANGE = "from 0101-01-01 to 9799-12-31 UTC"


def within_range(when: datetime) -> bool:
    """Whether a clock may start at `when` (aware): see EARLIEST and LATEST."""
    return EARLIEST <= when < LATEST


class OffsetClock(SystemClock):
    """The system clock shifted by a fixed offset, for demos and cron replays
    (`payorch scheduler --now 2026-03-01T00:00:00Z`, PAYORCH_CLOCK_OFFSET).
    ValueError: it would read outside EARLIEST..LATEST."""

    def __init__(self, offset: timedelta) -> None:
        try:
            starts = datetime.now(UTC) + offset
        except OverflowError:
            starts = None
        if starts is None or not within_range(starts):
            raise ValueError(f"the clock must read {CLOCK_RANGE}")
        self.offset = offset

    @classmethod
    def starting_at(cls, when: datetime) -> OffsetClock:
        if when.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-03-01T00:00:00Z")
        if not within_range(when):
            raise ValueError(f"the clock must read {CLOCK_RANGE}")
        return cls(when - datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def parse_offset(text: str) -> timedelta:
    """Seconds ("86400") or a number with a unit ("30d", "-2h", "90m", "45s")."""
    text = text.strip()
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    factor = units.get(text[-1:].lower(), 0)
    number = text[:-1] if factor else text
    try:
        return timedelta(seconds=float(number) * (factor or 1))
    except (ValueError, OverflowError) as exc:
        raise ValueError(
            f"clock offset {text[:40]!r}: use seconds or a number with d, h, m or s"
        ) from exc
