"""Readiness follows the database: a fake probe on a ManualClock, the grpc.health.v1
statuses and `/readyz` it drives, the gauge, and one log line per transition."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry

from payorch.adapters.clock import ManualClock
from payorch.app.database_readiness import DatabaseReadiness
from payorch.app.health import HealthTracker
from payorch.domain.health import HealthPolicy, Signal
from payorch.entrypoints.grpc.health_rpc import ORCHESTRATOR_SERVICE, GrpcHealthReporter
from payorch.entrypoints.http.app import build_app

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INSTALLMENTS = "payments.installments.v1.InstallmentService"


class FakeDatabase:
    """Answers while `answering`; otherwise refuses the connection."""

    def __init__(self) -> None:
        self.answering = True
        self.probes = 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.answering:
            raise ConnectionRefusedError("connection refused")


async def test_two_failed_probes_in_a_row_make_it_not_ready_and_one_answer_ready_again(caplog):
    db = FakeDatabase()
    readiness = DatabaseReadiness(db.probe, ManualClock())
    seen: list[bool] = []
    readiness.add_observer(seen.append)
    caplog.set_level(logging.INFO, logger="payorch.database")

    assert await readiness.check() is True
    db.answering = False
    assert await readiness.check() is True, "one failure is not an outage"
    db.answering = True
    assert await readiness.check() is True
    db.answering = False
    assert await readiness.check() is True, "an answer in between starts the count again"
    assert await readiness.check() is False
    assert await readiness.check() is False
    assert await readiness.check() is False
    db.answering = True
    assert await readiness.check() is True
    assert await readiness.check() is True

    assert seen == [True, False, True], "told once per change"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("the database does not answer (2 probes in a row failed")
    assert "ConnectionRefusedError" in lines[0]
    assert lines[1] == "the database answers again: ready"


async def test_a_probe_that_does_not_answer_in_time_is_a_failure():
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    readiness = DatabaseReadiness(hangs, ManualClock(), timeout_s=0.01, failures_to_down=1)
    assert await readiness.check() is False


async def test_the_probe_runs_every_interval_on_the_clock():
    clock = ManualClock()
    db = FakeDatabase()
    outcomes = iter([True, False, False, True])
    done = asyncio.Event()

    async def probe() -> None:
        try:
            db.answering = next(outcomes)
        except StopIteration:
            done.set()
            await asyncio.Event().wait()  # parked until the loop is cancelled
        await db.probe()

    readiness = DatabaseReadiness(probe, clock, interval_s=2.0, timeout_s=60.0)
    seen: list[bool] = []
    readiness.add_observer(seen.append)
    loop = asyncio.create_task(readiness.run())
    await done.wait()
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert clock.slept == [2.0] * 5
    assert seen == [True, False, True]


async def test_an_interval_of_0_never_probes():
    db = FakeDatabase()
    clock = ManualClock()
    readiness = DatabaseReadiness(db.probe, clock, interval_s=0)
    await readiness.run()
    assert (db.probes, clock.slept, readiness.up) == (0, [], True)


def test_refuses_a_policy_it_cannot_run():
    for kwargs in ({"interval_s": -1}, {"timeout_s": 0}, {"failures_to_down": 0}):
        with pytest.raises(ValueError):
            DatabaseReadiness(FakeDatabase().probe, ManualClock(), **kwargs)  # type: ignore[arg-type]


async def statuses(servicer: health.aio.HealthServicer, reporter: GrpcHealthReporter) -> dict:
    await reporter.flush()
    return {
        name: (await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)).status
        for name in ("", ORCHESTRATOR_SERVICE, INSTALLMENTS)
    }


async def test_every_grpc_service_is_not_serving_while_the_database_does_not_answer():
    db = FakeDatabase()
    readiness = DatabaseReadiness(db.probe, ManualClock())
    servicer = health.aio.HealthServicer()
    reporter = GrpcHealthReporter(servicer, others=("", ORCHESTRATOR_SERVICE, INSTALLMENTS))
    readiness.add_observer(reporter.database_changed)
    everything = dict.fromkeys(("", ORCHESTRATOR_SERVICE, INSTALLMENTS), SERVING)
    assert await statuses(servicer, reporter) == everything

    db.answering = False
    await readiness.check()
    await readiness.check()
    assert await statuses(servicer, reporter) == dict.fromkeys(everything, NOT_SERVING)

    db.answering = True
    await readiness.check()
    assert await statuses(servicer, reporter) == everything


async def test_the_database_back_leaves_the_orchestrator_not_serving_while_every_breaker_is_open():
    clock = ManualClock()
    processors = HealthTracker(HealthPolicy(min_requests=5), clock, processors=["sim_a"])
    db = FakeDatabase()
    readiness = DatabaseReadiness(db.probe, clock)
    servicer = health.aio.HealthServicer()
    reporter = GrpcHealthReporter(servicer, others=("", ORCHESTRATOR_SERVICE, INSTALLMENTS))
    processors.add_observer(reporter)
    readiness.add_observer(reporter.database_changed)

    db.answering = False
    await readiness.check()
    await readiness.check()
    for _ in range(5):
        processors.record("sim_a", Signal.INFRA_FAILURE, 0.1, authorize=True)
    db.answering = True
    await readiness.check()
    assert await statuses(servicer, reporter) == {
        "": SERVING,
        ORCHESTRATOR_SERVICE: NOT_SERVING,
        INSTALLMENTS: SERVING,
    }


async def test_readyz_is_503_while_the_database_does_not_answer_and_healthz_stays_200():
    db = FakeDatabase()
    readiness = DatabaseReadiness(db.probe, ManualClock())
    app = build_app(CollectorRegistry(), database_up=lambda: readiness.up)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/readyz")).status == 200
        db.answering = False
        await readiness.check()
        await readiness.check()
        answer = await client.get("/readyz")
        assert answer.status == 503
        assert await answer.json() == {"status": "database unreachable"}
        assert (await client.get("/healthz")).status == 200
        db.answering = True
        await readiness.check()
        assert (await client.get("/readyz")).status == 200
