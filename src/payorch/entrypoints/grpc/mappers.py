"""proto <-> domain, in one place; servicers stay thin."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from payments.config.v1 import config_pb2
from payments.events.v1 import events_pb2
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.plan.v1 import plan_pb2
from payments.result.v1 import result_pb2
from payorch.app.ports import PageCursor, StoredEvent
from payorch.domain.merchant_config import (
    MAX_METHODS,
    InstallmentPolicy,
    MerchantConfig,
    MethodRule,
    retry_policy,
)
from payorch.domain.money import Currency
from payorch.domain.payment import (
    Attempt,
    CaptureMode,
    MethodType,
    Payment,
    PaymentStatus,
    Step,
    StepStatus,
)
from payorch.domain.request import RawMethodInput, RawPaymentRequest
from payorch.domain.results import ErrorCode, Outcome
from payorch.domain.retry import RetryPolicy

METHOD_TYPES: dict[MethodType, Any] = {
    MethodType.CARD: plan_pb2.PAYMENT_METHOD_TYPE_CARD,
    MethodType.APPLE_PAY: plan_pb2.PAYMENT_METHOD_TYPE_APPLE_PAY,
    MethodType.GOOGLE_PAY: plan_pb2.PAYMENT_METHOD_TYPE_GOOGLE_PAY,
}
OUTCOMES: dict[Outcome, Any] = {o: result_pb2.Outcome.Value(f"OUTCOME_{o.name}") for o in Outcome}
ERROR_CODES: dict[ErrorCode, Any] = {
    e: (
        result_pb2.ERROR_CODE_UNSPECIFIED
        if e is ErrorCode.NONE
        else result_pb2.ErrorCode.Value(f"ERROR_CODE_{e.name}")
    )
    for e in ErrorCode
}
PAYMENT_STATUSES: dict[PaymentStatus, Any] = {
    s: result_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{s.name}") for s in PaymentStatus
}
PAYMENT_STATUS_FROM_PROTO = {v: k for k, v in PAYMENT_STATUSES.items()}
STEP_STATUSES: dict[StepStatus, Any] = {
    s: result_pb2.StepStatus.Value(f"STEP_STATUS_{s.name}") for s in StepStatus
}
CAPTURE_MODES: dict[CaptureMode, Any] = {
    CaptureMode.AUTOMATIC: plan_pb2.CAPTURE_MODE_AUTOMATIC,
    CaptureMode.MANUAL: plan_pb2.CAPTURE_MODE_MANUAL,
}
# The tables above by each member's value, for the writers below, which run for every
# answer: a str key keeps its hash, an enum key is hashed by Enum.__hash__, a Python
# call, on each lookup. Each enum's values are distinct, so these map the same members.
_METHOD_TYPE_OF = {k._value_: v for k, v in METHOD_TYPES.items()}
_OUTCOME_OF = {k._value_: v for k, v in OUTCOMES.items()}
_ERROR_CODE_OF = {k._value_: v for k, v in ERROR_CODES.items()}
_PAYMENT_STATUS_OF = {k._value_: v for k, v in PAYMENT_STATUSES.items()}
_STEP_STATUS_OF = {k._value_: v for k, v in STEP_STATUSES.items()}
_CAPTURE_MODE_OF = {k._value_: v for k, v in CAPTURE_MODES.items()}


def raw_request(req: orch.CreatePaymentRequest, merchant_id: str) -> RawPaymentRequest:
    which = req.WhichOneof("amount")
    return RawPaymentRequest(
        merchant_id=merchant_id,
        request_id=req.request_id,
        amount_minor=req.amount_minor if which == "amount_minor" else None,
        amount_decimal=req.amount_decimal if which == "amount_decimal" else None,
        currency=req.currency,
        payment_method=req.payment_method,
        method=req.method,
        methods=[
            RawMethodInput(
                method=m.method,
                token=m.token,
                amount_minor=m.amount_minor if m.WhichOneof("amount") == "amount_minor" else None,
                amount_decimal=(
                    m.amount_decimal if m.WhichOneof("amount") == "amount_decimal" else None
                ),
                customer_id=m.customer_id,
            )
            for m in req.methods
        ],
        customer_id=req.customer_id,
        metadata=dict(req.metadata),
        off_session=req.off_session,
        authorize_only=req.authorize_only,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(ts: timestamp_pb2.Timestamp, dt: datetime) -> None:
    """ts = dt, as Timestamp.FromDatetime(dt.astimezone(UTC)) has it, without the
    time-tuple round trip (four timestamps in every payment answered)."""
    if dt.tzinfo is None:
        ts.FromDatetime(dt.astimezone(UTC))  # naive: local time, as astimezone reads it
        return
    since = dt - _EPOCH
    ts.seconds = since.days * 86_400 + since.seconds
    ts.nanos = since.microseconds * 1000


def timestamp(dt: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    set_timestamp(ts, dt)
    return ts


def money(amount_minor: int, currency: Currency) -> plan_pb2.Money:
    return plan_pb2.Money(amount_minor=amount_minor, currency=currency.code)


# The writers below fill a message in place: building each nested message on its own
# and passing it to its parent's constructor copies it once per level of nesting.
def _set_money(m: plan_pb2.Money, amount_minor: int, code: str) -> None:
    m.amount_minor = amount_minor
    m.currency = code


def _set_method(m: plan_pb2.PaymentMethod, s: Step) -> None:
    m.type = _METHOD_TYPE_OF[s.method._value_]
    m.token = s.token
    m.customer_id = s.customer_id


def _write_attempt(out: result_pb2.Attempt, a: Attempt) -> None:
    out.number = a.number
    out.processor = a.processor
    out.idempotency_key = a.idempotency_key
    set_timestamp(out.started_at, a.started_at)
    set_timestamp(out.ended_at, a.ended_at)
    out.latency_ms = a.latency_ms
    out.outcome = _OUTCOME_OF[a.outcome._value_]
    out.error_code = _ERROR_CODE_OF[a.error_code._value_]
    # Setting a field, even to "", makes `raw` present: as it always was.
    raw, r = out.raw, a.raw
    raw.type = r.type
    raw.code = r.code
    raw.decline_code = r.decline_code
    raw.advice_code = r.advice_code
    raw.http_status = r.http_status
    raw.request_id = r.request_id
    raw.message = r.message
    out.delay_before_ms = a.delay_before_ms
    out.routing_reason = (
        a.routing_reason if a.operation == "authorize" else f"{a.operation}: {a.routing_reason}"
    )
    out.retry_decision = a.retry_decision
    out.processor_payment_id = a.processor_payment_id
    out.operation = a.operation


def _write_step_result(out: result_pb2.StepResult, p: Payment, s: Step) -> None:
    out.step_index = s.index
    _set_method(out.method, s)
    _set_money(out.amount, s.amount_minor, p.currency.code)
    out.status = _STEP_STATUS_OF[s.status._value_]
    out.outcome = _OUTCOME_OF[s.outcome._value_] if s.outcome else result_pb2.OUTCOME_UNSPECIFIED
    out.error_code = _ERROR_CODE_OF[s.error_code._value_]
    out.processor = s.processor
    out.processor_payment_id = s.processor_payment_id
    for a in s.attempts:
        _write_attempt(out.attempts.add(), a)
    if s.next_action_type:
        out.next_action.type = s.next_action_type
        out.next_action.client_secret = s.client_secret
        expires = p.action_expires_at
        if expires is not None and s.status is StepStatus.REQUIRES_ACTION:
            set_timestamp(out.next_action.expires_at, expires)
    out.captured_minor = s.captured_minor
    out.refunded_minor = s.refunded_minor


def write_payment(out: orch.Payment, p: Payment, *, replayed: bool = False) -> None:
    """Fill `out` (e.g. a response's `payment`) with the payment."""
    code = p.currency.code
    out.payment_id = p.id
    out.merchant_id = p.merchant_id
    out.request_id = p.request_id
    _set_money(out.amount, p.amount_minor, code)
    plan = out.plan
    _set_money(plan.total, p.amount_minor, code)
    for s in p.steps:
        step = plan.steps.add()
        step.index = s.index
        _set_method(step.method, s)
        _set_money(step.amount, s.amount_minor, code)
        step.processors.extend(s.processors)
    plan.capture_mode = _CAPTURE_MODE_OF[p.capture_mode._value_]
    plan.allow_partial = p.allow_partial
    plan.config_version = p.config_version
    result = out.result
    result.success = p.success
    result.status = _PAYMENT_STATUS_OF[p.status._value_]
    _set_money(result.total_processed, p.processed_minor, code)
    _set_money(result.remaining, max(0, p.remaining_minor), code)
    for s in p.steps:
        _write_step_result(result.step_results.add(), p, s)
    result.final_error = _ERROR_CODE_OF[p.final_error._value_]
    result.final_error_message = p.final_error_message
    if p.metadata:
        out.metadata.update(p.metadata)
    set_timestamp(out.created_at, p.created_at)
    set_timestamp(out.updated_at, p.updated_at)
    out.orchestration_ms = p.orchestration_ms or 0
    out.orchestration_unmeasured = p.orchestration_ms is None
    out.replayed = replayed


def payment_pb(p: Payment, *, replayed: bool = False) -> orch.Payment:
    out = orch.Payment()
    write_payment(out, p, replayed=replayed)
    return out


class InvalidPageToken(ValueError):
    pass


def encode_cursor(at: datetime, object_id: str) -> str:
    """A page token: where a listing ordered by (time, id) stopped."""
    raw = f"{at.astimezone(UTC).isoformat()}|{object_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, *, max_id_len: int) -> tuple[datetime, str]:
    """What encode_cursor wrote: a time with its offset, as UTC, and an id of printable
    ASCII. Anything else is InvalidPageToken, never a value a query could choke on
    (a time that overflows when made UTC, a NUL no database text type stores)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, _, object_id = raw.partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not object_id or len(object_id) > max_id_len:
            raise ValueError("incomplete")
        if not object_id.isascii() or not object_id.isprintable():
            raise ValueError("not an id")
        # Compared with stored UTC datetimes: converting must not overflow.
        return when.astimezone(UTC), object_id
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise InvalidPageToken("page_token is not one this server issued") from exc


def encode_page_token(p: Payment) -> str:
    return encode_cursor(p.created_at, p.id)


def decode_page_token(token: str) -> PageCursor | None:
    return PageCursor(*decode_cursor(token, max_id_len=64)) if token else None


# -- events ----------------------------------------------------------------------
def event_envelope(e: StoredEvent, currency: Currency) -> events_pb2.EventEnvelope:
    p = e.payload
    env = events_pb2.EventEnvelope(
        event_id=e.event_id,
        payment_id=e.payment_id,
        merchant_id=e.merchant_id,
        sequence=e.sequence,
        occurred_at=timestamp(e.occurred_at),
    )
    name = e.name
    if name == "StepSucceeded":
        env.step_succeeded.CopyFrom(
            events_pb2.StepSucceeded(
                step_index=p["step_index"],
                processor=p["processor"],
                latency_ms=p["latency_ms"],
                amount=money(p["amount_minor"], currency),
            )
        )
    elif name == "StepFailed":
        # Stored as `retryable`, with no outcome, before either was named so.
        retry_later = p["retry_later"] if "retry_later" in p else p["retryable"]
        outcome = p.get("outcome")
        env.step_failed.CopyFrom(
            events_pb2.StepFailed(
                step_index=p["step_index"],
                processor=p["processor"],
                error_code=ERROR_CODES[ErrorCode(p["error_code"])],
                retryable=retry_later,  # deprecated: always retry_later's value
                retry_later=retry_later,
                outcome=OUTCOMES[Outcome(outcome)] if outcome else result_pb2.OUTCOME_UNSPECIFIED,
                latency_ms=p["latency_ms"],
            )
        )
    elif name == "StepVoided":
        env.step_voided.CopyFrom(
            events_pb2.StepVoided(
                step_index=p["step_index"],
                processor=p["processor"],
                amount=money(p["amount_minor"], currency),
            )
        )
    elif name == "PaymentProcessing":
        env.payment_processing.CopyFrom(
            events_pb2.PaymentProcessing(
                total=money(p["total_minor"], currency), request_id=p["request_id"]
            )
        )
    elif name == "PaymentPartiallySucceeded":
        env.payment_partially_succeeded.CopyFrom(
            events_pb2.PaymentPartiallySucceeded(
                processed=money(p["processed_minor"], currency),
                remaining=money(p["remaining_minor"], currency),
                request_id=p["request_id"],
            )
        )
    elif name == "PaymentCompleted":
        env.payment_completed.CopyFrom(
            events_pb2.PaymentCompleted(
                total=money(p["total_minor"], currency), request_id=p["request_id"]
            )
        )
    elif name == "PaymentFailed":
        env.payment_failed.CopyFrom(
            events_pb2.PaymentFailed(
                error_code=ERROR_CODES[ErrorCode(p["error_code"])],
                request_id=p["request_id"],
                message=p["message"],
            )
        )
    elif name == "PaymentReconciled":
        env.payment_reconciled.CopyFrom(
            events_pb2.PaymentReconciled(
                step_index=p["step_index"],
                outcome=OUTCOMES[Outcome(p["outcome"])],
                source=p["source"],
                # Stored without it before the event named the processor's event.
                processor_event_id=p.get("processor_event_id", ""),
            )
        )
    elif name == "PaymentCaptured":
        env.payment_captured.CopyFrom(
            events_pb2.PaymentCaptured(amount=money(p["amount_minor"], currency))
        )
    elif name == "PaymentRefunded":
        env.payment_refunded.CopyFrom(
            events_pb2.PaymentRefunded(
                amount=money(p["amount_minor"], currency),
                refund_request_id=p["refund_request_id"],
            )
        )
    elif name == "PaymentRefundFailed":
        env.payment_refund_failed.CopyFrom(
            events_pb2.PaymentRefundFailed(
                amount=money(p["amount_minor"], currency), refund_id=p["refund_id"]
            )
        )
    elif name == "PaymentCancelled":
        env.payment_cancelled.CopyFrom(events_pb2.PaymentCancelled(reason=p["reason"]))
    return env


# -- merchant config -------------------------------------------------------------
METHOD_FROM_PROTO = {v: k for k, v in METHOD_TYPES.items()}


def config_pb(c: MerchantConfig) -> config_pb2.MerchantConfig:
    return config_pb2.MerchantConfig(
        merchant_id=c.merchant_id,
        version=c.version,
        methods=[
            config_pb2.MethodConfig(
                type=METHOD_TYPES[r.method],
                min_amount_minor=r.min_amount_minor,
                max_amount_minor=r.max_amount_minor,
                processors=list(r.processors),
            )
            for r in c.methods
        ],
        allowed_currencies=sorted(c.allowed_currencies),
        retry_policy=config_pb2.RetryPolicy(
            max_retries=c.retry_policy.max_retries,
            base_delay_ms=c.retry_policy.base_delay_ms,
            max_delay_ms=c.retry_policy.max_delay_ms,
        ),
        allow_partial=c.allow_partial,
        fallback_on_failure=c.fallback_on_failure,
        installment_policy=config_pb2.InstallmentPolicy(
            min_total_minor=c.installment_policy.min_total_minor,
            count=c.installment_policy.count,
            interval_days=c.installment_policy.interval_days,
            dunning_days=list(c.installment_policy.dunning_days),
        ),
    )


@dataclass(frozen=True, slots=True)
class ReadConfig:
    """A config read from proto, with what could not be read: problems named as
    `MerchantConfig.validate` names its own, and where each kept method stood."""

    config: MerchantConfig
    problems: list[tuple[str, str]]
    method_positions: tuple[int, ...]


def config_from_pb(c: config_pb2.MerchantConfig, merchant_id: str) -> ReadConfig:
    """Proto -> domain; 0 and empty mean "the default" for optional numbers and lists.
    Nothing is refused here: validation reports these problems with its own, at once."""
    problems: list[tuple[str, str]] = []
    methods = []
    positions = []
    if len(c.methods) > MAX_METHODS:
        problems.append(
            ("methods", f"at most {MAX_METHODS} methods, each type once; {len(c.methods)} sent")
        )
    for i, m in enumerate(c.methods[:MAX_METHODS]):
        method = METHOD_FROM_PROTO.get(m.type)
        if method is None:
            problems.append((f"methods[{i}].type", "unknown or unspecified method"))
            continue
        methods.append(
            MethodRule(method, m.min_amount_minor, m.max_amount_minor, tuple(m.processors))
        )
        positions.append(i)
    currencies = frozenset(code.strip().upper() for code in c.allowed_currencies)
    p = c.installment_policy
    default_policy = InstallmentPolicy()
    # A config sent without a retry policy keeps the default one (one retry); one sent
    # with max_retries 0 means no retry.
    r = c.retry_policy if c.HasField("retry_policy") else None
    policy, retry_problems = (
        retry_policy(r.max_retries, r.base_delay_ms, r.max_delay_ms) if r else (RetryPolicy(), [])
    )
    config = MerchantConfig(
        merchant_id=merchant_id,
        methods=tuple(methods),
        allowed_currencies=currencies,
        retry_policy=policy,
        allow_partial=c.allow_partial,
        fallback_on_failure=c.fallback_on_failure,
        installment_policy=InstallmentPolicy(
            min_total_minor=p.min_total_minor,
            count=p.count or default_policy.count,
            interval_days=p.interval_days or default_policy.interval_days,
            dunning_days=tuple(p.dunning_days) or default_policy.dunning_days,
        ),
    )
    return ReadConfig(config, problems + retry_problems, tuple(positions))
