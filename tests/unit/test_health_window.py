"""The pure health logic: the sliding window, the verdict, the breaker, the budget."""

from __future__ import annotations

import sys

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.health import HealthTracker
from payorch.domain.classification import classify
from payorch.domain.health import (
    LATENCY_BOUNDS_MS,
    BreakerState,
    CircuitBreaker,
    HealthPolicy,
    HealthState,
    InvalidHealthPolicy,
    Signal,
    SlidingWindow,
    assess,
    histogram_quantile,
    retry_budget,
    signal_of,
)
from payorch.domain.results import ProcessorResponse, ResponseKind

T0 = 1000.0


def fill(window: SlidingWindow, now: float, signal: Signal, n: int, latency_ms: float = 50.0):
    for _ in range(n):
        window.record(now, signal, latency_ms, authorize=True)


# -- the window ---------------------------------------------------------------------
def test_a_call_counts_until_it_leaves_the_window_then_no_longer():
    w = SlidingWindow(60)
    fill(w, T0, Signal.INFRA_FAILURE, 3)
    assert w.stats(T0 + 59.9).infra_failures == 3
    assert w.stats(T0 + 60.0).infra_failures == 0


def test_buckets_expire_one_second_at_a_time():
    w = SlidingWindow(10)
    for i in range(10):
        fill(w, T0 + i, Signal.SUCCESS, i + 1)  # 1 call at T0, 2 at T0+1, ...
    assert w.stats(T0 + 9).requests == sum(range(1, 11))
    assert w.stats(T0 + 10).requests == sum(range(2, 11))
    assert w.stats(T0 + 14).requests == sum(range(6, 11))


def test_a_slot_reused_after_a_full_turn_of_the_ring_starts_from_zero():
    w = SlidingWindow(5)
    fill(w, T0, Signal.INFRA_FAILURE, 7)
    fill(w, T0 + 5, Signal.SUCCESS, 1)  # same slot, one turn later
    stats = w.stats(T0 + 5)
    assert (stats.requests, stats.infra_failures, stats.successes) == (1, 0, 1)


def test_memory_is_bounded_by_the_window_whatever_the_traffic():
    w = SlidingWindow(60)
    ring = w._ring
    size = sum(sys.getsizeof(b.histogram) for b in ring)
    for second in range(600):
        fill(w, T0 + second, Signal.SUCCESS, 50, latency_ms=second % 3000)
    assert len(w) == 60 and w._ring is ring
    assert all(len(b.histogram) == len(LATENCY_BOUNDS_MS) + 1 for b in ring)
    assert sum(sys.getsizeof(b.histogram) for b in ring) == size
    assert w.stats(T0 + 599).requests == 60 * 50


def test_p95_of_a_uniform_spread_is_close_to_its_95th_value():
    w = SlidingWindow(60)
    for ms in range(1, 1001):  # 1..1000 ms
        w.record(T0, Signal.SUCCESS, float(ms), authorize=True)
    p95 = w.stats(T0).p95_latency_ms
    assert 900 <= p95 <= 1000
    assert w.stats(T0).average_latency_ms == pytest.approx(500.5)


def test_p95_sees_a_slow_tail_of_more_than_five_percent():
    w = SlidingWindow(60)
    fill(w, T0, Signal.SUCCESS, 90, latency_ms=40)
    fill(w, T0, Signal.SUCCESS, 10, latency_ms=3_000)
    assert w.stats(T0).p95_latency_ms > 2_000


def test_p95_ignores_a_slow_tail_of_less_than_five_percent():
    w = SlidingWindow(60)
    fill(w, T0, Signal.SUCCESS, 97, latency_ms=40)
    fill(w, T0, Signal.SUCCESS, 3, latency_ms=3_000)
    assert w.stats(T0).p95_latency_ms <= 50


def test_p95_is_never_above_the_slowest_call():
    assert histogram_quantile([0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0], 0.95, 300.0) == 300.0
    w = SlidingWindow(60)
    fill(w, T0, Signal.SUCCESS, 20, latency_ms=40_000)  # beyond the last bound
    assert 32_000 < w.stats(T0).p95_latency_ms <= 40_000


def test_an_empty_window_has_no_latency_and_no_rates():
    stats = SlidingWindow(60).stats(T0)
    assert (stats.requests, stats.p95_latency_ms, stats.failure_rate, stats.success_rate) == (
        0,
        0.0,
        0.0,
        0.0,
    )


def test_a_retry_counts_against_the_budget_until_its_second_leaves_the_window():
    w = SlidingWindow(60)
    w.record_retry(T0)
    w.record_retry(T0 + 1)
    assert w.stats(T0 + 1).retries == 2
    assert w.stats(T0 + 60).retries == 1
    assert w.stats(T0 + 61).retries == 0


def test_clearing_forgets_everything():
    w = SlidingWindow(60)
    fill(w, T0, Signal.INFRA_FAILURE, 30)
    w.record_retry(T0)
    w.clear()
    stats = w.stats(T0)
    assert (stats.requests, stats.retries) == (0, 0)


# -- what a call says ---------------------------------------------------------------
def _err(**fields) -> ProcessorResponse:
    return ProcessorResponse(ResponseKind.ERROR, **fields)


@pytest.mark.parametrize(
    ("response", "lookup", "signal"),
    [
        (ProcessorResponse(ResponseKind.SUCCEEDED), False, Signal.SUCCESS),
        (ProcessorResponse(ResponseKind.REQUIRES_ACTION), False, Signal.SUCCESS),
        (_err(http_status=500, error_type="api_error"), False, Signal.INFRA_FAILURE),
        (_err(http_status=429, code="rate_limit"), False, Signal.INFRA_FAILURE),
        (ProcessorResponse(ResponseKind.CONNECTION_ERROR), False, Signal.INFRA_FAILURE),
        (ProcessorResponse(ResponseKind.NO_RESPONSE), False, Signal.INFRA_FAILURE),
        (ProcessorResponse(ResponseKind.NO_RESPONSE), True, Signal.INFRA_FAILURE),
        (
            _err(http_status=402, error_type="card_error", decline_code="generic_decline"),
            False,
            Signal.DECLINE,
        ),
        (
            _err(http_status=402, error_type="card_error", decline_code="insufficient_funds"),
            False,
            Signal.DECLINE,
        ),
        (_err(http_status=400, error_type="invalid_request_error"), False, Signal.OTHER),
        (ProcessorResponse(ResponseKind.NOT_CHARGED), True, Signal.OTHER),
        (ProcessorResponse(ResponseKind.NOT_FOUND), True, Signal.OTHER),
        (ProcessorResponse(ResponseKind.SUCCEEDED), True, Signal.OTHER),
        # A charge under way (Stripe's `processing`): not a failing processor.
        (ProcessorResponse(ResponseKind.PENDING), False, Signal.OTHER),
        (ProcessorResponse(ResponseKind.PENDING), True, Signal.OTHER),
    ],
)
def test_each_answer_says_what_it_says_about_health(response, lookup, signal):
    assert signal_of(response, classify(response), lookup=lookup) is signal


# -- the verdict ---------------------------------------------------------------------
POLICY = HealthPolicy(min_requests=20)


def stats_of(successes=0, failures=0, declines=0, latency_ms=50.0, policy=POLICY):
    w = SlidingWindow(policy.window_s)
    fill(w, T0, Signal.SUCCESS, successes, latency_ms)
    fill(w, T0, Signal.INFRA_FAILURE, failures, latency_ms)
    fill(w, T0, Signal.DECLINE, declines, latency_ms)
    return w.stats(T0)


def test_one_error_among_few_calls_does_not_flip_a_processor():
    verdict = assess(stats_of(failures=1), POLICY)
    assert verdict.state is HealthState.HEALTHY and "too few calls" in verdict.reason


def test_failures_at_the_degraded_threshold_degrade():
    assert assess(stats_of(successes=18, failures=2), POLICY).state is HealthState.DEGRADED
    assert assess(stats_of(successes=19, failures=1), POLICY).state is HealthState.HEALTHY


def test_failures_at_the_unhealthy_threshold_make_it_unhealthy():
    verdict = assess(stats_of(successes=10, failures=10), POLICY)
    assert verdict.state is HealthState.UNHEALTHY
    assert "infrastructure failures 50% >= 50%" in verdict.reason


@pytest.mark.parametrize("declines", [0, 1, 10, 100, 10_000])
def test_declines_neither_dilute_nor_add_to_the_failure_rate(declines):
    stats = stats_of(successes=17, failures=3, declines=declines)
    assert stats.failure_rate == pytest.approx(0.15)
    assert assess(stats, POLICY).state is HealthState.DEGRADED


def test_declines_alone_at_any_volume_leave_a_processor_healthy():
    stats = stats_of(declines=5_000)
    assert stats.decline_rate == 1.0
    assert assess(stats, POLICY).state is HealthState.HEALTHY


def test_latency_alone_degrades_then_makes_unhealthy():
    assert assess(stats_of(successes=20, latency_ms=2_500), POLICY).state is HealthState.DEGRADED
    verdict = assess(stats_of(successes=20, latency_ms=9_000), POLICY)
    assert verdict.state is HealthState.UNHEALTHY and "p95 latency" in verdict.reason


def test_a_degraded_processor_stays_degraded_while_its_failures_are_in_the_window():
    few = stats_of(successes=2, failures=2)
    assert assess(few, POLICY, HealthState.DEGRADED).state is HealthState.DEGRADED
    assert assess(few, POLICY, HealthState.HEALTHY).state is HealthState.HEALTHY
    gone = stats_of(successes=3)
    assert assess(gone, POLICY, HealthState.DEGRADED).state is HealthState.HEALTHY


def test_a_degraded_processor_stays_degraded_while_a_slow_call_is_in_the_window():
    few_slow = stats_of(successes=3, latency_ms=2_500)
    verdict = assess(few_slow, POLICY, HealthState.DEGRADED)
    assert verdict.state is HealthState.DEGRADED and "still in the window" in verdict.reason
    assert assess(few_slow, POLICY, HealthState.HEALTHY).state is HealthState.HEALTHY
    few_fast = stats_of(successes=3, latency_ms=1_999)
    assert assess(few_fast, POLICY, HealthState.DEGRADED).state is HealthState.HEALTHY


def test_enough_good_calls_clear_a_degraded_processor():
    stats = stats_of(successes=40, failures=1)
    assert assess(stats, POLICY, HealthState.DEGRADED).state is HealthState.HEALTHY


@pytest.mark.parametrize(
    "fields",
    [
        {"window_s": 0},
        {"min_requests": 0},
        {"degraded_failure_rate": 0.6, "unhealthy_failure_rate": 0.5},
        {"degraded_p95_ms": 9_000},
        {"cooldown_s": -1},
        {"half_open_probes": 0},
        {"retry_budget_ratio": 1.5},
        {"degraded_trial_every": -1},
    ],
)
def test_a_nonsensical_policy_is_refused(fields):
    with pytest.raises(InvalidHealthPolicy):
        HealthPolicy(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"window_s": 1},
        {"window_s": 3_600},
        {"min_requests": 1},
        {"degraded_failure_rate": 0.5, "unhealthy_failure_rate": 0.5},
        {"unhealthy_failure_rate": 1.0},
        {"cooldown_s": 0},
        {"half_open_probes": 1},
        {"retry_budget_ratio": 0.0, "retry_budget_min": 0},
        {"retry_budget_ratio": 1.0},
        {"degraded_trial_every": 0},
    ],
)
def test_a_policy_at_the_edge_of_each_range_is_taken(fields):
    HealthPolicy(**fields)


@pytest.mark.parametrize("cooldown_s", [float("nan"), float("inf"), 3_600.5])
def test_a_cooldown_that_would_keep_a_breaker_open_for_good_is_refused(cooldown_s):
    # The breaker half-opens once now >= opened + cooldown_s: never with NaN or infinity.
    with pytest.raises(InvalidHealthPolicy, match="cooldown_s"):
        HealthPolicy(cooldown_s=cooldown_s)


# -- the retry budget ----------------------------------------------------------------
def test_the_retry_budget_is_a_share_of_the_calls_with_a_floor():
    policy = HealthPolicy(retry_budget_ratio=0.1, retry_budget_min=10)
    assert retry_budget(stats_of(successes=50, policy=policy), policy) == 10
    assert retry_budget(stats_of(successes=1_000, policy=policy), policy) == 100


# -- the breaker ---------------------------------------------------------------------
def breaker(**fields) -> CircuitBreaker:
    return CircuitBreaker(HealthPolicy(**{"cooldown_s": 30, "half_open_probes": 3, **fields}))


def test_a_tripped_breaker_stays_open_for_its_cool_down_then_half_opens():
    b = breaker()
    assert b.trip(T0) is BreakerState.OPEN and b.retry_at == T0 + 30
    assert b.poll(T0 + 29.9) is None and not b.try_probe()
    assert b.poll(T0 + 30) is BreakerState.HALF_OPEN


def test_half_open_lets_a_few_probes_through_and_no_more():
    b = breaker()
    b.trip(T0)
    b.poll(T0 + 30)
    assert [b.try_probe() for _ in range(4)] == [True, True, True, False]


def test_enough_successful_probes_close_the_breaker():
    b = breaker()
    b.trip(T0)
    b.poll(T0 + 30)
    moves = []
    for _ in range(3):
        assert b.try_probe()
        moves.append(b.probe_result(T0 + 31, Signal.SUCCESS))
    assert moves == [None, None, BreakerState.CLOSED]
    assert b.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_for_another_cool_down():
    b = breaker()
    b.trip(T0)
    b.poll(T0 + 30)
    b.try_probe()
    b.probe_result(T0 + 31, Signal.SUCCESS)
    b.try_probe()
    assert b.probe_result(T0 + 32, Signal.INFRA_FAILURE) is BreakerState.OPEN
    assert b.retry_at == T0 + 62 and b.probe_successes == 0


def test_a_declined_probe_proves_nothing_and_frees_its_slot():
    b = breaker(half_open_probes=1)
    b.trip(T0)
    b.poll(T0 + 30)
    assert b.try_probe() and not b.try_probe()
    assert b.probe_result(T0 + 31, Signal.DECLINE) is None
    assert b.state is BreakerState.HALF_OPEN and b.try_probe()


def test_an_abandoned_probe_frees_its_slot():
    b = breaker(half_open_probes=1)
    b.trip(T0)
    b.poll(T0 + 30)
    assert b.try_probe()
    b.release_probe()
    assert b.try_probe()


def _opened_then_half_open_again() -> tuple[ManualClock, HealthTracker]:
    """A breaker that opened, let two probes through, re-opened on one of them, and
    is half-open again with two new probes in flight; the other old probe is still out."""
    clock = ManualClock()
    h = HealthTracker(
        HealthPolicy(min_requests=4, cooldown_s=30, half_open_probes=2), clock, processors=["a"]
    )
    for _ in range(4):
        h.record("a", Signal.INFRA_FAILURE, 0.1, authorize=True)
    clock.advance(31)
    assert [h.choose(["a"]).probe, h.choose(["a"]).probe] == [True, True]
    clock.advance(0.1)
    h.record("a", Signal.INFRA_FAILURE, 0.1, authorize=True, probe=True)
    assert h.breaker("a") is BreakerState.OPEN
    clock.advance(31)
    assert [h.choose(["a"]).probe, h.choose(["a"]).probe] == [True, True]
    return clock, h


def test_a_probe_from_an_earlier_half_open_period_frees_no_slot_of_this_one():
    clock, h = _opened_then_half_open_again()
    clock.advance(1)
    h.record("a", Signal.DECLINE, 40.0, authorize=True, probe=True)  # sent 40 s ago
    assert h.choose(["a"]) is None  # both of this period's slots still taken


def test_probes_from_an_earlier_half_open_period_cannot_close_the_breaker():
    clock, h = _opened_then_half_open_again()
    clock.advance(1)
    h.record("a", Signal.SUCCESS, 40.0, authorize=True, probe=True)
    h.record("a", Signal.SUCCESS, 40.0, authorize=True, probe=True)
    assert h.breaker("a") is BreakerState.HALF_OPEN
    h.record("a", Signal.SUCCESS, 0.5, authorize=True, probe=True)
    h.record("a", Signal.SUCCESS, 0.5, authorize=True, probe=True)
    assert h.breaker("a") is BreakerState.CLOSED  # this period's own probes close it
