"""Per-processor health on this replica: windows, verdicts, breakers, routing choices.

Health is per replica, like an outlier detector: each process judges processors
from the calls it made itself, so nothing is shared and nothing can go stale in a
database. All time comes from the injected clock.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from payorch.app.ports import Clock
from payorch.domain.health import (
    BreakerState,
    CircuitBreaker,
    HealthPolicy,
    HealthState,
    Signal,
    SlidingWindow,
    WindowStats,
    assess,
    retry_budget,
    signal_despite_short_deadline,
    signal_despite_stall,
    signal_of,
)
from payorch.domain.results import Classification, ProcessorResponse

log = logging.getLogger("payorch.health")


class HealthObserver(Protocol):
    """Hears what the tracker sees (metrics, the grpc.health.v1 status). Must not block."""

    def call_recorded(self, processor: str, signal: Signal, latency_s: float) -> None: ...

    def state_changed(self, processor: str, state: HealthState) -> None: ...

    def breaker_changed(self, processor: str, state: BreakerState) -> None: ...

    def availability_changed(self, available: bool) -> None:
        """False when no processor can take payments (every breaker open)."""
        ...


@dataclass(frozen=True, slots=True)
class ProcessorHealth:
    """One processor's health as of `at`."""

    processor: str
    state: HealthState
    state_since: datetime
    reason: str
    breaker: BreakerState
    breaker_since: datetime
    # When an open breaker starts letting probes through.
    probes_from: datetime | None
    stats: WindowStats
    retry_budget: int
    at: datetime

    @property
    def retries_left(self) -> int:
        return max(0, self.retry_budget - self.stats.retries)


@dataclass(frozen=True, slots=True)
class Choice:
    """The processor to call next and why; `probe` when it is a half-open probe."""

    processor: str
    reason: str
    probe: bool = False


class _Tracked:
    def __init__(self, policy: HealthPolicy, now_wall: datetime) -> None:
        self.window = SlidingWindow(policy.window_s)
        self.breaker = CircuitBreaker(policy)
        self.state = HealthState.HEALTHY
        self.reason = "no calls yet"
        self.state_since = now_wall
        self.breaker_since = now_wall
        # Requests a degraded processor was passed over for, for its trial share.
        self.passed_over = 0
        # What the last verdict was drawn from: (window changes, second, state). The
        # same again gives the same verdict (routing asks once more per payment).
        self.assessed: tuple[int, int, HealthState] | None = None


class HealthTracker:
    def __init__(
        self,
        policy: HealthPolicy,
        clock: Clock,
        *,
        processors: Iterable[str] = (),
        observers: Sequence[HealthObserver] = (),
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._observers = list(observers)
        self._tracked: dict[str, _Tracked] = {}
        self._available = False
        for name in processors:
            self._get(name)

    # -- wiring ----------------------------------------------------------------
    def add_observer(self, observer: HealthObserver) -> None:
        """Add an observer and tell it the current states."""
        self._observers.append(observer)
        for name in self._tracked:
            state = self._evaluate(name).state
            self._notify(functools.partial(_tell_state, name=name, state=state), [observer])
        available = self._compute_available()
        self._notify(lambda o: o.availability_changed(available), [observer])

    def _get(self, name: str) -> _Tracked:
        tracked = self._tracked.get(name)
        if tracked is None:
            tracked = self._tracked[name] = _Tracked(self.policy, self._clock.now())
            self._notify(lambda o: o.state_changed(name, tracked.state))
            self._availability_may_have_changed()
        return tracked

    # -- reading ---------------------------------------------------------------
    @property
    def processors(self) -> list[str]:
        return list(self._tracked)

    def state(self, name: str) -> HealthState:
        return self._evaluate(name).state

    def breaker(self, name: str) -> BreakerState:
        return self._evaluate(name).breaker.state

    @property
    def available(self) -> bool:
        """Some processor can take a payment: not every breaker is open."""
        self.refresh()
        return self._compute_available()

    def snapshot(self, name: str) -> ProcessorHealth | None:
        if name not in self._tracked:
            return None
        t = self._evaluate(name)
        now = self._clock.monotonic()
        stats = t.window.stats(now)
        retry_at = t.breaker.retry_at
        wall = self._clock.now()
        probes_from = None if retry_at is None else wall + timedelta(seconds=retry_at - now)
        reason = t.reason
        if probes_from is not None:
            reason += f"; breaker open, probes from {probes_from:%H:%M:%S}"
        elif t.breaker.state is BreakerState.HALF_OPEN:
            reason += (
                f"; half-open: {t.breaker.probe_successes} of "
                f"{self.policy.half_open_probes} probes succeeded"
            )
        return ProcessorHealth(
            processor=name,
            state=t.state,
            state_since=t.state_since,
            reason=reason,
            breaker=t.breaker.state,
            breaker_since=t.breaker_since,
            probes_from=probes_from,
            stats=stats,
            retry_budget=retry_budget(stats, self.policy),
            at=wall,
        )

    def snapshots(self) -> list[ProcessorHealth]:
        return [s for name in self._tracked if (s := self.snapshot(name)) is not None]

    def refresh(self) -> None:
        """Apply what time alone changes (old calls leaving the window, cool-downs ending)."""
        for name in list(self._tracked):
            self._evaluate(name)

    # -- routing ---------------------------------------------------------------
    def choose(self, candidates: Sequence[str]) -> Choice | None:
        """The processor for the next call, from `candidates` in configured order:
        healthy ones and half-open probes first, degraded ones after (but for a
        trial share), open breakers never. None when no candidate can take it."""
        skipped: list[str] = []
        degraded: list[str] = []
        for name in candidates:
            t = self._evaluate(name)
            breaker = t.breaker
            if breaker.state is BreakerState.OPEN:
                skipped.append(f"{name} skipped: breaker open")
                continue
            if breaker.state is BreakerState.HALF_OPEN:
                if breaker.try_probe():
                    n = breaker.probes_in_flight + breaker.probe_successes
                    return Choice(
                        name,
                        _join(
                            skipped,
                            f"{name}: half-open probe {n} of {self.policy.half_open_probes} "
                            "after its cool-down",
                        ),
                        probe=True,
                    )
                skipped.append(f"{name} skipped: half-open, probes in flight")
                continue
            if t.state is HealthState.DEGRADED:
                degraded.append(name)
                continue
            if degraded:
                first = self._tracked[degraded[0]]
                first.passed_over += 1
                every = self.policy.degraded_trial_every
                if every and first.passed_over % every == 0:
                    return Choice(
                        degraded[0],
                        _join(
                            skipped,
                            f"{degraded[0]}: trial request to a degraded processor "
                            f"(1 in {every}) so its health keeps being measured",
                        ),
                    )
                return Choice(
                    name,
                    _join(skipped, f"{name}: healthy, preferred over degraded {degraded[0]}"),
                )
            return Choice(name, _join(skipped, f"{name}: healthy"))
        if degraded:
            return Choice(
                degraded[0],
                _join(skipped, f"{degraded[0]}: degraded, but no healthy processor can take it"),
            )
        return None

    def admit(self, name: str) -> Choice | None:
        """Whether a call that can wait for a later pass (the reconciler's lookup) may go
        to `name` now: with its breaker closed, yes; half-open, as one of its probes while
        one is free (answered, it proves nothing and frees the slot; an infrastructure
        failure re-opens the breaker); open, no (None)."""
        breaker = self._evaluate(name).breaker
        if breaker.state is BreakerState.CLOSED:
            return Choice(name, f"{name}: breaker closed")
        if breaker.state is BreakerState.HALF_OPEN and breaker.try_probe():
            return Choice(name, f"{name}: half-open probe after its cool-down", probe=True)
        return None

    def admits_from(self, names: Iterable[str]) -> datetime | None:
        """When the first of `names` lets a call through again: once its open breaker's
        cool-down ends. None when one may already (closed, or half-open)."""
        times: list[datetime] = []
        for name in names:
            report = self.snapshot(name)
            if report is None or report.probes_from is None:
                return None
            times.append(report.probes_from)
        return min(times, default=None)

    def may_retry(self, name: str) -> tuple[bool, str]:
        """Whether a retry on the same processor is allowed by its health and budget."""
        t = self._evaluate(name)
        if t.breaker.state is not BreakerState.CLOSED:
            return False, f"{name}'s breaker is {t.breaker.state.value}: no retry on it"
        stats = t.window.stats(self._clock.monotonic())
        budget = retry_budget(stats, self.policy)
        if stats.retries >= budget:
            return False, (
                f"retry budget of {name} spent: {stats.retries} retries for "
                f"{stats.authorizes} calls in {stats.window_s} s"
            )
        return True, ""

    # -- recording -------------------------------------------------------------
    def record(
        self,
        name: str,
        signal: Signal,
        latency_s: float,
        *,
        authorize: bool,
        probe: bool = False,
        started: float | None = None,
    ) -> None:
        """One call's answer. `started` (monotonic) tells a probe's half-open period;
        without it the call is taken to have started `latency_s` ago."""
        t = self._get(name)
        now = self._clock.monotonic()
        t.window.record(now, signal, latency_s * 1000.0, authorize=authorize)
        self._notify(lambda o: o.call_recorded(name, signal, latency_s))
        if probe:
            moved = t.breaker.probe_result(
                now, signal, started=now - latency_s if started is None else started
            )
            if moved is BreakerState.CLOSED:
                # A clean slate: the failures that opened it would trip it again at once.
                t.window.clear()
            elif moved is BreakerState.OPEN:
                t.reason = "a half-open probe failed"
            if moved is not None:
                self._breaker_moved(name, t, moved)
        self._evaluate(name)

    def record_answer(
        self,
        name: str,
        response: ProcessorResponse,
        c: Classification,
        latency_s: float,
        *,
        started: float,
        lookup: bool,
        authorize: bool | None = None,
        probe: bool = False,
        stalled_s: float = 0.0,
        cut_short: bool = False,
    ) -> None:
        """One call's answer, judged by what it says (signal_of): time this process was
        stalled (`stalled_s`) is left out of its latency, and a timeout or dropped
        connection then is not the processor's; nor is a timeout of a call the caller's
        deadline cut short. `started`: when it was sent (monotonic). `authorize`: whether
        it counts toward the retry budget's base (default: any call but a lookup; a
        capture, void or refund is neither)."""
        signal = signal_of(response, c, lookup=lookup)
        if stalled_s > 0.0:
            signal = signal_despite_stall(signal, c)
        if cut_short:
            signal = signal_despite_short_deadline(signal, c)
        self.record(
            name,
            signal,
            latency_s - stalled_s,
            authorize=not lookup if authorize is None else authorize,
            probe=probe,
            started=started,
        )

    def record_retry(self, name: str) -> None:
        self._get(name).window.record_retry(self._clock.monotonic())

    def abandon(self, name: str, *, probe: bool, started: float | None = None) -> None:
        """A call ended without an answer to judge (cancelled): free its probe slot,
        unless it was sent (`started`, monotonic) in an earlier half-open period."""
        if probe:
            self._get(name).breaker.release_probe(started=started)

    # -- transitions -----------------------------------------------------------
    def _evaluate(self, name: str) -> _Tracked:
        t = self._get(name)
        now = self._clock.monotonic()
        moved = t.breaker.poll(now)
        if moved is not None:
            self._breaker_moved(name, t, moved)
        if t.breaker.state is BreakerState.CLOSED:
            basis = (t.window.changes, math.floor(now), t.state)
            if basis == t.assessed:
                return t
            verdict = assess(t.window.stats(now), self.policy, t.state)
            if verdict.state is HealthState.UNHEALTHY:
                self._breaker_moved(name, t, t.breaker.trip(now))
            self._set_state(name, t, verdict.state, verdict.reason)
            t.assessed = (t.window.changes, math.floor(now), t.state)
        elif t.state is not HealthState.UNHEALTHY:
            self._set_state(name, t, HealthState.UNHEALTHY, t.reason)
        return t

    def _set_state(self, name: str, t: _Tracked, state: HealthState, reason: str) -> None:
        t.reason = reason
        if state is t.state:
            return
        t.state, t.state_since = state, self._clock.now()
        self._notify(lambda o: o.state_changed(name, state))

    def _breaker_moved(self, name: str, t: _Tracked, moved: BreakerState | None) -> None:
        if moved is None:
            return
        t.breaker_since = self._clock.now()
        self._notify(lambda o: o.breaker_changed(name, moved))
        self._availability_may_have_changed()

    def _availability_may_have_changed(self) -> None:
        available = self._compute_available()
        if available != self._available:
            self._available = available
            self._notify(lambda o: o.availability_changed(available))

    def _notify(
        self,
        tell: Callable[[HealthObserver], None],
        observers: Sequence[HealthObserver] | None = None,
    ) -> None:
        """Observers never break a payment: a failing one is logged and skipped."""
        for o in self._observers if observers is None else observers:
            try:
                tell(o)
            except Exception:
                log.exception("health observer %s failed", type(o).__name__)

    def _compute_available(self) -> bool:
        return any(t.breaker.state is not BreakerState.OPEN for t in self._tracked.values())


def _tell_state(observer: HealthObserver, *, name: str, state: HealthState) -> None:
    observer.state_changed(name, state)


def _join(skipped: list[str], chosen: str) -> str:
    return "; ".join([chosen, *skipped]) if skipped else chosen
