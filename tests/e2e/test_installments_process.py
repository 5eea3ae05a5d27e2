"""Installments through the real server process, the real CLI and a real receiver:
InstallmentService over gRPC, `payorch scheduler --once --now ...` moving time forward,
and `payorch webhooks listen` printing the webhooks it verified."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from payments.installments.v1 import installments_pb2 as pb
from payments.installments.v1 import installments_pb2_grpc as pb_grpc
from payments.plan.v1 import plan_pb2
from tests.e2e.server import RunningServer, create_key, payorch, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(request: pytest.FixtureRequest, tmp_path_factory) -> RunningServer:
    """A server allowing plain-http webhooks to 127.0.0.1 (the dev setting)."""
    workdir = tmp_path_factory.mktemp("installments")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'payorch.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    running = start_server(workdir, url, env={"PAYORCH_WEBHOOKS_ALLOW_HTTP_LOOPBACK": "1"})
    running.keys = {"m_1": create_key(url, merchant="m_1"), "m_2": create_key(url, merchant="m_2")}
    yield running
    running.stop()


@pytest.fixture
def stub(server):
    with server.channel() as ch:
        yield pb_grpc.InstallmentServiceStub(ch)


def create(stub, server, *, who="m_1", token="pm_card_visa", total=10_000):
    return stub.CreateInstallmentPlan(
        pb.CreateInstallmentPlanRequest(
            request_id=f"e2e-{uuid.uuid4()}",
            order_id=f"order-{uuid.uuid4().hex[:8]}",
            total=plan_pb2.Money(amount_minor=total, currency="EUR"),
            payment_method=token,
            customer_id=f"cus_{who}",
        ),
        metadata=server.auth(who),
        timeout=20,
    )


def code_of(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def scheduler_once(server: RunningServer, now: datetime) -> dict:
    out = payorch(
        "scheduler",
        "--once",
        "--now",
        now.isoformat(),
        env={
            "PAYORCH_DATABASE_URL": server.database_url,
            "PAYORCH_WEBHOOKS_ALLOW_HTTP_LOOPBACK": "1",
        },
    )
    return json.loads(out.strip().splitlines()[-1])


def test_a_plan_is_created_read_listed_and_cancelled_over_grpc(server, stub):
    created = create(stub, server)
    plan = created.plan
    assert plan.status == pb.PLAN_STATUS_ACTIVE and not created.replayed
    assert [i.amount.amount_minor for i in plan.installments] == [3333, 3333, 3334]
    assert [i.status for i in plan.installments] == [
        pb.INSTALLMENT_STATUS_PAID,
        pb.INSTALLMENT_STATUS_PENDING,
        pb.INSTALLMENT_STATUS_PENDING,
    ]
    assert (plan.paid_count, plan.installment_count, plan.remaining.amount_minor) == (1, 3, 6667)
    got = stub.GetInstallmentPlan(
        pb.GetInstallmentPlanRequest(plan_id=plan.plan_id), metadata=server.auth("m_1"), timeout=10
    ).plan
    assert got.installments[0].payment_id == plan.installments[0].payment_id
    listed = stub.ListInstallmentPlans(
        pb.ListInstallmentPlansRequest(status=pb.PLAN_STATUS_ACTIVE, page_size=100),
        metadata=server.auth("m_1"),
        timeout=10,
    )
    assert plan.plan_id in {p.plan_id for p in listed.plans}
    cancelled = stub.CancelInstallmentPlan(
        pb.CancelInstallmentPlanRequest(plan_id=plan.plan_id, reason="returned"),
        metadata=server.auth("m_1"),
        timeout=10,
    ).plan
    assert cancelled.status == pb.PLAN_STATUS_CANCELLED


def test_a_declined_first_charge_answers_without_a_plan(server, stub):
    created = create(stub, server, token="pm_card_chargeDeclinedInsufficientFunds")
    assert not created.HasField("plan")
    assert (created.first_charge.status, created.first_charge.error_code) == (
        "failed",
        "insufficient_funds",
    )


def test_an_order_below_the_threshold_is_not_eligible(server, stub):
    assert code_of(lambda: create(stub, server, total=9_999)) == grpc.StatusCode.FAILED_PRECONDITION


def test_another_merchants_plan_is_not_found(server, stub):
    plan = create(stub, server).plan
    calls = [
        lambda: stub.GetInstallmentPlan(
            pb.GetInstallmentPlanRequest(plan_id=plan.plan_id), metadata=server.auth("m_2")
        ),
        lambda: stub.CancelInstallmentPlan(
            pb.CancelInstallmentPlanRequest(plan_id=plan.plan_id), metadata=server.auth("m_2")
        ),
        lambda: stub.RetryInstallment(
            pb.RetryInstallmentRequest(installment_id=plan.installments[1].installment_id),
            metadata=server.auth("m_2"),
        ),
    ]
    assert [code_of(c) for c in calls] == [grpc.StatusCode.NOT_FOUND] * 3
    listed = stub.ListInstallmentPlans(
        pb.ListInstallmentPlansRequest(page_size=100), metadata=server.auth("m_2"), timeout=10
    )
    assert plan.plan_id not in {p.plan_id for p in listed.plans}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plans_for_order(stub, server, order_id: str) -> list[pb.InstallmentPlan]:
    listed = stub.ListInstallmentPlans(
        pb.ListInstallmentPlansRequest(page_size=100), metadata=server.auth("m_1"), timeout=10
    )
    return [p for p in listed.plans if p.order_id == order_id]


def cli_create(server: RunningServer, order_id: str) -> list[str]:
    """`payorch installments create` for m_1, without --request-id."""
    return [
        *("installments", "create", "--address", server.address),
        *("--api-key", server.keys["m_1"], "--order-id", order_id, "--amount", "150.00"),
        *("--currency", "EUR", "--payment-method", "pm_card_visa", "--customer", "cus_m_1"),
    ]


def test_the_cli_run_again_after_a_lost_answer_makes_no_second_plan(server, stub):
    # No --request-id: the operator re-runs the same command because its answer was lost.
    order = f"order-{uuid.uuid4().hex[:8]}"

    first = json.loads(payorch(*cli_create(server, order)))
    again = json.loads(payorch(*cli_create(server, order)))

    assert again["plan"]["planId"] == first["plan"]["planId"]
    assert again["replayed"] is True
    assert [p.plan_id for p in plans_for_order(stub, server, order)] == [first["plan"]["planId"]]


def test_a_refused_cli_create_names_the_request_id_it_used(server):
    order = f"order-{uuid.uuid4().hex[:8]}"
    command = cli_create(server, order)
    command[command.index("150.00")] = "99.99"  # below the smallest total: refused
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    failure = json.loads(done.stderr)
    assert (failure["code"], failure["request_id"]) == ("FAILED_PRECONDITION", f"plan-{order}")


def read_lines(process: subprocess.Popen[str], until: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            lines.append(line)
            if until in line:
                return lines
    raise AssertionError(f"no {until!r} within {timeout} s: {lines}")


def test_the_cli_scheduler_moves_time_and_the_cli_receiver_prints_verified_webhooks(server, stub):
    port = free_port()
    endpoint = stub.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(
            url=f"http://127.0.0.1:{port}/hooks",
            event_types=["installment.failed", "installment_plan.breached"],
        ),
        metadata=server.auth("m_1"),
        timeout=10,
    )
    assert endpoint.secret.startswith("whsec_")
    listen = ["webhooks", "listen", "--port", str(port), "--secret", endpoint.secret]
    listener = subprocess.Popen(
        [sys.executable, "-m", "payorch.entrypoints.cli", *listen],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        read_lines(listener, "listening on", timeout=30)
        plan = create(stub, server, token="pm_card_offSessionDeclinedInsufficientFunds").plan
        due = datetime.fromtimestamp(plan.installments[1].due_at.seconds, UTC)
        ran = scheduler_once(server, due + timedelta(hours=1))
        assert ran["scheduler"]["failed"] >= 1 and ran["webhooks"]["delivered"] >= 1
        lines = read_lines(listener, '"type": "installment.failed"', timeout=30)
        event = json.loads(lines[-1])
        assert event["verified"] is True
        assert event["data"]["plan_id"] == plan.plan_id
        assert event["data"]["error_code"] == "insufficient_funds"

        got = stub.GetInstallmentPlan(
            pb.GetInstallmentPlanRequest(plan_id=plan.plan_id),
            metadata=server.auth("m_1"),
            timeout=10,
        ).plan
        second = got.installments[1]
        assert second.status == pb.INSTALLMENT_STATUS_FAILED and second.attempts == 1
        next_at = datetime.fromtimestamp(second.next_attempt_at.seconds, UTC)
        assert timedelta(days=3) - timedelta(hours=2) < next_at - due <= timedelta(days=3, hours=2)
    finally:
        listener.terminate()
        listener.wait(10)


def test_a_second_scheduler_on_one_sqlite_database_is_refused_with_a_clear_message(tmp_path):
    # SQLite only (PostgreSQL runs any number of schedulers): a database of its own.
    env = {**os.environ, "PAYORCH_DATABASE_URL": f"sqlite:///{tmp_path / 'payorch.db'}"}
    first = subprocess.Popen(
        [sys.executable, "-m", "payorch.entrypoints.cli", "scheduler", "--interval", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        read_lines(first, "payorch scheduler running", timeout=30)
        second = subprocess.run(
            [sys.executable, "-m", "payorch.entrypoints.cli", "scheduler", "--once"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert second.returncode == 2
        assert "another scheduler is already running on this SQLite database" in second.stderr
        assert "use PostgreSQL to run several" in second.stderr
    finally:
        first.terminate()
        first.wait(20)
    assert first.returncode == 0, "it stops cleanly on SIGTERM"


def test_serve_runs_the_scheduler_and_the_dispatcher_when_switched_on(server, stub, tmp_path):
    plan = create(stub, server).plan
    later = start_server(
        tmp_path,
        server.database_url,
        env={
            "PAYORCH_SCHEDULER": "1",
            "PAYORCH_SCHEDULER_INTERVAL_S": "0.2",
            "PAYORCH_WEBHOOK_DISPATCHER": "1",
            "PAYORCH_CLOCK_OFFSET": "31d",  # a month on: installment 2 is due there
        },
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = stub.GetInstallmentPlan(
                pb.GetInstallmentPlanRequest(plan_id=plan.plan_id),
                metadata=server.auth("m_1"),
                timeout=10,
            ).plan
            if got.installments[1].status == pb.INSTALLMENT_STATUS_PAID:
                break
            time.sleep(0.2)
        assert got.installments[1].status == pb.INSTALLMENT_STATUS_PAID
        assert got.installments[2].status == pb.INSTALLMENT_STATUS_PENDING
        log = later.log()
        assert "running the scheduler" in log and "running the webhook-dispatcher" in log
    finally:
        assert later.stop() == 0


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def test_a_running_scheduler_serves_the_metrics_of_the_charges_it_makes(server, stub):
    """Its charges are counted in its own process: without --http-port (before, no way
    at all) Prometheus never saw an installment charge of a `payorch scheduler`."""
    plan = create(stub, server).plan
    due = datetime.fromtimestamp(plan.installments[1].due_at.seconds, UTC)
    env = {**os.environ, "PAYORCH_DATABASE_URL": server.database_url}
    args = ["scheduler", "--http-port", "0", "--interval", "0.2", "--no-webhooks"]
    args += ["--now", (due + timedelta(hours=1)).isoformat()]
    worker = subprocess.Popen(
        [sys.executable, "-m", "payorch.entrypoints.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        started = read_lines(worker, "payorch scheduler running", timeout=30)[-1]
        http = "http://" + started.rsplit("HTTP on ", 1)[1].strip()
        assert _scrape(f"{http}/healthz") == '{"status": "ok"}'
        assert _scrape(f"{http}/readyz") == '{"status": "ready"}'
        charged = 'payorch_payments_total{status="succeeded"} 1.0'
        deadline = time.monotonic() + 30
        while charged not in (page := _scrape(f"{http}/metrics")):
            assert time.monotonic() < deadline, page
            time.sleep(0.2)
        assert (
            'payorch_processor_requests_total{outcome="success",processor="simulated"} 1.0' in page
        )
        # Counted as its pass ends, after the payment's own count.
        paid = 'payorch_scheduler_charges_total{outcome="paid"} 1.0'
        while paid not in (page := _scrape(f"{http}/metrics")):
            assert time.monotonic() < deadline, page
            time.sleep(0.2)
        assert 'payorch_scheduler_charges_total{outcome="failed_final"} 0.0' in page
    finally:
        worker.terminate()
        worker.wait(20)
    assert worker.returncode == 0


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        (["scheduler"], "payorch scheduler: --http-port is for a running scheduler, not --once"),
        (
            ["webhooks", "dispatch"],
            "payorch webhooks dispatch: --http-port is for a running dispatcher, not --once",
        ),
    ],
)
def test_a_workers_pass_with_once_takes_no_http_port(command: list[str], refused: str):
    args = [*command, "--once", "--http-port", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.splitlines()) == (2, [refused])
