from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentMethodType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_METHOD_TYPE_UNSPECIFIED: _ClassVar[PaymentMethodType]
    PAYMENT_METHOD_TYPE_CARD: _ClassVar[PaymentMethodType]
    PAYMENT_METHOD_TYPE_APPLE_PAY: _ClassVar[PaymentMethodType]
    PAYMENT_METHOD_TYPE_GOOGLE_PAY: _ClassVar[PaymentMethodType]

class CaptureMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPTURE_MODE_UNSPECIFIED: _ClassVar[CaptureMode]
    CAPTURE_MODE_AUTOMATIC: _ClassVar[CaptureMode]
    CAPTURE_MODE_MANUAL: _ClassVar[CaptureMode]
PAYMENT_METHOD_TYPE_UNSPECIFIED: PaymentMethodType
PAYMENT_METHOD_TYPE_CARD: PaymentMethodType
PAYMENT_METHOD_TYPE_APPLE_PAY: PaymentMethodType
PAYMENT_METHOD_TYPE_GOOGLE_PAY: PaymentMethodType
CAPTURE_MODE_UNSPECIFIED: CaptureMode
CAPTURE_MODE_AUTOMATIC: CaptureMode
CAPTURE_MODE_MANUAL: CaptureMode

class Money(_message.Message):
    __slots__ = ("amount_minor", "currency")
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount_minor: int
    currency: str
    def __init__(self, amount_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class PaymentMethod(_message.Message):
    __slots__ = ("type", "token", "customer_id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    type: PaymentMethodType
    token: str
    customer_id: str
    def __init__(self, type: _Optional[_Union[PaymentMethodType, str]] = ..., token: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class PaymentStep(_message.Message):
    __slots__ = ("index", "method", "amount", "processors")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PROCESSORS_FIELD_NUMBER: _ClassVar[int]
    index: int
    method: PaymentMethod
    amount: Money
    processors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[int] = ..., method: _Optional[_Union[PaymentMethod, _Mapping]] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., processors: _Optional[_Iterable[str]] = ...) -> None: ...

class PaymentPlan(_message.Message):
    __slots__ = ("total", "steps", "capture_mode", "allow_partial", "config_version")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_MODE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    total: Money
    steps: _containers.RepeatedCompositeFieldContainer[PaymentStep]
    capture_mode: CaptureMode
    allow_partial: bool
    config_version: int
    def __init__(self, total: _Optional[_Union[Money, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[PaymentStep, _Mapping]]] = ..., capture_mode: _Optional[_Union[CaptureMode, str]] = ..., allow_partial: _Optional[bool] = ..., config_version: _Optional[int] = ...) -> None: ...
