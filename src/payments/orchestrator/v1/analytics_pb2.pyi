import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from payments.result.v1 import result_pb2 as _result_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetPaymentStatsRequest(_message.Message):
    __slots__ = ("since", "until", "merchant_id", "processor")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    merchant_id: str
    processor: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., merchant_id: _Optional[str] = ..., processor: _Optional[str] = ...) -> None: ...

class StatusCount(_message.Message):
    __slots__ = ("status", "count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    status: _result_pb2.PaymentStatus
    count: int
    def __init__(self, status: _Optional[_Union[_result_pb2.PaymentStatus, str]] = ..., count: _Optional[int] = ...) -> None: ...

class OutcomeCount(_message.Message):
    __slots__ = ("outcome", "count")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    outcome: _result_pb2.Outcome
    count: int
    def __init__(self, outcome: _Optional[_Union[_result_pb2.Outcome, str]] = ..., count: _Optional[int] = ...) -> None: ...

class ErrorCodeCount(_message.Message):
    __slots__ = ("error_code", "count")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    error_code: _result_pb2.ErrorCode
    count: int
    def __init__(self, error_code: _Optional[_Union[_result_pb2.ErrorCode, str]] = ..., count: _Optional[int] = ...) -> None: ...

class PaymentStats(_message.Message):
    __slots__ = ("since", "until", "merchant_id", "processor", "payment_count", "succeeded_count", "success_rate", "by_status", "infrastructure_failure_payment_count", "recovered_count", "recovery_share", "attempt_count", "delayed_attempt_count", "average_retry_delay", "failures_by_outcome", "failures_by_error_code", "orchestration_p50", "orchestration_p95", "orchestration_p99")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    INFRASTRUCTURE_FAILURE_PAYMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_SHARE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELAYED_ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    FAILURES_BY_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FAILURES_BY_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATION_P50_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATION_P95_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATION_P99_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    merchant_id: str
    processor: str
    payment_count: int
    succeeded_count: int
    success_rate: float
    by_status: _containers.RepeatedCompositeFieldContainer[StatusCount]
    infrastructure_failure_payment_count: int
    recovered_count: int
    recovery_share: float
    attempt_count: int
    delayed_attempt_count: int
    average_retry_delay: _duration_pb2.Duration
    failures_by_outcome: _containers.RepeatedCompositeFieldContainer[OutcomeCount]
    failures_by_error_code: _containers.RepeatedCompositeFieldContainer[ErrorCodeCount]
    orchestration_p50: _duration_pb2.Duration
    orchestration_p95: _duration_pb2.Duration
    orchestration_p99: _duration_pb2.Duration
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., merchant_id: _Optional[str] = ..., processor: _Optional[str] = ..., payment_count: _Optional[int] = ..., succeeded_count: _Optional[int] = ..., success_rate: _Optional[float] = ..., by_status: _Optional[_Iterable[_Union[StatusCount, _Mapping]]] = ..., infrastructure_failure_payment_count: _Optional[int] = ..., recovered_count: _Optional[int] = ..., recovery_share: _Optional[float] = ..., attempt_count: _Optional[int] = ..., delayed_attempt_count: _Optional[int] = ..., average_retry_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., failures_by_outcome: _Optional[_Iterable[_Union[OutcomeCount, _Mapping]]] = ..., failures_by_error_code: _Optional[_Iterable[_Union[ErrorCodeCount, _Mapping]]] = ..., orchestration_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., orchestration_p95: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., orchestration_p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetPaymentStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: PaymentStats
    def __init__(self, stats: _Optional[_Union[PaymentStats, _Mapping]] = ...) -> None: ...
