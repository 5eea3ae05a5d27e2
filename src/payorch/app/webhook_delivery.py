"""Outbound webhooks: merchants' endpoints, and the dispatcher that delivers the outbox.

The dispatcher is its own loop: a slow or dead receiver never holds up a payment or
the scheduler. Deliveries are claimed like installments (row locks skipped by other
workers, plus a lease) and retried on a fixed, jittered schedule; a 410 disables the
endpoint, and so do days of nothing but failures (FailingEndpoints); exhausted
deliveries wait in a dead-letter list for a redelivery.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import unquote_plus

from payorch.app.failed_passes import log_failed_pass
from payorch.app.ids import new_id
from payorch.app.installment_ports import (
    Cursor,
    DeliveryJob,
    EventPosition,
    InstallmentUnitOfWork,
    InstallmentUnitOfWorkFactory,
    SendResult,
    UnsafeUrl,
    WebhookSender,
)
from payorch.app.observability import tell
from payorch.app.ports import Clock, ConcurrentUpdate
from payorch.domain.card_data import contains_card_number
from payorch.domain.request import idempotency_key_issues
from payorch.domain.webhook_delivery import (
    DEFAULT_SECRET_OVERLAP,
    MAX_SECRET_OVERLAP,
    DeliveryStatus,
    EndpointStatus,
    FailingEndpoints,
    WebhookDelivery,
    WebhookEndpoint,
    event_type,
)

log = logging.getLogger("payorch.webhooks")

MAX_URL_LEN = 2048
MAX_DESCRIPTION_LEN = 200
MAX_ENDPOINTS_PER_MERCHANT = 20
# How long a create made again under its request_id gets the signing secret again (as
# long as Stripe replays an answer under its idempotency key): time enough to recover
# from a lost answer, not a way to read a secret back for ever.
SECRET_REPLAY_WINDOW = timedelta(hours=24)
# Event types an endpoint may subscribe to (empty subscription: all of them).
EVENT_NAMES = (
    "PlanCreated",
    "InstallmentPaid",
    "InstallmentFailed",
    "InstallmentFailedFinal",
    "PlanCompleted",
    "PlanBreached",
    "PlanReinstated",
    "PlanCancelled",
    "PaymentProcessing",
    "StepSucceeded",
    "StepFailed",
    "StepVoided",
    "PaymentCompleted",
    "PaymentFailed",
    "PaymentPartiallySucceeded",
    "PaymentReconciled",
    "PaymentCaptured",
    "PaymentRefunded",
    "PaymentRefundFailed",
    "PaymentCancelled",
)
EVENT_TYPES = frozenset(event_type(n) for n in EVENT_NAMES)
_EVENT_NAME = {event_type(n): n for n in EVENT_NAMES}
# The longest window a bulk redelivery takes: a typo in --since (a year for a month)
# should not queue a year of events to a receiver just back on its feet. A longer
# outage is recovered in several windows, one after the other.
MAX_REDELIVERY_WINDOW = timedelta(days=31)
# Events read, and deliveries made or scheduled again, per transaction.
REDELIVERY_BATCH = 500


class EndpointNotFound(LookupError):
    pass


class DeliveryNotFound(LookupError):
    pass


class InvalidEndpoint(ValueError):
    """Every (field, message) wrong with the endpoint, not only the first."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))


class CannotRedeliver(RuntimeError):
    pass


class InvalidRedelivery(ValueError):
    """A bulk redelivery asked for wrongly: its window or event types."""


class EndpointRequestReused(RuntimeError):
    """A request_id already used for an endpoint with another url, description or event
    types."""

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used for an endpoint with a different"
            " url, description or event types"
        )


class EndpointCreatedThenDeleted(RuntimeError):
    """The endpoint a request_id made has been deleted since: a replay cannot give it."""

    def __init__(self, request_id: str, endpoint_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} made endpoint {endpoint_id}, deleted since:"
            " create another under a new request_id"
        )


@dataclass(frozen=True, slots=True)
class EndpointCreation:
    endpoint: WebhookEndpoint
    # The signing secret to hand out: at the create, and to a replay within
    # SECRET_REPLAY_WINDOW of it; "" after that.
    secret: str
    # Made by an earlier call under the same request_id.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class SecretRotation:
    endpoint: WebhookEndpoint
    # The new signing secret, handed out this once.
    secret: str = field(repr=False)
    # Until when the replaced secret signs too; None when it stopped at once.
    previous_secret_until: datetime | None


@dataclass(slots=True)
class BulkRedelivery:
    """What a bulk redelivery did (or, `dry_run`, would do) for one endpoint."""

    endpoint_id: str
    merchant_id: str
    dry_run: bool
    # New deliveries, for events the endpoint was given none of (disabled then).
    queued: int = 0
    # Dead deliveries scheduled again.
    requeued: int = 0
    # Left alone: already waiting for an attempt, or delivered.
    already_pending: int = 0
    already_delivered: int = 0
    # Events from before the endpoint was created: never owed to it.
    before_endpoint: int = 0
    # Dead deliveries another redelivered (or pruned) between this one's read and write.
    changed_meanwhile: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "endpoint_id": self.endpoint_id,
            "merchant_id": self.merchant_id,
            "dry_run": self.dry_run,
            "queued": self.queued,
            "requeued": self.requeued,
            "already_pending": self.already_pending,
            "already_delivered": self.already_delivered,
            "before_endpoint": self.before_endpoint,
            "changed_meanwhile": self.changed_meanwhile,
        }


def new_endpoint_id() -> str:
    return new_id("we")


class WebhookEndpoints:
    def __init__(
        self,
        uow: InstallmentUnitOfWorkFactory,
        sender: WebhookSender,
        clock: Clock,
        *,
        new_secret: Callable[[], str],
        new_id: Callable[[], str] = new_endpoint_id,
    ) -> None:
        self._uow = uow
        self._sender = sender
        self._clock = clock
        self._new_secret = new_secret
        self._new_id = new_id

    async def create(
        self,
        merchant_id: str,
        url: str,
        description: str,
        event_types: Sequence[str],
        *,
        request_id: str = "",
    ) -> EndpointCreation:
        """The endpoint, with its secret: handed out at the create, and again to the same
        create made again under its request_id within SECRET_REPLAY_WINDOW."""
        url = url.strip()
        wanted = (url, description, tuple(dict.fromkeys(event_types)))
        issues = idempotency_key_issues(request_id) if request_id else []
        if request_id and not issues:
            async with self._uow() as uow:
                made = await uow.webhooks.get_endpoint_by_request(merchant_id, request_id)
            if made is not None:  # no address check: the call made it before
                return self._replay(made, wanted)
        problems = [(i.field, i.message) for i in issues]
        # Each held to its length first: the card scan reads only what may be kept. A
        # URL is read decoded too: `4242%204242...`, `4242+4242...` and `%34%32...` are
        # card numbers to its receiver, and the scan reads it as the receiver does.
        if not url:
            problems.append(("url", f"is required, at most {MAX_URL_LEN} characters"))
        elif len(url) > MAX_URL_LEN:
            problems.append(("url", f"is too long: at most {MAX_URL_LEN} characters"))
        elif contains_card_number(url) or contains_card_number(unquote_plus(url)):
            problems.append(("url", "looks like a card number"))
        if len(description) > MAX_DESCRIPTION_LEN:
            problems.append(("description", f"at most {MAX_DESCRIPTION_LEN} characters"))
        elif contains_card_number(description):
            problems.append(("description", "looks like a card number"))
        known = ", ".join(sorted(EVENT_TYPES))
        problems += [
            (f"event_types[{i}]", f"unknown; known: {known}")  # never quoted: any text
            for i, event_type in enumerate(event_types)
            if event_type not in EVENT_TYPES
        ]
        if not any(field == "url" for field, _ in problems):
            try:
                await self._sender.check_url(url)
            except UnsafeUrl as exc:
                problems.insert(0, ("url", str(exc)))
        if problems:
            raise InvalidEndpoint(problems)
        now = self._clock.now()
        endpoint = WebhookEndpoint(
            id=self._new_id(),
            merchant_id=merchant_id,
            url=url,
            secret=self._new_secret(),
            description=description,
            event_types=wanted[2],
            created_at=now,
            updated_at=now,
            request_id=request_id,
        )
        async with self._uow() as uow:
            # Counting holds the merchant's other creates off until this one ends, so a
            # create racing this one under the same request_id is found here, or finds it.
            count = await uow.webhooks.count_endpoints_to_add(merchant_id)
            if request_id:
                made = await uow.webhooks.get_endpoint_by_request(merchant_id, request_id)
                if made is not None:
                    return self._replay(made, wanted)
            if count >= MAX_ENDPOINTS_PER_MERCHANT:
                raise InvalidEndpoint(
                    [("url", f"at most {MAX_ENDPOINTS_PER_MERCHANT} endpoints per merchant")]
                )
            await uow.webhooks.add_endpoint(endpoint)
            await uow.commit()
        return EndpointCreation(endpoint, endpoint.secret)

    def _replay(
        self, made: WebhookEndpoint, wanted: tuple[str, str, tuple[str, ...]]
    ) -> EndpointCreation:
        """The endpoint an earlier create made under the request_id, when this one asks
        for the same; its secret while SECRET_REPLAY_WINDOW lasts."""
        if (made.url, made.description, made.event_types) != wanted:
            raise EndpointRequestReused(made.request_id)
        if made.status is EndpointStatus.DELETED:
            raise EndpointCreatedThenDeleted(made.request_id, made.id)
        fresh = self._clock.now() - made.created_at <= SECRET_REPLAY_WINDOW
        return EndpointCreation(made, made.secret if fresh else "", replayed=True)

    async def list(self, merchant_id: str | None) -> Sequence[WebhookEndpoint]:
        async with self._uow() as uow:
            return await uow.webhooks.list_endpoints(merchant_id)

    async def delete(self, endpoint_id: str, merchant_id: str | None) -> None:
        async with self._uow() as uow:
            endpoint = await uow.webhooks.get_endpoint(endpoint_id, merchant_id)
            if endpoint is None or endpoint.status is EndpointStatus.DELETED:
                raise EndpointNotFound(endpoint_id)
            endpoint.delete(self._clock.now())
            await uow.webhooks.save_endpoint(endpoint)
            await uow.webhooks.abandon_pending(endpoint.id, "endpoint deleted")
            await uow.commit()

    async def enable(self, endpoint_id: str, merchant_id: str | None) -> WebhookEndpoint:
        """Send to a disabled endpoint again: new events only, with the same secret."""
        async with self._uow() as uow:
            endpoint = await uow.webhooks.get_endpoint(endpoint_id, merchant_id)
            if endpoint is None or endpoint.status is EndpointStatus.DELETED:
                raise EndpointNotFound(endpoint_id)
            if not endpoint.enable(self._clock.now()):
                return endpoint
            await uow.webhooks.save_endpoint(endpoint)
            # A fan-out that raced the 410 may have left it deliveries the next pass
            # would abandon: they go to the dead-letter list now, as they would have
            # a moment later, instead of being sent because the merchant was quick.
            await uow.webhooks.abandon_pending(endpoint.id, "endpoint disabled")
            await uow.commit()
        return endpoint

    async def rotate_secret(
        self,
        endpoint_id: str,
        merchant_id: str | None,
        overlap: timedelta = DEFAULT_SECRET_OVERLAP,
    ) -> SecretRotation:
        """Give the endpoint a new signing secret; the one it replaces signs beside it
        for `overlap` (0 to MAX_SECRET_OVERLAP; 0: not at all, for a leaked one). A
        secret an earlier rotation kept signing is dropped at once: at most two sign."""
        if not timedelta(0) <= overlap <= MAX_SECRET_OVERLAP:
            hours = int(MAX_SECRET_OVERLAP.total_seconds() // 3600)
            raise InvalidEndpoint([("overlap_hours", f"must be within 0 and {hours}")])
        async with self._uow() as uow:
            # Held to the commit: two rotations at once each replace the secret the
            # other left, never one secret lost between them.
            endpoint = await uow.webhooks.lock_endpoint(endpoint_id)
            if (
                endpoint is None
                or endpoint.status is EndpointStatus.DELETED
                or merchant_id not in (None, endpoint.merchant_id)
            ):
                raise EndpointNotFound(endpoint_id)
            endpoint.rotate(self._new_secret(), self._clock.now(), overlap)
            await uow.webhooks.save_endpoint(endpoint)
            await uow.commit()
        log.info(
            "webhook endpoint %s of merchant %s has a new signing secret; the old one signs"
            " until %s",
            endpoint.id,
            endpoint.merchant_id,
            endpoint.previous_secret_until.isoformat() if endpoint.previous_secret_until else "now",
        )
        return SecretRotation(endpoint, endpoint.secret, endpoint.previous_secret_until)

    async def deliveries(
        self,
        merchant_id: str | None,
        *,
        status: DeliveryStatus | None,
        endpoint_id: str | None,
        page_size: int,
        after: Cursor | None,
    ) -> Sequence[WebhookDelivery]:
        async with self._uow() as uow:
            return await uow.webhooks.list_deliveries(
                merchant_id, status=status, endpoint_id=endpoint_id, limit=page_size, after=after
            )

    async def redeliver(self, delivery_id: str, merchant_id: str | None) -> WebhookDelivery:
        """Schedule a dead (or delivered) delivery again, now; same webhook id."""
        async with self._uow() as uow:
            delivery = await uow.webhooks.get_delivery(delivery_id, merchant_id)
            if delivery is None:
                raise DeliveryNotFound(delivery_id)
            endpoint = await uow.webhooks.get_endpoint(delivery.endpoint_id, None)
            if endpoint is None or endpoint.status is not EndpointStatus.ENABLED:
                state = endpoint.status.value if endpoint else "deleted"
                raise CannotRedeliver(f"the endpoint is {state}")
            if delivery.status is DeliveryStatus.PENDING:
                raise CannotRedeliver("the delivery is already scheduled")
            delivery.redeliver(self._clock.now())
            await uow.webhooks.save_delivery(delivery)
            await uow.commit()
        return delivery

    async def redeliver_missed(
        self,
        endpoint_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        dead: bool = False,
        types: Sequence[str] = (),
        dry_run: bool = False,
        batch: int = REDELIVERY_BATCH,
    ) -> BulkRedelivery:
        """Give an endpoint what it was not delivered: for each event of its merchant it
        is subscribed to (and of `types`, when given) that occurred in [since, until), a
        new delivery when it was given none (it was disabled then), or its dead one
        scheduled again; with `dead`, every dead delivery of the endpoint instead. A
        pending or delivered one is left alone. In event order, `batch` events a
        transaction; each delivery keeps the event id as its webhook id."""
        names = redelivery_names(since, until, dead, types)
        async with self._uow() as uow:
            endpoint = await uow.webhooks.get_endpoint(endpoint_id, None)
            pruned = await uow.webhooks.delivered_pruned_before()
        if endpoint is None:
            raise EndpointNotFound(endpoint_id)
        if since is not None and pruned is not None and since < pruned:
            # An event whose delivered delivery was pruned reads as never given: it
            # would be sent again. What was dead-lettered then is redelivered by `dead`.
            raise InvalidRedelivery(
                f"deliveries delivered before {pruned.isoformat()} were pruned (payorch"
                " prune): events before then would be sent again even if delivered;"
                f" give a window from {pruned.isoformat()} on"
            )
        done = BulkRedelivery(endpoint.id, endpoint.merchant_id, dry_run)
        _refuse_unless_enabled(endpoint, done)
        unsubscribed = [t for t in types if not endpoint.wants(t)]
        if unsubscribed:
            raise InvalidRedelivery(
                f"endpoint {endpoint.id} is not subscribed to {', '.join(unsubscribed)}"
            )
        if not names and endpoint.event_types:
            names = [_EVENT_NAME[t] for t in endpoint.event_types if t in _EVENT_NAME]
        after: EventPosition | None = None
        while True:
            async with self._uow() as uow:
                # Held to the commit: a second bulk redelivery of the endpoint waits, so
                # neither makes a delivery the other made.
                locked = await uow.webhooks.lock_endpoint(endpoint.id)
                _refuse_unless_enabled(locked, done)
                page = await uow.webhooks.redelivery_candidates(
                    endpoint.id,
                    endpoint.merchant_id,
                    names=names,
                    since=since,
                    until=until,
                    dead_only=dead,
                    after=after,
                    limit=batch,
                )
                now = self._clock.now()
                new: builtins.list[WebhookDelivery] = []
                for c in page:
                    d = c.delivery
                    if d is None and c.occurred_at < endpoint.created_at:
                        done.before_endpoint += 1
                    elif d is None:
                        done.queued += 1
                        new.append(
                            _missed_delivery(endpoint, c.event_id, c.event_type, c.body, now)
                        )
                    elif d.status is DeliveryStatus.DEAD:
                        if not dry_run:
                            d.redeliver(now)
                            try:
                                await uow.webhooks.save_delivery(d)
                            except ConcurrentUpdate:
                                # Redelivered (or pruned) by another since it was read.
                                done.changed_meanwhile += 1
                                continue
                        done.requeued += 1
                    elif d.pending:
                        done.already_pending += 1
                    else:
                        done.already_delivered += 1
                if not dry_run:
                    await uow.webhooks.add_deliveries(new)
                    await uow.commit()
            if len(page) < batch:
                return done
            after = EventPosition(page[-1].occurred_at, page[-1].event_id)


def redelivery_names(
    since: datetime | None, until: datetime | None, dead: bool, types: Sequence[str]
) -> list[str]:
    """The outbox event names of a bulk redelivery's `types` (none: every type), once its
    window (or `dead`) and its types are checked; InvalidRedelivery says what is wrong."""
    if dead:
        if since is not None or until is not None:
            raise InvalidRedelivery("give either a window (since and until) or dead")
    else:
        if since is None or until is None:
            raise InvalidRedelivery("give a window (since and until) or dead")
        if since.tzinfo is None or until.tzinfo is None:
            raise InvalidRedelivery("give since and until with a time zone")
        if since >= until:
            raise InvalidRedelivery("since must be before until")
        if until - since > MAX_REDELIVERY_WINDOW:
            raise InvalidRedelivery(
                f"the window is over {MAX_REDELIVERY_WINDOW.days} days:"
                " recover a longer outage one window after the other"
            )
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        known = ", ".join(sorted(EVENT_TYPES))
        raise InvalidRedelivery(f"unknown event type(s); known: {known}")
    return [_EVENT_NAME[t] for t in dict.fromkeys(types)]


def _refuse_unless_enabled(endpoint: WebhookEndpoint | None, done: BulkRedelivery) -> None:
    if endpoint is None or endpoint.status is EndpointStatus.DELETED:
        raise EndpointNotFound(done.endpoint_id)
    if endpoint.status is EndpointStatus.ENABLED:
        return
    so_far = ""
    if done.queued or done.requeued:
        so_far = f" ({done.queued} queued and {done.requeued} requeued before it was)"
    raise CannotRedeliver(
        f"endpoint {endpoint.id} is disabled{so_far}: enable it first"
        f" (payorch webhooks enable-endpoint {endpoint.id}), then run this again"
    )


def _missed_delivery(
    endpoint: WebhookEndpoint, event_id: str, kind: str, body: str, now: datetime
) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id("whd"),
        endpoint_id=endpoint.id,
        merchant_id=endpoint.merchant_id,
        event_id=event_id,
        event_type=kind,
        body=body,
        created_at=now,
        next_attempt_at=now,
    )


@dataclass(slots=True)
class DispatchStats:
    fanned_out: int = 0
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    disabled: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "fanned_out": self.fanned_out,
            "attempted": self.attempted,
            "delivered": self.delivered,
            "failed": self.failed,
            "dead": self.dead,
            "endpoints_disabled": self.disabled,
        }


class WebhookDispatcher:
    def __init__(
        self,
        uow: InstallmentUnitOfWorkFactory,
        sender: WebhookSender,
        clock: Clock,
        *,
        wall_clock: Clock,
        worker_id: str,
        timeout_s: float = 10.0,
        batch_size: int = 100,
        concurrency: int = 16,
        rng: random.Random | None = None,
        failing: FailingEndpoints | None = None,
        on_pass: Callable[[DispatchStats], None] | None = None,
        storage_unreachable: Callable[[BaseException], bool] = lambda _: False,
    ) -> None:
        self._uow = uow
        self._sender = sender
        # Told what each pass did, once it ends (metrics); never stops a pass.
        self._on_pass = on_pass
        # Whether a failure means the database could not be reached (an outage).
        self._storage_unreachable = storage_unreachable
        self._clock = clock
        self._failing = failing or FailingEndpoints()
        # Receivers check webhook-timestamp against their own clock: sign with real time
        # even when the business clock is shifted for a demo (--now).
        self._wall = wall_clock
        self.worker_id = worker_id
        self._timeout_s = timeout_s
        # Long enough for one request (and the address check before it), so a live
        # worker never loses its claim: it claims no more than it sends at once, so no
        # claimed delivery waits for a free slot while its lease runs.
        self._lease = timedelta(seconds=timeout_s * 3 + 5)
        self._batch = batch_size
        self._claim = max(1, min(batch_size, concurrency))
        self._rng = rng or random.Random()

    async def run_once(self, stop: asyncio.Event | None = None) -> DispatchStats:
        """One pass (_pass); what it did is then told to `on_pass`, a pass that raised
        included: the deliveries it recorded before were sent all the same."""
        stats = DispatchStats()
        try:
            return await self._pass(stats, stop)
        finally:
            tell(self._on_pass, stats, "a webhook pass")

    async def _pass(self, stats: DispatchStats, stop: asyncio.Event | None) -> DispatchStats:
        """Fan new outbox events out to endpoints, then send every delivery due now.
        Once `stop` is set, nothing more is claimed: what is claimed is sent and recorded,
        the rest waits for the next worker."""
        while True:
            async with self._uow() as uow:
                handled = await uow.webhooks.fan_out(now=self._clock.now(), limit=self._batch)
                await uow.commit()
            stats.fanned_out += handled
            if handled < self._batch:
                break
        # A fan-out or redelivery that raced an endpoint's delete (or 410) left it
        # deliveries that no claim picks: they would wait as pending for ever.
        async with self._uow() as uow:
            stats.dead += await uow.webhooks.abandon_stranded()
            # A rotated-out secret whose overlap is over signs nothing more: not kept.
            await uow.webhooks.forget_expired_secrets(self._clock.now())
            await uow.commit()
        # Every delivery claimed is sent: a retry that fell due during the pass goes out
        # on time, and none is left claimed, unsent, until its lease runs out. The pass
        # ends: each failure puts the next attempt at least 4 s on.
        while stop is None or not stop.is_set():
            now = self._clock.now()
            async with self._uow() as uow:
                jobs = await uow.webhooks.claim_deliveries(
                    now=now, worker=self.worker_id, lease_until=now + self._lease, limit=self._claim
                )
                await uow.commit()
            if not jobs:
                return stats
            await asyncio.gather(*(self._deliver(j, stats) for j in jobs))
        return stats

    async def _deliver(self, job: DeliveryJob, stats: DispatchStats) -> None:
        d = job.delivery
        stats.attempted += 1
        try:
            result = await self._sender.send(
                job.url,
                # Every secret valid now, the newest first: during a rotation's overlap
                # the receiver verifies with the old one or the new one alike.
                secrets=job.secrets_at(self._clock.now()),
                webhook_id=d.event_id,
                timestamp=int(self._wall.now().timestamp()),
                body=d.body,
                timeout_s=self._timeout_s,
            )
        except Exception as exc:  # the sender should not raise; never lose the claim's fate
            log.exception("webhook sender failed")
            result = SendResult(0, f"sender error: {type(exc).__name__}")
        try:
            await self._record(job, result.status_code, result.error, stats)
        except ConcurrentUpdate:
            log.warning("delivery %s changed while being sent; left as it is", d.id)

    async def _record(
        self, job: DeliveryJob, status_code: int, error: str, stats: DispatchStats
    ) -> None:
        now = self._clock.now()
        async with self._uow() as uow:
            d = await uow.webhooks.get_delivery(job.delivery.id, None)
            if d is None or d.version != job.delivery.version or not d.pending:
                return  # reclaimed, redelivered or abandoned meanwhile
            # The endpoint row first, then its deliveries: the order every outcome takes,
            # so the deliveries of one endpoint in flight together queue on it instead of
            # deadlocking on each other's deliveries.
            disabled = None
            if 200 <= status_code < 300:
                await uow.webhooks.note_success(d.endpoint_id)
                d.succeeded(status_code, now)
                stats.delivered += 1
            elif status_code == 410:
                disabled = await self._disable(uow, d.endpoint_id, None, now)
                d.gone(status_code, "410 Gone: endpoint disabled")
                stats.dead += 1
            else:
                d.failed(status_code, error or f"HTTP {status_code}", now, self._rng.random())
                if d.pending:
                    stats.failed += 1
                else:
                    stats.dead += 1
                if await uow.webhooks.note_failure(d.endpoint_id, now=now, dead=not d.pending):
                    disabled = await self._disable(uow, d.endpoint_id, self._failing, now)
            await uow.webhooks.save_delivery(d)
            if disabled is not None:
                # Dead-lettered with it: its deliveries still waiting to be sent.
                stats.dead += await uow.webhooks.abandon_pending(d.endpoint_id, disabled[1])
                stats.disabled += 1
            await uow.commit()
        if disabled is not None:
            # Once: the endpoint's row is held from its first write to the commit, so
            # of two replicas recording its failures together only one disables it.
            endpoint, _ = disabled
            log.warning(
                "webhook endpoint %s of merchant %s disabled: %s",
                endpoint.id,
                endpoint.merchant_id,
                endpoint.disabled_reason,
            )

    async def _disable(
        self,
        uow: InstallmentUnitOfWork,
        endpoint_id: str,
        failing: FailingEndpoints | None,
        now: datetime,
    ) -> tuple[WebhookEndpoint, str] | None:
        """Disable the endpoint for a 410 (`failing` None), or when it has failed long
        enough; the endpoint and what its waiting deliveries are abandoned with."""
        endpoint = await uow.webhooks.get_endpoint(endpoint_id, None)
        if endpoint is None or endpoint.status is not EndpointStatus.ENABLED:
            return None
        if failing is None:
            endpoint.disable("the receiver answered 410 Gone", now)
            abandoned = "endpoint disabled (410 Gone)"
        elif failing.to_disable(endpoint, now):
            endpoint.disable(failing.reason(endpoint), now)
            abandoned = "endpoint disabled (failing for days)"
        else:
            return None
        await uow.webhooks.save_endpoint(endpoint)
        return endpoint, abandoned

    async def run_forever(self, interval_s: float, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                stats = await self.run_once(stop)
                if stats.attempted:
                    log.info("webhook pass: %s", stats.as_dict())
            except Exception as exc:
                log_failed_pass(log, "webhook", exc, interval_s, self._storage_unreachable)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
