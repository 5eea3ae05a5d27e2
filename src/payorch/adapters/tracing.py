"""OpenTelemetry traces, only when configured (PAYORCH_OTEL_EXPORTER=console|otlp).

opentelemetry is imported here and only when tracing is switched on, so a server
without the packages runs as before. Spans: the gRPC call (interceptor) -> the
plan -> each step -> each processor call (an attempt, via TracedProcessor).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from payorch.app.observability import AttributeValue, NullTracer, Span, Tracer
from payorch.app.ports import ChargeRequest, Processor
from payorch.domain.classification import classify
from payorch.domain.results import ChargeRefunds, ProcessorResponse

EXPORTERS = ("console", "otlp")


class InvalidTracingConfig(ValueError):
    pass


class OtelTracer:
    """The Tracer port on an OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> AbstractContextManager[Span]:
        cm: AbstractContextManager[Span] = self._tracer.start_as_current_span(
            name, attributes=dict(attributes or {})
        )
        return cm


@dataclass
class Tracing:
    tracer: Tracer
    shutdown: Callable[[], None]

    @property
    def enabled(self) -> bool:
        return not isinstance(self.tracer, NullTracer)


def check_exporter(exporter: str) -> str:
    """`exporter` normalized ("" for none): InvalidTracingConfig when it names no exporter
    or its packages are not installed. Cheap, so checked before the database is opened."""
    exporter = exporter.strip().lower()
    if not exporter:
        return ""
    if exporter not in EXPORTERS:
        raise InvalidTracingConfig(
            f"PAYORCH_OTEL_EXPORTER={exporter[:40]!r}: use one of {', '.join(EXPORTERS)}"
        )
    needed = "opentelemetry.sdk.trace"
    if exporter == "otlp":
        needed = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    try:
        importlib.import_module(needed)
    except ImportError as exc:
        raise InvalidTracingConfig(
            f"PAYORCH_OTEL_EXPORTER={exporter}: tracing needs the otel extra:"
            " pip install 'payorch[otel]'"
        ) from exc
    return exporter


def build_tracing(
    exporter: str,
    endpoint: str = "",
    *,
    on_export_error: Callable[[], None] = lambda: None,
    service_name: str = "payorch",
) -> Tracing:
    """No tracing when `exporter` is empty; else spans batched to the console or OTLP."""
    exporter = check_exporter(exporter)
    if not exporter:
        return Tracing(NullTracer(), lambda: None)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from payorch.adapters.otel_export import CountingSpanExporter

    inner: Any
    if exporter == "console":
        # stderr: stdout's first line says where the server listens.
        inner = ConsoleSpanExporter(out=sys.stderr)
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        inner = OTLPSpanExporter(endpoint=endpoint or None)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(CountingSpanExporter(inner, on_export_error)))
    return Tracing(OtelTracer(provider.get_tracer("payorch")), provider.shutdown)


def _annotate(span: Span, response: ProcessorResponse) -> None:
    c = classify(response)
    span.set_attribute("payorch.outcome", c.outcome.value)
    span.set_attribute("payorch.error_code", c.error_code.value)
    if response.http_status:
        span.set_attribute("http.response.status_code", response.http_status)


class TracedProcessor:
    """A processor whose every call is an `attempt` span (the router's and settlement's)."""

    def __init__(self, inner: Processor, tracer: Tracer) -> None:
        self.name = inner.name
        self.inner = inner
        self._tracer = tracer

    def _span(self, operation: str, **attributes: AttributeValue) -> AbstractContextManager[Span]:
        return self._tracer.span(
            "processor.attempt",
            {"payorch.processor": self.name, "payorch.operation": operation, **attributes},
        )

    async def authorize(self, request: ChargeRequest) -> ProcessorResponse:
        with self._span("authorize", **{"payorch.step": request.step_index}) as span:
            response = await self.inner.authorize(request)
            _annotate(span, response)
            return response

    async def lookup(self, request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        with self._span("lookup", **{"payorch.step": request.step_index}) as span:
            response = await self.inner.lookup(request, processor_payment_id)
            _annotate(span, response)
            return response

    async def capture(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse:
        with self._span("capture") as span:
            response = await self.inner.capture(
                processor_payment_id, amount_minor, idempotency_key, currency=currency
            )
            _annotate(span, response)
            return response

    async def cancel(self, processor_payment_id: str, idempotency_key: str) -> ProcessorResponse:
        with self._span("void") as span:
            response = await self.inner.cancel(processor_payment_id, idempotency_key)
            _annotate(span, response)
            return response

    async def refund(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse:
        with self._span("refund") as span:
            response = await self.inner.refund(
                processor_payment_id, amount_minor, idempotency_key, currency=currency
            )
            _annotate(span, response)
            return response

    async def find_refund(
        self, processor_payment_id: str, idempotency_key: str
    ) -> ProcessorResponse:
        with self._span("lookup") as span:
            response = await self.inner.find_refund(processor_payment_id, idempotency_key)
            _annotate(span, response)
            return response

    async def refunds(self, processor_payment_id: str) -> ChargeRefunds:
        with self._span("lookup") as span:
            found = await self.inner.refunds(processor_payment_id)
            _annotate(span, found.answer)
            return found

    async def aclose(self) -> None:
        aclose = getattr(self.inner, "aclose", None)
        if aclose is not None:
            await aclose()


def traced(processors: Mapping[str, Processor], tracer: Tracer | None) -> dict[str, Processor]:
    """The processors with attempt spans when tracing is on (a tracer); as they are when off."""
    if tracer is None:
        return dict(processors)
    return {name: TracedProcessor(p, tracer) for name, p in processors.items()}
