"""The PaymentOrchestrator servicer: map proto <-> domain, call the app, nothing more."""

from __future__ import annotations

from datetime import UTC

from google.rpc import code_pb2

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payorch.app.auth import read_scope, resolve_merchant
from payorch.app.payments import (
    IdempotencyConflict,
    PaymentNotFound,
    PaymentService,
    RequestInProgress,
)
from payorch.domain.request import RequestRejected, parse_payment_request
from payorch.entrypoints.grpc import mappers
from payorch.entrypoints.grpc.errors import error, invalid_argument, not_found
from payorch.entrypoints.grpc.handlers import Call

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class PaymentOrchestratorServicer:
    def __init__(self, payments: PaymentService) -> None:
        self._payments = payments

    async def CreatePayment(
        self, request: orch.CreatePaymentRequest, call: Call
    ) -> orch.CreatePaymentResponse:
        merchant = resolve_merchant(call.principal, request.merchant_id)
        try:
            core = parse_payment_request(mappers.raw_request(request, merchant))
        except RequestRejected as exc:
            raise invalid_argument([(i.field, i.message) for i in exc.issues]) from exc
        try:
            result = await self._payments.create(core, deadline_s=call.deadline_s())
        except IdempotencyConflict as exc:
            raise error(
                code_pb2.ALREADY_EXISTS, str(exc), "IDEMPOTENCY_KEY_REUSED", "request_id"
            ) from exc
        except RequestInProgress as exc:
            raise error(code_pb2.ABORTED, str(exc), "REQUEST_IN_PROGRESS") from exc
        return orch.CreatePaymentResponse(
            payment=mappers.payment_pb(result.payment, replayed=result.replayed)
        )

    async def GetPayment(
        self, request: orch.GetPaymentRequest, call: Call
    ) -> orch.GetPaymentResponse:
        if not request.payment_id:
            raise invalid_argument([("payment_id", "is required")])
        try:
            payment = await self._payments.get(request.payment_id[:64], read_scope(call.principal))
        except PaymentNotFound as exc:
            raise not_found("payment") from exc
        return orch.GetPaymentResponse(payment=mappers.payment_pb(payment))

    async def ListPayments(
        self, request: orch.ListPaymentsRequest, call: Call
    ) -> orch.ListPaymentsResponse:
        if request.page_size < 0:
            raise invalid_argument([("page_size", "must not be negative")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            cursor = mappers.decode_page_token(request.page_token)
        except mappers.InvalidPageToken as exc:
            raise invalid_argument([("page_token", str(exc))]) from exc
        status = mappers.PAYMENT_STATUS_FROM_PROTO.get(request.status)
        if request.status and status is None:
            raise invalid_argument([("status", "unknown status")])
        created_after = None
        if request.HasField("created_after"):
            try:
                created_after = request.created_after.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError) as exc:
                raise invalid_argument([("created_after", "out of range")]) from exc
        found = await self._payments.list(
            read_scope(call.principal),
            page_size=size + 1,
            after=cursor,
            status=status,
            created_after=created_after,
        )
        page = list(found[:size])
        return orch.ListPaymentsResponse(
            payments=[mappers.payment_pb(p) for p in page],
            next_page_token=mappers.encode_page_token(page[-1]) if len(found) > size else "",
        )
