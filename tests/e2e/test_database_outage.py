"""The database goes away under a running server and comes back: every call meanwhile
is refused UNAVAILABLE (a status callers retry on), the server keeps serving, and a
payment retried under its request_id once the database is back is charged once."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from tests.e2e.server import create_key, start_server
from tests.rich_status import error_reasons
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def create(stub: orch_grpc.PaymentOrchestratorStub, auth: list, request_id: str) -> orch.Payment:
    request = orch.CreatePaymentRequest(
        request_id=request_id, currency="usd", amount_minor=2500, payment_method="pm_card_visa"
    )
    return stub.CreatePayment(request, metadata=auth, timeout=20).payment


def test_a_database_outage_is_unavailable_and_a_retry_after_it_charges_once(
    postgres_database, tmp_path: Path
):
    database = make_url(postgres_database)
    proxy = TcpProxy((database.host or "127.0.0.1", database.port or 5432)).start()
    through_proxy = database.set(port=proxy.port).render_as_string(hide_password=False)
    charges = tmp_path / "charges.log"
    server = start_server(tmp_path, through_proxy, env={"PAYORCH_SIM_CHARGE_LOG": str(charges)})
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
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            proxy.restore()
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
    assert "Traceback" not in server.log() and "unhandled error" not in server.log()
