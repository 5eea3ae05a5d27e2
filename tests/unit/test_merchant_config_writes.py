"""Writes of a merchant config: a new version each, and a compare-and-set that holds from
the defaults on (two writers who both read the defaults cannot both write)."""

from __future__ import annotations

import dataclasses

import pytest

from payorch.app.merchant_configs import MerchantConfigs, VersionConflict
from payorch.domain.merchant_config import MerchantConfig
from tests.fakes.memory import FakeMerchantConfigStore


@pytest.fixture
def configs(clock) -> MerchantConfigs:
    return MerchantConfigs(FakeMerchantConfigStore(), clock, ["simulated"], cache_s=5.0)


async def test_two_writers_who_read_the_defaults_cannot_both_write(configs):
    read, is_default = await configs.get("m_1")
    assert (read.version, is_default) == (0, True)

    first = await configs.upsert(
        dataclasses.replace(read, allow_partial=True), expected_version=read.version
    )
    with pytest.raises(VersionConflict):
        await configs.upsert(
            dataclasses.replace(read, fallback_on_failure=True), expected_version=read.version
        )

    current, _ = await configs.get("m_1")
    assert current == first and (current.allow_partial, current.fallback_on_failure) == (
        True,
        False,
    )


async def test_a_stale_expected_version_is_refused_and_a_current_one_accepted(configs):
    await configs.upsert(MerchantConfig("m_1"), expected_version=0)
    await configs.upsert(MerchantConfig("m_1"), expected_version=1)
    with pytest.raises(VersionConflict):
        await configs.upsert(MerchantConfig("m_1", allow_partial=True), expected_version=1)
    assert (await configs.get("m_1"))[0].version == 2


async def test_a_write_without_an_expected_version_is_not_checked(configs):
    await configs.upsert(MerchantConfig("m_1"))
    saved = await configs.upsert(MerchantConfig("m_1", allow_partial=True))
    assert saved.version == 2 and (await configs.get("m_1"))[0] == saved
