"""The injectable clocks: tests move time with ManualClock, forward only."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from payorch.adapters.clock import EARLIEST, LATEST, ManualClock, OffsetClock, SystemClock

HOUR = timedelta(hours=1)


async def test_a_manual_clock_moves_when_told_and_when_slept_on():
    clock = ManualClock()
    start, mono = clock.now(), clock.monotonic()

    clock.advance(1.5)
    await clock.sleep(2)

    assert (clock.now() - start).total_seconds() == 3.5
    assert clock.monotonic() - mono == 3.5
    assert clock.slept == [2]


def test_a_manual_clock_does_not_go_back():
    clock = ManualClock()
    before = (clock.now(), clock.monotonic())

    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)

    assert (clock.now(), clock.monotonic()) == before  # nothing moved


def test_a_shifted_clock_starts_only_where_every_date_counted_from_it_fits():
    second = timedelta(seconds=1)
    for when in (EARLIEST, LATEST - second):
        assert abs(OffsetClock.starting_at(when).now() - when) < timedelta(minutes=1)
    for when in (EARLIEST - second, LATEST, datetime(9999, 12, 31, 23, tzinfo=timezone(-HOUR))):
        with pytest.raises(ValueError, match="the clock must read from 0101-01-01"):
            OffsetClock.starting_at(when)
    with pytest.raises(ValueError, match="the clock must read"):
        OffsetClock(timedelta(days=3_000_000))  # past 9999-12-31: OverflowError at once


def test_the_system_clocks_monotonic_reading_is_the_systems() -> None:
    """SystemClock.monotonic is time.monotonic's reading, unshifted by an offset."""
    for clock in (SystemClock(), OffsetClock(timedelta(days=30))):
        before = time.monotonic()
        reading = clock.monotonic()
        assert before <= reading <= time.monotonic()
