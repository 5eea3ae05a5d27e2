"""The ports the app talks through; adapters implement them, tests fake them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Payment, PaymentStatus
from payorch.domain.results import ChargeRefunds, ProcessorResponse


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time."""
        ...

    def monotonic(self) -> float:
        """Seconds, for measuring durations."""
        ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One authorize call for one step. The key decides whether it is new or a replay."""

    payment_id: str
    step_index: int
    # Changes only when the processor is known not to have charged under the old one.
    idempotency_key: str
    # Stable across generations: identifies the processor-side payment object.
    intent_key: str
    amount_minor: int
    currency: str
    token: str
    capture: bool
    customer_id: str = ""
    off_session: bool = False
    # Keep the payment method on `customer_id` for later off-session charges (Stripe:
    # setup_future_usage=off_session); without a customer there is nothing to keep it on.
    save_for_off_session: bool = False
    merchant_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    # When the payment was made: every key of the step was first used after it, so an
    # adapter can tell when the processor may have forgotten them. None: not known.
    created_at: datetime | None = None


class Processor(Protocol):
    """A payment processor. Adapters return answers as data and never raise for a decline."""

    name: str

    async def authorize(self, request: ChargeRequest) -> ProcessorResponse: ...

    async def lookup(self, request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        """What became of a charge whose answer was lost or indeterminate."""
        ...

    async def capture(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse:
        """Amounts are ISO-4217 minor units of `currency` (an adapter whose processor
        counts the currency otherwise converts them)."""
        ...

    async def cancel(
        self, processor_payment_id: str, idempotency_key: str
    ) -> ProcessorResponse: ...

    async def refund(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse: ...

    async def find_refund(
        self, processor_payment_id: str, idempotency_key: str
    ) -> ProcessorResponse:
        """A refund made before under `idempotency_key`: DONE when one went through or is
        under way, NOT_FOUND when none did (or only failed ones); any other answer tells
        nothing. For a refund tried without an answer: the processor forgets its keys
        (Stripe after 24 hours), and the same key is then a new refund."""
        ...

    async def refunds(self, processor_payment_id: str) -> ChargeRefunds:
        """Every refund of the charge, payorch's and those made elsewhere (a dashboard),
        with their statuses: the truth behind a processor's event about refunds."""
        ...


class DuplicateRequest(Exception):
    """A payment with this (merchant, request_id) already exists."""


class ConcurrentUpdate(Exception):
    """The aggregate changed since it was read (optimistic concurrency)."""


@dataclass(frozen=True, slots=True)
class ChargeClaim:
    """An installment's charge, made under its scheduler's (or a retry's) claim: the
    payment is inserted only while the claim still admits a charge, decided by the
    insert itself (InstallmentPlan.admits_charge), so that nothing read before it can
    go stale. `lease_until` is the claim's lease as its worker last knew it (None: it
    had none)."""

    plan_id: str
    installment_id: str
    attempt: int
    lease_until: datetime | None


@dataclass(frozen=True, slots=True)
class UnreadablePayment:
    """A payment listed for reconciling whose stored rows cannot be read into a Payment
    (a value no version of the code writes: an unknown status, JSON of the wrong
    shape): `error` says why, never quoting the rows."""

    payment_id: str
    error: Exception


@dataclass(frozen=True, slots=True)
class PageCursor:
    created_at: datetime
    payment_id: str


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event_id: str
    payment_id: str
    merchant_id: str
    sequence: int
    name: str
    payload: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A refund as first asked: its amount and the part of it each step gives back.

    Kept so that a retry under the same request_id repeats exactly the same calls (same
    step, amount and idempotency key) for the parts that did not go through.
    """

    amount_minor: int
    # (step index, amount); empty for a refund recorded before parts were kept.
    parts: tuple[tuple[int, int], ...]
    # What the first call asked: its amount, 0 for everything then refundable; None for
    # a refund recorded before this was kept (a repeat is then checked as before).
    asked_minor: int | None = None
    # When it was first asked, and its parts held (None: not read, or not stored yet).
    requested_at: datetime | None = None

    def asked_again(self, amount_minor: int) -> bool:
        """Whether a repeat asking `amount_minor` (0: everything) is the same request:
        the same ask, or the amount that "everything" came to."""
        if self.asked_minor is None:
            return amount_minor in (0, self.amount_minor)
        return amount_minor == self.asked_minor or (
            self.asked_minor == 0 and amount_minor == self.amount_minor
        )


class PaymentRepository(Protocol):
    async def add(self, payment: Payment, *, only_if: ChargeClaim | None = None) -> None:
        """Insert a new payment; raises DuplicateRequest on a used (merchant, request_id),
        and with `only_if` when its claim no longer admits it (as insert_payment)."""
        ...

    async def save(self, payment: Payment) -> None:
        """Store changes; raises ConcurrentUpdate if someone else saved first."""
        ...

    async def get(self, payment_id: str, merchant_id: str | None) -> Payment | None:
        """None when absent or owned by another merchant (merchant_id None: any)."""
        ...

    async def get_by_request(self, merchant_id: str, request_id: str) -> Payment | None: ...

    async def refund_request(self, payment_id: str, request_id: str) -> RefundRequest | None:
        """The refund recorded under this request_id, if any."""
        ...

    async def refund_count(self, payment_id: str) -> int:
        """How many refund requests the payment has recorded."""
        ...

    async def add_refund(
        self, payment_id: str, request_id: str, refund: RefundRequest, now: datetime
    ) -> bool:
        """Record a refund request; False when its request_id was used before (the
        unit of work is then to be left without committing)."""
        ...

    async def events_of(self, payment_id: str) -> list[StoredEvent]: ...

    async def list(
        self,
        merchant_id: str | None,
        *,
        limit: int,
        after: PageCursor | None,
        status: PaymentStatus | None,
        created_after: datetime | None,
    ) -> Sequence[Payment]: ...

    async def list_unresolved(
        self, *, now: datetime, processing_before: datetime, limit: int
    ) -> Sequence[Payment | UnreadablePayment]:
        """UNKNOWN payments due for a lookup, payments owing a capture or void or
        waiting for the customer whose time is up, and PROCESSING ones untouched since
        `processing_before` (their server died mid-payment) and not backing off after a
        lookup that could not tell (`next_reconcile_at` still to come), oldest first.
        A listed payment whose rows cannot be read comes as an UnreadablePayment in its
        place: one corrupt row never hides the others."""
        ...

    async def claim(
        self, payment: Payment, until: datetime, *, touched: datetime | None = None
    ) -> bool:
        """Take `payment` for one reconciler until `until`: its `next_reconcile_at` set
        to it, so no other reconciler's list_unresolved lists it meanwhile, and its
        version moved on, only if it is still the version read. False when another call
        saved it since (another reconciler took it first): the caller leaves it alone.
        `touched`: stored as its `updated_at` too (a payment PROCESSING, whose run the
        claim goes on with: not interrupted again until STALE_PROCESSING on)."""
        ...


class InboundEventLog(Protocol):
    async def remember(self, event_id: str, source: str, now: datetime) -> bool:
        """False when the event was seen before (the caller then does nothing)."""
        ...

    async def forget(self, event_id: str) -> None:
        """As if the event had never come: its redelivery is acted on."""
        ...


class ProcessorCustomers(Protocol):
    """Which merchant each processor customer (`cus_...`) belongs to: the first that
    used it. The processor account is shared by every merchant, so nothing there says."""

    async def claim(
        self, merchant_id: str, customer_ids: Collection[str], now: datetime
    ) -> dict[str, str]:
        """Bind to `merchant_id` each customer bound to no one; return the merchant each
        customer is bound to now. Two merchants claiming a new customer at once: one
        gets it, and both are told which."""
        ...


class UnitOfWork(Protocol):
    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def inbound_events(self) -> InboundEventLog: ...

    @property
    def customers(self) -> ProcessorCustomers: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, *exc: object) -> None:
        """Roll back whatever was not committed."""
        ...

    async def commit(self) -> None: ...


class MerchantConfigStore(Protocol):
    async def current(self, merchant_id: str) -> MerchantConfig | None: ...

    async def version(self, merchant_id: str, version: int) -> MerchantConfig | None:
        """That version as it was saved (every version is kept)."""
        ...

    async def save(self, config: MerchantConfig, now: datetime) -> None:
        """Store `config` as a new version; raises ConcurrentUpdate if it exists."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...

    async def insert_payment(self, payment: Payment, *, only_if: ChargeClaim | None = None) -> None:
        """`payments.add` + commit in one go: the hot path's first write.
        Raises DuplicateRequest when (merchant, request_id) is taken, or when `only_if`
        is given and the claim no longer admits the charge (the insert is refused, in
        the same statement: a look by request id tells which)."""
        ...

    async def update_payment(self, payment: Payment) -> None:
        """`payments.save` + commit in one go; raises ConcurrentUpdate on a stale version."""
        ...

    async def payment_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        """`payments.get_by_request` in one read of its own (an idempotent replay's)."""
        ...
