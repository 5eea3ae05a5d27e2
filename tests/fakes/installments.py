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

from payorch.app.installment_ports import DeliveryJob, DuplicateRetryRequest, RetryRequest
from payorch.app.ports import ConcurrentUpdate
from payorch.domain.installments import InstallmentPlan
from payorch.domain.webhook_delivery import EndpointStatus, WebhookDelivery, WebhookEndpoint
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


class FakeWebhooks:
    """Deliveries, and the endpoint they go to when a test is about endpoints, as
    committed."""

    def __init__(
        self, deliveries: list[WebhookDelivery], endpoint: WebhookEndpoint | None = None
    ) -> None:
        self.rows: dict[str, WebhookDelivery] = {d.id: d for d in deliveries}
        self.endpoints: dict[str, WebhookEndpoint] = {}
        if endpoint is not None:
            self.endpoints[endpoint.id] = endpoint

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
        self._tables = (self._deliveries, self._endpoints)

    async def fan_out(self, *, now: datetime, limit: int) -> int:
        return 0

    async def abandon_stranded(self) -> int:
        return 0

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
        return [DeliveryJob(dataclasses.replace(d), "https://example.com/", "whsec_x") for d in due]

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

    async def get_endpoint(self, endpoint_id: str, merchant_id: str | None) -> WebhookEndpoint:
        found = self._endpoints.read(endpoint_id)
        assert found is not None
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
