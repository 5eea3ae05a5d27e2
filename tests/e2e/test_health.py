"""Processor health on the real server process: failover, the ops RPCs, the CLI,
and grpc.health.v1 following the breakers.

Health is per replica and in memory, so SQLite is enough here: storage plays no part.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments.orchestrator.v1 import health_pb2 as hpb
from payments.orchestrator.v1 import health_pb2_grpc as hpb_grpc
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from tests.e2e.server import RunningServer, create_key, payorch, start_server

pytestmark = pytest.mark.e2e

ORCHESTRATOR = "payments.orchestrator.v1.PaymentOrchestrator"
TWO_SIMS = ("--processors", "sim_a,sim_b")
# Few calls decide, so a handful of payments shows the whole story.
QUICK = {"PAYORCH_HEALTH_MIN_REQUESTS": "5"}


def start(tmp_path_factory, *, args: tuple[str, ...], env: dict[str, str]) -> RunningServer:
    workdir = tmp_path_factory.mktemp("health")
    url = f"sqlite:///{workdir / 'payorch.db'}"
    running = start_server(workdir, url, args=args, env=env)
    running.keys = {"m_1": create_key(url, merchant="m_1"), "ops": create_key(url, scope="ops")}
    return running


@pytest.fixture(scope="module")
def sim_a_down(tmp_path_factory) -> Iterator[RunningServer]:
    """sim_a answers every charge with a 500; sim_b is fine; breakers cool down slowly."""
    running = start(
        tmp_path_factory,
        args=(*TWO_SIMS, "--simulate-for", "sim_a=api_error=1.0"),
        env={**QUICK, "PAYORCH_HEALTH_COOLDOWN_S": "300"},
    )
    yield running
    running.stop()


def pay(server: RunningServer, token: str = "pm_card_visa") -> orch.Payment:
    with server.channel() as ch:
        return (
            orch_grpc.PaymentOrchestratorStub(ch)
            .CreatePayment(
                orch.CreatePaymentRequest(
                    request_id=f"health-{uuid.uuid4().hex[:12]}",
                    amount_minor=1500,
                    currency="eur",
                    payment_method=token,
                ),
                metadata=server.auth("m_1"),
                timeout=30,
            )
            .payment
        )


def health_of(server: RunningServer, who: str = "ops") -> hpb.ListProcessorHealthResponse:
    with server.channel() as ch:
        return hpb_grpc.ProcessorHealthStub(ch).ListProcessorHealth(
            hpb.ListProcessorHealthRequest(), metadata=server.auth(who), timeout=10
        )


def report(server: RunningServer, name: str) -> hpb.ProcessorHealthReport:
    return next(r for r in health_of(server).reports if r.processor == name)


def authorizes(payment: orch.Payment) -> list[result_pb2.Attempt]:
    return [a for a in payment.result.step_results[0].attempts if a.operation == "authorize"]


def orchestrator_status(server: RunningServer, wanted: int) -> int:
    """The orchestrator's grpc.health.v1 status, waiting (on Watch, not a sleep) up to
    10 s for `wanted`: the status is set on the server's loop just after a transition."""
    with server.channel() as ch:
        stream = health_pb2_grpc.HealthStub(ch).Watch(
            health_pb2.HealthCheckRequest(service=ORCHESTRATOR), timeout=10
        )
        status = -1
        try:
            for reply in stream:
                status = reply.status
                if status == wanted:
                    break
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            stream.cancel()
        return status


def test_traffic_fails_over_from_a_processor_that_is_down_and_no_payment_fails(sim_a_down):
    payments = [pay(sim_a_down) for _ in range(8)]

    assert all(p.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED for p in payments)
    assert all(p.result.step_results[0].processor == "sim_b" for p in payments)
    first = authorizes(payments[0])
    assert first[0].processor == "sim_a" and first[-1].processor == "sim_b"
    assert first[0].outcome == result_pb2.OUTCOME_SOFT and first[0].raw.http_status == 500
    assert any("failing over to sim_b" in a.retry_decision for a in first)
    assert first[-1].routing_reason.startswith("failover from sim_a")
    # Once sim_a's breaker is open, payments go straight to sim_b and say why.
    last = authorizes(payments[-1])
    assert [a.processor for a in last] == ["sim_b"]
    assert "sim_a skipped: breaker open" in last[0].routing_reason


def test_list_processor_health_shows_the_first_unhealthy_and_the_second_healthy(sim_a_down):
    for _ in range(4):
        pay(sim_a_down)
    reply = health_of(sim_a_down)
    a, b = reply.reports
    assert a.processor == "sim_a" and a.state == hpb.HEALTH_STATE_UNHEALTHY
    assert a.breaker_state == hpb.BREAKER_STATE_OPEN and a.HasField("probes_from")
    assert a.stats.infrastructure_failure_count >= 5 and a.stats.success_count == 0
    assert "infrastructure failures 100%" in a.reason
    assert b.processor == "sim_b" and b.state == hpb.HEALTH_STATE_HEALTHY
    assert b.stats.success_count >= 4 and b.stats.infrastructure_failure_rate == 0.0
    assert reply.serving and reply.replica


def test_the_orchestrator_keeps_serving_while_one_processor_can_take_payments(sim_a_down):
    pay(sim_a_down)
    assert (
        orchestrator_status(sim_a_down, health_pb2.HealthCheckResponse.SERVING)
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_a_merchant_key_may_not_read_processor_health(sim_a_down):
    with pytest.raises(grpc.RpcError) as err:
        health_of(sim_a_down, who="m_1")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with sim_a_down.channel() as ch, pytest.raises(grpc.RpcError) as err:
        hpb_grpc.ProcessorFaultInjectionStub(ch).SetSimulatedFaults(
            hpb.SetSimulatedFaultsRequest(processor="sim_a", faults=""),
            metadata=sim_a_down.auth("m_1"),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_payorch_health_prints_the_table_from_the_running_server(sim_a_down):
    pay(sim_a_down)
    flags = ["--address", sim_a_down.address, "--api-key", sim_a_down.keys["ops"]]
    table = payorch("health", *flags).splitlines()
    assert table[0].split()[:4] == ["PROCESSOR", "STATE", "SINCE", "BREAKER"]
    assert table[1].split()[0:4:3] == ["sim_a", "open"] and "unhealthy" in table[1]
    assert table[2].split()[0] == "sim_b" and "healthy" in table[2]
    as_json = json.loads(payorch("health", "--json", *flags))
    assert [r["processor"] for r in as_json["reports"]] == ["sim_a", "sim_b"]


def test_traffic_comes_back_when_the_first_processor_recovers(tmp_path_factory):
    # No cool-down: the next payment after the breaker opens is a half-open probe.
    server = start(
        tmp_path_factory,
        args=(*TWO_SIMS, "--simulate-for", "sim_a=api_error=1.0"),
        env={**QUICK, "PAYORCH_HEALTH_COOLDOWN_S": "0", "PAYORCH_HEALTH_HALF_OPEN_PROBES": "2"},
    )
    try:
        during = [pay(server) for _ in range(4)]
        assert all(p.result.step_results[0].processor == "sim_b" for p in during)
        assert report(server, "sim_a").state == hpb.HEALTH_STATE_UNHEALTHY

        flags = ["--address", server.address, "--api-key", server.keys["ops"]]
        payorch("simulate", *flags, "sim_a", "")  # sim_a is back
        probes = [pay(server) for _ in range(2)]
        assert all([a.processor for a in authorizes(p)] == ["sim_a"] for p in probes)
        assert "half-open probe" in authorizes(probes[0])[0].routing_reason

        after = pay(server)
        assert [a.processor for a in authorizes(after)] == ["sim_a"]
        assert authorizes(after)[0].routing_reason == "sim_a: healthy"
        a = report(server, "sim_a")
        assert a.state == hpb.HEALTH_STATE_HEALTHY and a.breaker_state == hpb.BREAKER_STATE_CLOSED
    finally:
        server.stop()


def test_the_orchestrator_is_not_serving_when_every_processor_is_down(tmp_path_factory):
    server = start(
        tmp_path_factory,
        args=(*TWO_SIMS, "--simulate", "api_error=1.0"),
        env={**QUICK, "PAYORCH_HEALTH_COOLDOWN_S": "300"},
    )
    try:
        failed = [pay(server) for _ in range(3)]
        assert all(p.result.status == result_pb2.PAYMENT_STATUS_FAILED for p in failed)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert orchestrator_status(server, not_serving) == not_serving
        assert not health_of(server).serving

        refused = pay(server)
        step = refused.result.step_results[0]
        assert step.error_code == result_pb2.ERROR_CODE_NO_PROCESSOR_AVAILABLE
        assert len(step.attempts) == 0, "nobody was called"
        with server.channel() as ch:
            whole = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        assert whole.status == health_pb2.HealthCheckResponse.SERVING, "the process itself is up"
    finally:
        server.stop()


def test_a_server_frozen_with_payments_in_flight_does_not_blame_the_processor(
    tmp_path_factory,
):
    """SIGSTOP for 6 s while 8 charges of 3 s are in flight. Measured on the server's
    clock they take ~9 s, over the 6 s p95 that makes a processor unhealthy here; the
    freeze is the server's own, so the processor stays healthy."""
    server = start(
        tmp_path_factory,
        args=("--processors", "sim_a", "--simulate", "latency_ms=3000"),
        env={
            **QUICK,
            "PAYORCH_HEALTH_DEGRADED_P95_MS": "5000",
            "PAYORCH_HEALTH_UNHEALTHY_P95_MS": "6000",
        },
    )
    try:
        with ThreadPoolExecutor(8) as pool:
            in_flight = [pool.submit(pay, server) for _ in range(8)]
            # The payments reach the processor well within its 3 s: freeze then.
            time.sleep(1.0)
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                time.sleep(6.0)  # real time: the server is frozen
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            payments = [f.result(timeout=60) for f in in_flight]

        assert all(p.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED for p in payments)
        # The calls spanned the freeze (enough of them for a verdict, should one have
        # reached the server late): the attempts keep the latency as measured.
        spanned = [p for p in payments if authorizes(p)[0].latency_ms >= 6000]
        assert len(spanned) >= 5, [authorizes(p)[0].latency_ms for p in payments]
        a = report(server, "sim_a")
        assert a.state == hpb.HEALTH_STATE_HEALTHY, a.reason
        assert a.stats.success_count == 8 and a.stats.p95_latency.ToMilliseconds() < 5000
        assert "this process did not run for" in server.log()
        with urllib.request.urlopen(f"http://{server.http_address}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert "payorch_process_stall_seconds_count 1.0" in metrics
    finally:
        server.stop()
