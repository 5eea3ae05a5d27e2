"""Domain events, named in the past tense; the unit of work stores them in the outbox."""

from __future__ import annotations

from dataclasses import dataclass, field

from payorch.domain.results import ErrorCode, Outcome


@dataclass(slots=True)
class DomainEvent:
    # Position within the payment, set by the aggregate when raised.
    sequence: int = field(default=0, init=False)

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(slots=True)
class StepSucceeded(DomainEvent):
    step_index: int
    processor: str
    latency_ms: int
    amount_minor: int


@dataclass(slots=True)
class StepFailed(DomainEvent):
    step_index: int
    processor: str
    error_code: ErrorCode
    # Worth charging the method again later (Classification.retry_later). Stored events
    # from before it was named so call it `retryable`; webhooks carry both names.
    retry_later: bool
    latency_ms: int
    # SOFT or HARD: how the step's last attempt was classified.
    outcome: Outcome


@dataclass(slots=True)
class StepVoided(DomainEvent):
    step_index: int
    processor: str
    amount_minor: int


@dataclass(slots=True)
class PaymentProcessing(DomainEvent):
    """The payment is stored and its steps are about to be charged: raised once, at its
    create, and committed with the PROCESSING row before any processor is called."""

    total_minor: int
    request_id: str


@dataclass(slots=True)
class PaymentCompleted(DomainEvent):
    total_minor: int
    request_id: str


@dataclass(slots=True)
class PaymentPartiallySucceeded(DomainEvent):
    """The payment ended holding part of its amount (allow_partial): what it took or
    holds, and what is left for the merchant to collect otherwise."""

    processed_minor: int
    remaining_minor: int
    request_id: str


@dataclass(slots=True)
class PaymentFailed(DomainEvent):
    error_code: ErrorCode
    request_id: str
    message: str


@dataclass(slots=True)
class PaymentCaptured(DomainEvent):
    amount_minor: int


@dataclass(slots=True)
class PaymentRefunded(DomainEvent):
    amount_minor: int
    refund_request_id: str


@dataclass(slots=True)
class PaymentRefundFailed(DomainEvent):
    """A refund counted as made failed at the processor: the money stayed with the
    merchant, and is refundable again."""

    amount_minor: int
    # The processor's refund id.
    refund_id: str


@dataclass(slots=True)
class PaymentCancelled(DomainEvent):
    reason: str


@dataclass(slots=True)
class PaymentReconciled(DomainEvent):
    step_index: int
    outcome: Outcome
    source: str
    # The processor's event that told us (a webhook's event id); "" for a lookup.
    processor_event_id: str = ""
