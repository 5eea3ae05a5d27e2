"""The observing interceptor, traces, analytics and the ContractMonitor service, on a
real gRPC server in this process (port 0) with a manual clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from payments.contracts.v1 import contracts_pb2, monitor_pb2, monitor_pb2_grpc
from payments.installments.v1 import installments_pb2 as inst
from payments.installments.v1 import installments_pb2_grpc as inst_grpc
from payments.orchestrator.v1 import analytics_pb2, analytics_pb2_grpc
from payments.orchestrator.v1 import health_pb2 as hpb
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.plan.v1 import plan_pb2
from payments.result.v1 import result_pb2
from payorch.adapters.clock import ManualClock
from payorch.adapters.payment_metrics import PaymentMetrics
from payorch.adapters.tracing import OtelTracer, Tracing
from payorch.app.auth import Scope
from payorch.app.observability import NullObserver
from payorch.bootstrap import Container, bootstrap
from payorch.domain.contracts import MAX_ID_LEN, MAX_MESSAGE_LEN, ContractViolation, new_violation
from payorch.domain.retry import DEADLINE_RESERVE_MS, MIN_CALL_MS
from payorch.entrypoints.grpc.server import create_server
from payorch.observability_wiring import ObservabilityOptions
from payorch.settings import Settings
from tests.conftest import TEST_SECRETS_KEY
from tests.rich_status import field_violations

CREATE = "/payments.orchestrator.v1.PaymentOrchestrator/CreatePayment"


class Violations(NullObserver):
    """Wakes the test when a violation is recorded: no polling, no sleeping."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.finished: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def violation_recorded(self, contract_id, severity):
        self.seen.append(contract_id)
        self.changed.set()

    async def wait_for(self, contract_id: str) -> None:
        async with asyncio.timeout(10):
            while contract_id not in self.seen:
                self.changed.clear()
                await self.changed.wait()

    def rpc_finished(self, rpc, code, seconds):
        # The interceptor records a call's violations right after this, in the same step.
        self.finished.append((rpc, code))
        self.changed.set()

    async def wait_finished(self, rpc: str) -> list[str]:
        """The codes of `rpc`'s calls, once one has finished."""
        async with asyncio.timeout(10):
            while not any(r == rpc for r, _ in self.finished):
                self.changed.clear()
                await self.changed.wait()
        return [code for r, code in self.finished if r == rpc]


@dataclass
class Served:
    container: Container
    channel: grpc.aio.Channel
    keys: dict[str, str]
    clock: ManualClock
    violations: Violations
    registry: CollectorRegistry
    spans: InMemorySpanExporter | None = None
    stored: list[ContractViolation] = field(default_factory=list)

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.keys[who]}")]

    @property
    def payments(self) -> orch_grpc.PaymentOrchestratorStub:
        return orch_grpc.PaymentOrchestratorStub(self.channel)

    @property
    def monitor(self) -> monitor_pb2_grpc.ContractMonitorStub:
        return monitor_pb2_grpc.ContractMonitorStub(self.channel)

    @property
    def analytics(self) -> analytics_pb2_grpc.PaymentAnalyticsStub:
        return analytics_pb2_grpc.PaymentAnalyticsStub(self.channel)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def serving(
    database_url: str, *, traced: bool = False, **settings: object
) -> AsyncIterator[Served]:
    clock = ManualClock()
    violations = Violations()
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter() if traced else None
    tracing = None
    if exporter is not None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = Tracing(OtelTracer(provider.get_tracer("test")), provider.shutdown)
    options = ObservabilityOptions(
        observers=[violations], metrics=PaymentMetrics(registry), tracing=tracing
    )
    config = Settings(
        database_url=database_url,
        secrets_key=TEST_SECRETS_KEY,
        auth_cache_s=0,
        **settings,  # type: ignore[arg-type]
    )
    container = await bootstrap(config, clock=clock, observability=options)
    server, port, _ = create_server(container, "127.0.0.1:0")
    await server.start()
    keys = {}
    for who, merchant, scope in (
        ("m_1", "m_1", Scope.MERCHANT),
        ("m_2", "m_2", Scope.MERCHANT),
        ("ops", None, Scope.OPS),
    ):
        key = await container.api_keys.create(
            merchant_id=merchant, scope=scope, label=who, now=clock.now()
        )
        keys[who] = key.plaintext
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(container, channel, keys, clock, violations, registry, exporter)
    finally:
        await channel.close()
        await server.stop(None)
        await container.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'payorch.db'}"


def pay(request_id: str, **fields: object) -> orch.CreatePaymentRequest:
    values = {"amount_minor": 1999, "currency": "USD", "payment_method": "pm_card_visa", **fields}
    return orch.CreatePaymentRequest(request_id=request_id, **values)  # type: ignore[arg-type]


async def stored(s: Served, **filters: object) -> list[contracts_pb2.ContractViolation]:
    await s.container.observability.violations.flush()
    response = await s.monitor.ListContractViolations(
        monitor_pb2.ListContractViolationsRequest(**filters),  # type: ignore[arg-type]
        metadata=s.auth("ops"),
    )
    return list(response.violations)


# -- the interceptor ------------------------------------------------------------------
async def test_a_malformed_request_is_recorded_against_its_contract(sqlite_url):
    async with serving(sqlite_url) as s:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await s.payments.CreatePayment(pay("r-bad", currency="XYZ"), metadata=s.auth("m_1"))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        await s.violations.wait_for("input/currency")
        (v,) = await stored(s, contract_id="input/currency")
        assert (v.merchant_id, v.severity) == ("m_1", contracts_pb2.SEVERITY_WARNING)
        assert v.owner == "api" and "currency" in v.message
        # Under the payment's own request id, so a merchant's complaint about it finds it.
        assert v.request_id == "r-bad"
        assert s.metric("payorch_rpc_requests_total", rpc=CREATE, code="INVALID_ARGUMENT") == 1


async def test_a_payment_refused_for_its_request_id_is_recorded_under_the_callers_header(
    sqlite_url,
):
    async with serving(sqlite_url) as s:
        header = ("x-request-id", "trace-7")
        with pytest.raises(grpc.aio.AioRpcError):
            await s.payments.CreatePayment(pay("r" * 300), metadata=[*s.auth("m_1"), header])
        await s.violations.wait_for("input/request_id")
        (v,) = await stored(s, contract_id="input/request_id")
        assert v.request_id == "trace-7"


async def test_a_plan_accepted_with_a_currency_in_lower_case_is_recorded(database_url):
    async with serving(database_url) as s:
        plans = inst_grpc.InstallmentServiceStub(s.channel)
        made = await plans.CreateInstallmentPlan(
            inst.CreateInstallmentPlanRequest(
                request_id="plan-messy",
                order_id="order-1",
                total=plan_pb2.Money(amount_minor=10_000, currency="eur"),
                payment_method="pm_card_visa",
                customer_id="cus_buyer",
            ),
            metadata=s.auth("m_1"),
        )
        assert made.plan.total.currency == "EUR"
        await s.violations.wait_for("input/currency")
        (v,) = await stored(s, contract_id="input/currency")
    assert (v.merchant_id, v.request_id) == ("m_1", "plan-messy")
    assert v.severity == contracts_pb2.SEVERITY_INFO
    assert "total.currency" in v.message and "EUR" in v.message


async def test_garbage_bytes_are_recorded_as_a_malformed_request(sqlite_url):
    async with serving(sqlite_url) as s:
        call = s.channel.unary_unary(CREATE)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"\xff\xff\xff", metadata=[*s.auth("m_1"), ("x-request-id", "trace-42")])
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        await s.violations.wait_for("input/malformed")
        (v,) = await stored(s, contract_id="input/malformed")
        assert v.request_id == "trace-42" and "not a valid message" in v.message


async def test_an_x_request_id_holding_card_numbers_gives_way_to_a_fresh_id(sqlite_url):
    async with serving(sqlite_url) as s:
        call = s.channel.unary_unary(CREATE)
        header = ("x-request-id", "4242424242424242-4000056655665556")
        with pytest.raises(grpc.aio.AioRpcError):
            await call(b"\xff\xff\xff", metadata=[*s.auth("m_1"), header])
        await s.violations.wait_for("input/malformed")
        (v,) = await stored(s, contract_id="input/malformed")
        assert v.request_id.startswith("rpc_")


async def test_a_card_number_is_recorded_without_its_digits(sqlite_url):
    async with serving(sqlite_url) as s:
        with pytest.raises(grpc.aio.AioRpcError):
            await s.payments.CreatePayment(
                pay("r-card", payment_method="4242424242424242"), metadata=s.auth("m_1")
            )
        await s.violations.wait_for("input/card_number")
        (v,) = await stored(s, contract_id="input/card_number")
        assert v.severity == contracts_pb2.SEVERITY_CRITICAL
        assert "4242" not in str(v)


async def test_a_deadline_exceeded_call_is_recorded(sqlite_url):
    # The processor takes 2 s (real time); the caller gives 0.3 s.
    async with serving(sqlite_url, simulate="latency_ms=2000") as s:
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await s.payments.CreatePayment(pay("r-slow"), metadata=s.auth("m_1"), timeout=0.3)
        assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await s.violations.wait_for("rpc/deadline_exceeded")
        (v,) = await stored(s, contract_id="rpc/deadline_exceeded")
        assert (v.merchant_id, v.request_id) == ("m_1", "r-slow")
        assert s.metric("payorch_rpc_requests_total", rpc=CREATE, code="DEADLINE_EXCEEDED") == 1


async def test_a_payment_refused_for_the_callers_too_short_deadline_is_the_callers_not_ours(
    sqlite_url,
):
    """DEADLINE_TOO_SHORT: the caller left too little time for any processor call, and
    nothing was sent. Its own input, recorded as such; no deadline broken by payorch."""
    async with serving(sqlite_url) as s:
        too_short_s = (MIN_CALL_MS + DEADLINE_RESERVE_MS - 10) / 1000
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await s.payments.CreatePayment(
                pay("r-hasty"), metadata=s.auth("m_1"), timeout=too_short_s
            )
        assert refused.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert await s.violations.wait_finished(CREATE) == ["DEADLINE_EXCEEDED"]

        assert [v.contract_id for v in await stored(s)] == ["input/deadline"]
        (v,) = await stored(s, contract_id="input/deadline")
        assert (v.merchant_id, v.request_id, v.owner) == ("m_1", "r-hasty", "api")
        assert v.severity == contracts_pb2.SEVERITY_WARNING and "deadline" in v.message
        # Nothing was charged or stored: the same request with time pays.
        paid = await s.payments.CreatePayment(pay("r-hasty"), metadata=s.auth("m_1"))
        assert paid.payment.result.success and not paid.payment.replayed


async def test_a_call_over_the_latency_slo_is_recorded(sqlite_url):
    async with serving(sqlite_url, latency_slo_ms=100.0) as s:
        s.container.simulated["simulated"].inject("rate_limit", None)  # retry after 200-400 ms
        await s.payments.CreatePayment(pay("r-slo"), metadata=s.auth("m_1"))
        fast = await s.payments.CreatePayment(pay("r-fast"), metadata=s.auth("m_1"))
        assert fast.payment.result.success
        violations = await stored(s, contract_id="rpc/latency_slo")
        assert [v.request_id for v in violations] == ["r-slo"]
        assert "SLO 100 ms" in violations[0].message


async def test_an_unhandled_error_is_recorded_and_answered_internal(sqlite_url, monkeypatch):
    async with serving(sqlite_url) as s:

        async def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(s.container.payments, "get", broken)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await s.payments.GetPayment(
                orch.GetPaymentRequest(payment_id="pay_x"), metadata=s.auth("m_1")
            )
        assert failed.value.code() is grpc.StatusCode.INTERNAL
        await s.violations.wait_for("rpc/unhandled_exception")
        (v,) = await stored(s, contract_id="rpc/unhandled_exception")
        assert v.severity == contracts_pb2.SEVERITY_CRITICAL and "INTERNAL" in v.message


async def test_app_level_violations_plan_and_idempotency_are_recorded_once(sqlite_url):
    async with serving(sqlite_url) as s:
        with pytest.raises(grpc.aio.AioRpcError):  # 2 methods, the second one explicit: no cover
            await s.payments.CreatePayment(
                pay(
                    "r-plan",
                    payment_method="",
                    methods=[
                        orch.PaymentMethodInput(
                            method="card", token="pm_card_visa", amount_minor=5
                        ),
                    ],
                ),
                metadata=s.auth("m_1"),
            )
        await s.payments.CreatePayment(pay("r-dup"), metadata=s.auth("m_1"))
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await s.payments.CreatePayment(pay("r-dup", amount_minor=1), metadata=s.auth("m_1"))
        assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
        contracts = sorted(v.contract_id for v in await stored(s))
        assert contracts == ["idempotency/conflict", "plan/coverage"]


async def test_the_violation_list_filters_and_pages(sqlite_url):
    async with serving(sqlite_url) as s:
        for i in range(5):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await s.payments.CreatePayment(pay(f"r{i}", currency="XYZ"), metadata=s.auth("m_1"))
        with contextlib.suppress(grpc.aio.AioRpcError):
            await s.payments.CreatePayment(pay("r9", currency="XYZ"), metadata=s.auth("m_2"))
        await s.container.observability.violations.flush()
        seen, token = [], ""
        while True:
            page = await s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(
                    merchant_id="m_1", page_size=2, page_token=token
                ),
                metadata=s.auth("ops"),
            )
            seen += [v.id for v in page.violations]
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == len(set(seen)) == 5
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(), metadata=s.auth("m_1")
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_violation_page_is_cut_short_rather_than_outgrow_an_answer(sqlite_url):
    # An answer may be four times the request limit: 64 KiB here. Sixty violations
    # with the longest message and request id (some 1.3 KB each) do not fit one page
    # of 500; before, asking for them was RESOURCE_EXHAUSTED on every try.
    async with serving(sqlite_url, max_message_bytes=16384) as s:
        for i in range(60):
            s.container.observability.violations.record(
                new_violation(
                    f"v_{i:03d}",
                    "input/amount",
                    message="m" * MAX_MESSAGE_LEN,
                    request_id=f"{i:03d}" + "r" * (MAX_ID_LEN - 3),
                    merchant_id="m_1",
                    at=s.clock.now(),
                )
            )
            await s.container.observability.violations.flush()
        seen, pages, token = [], 0, ""
        while True:
            page = await s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(page_size=500, page_token=token),
                metadata=s.auth("ops"),
            )
            assert page.ByteSize() <= 4 * 16384
            seen += [v.id for v in page.violations]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert sorted(seen) == [f"v_{i:03d}" for i in range(60)]
        assert pages > 1


MONITOR = "/payments.contracts.v1.ContractMonitor/"
OUT_OF_RANGE = timestamp_pb2.Timestamp(seconds=-(10**13))
# Each ops-only RPC with a request an operator is refused for, field by field.
MALFORMED_FOR_OPS = {
    MONITOR + "ListContractViolations": monitor_pb2.ListContractViolationsRequest(
        page_size=-1, severity=99, page_token="not-a-token"
    ),
    MONITOR + "GenerateContractReport": monitor_pb2.GenerateContractReportRequest(
        since=OUT_OF_RANGE
    ),
    MONITOR + "GenerateRetrospective": monitor_pb2.GenerateRetrospectiveRequest(until=OUT_OF_RANGE),
    "/payments.orchestrator.v1.ProcessorHealth/GetProcessorHealth": (
        hpb.GetProcessorHealthRequest()
    ),
    "/payments.orchestrator.v1.ProcessorFaultInjection/SetSimulatedFaults": (
        hpb.SetSimulatedFaultsRequest(processor="simulated", faults="no_such_fault=1")
    ),
}
WITH_NUL = {
    MONITOR + "ListContractViolations": monitor_pb2.ListContractViolationsRequest(
        contract_id="a\x00b"
    ),
    MONITOR + "GenerateContractReport": monitor_pb2.GenerateContractReportRequest(
        merchant_id="a\x00b"
    ),
    "/payments.orchestrator.v1.ProcessorHealth/GetProcessorHealth": (
        hpb.GetProcessorHealthRequest(processor="a\x00b")
    ),
    "/payments.orchestrator.v1.ProcessorFaultInjection/SetSimulatedFaults": (
        hpb.SetSimulatedFaultsRequest(processor="simulated", faults="a\x00b")
    ),
}
OPS_ONLY = [*MALFORMED_FOR_OPS, "/payments.orchestrator.v1.ProcessorHealth/ListProcessorHealth"]


async def test_a_merchant_key_is_denied_every_ops_only_rpc_whatever_it_sends(sqlite_url):
    # Permission is decided before the request is read: a merchant learns nothing of
    # what these RPCs accept, and an operator still hears which field is wrong.
    async with serving(sqlite_url) as s:

        async def refusal(rpc: str, payload: bytes, who: str) -> grpc.StatusCode:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await s.channel.unary_unary(rpc)(payload, metadata=s.auth(who))
            return refused.value.code()

        to_ops = {
            rpc: await refusal(rpc, request.SerializeToString(), "ops")
            for rpc, request in MALFORMED_FOR_OPS.items()
        }
        sent = [
            *((rpc, "malformed", r.SerializeToString()) for rpc, r in MALFORMED_FOR_OPS.items()),
            *((rpc, "NUL", r.SerializeToString()) for rpc, r in WITH_NUL.items()),
            *((rpc, "garbage", b"\xff\xff\xff") for rpc in OPS_ONLY),
        ]
        to_merchant = {
            (rpc, kind): await refusal(rpc, payload, "m_1") for rpc, kind, payload in sent
        }
        faults = s.container.simulated["simulated"].simulation
    assert to_ops == dict.fromkeys(MALFORMED_FOR_OPS, grpc.StatusCode.INVALID_ARGUMENT)
    assert to_merchant == dict.fromkeys(to_merchant, grpc.StatusCode.PERMISSION_DENIED)
    assert faults.api_error == 0


# -- payments counted as they settle ----------------------------------------------------
async def test_payments_settled_after_create_payment_are_counted_once_on_the_database(
    database_url,
):
    # The payment writer and the repository say what the database holds of a payment as
    # they read and write it: a save that settles it counts it, a later one does not.
    async with serving(database_url) as s:
        sim = s.container.simulated["simulated"]
        waiting = (
            await s.payments.CreatePayment(
                pay("r-3ds", payment_method="pm_card_authenticationRequired"),
                metadata=s.auth("m_1"),
            )
        ).payment
        left = (
            await s.payments.CreatePayment(
                pay("r-left", payment_method="pm_card_authenticationRequired"),
                metadata=s.auth("m_1"),
            )
        ).payment
        assert s.metric("payorch_payments_total", status="requires_action") == 2

        stored = await s.container.payments.get(waiting.payment_id, "m_1")
        sim.complete_action(stored.steps[0].processor_payment_id)
        for _ in range(2):  # the client's retry settles nothing new
            confirmed = await s.payments.ConfirmPayment(
                orch.ConfirmPaymentRequest(payment_id=waiting.payment_id),
                metadata=s.auth("m_1"),
            )
        assert confirmed.payment.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
        assert s.metric("payorch_payments_settled_total", status="succeeded", via="confirm") == 1

        # The other customer never came back: given up after the hour, once.
        s.clock.advance(3601)
        assert await s.container.payments.reconcile_due() == 1
        s.clock.advance(24 * 3600)
        await s.container.payments.reconcile_due()
        assert (await s.container.payments.get(left.payment_id, "m_1")).status.value == (
            "cancelled"
        )
        assert s.metric("payorch_payments_settled_total", status="cancelled", via="expiry") == 1
        assert s.metric("payorch_payments_settled_total", status="succeeded", via="confirm") == 1


# -- traces ---------------------------------------------------------------------------
async def test_one_payment_is_one_trace_rpc_plan_step_attempts(sqlite_url):
    async with serving(sqlite_url, traced=True) as s:
        s.container.simulated["simulated"].inject("rate_limit", None)
        await s.payments.CreatePayment(pay("r-trace"), metadata=s.auth("m_1"))
        spans = s.spans.get_finished_spans()  # type: ignore[union-attr]
    by_id = {sp.context.span_id: sp for sp in spans}
    (rpc,) = [sp for sp in spans if sp.name.endswith("PaymentOrchestrator/CreatePayment")]
    (plan,) = [sp for sp in spans if sp.name == "payment.plan"]
    (step,) = [sp for sp in spans if sp.name == "payment.step"]
    attempts = [sp for sp in spans if sp.name == "processor.attempt"]
    assert rpc.parent is None
    assert by_id[plan.parent.span_id] is rpc
    assert by_id[step.parent.span_id] is plan
    assert [by_id[a.parent.span_id] for a in attempts] == [step, step]
    assert {sp.context.trace_id for sp in spans} == {rpc.context.trace_id}
    assert [a.attributes["payorch.error_code"] for a in attempts] == ["rate_limited", "none"]
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert plan.attributes["payment_id"].startswith("pay_")


async def test_tracing_is_off_unless_configured(sqlite_url):
    async with serving(sqlite_url) as s:
        assert not s.container.observability.tracing.enabled
        assert s.container.router.processors["simulated"] is s.container.simulated["simulated"]


# -- analytics and reports over the API -------------------------------------------------
def _ts(dt) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(dt)
    return t


async def test_get_payment_stats_holds_a_merchant_to_its_own(sqlite_url):
    async with serving(sqlite_url) as s:
        s.container.simulated["simulated"].inject("api_error", None)
        await s.payments.CreatePayment(pay("r1"), metadata=s.auth("m_1"))
        await s.payments.CreatePayment(pay("r2"), metadata=s.auth("m_2"))
        window = {
            "since": _ts(s.clock.now() - timedelta(hours=1)),
            "until": _ts(s.clock.now() + timedelta(hours=1)),
        }
        own = await s.analytics.GetPaymentStats(
            analytics_pb2.GetPaymentStatsRequest(**window), metadata=s.auth("m_1")
        )
        assert (own.stats.merchant_id, own.stats.payment_count) == ("m_1", 1)
        assert (own.stats.recovered_count, own.stats.recovery_share) == (1, 1.0)
        assert own.stats.average_retry_delay.ToMilliseconds() > 0
        everyone = await s.analytics.GetPaymentStats(
            analytics_pb2.GetPaymentStatsRequest(**window), metadata=s.auth("ops")
        )
        assert everyone.stats.payment_count == 2
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await s.analytics.GetPaymentStats(
                analytics_pb2.GetPaymentStatsRequest(merchant_id="m_2", **window),
                metadata=s.auth("m_1"),
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


# The longest merchant id there is; a longer one used to be cut to its first 64
# characters, and the figures were another merchant's.
LONGEST_MERCHANT = "m_" + "a" * 62


async def test_get_payment_stats_refuses_a_filter_no_merchant_or_processor_has(sqlite_url):
    async with serving(sqlite_url) as s:
        window = {
            "since": _ts(s.clock.now() - timedelta(hours=1)),
            "until": _ts(s.clock.now() + timedelta(hours=1)),
        }
        refused = {}
        for name, filters in {
            "longer": {"merchant_id": LONGEST_MERCHANT + "x"},
            "not an id": {"merchant_id": "m 1"},
            "processor": {"processor": "p" * 65},
            "order": {"since": window["until"], "until": window["since"]},
            # Blank is not empty: it answered for every merchant, or every processor.
            "blank merchant": {"merchant_id": "  "},
            "blank processor": {"processor": " \t"},
            # No processor name holds a comma: a list answered zeros.
            "processor list": {"processor": "simulated,stripe"},
        }.items():
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await s.analytics.GetPaymentStats(
                    analytics_pb2.GetPaymentStatsRequest(**{**window, **filters}),
                    metadata=s.auth("ops"),
                )
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            refused[name] = sorted(field_violations(bad.value))
        ok = await s.analytics.GetPaymentStats(
            analytics_pb2.GetPaymentStatsRequest(merchant_id=LONGEST_MERCHANT, **window),
            metadata=s.auth("ops"),
        )
    assert refused == {
        "longer": ["merchant_id"],
        "not an id": ["merchant_id"],
        "processor": ["processor"],
        "order": ["since"],
        "blank merchant": ["merchant_id"],
        "blank processor": ["processor"],
        "processor list": ["processor"],
    }
    assert ok.stats.merchant_id == LONGEST_MERCHANT


async def test_get_payment_stats_answers_zeros_for_a_processor_or_merchant_with_no_payments(
    sqlite_url,
):
    """A name no payment has is no mistake the server can tell: a processor removed from
    PAYORCH_PROCESSORS keeps its history, a merchant may have none in the window."""
    async with serving(sqlite_url) as s:
        await s.payments.CreatePayment(pay("r-stats-1"), metadata=s.auth("m_1"))
        window = {
            "since": _ts(s.clock.now() - timedelta(hours=1)),
            "until": _ts(s.clock.now() + timedelta(hours=1)),
        }
        answers = {
            name: (
                await s.analytics.GetPaymentStats(
                    analytics_pb2.GetPaymentStatsRequest(**window, **filters),
                    metadata=s.auth(who),
                )
            ).stats.payment_count
            for name, who, filters in [
                ("configured", "ops", {"processor": "simulated"}),
                ("retired", "ops", {"processor": "retired_processor"}),
                ("no payments", "ops", {"merchant_id": "m_none"}),
                # A merchant's own key: the field is optional, blank is its own.
                ("own, blank", "m_1", {"merchant_id": "  "}),
            ]
        }
    assert answers == {"configured": 1, "retired": 0, "no payments": 0, "own, blank": 1}


async def refused_fields(calls: dict[str, Awaitable[object]]) -> dict[str, list[str]]:
    """Each call must be INVALID_ARGUMENT: the fields its violations name, by call."""
    refused = {}
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        refused[name] = sorted(field_violations(err.value))
    return refused


async def test_violation_lists_and_reports_refuse_filters_they_would_cut_or_invert(sqlite_url):
    async with serving(sqlite_url) as s:
        now = s.clock.now()
        calls = {
            "list merchant": s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(merchant_id=LONGEST_MERCHANT + "x"),
                metadata=s.auth("ops"),
            ),
            "list contract": s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(contract_id="input/" + "x" * 59),
                metadata=s.auth("ops"),
            ),
            # No contract id holds a space: blank or padded, it listed nothing.
            "list blank contract": s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(contract_id="  "),
                metadata=s.auth("ops"),
            ),
            "list padded contract": s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(contract_id=" input/currency"),
                metadata=s.auth("ops"),
            ),
            "list order": s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(
                    since=_ts(now), until=_ts(now - timedelta(hours=1))
                ),
                metadata=s.auth("ops"),
            ),
            "report merchant": s.monitor.GenerateContractReport(
                monitor_pb2.GenerateContractReportRequest(merchant_id=LONGEST_MERCHANT + "x"),
                metadata=s.auth("ops"),
            ),
        }
        refused = await refused_fields(calls)
    assert refused == {
        "list merchant": ["merchant_id"],
        "list contract": ["contract_id"],
        "list blank contract": ["contract_id"],
        "list padded contract": ["contract_id"],
        "list order": ["since"],
        "report merchant": ["merchant_id"],
    }


async def test_violations_of_a_contract_no_longer_in_the_catalog_are_still_listed(sqlite_url):
    """A contract id of the code's shape that today's catalog does not hold (retired)
    is listed, as is an empty answer for one nothing broke: only a filter no contract id
    can be is refused."""
    async with serving(sqlite_url) as s:
        s.container.observability.monitor.record("legacy/retired_check", "broken long ago")
        (v,) = await stored(s, contract_id="legacy/retired_check")
        assert v.contract_id == "legacy/retired_check"
        assert await stored(s, contract_id="router/never_broken") == []


OUT_OF_RANGE = timestamp_pb2.Timestamp(seconds=2**62)  # past year 9999: no datetime holds it


async def test_a_listing_or_report_wrong_in_every_field_is_told_about_every_field_at_once(
    database_url,
):
    async with serving(database_url) as s:
        plans = inst_grpc.InstallmentServiceStub(s.channel)
        bad = {"page_size": -1, "page_token": "not a token", "status": 999}
        calls = {
            "payments": s.payments.ListPayments(
                orch.ListPaymentsRequest(**bad, created_after=OUT_OF_RANGE), metadata=s.auth("m_1")
            ),
            "plans": plans.ListInstallmentPlans(
                inst.ListInstallmentPlansRequest(**bad), metadata=s.auth("m_1")
            ),
            "deliveries": plans.ListWebhookDeliveries(
                inst.ListWebhookDeliveriesRequest(**bad), metadata=s.auth("m_1")
            ),
            "violations": s.monitor.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(
                    page_size=-1, page_token="not a token", severity=999, since=OUT_OF_RANGE
                ),
                metadata=s.auth("ops"),
            ),
            "report": s.monitor.GenerateContractReport(
                monitor_pb2.GenerateContractReportRequest(
                    since=OUT_OF_RANGE, merchant_id="not an id"
                ),
                metadata=s.auth("ops"),
            ),
            "complaint": s.monitor.ReportMerchantComplaint(
                monitor_pb2.ReportMerchantComplaintRequest(
                    category="nope", text=" ", occurred_at=OUT_OF_RANGE
                ),
                metadata=s.auth("m_1"),
            ),
            "stats": s.analytics.GetPaymentStats(
                analytics_pb2.GetPaymentStatsRequest(since=OUT_OF_RANGE, processor="p" * 200),
                metadata=s.auth("m_1"),
            ),
            "retrospective": s.monitor.GenerateRetrospective(
                monitor_pb2.GenerateRetrospectiveRequest(since=OUT_OF_RANGE, until=OUT_OF_RANGE),
                metadata=s.auth("ops"),
            ),
        }
        refused = await refused_fields(calls)
    assert refused == {
        "stats": ["processor", "since"],
        "retrospective": ["since", "until"],
        "report": ["merchant_id", "since"],
        "complaint": ["category", "occurred_at", "text"],
        "payments": ["created_after", "page_size", "page_token", "status"],
        "plans": ["page_size", "page_token", "status"],
        "deliveries": ["page_size", "page_token", "status"],
        "violations": ["page_size", "page_token", "severity", "since"],
    }


YEAR_1 = -62135596800  # 0001-01-01T00:00:00Z, the first instant a Timestamp holds


async def test_a_default_window_that_would_begin_before_year_1_begins_at_it(database_url):
    # until = 0001-01-02: a week (or two) before it does not exist. The window is what
    # exists of it; it used to be INTERNAL (OverflowError).
    until = timestamp_pb2.Timestamp(seconds=YEAR_1 + 86_400)
    async with serving(database_url) as s:
        stats = await s.analytics.GetPaymentStats(
            analytics_pb2.GetPaymentStatsRequest(until=until), metadata=s.auth("m_1")
        )
        report = await s.monitor.GenerateContractReport(
            monitor_pb2.GenerateContractReportRequest(until=until), metadata=s.auth("ops")
        )
        retro = await s.monitor.GenerateRetrospective(
            monitor_pb2.GenerateRetrospectiveRequest(until=until), metadata=s.auth("ops")
        )
    assert stats.stats.since.seconds == report.since.seconds == YEAR_1
    assert retro.retrospective.since.seconds == YEAR_1
    assert stats.stats.payment_count == report.total == 0


async def test_get_payment_lists_every_attempt_with_what_the_processor_said(sqlite_url):
    async with serving(sqlite_url) as s:
        s.container.simulated["simulated"].inject("api_error", None)
        created = await s.payments.CreatePayment(pay("r-attempts"), metadata=s.auth("m_1"))
        got = await s.payments.GetPayment(
            orch.GetPaymentRequest(payment_id=created.payment.payment_id), metadata=s.auth("m_1")
        )
    attempts = got.payment.result.step_results[0].attempts
    assert [a.operation for a in attempts] == ["authorize", "lookup", "authorize"]
    first, _, retry = attempts
    assert (first.number, first.processor, first.raw.type, first.raw.http_status) == (
        1,
        "simulated",
        "api_error",
        500,
    )
    assert first.outcome == result_pb2.OUTCOME_SOFT
    assert first.error_code == result_pb2.ERROR_CODE_PROCESSOR_ERROR
    assert retry.delay_before_ms > 0 and retry.routing_reason and first.retry_decision
    assert got.payment.orchestration_ms >= retry.delay_before_ms - 1


async def test_contract_report_complaints_and_the_retrospective_over_the_api(database_url):
    async with serving(database_url) as s:
        for i in range(3):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await s.payments.CreatePayment(pay(f"r{i}", currency="XYZ"), metadata=s.auth("m_1"))
        await s.container.observability.violations.flush()
        s.clock.advance(1)  # windows end at "now", exclusive
        report = await s.monitor.GenerateContractReport(
            monitor_pb2.GenerateContractReportRequest(), metadata=s.auth("ops")
        )
        assert [(e.contract_id, e.count) for e in report.entries] == [("input/currency", 3)]
        complaint = await s.monitor.ReportMerchantComplaint(
            monitor_pb2.ReportMerchantComplaintRequest(
                category="payment_refused_by_plan",
                text="checkout refused, card 4242 4242 4242 4242",
            ),
            metadata=s.auth("m_2"),
        )
        assert complaint.complaint.merchant_id == "m_2"
        assert complaint.complaint.counted_as == "plan/coverage"
        assert "4242" not in complaint.complaint.text
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await s.monitor.ReportMerchantComplaint(
                monitor_pb2.ReportMerchantComplaintRequest(merchant_id="m_1", text="x"),
                metadata=s.auth("m_2"),
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        s.clock.advance(1)
        retro = await s.monitor.GenerateRetrospective(
            monitor_pb2.GenerateRetrospectiveRequest(), metadata=s.auth("ops")
        )
        entries = {e.contract_id: e for e in retro.retrospective.violations}
        assert (entries["input/currency"].count, entries["input/currency"].mismatch) == (3, False)
        assert (entries["plan/coverage"].external_reports, entries["plan/coverage"].mismatch) == (
            1,
            True,
        )
        assert [x.contract_id for x in retro.retrospective.escalations] == ["plan/coverage"]
        assert (
            "  - id: plan/coverage\n    count: 0\n    external_reports: 1\n    mismatch: true\n"
            in retro.yaml
        )
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await s.monitor.GenerateRetrospective(
                monitor_pb2.GenerateRetrospectiveRequest(), metadata=s.auth("m_1")
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_broken_span_exporter_costs_a_counter_and_the_payment_succeeds(sqlite_url):
    from opentelemetry.sdk.trace.export import SpanExporter

    from payorch.adapters.otel_export import CountingSpanExporter
    from tests.integration.helpers import core_request

    class Unreachable(SpanExporter):
        def export(self, spans):
            raise ConnectionError("collector down")

    registry = CollectorRegistry()
    metrics = PaymentMetrics(registry)
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(
            CountingSpanExporter(
                Unreachable(), lambda: metrics.observer_errors.labels("trace_export").inc()
            )
        )
    )
    options = ObservabilityOptions(
        metrics=metrics, tracing=Tracing(OtelTracer(provider.get_tracer("t")), provider.shutdown)
    )
    clock = ManualClock()
    container = await bootstrap(
        Settings(database_url=sqlite_url), clock=clock, observability=options
    )
    try:
        result = await container.payments.create(core_request("r-1"), deadline_s=None)
    finally:
        await container.close()
    assert result.payment.success
    # plan, step and attempt spans each failed to export
    assert (
        registry.get_sample_value("payorch_observer_errors_total", {"where": "trace_export"}) == 3
    )


def test_tracing_is_configured_by_name_only():
    from payorch.adapters.tracing import InvalidTracingConfig, build_tracing

    assert not build_tracing("").enabled
    console = build_tracing("console")
    assert console.enabled
    console.shutdown()
    try:
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
    except ImportError:  # the `otel` extra is not installed: the error says how to get it
        with pytest.raises(InvalidTracingConfig, match=r"payorch\[otel\]"):
            build_tracing("otlp", "http://127.0.0.1:4317")
    else:
        otlp = build_tracing("otlp", "http://127.0.0.1:4317")
        assert otlp.enabled
        otlp.shutdown()
    with pytest.raises(InvalidTracingConfig):
        build_tracing("jaeger")


def _at(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


@pytest.mark.parametrize(
    ("ago", "says"),
    [
        (None, "more than a year ago"),  # year 1
        (timedelta(days=365, seconds=1), "more than a year ago"),
        (timedelta(minutes=-6), "in the future"),
    ],
    ids=["year 1", "a year and a second ago", "six minutes ahead"],
)
async def test_a_complaint_about_a_time_outside_the_last_year_is_refused_on_occurred_at(
    database_url, ago, says
):
    async with serving(database_url) as s:
        when = timestamp_pb2.Timestamp(seconds=YEAR_1) if ago is None else _at(s.clock.now() - ago)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.monitor.ReportMerchantComplaint(
                monitor_pb2.ReportMerchantComplaintRequest(text="slow", occurred_at=when),
                metadata=s.auth("m_1"),
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        violations = field_violations(err.value)
        assert list(violations) == ["occurred_at"] and says in violations["occurred_at"]


async def test_a_complaint_about_a_year_ago_or_a_clock_slightly_ahead_is_taken(database_url):
    async with serving(database_url) as s:
        for offset in (timedelta(days=365), timedelta(minutes=-5)):
            when = _at(s.clock.now() - offset)
            taken = await s.monitor.ReportMerchantComplaint(
                monitor_pb2.ReportMerchantComplaintRequest(text="slow", occurred_at=when),
                metadata=s.auth("m_1"),
            )
            assert taken.complaint.occurred_at == when
