"""The database goes away under a running server and comes back: every call meanwhile
is refused UNAVAILABLE (a status callers retry on), the server keeps serving, readiness
follows the database (gRPC health NOT_SERVING and /readyz 503 while it is gone, liveness
200 throughout), and a payment retried under its request_id once the database is back
is charged once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from tests.conftest import _postgres_admin, as_postgres_admin, require_postgres
from tests.e2e.server import create_key, start_server
from tests.e2e.test_installments_process import read_lines
from tests.rich_status import error_reasons
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def create(stub: orch_grpc.PaymentOrchestratorStub, auth: list, request_id: str) -> orch.Payment:
    request = orch.CreatePaymentRequest(
        request_id=request_id, currency="usd", amount_minor=2500, payment_method="pm_card_visa"
    )
    return stub.CreatePayment(request, metadata=auth, timeout=20).payment


def health_becomes(channel: grpc.Channel, status: int, within_s: float = 30.0) -> None:
    """Wait, on the server's own health stream, until the server-wide status is
    `status` (DEADLINE_EXCEEDED if it is not within `within_s`)."""
    updates = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(), timeout=within_s
    )
    for update in updates:
        if update.status == status:
            updates.cancel()
            return


# The readiness probe every 0.2 s: the outage is seen within a second.
PROBE_EVERY = {"PAYORCH_DATABASE_PROBE_INTERVAL_S": "0.2"}


def test_a_database_outage_is_unavailable_and_a_retry_after_it_charges_once(
    postgres_database, tmp_path: Path
):
    database = make_url(postgres_database)
    proxy = TcpProxy((database.host or "127.0.0.1", database.port or 5432)).start()
    through_proxy = database.set(port=proxy.port).render_as_string(hide_password=False)
    charges = tmp_path / "charges.log"
    server = start_server(
        tmp_path, through_proxy, env={"PAYORCH_SIM_CHARGE_LOG": str(charges), **PROBE_EVERY}
    )
    auth = [("authorization", f"Bearer {create_key(postgres_database, merchant='m_1')}")]
    try:
        with server.channel() as channel:
            stub = orch_grpc.PaymentOrchestratorStub(channel)
            before = create(stub, auth, f"outage-before-{uuid.uuid4()}")
            assert before.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
            # Payments at once, so that the writer holds more than one connection.
            at_once = [
                stub.CreatePayment.future(
                    orch.CreatePaymentRequest(
                        request_id=f"outage-busy-{i}-{uuid.uuid4()}",
                        currency="usd",
                        amount_minor=100 + i,
                        payment_method="pm_card_visa",
                    ),
                    metadata=auth,
                    timeout=20,
                )
                for i in range(32)
            ]
            busy = [f.result().payment.payment_id for f in at_once]

            proxy.cut()
            request_id = f"outage-{uuid.uuid4()}"
            for call in (
                lambda: create(stub, auth, request_id),
                lambda: stub.GetPayment(
                    orch.GetPaymentRequest(payment_id=before.payment_id), metadata=auth, timeout=20
                ),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
                assert error_reasons(refused.value) == ["STORAGE_UNAVAILABLE"]
                assert "same request_id" in (refused.value.details() or "")
            # Before, health said SERVING and /readyz 200 all through the outage.
            health_becomes(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            assert server.http_status("/readyz") == 503
            assert server.http_status("/healthz") == 200

            proxy.restore()
            health_becomes(channel, health_pb2.HealthCheckResponse.SERVING)
            assert server.http_status("/readyz") == 200
            # The writer's pooled connections died with the database: the first call to
            # use one finds out (UNAVAILABLE again) and has them all replaced.
            answers = []
            for _ in range(3):
                try:
                    paid = create(stub, auth, request_id)
                    break
                except grpc.RpcError as exc:
                    answers.append((exc.code(), error_reasons(exc)))
            else:
                pytest.fail(f"no answer after the database came back: {answers}")
            assert all(a == (grpc.StatusCode.UNAVAILABLE, ["STORAGE_UNAVAILABLE"]) for a in answers)
            assert len(answers) <= 1
            assert paid.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
            again = create(stub, auth, request_id)
            assert again.payment_id == paid.payment_id
    finally:
        proxy.cut()
        assert server.stop() == 0
    charged = [line.split()[2] for line in charges.read_text().splitlines()]
    assert charged.count(paid.payment_id) == 1
    assert sorted(set(charged)) == sorted({before.payment_id, paid.payment_id, *busy})
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log
    assert log.count("the database does not answer") == 1, "logged once, not every probe"
    assert log.count("the database answers again") == 1


def test_a_database_dropped_under_a_running_server_is_not_ready_and_refused_unavailable(
    tmp_path: Path,
):
    """DROP DATABASE ... WITH (FORCE) ends the server's connections and refuses new ones
    (`database does not exist`). Before, health stayed SERVING and every call was
    INTERNAL with a traceback: the refusal was not read as the database gone."""
    admin_url = make_url(_postgres_admin(require_postgres()))
    name = f"payorch_ready_{uuid.uuid4().hex[:10]}"
    asyncio.run(as_postgres_admin(f'CREATE DATABASE "{name}"'))
    database = admin_url.set(database=name).render_as_string(hide_password=False)
    # Keys are read from memory for a minute: the calls below reach their own reads
    # and the payment writer's pool, not only the key lookup.
    server = start_server(tmp_path, database, env={**PROBE_EVERY, "PAYORCH_AUTH_CACHE_S": "60"})
    try:
        auth = [("authorization", f"Bearer {create_key(database, merchant='m_1')}")]
        with server.channel() as channel:
            stub = orch_grpc.PaymentOrchestratorStub(channel)
            paid = create(stub, auth, f"dropped-before-{uuid.uuid4()}")
            assert paid.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED

            asyncio.run(as_postgres_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
            health_becomes(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            assert server.http_status("/readyz") == 503
            assert server.http_status("/healthz") == 200
            for call in (
                lambda: create(stub, auth, f"dropped-{uuid.uuid4()}"),
                lambda: stub.GetPayment(
                    orch.GetPaymentRequest(payment_id=paid.payment_id), metadata=auth, timeout=20
                ),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
                assert error_reasons(refused.value) == ["STORAGE_UNAVAILABLE"]
            # The server itself still answers.
            assert (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=5)
                .status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
    finally:
        assert server.stop() == 0
        asyncio.run(as_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log
    assert log.count("the database does not answer") == 1


def http_answer(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def answers_within(url: str, status: int, within_s: float = 30.0) -> str:
    """Ask `url` until it answers `status` (the probe runs every 0.2 s); its body."""
    deadline = time.monotonic() + within_s
    while (answer := http_answer(url))[0] != status:
        assert time.monotonic() < deadline, (url, answer)
        time.sleep(0.1)
    return answer[1]


WORKERS = {
    "scheduler": ["scheduler", "--http-port", "0", "--interval", "1", "--no-webhooks"],
    "webhooks dispatch": ["webhooks", "dispatch", "--http-port", "0"],
}


def start_worker(
    name: str, args: list[str], database_url: str, env: dict[str, str], log: Path
) -> subprocess.Popen[str]:
    """`payorch <args>` on `database_url`, its stderr in the file `log` (a full pipe
    would stall the process), its stdout a pipe for its start line."""
    with log.open("w") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "payorch.entrypoints.cli", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={
                **os.environ,
                "PAYORCH_DATABASE_URL": database_url,
                "PAYORCH_WEBHOOK_INTERVAL_S": "1",
                **env,
            },
            cwd=log.parent,
        )


@pytest.mark.parametrize("worker_name", WORKERS)
def test_a_running_workers_readiness_follows_its_database(
    worker_name: str, postgres_database, tmp_path: Path
):
    """`payorch scheduler --http-port` and `payorch webhooks dispatch --http-port`:
    /readyz 503 and payorch_database_up 0 while its database is gone, /healthz 200
    throughout. Before, the scheduler never probed (ready and `payorch_database_up 1`
    through any outage), and the dispatcher served no port at all: nothing told either
    could not work."""
    database = make_url(postgres_database)
    proxy = TcpProxy((database.host or "127.0.0.1", database.port or 5432)).start()
    through_proxy = database.set(port=proxy.port).render_as_string(hide_password=False)
    log = tmp_path / "worker.log"
    worker = start_worker(worker_name, WORKERS[worker_name], through_proxy, PROBE_EVERY, log)
    try:
        started = read_lines(worker, f"payorch {worker_name} running", timeout=30)[-1]
        http = "http://" + started.rsplit("HTTP on ", 1)[1].strip()
        assert http_answer(f"{http}/healthz") == (200, '{"status": "ok"}')
        assert http_answer(f"{http}/readyz") == (200, '{"status": "ready"}')
        assert "payorch_database_up 1.0" in http_answer(f"{http}/metrics")[1]

        proxy.cut()
        assert answers_within(f"{http}/readyz", 503) == '{"status": "database unreachable"}'
        assert "payorch_database_up 0.0" in http_answer(f"{http}/metrics")[1]
        assert http_answer(f"{http}/healthz")[0] == 200

        proxy.restore()
        assert answers_within(f"{http}/readyz", 200) == '{"status": "ready"}'
        assert "payorch_database_up 1.0" in http_answer(f"{http}/metrics")[1]
    finally:
        # Stopped first: a cut mid-pass could leave its claim's transaction open on the
        # server, holding row locks until the server notices the peer gone.
        worker.terminate()
        worker.communicate(timeout=30)
        proxy.cut()
    out = log.read_text()
    assert worker.returncode == 0, out
    assert out.count("the database does not answer") == 1, out
    assert out.count("the database answers again") == 1, out
