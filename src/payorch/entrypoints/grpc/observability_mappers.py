"""proto <-> domain for analytics and the contract monitor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from payments.contracts.v1 import contracts_pb2, monitor_pb2
from payments.orchestrator.v1 import analytics_pb2
from payorch.app.analytics import PaymentStats
from payorch.app.contract_reports import ContractReport, MerchantComplaint, ViolationCursor
from payorch.domain.contracts import MISMATCH_RATIO, ContractViolation
from payorch.domain.request import Severity
from payorch.domain.retrospective import Retrospective
from payorch.entrypoints.grpc.mappers import (
    ERROR_CODES,
    OUTCOMES,
    PAYMENT_STATUSES,
    InvalidPageToken,
    decode_cursor,
    encode_cursor,
    timestamp,
)

SEVERITIES: dict[Severity, Any] = {
    s: contracts_pb2.Severity.Value(f"SEVERITY_{s.name}") for s in Severity
}
SEVERITY_FROM_PROTO = {v: k for k, v in SEVERITIES.items()}


class InvalidField(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def optional_time(message: Any, name: str) -> datetime | None:
    """A Timestamp field as an aware datetime, or None when unset."""
    if not message.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidField(name, "out of range") from exc


def judged_time(message: Any, name: str, problems: list[tuple[str, str]]) -> datetime | None:
    """optional_time, with what is wrong with the field added to `problems` (and None)
    instead of raised: every field of a request is judged before any is refused."""
    try:
        return optional_time(message, name)
    except InvalidField as exc:
        problems.append((exc.field, str(exc)))
        return None


def duration_ms(ms: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(timedelta(milliseconds=round(ms)))
    return d


# -- analytics -------------------------------------------------------------------------
def stats_pb(s: PaymentStats) -> analytics_pb2.PaymentStats:
    q = s.query
    return analytics_pb2.PaymentStats(
        since=timestamp(q.since),
        until=timestamp(q.until),
        merchant_id=q.merchant_id or "",
        processor=q.processor or "",
        payment_count=s.payments,
        succeeded_count=s.succeeded,
        success_rate=s.success_rate,
        by_status=[
            analytics_pb2.StatusCount(status=PAYMENT_STATUSES[st], count=n)
            for st, n in sorted(s.by_status.items(), key=lambda kv: (-kv[1], kv[0].value))
        ],
        infrastructure_failure_payment_count=s.hit_infrastructure_failure,
        recovered_count=s.recovered,
        recovery_share=s.recovery_share,
        attempt_count=s.attempts,
        delayed_attempt_count=s.retried_attempts,
        average_retry_delay=duration_ms(s.average_retry_delay_ms),
        failures_by_outcome=[
            analytics_pb2.OutcomeCount(outcome=OUTCOMES[o], count=n)
            for o, n in sorted(s.failures_by_outcome.items(), key=lambda kv: (-kv[1], kv[0].value))
        ],
        failures_by_error_code=[
            analytics_pb2.ErrorCodeCount(error_code=ERROR_CODES[c], count=n)
            for c, n in sorted(
                s.failures_by_error_code.items(), key=lambda kv: (-kv[1], kv[0].value)
            )
        ],
        orchestration_p50=duration_ms(s.orchestration_ms.get(50, 0)),
        orchestration_p95=duration_ms(s.orchestration_ms.get(95, 0)),
        orchestration_p99=duration_ms(s.orchestration_ms.get(99, 0)),
    )


# -- contract monitor ------------------------------------------------------------------
def violation_pb(v: ContractViolation) -> contracts_pb2.ContractViolation:
    return contracts_pb2.ContractViolation(
        id=v.id,
        contract_id=v.contract_id,
        request_id=v.request_id,
        severity=SEVERITIES[v.severity],
        owner=v.owner,
        message=v.message,
        occurred_at=timestamp(v.occurred_at),
        merchant_id=v.merchant_id,
    )


def report_pb(r: ContractReport) -> monitor_pb2.GenerateContractReportResponse:
    return monitor_pb2.GenerateContractReportResponse(
        since=timestamp(r.since),
        until=timestamp(r.until),
        entries=[
            monitor_pb2.ContractReportEntry(
                contract_id=e.contract_id,
                severity=SEVERITIES[e.severity],
                owner=e.owner,
                description=e.description,
                count=e.count,
            )
            for e in r.entries
        ],
        total=r.total,
    )


def complaint_pb(c: MerchantComplaint) -> monitor_pb2.MerchantComplaint:
    return monitor_pb2.MerchantComplaint(
        id=c.id,
        merchant_id=c.merchant_id,
        contract_id=c.contract_id,
        category=c.category,
        counted_as=c.counted_as,
        text=c.text,
        occurred_at=timestamp(c.occurred_at),
        reported_at=timestamp(c.reported_at),
    )


def retrospective_pb(r: Retrospective) -> monitor_pb2.Retrospective:
    return monitor_pb2.Retrospective(
        since=timestamp(r.since),
        until=timestamp(r.until),
        violations=[
            monitor_pb2.RetrospectiveEntry(
                contract_id=e.contract_id,
                owner=e.owner,
                count=e.count,
                external_reports=e.external_reports,
                mismatch=e.mismatch,
            )
            for e in r.entries
        ],
        escalations=[
            monitor_pb2.Escalation(contract_id=x.contract_id, owner=x.owner, reason=x.reason)
            for x in r.escalations
        ],
        mismatch_ratio=MISMATCH_RATIO,
    )


def encode_violation_token(v: ContractViolation) -> str:
    return encode_cursor(v.occurred_at, v.id)


def decode_violation_token(token: str) -> ViolationCursor | None:
    if not token:
        return None
    try:
        return ViolationCursor(*decode_cursor(token, max_id_len=64))
    except InvalidPageToken as exc:
        raise InvalidField("page_token", "is not one this server issued") from exc
