"""Payments stored with SQLAlchemy Core: one aggregate across four tables."""

from __future__ import annotations

import builtins
import dataclasses
import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnClause

from payorch.adapters.persistence.tables import (
    NOT_MEASURED,
    UTCDateTime,
    attempts,
    events,
    inbound_events,
    installment_plans,
    installments,
    payment_steps,
    payments,
    refunds,
)
from payorch.app.ids import new_id
from payorch.app.ports import (
    ChargeClaim,
    ConcurrentUpdate,
    DuplicateRequest,
    PageCursor,
    RefundRequest,
    StoredEvent,
    UnreadablePayment,
)
from payorch.domain.events import DomainEvent
from payorch.domain.installments import InstallmentStatus, PlanStatus
from payorch.domain.money import Currency
from payorch.domain.payment import (
    ACTION_TIMEOUT,
    OWING,
    Attempt,
    CaptureMode,
    FallbackMethod,
    MethodType,
    Owed,
    Payment,
    PaymentStatus,
    RawError,
    Step,
    StepStatus,
)
from payorch.domain.results import ErrorCode, Outcome

# What reading a stored row into the domain raises when the row holds a value no version
# of the code writes (an unknown enum value, JSON of the wrong shape or none at all);
# the database unreachable or a query refused raise SQLAlchemy's errors, none of these.
UNREADABLE_ROW = (ValueError, TypeError, LookupError)

# A row's values in its table's column order (tables.py), so that the payment writer
# (payment_writes.py) binds them as they are; the units of work take them by name.
# An enum's stored value is read as `_value_`, what `.value` returns: `.value` is a
# property, two Python calls, and a payment's rows read a dozen of them per write.
PAYMENT_COLUMNS = tuple(c.name for c in payments.c)
STEP_COLUMNS = tuple(c.name for c in payment_steps.c)
ATTEMPT_COLUMNS = tuple(c.name for c in attempts.c if c.name != "id")  # the database numbers them
EVENT_COLUMNS = tuple(c.name for c in events.c)


def _payment_values(p: Payment) -> list[Any]:
    return [
        p.id,
        p.merchant_id,
        p.request_id,
        p.fingerprint,
        p.currency.code,
        p.amount_minor,
        p.capture_mode._value_,
        p.allow_partial,
        p.config_version,
        p.metadata,
        p.off_session,
        p.status._value_,
        NOT_MEASURED if p.orchestration_ms is None else p.orchestration_ms,
        p.final_error._value_,
        p.final_error_message,
        p.version,
        p.event_sequence,
        p.created_at,
        p.updated_at,
        p.reconcile_attempts,
        p.next_reconcile_at,
        [[f.method._value_, f.token, f.customer_id] for f in p.fallbacks],
        p.authorize_only,
        p.owed._value_,
        p.save_for_off_session,
    ]


def _step_values(p: Payment, s: Step) -> list[Any]:
    return [
        p.id,
        s.index,
        s.method._value_,
        s.token,
        s.customer_id,
        s.amount_minor,
        list(s.processors),
        s.status._value_,
        s.outcome._value_ if s.outcome else None,
        s.error_code._value_,
        s.processor,
        s.processor_payment_id,
        s.next_action_type,
        s.client_secret,
        s.captured_minor,
        s.refunded_minor,
        s.generation,
        s.refund_holds,
    ]


def _attempt_values(p: Payment, s: Step, a: Attempt) -> list[Any]:
    return [
        p.id,
        p.merchant_id,
        s.index,
        a.number,
        a.operation,
        a.processor,
        a.idempotency_key,
        a.started_at,
        a.ended_at,
        a.latency_ms,
        a.outcome._value_,
        a.error_code._value_,
        a.raw.type,
        a.raw.code,
        a.raw.decline_code,
        a.raw.advice_code[:64],
        a.raw.http_status,
        a.raw.request_id,
        a.raw.message[:2000],
        a.delay_before_ms,
        a.routing_reason,
        a.retry_decision,
        a.processor_payment_id,
    ]


# Each event class's field names, looked up once: dataclasses.fields() builds its tuple
# anew on every call, and every payment stores several events.
_EVENT_FIELDS: dict[type[DomainEvent], tuple[str, ...]] = {}


def _event_payload(e: DomainEvent) -> dict[str, Any]:
    names = _EVENT_FIELDS.get(type(e))
    if names is None:
        names = _EVENT_FIELDS[type(e)] = tuple(f.name for f in dataclasses.fields(e))
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(e, name)
        out[name] = value._value_ if isinstance(value, enum.Enum) else value
    return out


def _event_values(p: Payment, e: DomainEvent, now: datetime) -> list[Any]:
    return [
        new_id("evt"),
        p.id,
        p.merchant_id,
        e.sequence,
        e.name,
        _event_payload(e),
        now,
        None,  # published_at
    ]


# A claimed charge's values after the payment row's (payment_writes.py binds them so).
CLAIM_COLUMNS = ("k_plan_id", "k_installment_id", "k_attempt", "k_lease_until")


def claim_values(claim: ChargeClaim) -> list[Any]:
    return [claim.plan_id, claim.installment_id, claim.attempt, claim.lease_until]


def claimed_insert(dialect: Dialect) -> Insert:
    """The gate insert of an installment's charge: the payment row (bound as `v_<column>`)
    inserted only while its claim (CLAIM_COLUMNS) admits the charge, as
    InstallmentPlan.admits_charge says, in one statement:

        INSERT INTO payments (...) SELECT <values> WHERE EXISTS (<claim admits it>)
        ON CONFLICT (merchant_id, request_id) DO NOTHING

    No row when the request id is taken or the claim is lost: the caller reads by request
    id to tell which. On PostgreSQL the plan's row is locked (FOR SHARE) by the check, so a
    cancel's update of it waits for this insert's transaction, or this insert for the
    cancel's and then sees the plan cancelled. SQLite's single writer orders them anyway."""
    p, i = installment_plans, installments
    lease = bindparam("k_lease_until", type_=UTCDateTime())
    cancelled: ColumnClause[Any] = literal_column(f"'{PlanStatus.CANCELLED.value}'")
    processing: ColumnClause[Any] = literal_column(f"'{InstallmentStatus.PROCESSING.value}'")
    admits: Select[Any] = (
        select(literal_column("1"))
        .select_from(i.join(p, p.c.id == i.c.plan_id))
        .where(
            i.c.id == bindparam("k_installment_id", type_=i.c.id.type),
            p.c.id == bindparam("k_plan_id", type_=p.c.id.type),
            or_(
                p.c.status != cancelled,
                and_(
                    i.c.status == processing,
                    i.c.attempts == bindparam("k_attempt", type_=i.c.attempts.type),
                    i.c.lease_until == lease,
                    i.c.lease_until > p.c.updated_at,
                ),
            ),
        )
        .with_for_update(read=True, of=p)
    )
    row = select(*(bindparam(f"v_{c.name}", type_=c.type) for c in payments.c)).where(
        exists(admits)
    )
    dml = postgresql if dialect.name == "postgresql" else sqlite
    insert: Insert = (
        dml.insert(payments)
        .from_select([c.name for c in payments.c], row)
        .on_conflict_do_nothing(index_elements=["merchant_id", "request_id"])
    )
    return insert


def _payment_row(p: Payment) -> dict[str, Any]:
    return dict(zip(PAYMENT_COLUMNS, _payment_values(p), strict=True))


def _step_row(p: Payment, s: Step) -> dict[str, Any]:
    return dict(zip(STEP_COLUMNS, _step_values(p, s), strict=True))


def _attempt_row(p: Payment, s: Step, a: Attempt) -> dict[str, Any]:
    return dict(zip(ATTEMPT_COLUMNS, _attempt_values(p, s, a), strict=True))


def _event_row(p: Payment, e: DomainEvent, now: datetime) -> dict[str, Any]:
    return dict(zip(EVENT_COLUMNS, _event_values(p, e, now), strict=True))


class SqlAlchemyInboundEventLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def remember(self, event_id: str, source: str, now: datetime) -> bool:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    inbound_events.insert(),
                    [{"id": event_id[:255], "source": source, "received_at": now}],
                )
        except IntegrityError:
            return False
        return True

    async def forget(self, event_id: str) -> None:
        await self._conn.execute(
            inbound_events.delete().where(inbound_events.c.id == event_id[:255])
        )


class SqlAlchemyPaymentRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, payment: Payment, *, only_if: ChargeClaim | None = None) -> None:
        if only_if is not None:
            row = {f"v_{k}": v for k, v in _payment_row(payment).items()}
            row |= dict(zip(CLAIM_COLUMNS, claim_values(only_if), strict=True))
            done = await self._conn.execute(claimed_insert(self._conn.dialect), row)
            if done.rowcount != 1:
                raise DuplicateRequest(payment.request_id)
        else:
            try:
                async with self._conn.begin_nested():
                    await self._conn.execute(payments.insert(), [_payment_row(payment)])
            except IntegrityError as exc:
                raise DuplicateRequest(payment.request_id) from exc
        await self._conn.execute(
            payment_steps.insert(), [_step_row(payment, s) for s in payment.steps]
        )
        await self._write_children(payment)

    async def save(self, payment: Payment) -> None:
        row = _payment_row(payment)
        row["version"] = payment.version + 1
        result = await self._conn.execute(
            update(payments)
            .where(payments.c.id == payment.id, payments.c.version == payment.version)
            .values(**{k: v for k, v in row.items() if k not in ("id", "created_at")})
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(payment.id)
        for s in payment.steps:
            values = _step_row(payment, s)
            updated = await self._conn.execute(
                update(payment_steps)
                .where(payment_steps.c.payment_id == payment.id, payment_steps.c.idx == s.index)
                .values(**{k: v for k, v in values.items() if k not in ("payment_id", "idx")})
            )
            if updated.rowcount == 0:
                await self._conn.execute(payment_steps.insert(), [values])
        await self._write_children(payment)
        payment.version += 1

    async def _write_children(self, payment: Payment) -> None:
        new_attempts = [
            _attempt_row(payment, s, a)
            for s in payment.steps
            for a in s.attempts[s.stored_attempts :]
        ]
        if new_attempts:
            await self._conn.execute(attempts.insert(), new_attempts)
        if payment.pending_events:
            await self._conn.execute(
                events.insert(),
                [_event_row(payment, e, payment.updated_at) for e in payment.pending_events],
            )
        for s in payment.steps:
            s.stored_attempts = len(s.attempts)
        payment.mark_stored()
        payment.pending_events.clear()

    async def refund_request(self, payment_id: str, request_id: str) -> RefundRequest | None:
        row = (
            await self._conn.execute(
                select(
                    refunds.c.amount_minor,
                    refunds.c.parts,
                    refunds.c.asked_minor,
                    refunds.c.created_at,
                ).where(refunds.c.payment_id == payment_id, refunds.c.request_id == request_id)
            )
        ).first()
        if row is None:
            return None
        parts = tuple((i, a) for i, a in row.parts or [])
        return RefundRequest(row.amount_minor, parts, row.asked_minor, row.created_at)

    async def refund_count(self, payment_id: str) -> int:
        counted = (
            select(func.count()).select_from(refunds).where(refunds.c.payment_id == payment_id)
        )
        return int((await self._conn.execute(counted)).scalar_one())

    async def add_refund(
        self, payment_id: str, request_id: str, refund: RefundRequest, now: datetime
    ) -> bool:
        """Record a refund request; False when this request_id was used before (the
        transaction is then to be rolled back: no savepoint, one round trip less, as
        it comes after the payment's own versioned save)."""
        try:
            await self._conn.execute(
                refunds.insert(),
                [
                    {
                        "payment_id": payment_id,
                        "request_id": request_id,
                        "amount_minor": refund.amount_minor,
                        "parts": [list(p) for p in refund.parts],
                        "asked_minor": refund.asked_minor,
                        "created_at": now,
                    }
                ],
            )
        except IntegrityError:
            return False
        return True

    async def events_of(self, payment_id: str) -> builtins.list[StoredEvent]:
        rows = await self._conn.execute(
            select(events).where(events.c.payment_id == payment_id).order_by(events.c.sequence)
        )
        return [
            StoredEvent(
                r["id"],
                r["payment_id"],
                r["merchant_id"],
                r["sequence"],
                r["name"],
                r["payload"],
                r["occurred_at"],
            )
            for r in rows.mappings()
        ]

    async def get(self, payment_id: str, merchant_id: str | None) -> Payment | None:
        query = select(payments).where(payments.c.id == payment_id)
        if merchant_id is not None:
            query = query.where(payments.c.merchant_id == merchant_id)
        found = await self._load(query)
        return found[0] if found else None

    async def get_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        found = await self._load(
            select(payments).where(
                payments.c.merchant_id == merchant_id, payments.c.request_id == request_id
            )
        )
        return found[0] if found else None

    async def list(
        self,
        merchant_id: str | None,
        *,
        limit: int,
        after: PageCursor | None,
        status: PaymentStatus | None,
        created_after: datetime | None,
    ) -> Sequence[Payment]:
        query = select(payments)
        if merchant_id is not None:
            query = query.where(payments.c.merchant_id == merchant_id)
        if status is not None:
            query = query.where(payments.c.status == status.value)
        if created_after is not None:
            query = query.where(payments.c.created_at >= created_after)
        if after is not None:
            query = query.where(
                or_(
                    payments.c.created_at < after.created_at,
                    and_(
                        payments.c.created_at == after.created_at, payments.c.id < after.payment_id
                    ),
                )
            )
        query = query.order_by(payments.c.created_at.desc(), payments.c.id.desc()).limit(limit)
        return await self._load(query)

    async def list_unresolved(
        self, *, now: datetime, processing_before: datetime, limit: int
    ) -> Sequence[Payment | UnreadablePayment]:
        query = (
            select(payments)
            .where(
                or_(
                    and_(
                        payments.c.status == PaymentStatus.UNKNOWN.value,
                        payments.c.next_reconcile_at <= now,
                    ),
                    # Interrupted: left by its run, and not backing off after a lookup
                    # that could not tell (Payment.reconcile_inconclusive).
                    and_(
                        payments.c.status == PaymentStatus.PROCESSING.value,
                        payments.c.updated_at <= processing_before,
                        or_(
                            payments.c.next_reconcile_at.is_(None),
                            payments.c.next_reconcile_at <= now,
                        ),
                    ),
                    # A call owed, a refund in doubt (Payment.watch_refund_holds), or a
                    # payment waiting for the customer past its time: due, once settled.
                    and_(
                        payments.c.status.in_([s.value for s in OWING]),
                        payments.c.next_reconcile_at <= now,
                    ),
                    # An on-session single step paused before its pause expired: stored
                    # with no expiry, it expires ACTION_TIMEOUT after it was stored
                    # (Payment.action_expires_at). Read through the (status, updated_at)
                    # index: only payments paused longer than that are visited.
                    and_(
                        payments.c.status == PaymentStatus.REQUIRES_ACTION.value,
                        payments.c.updated_at <= now - ACTION_TIMEOUT,
                        payments.c.next_reconcile_at.is_(None),
                        payments.c.off_session == false(),
                    ),
                )
            )
            .order_by(payments.c.updated_at)
            .limit(limit)
        )
        try:
            return await self._load(query)
        except UNREADABLE_ROW:
            pass
        # A row the batch could not read: each payment read on its own, so that only
        # the unreadable ones are left out (rare: a row no version of the code writes).
        listed: builtins.list[Payment | UnreadablePayment] = []
        for payment_id in (await self._conn.scalars(query.with_only_columns(payments.c.id))).all():
            try:
                listed.extend(await self._load(select(payments).where(payments.c.id == payment_id)))
            except UNREADABLE_ROW as exc:
                listed.append(UnreadablePayment(payment_id, exc))
        return listed

    async def claim(
        self, payment: Payment, until: datetime, *, touched: datetime | None = None
    ) -> bool:
        # Conditional on the version read: of two reconcilers that listed the payment,
        # the second's update waits for the first's row lock (PostgreSQL) or its write
        # (SQLite), then matches no row.
        values: dict[str, Any] = {"version": payment.version + 1, "next_reconcile_at": until}
        if touched is not None:
            values["updated_at"] = touched
        result = await self._conn.execute(
            update(payments)
            .where(payments.c.id == payment.id, payments.c.version == payment.version)
            .values(**values)
        )
        if result.rowcount != 1:
            return False
        payment.version += 1
        if touched is not None:
            payment.updated_at = touched
        return True

    async def _load(self, query: Any) -> builtins.list[Payment]:
        rows = (await self._conn.execute(query)).mappings().all()
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        step_rows = (
            (
                await self._conn.execute(
                    select(payment_steps)
                    .where(payment_steps.c.payment_id.in_(ids))
                    .order_by(payment_steps.c.payment_id, payment_steps.c.idx)
                )
            )
            .mappings()
            .all()
        )
        attempt_rows = (
            (
                await self._conn.execute(
                    select(attempts)
                    .where(attempts.c.payment_id.in_(ids))
                    .order_by(attempts.c.payment_id, attempts.c.step_index, attempts.c.number)
                )
            )
            .mappings()
            .all()
        )
        by_step: dict[tuple[str, int], builtins.list[Attempt]] = {}
        for a in attempt_rows:
            by_step.setdefault((a["payment_id"], a["step_index"]), []).append(_attempt(a))
        steps_by_payment: dict[str, builtins.list[Step]] = {}
        for s in step_rows:
            step = _step(s, by_step.get((s["payment_id"], s["idx"]), []))
            steps_by_payment.setdefault(s["payment_id"], []).append(step)
        return [_payment(r, steps_by_payment.get(r["id"], [])) for r in rows]


def _attempt(a: Any) -> Attempt:
    return Attempt(
        number=a["number"],
        processor=a["processor"],
        idempotency_key=a["idempotency_key"],
        started_at=a["started_at"],
        ended_at=a["ended_at"],
        latency_ms=a["latency_ms"],
        outcome=Outcome(a["outcome"]),
        error_code=ErrorCode(a["error_code"]),
        raw=RawError(
            a["raw_type"],
            a["raw_code"],
            a["raw_decline_code"],
            a["raw_http_status"],
            a["raw_request_id"],
            a["raw_message"],
            a["raw_advice_code"],
        ),
        delay_before_ms=a["delay_before_ms"],
        routing_reason=a["routing_reason"],
        retry_decision=a["retry_decision"],
        processor_payment_id=a["processor_payment_id"],
        operation=a["operation"],
    )


def _step(s: Any, step_attempts: list[Attempt]) -> Step:
    return Step(
        index=s["idx"],
        method=MethodType(s["method"]),
        token=s["token"],
        amount_minor=s["amount_minor"],
        processors=list(s["processors"]),
        customer_id=s["customer_id"],
        status=StepStatus(s["status"]),
        outcome=Outcome(s["outcome"]) if s["outcome"] else None,
        error_code=ErrorCode(s["error_code"]),
        processor=s["processor"],
        processor_payment_id=s["processor_payment_id"],
        attempts=step_attempts,
        next_action_type=s["next_action_type"],
        client_secret=s["client_secret"],
        captured_minor=s["captured_minor"],
        refunded_minor=s["refunded_minor"],
        generation=s["generation"],
        stored_attempts=len(step_attempts),
        refund_holds=dict(s["refund_holds"] or {}),
    )


def _payment(r: Any, steps: list[Step]) -> Payment:
    payment = Payment(
        id=r["id"],
        merchant_id=r["merchant_id"],
        request_id=r["request_id"],
        fingerprint=r["fingerprint"],
        currency=Currency(r["currency"]),
        amount_minor=r["amount_minor"],
        steps=steps,
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        capture_mode=CaptureMode(r["capture_mode"]),
        allow_partial=r["allow_partial"],
        config_version=r["config_version"],
        metadata=dict(r["metadata"]),
        off_session=r["off_session"],
        status=PaymentStatus(r["status"]),
        orchestration_ms=None if r["orchestration_ms"] < 0 else r["orchestration_ms"],
        final_error=ErrorCode(r["final_error"]),
        final_error_message=r["final_error_message"],
        version=r["version"],
        event_sequence=r["event_sequence"],
        reconcile_attempts=r["reconcile_attempts"],
        next_reconcile_at=r["next_reconcile_at"],
        fallbacks=[FallbackMethod(MethodType(m), t, c) for m, t, c in r["fallbacks"] or []],
        authorize_only=r["authorize_only"],
        owed=Owed(r["owed"]),
        save_for_off_session=r["save_for_off_session"],
    )
    payment.mark_stored()
    return payment
