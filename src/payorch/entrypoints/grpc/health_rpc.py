"""Processor health over gRPC: the ops-only servicers, and the grpc.health.v1 status
of the PaymentOrchestrator service kept in step with the processors' breakers."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import code_pb2
from grpc_health.v1 import health, health_pb2

from payments.orchestrator.v1 import health_pb2 as hpb
from payorch.app.health import HealthTracker, ProcessorHealth
from payorch.domain.card_data import quoted, redact_card_numbers
from payorch.domain.health import BreakerState, HealthState, Signal
from payorch.entrypoints.grpc.errors import error, invalid_argument, not_found
from payorch.entrypoints.grpc.handlers import Call

ORCHESTRATOR_SERVICE = "payments.orchestrator.v1.PaymentOrchestrator"
# Caller input quoted back in an answer is cut to this (docs/security.md, Limits).
MAX_QUOTED_LEN = 32

HEALTH_STATES: dict[HealthState, Any] = {
    s: hpb.HealthState.Value(f"HEALTH_STATE_{s.name}") for s in HealthState
}
BREAKER_STATES: dict[BreakerState, Any] = {
    s: hpb.BreakerState.Value(f"BREAKER_STATE_{s.name}") for s in BreakerState
}


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# Refused to a merchant key before the request is read (handlers.build_handler).
FOR_OPERATORS = "processor health is operational data: it needs an ops credential"


def _duration_ms(ms: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(timedelta(milliseconds=round(ms)))
    return d


def _timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(at)
    return t


def report_pb(h: ProcessorHealth) -> hpb.ProcessorHealthReport:
    s = h.stats
    report = hpb.ProcessorHealthReport(
        processor=h.processor,
        state=HEALTH_STATES[h.state],
        state_since=_timestamp(h.state_since),
        reason=h.reason,
        breaker_state=BREAKER_STATES[h.breaker],
        breaker_since=_timestamp(h.breaker_since),
        stats=hpb.ProcessorStats(
            window=duration_pb2.Duration(seconds=s.window_s),
            request_count=s.requests,
            success_count=s.successes,
            infrastructure_failure_count=s.infra_failures,
            decline_count=s.declines,
            other_count=s.other,
            retry_count=s.retries,
            retry_budget_remaining=h.retries_left,
            success_rate=s.success_rate,
            infrastructure_failure_rate=s.failure_rate,
            decline_rate=s.decline_rate,
            average_latency=_duration_ms(s.average_latency_ms),
            p95_latency=_duration_ms(s.p95_latency_ms),
        ),
    )
    if h.probes_from is not None:
        report.probes_from.CopyFrom(_timestamp(h.probes_from))
    return report


class ProcessorHealthServicer:
    OPS_ONLY = {"GetProcessorHealth": FOR_OPERATORS, "ListProcessorHealth": FOR_OPERATORS}

    def __init__(self, tracker: HealthTracker, replica: str | None = None) -> None:
        self._tracker = tracker
        self._replica = replica or replica_id()

    async def GetProcessorHealth(
        self, request: hpb.GetProcessorHealthRequest, call: Call
    ) -> hpb.GetProcessorHealthResponse:
        if not request.processor:
            raise invalid_argument([("processor", "is required")])
        found = self._tracker.snapshot(request.processor[:64])
        if found is None:
            raise not_found("processor")
        return hpb.GetProcessorHealthResponse(report=report_pb(found), replica=self._replica)

    async def ListProcessorHealth(
        self, request: hpb.ListProcessorHealthRequest, call: Call
    ) -> hpb.ListProcessorHealthResponse:
        return hpb.ListProcessorHealthResponse(
            reports=[report_pb(h) for h in self._tracker.snapshots()],
            replica=self._replica,
            serving=self._tracker.available,
        )


class ProcessorFaultInjectionServicer:
    """Changes a simulated processor's faults (KeyError: not simulated; ValueError: bad spec)."""

    OPS_ONLY = {"SetSimulatedFaults": FOR_OPERATORS}

    def __init__(self, set_faults: Callable[[str, str], None]) -> None:
        self._set_faults = set_faults

    async def SetSimulatedFaults(
        self, request: hpb.SetSimulatedFaultsRequest, call: Call
    ) -> hpb.SetSimulatedFaultsResponse:
        if not request.processor:
            raise invalid_argument([("processor", "is required")])
        try:
            self._set_faults(request.processor, request.faults)
        except KeyError as exc:
            raise error(
                code_pb2.FAILED_PRECONDITION,
                f"{quoted(request.processor, MAX_QUOTED_LEN)} is not a simulated processor",
                "NOT_SIMULATED",
                "processor",
            ) from exc
        except ValueError as exc:
            # The spec's parser quotes what it could not read: whatever was sent.
            raise invalid_argument([("faults", redact_card_numbers(str(exc)))]) from exc
        return hpb.SetSimulatedFaultsResponse(processor=request.processor, faults=request.faults)


class GrpcHealthReporter:
    """Keeps grpc.health.v1 in step with what the replica can do. The orchestrator is
    NOT_SERVING while no processor can take payments (every breaker open: the
    processor tracker's observer). While the database does not answer
    (`database_changed`) every service is NOT_SERVING, the server-wide `""` included:
    every service stores or reads what it answers there."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        service: str = ORCHESTRATOR_SERVICE,
        others: tuple[str, ...] = ("",),
    ) -> None:
        self._servicer = servicer
        self._service = service
        self._others = tuple(name for name in others if name != service)
        self._available = True
        self._database_up = True
        self._tasks: set[asyncio.Task[None]] = set()

    async def flush(self) -> None:
        """Set the statuses now (the observers' own updates are scheduled, not awaited)."""
        status = health_pb2.HealthCheckResponse
        database = status.SERVING if self._database_up else status.NOT_SERVING
        for name in self._others:
            await self._servicer.set(name, database)
        serving = self._available and self._database_up
        await self._servicer.set(self._service, status.SERVING if serving else status.NOT_SERVING)

    def availability_changed(self, available: bool) -> None:
        self._available = available
        self._schedule_flush()

    def database_changed(self, up: bool) -> None:
        self._database_up = up
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # The observers are synchronous: set the status on the loop, latest value wins.
        task = loop.create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def call_recorded(self, processor: str, signal: Signal, latency_s: float) -> None:
        pass

    def state_changed(self, processor: str, state: HealthState) -> None:
        pass

    def breaker_changed(self, processor: str, state: BreakerState) -> None:
        pass
