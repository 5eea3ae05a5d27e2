"""Merchant configs for the app: validated, versioned, cached briefly."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from payorch.app.ports import Clock, ConcurrentUpdate, MerchantConfigStore
from payorch.app.read_cache import ReadCache
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
        # Bounded: a burst of unknown merchant ids cannot grow it without end.
        self._cache: ReadCache[str, tuple[MerchantConfig, bool]] = ReadCache(
            self._read, clock, ttl_s=cache_s, max_entries=50_000
        )
        # A saved version never changes: what a paused payment is finished under.
        self._versions: ReadCache[tuple[str, int], MerchantConfig] = ReadCache(
            self._read_version, clock, ttl_s=cache_s, max_entries=50_000
        )

    def default(self, merchant_id: str) -> MerchantConfig:
        return dataclasses.replace(self._defaults, merchant_id=merchant_id, version=0)

    async def get(self, merchant_id: str) -> tuple[MerchantConfig, bool]:
        """The current config and whether it is the default."""
        return await self._cache.get(merchant_id)

    async def _read(self, merchant_id: str) -> tuple[MerchantConfig, bool]:
        stored = await self._store.current(merchant_id)
        return (stored, False) if stored else (self.default(merchant_id), True)

    async def get_version(self, merchant_id: str, version: int) -> MerchantConfig:
        """The config a payment recorded (`Payment.config_version`): version 0 is the
        defaults. Versions are never deleted; one not found (which only a store edited
        by hand could give) is answered with the current config."""
        return await self._versions.get((merchant_id, version))

    async def _read_version(self, key: tuple[str, int]) -> MerchantConfig:
        merchant_id, version = key
        if version == 0:
            return self.default(merchant_id)
        stored = await self._store.version(merchant_id, version)
        return stored if stored is not None else (await self.get(merchant_id))[0]

    def check(
        self,
        config: MerchantConfig,
        *,
        found: Sequence[tuple[str, str]] = (),
        method_positions: Sequence[int] = (),
    ) -> None:
        """Raise `InvalidMerchantConfig` with every problem `upsert` would refuse."""
        config.validate(frozenset(self.processors), found=found, method_positions=method_positions)

    async def upsert(
        self,
        config: MerchantConfig,
        *,
        expected_version: int | None = None,
        found: Sequence[tuple[str, str]] = (),
        method_positions: Sequence[int] = (),
    ) -> MerchantConfig:
        """Validate and store as the next version. With `expected_version` only if the
        stored version is that one, 0 meaning none is stored (the defaults apply): two
        writers who read the same version cannot both write. `found` and
        `method_positions` come from reading the config from outside (see
        `MerchantConfig.validate`)."""
        self.check(config, found=found, method_positions=method_positions)
        stored = await self._store.current(config.merchant_id)
        current_version = stored.version if stored else 0
        if expected_version is not None and expected_version != current_version:
            raise VersionConflict(
                f"config of {config.merchant_id} is at version {current_version}, "
                f"not {expected_version}"
            )
        new = dataclasses.replace(config, version=current_version + 1)
        try:
            await self._store.save(new, self._clock.now())
        except ConcurrentUpdate as exc:
            raise VersionConflict(f"config of {config.merchant_id} changed meanwhile") from exc
        self._cache.invalidate(config.merchant_id)
        return new
