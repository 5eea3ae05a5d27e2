"""The injectable clocks: tests move time with ManualClock, forward only."""

from __future__ import annotations

import pytest

from payorch.adapters.clock import ManualClock


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
