"""The merchant config cache: one store read per merchant when an entry runs out, however
many payments ask meanwhile, and never a stale read cached over a newer upsert."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.merchant_configs import MerchantConfigs
from payorch.domain.merchant_config import MerchantConfig
from tests.fakes.memory import FakeMerchantConfigStore


class GatedStore(FakeMerchantConfigStore):
    """Counts reads; while `gate` is clear, reads wait on it (a slow database)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def current(self, merchant_id: str) -> MerchantConfig | None:
        self.reads += 1
        found = await super().current(merchant_id)  # read now, answer when let through
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return found


@pytest.fixture
def store() -> GatedStore:
    return GatedStore()


@pytest.fixture
def configs(store: GatedStore) -> MerchantConfigs:
    return MerchantConfigs(store, ManualClock(), ["simulated"], cache_s=5.0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_reads_of_an_expired_entry_make_one_store_read(store, configs):
    await configs.upsert(MerchantConfig(merchant_id="m_1", allow_partial=True))
    store.reads = 0  # the upsert's own read
    store.gate.clear()
    asking = [asyncio.create_task(configs.get("m_1")) for _ in range(50)]
    await settle()
    assert store.reads == 1
    store.gate.set()
    results = await asyncio.gather(*asking)
    assert {(c.version, c.allow_partial, d) for c, d in results} == {(1, True, False)}
    await configs.get("m_1")
    assert store.reads == 1, "served from the cache afterwards"


async def test_an_entry_is_read_again_once_it_runs_out(store, configs):
    clock = configs._clock
    assert isinstance(clock, ManualClock)
    await configs.get("m_1")
    clock.advance(4.9)
    await configs.get("m_1")
    assert store.reads == 1
    clock.advance(0.2)
    config, is_default = await configs.get("m_1")
    assert (store.reads, config.version, is_default) == (2, 0, True)


async def test_merchants_are_read_independently(store, configs):
    store.gate.clear()
    asking = [asyncio.create_task(configs.get(m)) for m in ("m_1", "m_2", "m_1", "m_2")]
    await settle()
    assert store.reads == 2
    store.gate.set()
    results = await asyncio.gather(*asking)
    assert [c.merchant_id for c, _ in results] == ["m_1", "m_2", "m_1", "m_2"]


async def test_a_read_that_started_before_an_upsert_is_not_cached(store, configs):
    await configs.upsert(MerchantConfig(merchant_id="m_1"))
    configs._cache.clear()
    store.gate.clear()
    stale = asyncio.create_task(configs.get("m_1"))
    await settle()
    store.gate.set()
    # Written while that read was under way (it read version 1 already).
    updated = await configs.upsert(
        dataclasses.replace(MerchantConfig(merchant_id="m_1"), allow_partial=True)
    )
    assert (await stale)[0].version == 1
    config, _ = await configs.get("m_1")
    assert (config.version, config.allow_partial) == (updated.version, True) == (2, True)


async def test_a_failed_read_reaches_every_waiter_and_the_next_ask_reads_again(store, configs):
    store.gate.clear()
    store.fail = ConnectionError("database went away")
    asking = [asyncio.create_task(configs.get("m_1")) for _ in range(3)]
    await settle()
    store.gate.set()
    results = await asyncio.gather(*asking, return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3
    assert store.reads == 1
    store.fail = None
    config, is_default = await configs.get("m_1")
    assert (store.reads, is_default) == (2, True)


async def test_a_cancelled_caller_does_not_cancel_the_read_others_wait_for(store, configs):
    store.gate.clear()
    first = asyncio.create_task(configs.get("m_1"))
    second = asyncio.create_task(configs.get("m_1"))
    await settle()
    first.cancel()
    await settle()
    store.gate.set()
    config, _ = await second
    assert config.merchant_id == "m_1"
    assert first.cancelled()
    assert store.reads == 1
