"""The InstallmentService servicer: map proto <-> domain, call the app, nothing more."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from google.rpc import code_pb2

from payments.installments.v1 import installments_pb2 as pb
from payorch.app.auth import read_scope, resolve_merchant
from payorch.app.contract_monitor import identify_call, note_call, reject_call
from payorch.app.installment_ports import Cursor
from payorch.app.installments import (
    MAX_REASON_LEN,
    CreatePlan,
    EarlierPaymentOpen,
    FirstChargeRefunded,
    InstallmentRejected,
    InstallmentService,
    InvalidPlanRequest,
    PlanConflict,
    PlanNotFound,
    RetryRequestReused,
    plan_filter_problems,
    plan_request_problems,
)
from payorch.app.payments import (
    CustomerNotOwned,
    DeadlineTooShort,
    IdempotencyConflict,
    RequestInProgress,
)
from payorch.app.plan_builder import PlanRejected
from payorch.app.ports import ConcurrentUpdate
from payorch.app.webhook_delivery import (
    CannotRedeliver,
    DeliveryNotFound,
    EndpointCreatedThenDeleted,
    EndpointNotFound,
    EndpointRequestReused,
    InvalidEndpoint,
    WebhookEndpoints,
)
from payorch.domain.card_data import clip, contains_card_number
from payorch.domain.installments import (
    InstallmentPlan,
    InvalidInstallmentPolicy,
    InvalidTransition,
    NotEligible,
    RetryLimitReached,
)
from payorch.domain.money import MAX_AMOUNT_MINOR, Currency, InvalidAmount, Money, UnknownCurrency
from payorch.domain.request import (
    RequestRejected,
    Severity,
    ValidationIssue,
    merchant_id_issues,
)
from payorch.domain.webhook_delivery import DEFAULT_SECRET_OVERLAP, WebhookDelivery
from payorch.entrypoints.grpc import installment_mappers as mappers
from payorch.entrypoints.grpc.errors import (
    RpcError,
    error,
    in_progress,
    invalid_argument,
    key_reused,
    not_found,
    too_late,
)
from payorch.entrypoints.grpc.handlers import Call
from payorch.entrypoints.grpc.mappers import InvalidPageToken
from payorch.entrypoints.grpc.paging import copied, fill_page, page_bytes

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_PLAN_REQUEST_ID_LEN = 200
MAX_ID_LEN = 128
_PRINTABLE_RE = re.compile(r"^[\x21-\x7e]+\Z")
# The payments side's field names (its parser's and its plan builder's), as fields of
# CreateInstallmentPlanRequest. The first charge is one card payment of the first part:
# its method is the plan's payment_method, its amount a share of the total.
_FIELDS = {
    "amount": "total.amount_minor",
    "currency": "total.currency",
    "method": "payment_method",
    "methods": "total.amount_minor",  # the part is outside the method's limits
}
_METHOD_FIELDS = {
    "method": "payment_method",
    "token": "payment_method",
    "amount": "total.amount_minor",
    "customer_id": "customer_id",
}
_METHOD_FIELD_RE = re.compile(r"^methods\[\d+\]\.(\w+)\Z")


def _plan_field(name: str) -> str:
    """A payments field name as the field of CreateInstallmentPlanRequest it came from."""
    method_field = _METHOD_FIELD_RE.match(name)
    if method_field:
        return _METHOD_FIELDS.get(method_field.group(1), name)
    return _FIELDS.get(name, name)


def _refused(problems: list[tuple[str, str]], sequence: int) -> RpcError:
    """The merchant's config refuses an installment's charge (the first, or the last,
    which carries the remainder): each problem on the plan's field. An amount refused
    is that installment's, not the total's: say which."""
    which = "the first installment" if sequence == 1 else f"installment {sequence}"
    violations = []
    for name, message in problems:
        field_ = _plan_field(name)
        if field_ == "total.amount_minor":
            message = f"{which}: {message}"
        violations.append((field_, message))
    return invalid_argument(violations)


def _merchant(call: Call, requested: str) -> str:
    merchant = resolve_merchant(call.principal, requested)
    issues = merchant_id_issues(merchant)
    if issues:
        reject_call(issues)
        raise invalid_argument([(i.field, i.message) for i in issues])
    return merchant


@contextlib.contextmanager
def _refusals(what: str, changing: str) -> Iterator[None]:
    """The app's refusals of a call on one object as statuses: not found (or not the
    caller's), a transition it cannot make, a save another call beat, a payment still
    waiting for the customer that the processor could not be made to cancel."""
    try:
        yield
    except (PlanNotFound, EndpointNotFound, DeliveryNotFound) as exc:
        raise not_found(what) from exc
    except InvalidTransition as exc:
        raise _transition(exc) from exc
    except ConcurrentUpdate as exc:
        raise error(code_pb2.ABORTED, f"the {changing} is changing; try again") from exc
    except EarlierPaymentOpen as exc:
        raise error(code_pb2.UNAVAILABLE, str(exc), "EARLIER_PAYMENT_OPEN") from exc


def _object_id(value: str, name: str, what: str) -> str:
    if not value:
        raise invalid_argument([(name, "is required")])
    if len(value) > MAX_ID_LEN or not _PRINTABLE_RE.match(value):
        raise not_found(what)  # no id of ours looks like that: exactly like a missing one
    return value


def _filter_id(value: str) -> str | None:
    """An id to filter by; one no object can have filters everything out."""
    if not value:
        return None
    if len(value) > MAX_ID_LEN or not _PRINTABLE_RE.match(value):
        return "-"
    return value


def _page(
    size: int,
    token: str,
    status: int,
    statuses: dict[Any, Any],
    problems: list[tuple[str, str]] | None = None,
) -> tuple[int, Cursor | None, Any]:
    """A listing's page size, cursor and status filter, or INVALID_ARGUMENT naming
    every one of them that is wrong, with the `problems` of its other filters."""
    problems = list(problems or ())
    if size < 0:
        problems.append(("page_size", "must not be negative"))
    cursor = None
    try:
        cursor = mappers.decode_page_token(token)
    except InvalidPageToken as exc:
        problems.append(("page_token", str(exc)))
    found = statuses.get(status)
    if status and found is None:
        problems.append(("status", "unknown status"))
    if problems:
        raise invalid_argument(problems)
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), cursor, found


def _token_of(listed: WebhookDelivery | InstallmentPlan) -> str:
    return mappers.encode_page_token(listed.created_at, listed.id)


def _total(request: pb.CreateInstallmentPlanRequest) -> tuple[Money | None, list[tuple[str, str]]]:
    """The plan's total, or None and what is wrong with its currency and its amount."""
    if not request.HasField("total"):
        return None, [("total", "is required")]
    problems = []
    currency = None
    try:
        currency = Currency.parse(request.total.currency)
    except UnknownCurrency as exc:
        problems.append(("total.currency", str(exc)))
    amount = request.total.amount_minor
    if not 0 < amount <= MAX_AMOUNT_MINOR:
        problems.append(("total.amount_minor", f"must be 1..{MAX_AMOUNT_MINOR}"))
    if problems or currency is None:
        return None, problems
    try:
        return Money(amount, currency), []
    except InvalidAmount as exc:  # pragma: no cover - range checked above
        return None, [("total.amount_minor", str(exc))]


def _request_id_problems(raw: str) -> list[tuple[str, str]]:
    if not raw:
        return [("request_id", "is required: it is the idempotency key")]
    if len(raw) > MAX_PLAN_REQUEST_ID_LEN or not _PRINTABLE_RE.match(raw):
        return [("request_id", f"must be 1-{MAX_PLAN_REQUEST_ID_LEN} printable ASCII characters")]
    if contains_card_number(raw):
        return [("request_id", "looks like a card number")]
    return []


def _no_card_numbers(fields: list[tuple[str, str]]) -> None:
    """Refuse the fields holding a card number; a field may be given in several forms."""
    found = dict.fromkeys(name for name, v in fields if contains_card_number(v))
    if found:
        raise invalid_argument([(name, "looks like a card number") for name in found])


def _transition(exc: InvalidTransition) -> RpcError:
    if isinstance(exc, RetryLimitReached):
        return error(code_pb2.FAILED_PRECONDITION, str(exc), "RETRY_LIMIT_REACHED")
    return error(code_pb2.FAILED_PRECONDITION, str(exc), "INVALID_STATE")


class InstallmentServicer:
    def __init__(
        self,
        plans: InstallmentService,
        endpoints: WebhookEndpoints,
        max_answer_bytes: int = 4 << 20,
    ) -> None:
        """`max_answer_bytes`: the server's send limit, which a listing's page keeps
        under."""
        self._plans = plans
        self._endpoints = endpoints
        self._page_bytes = page_bytes(max_answer_bytes)

    async def CreateInstallmentPlan(
        self, request: pb.CreateInstallmentPlanRequest, call: Call
    ) -> pb.CreateInstallmentPlanResponse:
        # Every field judged before any is refused: the caller fixes them all at once.
        merchant = resolve_merchant(call.principal, request.merchant_id)
        merchant_issues = merchant_id_issues(merchant)
        problems = [(i.field, i.message) for i in merchant_issues]
        problems += _request_id_problems(request.request_id)
        total, total_problems = _total(request)
        problems += total_problems
        token, customer_id = request.payment_method.strip(), request.customer_id.strip()
        problems += plan_request_problems(request.order_id, token, customer_id)
        if problems or total is None:
            reject_call(merchant_issues)
            raise invalid_argument([(_plan_field(f), m) for f, m in problems])
        identify_call(merchant_id=merchant, request_id=request.request_id)
        if request.total.currency != total.currency.code:
            # Taken, as CreatePayment takes it, and recorded as CreatePayment records it.
            note = ValidationIssue(
                "total.currency",
                f"normalized to {total.currency.code}",
                "input/currency",
                False,
                Severity.INFO,
            )
            note_call([note])
        command = CreatePlan(
            merchant_id=merchant,
            request_id=request.request_id,
            order_id=request.order_id,
            total=total,
            token=token,
            customer_id=customer_id,
        )
        try:
            created = await self._plans.create(command, deadline_s=call.deadline_s())
        except InvalidPlanRequest as exc:
            raise invalid_argument([(_plan_field(f), m) for f, m in exc.problems]) from exc
        except RequestRejected as exc:
            raise invalid_argument([(_plan_field(i.field), i.message) for i in exc.issues]) from exc
        except InstallmentRejected as exc:
            raise _refused(exc.problems, exc.sequence) from exc
        except PlanRejected as exc:
            raise _refused(exc.problems, 1) from exc
        except CustomerNotOwned as exc:  # as CreatePayment answers it
            raise invalid_argument([(_plan_field(f), exc.MESSAGE) for f in exc.fields]) from exc
        except NotEligible as exc:
            raise error(code_pb2.FAILED_PRECONDITION, str(exc), "NOT_ELIGIBLE", "total") from exc
        except InvalidInstallmentPolicy as exc:
            # The merchant's stored config, not this request: a config saved before its
            # rules were checked at save time. Saving a corrected config lifts it.
            raise error(
                code_pb2.FAILED_PRECONDITION,
                f"the merchant's installment_policy is invalid: {exc}",
                "INVALID_INSTALLMENT_POLICY",
            ) from exc
        except (PlanConflict, IdempotencyConflict) as exc:
            raise key_reused(exc) from exc
        except RequestInProgress as exc:
            raise in_progress(exc) from exc
        except DeadlineTooShort as exc:
            raise too_late(exc) from exc
        except FirstChargeRefunded as exc:
            raise error(code_pb2.FAILED_PRECONDITION, str(exc), "FIRST_CHARGE_REFUNDED") from exc
        return pb.CreateInstallmentPlanResponse(
            plan=mappers.plan_pb(created.plan) if created.plan is not None else None,
            first_charge=pb.FirstCharge(
                payment_id=created.first_payment_id,
                status=created.first_payment_status.value,
                error_code=created.error_code,
                error_message=created.error_message,
            ),
            replayed=created.replayed,
        )

    async def GetInstallmentPlan(
        self, request: pb.GetInstallmentPlanRequest, call: Call
    ) -> pb.GetInstallmentPlanResponse:
        plan_id = _object_id(request.plan_id, "plan_id", "installment plan")
        with _refusals("installment plan", "plan"):
            plan = await self._plans.get(plan_id, read_scope(call.principal))
        return pb.GetInstallmentPlanResponse(plan=mappers.plan_pb(plan))

    async def ListInstallmentPlans(
        self, request: pb.ListInstallmentPlansRequest, call: Call
    ) -> pb.ListInstallmentPlansResponse:
        size, cursor, status = _page(
            request.page_size,
            request.page_token,
            request.status,
            mappers.PLAN_STATUS_FROM_PROTO,
            plan_filter_problems(request.order_id, request.customer_id),
        )
        found = await self._plans.list(
            read_scope(call.principal),
            status=status,
            page_size=size + 1,
            after=cursor,
            order_id=request.order_id,
            customer_id=request.customer_id,
        )
        response = pb.ListInstallmentPlansResponse()
        response.next_page_token = fill_page(
            response.plans, found, size, copied(mappers.plan_pb), self._page_bytes, _token_of
        )
        return response

    async def CancelInstallmentPlan(
        self, request: pb.CancelInstallmentPlanRequest, call: Call
    ) -> pb.CancelInstallmentPlanResponse:
        plan_id = _object_id(request.plan_id, "plan_id", "installment plan")
        # Cut as the service keeps it, then scanned: the text scanned is the text kept.
        reason = clip(request.reason.strip(), MAX_REASON_LEN)
        _no_card_numbers([("reason", reason)])
        with _refusals("installment plan", "plan"):
            plan = await self._plans.cancel(plan_id, read_scope(call.principal), reason)
        return pb.CancelInstallmentPlanResponse(plan=mappers.plan_pb(plan))

    async def RetryInstallment(
        self, request: pb.RetryInstallmentRequest, call: Call
    ) -> pb.RetryInstallmentResponse:
        problems = [] if request.installment_id else [("installment_id", "is required")]
        if request.request_id:  # optional: without one, every call is a new attempt
            problems += _request_id_problems(request.request_id)
        if problems:
            raise invalid_argument(problems)
        installment_id = _object_id(request.installment_id, "installment_id", "installment")
        try:
            with _refusals("installment", "plan"):
                retried = await self._plans.retry(
                    installment_id, read_scope(call.principal), request_id=request.request_id
                )
        except RetryRequestReused as exc:
            raise key_reused(exc) from exc
        except RequestInProgress as exc:
            raise in_progress(exc) from exc
        return pb.RetryInstallmentResponse(
            plan=mappers.plan_pb(retried.plan),
            replayed=retried.replayed,
            attempt=retried.attempt,
            payment_id=retried.payment_id,
        )

    # -- webhook endpoints ---------------------------------------------------------
    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, call: Call
    ) -> pb.CreateWebhookEndpointResponse:
        merchant = _merchant(call, request.merchant_id)
        try:
            created = await self._endpoints.create(
                merchant,
                request.url,
                request.description,
                list(request.event_types),
                request_id=request.request_id,
            )
        except InvalidEndpoint as exc:
            raise invalid_argument(exc.problems) from exc
        except EndpointRequestReused as exc:
            raise key_reused(exc) from exc
        except EndpointCreatedThenDeleted as exc:
            raise error(code_pb2.FAILED_PRECONDITION, str(exc), "ENDPOINT_DELETED") from exc
        return pb.CreateWebhookEndpointResponse(
            endpoint=mappers.endpoint_pb(created.endpoint),
            secret=created.secret,
            replayed=created.replayed,
        )

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, call: Call
    ) -> pb.ListWebhookEndpointsResponse:
        found = await self._endpoints.list(read_scope(call.principal))
        return pb.ListWebhookEndpointsResponse(endpoints=[mappers.endpoint_pb(e) for e in found])

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, call: Call
    ) -> pb.DeleteWebhookEndpointResponse:
        endpoint_id = _object_id(request.endpoint_id, "endpoint_id", "webhook endpoint")
        with _refusals("webhook endpoint", "endpoint"):
            await self._endpoints.delete(endpoint_id, read_scope(call.principal))
        return pb.DeleteWebhookEndpointResponse()

    async def EnableWebhookEndpoint(
        self, request: pb.EnableWebhookEndpointRequest, call: Call
    ) -> pb.EnableWebhookEndpointResponse:
        endpoint_id = _object_id(request.endpoint_id, "endpoint_id", "webhook endpoint")
        with _refusals("webhook endpoint", "endpoint"):
            endpoint = await self._endpoints.enable(endpoint_id, read_scope(call.principal))
        return pb.EnableWebhookEndpointResponse(endpoint=mappers.endpoint_pb(endpoint))

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, call: Call
    ) -> pb.RotateWebhookSecretResponse:
        endpoint_id = _object_id(request.endpoint_id, "endpoint_id", "webhook endpoint")
        overlap = DEFAULT_SECRET_OVERLAP
        if request.HasField("overlap_hours"):
            overlap = timedelta(hours=request.overlap_hours)
        try:
            with _refusals("webhook endpoint", "endpoint"):
                rotated = await self._endpoints.rotate_secret(
                    endpoint_id, read_scope(call.principal), overlap
                )
        except InvalidEndpoint as exc:
            raise invalid_argument(exc.problems) from exc
        return mappers.rotation_pb(rotated)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, call: Call
    ) -> pb.ListWebhookDeliveriesResponse:
        size, cursor, status = _page(
            request.page_size,
            request.page_token,
            request.status,
            mappers.DELIVERY_STATUS_FROM_PROTO,
        )
        found = await self._endpoints.deliveries(
            read_scope(call.principal),
            status=status,
            endpoint_id=_filter_id(request.endpoint_id),
            page_size=size + 1,
            after=cursor,
        )
        response = pb.ListWebhookDeliveriesResponse()
        response.next_page_token = fill_page(
            response.deliveries,
            found,
            size,
            copied(mappers.delivery_pb),
            self._page_bytes,
            _token_of,
        )
        return response

    async def RedeliverWebhook(
        self, request: pb.RedeliverWebhookRequest, call: Call
    ) -> pb.RedeliverWebhookResponse:
        delivery_id = _object_id(request.delivery_id, "delivery_id", "webhook delivery")
        try:
            with _refusals("webhook delivery", "delivery"):
                delivery = await self._endpoints.redeliver(delivery_id, read_scope(call.principal))
        except CannotRedeliver as exc:
            raise error(code_pb2.FAILED_PRECONDITION, str(exc), "INVALID_STATE") from exc
        return pb.RedeliverWebhookResponse(delivery=mappers.delivery_pb(delivery))
