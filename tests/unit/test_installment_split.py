"""The penny-perfect split, eligibility and the schedule: pure domain, any currency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payorch.domain.installments import (
    MAX_COUNT,
    InstallmentPolicy,
    InvalidInstallmentPolicy,
    NotEligible,
    due_dates,
    split_evenly,
    split_total,
)
from payorch.domain.money import EXPONENTS, MAX_AMOUNT_MINOR, Currency, Money

CURRENCIES = sorted(EXPONENTS)


@given(
    currency=st.sampled_from(CURRENCIES),
    major=st.integers(100, 10**9),
    extra_minor=st.integers(0, 9_999),
    count=st.integers(2, MAX_COUNT),
)
def test_splits_always_sum_to_the_total_and_differ_by_at_most_one_charge_step(
    currency, major, extra_minor, count
):
    code = Currency(currency)
    step = code.charge_step
    # A total a card can be charged: a whole number of the currency's charge steps.
    total = min(major * 10**code.exponent + extra_minor % 10**code.exponent, MAX_AMOUNT_MINOR)
    total -= total % step
    InstallmentPolicy(count=count).check_eligible(Money(total, code))

    parts = split_total(Money(total, code), count)

    assert len(parts) == count
    assert sum(parts) == total
    assert all(p > 0 and p % step == 0 for p in parts), "each part can be charged"
    assert max(parts) - min(parts) <= step
    assert parts == sorted(parts), "the remainder goes on the last installments"


@pytest.mark.parametrize(
    ("currency", "total", "parts"),
    [
        ("KWD", 100_000, [33_330, 33_330, 33_340]),
        ("BHD", 100_010, [33_330, 33_340, 33_340]),
        ("MGA", 1_000_000, [333_300, 333_300, 333_400]),
        ("EUR", 10_000, [3_333, 3_333, 3_334]),
        ("JPY", 10_000, [3_333, 3_333, 3_334]),
    ],
)
def test_a_currency_charged_in_steps_is_split_in_those_steps(currency, total, parts):
    assert split_total(Money(total, Currency(currency)), 3) == parts


def test_a_total_that_is_no_whole_number_of_steps_leaves_what_is_over_on_the_last_part():
    assert split_evenly(100_005, 3, 10) == [33_330, 33_330, 33_345]


@pytest.mark.parametrize(
    ("currency", "total"),
    [("KWD", 100_005), ("BHD", 100_001), ("TND", 999_999), ("MGA", 1_000_050)],
)
def test_a_total_that_is_no_whole_number_of_charge_steps_is_not_eligible(currency, total):
    # Split, its last installment would be one no card charge takes (33.345 KWD):
    # the plan would take the first ones and then breach.
    code = Currency(currency)
    with pytest.raises(NotEligible, match=f"not a whole number of .* {currency}"):
        InstallmentPolicy().check_eligible(Money(total, code))
    InstallmentPolicy().check_eligible(Money(total - total % code.charge_step, code))


def test_a_total_of_fewer_charge_steps_than_installments_is_not_eligible():
    with pytest.raises(NotEligible, match="cannot be split"):
        InstallmentPolicy(min_total_minor=1, count=3).check_eligible(Money(20, Currency("KWD")))


def test_the_split_covers_every_currency_exponent():
    assert {EXPONENTS[c] for c in CURRENCIES} == {0, 2, 3, 4}


@pytest.mark.parametrize(
    ("total", "count", "parts"),
    [
        (10_000, 3, [3333, 3333, 3334]),
        (10_001, 3, [3333, 3334, 3334]),
        (9_999, 3, [3333, 3333, 3333]),
        (10, 4, [2, 2, 3, 3]),
        (100, 2, [50, 50]),
    ],
)
def test_the_remainder_goes_on_the_last_installments_one_minor_unit_each(total, count, parts):
    assert split_evenly(total, count) == parts


def test_one_installment_is_the_whole_total():
    assert split_evenly(10_000, 1) == [10_000]
    assert split_evenly(10_005, 1, 10) == [10_005]


@pytest.mark.parametrize(
    ("total", "count", "step"),
    [(10_000, 0, 1), (10_000, -1, 1), (-1, 3, 1), (10_000, 3, 0), (10_000, 3, -10)],
)
def test_a_split_into_no_parts_of_a_negative_total_or_in_no_steps_is_refused(total, count, step):
    with pytest.raises(ValueError, match=r"must be positive|cannot be negative"):
        split_evenly(total, count, step)


@pytest.mark.parametrize(
    ("currency", "smallest"),
    [("USD", 10_000), ("EUR", 10_000), ("JPY", 100), ("BHD", 100_000), ("CLF", 1_000_000)],
)
def test_the_default_threshold_is_100_in_the_currencys_major_unit(currency, smallest):
    policy = InstallmentPolicy()
    code = Currency(currency)
    policy.check_eligible(Money(smallest, code))
    with pytest.raises(NotEligible, match="installments start at"):
        policy.check_eligible(Money(smallest - 1, code))


def test_a_merchant_policy_may_set_its_own_threshold_and_count():
    policy = InstallmentPolicy(min_total_minor=5_000, count=4, interval_days=14)
    policy.check_eligible(Money(5_000, Currency("USD")))
    with pytest.raises(NotEligible):
        policy.check_eligible(Money(4_999, Currency("USD")))


@pytest.mark.parametrize(
    "bad",
    [
        {"count": 1},
        {"count": 25},
        {"interval_days": 0},
        {"interval_days": 366},
        {"dunning_days": (7, 3)},
        {"dunning_days": (0, 3)},
        {"min_total_minor": -1},
    ],
)
def test_a_nonsensical_policy_is_refused(bad):
    with pytest.raises(InvalidInstallmentPolicy):
        InstallmentPolicy(**bad)


def test_installments_fall_due_every_interval_from_the_first():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert due_dates(start, 3, 30) == [start, start + timedelta(days=30), start + timedelta(60)]
