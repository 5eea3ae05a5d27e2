"""The database's host goes silent under running processes: no refusal, no reset, every
packet dropped (tests/tcp_proxy.py, `blackhole()`). Nothing waits on it for longer than
PAYORCH_DATABASE_TIMEOUT_S a step: calls with no deadline of their own are answered
UNAVAILABLE `STORAGE_UNAVAILABLE`, readiness turns NOT_SERVING and 503, the workers'
passes end, and once it answers again everything goes on with no restart and no
payment charged twice. Before, a call with no deadline waited as long as the silence
lasted (a pass too), and a new connection 60 s (asyncpg's connect default)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from tests.e2e.server import create_key, start_server
from tests.e2e.test_database_outage import (
    PROBE_EVERY,
    answers_within,
    health_becomes,
    start_worker,
)
from tests.e2e.test_installments_process import read_lines
from tests.rich_status import error_reasons
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# Short bounds, so that the silence is noticed within a second or two: a statement, a
# connect, a checkout and the readiness probe each give up after half a second.
SHORT = {
    **PROBE_EVERY,
    "PAYORCH_DATABASE_PROBE_TIMEOUT_S": "0.5",
    "PAYORCH_DATABASE_TIMEOUT_S": "0.5",
}
# However long the old code would have waited: a call not answered in this long hangs.
HANGS_S = 20.0
RECONCILER_REFUSED = "reconciliation pass: the database cannot be reached"


def payment(request_id: str, amount_minor: int = 2500) -> orch.CreatePaymentRequest:
    return orch.CreatePaymentRequest(
        request_id=request_id,
        currency="usd",
        amount_minor=amount_minor,
        payment_method="pm_card_visa",
    )


def refused_unavailable(call: grpc.Future) -> grpc.RpcError:
    """The answer of a call made with no deadline: an UNAVAILABLE STORAGE_UNAVAILABLE,
    not a wait (grpc.FutureTimeoutError when none came in HANGS_S)."""
    try:
        answer = call.result(timeout=HANGS_S)
    except grpc.FutureTimeoutError:
        call.cancel()
        pytest.fail(f"no answer in {HANGS_S} s: the call waits on the silent database")
    except grpc.RpcError as refused:
        assert refused.code() is grpc.StatusCode.UNAVAILABLE, refused
        assert error_reasons(refused) == ["STORAGE_UNAVAILABLE"]
        return refused
    pytest.fail(f"answered while the database is silent: {answer}")


def stored(database_url: str, request_id: str) -> str | None:
    """The status the payment under `request_id` has in the database, read directly."""

    async def read() -> str | None:
        conn = await asyncpg.connect(make_url(database_url).render_as_string(False))
        try:
            status = await conn.fetchval(
                "SELECT status FROM payments WHERE request_id = $1", request_id
            )
            return None if status is None else str(status)
        finally:
            await conn.close()

    return asyncio.run(read())


def retry(
    stub: orch_grpc.PaymentOrchestratorStub, auth: list, request_id: str, database_url: str
) -> orch.Payment | None:
    """CreatePayment again under `request_id` once the database answers: the payment, or
    None when it is PROCESSING (stored, its outcome not) and the retry is told to wait."""
    try:
        return stub.CreatePayment(payment(request_id), metadata=auth, timeout=HANGS_S).payment
    except grpc.RpcError as waiting:
        assert waiting.code() is grpc.StatusCode.ABORTED, waiting
        assert error_reasons(waiting) == ["REQUEST_IN_PROGRESS"]
        assert stored(database_url, request_id) == "processing"
        return None


def logged_within(log: Callable[[], str], line: str) -> None:
    """Wait until `line` is in the log read by `log` (a failed test after HANGS_S)."""
    waited = time.monotonic() + HANGS_S
    while line not in log():
        assert time.monotonic() < waited, f"no {line!r} in {HANGS_S} s: {log()}"
        time.sleep(0.1)


def charges_of(charges: Path, payment_id: str) -> int:
    lines = charges.read_text().splitlines() if charges.exists() else []
    return [line.split()[2] for line in lines].count(payment_id)


def proxied(database_url: str) -> tuple[TcpProxy, str]:
    database = make_url(database_url)
    proxy = TcpProxy((database.host or "127.0.0.1", database.port or 5432)).start()
    return proxy, database.set(port=proxy.port).render_as_string(hide_password=False)


def test_calls_with_no_deadline_are_refused_while_the_database_is_silent_and_served_after(
    postgres_database: str, tmp_path: Path
) -> None:
    proxy, through_proxy = proxied(postgres_database)
    charges = tmp_path / "charges.log"
    # Keys and configs from memory: the calls reach the payment writer and the reads.
    server = start_server(
        tmp_path,
        through_proxy,
        env={
            "PAYORCH_SIM_CHARGE_LOG": str(charges),
            "PAYORCH_AUTH_CACHE_S": "60",
            "PAYORCH_CONFIG_CACHE_S": "60",
            "PAYORCH_RECONCILE_INTERVAL_S": "1",
            **SHORT,
        },
    )
    auth = [("authorization", f"Bearer {create_key(postgres_database, merchant='m_1')}")]
    try:
        with server.channel() as channel:
            stub = orch_grpc.PaymentOrchestratorStub(channel)
            before = stub.CreatePayment(payment(f"silent-before-{uuid.uuid4()}"), metadata=auth)
            assert before.payment.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED

            proxy.blackhole()
            silent_id = f"silent-{uuid.uuid4()}"
            # No deadline of the caller's: only the server's own bound answers them.
            refused = refused_unavailable(
                stub.CreatePayment.future(payment(silent_id), metadata=auth)
            )
            assert "same request_id" in (refused.details() or "")
            refused_unavailable(
                stub.GetPayment.future(
                    orch.GetPaymentRequest(payment_id=before.payment.payment_id), metadata=auth
                )
            )
            # With a deadline longer than the bound, the bound answers first too.
            refused_unavailable(
                stub.CreatePayment.future(
                    payment(f"silent-{uuid.uuid4()}"), metadata=auth, timeout=HANGS_S
                )
            )
            health_becomes(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            assert server.http_status("/readyz") == 503
            assert server.http_status("/healthz") == 200
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
            # The reconciler's pass ends too, logged in one line.
            logged_within(server.log, RECONCILER_REFUSED)

            proxy.restore()
            health_becomes(channel, health_pb2.HealthCheckResponse.SERVING)
            assert server.http_status("/readyz") == 200
            after = stub.CreatePayment(payment(f"silent-after-{uuid.uuid4()}"), metadata=auth)
            assert after.payment.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
            # The refused payment's insert, held by the silence, may land once it ends
            # (as TCP delivers what it retransmits): then it is PROCESSING with nothing
            # charged, for the reconciler, and its retry is told to wait. Either way it
            # is charged at most once.
            retried = retry(stub, auth, silent_id, postgres_database)
            if retried is not None:
                assert retried.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
                assert charges_of(charges, retried.payment_id) == 1
        log = server.log()
        # Stopped while silent again: it closes its connections without an answer.
        proxy.blackhole()
        assert server.stop(timeout=HANGS_S) == 0
    finally:
        proxy.cut()
        server.stop()
    assert charges_of(charges, before.payment.payment_id) == 1
    assert charges_of(charges, after.payment.payment_id) == 1
    assert "Traceback" not in log and "unhandled error" not in log
    assert log.count("the database does not answer") == 1
    assert log.count("the database answers again") == 1


def test_a_charge_whose_result_cannot_be_stored_is_charged_once_and_left_for_the_reconciler(
    postgres_database: str, tmp_path: Path
) -> None:
    """The database goes silent while the processor charges: the charge goes through,
    its save is answered by no one. The call (no deadline) is refused UNAVAILABLE; the
    payment is PROCESSING (or SUCCEEDED, if the held save landed once the silence
    ended), charged once, and its retry never charges again."""
    proxy, through_proxy = proxied(postgres_database)
    charges = tmp_path / "charges.log"
    server = start_server(
        tmp_path,
        through_proxy,
        args=("--simulate", "latency_ms=1500"),
        env={
            "PAYORCH_SIM_CHARGE_LOG": str(charges),
            "PAYORCH_AUTH_CACHE_S": "60",
            "PAYORCH_CONFIG_CACHE_S": "60",
            **SHORT,
        },
    )
    auth = [("authorization", f"Bearer {create_key(postgres_database, merchant='m_1')}")]
    request_id = f"silent-save-{uuid.uuid4()}"
    try:
        with server.channel() as channel:
            stub = orch_grpc.PaymentOrchestratorStub(channel)
            call = stub.CreatePayment.future(payment(request_id), metadata=auth)
            # Silent once the payment is stored, while the processor still charges.
            waited = time.monotonic() + HANGS_S
            while stored(postgres_database, request_id) is None:
                assert time.monotonic() < waited, "the payment was never stored"
                time.sleep(0.02)
            proxy.blackhole()
            refused_unavailable(call)
            assert stored(postgres_database, request_id) == "processing"

            proxy.restore()
            health_becomes(channel, health_pb2.HealthCheckResponse.SERVING)
            retried = retry(stub, auth, request_id, postgres_database)
            if retried is not None:
                assert retried.replayed
                assert retried.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
    finally:
        proxy.cut()
        assert server.stop() == 0
    charged = [line.split()[2] for line in charges.read_text().splitlines()]
    assert len(charged) == 1, charged
    assert "Traceback" not in server.log()


WORKERS = {
    "scheduler": (
        ["scheduler", "--http-port", "0", "--interval", "1", "--no-webhooks"],
        "scheduler pass: the database cannot be reached (",
    ),
    "webhooks dispatch": (
        ["webhooks", "dispatch", "--http-port", "0"],
        "webhook pass: the database cannot be reached (",
    ),
}


@pytest.mark.parametrize("worker_name", WORKERS)
def test_a_workers_passes_end_while_its_database_is_silent_and_go_on_after(
    worker_name: str, postgres_database: str, tmp_path: Path
) -> None:
    """`payorch scheduler` and `payorch webhooks dispatch`: a pass against a silent
    database fails (logged in one line, no traceback) instead of waiting on it, /readyz
    is 503 meanwhile, and once the database answers the worker is ready again and stops
    cleanly. Before, the pass waited as long as the silence lasted (and, once bounded,
    logged a traceback a pass)."""
    proxy, through_proxy = proxied(postgres_database)
    args, pass_failed = WORKERS[worker_name]
    log = tmp_path / "worker.log"
    worker = start_worker(worker_name, args, through_proxy, SHORT, log)
    try:
        started = read_lines(worker, f"payorch {worker_name} running", timeout=30)[-1]
        http = "http://" + started.rsplit("HTTP on ", 1)[1].strip()
        assert answers_within(f"{http}/readyz", 200) == '{"status": "ready"}'

        proxy.blackhole()
        assert answers_within(f"{http}/readyz", 503, within_s=HANGS_S) == (
            '{"status": "database unreachable"}'
        )
        logged_within(log.read_text, pass_failed)

        proxy.restore()
        assert answers_within(f"{http}/readyz", 200, within_s=HANGS_S) == '{"status": "ready"}'
        before_stop = log.read_text()
        # Stopped while silent again: it closes its connections without an answer.
        proxy.blackhole()
        worker.terminate()
        worker.communicate(timeout=HANGS_S)
    finally:
        worker.terminate()
        try:
            worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()  # stuck on the silent database: not left behind
            worker.communicate()
        proxy.cut()
    out = log.read_text()
    assert worker.returncode == 0, out
    assert before_stop.count("the database does not answer") == 1, out
    assert before_stop.count("the database answers again") == 1, out
    assert "Traceback" not in before_stop, out


@pytest.mark.parametrize("command", ["serve", "scheduler"])
def test_a_process_started_against_a_silent_database_stops_within_the_bound(
    command: str, postgres_database: str, tmp_path: Path
) -> None:
    """Migrations on start are not bounded, their connect is: a database that answers
    nothing at start stops the process after PAYORCH_DATABASE_TIMEOUT_S, in one line
    naming it (its password hidden), exit code 2. Before, asyncpg's connect waited its
    own 60 s (and the test's HANGS_S ran out first)."""
    proxy, through_proxy = proxied(postgres_database)
    with_password = make_url(through_proxy).set(password="hunter2")
    proxy.blackhole()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "payorch.entrypoints.cli", command],
            capture_output=True,
            text=True,
            timeout=HANGS_S,
            env={
                **os.environ,
                "PAYORCH_DATABASE_URL": with_password.render_as_string(hide_password=False),
                "PAYORCH_LISTEN": "127.0.0.1:0",
                "PAYORCH_HTTP_PORT": "0",
                **SHORT,
            },
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still starting after {HANGS_S} s: the connect waits on the silence")
    finally:
        proxy.cut()
    shown = with_password.set(drivername="postgresql").render_as_string(hide_password=True)
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [f"payorch: cannot reach the database {shown}: no answer (TimeoutError)"],
    )
