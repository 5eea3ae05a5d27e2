"""proto <-> domain for installments and webhooks, in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from payments.installments.v1 import installments_pb2 as pb
from payments.plan.v1 import plan_pb2
from payorch.app.installment_ports import Cursor
from payorch.app.webhook_delivery import SecretRotation
from payorch.domain.installments import (
    AttemptKind,
    Installment,
    InstallmentPlan,
    InstallmentStatus,
    PlanStatus,
    charge_history,
)
from payorch.domain.money import Currency
from payorch.domain.webhook_delivery import (
    DeliveryStatus,
    EndpointStatus,
    WebhookDelivery,
    WebhookEndpoint,
)
from payorch.entrypoints.grpc.mappers import decode_cursor, encode_cursor

PLAN_STATUSES: dict[PlanStatus, Any] = {
    s: pb.PlanStatus.Value(f"PLAN_STATUS_{s.name}") for s in PlanStatus
}
PLAN_STATUS_FROM_PROTO = {v: k for k, v in PLAN_STATUSES.items()}
INSTALLMENT_STATUSES: dict[InstallmentStatus, Any] = {
    s: pb.InstallmentStatus.Value(f"INSTALLMENT_STATUS_{s.name}") for s in InstallmentStatus
}
ATTEMPT_KINDS: dict[AttemptKind, Any] = {
    k: pb.AttemptKind.Value(f"ATTEMPT_KIND_{k.name}") for k in AttemptKind
}
DELIVERY_STATUSES: dict[DeliveryStatus, Any] = {
    s: pb.DeliveryStatus.Value(f"DELIVERY_STATUS_{s.name}") for s in DeliveryStatus
}
DELIVERY_STATUS_FROM_PROTO = {v: k for k, v in DELIVERY_STATUSES.items()}
ENDPOINT_STATUSES: dict[EndpointStatus, Any] = {
    EndpointStatus.ENABLED: pb.ENDPOINT_STATUS_ENABLED,
    EndpointStatus.DISABLED: pb.ENDPOINT_STATUS_DISABLED,
    EndpointStatus.DELETED: pb.ENDPOINT_STATUS_UNSPECIFIED,
}


def _ts(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.astimezone(UTC))
    return ts


def _money(amount_minor: int, currency: Currency) -> plan_pb2.Money:
    return plan_pb2.Money(amount_minor=amount_minor, currency=currency.code)


def installment_pb(plan: InstallmentPlan, i: Installment) -> pb.Installment:
    return pb.Installment(
        installment_id=i.id,
        sequence=i.sequence,
        amount=_money(i.amount_minor, plan.currency),
        due_at=_ts(i.due_at),
        status=INSTALLMENT_STATUSES[i.status],
        attempts=i.attempts,
        payment_id=i.payment_id,
        processor_payment_id=i.processor_payment_id,
        last_error_code=i.last_error_code,
        last_error=i.last_error,
        next_attempt_at=_ts(i.next_attempt_at),
        paid_at=_ts(i.paid_at),
        first_failed_at=_ts(i.first_failed_at),
        charges=[
            pb.InstallmentCharge(
                attempt=e.charge.attempt,
                kind=ATTEMPT_KINDS[e.charge.kind],
                payment_id=e.charge.payment_id,
                outcome=e.charge.outcome.value,
                error_code=e.charge.error_code,
                message=e.charge.message,
                at=_ts(e.charge.at),
                times=e.times,
                first_at=_ts(e.first_at),
            )
            for e in charge_history(i.charges)
        ],
    )


def plan_pb(plan: InstallmentPlan) -> pb.InstallmentPlan:
    return pb.InstallmentPlan(
        plan_id=plan.id,
        merchant_id=plan.merchant_id,
        request_id=plan.request_id,
        order_id=plan.order_id,
        total=_money(plan.total_minor, plan.currency),
        status=PLAN_STATUSES[plan.status],
        payment_method=plan_pb2.PaymentMethod(
            type=plan_pb2.PAYMENT_METHOD_TYPE_CARD, token=plan.token, customer_id=plan.customer_id
        ),
        installments=[installment_pb(plan, i) for i in plan.installments],
        paid_count=plan.paid_count,
        installment_count=len(plan.installments),
        paid=_money(plan.paid_minor, plan.currency),
        remaining=_money(plan.total_minor - plan.paid_minor, plan.currency),
        interval_days=plan.interval_days,
        dunning_days=list(plan.dunning_days),
        cancel_reason=plan.cancel_reason,
        created_at=_ts(plan.created_at),
        updated_at=_ts(plan.updated_at),
    )


def endpoint_pb(e: WebhookEndpoint) -> pb.WebhookEndpoint:
    # Never a secret: each is returned once, by CreateWebhookEndpoint or
    # RotateWebhookSecret.
    return pb.WebhookEndpoint(
        endpoint_id=e.id,
        url=e.url,
        description=e.description,
        event_types=list(e.event_types),
        status=ENDPOINT_STATUSES[e.status],
        disabled_reason=e.disabled_reason,
        created_at=_ts(e.created_at),
        merchant_id=e.merchant_id,
        disabled_at=_ts(e.disabled_at),
        failing_since=_ts(e.failing_since),
    )


def rotation_pb(r: SecretRotation) -> pb.RotateWebhookSecretResponse:
    # The new secret, this once; the replaced one never leaves.
    return pb.RotateWebhookSecretResponse(
        endpoint=endpoint_pb(r.endpoint),
        secret=r.secret,
        previous_secret_expires_at=_ts(r.previous_secret_until),
    )


def delivery_pb(d: WebhookDelivery) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        delivery_id=d.id,
        webhook_id=d.event_id,
        endpoint_id=d.endpoint_id,
        event_type=d.event_type,
        status=DELIVERY_STATUSES[d.status],
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        next_attempt_at=_ts(d.next_attempt_at),
        created_at=_ts(d.created_at),
        delivered_at=_ts(d.delivered_at),
    )


def encode_page_token(created_at: datetime, object_id: str) -> str:
    return encode_cursor(created_at, object_id)


def decode_page_token(token: str) -> Cursor | None:
    return Cursor(*decode_cursor(token, max_id_len=128)) if token else None
