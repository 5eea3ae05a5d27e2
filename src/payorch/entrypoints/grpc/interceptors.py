"""The ContractMonitor's eye on every call: per-RPC metrics, the RPC span, and the
violations only the transport sees (refused input, unhandled errors, deadlines, latency).

Wraps each unary handler's behaviour; the final status is read from the context
after the call (an abort raises: it is caught, read and raised again). Nothing
here can fail a call: the monitor and the observers swallow their own errors.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from payorch.app.contract_monitor import CallScope, ContractMonitor
from payorch.app.ids import new_id
from payorch.app.observability import Observers, Span, Tracer
from payorch.app.ports import Clock
from payorch.domain.card_data import contains_card_number
from payorch.domain.request import Severity

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
REQUEST_ID_HEADER = "x-request-id"

Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's x-request-id when sane (and no card number), else a fresh one."""
    for key, value in context.invocation_metadata() or ():
        if (
            key == REQUEST_ID_HEADER
            and isinstance(value, str)
            and _REQUEST_ID.match(value)
            and not contains_card_number(value)
        ):
            return value
    return new_id("rpc")


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        monitor: ContractMonitor,
        observers: Observers,
        tracer: Tracer,
        clock: Clock,
        *,
        latency_slo_ms: float = 2000.0,
    ) -> None:
        self._monitor = monitor
        self._observers = observers
        self._tracer = tracer
        self._clock = clock
        self._slo_ms = latency_slo_ms
        # Per method: the handler grpc resolved and our wrapper of it, built once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown methods, and streams (reflection): as they are
        rpc = handler_call_details.method
        cached = self._wrapped.get(rpc)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(rpc, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        # Keyed by the method name grpc matched a handler to: bounded by our services.
        self._wrapped[rpc] = (handler, wrapped)
        return wrapped

    def _wrap(self, rpc: str, behaviour: Behaviour) -> Behaviour:
        service, _, method = rpc.lstrip("/").rpartition("/")
        span_name = f"{service}/{method}"
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            t0 = self._clock.monotonic()
            with (
                self._monitor.call(_request_id(context)) as scope,
                self._tracer.span(span_name, attributes) as span,
            ):
                code: grpc.StatusCode | None = None
                try:
                    response = await behaviour(request, context)
                except asyncio.CancelledError:
                    remaining = context.time_remaining()
                    deadline_passed = remaining is not None and remaining <= 0
                    code = (
                        grpc.StatusCode.DEADLINE_EXCEEDED
                        if deadline_passed
                        else grpc.StatusCode.CANCELLED
                    )
                    raise
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except Exception:
                    # Escaped every handler: grpc answers UNKNOWN.
                    code = grpc.StatusCode.UNKNOWN
                    raise
                else:
                    code = context.code() or grpc.StatusCode.OK
                    return response
                finally:
                    elapsed = self._clock.monotonic() - t0
                    self._finished(
                        rpc, code or grpc.StatusCode.UNKNOWN, elapsed, scope, span, context
                    )

        observed.__name__ = method
        return observed

    def _finished(
        self,
        rpc: str,
        code: grpc.StatusCode,
        seconds: float,
        scope: CallScope,
        span: Span,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        # `_value_` and `_name_` are what `.value` and `.name` return, without their
        # properties' two Python calls each: this runs for every call served.
        span.set_attribute("rpc.grpc.status_code", code._value_[0])
        self._observers.rpc_finished(rpc, code._name_, seconds)
        ms = seconds * 1000.0
        # Refused for the caller's own input: INVALID_ARGUMENT, or a deadline too short
        # to start a processor call (DEADLINE_EXCEEDED, DEADLINE_TOO_SHORT), which the
        # servicer names: the caller's contract, no deadline of ours was missed.
        refused = code is grpc.StatusCode.INVALID_ARGUMENT or bool(scope.rejected)
        if refused:
            self._refused(rpc, scope, _details(context))
        else:
            self._noted(scope)
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            self._monitor.record(
                "rpc/unhandled_exception", f"{rpc} ended {code.name} after {ms:.0f} ms"
            )
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED and not refused:
            self._monitor.record(
                "rpc/deadline_exceeded", f"{rpc} passed the caller's deadline after {ms:.0f} ms"
            )
        if code is not grpc.StatusCode.DEADLINE_EXCEEDED and ms > self._slo_ms:
            self._monitor.record(
                "rpc/latency_slo", f"{rpc} took {ms:.0f} ms (SLO {self._slo_ms:.0f} ms)"
            )

    def _noted(self, scope: CallScope) -> None:
        """What was wrong with a request taken all the same, as the entrypoint named it."""
        for issue in scope.noted:
            self._monitor.record(
                issue.contract_id, f"{issue.field}: {issue.message}", severity=issue.severity
            )

    def _refused(self, rpc: str, scope: CallScope, details: str) -> None:
        """A refused request: its specific contracts when the servicer named them,
        else the generic one, unless the app already recorded why."""
        if scope.rejected:
            seen: set[str] = set()
            for issue in scope.rejected:
                if issue.contract_id not in seen:
                    seen.add(issue.contract_id)
                    self._monitor.record(
                        issue.contract_id,
                        f"{rpc} refused: {issue.field}: {issue.message}",
                        severity=None if issue.fatal else Severity.INFO,
                    )
            return
        if any(v.severity is not Severity.INFO for v in scope.recorded):
            return  # e.g. plan/coverage, recorded by the app with its reason
        self._monitor.record("input/malformed", f"{rpc} refused: {details or 'invalid argument'}")


def _details(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    try:
        return str(context.details() or "")
    except Exception:
        return ""
