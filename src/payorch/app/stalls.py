"""When this process itself stopped running, so processors are not blamed for it.

A processor call's latency is measured on this process's clock. If the process
was frozen (SIGSTOP, a paused VM, a container throttled to nothing) or its event
loop was blocked while a call was in flight, that time lands in the call's
latency although the processor had answered long before. Counted against the
processor, a 10 s freeze of a worker with 16 calls in flight reads as a p95 over
10 s: the processor is judged unhealthy, its breaker opens, and every payment the
worker tries next fails with no processor available.

The watch ticks on the event loop; a tick later than `threshold_s` past its time
is a stall. The router asks how much of a call's span was stalled and leaves that
time out of what it tells the health tracker (the attempt keeps the latency as
measured). A stall still in progress counts too: after a freeze, a call's answer
can be handled before the watch's own late tick.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from payorch.app.ports import Clock

log = logging.getLogger("payorch.stalls")

# Stalls kept: enough to cover every call in flight (a call lasts at most the
# call timeout, and a stall shorter than the threshold is not kept).
_KEPT = 64


class StallWatch:
    """Stalls of this process's event loop, in `clock.monotonic()` seconds."""

    def __init__(
        self,
        clock: Clock,
        *,
        interval_s: float = 0.25,
        threshold_s: float = 1.0,
        on_stall: Callable[[float], None] | None = None,
    ) -> None:
        if interval_s <= 0 or threshold_s <= 0:
            raise ValueError("need interval_s > 0 and threshold_s > 0")
        self.clock = clock
        self.interval_s = interval_s
        self.threshold_s = threshold_s
        self._on_stall = on_stall
        self._stalls: deque[tuple[float, float]] = deque(maxlen=_KEPT)
        self._last_tick = clock.monotonic()
        # Nothing is known until it ticks: a watch never run sees no stall.
        self._watching = False

    def tick(self) -> None:
        """Called every `interval_s`; records the time since the last tick beyond
        that interval as a stall when it is over the threshold."""
        now = self.clock.monotonic()
        due = self._last_tick + self.interval_s
        self._last_tick = now
        self._watching = True
        if now - due > self.threshold_s:
            self._stalls.append((due, now))
            log.warning(
                "this process did not run for %.1f s; processor calls in flight "
                "meanwhile are not counted against the processors' health",
                now - due,
            )
            if self._on_stall is not None:
                self._on_stall(now - due)

    def stalled_s(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which this process was stalled. `end` is a
        reading of the clock taken just now: a stall still in progress (no tick since
        it began) is counted up to it."""
        if not self._watching:
            return 0.0
        due = self._last_tick + self.interval_s
        ongoing = end - due > self.threshold_s
        if not ongoing and (not self._stalls or self._stalls[-1][1] <= start):
            return 0.0  # the common case, kept cheap: it runs for every processor call
        total = sum(_overlap(a, b, start, end) for a, b in self._stalls)
        if ongoing:
            total += _overlap(due, end, start, end)
        return min(total, max(0.0, end - start))

    async def run(self) -> None:
        """Tick until cancelled."""
        self._last_tick = self.clock.monotonic()
        self._watching = True
        try:
            while True:
                await self.clock.sleep(self.interval_s)
                self.tick()
        finally:
            self._watching = False


def _overlap(a: float, b: float, start: float, end: float) -> float:
    return max(0.0, min(b, end) - max(a, start))
