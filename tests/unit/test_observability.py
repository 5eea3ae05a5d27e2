"""Observing payments never gets in their way: failures are counted, not raised."""

from __future__ import annotations

import contextlib
import json
import logging
import random

import pytest
from prometheus_client import CollectorRegistry

from payorch.adapters.clock import ManualClock
from payorch.adapters.payment_log import LoggingObserver
from payorch.adapters.payment_metrics import PaymentMetrics, PrometheusObserver, recovered
from payorch.adapters.persistence.contract_violations import BufferedViolationWriter
from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation
from payorch.app.contract_monitor import ContractMonitor, identify_call, reject_call
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.observability import NullObserver, Observer, Observers, SafeTracer
from payorch.app.payment_observation import PaymentObservation
from payorch.app.payments import HeldOtherwise, InvalidState, PaymentService
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.domain.contracts import new_violation
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Attempt, Payment, PaymentStatus, RawError
from payorch.domain.request import RawPaymentRequest, Severity, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse, ResponseKind
from payorch.domain.retry import RetryPolicy
from payorch.entrypoints.logs import JsonFormatter
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory
from tests.unit.test_payment_aggregate import T0, payment


class Broken(NullObserver):
    def payment_finished(self, payment):
        raise RuntimeError("metrics backend down")

    def validation_issue(self, contract_id):
        raise RuntimeError("metrics backend down")

    def violation_recorded(self, contract_id, severity):
        raise RuntimeError("metrics backend down")


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.finished = []
        self.issues = []
        self.violations = []

    def payment_finished(self, payment):
        self.finished.append(payment.status)

    def validation_issue(self, contract_id):
        self.issues.append(contract_id)

    def violation_recorded(self, contract_id, severity):
        self.violations.append((contract_id, severity))


class ErrorCounter:
    def __init__(self) -> None:
        self.where: list[str] = []

    def observer_failed(self, where: str) -> None:
        self.where.append(where)


class BrokenSink:
    def record(self, violation):
        raise OSError("disk full")


class ListSink:
    def __init__(self) -> None:
        self.violations = []

    def record(self, violation):
        self.violations.append(violation)
        return True


class BrokenTracer:
    def span(self, name, attributes=None):
        raise RuntimeError("exporter gone")


class RefusingOurParameters(SimulatedProcessor):
    """Refuses every charge as Stripe refuses a parameter payorch built (the amount)."""

    async def authorize(self, request):
        return ProcessorResponse(
            ResponseKind.ERROR,
            http_status=400,
            error_type="invalid_request_error",
            code="parameter_invalid_integer",
            param="amount",
            message="Invalid positive integer",
        )


class Service:
    def __init__(
        self,
        observation: PaymentObservation,
        clock: ManualClock,
        processor: type[SimulatedProcessor] = SimulatedProcessor,
    ) -> None:
        self.sim = processor("simulated", Simulation(), sleep=clock.sleep)
        router = Router({"simulated": self.sim}, clock, rng=random.Random(1))
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            clock,
            ["simulated"],
            defaults=MerchantConfig("", retry_policy=RetryPolicy(max_retries=1)),
        )
        self.service = PaymentService(
            FakeUnitOfWorkFactory(),
            router,
            clock,
            configs,
            Settlement(router.processors, clock),
            observation=observation,
        )

    async def pay(
        self, request_id="r1", method="credit-card", token="pm_card_visa", authorize_only=False
    ):
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=request_id,
                amount_minor=5000,
                currency="eur",
                payment_method=token,
                method=method,
                authorize_only=authorize_only,
            )
        )
        return (await self.service.create(core, deadline_s=None)).payment


def watched(
    processor: type[SimulatedProcessor] = SimulatedProcessor, *observers: Observer
) -> tuple[Service, ListSink]:
    """A service whose contract violations are kept in a list, its events heard by
    `observers`."""
    clock = ManualClock()
    sink = ListSink()
    heard = Observers(observers)
    observation = PaymentObservation(heard, ContractMonitor(sink, clock, heard))
    return Service(observation, clock, processor), sink


async def test_a_raising_observer_sink_and_tracer_cost_counters_and_the_payment_still_succeeds():
    clock = ManualClock()
    errors = ErrorCounter()
    recorder = Recorder()
    observers = Observers([Broken(), recorder], errors=errors)
    monitor = ContractMonitor(BrokenSink(), clock, observers)
    observation = PaymentObservation(observers, monitor, SafeTracer(BrokenTracer(), observers))
    s = Service(observation, clock)
    s.sim.inject("rate_limit", None)  # a retry, so the router goes through every path

    payment = await s.pay()

    assert payment.status is PaymentStatus.SUCCEEDED
    assert s.sim.ledger.charges_total == 1
    # The observer after the broken one still heard everything.
    assert recorder.finished == [PaymentStatus.SUCCEEDED]
    assert recorder.issues == ["input/currency", "input/method_alias"]
    assert {"payment_finished", "validation_issue", "contract_monitor", "tracer"} <= set(
        errors.where
    )


async def test_non_fatal_input_issues_are_counted_and_kept_as_info_violations():
    s, sink = watched(SimulatedProcessor, Recorder())

    await s.pay(request_id="r-alias")

    assert [(v.contract_id, v.severity, v.request_id, v.merchant_id) for v in sink.violations] == [
        ("input/currency", Severity.INFO, "r-alias", "m_1"),
        ("input/method_alias", Severity.INFO, "r-alias", "m_1"),
    ]
    assert "normalized to EUR" in sink.violations[0].message


async def test_a_request_the_processor_calls_invalid_is_recorded_against_its_contract():
    s, sink = watched(RefusingOurParameters)

    payment = await s.pay(method="card")

    assert payment.status is PaymentStatus.FAILED
    found = [v for v in sink.violations if v.contract_id.startswith("processor/")]
    assert [v.contract_id for v in found] == ["processor/invalid_request"]
    assert payment.id in found[0].message


async def test_a_payment_method_the_caller_named_that_does_not_exist_is_no_violation_of_ours():
    recorder = Recorder()
    s, sink = watched(SimulatedProcessor, recorder)

    payment = await s.pay(method="card", token="pm_missing_card")

    # The caller's mistake, told to the caller: failed, with a code it can act on.
    assert payment.status is PaymentStatus.FAILED
    assert payment.final_error is ErrorCode.PAYMENT_METHOD_NOT_FOUND
    assert [v.contract_id for v in sink.violations if v.contract_id.startswith("processor/")] == []
    assert [c for c, _ in recorder.violations if c.startswith("processor/")] == []


def test_a_call_scope_gives_violations_their_ids_and_remembers_them():
    clock = ManualClock()
    sink = ListSink()
    monitor = ContractMonitor(sink, clock, Observers())
    with monitor.call("rpc_1") as scope:
        identify_call(merchant_id="m_9")
        reject_call([])
        monitor.record("input/malformed", "bad")
    monitor.record("input/malformed", "outside any call")
    assert [(v.request_id, v.merchant_id) for v in sink.violations] == [("rpc_1", "m_9"), ("", "")]
    assert scope.recorded == sink.violations[:1]


def test_a_span_error_never_replaces_the_traced_codes_own_error():
    errors = ErrorCounter()

    class ExplodingExit:
        @contextlib.contextmanager
        def span(self, name, attributes=None):
            yield NullSpan()
            raise RuntimeError("span end failed")

    class NullSpan:
        def set_attribute(self, key, value):
            raise RuntimeError("no attributes today")

    tracer = SafeTracer(ExplodingExit(), Observers(errors=errors))
    with pytest.raises(KeyError), tracer.span("x") as span:
        span.set_attribute("a", 1)
        raise KeyError("the real error")
    with tracer.span("y"):
        pass
    assert errors.where == ["tracer", "tracer"]


async def test_prometheus_counts_payments_retries_and_recoveries():
    clock = ManualClock()
    registry = CollectorRegistry()
    metrics = PaymentMetrics(registry)
    observers = Observers([PrometheusObserver(metrics)])
    s = Service(PaymentObservation(observers), clock)
    s.sim.inject("rate_limit", None)
    await s.pay(request_id="r1")
    await s.pay(request_id="r2", method="card", token="pm_card_chargeDeclined")

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    assert value("payorch_payments_total", status="succeeded") == 1
    assert value("payorch_payments_total", status="failed") == 1
    assert value("payorch_retries_total", processor="simulated") == 1
    assert value("payorch_recoveries_total") == 1
    assert value("payorch_validation_issues_total", contract="input/currency") == 2
    assert value("payorch_orchestration_seconds_count") == 2


def test_the_log_line_of_a_finished_payment_carries_its_ids(caplog):
    logger = logging.getLogger("payorch.test.payments")
    observer = LoggingObserver(logger)

    class P:
        id, merchant_id, request_id = "pay_1", "m_1", "req-1"
        status = PaymentStatus.SUCCEEDED
        steps: list = []
        orchestration_ms = 42
        final_error = ErrorCode.NONE

    with caplog.at_level(logging.INFO, logger="payorch.test.payments"):
        observer.payment_finished(P())  # type: ignore[arg-type]
    (rec,) = caplog.records
    line = json.loads(JsonFormatter().format(rec))
    assert line["msg"].startswith("payment succeeded")
    assert (line["payment_id"], line["merchant_id"], line["request_id"]) == (
        "pay_1",
        "m_1",
        "req-1",
    )


def _violation(i: int):
    return new_violation(
        f"cv_{i}",
        "input/amount",
        message="m",
        request_id="r",
        merchant_id="m",
        at=ManualClock().now(),
    )


def test_a_full_violation_buffer_drops_and_counts_without_waiting():
    writer = BufferedViolationWriter(None, capacity=2)  # type: ignore[arg-type]
    assert [writer.record(_violation(i)) for i in range(3)] == [True, True, False]
    assert writer.dropped == 1 and len(writer) == 2


async def test_a_failed_violation_write_is_dropped_and_counted(tmp_path):
    from payorch.adapters.persistence.engine import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")  # never migrated
    dropped, errors = [], []
    writer = BufferedViolationWriter(
        engine, on_dropped=dropped.append, on_error=lambda: errors.append(1)
    )
    try:
        writer.record(_violation(1))
        assert await writer.flush() == 0
    finally:
        await engine.dispose()
    assert dropped == [1] and errors == [1] and len(writer) == 0


def _finished(status: PaymentStatus, *attempts: tuple[str, Outcome, ErrorCode]) -> Payment:
    p = payment(1000)
    p.status = status
    p.steps[0].attempts = [
        Attempt(i + 1, "a", f"k{i}", T0, T0, 1, outcome, code, RawError(), operation=operation)
        for i, (operation, outcome, code) in enumerate(attempts)
    ]
    return p


A_500 = ("authorize", Outcome.SOFT, ErrorCode.PROCESSOR_ERROR)
TOOK_IT = ("authorize", Outcome.SUCCESS, ErrorCode.NONE)


def test_the_recoveries_metric_counts_what_get_payment_stats_counts():
    # Took money after an infrastructure failure: a partial split too, as in the stats.
    assert recovered(_finished(PaymentStatus.SUCCEEDED, A_500, TOOK_IT))
    assert recovered(_finished(PaymentStatus.PARTIALLY_SUCCEEDED, A_500, TOOK_IT))
    assert not recovered(_finished(PaymentStatus.FAILED, A_500))
    assert not recovered(_finished(PaymentStatus.SUCCEEDED, TOOK_IT))
    # A void's failure is no failure to take the money.
    void_500 = ("void", Outcome.SOFT, ErrorCode.PROCESSOR_ERROR)
    assert not recovered(_finished(PaymentStatus.PARTIALLY_SUCCEEDED, TOOK_IT, void_500))
    # Nor is the failed lookup settlement makes after it: it asked about the void.
    lookup_500 = ("lookup", Outcome.SOFT, ErrorCode.PROCESSOR_ERROR)
    assert not recovered(
        _finished(PaymentStatus.PARTIALLY_SUCCEEDED, TOOK_IT, void_500, lookup_500)
    )
    # A capture takes the money: one that failed and went through on a retry recovered.
    capture_500 = ("capture", Outcome.SOFT, ErrorCode.PROCESSOR_ERROR)
    captured = ("capture", Outcome.SUCCESS, ErrorCode.NONE)
    assert recovered(_finished(PaymentStatus.SUCCEEDED, TOOK_IT, capture_500, captured))


class RefundsTimingOut(SimulatedProcessor):
    """Takes payments; its refunds go unanswered (the call timed out)."""

    async def refund(self, processor_payment_id, amount_minor, idempotency_key, *, currency):
        return ProcessorResponse(ResponseKind.NO_RESPONSE, exception="Timeout")


async def test_a_processor_call_after_the_payment_was_created_is_checked_against_its_contracts():
    s, sink = watched(RefundsTimingOut)
    payment = await s.pay(method="card")
    assert payment.status is PaymentStatus.SUCCEEDED
    assert [v for v in sink.violations if v.contract_id == "router/timeout"] == []

    await s.service.refund(payment.id, "m_1", amount_minor=1000, request_id="rf-1")
    # Asked again under the same id: the refund that timed out is looked for first.
    await s.service.refund(payment.id, "m_1", amount_minor=1000, request_id="rf-1")

    # Each unanswered refund is one router/timeout, recorded once, for its payment: a
    # refund, capture, void or lookup breaks contracts as an authorize does.
    timeouts = [v for v in sink.violations if v.contract_id == "router/timeout"]
    assert [v.message.split(": ")[0] for v in timeouts] == [
        f"payment {payment.id} step 0",
        f"payment {payment.id} step 0",
    ]
    assert all("refund on simulated" in v.message for v in timeouts)
    assert {(v.merchant_id, v.request_id) for v in timeouts} == {("m_1", "r1")}


async def test_a_capture_or_void_that_lost_to_the_processors_own_change_is_no_violation():
    # A hold lapses (7 days), or another call or the dashboard captured or released it
    # first: the processor calls the capture or void "unexpected state", settlement
    # looks it up and records what it holds. Not a request of ours it calls invalid.
    s, sink = watched()
    lapsed = await s.pay(request_id="r-lapsed", method="card", authorize_only=True)
    captured = await s.pay(request_id="r-captured", method="card", authorize_only=True)
    for p, status in ((lapsed, "canceled"), (captured, "succeeded")):
        assert p.status is PaymentStatus.AUTHORIZED
        s.sim.ledger.by_id[p.steps[0].processor_payment_id].status = status

    with pytest.raises(InvalidState):
        await s.service.capture(lapsed.id, "m_1")
    with contextlib.suppress(HeldOtherwise):
        await s.service.cancel(captured.id, "m_1", "customer left")

    calls = [
        a.operation
        for p in (lapsed, captured)
        for a in (await s.service.get(p.id, "m_1")).steps[0].attempts
    ]
    assert calls == ["authorize", "capture", "lookup", "authorize", "void", "lookup"]
    assert [v.contract_id for v in sink.violations if v.contract_id.startswith("processor/")] == []


class LookupsTimingOut(SimulatedProcessor):
    """Its lookups go unanswered once `down` is set."""

    down = False

    async def lookup(self, request, processor_payment_id):
        if self.down:
            return ProcessorResponse(ResponseKind.NO_RESPONSE, exception="Timeout")
        return await super().lookup(request, processor_payment_id)


async def test_a_reconciler_lookup_that_timed_out_is_a_router_timeout_once():
    s, sink = watched(LookupsTimingOut)
    s.sim.inject("timeout", "timeout")  # no answer to the authorize, nor to its retry
    payment = await s.pay(method="card")
    assert payment.status is PaymentStatus.UNKNOWN
    at_create = [v for v in sink.violations if v.contract_id == "router/timeout"]
    assert len(at_create) == 2

    s.sim.down = True
    for _ in range(2):  # two passes of the reconciler, each asking once
        assert not await s.service.reconcile(await s.service.get(payment.id, None))

    lookups = [v for v in sink.violations if v.contract_id == "router/timeout"][2:]
    assert [("lookup on simulated" in v.message, v.request_id) for v in lookups] == [
        (True, "r1"),
        (True, "r1"),
    ]
