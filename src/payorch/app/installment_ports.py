"""Ports of installment plans and outbound webhooks; adapters implement them, tests fake them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from payorch.app.ports import PaymentRepository
from payorch.domain.installments import InstallmentPlan, InstallmentPolicy, PlanStatus
from payorch.domain.webhook_delivery import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    signing_secrets,
)


class DuplicatePlan(Exception):
    """A plan with this id (derived from merchant and request id) exists already."""


class DuplicateRetryRequest(Exception):
    """The merchant made a RetryInstallment under this request id already."""


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """The attempt a RetryInstallment started under its request id."""

    installment_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position in a newest-first listing."""

    created_at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class Claim:
    """An installment this worker may charge now, under attempt number `attempt`."""

    installment_id: str
    plan_id: str
    attempt: int
    # Its previous claim's lease ran out (that worker paused or died mid-charge).
    reclaimed: bool


class InstallmentPlanRepository(Protocol):
    async def add(self, plan: InstallmentPlan) -> None:
        """Insert a new plan with its installments; raises DuplicatePlan."""
        ...

    async def save(self, plan: InstallmentPlan) -> None:
        """Store changes; raises ConcurrentUpdate if the plan or a changed installment
        was saved or claimed by someone else since it was read."""
        ...

    async def save_many(self, plans: Sequence[InstallmentPlan]) -> None:
        """save() for several plans at once (the scheduler's group commit); raises
        ConcurrentUpdate if any of them changed, and then stores none."""
        ...

    async def get(self, plan_id: str, merchant_id: str | None) -> InstallmentPlan | None:
        """None when absent or owned by another merchant (merchant_id None: any)."""
        ...

    async def get_many(self, plan_ids: Sequence[str]) -> dict[str, InstallmentPlan]:
        """Plans by id, any merchant (the scheduler's batch read)."""
        ...

    async def get_by_installment(
        self, installment_id: str, merchant_id: str | None
    ) -> InstallmentPlan | None: ...

    async def list(
        self,
        merchant_id: str | None,
        *,
        status: PlanStatus | None,
        limit: int,
        after: Cursor | None,
        order_id: str | None = None,
        customer_id: str | None = None,
    ) -> Sequence[InstallmentPlan]:
        """Newest first (created_at, id), after `after`; only those with this status,
        order id and customer id, each when given."""
        ...

    async def claim_due(
        self, *, now: datetime, worker: str, lease_until: datetime, limit: int
    ) -> Sequence[Claim]:
        """Claim due installments of active plans, and those whose claim expired, for
        `worker` until `lease_until`. Concurrent workers never get the same row
        (FOR UPDATE SKIP LOCKED on PostgreSQL; one writer at a time on SQLite)."""
        ...

    async def hold(self, installment_id: str, attempt: int, until: datetime) -> None:
        """Keep a charging installment out of the scheduler's way until `until`."""
        ...

    async def add_retry_request(
        self, merchant_id: str, request_id: str, retry: RetryRequest, at: datetime
    ) -> None:
        """Remember the attempt a RetryInstallment started under its request id, in the
        transaction that stores its claim; raises DuplicateRetryRequest."""
        ...

    async def get_retry_request(self, merchant_id: str, request_id: str) -> RetryRequest | None:
        """The attempt the merchant's RetryInstallment under this request id started."""
        ...


@dataclass(frozen=True, slots=True)
class EventPosition:
    """Where a walk through the outbox in event order stands: its last event."""

    occurred_at: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class RedeliveryCandidate:
    """An outbox event an endpoint may be owed, with its delivery to that endpoint (None
    when none was made: the endpoint was disabled, or did not exist yet, when the event
    was fanned out) and the body a new delivery sends ("" when it has one)."""

    event_id: str
    event_type: str
    occurred_at: datetime
    body: str
    delivery: WebhookDelivery | None


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    delivery: WebhookDelivery
    url: str
    secret: str = field(repr=False)
    # The secret a rotation replaced, signing beside `secret` until previous_until.
    previous_secret: str = field(default="", repr=False)
    previous_until: datetime | None = None

    def secrets_at(self, now: datetime) -> tuple[str, ...]:
        """What an attempt made at `now` is signed with, the newest first."""
        return signing_secrets(self.secret, self.previous_secret, self.previous_until, now)


class WebhookRepository(Protocol):
    async def add_endpoint(self, endpoint: WebhookEndpoint) -> None: ...

    async def save_endpoint(self, endpoint: WebhookEndpoint) -> None: ...

    async def get_endpoint(
        self, endpoint_id: str, merchant_id: str | None
    ) -> WebhookEndpoint | None: ...

    async def list_endpoints(self, merchant_id: str | None) -> Sequence[WebhookEndpoint]:
        """Endpoints not deleted, oldest first."""
        ...

    async def get_endpoint_by_request(
        self, merchant_id: str, request_id: str
    ) -> WebhookEndpoint | None:
        """The merchant's endpoint created under this idempotency key, deleted or not."""
        ...

    async def count_endpoints_to_add(self, merchant_id: str) -> int:
        """The merchant's endpoints not deleted; another transaction counting them to
        add one waits until this one ends, so a limit checked on the count holds."""
        ...

    async def note_success(self, endpoint_id: str) -> None:
        """A delivery to the endpoint succeeded: it is failing no more."""
        ...

    async def note_failure(self, endpoint_id: str, *, now: datetime, dead: bool) -> bool:
        """An attempt to the endpoint failed (`dead`: its delivery went to the dead-letter
        list): its failing time begins now unless it began before. In one statement that
        holds the endpoint's row to the end of the transaction, so what is read of it
        next is stable. False when the endpoint is no longer enabled."""
        ...

    async def fan_out(self, *, now: datetime, limit: int) -> int:
        """Turn up to `limit` unpublished outbox events into one delivery per enabled
        endpoint of their merchant that wants them; returns the events handled."""
        ...

    async def claim_deliveries(
        self, *, now: datetime, worker: str, lease_until: datetime, limit: int
    ) -> Sequence[DeliveryJob]: ...

    async def get_delivery(
        self, delivery_id: str, merchant_id: str | None
    ) -> WebhookDelivery | None: ...

    async def save_delivery(self, delivery: WebhookDelivery) -> None:
        """Raises ConcurrentUpdate if it changed since it was read."""
        ...

    async def list_deliveries(
        self,
        merchant_id: str | None,
        *,
        status: DeliveryStatus | None,
        endpoint_id: str | None,
        limit: int,
        after: Cursor | None,
    ) -> Sequence[WebhookDelivery]: ...

    async def abandon_pending(self, endpoint_id: str, reason: str) -> int:
        """Move an endpoint's pending deliveries to the dead-letter list."""
        ...

    async def lock_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint, its row held to the end of the transaction: deliveries made or
        scheduled for it meanwhile by another transaction doing the same wait."""
        ...

    async def redelivery_candidates(
        self,
        endpoint_id: str,
        merchant_id: str,
        *,
        names: Sequence[str],
        since: datetime | None,
        until: datetime | None,
        dead_only: bool,
        after: EventPosition | None,
        limit: int,
    ) -> Sequence[RedeliveryCandidate]:
        """Up to `limit` of the merchant's published outbox events after `after`, in
        event order (occurred_at, id): those named `names` (empty: any), occurred in
        [since, until) when given, and with `dead_only` only those whose delivery to the
        endpoint is dead. Unpublished events are left to the fan-out."""
        ...

    async def delivered_pruned_before(self) -> datetime | None:
        """Where `payorch prune` deleted delivered deliveries up to (None: it deleted
        none): an event before it may have been delivered with no delivery left."""
        ...

    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None: ...

    async def abandon_stranded(self) -> int:
        """Move pending deliveries whose endpoint is deleted or disabled to the
        dead-letter list (a fan-out or redelivery that raced the change made them);
        returns how many."""
        ...

    async def forget_expired_secrets(self, now: datetime) -> int:
        """Drop the secrets rotations replaced whose overlap is over by `now`: they sign
        nothing more, and a key not needed is not kept. Returns how many."""
        ...


class InstallmentUnitOfWork(Protocol):
    @property
    def plans(self) -> InstallmentPlanRepository: ...

    @property
    def payments(self) -> PaymentRepository:
        """The payments of this transaction: to look up the charge an attempt made."""
        ...

    @property
    def webhooks(self) -> WebhookRepository: ...

    async def __aenter__(self) -> InstallmentUnitOfWork: ...

    async def __aexit__(self, *exc: object) -> None:
        """Roll back whatever was not committed."""
        ...

    async def commit(self) -> None: ...


class InstallmentUnitOfWorkFactory(Protocol):
    def __call__(self) -> InstallmentUnitOfWork: ...


class InstallmentPolicies(Protocol):
    """Where a merchant's installment policy comes from: its merchant config."""

    async def for_merchant(self, merchant_id: str) -> InstallmentPolicy:
        """The policy of the merchant's current config."""
        ...

    async def at_version(self, merchant_id: str, config_version: int) -> InstallmentPolicy:
        """The policy of the config version a payment recorded (`Payment.config_version`)."""
        ...


class UnsafeUrl(ValueError):
    """A webhook URL we refuse to call (scheme, private address, odd spelling, ...)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    # HTTP status, 0 when there was no answer.
    status_code: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


class WebhookSender(Protocol):
    async def check_url(self, url: str) -> None:
        """Raise UnsafeUrl for a URL that may not be called."""
        ...

    async def send(
        self,
        url: str,
        *,
        secrets: Sequence[str],
        webhook_id: str,
        timestamp: int,
        body: str,
        timeout_s: float,
    ) -> SendResult:
        """POST the body once, signed with each of `secrets` (the newest first); never
        raises for the receiver's failures."""
        ...
