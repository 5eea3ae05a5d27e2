"""`payorch serve` stopped (SIGTERM): what its background jobs claimed is finished and
recorded within the grace period, not cut off mid-charge; readiness and gRPC health say
NOT_SERVING from the first signal (through the drain, while calls are still taken); a
second signal exits at once; a CreatePayment cut off past the grace period is logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from tests.e2e.server import RunningServer, create_key, payorch, start_server
from tests.integration.test_scheduler_processes import CLOCK_OFFSET
from tests.integration.test_scheduler_stop import PLANS, prepared, statuses

pytestmark = pytest.mark.e2e

CLAIMED_ALL = re.compile(rf"claimed {2 * PLANS} installments")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'payorch.db'}"
    from tests.conftest import _truncate

    url = str(request.getfixturevalue("postgres_database"))
    asyncio.run(_truncate(url))
    return url


def stopped_while_charging(database: str, tmp_path: Path, grace_s: float) -> RunningServer:
    """A server whose scheduler claimed every due installment, stopped (SIGTERM) while
    its charges are in flight; returned once it exited 0."""
    asyncio.run(prepared(database))
    server = start_server(
        tmp_path,
        database,
        env={
            "PAYORCH_SCHEDULER": "1",
            "PAYORCH_SCHEDULER_BATCH_SIZE": str(2 * PLANS),
            "PAYORCH_SCHEDULER_CONCURRENCY": str(4 * PLANS),
            "PAYORCH_CLOCK_OFFSET": CLOCK_OFFSET,
            # Each plan's two installments are charged one after the other: the pass
            # claims them all at once, finds nothing more due and waits for its charges.
            "PAYORCH_SIMULATE": "latency_ms=1500",
            "PAYORCH_SIM_CHARGE_LOG": str(tmp_path / "charges.log"),
            "PAYORCH_GRACE_PERIOD_S": str(grace_s),
        },
    )
    try:
        deadline = time.monotonic() + 60
        while not CLAIMED_ALL.search(server.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert CLAIMED_ALL.search(server.log()), server.log()[-3000:]
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
    finally:
        server.stop()
    assert "Traceback" not in server.log()
    return server


def test_serve_stopped_while_the_scheduler_charges_records_every_charge_it_made(
    database: str, tmp_path: Path
) -> None:
    stopped_while_charging(database, tmp_path, grace_s=10)

    counts = asyncio.run(statuses(database))
    assert counts.get("processing", 0) == 0, f"claims left held: {counts}"
    charges = tmp_path / "charges.log"
    charged = len(charges.read_text().splitlines()) if charges.exists() else 0
    assert counts["paid"] - PLANS == charged == 2 * PLANS, counts


def test_charges_that_outlast_the_grace_period_are_cut_off_and_said_so(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'payorch.db'}"
    server = stopped_while_charging(database, tmp_path, grace_s=0.2)

    assert "the grace period ended with claimed work in flight" in server.log()
    # Left for the next scheduler (when the lease runs out) and the reconciler.
    assert asyncio.run(statuses(database)).get("processing", 0) > 0


def grpc_health(server: RunningServer) -> int:
    with server.channel() as channel:
        return int(
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(), timeout=10)
            .status
        )


def wait_for_log(server: RunningServer, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in server.log(), server.log()[-3000:]


def pay(server: RunningServer, request_id: str, timeout: float = 30) -> orch.Payment:
    with server.channel() as channel:
        return (
            orch_grpc.PaymentOrchestratorStub(channel)
            .CreatePayment(
                orch.CreatePaymentRequest(
                    request_id=request_id,
                    currency="usd",
                    amount_minor=2500,
                    payment_method="pm_card_visa",
                ),
                metadata=server.auth("m_1"),
                timeout=timeout,
            )
            .payment
        )


# A payment whose processor call takes 8 s: in flight when the server is told to stop.
SLOW_PAYMENT = {"PAYORCH_SIMULATE": "latency_ms=8000", "PAYORCH_CALL_TIMEOUT_S": "30"}


def stored_payment(tmp_path: Path, request_id: str, server: RunningServer) -> str:
    """The id of the payment stored under `request_id`, once its row is there."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(tmp_path / "payorch.db")) as db:
            row = db.execute(
                "SELECT id FROM payments WHERE request_id = ?", (request_id,)
            ).fetchone()
        if row is not None:
            return str(row[0])
        time.sleep(0.05)
    raise AssertionError(f"no payment stored for {request_id}: {server.log()[-3000:]}")


def started(tmp_path: Path, env: dict[str, str]) -> RunningServer:
    database = f"sqlite:///{tmp_path / 'payorch.db'}"
    payorch("migrate", "--database-url", database)
    key = create_key(database, merchant="m_1")
    server = start_server(tmp_path, database, env=env)
    server.keys["m_1"] = key
    return server


def test_readiness_is_503_while_draining_and_the_replica_still_takes_payments(
    tmp_path: Path,
) -> None:
    server = started(tmp_path, {"PAYORCH_SHUTDOWN_DRAIN_S": "600"})
    try:
        assert server.http_status("/readyz") == 200
        assert grpc_health(server) == health_pb2.HealthCheckResponse.SERVING

        server.process.send_signal(signal.SIGTERM)
        wait_for_log(server, "draining")
        # What a load balancer polls says stop routing here; the process is alive and
        # a call that still arrives is served.
        assert server.http_status("/readyz") == 503
        assert grpc_health(server) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert server.http_status("/healthz") == 200
        paid = pay(server, "during-drain")
        assert paid.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
    finally:
        server.stop()


class Stopped(NamedTuple):
    server: RunningServer
    payment_id: str
    exit_code: int
    answered: bool  # the CreatePayment in flight got its payment


def stopped_while_paying(
    tmp_path: Path, request_id: str, *, grace_s: float, sigterms: int
) -> Stopped:
    """A server stopped by `sigterms` SIGTERMs (a second once the shutdown began) while
    a slow CreatePayment is in flight."""
    server = started(tmp_path, SLOW_PAYMENT | {"PAYORCH_GRACE_PERIOD_S": str(grace_s)})
    with ThreadPoolExecutor(1) as pool:
        try:
            call = pool.submit(pay, server, request_id)
            payment_id = stored_payment(tmp_path, request_id, server)
            server.process.send_signal(signal.SIGTERM)
            if sigterms > 1:
                wait_for_log(server, "shutting down")
                server.process.send_signal(signal.SIGTERM)
            code = server.process.wait(60)
            answered = call.exception() is None
        finally:
            server.stop()
    return Stopped(server, payment_id, code, answered)


def test_a_second_sigterm_while_shutting_down_exits_at_once_and_says_so(
    tmp_path: Path,
) -> None:
    # The first SIGTERM alone would wait (grace 600 s) for the payment's 8 s.
    stopped = stopped_while_paying(tmp_path, "in-flight", grace_s=600, sigterms=2)

    assert stopped.exit_code == 128 + signal.SIGTERM
    assert not stopped.answered
    assert "SIGTERM again while shutting down: exiting now" in stopped.server.log()


def test_a_sigterm_while_the_server_starts_takes_the_graceful_path(tmp_path: Path) -> None:
    # SIGTERM right after the gRPC server started, before the HTTP port is up: the
    # window in which it used to kill the process outright.
    script = (
        "import os, signal, sys\n"
        "from payorch.entrypoints import serve\n"
        "from payorch.entrypoints.cli import main\n"
        "listen = serve.start_http\n"
        "async def signalled_while_starting(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return await listen(*args, **kwargs)\n"
        "serve.start_http = signalled_while_starting\n"
        "sys.exit(main(['serve']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            **os.environ,
            "PAYORCH_DATABASE_URL": f"sqlite:///{tmp_path / 'payorch.db'}",
            "PAYORCH_LISTEN": "127.0.0.1:0",
            "PAYORCH_HTTP_PORT": "0",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"stopped"' in done.stderr


def test_a_create_payment_cut_off_past_the_grace_period_is_named_in_the_log(
    tmp_path: Path,
) -> None:
    stopped = stopped_while_paying(tmp_path, "cut-off-by-stop", grace_s=0.2, sigterms=1)

    assert stopped.exit_code == 0 and not stopped.answered
    cut_off = [
        json.loads(line)
        for line in stopped.server.log().splitlines()
        if "CreatePayment cut off" in line
    ]
    assert len(cut_off) == 1, stopped.server.log()[-3000:]
    assert cut_off[0]["level"] == "warning"
    assert cut_off[0]["request_id"] == "cut-off-by-stop"
    assert cut_off[0]["payment_id"] == stopped.payment_id
