"""An OpenTelemetry span exporter that turns export failures into a counter.

Imported only when tracing is configured (it needs opentelemetry-sdk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter: a failed or raising export costs a counter, nothing else."""

    def __init__(self, inner: SpanExporter, on_error: Callable[[], None]) -> None:
        self._inner = inner
        self._on_error = on_error

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            self._on_error()
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_error()
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)
