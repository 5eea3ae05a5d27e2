"""The payment -> proto mapper fills messages in place; it must answer exactly what
building every nested message with its constructor answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.plan.v1 import plan_pb2
from payments.result.v1 import result_pb2
from payorch.app.ports import StoredEvent
from payorch.domain.money import Currency
from payorch.domain.payment import (
    Attempt,
    CaptureMode,
    MethodType,
    Payment,
    PaymentStatus,
    RawError,
    Step,
    StepStatus,
)
from payorch.domain.results import ErrorCode, Outcome
from payorch.entrypoints.grpc import mappers

T0 = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def _ts(dt: datetime):
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.astimezone(UTC))
    return ts


def _money(amount: int, currency: Currency) -> plan_pb2.Money:
    return plan_pb2.Money(amount_minor=amount, currency=currency.code)


def _method(s: Step) -> plan_pb2.PaymentMethod:
    return plan_pb2.PaymentMethod(
        type=mappers.METHOD_TYPES[s.method], token=s.token, customer_id=s.customer_id
    )


def reference(p: Payment, *, replayed: bool = False) -> orch.Payment:
    """The mapping written the plain way, one constructor per message."""
    return orch.Payment(
        payment_id=p.id,
        merchant_id=p.merchant_id,
        request_id=p.request_id,
        amount=_money(p.amount_minor, p.currency),
        plan=plan_pb2.PaymentPlan(
            total=_money(p.amount_minor, p.currency),
            steps=[
                plan_pb2.PaymentStep(
                    index=s.index,
                    method=_method(s),
                    amount=_money(s.amount_minor, p.currency),
                    processors=s.processors,
                )
                for s in p.steps
            ],
            capture_mode=mappers.CAPTURE_MODES[p.capture_mode],
            allow_partial=p.allow_partial,
            config_version=p.config_version,
        ),
        result=result_pb2.CompositeResult(
            success=p.success,
            status=mappers.PAYMENT_STATUSES[p.status],
            total_processed=_money(p.processed_minor, p.currency),
            remaining=_money(max(0, p.remaining_minor), p.currency),
            step_results=[
                result_pb2.StepResult(
                    step_index=s.index,
                    method=_method(s),
                    amount=_money(s.amount_minor, p.currency),
                    status=mappers.STEP_STATUSES[s.status],
                    outcome=mappers.OUTCOMES[s.outcome] if s.outcome else 0,
                    error_code=mappers.ERROR_CODES[s.error_code],
                    processor=s.processor,
                    processor_payment_id=s.processor_payment_id,
                    attempts=[
                        result_pb2.Attempt(
                            number=a.number,
                            processor=a.processor,
                            idempotency_key=a.idempotency_key,
                            started_at=_ts(a.started_at),
                            ended_at=_ts(a.ended_at),
                            latency_ms=a.latency_ms,
                            outcome=mappers.OUTCOMES[a.outcome],
                            error_code=mappers.ERROR_CODES[a.error_code],
                            raw=result_pb2.RawProcessorError(
                                type=a.raw.type,
                                code=a.raw.code,
                                decline_code=a.raw.decline_code,
                                http_status=a.raw.http_status,
                                request_id=a.raw.request_id,
                                message=a.raw.message,
                            ),
                            delay_before_ms=a.delay_before_ms,
                            routing_reason=(
                                a.routing_reason
                                if a.operation == "authorize"
                                else f"{a.operation}: {a.routing_reason}"
                            ),
                            retry_decision=a.retry_decision,
                            processor_payment_id=a.processor_payment_id,
                            operation=a.operation,
                        )
                        for a in s.attempts
                    ],
                    next_action=(
                        result_pb2.NextAction(
                            type=s.next_action_type,
                            client_secret=s.client_secret,
                            expires_at=(
                                _ts(p.action_expires_at)
                                if p.action_expires_at and s.status is StepStatus.REQUIRES_ACTION
                                else None
                            ),
                        )
                        if s.next_action_type
                        else None
                    ),
                    captured_minor=s.captured_minor,
                    refunded_minor=s.refunded_minor,
                )
                for s in p.steps
            ],
            final_error=mappers.ERROR_CODES[p.final_error],
            final_error_message=p.final_error_message,
        ),
        metadata=p.metadata,
        created_at=_ts(p.created_at),
        updated_at=_ts(p.updated_at),
        orchestration_ms=p.orchestration_ms or 0,
        orchestration_unmeasured=p.orchestration_ms is None,
        replayed=replayed,
    )


def _attempt(number: int, *, operation: str = "authorize", raw: RawError | None = None) -> Attempt:
    return Attempt(
        number=number,
        processor="simulated",
        idempotency_key=f"payorch_pay_1_0_g{number}",
        started_at=T0,
        ended_at=T0 + timedelta(milliseconds=12),
        latency_ms=12,
        outcome=Outcome.SUCCESS,
        error_code=ErrorCode.NONE,
        raw=raw or RawError(),
        routing_reason="simulated: healthy",
        retry_decision="done",
        processor_payment_id="pi_sim_1",
        operation=operation,
    )


def _payment() -> Payment:
    return Payment(
        id="pay_1",
        merchant_id="m_1",
        request_id="r-1",
        fingerprint="f",
        currency=Currency("USD"),
        amount_minor=10_000,
        steps=[
            Step(
                index=0,
                method=MethodType.APPLE_PAY,
                token="pm_card_visa",
                amount_minor=6_000,
                processors=["sim_a", "sim_b"],
                status=StepStatus.CAPTURED,
                outcome=Outcome.SUCCESS,
                processor="sim_a",
                processor_payment_id="pi_sim_1",
                attempts=[_attempt(1), _attempt(2, operation="capture")],
                captured_minor=6_000,
            ),
            Step(
                index=1,
                method=MethodType.CARD,
                token="pm_card_visa",
                amount_minor=4_000,
                processors=["sim_a"],
                customer_id="cus_1",
            ),
        ],
        created_at=T0,
        updated_at=T0 + timedelta(seconds=1),
        capture_mode=CaptureMode.MANUAL,
        status=PaymentStatus.SUCCEEDED,
        orchestration_ms=7,
    )


def _declined(p: Payment) -> None:
    s = p.steps[1]
    s.status, s.outcome, s.error_code = StepStatus.FAILED, Outcome.HARD, ErrorCode.CARD_DECLINED
    s.attempts.append(
        _attempt(1, raw=RawError("card_error", "card_declined", "generic_decline", 402, "req_1"))
    )
    p.status, p.final_error, p.final_error_message = (
        PaymentStatus.FAILED,
        ErrorCode.CARD_DECLINED,
        "step 1 failed: card_declined",
    )


def _requires_action(p: Payment) -> None:
    s = p.steps[1]
    s.status, s.outcome = StepStatus.REQUIRES_ACTION, Outcome.REQUIRES_ACTION
    s.next_action_type, s.client_secret = "use_stripe_sdk", "pi_secret"
    p.status = PaymentStatus.REQUIRES_ACTION
    p.next_reconcile_at = T0 + timedelta(hours=1)


def _refunded(p: Payment) -> None:
    p.steps[0].refunded_minor = 1_000
    p.metadata = {"order": "o-1", "note": "café"}


def _other_time_zones(p: Payment) -> None:
    p.created_at = datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=timezone(timedelta(hours=-5)))
    p.updated_at = datetime(2026, 3, 1, 12, 0, 0, 999_999)  # naive: read as local time


@pytest.mark.parametrize(
    "change",
    [None, _declined, _requires_action, _refunded, _other_time_zones],
    ids=["split", "declined", "requires_action", "refunded_with_metadata", "time_zones"],
)
@pytest.mark.parametrize("replayed", [False, True])
def test_the_mapped_payment_is_what_plain_constructors_build(change, replayed) -> None:
    p = _payment()
    if change is not None:
        change(p)
    got = orch.CreatePaymentResponse()
    mappers.write_payment(got.payment, p, replayed=replayed)
    want = reference(p, replayed=replayed)
    assert got.payment == want
    assert got.payment.SerializeToString(deterministic=True) == want.SerializeToString(
        deterministic=True
    )
    # Presence, which == does not compare for empty messages.
    for a, b in zip(got.payment.result.step_results, want.result.step_results, strict=True):
        assert a.HasField("next_action") == b.HasField("next_action")
        assert all(x.HasField("raw") for x in a.attempts)


def test_a_paused_payment_says_when_it_is_given_up_unless_off_session_single_step() -> None:
    split = _payment()
    _requires_action(split)
    paused = mappers.payment_pb(split).result.step_results[1].next_action
    assert paused.expires_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(hours=1)

    for off_session in (False, True):
        single = _payment()
        single.off_session = off_session
        _requires_action(single)
        del single.steps[0]
        single.steps[0].index = 0
        waiting = mappers.payment_pb(single).result.step_results[0].next_action
        assert waiting.client_secret == "pi_secret"
        assert waiting.HasField("expires_at") is not off_session


def test_a_reconciled_event_stored_before_it_named_the_processors_event_lists_it_empty() -> None:
    stored = StoredEvent(
        "evt_1",
        "pay_1",
        "m_1",
        3,
        "PaymentReconciled",
        {"step_index": 0, "outcome": "success", "source": "retrieve"},
        T0,
    )

    reconciled = mappers.event_envelope(stored, Currency("EUR")).payment_reconciled

    assert (reconciled.source, reconciled.processor_event_id) == ("retrieve", "")


def test_a_payment_with_no_measured_time_says_so_instead_of_0_ms() -> None:
    unmeasured = _payment()
    unmeasured.orchestration_ms = None
    out = mappers.payment_pb(unmeasured)
    assert (out.orchestration_ms, out.orchestration_unmeasured) == (0, True)
    measured = _payment()
    measured.orchestration_ms = 0  # fast, on a manual clock: a real 0 ms
    out = mappers.payment_pb(measured)
    assert (out.orchestration_ms, out.orchestration_unmeasured) == (0, False)


@pytest.mark.parametrize(
    ("table", "by_value"),
    [
        (mappers.METHOD_TYPES, mappers._METHOD_TYPE_OF),
        (mappers.OUTCOMES, mappers._OUTCOME_OF),
        (mappers.ERROR_CODES, mappers._ERROR_CODE_OF),
        (mappers.PAYMENT_STATUSES, mappers._PAYMENT_STATUS_OF),
        (mappers.STEP_STATUSES, mappers._STEP_STATUS_OF),
        (mappers.CAPTURE_MODES, mappers._CAPTURE_MODE_OF),
    ],
    ids=["method", "outcome", "error_code", "payment_status", "step_status", "capture_mode"],
)
def test_the_writers_find_each_member_by_value_as_the_tables_map_it(table, by_value) -> None:
    """The writers look members up by value (a str's hash, not Enum.__hash__): every
    member of the enum is there, mapped as the table maps it, and nothing else."""
    members = list(type(next(iter(table))))
    assert len(by_value) == len(table) == len(members)
    assert {m.value: table[m] for m in members} == by_value
