"""Use cases of payments: create (idempotently), read, list, reconcile."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from payorch.app.ports import (
    Clock,
    ConcurrentUpdate,
    DuplicateRequest,
    PageCursor,
    UnitOfWorkFactory,
)
from payorch.app.router import Deadline, Router
from payorch.domain.payment import (
    CaptureMode,
    MethodType,
    Payment,
    PaymentStatus,
    Step,
    StepStatus,
)
from payorch.domain.request import CoreRequest
from payorch.domain.retry import RetryPolicy

# How long a duplicate request waits for the first one to finish before ABORTED.
DUPLICATE_WAIT_S = 5.0
DUPLICATE_POLL_S = 0.05
# A payment PROCESSING for longer than any call could take was interrupted.
STALE_PROCESSING = timedelta(minutes=5)


class PaymentNotFound(LookupError):
    pass


class IdempotencyConflict(ValueError):
    """The request id was used before with different parameters."""

    def __init__(self, request_id: str, mismatch: str):
        self.mismatch = mismatch
        super().__init__(f"request_id {request_id!r} was already used with a different {mismatch}")


class RequestInProgress(RuntimeError):
    """An identical request is still running; retry shortly (ABORTED)."""


@dataclass(frozen=True, slots=True)
class CreateResult:
    payment: Payment
    replayed: bool


def new_payment_id() -> str:
    return f"pay_{uuid.uuid4().hex}"


# Processors per method when the merchant has no config.
ProcessorsFor = Callable[[str, MethodType], list[str]]


class PaymentService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        router: Router,
        clock: Clock,
        *,
        processors_for: ProcessorsFor,
        retry_policy: RetryPolicy | None = None,
        new_id: Callable[[], str] = new_payment_id,
    ) -> None:
        self._uow = uow
        self._router = router
        self._clock = clock
        self._processors_for = processors_for
        self._retry_policy = retry_policy or RetryPolicy()
        self._new_id = new_id

    async def create(self, request: CoreRequest, *, deadline_s: float | None) -> CreateResult:
        t0 = self._clock.monotonic()
        deadline = Deadline(None if deadline_s is None else t0 + deadline_s)
        fingerprint = request.fingerprint()
        while True:
            # Insert first: the unique (merchant, request_id) constraint is the gate.
            payment = self._new_payment(request, fingerprint)
            try:
                async with self._uow() as uow:
                    await uow.payments.add(payment)
                    await uow.commit()
                break
            except DuplicateRequest:
                existing = await self._replay_or_wait(request, fingerprint, deadline)
                if existing is not None:
                    return CreateResult(existing, replayed=True)
        await self._execute(payment, deadline)
        payment.settle(self._clock.now(), orchestration_ms=self._elapsed_ms(t0))
        async with self._uow() as uow:
            await uow.payments.save(payment)
            await uow.commit()
        return CreateResult(payment, replayed=False)

    def _elapsed_ms(self, t0: float) -> int:
        return int((self._clock.monotonic() - t0) * 1000)

    async def _replay_or_wait(
        self, request: CoreRequest, fingerprint: str, deadline: Deadline
    ) -> Payment | None:
        waited = 0.0
        while True:
            async with self._uow() as uow:
                existing = await uow.payments.get_by_request(
                    request.merchant_id, request.request_id
                )
            if existing is None:
                return None
            if existing.fingerprint != fingerprint:
                raise IdempotencyConflict(request.request_id, _mismatch(existing, request))
            if existing.status is not PaymentStatus.PROCESSING:
                return existing
            remaining = deadline.remaining_ms(self._clock)
            budget = (
                DUPLICATE_WAIT_S if remaining is None else min(DUPLICATE_WAIT_S, remaining / 1e3)
            )
            if waited + DUPLICATE_POLL_S > budget:
                raise RequestInProgress(
                    f"request {request.request_id!r} is still being processed; retry shortly"
                )
            await self._clock.sleep(DUPLICATE_POLL_S)
            waited += DUPLICATE_POLL_S

    def _new_payment(self, request: CoreRequest, fingerprint: str) -> Payment:
        now = self._clock.now()
        steps = []
        remaining = request.amount.amount_minor
        for i, m in enumerate(request.methods):
            last = i == len(request.methods) - 1
            amount = remaining if (last or m.amount_minor is None) else m.amount_minor
            remaining -= amount
            steps.append(
                Step(
                    index=i,
                    method=m.method,
                    token=m.token,
                    amount_minor=amount,
                    processors=self._processors_for(request.merchant_id, m.method),
                    customer_id=m.customer_id or request.customer_id,
                )
            )
        return Payment(
            id=self._new_id(),
            merchant_id=request.merchant_id,
            request_id=request.request_id,
            fingerprint=fingerprint,
            currency=request.amount.currency,
            amount_minor=request.amount.amount_minor,
            steps=steps,
            created_at=now,
            updated_at=now,
            capture_mode=CaptureMode.AUTOMATIC if len(steps) == 1 else CaptureMode.MANUAL,
            metadata=dict(request.metadata),
            off_session=request.off_session,
        )

    async def _execute(self, payment: Payment, deadline: Deadline) -> None:
        for step in payment.steps:
            await self._router.authorize(
                payment, step, policy=self._retry_policy, deadline=deadline
            )
            if step.status is not StepStatus.AUTHORIZED and step.status is not StepStatus.CAPTURED:
                break

    async def get(self, payment_id: str, merchant_id: str | None) -> Payment:
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id, merchant_id)
        if payment is None:
            raise PaymentNotFound(payment_id)
        return payment

    async def list(
        self,
        merchant_id: str | None,
        *,
        page_size: int,
        after: PageCursor | None,
        status: PaymentStatus | None = None,
        created_after: datetime | None = None,
    ) -> Sequence[Payment]:
        async with self._uow() as uow:
            return await uow.payments.list(
                merchant_id,
                limit=page_size,
                after=after,
                status=status,
                created_after=created_after,
            )

    async def reconcile_due(
        self, *, processing_stale_after: timedelta = STALE_PROCESSING, limit: int = 100
    ) -> int:
        """Resolve UNKNOWN payments whose next lookup is due, and PROCESSING ones
        older than `processing_stale_after` (interrupted mid-payment)."""
        now = self._clock.now()
        async with self._uow() as uow:
            due = await uow.payments.list_unresolved(
                now=now, processing_before=now - processing_stale_after, limit=limit
            )
        settled = 0
        for payment in due:
            settled += await self.reconcile(payment)
        return settled

    async def reconcile(self, payment: Payment) -> bool:
        changed = False
        for step in payment.steps:
            if step.status in (StepStatus.UNKNOWN, StepStatus.PENDING):
                changed |= await self._router.reconcile(payment, step)
                if step.status is StepStatus.PENDING:
                    break
        if changed:
            payment.settle(self._clock.now())
        else:
            payment.reconcile_inconclusive(self._clock.now())
        try:
            async with self._uow() as uow:
                await uow.payments.save(payment)
                await uow.commit()
        except ConcurrentUpdate:
            return False
        return changed


@dataclass(frozen=True, slots=True)
class ProcessorEvent:
    """A processor told us (webhook) that something happened to a payment."""

    event_id: str
    source: str
    payment_id: str
    step_index: int
    processor_payment_id: str
    # True only for final good news (PaymentIntent succeeded / requires_capture).
    charged: bool


class ProcessorEvents:
    """Applies processor webhooks. Only final good news is applied as is; any other
    event is a hint to look the payment up now, so out-of-order or stale events
    can never undo what the processor holds."""

    def __init__(self, uow: UnitOfWorkFactory, payments: PaymentService, clock: Clock) -> None:
        self._uow = uow
        self._payments = payments
        self._clock = clock

    async def apply(self, event: ProcessorEvent) -> str:
        now = self._clock.now()
        async with self._uow() as uow:
            if not await uow.inbound_events.remember(event.event_id, event.source, now):
                return "duplicate"
            payment = await uow.payments.get(event.payment_id, None)
            if payment is None or not 0 <= event.step_index < len(payment.steps):
                await uow.commit()
                return "unknown payment"
            step = payment.steps[event.step_index]
            if (
                step.processor_payment_id
                and step.processor_payment_id != event.processor_payment_id
            ):
                await uow.commit()
                return "stale processor object"
            open_states = (StepStatus.PENDING, StepStatus.UNKNOWN, StepStatus.REQUIRES_ACTION)
            if step.status not in open_states or payment.status is PaymentStatus.PROCESSING:
                # Settled already, or still being worked on by the router: nothing to do.
                await uow.commit()
                return "ignored"
            if event.charged:
                step.processor_payment_id = event.processor_payment_id
                payment.step_succeeded(step, processor=step.processor, latency_ms=0)
                payment.step_reconciled(step, source=event.source)
                payment.settle(now)
                await uow.payments.save(payment)
                await uow.commit()
                return "applied"
            await uow.commit()
        settled = await self._payments.reconcile(payment)
        return "looked up" if settled else "looked up, still open"


def _mismatch(existing: Payment, request: CoreRequest) -> str:
    diffs = []
    if existing.amount_minor != request.amount.amount_minor:
        diffs.append("amount")
    if existing.currency != request.amount.currency:
        diffs.append("currency")
    tokens = [(s.method, s.token) for s in existing.steps]
    if tokens != [(m.method, m.token) for m in request.methods]:
        diffs.append("payment method")
    if existing.metadata != request.metadata:
        diffs.append("metadata")
    if existing.off_session != request.off_session:
        diffs.append("off_session")
    return ", ".join(diffs) or "set of parameters"


ProcessorNames = Mapping[str, Sequence[str]]
