"""Split payments through the real server: the seed's $60 Apple Pay + $40 card."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payments.config.v1 import config_pb2
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.plan.v1 import plan_pb2
from payments.result.v1 import result_pb2

pytestmark = pytest.mark.e2e
OK, DECLINE = "pm_card_visa", "pm_card_chargeDeclined"


@pytest.fixture
def stub(server):
    with server.channel() as ch:
        yield orch_grpc.PaymentOrchestratorStub(ch)


def split(stub, server, *methods, who="m_1"):
    request = orch.CreatePaymentRequest(
        request_id=f"split-{uuid.uuid4()}",
        amount_decimal="100.00",
        currency=" usd ",
        methods=[
            orch.PaymentMethodInput(method=m, token=t, **({"amount_minor": a} if a else {}))
            for m, t, a in methods
        ],
    )
    return stub.CreatePayment(request, metadata=server.auth(who), timeout=20).payment


def events_of(stub, server, payment, who="m_1"):
    reply = stub.ListPaymentEvents(
        orch.ListPaymentEventsRequest(payment_id=payment.payment_id), metadata=server.auth(who)
    )
    return [e.WhichOneof("event") for e in reply.events]


def test_a_hundred_dollars_as_sixty_apple_pay_and_forty_card(stub, server):
    p = split(stub, server, ("APPLE-PAY", OK, 6000), ("card", OK, 0))
    assert p.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
    steps = [(s.method.type, s.amount.amount_minor, s.status) for s in p.result.step_results]
    assert steps == [
        (plan_pb2.PAYMENT_METHOD_TYPE_APPLE_PAY, 6000, result_pb2.STEP_STATUS_CAPTURED),
        (plan_pb2.PAYMENT_METHOD_TYPE_CARD, 4000, result_pb2.STEP_STATUS_CAPTURED),
    ]
    assert p.result.total_processed.amount_minor == 10000 and p.result.remaining.amount_minor == 0
    assert events_of(stub, server, p) == [
        "payment_processing",
        "step_succeeded",
        "step_succeeded",
        "payment_captured",
        "payment_completed",
    ]


def test_a_declined_card_step_voids_the_apple_pay_authorization(stub, server):
    p = split(stub, server, ("apple_pay", OK, 6000), ("card", DECLINE, 0))
    assert p.result.status == result_pb2.PAYMENT_STATUS_FAILED
    assert [s.status for s in p.result.step_results] == [
        result_pb2.STEP_STATUS_VOIDED,
        result_pb2.STEP_STATUS_FAILED,
    ]
    assert p.result.final_error == result_pb2.ERROR_CODE_CARD_DECLINED
    assert p.result.total_processed.amount_minor == 0
    assert events_of(stub, server, p) == [
        "payment_processing",
        "step_succeeded",
        "step_failed",
        "step_voided",
        "payment_failed",
    ]


def test_with_fallback_configured_a_declined_step_moves_to_the_next_method(stub, server):
    config = config_pb2.MerchantConfig(
        methods=[
            config_pb2.MethodConfig(
                type=plan_pb2.PAYMENT_METHOD_TYPE_APPLE_PAY, max_amount_minor=6000
            ),
            config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD),
            config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_GOOGLE_PAY),
        ],
        fallback_on_failure=True,
    )
    saved = stub.UpsertMerchantConfig(
        orch.UpsertMerchantConfigRequest(config=config), metadata=server.auth("m_2")
    ).config
    assert saved.merchant_id == "m_2" and saved.version >= 1

    p = split(
        stub, server, ("applepay", OK, 0), ("card", DECLINE, 0), ("google_pay", OK, 0), who="m_2"
    )
    assert p.plan.config_version == saved.version
    assert p.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
    steps = [(s.method.type, s.amount.amount_minor, s.status) for s in p.result.step_results]
    assert steps == [
        (plan_pb2.PAYMENT_METHOD_TYPE_APPLE_PAY, 6000, result_pb2.STEP_STATUS_CAPTURED),
        (plan_pb2.PAYMENT_METHOD_TYPE_CARD, 4000, result_pb2.STEP_STATUS_FAILED),
        (plan_pb2.PAYMENT_METHOD_TYPE_GOOGLE_PAY, 4000, result_pb2.STEP_STATUS_CAPTURED),
    ]


def test_a_contradictory_config_is_refused_with_field_violations(stub, server):
    bad = config_pb2.MerchantConfig(
        methods=[
            config_pb2.MethodConfig(
                type=plan_pb2.PAYMENT_METHOD_TYPE_CARD, min_amount_minor=500, max_amount_minor=100
            ),
            config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD, processors=["nope"]),
        ]
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.UpsertMerchantConfig(
            orch.UpsertMerchantConfigRequest(config=bad), metadata=server.auth("m_1")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for words in ("exceeds max", "listed twice", "unknown processors"):
        assert words in err.value.details()


def test_a_config_with_many_problems_is_refused_with_one_field_violation_for_each(stub, server):
    card = plan_pb2.PAYMENT_METHOD_TYPE_CARD
    bad = config_pb2.MerchantConfig(
        methods=[
            config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED),
            config_pb2.MethodConfig(type=card),
            config_pb2.MethodConfig(type=card, min_amount_minor=9, max_amount_minor=1),
        ],
        allowed_currencies=["XYZ"],
        retry_policy=config_pb2.RetryPolicy(max_retries=9, max_delay_ms=60000),
        installment_policy=config_pb2.InstallmentPolicy(dunning_days=list(range(1, 12))),
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.UpsertMerchantConfig(
            orch.UpsertMerchantConfigRequest(config=bad), metadata=server.auth("m_1")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = []
    for detail in rpc_status.from_call(err.value).details:
        found = error_details_pb2.BadRequest()
        if detail.Unpack(found):
            violations += [v.field for v in found.field_violations]
    assert sorted(violations) == [
        "config.allowed_currencies",
        "config.installment_policy.dunning_days",
        "config.methods[0].type",
        "config.methods[2].min_amount_minor",
        "config.methods[2].type",
        "config.retry_policy.max_delay_ms",
        "config.retry_policy.max_retries",
    ]


def test_a_merchant_without_config_reads_the_defaults(stub, server):
    reply = stub.GetMerchantConfig(orch.GetMerchantConfigRequest(), metadata=server.auth("m_1"))
    assert reply.config.merchant_id == "m_1"


def test_a_plan_the_config_cannot_cover_is_rejected(stub, server):
    with pytest.raises(grpc.RpcError) as err:
        split(stub, server, ("apple_pay", OK, 7000), who="m_2")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_refund_and_capture_and_cancel_operate_on_the_whole_plan(stub, server):
    p = split(stub, server, ("apple_pay", OK, 6000), ("card", OK, 0))
    refunded = stub.RefundPayment(
        orch.RefundPaymentRequest(payment_id=p.payment_id, request_id="rf-1", amount_minor=5000),
        metadata=server.auth("m_1"),
    ).payment
    assert refunded.result.status == result_pb2.PAYMENT_STATUS_PARTIALLY_REFUNDED
    with pytest.raises(grpc.RpcError) as err:
        stub.RefundPayment(
            orch.RefundPaymentRequest(
                payment_id=p.payment_id, request_id="rf-2", amount_minor=9000
            ),
            metadata=server.auth("m_1"),
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    held = stub.CreatePayment(
        orch.CreatePaymentRequest(
            request_id=f"auth-{uuid.uuid4()}",
            amount_minor=1500,
            currency="EUR",
            payment_method=OK,
            authorize_only=True,
        ),
        metadata=server.auth("m_1"),
    ).payment
    assert held.result.status == result_pb2.PAYMENT_STATUS_AUTHORIZED
    cancelled = stub.CancelPayment(
        orch.CancelPaymentRequest(payment_id=held.payment_id, reason="out of stock"),
        metadata=server.auth("m_1"),
    ).payment
    assert cancelled.result.status == result_pb2.PAYMENT_STATUS_CANCELLED
    with pytest.raises(grpc.RpcError) as err:
        stub.CapturePayment(
            orch.CapturePaymentRequest(payment_id=held.payment_id), metadata=server.auth("m_1")
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
