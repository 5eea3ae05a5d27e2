"""Prometheus metrics of payments, RPCs and contracts: the Observer port on prometheus-client.

Names in base units; labels bounded (rpc method, status code, payment status,
processor, contract, severity), never a merchant or payment id.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from payorch.adapters.metrics import Children
from payorch.app.observability import NullObserver, Via
from payorch.app.payment_observation import recovered
from payorch.domain.payment import Attempt, Payment
from payorch.domain.request import Severity

__all__ = ["PaymentMetrics", "PrometheusObserver", "default_payment_metrics", "recovered"]

RPC_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
ORCHESTRATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class PaymentMetrics:
    """Registered once per registry (the default one is what /metrics serves)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.registry = registry
        self.rpc_requests = Counter(
            "payorch_rpc_requests",
            "gRPC calls by method and final status code.",
            ["rpc", "code"],
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "payorch_rpc_duration_seconds",
            "Time to answer a gRPC call, by method.",
            ["rpc"],
            buckets=RPC_BUCKETS_S,
            registry=registry,
        )
        self.payments = Counter(
            "payorch_payments",
            "Payments whose CreatePayment ended, by the status it ended in (requires_action"
            " and unknown too: see payorch_payments_settled for how they settled).",
            ["status"],
            registry=registry,
        )
        self.payments_settled = Counter(
            "payorch_payments_settled",
            "Payments settled (out of processing, unknown and requires_action), once each,"
            " by the status they settled in and the call that settled them.",
            ["status", "via"],
            registry=registry,
        )
        self.reconciler_errors = Counter(
            "payorch_reconciler_errors",
            "Payments a reconciler pass could not work on (the work raised: a bug, data it"
            " could not read, a write refused), each backed off while the pass went on.",
            registry=registry,
        )
        self.retries = Counter(
            "payorch_retries",
            "Authorize calls that repeated an earlier one (same or another processor),"
            " counted when stored, whichever call made them.",
            ["processor"],
            registry=registry,
        )
        self.recoveries = Counter(
            "payorch_recoveries",
            "Payments that succeeded after a transient infrastructure failure, once each,"
            " when the call that made them so stored it.",
            registry=registry,
        )
        self.orchestration = Histogram(
            "payorch_orchestration_seconds",
            "Wall time the orchestrator spent on a payment.",
            buckets=ORCHESTRATION_BUCKETS_S,
            registry=registry,
        )
        self.validation_issues = Counter(
            "payorch_validation_issues",
            "Requests accepted with a non-fatal input issue, by contract.",
            ["contract"],
            registry=registry,
        )
        self.contract_violations = Counter(
            "payorch_contract_violations",
            "Contract violations recorded, by contract and severity.",
            ["contract", "severity"],
            registry=registry,
        )
        self.violations_dropped = Counter(
            "payorch_contract_violations_dropped",
            "Violations not stored: the write buffer was full or the write failed.",
            registry=registry,
        )
        self.retrospective_escalations = Counter(
            "payorch_retrospective_escalations",
            "Escalations of the retrospectives written (a contract merchants complain of "
            "more than its violations say), by contract and owner.",
            ["contract", "owner"],
            registry=registry,
        )
        self.observer_errors = Counter(
            "payorch_observer_errors",
            "Failures of metrics, logs, traces or violation writes; requests went on.",
            ["where"],
            registry=registry,
        )


_default: PaymentMetrics | None = None


def default_payment_metrics() -> PaymentMetrics:
    """The process-wide metrics on the default registry."""
    global _default
    if _default is None:
        _default = PaymentMetrics()
    return _default


class PrometheusObserver(NullObserver):
    """The Observer port (and ObserverErrors) as Prometheus metrics."""

    def __init__(self, metrics: PaymentMetrics) -> None:
        self._m = metrics
        self._payments = Children(metrics.payments)
        self._settled = Children(metrics.payments_settled)
        self._retries = Children(metrics.retries)
        self._validation_issues = Children(metrics.validation_issues)
        self._violations = Children(metrics.contract_violations)
        self._rpc_requests = Children(metrics.rpc_requests)
        self._rpc_duration = Children(metrics.rpc_duration)
        self._observer_errors = Children(metrics.observer_errors)

    def payment_finished(self, payment: Payment) -> None:
        self._payments(payment.status._value_).inc()
        if payment.orchestration_ms is not None:
            self._m.orchestration.observe(payment.orchestration_ms / 1000.0)

    def attempts_stored(self, payment: Payment, attempts: Sequence[Attempt]) -> None:
        for a in attempts:
            if a.operation == "authorize" and a.number > 1:
                self._retries(a.processor).inc()

    def payment_settled(self, payment: Payment, via: Via) -> None:
        # `_value_`: what `.value` returns, without the property's two Python calls.
        self._settled(payment.status._value_, via._value_).inc()

    def payment_recovered(self, payment: Payment) -> None:
        self._m.recoveries.inc()

    def reconcile_failed(self) -> None:
        self._m.reconciler_errors.inc()

    def validation_issue(self, contract_id: str) -> None:
        self._validation_issues(contract_id).inc()

    def violation_recorded(self, contract_id: str, severity: Severity) -> None:
        self._violations(contract_id, severity.value).inc()

    def violation_dropped(self) -> None:
        self._m.violations_dropped.inc()

    def rpc_finished(self, rpc: str, code: str, seconds: float) -> None:
        self._rpc_requests(rpc, code).inc()
        self._rpc_duration(rpc).observe(max(0.0, seconds))

    def observer_failed(self, where: str) -> None:
        self._observer_errors(where).inc()
