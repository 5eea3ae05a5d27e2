"""A read-through cache for what every call reads and rarely changes (API keys,
merchant configs): values kept for `ttl_s` seconds, one read per key at a time."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from payorch.app.ports import Clock

K = TypeVar("K")
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """`get(key)` answers from memory while the entry is younger than `ttl_s`.

    When an entry runs out under load, the calls arriving before the new read returns
    wait for that one read instead of each making its own (a burst of identical queries
    every `ttl_s` otherwise). A read that started before `invalidate(key)` does not
    fill the cache. A cancelled caller does not cancel the read others wait for; a
    failed read reaches every caller waiting for it and is not cached. With `ttl_s`
    0 nothing is cached or shared: every call reads. A full cache drops its least
    recently used entry: a burst of keys read once pushes out only entries nobody
    asked for since (using an entry does not keep it past `ttl_s`).
    """

    def __init__(
        self,
        read: Callable[[K], Awaitable[V]],
        clock: Clock,
        *,
        ttl_s: float,
        max_entries: int = 10_000,
    ) -> None:
        self._read = read
        self._clock = clock
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._reading: dict[K, asyncio.Future[V]] = {}
        self._generation = 0

    async def get(self, key: K) -> V:
        if self._ttl <= 0:
            return await self._read(key)
        hit = self._entries.get(key)
        if hit is not None and self._clock.monotonic() - hit[0] < self._ttl:
            self._entries.move_to_end(key)
            return hit[1]
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._fill(key))
            self._reading[key] = reading
            reading.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(reading)

    def invalidate(self, key: K) -> None:
        self._generation += 1
        self._entries.pop(key, None)
        self._reading.pop(key, None)

    async def _fill(self, key: K) -> V:
        started = self._clock.monotonic()
        generation = self._generation
        value = await self._read(key)
        if generation == self._generation:
            self._entries[key] = (started, value)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value

    def _done(self, key: K, done: asyncio.Future[V]) -> None:
        if self._reading.get(key) is done:
            del self._reading[key]
        if not done.cancelled():
            done.exception()  # retrieved: the callers waiting got it
