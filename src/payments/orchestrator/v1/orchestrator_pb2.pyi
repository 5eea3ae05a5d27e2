import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from payments.config.v1 import config_pb2 as _config_pb2
from payments.events.v1 import events_pb2 as _events_pb2
from payments.plan.v1 import plan_pb2 as _plan_pb2
from payments.result.v1 import result_pb2 as _result_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentMethodInput(_message.Message):
    __slots__ = ("method", "token", "amount_minor", "amount_decimal", "customer_id")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_DECIMAL_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    method: str
    token: str
    amount_minor: int
    amount_decimal: str
    customer_id: str
    def __init__(self, method: _Optional[str] = ..., token: _Optional[str] = ..., amount_minor: _Optional[int] = ..., amount_decimal: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class CreatePaymentRequest(_message.Message):
    __slots__ = ("merchant_id", "request_id", "amount_minor", "amount_decimal", "currency", "payment_method", "method", "methods", "customer_id", "metadata", "off_session", "authorize_only")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_DECIMAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    OFF_SESSION_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZE_ONLY_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    request_id: str
    amount_minor: int
    amount_decimal: str
    currency: str
    payment_method: str
    method: str
    methods: _containers.RepeatedCompositeFieldContainer[PaymentMethodInput]
    customer_id: str
    metadata: _containers.ScalarMap[str, str]
    off_session: bool
    authorize_only: bool
    def __init__(self, merchant_id: _Optional[str] = ..., request_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., amount_decimal: _Optional[str] = ..., currency: _Optional[str] = ..., payment_method: _Optional[str] = ..., method: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[PaymentMethodInput, _Mapping]]] = ..., customer_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., off_session: _Optional[bool] = ..., authorize_only: _Optional[bool] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("payment_id", "merchant_id", "request_id", "amount", "plan", "result", "metadata", "created_at", "updated_at", "orchestration_ms", "replayed", "orchestration_unmeasured")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATION_MS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATION_UNMEASURED_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    merchant_id: str
    request_id: str
    amount: _plan_pb2.Money
    plan: _plan_pb2.PaymentPlan
    result: _result_pb2.CompositeResult
    metadata: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    orchestration_ms: int
    replayed: bool
    orchestration_unmeasured: bool
    def __init__(self, payment_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., request_id: _Optional[str] = ..., amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., plan: _Optional[_Union[_plan_pb2.PaymentPlan, _Mapping]] = ..., result: _Optional[_Union[_result_pb2.CompositeResult, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., orchestration_ms: _Optional[int] = ..., replayed: _Optional[bool] = ..., orchestration_unmeasured: _Optional[bool] = ...) -> None: ...

class CreatePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class GetPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status", "created_after")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: _result_pb2.PaymentStatus
    created_after: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[_result_pb2.PaymentStatus, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments", "next_page_token")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    next_page_token: str
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ConfirmPaymentRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class ConfirmPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class CapturePaymentRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class CapturePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class CancelPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "reason")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    reason: str
    def __init__(self, payment_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class RefundPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "request_id", "amount_minor", "reason")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    request_id: str
    amount_minor: int
    reason: str
    def __init__(self, payment_id: _Optional[str] = ..., request_id: _Optional[str] = ..., amount_minor: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RefundPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class ListPaymentEventsRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class ListPaymentEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.EventEnvelope]
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.EventEnvelope, _Mapping]]] = ...) -> None: ...

class UpsertMerchantConfigRequest(_message.Message):
    __slots__ = ("config", "expected_version", "expect_default")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECT_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    config: _config_pb2.MerchantConfig
    expected_version: int
    expect_default: bool
    def __init__(self, config: _Optional[_Union[_config_pb2.MerchantConfig, _Mapping]] = ..., expected_version: _Optional[int] = ..., expect_default: _Optional[bool] = ...) -> None: ...

class UpsertMerchantConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: _config_pb2.MerchantConfig
    def __init__(self, config: _Optional[_Union[_config_pb2.MerchantConfig, _Mapping]] = ...) -> None: ...

class GetMerchantConfigRequest(_message.Message):
    __slots__ = ("merchant_id",)
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    def __init__(self, merchant_id: _Optional[str] = ...) -> None: ...

class GetMerchantConfigResponse(_message.Message):
    __slots__ = ("config", "is_default")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    config: _config_pb2.MerchantConfig
    is_default: bool
    def __init__(self, config: _Optional[_Union[_config_pb2.MerchantConfig, _Mapping]] = ..., is_default: _Optional[bool] = ...) -> None: ...
