"""Processor health: a sliding window of call outcomes, a verdict, a circuit breaker.

Pure: time comes in as seconds on a monotonic scale; no clock, no I/O. Banks fail
loudly, networks fail quietly: a decline is the bank speaking through the processor
and is reported but never counted for or against the processor's health.
"""

from __future__ import annotations

import collections
import enum
import math
from dataclasses import dataclass, field

from payorch.domain.classification import is_infrastructure_failure
from payorch.domain.results import (
    Classification,
    ErrorCode,
    Outcome,
    ProcessorResponse,
    ResponseKind,
)


class HealthState(enum.Enum):
    HEALTHY = "healthy"
    # Still used, after the healthy ones, and never retried on a soft failure.
    DEGRADED = "degraded"
    # Its breaker is open (or probing): no traffic but probes.
    UNHEALTHY = "unhealthy"


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Signal(enum.Enum):
    """What one call says about the processor's health."""

    # The processor did what was asked: charged, or asked for customer action.
    SUCCESS = "success"
    # Timeout, 5xx, 429, dropped connection: the processor's infrastructure failed.
    INFRA_FAILURE = "infra_failure"
    # The bank refused: reported, neutral to health.
    DECLINE = "decline"
    # Any other answer (a refused request of ours, an answered lookup): neutral.
    OTHER = "other"


# Answers to a lookup: the processor's read path works, which says nothing about
# whether it can charge (the charge that failed was already counted).
_LOOKUP_ANSWERS = frozenset(
    {
        ResponseKind.SUCCEEDED,
        ResponseKind.AUTHORIZED,
        ResponseKind.REQUIRES_ACTION,
        ResponseKind.PENDING,
        ResponseKind.NOT_FOUND,
        ResponseKind.NOT_CHARGED,
        ResponseKind.DONE,
    }
)


def signal_of(response: ProcessorResponse, c: Classification, *, lookup: bool) -> Signal:
    if lookup and response.kind in _LOOKUP_ANSWERS:
        return Signal.OTHER
    if response.kind is ResponseKind.PENDING:
        # A charge under way (Stripe's `processing`: bank debits, some wallets) is the
        # processor answering, not failing; nor has it charged yet. Neutral: a burst of
        # them must not open the breaker. Its answer time still counts as latency.
        return Signal.OTHER
    if c.outcome in (Outcome.SUCCESS, Outcome.REQUIRES_ACTION):
        return Signal.SUCCESS
    if is_infrastructure_failure(c):
        return Signal.INFRA_FAILURE
    if response.error_type == "card_error":
        return Signal.DECLINE
    return Signal.OTHER


# Failures a stall of our own can cause: no answer in time, a connection the
# other end gave up on while we were not reading.
_STALL_FAILURES = frozenset({ErrorCode.TIMEOUT, ErrorCode.NETWORK_ERROR})


def signal_despite_short_deadline(signal: Signal, c: Classification) -> Signal:
    """The signal of a call whose timeout the caller's deadline cut short: running out
    of that time is the caller's haste, not the processor's failure, so it is neutral."""
    if signal is Signal.INFRA_FAILURE and c.error_code is ErrorCode.TIMEOUT:
        return Signal.OTHER
    return signal


def signal_despite_stall(signal: Signal, c: Classification) -> Signal:
    """The signal of a call during which this process was stalled: a timeout or a
    dropped connection may be the stall's doing, so it is neutral; an answer
    (a 5xx, a 429, a success) is the processor's own."""
    if signal is Signal.INFRA_FAILURE and c.error_code in _STALL_FAILURES:
        return Signal.OTHER
    return signal


class InvalidHealthPolicy(ValueError):
    pass


# An hour: an open breaker sends nothing this long at most before probing again.
MAX_COOLDOWN_S = 3_600.0


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Window, thresholds, breaker and retry budget. Defaults are documented in docs/health.md."""

    window_s: int = 60
    # Fewer calls than this in the window: too little evidence, the processor is HEALTHY.
    min_requests: int = 20
    degraded_failure_rate: float = 0.10
    unhealthy_failure_rate: float = 0.50
    degraded_p95_ms: float = 2_000.0
    unhealthy_p95_ms: float = 8_000.0
    # How long an open breaker sends nothing before half-open probes.
    cooldown_s: float = 30.0
    # Probes let through while half-open; this many successes close the breaker.
    half_open_probes: int = 3
    # Retries on one processor: at most this share of its authorize calls in the window...
    retry_budget_ratio: float = 0.10
    # ...but always at least this many, so a quiet processor can still retry a blip.
    retry_budget_min: int = 10
    # One in N requests a healthy processor would take goes to a degraded one configured
    # before it, so its health keeps being measured (0: never).
    degraded_trial_every: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.window_s <= 3_600:
            raise InvalidHealthPolicy("window_s must be 1..3600")
        if self.min_requests < 1:
            raise InvalidHealthPolicy("min_requests must be at least 1")
        if not 0.0 < self.degraded_failure_rate <= self.unhealthy_failure_rate <= 1.0:
            raise InvalidHealthPolicy(
                "need 0 < degraded_failure_rate <= unhealthy_failure_rate <= 1"
            )
        if not 0.0 < self.degraded_p95_ms <= self.unhealthy_p95_ms:
            raise InvalidHealthPolicy("need 0 < degraded_p95_ms <= unhealthy_p95_ms")
        # NaN or infinity (both read from the environment) would keep an opened
        # breaker open for good: the processor would never be probed again.
        if not 0.0 <= self.cooldown_s <= MAX_COOLDOWN_S:
            raise InvalidHealthPolicy(f"cooldown_s must be 0..{MAX_COOLDOWN_S:g} seconds")
        if self.half_open_probes < 1:
            raise InvalidHealthPolicy("half_open_probes must be at least 1")
        if not 0.0 <= self.retry_budget_ratio <= 1.0 or self.retry_budget_min < 0:
            raise InvalidHealthPolicy("retry budget: ratio 0..1 and a minimum >= 0")
        if self.degraded_trial_every < 0:
            raise InvalidHealthPolicy("degraded_trial_every cannot be negative")


# Upper bounds (ms) of the latency histogram kept per bucket; one overflow bin follows.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    10, 25, 50, 100, 250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000,
)  # fmt: skip


@dataclass(slots=True)
class _Bucket:
    """One second of calls: fixed-size counters and a fixed histogram."""

    second: int = -1
    requests: int = 0
    successes: int = 0
    infra_failures: int = 0
    declines: int = 0
    other: int = 0
    authorizes: int = 0
    retries: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))

    def reset(self, second: int) -> None:
        self.second = second
        self.requests = self.successes = self.infra_failures = self.declines = 0
        self.other = self.authorizes = self.retries = 0
        self.latency_sum_ms = self.latency_max_ms = 0.0
        for i in range(len(self.histogram)):
            self.histogram[i] = 0

    def count(self, signal: Signal, latency_ms: float, *, authorize: bool, bin_: int) -> None:
        """One call more."""
        self.requests += 1
        self.authorizes += authorize
        if signal is Signal.SUCCESS:
            self.successes += 1
        elif signal is Signal.INFRA_FAILURE:
            self.infra_failures += 1
        elif signal is Signal.DECLINE:
            self.declines += 1
        else:
            self.other += 1
        self.latency_sum_ms += latency_ms
        self.histogram[bin_] += 1

    def add(self, other: _Bucket, sign: int) -> None:
        """Add (sign 1) or take away (sign -1) another bucket's counts; not the max."""
        self.requests += sign * other.requests
        self.successes += sign * other.successes
        self.infra_failures += sign * other.infra_failures
        self.declines += sign * other.declines
        self.other += sign * other.other
        self.authorizes += sign * other.authorizes
        self.retries += sign * other.retries
        self.latency_sum_ms += sign * other.latency_sum_ms
        for i, n in enumerate(other.histogram):
            self.histogram[i] += sign * n


@dataclass(frozen=True, slots=True)
class WindowStats:
    window_s: int
    requests: int = 0
    successes: int = 0
    infra_failures: int = 0
    declines: int = 0
    other: int = 0
    authorizes: int = 0
    retries: int = 0
    average_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    max_latency_ms: float = 0.0

    @property
    def sample(self) -> int:
        """Calls that tested the processor: successes and infrastructure failures."""
        return self.successes + self.infra_failures

    @property
    def failure_rate(self) -> float:
        return self.infra_failures / self.sample if self.sample else 0.0

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests if self.requests else 0.0

    @property
    def decline_rate(self) -> float:
        return self.declines / self.requests if self.requests else 0.0


def _bin(latency_ms: float) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def histogram_quantile(counts: list[int], q: float, max_ms: float) -> float:
    """The q-quantile of a histogram over LATENCY_BOUNDS_MS, interpolated inside its
    bin (as Prometheus does) and never above the largest latency seen."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            low = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            high = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else max_ms
            return min(low + (high - low) * (rank - seen) / n, max_ms)
        seen += n
    return max_ms


class SlidingWindow:
    """The last `window_s` seconds of calls in a ring of per-second buckets.

    Memory is fixed by the window length, whatever the traffic: a bucket older than
    the window leaves the running totals and its slot is reused. Reading the window
    costs the same whatever its length (totals are kept as calls come and go).
    """

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self._ring = [_Bucket() for _ in range(window_s)]
        # Seconds of the buckets in the window, oldest first, and their sum.
        self._live: collections.deque[int] = collections.deque()
        self._total = _Bucket()
        # The largest latency in the window, while known (None: scan the live buckets).
        self._max_ms: float | None = 0.0
        # Bumped by every change of the counts (not by time): readers cache on it.
        self.changes = 0

    def __len__(self) -> int:
        return len(self._ring)

    def _expire(self, second: int) -> None:
        oldest = second - self.window_s + 1
        while self._live and self._live[0] < oldest:
            self._total.add(self._ring[self._live.popleft() % self.window_s], -1)
            self._max_ms = None

    def _current(self, now: float) -> _Bucket:
        second = math.floor(now)
        if self._live and second < self._live[-1]:
            second = self._live[-1]  # never write into the past
        self._expire(second)
        bucket = self._ring[second % self.window_s]
        if bucket.second != second:
            bucket.reset(second)
            self._live.append(second)
        return bucket

    def record(self, now: float, signal: Signal, latency_ms: float, *, authorize: bool) -> None:
        b = self._current(now)
        latency_ms = max(0.0, latency_ms)
        bin_ = _bin(latency_ms)
        b.count(signal, latency_ms, authorize=authorize, bin_=bin_)
        self._total.count(signal, latency_ms, authorize=authorize, bin_=bin_)
        b.latency_max_ms = max(b.latency_max_ms, latency_ms)
        if self._max_ms is not None:
            self._max_ms = max(self._max_ms, latency_ms)
        self.changes += 1

    def record_retry(self, now: float) -> None:
        self._current(now).retries += 1
        self._total.retries += 1
        self.changes += 1

    def clear(self) -> None:
        for b in self._ring:
            b.reset(-1)
        self._live.clear()
        self._total = _Bucket()
        self._max_ms = 0.0
        self.changes += 1

    def stats(self, now: float) -> WindowStats:
        self._expire(math.floor(now))
        t = self._total
        max_ms = self._max_ms
        if max_ms is None:
            max_ms = self._max_ms = max(
                (self._ring[s % self.window_s].latency_max_ms for s in self._live), default=0.0
            )
        return WindowStats(
            window_s=self.window_s,
            requests=t.requests,
            successes=t.successes,
            infra_failures=t.infra_failures,
            declines=t.declines,
            other=t.other,
            authorizes=t.authorizes,
            retries=t.retries,
            average_latency_ms=t.latency_sum_ms / t.requests if t.requests else 0.0,
            p95_latency_ms=histogram_quantile(list(t.histogram), 0.95, max_ms),
            max_latency_ms=max_ms,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    state: HealthState
    reason: str


def assess(
    stats: WindowStats, policy: HealthPolicy, previous: HealthState = HealthState.HEALTHY
) -> Verdict:
    """HEALTHY / DEGRADED / UNHEALTHY from the window. Each signal needs `min_requests`
    calls of evidence: the failure rate over the calls that tested the processor,
    the p95 latency over every call. Too few calls judge nothing: a processor is
    HEALTHY then, except that a DEGRADED one stays so while a failure or a slow call
    that degraded it is still in the window (it gets little traffic: its evidence
    would otherwise run out before it could be cleared or confirmed)."""
    rate, p95 = stats.failure_rate, stats.p95_latency_ms
    rated = stats.sample >= policy.min_requests
    timed = stats.requests >= policy.min_requests
    over = f"over {stats.sample} calls in {stats.window_s} s"
    for state, failure_rate, p95_ms in (
        (HealthState.UNHEALTHY, policy.unhealthy_failure_rate, policy.unhealthy_p95_ms),
        (HealthState.DEGRADED, policy.degraded_failure_rate, policy.degraded_p95_ms),
    ):
        if rated and rate >= failure_rate:
            return Verdict(
                state, f"infrastructure failures {rate:.0%} >= {failure_rate:.0%} {over}"
            )
        if timed and p95 >= p95_ms:
            return Verdict(
                state, f"p95 latency {p95:.0f} ms >= {p95_ms:.0f} ms over {stats.requests} calls"
            )
    if previous is HealthState.DEGRADED:
        # Cleared only by enough evidence, or once what degraded it has left the window.
        if not rated and stats.infra_failures:
            return Verdict(
                HealthState.DEGRADED,
                f"{stats.infra_failures} infrastructure failures still in the window, "
                f"too few calls to clear them ({stats.sample} < {policy.min_requests})",
            )
        if not timed and stats.max_latency_ms >= policy.degraded_p95_ms:
            return Verdict(
                HealthState.DEGRADED,
                f"a {stats.max_latency_ms:.0f} ms call still in the window, too few calls "
                f"to clear it ({stats.requests} < {policy.min_requests})",
            )
    if not timed:
        return Verdict(
            HealthState.HEALTHY,
            f"too few calls to judge ({stats.requests} < {policy.min_requests} "
            f"in {stats.window_s} s)",
        )
    return Verdict(
        HealthState.HEALTHY,
        f"infrastructure failures {rate:.0%}, p95 latency {p95:.0f} ms over {stats.requests} calls",
    )


def retry_budget(stats: WindowStats, policy: HealthPolicy) -> int:
    """Retries one processor may take in the window: a share of its authorize calls,
    never below the minimum. Retries cannot multiply the load of a failing processor."""
    return max(policy.retry_budget_min, math.floor(policy.retry_budget_ratio * stats.authorizes))


# Float slack when comparing a call's start (now - latency) with a state change.
_SAME_INSTANT_S = 0.001


@dataclass(slots=True)
class CircuitBreaker:
    """CLOSED -> OPEN (tripped) -> HALF_OPEN (after the cool-down) -> CLOSED (probes
    succeeded) or back to OPEN (a probe failed on infrastructure)."""

    policy: HealthPolicy
    state: BreakerState = BreakerState.CLOSED
    changed_at: float = 0.0
    probes_in_flight: int = 0
    probe_successes: int = 0

    @property
    def retry_at(self) -> float | None:
        """When an open breaker lets probes through."""
        if self.state is not BreakerState.OPEN:
            return None
        return self.changed_at + self.policy.cooldown_s

    def _move(self, state: BreakerState, now: float) -> BreakerState:
        self.state, self.changed_at = state, now
        self.probes_in_flight = self.probe_successes = 0
        return state

    def trip(self, now: float) -> BreakerState | None:
        if self.state is BreakerState.OPEN:
            return None
        return self._move(BreakerState.OPEN, now)

    def poll(self, now: float) -> BreakerState | None:
        """The cool-down is over: half-open."""
        retry_at = self.retry_at
        if retry_at is not None and now >= retry_at:
            return self._move(BreakerState.HALF_OPEN, now)
        return None

    def try_probe(self) -> bool:
        if self.state is not BreakerState.HALF_OPEN:
            return False
        if self.probes_in_flight + self.probe_successes >= self.policy.half_open_probes:
            return False
        self.probes_in_flight += 1
        return True

    def release_probe(self, *, started: float | None = None) -> None:
        """A probe ended without an answer that proves anything: free its slot. A probe
        sent before this half-open period began (`started`) holds none of its slots."""
        if self._earlier(started):
            return
        self.probes_in_flight = max(0, self.probes_in_flight - 1)

    def _earlier(self, started: float | None) -> bool:
        """Whether a call that started at `started` was sent before the current state."""
        return started is not None and started < self.changed_at - _SAME_INSTANT_S

    def probe_result(
        self, now: float, signal: Signal, *, started: float | None = None
    ) -> BreakerState | None:
        """A probe's answer: an infrastructure failure re-opens, enough successes close;
        a decline or other answer proves nothing and frees the slot.

        A probe sent before this half-open period began (`started`, on the same clock)
        was let through by an earlier one, which the breaker has left since: its answer
        holds no slot of this period and closes or re-opens nothing."""
        if self.state is not BreakerState.HALF_OPEN:
            return None
        if self._earlier(started):
            return None
        self.release_probe()
        if signal is Signal.INFRA_FAILURE:
            return self._move(BreakerState.OPEN, now)
        if signal is Signal.SUCCESS:
            self.probe_successes += 1
            if self.probe_successes >= self.policy.half_open_probes:
                return self._move(BreakerState.CLOSED, now)
        return None
