"""Observability of the real server process: /metrics, logs, violations, stats, retrospective."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payments.contracts.v1 import monitor_pb2, monitor_pb2_grpc
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from tests.e2e.server import payorch

pytestmark = pytest.mark.e2e

CREATE = "/payments.orchestrator.v1.PaymentOrchestrator/CreatePayment"


def pay(server, who="m_1", **fields):
    body = {
        "request_id": f"obs-{uuid.uuid4()}",
        "currency": "usd",
        "amount_minor": 1999,
        "payment_method": "pm_card_visa",
        **fields,
    }
    with server.channel() as ch:
        return orch_grpc.PaymentOrchestratorStub(ch).CreatePayment(
            orch.CreatePaymentRequest(**body), metadata=server.auth(who), timeout=20
        )


def refused(server, **fields) -> grpc.StatusCode:
    try:
        pay(server, **fields)
    except grpc.RpcError as exc:
        return exc.code()
    raise AssertionError("the request was accepted")


def scrape(server) -> dict[str, list]:
    with urllib.request.urlopen(f"http://{server.http_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def sample(families, family, name, **labels) -> float:
    for s in families.get(family, []):
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


def client(server, *args: str, who: str = "ops") -> str:
    return payorch(*args, "--address", server.address, "--api-key", server.keys[who])


def test_metrics_are_scraped_from_the_http_port_during_payments(server):
    before = scrape(server)
    pay(server)
    pay(server, payment_method="pm_card_chargeDeclined")
    assert refused(server, currency="XYZ") is grpc.StatusCode.INVALID_ARGUMENT
    # An abort sends its status before the interceptor's bookkeeping ends: wait for it.
    deadline = time.monotonic() + 5
    while True:
        after = scrape(server)
        refusals = sample(
            after,
            "payorch_rpc_requests",
            "payorch_rpc_requests_total",
            rpc=CREATE,
            code="INVALID_ARGUMENT",
        )
        if (
            refusals
            > sample(
                before,
                "payorch_rpc_requests",
                "payorch_rpc_requests_total",
                rpc=CREATE,
                code="INVALID_ARGUMENT",
            )
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)

    def grew(family, name, by, **labels):
        return sample(after, family, name, **labels) - sample(before, family, name, **labels) == by

    assert grew("payorch_rpc_requests", "payorch_rpc_requests_total", 2, rpc=CREATE, code="OK")
    assert grew(
        "payorch_rpc_requests", "payorch_rpc_requests_total", 1, rpc=CREATE, code="INVALID_ARGUMENT"
    )
    assert grew("payorch_rpc_duration_seconds", "payorch_rpc_duration_seconds_count", 3, rpc=CREATE)
    assert grew("payorch_payments", "payorch_payments_total", 1, status="succeeded")
    # Two payments, two writes each (the gate, then the result); the refusal writes none.
    database = "postgresql" if server.database_url.startswith("postgres") else "sqlite"
    assert grew("payorch_payment_writes", "payorch_payment_writes_total", 4, database=database)
    batches = sample(
        after,
        "payorch_payment_write_batches",
        "payorch_payment_write_batches_total",
        database=database,
    ) - sample(
        before,
        "payorch_payment_write_batches",
        "payorch_payment_write_batches_total",
        database=database,
    )
    assert 1 <= batches <= 4
    # Every one of those batches had its COMMIT timed.
    assert grew(
        "payorch_payment_write_commit_seconds",
        "payorch_payment_write_commit_seconds_count",
        batches,
        database=database,
    )
    assert grew("payorch_payments", "payorch_payments_total", 1, status="failed")
    assert grew("payorch_orchestration_seconds", "payorch_orchestration_seconds_count", 2)
    assert grew(
        "payorch_validation_issues", "payorch_validation_issues_total", 2, contract="input/currency"
    )
    assert grew(
        "payorch_contract_violations",
        "payorch_contract_violations_total",
        1,
        contract="input/currency",
        severity="warning",
    )
    # Bounded labels: never a merchant, a payment or a request id.
    for samples in after.values():
        for s in samples:
            for value in s.labels.values():
                assert not value.startswith(("m_", "pay_", "obs-")), (s.name, s.labels)


def test_a_refused_request_shows_up_in_the_violation_list(server):
    assert refused(server, who="m_2", amount_minor=-5) is grpc.StatusCode.INVALID_ARGUMENT
    deadline = time.monotonic() + 10
    with server.channel() as ch:
        stub = monitor_pb2_grpc.ContractMonitorStub(ch)
        while True:  # the write is asynchronous: wait for it, briefly
            found = stub.ListContractViolations(
                monitor_pb2.ListContractViolationsRequest(
                    contract_id="input/amount", merchant_id="m_2"
                ),
                metadata=server.auth("ops"),
                timeout=10,
            ).violations
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert found and found[0].owner == "api" and "amount" in found[0].message


def test_each_finished_payment_is_one_json_log_line_with_its_ids(server):
    created = pay(server).payment
    deadline = time.monotonic() + 10
    while created.payment_id not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and created.payment_id in line
    ]
    (line,) = [x for x in lines if x["logger"] == "payorch.payments"]
    assert line["msg"].startswith("payment succeeded")
    assert (line["merchant_id"], line["request_id"]) == ("m_1", created.request_id)


def test_payorch_stats_prints_a_table_and_json(server):
    pay(server, who="m_2")
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    table = client(server, "stats", "--since", since, who="m_2")
    assert "merchant           m_2" in table and "orchestration" in table
    stats = json.loads(client(server, "stats", "--since", since, "--json"))
    assert int(stats["paymentCount"]) >= 1 and stats.get("merchantId", "") == ""
    denied = payorch(
        "stats",
        "--merchant",
        "m_1",
        "--address",
        server.address,
        "--api-key",
        server.keys["m_2"],
        check=False,
    )
    assert denied == ""


def test_payorch_retrospective_prints_the_yaml_report(server):
    with server.channel() as ch:
        monitor_pb2_grpc.ContractMonitorStub(ch).ReportMerchantComplaint(
            monitor_pb2.ReportMerchantComplaintRequest(
                contract_id="plan/coverage", text="a split payment was refused"
            ),
            metadata=server.auth("m_1"),
            timeout=10,
        )
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    report = client(server, "retrospective", "--until", until)
    assert report.startswith("window:\n")
    assert "  - id: plan/coverage\n" in report and "escalations:\n  - id: plan/coverage" in report
