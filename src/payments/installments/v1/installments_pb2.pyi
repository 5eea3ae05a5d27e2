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

class PlanStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_STATUS_UNSPECIFIED: _ClassVar[PlanStatus]
    PLAN_STATUS_ACTIVE: _ClassVar[PlanStatus]
    PLAN_STATUS_COMPLETED: _ClassVar[PlanStatus]
    PLAN_STATUS_BREACH: _ClassVar[PlanStatus]
    PLAN_STATUS_CANCELLED: _ClassVar[PlanStatus]

class InstallmentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTALLMENT_STATUS_UNSPECIFIED: _ClassVar[InstallmentStatus]
    INSTALLMENT_STATUS_PENDING: _ClassVar[InstallmentStatus]
    INSTALLMENT_STATUS_PROCESSING: _ClassVar[InstallmentStatus]
    INSTALLMENT_STATUS_PAID: _ClassVar[InstallmentStatus]
    INSTALLMENT_STATUS_FAILED: _ClassVar[InstallmentStatus]
    INSTALLMENT_STATUS_FAILED_FINAL: _ClassVar[InstallmentStatus]
    INSTALLMENT_STATUS_CANCELLED: _ClassVar[InstallmentStatus]

class AttemptKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_KIND_UNSPECIFIED: _ClassVar[AttemptKind]
    ATTEMPT_KIND_CHECKOUT: _ClassVar[AttemptKind]
    ATTEMPT_KIND_SCHEDULED: _ClassVar[AttemptKind]
    ATTEMPT_KIND_MANUAL: _ClassVar[AttemptKind]

class EndpointStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_STATUS_UNSPECIFIED: _ClassVar[EndpointStatus]
    ENDPOINT_STATUS_ENABLED: _ClassVar[EndpointStatus]
    ENDPOINT_STATUS_DISABLED: _ClassVar[EndpointStatus]

class DeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATUS_UNSPECIFIED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_PENDING: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_DELIVERED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_DEAD: _ClassVar[DeliveryStatus]
PLAN_STATUS_UNSPECIFIED: PlanStatus
PLAN_STATUS_ACTIVE: PlanStatus
PLAN_STATUS_COMPLETED: PlanStatus
PLAN_STATUS_BREACH: PlanStatus
PLAN_STATUS_CANCELLED: PlanStatus
INSTALLMENT_STATUS_UNSPECIFIED: InstallmentStatus
INSTALLMENT_STATUS_PENDING: InstallmentStatus
INSTALLMENT_STATUS_PROCESSING: InstallmentStatus
INSTALLMENT_STATUS_PAID: InstallmentStatus
INSTALLMENT_STATUS_FAILED: InstallmentStatus
INSTALLMENT_STATUS_FAILED_FINAL: InstallmentStatus
INSTALLMENT_STATUS_CANCELLED: InstallmentStatus
ATTEMPT_KIND_UNSPECIFIED: AttemptKind
ATTEMPT_KIND_CHECKOUT: AttemptKind
ATTEMPT_KIND_SCHEDULED: AttemptKind
ATTEMPT_KIND_MANUAL: AttemptKind
ENDPOINT_STATUS_UNSPECIFIED: EndpointStatus
ENDPOINT_STATUS_ENABLED: EndpointStatus
ENDPOINT_STATUS_DISABLED: EndpointStatus
DELIVERY_STATUS_UNSPECIFIED: DeliveryStatus
DELIVERY_STATUS_PENDING: DeliveryStatus
DELIVERY_STATUS_DELIVERED: DeliveryStatus
DELIVERY_STATUS_DEAD: DeliveryStatus

class InstallmentCharge(_message.Message):
    __slots__ = ("attempt", "kind", "payment_id", "outcome", "error_code", "message", "at", "times", "first_at")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    FIRST_AT_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    kind: AttemptKind
    payment_id: str
    outcome: str
    error_code: str
    message: str
    at: _timestamp_pb2.Timestamp
    times: int
    first_at: _timestamp_pb2.Timestamp
    def __init__(self, attempt: _Optional[int] = ..., kind: _Optional[_Union[AttemptKind, str]] = ..., payment_id: _Optional[str] = ..., outcome: _Optional[str] = ..., error_code: _Optional[str] = ..., message: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., times: _Optional[int] = ..., first_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Installment(_message.Message):
    __slots__ = ("installment_id", "sequence", "amount", "due_at", "status", "attempts", "payment_id", "processor_payment_id", "last_error_code", "last_error", "next_attempt_at", "paid_at", "first_failed_at", "charges")
    INSTALLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DUE_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    PAID_AT_FIELD_NUMBER: _ClassVar[int]
    FIRST_FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    installment_id: str
    sequence: int
    amount: _plan_pb2.Money
    due_at: _timestamp_pb2.Timestamp
    status: InstallmentStatus
    attempts: int
    payment_id: str
    processor_payment_id: str
    last_error_code: str
    last_error: str
    next_attempt_at: _timestamp_pb2.Timestamp
    paid_at: _timestamp_pb2.Timestamp
    first_failed_at: _timestamp_pb2.Timestamp
    charges: _containers.RepeatedCompositeFieldContainer[InstallmentCharge]
    def __init__(self, installment_id: _Optional[str] = ..., sequence: _Optional[int] = ..., amount: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[InstallmentStatus, str]] = ..., attempts: _Optional[int] = ..., payment_id: _Optional[str] = ..., processor_payment_id: _Optional[str] = ..., last_error_code: _Optional[str] = ..., last_error: _Optional[str] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., paid_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., charges: _Optional[_Iterable[_Union[InstallmentCharge, _Mapping]]] = ...) -> None: ...

class InstallmentPlan(_message.Message):
    __slots__ = ("plan_id", "merchant_id", "request_id", "order_id", "total", "status", "payment_method", "installments", "paid_count", "installment_count", "paid", "remaining", "interval_days", "dunning_days", "cancel_reason", "created_at", "updated_at")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    INSTALLMENTS_FIELD_NUMBER: _ClassVar[int]
    PAID_COUNT_FIELD_NUMBER: _ClassVar[int]
    INSTALLMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAID_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_DAYS_FIELD_NUMBER: _ClassVar[int]
    DUNNING_DAYS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    merchant_id: str
    request_id: str
    order_id: str
    total: _plan_pb2.Money
    status: PlanStatus
    payment_method: _plan_pb2.PaymentMethod
    installments: _containers.RepeatedCompositeFieldContainer[Installment]
    paid_count: int
    installment_count: int
    paid: _plan_pb2.Money
    remaining: _plan_pb2.Money
    interval_days: int
    dunning_days: _containers.RepeatedScalarFieldContainer[int]
    cancel_reason: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, plan_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., total: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., status: _Optional[_Union[PlanStatus, str]] = ..., payment_method: _Optional[_Union[_plan_pb2.PaymentMethod, _Mapping]] = ..., installments: _Optional[_Iterable[_Union[Installment, _Mapping]]] = ..., paid_count: _Optional[int] = ..., installment_count: _Optional[int] = ..., paid: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., remaining: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., interval_days: _Optional[int] = ..., dunning_days: _Optional[_Iterable[int]] = ..., cancel_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateInstallmentPlanRequest(_message.Message):
    __slots__ = ("merchant_id", "request_id", "order_id", "total", "payment_method", "customer_id")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    request_id: str
    order_id: str
    total: _plan_pb2.Money
    payment_method: str
    customer_id: str
    def __init__(self, merchant_id: _Optional[str] = ..., request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., total: _Optional[_Union[_plan_pb2.Money, _Mapping]] = ..., payment_method: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class FirstCharge(_message.Message):
    __slots__ = ("payment_id", "status", "error_code", "error_message")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    status: str
    error_code: str
    error_message: str
    def __init__(self, payment_id: _Optional[str] = ..., status: _Optional[str] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class CreateInstallmentPlanResponse(_message.Message):
    __slots__ = ("plan", "first_charge", "replayed")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHARGE_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    plan: InstallmentPlan
    first_charge: FirstCharge
    replayed: bool
    def __init__(self, plan: _Optional[_Union[InstallmentPlan, _Mapping]] = ..., first_charge: _Optional[_Union[FirstCharge, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetInstallmentPlanRequest(_message.Message):
    __slots__ = ("plan_id",)
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    def __init__(self, plan_id: _Optional[str] = ...) -> None: ...

class GetInstallmentPlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: InstallmentPlan
    def __init__(self, plan: _Optional[_Union[InstallmentPlan, _Mapping]] = ...) -> None: ...

class ListInstallmentPlansRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status", "order_id", "customer_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: PlanStatus
    order_id: str
    customer_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[PlanStatus, str]] = ..., order_id: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class ListInstallmentPlansResponse(_message.Message):
    __slots__ = ("plans", "next_page_token")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[InstallmentPlan]
    next_page_token: str
    def __init__(self, plans: _Optional[_Iterable[_Union[InstallmentPlan, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelInstallmentPlanRequest(_message.Message):
    __slots__ = ("plan_id", "reason")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    reason: str
    def __init__(self, plan_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelInstallmentPlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: InstallmentPlan
    def __init__(self, plan: _Optional[_Union[InstallmentPlan, _Mapping]] = ...) -> None: ...

class RetryInstallmentRequest(_message.Message):
    __slots__ = ("installment_id", "request_id")
    INSTALLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    installment_id: str
    request_id: str
    def __init__(self, installment_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RetryInstallmentResponse(_message.Message):
    __slots__ = ("plan", "replayed", "attempt", "payment_id")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    plan: InstallmentPlan
    replayed: bool
    attempt: int
    payment_id: str
    def __init__(self, plan: _Optional[_Union[InstallmentPlan, _Mapping]] = ..., replayed: _Optional[bool] = ..., attempt: _Optional[int] = ..., payment_id: _Optional[str] = ...) -> None: ...

class WebhookEndpoint(_message.Message):
    __slots__ = ("endpoint_id", "url", "description", "event_types", "status", "disabled_reason", "created_at", "merchant_id", "disabled_at", "failing_since")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DISABLED_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    DISABLED_AT_FIELD_NUMBER: _ClassVar[int]
    FAILING_SINCE_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    url: str
    description: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    status: EndpointStatus
    disabled_reason: str
    created_at: _timestamp_pb2.Timestamp
    merchant_id: str
    disabled_at: _timestamp_pb2.Timestamp
    failing_since: _timestamp_pb2.Timestamp
    def __init__(self, endpoint_id: _Optional[str] = ..., url: _Optional[str] = ..., description: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., status: _Optional[_Union[EndpointStatus, str]] = ..., disabled_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., merchant_id: _Optional[str] = ..., disabled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failing_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateWebhookEndpointRequest(_message.Message):
    __slots__ = ("merchant_id", "url", "description", "event_types", "request_id")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    url: str
    description: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, merchant_id: _Optional[str] = ..., url: _Optional[str] = ..., description: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateWebhookEndpointResponse(_message.Message):
    __slots__ = ("endpoint", "secret", "replayed")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    endpoint: WebhookEndpoint
    secret: str
    replayed: bool
    def __init__(self, endpoint: _Optional[_Union[WebhookEndpoint, _Mapping]] = ..., secret: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ListWebhookEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWebhookEndpointsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[WebhookEndpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[WebhookEndpoint, _Mapping]]] = ...) -> None: ...

class DeleteWebhookEndpointRequest(_message.Message):
    __slots__ = ("endpoint_id",)
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    def __init__(self, endpoint_id: _Optional[str] = ...) -> None: ...

class DeleteWebhookEndpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnableWebhookEndpointRequest(_message.Message):
    __slots__ = ("endpoint_id",)
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    def __init__(self, endpoint_id: _Optional[str] = ...) -> None: ...

class EnableWebhookEndpointResponse(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: WebhookEndpoint
    def __init__(self, endpoint: _Optional[_Union[WebhookEndpoint, _Mapping]] = ...) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("delivery_id", "webhook_id", "endpoint_id", "event_type", "status", "attempts", "last_status_code", "last_error", "next_attempt_at", "created_at", "delivered_at")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    webhook_id: str
    endpoint_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int
    last_error: str
    next_attempt_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    delivered_at: _timestamp_pb2.Timestamp
    def __init__(self, delivery_id: _Optional[str] = ..., webhook_id: _Optional[str] = ..., endpoint_id: _Optional[str] = ..., event_type: _Optional[str] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., attempts: _Optional[int] = ..., last_status_code: _Optional[int] = ..., last_error: _Optional[str] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWebhookDeliveriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status", "endpoint_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: DeliveryStatus
    endpoint_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., endpoint_id: _Optional[str] = ...) -> None: ...

class ListWebhookDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries", "next_page_token")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    next_page_token: str
    def __init__(self, deliveries: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RedeliverWebhookRequest(_message.Message):
    __slots__ = ("delivery_id",)
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    def __init__(self, delivery_id: _Optional[str] = ...) -> None: ...

class RedeliverWebhookResponse(_message.Message):
    __slots__ = ("delivery",)
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    delivery: WebhookDelivery
    def __init__(self, delivery: _Optional[_Union[WebhookDelivery, _Mapping]] = ...) -> None: ...

class RotateWebhookSecretRequest(_message.Message):
    __slots__ = ("endpoint_id", "overlap_hours")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_HOURS_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    overlap_hours: int
    def __init__(self, endpoint_id: _Optional[str] = ..., overlap_hours: _Optional[int] = ...) -> None: ...

class RotateWebhookSecretResponse(_message.Message):
    __slots__ = ("endpoint", "secret", "previous_secret_expires_at")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    endpoint: WebhookEndpoint
    secret: str
    previous_secret_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, endpoint: _Optional[_Union[WebhookEndpoint, _Mapping]] = ..., secret: _Optional[str] = ..., previous_secret_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
