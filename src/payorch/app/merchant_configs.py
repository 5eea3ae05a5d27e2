"""Merchant configs for the app: validated, versioned, cached briefly."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from payorch.app.ports import Clock, ConcurrentUpdate, MerchantConfigStore
from payorch.domain.merchant_config import MerchantConfig


class VersionConflict(Exception):
    """expected_version did not match the stored version."""


class MerchantConfigs:
    """Reads are served from memory for `cache_s` seconds: no per-payment query or
    re-parse. Another replica's change is seen within that time (plus one read)."""

    def __init__(
        self,
        store: MerchantConfigStore,
        clock: Clock,
        processors: Sequence[str],
        *,
        cache_s: float = 5.0,
        defaults: MerchantConfig | None = None,
    ) -> None:
        self._defaults = defaults or MerchantConfig(merchant_id="")
        self._store = store
        self._clock = clock
        self.processors = tuple(processors)
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, MerchantConfig, bool]] = {}
        self._loading: dict[str, asyncio.Future[tuple[MerchantConfig, bool]]] = {}
        # Bumped by each upsert: a read that started before one does not fill the cache.
        self._generation = 0

    def default(self, merchant_id: str) -> MerchantConfig:
        return dataclasses.replace(self._defaults, merchant_id=merchant_id, version=0)

    async def get(self, merchant_id: str) -> tuple[MerchantConfig, bool]:
        """The current config and whether it is the default."""
        hit = self._cache.get(merchant_id)
        if hit is not None and self._clock.monotonic() - hit[0] < self._cache_s:
            return hit[1], hit[2]
        # One read per merchant at a time: when an entry runs out under load, the
        # payments arriving meanwhile wait for that read instead of each making one.
        loading = self._loading.get(merchant_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(merchant_id))
            self._loading[merchant_id] = loading
            loading.add_done_callback(lambda done: self._loaded(merchant_id, done))
        return await asyncio.shield(loading)

    async def _load(self, merchant_id: str) -> tuple[MerchantConfig, bool]:
        started = self._clock.monotonic()
        generation = self._generation
        stored = await self._store.current(merchant_id)
        config, is_default = (stored, False) if stored else (self.default(merchant_id), True)
        if generation == self._generation:  # no upsert here meanwhile: not stale
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[merchant_id] = (started, config, is_default)
        return config, is_default

    def _loaded(self, merchant_id: str, done: asyncio.Future[tuple[MerchantConfig, bool]]) -> None:
        if self._loading.get(merchant_id) is done:
            del self._loading[merchant_id]
        if not done.cancelled():
            done.exception()  # retrieved: its waiters got it

    async def upsert(self, config: MerchantConfig, *, expected_version: int = 0) -> MerchantConfig:
        config.validate(frozenset(self.processors))
        stored = await self._store.current(config.merchant_id)
        current_version = stored.version if stored else 0
        if expected_version and expected_version != current_version:
            raise VersionConflict(
                f"config of {config.merchant_id} is at version {current_version}, "
                f"not {expected_version}"
            )
        new = dataclasses.replace(config, version=current_version + 1)
        try:
            await self._store.save(new, self._clock.now())
        except ConcurrentUpdate as exc:
            raise VersionConflict(f"config of {config.merchant_id} changed meanwhile") from exc
        self._generation += 1
        self._cache.pop(config.merchant_id, None)
        self._loading.pop(config.merchant_id, None)
        return new
