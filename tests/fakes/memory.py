"""In-memory fakes of the app's ports, for unit tests of the app layer."""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from payorch.app.auth import Principal
from payorch.app.ports import (
    ChargeClaim,
    ConcurrentUpdate,
    DuplicateRequest,
    PageCursor,
    RefundRequest,
    StoredEvent,
)
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import Payment, PaymentStatus
from tests.fakes.transaction import FakeTransaction, StagedLog, StagedRepository, StagedRows

# Another writer that saves a payment first: given the payment's id, it changes it.
Writer = Callable[[str], Awaitable[object]]
# The installment plans as committed, by id (tests.fakes.installments.FakePlans.plans),
# for a claimed charge's insert to look at, as the SQL insert looks at their tables.
PlanTables = dict[str, Any]


def claim_admits(plans: PlanTables | None, claim: ChargeClaim) -> bool:
    """Whether the claimed charge's insert takes place, as the SQL one decides it: on the
    plan as committed (InstallmentPlan.admits_charge)."""
    plan = None if plans is None else plans.get(claim.plan_id)
    if plan is None:
        return False
    return bool(plan.admits_charge(claim.installment_id, claim.attempt, claim.lease_until))


class FakePaymentRepository(StagedRepository):
    """Payments, refunds and events as one transaction sees them (StagedRows: a snapshot
    taken when it began, plus its own writes). Its writes are pending until the unit of
    work commits them, and dropped if it does not, as the database rolls back what a
    transaction never committed."""

    def __init__(
        self,
        committed: dict[str, Payment],
        refunds: dict[tuple[str, str], RefundRequest],
        *,
        domain_events: list[Any],
        stored_events: list[StoredEvent],
        writers: collections.deque[Writer],
        plans: PlanTables | None = None,
    ) -> None:
        self._plans = plans
        self._payments = StagedRows(committed)
        self._refunds = StagedRows(refunds)
        self._events = StagedLog(domain_events)
        self._stored_events = StagedLog(stored_events)
        self._writers = writers
        self._tables = (self._payments, self._refunds, self._events, self._stored_events)

    @property
    def _store(self) -> dict[str, Payment]:
        return self._payments.rows

    @property
    def _committed(self) -> dict[str, Payment]:
        return self._payments.committed

    async def add(self, payment: Payment, *, only_if: ChargeClaim | None = None) -> None:
        if only_if is not None and not claim_admits(self._plans, only_if):
            raise DuplicateRequest(payment.request_id)  # no row inserted, as in SQL
        # The unique index sees rows committed since the transaction began, too.
        if any(
            p.merchant_id == payment.merchant_id and p.request_id == payment.request_id
            for p in (*self._store.values(), *self._committed.values())
        ):
            raise DuplicateRequest(payment.request_id)
        self._write(payment)

    async def save(self, payment: Payment) -> None:
        if self._writers:
            await self._writers.popleft()(payment.id)
        stored = self._store.get(payment.id)
        committed = self._committed.get(payment.id)
        if stored is None or stored.version != payment.version:
            raise ConcurrentUpdate(payment.id)
        if committed is not None and committed.version > payment.version:
            raise ConcurrentUpdate(payment.id)
        payment.version += 1
        self._write(payment)

    def _write(self, payment: Payment) -> None:
        self._events.extend(payment.pending_events)
        self._stored_events.extend(
            StoredEvent(
                f"evt_{len(self._stored_events) + n}",
                payment.id,
                payment.merchant_id,
                e.sequence,
                e.name,
                _event_payload(e),
                payment.updated_at,
            )
            for n, e in enumerate(payment.pending_events)
        )
        payment.pending_events.clear()
        for s in payment.steps:
            s.stored_attempts = len(s.attempts)
        payment.mark_stored()
        self._payments.write(payment.id, payment)

    async def refund_request(self, payment_id: str, request_id: str) -> RefundRequest | None:
        key = (payment_id, request_id)
        return self._refunds.rows.get(key) or self._refunds.committed.get(key)

    async def refund_count(self, payment_id: str) -> int:
        keys = {*self._refunds.rows, *self._refunds.committed}
        return sum(1 for pid, _ in keys if pid == payment_id)

    async def add_refund(
        self, payment_id: str, request_id: str, refund: RefundRequest, now: datetime
    ) -> bool:
        key = (payment_id, request_id)
        # The unique index sees rows committed since the transaction began, too.
        if key in self._refunds.rows or key in self._refunds.committed:
            return False
        self._refunds.write(key, dataclasses.replace(refund, requested_at=now))
        return True

    async def events_of(self, payment_id: str) -> list[StoredEvent]:
        found = [e for e in self._stored_events if e.payment_id == payment_id]
        return sorted(found, key=lambda e: e.sequence)

    async def get(self, payment_id: str, merchant_id: str | None) -> Payment | None:
        p = self._store.get(payment_id)
        if p is None or (merchant_id is not None and p.merchant_id != merchant_id):
            return None
        return _read(p)

    async def get_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        for p in self._store.values():
            if p.merchant_id == merchant_id and p.request_id == request_id:
                return _read(p)
        return None

    async def list(
        self,
        merchant_id: str | None,
        *,
        limit: int,
        after: PageCursor | None,
        status: PaymentStatus | None,
        created_after: datetime | None,
    ) -> Sequence[Payment]:
        found = [
            p
            for p in self._store.values()
            if (merchant_id is None or p.merchant_id == merchant_id)
            and (status is None or p.status is status)
            and (created_after is None or p.created_at >= created_after)
            and (after is None or (p.created_at, p.id) < (after.created_at, after.payment_id))
        ]
        found.sort(key=lambda p: (p.created_at, p.id), reverse=True)
        return [_read(p) for p in found[:limit]]

    async def list_unresolved(
        self, *, now: datetime, processing_before: datetime, limit: int
    ) -> Sequence[Payment]:
        found = [
            p
            for p in self._store.values()
            if (
                p.status is not PaymentStatus.PROCESSING
                and p.next_reconcile_at is not None
                and p.next_reconcile_at <= now
            )
            or (
                p.status is PaymentStatus.PROCESSING
                and p.updated_at <= processing_before
                and (p.next_reconcile_at is None or p.next_reconcile_at <= now)
            )
            # Paused with no expiry stored (older code): due by the one it has.
            or (
                p.status is PaymentStatus.REQUIRES_ACTION
                and p.next_reconcile_at is None
                and (expires := p.action_expires_at) is not None
                and expires <= now
            )
        ]
        found.sort(key=lambda p: p.updated_at)
        return [_read(p) for p in found[:limit]]

    async def claim(
        self, payment: Payment, until: datetime, *, touched: datetime | None = None
    ) -> bool:
        stored = self._store.get(payment.id)
        committed = self._committed.get(payment.id)
        if stored is None or stored.version != payment.version:
            return False
        if committed is not None and committed.version > payment.version:
            return False
        taken = copy.deepcopy(stored)
        taken.version, taken.next_reconcile_at = payment.version + 1, until
        if touched is not None:
            taken.updated_at = payment.updated_at = touched
        self._payments.write(payment.id, taken)
        payment.version += 1
        return True


def _read(stored: Payment) -> Payment:
    """A payment as a read from the database builds it (a test may have changed the
    stored one in place: the status it holds is the one read)."""
    p = copy.deepcopy(stored)
    p.mark_stored()
    return p


def _event_payload(e: Any) -> dict[str, Any]:
    """An event's fields as the events table keeps them (enums by value)."""
    return {
        f.name: (v.value if isinstance(v := getattr(e, f.name), enum.Enum) else v)
        for f in dataclasses.fields(e)
    }


class FakeInboundEventLog:
    """Seen events, as the table holds them: what a unit of work remembers or forgets
    counts once it commits."""

    def __init__(self, seen: set[str]) -> None:
        self._seen = seen
        self.remembered: set[str] = set()
        self.forgotten: set[str] = set()

    async def remember(self, event_id: str, source: str, now: datetime) -> bool:
        if event_id in self.remembered or (
            event_id in self._seen and event_id not in self.forgotten
        ):
            return False
        self.remembered.add(event_id)
        self.forgotten.discard(event_id)
        return True

    async def forget(self, event_id: str) -> None:
        self.remembered.discard(event_id)
        self.forgotten.add(event_id)

    def begin(self) -> None:
        self.rollback()

    def commit(self) -> None:
        self._seen.difference_update(self.forgotten)
        self._seen.update(self.remembered)
        self.rollback()

    def rollback(self) -> None:
        self.remembered.clear()
        self.forgotten.clear()


class FakeProcessorCustomers:
    """Bindings of processor customers to merchants; a claim's new ones land on commit."""

    def __init__(self, owners: dict[str, str], claims: list[tuple[str, frozenset[str]]]) -> None:
        self._owners = owners
        self._claims = claims
        self._new: dict[str, str] = {}

    async def claim(
        self, merchant_id: str, customer_ids: Collection[str], now: datetime
    ) -> dict[str, str]:
        self._claims.append((merchant_id, frozenset(customer_ids)))
        for c in customer_ids:
            if c not in self._owners:
                self._new.setdefault(c, merchant_id)
        return {c: self._owners.get(c) or self._new[c] for c in customer_ids}

    def begin(self) -> None:
        self.rollback()

    def commit(self) -> None:
        for c, m in self._new.items():
            self._owners.setdefault(c, m)
        self.rollback()

    def rollback(self) -> None:
        self._new.clear()


class FakeUnitOfWork(FakeTransaction):
    """Every write is pending until commit() and dropped when the unit of work ends
    without one (or by an exception), as SqlAlchemyUnitOfWork's rollback drops it;
    writes after a commit are pending again."""

    def __init__(
        self,
        store: dict[str, Payment],
        repo_events: list[object],
        refunds: dict[tuple[str, str], RefundRequest],
        seen: set[str],
        writers: collections.deque[Writer] | None = None,
        customers: FakeProcessorCustomers | None = None,
        stored_events: list[StoredEvent] | None = None,
        plans: PlanTables | None = None,
    ) -> None:
        self.payments = FakePaymentRepository(
            store,
            refunds,
            domain_events=repo_events,
            stored_events=[] if stored_events is None else stored_events,
            writers=collections.deque() if writers is None else writers,
            plans=plans,
        )
        self.inbound_events = FakeInboundEventLog(seen)
        self.customers = customers or FakeProcessorCustomers({}, [])
        self._parts = (self.payments, self.inbound_events, self.customers)

    async def __aenter__(self) -> FakeUnitOfWork:
        await super().__aenter__()
        return self


class FakeUnitOfWorkFactory:
    def __init__(self) -> None:
        self.store: dict[str, Payment] = {}
        # Committed domain events, in order; and as the events table holds them.
        self.events: list[Any] = []
        self.stored_events: list[StoredEvent] = []
        self.refunds: dict[tuple[str, str], RefundRequest] = {}
        self.seen_events: set[str] = set()
        self.writers: collections.deque[Writer] = collections.deque()
        # Processor customer -> the merchant it is bound to; every claim, as made.
        self.customer_owners: dict[str, str] = {}
        self.customer_claims: list[tuple[str, frozenset[str]]] = []
        # The installment plans a claimed charge's insert looks at (FakePlans.plans).
        self.plans: PlanTables | None = None

    def __call__(self) -> FakeUnitOfWork:
        customers = FakeProcessorCustomers(self.customer_owners, self.customer_claims)
        return FakeUnitOfWork(
            self.store,
            self.events,
            self.refunds,
            self.seen_events,
            self.writers,
            customers,
            self.stored_events,
            self.plans,
        )

    def saved_first(self, *writers: Writer | None) -> None:
        """The next saves of a payment, one per writer, each lose to another writer that
        saves the payment just before: the one given (say, another call on the service,
        run to its end), or with None one that only stores a new version of it."""
        self.writers.extend(w or self._bump for w in writers)

    async def _bump(self, payment_id: str) -> None:
        self.store[payment_id].version += 1

    async def insert_payment(self, payment: Payment, *, only_if: ChargeClaim | None = None) -> None:
        async with self() as uow:
            await uow.payments.add(payment, only_if=only_if)
            await uow.commit()

    async def update_payment(self, payment: Payment) -> None:
        async with self() as uow:
            await uow.payments.save(payment)
            await uow.commit()

    async def payment_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        async with self() as uow:
            return await uow.payments.get_by_request(merchant_id, request_id)


class FakeMerchantConfigStore:
    def __init__(self) -> None:
        self.versions: dict[str, list[MerchantConfig]] = {}

    async def current(self, merchant_id: str) -> MerchantConfig | None:
        found = self.versions.get(merchant_id)
        return found[-1] if found else None

    async def version(self, merchant_id: str, version: int) -> MerchantConfig | None:
        return next((c for c in self.versions.get(merchant_id, []) if c.version == version), None)

    async def save(self, config: MerchantConfig, now: datetime) -> None:
        found = self.versions.setdefault(config.merchant_id, [])
        if found and found[-1].version >= config.version:
            raise ConcurrentUpdate(config.merchant_id)
        found.append(config)


class FakeApiKeyStore:
    """Active keys by hash; counts the reads of each hash, as queries would be."""

    def __init__(self) -> None:
        self.active: dict[str, Principal] = {}
        self.reads: collections.Counter[str] = collections.Counter()

    async def find(self, key_hash: str) -> Principal | None:
        self.reads[key_hash] += 1
        return self.active.get(key_hash)
