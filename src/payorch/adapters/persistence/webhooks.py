"""Webhook endpoints and deliveries stored with SQLAlchemy Core, and the outbox fan-out."""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payorch.adapters.persistence.sql import one_of
from payorch.adapters.persistence.tables import (
    events,
    payments,
    webhook_deliveries,
    webhook_endpoints,
    webhook_retention,
)
from payorch.adapters.secret_cipher import SecretCipher, SecretUnreadable
from payorch.app.ids import new_id
from payorch.app.installment_ports import (
    Cursor,
    DeliveryJob,
    EventPosition,
    RedeliveryCandidate,
)
from payorch.app.ports import ConcurrentUpdate
from payorch.domain.webhook_delivery import (
    DeliveryStatus,
    EndpointStatus,
    WebhookDelivery,
    WebhookEndpoint,
    event_type,
    subscribes,
    webhook_body,
)
from payorch.webhooks import SECRET_PREFIX

_PENDING = DeliveryStatus.PENDING.value
_log = logging.getLogger("payorch.webhooks")


# A payment event's amounts are minor units of its payment's currency, which the event
# does not repeat (plan events carry their own); None for a plan's events.
currency_of_payment = (
    select(payments.c.currency).where(payments.c.id == events.c.payment_id).scalar_subquery()
)


def _endpoints_lock_key(merchant_id: str) -> int:
    """pg_advisory_xact_lock's key for adding a merchant's endpoints: the same in every
    process (unlike hash()); two merchants sharing one only wait for each other."""
    digest = hashlib.sha256(f"webhook_endpoints:{merchant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def key_context(endpoint_id: str, column: str) -> str:
    """What a stored signing key is bound to: its row and its column."""
    return f"webhook_endpoints.{column} of {endpoint_id}"


def _sealed(cipher: SecretCipher, endpoint_id: str, column: str, secret: str) -> str | None:
    """A whsec_ secret as its column stores it: the base64 key sealed; None for none."""
    key = secret.removeprefix(SECRET_PREFIX)
    return cipher.seal(key, key_context(endpoint_id, column)) if key else None


def _opened(cipher: SecretCipher, endpoint_id: str, column: str, stored: str | None) -> str:
    """The whsec_ secret of a stored signing key; "" for none."""
    if not stored:
        return ""
    return SECRET_PREFIX + cipher.unseal(stored, key_context(endpoint_id, column))


def _endpoint_row(e: WebhookEndpoint, cipher: SecretCipher) -> dict[str, Any]:
    return {
        "id": e.id,
        "merchant_id": e.merchant_id,
        "url": e.url,
        "signing_key": _sealed(cipher, e.id, "signing_key", e.secret),
        "description": e.description,
        "event_types": list(e.event_types),
        "status": e.status.value,
        "disabled_reason": e.disabled_reason,
        "version": e.version,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "request_id": e.request_id or None,
        "disabled_at": e.disabled_at,
        "failing_since": e.failing_since,
        "dead_since_failing": e.dead_since_failing,
        "previous_signing_key": _sealed(cipher, e.id, "previous_signing_key", e.previous_secret),
        "previous_key_until": e.previous_secret_until if e.previous_secret else None,
    }


def _endpoint(r: Any, cipher: SecretCipher) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=r["id"],
        merchant_id=r["merchant_id"],
        url=r["url"],
        secret=_opened(cipher, r["id"], "signing_key", r["signing_key"]),
        description=r["description"],
        event_types=tuple(r["event_types"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        status=EndpointStatus(r["status"]),
        disabled_reason=r["disabled_reason"],
        version=r["version"],
        request_id=r["request_id"] or "",
        disabled_at=r["disabled_at"],
        failing_since=r["failing_since"],
        dead_since_failing=r["dead_since_failing"],
        previous_secret=_opened(cipher, r["id"], "previous_signing_key", r["previous_signing_key"]),
        previous_secret_until=r["previous_key_until"],
    )


def _body(e: Any) -> str:
    """The webhook body of an outbox row read with its payment's currency."""
    return webhook_body(
        event_id=e["id"],
        name=e["name"],
        aggregate_id=e["payment_id"],
        merchant_id=e["merchant_id"],
        sequence=e["sequence"],
        occurred_at=e["occurred_at"],
        payload=dict(e["payload"]),
        currency=e["payment_currency"] or "",
    )


def _delivery_row(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "merchant_id": d.merchant_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "body": d.body,
        "status": d.status.value,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "claimed_by": d.claimed_by,
        "lease_until": d.lease_until,
        "version": d.version,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
    }


def _delivery(r: Any) -> WebhookDelivery:
    return WebhookDelivery(
        id=r["id"],
        endpoint_id=r["endpoint_id"],
        merchant_id=r["merchant_id"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        body=r["body"],
        created_at=r["created_at"],
        next_attempt_at=r["next_attempt_at"],
        status=DeliveryStatus(r["status"]),
        attempts=r["attempts"],
        last_status_code=r["last_status_code"],
        last_error=r["last_error"],
        delivered_at=r["delivered_at"],
        claimed_by=r["claimed_by"],
        lease_until=r["lease_until"],
        version=r["version"],
    )


class SqlAlchemyWebhookRepository:
    def __init__(self, conn: AsyncConnection, cipher: SecretCipher) -> None:
        self._conn = conn
        self._cipher = cipher

    async def add_endpoint(self, endpoint: WebhookEndpoint) -> None:
        await self._conn.execute(
            webhook_endpoints.insert(), [_endpoint_row(endpoint, self._cipher)]
        )

    async def save_endpoint(self, endpoint: WebhookEndpoint) -> None:
        row = _endpoint_row(endpoint, self._cipher)
        row["version"] = endpoint.version + 1
        t = webhook_endpoints
        done = await self._conn.execute(
            update(t)
            .where(t.c.id == endpoint.id, t.c.version == endpoint.version)
            .values(**{k: v for k, v in row.items() if k not in ("id", "created_at")})
        )
        if done.rowcount != 1:
            raise ConcurrentUpdate(endpoint.id)
        endpoint.version += 1

    async def note_success(self, endpoint_id: str) -> None:
        t = webhook_endpoints
        # Matches no row while it succeeds: a healthy endpoint's row is neither written
        # nor locked for each delivery.
        await self._conn.execute(
            update(t)
            .where(t.c.id == endpoint_id, t.c.failing_since.is_not(None))
            .values(failing_since=None, dead_since_failing=0)
        )

    async def note_failure(self, endpoint_id: str, *, now: datetime, dead: bool) -> bool:
        t = webhook_endpoints
        # One statement: concurrent failures of one endpoint queue on its row and each
        # count lands. Not a new version: a merchant's delete or enable made meanwhile
        # is not refused for it (enable starts the count again anyway).
        done = await self._conn.execute(
            update(t)
            .where(t.c.id == endpoint_id, t.c.status == EndpointStatus.ENABLED.value)
            .values(
                failing_since=func.coalesce(t.c.failing_since, now),
                dead_since_failing=t.c.dead_since_failing + (1 if dead else 0),
            )
        )
        return done.rowcount == 1

    async def get_endpoint(
        self, endpoint_id: str, merchant_id: str | None
    ) -> WebhookEndpoint | None:
        t = webhook_endpoints
        query = select(t).where(t.c.id == endpoint_id)
        if merchant_id is not None:
            query = query.where(t.c.merchant_id == merchant_id)
        row = (await self._conn.execute(query)).mappings().first()
        return _endpoint(row, self._cipher) if row is not None else None

    async def list_endpoints(self, merchant_id: str | None) -> Sequence[WebhookEndpoint]:
        t = webhook_endpoints
        query = select(t).where(t.c.status != EndpointStatus.DELETED.value)
        if merchant_id is not None:
            query = query.where(t.c.merchant_id == merchant_id)
        rows = (await self._conn.execute(query.order_by(t.c.created_at, t.c.id))).mappings()
        return [_endpoint(r, self._cipher) for r in rows]

    async def get_endpoint_by_request(
        self, merchant_id: str, request_id: str
    ) -> WebhookEndpoint | None:
        t = webhook_endpoints
        query = select(t).where(t.c.merchant_id == merchant_id, t.c.request_id == request_id)
        row = (await self._conn.execute(query)).mappings().first()
        return _endpoint(row, self._cipher) if row is not None else None

    async def count_endpoints_to_add(self, merchant_id: str) -> int:
        if self._conn.dialect.name == "postgresql":
            # A count alone lets racing creates each see room for one more. SQLite needs
            # no lock: BEGIN IMMEDIATE holds every other writer off already.
            await self._conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": _endpoints_lock_key(merchant_id)},
            )
        t = webhook_endpoints
        counted = await self._conn.scalar(
            select(func.count())
            .select_from(t)
            .where(t.c.merchant_id == merchant_id, t.c.status != EndpointStatus.DELETED.value)
        )
        return int(counted or 0)

    async def fan_out(self, *, now: datetime, limit: int) -> int:
        batch = (
            (
                await self._conn.execute(
                    select(events, currency_of_payment.label("payment_currency"))
                    .where(events.c.published_at.is_(None))
                    .order_by(events.c.occurred_at, events.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True, of=events)
                )
            )
            .mappings()
            .all()
        )
        if not batch:
            return 0
        merchants = {e["merchant_id"] for e in batch}
        t = webhook_endpoints
        # Who subscribed to what, and not their signing keys: a fan-out opens no secret.
        endpoint_rows = (
            await self._conn.execute(
                select(t.c.id, t.c.merchant_id, t.c.event_types).where(
                    one_of(self._conn.dialect, t.c.merchant_id, merchants),
                    t.c.status == EndpointStatus.ENABLED.value,
                )
            )
        ).all()
        by_merchant: dict[str, builtins.list[tuple[str, Sequence[str]]]] = {}
        for r in endpoint_rows:
            by_merchant.setdefault(r.merchant_id, []).append((r.id, r.event_types))
        rows = []
        for e in batch:
            kind = event_type(e["name"])
            wanting = [
                endpoint_id
                for endpoint_id, types in by_merchant.get(e["merchant_id"], [])
                if subscribes(types, kind)
            ]
            if not wanting:
                continue
            body = _body(e)
            for endpoint_id in wanting:
                rows.append(
                    _delivery_row(
                        WebhookDelivery(
                            id=new_id("whd"),
                            endpoint_id=endpoint_id,
                            merchant_id=e["merchant_id"],
                            event_id=e["id"],
                            event_type=kind,
                            body=body,
                            created_at=now,
                            next_attempt_at=now,
                        )
                    )
                )
        if rows:
            await self._conn.execute(webhook_deliveries.insert(), rows)
        await self._conn.execute(
            update(events)
            .where(one_of(self._conn.dialect, events.c.id, [e["id"] for e in batch]))
            .values(published_at=now)
        )
        return len(batch)

    async def claim_deliveries(
        self, *, now: datetime, worker: str, lease_until: datetime, limit: int
    ) -> Sequence[DeliveryJob]:
        d, ep = webhook_deliveries, webhook_endpoints
        due = (
            select(d.c.id)
            .join(ep, ep.c.id == d.c.endpoint_id)
            .where(
                d.c.status == _PENDING,
                d.c.next_attempt_at <= now,
                or_(d.c.lease_until.is_(None), d.c.lease_until <= now),
                ep.c.status == EndpointStatus.ENABLED.value,
            )
            .order_by(d.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=d)
        )
        ids = [r.id for r in (await self._conn.execute(due)).all()]
        if not ids:
            return []
        await self._conn.execute(
            update(d)
            .where(one_of(self._conn.dialect, d.c.id, ids))
            .values(claimed_by=worker, lease_until=lease_until, version=d.c.version + 1)
        )
        rows = (
            await self._conn.execute(
                select(
                    d,
                    ep.c.url,
                    ep.c.signing_key,
                    ep.c.previous_signing_key,
                    ep.c.previous_key_until,
                )
                .join(ep, ep.c.id == d.c.endpoint_id)
                .where(one_of(self._conn.dialect, d.c.id, ids))
                .order_by(d.c.next_attempt_at)
            )
        ).mappings()
        jobs = []
        for r in rows:
            try:
                secret, previous = (
                    _opened(self._cipher, r["endpoint_id"], column, r[column])
                    for column in ("signing_key", "previous_signing_key")
                )
            except SecretUnreadable as exc:
                # Its claim stands until the lease runs out, then it is tried again; the
                # other endpoints' deliveries go on meanwhile.
                _log.error("delivery %s not sent: %s", r["id"], exc)
                continue
            jobs.append(
                DeliveryJob(_delivery(r), r["url"], secret, previous, r["previous_key_until"])
            )
        return jobs

    async def get_delivery(
        self, delivery_id: str, merchant_id: str | None
    ) -> WebhookDelivery | None:
        d = webhook_deliveries
        query = select(d).where(d.c.id == delivery_id)
        if merchant_id is not None:
            query = query.where(d.c.merchant_id == merchant_id)
        row = (await self._conn.execute(query)).mappings().first()
        return _delivery(row) if row is not None else None

    async def save_delivery(self, delivery: WebhookDelivery) -> None:
        d = webhook_deliveries
        row = _delivery_row(delivery)
        row["version"] = delivery.version + 1
        done = await self._conn.execute(
            update(d)
            .where(d.c.id == delivery.id, d.c.version == delivery.version)
            .values(**{k: v for k, v in row.items() if k not in ("id", "created_at", "body")})
        )
        if done.rowcount != 1:
            raise ConcurrentUpdate(delivery.id)
        delivery.version += 1

    async def list_deliveries(
        self,
        merchant_id: str | None,
        *,
        status: DeliveryStatus | None,
        endpoint_id: str | None,
        limit: int,
        after: Cursor | None,
    ) -> Sequence[WebhookDelivery]:
        d = webhook_deliveries
        query = select(d)
        if merchant_id is not None:
            query = query.where(d.c.merchant_id == merchant_id)
        if status is not None:
            query = query.where(d.c.status == status.value)
        if endpoint_id is not None:
            query = query.where(d.c.endpoint_id == endpoint_id)
        if after is not None:
            query = query.where(
                or_(
                    d.c.created_at < after.created_at,
                    and_(d.c.created_at == after.created_at, d.c.id < after.id),
                )
            )
        rows = await self._conn.execute(
            query.order_by(d.c.created_at.desc(), d.c.id.desc()).limit(limit)
        )
        return [_delivery(r) for r in rows.mappings()]

    async def abandon_pending(self, endpoint_id: str, reason: str) -> int:
        d = webhook_deliveries
        done = await self._conn.execute(
            update(d)
            .where(d.c.endpoint_id == endpoint_id, d.c.status == _PENDING)
            .values(
                status=DeliveryStatus.DEAD.value,
                next_attempt_at=None,
                last_error=reason,
                claimed_by="",
                lease_until=None,
                version=d.c.version + 1,
            )
        )
        return int(done.rowcount)

    async def lock_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        # FOR UPDATE on PostgreSQL; SQLite's write transactions run one at a time.
        t = webhook_endpoints
        query = select(t).where(t.c.id == endpoint_id).with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return _endpoint(row, self._cipher) if row is not None else None

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
        d = webhook_deliveries
        query = select(events, currency_of_payment.label("payment_currency")).where(
            events.c.merchant_id == merchant_id, events.c.published_at.is_not(None)
        )
        if names:
            query = query.where(one_of(self._conn.dialect, events.c.name, names))
        if since is not None:
            query = query.where(events.c.occurred_at >= since)
        if until is not None:
            query = query.where(events.c.occurred_at < until)
        if dead_only:
            query = query.where(
                events.c.id.in_(
                    select(d.c.event_id).where(
                        d.c.endpoint_id == endpoint_id, d.c.status == DeliveryStatus.DEAD.value
                    )
                )
            )
        if after is not None:
            # A row comparison, not the OR of its parts: PostgreSQL starts the index scan
            # at `after` (an index condition) instead of reading the earlier pages again.
            query = query.where(
                tuple_(events.c.occurred_at, events.c.id) > (after.occurred_at, after.event_id)
            )
        page = (
            (
                await self._conn.execute(
                    query.order_by(events.c.occurred_at, events.c.id).limit(limit)
                )
            )
            .mappings()
            .all()
        )
        if not page:
            return []
        made = {
            r["event_id"]: _delivery(r)
            for r in (
                await self._conn.execute(
                    select(d).where(
                        d.c.endpoint_id == endpoint_id,
                        one_of(self._conn.dialect, d.c.event_id, [e["id"] for e in page]),
                    )
                )
            ).mappings()
        }
        return [
            RedeliveryCandidate(
                event_id=e["id"],
                event_type=event_type(e["name"]),
                occurred_at=e["occurred_at"],
                body="" if e["id"] in made else _body(e),
                delivery=made.get(e["id"]),
            )
            for e in page
        ]

    async def delivered_pruned_before(self) -> datetime | None:
        r = webhook_retention
        return await self._conn.scalar(select(r.c.delivered_pruned_before).where(r.c.id == 1))

    async def add_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        if deliveries:
            await self._conn.execute(
                webhook_deliveries.insert(), [_delivery_row(x) for x in deliveries]
            )

    async def forget_expired_secrets(self, now: datetime) -> int:
        t = webhook_endpoints
        # By the index on previous_key_until: only the endpoints rotated lately are read.
        # Not a new version: an endpoint saved meanwhile from an older read writes the
        # expired key back, which signs nothing and is dropped at the next pass.
        done = await self._conn.execute(
            update(t)
            .where(t.c.previous_key_until <= now)
            .values(previous_signing_key=None, previous_key_until=None)
        )
        return int(done.rowcount)

    async def abandon_stranded(self) -> int:
        d, ep = webhook_deliveries, webhook_endpoints
        stranded = (
            await self._conn.execute(
                select(d.c.id, ep.c.status)
                .join(ep, ep.c.id == d.c.endpoint_id)
                .where(d.c.status == _PENDING, ep.c.status != EndpointStatus.ENABLED.value)
                .with_for_update(skip_locked=True, of=d)
            )
        ).all()
        by_status: dict[str, builtins.list[str]] = {}
        for r in stranded:
            by_status.setdefault(r.status, []).append(r.id)
        for status, ids in by_status.items():
            await self._conn.execute(
                update(d)
                .where(one_of(self._conn.dialect, d.c.id, ids), d.c.status == _PENDING)
                .values(
                    status=DeliveryStatus.DEAD.value,
                    next_attempt_at=None,
                    last_error=f"endpoint {status}",
                    claimed_by="",
                    lease_until=None,
                    version=d.c.version + 1,
                )
            )
        return len(stranded)
