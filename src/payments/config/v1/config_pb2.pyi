from payments.plan.v1 import plan_pb2 as _plan_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "base_delay_ms", "max_delay_ms")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BASE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    base_delay_ms: int
    max_delay_ms: int
    def __init__(self, max_retries: _Optional[int] = ..., base_delay_ms: _Optional[int] = ..., max_delay_ms: _Optional[int] = ...) -> None: ...

class MethodConfig(_message.Message):
    __slots__ = ("type", "min_amount_minor", "max_amount_minor", "processors")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MIN_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    MAX_AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    PROCESSORS_FIELD_NUMBER: _ClassVar[int]
    type: _plan_pb2.PaymentMethodType
    min_amount_minor: int
    max_amount_minor: int
    processors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[_Union[_plan_pb2.PaymentMethodType, str]] = ..., min_amount_minor: _Optional[int] = ..., max_amount_minor: _Optional[int] = ..., processors: _Optional[_Iterable[str]] = ...) -> None: ...

class InstallmentPolicy(_message.Message):
    __slots__ = ("min_total_minor", "count", "interval_days", "dunning_days")
    MIN_TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_DAYS_FIELD_NUMBER: _ClassVar[int]
    DUNNING_DAYS_FIELD_NUMBER: _ClassVar[int]
    min_total_minor: int
    count: int
    interval_days: int
    dunning_days: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, min_total_minor: _Optional[int] = ..., count: _Optional[int] = ..., interval_days: _Optional[int] = ..., dunning_days: _Optional[_Iterable[int]] = ...) -> None: ...

class MerchantConfig(_message.Message):
    __slots__ = ("merchant_id", "version", "methods", "allowed_currencies", "retry_policy", "allow_partial", "fallback_on_failure", "installment_policy")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_CURRENCIES_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    INSTALLMENT_POLICY_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    version: int
    methods: _containers.RepeatedCompositeFieldContainer[MethodConfig]
    allowed_currencies: _containers.RepeatedScalarFieldContainer[str]
    retry_policy: RetryPolicy
    allow_partial: bool
    fallback_on_failure: bool
    installment_policy: InstallmentPolicy
    def __init__(self, merchant_id: _Optional[str] = ..., version: _Optional[int] = ..., methods: _Optional[_Iterable[_Union[MethodConfig, _Mapping]]] = ..., allowed_currencies: _Optional[_Iterable[str]] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., allow_partial: _Optional[bool] = ..., fallback_on_failure: _Optional[bool] = ..., installment_policy: _Optional[_Union[InstallmentPolicy, _Mapping]] = ...) -> None: ...
