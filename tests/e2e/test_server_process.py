"""The real server process, called over gRPC with the generated client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from tests.e2e.server import start_server
from tests.rich_status import field_violations

pytestmark = pytest.mark.e2e


@pytest.fixture
def stub(server):
    with server.channel() as ch:
        yield orch_grpc.PaymentOrchestratorStub(ch)


def pay(stub, server, *, who="m_1", request_id=None, **fields):
    body = {"request_id": request_id or f"e2e-{uuid.uuid4()}", "currency": "usd"}
    body.setdefault("amount_minor", 1999)
    body.update(fields)
    if "payment_method" not in body and "methods" not in body:
        body["payment_method"] = "pm_card_visa"
    return stub.CreatePayment(
        orch.CreatePaymentRequest(**body), metadata=server.auth(who), timeout=20
    )


def test_health_reports_serving_without_a_credential(server):
    with server.channel() as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "payments.orchestrator.v1.PaymentOrchestrator"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_orchestrator_service(server):
    with server.channel() as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert "payments.orchestrator.v1.PaymentOrchestrator" in names
    assert "grpc.health.v1.Health" in names


def test_create_get_and_list_a_payment(stub, server):
    created = pay(stub, server).payment
    assert created.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
    assert created.result.success and created.merchant_id == "m_1"
    assert created.result.total_processed.amount_minor == 1999
    assert len(created.result.step_results[0].attempts) == 1

    got = stub.GetPayment(
        orch.GetPaymentRequest(payment_id=created.payment_id), metadata=server.auth("m_1")
    ).payment
    assert got.payment_id == created.payment_id and got.amount.currency == "USD"

    listed = stub.ListPayments(orch.ListPaymentsRequest(page_size=100), metadata=server.auth("m_1"))
    assert created.payment_id in [p.payment_id for p in listed.payments]


def test_list_pages_with_tokens(stub, server):
    made = {pay(stub, server, who="m_2").payment.payment_id for _ in range(3)}
    seen, token = [], ""
    while True:
        page = stub.ListPayments(
            orch.ListPaymentsRequest(page_size=2, page_token=token), metadata=server.auth("m_2")
        )
        seen += [p.payment_id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert made <= set(seen) and len(seen) == len(set(seen))


def test_replaying_a_request_id_returns_the_stored_payment(stub, server):
    first = pay(stub, server, request_id="e2e-replay-1").payment
    again = pay(stub, server, request_id="e2e-replay-1").payment
    assert again.payment_id == first.payment_id
    assert again.replayed and not first.replayed


def test_reusing_a_request_id_with_another_amount_names_the_mismatch(stub, server):
    pay(stub, server, request_id="e2e-conflict")
    with pytest.raises(grpc.RpcError) as err:
        pay(stub, server, request_id="e2e-conflict", amount_minor=5000)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "amount" in err.value.details()


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"amount_minor": 0}, "amount"),
        ({"amount_minor": -5}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"payment_method": ""}, "payment_method"),
    ],
)
def test_bad_input_gets_field_violations_and_stores_nothing(stub, server, fields, bad_field):
    request_id = f"e2e-bad-{uuid.uuid4()}"
    with pytest.raises(grpc.RpcError) as err:
        pay(stub, server, request_id=request_id, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field in field_violations(err.value)
    listed = stub.ListPayments(orch.ListPaymentsRequest(page_size=100), metadata=server.auth("m_1"))
    assert request_id not in [p.request_id for p in listed.payments]


def test_a_missing_merchant_is_invalid_for_an_ops_caller(stub, server):
    with pytest.raises(grpc.RpcError) as err:
        pay(stub, server, who="ops")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "merchant_id" in field_violations(err.value)


def test_an_unknown_payment_is_not_found(stub, server):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetPayment(orch.GetPaymentRequest(payment_id="pay_nope"), metadata=server.auth("m_1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_call_without_a_key_is_unauthenticated(stub, server):
    with pytest.raises(grpc.RpcError) as err:
        stub.ListPayments(orch.ListPaymentsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_server_keeps_serving_after_bad_input(stub, server):
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            pay(stub, server, amount_minor=-1)
    assert pay(stub, server).payment.result.success


def refused_listening(database: Path, listen: str, http_port: str) -> str:
    """The one line `payorch serve` on these addresses ends with, exit code 2."""
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", "serve"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PAYORCH_DATABASE_URL": f"sqlite:///{database}",
            "PAYORCH_LISTEN": listen,
            "PAYORCH_HTTP_PORT": http_port,
        },
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("taken", ["grpc", "http"])
def test_a_port_in_use_is_one_line_and_exit_2_and_the_first_server_keeps_serving(
    stub, server, tmp_path, taken
):
    # Ports taken by the running server; the other one is free (0 picks one).
    listen = server.address if taken == "grpc" else "127.0.0.1:0"
    http_port = server.http_address.rsplit(":", 1)[1] if taken == "http" else "0"
    last = refused_listening(tmp_path / "second.db", listen, http_port)
    protocol = {"grpc": "gRPC", "http": "HTTP"}[taken]
    assert last.startswith(f"payorch: cannot listen for {protocol}")
    if taken == "grpc":
        assert last.endswith(": the port is in use")
    assert pay(stub, server).payment.result.success


def test_an_address_not_on_this_host_is_one_line_saying_so_and_exit_2(tmp_path):
    # 192.0.2.1 is TEST-NET-1: no interface of any host has it.
    assert refused_listening(tmp_path / "p.db", "192.0.2.1:50051", "0") == (
        "payorch: cannot listen for gRPC on 192.0.2.1:50051: the address is not one of this host's"
    )


def test_a_server_on_a_unix_socket_says_its_path_and_a_second_one_there_is_refused(tmp_path):
    """The start line and log name the socket (grpc answers port 1 for any, which read
    "unix:1"), a client dials what the line says; a second server on the same path is
    refused (grpc would take the path over) and the first keeps serving."""
    with tempfile.TemporaryDirectory(prefix="po-") as d:
        listen = f"unix:{d}/grpc.sock"
        running = start_server(
            tmp_path, f"sqlite:///{tmp_path / 'p.db'}", env={"PAYORCH_LISTEN": listen}
        )
        try:
            assert running.address == listen
            last = refused_listening(tmp_path / "second.db", listen, "0")
            assert last == (
                f"payorch: cannot listen for gRPC on {listen}: another process serves on"
                f" {d}/grpc.sock"
            )
            with running.channel() as ch:
                reply = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Logged right after the start line, before any call is answered.
            served = [json.loads(line) for line in running.log().splitlines() if "{" in line]
            assert [e["rpc"] for e in served if "event loop" in e.get("msg", "")] == [listen]
        finally:
            running.stop()


def test_a_unix_socket_in_a_directory_that_does_not_exist_is_one_line_naming_it(tmp_path):
    gone = tmp_path / "gone"
    assert refused_listening(tmp_path / "p.db", f"unix:{gone}/grpc.sock", "0") == (
        f"payorch: cannot listen for gRPC on unix:{gone}/grpc.sock:"
        f" the directory {gone} does not exist"
    )


# Written as printed (PYTHONUNBUFFERED, as in this suite) or only by the last flush,
# which Python would make at exit, after main returned.
@pytest.mark.parametrize("buffered", [False, True], ids=["unbuffered", "buffered"])
def test_output_piped_into_a_reader_that_left_early_ends_quietly(stub, server, buffered):
    payment_id = pay(stub, server).payment.payment_id
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED" or not buffered}
    flags = ["--address", server.address, "--api-key", server.keys["m_1"]]
    # `payorch get ID | head`, head gone before the output is written: no reader left.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "payorch.entrypoints.cli", "get", payment_id, *flags],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE  # as the shell reports a writer cut off


@pytest.mark.parametrize(("level", "alembic_lines"), [("INFO", False), ("DEBUG", True)])
def test_a_migrating_start_logs_payorch_lines_and_alembic_only_at_debug(
    tmp_path, level, alembic_lines
):
    # Before: every migrating start logged seven alembic.runtime.plugins lines and one
    # alembic.runtime.migration line per migration, at INFO.
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", "scheduler", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "PAYORCH_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}",
            "PAYORCH_LOG_LEVEL": level,
        },
    )
    assert done.returncode == 0, done.stderr
    loggers = [json.loads(line)["logger"] for line in done.stderr.splitlines()]
    assert "payorch.adapters.persistence.engine" in loggers
    assert any(name.startswith("alembic") for name in loggers) is alembic_lines, loggers
