"""In-memory fakes of the installments and webhooks stores, and their unit of work. As
the payments fakes (tests.fakes.memory), each unit of work reads and writes through its
own transaction (tests.fakes.transaction): what it does not commit is gone, as the
database rolls it back.

FakePlans and FakeWebhooks hold what is committed, for a test to set up and look at;
a unit of work opens its own repository on them (transaction())."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from payorch.app.ids import new_id
from payorch.app.installment_ports import (
    Claim,
    DeliveryJob,
    DuplicateRetryRequest,
    EventPosition,
    RedeliveryCandidate,
    RetryRequest,
)
from payorch.app.ports import ConcurrentUpdate
from payorch.domain.installments import (
    AttemptKind,
    InstallmentPlan,
    InstallmentStatus,
    PlanStatus,
)
from payorch.domain.webhook_delivery import (
    DeliveryStatus,
    EndpointStatus,
    WebhookDelivery,
    WebhookEndpoint,
    event_type,
    webhook_body,
)
from tests.fakes.transaction import (
    FakeTransaction,
    StagedLog,
    StagedRepository,
    StagedRows,
)


class FakePlans:
    """One plan's tables as committed: the plan, the claims held for a later look
    (installment, attempt), the retry requests, and the names of the events saved, in
    order (the outbox)."""

    def __init__(self, plan: InstallmentPlan) -> None:
        self._plan_id = plan.id
        self.plans: dict[str, InstallmentPlan] = {plan.id: plan}
        self.held: list[tuple[str, int]] = []
        self.retries: dict[tuple[str, str], RetryRequest] = {}
        self.events: list[str] = []

    @property
    def plan(self) -> InstallmentPlan:
        return self.plans[self._plan_id]

    def transaction(self) -> FakePlanRepository:
        return FakePlanRepository(self)


class FakePlanRepository(StagedRepository):
    def __init__(self, tables: FakePlans) -> None:
        self._plans = StagedRows(tables.plans)
        self._held = StagedLog(tables.held)
        self._retries = StagedRows(tables.retries)
        self._events = StagedLog(tables.events)
        self._tables = (self._plans, self._held, self._retries, self._events)

    async def save(self, plan: InstallmentPlan) -> None:
        # Versioned, as the UPDATE's WHERE version = read: also against a commit made
        # since this transaction began.
        stored = self._plans.rows.get(plan.id)
        committed = self._plans.committed.get(plan.id)
        if stored is None or stored.version != plan.version:
            raise ConcurrentUpdate(plan.id)
        if committed is not None and committed.version > plan.version:
            raise ConcurrentUpdate(plan.id)
        plan.version += 1
        self._events.extend(e.name for e in plan.pending_events)
        plan.pending_events.clear()
        self._plans.write(plan.id, plan)

    async def save_many(self, plans: Sequence[InstallmentPlan]) -> None:
        for plan in plans:
            await self.save(plan)

    async def get(self, plan_id: str, merchant_id: str | None) -> InstallmentPlan | None:
        return self._plans.read(plan_id)

    async def get_many(self, plan_ids: Sequence[str]) -> dict[str, InstallmentPlan]:
        found = {plan_id: self._plans.read(plan_id) for plan_id in plan_ids}
        return {plan_id: plan for plan_id, plan in found.items() if plan is not None}

    async def claim_due(
        self, *, now: datetime, worker: str, lease_until: datetime, limit: int
    ) -> list[Claim]:
        """As the SQL repository claims: first the processing installments whose lease
        ran out (whatever their plan's status, same attempt), then the pending or failed
        ones due on active plans (a new scheduled attempt). A claimed installment's plan
        moves on a version, as its row's does: a plan read before the claim is stale."""
        plans = list(self._plans)
        stale = sorted(
            (
                (i.lease_until, p.id, i)
                for p in plans
                for i in p.installments
                if i.status is InstallmentStatus.PROCESSING
                and i.lease_until is not None
                and i.lease_until <= now
            ),
            key=lambda row: row[0],
        )[:limit]
        claimable = (InstallmentStatus.PENDING, InstallmentStatus.FAILED)
        due = sorted(
            (
                (i.next_attempt_at, p.id, i)
                for p in plans
                if p.status is PlanStatus.ACTIVE
                for i in p.installments
                if i.status in claimable
                and i.next_attempt_at is not None
                and i.next_attempt_at <= now
            ),
            key=lambda row: row[0],
        )[: limit - len(stale)]
        claims = []
        for _, plan_id, inst in [*stale, *due]:
            reclaimed = inst.status is InstallmentStatus.PROCESSING
            if not reclaimed:
                inst._move(InstallmentStatus.PROCESSING)
                inst.attempts += 1
                inst.attempt_kind = AttemptKind.SCHEDULED
            inst.claimed_by, inst.lease_until = worker, lease_until
            claims.append(Claim(inst.id, plan_id, inst.attempts, reclaimed))
        for plan in plans:
            if any(c.plan_id == plan.id for c in claims):
                plan.version += 1
                self._plans.write(plan.id, plan)
        return claims

    async def get_by_installment(
        self, installment_id: str, merchant_id: str | None
    ) -> InstallmentPlan | None:
        found = next(
            (p for p in self._plans if any(i.id == installment_id for i in p.installments)), None
        )
        return None if found is None else self._plans.read(found.id)

    async def hold(self, installment_id: str, attempt: int, until: Any) -> None:
        self._held.extend([(installment_id, attempt)])

    async def add_retry_request(
        self, merchant_id: str, request_id: str, retry: RetryRequest, at: Any
    ) -> None:
        key = (merchant_id, request_id)
        # The unique index sees rows committed since the transaction began, too.
        if key in self._retries.rows or key in self._retries.committed:
            raise DuplicateRetryRequest(request_id)
        self._retries.write(key, retry)

    async def get_retry_request(self, merchant_id: str, request_id: str) -> RetryRequest | None:
        return self._retries.read((merchant_id, request_id))


@dataclasses.dataclass
class OutboxEvent:
    """A row of the outbox (`events`): `currency` is its payment's, "" for a plan's."""

    id: str
    aggregate_id: str
    merchant_id: str
    sequence: int
    name: str
    payload: dict[str, Any]
    occurred_at: datetime
    currency: str = ""
    published_at: datetime | None = None


def _body(e: OutboxEvent) -> str:
    return webhook_body(
        event_id=e.id,
        name=e.name,
        aggregate_id=e.aggregate_id,
        merchant_id=e.merchant_id,
        sequence=e.sequence,
        occurred_at=e.occurred_at,
        payload=dict(e.payload),
        currency=e.currency,
    )


class FakeWebhooks:
    """Deliveries, the endpoint they go to when a test is about endpoints, and the
    outbox events to fan out, as committed."""

    def __init__(
        self,
        deliveries: list[WebhookDelivery],
        endpoint: WebhookEndpoint | None = None,
        outbox: Sequence[OutboxEvent] = (),
    ) -> None:
        self.rows: dict[str, WebhookDelivery] = {d.id: d for d in deliveries}
        self.endpoints: dict[str, WebhookEndpoint] = {}
        if endpoint is not None:
            self.endpoints[endpoint.id] = endpoint
        self.outbox: dict[str, OutboxEvent] = {e.id: e for e in outbox}
        # Where `payorch prune` deleted delivered deliveries up to (None: none yet).
        self.delivered_pruned_before: datetime | None = None

    @property
    def endpoint(self) -> WebhookEndpoint:
        (endpoint,) = self.endpoints.values()
        return endpoint

    def transaction(self) -> FakeWebhookRepository:
        return FakeWebhookRepository(self)


class FakeWebhookRepository(StagedRepository):
    """Deliveries claimed like the SQL repository claims them: due, pending, lease over;
    an endpoint's failing time kept as it keeps it."""

    def __init__(self, tables: FakeWebhooks) -> None:
        self._deliveries = StagedRows(tables.rows)
        self._endpoints = StagedRows(tables.endpoints)
        self._outbox = StagedRows(tables.outbox)
        self._tables = (self._deliveries, self._endpoints, self._outbox)
        self._all = tables

    async def add_endpoint(self, endpoint: WebhookEndpoint) -> None:
        self._endpoints.write(endpoint.id, endpoint)

    async def delivered_pruned_before(self) -> datetime | None:
        return self._all.delivered_pruned_before

    async def fan_out(self, *, now: datetime, limit: int) -> int:
        """As the SQL repository: the oldest unpublished events, one delivery each per
        enabled endpoint of their merchant that wants them, all marked published (also
        those no endpoint wants)."""
        batch = sorted(
            (e for e in self._outbox if e.published_at is None),
            key=lambda e: (e.occurred_at, e.id),
        )[:limit]
        enabled = [ep for ep in self._endpoints if ep.status is EndpointStatus.ENABLED]
        for e in batch:
            kind = event_type(e.name)
            body = _body(e)
            for ep in enabled:
                if ep.merchant_id != e.merchant_id or not ep.wants(kind):
                    continue
                d = WebhookDelivery(
                    id=new_id("whd"),
                    endpoint_id=ep.id,
                    merchant_id=e.merchant_id,
                    event_id=e.id,
                    event_type=kind,
                    body=body,
                    created_at=now,
                    next_attempt_at=now,
                )
                self._deliveries.write(d.id, d)
            e.published_at = now
            self._outbox.write(e.id, e)
        return len(batch)

    async def forget_expired_secrets(self, now: datetime) -> int:
        """As the SQL repository: replaced secrets whose overlap is over are dropped."""
        over = [
            e
            for e in self._endpoints
            if e.previous_secret_until is not None and e.previous_secret_until <= now
        ]
        for e in over:
            e.previous_secret, e.previous_secret_until = "", None
            self._endpoints.write(e.id, e)
        return len(over)

    async def abandon_stranded(self) -> int:
        """As the SQL repository: pending deliveries whose endpoint is not enabled go to
        the dead-letter list, their reason the endpoint's status."""
        status = {ep.id: ep.status for ep in self._endpoints}
        stranded = [
            d
            for d in self._deliveries
            if d.pending
            and status.get(d.endpoint_id, EndpointStatus.ENABLED) is not EndpointStatus.ENABLED
        ]
        for d in stranded:
            d.abandon(f"endpoint {status[d.endpoint_id].value}")
            d.version += 1
            self._deliveries.write(d.id, d)
        return len(stranded)

    async def lock_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        return self._endpoints.read(endpoint_id)

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
    ) -> list[RedeliveryCandidate]:
        """As the SQL repository: the merchant's published events in event order."""
        made = {d.event_id: d for d in self._deliveries if d.endpoint_id == endpoint_id}
        page = sorted(
            (
                e
                for e in self._outbox
                if e.merchant_id == merchant_id
                and e.published_at is not None
                and (not names or e.name in names)
                and (since is None or e.occurred_at >= since)
                and (until is None or e.occurred_at < until)
                and (not dead_only or (e.id in made and made[e.id].status is DeliveryStatus.DEAD))
                and (after is None or (e.occurred_at, e.id) > (after.occurred_at, after.event_id))
            ),
            key=lambda e: (e.occurred_at, e.id),
        )[:limit]
        return [
            RedeliveryCandidate(
                event_id=e.id,
                event_type=event_type(e.name),
                occurred_at=e.occurred_at,
                body="" if e.id in made else _body(e),
                delivery=self._deliveries.read(made[e.id].id) if e.id in made else None,
            )
            for e in page
        ]

    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        made = {(d.endpoint_id, d.event_id) for d in self._deliveries}
        for d in deliveries:
            # The unique index on (endpoint, event).
            assert (d.endpoint_id, d.event_id) not in made, "duplicate delivery"
            made.add((d.endpoint_id, d.event_id))
            self._deliveries.write(d.id, d)

    async def claim_deliveries(
        self, *, now: datetime, worker: str, lease_until: datetime, limit: int
    ) -> list[DeliveryJob]:
        due = [
            d
            for d in self._deliveries
            if d.pending
            and d.next_attempt_at is not None
            and d.next_attempt_at <= now
            and (d.lease_until is None or d.lease_until <= now)
        ][:limit]
        for d in due:
            d.claimed_by, d.lease_until, d.version = worker, lease_until, d.version + 1
            self._deliveries.write(d.id, d)
        return [self._job(d) for d in due]

    def _job(self, d: WebhookDelivery) -> DeliveryJob:
        """The delivery with its endpoint's URL and secrets (a fixed one without it)."""
        e = self._endpoints.read(d.endpoint_id)
        if e is None:
            return DeliveryJob(dataclasses.replace(d), "https://example.com/", "whsec_x")
        return DeliveryJob(
            dataclasses.replace(d), e.url, e.secret, e.previous_secret, e.previous_secret_until
        )

    async def get_delivery(self, delivery_id: str, merchant_id: str | None) -> WebhookDelivery:
        found = self._deliveries.read(delivery_id)
        assert found is not None
        return found

    async def save_delivery(self, delivery: WebhookDelivery) -> None:
        committed = self._deliveries.committed[delivery.id]
        if self._deliveries.rows[delivery.id].version != delivery.version or (
            committed.version > delivery.version
        ):
            raise ConcurrentUpdate(delivery.id)
        delivery.version += 1
        self._deliveries.write(delivery.id, delivery)

    async def get_endpoint(
        self, endpoint_id: str, merchant_id: str | None
    ) -> WebhookEndpoint | None:
        found = self._endpoints.read(endpoint_id)
        if found is None or merchant_id not in (None, found.merchant_id):
            return None
        return found

    async def save_endpoint(self, endpoint: WebhookEndpoint) -> None:
        if self._endpoints.rows[endpoint.id].version != endpoint.version:
            raise ConcurrentUpdate(endpoint.id)
        endpoint.version += 1
        self._endpoints.write(endpoint.id, endpoint)

    async def note_success(self, endpoint_id: str) -> None:
        endpoint = self._endpoints.read(endpoint_id)
        if endpoint is None:
            return  # endpoints are not what the test is about
        endpoint.failing_since, endpoint.dead_since_failing = None, 0
        self._endpoints.write(endpoint_id, endpoint)

    async def note_failure(self, endpoint_id: str, *, now: datetime, dead: bool) -> bool:
        endpoint = self._endpoints.read(endpoint_id)
        if endpoint is None or endpoint.status is not EndpointStatus.ENABLED:
            return False
        endpoint.failing_since = endpoint.failing_since or now
        endpoint.dead_since_failing += int(dead)
        self._endpoints.write(endpoint_id, endpoint)
        return True

    async def abandon_pending(self, endpoint_id: str, reason: str) -> int:
        waiting = [d for d in self._deliveries if d.pending and d.endpoint_id == endpoint_id]
        for d in waiting:
            d.abandon(reason)
            self._deliveries.write(d.id, d)
        return len(waiting)


class FakeInstallmentUnitOfWork(FakeTransaction):
    """A transaction on the stores a test hands it (`payments`, read only here, is the
    payments fake the test made: its own writes are its own service's)."""

    def __init__(
        self,
        *,
        plans: FakePlans | None = None,
        webhooks: FakeWebhooks | None = None,
        payments: Any = None,
    ) -> None:
        self.plans = None if plans is None else plans.transaction()
        self.webhooks = None if webhooks is None else webhooks.transaction()
        self.payments = payments
        self._parts = tuple(p for p in (self.plans, self.webhooks) if p is not None)

    async def __aenter__(self) -> FakeInstallmentUnitOfWork:
        await super().__aenter__()
        return self
