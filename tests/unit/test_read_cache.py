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
from tests.fakes.memory import FakeApiKeyStore, FakeMerchantConfigStore


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


async def test_a_full_cache_drops_the_least_recently_used_entry(source, clock):
    cache: ReadCache[str, int | None] = ReadCache(source.read, clock, ttl_s=5.0, max_entries=3)
    for k in "abc":
        await cache.get(k)
    await cache.get("a")  # used again: "b" is now the least recently used
    await cache.get("d")
    assert source.reads == 4
    for k in "acd":
        await cache.get(k)
    assert source.reads == 4, "only 'b' made room for 'd'"
    await cache.get("b")
    assert source.reads == 5


async def test_using_an_entry_does_not_keep_it_past_its_time(source, clock):
    cache: ReadCache[str, int | None] = ReadCache(source.read, clock, ttl_s=5.0, max_entries=3)
    source.values["k"] = 1
    await cache.get("k")
    source.values["k"] = 2
    clock.advance(4.0)
    assert await cache.get("k") == 1
    clock.advance(1.1)
    assert (await cache.get("k"), source.reads) == (2, 2)


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


def _bearer(n: int) -> str:
    return f"po_{n:012x}_{'s' * 43}"


KNOWN = _bearer(0)  # m_1's key


@pytest.fixture
def keys() -> FakeApiKeyStore:
    store = FakeApiKeyStore()
    store.active[hash_key(KNOWN)] = Principal(Scope.MERCHANT, "m_1", "key_1")
    return store


async def refused(auth: Authenticator, *numbers: int) -> None:
    for n in numbers:
        with pytest.raises(Unauthenticated):
            await auth.authenticate(_bearer(n))


async def test_a_flood_of_unknown_keys_never_pushes_a_merchants_key_out(keys, clock):
    auth = Authenticator(keys, clock, cache_s=5.0)
    await auth.authenticate(KNOWN)
    await refused(auth, *range(1, 20_001))  # twice the cache's size, each key once
    assert (await auth.authenticate(KNOWN)).merchant_id == "m_1"
    assert keys.reads[hash_key(KNOWN)] == 1, "the merchant's key came from memory"


async def test_an_unknown_key_asked_again_is_answered_from_memory_until_it_runs_out(keys, clock):
    auth = Authenticator(keys, clock, cache_s=5.0)
    bearer = _bearer(1)
    await refused(auth, 1, 1, 1)
    assert keys.reads[hash_key(bearer)] == 1
    # Created meanwhile (another replica): accepted once the unknown answer runs out.
    keys.active[hash_key(bearer)] = Principal(Scope.MERCHANT, "m_1", "key_1")
    clock.advance(5.1)
    assert (await auth.authenticate(bearer)).merchant_id == "m_1"


async def test_the_memory_of_unknown_keys_is_bounded_and_drops_the_oldest(keys, clock):
    auth = Authenticator(keys, clock, cache_s=5.0)
    await refused(auth, *range(1, 20_001), 1)
    assert keys.reads[hash_key(_bearer(1))] == 2, "pushed out by newer unknown keys"


async def test_a_revoked_key_is_refused_once_its_entry_runs_out_whatever_came_since(keys, clock):
    auth = Authenticator(keys, clock, cache_s=5.0)
    await auth.authenticate(KNOWN)
    del keys.active[hash_key(KNOWN)]  # revoked
    await refused(auth, *range(1, 100))
    clock.advance(4.9)
    assert (await auth.authenticate(KNOWN)).merchant_id == "m_1"
    clock.advance(0.2)
    await refused(auth, 0, 0)
    assert keys.reads[hash_key(KNOWN)] == 2


async def test_with_no_cache_time_every_call_reads_known_and_unknown_keys(keys, clock):
    auth = Authenticator(keys, clock, cache_s=0)
    for _ in range(3):
        await auth.authenticate(KNOWN)
        await refused(auth, 1)
    assert (keys.reads[hash_key(KNOWN)], keys.reads[hash_key(_bearer(1))]) == (3, 3)
