"""The Payment aggregate: a plan of steps, their attempts, and the events they emit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from payorch.domain.events import (
    DomainEvent,
    PaymentCancelled,
    PaymentCaptured,
    PaymentCompleted,
    PaymentFailed,
    PaymentPartiallySucceeded,
    PaymentProcessing,
    PaymentReconciled,
    PaymentRefunded,
    PaymentRefundFailed,
    StepFailed,
    StepSucceeded,
    StepVoided,
)
from payorch.domain.money import Currency
from payorch.domain.results import (
    Classification,
    ErrorCode,
    Outcome,
    ProcessorResponse,
    ResponseKind,
)


class PaymentStatus(enum.Enum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    AUTHORIZED = "authorized"
    REQUIRES_ACTION = "requires_action"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


# States in which the processor holds money for the payment, and nothing failed.
_HOLDING = (PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED, PaymentStatus.PARTIALLY_SUCCEEDED)
# The states that complete a payment (PaymentCompleted), once.
_COMPLETED = (PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED)
# States from which coming back to a completed one is no new completion: a refund
# that failed at the processor returns a refunded payment to succeeded.
_ONCE_COMPLETED = (*_COMPLETED, PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED)

# States from which coming back to partially succeeded is no new ending: a refund of a
# partial payment that failed at the processor.
_ONCE_PARTIAL = (PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED)

# States the reconciler has to finish.
UNRESOLVED = frozenset({PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN})
# States of a payment not settled yet: under way, its outcome unknown, or waiting for
# the customer (Payment.settled: an authorized one owing its capture is not either). It
# settles once: metrics count that transition.
OPEN = frozenset({*UNRESOLVED, PaymentStatus.REQUIRES_ACTION})
# OPEN for Payment.settled, read at every save: `in` a tuple compares members by
# identity, `in` a frozenset hashes the status with Enum.__hash__, a Python call.
_OPEN = tuple(OPEN)
# UNRESOLVED for settle(), run at every change of a payment: a tuple, as _OPEN.
_UNRESOLVED = tuple(UNRESOLVED)
# States in which a settled plan can still owe the processor a capture or a void.
OWING = frozenset(PaymentStatus) - UNRESOLVED

# When to ask the processor again about an unknown outcome: backs off, then daily.
RECONCILE_BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(hours=1),
    timedelta(days=1),
)


# A payment paused for the customer (3-D Secure) is given up this long after it paused
# (Payment.action_expires): the paused step is canceled at the processor, what its other
# steps hold is released, and no step runs later.
ACTION_TIMEOUT = timedelta(hours=1)


def reconcile_delay(attempts_so_far: int) -> timedelta:
    return RECONCILE_BACKOFF[min(attempts_so_far, len(RECONCILE_BACKOFF) - 1)]


class StepStatus(enum.Enum):
    PENDING = "pending"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    FAILED = "failed"
    VOIDED = "voided"
    REQUIRES_ACTION = "requires_action"
    UNKNOWN = "unknown"
    REFUNDED = "refunded"
    # Never attempted: an earlier step failed and the plan stopped.
    SKIPPED = "skipped"


# Where a step holds money at the processor, and where the stored step says it holds
# none although a call that lost its save may have charged it.
_HELD = (StepStatus.AUTHORIZED, StepStatus.CAPTURED)
NOT_HELD = (
    StepStatus.PENDING,
    StepStatus.UNKNOWN,
    StepStatus.REQUIRES_ACTION,
    StepStatus.SKIPPED,
    StepStatus.FAILED,
)


class MethodType(enum.Enum):
    CARD = "card"
    APPLE_PAY = "apple_pay"
    GOOGLE_PAY = "google_pay"


class CaptureMode(enum.Enum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class Owed(enum.Enum):
    """A call the plan still owes the processor after one failed: the reconciler makes it."""

    NOTHING = ""
    # A capture was due (the plan's, or CapturePayment's) and did not go through.
    CAPTURE = "capture"
    # Authorizations must be released (all-or-nothing failed, or a cancel) and a void failed.
    VOID = "void"


@dataclass(slots=True)
class RawError:
    """The processor's own fields, stored beside our normalized ones."""

    type: str = ""
    code: str = ""
    decline_code: str = ""
    http_status: int = 0
    request_id: str = ""
    message: str = ""
    advice_code: str = ""

    @classmethod
    def of(cls, r: ProcessorResponse) -> RawError:
        return cls(
            r.error_type,
            r.code,
            r.decline_code,
            r.http_status,
            r.request_id,
            r.message,
            r.advice_code,
        )

    def answer(self, kind: ResponseKind) -> ProcessorResponse:
        """The processor's answer as these fields say it, to be classified again."""
        return ProcessorResponse(
            kind,
            http_status=self.http_status,
            error_type=self.type,
            code=self.code,
            decline_code=self.decline_code,
            advice_code=self.advice_code,
        )


@dataclass(slots=True)
class Attempt:
    number: int
    processor: str
    idempotency_key: str
    started_at: datetime
    ended_at: datetime
    latency_ms: int
    outcome: Outcome
    error_code: ErrorCode
    raw: RawError
    delay_before_ms: int = 0
    routing_reason: str = ""
    retry_decision: str = ""
    processor_payment_id: str = ""
    # authorize | lookup | capture | void | refund
    operation: str = "authorize"


@dataclass(slots=True)
class Step:
    index: int
    method: MethodType
    token: str
    amount_minor: int
    processors: list[str]
    customer_id: str = ""
    status: StepStatus = StepStatus.PENDING
    outcome: Outcome | None = None
    error_code: ErrorCode = ErrorCode.NONE
    processor: str = ""
    processor_payment_id: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    next_action_type: str = ""
    # The processor's secret for the customer's browser (Stripe's PaymentIntent client
    # secret): kept only while the step waits for the customer, cleared as it leaves
    # REQUIRES_ACTION, so a resolved payment holds none (docs/security.md).
    client_secret: str = ""
    captured_minor: int = 0
    refunded_minor: int = 0
    # Idempotency-key generation: bumped only when the processor is known not
    # to have charged under the previous key.
    generation: int = 0
    # How many attempts are already stored (the rest are new).
    stored_attempts: int = 0
    # Refunds held on the step, by request_id: stored before they are sent, and until
    # the processor made one (then refunded) or refused it (then released); one whose
    # answer was lost stays held. Nothing is refunded beyond what they leave.
    refund_holds: dict[str, int] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status in (StepStatus.AUTHORIZED, StepStatus.CAPTURED)

    @property
    def refundable_minor(self) -> int:
        """What a new refund may take: captured, less refunded and held. (A refund made
        at the processor outside payorch is counted as it is, held ones or not.)"""
        return max(0, self.captured_minor - self.refunded_minor - sum(self.refund_holds.values()))


class InvalidTransition(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class FallbackMethod:
    """A requested method not needed by the plan: where a failed step's amount may go."""

    method: MethodType
    token: str
    customer_id: str = ""


@dataclass(frozen=True, slots=True)
class Stored:
    """What storage holds of a payment's state (Payment.stored)."""

    status: PaymentStatus
    settled: bool


# Every Stored there can be, by (status value, settled): storage marks each payment it
# reads or writes, and a shared immutable one costs a lookup, not a dataclass's init.
_STORED = {
    (s.value, settled): Stored(s, settled) for s in PaymentStatus for settled in (False, True)
}


@dataclass(slots=True)
class Payment:
    id: str
    merchant_id: str
    request_id: str
    fingerprint: str
    currency: Currency
    amount_minor: int
    steps: list[Step]
    created_at: datetime
    updated_at: datetime
    capture_mode: CaptureMode = CaptureMode.AUTOMATIC
    allow_partial: bool = False
    config_version: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    off_session: bool = False
    status: PaymentStatus = PaymentStatus.PROCESSING
    # Wall time CreatePayment spent on it; None when nobody measured one: still under
    # way, or settled by the reconciler after its server stopped (not 0 ms, which a
    # fast payment can take).
    orchestration_ms: int | None = None
    final_error: ErrorCode = ErrorCode.NONE
    final_error_message: str = ""
    # Optimistic concurrency: bumped on every save.
    version: int = 0
    # What storage holds of it: as read, or as last written (None before its first
    # write). Not stored itself. A save is committed only over the version it was read
    # at, so a save from an unsettled stored state to a settled one is the one
    # transition that settled the payment, whichever call or replica made it.
    stored: Stored | None = None
    # Events raised since the last save (the unit of work writes them to the outbox).
    pending_events: list[DomainEvent] = field(default_factory=list)
    event_sequence: int = 0
    # Lookups of an unknown outcome so far, and when the next one is due.
    reconcile_attempts: int = 0
    next_reconcile_at: datetime | None = None
    fallbacks: list[FallbackMethod] = field(default_factory=list)
    # Authorize now, capture on request (CapturePayment).
    authorize_only: bool = False
    owed: Owed = Owed.NOTHING
    # Steps whose owed call the reconciler held back, and which: their processor's
    # breaker was open, so nothing was sent and nothing failed. Not stored: the message
    # it makes is, and each pass finds its steps anew (Payment.owe).
    held_back: dict[int, Owed] = field(default_factory=dict)
    # The processor is to keep the payment method on the step's customer for later
    # off-session charges (kept: every call for the step must ask the same).
    save_for_off_session: bool = False

    # -- reading -------------------------------------------------------------
    @property
    def processed_minor(self) -> int:
        # A fully refunded step is no longer succeeded: its amount and its refund
        # both drop out, so it counts 0 rather than minus what was refunded.
        return sum(s.amount_minor - s.refunded_minor for s in self.steps if s.succeeded)

    @property
    def remaining_minor(self) -> int:
        # A refund gives money back; it does not make the step's amount owed again.
        taken = (s for s in self.steps if s.succeeded or s.status is StepStatus.REFUNDED)
        return self.amount_minor - sum(s.amount_minor for s in taken)

    @property
    def captured_minor(self) -> int:
        return sum(s.captured_minor for s in self.steps)

    @property
    def refundable_minor(self) -> int:
        return sum(s.refundable_minor for s in self.steps)

    @property
    def action_expires(self) -> bool:
        """Whether a pause for the customer is given up after ACTION_TIMEOUT. A split's
        is (its other steps hold the customer's money meanwhile), and so is an on-session
        payment's: the customer was at the checkout, an hour later they are gone, and an
        intent left open could still be completed, charging them for an order the shop
        may have given up. An off-session single step waits: the merchant brings the
        customer back for it (an installment's charge), which takes longer."""
        return len(self.steps) > 1 or not self.off_session

    @property
    def action_expires_at(self) -> datetime | None:
        """When the reconciler gives up a payment paused for the customer. A single step
        paused on-session before such a pause expired was stored with none: ACTION_TIMEOUT
        after it was stored (its pause, as nothing saves a paused payment without setting
        one since), as the sweep finds it (list_unresolved)."""
        if self.status is PaymentStatus.REQUIRES_ACTION and self.action_expires:
            return self.next_reconcile_at or self.updated_at + ACTION_TIMEOUT
        return None

    @property
    def settled(self) -> bool:
        """Whether the payment is settled: out of the open states, and not authorized
        with its capture still to come. All of a payment that is not authorize-only is
        captured: authorized, the plan (or the reconciler, a capture having failed)
        still owes its capture, unless it is being released (a cancel, or a failed
        all-or-nothing plan, whose void is owed): that settled it already."""
        if self.status in _OPEN:
            return False
        return (
            self.status is not PaymentStatus.AUTHORIZED
            or self.authorize_only
            or self.owed is Owed.VOID
        )

    @property
    def settling(self) -> bool:
        """Whether saving it now settles it: storage holds it unsettled, and it is not.
        Once settled, a payment stays so: a capture, a cancel or a refund after it is
        no new settling."""
        return self.stored is not None and not self.stored.settled and self.settled

    def mark_stored(self) -> None:
        """Storage holds it as it is now (called by storage on a read and a write)."""
        self.stored = _STORED[self.status._value_, self.settled]

    @property
    def success(self) -> bool:
        return self.status in (PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED)

    # -- changing ------------------------------------------------------------
    def _raise(self, event: DomainEvent) -> None:
        self.event_sequence += 1
        event.sequence = self.event_sequence
        self.pending_events.append(event)

    def started(self) -> None:
        """A new payment, stored PROCESSING before its first charge: says so, once."""
        if self.event_sequence:
            raise InvalidTransition("the payment has started already")
        self._raise(PaymentProcessing(self.amount_minor, self.request_id))

    def add_attempt(self, step: Step, attempt: Attempt) -> None:
        step.attempts.append(attempt)
        if attempt.processor_payment_id:
            step.processor_payment_id = attempt.processor_payment_id

    def step_succeeded(self, step: Step, *, processor: str, latency_ms: int) -> None:
        if step.status not in (StepStatus.PENDING, StepStatus.UNKNOWN, StepStatus.REQUIRES_ACTION):
            raise InvalidTransition(f"step {step.index} is {step.status.value}")
        captured = self.capture_mode is CaptureMode.AUTOMATIC
        step.status = StepStatus.CAPTURED if captured else StepStatus.AUTHORIZED
        step.captured_minor = step.amount_minor if captured else 0
        step.outcome, step.error_code, step.processor = Outcome.SUCCESS, ErrorCode.NONE, processor
        step.client_secret = ""
        self._raise(StepSucceeded(step.index, processor, latency_ms, step.amount_minor))

    def step_failed(
        self, step: Step, c: Classification, *, processor: str, latency_ms: int
    ) -> None:
        if step.status not in (StepStatus.PENDING, StepStatus.UNKNOWN, StepStatus.REQUIRES_ACTION):
            raise InvalidTransition(f"step {step.index} is {step.status.value}")
        step.status, step.outcome, step.error_code = StepStatus.FAILED, c.outcome, c.error_code
        step.processor, step.client_secret = processor, ""
        self._raise(
            StepFailed(step.index, processor, c.error_code, c.retry_later, latency_ms, c.outcome)
        )

    def step_requires_action(
        self, step: Step, *, processor: str, next_action: str, client_secret: str
    ) -> None:
        # No error: a pause learnt by a lookup after a lost answer reads as the answer
        # that paused it (not its `timeout`).
        step.status, step.outcome = StepStatus.REQUIRES_ACTION, Outcome.REQUIRES_ACTION
        step.error_code = ErrorCode.NONE
        step.processor, step.next_action_type = processor, next_action
        step.client_secret = client_secret
        # A step that starts waiting for the customer gets the whole ACTION_TIMEOUT from
        # now (settle() sets it), not what an earlier step's wait left of it.
        self.next_reconcile_at = None

    def step_unknown(self, step: Step, *, processor: str, error_code: ErrorCode) -> None:
        step.status, step.outcome, step.error_code = StepStatus.UNKNOWN, Outcome.UNKNOWN, error_code
        step.processor, step.client_secret = processor, ""

    def step_held_by_lost_try(self, step: Step, held: Step) -> None:
        """A call whose save lost had `held` charged at the processor (its answers, not a
        guess), and the stored step never learnt of it: record it as that call held it,
        with that call's attempts."""
        if step.status not in NOT_HELD or held.status not in _HELD:
            raise InvalidTransition(f"step {step.index} is {step.status.value}")
        step.status, step.captured_minor = held.status, held.captured_minor
        step.outcome, step.error_code = Outcome.SUCCESS, ErrorCode.NONE
        step.processor, step.processor_payment_id = held.processor, held.processor_payment_id
        step.generation, step.client_secret = held.generation, ""
        step.attempts.extend(held.attempts[held.stored_attempts :])
        self._raise(StepSucceeded(step.index, held.processor, 0, step.amount_minor))

    def step_voided(self, step: Step) -> None:
        if step.status not in (StepStatus.AUTHORIZED, StepStatus.REQUIRES_ACTION):
            raise InvalidTransition(f"only an authorized step can be voided (is {step.status})")
        step.status, step.client_secret = StepStatus.VOIDED, ""
        self._raise(StepVoided(step.index, step.processor, step.amount_minor))

    def step_skipped(self, step: Step) -> None:
        if step.status is not StepStatus.PENDING:
            raise InvalidTransition(f"only a pending step can be skipped (is {step.status})")
        step.status = StepStatus.SKIPPED

    def step_captured(self, step: Step) -> None:
        if step.status is not StepStatus.AUTHORIZED:
            raise InvalidTransition(f"only an authorized step can be captured (is {step.status})")
        step.status, step.captured_minor = StepStatus.CAPTURED, step.amount_minor

    def add_fallback_step(
        self, method: MethodType, token: str, customer_id: str, amount: int, processors: list[str]
    ) -> Step:
        step = Step(
            index=len(self.steps),
            method=method,
            token=token,
            amount_minor=amount,
            processors=processors,
            customer_id=customer_id,
        )
        self.steps.append(step)
        return step

    def step_refunded(self, step: Step, amount_minor: int) -> None:
        if amount_minor <= 0 or amount_minor > step.captured_minor - step.refunded_minor:
            raise InvalidTransition(f"cannot refund {amount_minor} of step {step.index}")
        step.refunded_minor += amount_minor
        if step.refunded_minor == step.captured_minor:
            step.status = StepStatus.REFUNDED

    def refund_held(self, step: Step, request_id: str, amount_minor: int) -> None:
        """Hold a refund's part on the step before it is sent: never beyond what the
        step has refundable, so refunds at once can never promise more than captured."""
        if request_id in step.refund_holds:
            raise InvalidTransition(f"refund {request_id!r} is held on step {step.index}")
        if amount_minor <= 0 or amount_minor > step.refundable_minor:
            raise InvalidTransition(f"cannot hold {amount_minor} of step {step.index}")
        step.refund_holds[request_id] = amount_minor

    def held_refund_made(self, step: Step, request_id: str) -> None:
        """The processor made the held refund: refunded now, no longer held."""
        self.step_refunded(step, step.refund_holds[request_id])
        del step.refund_holds[request_id]

    @property
    def refunds_held(self) -> list[tuple[Step, str]]:
        """The refund parts held on the steps: (step, request_id)."""
        return [(s, request_id) for s in self.steps for request_id in s.refund_holds]

    def watch_refund_holds(self, now: datetime) -> None:
        """A held refund part is the reconciler's to settle if its caller never learns
        what became of it (its answer lost, a 500, the server dying before it was sent):
        the payment is due for a look on the back-off, 1 min first. A payment with an
        unknown outcome, owing a call or paused for the customer keeps its own schedule,
        and its refunds are looked at once it settles."""
        if (
            not self.refunds_held
            or self.next_reconcile_at is not None
            or self.owed is not Owed.NOTHING
            or self.status in _OPEN
        ):
            return
        self.reconcile_attempts = 0  # a new look: the back-off starts over
        self.next_reconcile_at = now + reconcile_delay(0)

    def held_refund_released(self, step: Step, request_id: str) -> None:
        """The processor refused the held refund: what it held is refundable again."""
        step.refund_holds.pop(request_id, None)

    def step_refund_failed(self, step: Step, amount_minor: int, refund_id: str) -> None:
        """A refund counted on the step failed at the processor: the money is the
        merchant's again, and refundable."""
        if amount_minor <= 0 or amount_minor > step.refunded_minor:
            raise InvalidTransition(f"step {step.index} has not {amount_minor} refunded")
        step.refunded_minor -= amount_minor
        if step.status is StepStatus.REFUNDED:
            step.status = StepStatus.CAPTURED
        self._raise(PaymentRefundFailed(amount_minor, refund_id))

    def captured(self, amount_minor: int) -> None:
        self._raise(PaymentCaptured(amount_minor))

    def refunded(self, amount_minor: int, refund_request_id: str) -> None:
        self._raise(PaymentRefunded(amount_minor, refund_request_id))

    def cancelled(self, reason: str) -> None:
        self._raise(PaymentCancelled(reason))

    def step_reconciled(self, step: Step, *, source: str, processor_event_id: str = "") -> None:
        assert step.outcome is not None
        self._raise(PaymentReconciled(step.index, step.outcome, source, processor_event_id))

    def settle(self, now: datetime, *, orchestration_ms: int | None = None) -> None:
        """Derive the payment's status from its steps; emit the final event once."""
        before = self.status
        self.status = self._derive_status()
        changed = self.status is not before
        self.updated_at = now
        if changed and self.status is PaymentStatus.PROCESSING:
            # A run goes on (a pause confirmed): what was due for the pause is no back-off
            # of its own, and an interruption of the run is looked up STALE_PROCESSING on.
            self.next_reconcile_at, self.reconcile_attempts = None, 0
        if orchestration_ms is not None:
            self.orchestration_ms = orchestration_ms
        owed_before = self.owed
        if not any(s.status is StepStatus.AUTHORIZED for s in self.steps):
            self.owed = Owed.NOTHING
        if self.owed is not Owed.NOTHING:
            # The reconciler makes the call the plan still owes, on the unknown-outcome back-off.
            if self.next_reconcile_at is None:
                self.next_reconcile_at = now + reconcile_delay(self.reconcile_attempts)
        elif self.status is PaymentStatus.REQUIRES_ACTION and self.action_expires:
            # The reconciler gives the plan up then, unless the customer acted before.
            if changed or self.next_reconcile_at is None:
                self.next_reconcile_at = now + ACTION_TIMEOUT
        elif self.status not in _UNRESOLVED:
            if not self.refunds_held:
                self.next_reconcile_at = None  # and no refund in doubt to look up
            else:
                if self.status is PaymentStatus.REQUIRES_ACTION:
                    self.next_reconcile_at = None
                self.watch_refund_holds(now)  # a refund in doubt keeps its look-up due
        if self.status in _HOLDING:
            if changed or owed_before is not Owed.NOTHING:
                # A new state, or what was owed is paid: the old error no longer stands.
                self.final_error, self.final_error_message = ErrorCode.NONE, ""
            if self.status in _COMPLETED and changed and before not in _ONCE_COMPLETED:
                # Once: capturing an authorized payment later raises PaymentCaptured only.
                self._raise(PaymentCompleted(self.amount_minor, self.request_id))
            elif (
                self.status is PaymentStatus.PARTIALLY_SUCCEEDED
                and changed
                and before not in _ONCE_PARTIAL
            ):
                self._raise(
                    PaymentPartiallySucceeded(
                        self.processed_minor, self.remaining_minor, self.request_id
                    )
                )
        elif self.status is PaymentStatus.FAILED:
            failed = [s for s in self.steps if s.status is StepStatus.FAILED]
            self.final_error = failed[-1].error_code if failed else ErrorCode.UNMAPPED
            self.final_error_message = (
                f"step {failed[-1].index} failed: {self.final_error.value}" if failed else ""
            )
            # A cancel whose void failed reads FAILED until the reconciler releases what
            # it holds: cancelled, not failed. So does a cancelled payment that adopts a
            # hold a lost try left (PaymentService._adopt): announced cancelled already.
            cancelling = before is PaymentStatus.CANCELLED or any(
                isinstance(e, PaymentCancelled) for e in self.pending_events
            )
            if changed and not cancelling:
                self._raise(
                    PaymentFailed(self.final_error, self.request_id, self.final_error_message)
                )
        elif self.status is PaymentStatus.REQUIRES_ACTION and changed:
            # Waiting for the customer is no failure: an unknown outcome a lookup found
            # paused no longer stands (a pause answered at once never had one).
            self.final_error, self.final_error_message = ErrorCode.NONE, ""
        elif self.status is PaymentStatus.UNKNOWN:
            # Said again at every settle: a lookup may learn the charge is under way.
            self.final_error_message = self._unknown_message()
            if changed:
                self.final_error = ErrorCode.UNKNOWN_OUTCOME
                self.next_reconcile_at = now + reconcile_delay(self.reconcile_attempts)
        if self.owed is not Owed.NOTHING and self.status in (*_HOLDING, PaymentStatus.FAILED):
            code, message = self._owed_error()
            if self.final_error in (ErrorCode.NONE, ErrorCode.UNMAPPED):
                self.final_error = code
            self.final_error_message = "; ".join(
                m for m in (self.final_error_message, message) if m
            )

    def _unknown_message(self) -> str:
        """Why the outcome is not known yet. Unknown/unknown_outcome is the class of one
        answer only: the processor said the charge is under way (Stripe's `processing`),
        which is no lost answer. Any other unknown step lost its answer (a timeout, a
        dropped connection, a 500 not looked up)."""
        for step in self.steps:
            last = step.attempts[-1] if step.attempts else None
            if (
                step.status is StepStatus.UNKNOWN
                and last is not None
                and (last.outcome, last.error_code) == (Outcome.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME)
            ):
                return (
                    f"step {step.index}: the processor is still processing the charge; reconciling"
                )
        return "the processor's answer was lost; reconciling"

    def owe(self, owed: Owed, step: Step, *, held_back: bool = False) -> None:
        """The plan owes `owed` (a capture or a void) on `step`: its call failed, or
        (`held_back`) the reconciler did not make it, the processor's breaker being open."""
        self.owed = owed
        if held_back:
            self.held_back[step.index] = owed
        else:
            self.held_back.pop(step.index, None)

    def _owed_error(self) -> tuple[ErrorCode, str]:
        held = [s for s in self.steps if s.status is StepStatus.AUTHORIZED]
        operation = self.owed.value
        amount = sum(s.amount_minor for s in held)
        if held and all(self.held_back.get(s.index) is self.owed for s in held):
            # Never made, so it never failed: it waits for the processor to take calls.
            waited = " and ".join(sorted({s.processor for s in held}))
            return ErrorCode.NO_PROCESSOR_AVAILABLE, (
                f"{amount} still authorized: the {operation} waits for {waited} to recover"
                " (its breaker is open)"
            )
        tried = [a for s in held for a in s.attempts if a.operation == operation]
        if not tried:
            # Owed before any try (a hold a lost try left, adopted after a cancel won):
            # nothing failed, so no error is named.
            return ErrorCode.NONE, (
                f"{amount} still authorized: the {operation} is owed, not yet tried:"
                " the reconciler makes it"
            )
        return tried[-1].error_code, (
            f"{amount} still authorized: the {operation} failed and is retried"
        )

    def reconcile_deferred(self, until: datetime) -> bool:
        """Nothing could be asked (the processor's breaker is open): look again from
        `until`, the back-off kept where it was. False when already due no sooner."""
        if self.next_reconcile_at is not None and self.next_reconcile_at >= until:
            return False
        self.next_reconcile_at = until
        return True

    def reconcile_cut_short(self, now: datetime) -> None:
        """The reconciler's pass ran out of its run's time with calls still to make: due
        again at the next pass, the back-off kept where it was (nothing failed)."""
        self.next_reconcile_at = now
        self.updated_at = now

    def reconcile_inconclusive(self, now: datetime) -> None:
        """A lookup told us nothing: ask again later, backing off (5 min, 1 h, then
        daily). A payment left PROCESSING by a run that died keeps
        that status (its steps after the open one may hold money, so it is no UNKNOWN
        payment, whose later steps are skipped): it backs off all the same."""
        self.reconcile_attempts += 1
        self.next_reconcile_at = now + reconcile_delay(self.reconcile_attempts)
        self.updated_at = now

    def _derive_status(self) -> PaymentStatus:
        statuses = [s.status for s in self.steps]
        if any(s is StepStatus.UNKNOWN for s in statuses):
            return PaymentStatus.UNKNOWN
        # Before PENDING: a plan paused for the customer on any step waits for them, and
        # the steps after it wait with it.
        if any(s is StepStatus.REQUIRES_ACTION for s in statuses):
            return PaymentStatus.REQUIRES_ACTION
        if any(s is StepStatus.PENDING for s in statuses):
            return PaymentStatus.PROCESSING
        refunded = sum(s.refunded_minor for s in self.steps)
        if refunded:
            full = refunded == self.captured_minor
            return PaymentStatus.REFUNDED if full else PaymentStatus.PARTIALLY_REFUNDED
        held = [s for s in self.steps if s.succeeded]
        if held and self.remaining_minor == 0:
            if all(s.status is StepStatus.CAPTURED for s in held):
                return PaymentStatus.SUCCEEDED
            return PaymentStatus.AUTHORIZED
        if held and (self.allow_partial or any(s.status is StepStatus.CAPTURED for s in held)):
            return PaymentStatus.PARTIALLY_SUCCEEDED
        if held:
            # All-or-nothing came to nothing, but a void did not go through (Owed.VOID).
            return PaymentStatus.FAILED
        tried = [s for s in statuses if s is not StepStatus.SKIPPED]
        if tried and all(s is StepStatus.VOIDED for s in tried):
            return PaymentStatus.CANCELLED
        return PaymentStatus.FAILED
