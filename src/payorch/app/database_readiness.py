"""Whether the database answers, so readiness follows it.

A replica whose database cannot be reached can only refuse payments; a load
balancer that still sees it ready keeps sending them. A cheap probe (`SELECT 1`
through the pool) runs every `interval_s`, each cut off after `timeout_s`. After
`failures_to_down` failures in a row the database is judged down (gRPC health
NOT_SERVING, `/readyz` 503); the first probe that answers judges it up again.
One failed probe is not enough: a connection recycled at the wrong moment, or a
pool briefly full, would otherwise flap the replica out of the load balancer.
`interval_s` 0 never probes: the database is taken as up, and readiness ignores it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from payorch.app.ports import Clock

log = logging.getLogger("payorch.database")

Probe = Callable[[], Awaitable[None]]


class DatabaseReadiness:
    def __init__(
        self,
        probe: Probe,
        clock: Clock,
        *,
        interval_s: float = 2.0,
        timeout_s: float = 2.0,
        failures_to_down: int = 2,
    ) -> None:
        if interval_s < 0 or timeout_s <= 0 or failures_to_down < 1:
            raise ValueError("need interval_s >= 0, timeout_s > 0 and failures_to_down >= 1")
        self._probe = probe
        self._clock = clock
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures_to_down = failures_to_down
        self._failures = 0
        self._up = True
        self._observers: list[Callable[[bool], None]] = []

    @property
    def up(self) -> bool:
        return self._up

    def add_observer(self, changed: Callable[[bool], None]) -> None:
        """`changed(up)` is called now with the current verdict, then on each change."""
        self._observers.append(changed)
        changed(self._up)

    async def check(self) -> bool:
        """Probe once, judge, and return whether the database is judged up."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._probe()
        except Exception as exc:
            self._failed(exc)
        else:
            self._answered()
        return self._up

    async def run(self) -> None:
        """Probe every `interval_s` on the clock until cancelled (at once done when 0)."""
        while self.interval_s:
            await self._clock.sleep(self.interval_s)
            await self.check()

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if not self._up or self._failures < self.failures_to_down:
            return
        # The type alone: a driver's message may quote the URL it connected to.
        why = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.error(
            "the database does not answer (%d probes in a row failed, the last: %s):"
            " not ready (gRPC health NOT_SERVING, /readyz 503) until it does",
            self._failures,
            why,
        )
        self._set(False)

    def _answered(self) -> None:
        self._failures = 0
        if self._up:
            return
        log.warning("the database answers again: ready")
        self._set(True)

    def _set(self, up: bool) -> None:
        self._up = up
        for changed in self._observers:
            changed(up)
