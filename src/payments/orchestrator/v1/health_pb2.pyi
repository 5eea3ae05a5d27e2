import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_HEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_DEGRADED: _ClassVar[HealthState]
    HEALTH_STATE_UNHEALTHY: _ClassVar[HealthState]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_HEALTHY: HealthState
HEALTH_STATE_DEGRADED: HealthState
HEALTH_STATE_UNHEALTHY: HealthState
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class ProcessorStats(_message.Message):
    __slots__ = ("window", "request_count", "success_count", "infrastructure_failure_count", "decline_count", "other_count", "retry_count", "retry_budget_remaining", "success_rate", "infrastructure_failure_rate", "decline_rate", "average_latency", "p95_latency")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    INFRASTRUCTURE_FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DECLINE_COUNT_FIELD_NUMBER: _ClassVar[int]
    OTHER_COUNT_FIELD_NUMBER: _ClassVar[int]
    RETRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    RETRY_BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    INFRASTRUCTURE_FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_RATE_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_FIELD_NUMBER: _ClassVar[int]
    window: _duration_pb2.Duration
    request_count: int
    success_count: int
    infrastructure_failure_count: int
    decline_count: int
    other_count: int
    retry_count: int
    retry_budget_remaining: int
    success_rate: float
    infrastructure_failure_rate: float
    decline_rate: float
    average_latency: _duration_pb2.Duration
    p95_latency: _duration_pb2.Duration
    def __init__(self, window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_count: _Optional[int] = ..., success_count: _Optional[int] = ..., infrastructure_failure_count: _Optional[int] = ..., decline_count: _Optional[int] = ..., other_count: _Optional[int] = ..., retry_count: _Optional[int] = ..., retry_budget_remaining: _Optional[int] = ..., success_rate: _Optional[float] = ..., infrastructure_failure_rate: _Optional[float] = ..., decline_rate: _Optional[float] = ..., average_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p95_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ProcessorHealthReport(_message.Message):
    __slots__ = ("processor", "state", "state_since", "reason", "breaker_state", "breaker_since", "probes_from", "stats")
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_SINCE_FIELD_NUMBER: _ClassVar[int]
    PROBES_FROM_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    processor: str
    state: HealthState
    state_since: _timestamp_pb2.Timestamp
    reason: str
    breaker_state: BreakerState
    breaker_since: _timestamp_pb2.Timestamp
    probes_from: _timestamp_pb2.Timestamp
    stats: ProcessorStats
    def __init__(self, processor: _Optional[str] = ..., state: _Optional[_Union[HealthState, str]] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., breaker_state: _Optional[_Union[BreakerState, str]] = ..., breaker_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., probes_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stats: _Optional[_Union[ProcessorStats, _Mapping]] = ...) -> None: ...

class GetProcessorHealthRequest(_message.Message):
    __slots__ = ("processor",)
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    processor: str
    def __init__(self, processor: _Optional[str] = ...) -> None: ...

class GetProcessorHealthResponse(_message.Message):
    __slots__ = ("report", "replica")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    report: ProcessorHealthReport
    replica: str
    def __init__(self, report: _Optional[_Union[ProcessorHealthReport, _Mapping]] = ..., replica: _Optional[str] = ...) -> None: ...

class ListProcessorHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProcessorHealthResponse(_message.Message):
    __slots__ = ("reports", "replica", "serving")
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[ProcessorHealthReport]
    replica: str
    serving: bool
    def __init__(self, reports: _Optional[_Iterable[_Union[ProcessorHealthReport, _Mapping]]] = ..., replica: _Optional[str] = ..., serving: _Optional[bool] = ...) -> None: ...

class SetSimulatedFaultsRequest(_message.Message):
    __slots__ = ("processor", "faults")
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    processor: str
    faults: str
    def __init__(self, processor: _Optional[str] = ..., faults: _Optional[str] = ...) -> None: ...

class SetSimulatedFaultsResponse(_message.Message):
    __slots__ = ("processor", "faults")
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    processor: str
    faults: str
    def __init__(self, processor: _Optional[str] = ..., faults: _Optional[str] = ...) -> None: ...
