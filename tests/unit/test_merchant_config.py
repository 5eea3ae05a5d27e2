"""A merchant config is checked when it is saved: every problem at once, each on its own
field, and nothing stored that a payment or an installment plan could trip over later."""

from __future__ import annotations

import pytest

from payorch.domain.installments import (
    MAX_COUNT,
    MAX_DUNNING_DAY,
    MAX_INTERVAL_DAYS,
    MAX_LADDER_STEPS,
    InvalidInstallmentPolicy,
)
from payorch.domain.installments import InstallmentPolicy as PlanPolicy
from payorch.domain.merchant_config import (
    InstallmentPolicy,
    InvalidMerchantConfig,
    MerchantConfig,
    MethodRule,
    retry_policy,
)
from payorch.domain.payment import MethodType
from payorch.domain.retry import RetryPolicy

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


@pytest.mark.parametrize(
    "setting",
    [
        {"count": 1},
        {"count": 2},
        {"count": MAX_COUNT},
        {"count": MAX_COUNT + 1},
        {"interval_days": 0},
        {"interval_days": 1},
        {"interval_days": MAX_INTERVAL_DAYS},
        {"interval_days": MAX_INTERVAL_DAYS + 1},
    ],
    ids=lambda s: "=".join(map(str, next(iter(s.items())))),
)
def test_a_saved_config_and_a_plan_hold_a_policy_to_the_same_bounds(setting) -> None:
    # A policy the config accepted must never be one a plan refuses, and the other way.
    try:
        MerchantConfig("m_1", installment_policy=InstallmentPolicy(**setting)).validate(KNOWN)
        config_accepts = True
    except InvalidMerchantConfig:
        config_accepts = False
    try:
        PlanPolicy(**setting)
        plan_accepts = True
    except InvalidInstallmentPolicy:
        plan_accepts = False
    assert config_accepts == plan_accepts


def test_every_retry_value_out_of_range_is_a_problem_on_its_own_field() -> None:
    policy, problems = retry_policy(9, -1, 60_000)
    assert [f for f, _ in problems] == [
        "retry_policy.max_retries",
        "retry_policy.max_delay_ms",
        "retry_policy.base_delay_ms",
    ]
    assert policy == RetryPolicy()  # the default stands in until they are fixed


def test_every_problem_is_reported_at_once_each_on_its_own_field() -> None:
    # What reading found (a method type, the retry policy) and what validation finds.
    _, retry_problems = retry_policy(9, 0, 0)
    read = [("methods[0].type", "unknown or unspecified method"), *retry_problems]
    config = MerchantConfig(
        "m_1",
        methods=(MethodRule(MethodType.CARD), MethodRule(MethodType.CARD, 9, 1)),
        allowed_currencies=frozenset({"XYZ"}),
        installment_policy=InstallmentPolicy(dunning_days=(7, 3, 999)),
    )
    fields = [f for f, _ in _problems(config, found=read, method_positions=(1, 2))]
    assert fields == [
        "methods[0].type",
        "retry_policy.max_retries",
        "methods[2].type",
        "methods[2].min_amount_minor",
        "allowed_currencies",
        "installment_policy.dunning_days",
        "installment_policy.dunning_days",
    ]


def test_each_negative_limit_is_a_problem_on_its_own_field() -> None:
    config = MerchantConfig("m_1", methods=(MethodRule(MethodType.CARD, -1, -5),))
    assert [f for f, _ in _problems(config)] == [
        "methods[0].min_amount_minor",
        "methods[0].max_amount_minor",
    ]


def test_a_minimum_above_the_maximum_is_a_problem_on_the_minimum() -> None:
    config = MerchantConfig(
        "m_1", methods=(MethodRule(MethodType.CARD), MethodRule(MethodType.APPLE_PAY, 9, 1))
    )
    assert _problems(config) == [
        ("methods[1].min_amount_minor", "min_amount_minor 9 exceeds max_amount_minor 1")
    ]


def test_a_currency_iso_4217_has_withdrawn_is_no_currency_a_config_may_accept() -> None:
    config = MerchantConfig("m_1", allowed_currencies=frozenset({"BGN", "EUR"}))
    assert _problems(config) == [("allowed_currencies", "'BGN': not ISO-4217 codes")]
