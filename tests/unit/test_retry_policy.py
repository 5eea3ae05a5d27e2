"""RetryPolicy and decide_retry: one quick retry, jittered, never past the deadline."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payorch.domain.classification import classify
from payorch.domain.results import (
    Classification,
    ErrorCode,
    Outcome,
    ProcessorResponse,
    ResponseKind,
)
from payorch.domain.retry import (
    DEADLINE_RESERVE_MS,
    MAX_DELAY_CAP_MS,
    MAX_RETRIES_CAP,
    InvalidRetryPolicy,
    RetryDecision,
    RetryPolicy,
    decide_retry,
)

API_ERROR = classify(ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error"))
RATE_LIMITED = classify(ProcessorResponse(ResponseKind.ERROR, http_status=429))
TIMEOUT = classify(ProcessorResponse(ResponseKind.NO_RESPONSE))
GENERIC_DECLINE = classify(
    ProcessorResponse(
        ResponseKind.ERROR, http_status=402, error_type="card_error", decline_code="generic_decline"
    )
)
INSUFFICIENT_FUNDS = classify(
    ProcessorResponse(
        ResponseKind.ERROR,
        http_status=402,
        error_type="card_error",
        decline_code="insufficient_funds",
    )
)
SUCCESS = classify(ProcessorResponse(ResponseKind.SUCCEEDED))
REQUIRES_ACTION = classify(ProcessorResponse(ResponseKind.REQUIRES_ACTION))


def decide(
    c: Classification,
    *,
    attempt_number: int = 1,
    policy: RetryPolicy | None = None,
    jitter: float = 0.5,
    remaining_ms: float | None = None,
    expected_call_ms: float = 300,
    retry_after_ms: float | None = None,
) -> RetryDecision:
    return decide_retry(
        c,
        attempt_number=attempt_number,
        policy=policy or RetryPolicy(),
        jitter=jitter,
        remaining_ms=remaining_ms,
        expected_call_ms=expected_call_ms,
        retry_after_ms=retry_after_ms,
    )


def capped_exponential(policy: RetryPolicy, retry_number: int) -> int:
    """The un-jittered delay d of the docstring: base * 2**(n-1), capped."""
    return min(policy.base_delay_ms * 2 ** (retry_number - 1), policy.max_delay_ms)


# -- the policy ---------------------------------------------------------------


def test_default_policy_is_one_retry_under_three_seconds() -> None:
    policy = RetryPolicy()
    assert policy.max_retries == 1
    assert policy.max_delay_ms < 3000
    assert 0 < policy.base_delay_ms <= policy.max_delay_ms


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_policy_accepts_zero_to_three_retries(max_retries: int) -> None:
    assert RetryPolicy(max_retries=max_retries).max_retries == max_retries


@pytest.mark.parametrize("max_retries", [-1, 4, 10])
def test_policy_refuses_more_than_three_retries_or_a_negative_count(max_retries: int) -> None:
    with pytest.raises(InvalidRetryPolicy):
        RetryPolicy(max_retries=max_retries)


def test_policy_accepts_a_maximum_delay_just_under_three_seconds() -> None:
    assert RetryPolicy(max_delay_ms=2999).max_delay_ms == 2999


@pytest.mark.parametrize(
    ("base", "maximum"),
    [(400, 3000), (400, 10_000), (3000, 3000), (-1, 2500), (2600, 2500)],
)
def test_policy_refuses_delays_of_three_seconds_or_more_and_base_above_max(
    base: int, maximum: int
) -> None:
    with pytest.raises(InvalidRetryPolicy):
        RetryPolicy(base_delay_ms=base, max_delay_ms=maximum)


def test_invalid_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=99)


# -- jitter -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_number", "jitter", "delay"),
    [
        (1, 0.0, 200),  # d = 400: the lowest delay is d/2
        (1, 0.5, 300),
        (1, 0.999, 399),
        (2, 0.0, 400),  # d = 800
        (2, 0.5, 600),
        (3, 0.0, 800),  # d = 1600
        (4, 0.0, 1250),  # d = 3200 capped at 2500
        (9, 0.5, 1875),
    ],
)
def test_delay_is_exponential_half_jittered_and_capped(
    retry_number: int, jitter: float, delay: int
) -> None:
    policy = RetryPolicy(max_retries=3, base_delay_ms=400, max_delay_ms=2500)
    assert policy.delay_ms(retry_number, jitter) == delay


_POLICIES = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, MAX_RETRIES_CAP),
    base_delay_ms=st.integers(0, MAX_DELAY_CAP_MS),
    max_delay_ms=st.just(MAX_DELAY_CAP_MS),
) | st.integers(0, MAX_DELAY_CAP_MS).flatmap(
    lambda maximum: st.builds(
        RetryPolicy,
        max_retries=st.integers(0, MAX_RETRIES_CAP),
        base_delay_ms=st.integers(0, maximum),
        max_delay_ms=st.just(maximum),
    )
)


@settings(max_examples=200, deadline=None)
@given(
    policy=_POLICIES,
    retry_number=st.integers(1, 30),
    jitter=st.floats(0.0, 1.0, exclude_max=True),
)
def test_delay_is_always_under_three_seconds(
    policy: RetryPolicy, retry_number: int, jitter: float
) -> None:
    assert 0 <= policy.delay_ms(retry_number, jitter) < 3000


@settings(max_examples=200, deadline=None)
@given(
    policy=_POLICIES,
    retry_number=st.integers(1, 30),
    # Kept a hair below 1; the largest float below 1 has its own test below.
    jitter=st.floats(0.0, 1.0 - 1e-9),
)
def test_delay_lies_between_half_and_all_of_the_capped_exponential(
    policy: RetryPolicy, retry_number: int, jitter: float
) -> None:
    d = capped_exponential(policy, retry_number)
    delay = policy.delay_ms(retry_number, jitter)
    if d == 0:
        assert delay == 0
    else:
        # Whole milliseconds: d/2 rounds down for odd d.
        assert d // 2 <= delay < d


def test_delay_stays_below_d_for_the_largest_jitter_below_one() -> None:
    policy = RetryPolicy(base_delay_ms=400, max_delay_ms=2500)
    assert policy.delay_ms(1, math.nextafter(1.0, 0.0)) < 400


# -- decide_retry -------------------------------------------------------------


@pytest.mark.parametrize("c", [GENERIC_DECLINE, INSUFFICIENT_FUNDS])
def test_failures_not_worth_retrying_now_are_never_retried(c: Classification) -> None:
    decision = decide(c)
    assert not decision.retry
    assert decision.delay_ms == 0
    assert c.error_code.value in decision.reason


def test_a_hard_failure_is_not_retried_even_with_retries_left_and_time_to_spare() -> None:
    policy = RetryPolicy(max_retries=3)
    assert not decide(GENERIC_DECLINE, policy=policy, remaining_ms=60_000).retry


@pytest.mark.parametrize("c", [SUCCESS, REQUIRES_ACTION])
def test_success_or_customer_action_is_done_not_retried(c: Classification) -> None:
    decision = decide(c)
    assert not decision.retry
    assert decision.reason == "done"


@pytest.mark.parametrize("c", [API_ERROR, RATE_LIMITED, TIMEOUT])
def test_soft_or_unknown_failure_is_retried_once_after_the_jittered_delay(
    c: Classification,
) -> None:
    decision = decide(c, attempt_number=1, jitter=0.5)
    assert decision.retry
    assert decision.delay_ms == RetryPolicy().delay_ms(1, 0.5)
    assert "retry 1" in decision.reason


@pytest.mark.parametrize("c", [API_ERROR, RATE_LIMITED, TIMEOUT])
def test_soft_failure_is_not_retried_a_second_time_under_the_default_policy(
    c: Classification,
) -> None:
    decision = decide(c, attempt_number=2)
    assert not decision.retry
    assert "exhausted" in decision.reason


def test_a_policy_of_three_retries_allows_exactly_three() -> None:
    policy = RetryPolicy(max_retries=3)
    retried = [decide(API_ERROR, attempt_number=n, policy=policy).retry for n in range(1, 6)]
    assert retried == [True, True, True, False, False]


def test_a_policy_of_zero_retries_never_retries() -> None:
    assert not decide(API_ERROR, policy=RetryPolicy(max_retries=0)).retry


def test_no_retry_when_the_deadline_is_too_short_for_delay_and_call() -> None:
    decision = decide(API_ERROR, jitter=0.0, remaining_ms=450, expected_call_ms=300)
    # delay 200 ms + call 300 ms > 450 ms left
    assert not decision.retry
    assert "deadline" in decision.reason
    assert "450" in decision.reason


def test_retry_when_the_deadline_leaves_room_for_delay_call_and_reserve() -> None:
    decision = decide(API_ERROR, jitter=0.0, remaining_ms=550, expected_call_ms=300)
    # delay 200 ms + call 300 ms + 50 ms kept back to store the result = 550 ms left
    assert decision.retry
    assert decision.delay_ms == 200


def test_no_retry_when_the_deadline_leaves_no_reserve_to_store_the_result() -> None:
    decision = decide(RATE_LIMITED, jitter=0.0, remaining_ms=620, expected_call_ms=400)
    # delay 200 ms + call 400 ms fit in 620 ms, but not with the 50 ms reserve
    assert DEADLINE_RESERVE_MS == 50
    assert not decision.retry
    assert "deadline" in decision.reason


def test_retry_after_longer_than_the_jittered_delay_is_honored() -> None:
    decision = decide(RATE_LIMITED, jitter=0.0, retry_after_ms=2000)
    assert decision.retry
    assert decision.delay_ms == 2000


def test_retry_after_shorter_than_the_jittered_delay_keeps_the_jittered_delay() -> None:
    decision = decide(RATE_LIMITED, jitter=0.5, retry_after_ms=10)
    assert decision.retry
    assert decision.delay_ms == RetryPolicy().delay_ms(1, 0.5)


@pytest.mark.parametrize("retry_after_ms", [3000, 5000, 60_000])
def test_retry_after_over_the_three_second_cap_refuses_the_retry(retry_after_ms: int) -> None:
    decision = decide(RATE_LIMITED, retry_after_ms=retry_after_ms)
    assert not decision.retry
    assert decision.delay_ms == 0
    assert str(retry_after_ms) in decision.reason


def test_retry_after_of_exactly_the_cap_is_honored() -> None:
    decision = decide(RATE_LIMITED, retry_after_ms=MAX_DELAY_CAP_MS)
    assert decision.retry
    assert decision.delay_ms == MAX_DELAY_CAP_MS == 2999


def test_retry_after_is_still_bound_by_the_deadline() -> None:
    decision = decide(RATE_LIMITED, retry_after_ms=2000, remaining_ms=2200, expected_call_ms=300)
    assert not decision.retry
    assert "deadline" in decision.reason


def test_stripe_should_retry_false_means_no_retry() -> None:
    vetoed = classify(
        ProcessorResponse(
            ResponseKind.ERROR, http_status=500, error_type="api_error", should_retry=False
        )
    )
    assert not decide(vetoed).retry


def test_soft_failure_flagged_not_retry_now_is_not_retried() -> None:
    c = Classification(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR, retry_now=False, retry_later=True)
    assert not decide(c).retry


@settings(max_examples=200, deadline=None)
@given(
    attempt_number=st.integers(1, 5),
    jitter=st.floats(0.0, 1.0, exclude_max=True),
    remaining_ms=st.none() | st.floats(0, 10_000),
    expected_call_ms=st.floats(0, 5_000),
    retry_after_ms=st.none() | st.floats(0, 10_000),
)
def test_an_accepted_retry_always_fits_the_cap_and_the_deadline(
    attempt_number: int,
    jitter: float,
    remaining_ms: float | None,
    expected_call_ms: float,
    retry_after_ms: float | None,
) -> None:
    decision = decide(
        API_ERROR,
        attempt_number=attempt_number,
        jitter=jitter,
        remaining_ms=remaining_ms,
        expected_call_ms=expected_call_ms,
        retry_after_ms=retry_after_ms,
    )
    if decision.retry:
        assert decision.delay_ms < 3000
        assert attempt_number <= RetryPolicy().max_retries
        if remaining_ms is not None:
            assert decision.delay_ms + expected_call_ms + DEADLINE_RESERVE_MS <= remaining_ms
    else:
        assert decision.delay_ms == 0
