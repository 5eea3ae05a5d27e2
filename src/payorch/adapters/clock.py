"""Clocks: the system's, and one tests and demos move by hand."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

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


class OffsetClock(SystemClock):
    """The system clock shifted by a fixed offset, for demos and cron replays
    (`payorch scheduler --now 2026-03-01T00:00:00Z`, PAYORCH_CLOCK_OFFSET)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    @classmethod
    def starting_at(cls, when: datetime) -> OffsetClock:
        if when.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-03-01T00:00:00Z")
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
