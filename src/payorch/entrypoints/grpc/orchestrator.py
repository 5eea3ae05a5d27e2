"""The PaymentOrchestrator servicer: map proto <-> domain, call the app, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC

from google.rpc import code_pb2

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payorch.app.auth import read_scope, resolve_merchant
from payorch.app.contract_monitor import current_call, identify_call, reject_call
from payorch.app.merchant_configs import MerchantConfigs, VersionConflict
from payorch.app.payments import (
    CustomerNotOwned,
    DeadlineTooShort,
    IdempotencyConflict,
    InvalidState,
    PaymentChanging,
    PaymentNotFound,
    PaymentService,
    ProcessorNotConfigured,
    RefundRejected,
    ReleaseUndecided,
    RequestInProgress,
    TooManyRefunds,
)
from payorch.app.plan_builder import PlanRejected
from payorch.domain.card_data import clip, contains_card_number
from payorch.domain.merchant_config import InvalidMerchantConfig
from payorch.domain.request import (
    RequestRejected,
    idempotency_key_issues,
    merchant_id_issues,
    parse_payment_request,
)
from payorch.entrypoints.grpc import mappers
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
from payorch.entrypoints.grpc.paging import fill_page, page_bytes

log = logging.getLogger("payorch.grpc")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_CANCEL_REASON_LEN = 200  # longer reasons are cut


def _named_merchant(call: Call, requested: str, field_: str) -> str:
    """The merchant a call acts for; one an operator names is held to the rules."""
    merchant = resolve_merchant(call.principal, requested)
    issues = merchant_id_issues(merchant, field_)
    if issues:
        reject_call(issues)
        raise invalid_argument([(i.field, i.message) for i in issues])
    return merchant


# The plan builder names a single-method request's one method `methods[0]`; the
# caller sent it in the top-level fields, and is told about those.
_SINGLE_METHOD_FIELDS = {
    "methods[0].method": "method",
    "methods[0].token": "payment_method",
    "methods": "amount",  # the amount is outside the method's limits
}


def _as_sent(
    request: orch.CreatePaymentRequest, problems: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    if request.methods:
        return problems
    return [(_SINGLE_METHOD_FIELDS.get(name, name), message) for name, message in problems]


def not_configured(exc: ProcessorNotConfigured) -> RpcError:
    """The money is held at a processor this server has no adapter for."""
    return error(code_pb2.FAILED_PRECONDITION, str(exc), "PROCESSOR_NOT_CONFIGURED")


@contextlib.contextmanager
def _change_refusals() -> Iterator[None]:
    """The app's refusals of a change to a payment as statuses: not found (or not the
    caller's), a save other calls kept beating, money held at a processor this server
    has no adapter for, a change the payment's state does not allow."""
    try:
        yield
    except PaymentNotFound as exc:
        raise not_found("payment") from exc
    except PaymentChanging as exc:
        raise error(code_pb2.ABORTED, str(exc), "PAYMENT_CHANGING") from exc
    except ProcessorNotConfigured as exc:
        raise not_configured(exc) from exc
    except InvalidState as exc:
        raise error(code_pb2.FAILED_PRECONDITION, str(exc), "INVALID_STATE") from exc


def _log_cut_off(request_id: str) -> None:
    scope = current_call()
    payment_id = scope.payment_id if scope is not None else ""
    log.warning(
        "CreatePayment cut off by the server stopping past its grace period: %s",
        f"payment {payment_id} left to the reconciler"
        if payment_id
        else "no payment stored, nothing charged",
        extra={"request_id": request_id, "payment_id": payment_id, "code": "CANCELLED"},
    )


class PaymentOrchestratorServicer:
    def __init__(
        self,
        payments: PaymentService,
        configs: MerchantConfigs,
        closing: Callable[[], bool] = lambda: False,
        max_answer_bytes: int = 4 << 20,
    ) -> None:
        """`closing()`: the server is stopping, and cancels what outlasts its grace period.
        `max_answer_bytes`: the server's send limit, which a ListPayments page keeps
        under."""
        self._payments = payments
        self._configs = configs
        self._closing = closing
        self._page_bytes = page_bytes(max_answer_bytes)

    async def CreatePayment(
        self, request: orch.CreatePaymentRequest, call: Call
    ) -> orch.CreatePaymentResponse:
        merchant = resolve_merchant(call.principal, request.merchant_id)
        identify_call(merchant_id=merchant)
        try:
            core = parse_payment_request(mappers.raw_request(request, merchant))
        except RequestRejected as exc:
            # Recorded under the payment's own request id when that one is sound.
            request_id = request.request_id.strip()
            if not idempotency_key_issues(request_id):
                identify_call(request_id=request_id)
            reject_call(exc.issues)
            raise invalid_argument([(i.field, i.message) for i in exc.issues]) from exc
        identify_call(request_id=core.request_id)
        try:
            result = await self._payments.create(core, deadline_s=call.deadline_s())
        except asyncio.CancelledError:
            if self._closing():
                _log_cut_off(core.request_id)
            raise
        except PlanRejected as exc:
            raise invalid_argument(_as_sent(request, exc.problems)) from exc
        except CustomerNotOwned as exc:
            raise invalid_argument([(f, exc.MESSAGE) for f in exc.fields]) from exc
        except IdempotencyConflict as exc:
            raise key_reused(exc) from exc
        except RequestInProgress as exc:
            raise in_progress(exc) from exc
        except DeadlineTooShort as exc:
            raise too_late(exc) from exc
        response = orch.CreatePaymentResponse()
        mappers.write_payment(response.payment, result.payment, replayed=result.replayed)
        return response

    async def GetPayment(
        self, request: orch.GetPaymentRequest, call: Call
    ) -> orch.GetPaymentResponse:
        if not request.payment_id:
            raise invalid_argument([("payment_id", "is required")])
        try:
            payment = await self._payments.get(request.payment_id[:64], read_scope(call.principal))
        except PaymentNotFound as exc:
            raise not_found("payment") from exc
        response = orch.GetPaymentResponse()
        mappers.write_payment(response.payment, payment)
        return response

    async def ListPayments(
        self, request: orch.ListPaymentsRequest, call: Call
    ) -> orch.ListPaymentsResponse:
        problems = []  # every filter judged before any is refused
        if request.page_size < 0:
            problems.append(("page_size", "must not be negative"))
        size = min(max(request.page_size, 0) or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        cursor = None
        try:
            cursor = mappers.decode_page_token(request.page_token)
        except mappers.InvalidPageToken as exc:
            problems.append(("page_token", str(exc)))
        status = mappers.PAYMENT_STATUS_FROM_PROTO.get(request.status)
        if request.status and status is None:
            problems.append(("status", "unknown status"))
        created_after = None
        if request.HasField("created_after"):
            try:
                created_after = request.created_after.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError):
                problems.append(("created_after", "out of range"))
        if problems:
            raise invalid_argument(problems)
        found = await self._payments.list(
            read_scope(call.principal),
            page_size=size + 1,
            after=cursor,
            status=status,
            created_after=created_after,
        )
        response = orch.ListPaymentsResponse()
        response.next_page_token = fill_page(
            response.payments,
            found,
            size,
            mappers.write_payment,
            self._page_bytes,
            mappers.encode_page_token,
        )
        return response

    def _payment_id(self, payment_id: str) -> str:
        if not payment_id:
            raise invalid_argument([("payment_id", "is required")])
        return payment_id[:64]

    async def ConfirmPayment(
        self, request: orch.ConfirmPaymentRequest, call: Call
    ) -> orch.ConfirmPaymentResponse:
        payment_id = self._payment_id(request.payment_id)
        with _change_refusals():
            try:
                payment = await self._payments.confirm(
                    payment_id, read_scope(call.principal), deadline_s=call.deadline_s()
                )
            except DeadlineTooShort as exc:
                raise too_late(exc) from exc
        response = orch.ConfirmPaymentResponse()
        mappers.write_payment(response.payment, payment)
        return response

    async def CapturePayment(
        self, request: orch.CapturePaymentRequest, call: Call
    ) -> orch.CapturePaymentResponse:
        payment_id = self._payment_id(request.payment_id)
        with _change_refusals():
            payment = await self._payments.capture(payment_id, read_scope(call.principal))
        response = orch.CapturePaymentResponse()
        mappers.write_payment(response.payment, payment)
        return response

    async def CancelPayment(
        self, request: orch.CancelPaymentRequest, call: Call
    ) -> orch.CancelPaymentResponse:
        payment_id = self._payment_id(request.payment_id)
        # Cut first, then scanned: the text scanned is the text kept.
        reason = clip(request.reason, MAX_CANCEL_REASON_LEN)
        if contains_card_number(reason):
            raise invalid_argument([("reason", "looks like a card number: never send card data")])
        with _change_refusals():
            try:
                payment = await self._payments.cancel(
                    payment_id, read_scope(call.principal), reason
                )
            except ReleaseUndecided as exc:
                raise error(code_pb2.UNAVAILABLE, str(exc), "CANCEL_UNDECIDED") from exc
        response = orch.CancelPaymentResponse()
        mappers.write_payment(response.payment, payment)
        return response

    async def RefundPayment(
        self, request: orch.RefundPaymentRequest, call: Call
    ) -> orch.RefundPaymentResponse:
        payment_id = self._payment_id(request.payment_id)
        issues = idempotency_key_issues(request.request_id)
        problems = [(i.field, i.message) for i in issues]
        if request.amount_minor < 0:
            problems.append(("amount_minor", "must not be negative"))
        if problems:
            reject_call(issues)
            raise invalid_argument(problems)
        with _change_refusals():
            try:
                payment = await self._payments.refund(
                    payment_id,
                    read_scope(call.principal),
                    amount_minor=request.amount_minor,
                    request_id=request.request_id,
                )
            except RefundRejected as exc:
                raise error(
                    code_pb2.FAILED_PRECONDITION,
                    str(exc),
                    "REFUND_EXCEEDS_CAPTURED",
                    "amount_minor",
                ) from exc
            except TooManyRefunds as exc:
                raise error(code_pb2.FAILED_PRECONDITION, str(exc), "TOO_MANY_REFUNDS") from exc
            except IdempotencyConflict as exc:
                raise key_reused(exc) from exc
        response = orch.RefundPaymentResponse()
        mappers.write_payment(response.payment, payment)
        return response

    async def ListPaymentEvents(
        self, request: orch.ListPaymentEventsRequest, call: Call
    ) -> orch.ListPaymentEventsResponse:
        payment_id = self._payment_id(request.payment_id)
        try:
            payment = await self._payments.get(payment_id, read_scope(call.principal))
            stored = await self._payments.events(payment_id, read_scope(call.principal))
        except PaymentNotFound as exc:
            raise not_found("payment") from exc
        return orch.ListPaymentEventsResponse(
            events=[mappers.event_envelope(e, payment.currency) for e in stored]
        )

    async def UpsertMerchantConfig(
        self, request: orch.UpsertMerchantConfigRequest, call: Call
    ) -> orch.UpsertMerchantConfigResponse:
        merchant = _named_merchant(call, request.config.merchant_id, "config.merchant_id")
        condition: list[tuple[str, str]] = []
        if request.expected_version < 0:
            condition.append(("expected_version", "must not be negative"))
        elif request.expect_default and request.expected_version:
            condition.append(
                ("expect_default", "expects no stored config: leave expected_version unset")
            )
        # Unset (0) expected_version checks nothing; expect_default checks for none.
        expected = 0 if request.expect_default else request.expected_version or None
        try:
            read = mappers.config_from_pb(request.config, merchant)
            if condition:  # refused whatever the config says: with the config's problems
                self._configs.check(
                    read.config, found=read.problems, method_positions=read.method_positions
                )
                raise invalid_argument(condition)
            saved = await self._configs.upsert(
                read.config,
                expected_version=expected,
                found=read.problems,
                method_positions=read.method_positions,
            )
        except InvalidMerchantConfig as exc:
            raise invalid_argument(
                condition
                + [(f if f.startswith("config.") else f"config.{f}", m) for f, m in exc.problems]
            ) from exc
        except VersionConflict as exc:
            raise error(code_pb2.ABORTED, str(exc), "CONFIG_VERSION_CONFLICT") from exc
        return orch.UpsertMerchantConfigResponse(config=mappers.config_pb(saved))

    async def GetMerchantConfig(
        self, request: orch.GetMerchantConfigRequest, call: Call
    ) -> orch.GetMerchantConfigResponse:
        merchant = _named_merchant(call, request.merchant_id, "merchant_id")
        config, is_default = await self._configs.get(merchant)
        return orch.GetMerchantConfigResponse(
            config=mappers.config_pb(config), is_default=is_default
        )
