"""UpsertMerchantConfig and GetMerchantConfig through the real server: what a config
sent without some of its parts becomes, and writers racing from what they read."""

from __future__ import annotations

import pytest

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
