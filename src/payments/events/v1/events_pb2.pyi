import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from payments.plan.v1 import plan_pb2 as _plan_pb2
from payments.result.v1 import result_pb2 as _result_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StepSucceeded(_message.Message):
    __slots__ = ("step_index", "processor", "latency_ms", "amount")
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    step_index: int
    processor: str
    latency_ms: int
    amount: _plan_pb2.Money
    def __init__(self, step_index: _Optional[int] = ..., processor: _Optional[str] = ..., latency_ms: _Optional[int] = ..., amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ...) -> None: ...

class StepFailed(_message.Message):
    __slots__ = ("step_index", "processor", "error_code", "retryable", "latency_ms", "retry_later", "outcome")
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_LATER_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    step_index: int
    processor: str
    error_code: _result_pb2.ErrorCode
    retryable: bool
    latency_ms: int
    retry_later: bool
    outcome: _result_pb2.Outcome
    def __init__(self, step_index: _Optional[int] = ..., processor: _Optional[str] = ..., error_code: _Optional[_Union[_result_pb2.ErrorCode, str]] = ..., retryable: _Optional[bool] = ..., latency_ms: _Optional[int] = ..., retry_later: _Optional[bool] = ..., outcome: _Optional[_Union[_result_pb2.Outcome, str]] = ...) -> None: ...

class StepVoided(_message.Message):
    __slots__ = ("step_index", "processor", "amount")
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    step_index: int
    processor: str
    amount: _plan_pb2.Money
    def __init__(self, step_index: _Optional[int] = ..., processor: _Optional[str] = ..., amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ...) -> None: ...

class PaymentProcessing(_message.Message):
    __slots__ = ("total", "request_id")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    total: _plan_pb2.Money
    request_id: str
    def __init__(self, total: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PaymentCompleted(_message.Message):
    __slots__ = ("total", "request_id")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    total: _plan_pb2.Money
    request_id: str
    def __init__(self, total: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PaymentPartiallySucceeded(_message.Message):
    __slots__ = ("processed", "remaining", "request_id")
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    processed: _plan_pb2.Money
    remaining: _plan_pb2.Money
    request_id: str
    def __init__(self, processed: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., remaining: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PaymentFailed(_message.Message):
    __slots__ = ("error_code", "request_id", "message")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    error_code: _result_pb2.ErrorCode
    request_id: str
    message: str
    def __init__(self, error_code: _Optional[_Union[_result_pb2.ErrorCode, str]] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PaymentReconciled(_message.Message):
    __slots__ = ("step_index", "outcome", "source", "processor_event_id")
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    step_index: int
    outcome: _result_pb2.Outcome
    source: str
    processor_event_id: str
    def __init__(self, step_index: _Optional[int] = ..., outcome: _Optional[_Union[_result_pb2.Outcome, str]] = ..., source: _Optional[str] = ..., processor_event_id: _Optional[str] = ...) -> None: ...

class PaymentCaptured(_message.Message):
    __slots__ = ("amount",)
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    amount: _plan_pb2.Money
    def __init__(self, amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ...) -> None: ...

class PaymentRefunded(_message.Message):
    __slots__ = ("amount", "refund_request_id")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFUND_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    amount: _plan_pb2.Money
    refund_request_id: str
    def __init__(self, amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., refund_request_id: _Optional[str] = ...) -> None: ...

class PaymentRefundFailed(_message.Message):
    __slots__ = ("amount", "refund_id")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    amount: _plan_pb2.Money
    refund_id: str
    def __init__(self, amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., refund_id: _Optional[str] = ...) -> None: ...

class PaymentCancelled(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class EventEnvelope(_message.Message):
    __slots__ = ("event_id", "payment_id", "merchant_id", "sequence", "occurred_at", "step_succeeded", "step_failed", "step_voided", "payment_completed", "payment_failed", "payment_reconciled", "payment_captured", "payment_refunded", "payment_cancelled", "payment_refund_failed", "payment_processing", "payment_partially_succeeded")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    STEP_FAILED_FIELD_NUMBER: _ClassVar[int]
    STEP_VOIDED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FAILED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_RECONCILED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REFUNDED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REFUND_FAILED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_PROCESSING_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_PARTIALLY_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    payment_id: str
    merchant_id: str
    sequence: int
    occurred_at: _timestamp_pb2.Timestamp
    step_succeeded: StepSucceeded
    step_failed: StepFailed
    step_voided: StepVoided
    payment_completed: PaymentCompleted
    payment_failed: PaymentFailed
    payment_reconciled: PaymentReconciled
    payment_captured: PaymentCaptured
    payment_refunded: PaymentRefunded
    payment_cancelled: PaymentCancelled
    payment_refund_failed: PaymentRefundFailed
    payment_processing: PaymentProcessing
    payment_partially_succeeded: PaymentPartiallySucceeded
    def __init__(self, event_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., sequence: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step_succeeded: _Optional[_Union[StepSucceeded, _Mapping]] = ..., step_failed: _Optional[_Union[StepFailed, _Mapping]] = ..., step_voided: _Optional[_Union[StepVoided, _Mapping]] = ..., payment_completed: _Optional[_Union[PaymentCompleted, _Mapping]] = ..., payment_failed: _Optional[_Union[PaymentFailed, _Mapping]] = ..., payment_reconciled: _Optional[_Union[PaymentReconciled, _Mapping]] = ..., payment_captured: _Optional[_Union[PaymentCaptured, _Mapping]] = ..., payment_refunded: _Optional[_Union[PaymentRefunded, _Mapping]] = ..., payment_cancelled: _Optional[_Union[PaymentCancelled, _Mapping]] = ..., payment_refund_failed: _Optional[_Union[PaymentRefundFailed, _Mapping]] = ..., payment_processing: _Optional[_Union[PaymentProcessing, _Mapping]] = ..., payment_partially_succeeded: _Optional[_Union[PaymentPartiallySucceeded, _Mapping]] = ...) -> None: ...
