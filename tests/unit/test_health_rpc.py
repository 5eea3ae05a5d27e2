"""The ops-only health servicers, the grpc.health.v1 hook, and `payorch health`.

A merchant key is refused these RPCs before they run: the handler decides it, and
tests/integration/test_observability_rpc.py proves it on a real server."""

from __future__ import annotations

import json
import threading

import grpc
import grpc_testing
import pytest
from grpc_health.v1 import health, health_pb2

from payments.orchestrator.v1 import health_pb2 as hpb
from payorch.adapters.clock import ManualClock
from payorch.app.auth import Principal, Scope
from payorch.app.health import HealthTracker
from payorch.domain.card_data import contains_card_number
from payorch.domain.health import HealthPolicy, Signal
from payorch.entrypoints import cli
from payorch.entrypoints.grpc.errors import RpcError
from payorch.entrypoints.grpc.handlers import Call
from payorch.entrypoints.grpc.health_rpc import (
    ORCHESTRATOR_SERVICE,
    GrpcHealthReporter,
    ProcessorFaultInjectionServicer,
    ProcessorHealthServicer,
)

OPS = Call(Principal(Scope.OPS, None, "k_ops"), None, "rpc")  # type: ignore[arg-type]
POLICY = HealthPolicy(min_requests=5, cooldown_s=30)


def tracker(clock: ManualClock) -> HealthTracker:
    return HealthTracker(POLICY, clock, processors=["sim_a", "sim_b"])


def break_down(t: HealthTracker, name: str, n: int = 5) -> None:
    for _ in range(n):
        t.record(name, Signal.INFRA_FAILURE, 0.2, authorize=True)


def status_code(exc: RpcError) -> int:
    return exc.status.code.value[0]


async def test_an_ops_caller_lists_every_processors_health_in_configured_order():
    clock = ManualClock()
    t = tracker(clock)
    for _ in range(6):
        t.record("sim_b", Signal.SUCCESS, 0.120, authorize=True)
    t.record("sim_b", Signal.DECLINE, 0.080, authorize=True)
    break_down(t, "sim_a")

    reply = await ProcessorHealthServicer(t, "replica-1").ListProcessorHealth(
        hpb.ListProcessorHealthRequest(), OPS
    )
    a, b = reply.reports
    assert (a.processor, b.processor) == ("sim_a", "sim_b")
    assert a.state == hpb.HEALTH_STATE_UNHEALTHY and a.breaker_state == hpb.BREAKER_STATE_OPEN
    assert a.probes_from.ToDatetime().timestamp() == pytest.approx(
        clock.now().timestamp() + 30, abs=1
    )
    assert "infrastructure failures 100%" in a.reason
    assert b.state == hpb.HEALTH_STATE_HEALTHY and b.breaker_state == hpb.BREAKER_STATE_CLOSED
    assert not b.HasField("probes_from")
    assert b.stats.request_count == 7 and b.stats.decline_count == 1
    assert b.stats.success_rate == pytest.approx(6 / 7)
    assert b.stats.infrastructure_failure_rate == 0.0
    assert b.stats.p95_latency.ToMilliseconds() == 120
    assert b.stats.window.seconds == 60
    assert reply.replica == "replica-1" and reply.serving


async def test_get_reads_one_processor_and_an_unknown_one_is_not_found():
    t = tracker(ManualClock())
    servicer = ProcessorHealthServicer(t)
    got = await servicer.GetProcessorHealth(hpb.GetProcessorHealthRequest(processor="sim_b"), OPS)
    assert got.report.processor == "sim_b" and got.replica
    with pytest.raises(RpcError) as err:
        await servicer.GetProcessorHealth(hpb.GetProcessorHealthRequest(processor="nope"), OPS)
    assert status_code(err.value) == grpc.StatusCode.NOT_FOUND.value[0]
    with pytest.raises(RpcError) as err:
        await servicer.GetProcessorHealth(hpb.GetProcessorHealthRequest(), OPS)
    assert status_code(err.value) == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_faults_can_be_changed_only_on_a_simulated_processor_with_a_valid_spec():
    from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation

    sims = {"sim_a": SimulatedProcessor("sim_a")}

    def set_faults(name: str, spec: str) -> None:
        sims[name].set_simulation(Simulation.parse(spec))

    servicer = ProcessorFaultInjectionServicer(set_faults)
    await servicer.SetSimulatedFaults(
        hpb.SetSimulatedFaultsRequest(processor="sim_a", faults="api_error=1.0"), OPS
    )
    assert sims["sim_a"].simulation.api_error == 1.0
    with pytest.raises(RpcError) as err:
        await servicer.SetSimulatedFaults(
            hpb.SetSimulatedFaultsRequest(processor="stripe", faults=""), OPS
        )
    assert status_code(err.value) == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    with pytest.raises(RpcError) as err:
        await servicer.SetSimulatedFaults(
            hpb.SetSimulatedFaultsRequest(processor="sim_a", faults="api_error=7"), OPS
        )
    assert status_code(err.value) == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_the_orchestrator_is_not_serving_only_while_every_breaker_is_open():
    clock = ManualClock()
    t = tracker(clock)
    servicer = health.aio.HealthServicer()
    reporter = GrpcHealthReporter(servicer)
    t.add_observer(reporter)
    await reporter.flush()

    async def status() -> int:
        await reporter.flush()
        return (
            await servicer.Check(health_pb2.HealthCheckRequest(service=ORCHESTRATOR_SERVICE), None)
        ).status

    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert await status() == serving
    break_down(t, "sim_a")
    assert await status() == serving, "sim_b can still take payments"
    break_down(t, "sim_b")
    assert await status() == not_serving
    clock.advance(30)
    t.refresh()  # the server does this every second
    assert await status() == serving, "half-open: probes may go"


# -- the CLI ---------------------------------------------------------------------------
SERVICE = hpb.DESCRIPTOR.services_by_name["ProcessorHealth"]


async def _report_of(t: HealthTracker) -> hpb.ListProcessorHealthResponse:
    return await ProcessorHealthServicer(t, "host:1").ListProcessorHealth(
        hpb.ListProcessorHealthRequest(), OPS
    )


def run_cli(monkeypatch, argv: list[str], reply: hpb.ListProcessorHealthResponse):
    testing = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(code=cli.main(argv)), daemon=True)
    thread.start()
    metadata, request, rpc = testing.take_unary_unary(
        SERVICE.methods_by_name["ListProcessorHealth"]
    )
    rpc.terminate(reply, (), grpc.StatusCode.OK, "")
    thread.join(10)
    return result["code"], dict(metadata), request


async def test_payorch_health_prints_a_table_a_person_reads(monkeypatch, capsys):
    clock = ManualClock()
    t = tracker(clock)
    break_down(t, "sim_a")
    reply = await _report_of(t)
    code, metadata, _ = run_cli(
        monkeypatch, ["health", "--address", "x:1", "--api-key", "po_ops"], reply
    )
    assert code == 0 and metadata["authorization"] == "Bearer po_ops"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["PROCESSOR", "STATE", "SINCE", "BREAKER", "CALLS"]
    assert lines[1].split()[:5] == ["sim_a", "unhealthy", "00:00:00", "open", "5"]
    assert lines[2].split()[:5] == ["sim_b", "healthy", "00:00:00", "closed", "0"]
    assert lines[-1] == "replica host:1, window 60 s, serving"


async def test_payorch_health_json_prints_the_response(monkeypatch, capsys):
    t = tracker(ManualClock())
    code, _, _ = run_cli(
        monkeypatch, ["health", "--json", "--address", "x:1", "--api-key", "k"], await _report_of(t)
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["processor"] for r in out["reports"]] == ["sim_a", "sim_b"]
    assert out["reports"][0]["state"] == "HEALTH_STATE_HEALTHY" and out["serving"] is True


@pytest.mark.parametrize(
    ("processor", "faults"),
    [("4000056655665556", "api_error=1"), ("sim_a", "4000056655665556=1")],
    ids=["processor", "faults"],
)
async def test_a_fault_injection_refusal_never_repeats_a_card_number(processor, faults):
    from payorch.adapters.processors.simulated import SimulatedProcessor, Simulation

    sims = {"sim_a": SimulatedProcessor("sim_a")}

    def set_faults(name: str, spec: str) -> None:
        sims[name].set_simulation(Simulation.parse(spec))

    servicer = ProcessorFaultInjectionServicer(set_faults)
    with pytest.raises(RpcError) as err:
        await servicer.SetSimulatedFaults(
            hpb.SetSimulatedFaultsRequest(processor=processor, faults=faults), OPS
        )
    assert not contains_card_number(str(err.value.status.details))
    assert not contains_card_number(
        b"".join(v for _, v in err.value.status.trailing_metadata).decode("latin-1")
    )
