"""Use cases of payments: create (idempotently), read, list, reconcile."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from payorch.app.contract_monitor import identify_call
from payorch.app.ids import new_id
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.observability import Via
from payorch.app.payment_observation import PaymentObservation, unstored
from payorch.app.plan_builder import Plan, PlanRejected, build_plan
from payorch.app.ports import (
    ChargeClaim,
    Clock,
    ConcurrentUpdate,
    DuplicateRequest,
    PageCursor,
    RefundRequest,
    StoredEvent,
    UnitOfWork,
    UnitOfWorkFactory,
    UnreadablePayment,
)
from payorch.app.router import RUN_LIMIT_S, Deadline, Router
from payorch.app.settlement import LOOKUP_TIMEOUT_S, MAX_REFUND_SENDS, Settlement
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import (
    ACTION_TIMEOUT,
    NOT_HELD,
    UNRESOLVED,
    Attempt,
    CaptureMode,
    FallbackMethod,
    Owed,
    Payment,
    PaymentStatus,
    Step,
    StepStatus,
)
from payorch.domain.request import CoreRequest
from payorch.domain.results import ErrorCode, ResponseKind
from payorch.domain.retry import DEADLINE_RESERVE_MS, MIN_CALL_MS

# The steps whose hold a cancel releases: authorized, or waiting for the customer.
_RELEASABLE = (StepStatus.AUTHORIZED, StepStatus.REQUIRES_ACTION)
# Why a payment is cancelled when a capture finds its authorizations released.
CANCELED_AT_PROCESSOR = (
    "canceled at the processor (voided by another call, or the authorization lapsed)"
)
# How long a duplicate request waits for the first one to finish before ABORTED.
DUPLICATE_WAIT_S = 5.0
DUPLICATE_POLL_S = 0.05
# A payment stored PROCESSING this long ago was interrupted (its server died or stopped
# mid-payment): no live run can still own it, as none lasts over RUN_LIMIT_S (2 minutes,
# payorch.app.router). The reconciler takes it then, and so does a processor's event.
STALE_PROCESSING = timedelta(minutes=5)
# How long the reconciler that claims a payment holds it (PaymentService._take): its
# work on it is held to RUN_LIMIT_S, and the rest, as for STALE_PROCESSING, covers the
# database's writes and clocks apart between replicas.
RECONCILE_LEASE = STALE_PROCESSING
# A step failed with no time left to charge it (the caller's deadline, or the run's own
# limit): a fallback method would have none either.
_OUT_OF_TIME = frozenset({ErrorCode.DEADLINE_EXCEEDED, ErrorCode.RUN_LIMIT_REACHED})


def longest_settle_s(call_timeout_s: float) -> float:
    """A capture or void at its longest: two tries, each looked up after it fails
    (Settlement._settle), at the processor calls' timeout and the lookups'."""
    return 2 * (call_timeout_s + LOOKUP_TIMEOUT_S)


# The longest processor call timeout under which a capture or void still fits in a run
# (RUN_LIMIT_S): past it every capture and void would be owed, made by the reconciler,
# so a process refuses to start with one (bootstrap.check_times).
MAX_CALL_TIMEOUT_S = RUN_LIMIT_S / 2 - LOOKUP_TIMEOUT_S

# How many times a change to a payment is made again on what another call saved
# meanwhile, before the caller is told to retry (ABORTED).
CHANGE_TRIES = 3


@dataclass(slots=True)
class ReconcileStats:
    """What one reconciler pass did."""

    settled: int = 0
    # Payments whose work raised (not a processor's answer: a bug, data it could not
    # read, a write refused): each logged and backed off, the pass going on.
    errors: int = 0


class PaymentNotFound(LookupError):
    pass


class IdempotencyConflict(ValueError):
    """The request id was used before with different parameters."""

    def __init__(self, request_id: str, mismatch: str):
        self.mismatch = mismatch
        super().__init__(f"request_id {request_id!r} was already used with a different {mismatch}")


class CustomerNotOwned(ValueError):
    """The request names a processor customer another merchant used first. The caller
    is told only that it has no such customer (INVALID_ARGUMENT on the field): whether
    another merchant uses the id is not its to know."""

    MESSAGE = "unknown customer for this merchant"

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = list(fields)
        super().__init__("; ".join(f"{f}: {self.MESSAGE}" for f in self.fields))


class RequestInProgress(RuntimeError):
    """An identical request is still running; retry shortly (ABORTED)."""


class ClaimLost(RuntimeError):
    """An installment's charge refused by the payments gate: its claim no longer admits
    it (InstallmentPlan.admits_charge: its plan was cancelled once the claim's lease had
    run out, or the claim was taken over since). Nothing was stored or sent."""

    def __init__(self, claim: ChargeClaim) -> None:
        self.claim = claim
        super().__init__(
            f"installment {claim.installment_id} attempt {claim.attempt}: its claim no "
            "longer admits a charge; nothing was sent"
        )


class ProcessorUnanswered(RuntimeError):
    """A processor's event could not be acted on: the processor, asked what it holds,
    did not answer. Nothing was recorded, and the event is to be taken again."""


class RefundsUnknown(ProcessorUnanswered):
    """The processor could not say what became of a charge's refunds."""


class HoldUnknown(ProcessorUnanswered):
    """The processor could not say what became of a step held authorized."""


class PaymentInProgress(RuntimeError):
    """A processor's event about a step of a payment a live run may still be working on
    (stored PROCESSING less than STALE_PROCESSING ago): not acted on, and not remembered
    as seen, so that the processor's redelivery is acted on once the run is over, or
    once the payment counts as interrupted."""


def run_interrupted(payment: Payment, now: datetime) -> bool:
    """Whether a payment stored PROCESSING was left by a run that is over (its server died
    or stopped mid-payment): stored so longer than STALE_PROCESSING, which no live run
    lasts (RUN_LIMIT_S). The reconciler's pass takes such a payment, as its storage
    query says (PaymentRepository.list_unresolved)."""
    return payment.status is PaymentStatus.PROCESSING and (
        payment.updated_at <= now - STALE_PROCESSING
    )


# A look-up that got one of these has no answer: what it asked is still open.
NO_ANSWER = frozenset({ResponseKind.ERROR, ResponseKind.CONNECTION_ERROR, ResponseKind.NO_RESPONSE})


class DeadlineTooShort(RuntimeError):
    """The caller's deadline leaves too little time for a processor call to be answered
    (MIN_CALL_MS): nothing was sent or stored; retry with a longer deadline."""


class PaymentChanging(RuntimeError):
    """Other calls kept changing the payment under this one; retry shortly (ABORTED)."""


@dataclass(frozen=True, slots=True)
class CreateResult:
    payment: Payment
    replayed: bool


def new_payment_id() -> str:
    return new_id("pay")


class RefundRejected(ValueError):
    """A refund asks for more than was captured, or of a payment with nothing captured."""


class TooManyRefunds(ValueError):
    """The payment has taken MAX_REFUNDS_PER_PAYMENT refunds: it takes no new one."""


# Each refund adds its attempts to the payment every read returns: about 230 bytes a
# part. Unbounded, some 18,000 one-cent refunds made the payment larger than a gRPC
# answer may be, and it could no longer be read, listed or refunded.
MAX_REFUNDS_PER_PAYMENT = 1000


class InvalidState(ValueError):
    """The operation does not apply to the payment in its current state."""


class HeldOtherwise(InvalidState):
    """A capture or void lost to the other one at the processor (or to a lapsed
    authorization): the steps are stored as the processor holds them, and the call
    that lost is refused, saying so."""

    def __init__(self, steps: Sequence[Step], held: str, advice: str) -> None:
        indexes = ", ".join(str(s.index) for s in steps)
        amount = sum(s.amount_minor for s in steps)
        plural = "s" if len(steps) > 1 else ""
        super().__init__(f"the processor holds step{plural} {indexes} ({amount}) {held}: {advice}")


class ProcessorNotConfigured(InvalidState):
    """What the call must ask of is held at a processor this server has no adapter for
    (taken out of its settings since the payment was made): only that processor can
    capture, void or refund it. Nothing was sent or changed."""

    def __init__(self, names: Sequence[str], doing: str) -> None:
        self.names = list(names)
        named = ", ".join(repr(n) for n in self.names)
        plural = "s" if len(self.names) > 1 else ""
        super().__init__(
            f"the payment is held at processor{plural} {named}, not configured on this"
            f" server: it cannot be {doing} until {'they are' if plural else 'it is'}"
            " configured again; nothing was changed"
        )


class ReleaseUndecided(RuntimeError):
    """A cancel could not release a step waiting for the customer: the processor did not
    say whether it canceled it (a void and the lookup after it failed). Nothing was
    changed: the customer may still complete it, so it is not called cancelled."""

    def __init__(self, steps: Sequence[Step]) -> None:
        indexes = ", ".join(str(s.index) for s in steps)
        super().__init__(
            f"the processor did not say whether step {indexes}, waiting for the customer, "
            "was canceled: the payment is not cancelled; retry shortly"
        )


class PaymentService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        router: Router,
        clock: Clock,
        configs: MerchantConfigs,
        settlement: Settlement,
        *,
        new_id: Callable[[], str] = new_payment_id,
        observation: PaymentObservation | None = None,
        storage_unreachable: Callable[[BaseException], bool] = lambda _: False,
    ) -> None:
        self._uow = uow
        self._router = router
        self._clock = clock
        self._configs = configs
        self._settlement = settlement
        self._new_id = new_id
        self._observe = observation or PaymentObservation()
        # Whether a failure means the whole database could not be reached (an outage).
        self._storage_unreachable = storage_unreachable
        # Changes whose callers went away, still running to their save (_change).
        self._in_flight: set[asyncio.Future[Payment]] = set()

    async def create(
        self,
        request: CoreRequest,
        *,
        deadline_s: float | None,
        own_customers: bool = False,
        only_if: ChargeClaim | None = None,
    ) -> CreateResult:
        """Take the payment, or replay the one made under its request id before.

        `own_customers`: the caller vouches that the request's processor customers are its
        merchant's (an installment plan's charge: its customer was claimed when the plan
        was made), and they are not claimed again.

        `only_if`: an installment's charge, stored (and so sent) only while its claim
        admits it, decided by the gate insert itself; ClaimLost when it does not and no
        payment was made under the request id before."""
        t0 = self._clock.monotonic()
        deadline = Deadline.for_run(self._clock, deadline_s)
        fingerprint = request.fingerprint()
        self._observe.request_accepted(request)
        config, _ = await self._configs.get(request.merchant_id)
        try:
            plan = build_plan(request, config, self._configs.processors)
        except PlanRejected as exc:
            # The gate first: a request made before, under a config changed since, is
            # replayed (or a conflict), never refused for money it may have taken.
            existing = await self._replay_or_wait(request, fingerprint, deadline)
            if existing is not None:
                return CreateResult(existing, replayed=True)
            self._observe.plan_rejected(request, exc.contract_id, str(exc))
            raise
        customers = {} if own_customers else _customers(request)
        if customers:
            # The gate first here too: a replay or a conflict claims nothing, so a request
            # refused as one leaves nothing behind.
            existing = await self._replay_or_wait(request, fingerprint, deadline)
            if existing is not None:
                return CreateResult(existing, replayed=True)
            await self._claim(request, customers)
        while True:
            if not deadline.leaves_time_for_a_call(self._clock):
                # No call could be answered in the time left: store nothing, so that the
                # caller's retry under the same request_id (with time) pays. One made
                # before is replayed all the same: a replay calls no one.
                existing = await self._replay_or_wait(request, fingerprint, deadline)
                if existing is not None:
                    return CreateResult(existing, replayed=True)
                raise DeadlineTooShort(
                    f"request {request.request_id!r}: the deadline leaves less than"
                    f" {MIN_CALL_MS + DEADLINE_RESERVE_MS} ms, too little for a processor to"
                    " answer; nothing was sent: retry with a longer deadline"
                )
            # Insert first: the unique (merchant, request_id) constraint is the gate.
            payment = self._new_payment(request, fingerprint, plan, config)
            # Committed with the PROCESSING row: out before anything is charged, so a
            # caller that lost its answer (or a server that died) still hears of it.
            payment.started()
            try:
                await self._uow.insert_payment(payment, only_if=only_if)
                break
            except DuplicateRequest:
                existing = await self._replay_or_wait(request, fingerprint, deadline)
                if existing is not None:
                    return CreateResult(existing, replayed=True)
                if only_if is not None:
                    # No payment under the request id: the claim refused the insert.
                    raise ClaimLost(only_if) from None
        identify_call(payment_id=payment.id)
        with self._observe.span("payment.plan", payment_id=payment.id, steps=len(payment.steps)):
            await self._run_plan(payment, config, deadline, Via.CREATE)
        payment.settle(self._clock.now(), orchestration_ms=self._elapsed_ms(t0))
        await self._save(payment, Via.CREATE)
        self._observe.payment_finished(payment)
        return CreateResult(payment, replayed=False)

    async def _claim(self, request: CoreRequest, customers: dict[str, str]) -> None:
        """Bind the request's processor customers to its merchant, or refuse it (before
        anything is stored or sent) if another merchant has one of them."""
        async with self._uow() as uow:
            owners = await uow.customers.claim(
                request.merchant_id, set(customers.values()), self._clock.now()
            )
            await uow.commit()
        refused = [f for f, c in customers.items() if owners.get(c) != request.merchant_id]
        if refused:
            self._observe.customer_refused(request, refused)
            raise CustomerNotOwned(refused)

    async def check_plan(self, request: CoreRequest) -> None:
        """Raise PlanRejected when the merchant's config would refuse this request (its
        currency, method or limits), as create would, and record it as create does;
        nothing is charged or stored."""
        config, _ = await self._configs.get(request.merchant_id)
        try:
            build_plan(request, config, self._configs.processors)
        except PlanRejected as exc:
            self._observe.plan_rejected(request, exc.contract_id, str(exc))
            raise

    def _elapsed_ms(self, t0: float) -> int:
        return int((self._clock.monotonic() - t0) * 1000)

    @property
    def observation(self) -> PaymentObservation:
        return self._observe

    async def _save(self, payment: Payment, via: Via) -> None:
        saved = unstored(payment)
        await self._uow.update_payment(payment)
        self._observe.stored(payment, saved, via)

    async def _replay_or_wait(
        self, request: CoreRequest, fingerprint: str, deadline: Deadline
    ) -> Payment | None:
        waited = 0.0
        while True:
            existing = await self._uow.payment_by_request(request.merchant_id, request.request_id)
            if existing is None:
                return None
            if existing.fingerprint != fingerprint:
                conflict = IdempotencyConflict(request.request_id, _mismatch(existing, request))
                self._observe.idempotency_conflict(request, str(conflict))
                raise conflict
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

    def _new_payment(
        self, request: CoreRequest, fingerprint: str, plan: Plan, config: MerchantConfig
    ) -> Payment:
        now = self._clock.now()
        steps = [
            Step(
                index=i,
                method=s.method,
                token=s.token,
                amount_minor=s.amount_minor,
                processors=list(s.processors),
                customer_id=s.customer_id,
            )
            for i, s in enumerate(plan.steps)
        ]
        single = len(steps) == 1 and not request.authorize_only
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
            # One step: authorize and capture in one call. Several: all-or-nothing.
            capture_mode=CaptureMode.AUTOMATIC if single else CaptureMode.MANUAL,
            allow_partial=config.allow_partial,
            config_version=plan.config_version,
            metadata=dict(request.metadata),
            off_session=request.off_session,
            # Charged for the request's customer unless the method names its own, as the
            # planned steps are: a saved PaymentMethod is refused without its customer.
            fallbacks=[
                FallbackMethod(m.method, m.token, m.customer_id or request.customer_id)
                for m in plan.fallbacks
            ],
            authorize_only=request.authorize_only,
            save_for_off_session=request.save_for_off_session,
        )

    async def _run_plan(
        self, payment: Payment, config: MerchantConfig, deadline: Deadline, via: Via
    ) -> None:
        """Authorize the steps in order; on a failure fall back, or compensate; then capture.

        Stops (and leaves the payment open) at a step that needs the customer or whose
        outcome is unknown: ConfirmPayment, a webhook or the reconciler goes on from there.
        """
        i = 0
        while i < len(payment.steps):
            step = payment.steps[i]
            if step.status is StepStatus.PENDING:
                with self._observe.span(
                    "payment.step", index=step.index, method=step.method._value_
                ):
                    await self._router.authorize(
                        payment, step, policy=config.retry_policy, deadline=deadline
                    )
            if step.status in (StepStatus.REQUIRES_ACTION, StepStatus.UNKNOWN):
                return
            if step.status is StepStatus.FAILED and step.error_code in _OUT_OF_TIME:
                break  # no time left for a fallback's charge either
            if step.status is StepStatus.FAILED and not _moved(payment):
                fallback = self._fallback_for(payment, step, config)
                if fallback is None:
                    break
                # Stored before it is charged: a server dying during its charge leaves a
                # step the reconciler can look up, not a charge no record points to.
                await self._save(payment, via)
            i += 1
        for rest in payment.steps:
            if rest.status is StepStatus.PENDING:
                payment.step_skipped(rest)
        if payment.remaining_minor and not payment.allow_partial:
            await self._compensate(payment, run=deadline)
        elif payment.capture_mode is CaptureMode.MANUAL and not payment.authorize_only:
            await self._capture_all(payment, run=deadline)

    def _fallback_for(self, payment: Payment, failed: Step, config: MerchantConfig) -> Step | None:
        if not config.fallback_on_failure or not payment.fallbacks:
            return None
        for i, f in enumerate(payment.fallbacks):
            rule = config.rule(f.method)
            if rule is not None and rule.admits(failed.amount_minor):
                del payment.fallbacks[i]
                return payment.add_fallback_step(
                    f.method,
                    f.token,
                    f.customer_id,
                    failed.amount_minor,
                    list(rule.processors or self._configs.processors),
                )
        return None

    async def _compensate(
        self, payment: Payment, deferred: set[str] | None = None, *, run: Deadline | None = None
    ) -> None:
        """All-or-nothing: void every authorization taken so far (`deferred`: the
        reconciler's voids, which wait for an open breaker: Settlement._admitted). A void
        that could not end inside the run's limit (`run`) is owed, not tried."""
        for step in payment.steps:
            if step.status is not StepStatus.AUTHORIZED:
                continue
            if self._settle_fits(run):
                await self._release(payment, step, deferred)
            else:
                payment.owe(Owed.VOID, step)  # the reconciler makes it

    def _settle_fits(self, run: Deadline | None) -> bool:
        """Whether a capture or void started now ends inside the run's limit at the
        longest (longest_settle_s). One that may not is owed instead, made by the
        reconciler, so that a run never outlasts RUN_LIMIT_S: the reconciler takes a
        payment left PROCESSING longer than STALE_PROCESSING for an interrupted one."""
        longest = longest_settle_s(self._router.call_timeout_s)
        return run is None or run.leaves_run_time(self._clock, longest)

    async def _release(
        self, payment: Payment, step: Step, deferred: set[str] | None = None
    ) -> None:
        """Void what a step holds. A void that fails and leaves it held is owed: the
        reconciler makes it again until it goes through. One that finds the step captured
        (a capture won the race) leaves it captured, as the processor holds it. One the
        reconciler could not make yet (`deferred`) is owed the same way."""
        authorized = step.status is StepStatus.AUTHORIZED
        tried = len(step.attempts)
        if await self._settlement.void(payment, step, deferred=deferred):
            return
        if step.status in _RELEASABLE:
            payment.owe(Owed.VOID, step, held_back=_held_back(step, tried, deferred))
        elif step.status is StepStatus.CAPTURED and authorized:
            # A capture of what was authorized; a step found captured while it waited
            # for the customer was captured automatically: the payment completes.
            payment.captured(step.amount_minor)

    async def _capture_all(
        self, payment: Payment, deferred: set[str] | None = None, *, run: Deadline | None = None
    ) -> None:
        """Capture every authorized step. A capture that fails is owed: the reconciler
        makes it again until it goes through (before the authorization lapses). One the
        reconciler could not make yet (`deferred`: the breaker is open) is owed too, and
        so is one that could not end inside the run's limit (`run`): not tried."""
        amount, voided = 0, False
        for step in payment.steps:
            if step.status is not StepStatus.AUTHORIZED:
                continue
            if not self._settle_fits(run):
                payment.owe(Owed.CAPTURE, step)  # the reconciler makes it
                continue
            tried = len(step.attempts)
            if await self._settlement.capture(payment, step, deferred=deferred):
                amount += step.amount_minor
            elif step.status is StepStatus.AUTHORIZED:  # not released at the processor
                payment.owe(Owed.CAPTURE, step, held_back=_held_back(step, tried, deferred))
            else:
                voided = step.status is StepStatus.VOIDED or voided
        if amount:
            payment.captured(amount)
        if voided:
            _cancelled_if_released(payment)

    def _refuse_unconfigured(self, steps: Sequence[Step], doing: str) -> None:
        """ProcessorNotConfigured when any of `steps` is held at a processor this server
        has no adapter for: the call could not be made, and must not be recorded as if
        it had been tried (owed, announced, or held)."""
        missing = sorted(
            {
                s.processor
                for s in steps
                if s.processor and s.processor not in self._router.processors
            }
        )
        if missing:
            raise ProcessorNotConfigured(missing, doing)

    async def _load(self, payment_id: str, merchant_id: str | None) -> Payment:
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id, merchant_id)
        if payment is None:
            raise PaymentNotFound(payment_id)
        return payment

    async def get(self, payment_id: str, merchant_id: str | None) -> Payment:
        return await self._load(payment_id, merchant_id)

    async def _change(
        self,
        payment_id: str,
        merchant_id: str | None,
        change: Callable[[Payment], Awaitable[bool]],
        via: Via,
    ) -> Payment:
        """`_change_once_saved`, run to its end even when its caller goes away (the
        client's deadline passed, the server stopping cancelled the call): cut short
        while the processor captured, voided or refunded, it would leave the payment
        looking as before, with nothing owed and nothing for the reconciler to look at.
        `finish_in_flight` waits for such changes."""
        running = asyncio.ensure_future(
            self._change_once_saved(payment_id, merchant_id, change, via)
        )
        self._in_flight.add(running)
        running.add_done_callback(self._finished_in_flight)
        return await asyncio.shield(running)

    def _finished_in_flight(self, running: asyncio.Future[Payment]) -> None:
        self._in_flight.discard(running)
        if not running.cancelled():
            running.exception()  # its caller, if still there, was told; nobody else asks

    async def finish_in_flight(self) -> None:
        """Wait for the changes still running after their callers went away: before the
        processors and the database they need are closed."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _change_once_saved(
        self,
        payment_id: str,
        merchant_id: str | None,
        change: Callable[[Payment], Awaitable[bool]],
        via: Via,
    ) -> Payment:
        """Load the payment, change it and save it. `change` says whether it changed
        anything (False: nothing to save). A save beaten by another call's is not lost:
        the change is made again on what that call stored, up to CHANGE_TRIES times.
        Made again, it calls the processor under the same idempotency keys (the step's
        generation, the capture's and void's keys, a refund's recorded parts), so the
        processor replays what the lost try did instead of doing it twice."""
        lost: Payment | None = None
        for _ in range(CHANGE_TRIES):
            payment = await self._load(payment_id, merchant_id)
            adopted = lost is not None and self._adopt(lost, payment)
            try:
                # A save inside the change (a refund's hold) may be the one beaten.
                if not await change(payment) and not adopted:
                    return payment
                payment.settle(self._clock.now())
                await self._save(payment, via)
            except ConcurrentUpdate:
                lost = payment
                continue
            return payment
        raise PaymentChanging(
            f"payment {payment_id!r} changed under this call {CHANGE_TRIES} times; retry shortly"
        )

    @staticmethod
    def _adopt(lost: Payment, current: Payment) -> bool:
        """Steps a try that lost its save left charged at the processor, which the call
        that won does not record (it stopped the plan, say: a cancel beating a confirm),
        are recorded as the lost try held them. Made again, the change may well stop
        short of those steps (the payment no longer waits for the customer); without
        this the money they took would have no record. True when any was adopted."""
        adopted, captured = False, 0
        # The merchant cancelled: a hold found now is released as a failed void would be.
        cancelled = current.status is PaymentStatus.CANCELLED
        for held in lost.steps:
            # A fallback step is stored before it is charged, so every step a lost try
            # charged is in the stored payment.
            if not held.succeeded or held.index >= len(current.steps):
                continue
            step = current.steps[held.index]
            if step.status is StepStatus.AUTHORIZED and held.status is StepStatus.CAPTURED:
                current.step_captured(step)
                captured += step.amount_minor
                adopted = True
            elif step.status in NOT_HELD:
                current.step_held_by_lost_try(step, held)
                captured += step.captured_minor
                adopted = True
                if cancelled and step.status is StepStatus.AUTHORIZED:
                    current.owe(Owed.VOID, step)  # the reconciler voids it
        if captured:
            current.captured(captured)
        return adopted

    async def confirm(
        self, payment_id: str, merchant_id: str | None, *, deadline_s: float | None = None
    ) -> Payment:
        """After the customer acted: look the paused step up and go on with the plan,
        retrying the steps after it only inside the caller's deadline."""
        deadline = Deadline.for_run(self._clock, deadline_s)

        async def go_on(payment: Payment) -> bool:
            if payment.status is not PaymentStatus.REQUIRES_ACTION:
                return False  # confirmed before, or settled by a webhook
            self._refuse_unconfigured(
                [s for s in payment.steps if s.status is StepStatus.REQUIRES_ACTION], "confirmed"
            )
            if any(
                s.status is StepStatus.PENDING for s in payment.steps
            ) and not deadline.leaves_time_for_a_call(self._clock):
                # The steps after the paused one could not be charged in time: change
                # nothing (a step failed for want of time would fail the plan and release
                # what the customer just authenticated); the confirm can be made again.
                raise DeadlineTooShort(
                    f"payment {payment_id!r}: the deadline leaves too little time to charge"
                    " the steps after the one the customer completed; nothing was changed:"
                    " confirm again with a longer deadline"
                )
            await self._resume(payment, deadline, Via.CONFIRM)
            return True

        return await self._change(payment_id, merchant_id, go_on, Via.CONFIRM)

    async def resume(self, payment: Payment, deadline: Deadline, via: Via) -> None:
        await self._resume(payment, deadline, via)
        payment.settle(self._clock.now())
        await self._save(payment, via)

    async def _resume(self, payment: Payment, deadline: Deadline, via: Via) -> None:
        """Settle open steps with the processor, then run the rest of the plan under the
        config version the payment recorded, whatever the merchant saved since."""
        config = await self._configs.get_version(payment.merchant_id, payment.config_version)
        paused = [s for s in payment.steps if s.status is StepStatus.REQUIRES_ACTION]
        for step in payment.steps:
            if step.status in (StepStatus.REQUIRES_ACTION, StepStatus.UNKNOWN):
                await self._router.reconcile(payment, step)
        if any(s.status is StepStatus.VOIDED for s in paused):
            # A paused step found voided by payorch (given up with the void's answer
            # lost): the plan ends as that void answered would have ended it.
            await self._finish_abandoned(payment, None, deadline)
            return
        if any(s.status in (StepStatus.REQUIRES_ACTION, StepStatus.UNKNOWN) for s in payment.steps):
            return
        if any(s.status is StepStatus.PENDING for s in payment.steps):
            # Stored before the steps after the paused one are charged: a server dying
            # meanwhile leaves a PROCESSING payment, whose pending steps the reconciler
            # looks up, not a paused one it would give up without looking at them.
            payment.settle(self._clock.now())
            await self._save(payment, via)
        await self._run_plan(payment, config, deadline, via)

    async def go_on(self, payment: Payment, *, customer_acted: bool) -> bool:
        """A processor's event settled a paused step: do what the plan has left. After
        the customer acted (3-D Secure) the steps after it run, as ConfirmPayment would
        run them; after a lost answer the plan is finished as the reconciler finishes it.
        A save beaten by another call's (a ConfirmPayment, a cancel) is made again on what
        that call stored, like any other change: the event was recorded as seen already,
        so a lost save here would not come back with a redelivery. True when there was
        anything left to do."""
        went_on = False
        run = Deadline.for_run(self._clock, None)

        async def finish(current: Payment) -> bool:
            nonlocal went_on
            steps = current.steps
            if current.status is PaymentStatus.CANCELLED:
                return False  # a cancel saved first: nothing more is charged or captured
            if any(s.status in (StepStatus.UNKNOWN, StepStatus.REQUIRES_ACTION) for s in steps):
                return False  # another step is still paused
            left_to_do = any(s.status is StepStatus.PENDING for s in steps) or (
                current.capture_mode is CaptureMode.MANUAL
                and not current.authorize_only
                and any(s.status is StepStatus.AUTHORIZED for s in steps)
            )
            if not left_to_do:
                return False
            if customer_acted:
                config = await self._configs.get_version(
                    current.merchant_id, current.config_version
                )
                await self._run_plan(current, config, run, Via.WEBHOOK)
            else:
                await self._finish_after_reconcile(current, run=run)
            went_on = True
            return True

        await self._change(payment.id, None, finish, Via.WEBHOOK)
        return went_on

    async def look_up_hold(self, payment_id: str, step_index: int) -> bool:
        """A processor's event about a step held authorized: record what the processor
        holds now. True when that changed the payment. HoldUnknown when the processor
        could not say: nothing is recorded, and the event is taken again."""
        changed = unanswered = False

        async def look(payment: Payment) -> bool:
            nonlocal changed, unanswered
            unanswered = False  # made again after a lost save: only the last look counts
            step = payment.steps[step_index]
            if step.status is not StepStatus.AUTHORIZED or _releasing(payment):
                return False  # settled meanwhile, or being released by us anyway
            unanswered = await self._settlement.look_up_hold(payment, step) in NO_ANSWER
            now_held: StepStatus = payment.steps[step_index].status
            if now_held is StepStatus.CAPTURED:
                payment.captured(step.amount_minor)
            if now_held is StepStatus.VOIDED and not payment.captured_minor:
                if payment.remaining_minor and not payment.allow_partial:
                    await self._compensate(payment)  # all-or-nothing: the rest is released
                _cancelled_if_released(payment)
            changed = now_held is not StepStatus.AUTHORIZED
            return changed

        await self._change(payment_id, None, look, Via.WEBHOOK)
        if unanswered:
            raise HoldUnknown(
                f"the processor could not be asked what it holds for step {step_index}"
                f" of {payment_id!r}"
            )
        return changed

    async def record_refunds(self, processor: str, processor_payment_id: str) -> str:
        """A processor's event about a charge's refunds: read them from the processor and
        record, on the payment step the charge was made for, a refund made elsewhere (its
        dashboard) and one that failed there, each once. RefundsUnknown when the
        processor could not say: nothing is recorded, and the event is taken again."""
        found = await self._settlement.refunds_at(processor, processor_payment_id)
        if found.answer.kind is not ResponseKind.DONE:
            raise RefundsUnknown(
                f"the refunds of {processor_payment_id!r} could not be read from {processor!r}"
                f" ({found.answer.kind.value} {found.answer.http_status or ''})".rstrip()
            )
        if not found.payment_id:
            return "not ours"
        recorded = False

        async def record(payment: Payment) -> bool:
            nonlocal recorded
            if not 0 <= found.step_index < len(payment.steps):
                return False
            step = payment.steps[found.step_index]
            if step.processor_payment_id != processor_payment_id:
                return False  # another object than the step's
            recorded = self._settlement.record_refunds(payment, step, found)
            return recorded

        try:
            await self._change(found.payment_id, None, record, Via.WEBHOOK)
        except PaymentNotFound:
            return "unknown payment"
        return "recorded" if recorded else "nothing new"

    async def capture(self, payment_id: str, merchant_id: str | None) -> Payment:
        released: list[Step] = []

        async def capture_held(payment: Payment) -> bool:
            holding = [s for s in payment.steps if s.status is StepStatus.AUTHORIZED]
            if payment.status is PaymentStatus.SUCCEEDED or (
                payment.status is PaymentStatus.PARTIALLY_SUCCEEDED and not holding
            ):
                return False
            if payment.owed is Owed.VOID:
                raise InvalidState("its authorizations are being released: it cannot be captured")
            if payment.status not in (PaymentStatus.AUTHORIZED, PaymentStatus.PARTIALLY_SUCCEEDED):
                raise InvalidState(f"a {payment.status.value} payment cannot be captured")
            self._refuse_unconfigured(holding, "captured")
            await self._capture_all(payment)
            released[:] = [s for s in holding if s.status is StepStatus.VOIDED]
            return True

        payment = await self._change(payment_id, merchant_id, capture_held, Via.CAPTURE)
        if released:
            raise HeldOtherwise(
                released,
                "canceled (voided by another call, or the authorization lapsed)",
                "it cannot be captured",
            )
        return payment

    async def cancel(self, payment_id: str, merchant_id: str | None, reason: str) -> Payment:
        captured: list[Step] = []

        async def release_held(payment: Payment) -> bool:
            holding = [s for s in payment.steps if s.status in _RELEASABLE]
            if payment.status is PaymentStatus.CANCELLED or (
                payment.status is PaymentStatus.FAILED and not holding
            ):
                return False  # nothing is held: nothing to cancel
            if payment.captured_minor:
                raise InvalidState("money was captured: refund it instead of cancelling")
            if payment.status in (PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN):
                raise InvalidState(f"a {payment.status.value} payment cannot be cancelled yet")
            self._refuse_unconfigured(holding, "cancelled")
            # A step waiting for the customer first: a void of it that fails leaves the
            # customer free to complete it, so nothing is released or announced then.
            waiting = [s for s in payment.steps if s.status is StepStatus.REQUIRES_ACTION]
            for step in waiting:
                await self._release(payment, step)
            undecided = [s for s in waiting if s.status is StepStatus.REQUIRES_ACTION]
            if undecided:
                raise ReleaseUndecided(undecided)
            # Being released already (a cancel before this one, or a failed plan's
            # compensation): this cancel decides nothing new.
            decided = payment.owed is Owed.VOID
            for step in payment.steps:
                if step.status in _RELEASABLE:
                    # Not a capture any more, even one owed: the merchant asked to release it.
                    await self._release(payment, step)
                elif step.status is StepStatus.PENDING:
                    payment.step_skipped(step)
            captured[:] = [s for s in holding if s.status is StepStatus.CAPTURED]
            if not captured and not decided:
                # Cancelled now, even while a void that failed is owed: nothing can be
                # captured any more, and the reconciler releases the rest.
                payment.cancelled(reason)
            return True

        payment = await self._change(payment_id, merchant_id, release_held, Via.CANCEL)
        if captured:
            raise HeldOtherwise(
                captured, "captured (by another call)", "refund it instead of cancelling"
            )
        return payment

    async def refund(
        self, payment_id: str, merchant_id: str | None, *, amount_minor: int, request_id: str
    ) -> Payment:
        """Refund once per request_id. Each part is held on its step, in storage under
        the payment's version, before it is sent: refunds at once can never ask for more
        than was captured, and the one that would is refused (RefundRejected) with
        nothing sent. A retry under the same id makes again only the parts that did not
        go through, each with its own amount and idempotency key; a part whose answer
        was lost, or held by another call (still in flight, or stopped), is looked for
        first, so it is never refunded twice, not even once the processor has forgotten
        the key. Made again after another call saved the payment first, it sends the
        same parts under the same keys. A repeat must ask what the first call asked
        (RefundRequest.asked_again): else IdempotencyConflict, with nothing sent."""
        held_here: set[int] = set()  # steps whose part this call held or sent
        # Parts this call saw made in a try whose save lost: the attempts that said so.
        made_here: dict[int, list[Attempt]] = {}

        async def refund_parts(payment: Payment) -> bool:
            refund, held = await self._hold_refund(payment, amount_minor, request_id)
            held_here.update(held)
            done = left = refused = spent = 0
            sent = False
            codes: list[str] = []
            for index, part in refund.parts:
                step = payment.steps[index]
                key = Settlement.refund_key(payment, step, request_id)
                if Settlement.refund_made(step, key):
                    continue  # this part went through before
                if (
                    index in made_here
                    and request_id not in step.refund_holds
                    and part <= step.captured_minor - step.refunded_minor
                ):
                    # Made in this call's try whose save lost, and no longer held in the
                    # save that won: the reconciler's, which looked the part up just before
                    # this call sent it, found nothing and recorded it not made. The
                    # processor's answer to this very call says otherwise; recorded with
                    # the attempts that said so. (Still held, the part is sent again under
                    # its key, and the processor replays its answer.)
                    for attempt in made_here[index]:
                        payment.add_attempt(step, replace(attempt, number=len(step.attempts) + 1))
                    payment.step_refunded(step, part)
                    done += part
                    sent = True
                    continue
                if Settlement.refund_refused(step, key) is None:
                    if request_id in step.refund_holds and Settlement.refund_sends_spent(step, key):
                        spent += part  # no call: the reconciler looks it up
                        continue
                    sent = True
                    tried = len(step.attempts)
                    if part <= step.captured_minor - step.refunded_minor and (
                        await self._settlement.refund(
                            payment, step, part, request_id, look_first=index not in held_here
                        )
                    ):
                        done += part
                        held_here.add(index)
                        made_here[index] = step.attempts[tried:]
                        continue
                refusal = Settlement.refund_refused(step, key)
                if refusal is not None:
                    # Refused now or before: over for this request_id, sent no more.
                    refused += part
                    codes.append(refusal.raw.code or refusal.error_code.value)
                else:
                    left += part
                held_here.add(index)
            messages = []
            if left:
                messages.append(
                    f"{left} of refund {request_id!r} could not be refunded; "
                    "retry it with the same request_id"
                )
            if spent:
                messages.append(
                    f"{spent} of refund {request_id!r} was sent {MAX_REFUND_SENDS} times with"
                    " no sure answer: it is not sent again; the reconciler looks it up at the"
                    " processor and records it refunded, or not made and refundable again"
                )
            if refused:
                messages.append(
                    f"{refused} of refund {request_id!r} was refused by the processor"
                    f" ({', '.join(dict.fromkeys(codes))}): nothing more is sent under this"
                    " request_id; refund under a new one"
                )
            if not sent:
                # Made or refused before (or left to the reconciler): the stored result
                # stands, the refusal repeated.
                if refused or spent:
                    payment.final_error_message = "; ".join(messages)
                return False
            if done:
                payment.refunded(done, request_id)
            payment.final_error_message = "; ".join(messages)
            return True

        return await self._change(payment_id, merchant_id, refund_parts, Via.REFUND)

    async def _hold_refund(
        self, payment: Payment, amount_minor: int, request_id: str
    ) -> tuple[RefundRequest, list[int]]:
        """The refund recorded under `request_id` (recorded now if it is new), with each
        of its parts not made and not held held on its step now, and the steps of those.
        Stored with the payment under its version: a refund or any change saved since the
        payment was read makes this ConcurrentUpdate, and the call is made again on what
        it stored. RefundRejected when a part does not fit what its step has left."""
        async with self._uow() as uow:
            refund = await uow.payments.refund_request(payment.id, request_id)
            new = refund is None
            if refund is None:
                if await uow.payments.refund_count(payment.id) >= MAX_REFUNDS_PER_PAYMENT:
                    raise TooManyRefunds(
                        f"payment {payment.id} has taken {MAX_REFUNDS_PER_PAYMENT} refunds,"
                        " the most one payment takes"
                    )
                refund = _refund_parts(payment, amount_minor)
            elif not refund.asked_again(amount_minor):
                raise IdempotencyConflict(request_id, "amount")
            self._refuse_unconfigured(
                [
                    payment.steps[index]
                    for index, _ in refund.parts
                    if not Settlement.refund_made(
                        payment.steps[index],
                        Settlement.refund_key(payment, payment.steps[index], request_id),
                    )
                ],
                "refunded",
            )
            held = []
            for index, part in refund.parts:
                step = payment.steps[index]
                key = Settlement.refund_key(payment, step, request_id)
                if (
                    request_id in step.refund_holds
                    or Settlement.refund_made(step, key)
                    or Settlement.refund_refused(step, key) is not None
                ):
                    continue  # made, held, or refused: over for this request_id
                if part > step.refundable_minor:  # refused at the processor, and taken since
                    where = f" on step {index}" if len(payment.steps) > 1 else ""
                    raise RefundRejected(
                        f"{part} exceeds the {step.refundable_minor} still refundable{where}"
                    )
                payment.refund_held(step, request_id, part)
                held.append(index)
            if not held:
                return refund, held  # nothing to store: every part is made or held
            # Due for the reconciler should this call never store what became of its
            # parts (the server stopping before the answer is saved): settled, it is not.
            payment.watch_refund_holds(self._clock.now())
            # A lost try's attempts, adopted by this change, are stored here.
            saved = unstored(payment)
            await uow.payments.save(payment)
            if new and not await uow.payments.add_refund(
                payment.id, request_id, refund, self._clock.now()
            ):
                raise ConcurrentUpdate(payment.id)  # the same refund asked twice at once
            await uow.commit()
        self._observe.stored(payment, saved, Via.REFUND)
        return refund, held

    async def events(self, payment_id: str, merchant_id: str | None) -> list[StoredEvent]:
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id, merchant_id)
            if payment is None:
                raise PaymentNotFound(payment_id)
            return await uow.payments.events_of(payment_id)

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
        """One reconciler pass (reconcile_pass): how many payments it settled."""
        stats = await self.reconcile_pass(
            processing_stale_after=processing_stale_after, limit=limit
        )
        return stats.settled

    async def reconcile_pass(
        self, *, processing_stale_after: timedelta = STALE_PROCESSING, limit: int = 100
    ) -> ReconcileStats:
        """Resolve UNKNOWN payments whose next lookup is due, PROCESSING ones older
        than `processing_stale_after` (interrupted mid-payment), owed captures and
        voids, refunds in doubt (Payment.watch_refund_holds), and payments the customer
        left paused for longer than ACTION_TIMEOUT.

        Each payment is claimed before it is worked on (PaymentRepository.claim): due
        again only RECONCILE_LEASE on, and only the first of two reconcilers that listed
        it (every replica runs a pass) takes it. Its work is held to the run's limit
        (Deadline.for_run, RUN_LIMIT_S), well inside the lease: no other reconciler
        takes it while this one still works on it.

        A payment whose work raises (a bug, data it cannot read, a write refused) is
        logged, counted and backed off as one whose lookups could not tell
        (_back_off_failed), and the pass goes on with the others: one such payment
        never holds the rest back. So does a payment whose stored rows cannot be read
        (UnreadablePayment: a value no version of the code writes): skipped, logged with
        its id and counted, left as it is for an operator to repair. The database
        unreachable ends the pass (the error goes up): every payment after it would
        fail the same way."""
        now = self._clock.now()
        async with self._uow() as uow:
            due = await uow.payments.list_unresolved(
                now=now, processing_before=now - processing_stale_after, limit=limit
            )
        stats = ReconcileStats()
        waiting: dict[str, list[str]] = {}
        for payment in due:
            if isinstance(payment, UnreadablePayment):
                stats.errors += 1
                self._observe.payment_unreadable(payment.payment_id, payment.error)
                continue
            try:
                taken, run = await self._take(payment)
                if not taken:
                    continue  # another reconciler took it (or a call changed it) since
                for name in self._router.unconfigured(payment):
                    waiting.setdefault(name, []).append(payment.id)
                # Asked all the same: what other processors hold is settled, and the rest
                # backs off (no outcome is ever guessed for a processor that cannot answer).
                stats.settled += await self.reconcile(payment, run=run)
            except Exception as exc:
                if self._storage_unreachable(exc):
                    raise
                stats.errors += 1
                await self._back_off_failed(payment.id, exc)
        for name, payment_ids in sorted(waiting.items()):
            self._observe.processor_not_configured(name, payment_ids)
        return stats

    async def _back_off_failed(self, payment_id: str, exc: Exception) -> None:
        """Reconciling the payment raised `exc`: it backs off as a payment whose lookups
        could not tell (Payment.reconcile_inconclusive: 1 min, 5 min, 1 h, then daily),
        read afresh (what the failed work left in memory is not stored). Should that
        fail too (its row unreadable, its write refused), it stays claimed: due again
        RECONCILE_LEASE after the pass took it. Logged once, with its id and the
        exception's type, never a traceback."""
        next_look: datetime | None = None
        try:
            async with self._uow() as uow:
                payment = await uow.payments.get(payment_id, None)
                if payment is not None:
                    payment.reconcile_inconclusive(self._clock.now())
                    await uow.payments.save(payment)
                    await uow.commit()
                    next_look = payment.next_reconcile_at
        except ConcurrentUpdate:
            pass  # another call saved it since: due as that call left it
        except Exception as again:
            if self._storage_unreachable(again):
                raise
        self._observe.reconcile_failed(payment_id, exc, next_look)

    async def _take(self, payment: Payment) -> tuple[bool, Deadline | None]:
        """Take `payment` for this reconciler (PaymentRepository.claim) until
        RECONCILE_LEASE from now, and the run its work is held to. Left unsaved (the pass
        dies, or its save loses), it is due again then. Saved, it is due as its save
        says. A payment PROCESSING is stored as touched now: its run goes on here, so
        nothing else takes it for interrupted (run_interrupted) before the claim ends."""
        run: Deadline | None = Deadline.for_run(self._clock, None)
        if not self._settle_fits(run):
            # Calls so slow (PAYORCH_CALL_TIMEOUT_S over 50 s, refused at start) that no
            # capture or void fits in a run: held to it, an owed one would never be made.
            run = None
        now = self._clock.now()
        touched = now if payment.status is PaymentStatus.PROCESSING else None
        async with self._uow() as uow:
            taken = await uow.payments.claim(payment, now + RECONCILE_LEASE, touched=touched)
            await uow.commit()
        return taken, run

    async def reconcile_claimed(self, payment: Payment, via: Via) -> bool:
        """`reconcile` under the reconciler's claim (PaymentService._take), held to the
        run's limit as a pass is: a processor's event about a payment its server left
        PROCESSING. PaymentInProgress when a reconciler's pass (or another event) holds
        it, or changed it since it was read: the event is to be sent again."""
        taken, run = await self._take(payment)
        if not taken:
            raise PaymentInProgress(
                f"payment {payment.id!r} is being reconciled: its steps are being looked up"
            )
        return await self.reconcile(payment, via, run=run)

    def _look_again(self, payment: Payment, now: datetime, run: Deadline | None) -> None:
        """What the pass left open: on the back-off when its calls could not tell, at the
        next pass when the run's limit left calls unmade (nothing failed then)."""
        if run is not None and not self._settle_fits(run):
            payment.reconcile_cut_short(now)
        else:
            payment.reconcile_inconclusive(now)

    async def _defer(self, payment: Payment, deferred: set[str], via: Via) -> bool:
        """The reconciler could ask nothing (`deferred`: processors whose breaker is open):
        nothing was recorded, and the payment's outcome, steps and back-off stay as they
        were (no answer came, so none was inconclusive). It is due again once the first
        of those breakers lets a call through; until then later passes pass it by, so
        payments held elsewhere are not crowded out of their turn. Saved even when that
        changes nothing (half-open, it may be asked already: the next pass will), so
        the pass's claim (PaymentService._take) gives way to the payment's own schedule."""
        until = self._router.admits_from(deferred)
        if until is not None:
            payment.reconcile_deferred(until)
        # Beaten by another call's save: due as that call left it.
        with contextlib.suppress(ConcurrentUpdate):
            await self._save(payment, via)
        return False

    async def _finish_after_reconcile(
        self, payment: Payment, deferred: set[str] | None = None, *, run: Deadline | None = None
    ) -> None:
        """A reconciled multi-step plan does not resume: what it holds is voided (or kept,
        with allow_partial) and the rest skipped. A single step is already final. `run`:
        a processor event's follow-through, held to its run's limit."""
        if len(payment.steps) == 1 or any(
            s.status is StepStatus.REQUIRES_ACTION for s in payment.steps
        ):
            return
        for step in payment.steps:
            if step.status is StepStatus.PENDING:
                payment.step_skipped(step)
        if payment.remaining_minor and not payment.allow_partial:
            await self._compensate(payment, deferred, run=run)
        elif not payment.authorize_only:
            await self._capture_all(payment, deferred, run=run)

    async def _settle_owed(
        self, payment: Payment, via: Via, deferred: set[str] | None, run: Deadline | None = None
    ) -> bool:
        """Make the capture or void the plan still owes; back off while it keeps failing.
        The reconciler's pass (`deferred`) makes none at a processor whose breaker is
        open: a payment it could make no call for is left as it was, due again once the
        breaker lets one through."""
        held = sum(s.status is StepStatus.AUTHORIZED for s in payment.steps)
        asked = _attempts(payment)
        if payment.owed is Owed.VOID:
            await self._compensate(payment, deferred, run=run)
        else:
            await self._capture_all(payment, deferred, run=run)
        if deferred and _attempts(payment) == asked:
            return await self._defer(payment, deferred, via)
        now = self._clock.now()
        payment.settle(now)
        if payment.owed is not Owed.NOTHING:
            self._look_again(payment, now, run)
        try:
            await self._save(payment, via)
        except ConcurrentUpdate:
            return False
        return held != sum(s.status is StepStatus.AUTHORIZED for s in payment.steps)

    async def _abandon(
        self, payment: Payment, deferred: set[str] | None, run: Deadline | None = None
    ) -> bool:
        """A payment paused for the customer past ACTION_TIMEOUT: look the paused step up
        (they may have acted with no word to us), close it if they did not, and finish
        the plan as after a lost answer: what is held is voided (kept and captured with
        allow_partial), and no step runs so long after the customer left. A step at a
        processor whose breaker is open (`deferred`) is neither asked nor closed yet."""
        asked = _attempts(payment)
        for step in payment.steps:
            if step.status is StepStatus.REQUIRES_ACTION:
                await self._router.reconcile(payment, step, deferred=deferred, run=run)
            if (
                step.status is StepStatus.REQUIRES_ACTION
                and step.processor not in (deferred or ())
                and self._settle_fits(run)
            ):
                await self._settlement.void(payment, step, deferred=deferred)
        if deferred and _attempts(payment) == asked:
            return await self._defer(payment, deferred, Via.EXPIRY)
        now = self._clock.now()
        if any(s.status in (StepStatus.REQUIRES_ACTION, StepStatus.UNKNOWN) for s in payment.steps):
            self._look_again(payment, now, run)  # not closed: try again on the back-off
            changed = False
        else:
            await self._finish_abandoned(payment, deferred, run)
            payment.settle(now)
            changed = True
        try:
            await self._save(payment, Via.EXPIRY)
        except ConcurrentUpdate:
            return False  # ConfirmPayment or a webhook got there first
        return changed

    async def _finish_abandoned(
        self, payment: Payment, deferred: set[str] | None, run: Deadline | None
    ) -> None:
        """A plan given up waiting for the customer, its paused steps settled: what is
        held is voided (kept, with allow_partial), the rest skipped, and a plan left
        with nothing taken is cancelled."""
        await self._finish_after_reconcile(payment, deferred, run=run)
        releasing = payment.owed is Owed.VOID  # a void that failed: owed, not kept
        if all(
            s.status in (StepStatus.VOIDED, StepStatus.SKIPPED)
            or (releasing and s.status is StepStatus.AUTHORIZED)
            for s in payment.steps
        ):
            minutes = ACTION_TIMEOUT // timedelta(minutes=1)
            payment.cancelled(
                f"abandoned: not completed within {minutes} minutes of waiting for the customer"
            )

    async def _settle_held_refunds(
        self, payment: Payment, via: Via, deferred: set[str] | None, run: Deadline | None = None
    ) -> bool:
        """Refund parts held whose outcome nobody learnt (Payment.watch_refund_holds):
        each looked up at the processor under its key, recorded refunded, or not made with
        its hold released; a part not known yet keeps the payment due, backing off (1 min,
        5 min, 1 h, then daily). Nothing is ever sent from here. A part at a processor
        whose breaker is open (`deferred`) is not looked up by this pass."""
        now = self._clock.now()
        asked = _attempts(payment)
        made: dict[str, int] = {}
        not_made: dict[str, int] = {}
        open_parts = False
        for step, request_id in payment.refunds_held:
            if not self._settle_fits(run):
                open_parts = True  # the next pass's: its lookups may take this long
                break
            amount = step.refund_holds[request_id]
            async with self._uow() as uow:
                request = await uow.payments.refund_request(payment.id, request_id)
            found = await self._settlement.settle_held_refund(
                payment,
                step,
                request_id,
                held_since=request.requested_at if request else None,
                deferred=deferred,
            )
            if found is None:
                open_parts = True
            else:
                into = made if found else not_made
                into[request_id] = into.get(request_id, 0) + amount
        if deferred and not (made or not_made) and _attempts(payment) == asked:
            return await self._defer(payment, deferred, via)
        for request_id, amount in made.items():
            payment.refunded(amount, request_id)
        changed = bool(made or not_made)
        if changed:
            # What the refund's caller was last told ("retry it") no longer stands.
            payment.final_error_message = "; ".join(
                f"{amount} of refund {request_id!r} was not made at the processor:"
                " nothing more is sent under this request_id; refund under a new one"
                for request_id, amount in not_made.items()
            )
        payment.settle(now)
        if open_parts:
            self._look_again(payment, now, run)
        try:
            await self._save(payment, via)
        except ConcurrentUpdate:
            return False  # the caller's repeat (or another refund) saved first
        return changed

    async def reconcile(
        self, payment: Payment, via: Via = Via.RECONCILER, *, run: Deadline | None = None
    ) -> bool:
        """Settle what the payment leaves open, as far as the processors can say. `via`:
        who asked (the reconciler's pass, or a processor's event hinting at a change).
        `run`: the reconciler's pass holds its work on one payment to the run's limit
        (Deadline.for_run): what it leaves for want of time is the next pass's.

        The reconciler's pass comes back: it looks nothing up at a processor whose
        breaker is open (none of its calls would be answered, and each pass would add
        to the outage), and a payment it could ask nothing about is left as it was,
        due again once the first of those breakers lets a call through."""
        deferred: set[str] | None = set() if via is Via.RECONCILER else None
        if payment.owed is not Owed.NOTHING and payment.status not in UNRESOLVED:
            return await self._settle_owed(payment, via, deferred, run)
        if payment.status not in (*UNRESOLVED, PaymentStatus.REQUIRES_ACTION):
            return await self._settle_held_refunds(payment, via, deferred, run)
        if payment.status is PaymentStatus.REQUIRES_ACTION:
            due = payment.action_expires_at
            if due is not None and due <= self._clock.now():
                return await self._abandon(payment, deferred, run)
            # A processor's hint about the paused step: as if the customer confirmed.
            before = payment.status
            try:
                await self.resume(payment, run or Deadline.for_run(self._clock, None), via)
            except ConcurrentUpdate:
                return False
            return payment.status is not before
        # A server died mid-plan: any step still pending may have been charged. (A plan
        # stopped at an unknown step never charged the steps after it: they are skipped
        # when it is finished, not looked up. A lookup would find nothing and record a
        # step never sent as failed, and at Stripe replay a create never made.)
        interrupted = payment.status is PaymentStatus.PROCESSING
        changed = open_step = False
        asked = _attempts(payment)
        for step in payment.steps:
            if step.status is StepStatus.UNKNOWN or (
                interrupted and step.status is StepStatus.PENDING
            ):
                changed |= await self._router.reconcile(payment, step, deferred=deferred, run=run)
                found: StepStatus = payment.steps[step.index].status
                if found is StepStatus.PENDING:
                    # Not settled: it may hold money, so it is asked again, never skipped.
                    open_step = interrupted
                    break
                if found is StepStatus.REQUIRES_ACTION:
                    break  # the plan pauses here: the steps after it were never tried
        if deferred and not changed and _attempts(payment) == asked:
            return await self._defer(payment, deferred, via)
        if (
            changed
            and not open_step
            and not any(s.status is StepStatus.UNKNOWN for s in payment.steps)
        ):
            # The plan stopped at that step: finish it now, without retrying anything.
            await self._finish_after_reconcile(payment, deferred, run=run)
        if changed:
            payment.settle(self._clock.now())
        else:
            payment.reconcile_inconclusive(self._clock.now())
        saved = unstored(payment)
        try:
            async with self._uow() as uow:
                await uow.payments.save(payment)
                await uow.commit()
        except ConcurrentUpdate:
            return False
        self._observe.stored(payment, saved, via)
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


@dataclass(frozen=True, slots=True)
class RefundEvent:
    """A processor told us (webhook) that a charge's refunds changed."""

    event_id: str
    source: str
    processor: str
    processor_payment_id: str


class ProcessorEvents:
    """Applies processor webhooks. Only final good news is applied as is; any other
    event is a hint to look the payment up now, so out-of-order or stale events
    can never undo what the processor holds. An event about a step a live run may
    still be charging (the payment PROCESSING, not yet interrupted) is refused unseen
    (PaymentInProgress), to be sent again; one about a step an interrupted run left is
    a hint too, looked up as the reconciler would."""

    def __init__(self, uow: UnitOfWorkFactory, payments: PaymentService, clock: Clock) -> None:
        self._uow = uow
        self._payments = payments
        self._clock = clock

    async def apply(self, event: ProcessorEvent) -> str:
        now = self._clock.now()
        resumed = False
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
            # An event about a step a run has not settled, while the payment is PROCESSING.
            running = payment.status is PaymentStatus.PROCESSING and step.status in open_states
            if running and not run_interrupted(payment, now):
                # A live run may own it: the event is not remembered (the transaction is
                # not committed), and the processor is told to send it again.
                raise PaymentInProgress(
                    f"payment {payment.id!r} is being processed: its step {step.index} is"
                    " not settled yet"
                )
            held = (
                step.status is StepStatus.AUTHORIZED
                and not event.charged
                and payment.status is not PaymentStatus.PROCESSING
            )
            if held or running:
                # Bad news about a hold we keep: the processor may have released it (a
                # cancel from its dashboard, a lapse). Or any news about a payment its
                # server left PROCESSING when it died: looked up as the reconciler would,
                # the event's body not trusted. A look-up says.
                await uow.commit()
            elif step.status not in open_states or payment.status is PaymentStatus.PROCESSING:
                # Settled already, or still being worked on by the router: nothing to do;
                # unless this very event settled the step and the rest of the plan then
                # failed (the event was forgotten for it): its redelivery goes on with it.
                resumed = (
                    event.charged
                    and step.succeeded
                    and payment.status is PaymentStatus.PROCESSING  # the rest not done
                    and await _settled_by(uow, payment.id, step.index, event.event_id)
                )
                await uow.commit()
                if not resumed:
                    return "ignored"
                customer_acted = bool(step.next_action_type)  # it was waiting for them
            elif event.charged:
                customer_acted = step.status is StepStatus.REQUIRES_ACTION
                step.processor_payment_id = event.processor_payment_id
                payment.step_succeeded(step, processor=step.processor, latency_ms=0)
                payment.step_reconciled(
                    step, source=event.source, processor_event_id=event.event_id
                )
                payment.settle(now)
                saved = unstored(payment)
                await uow.payments.save(payment)
                await uow.commit()
                self._payments.observation.stored(payment, saved, Via.WEBHOOK)
            else:
                await uow.commit()
        try:
            if held:
                changed = await self._payments.look_up_hold(payment.id, event.step_index)
                return "looked up" if changed else "looked up, still held"
            if event.charged and not running:
                # A split goes on from that step as ConfirmPayment or the reconciler would.
                went_on = await self._payments.go_on(payment, customer_acted=customer_acted)
                return "applied" if went_on or not resumed else "ignored"
            # Its server left it PROCESSING: looked up under the reconciler's claim, so
            # a pass (or another event) does not look it up and make its calls as well.
            settled = await self._payments.reconcile_claimed(payment, Via.WEBHOOK)
        except BaseException:  # a failure, or the server stopping (cancelled) mid-way
            await self._forget(event.event_id)
            raise
        return "looked up" if settled else "looked up, still open"

    async def apply_refunds(self, event: RefundEvent) -> str:
        """A charge's refunds changed: the processor says how, and what payorch has not
        counted is recorded (PaymentService.record_refunds)."""
        async with self._uow() as uow:
            if not await uow.inbound_events.remember(
                event.event_id, event.source, self._clock.now()
            ):
                return "duplicate"
            await uow.commit()
        try:
            return await self._payments.record_refunds(event.processor, event.processor_payment_id)
        except BaseException:
            await self._forget(event.event_id)
            raise

    async def _forget(self, event_id: str) -> None:
        """What the event asked for did not happen (the processor or the database failed
        the look-up or the rest of the plan): its redelivery must not be taken for a
        duplicate, or the event is lost. Shielded: a handler cancelled by the server's
        shutdown forgets the event all the same."""
        with contextlib.suppress(Exception):  # the database may be what failed
            await asyncio.shield(self._forget_now(event_id))

    async def _forget_now(self, event_id: str) -> None:
        async with self._uow() as uow:
            await uow.inbound_events.forget(event_id)
            await uow.commit()


async def _settled_by(uow: UnitOfWork, payment_id: str, step_index: int, event_id: str) -> bool:
    """Whether the processor's event `event_id` settled the step (it recorded so). Only
    that event's redelivery resumes the plan: another event about the step (Stripe's
    `succeeded` after our own capture, say) may come while that event's follow-through
    still runs."""
    return any(
        e.name == "PaymentReconciled"
        and e.payload.get("step_index") == step_index
        and e.payload.get("processor_event_id") == event_id
        for e in await uow.payments.events_of(payment_id)
    )


def _attempts(payment: Payment) -> int:
    """Calls recorded on the payment: unchanged, nothing was asked."""
    return sum(len(s.attempts) for s in payment.steps)


def _held_back(step: Step, tried: int, deferred: set[str] | None) -> bool:
    """Whether the reconciler held the step's capture or void back (its processor's
    breaker open: Settlement._admitted), rather than made it: no attempt since `tried`."""
    return step.processor in (deferred or ()) and len(step.attempts) == tried


def _customers(request: CoreRequest) -> dict[str, str]:
    """The processor customers a request names, by the field naming each."""
    named = {"customer_id": request.customer_id}
    for i, m in enumerate(request.methods):
        named[f"methods[{i}].customer_id"] = m.customer_id
    return {f: c for f, c in named.items() if c}


def _moved(payment: Payment) -> bool:
    """Whether the steps not failed cover the total: a failed step's amount was moved to
    a fallback step already (a plan going on after a pause meets its failed steps again),
    and moving it again would charge it twice."""
    planned = (s for s in payment.steps if s.status not in (StepStatus.FAILED, StepStatus.SKIPPED))
    return sum(s.amount_minor for s in planned) >= payment.amount_minor


def _releasing(payment: Payment) -> bool:
    return payment.owed is Owed.VOID


def _cancelled_if_released(payment: Payment) -> None:
    """A hold the processor released left the payment with no money taken and nothing
    held (or what is left owed a void of ours): it is cancelled, though no cancel of
    ours did it, and whoever listens is told so once."""
    if payment.captured_minor:
        return
    if _releasing(payment) or not any(s.succeeded for s in payment.steps):
        payment.cancelled(CANCELED_AT_PROCESSOR)


def _refund_parts(payment: Payment, amount_minor: int) -> RefundRequest:
    """Spread a new refund over the captured steps, from the last one back, over what
    each has left beside what refunds in flight hold."""
    refundable = payment.refundable_minor
    amount = amount_minor or refundable
    if refundable == 0:
        raise RefundRejected("nothing captured is left to refund")
    if amount > refundable:
        raise RefundRejected(f"{amount} exceeds the {refundable} still refundable")
    parts, left = [], amount
    for step in reversed(payment.steps):
        part = min(left, step.refundable_minor)
        if part:
            parts.append((step.index, part))
            left -= part
    return RefundRequest(amount, tuple(parts), amount_minor)


def _mismatch(existing: Payment, request: CoreRequest) -> str:
    """What a request reusing a payment's request_id asks otherwise, named as the caller
    sends it. The stored payment keeps its methods as planned steps (a fallback used
    among them) and unused fallbacks, not as listed: compared as a list of steps, a
    split with a fallback read "payment method" whatever differed, and a different
    customer or authorize_only read "set of parameters"."""
    diffs = []
    if existing.amount_minor != request.amount.amount_minor:
        diffs.append("amount")
    if existing.currency != request.amount.currency:
        diffs.append("currency")
    held = [(s.method, s.token, s.customer_id) for s in existing.steps]
    held += [(f.method, f.token, f.customer_id) for f in existing.fallbacks]
    asked = [(m.method, m.token, m.customer_id or request.customer_id) for m in request.methods]
    if Counter((m, t) for m, t, _ in held) != Counter((m, t) for m, t, _ in asked):
        diffs.append("payment method")
    else:
        if Counter(held) != Counter(asked):
            diffs.append("customer_id")
        planned = Counter((s.method, s.token, s.amount_minor) for s in existing.steps)
        given = Counter(
            (m.method, m.token, m.amount_minor) for m in request.methods if m.amount_minor
        )
        if given - planned:
            diffs.append("split amounts")
    if existing.metadata != request.metadata:
        diffs.append("metadata")
    if existing.off_session != request.off_session:
        diffs.append("off_session")
    if existing.authorize_only != request.authorize_only:
        diffs.append("authorize_only")
    return ", ".join(diffs) or "set of parameters"
