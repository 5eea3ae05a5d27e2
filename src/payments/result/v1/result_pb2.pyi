import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from payments.plan.v1 import plan_pb2 as _plan_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_SUCCESS: _ClassVar[Outcome]
    OUTCOME_SOFT: _ClassVar[Outcome]
    OUTCOME_HARD: _ClassVar[Outcome]
    OUTCOME_REQUIRES_ACTION: _ClassVar[Outcome]
    OUTCOME_UNKNOWN: _ClassVar[Outcome]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_PROCESSOR_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_RATE_LIMITED: _ClassVar[ErrorCode]
    ERROR_CODE_LOCK_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_IDEMPOTENCY_CONFLICT: _ClassVar[ErrorCode]
    ERROR_CODE_NETWORK_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_CARD_DECLINED: _ClassVar[ErrorCode]
    ERROR_CODE_INSUFFICIENT_FUNDS: _ClassVar[ErrorCode]
    ERROR_CODE_LOST_CARD: _ClassVar[ErrorCode]
    ERROR_CODE_STOLEN_CARD: _ClassVar[ErrorCode]
    ERROR_CODE_FRAUDULENT: _ClassVar[ErrorCode]
    ERROR_CODE_DO_NOT_HONOR: _ClassVar[ErrorCode]
    ERROR_CODE_EXPIRED_CARD: _ClassVar[ErrorCode]
    ERROR_CODE_INCORRECT_CVC: _ClassVar[ErrorCode]
    ERROR_CODE_PROCESSING_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_AUTHENTICATION_REQUIRED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_REQUEST: _ClassVar[ErrorCode]
    ERROR_CODE_PROCESSOR_AUTHENTICATION: _ClassVar[ErrorCode]
    ERROR_CODE_PROCESSOR_PERMISSION: _ClassVar[ErrorCode]
    ERROR_CODE_UNMAPPED: _ClassVar[ErrorCode]
    ERROR_CODE_NO_PROCESSOR_AVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_DEADLINE_EXCEEDED: _ClassVar[ErrorCode]
    ERROR_CODE_UNKNOWN_OUTCOME: _ClassVar[ErrorCode]
    ERROR_CODE_REFUND_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_PAYMENT_METHOD_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_CUSTOMER_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_PAYMENT_METHOD_UNUSABLE: _ClassVar[ErrorCode]
    ERROR_CODE_PAYMENT_CANCELED_AT_PROCESSOR: _ClassVar[ErrorCode]
    ERROR_CODE_AMOUNT_OUT_OF_RANGE: _ClassVar[ErrorCode]
    ERROR_CODE_CURRENCY_NOT_SUPPORTED: _ClassVar[ErrorCode]
    ERROR_CODE_INTERRUPTED: _ClassVar[ErrorCode]
    ERROR_CODE_AUTHENTICATION_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_RUN_LIMIT_REACHED: _ClassVar[ErrorCode]

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PROCESSING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_SUCCEEDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_AUTHORIZED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REQUIRES_ACTION: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_FAILED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_UNKNOWN: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CANCELLED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PARTIALLY_SUCCEEDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REFUNDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PARTIALLY_REFUNDED: _ClassVar[PaymentStatus]

class StepStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_STATUS_UNSPECIFIED: _ClassVar[StepStatus]
    STEP_STATUS_PENDING: _ClassVar[StepStatus]
    STEP_STATUS_AUTHORIZED: _ClassVar[StepStatus]
    STEP_STATUS_CAPTURED: _ClassVar[StepStatus]
    STEP_STATUS_FAILED: _ClassVar[StepStatus]
    STEP_STATUS_VOIDED: _ClassVar[StepStatus]
    STEP_STATUS_REQUIRES_ACTION: _ClassVar[StepStatus]
    STEP_STATUS_UNKNOWN: _ClassVar[StepStatus]
    STEP_STATUS_REFUNDED: _ClassVar[StepStatus]
    STEP_STATUS_SKIPPED: _ClassVar[StepStatus]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_SUCCESS: Outcome
OUTCOME_SOFT: Outcome
OUTCOME_HARD: Outcome
OUTCOME_REQUIRES_ACTION: Outcome
OUTCOME_UNKNOWN: Outcome
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_PROCESSOR_ERROR: ErrorCode
ERROR_CODE_RATE_LIMITED: ErrorCode
ERROR_CODE_LOCK_TIMEOUT: ErrorCode
ERROR_CODE_IDEMPOTENCY_CONFLICT: ErrorCode
ERROR_CODE_NETWORK_ERROR: ErrorCode
ERROR_CODE_TIMEOUT: ErrorCode
ERROR_CODE_CARD_DECLINED: ErrorCode
ERROR_CODE_INSUFFICIENT_FUNDS: ErrorCode
ERROR_CODE_LOST_CARD: ErrorCode
ERROR_CODE_STOLEN_CARD: ErrorCode
ERROR_CODE_FRAUDULENT: ErrorCode
ERROR_CODE_DO_NOT_HONOR: ErrorCode
ERROR_CODE_EXPIRED_CARD: ErrorCode
ERROR_CODE_INCORRECT_CVC: ErrorCode
ERROR_CODE_PROCESSING_ERROR: ErrorCode
ERROR_CODE_AUTHENTICATION_REQUIRED: ErrorCode
ERROR_CODE_INVALID_REQUEST: ErrorCode
ERROR_CODE_PROCESSOR_AUTHENTICATION: ErrorCode
ERROR_CODE_PROCESSOR_PERMISSION: ErrorCode
ERROR_CODE_UNMAPPED: ErrorCode
ERROR_CODE_NO_PROCESSOR_AVAILABLE: ErrorCode
ERROR_CODE_DEADLINE_EXCEEDED: ErrorCode
ERROR_CODE_UNKNOWN_OUTCOME: ErrorCode
ERROR_CODE_REFUND_FAILED: ErrorCode
ERROR_CODE_PAYMENT_METHOD_NOT_FOUND: ErrorCode
ERROR_CODE_CUSTOMER_NOT_FOUND: ErrorCode
ERROR_CODE_PAYMENT_METHOD_UNUSABLE: ErrorCode
ERROR_CODE_PAYMENT_CANCELED_AT_PROCESSOR: ErrorCode
ERROR_CODE_AMOUNT_OUT_OF_RANGE: ErrorCode
ERROR_CODE_CURRENCY_NOT_SUPPORTED: ErrorCode
ERROR_CODE_INTERRUPTED: ErrorCode
ERROR_CODE_AUTHENTICATION_FAILED: ErrorCode
ERROR_CODE_RUN_LIMIT_REACHED: ErrorCode
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_PROCESSING: PaymentStatus
PAYMENT_STATUS_SUCCEEDED: PaymentStatus
PAYMENT_STATUS_AUTHORIZED: PaymentStatus
PAYMENT_STATUS_REQUIRES_ACTION: PaymentStatus
PAYMENT_STATUS_FAILED: PaymentStatus
PAYMENT_STATUS_UNKNOWN: PaymentStatus
PAYMENT_STATUS_CANCELLED: PaymentStatus
PAYMENT_STATUS_PARTIALLY_SUCCEEDED: PaymentStatus
PAYMENT_STATUS_REFUNDED: PaymentStatus
PAYMENT_STATUS_PARTIALLY_REFUNDED: PaymentStatus
STEP_STATUS_UNSPECIFIED: StepStatus
STEP_STATUS_PENDING: StepStatus
STEP_STATUS_AUTHORIZED: StepStatus
STEP_STATUS_CAPTURED: StepStatus
STEP_STATUS_FAILED: StepStatus
STEP_STATUS_VOIDED: StepStatus
STEP_STATUS_REQUIRES_ACTION: StepStatus
STEP_STATUS_UNKNOWN: StepStatus
STEP_STATUS_REFUNDED: StepStatus
STEP_STATUS_SKIPPED: StepStatus

class RawProcessorError(_message.Message):
    __slots__ = ("type", "code", "decline_code", "http_status", "request_id", "message", "advice_code")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_CODE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ADVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    type: str
    code: str
    decline_code: str
    http_status: int
    request_id: str
    message: str
    advice_code: str
    def __init__(self, type: _Optional[str] = ..., code: _Optional[str] = ..., decline_code: _Optional[str] = ..., http_status: _Optional[int] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ..., advice_code: _Optional[str] = ...) -> None: ...

class NextAction(_message.Message):
    __slots__ = ("type", "client_secret", "expires_at")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    type: str
    client_secret: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[str] = ..., client_secret: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "processor", "idempotency_key", "started_at", "ended_at", "latency_ms", "outcome", "error_code", "raw", "delay_before_ms", "routing_reason", "retry_decision", "processor_payment_id", "operation")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    DELAY_BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_DECISION_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    number: int
    processor: str
    idempotency_key: str
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    latency_ms: int
    outcome: Outcome
    error_code: ErrorCode
    raw: RawProcessorError
    delay_before_ms: int
    routing_reason: str
    retry_decision: str
    processor_payment_id: str
    operation: str
    def __init__(self, number: _Optional[int] = ..., processor: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latency_ms: _Optional[int] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., error_code: _Optional[_Union[ErrorCode, str]] = ..., raw: _Optional[_Union[RawProcessorError, _Mapping]] = ..., delay_before_ms: _Optional[int] = ..., routing_reason: _Optional[str] = ..., retry_decision: _Optional[str] = ..., processor_payment_id: _Optional[str] = ..., operation: _Optional[str] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("step_index", "method", "amount", "status", "outcome", "error_code", "processor", "processor_payment_id", "attempts", "next_action", "captured_minor", "refunded_minor")
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ACTION_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_MINOR_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_MINOR_FIELD_NUMBER: _ClassVar[int]
    step_index: int
    method: _plan_pb2.PaymentMethod
    amount: _plan_pb2.Money
    status: StepStatus
    outcome: Outcome
    error_code: ErrorCode
    processor: str
    processor_payment_id: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    next_action: NextAction
    captured_minor: int
    refunded_minor: int
    def __init__(self, step_index: _Optional[int] = ..., method: _Optional[_Union[_plan_pb2.PaymentMethod, _Mapping]] = ..., amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., status: _Optional[_Union[StepStatus, str]] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., error_code: _Optional[_Union[ErrorCode, str]] = ..., processor: _Optional[str] = ..., processor_payment_id: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., next_action: _Optional[_Union[NextAction, _Mapping]] = ..., captured_minor: _Optional[int] = ..., refunded_minor: _Optional[int] = ...) -> None: ...

class CompositeResult(_message.Message):
    __slots__ = ("success", "status", "total_processed", "remaining", "step_results", "final_error", "final_error_message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    STEP_RESULTS_FIELD_NUMBER: _ClassVar[int]
    FINAL_ERROR_FIELD_NUMBER: _ClassVar[int]
    FINAL_ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    status: PaymentStatus
    total_processed: _plan_pb2.Money
    remaining: _plan_pb2.Money
    step_results: _containers.RepeatedCompositeFieldContainer[StepResult]
    final_error: ErrorCode
    final_error_message: str
    def __init__(self, success: _Optional[bool] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., total_processed: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., remaining: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., step_results: _Optional[_Iterable[_Union[StepResult, _Mapping]]] = ..., final_error: _Optional[_Union[ErrorCode, str]] = ..., final_error_message: _Optional[str] = ...) -> None: ...
