"""Installment plans stored with SQLAlchemy Core: the aggregate across three tables,
and the scheduler's claim (FOR UPDATE SKIP LOCKED plus a lease)."""

from __future__ import annotations

import builtins
import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from payorch.adapters.persistence.driver_sql import Prepared, Row, Sender
from payorch.adapters.persistence.sql import one_of_param
from payorch.adapters.persistence.tables import (
    events,
    installment_charges,
    installment_plans,
    installment_retries,
    installments,
)
from payorch.app.ids import new_id
from payorch.app.installment_ports import (
    Claim,
    Cursor,
    DuplicatePlan,
    DuplicateRetryRequest,
    RetryRequest,
)
from payorch.app.ports import ConcurrentUpdate
from payorch.domain.events import DomainEvent
from payorch.domain.installments import (
    AttemptKind,
    ChargeOutcome,
    Installment,
    InstallmentCharge,
    InstallmentPlan,
    InstallmentStatus,
    PlanStatus,
)
from payorch.domain.money import Currency

_CLAIMABLE = (InstallmentStatus.PENDING.value, InstallmentStatus.FAILED.value)
_PROCESSING = InstallmentStatus.PROCESSING.value


def _optimistic_update(table: Any, columns: tuple[str, ...]) -> Any:
    """UPDATE ... WHERE id = :w_id AND version = :w_version, built once: the scheduler
    saves thousands of plans, and building a statement per save costs more than running it."""
    return (
        update(table)
        .where(table.c.id == bindparam("w_id"), table.c.version == bindparam("w_version"))
        .values({c: bindparam(f"p_{c}", type_=table.c[c].type) for c in (*columns, "version")})
    )


# What a saved plan or installment may change (the rest is fixed at creation).
_PLAN_CHANGES = ("status", "cancel_reason", "event_sequence", "updated_at")
_INSTALLMENT_CHANGES = (
    "status",
    "attempts",
    "attempt_kind",
    "next_attempt_at",
    "first_failed_at",
    "dunning_step",
    "last_error_code",
    "last_error",
    "payment_id",
    "processor_payment_id",
    "paid_at",
    "claimed_by",
    "lease_until",
)
_SAVE_PLAN = _optimistic_update(installment_plans, _PLAN_CHANGES)
_SAVE_INSTALLMENT = _optimistic_update(installments, _INSTALLMENT_CHANGES)
# Their parameters: the changing columns, the next version, the row's key.
_SAVE_PARAMS = tuple(
    (*(f"p_{c}" for c in (*changes, "version")), "w_id", "w_version")
    for changes in (_PLAN_CHANGES, _INSTALLMENT_CHANGES)
)
# A plan's status, copied onto its installments when it changes (the claim's index).
_SAVE_PLAN_STATUS = (
    update(installments)
    .where(installments.c.plan_id == bindparam("w_plan_id"))
    .values(plan_status=bindparam("p_plan_status"))
)
_ACTIVE = PlanStatus.ACTIVE.value
# What an outage's pause added to its run changes in the run's row (found by its attempt).
_FOLDED = ("attempt", "payment_id", "message", "at", "times", "first_at")
_SAVE_FOLDED_CHARGE = (
    update(installment_charges)
    .where(
        installment_charges.c.installment_id == bindparam("w_installment_id"),
        installment_charges.c.attempt == bindparam("w_attempt"),
    )
    .values({c: bindparam(f"p_{c}", type_=installment_charges.c[c].type) for c in _FOLDED})
)


@dataclass(frozen=True, slots=True)
class InstallmentStatements:
    """The statements of the scheduler's claims and group saves, built once per
    dialect (driver_sql.py): run by SQLAlchemy on SQLite, by the driver on PostgreSQL.
    Each is the only place its SQL is written; the repository's other statements
    (one plan's save or read, a cancel's, a retry's) are built per call."""

    # A claim's two SELECTs: Core on both databases (see claim_due).
    stale: Any
    due: Any
    claim: Prepared
    plans: Prepared
    installments: Prepared
    charges: Prepared
    plan_versions: Prepared
    installment_versions: Prepared
    save_plan: Prepared
    save_installment: Prepared
    insert_charges: Prepared
    insert_events: Prepared

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> InstallmentStatements:
        i, p = installments, installment_plans

        def build(stmt: Any, *params: str) -> Prepared:
            return Prepared.build(stmt, dialect, params)

        def claimable(query: Any) -> Any:
            # PostgreSQL: rows another worker is claiming are skipped, not waited for.
            # SQLite ignores it; there the transaction holds the only write lock.
            return query.with_for_update(skip_locked=True, of=installments)

        def versions(table: Any) -> Prepared:
            query = (
                select(table.c.id, table.c.version)
                .where(one_of_param(dialect, table.c.id, "ids"))
                .order_by(table.c.id)
                .with_for_update()
            )
            return build(query, "ids")

        def insert(table: Any) -> Prepared:
            return build(table.insert(), *(c.name for c in table.c))

        fresh = i.c.status != _PROCESSING
        return cls(
            # Its worker paused or died mid-charge: taken over first, same attempt.
            stale=claimable(
                select(i.c.id, i.c.plan_id, i.c.status)
                .where(i.c.status == _PROCESSING, i.c.lease_until <= bindparam("now"))
                .order_by(i.c.lease_until)
                .limit(bindparam("limit"))
            ),
            # Read in order from the partial index of claimable installments (tables.py)
            # and stopped at `limit`: the cost of a claim does not grow with the backlog.
            due=claimable(
                select(i.c.id, i.c.plan_id, i.c.status)
                .join(p, p.c.id == i.c.plan_id)
                .where(
                    # The statuses are written into the SQL, not bound, so that a
                    # prepared statement's generic plan still matches the index's
                    # predicate.
                    i.c.status.in_(bindparam("claimable", _CLAIMABLE, literal_execute=True)),
                    i.c.plan_status == bindparam("charging", _ACTIVE, literal_execute=True),
                    i.c.next_attempt_at <= bindparam("now"),
                    # The plan's own row decides (the copy is for the index).
                    p.c.status == _ACTIVE,
                )
                .order_by(i.c.next_attempt_at)
                .limit(bindparam("limit"))
            ),
            claim=build(
                update(i)
                .where(one_of_param(dialect, i.c.id, "ids"))
                .values(
                    attempts=case((fresh, i.c.attempts + 1), else_=i.c.attempts),
                    attempt_kind=case((fresh, AttemptKind.SCHEDULED.value), else_=i.c.attempt_kind),
                    status=_PROCESSING,
                    claimed_by=bindparam("worker", type_=i.c.claimed_by.type),
                    lease_until=bindparam("until", type_=i.c.lease_until.type),
                    version=i.c.version + 1,
                )
                .returning(i.c.id, i.c.attempts),
                "ids",
                "worker",
                "until",
            ),
            plans=build(select(p).where(one_of_param(dialect, p.c.id, "ids")), "ids"),
            installments=build(
                select(i)
                .where(one_of_param(dialect, i.c.plan_id, "ids"))
                .order_by(i.c.plan_id, i.c.sequence),
                "ids",
            ),
            charges=build(
                select(installment_charges)
                .where(one_of_param(dialect, installment_charges.c.installment_id, "ids"))
                .order_by(installment_charges.c.installment_id, installment_charges.c.attempt),
                "ids",
            ),
            plan_versions=versions(p),
            installment_versions=versions(i),
            save_plan=build(_SAVE_PLAN, *_SAVE_PARAMS[0]),
            save_installment=build(_SAVE_INSTALLMENT, *_SAVE_PARAMS[1]),
            insert_charges=insert(installment_charges),
            insert_events=insert(events),
        )


def _plan_row(p: InstallmentPlan) -> dict[str, Any]:
    return {
        "id": p.id,
        "merchant_id": p.merchant_id,
        "request_id": p.request_id,
        "order_id": p.order_id,
        "fingerprint": p.fingerprint,
        "currency": p.currency.code,
        "total_minor": p.total_minor,
        "token": p.token,
        "customer_id": p.customer_id,
        "interval_days": p.interval_days,
        "dunning_days": list(p.dunning_days),
        "status": p.status.value,
        "cancel_reason": p.cancel_reason,
        "version": p.version,
        "event_sequence": p.event_sequence,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


def _installment_row(p: InstallmentPlan, i: Installment) -> dict[str, Any]:
    return {
        "id": i.id,
        "plan_id": p.id,
        "merchant_id": p.merchant_id,
        "sequence": i.sequence,
        "amount_minor": i.amount_minor,
        "due_at": i.due_at,
        "status": i.status.value,
        "attempts": i.attempts,
        "attempt_kind": i.attempt_kind.value,
        "next_attempt_at": i.next_attempt_at,
        "first_failed_at": i.first_failed_at,
        "dunning_step": i.dunning_step,
        "last_error_code": i.last_error_code,
        "last_error": i.last_error[:2000],
        "payment_id": i.payment_id,
        "processor_payment_id": i.processor_payment_id,
        "paid_at": i.paid_at,
        "claimed_by": i.claimed_by,
        "lease_until": i.lease_until,
        "version": i.version,
        "plan_status": p.status.value,
    }


def _charge_row(i: Installment, c: InstallmentCharge) -> dict[str, Any]:
    return {
        "installment_id": i.id,
        "attempt": c.attempt,
        "kind": c.kind.value,
        "payment_id": c.payment_id,
        "outcome": c.outcome.value,
        "error_code": c.error_code,
        "message": c.message[:2000],
        "at": c.at,
        "times": c.times,
        "first_at": c.first_at,
    }


def event_payload(e: DomainEvent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(e):
        value = getattr(e, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[f.name] = value
    return out


class SqlAlchemyInstallmentPlanRepository:
    def __init__(self, conn: AsyncConnection, statements: InstallmentStatements) -> None:
        self._conn = conn
        self._sql = statements
        self._send = Sender(conn)

    async def add(self, plan: InstallmentPlan) -> None:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(installment_plans.insert(), [_plan_row(plan)])
        except IntegrityError as exc:
            raise DuplicatePlan(plan.id) from exc
        await self._conn.execute(
            installments.insert(), [_installment_row(plan, i) for i in plan.installments]
        )
        for i in plan.installments:
            i.changed = False
        plan.status_changed = False
        await self._write_children(plan)

    async def save(self, plan: InstallmentPlan) -> None:
        result = await self._conn.execute(_SAVE_PLAN, _plan_params(plan))
        if result.rowcount != 1:
            raise ConcurrentUpdate(plan.id)
        for i in plan.installments:
            if not i.changed:
                continue
            done = await self._conn.execute(_SAVE_INSTALLMENT, _installment_params(plan, i))
            if done.rowcount != 1:
                raise ConcurrentUpdate(i.id)
        await self._write_plan_status(plan)
        try:
            await self._write_children(plan)
        except IntegrityError as exc:
            # Someone recorded this attempt already; the unit of work rolls back.
            raise ConcurrentUpdate(plan.id) from exc
        _saved(plan)

    async def save_many(self, plans: Sequence[InstallmentPlan]) -> None:
        """save() for several plans in this transaction, a statement per kind, not per
        plan: the rows are locked and their versions checked first (plans, then
        installments, each in id order, as save() locks them), then updated together."""
        plans = sorted(plans, key=lambda p: p.id)
        if not plans:
            return
        changed = [(p, i) for p in plans for i in p.installments if i.changed]
        await self._check_versions(self._sql.plan_versions, {p.id: p.version for p in plans})
        await self._check_versions(
            self._sql.installment_versions, {i.id: i.version for _, i in changed}
        )
        await self._send.many(self._sql.save_plan, [_plan_params(plan) for plan in plans])
        await self._send.many(
            self._sql.save_installment, [_installment_params(plan, i) for plan, i in changed]
        )
        await self._write_plan_status(*plans)
        try:
            await self._write_children(*plans)
        except (IntegrityError, asyncpg.IntegrityConstraintViolationError) as exc:
            # Someone recorded one of these attempts already; the unit of work rolls back.
            raise ConcurrentUpdate(plans[0].id) from exc
        for plan in plans:
            _saved(plan)

    async def _write_plan_status(self, *plans: InstallmentPlan) -> None:
        """Copy a changed plan status onto the plan's installments, which the claim's
        partial index reads (a breached plan's due installments are not claimable)."""
        changed = [
            {"w_plan_id": p.id, "p_plan_status": p.status.value} for p in plans if p.status_changed
        ]
        if changed:
            await self._conn.execute(_SAVE_PLAN_STATUS, changed)

    async def _check_versions(self, query: Prepared, expected: dict[str, int]) -> None:
        """Lock the rows (FOR UPDATE; SQLite's BEGIN IMMEDIATE holds the write lock
        already) and raise ConcurrentUpdate unless each is at the version read."""
        if not expected:
            return
        rows = await self._send.rows(query, {"ids": list(expected)})
        stored: dict[str, int] = {r["id"]: r["version"] for r in rows}
        for key, version in expected.items():
            if stored.get(key) != version:
                raise ConcurrentUpdate(key)

    async def _write_children(self, *plans: InstallmentPlan) -> None:
        # An outage's pause added to its run's stored row: that row is rewritten.
        folded = [
            (i, i.folded_attempt, i.charges[i.stored_charges])
            for plan in plans
            for i in plan.installments
            if i.folded_attempt is not None
        ]
        if folded:
            done = await self._conn.execute(
                _SAVE_FOLDED_CHARGE,
                [
                    {"w_installment_id": i.id, "w_attempt": attempt}
                    | {f"p_{k}": v for k, v in _charge_row(i, c).items() if k in _FOLDED}
                    for i, attempt, c in folded
                ],
            )
            if done.rowcount != len(folded):
                raise ConcurrentUpdate(folded[0][0].id)
        charges = [
            _charge_row(i, c)
            for plan in plans
            for i in plan.installments
            for c in i.charges[i.stored_charges + (i.folded_attempt is not None) :]
        ]
        await self._send.many(self._sql.insert_charges, charges)
        outbox = [
            {
                "id": new_id("evt"),
                # The outbox's aggregate id column: a plan id here.
                "payment_id": plan.id,
                "merchant_id": plan.merchant_id,
                "sequence": e.sequence,
                "name": e.name,
                "payload": event_payload(e),
                "occurred_at": plan.updated_at,
                "published_at": None,
            }
            for plan in plans
            for e in plan.pending_events
        ]
        await self._send.many(self._sql.insert_events, outbox)
        for plan in plans:
            for i in plan.installments:
                i.stored_charges = len(i.charges)
                i.folded_attempt = None
            plan.pending_events.clear()

    async def get(self, plan_id: str, merchant_id: str | None) -> InstallmentPlan | None:
        query = select(installment_plans).where(installment_plans.c.id == plan_id)
        if merchant_id is not None:
            query = query.where(installment_plans.c.merchant_id == merchant_id)
        found = await self._load(query)
        return found[0] if found else None

    async def get_many(self, plan_ids: Sequence[str]) -> dict[str, InstallmentPlan]:
        if not plan_ids:
            return {}
        rows = await self._send.rows(self._sql.plans, {"ids": list(plan_ids)})
        return {p.id: p for p in await self._plans(rows)}

    async def get_by_installment(
        self, installment_id: str, merchant_id: str | None
    ) -> InstallmentPlan | None:
        plan_id = (
            await self._conn.execute(
                select(installments.c.plan_id).where(installments.c.id == installment_id)
            )
        ).scalar_one_or_none()
        if plan_id is None:
            return None
        return await self.get(plan_id, merchant_id)

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
        t = installment_plans
        query = select(t)
        if merchant_id is not None:
            query = query.where(t.c.merchant_id == merchant_id)
        if status is not None:
            query = query.where(t.c.status == status.value)
        if order_id is not None:
            query = query.where(t.c.order_id == order_id)
        if customer_id is not None:
            query = query.where(t.c.customer_id == customer_id)
        if after is not None:
            query = query.where(
                or_(
                    t.c.created_at < after.created_at,
                    and_(t.c.created_at == after.created_at, t.c.id < after.id),
                )
            )
        return await self._load(query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit))

    async def claim_due(
        self, *, now: datetime, worker: str, lease_until: datetime, limit: int
    ) -> Sequence[Claim]:
        # Its worker paused or died mid-charge: take it over first, same attempt. Whatever
        # the plan's status: on a cancelled or breached plan the charger makes no new
        # charge, it records the one already started or withdraws the claim.
        # The two SELECTs go through SQLAlchemy on both databases (once per claim, seen
        # by its events like any other statement); the rest of a claim's and its plans'
        # statements go to the driver on PostgreSQL.
        stale = await self._conn.execute(self._sql.stale, {"now": now, "limit": limit})
        rows = list(stale.mappings().all())
        if len(rows) < limit:
            due = await self._conn.execute(self._sql.due, {"now": now, "limit": limit - len(rows)})
            rows.extend(due.mappings().all())
        if not rows:
            return []
        claimed = await self._send.rows(
            self._sql.claim,
            {"ids": [r["id"] for r in rows], "worker": worker, "until": lease_until},
        )
        attempts: dict[str, int] = {r["id"]: r["attempts"] for r in claimed}
        return [
            Claim(r["id"], r["plan_id"], attempts[r["id"]], reclaimed=r["status"] == _PROCESSING)
            for r in rows
        ]

    async def hold(self, installment_id: str, attempt: int, until: datetime) -> None:
        i = installments
        await self._conn.execute(
            update(i)
            .where(i.c.id == installment_id, i.c.status == _PROCESSING, i.c.attempts == attempt)
            .values(lease_until=until, version=i.c.version + 1)
        )

    async def add_retry_request(
        self, merchant_id: str, request_id: str, retry: RetryRequest, at: datetime
    ) -> None:
        row = {
            "merchant_id": merchant_id,
            "request_id": request_id,
            "installment_id": retry.installment_id,
            "attempt": retry.attempt,
            "created_at": at,
        }
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(installment_retries.insert(), [row])
        except IntegrityError as exc:
            raise DuplicateRetryRequest(request_id) from exc

    async def get_retry_request(self, merchant_id: str, request_id: str) -> RetryRequest | None:
        t = installment_retries
        row = (
            await self._conn.execute(
                select(t.c.installment_id, t.c.attempt).where(
                    t.c.merchant_id == merchant_id, t.c.request_id == request_id
                )
            )
        ).first()
        return RetryRequest(row.installment_id, row.attempt) if row is not None else None

    async def _load(self, query: Any) -> builtins.list[InstallmentPlan]:
        return await self._plans((await self._conn.execute(query)).mappings().all())

    async def _plans(self, rows: Sequence[Row]) -> builtins.list[InstallmentPlan]:
        """The plans of these plan rows, with their installments and charges."""
        if not rows:
            return []
        inst_rows = await self._send.rows(self._sql.installments, {"ids": [r["id"] for r in rows]})
        charge_rows = await self._send.rows(
            self._sql.charges, {"ids": [r["id"] for r in inst_rows]}
        )
        charges: dict[str, builtins.list[InstallmentCharge]] = {}
        for c in charge_rows:
            charges.setdefault(c["installment_id"], []).append(
                InstallmentCharge(
                    attempt=c["attempt"],
                    kind=AttemptKind(c["kind"]),
                    payment_id=c["payment_id"],
                    outcome=ChargeOutcome(c["outcome"]),
                    error_code=c["error_code"],
                    message=c["message"],
                    at=c["at"],
                    times=c["times"],
                    first_at=c["first_at"],
                )
            )
        by_plan: dict[str, builtins.list[Installment]] = {}
        for r in inst_rows:
            own = charges.get(r["id"], [])
            by_plan.setdefault(r["plan_id"], []).append(
                Installment(
                    id=r["id"],
                    plan_id=r["plan_id"],
                    sequence=r["sequence"],
                    amount_minor=r["amount_minor"],
                    due_at=r["due_at"],
                    status=InstallmentStatus(r["status"]),
                    attempts=r["attempts"],
                    attempt_kind=AttemptKind(r["attempt_kind"]),
                    next_attempt_at=r["next_attempt_at"],
                    first_failed_at=r["first_failed_at"],
                    dunning_step=r["dunning_step"],
                    last_error_code=r["last_error_code"],
                    last_error=r["last_error"],
                    payment_id=r["payment_id"],
                    processor_payment_id=r["processor_payment_id"],
                    paid_at=r["paid_at"],
                    claimed_by=r["claimed_by"],
                    lease_until=r["lease_until"],
                    charges=own,
                    stored_charges=len(own),
                    version=r["version"],
                )
            )
        return [
            InstallmentPlan(
                id=r["id"],
                merchant_id=r["merchant_id"],
                request_id=r["request_id"],
                order_id=r["order_id"],
                fingerprint=r["fingerprint"],
                currency=Currency(r["currency"]),
                total_minor=r["total_minor"],
                token=r["token"],
                customer_id=r["customer_id"],
                interval_days=r["interval_days"],
                dunning_days=tuple(r["dunning_days"]),
                installments=by_plan.get(r["id"], []),
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                status=PlanStatus(r["status"]),
                cancel_reason=r["cancel_reason"],
                version=r["version"],
                event_sequence=r["event_sequence"],
            )
            for r in rows
        ]


def _plan_params(plan: InstallmentPlan) -> dict[str, Any]:
    """_SAVE_PLAN's parameters: the changing columns, the next version, the row's key."""
    row = _plan_row(plan)
    params = {f"p_{k}": row[k] for k in _PLAN_CHANGES}
    params.update(p_version=plan.version + 1, w_id=plan.id, w_version=plan.version)
    return params


def _installment_params(plan: InstallmentPlan, i: Installment) -> dict[str, Any]:
    values = _installment_row(plan, i)
    params = {f"p_{k}": values[k] for k in _INSTALLMENT_CHANGES}
    params.update(p_version=i.version + 1, w_id=i.id, w_version=i.version)
    return params


def _saved(plan: InstallmentPlan) -> None:
    """After a save: the versions moved on, nothing is pending."""
    plan.version += 1
    plan.status_changed = False
    for i in plan.installments:
        if i.changed:
            i.version += 1
            i.changed = False
