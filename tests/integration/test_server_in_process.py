"""The grpc.aio server in-process on port 0: the same wiring as `payorch serve`."""

from __future__ import annotations

import signal
import socket
import sqlite3
import stat
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from payorch.app.auth import Scope, hash_key
from payorch.app.payments import ProcessorEvent
from payorch.bootstrap import bootstrap
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.payment import MethodType
from payorch.domain.retry import RetryPolicy
from payorch.entrypoints.grpc.server import create_server, mark_serving
from payorch.entrypoints.runtime import CannotListen
from payorch.entrypoints.serve import ensure_demo_key
from payorch.settings import Settings
from tests import certificates
from tests.conftest import TEST_SECRETS_KEY
from tests.e2e.server import create_key, start_server
from tests.rich_status import error_reasons, field_violations


@pytest.fixture
async def served(database_url):
    """The server, a channel to it, m_1's key, and the container behind it."""
    container = await bootstrap(
        Settings(
            database_url=database_url,
            secrets_key=TEST_SECRETS_KEY,
            auth_cache_s=0,
        )
    )
    server, port, health = create_server(container, "127.0.0.1:0")
    await server.start()
    await mark_serving(health)
    key = await container.api_keys.create(
        merchant_id="m_1", scope=Scope.MERCHANT, label="", now=container.clock.now()
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield container, channel, [("authorization", f"Bearer {key.plaintext}")]
    await server.stop(None)
    await container.close()


@pytest.fixture
def running(served):
    _, channel, auth = served
    return channel, auth


async def pay(stub, auth, *, currency="GBP", payment_method="pm_card_visa", customer_id=""):
    """A 12.50 payment of m_1's; the created payment."""
    created = await stub.CreatePayment(
        orch.CreatePaymentRequest(
            request_id=str(uuid.uuid4()),
            amount_minor=1250,
            currency=currency,
            payment_method=payment_method,
            customer_id=customer_id,
        ),
        metadata=auth,
    )
    return created.payment


async def test_an_in_process_server_takes_and_reads_back_a_payment(running):
    channel, auth = running
    stub = orch_grpc.PaymentOrchestratorStub(channel)
    created = await pay(stub, auth, currency="gbp")
    got = await stub.GetPayment(
        orch.GetPaymentRequest(payment_id=created.payment_id), metadata=auth
    )
    assert got.payment.result.success and got.payment.amount.currency == "GBP"
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ({"payment_method": "pm_missing_card"}, result_pb2.ERROR_CODE_PAYMENT_METHOD_NOT_FOUND),
        ({"customer_id": "cus_missing_alice"}, result_pb2.ERROR_CODE_CUSTOMER_NOT_FOUND),
    ],
    ids=["payment method", "customer"],
)
async def test_an_id_the_processor_does_not_have_fails_with_a_code_the_caller_can_act_on(
    running, given, code
):
    channel, auth = running
    stub = orch_grpc.PaymentOrchestratorStub(channel)
    result = (await pay(stub, auth, **given)).result
    assert not result.success
    assert result.final_error == code


async def test_the_event_that_reconciled_a_payment_is_named_in_its_listed_events(served):
    container, channel, auth = served
    stub = orch_grpc.PaymentOrchestratorStub(channel)
    await container.configs.upsert(MerchantConfig("m_1", retry_policy=RetryPolicy(max_retries=0)))
    container.simulated["simulated"].inject("lost_response")  # charged, answer lost
    payment = await pay(stub, auth)
    assert payment.result.status == result_pb2.PAYMENT_STATUS_UNKNOWN
    step = payment.result.step_results[0]
    await container.processor_events.apply(
        ProcessorEvent(
            "evt_stripe_1", "webhook", payment.payment_id, 0, step.processor_payment_id, True
        )
    )

    listed = await stub.ListPaymentEvents(
        orch.ListPaymentEventsRequest(payment_id=payment.payment_id), metadata=auth
    )

    [reconciled] = [e.payment_reconciled for e in listed.events if e.HasField("payment_reconciled")]
    assert (reconciled.source, reconciled.processor_event_id) == ("webhook", "evt_stripe_1")
    assert reconciled.outcome == result_pb2.OUTCOME_SUCCESS


async def test_garbage_bytes_get_invalid_argument_not_internal(running):
    channel, auth = running
    call = channel.unary_unary(
        "/payments.orchestrator.v1.PaymentOrchestrator/CreatePayment",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"\xff\xff\xff\xff\x0f", metadata=auth)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("rule", "single_field", "split_field"),
    [
        pytest.param(MethodRule(MethodType.APPLE_PAY), "method", "methods[0].method", id="blocked"),
        pytest.param(
            MethodRule(MethodType.CARD, max_amount_minor=500), "amount", "methods", id="limit"
        ),
    ],
)
async def test_a_plan_refusal_names_the_field_the_caller_sent(
    served, rule, single_field, split_field
):
    container, channel, auth = served
    stub = orch_grpc.PaymentOrchestratorStub(channel)
    await container.configs.upsert(MerchantConfig("m_1", methods=(rule,)))
    single = {"payment_method": "pm_card_visa"}
    split = {"methods": [orch.PaymentMethodInput(method="card", token="pm_card_visa")]}
    for form, field in ((single, single_field), (split, split_field)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreatePayment(
                orch.CreatePaymentRequest(
                    request_id=str(uuid.uuid4()), amount_minor=1250, currency="eur", **form
                ),
                metadata=auth,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert list(field_violations(err.value)) == [field]


@pytest.mark.e2e
def test_sigterm_lets_an_in_flight_payment_finish(tmp_path):
    url = f"sqlite:///{tmp_path / 'grace.db'}"
    server = start_server(tmp_path, url, args=("--simulate", "latency_ms=1500"))
    key = create_key(url, merchant="m_1")
    with grpc.insecure_channel(server.address) as ch:
        stub = orch_grpc.PaymentOrchestratorStub(ch)
        future = stub.CreatePayment.future(
            orch.CreatePaymentRequest(
                request_id="graceful",
                amount_minor=100,
                currency="usd",
                payment_method="pm_card_visa",
            ),
            metadata=[("authorization", f"Bearer {key}")],
            timeout=20,
        )
        # Once the payment row exists the processor call is in flight: stop then.
        conn = sqlite3.connect(tmp_path / "grace.db")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM payments").fetchone()[0]:
                break
            time.sleep(0.01)
        conn.close()
        server.process.send_signal(signal.SIGTERM)
        payment = future.result().payment
    assert payment.result.success
    assert server.process.wait(20) == 0
    assert "shutting down" in server.log() and "stopped" in server.log()


@pytest.mark.parametrize(
    "second",
    ["Bearer {other}", "Basic dXNlcjpwYXNz", "Bearer {own}"],
    ids=["another merchant's key", "another scheme", "the same key"],
)
@pytest.mark.parametrize("own_first", [True, False], ids=["own first", "own second"])
async def test_a_call_with_two_authorization_headers_is_unauthenticated_and_stores_nothing(
    served, second, own_first
):
    # Which of two credentials a call carries is ambiguous: a proxy in front may have
    # checked the other one. The server used to take the first bearer it found.
    container, channel, auth = served
    other = await container.api_keys.create(
        merchant_id="m_2", scope=Scope.MERCHANT, label="", now=container.clock.now()
    )
    own = auth[0][1].removeprefix("Bearer ")
    extra = ("authorization", second.format(other=other.plaintext, own=own))
    metadata = [auth[0], extra] if own_first else [extra, auth[0]]
    stub = orch_grpc.PaymentOrchestratorStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreatePayment(
            orch.CreatePaymentRequest(
                request_id=str(uuid.uuid4()),
                amount_minor=1250,
                currency="eur",
                payment_method="pm_card_visa",
            ),
            metadata=metadata,
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    details = err.value.details() or ""
    assert own not in details and other.plaintext not in details
    assert await container.payments.list(None, page_size=10, after=None) == []


async def test_a_demo_key_written_over_a_stale_file_is_readable_by_its_owner_only(
    database_url, tmp_path
):
    # The file held a key the database no longer knows (revoked, or another database's)
    # and was readable by everyone: the new key went into it as it was.
    container = await bootstrap(Settings(database_url=database_url, secrets_key=TEST_SECRETS_KEY))
    try:
        path = tmp_path / "demo-key"
        path.write_text("po_000000000000_stale\n")
        path.chmod(0o644)
        await ensure_demo_key(container, path)
        key = path.read_text().strip()
        assert key != "po_000000000000_stale"
        assert await container.api_keys.find(hash_key(key)) is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        await container.close()


async def test_a_capture_held_at_a_processor_not_configured_is_refused_naming_it(served):
    container, channel, auth = served
    stub = orch_grpc.PaymentOrchestratorStub(channel)
    created = await stub.CreatePayment(
        orch.CreatePaymentRequest(
            request_id=str(uuid.uuid4()),
            amount_minor=1250,
            currency="GBP",
            payment_method="pm_card_visa",
            authorize_only=True,
        ),
        metadata=auth,
    )
    payment_id = created.payment.payment_id
    processors = container.router.processors
    sim = processors.pop("simulated")  # taken out of the server's settings since
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CapturePayment(
                orch.CapturePaymentRequest(payment_id=payment_id), metadata=auth
            )
    finally:
        processors["simulated"] = sim
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "'simulated'" in (refused.value.details() or "")
    assert error_reasons(refused.value) == ["PROCESSOR_NOT_CONFIGURED"]
    got = await stub.GetPayment(orch.GetPaymentRequest(payment_id=payment_id), metadata=auth)
    assert got.payment.result.status == result_pb2.PAYMENT_STATUS_AUTHORIZED
    assert got.payment.result.final_error_message == ""


async def test_the_server_binds_with_the_tls_files_it_checked_not_ones_replaced_since(
    database_url, tmp_path
):
    # `payorch serve` checks its TLS files before opening the database; a file replaced
    # in between (a half-done rotation, another process) must not be what is served.
    checked_ca, replaced_ca = certificates.ca("checked CA"), certificates.ca("replaced CA")
    key_file, cert_file = tmp_path / "server.key", tmp_path / "server.pem"

    def write_server_files(issuer: certificates.Ca) -> None:
        key, cert = certificates.leaf(issuer, "payorch", server=True)
        key_file.write_bytes(key)
        cert_file.write_bytes(cert)

    write_server_files(checked_ca)
    settings = Settings(
        database_url=database_url,
        secrets_key=TEST_SECRETS_KEY,
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
    )
    container = await bootstrap(settings, serving=True)
    write_server_files(replaced_ca)
    server, port, health = create_server(container, "127.0.0.1:0")
    await server.start()
    await mark_serving(health)
    try:
        trusted = grpc.ssl_channel_credentials(certificates.pem(checked_ca[1]))
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", trusted) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)
        await container.close()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1:{port}", "the port is in use"),
        ("192.0.2.1:0", "the address is not one of this host's"),  # TEST-NET-1
    ],
    ids=["port in use", "address not on this host"],
)
async def test_an_address_the_server_cannot_bind_says_why(served, address, why):
    # grpc says "Failed to bind" whatever the cause: it read "in use or not available".
    container, _, _ = served
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = address.format(port=holder.getsockname()[1])
        with pytest.raises(CannotListen) as refused:
            create_server(container, address)
    assert str(refused.value) == f"cannot listen for gRPC on {address}: {why}"
