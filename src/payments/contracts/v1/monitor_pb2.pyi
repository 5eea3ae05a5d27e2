import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from payments.contracts.v1 import contracts_pb2 as _contracts_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListContractViolationsRequest(_message.Message):
    __slots__ = ("contract_id", "severity", "merchant_id", "since", "until", "page_size", "page_token")
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    contract_id: str
    severity: _contracts_pb2.Severity
    merchant_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, contract_id: _Optional[str] = ..., severity: _Optional[_Union[_contracts_pb2.Severity, str]] = ..., merchant_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListContractViolationsResponse(_message.Message):
    __slots__ = ("violations", "next_page_token")
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    violations: _containers.RepeatedCompositeFieldContainer[_contracts_pb2.ContractViolation]
    next_page_token: str
    def __init__(self, violations: _Optional[_Iterable[_Union[_contracts_pb2.ContractViolation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GenerateContractReportRequest(_message.Message):
    __slots__ = ("since", "until", "merchant_id")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    merchant_id: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., merchant_id: _Optional[str] = ...) -> None: ...

class ContractReportEntry(_message.Message):
    __slots__ = ("contract_id", "severity", "owner", "description", "count")
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    contract_id: str
    severity: _contracts_pb2.Severity
    owner: str
    description: str
    count: int
    def __init__(self, contract_id: _Optional[str] = ..., severity: _Optional[_Union[_contracts_pb2.Severity, str]] = ..., owner: _Optional[str] = ..., description: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GenerateContractReportResponse(_message.Message):
    __slots__ = ("since", "until", "entries", "total")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    entries: _containers.RepeatedCompositeFieldContainer[ContractReportEntry]
    total: int
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[ContractReportEntry, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class MerchantComplaint(_message.Message):
    __slots__ = ("id", "merchant_id", "contract_id", "category", "counted_as", "text", "occurred_at", "reported_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    COUNTED_AS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    merchant_id: str
    contract_id: str
    category: str
    counted_as: str
    text: str
    occurred_at: _timestamp_pb2.Timestamp
    reported_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., contract_id: _Optional[str] = ..., category: _Optional[str] = ..., counted_as: _Optional[str] = ..., text: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportMerchantComplaintRequest(_message.Message):
    __slots__ = ("merchant_id", "contract_id", "category", "text", "occurred_at")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    contract_id: str
    category: str
    text: str
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, merchant_id: _Optional[str] = ..., contract_id: _Optional[str] = ..., category: _Optional[str] = ..., text: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportMerchantComplaintResponse(_message.Message):
    __slots__ = ("complaint",)
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    complaint: MerchantComplaint
    def __init__(self, complaint: _Optional[_Union[MerchantComplaint, _Mapping]] = ...) -> None: ...

class RetrospectiveEntry(_message.Message):
    __slots__ = ("contract_id", "owner", "count", "external_reports", "mismatch")
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_REPORTS_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    contract_id: str
    owner: str
    count: int
    external_reports: int
    mismatch: bool
    def __init__(self, contract_id: _Optional[str] = ..., owner: _Optional[str] = ..., count: _Optional[int] = ..., external_reports: _Optional[int] = ..., mismatch: _Optional[bool] = ...) -> None: ...

class Escalation(_message.Message):
    __slots__ = ("contract_id", "owner", "reason")
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    contract_id: str
    owner: str
    reason: str
    def __init__(self, contract_id: _Optional[str] = ..., owner: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Retrospective(_message.Message):
    __slots__ = ("since", "until", "violations", "escalations", "mismatch_ratio")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    ESCALATIONS_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_RATIO_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    violations: _containers.RepeatedCompositeFieldContainer[RetrospectiveEntry]
    escalations: _containers.RepeatedCompositeFieldContainer[Escalation]
    mismatch_ratio: float
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., violations: _Optional[_Iterable[_Union[RetrospectiveEntry, _Mapping]]] = ..., escalations: _Optional[_Iterable[_Union[Escalation, _Mapping]]] = ..., mismatch_ratio: _Optional[float] = ...) -> None: ...

class GenerateRetrospectiveRequest(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GenerateRetrospectiveResponse(_message.Message):
    __slots__ = ("retrospective", "yaml")
    RETROSPECTIVE_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    retrospective: Retrospective
    yaml: str
    def __init__(self, retrospective: _Optional[_Union[Retrospective, _Mapping]] = ..., yaml: _Optional[str] = ...) -> None: ...
