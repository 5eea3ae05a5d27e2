"""Wiring of metrics, logs, traces, the contract monitor, analytics and retrospectives,
called from bootstrap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.adapters.payment_log import LoggingObserver
from payorch.adapters.payment_metrics import (
    PaymentMetrics,
    PrometheusObserver,
    default_payment_metrics,
)
from payorch.adapters.persistence.contract_violations import (
    BufferedViolationWriter,
    SqlAlchemyViolationStore,
)
from payorch.adapters.persistence.payment_stats import SqlAlchemyPaymentStatsReader
from payorch.adapters.report_files import DirectoryReportArchive
from payorch.adapters.tracing import Tracing, build_tracing, traced
from payorch.app.analytics import PaymentAnalytics
from payorch.app.contract_monitor import ContractMonitor
from payorch.app.contract_reports import ContractReports
from payorch.app.observability import NullTracer, Observer, Observers, SafeTracer, Tracer
from payorch.app.payment_observation import PaymentObservation
from payorch.app.ports import Clock, Processor
from payorch.app.retrospective import RetrospectiveJob
from payorch.settings import Settings


@dataclass
class ObservabilityOptions:
    """What tests (and embedders) may swap: more observers, their own metrics registry,
    their own tracing (e.g. an SDK provider with an in-memory exporter)."""

    observers: Sequence[Observer] = ()
    metrics: PaymentMetrics | None = None
    tracing: Tracing | None = None


@dataclass
class ObservabilityApp:
    metrics: PaymentMetrics
    observers: Observers
    tracing: Tracing
    # The tracer the code uses: failures counted, never raised (a NullTracer when off).
    tracer: Tracer
    violations: BufferedViolationWriter
    monitor: ContractMonitor
    reports: ContractReports
    analytics: PaymentAnalytics
    payment_observation: PaymentObservation
    retrospective: RetrospectiveJob | None = None
    latency_slo_ms: float = 2000.0

    def traced(self, processors: Mapping[str, Processor]) -> dict[str, Processor]:
        """Processors whose calls are attempt spans, when tracing is on."""
        return traced(processors, self.tracer if self.tracing.enabled else None)

    async def close(self) -> None:
        """Store the violations still buffered, send the spans still batched."""
        await self.violations.flush()
        try:
            self.tracing.shutdown()
        except Exception:
            self.observers.failed("tracer")


def build_observability(
    settings: Settings,
    clock: Clock,
    engine: AsyncEngine,
    options: ObservabilityOptions | None = None,
) -> ObservabilityApp:
    options = options or ObservabilityOptions()
    metrics = options.metrics or default_payment_metrics()
    prometheus = PrometheusObserver(metrics)
    observers = Observers([prometheus, LoggingObserver(), *options.observers], errors=prometheus)
    tracing = options.tracing or build_tracing(
        settings.otel_exporter,
        settings.otel_endpoint,
        on_export_error=lambda: prometheus.observer_failed("trace_export"),
    )
    tracer: Tracer = SafeTracer(tracing.tracer, observers) if tracing.enabled else NullTracer()
    violations = BufferedViolationWriter(
        engine,
        capacity=settings.violation_buffer,
        on_dropped=lambda n: metrics.violations_dropped.inc(n),
        on_error=lambda: prometheus.observer_failed("violation_write"),
    )
    monitor = ContractMonitor(violations, clock, observers)
    reports = ContractReports(SqlAlchemyViolationStore(engine), clock)
    retrospective = None
    if settings.retrospective_dir:
        escalations = metrics.retrospective_escalations
        retrospective = RetrospectiveJob(
            reports,
            DirectoryReportArchive(settings.retrospective_dir),
            clock,
            on_escalation=lambda x: escalations.labels(x.contract_id, x.owner).inc(),
        )
    return ObservabilityApp(
        metrics=metrics,
        observers=observers,
        tracing=tracing,
        tracer=tracer,
        violations=violations,
        monitor=monitor,
        reports=reports,
        analytics=PaymentAnalytics(SqlAlchemyPaymentStatsReader(engine), clock),
        payment_observation=PaymentObservation(observers, monitor, tracer),
        retrospective=retrospective,
        latency_slo_ms=settings.latency_slo_ms,
    )
