"""PlanBuilder: deterministic plans whose steps sum to the total within each method's limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payorch.app.plan_builder import PlanRejected, build_plan
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.money import Currency, Money
from payorch.domain.payment import MethodType
from payorch.domain.request import CoreRequest, MethodInput

PROCESSORS = ["sim_a", "sim_b"]


def request(total: int, *methods: tuple[MethodType, int | None]) -> CoreRequest:
    return CoreRequest(
        merchant_id="m_1",
        request_id="r",
        amount=Money(total, Currency("USD")),
        methods=tuple(MethodInput(m, f"pm_{m.value}", a, "") for m, a in methods),
        metadata={},
        customer_id="",
        off_session=False,
    )


SEED_CONFIG = MerchantConfig(
    "m_1",
    version=7,
    methods=(
        MethodRule(MethodType.APPLE_PAY, max_amount_minor=6000, processors=("sim_b",)),
        MethodRule(MethodType.CARD),
    ),
)


def test_apple_pay_up_to_sixty_then_card_for_the_remaining_forty():
    plan = build_plan(
        request(10000, (MethodType.APPLE_PAY, None), (MethodType.CARD, None)),
        SEED_CONFIG,
        PROCESSORS,
    )
    assert [(s.method, s.amount_minor, s.processors) for s in plan.steps] == [
        (MethodType.APPLE_PAY, 6000, ("sim_b",)),
        (MethodType.CARD, 4000, ("sim_a", "sim_b")),
    ]
    assert plan.config_version == 7 and plan.fallbacks == ()


def test_explicit_amounts_are_kept_and_the_last_method_takes_the_rest():
    plan = build_plan(
        request(10000, (MethodType.APPLE_PAY, 2500), (MethodType.CARD, None)),
        SEED_CONFIG,
        PROCESSORS,
    )
    assert [s.amount_minor for s in plan.steps] == [2500, 7500]


def test_methods_left_over_become_fallbacks():
    plan = build_plan(
        request(5000, (MethodType.CARD, None), (MethodType.APPLE_PAY, None)),
        SEED_CONFIG,
        PROCESSORS,
    )
    assert [s.method for s in plan.steps] == [MethodType.CARD]
    assert [f.method for f in plan.fallbacks] == [MethodType.APPLE_PAY]


def test_a_method_without_an_amount_takes_the_last_minor_unit_left():
    plan = build_plan(
        request(10000, (MethodType.CARD, 9999), (MethodType.APPLE_PAY, None)),
        SEED_CONFIG,
        PROCESSORS,
    )
    assert [(s.method, s.amount_minor) for s in plan.steps] == [
        (MethodType.CARD, 9999),
        (MethodType.APPLE_PAY, 1),
    ]
    assert plan.fallbacks == ()


def test_an_explicit_amount_once_the_total_is_covered_is_rejected_as_such():
    with pytest.raises(PlanRejected) as err:
        build_plan(
            request(5000, (MethodType.CARD, None), (MethodType.APPLE_PAY, 100)),
            SEED_CONFIG,
            PROCESSORS,
        )
    assert err.value.problems == [("methods[1].amount", "the total is already covered")]


def test_a_method_whose_minimum_is_more_than_is_left_becomes_a_fallback():
    config = MerchantConfig(
        "m_1",
        methods=(
            MethodRule(MethodType.CARD),
            MethodRule(MethodType.APPLE_PAY, min_amount_minor=500),
            MethodRule(MethodType.GOOGLE_PAY),
        ),
    )
    plan = build_plan(
        request(
            10000,
            (MethodType.CARD, 9900),
            (MethodType.APPLE_PAY, None),
            (MethodType.GOOGLE_PAY, None),
        ),
        config,
        PROCESSORS,
    )
    assert [(s.method, s.amount_minor) for s in plan.steps] == [
        (MethodType.CARD, 9900),
        (MethodType.GOOGLE_PAY, 100),
    ]
    assert [f.method for f in plan.fallbacks] == [MethodType.APPLE_PAY]


@pytest.mark.parametrize(
    ("methods", "problem"),
    [
        (
            ((MethodType.CARD, 6000), (MethodType.APPLE_PAY, 100)),
            "6000 exceeds the 5000 left to cover",
        ),
        (
            ((MethodType.APPLE_PAY, 4000), (MethodType.CARD, 5000)),
            "apple_pay takes at least 1 and at most 3000 minor units for this merchant",
        ),
    ],
)
def test_an_amount_refused_is_the_only_problem_and_takes_nothing_from_the_total(methods, problem):
    config = MerchantConfig(
        "m_1",
        methods=(
            MethodRule(MethodType.APPLE_PAY, max_amount_minor=3000),
            MethodRule(MethodType.CARD),
        ),
    )
    with pytest.raises(PlanRejected) as err:
        build_plan(request(5000, *methods), config, PROCESSORS)
    assert err.value.problems == [("methods[0].amount", problem)]


def test_a_request_the_config_cannot_cover_is_rejected_with_a_reason():
    with pytest.raises(PlanRejected) as err:
        build_plan(request(10000, (MethodType.APPLE_PAY, None)), SEED_CONFIG, PROCESSORS)
    assert err.value.contract_id == "plan/coverage"
    assert "4000" in str(err.value)


def test_an_explicit_amount_over_the_method_limit_is_rejected():
    with pytest.raises(PlanRejected) as err:
        build_plan(
            request(10000, (MethodType.APPLE_PAY, 7000), (MethodType.CARD, None)),
            SEED_CONFIG,
            PROCESSORS,
        )
    assert "at most 6000" in str(err.value)


def test_a_blocked_method_is_refused_by_policy():
    with pytest.raises(PlanRejected) as err:
        build_plan(request(1000, (MethodType.GOOGLE_PAY, None)), SEED_CONFIG, PROCESSORS)
    assert err.value.contract_id == "policy/method"


def test_a_currency_the_merchant_does_not_accept_is_refused():
    config = MerchantConfig("m_1", allowed_currencies=frozenset({"EUR"}))
    with pytest.raises(PlanRejected) as err:
        build_plan(request(1000, (MethodType.CARD, None)), config, PROCESSORS)
    assert err.value.contract_id == "policy/currency"


method_rules = st.builds(
    MethodRule,
    method=st.sampled_from(list(MethodType)),
    min_amount_minor=st.integers(0, 3000),
    max_amount_minor=st.one_of(st.just(0), st.integers(1, 20000)),
    processors=st.sampled_from([(), ("sim_a",), ("sim_b", "sim_a")]),
).filter(lambda r: not r.max_amount_minor or r.min_amount_minor <= r.max_amount_minor)

configs = st.lists(method_rules, min_size=1, max_size=3, unique_by=lambda r: r.method).map(
    lambda rules: MerchantConfig("m_1", version=3, methods=tuple(rules))
)
requests = st.builds(
    lambda total, methods: request(total, *methods),
    st.integers(1, 50000),
    st.lists(
        st.tuples(st.sampled_from(list(MethodType)), st.one_of(st.none(), st.integers(1, 30000))),
        min_size=1,
        max_size=4,
    ),
)


@given(req=requests, config=configs)
def test_every_plan_sums_to_the_total_and_respects_limits_and_is_deterministic(req, config):
    try:
        plan = build_plan(req, config, PROCESSORS)
    except PlanRejected as rejected:
        assert rejected.problems
        with pytest.raises(PlanRejected):
            build_plan(req, config, PROCESSORS)
        return
    assert sum(s.amount_minor for s in plan.steps) == req.amount.amount_minor
    for s in plan.steps:
        rule = config.rule(s.method)
        assert rule is not None and s.amount_minor > 0
        assert s.amount_minor >= rule.min_amount_minor
        assert not rule.max_amount_minor or s.amount_minor <= rule.max_amount_minor
        assert set(s.processors) <= set(PROCESSORS) and s.processors
    assert build_plan(req, config, PROCESSORS) == plan
