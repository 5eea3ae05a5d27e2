"""Prometheus metrics. Names in base units; labels bounded (processor, outcome, state),
never a merchant or payment id."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from payorch.domain.health import BreakerState, HealthState, Signal

# payorch_processor_health_state: 0 healthy, 1 degraded, 2 unhealthy.
HEALTH_STATE_VALUE = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2}
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class Metrics:
    """Every metric of the process, registered once in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self.processor_requests = Counter(
            "payorch_processor_requests",
            "Calls to a processor (authorize and lookup) by what they said about its health.",
            ["processor", "outcome"],
            registry=registry,
        )
        self.processor_latency = Histogram(
            "payorch_processor_latency_seconds",
            "Latency of calls to a processor.",
            ["processor"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.processor_health_state = Gauge(
            "payorch_processor_health_state",
            "Health of a processor on this replica: 0 healthy, 1 degraded, 2 unhealthy.",
            ["processor"],
            registry=registry,
        )
        self.processor_breaker_transitions = Counter(
            "payorch_processor_breaker_transitions",
            "Circuit breaker transitions of a processor, by the state entered.",
            ["processor", "to"],
            registry=registry,
        )
        self.processors_available = Gauge(
            "payorch_processors_available",
            "1 while some processor can take payments (not every breaker is open), else 0.",
            registry=registry,
        )
        self.database_up = Gauge(
            "payorch_database_up",
            "1 while the database answers this process's probes, 0 once it does not"
            " (readiness follows it).",
            registry=registry,
        )
        self.process_stalls = Histogram(
            "payorch_process_stall_seconds",
            "Times this process's event loop did not run for over a second (frozen, "
            "paused or blocked); processor calls spanning one are not counted against "
            "the processor's health.",
            buckets=(1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=registry,
        )
        # What the installment scheduler and the webhook dispatcher did, counted as each
        # pass ends (pass_metrics.py), in the process that ran the pass.
        self.scheduler_charges = Counter(
            "payorch_scheduler_charges",
            "Installment charges of the scheduler's passes, by what each came to.",
            ["outcome"],
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "payorch_webhook_deliveries",
            "Webhook delivery attempts and dead letters, by what each came to.",
            ["outcome"],
            registry=registry,
        )
        self.webhook_endpoints_disabled = Counter(
            "payorch_webhook_endpoints_disabled",
            "Webhook endpoints disabled: 410 Gone, or failing for days.",
            registry=registry,
        )
        # The payment writers' counters (a writer is tracked by bootstrap).
        self.payment_writes = PaymentWriteCollector()
        registry.register(self.payment_writes)


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A labelled metric's children, each looked up once: `labels()` validates its
    arguments and takes the metric's lock on every call, on the hot path of every
    payment. Labels are bounded (see the module docstring), so the cache is too."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


_default: Metrics | None = None


def default_metrics() -> Metrics:
    """The process-wide metrics on the default registry (what /metrics serves)."""
    global _default
    if _default is None:
        _default = Metrics()
    return _default


class PrometheusHealthObserver:
    """The health tracker's observer port, implemented with Prometheus metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._requests = Children(metrics.processor_requests)
        self._latency = Children(metrics.processor_latency)

    def call_recorded(self, processor: str, signal: Signal, latency_s: float) -> None:
        self._requests(processor, signal._value_).inc()
        self._latency(processor).observe(max(0.0, latency_s))

    def state_changed(self, processor: str, state: HealthState) -> None:
        self._m.processor_health_state.labels(processor).set(HEALTH_STATE_VALUE[state])

    def breaker_changed(self, processor: str, state: BreakerState) -> None:
        self._m.processor_breaker_transitions.labels(processor, state.value).inc()

    def availability_changed(self, available: bool) -> None:
        self._m.processors_available.set(1 if available else 0)


class TimedCommits(Protocol):
    """A writer's COMMIT durations (payment_writes.py CommitTimes), bucket by bucket, not
    cumulative: `counts[i]` for times up to `bounds[i]`, the last one for the rest."""

    bounds: tuple[float, ...]
    counts: list[int]
    sum_s: float


class CountedWriter(Protocol):
    """What the payment writers count (persistence/payment_writes.py)."""

    database: str
    batches: int
    writes: int
    stalls: int

    @property
    def commit_times(self) -> TimedCommits: ...


class PaymentWriteCollector(Collector):
    """The payment writers' counters, read when /metrics is scraped: nothing is
    added to a write. Tracks writers weakly: one per unit-of-work factory."""

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[CountedWriter] = weakref.WeakSet()

    def track(self, writer: CountedWriter) -> None:
        self._writers.add(writer)

    def collect(self) -> Iterator[Metric]:
        batches = CounterMetricFamily(
            "payorch_payment_write_batches",
            "Transactions the payment writer committed; each holds one or more writes.",
            labels=["database"],
        )
        writes = CounterMetricFamily(
            "payorch_payment_writes",
            "Payment writes committed (a payment makes two: its gate, then its result).",
            labels=["database"],
        )
        stalls = CounterMetricFamily(
            "payorch_payment_write_stalls",
            "Write batches still running past the stall threshold (PostgreSQL): the "
            "writes queued behind them went on another connection.",
            labels=["database"],
        )
        commits = HistogramMetricFamily(
            "payorch_payment_write_commit_seconds",
            "How long the payment writer's COMMITs took: the WAL fsync on SQLite, the "
            "round trip that waits for the WAL flush on PostgreSQL. A payment's answer "
            "waits for its COMMIT, so this tail is a floor under CreatePayment's.",
            labels=["database"],
        )
        totals: dict[str, list[int]] = {}
        times: dict[str, tuple[tuple[float, ...], list[int], list[float]]] = {}
        for writer in list(self._writers):
            t = totals.setdefault(writer.database, [0, 0, 0])
            t[0] += writer.batches
            t[1] += writer.writes
            t[2] += writer.stalls
            ct = writer.commit_times
            bounds, counts, total_s = times.setdefault(
                writer.database, (ct.bounds, [0] * len(ct.counts), [0.0])
            )
            for i, n in enumerate(ct.counts):
                counts[i] += n
            total_s[0] += ct.sum_s
        for database, (b, w, st) in sorted(totals.items()):
            batches.add_metric([database], b)
            writes.add_metric([database], w)
            stalls.add_metric([database], st)
            bounds, counts, total_s = times[database]
            running, buckets = 0, []
            for bound, n in zip((*map(floatToGoString, bounds), "+Inf"), counts, strict=True):
                running += n
                buckets.append((bound, running))
            commits.add_metric([database], buckets, total_s[0])
        yield batches
        yield writes
        yield stalls
        yield commits
