"""UpsertMerchantConfig and GetMerchantConfig through the real server: what a config
sent without some of its parts becomes, and writers racing from what they read."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payments.config.v1 import config_pb2
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.plan.v1 import plan_pb2

pytestmark = pytest.mark.e2e
CARD = config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD)


@pytest.fixture
def stub(server):
    with server.channel() as ch:
        yield orch_grpc.PaymentOrchestratorStub(ch)


def upsert(stub, server, config, **request):
    return stub.UpsertMerchantConfig(
        orch.UpsertMerchantConfigRequest(config=config, **request), metadata=server.auth("ops")
    ).config


def test_a_config_sent_without_a_retry_policy_keeps_the_default_retry(stub, server):
    defaults = stub.GetMerchantConfig(
        orch.GetMerchantConfigRequest(merchant_id="m_no_retry_policy"),
        metadata=server.auth("ops"),
    ).config
    assert defaults.retry_policy.max_retries == 1

    saved = upsert(
        stub, server, config_pb2.MerchantConfig(merchant_id="m_no_retry_policy", methods=[CARD])
    )

    assert saved.retry_policy == defaults.retry_policy


def test_a_retry_policy_sent_with_no_retries_is_kept(stub, server):
    saved = upsert(
        stub,
        server,
        config_pb2.MerchantConfig(
            merchant_id="m_no_retries", methods=[CARD], retry_policy=config_pb2.RetryPolicy()
        ),
    )
    assert saved.retry_policy.max_retries == 0


def _reason(err: grpc.RpcError) -> str:
    for detail in rpc_status.from_call(err).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def test_two_writers_who_read_the_defaults_cannot_both_write(stub, server):
    def read():
        return stub.GetMerchantConfig(
            orch.GetMerchantConfigRequest(merchant_id="m_two_writers"),
            metadata=server.auth("ops"),
        )

    first, second = read(), read()
    assert first.is_default and second.is_default
    first.config.allow_partial = True
    second.config.fallback_on_failure = True

    saved = upsert(stub, server, first.config, expect_default=True)
    with pytest.raises(grpc.RpcError) as err:
        upsert(stub, server, second.config, expect_default=True)

    assert err.value.code() == grpc.StatusCode.ABORTED
    assert _reason(err.value) == "CONFIG_VERSION_CONFLICT"
    now = read()
    assert now.config == saved and now.config.version == 1 and not now.is_default
    assert not now.config.fallback_on_failure


def test_expecting_the_defaults_and_a_version_at_once_is_refused(stub, server):
    config = config_pb2.MerchantConfig(merchant_id="m_both_expectations", methods=[CARD])
    with pytest.raises(grpc.RpcError) as err:
        upsert(stub, server, config, expect_default=True, expected_version=1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expect_default" in err.value.details()


@pytest.mark.parametrize("named", ["m_2", " m_2 ", "M_2"])
def test_a_merchant_can_neither_read_nor_change_another_merchants_config(stub, server, named):
    def read_m_2():
        return stub.GetMerchantConfig(
            orch.GetMerchantConfigRequest(merchant_id="m_2"), metadata=server.auth("m_2")
        ).config

    before = read_m_2()
    with pytest.raises(grpc.RpcError) as read:
        stub.GetMerchantConfig(
            orch.GetMerchantConfigRequest(merchant_id=named), metadata=server.auth("m_1")
        )
    other = config_pb2.MerchantConfig(merchant_id=named, methods=[CARD], allow_partial=True)
    with pytest.raises(grpc.RpcError) as write:
        stub.UpsertMerchantConfig(
            orch.UpsertMerchantConfigRequest(config=other), metadata=server.auth("m_1")
        )

    assert read.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert write.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert read_m_2() == before


def _fields(err: grpc.RpcError) -> list[str]:
    fields = []
    for detail in rpc_status.from_call(err).details:
        found = error_details_pb2.BadRequest()
        if detail.Unpack(found):
            fields += [v.field for v in found.field_violations]
    return fields


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        ({"expected_version": -1}, "expected_version"),
        ({"expected_version": 2, "expect_default": True}, "expect_default"),
    ],
)
def test_a_bad_write_condition_is_reported_with_every_problem_of_the_config(
    stub, server, condition, field
):
    bad = config_pb2.MerchantConfig(
        merchant_id="m_bad_condition",
        methods=[config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED)],
        allowed_currencies=["XYZ"],
    )
    with pytest.raises(grpc.RpcError) as err:
        upsert(stub, server, bad, **condition)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(err.value) == [
        field,
        "config.methods[0].type",
        "config.methods",
        "config.allowed_currencies",
    ]
