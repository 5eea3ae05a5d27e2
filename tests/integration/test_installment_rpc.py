"""CreateInstallmentPlan through a real gRPC server in this process (port 0), on SQLite
and PostgreSQL, with a manual clock: what the caller is told when the merchant's config
refuses the plan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payments.installments.v1 import installments_pb2 as pb
from payments.installments.v1 import installments_pb2_grpc as pb_grpc
from payments.plan.v1 import plan_pb2
from payorch.app.auth import Scope
from payorch.bootstrap import Container
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.payment import MethodType
from payorch.entrypoints.grpc.server import create_server, mark_serving
from tests.integration.installment_helpers import first_charge_only, installments_container
from tests.rich_status import field_violations


@dataclass
class Served:
    container: Container
    stub: pb_grpc.InstallmentServiceStub
    auth: list[tuple[str, str]]

    async def create(self, request_id: str, **fields: object) -> pb.CreateInstallmentPlanResponse:
        values: dict[str, object] = {
            "request_id": request_id,
            "order_id": f"order-{request_id}",
            "total": plan_pb2.Money(amount_minor=10_000, currency="EUR"),
            "payment_method": "pm_card_visa",
            **fields,
        }
        return await self.stub.CreateInstallmentPlan(
            pb.CreateInstallmentPlanRequest(**values),
            metadata=self.auth,
        )

    async def refused(self, request_id: str, **fields: object) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await self.create(request_id, **fields)
        return err.value


@pytest.fixture
async def served(database_url, clock) -> AsyncIterator[Served]:
    container = await installments_container(database_url, clock, auth_cache_s=0)
    server, port, health = create_server(container, "127.0.0.1:0")
    await server.start()
    await mark_serving(health)
    key = await container.api_keys.create(
        merchant_id="m_1", scope=Scope.MERCHANT, label="", now=clock.now()
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(
            container,
            pb_grpc.InstallmentServiceStub(channel),
            [("authorization", f"Bearer {key.plaintext}")],
        )
    await server.stop(None)
    await container.close()


async def plans_of(served: Served) -> list[pb.InstallmentPlan]:
    listed = await served.stub.ListInstallmentPlans(
        pb.ListInstallmentPlansRequest(), metadata=served.auth
    )
    return list(listed.plans)


@pytest.mark.parametrize(
    ("config", "field", "says"),
    [
        pytest.param(
            MerchantConfig("m_1", allowed_currencies=frozenset({"USD"})),
            "total.currency",
            "EUR is not accepted",
            id="currency",
        ),
        pytest.param(
            MerchantConfig("m_1", methods=(MethodRule(MethodType.APPLE_PAY),)),
            "payment_method",
            "card is not enabled",
            id="method",
        ),
        pytest.param(
            MerchantConfig("m_1", methods=(MethodRule(MethodType.CARD, max_amount_minor=2_000),)),
            "total.amount_minor",
            "not covered",
            id="above-the-method-maximum",
        ),
        pytest.param(
            MerchantConfig("m_1", methods=(MethodRule(MethodType.CARD, min_amount_minor=5_000),)),
            "total.amount_minor",
            "not covered",
            id="below-the-method-minimum",
        ),
    ],
)
async def test_a_plan_the_merchant_config_refuses_is_invalid_argument_on_its_field(
    served, config, field, says
):
    await served.container.configs.upsert(config)

    err = await served.refused("refused-1")

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err)
    assert list(violations) == [field]
    assert says in violations[field]
    assert served.container.simulated["simulated"].ledger.charges_total == 0
    assert await plans_of(served) == []


async def test_the_server_keeps_serving_after_refusing_a_plan(served):
    await served.container.configs.upsert(
        MerchantConfig("m_1", allowed_currencies=frozenset({"USD"}))
    )
    assert (await served.refused("eur-1")).code() == grpc.StatusCode.INVALID_ARGUMENT

    created = await served.create(
        "usd-1", total=plan_pb2.Money(amount_minor=10_000, currency="USD")
    )

    assert created.plan.plan_id and not created.replayed
    assert [p.plan_id for p in await plans_of(served)] == [created.plan.plan_id]


def error_reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def test_a_retry_whose_first_charge_was_refunded_is_failed_precondition(served):
    # The first call's process died after the charge; the order was refunded since.
    first = await first_charge_only(served.container, "plan-1", order_id="order-plan-1")
    await served.container.payments.refund(first, "m_1", amount_minor=1, request_id="rf-1")

    err = await served.refused("plan-1")

    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err) == "FIRST_CHARGE_REFUNDED"
    assert first in (err.details() or "") and "refunded" in (err.details() or "")
    assert await plans_of(served) == []
