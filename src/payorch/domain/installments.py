"""Installment plans: the penny-perfect split, the schedule, the dunning ladder, and the
plan aggregate whose transitions are the only way its state changes.

Pure: no I/O. Times come in as arguments; ids are derived, not drawn.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from payorch.domain.classification import INFRASTRUCTURE_CODES, classify
from payorch.domain.events import DomainEvent
from payorch.domain.money import Currency, Money, format_minor
from payorch.domain.payment import Payment, PaymentStatus, StepStatus
from payorch.domain.results import ErrorCode, ResponseKind

# Documented defaults (docs/installments.md): 100.00 in the currency's major unit,
# three installments thirty days apart, retries three, seven and fourteen days after
# the first failure.
DEFAULT_MIN_TOTAL_MAJOR = 100
DEFAULT_COUNT = 3
DEFAULT_INTERVAL_DAYS = 30
DEFAULT_DUNNING_DAYS = (3, 7, 14)
# A merchant config refuses a policy outside these (MerchantConfig.validate), and the
# domain holds every policy to the same bounds.
MAX_COUNT = 24
MAX_INTERVAL_DAYS = 365
MAX_LADDER_STEPS = 10
# A dunning step is at most a year after the first failure: later ones are no retry
# anyone waits for, and a day count past what a date can hold would break the ladder.
MAX_DUNNING_DAY = 365
# A charge no processor could take (every breaker open) reached no bank: our outage,
# not the customer's failure. The installment stays due and is tried again after a
# pause that doubles from a minute to an hour, without using a dunning step, until
# the outage has lasted as long as the first step (3 days by default).
OUTAGE_PAUSE_FIRST = timedelta(minutes=1)
OUTAGE_PAUSE_MAX = timedelta(hours=1)
# Charges a merchant may ask for by hand (RetryInstallment) per installment, beside the
# ladder's. Each is one more decline against the card (card networks fine merchants for
# retrying a declined card too often) and one more charge in the plan's history, which
# every answer carries: without a bound a client retrying in a loop grows the plan past
# what an answer may hold.
MAX_MANUAL_RETRIES = 10


class InvalidInstallmentPolicy(ValueError):
    pass


class NotEligible(ValueError):
    """The order cannot be paid in installments under the merchant's policy."""


class InvalidTransition(RuntimeError):
    pass


class RetryLimitReached(InvalidTransition):
    """The installment was retried by hand MAX_MANUAL_RETRIES times: no more charges."""

    def __init__(self, sequence: int) -> None:
        super().__init__(
            f"installment {sequence} was retried by hand {MAX_MANUAL_RETRIES} times, the "
            "most allowed: no further manual charge is made (cancel the plan, or collect "
            "the money another way)"
        )


@dataclass(frozen=True, slots=True)
class InstallmentPolicy:
    # Smallest eligible total in minor units; 0 means 100.00 in the currency's major unit.
    min_total_minor: int = 0
    count: int = DEFAULT_COUNT
    interval_days: int = DEFAULT_INTERVAL_DAYS
    # Days after the first failure at which a failed installment is charged again.
    dunning_days: tuple[int, ...] = DEFAULT_DUNNING_DAYS

    def __post_init__(self) -> None:
        if self.min_total_minor < 0:
            raise InvalidInstallmentPolicy("min_total_minor cannot be negative")
        if not 2 <= self.count <= MAX_COUNT:
            raise InvalidInstallmentPolicy(f"count must be 2..{MAX_COUNT}")
        if not 1 <= self.interval_days <= MAX_INTERVAL_DAYS:
            raise InvalidInstallmentPolicy(f"interval_days must be 1..{MAX_INTERVAL_DAYS}")
        days = self.dunning_days
        if len(days) > MAX_LADDER_STEPS:
            raise InvalidInstallmentPolicy(f"at most {MAX_LADDER_STEPS} dunning steps")
        if any(d <= 0 for d in days) or any(b <= a for a, b in itertools.pairwise(days)):
            raise InvalidInstallmentPolicy("dunning_days must be positive and increasing")
        if any(d > MAX_DUNNING_DAY for d in days):
            raise InvalidInstallmentPolicy(f"dunning_days must be at most {MAX_DUNNING_DAY}")

    def minimum_for(self, currency: Currency) -> int:
        if self.min_total_minor:
            return self.min_total_minor
        return int(DEFAULT_MIN_TOTAL_MAJOR * 10**currency.exponent)

    def check_eligible(self, total: Money) -> None:
        minimum = self.minimum_for(total.currency)
        if total.amount_minor < minimum:
            raise NotEligible(
                f"installments start at {format_minor(minimum, total.currency)} "
                f"{total.currency.code}"
            )
        step = total.currency.charge_step
        if total.amount_minor % step:
            # Split in steps, it would leave what is over on the last installment, which no
            # card charge takes: the plan would take its first installments and breach.
            raise NotEligible(
                f"the total is not a whole number of {format_minor(step, total.currency)}"
                f" {total.currency.code}, the steps a card charge takes in that currency"
            )
        if total.amount_minor // step < self.count:
            raise NotEligible(f"the total cannot be split into {self.count} installments")


def split_total(total: Money, count: int) -> list[int]:
    """The installments of `total`, split in the steps a charge in its currency takes
    (Currency.charge_step: 10 fils for KWD, one cent for EUR)."""
    return split_evenly(total.amount_minor, count, total.currency.charge_step)


def split_evenly(total_minor: int, count: int, step: int = 1) -> list[int]:
    """Split in steps of `step` minor units so the parts sum to the total and differ by
    at most one step.

    The remainder goes on the last installments, one step each: 10000 / 3 = 3333 + 3333 +
    3334, 10 / 4 = 2 + 2 + 3 + 3, and in steps of 10, 100000 / 3 = 33330 + 33330 + 33340.
    A total that is not a whole number of steps leaves what is over on the last part (no
    such total is eligible: InstallmentPolicy.check_eligible; only a plan whose first
    charge was taken before that rule is split so, as it was).
    """
    if count < 1:
        raise ValueError("count must be positive")
    if total_minor < 0:
        raise ValueError("total cannot be negative")
    if step < 1:
        raise ValueError("step must be positive")
    steps, over = divmod(total_minor, step)
    base, remainder = divmod(steps, count)
    parts = [(base + (1 if i >= count - remainder else 0)) * step for i in range(count)]
    parts[-1] += over
    return parts


def due_dates(start: datetime, count: int, interval_days: int) -> list[datetime]:
    """Installment 1 is due at `start`, then D+interval, D+2*interval, ..."""
    return [start + timedelta(days=interval_days * i) for i in range(count)]


# -- ids -------------------------------------------------------------------------------
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _letters(digest: bytes, n: int) -> str:
    # Letters only: an id can never look like a card number to the request scanner.
    value = int.from_bytes(digest, "big")
    out = []
    for _ in range(n):
        value, r = divmod(value, 26)
        out.append(_LETTERS[r])
    return "".join(out)


def plan_id_for(merchant_id: str, request_id: str) -> str:
    """Derived from the caller's idempotency key, so a retried create finds its plan."""
    digest = hashlib.sha256(f"{merchant_id}\x00{request_id}".encode()).digest()
    return f"ip_{_letters(digest, 24)}"


def installment_id_for(plan_id: str, sequence: int) -> str:
    return f"{plan_id}_{sequence}"


def charge_request_id(installment_id: str, attempt: int) -> str:
    """The payments idempotency key of one attempt: one payment per (installment, attempt)."""
    return f"inst_{installment_id}_a{attempt}"


# -- states ----------------------------------------------------------------------------
class PlanStatus(enum.Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    BREACH = "breach"
    CANCELLED = "cancelled"


class InstallmentStatus(enum.Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    PAID = "paid"
    FAILED = "failed"
    FAILED_FINAL = "failed_final"
    CANCELLED = "cancelled"


class AttemptKind(enum.Enum):
    CHECKOUT = "checkout"
    SCHEDULED = "scheduled"
    MANUAL = "manual"


INSTALLMENT_TRANSITIONS: dict[InstallmentStatus, frozenset[InstallmentStatus]] = {
    InstallmentStatus.PENDING: frozenset(
        {InstallmentStatus.PROCESSING, InstallmentStatus.CANCELLED}
    ),
    InstallmentStatus.PROCESSING: frozenset(
        {
            InstallmentStatus.PAID,
            InstallmentStatus.FAILED,
            InstallmentStatus.FAILED_FINAL,
            # Still due: no processor could take the charge (an outage of ours), or the
            # plan breached before its charge started (due again as it was).
            InstallmentStatus.PENDING,
            # The plan was cancelled: its charge never started, or it failed.
            InstallmentStatus.CANCELLED,
        }
    ),
    InstallmentStatus.FAILED: frozenset(
        {InstallmentStatus.PROCESSING, InstallmentStatus.CANCELLED}
    ),
    # Only a merchant's manual retry reopens a final failure.
    InstallmentStatus.FAILED_FINAL: frozenset({InstallmentStatus.PROCESSING}),
    InstallmentStatus.PAID: frozenset(),
    # Final, but money is never left unrecorded: a charge found to have gone through
    # after its claim was given up as never started is recorded as paid.
    InstallmentStatus.CANCELLED: frozenset({InstallmentStatus.PAID}),
}

PLAN_TRANSITIONS: dict[PlanStatus, frozenset[PlanStatus]] = {
    PlanStatus.ACTIVE: frozenset({PlanStatus.COMPLETED, PlanStatus.BREACH, PlanStatus.CANCELLED}),
    # A breach heals when a manual retry pays the installment that caused it.
    PlanStatus.BREACH: frozenset({PlanStatus.ACTIVE, PlanStatus.COMPLETED, PlanStatus.CANCELLED}),
    PlanStatus.COMPLETED: frozenset(),
    PlanStatus.CANCELLED: frozenset(),
}


# -- events ----------------------------------------------------------------------------
@dataclass(slots=True)
class PlanCreated(DomainEvent):
    plan_id: str
    order_id: str
    total_minor: int
    currency: str
    installment_count: int


@dataclass(slots=True)
class InstallmentPaid(DomainEvent):
    plan_id: str
    order_id: str
    installment_id: str
    installment_sequence: int
    amount_minor: int
    currency: str
    attempt: int
    payment_id: str


@dataclass(slots=True)
class InstallmentFailed(DomainEvent):
    plan_id: str
    order_id: str
    installment_id: str
    installment_sequence: int
    attempt: int
    error_code: str
    message: str
    # ISO-8601 time of the next attempt.
    next_attempt_at: str
    # The attempt's payment ("" when none was made): GetPayment tells what happened.
    payment_id: str


@dataclass(slots=True)
class InstallmentFailedFinal(DomainEvent):
    plan_id: str
    order_id: str
    installment_id: str
    installment_sequence: int
    attempts: int
    error_code: str
    message: str
    # The last attempt's payment ("" when none was made). One waiting for the customer
    # (error_code authentication_required) is theirs to complete on-session.
    payment_id: str


@dataclass(slots=True)
class PlanCompleted(DomainEvent):
    plan_id: str
    order_id: str
    total_minor: int
    currency: str


@dataclass(slots=True)
class PlanBreached(DomainEvent):
    plan_id: str
    order_id: str
    installment_id: str
    error_code: str


@dataclass(slots=True)
class PlanReinstated(DomainEvent):
    """A plan in breach is active again: a manual retry paid the installment that
    breached it. (One that pays the last installment raises PlanCompleted instead.)"""

    plan_id: str
    order_id: str
    installment_id: str


@dataclass(slots=True)
class PlanCancelled(DomainEvent):
    plan_id: str
    order_id: str
    reason: str


# -- what a charge came to ---------------------------------------------------------------
class ChargeOutcome(enum.Enum):
    PAID = "paid"
    FAILED = "failed"
    # Still being worked on, or its answer was lost: look again later, never charge anew.
    UNRESOLVED = "unresolved"
    # Never charged, and not to be: the plan stopped charging (cancelled or in breach)
    # before this attempt's charge started. Gives the claim up; no charge is stored.
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True)
class ChargeResult:
    outcome: ChargeOutcome
    payment_id: str
    processor_payment_id: str = ""
    error_code: str = ""
    message: str = ""
    # Worth charging again on the dunning ladder (Classification.retry_later).
    retry_later: bool = False


_CHARGED = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED}
)


def judge_charge(payment: Payment) -> ChargeResult:
    """What a stored payment means for the installment it was charging."""
    step = payment.steps[-1] if payment.steps else None
    pid = step.processor_payment_id if step else ""
    if payment.status in _CHARGED:
        # A refund comes after the capture: the installment's charge went through.
        return ChargeResult(ChargeOutcome.PAID, payment.id, pid)
    if payment.status is PaymentStatus.CANCELLED:
        # Voided (by the merchant): nothing was taken, and nothing more will happen to it.
        # With no error of its own it reads what happened: its processor's payment was
        # canceled before it charged (not `unmapped`, an answer missing from the tables).
        code = payment.final_error
        if code is ErrorCode.NONE:
            code = ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR
        return ChargeResult(
            ChargeOutcome.FAILED,
            payment.id,
            pid,
            code.value,
            "the payment was cancelled",
            retry_later=False,
        )
    if payment.status is PaymentStatus.REQUIRES_ACTION:
        # Off-session and the bank wants the customer: no retry can succeed without them.
        return ChargeResult(
            ChargeOutcome.FAILED,
            payment.id,
            pid,
            ErrorCode.AUTHENTICATION_REQUIRED.value,
            "the customer must authenticate on-session",
            retry_later=False,
        )
    if payment.status is not PaymentStatus.FAILED:
        return ChargeResult(ChargeOutcome.UNRESOLVED, payment.id, pid)
    failed = [s for s in payment.steps if s.status is StepStatus.FAILED]
    code = payment.final_error
    message = payment.final_error_message
    # Our failures, not the bank's: a charge interrupted (nothing taken), or one our own
    # run limit left no time to send, is tried again.
    retry_later = code in INFRASTRUCTURE_CODES or code in (
        ErrorCode.NO_PROCESSOR_AVAILABLE,
        ErrorCode.INTERRUPTED,
        ErrorCode.RUN_LIMIT_REACHED,
    )
    if failed:
        answers = [a for a in failed[-1].attempts if a.raw.type or a.raw.http_status]
        if answers:
            raw = answers[-1].raw
            # The processor's own words, judged by the same table the router used.
            c = classify(raw.answer(ResponseKind.ERROR))
            if c.error_code is failed[-1].error_code:
                retry_later = c.retry_later
            message = raw.message or message
    return ChargeResult(
        ChargeOutcome.FAILED, payment.id, pid, code.value, message[:500], retry_later
    )


def waits_for_customer(result: ChargeResult) -> bool:
    """A charge whose payment stopped to wait for the customer (off-session, the bank
    wanted them): open at the processor, the customer may still complete it."""
    return (
        result.outcome is ChargeOutcome.FAILED
        and result.error_code == ErrorCode.AUTHENTICATION_REQUIRED.value
        and bool(result.payment_id)
    )


# -- the aggregate ---------------------------------------------------------------------
@dataclass(slots=True)
class InstallmentCharge:
    """One attempt at an installment: the payment it made and what came of it."""

    attempt: int
    kind: AttemptKind
    payment_id: str
    outcome: ChargeOutcome
    error_code: str
    message: str
    # The run's last when `times` > 1: consecutive scheduled charges no processor could
    # take (one outage's pauses) are one charge, stored as one row, counted here.
    at: datetime
    times: int = 1
    # When the first of the run was made (None for a single charge).
    first_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ChargeEntry:
    """One line of an installment's history as a plan answer carries it: a charge, or
    the run of consecutive scheduled charges no processor could take (one outage's
    pauses, up to one an hour until the first dunning step) folded into one."""

    # The charge, or the run's last one.
    charge: InstallmentCharge
    # How many charges the line stands for (1 but for an outage's pauses).
    times: int = 1
    # When the first of them was made.
    first_at: datetime | None = None


def _outage_pause_charge(c: InstallmentCharge) -> bool:
    return (
        c.kind is AttemptKind.SCHEDULED
        and c.outcome is ChargeOutcome.FAILED
        and c.error_code == ErrorCode.NO_PROCESSOR_AVAILABLE.value
    )


def charge_history(charges: list[InstallmentCharge]) -> list[ChargeEntry]:
    """The charges with each run of an outage's pauses folded into one entry. Bounded by
    the charges that are not pauses (a checkout, the ladder's steps, the manual retries):
    between two of them there is at most one run, however long the outage lasted.
    Runs are stored folded (one row each); rows stored one per pause before that are
    folded here the same way."""
    out: list[ChargeEntry] = []
    for c in charges:
        last = out[-1] if out else None
        if last is not None and _outage_pause_charge(c) and _outage_pause_charge(last.charge):
            first_at = last.first_at or last.charge.at
            out[-1] = ChargeEntry(c, last.times + c.times, first_at)
        else:
            out.append(ChargeEntry(c, c.times, c.first_at if c.times > 1 else None))
    return out


@dataclass(slots=True)
class Installment:
    id: str
    plan_id: str
    sequence: int
    amount_minor: int
    due_at: datetime
    status: InstallmentStatus = InstallmentStatus.PENDING
    attempts: int = 0
    attempt_kind: AttemptKind = AttemptKind.SCHEDULED
    # When the scheduler should next charge it (pending or failed); None otherwise.
    next_attempt_at: datetime | None = None
    first_failed_at: datetime | None = None
    # Ladder steps already scheduled.
    dunning_step: int = 0
    last_error_code: str = ""
    last_error: str = ""
    payment_id: str = ""
    processor_payment_id: str = ""
    paid_at: datetime | None = None
    # Who charges it now, and until when that claim holds.
    claimed_by: str = ""
    lease_until: datetime | None = None
    charges: list[InstallmentCharge] = field(default_factory=list)
    stored_charges: int = 0
    # The attempt of the stored charge row the last charge was folded into (an outage's
    # pause added to its run): the repository updates that row instead of adding one.
    folded_attempt: int | None = None
    version: int = 0
    # Set by every transition: the repository writes changed rows only.
    changed: bool = False

    @property
    def manual_retries(self) -> int:
        """Manual retries recorded (RetryInstallment's charges)."""
        return sum(1 for c in self.charges if c.kind is AttemptKind.MANUAL)

    @property
    def awaiting_customer(self) -> list[str]:
        """The payments of attempts that stopped to wait for the customer (off-session,
        the bank wanted them): open at the processor unless cancelled since."""
        code = ErrorCode.AUTHENTICATION_REQUIRED.value
        return [c.payment_id for c in self.charges if c.error_code == code and c.payment_id]

    def _move(self, to: InstallmentStatus) -> None:
        if to not in INSTALLMENT_TRANSITIONS[self.status]:
            raise InvalidTransition(
                f"installment {self.sequence} cannot go from {self.status.value} to {to.value}"
            )
        self.status = to
        self.changed = True


@dataclass(slots=True)
class InstallmentPlan:
    id: str
    merchant_id: str
    request_id: str
    order_id: str
    fingerprint: str
    currency: Currency
    total_minor: int
    token: str
    customer_id: str
    interval_days: int
    dunning_days: tuple[int, ...]
    installments: list[Installment]
    created_at: datetime
    updated_at: datetime
    status: PlanStatus = PlanStatus.ACTIVE
    cancel_reason: str = ""
    version: int = 0
    event_sequence: int = 0
    pending_events: list[DomainEvent] = field(default_factory=list)
    # Set when `status` changes: the repository then updates what it keeps of the
    # plan's status beside its installments (the scheduler's claim index).
    status_changed: bool = False

    # -- creating ------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        *,
        merchant_id: str,
        request_id: str,
        order_id: str,
        fingerprint: str,
        total: Money,
        token: str,
        customer_id: str,
        policy: InstallmentPolicy,
        first_payment_id: str,
        first_processor_payment_id: str,
        now: datetime,
        charged_at: datetime | None = None,
    ) -> InstallmentPlan:
        """A plan whose first installment was paid at checkout (at `charged_at`, `now`
        unless said); the rest pending, due from that checkout on. The plan may be
        stored later than its first charge (a retry after the process died in between):
        the schedule still counts from the charge."""
        plan_id = plan_id_for(merchant_id, request_id)
        amounts = split_total(total, policy.count)
        charged_at = charged_at or now
        dates = due_dates(charged_at, policy.count, policy.interval_days)
        installments = [
            Installment(
                id=installment_id_for(plan_id, seq),
                plan_id=plan_id,
                sequence=seq,
                amount_minor=amount,
                due_at=due,
                next_attempt_at=due,
                changed=True,
            )
            for seq, (amount, due) in enumerate(zip(amounts, dates, strict=True), start=1)
        ]
        plan = cls(
            id=plan_id,
            merchant_id=merchant_id,
            request_id=request_id,
            order_id=order_id,
            fingerprint=fingerprint,
            currency=total.currency,
            total_minor=total.amount_minor,
            token=token,
            customer_id=customer_id,
            interval_days=policy.interval_days,
            dunning_days=tuple(policy.dunning_days),
            installments=installments,
            created_at=now,
            updated_at=now,
        )
        plan._raise(
            PlanCreated(plan_id, order_id, total.amount_minor, total.currency.code, policy.count)
        )
        first = installments[0]
        first.attempts, first.attempt_kind = 1, AttemptKind.CHECKOUT
        first._move(InstallmentStatus.PROCESSING)
        plan.record(
            first.id,
            1,
            ChargeResult(ChargeOutcome.PAID, first_payment_id, first_processor_payment_id),
            charged_at,
        )
        plan.updated_at = now
        return plan

    # -- reading -------------------------------------------------------------------
    def installment(self, installment_id: str) -> Installment:
        for inst in self.installments:
            if inst.id == installment_id:
                return inst
        raise KeyError(installment_id)

    @property
    def paid_count(self) -> int:
        return sum(1 for i in self.installments if i.status is InstallmentStatus.PAID)

    @property
    def paid_minor(self) -> int:
        return sum(i.amount_minor for i in self.installments if i.status is InstallmentStatus.PAID)

    @property
    def ladder(self) -> tuple[timedelta, ...]:
        return tuple(timedelta(days=d) for d in self.dunning_days)

    def may_charge(self, installment_id: str) -> bool:
        """Whether a new charge of this installment may be made now: on an active plan,
        or on a plan in breach at the merchant's request (a manual retry). A cancelled
        or breached plan otherwise charges nothing; a charge already started is only
        looked up and recorded."""
        if self.status is PlanStatus.ACTIVE:
            return True
        inst = self.installment(installment_id)
        return self.status is PlanStatus.BREACH and inst.attempt_kind is AttemptKind.MANUAL

    def admits_charge(
        self, installment_id: str, attempt: int, lease_until: datetime | None
    ) -> bool:
        """Whether the charge of attempt `attempt`, under a claim leased to `lease_until`,
        may still start: its payment be inserted. The payment insert asks it of the plan
        as committed, in the same statement (payment_writes.py), so that no worker acts
        on a look taken before it paused.

        A plan not cancelled admits it (a breach, a give-back, a takeover are the
        charger's to judge; the payments gate makes one payment of one attempt). A
        cancelled plan admits only a claim its cancel left to its worker: the same
        claim still (processing, this attempt, its lease not renewed by a takeover),
        whose lease ran past the plan's last change, the cancel or one after it. A
        cancel made once the lease had run out leaves nothing to start, however late
        the worker that held it wakes."""
        if self.status is not PlanStatus.CANCELLED:
            return True
        inst = self.installment(installment_id)
        return (
            inst.status is InstallmentStatus.PROCESSING
            and inst.attempts == attempt
            and lease_until is not None
            and inst.lease_until == lease_until
            and lease_until > self.updated_at
        )

    # -- changing ------------------------------------------------------------------
    def _raise(self, event: DomainEvent) -> None:
        self.event_sequence += 1
        event.sequence = self.event_sequence
        self.pending_events.append(event)

    def start_manual_retry(
        self,
        installment_id: str,
        *,
        worker: str,
        lease_until: datetime,
        now: datetime,
        charging: bool = True,
    ) -> int:
        """The merchant asks to charge a failed installment now; returns the attempt number.
        `charging` False: the attempt only records a payment of an earlier attempt that
        the customer completed (nothing is charged), which MAX_MANUAL_RETRIES never
        refuses: money taken is always recorded."""
        inst = self.installment(installment_id)
        if self.status is PlanStatus.CANCELLED or self.status is PlanStatus.COMPLETED:
            raise InvalidTransition(f"the plan is {self.status.value}")
        if inst.status not in (InstallmentStatus.FAILED, InstallmentStatus.FAILED_FINAL):
            raise InvalidTransition(
                f"only a failed installment can be retried (installment {inst.sequence} "
                f"is {inst.status.value})"
            )
        if charging and inst.manual_retries >= MAX_MANUAL_RETRIES:
            raise RetryLimitReached(inst.sequence)
        inst._move(InstallmentStatus.PROCESSING)
        inst.attempts += 1
        inst.attempt_kind = AttemptKind.MANUAL
        inst.claimed_by, inst.lease_until = worker, lease_until
        self.updated_at = now
        return inst.attempts

    def hold_given_back(
        self,
        installment_id: str,
        attempt: int,
        *,
        worker: str,
        lease_until: datetime,
        now: datetime,
    ) -> None:
        """Claim again the attempt a breach gave back (pending or failed, `attempt` one
        past its attempts) whose charge was made and is still unsettled (processing, or
        its outcome unknown): its worker was paused past its lease, then charged, and
        may have died since. Held as a claim that ran out: the scheduler takes it over
        once `lease_until` passes, makes no new charge on a plan that no longer charges,
        and records that payment once it is settled (by its worker, or the reconciler)."""
        inst = self.installment(installment_id)
        given_back = (InstallmentStatus.PENDING, InstallmentStatus.FAILED)
        if inst.status not in given_back or attempt != inst.attempts + 1:
            raise InvalidTransition(
                f"attempt {attempt} of installment {inst.sequence} was not given back"
            )
        inst._move(InstallmentStatus.PROCESSING)
        inst.attempts = attempt
        inst.claimed_by, inst.lease_until = worker, lease_until
        self.updated_at = now

    def record(
        self,
        installment_id: str,
        attempt: int,
        result: ChargeResult,
        now: datetime,
        *,
        cancelling: bool = False,
    ) -> bool:
        """Apply what attempt `attempt` came to. False when it no longer applies (another
        worker recorded it already, or a later attempt started): recording is idempotent.
        `cancelling`: the plan is cancelled in the same step (a payment the cancel found
        completed), so a breach it heals is not announced as reinstated."""
        inst = self.installment(installment_id)
        if result.outcome is ChargeOutcome.UNRESOLVED:
            return False
        if self._charged_after_withdrawal(inst, attempt, result):
            if inst.status is not InstallmentStatus.CANCELLED:
                inst._move(InstallmentStatus.PROCESSING)  # due again: its attempt resumed
            inst.attempts = attempt
        elif inst.attempts != attempt or inst.status is not InstallmentStatus.PROCESSING:
            return False
        if result.outcome is ChargeOutcome.WITHDRAWN:
            self._withdraw(inst, now)
            return True
        self._add_charge(
            inst,
            InstallmentCharge(
                attempt,
                inst.attempt_kind,
                result.payment_id,
                result.outcome,
                result.error_code,
                result.message,
                now,
            ),
        )
        inst.payment_id = result.payment_id
        # The processor's id for that payment: none when it reached no processor.
        inst.processor_payment_id = result.processor_payment_id
        inst.claimed_by, inst.lease_until = "", None
        if result.outcome is ChargeOutcome.PAID:
            inst._move(InstallmentStatus.PAID)
            inst.paid_at, inst.next_attempt_at = now, None
            self._raise(
                InstallmentPaid(
                    self.id,
                    self.order_id,
                    inst.id,
                    inst.sequence,
                    inst.amount_minor,
                    self.currency.code,
                    attempt,
                    result.payment_id,
                )
            )
        elif self.status is PlanStatus.CANCELLED:
            # Nothing more is charged: no pause, no ladder, no retry announced.
            if inst.status is not InstallmentStatus.CANCELLED:  # else a withdrawn attempt's
                inst._move(InstallmentStatus.CANCELLED)
            inst.last_error_code, inst.last_error = result.error_code, result.message
            inst.next_attempt_at = None
        elif (pause := self._outage_pause(inst, result, now)) is not None:
            inst._move(InstallmentStatus.PENDING)
            inst.last_error_code, inst.last_error = result.error_code, result.message
            inst.next_attempt_at = now + pause
        else:
            self._failed(inst, result, now)
        self.updated_at = now
        self._settle(inst, announce_reinstated=not cancelling)
        return True

    @staticmethod
    def _add_charge(inst: Installment, charge: InstallmentCharge) -> None:
        """Add the charge to the installment's history; an outage's pause right after
        another is added to that one's run (its count, last attempt and time), so that
        an outage of any length is one charge, one stored row, for every read of the plan."""
        last = inst.charges[-1] if inst.charges else None
        if last is None or not (_outage_pause_charge(charge) and _outage_pause_charge(last)):
            inst.charges.append(charge)
            return
        charge.times = last.times + 1
        charge.first_at = last.first_at or last.at
        if inst.stored_charges == len(inst.charges):
            # The run's row is stored: updated (found by its attempt) when saved.
            inst.folded_attempt = last.attempt
            inst.stored_charges -= 1
        inst.charges[-1] = charge

    def _charged_after_withdrawal(
        self, inst: Installment, attempt: int, result: ChargeResult
    ) -> bool:
        """A charge made for an attempt given up as never started (its worker was paused
        past its lease just as it started the charge) that took money, or may still take
        it (it waits for the customer): it is recorded, although the installment was
        cancelled meanwhile, or is due again with that attempt number given back (a
        breach withdrew it: the plan may never heal). Money taken is never left
        unrecorded, and a payment left waiting must be in the history for a cancel or a
        retry to cancel it at the processor. On a cancelled installment a payment that
        failed is recorded too (no event, nothing more charged): the history shows every
        charge a processor saw."""
        if attempt <= 0 or any(c.attempt == attempt for c in inst.charges):
            return False
        if inst.status is InstallmentStatus.CANCELLED:
            # Withdrawn on a cancelled plan (attempt kept), or given back on a breach
            # and cancelled since.
            made = result.outcome is ChargeOutcome.PAID or (
                result.outcome is ChargeOutcome.FAILED and bool(result.payment_id)
            )
            return made and attempt in (inst.attempts, inst.attempts + 1)
        if not (result.outcome is ChargeOutcome.PAID or waits_for_customer(result)):
            return False
        given_back = (InstallmentStatus.PENDING, InstallmentStatus.FAILED)
        return inst.status in given_back and attempt == inst.attempts + 1

    def _withdraw(self, inst: Installment, now: datetime) -> None:
        """Give up a claim whose charge never started, because the plan stopped charging.
        On a cancelled plan the installment is cancelled (its attempt number kept, so a
        charge that still went through can be recorded). Otherwise (a breach) it is due
        again as before its claim and the attempt number is given back: if the breach
        heals, the next claim makes that attempt (or finds a charge made under it)."""
        if self.status is PlanStatus.CANCELLED:
            inst._move(InstallmentStatus.CANCELLED)
            inst.next_attempt_at = None
        else:
            failed_before = inst.first_failed_at is not None
            inst._move(InstallmentStatus.FAILED if failed_before else InstallmentStatus.PENDING)
            inst.attempts -= 1
        inst.claimed_by, inst.lease_until = "", None
        self.updated_at = now

    def _outage_pause(
        self, inst: Installment, result: ChargeResult, now: datetime
    ) -> timedelta | None:
        """How long a scheduled charge that no processor could take waits before the
        next try; None when it was not that, or the outage has outlasted the first
        dunning step (then it goes on the ladder like any other failure)."""
        code = ErrorCode.NO_PROCESSOR_AVAILABLE.value
        if result.error_code != code or inst.attempt_kind is not AttemptKind.SCHEDULED:
            return None
        # The charges of this outage: the last ones, all refused for want of a processor.
        run = list(itertools.takewhile(lambda c: c.error_code == code, reversed(inst.charges)))
        first_step = self.ladder[0] if self.ladder else timedelta(days=DEFAULT_DUNNING_DAYS[0])
        if now - (run[-1].first_at or run[-1].at) >= first_step:
            return None
        tries = sum(c.times for c in run)
        return min(OUTAGE_PAUSE_MAX, OUTAGE_PAUSE_FIRST * (1 << min(tries - 1, 10)))

    def _failed(self, inst: Installment, result: ChargeResult, now: datetime) -> None:
        inst.last_error_code, inst.last_error = result.error_code, result.message
        if inst.first_failed_at is None:
            inst.first_failed_at = now
        next_at: datetime | None = None
        if result.retry_later:
            if inst.attempt_kind is AttemptKind.MANUAL:
                # A manual retry does not use up a step: the scheduled one still stands.
                next_at = inst.next_attempt_at
            elif inst.dunning_step < len(self.ladder):
                next_at = max(now, inst.first_failed_at + self.ladder[inst.dunning_step])
                inst.dunning_step += 1
        if next_at is not None:
            inst._move(InstallmentStatus.FAILED)
            inst.next_attempt_at = next_at
            self._raise(
                InstallmentFailed(
                    self.id,
                    self.order_id,
                    inst.id,
                    inst.sequence,
                    inst.attempts,
                    result.error_code,
                    result.message,
                    next_at.isoformat(),
                    result.payment_id,
                )
            )
            return
        inst._move(InstallmentStatus.FAILED_FINAL)
        inst.next_attempt_at = None
        self._raise(
            InstallmentFailedFinal(
                self.id,
                self.order_id,
                inst.id,
                inst.sequence,
                inst.attempts,
                result.error_code,
                result.message,
                result.payment_id,
            )
        )

    def _settle(self, changed: Installment, *, announce_reinstated: bool = True) -> None:
        """Derive the plan's status from its installments; announce a change once."""
        if self.status is PlanStatus.CANCELLED:
            return
        statuses = [i.status for i in self.installments]
        if all(s is InstallmentStatus.PAID for s in statuses):
            target = PlanStatus.COMPLETED
        elif InstallmentStatus.FAILED_FINAL in statuses:
            target = PlanStatus.BREACH
        else:
            target = PlanStatus.ACTIVE
        if target is self.status:
            return
        if target not in PLAN_TRANSITIONS[self.status]:
            raise InvalidTransition(f"plan cannot go from {self.status.value} to {target.value}")
        before, self.status = self.status, target
        self.status_changed = True
        if target is PlanStatus.COMPLETED:
            self._raise(PlanCompleted(self.id, self.order_id, self.total_minor, self.currency.code))
        elif target is PlanStatus.BREACH:
            self._raise(PlanBreached(self.id, self.order_id, changed.id, changed.last_error_code))
        elif before is PlanStatus.BREACH and announce_reinstated:
            self._raise(PlanReinstated(self.id, self.order_id, changed.id))

    def check_cancellable(self) -> None:
        if PlanStatus.CANCELLED not in PLAN_TRANSITIONS[self.status]:
            raise InvalidTransition(f"a {self.status.value} plan cannot be cancelled")

    def cancel(self, reason: str, now: datetime) -> None:
        """Nothing more is charged. An installment claimed right now stays `processing`:
        its charge may already have started, and only its worker can tell. If it has,
        it finishes and is recorded as it ends (a payment is announced, a failure is
        not retried); if not, it is withdrawn (`cancelled`) and never charged."""
        self.check_cancellable()
        for inst in self.installments:
            if inst.status in (InstallmentStatus.PENDING, InstallmentStatus.FAILED):
                inst._move(InstallmentStatus.CANCELLED)
                inst.next_attempt_at = None
        self.status = PlanStatus.CANCELLED
        self.status_changed = True
        self.cancel_reason = reason
        self.updated_at = now
        self._raise(PlanCancelled(self.id, self.order_id, reason))


def plan_fingerprint(order_id: str, total: Money, token: str, customer_id: str) -> str:
    """What defines a plan request (not its request id): a reused key must match it."""
    body = "\x00".join([order_id, str(total.amount_minor), total.currency.code, token, customer_id])
    return hashlib.sha256(body.encode()).hexdigest()
