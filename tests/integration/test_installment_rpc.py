"""The InstallmentService through a real gRPC server in this process (port 0), on SQLite
and PostgreSQL, with a manual clock: what the caller is told when the merchant's config
refuses a plan, and a webhook endpoint enabled again after a 410."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payments.installments.v1 import installments_pb2 as pb
from payments.installments.v1 import installments_pb2_grpc as pb_grpc
from payments.plan.v1 import plan_pb2
from payorch.adapters.processors.simulated import Simulation
from payorch.app import installments as installments_app
from payorch.app.auth import Scope
from payorch.bootstrap import Container
from payorch.domain.installments import (
    MAX_MANUAL_RETRIES,
    InstallmentPolicy,
    InstallmentStatus,
    charge_request_id,
)
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.payment import MethodType
from payorch.domain.results import ProcessorResponse, ResponseKind
from payorch.entrypoints.grpc.server import create_server, mark_serving
from payorch.webhooks import WebhookVerificationError, verify
from tests.integration.installment_helpers import (
    ProcessDied,
    create_plan,
    customer_of,
    declined_when_due,
    failed_waiting_for_the_customer,
    first_charge_only,
    installments_container,
    intent_of,
    payments_of,
)
from tests.integration.webhook_receiver import Receiver
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
            "customer_id": customer_of("m_1"),
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


@contextlib.asynccontextmanager
async def serving(database_url: str, clock, **settings: Any) -> AsyncIterator[Served]:
    container = await installments_container(database_url, clock, auth_cache_s=0, **settings)
    server, port, health = create_server(container, "127.0.0.1:0")
    await server.start()
    await mark_serving(health)
    key = await container.api_keys.create(
        merchant_id="m_1", scope=Scope.MERCHANT, label="", now=clock.now()
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(
                container,
                pb_grpc.InstallmentServiceStub(channel),
                [("authorization", f"Bearer {key.plaintext}")],
            )
    finally:
        await server.stop(None)
        await container.close()


@pytest.fixture
async def served(database_url, clock) -> AsyncIterator[Served]:
    async with serving(database_url, clock) as s:
        yield s


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
            # 33.33 + 33.33 + 33.34: the first fits, the last (the remainder's) does not.
            MerchantConfig("m_1", methods=(MethodRule(MethodType.CARD, max_amount_minor=3_333),)),
            "total.amount_minor",
            "installment 3: 1 minor units are not covered",
            id="last-installment-above-the-method-maximum",
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


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"payment_method": ""}, "payment_method", id="no-payment-method"),
        pytest.param({"payment_method": "visa please"}, "payment_method", id="not-a-token"),
    ],
)
async def test_a_malformed_plan_below_the_smallest_total_is_invalid_argument_on_its_field(
    served, fields, field
):
    small = plan_pb2.Money(amount_minor=5_000, currency="EUR")  # below 100.00: not eligible

    err = await served.refused("malformed-1", total=small, **fields)

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert list(field_violations(err)) == [field]
    assert served.container.simulated["simulated"].ledger.charges_total == 0
    assert await plans_of(served) == []


async def test_a_plan_request_wrong_in_every_field_is_told_about_every_field_at_once(served):
    err = await served.refused(
        " ",  # not printable: no idempotency key
        order_id="",
        total=plan_pb2.Money(amount_minor=-5, currency="EURO"),
        payment_method="visa please",
        customer_id="someone",
    )

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert set(field_violations(err)) == {
        "request_id",
        "order_id",
        "total.currency",
        "total.amount_minor",
        "payment_method",
        "customer_id",
    }
    assert served.container.simulated["simulated"].ledger.charges_total == 0
    assert await plans_of(served) == []


@pytest.mark.parametrize(
    ("order_id", "says"),
    [
        ("o" * 129, "is too long: 1-128 printable ASCII characters"),
        ("", "is required: 1-128 printable ASCII characters"),
        ("order 7", "must be 1-128 printable ASCII characters"),
    ],
    ids=["too long", "missing", "a space"],
)
async def test_an_order_id_is_refused_saying_what_is_wrong_with_it(served, order_id, says):
    err = await served.refused("order-id-1", order_id=order_id)

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert field_violations(err) == {"order_id": says}


async def test_a_plan_request_without_a_total_is_told_about_its_other_fields_too(served):
    request = pb.CreateInstallmentPlanRequest(request_id="no-total-1", payment_method="pm_x y")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.CreateInstallmentPlan(request, metadata=served.auth)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err.value)) == {
        "total",
        "order_id",
        "payment_method",
        "customer_id",
    }


async def test_a_plan_without_a_customer_is_refused_saying_why_beside_its_other_bad_fields(
    served,
):
    """The later installments are charged off-session to the card saved on the customer
    at checkout: a plan with no customer has nowhere to save it."""
    err = await served.refused("no-customer-1", customer_id="", payment_method="visa please")

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    violations = field_violations(err)
    assert set(violations) == {"customer_id", "payment_method"}
    assert violations["customer_id"].startswith("is required")
    assert "saved on" in violations["customer_id"]
    assert served.container.simulated["simulated"].ledger.charges_total == 0
    assert await plans_of(served) == []

    alone = await served.refused("no-customer-2", customer_id="  ")
    assert set(field_violations(alone)) == {"customer_id"}


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


@pytest.mark.parametrize("total", [30_001, 30_002], ids=["one-more", "two-more"])
async def test_a_request_id_reused_after_a_decline_for_another_total_is_already_exists(
    served, total
):
    # Split in 3, 300.00 and 300.01 / 300.02 share their first part (100.00): the same
    # first charge. The request is not the same, and is not answered as if it were.
    declined = plan_pb2.Money(amount_minor=30_000, currency="EUR")
    first = await served.create("plan-1", payment_method="pm_card_chargeDeclined", total=declined)
    assert not first.HasField("plan")

    other = plan_pb2.Money(amount_minor=total, currency="EUR")
    err = await served.refused("plan-1", payment_method="pm_card_chargeDeclined", total=other)

    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
    assert error_reason(err) == "IDEMPOTENCY_KEY_REUSED"
    assert "request_id was already used for a plan" in (err.details() or "")


async def test_a_request_id_reused_for_another_total_after_its_first_charge_is_already_exists(
    served,
):
    # The first call's process died after charging 100.00 of a 300.00 order; a call
    # under its request id for 300.01 (same first part) is another request.
    await first_charge_only(served.container, "plan-1", order_id="order-plan-1", total=30_000)

    err = await served.refused("plan-1", total=plan_pb2.Money(amount_minor=30_001, currency="EUR"))

    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
    assert await plans_of(served) == []
    # The request as first made still gets its plan.
    made = await served.create("plan-1", total=plan_pb2.Money(amount_minor=30_000, currency="EUR"))
    assert made.plan.total.amount_minor == 30_000


async def test_a_first_charge_made_before_charges_carried_the_total_is_still_replayed(
    served, monkeypatch
):
    # An earlier version made the first charge without the plan's total in its metadata;
    # its process died before the plan was stored. The retry finds it, charges nothing.
    charge_request = installments_app._charge_request

    def without_the_total(*args: Any, plan_total: object = None, **kw: Any) -> Any:
        return charge_request(*args, **kw)

    monkeypatch.setattr(installments_app, "_charge_request", without_the_total)
    first = await first_charge_only(served.container, "plan-1", order_id="order-plan-1")
    monkeypatch.undo()

    made = await served.create("plan-1")

    assert made.plan.plan_id and made.first_charge.payment_id == first
    assert served.container.simulated["simulated"].ledger.charges_total == 1


async def test_a_retry_whose_first_charge_was_refunded_is_failed_precondition(served):
    # The first call's process died after the charge; the order was refunded since.
    first = await first_charge_only(served.container, "plan-1", order_id="order-plan-1")
    await served.container.payments.refund(first, "m_1", amount_minor=1, request_id="rf-1")

    err = await served.refused("plan-1")

    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err) == "FIRST_CHARGE_REFUNDED"
    assert first in (err.details() or "") and "refunded" in (err.details() or "")
    assert await plans_of(served) == []


async def test_a_retry_whose_waiting_payment_cannot_be_cancelled_is_unavailable_and_changes_nothing(
    served, clock, monkeypatch
):
    inst = await failed_waiting_for_the_customer(served.container, clock)
    sim = served.container.simulated["simulated"]

    async def processor_down(processor_payment_id: str, idempotency_key: str) -> ProcessorResponse:
        return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")

    monkeypatch.setattr(sim, "cancel", processor_down)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.RetryInstallment(
            pb.RetryInstallmentRequest(installment_id=inst.id), metadata=served.auth
        )

    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(err.value) == "EARLIER_PAYMENT_OPEN"
    assert inst.payment_id in (err.value.details() or "")
    after = (await served.container.installments.plans.get(inst.plan_id, None)).installments[1]
    assert (after.status, after.attempts, after.version) == (
        InstallmentStatus.FAILED_FINAL,
        inst.attempts,
        inst.version,
    )
    assert await payments_of(served.container, inst.id) == [charge_request_id(inst.id, 1)]
    assert (await intent_of(served.container, inst.payment_id)).status == "requires_action"

    monkeypatch.undo()  # the processor is back: the retry goes through
    await served.stub.RetryInstallment(
        pb.RetryInstallmentRequest(installment_id=inst.id), metadata=served.auth
    )
    assert (await intent_of(served.container, inst.payment_id)).status == "canceled"


async def retry(
    served: Served, installment_id: str, request_id: str
) -> pb.RetryInstallmentResponse:
    return await served.stub.RetryInstallment(
        pb.RetryInstallmentRequest(installment_id=installment_id, request_id=request_id),
        metadata=served.auth,
    )


async def retry_refused(
    served: Served, installment_id: str, request_id: str
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await retry(served, installment_id, request_id)
    return err.value


@pytest.mark.parametrize("pays", [False, True], ids=["declined", "paid"])
async def test_a_retry_made_again_after_a_lost_answer_gets_its_attempt_and_charges_nothing(
    served, clock, pays
):
    (inst_id,) = await declined_when_due(served.container, clock)
    if pays:
        served.container.simulated["simulated"].set_simulation(Simulation())
    first = await retry(served, inst_id, "rt-1")  # its answer lost on the way back

    again = await retry(served, inst_id, "rt-1")

    assert await payments_of(served.container, inst_id) == [
        charge_request_id(inst_id, 1),
        charge_request_id(inst_id, 2),
    ], "one charge for the retry, however often it is made"
    assert (first.replayed, again.replayed) == (False, True)
    assert (again.attempt, again.payment_id) == (2, first.payment_id) and first.payment_id
    (second,) = [i for i in again.plan.installments if i.installment_id == inst_id]
    assert second.charges[-1].payment_id == first.payment_id
    expected = pb.INSTALLMENT_STATUS_PAID if pays else pb.INSTALLMENT_STATUS_FAILED
    assert second.status == expected and second.attempts == 2


async def test_a_retry_made_again_while_its_attempt_is_charging_is_aborted_in_progress(
    served, clock, monkeypatch
):
    (inst_id,) = await declined_when_due(served.container, clock)
    served.container.simulated["simulated"].set_simulation(Simulation())

    async def dies(self: object, *args: object) -> None:
        raise ProcessDied("after the claim, before the charge")

    with monkeypatch.context() as patch:  # the first call's process died mid-retry
        patch.setattr(installments_app.InstallmentCharger, "charge", dies)
        await retry_refused(served, inst_id, "rt-1")

    err = await retry_refused(served, inst_id, "rt-1")
    assert err.code() == grpc.StatusCode.ABORTED
    assert error_reason(err) == "REQUEST_IN_PROGRESS" and "rt-1" in (err.details() or "")
    assert await payments_of(served.container, inst_id) == [charge_request_id(inst_id, 1)]

    clock.advance(121)  # the claim's lease ran out: the scheduler charges that attempt
    await served.container.installments.scheduler.run_once()
    again = await retry(served, inst_id, "rt-1")
    assert (again.replayed, again.attempt) == (True, 2)
    assert await payments_of(served.container, inst_id) == [
        charge_request_id(inst_id, 1),
        charge_request_id(inst_id, 2),
    ]


async def test_retries_racing_under_one_request_id_make_one_attempt(served, clock):
    (inst_id,) = await declined_when_due(served.container, clock)
    served.container.simulated["simulated"].set_simulation(Simulation())

    answers = await asyncio.gather(
        *(retry(served, inst_id, "rt-1") for _ in range(3)), return_exceptions=True
    )

    assert await payments_of(served.container, inst_id) == [
        charge_request_id(inst_id, 1),
        charge_request_id(inst_id, 2),
    ]
    made = [a for a in answers if isinstance(a, pb.RetryInstallmentResponse) and not a.replayed]
    assert len(made) == 1 and made[0].attempt == 2
    for other in answers:  # the others replayed it, or were told it is in progress
        if isinstance(other, grpc.aio.AioRpcError):
            assert (other.code(), error_reason(other)) == (
                grpc.StatusCode.ABORTED,
                "REQUEST_IN_PROGRESS",
            )
        else:
            assert isinstance(other, pb.RetryInstallmentResponse)
            assert other.payment_id == made[0].payment_id
    again = await retry(served, inst_id, "rt-1")
    assert (again.replayed, again.payment_id) == (True, made[0].payment_id)


async def test_a_request_id_used_to_retry_another_installment_is_already_exists(served, clock):
    mine, other = await declined_when_due(served.container, clock, "plan-1", "plan-2")
    await retry(served, mine, "rt-1")

    err = await retry_refused(served, other, "rt-1")

    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(err) == "IDEMPOTENCY_KEY_REUSED"
    assert list(field_violations(err)) == ["request_id"]
    assert await payments_of(served.container, other) == [charge_request_id(other, 1)]


async def test_a_retry_past_the_limit_is_failed_precondition_and_the_plan_still_answers(
    served, clock
):
    (inst_id,) = await declined_when_due(served.container, clock)
    for n in range(MAX_MANUAL_RETRIES):
        await retry(served, inst_id, f"rt-{n}")

    err = await retry_refused(served, inst_id, "rt-one-more")

    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err) == "RETRY_LIMIT_REACHED"
    assert str(MAX_MANUAL_RETRIES) in (err.details() or "")
    charged = await payments_of(served.container, inst_id)
    assert len(charged) == 1 + MAX_MANUAL_RETRIES, "nothing charged past the limit"
    # A request_id seen before is still replayed, not refused.
    again = await retry(served, inst_id, "rt-0")
    assert (again.replayed, again.attempt) == (True, 2)


@pytest.mark.parametrize(
    "request_id", ["r" * 201, "rt-4242 4242 4242 4242", "rt\x00"], ids=["long", "card", "nul"]
)
async def test_a_bad_retry_request_id_is_invalid_argument_and_charges_nothing(
    served, clock, request_id
):
    (inst_id,) = await declined_when_due(served.container, clock)

    err = await retry_refused(served, inst_id, request_id)

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == ["request_id"]
    assert "4242" not in (err.details() or "")
    assert await payments_of(served.container, inst_id) == [charge_request_id(inst_id, 1)]


# -- EnableWebhookEndpoint ---------------------------------------------------------------
async def key_of(served: Served, clock, scope: Scope, merchant_id: str | None):
    key = await served.container.api_keys.create(
        merchant_id=merchant_id, scope=scope, label="", now=clock.now()
    )
    return [("authorization", f"Bearer {key.plaintext}")]


async def disabled_endpoint(served: Served, receiver: Receiver) -> pb.CreateWebhookEndpointResponse:
    """An endpoint of m_1 that answered 410 Gone to a plan's first event."""
    created = await served.stub.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(url=receiver.url, event_types=["installment_plan.created"]),
        metadata=served.auth,
    )
    await create_plan(served.container, "plan-1")
    receiver.script = [410]
    assert (await served.container.installments.dispatcher.run_once()).disabled == 1
    return created


async def endpoints_of(served: Served) -> list[pb.WebhookEndpoint]:
    listed = await served.stub.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(), metadata=served.auth
    )
    return list(listed.endpoints)


async def enable(served: Served, endpoint_id: str, auth=None) -> pb.EnableWebhookEndpointResponse:
    return await served.stub.EnableWebhookEndpoint(
        pb.EnableWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=auth or served.auth
    )


async def test_an_endpoint_enabled_after_a_410_gets_the_next_event_signed_with_its_secret(
    served, clock, receiver
):
    created = await disabled_endpoint(served, receiver)
    endpoint_id = created.endpoint.endpoint_id
    (disabled,) = await endpoints_of(served)
    assert disabled.status == pb.ENDPOINT_STATUS_DISABLED and disabled.disabled_reason
    assert disabled.disabled_at.ToDatetime(tzinfo=UTC) == clock.now()

    enabled = await enable(served, endpoint_id)
    twice = await enable(served, endpoint_id)

    assert enabled.endpoint.status == pb.ENDPOINT_STATUS_ENABLED
    assert enabled.endpoint.disabled_reason == ""
    assert not enabled.endpoint.HasField("disabled_at")
    assert enabled.endpoint.url == receiver.url
    assert [enabled.endpoint] == [twice.endpoint] == await endpoints_of(served)
    plan = (await create_plan(served.container, "plan-2")).plan
    stats = await served.container.installments.dispatcher.run_once()
    assert (stats.attempted, stats.delivered) == (1, 1), "the new event only"
    last = receiver.requests[-1]
    event = verify(created.secret, last.headers, last.body, now=clock.now())
    assert event["data"]["plan_id"] == plan.id


async def test_another_merchants_endpoint_is_not_found_and_ops_may_enable_it(
    served, clock, receiver
):
    created = await disabled_endpoint(served, receiver)
    endpoint_id = created.endpoint.endpoint_id
    other = await key_of(served, clock, Scope.MERCHANT, "m_2")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await enable(served, endpoint_id, other)

    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    (still,) = await endpoints_of(served)
    assert still.status == pb.ENDPOINT_STATUS_DISABLED
    ops = await key_of(served, clock, Scope.OPS, None)
    assert (await enable(served, endpoint_id, ops)).endpoint.status == pb.ENDPOINT_STATUS_ENABLED


async def test_ops_listing_every_merchants_endpoints_sees_whose_each_one_is(
    served, clock, receiver
):
    other = await key_of(served, clock, Scope.MERCHANT, "m_2")
    for auth, description in ((served.auth, "m_1's"), (other, "m_2's")):
        await served.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(url=receiver.url, description=description),
            metadata=auth,
        )
    ops = await key_of(served, clock, Scope.OPS, None)

    listed = await served.stub.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), metadata=ops)

    assert sorted((e.description, e.merchant_id) for e in listed.endpoints) == [
        ("m_1's", "m_1"),
        ("m_2's", "m_2"),
    ]
    assert [(e.description, e.merchant_id) for e in await endpoints_of(served)] == [
        ("m_1's", "m_1")
    ]


async def test_a_deleted_or_unknown_endpoint_is_not_found(served, receiver):
    created = await disabled_endpoint(served, receiver)
    endpoint_id = created.endpoint.endpoint_id
    await served.stub.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=served.auth
    )
    for unknown in (endpoint_id, "we_unknown", "x" * 129):  # too long: no id looks like it
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await enable(served, unknown)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await endpoints_of(served) == []


@pytest.mark.parametrize("endpoint_id", ["", "we_\x00"], ids=["empty", "nul"])
async def test_a_bad_endpoint_id_is_invalid_argument_on_endpoint_id(served, endpoint_id):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await enable(served, endpoint_id)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err.value)) == ["endpoint_id"]


# -- RotateWebhookSecret -----------------------------------------------------------------
async def rotate(
    served: Served, endpoint_id: str, auth=None, **fields: Any
) -> pb.RotateWebhookSecretResponse:
    return await served.stub.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(endpoint_id=endpoint_id, **fields),
        metadata=auth or served.auth,
    )


async def plan_created_endpoint(served: Served, receiver: Receiver):
    return await served.stub.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(url=receiver.url, event_types=["installment_plan.created"]),
        metadata=served.auth,
    )


async def next_webhook(served: Served, receiver: Receiver, order: str):
    """A new plan's `installment_plan.created`, as the dispatcher sent it."""
    await create_plan(served.container, order)
    assert (await served.container.installments.dispatcher.run_once()).delivered == 1
    return receiver.requests[-1]


def verifies(secret: str, request, clock) -> bool:
    try:
        verify(secret, request.headers, request.body, now=clock.now())
    except WebhookVerificationError:
        return False
    return True


async def test_a_rotated_endpoint_signs_with_both_secrets_for_the_overlap_then_the_new_alone(
    served, clock, receiver
):
    created = await plan_created_endpoint(served, receiver)
    endpoint_id = created.endpoint.endpoint_id

    rotated = await rotate(served, endpoint_id)

    assert rotated.secret.startswith("whsec_") and rotated.secret != created.secret
    assert len(base64.b64decode(rotated.secret.removeprefix("whsec_"))) == 32
    expires = rotated.previous_secret_expires_at.ToDatetime(tzinfo=UTC)
    assert expires == clock.now() + timedelta(hours=24)
    assert rotated.endpoint == (await endpoints_of(served))[0]
    during = await next_webhook(served, receiver, "plan-1")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verifies(created.secret, during, clock) and verifies(rotated.secret, during, clock)
    clock.advance(24 * 3600)
    after = await next_webhook(served, receiver, "plan-2")
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert verifies(rotated.secret, after, clock) and not verifies(created.secret, after, clock)
    async with served.container.installments.uow() as uow:  # the old key is not kept
        stored = await uow.webhooks.get_endpoint(endpoint_id, None)
    assert stored is not None and stored.secret == rotated.secret
    assert (stored.previous_secret, stored.previous_secret_until) == ("", None)


async def test_a_rotation_in_the_overlap_keeps_two_secrets_and_overlap_zero_keeps_one(
    served, clock, receiver
):
    created = await plan_created_endpoint(served, receiver)
    endpoint_id = created.endpoint.endpoint_id
    first = await rotate(served, endpoint_id, overlap_hours=168)
    second = await rotate(served, endpoint_id, overlap_hours=1)

    assert second.previous_secret_expires_at.ToDatetime(tzinfo=UTC) == clock.now() + timedelta(
        hours=1
    )
    two = await next_webhook(served, receiver, "plan-1")
    assert [verifies(s, two, clock) for s in (created.secret, first.secret, second.secret)] == [
        False,
        True,
        True,
    ]

    leaked = await rotate(served, endpoint_id, overlap_hours=0)

    assert not leaked.HasField("previous_secret_expires_at")
    one = await next_webhook(served, receiver, "plan-2")
    assert [verifies(s, one, clock) for s in (second.secret, leaked.secret)] == [False, True]


async def test_the_secrets_are_never_listed_and_only_the_owner_or_ops_may_rotate(
    served, clock, receiver
):
    created = await plan_created_endpoint(served, receiver)
    endpoint_id = created.endpoint.endpoint_id
    other = await key_of(served, clock, Scope.MERCHANT, "m_2")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rotate(served, endpoint_id, other)

    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    ops = await key_of(served, clock, Scope.OPS, None)
    by_ops = await rotate(served, endpoint_id, ops)
    mine = await rotate(served, endpoint_id)
    plan = await next_webhook(served, receiver, "plan-1")
    assert verifies(mine.secret, plan, clock) and verifies(by_ops.secret, plan, clock)
    for auth in (served.auth, ops):
        listed = await served.stub.ListWebhookEndpoints(
            pb.ListWebhookEndpointsRequest(), metadata=auth
        )
        text = listed.SerializeToString()
        for secret in (created.secret, by_ops.secret, mine.secret):
            assert secret.removeprefix("whsec_").encode() not in text


async def test_a_rotation_of_a_deleted_unknown_or_bad_endpoint_or_overlap_is_refused(
    served, receiver
):
    created = await plan_created_endpoint(served, receiver)
    endpoint_id = created.endpoint.endpoint_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rotate(served, endpoint_id, overlap_hours=169)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err.value)) == ["overlap_hours"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rotate(served, "")
    assert list(field_violations(err.value)) == ["endpoint_id"]
    await served.stub.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=served.auth
    )
    for unknown in (endpoint_id, "we_unknown", "x" * 129):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rotate(served, unknown)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- card numbers in a webhook URL -------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook?pan=4242%204242%204242%204242",
        "https://93.184.216.34/hook?pan=4242+4242+4242+4242",
        "https://93.184.216.34/hook?pan=4242%2D4242%2D4242%2D4242",
        "https://93.184.216.34/%34%32%34%32%34%32%34%32%34%32%34%32%34%32%34%32",
    ],
    ids=["%20 spaces", "+ spaces", "%2D dashes", "percent-encoded digits"],
)
async def test_a_webhook_url_holding_an_encoded_card_number_is_refused_and_not_kept(served, url):
    # The receiver reads the URL decoded: these are card numbers to it, and were kept.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(url=url), metadata=served.auth
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "card number" in field_violations(err.value)["url"]
    assert "4242" not in (err.value.details() or "")
    assert await endpoints_of(served) == []


async def test_a_webhook_url_over_2048_characters_is_refused_as_too_long(served):
    url = "https://93.184.216.34/" + "a" * 2048
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(url=url), metadata=served.auth
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == {"url": "is too long: at most 2048 characters"}
    assert await endpoints_of(served) == []


async def test_a_webhook_endpoint_wrong_in_every_field_is_told_about_every_field_at_once(served):
    request = pb.CreateWebhookEndpointRequest(
        url="ftp://127.0.0.1/hooks",
        description="d" * 201,
        event_types=["installment.failed", "plan.made", "payment.teleported"],
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.CreateWebhookEndpoint(request, metadata=served.auth)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err.value)) == {
        "url",
        "description",
        "event_types[1]",
        "event_types[2]",
    }
    assert await endpoints_of(served) == []


# -- CreateWebhookEndpoint under a request_id --------------------------------------------
def endpoint_request(url: str, request_id: str, **fields: Any) -> pb.CreateWebhookEndpointRequest:
    return pb.CreateWebhookEndpointRequest(
        url=url, request_id=request_id, event_types=["installment.paid"], **fields
    )


async def test_a_create_made_again_after_a_lost_answer_gets_the_same_endpoint_and_secret(
    served, clock, receiver
):
    create = served.stub.CreateWebhookEndpoint
    first = await create(endpoint_request(receiver.url, "ep-1"), metadata=served.auth)
    clock.advance(23 * 3600)  # the answer was lost; the merchant tries again that day
    again = await create(endpoint_request(receiver.url, "ep-1"), metadata=served.auth)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.endpoint == first.endpoint
    assert again.secret == first.secret and first.secret.startswith("whsec_")
    assert [e.endpoint_id for e in await endpoints_of(served)] == [first.endpoint.endpoint_id]
    # The request_id is the merchant's own: another merchant's is another endpoint.
    other = await key_of(served, clock, Scope.MERCHANT, "m_2")
    theirs = await create(endpoint_request(receiver.url, "ep-1"), metadata=other)
    assert not theirs.replayed and theirs.endpoint.endpoint_id != first.endpoint.endpoint_id


async def test_a_replay_past_a_day_gets_no_secret_and_of_a_deleted_endpoint_is_refused(
    served, clock, receiver
):
    create = served.stub.CreateWebhookEndpoint
    first = await create(endpoint_request(receiver.url, "ep-old"), metadata=served.auth)
    clock.advance(24 * 3600 + 1)
    late = await create(endpoint_request(receiver.url, "ep-old"), metadata=served.auth)
    assert late.replayed and late.endpoint == first.endpoint and late.secret == ""

    gone = await create(endpoint_request(receiver.url, "ep-gone"), metadata=served.auth)
    await served.stub.DeleteWebhookEndpoint(
        pb.DeleteWebhookEndpointRequest(endpoint_id=gone.endpoint.endpoint_id),
        metadata=served.auth,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(endpoint_request(receiver.url, "ep-gone"), metadata=served.auth)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "ENDPOINT_DELETED"
    assert [e.endpoint_id for e in await endpoints_of(served)] == [first.endpoint.endpoint_id]


@pytest.mark.parametrize(
    "changed",
    [{"url": "https://93.184.216.34/other"}, {"description": "other"}, {"event_types": []}],
    ids=["url", "description", "event types"],
)
async def test_a_request_id_used_for_another_endpoint_is_already_exists(served, receiver, changed):
    first = await served.stub.CreateWebhookEndpoint(
        endpoint_request(receiver.url, "ep-1"), metadata=served.auth
    )
    fields = {"url": receiver.url, "request_id": "ep-1", "event_types": ["installment.paid"]}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(**{**fields, **changed}), metadata=served.auth
        )

    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
    assert [e.endpoint_id for e in await endpoints_of(served)] == [first.endpoint.endpoint_id]


@pytest.mark.parametrize(
    "request_id", ["r" * 256, "ep-4242 4242 4242 4242", "ep\x00"], ids=["long", "card", "nul"]
)
async def test_a_bad_request_id_is_invalid_argument_on_request_id(served, receiver, request_id):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.CreateWebhookEndpoint(
            endpoint_request(receiver.url, request_id), metadata=served.auth
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err.value)) == ["request_id"]
    assert "4242" not in (err.value.details() or "")
    assert await endpoints_of(served) == []


async def every_page(list_call, request_type, auth, answer_limit: int) -> list[Any]:
    """Each page of a listing, paged on next_page_token; each one in `answer_limit`."""
    pages, token = [], ""
    while True:
        page = await list_call(request_type(page_size=100, page_token=token), metadata=auth)
        assert page.ByteSize() <= answer_limit
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def test_a_plan_page_is_cut_short_rather_than_outgrow_an_answer(database_url, clock):
    # An answer may be four times the request limit: 64 KiB here. Forty plans of 24
    # installments (some 1.8 KB each) do not fit one page of 100; before, asking for
    # them was RESOURCE_EXHAUSTED on every try, and no plan past them could be listed.
    async with serving(database_url, clock, max_message_bytes=16384) as s:
        await s.container.configs.upsert(
            MerchantConfig("m_1", installment_policy=InstallmentPolicy(count=24))
        )
        made = set()
        for n in range(40):
            created = await create_plan(s.container, f"large-{n}", order_id=f"order-{n}")
            assert created.plan is not None
            made.add(created.plan.id)
        pages = await every_page(
            s.stub.ListInstallmentPlans, pb.ListInstallmentPlansRequest, s.auth, 4 * 16384
        )
    listed = [p for page in pages for p in page.plans]
    assert sorted(p.plan_id for p in listed) == sorted(made)
    assert all(len(p.installments) == 24 for p in listed)
    assert len(pages) > 1


async def test_a_delivery_page_is_cut_short_rather_than_outgrow_an_answer(
    database_url, clock, receiver
):
    # A 2 KiB request limit: an answer may be 8 KiB. Sixty deliveries (some 165 bytes
    # each) do not fit one page of 100; before, the listing was RESOURCE_EXHAUSTED.
    async with serving(database_url, clock, max_message_bytes=2048) as s:
        await s.stub.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                url=receiver.url, event_types=["installment_plan.created"]
            ),
            metadata=s.auth,
        )
        for n in range(60):
            await create_plan(s.container, f"plan-{n}", order_id=f"order-{n}")
        while True:
            sent = await s.container.installments.dispatcher.run_once()
            if not (sent.fanned_out or sent.attempted):
                break
        pages = await every_page(
            s.stub.ListWebhookDeliveries, pb.ListWebhookDeliveriesRequest, s.auth, 4 * 2048
        )
    listed = [d.delivery_id for page in pages for d in page.deliveries]
    assert len(listed) == len(set(listed)) == 60
    assert len(pages) > 1


async def test_plans_are_listed_by_order_and_customer_and_impossible_filters_refused(served):
    await served.create("by-order-1", order_id="order-1001")
    await served.create("by-order-2", order_id="order-1002")

    listed = await served.stub.ListInstallmentPlans(
        pb.ListInstallmentPlansRequest(order_id="order-1001", customer_id=customer_of("m_1")),
        metadata=served.auth,
    )
    assert [p.order_id for p in listed.plans] == ["order-1001"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.ListInstallmentPlans(
            pb.ListInstallmentPlansRequest(
                order_id=" ", customer_id="4000056655665556", page_size=-1
            ),
            metadata=served.auth,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err.value)
    assert set(violations) == {"order_id", "customer_id", "page_size"}, "every one at once"
    assert "4000056655665556" not in str(err.value.details()) + str(violations)
