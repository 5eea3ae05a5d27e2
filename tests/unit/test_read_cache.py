"""The read-through cache in front of API keys and merchant configs: when an entry runs
out under load, one read per key however many calls ask meanwhile; never a stale read
cached over an invalidation; failures and cancellations stay with their own callers."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.auth import Authenticator, Principal, Scope, Unauthenticated, hash_key
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.read_cache import ReadCache
from payorch.domain.merchant_config import MerchantConfig
from tests.fakes.memory import FakeMerchantConfigStore


class Source:
    """Counts reads; while `gate` is clear a read waits on it (a slow database). The
    value is taken when the read starts, as a query would."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def read(self, key: str) -> int | None:
        self.reads += 1
        value = self.values.get(key)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def cache(source, clock) -> ReadCache[str, int | None]:
    return ReadCache(source.read, clock, ttl_s=5.0)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_gets_of_a_missing_entry_make_one_read(source, cache):
    source.values["k"] = 1
    source.gate.clear()
    asking = [asyncio.create_task(cache.get("k")) for _ in range(50)]
    await settle()
    assert source.reads == 1
    source.gate.set()
    assert await asyncio.gather(*asking) == [1] * 50
    assert await cache.get("k") == 1
    assert source.reads == 1, "served from memory afterwards"


async def test_an_entry_is_read_again_once_it_runs_out(source, cache, clock):
    source.values["k"] = 1
    await cache.get("k")
    source.values["k"] = 2
    clock.advance(4.9)
    assert (await cache.get("k"), source.reads) == (1, 1)
    clock.advance(0.2)
    assert (await cache.get("k"), source.reads) == (2, 2)


async def test_keys_are_read_independently(source, cache):
    source.values.update(a=1, b=2)
    source.gate.clear()
    asking = [asyncio.create_task(cache.get(k)) for k in ("a", "b", "a", "b")]
    await settle()
    assert source.reads == 2
    source.gate.set()
    assert await asyncio.gather(*asking) == [1, 2, 1, 2]


async def test_a_read_that_started_before_an_invalidation_is_not_cached(source, cache):
    source.values["k"] = 1
    source.gate.clear()
    stale = asyncio.create_task(cache.get("k"))
    await settle()
    source.values["k"] = 2
    cache.invalidate("k")
    fresh = asyncio.create_task(cache.get("k"))  # does not join the stale read
    await settle()
    source.gate.set()
    assert (await stale, await fresh) == (1, 2)
    assert (await cache.get("k"), source.reads) == (2, 2)


async def test_a_failed_read_reaches_every_waiter_and_is_not_cached(source, cache):
    source.gate.clear()
    source.fail = ConnectionError("database went away")
    asking = [asyncio.create_task(cache.get("k")) for _ in range(3)]
    await settle()
    source.gate.set()
    results = await asyncio.gather(*asking, return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3
    assert source.reads == 1
    source.fail = None
    source.values["k"] = 7
    assert (await cache.get("k"), source.reads) == (7, 2)


async def test_a_cancelled_caller_does_not_cancel_the_read_others_wait_for(source, cache):
    source.values["k"] = 1
    source.gate.clear()
    first = asyncio.create_task(cache.get("k"))
    second = asyncio.create_task(cache.get("k"))
    await settle()
    first.cancel()
    await settle()
    source.gate.set()
    assert await second == 1
    assert first.cancelled()
    assert source.reads == 1


async def test_a_zero_ttl_reads_every_time(source, clock):
    cache: ReadCache[str, int | None] = ReadCache(source.read, clock, ttl_s=0)
    source.values["k"] = 1
    assert [await cache.get("k") for _ in range(3)] == [1, 1, 1]
    assert source.reads == 3


async def test_a_full_cache_starts_over_instead_of_growing(source, clock):
    cache: ReadCache[str, int | None] = ReadCache(source.read, clock, ttl_s=5.0, max_entries=3)
    for k in "abcd":
        await cache.get(k)
    await cache.get("d")
    await cache.get("a")
    assert source.reads == 5  # "a" was dropped when "d" came in; "d" was kept


class KeyStore:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.principal = Principal(Scope.MERCHANT, "m_1", "key_1")

    async def find(self, key_hash: str) -> Principal | None:
        found = await self.source.read(key_hash)
        return self.principal if found else None


async def test_api_keys_read_once_when_their_entry_runs_out_under_load(source, clock):
    bearer = "po_" + "a" * 40
    store = KeyStore(source)
    auth = Authenticator(store, clock, cache_s=5.0)
    source.values[hash_key(bearer)] = 1
    await auth.authenticate(bearer)
    clock.advance(5.1)
    source.gate.clear()
    calls = [asyncio.create_task(auth.authenticate(bearer)) for _ in range(64)]
    await settle()
    source.gate.set()
    assert {p.merchant_id for p in await asyncio.gather(*calls)} == {"m_1"}
    assert source.reads == 2
    # Revoked: refused once the entry runs out.
    del source.values[hash_key(bearer)]
    clock.advance(5.1)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(bearer)


async def test_a_config_upsert_is_seen_at_once_even_with_a_read_under_way(clock):
    store = FakeMerchantConfigStore()
    configs = MerchantConfigs(store, clock, ["simulated"], cache_s=5.0)
    await configs.upsert(MerchantConfig(merchant_id="m_1"))
    clock.advance(5.1)
    gate = asyncio.Event()
    current = store.current

    async def slow_current(merchant_id: str) -> MerchantConfig | None:
        found = await current(merchant_id)
        await gate.wait()
        return found

    store.current = slow_current  # type: ignore[method-assign]
    stale = asyncio.create_task(configs.get("m_1"))
    await settle()
    gate.set()
    updated = await configs.upsert(
        dataclasses.replace(MerchantConfig(merchant_id="m_1"), allow_partial=True)
    )
    assert (await stale)[0].version == 1
    config, is_default = await configs.get("m_1")
    assert (config.version, config.allow_partial, is_default) == (updated.version, True, False)
