"""A merchant config is checked when it is saved: nothing stored that a payment or an
installment plan could trip over later."""

from __future__ import annotations

import pytest

from payorch.domain.installments import MAX_DUNNING_DAY, MAX_LADDER_STEPS, InvalidInstallmentPolicy
from payorch.domain.installments import InstallmentPolicy as PlanPolicy
from payorch.domain.merchant_config import (
    InstallmentPolicy,
    InvalidMerchantConfig,
    MerchantConfig,
)

KNOWN = frozenset({"simulated"})


def _problems(config: MerchantConfig, **found) -> list[tuple[str, str]]:
    with pytest.raises(InvalidMerchantConfig) as refused:
        config.validate(KNOWN, **found)
    return refused.value.problems


def test_more_dunning_steps_than_a_plan_can_walk_are_refused() -> None:
    days = tuple(range(1, MAX_LADDER_STEPS + 2))
    config = MerchantConfig("m_1", installment_policy=InstallmentPolicy(dunning_days=days))
    assert _problems(config) == [
        ("installment_policy.dunning_days", f"at most {MAX_LADDER_STEPS} dunning steps")
    ]


def test_as_many_dunning_steps_as_a_plan_can_walk_are_accepted() -> None:
    days = tuple(range(1, MAX_LADDER_STEPS + 1))
    MerchantConfig("m_1", installment_policy=InstallmentPolicy(dunning_days=days)).validate(KNOWN)


@pytest.mark.parametrize("day", [MAX_DUNNING_DAY + 1, 2_147_483_647])
def test_a_dunning_day_past_a_year_is_refused(day: int) -> None:
    config = MerchantConfig("m_1", installment_policy=InstallmentPolicy(dunning_days=(3, day)))
    assert _problems(config) == [
        ("installment_policy.dunning_days", f"days must be at most {MAX_DUNNING_DAY}")
    ]


def test_a_plan_policy_with_a_dunning_day_past_a_year_is_refused() -> None:
    PlanPolicy(dunning_days=(MAX_DUNNING_DAY,))
    with pytest.raises(InvalidInstallmentPolicy):
        PlanPolicy(dunning_days=(2_147_483_647,))
