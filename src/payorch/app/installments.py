"""Use cases of installment plans: create (first charge at once), read, list, cancel,
retry; and the charger the scheduler shares, which turns one attempt into one payment.

Every charge goes through PaymentService.create with a request id derived from the
installment and its attempt number, so the (merchant, request_id) constraint makes a
second charge of the same attempt impossible: a worker resumed after its lease ran
out replays the stored payment (or waits for it) instead of charging again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from payorch.app.installment_ports import (
    Cursor,
    DuplicatePlan,
    DuplicateRetryRequest,
    InstallmentPolicies,
    InstallmentUnitOfWork,
    InstallmentUnitOfWorkFactory,
    RetryRequest,
)
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import (
    ClaimLost,
    IdempotencyConflict,
    InvalidState,
    PaymentChanging,
    PaymentService,
    ReleaseUndecided,
    RequestInProgress,
)
from payorch.app.plan_builder import PlanRejected
from payorch.app.ports import ChargeClaim, Clock, ConcurrentUpdate
from payorch.domain.card_data import clip, contains_card_number
from payorch.domain.installments import (
    ChargeOutcome,
    ChargeResult,
    Installment,
    InstallmentPlan,
    InstallmentPolicy,
    InstallmentStatus,
    InvalidTransition,
    PlanStatus,
    RetryLimitReached,
    charge_request_id,
    installment_id_for,
    judge_charge,
    plan_fingerprint,
    plan_id_for,
    split_total,
    waits_for_customer,
)
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.money import Money
from payorch.domain.payment import Payment, PaymentStatus
from payorch.domain.request import (
    CoreRequest,
    RawPaymentRequest,
    card_method_issues,
    customer_id_issues,
    parse_payment_request,
)
from payorch.domain.results import ErrorCode

log = logging.getLogger("payorch.installments")

MAX_ORDER_ID_LEN = 128
MAX_REASON_LEN = 500
_ORDER_ID_RE = re.compile(r"^[\x21-\x7e]+\Z")
# The first charge carries the plan's total (minor units): a create retried under its
# request id for another total is then another payment, refused as IdempotencyConflict,
# also when the totals share their first part (300.00 and 300.01 in 3: 100.00 each).
PLAN_TOTAL_KEY = "installment_plan_total"
# Why a payment still waiting for the customer is cancelled.
RETRIED = "installment retried: a new attempt replaces this payment"
PLAN_CANCELLED = "installment plan cancelled"
# Attempts to store a result when others keep changing the plan.
SAVE_TRIES = 5
_REFUNDED = frozenset({PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED})
# A payment in these states takes no money, now or later.
_NOTHING_TAKEN = frozenset({PaymentStatus.CANCELLED, PaymentStatus.FAILED})
# An installment whose last attempt number a breach may have given back.
_GIVEN_BACK = (InstallmentStatus.PENDING, InstallmentStatus.FAILED)


class PlanNotFound(LookupError):
    pass


class PlanConflict(ValueError):
    """The request id was used before for a different plan."""


_REUSED = "request_id was already used for a plan with a different order, total or method"


class RetryRequestReused(ValueError):
    """The request id was used before for a retry of another installment."""

    def __init__(self, request_id: str, installment_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used to retry installment {installment_id}"
        )


class FirstChargeRefunded(RuntimeError):
    """A retried create found its first charge refunded (fully or partly) meanwhile: no
    plan is made on money given back. A new plan takes a new request id."""

    def __init__(self, request_id: str, payment_id: str, status: PaymentStatus) -> None:
        self.payment_id = payment_id
        how = "fully" if status is PaymentStatus.REFUNDED else "partly"
        super().__init__(
            f"the first charge {payment_id} of request_id {request_id!r} was {how} refunded "
            "before its plan was made: no plan is made on it; use a new request_id"
        )


class InstallmentRejected(PlanRejected):
    """The merchant's config refuses a later installment of the plan (the last, which
    carries the remainder of the split): no plan is made and nothing is charged."""

    def __init__(self, sequence: int, refused: PlanRejected) -> None:
        self.sequence = sequence
        super().__init__(refused.problems, refused.contract_id)


class EarlierPaymentOpen(RuntimeError):
    """A payment of an earlier attempt still waits for the customer and the processor did
    not say whether it was cancelled: no new charge is made, and nothing is changed."""

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        super().__init__(
            f"payment {payment_id} of an earlier attempt still waits for the customer and "
            "could not be cancelled at the processor: nothing was charged; retry shortly"
        )


# The later installments are charged off-session with the first charge's payment method,
# which a processor lets be used again only once it is saved on a customer (Stripe:
# a PaymentMethod used without one is used up).
CUSTOMER_REQUIRED = (
    "is required: the first charge saves the card on this customer, and the later "
    "installments are charged off-session to the card saved on it"
)


class InvalidPlanRequest(ValueError):
    """Every (field, message) wrong with the request, not only the first."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))


def plan_request_problems(order_id: str, token: str, customer_id: str) -> list[tuple[str, str]]:
    """What is wrong with a plan request's order id, payment method and customer id (its
    total and keys are typed before they reach here), every one of them."""
    problems = _order_id_problems(order_id.strip(), "is required")
    problems += [(i.field, i.message) for i in card_method_issues(token, customer_id)]
    if not customer_id.strip():
        problems.append(("customer_id", CUSTOMER_REQUIRED))
    return problems


def plan_filter_problems(order_id: str, customer_id: str) -> list[tuple[str, str]]:
    """What is wrong with a listing's order id and customer id filters, each judged,
    when given, as a plan request's value is before it is stored (surrounding spaces
    dropped): a filter no plan can match is refused, never widened to every plan
    (blank) or cut to one that exists."""
    problems = []
    if order_id:
        problems += _order_id_problems(order_id.strip(), "is blank: leave it empty for any")
    if customer_id:
        if customer_id.strip():
            problems += [(i.field, i.message) for i in customer_id_issues(customer_id)]
        else:
            problems.append(("customer_id", "is blank: leave it empty for any"))
    return problems


def _order_id_problems(order_id: str, if_empty: str) -> list[tuple[str, str]]:
    rule = f"1-{MAX_ORDER_ID_LEN} printable ASCII characters"
    if not order_id:
        return [("order_id", f"{if_empty}: {rule}")]
    if len(order_id) > MAX_ORDER_ID_LEN:
        return [("order_id", f"is too long: {rule}")]
    if not _ORDER_ID_RE.match(order_id):
        return [("order_id", f"must be {rule}")]
    if contains_card_number(order_id):
        return [("order_id", "looks like a card number")]
    return []


class DefaultInstallmentPolicies:
    """The documented defaults for every merchant, until merchant config provides one."""

    def __init__(self, policy: InstallmentPolicy | None = None) -> None:
        self._policy = policy or InstallmentPolicy()

    async def for_merchant(self, merchant_id: str) -> InstallmentPolicy:
        return self._policy

    async def at_version(self, merchant_id: str, config_version: int) -> InstallmentPolicy:
        return self._policy


class ConfiguredInstallmentPolicies:
    """Each merchant's installment policy from its merchant config (defaults without one)."""

    def __init__(self, configs: MerchantConfigs) -> None:
        self._configs = configs

    async def for_merchant(self, merchant_id: str) -> InstallmentPolicy:
        config, _ = await self._configs.get(merchant_id)
        return _plan_policy(config)

    async def at_version(self, merchant_id: str, config_version: int) -> InstallmentPolicy:
        return _plan_policy(await self._configs.get_version(merchant_id, config_version))


def _plan_policy(config: MerchantConfig) -> InstallmentPolicy:
    p = config.installment_policy
    return InstallmentPolicy(
        min_total_minor=p.min_total_minor,
        count=p.count,
        interval_days=p.interval_days,
        dunning_days=tuple(p.dunning_days),
    )


@dataclass(frozen=True, slots=True)
class CreatePlan:
    merchant_id: str
    request_id: str
    order_id: str
    total: Money
    token: str
    customer_id: str = ""


@dataclass(frozen=True, slots=True)
class PlanCreation:
    """A new (or replayed) plan, or None when the first charge did not go through."""

    plan: InstallmentPlan | None
    first_payment_id: str
    first_payment_status: PaymentStatus
    error_code: str = ""
    error_message: str = ""
    replayed: bool = False


def _charge_request(
    plan_merchant: str,
    order_id: str,
    plan_id: str,
    installment_id: str,
    attempt: int,
    amount: Money,
    token: str,
    customer_id: str,
    *,
    off_session: bool,
    plan_total: Money | None = None,
    save_for_off_session: bool = False,
) -> CoreRequest:
    metadata = {
        "order_id": order_id,
        "installment_plan_id": plan_id,
        "installment_id": installment_id,
    }
    if plan_total is not None:
        metadata[PLAN_TOTAL_KEY] = str(plan_total.amount_minor)
    return parse_payment_request(
        RawPaymentRequest(
            merchant_id=plan_merchant,
            request_id=charge_request_id(installment_id, attempt),
            amount_minor=amount.amount_minor,
            currency=amount.currency.code,
            payment_method=token,
            customer_id=customer_id,
            metadata=metadata,
            off_session=off_session,
            save_for_off_session=save_for_off_session,
        )
    )


class InstallmentCharger:
    """Charges one claimed attempt and records what it came to."""

    def __init__(
        self,
        uow: InstallmentUnitOfWorkFactory,
        payments: PaymentService,
        clock: Clock,
        *,
        unresolved_recheck_s: float = 300.0,
        lease_s: float = 120.0,
    ) -> None:
        self._uow = uow
        self._payments = payments
        self._clock = clock
        self._recheck = timedelta(seconds=unresolved_recheck_s)
        self._lease = timedelta(seconds=lease_s)

    async def charge(
        self, plan: InstallmentPlan, installment_id: str, attempt: int
    ) -> tuple[ChargeResult, InstallmentPlan]:
        """Charge attempt `attempt`; returns what it came to and the plan as now stored."""
        result = await self.pay(plan, installment_id, attempt)
        if result.outcome is ChargeOutcome.UNRESOLVED:
            return result, plan
        return result, await self.record(plan, installment_id, attempt, result)

    async def pay(self, plan: InstallmentPlan, installment_id: str, attempt: int) -> ChargeResult:
        """The payment of attempt `attempt`, not yet recorded on the plan (unless it came
        to nothing known: then the installment is held for a later look, same attempt).

        `plan` must be as stored after the claim: a plan that no longer charges
        (cancelled, or in breach) makes no new charge; a charge this attempt already
        started is looked up and judged, and one never started is WITHDRAWN.

        A claim whose lease ran out (its worker was paused) is looked at as stored
        first: it may have been taken over, withdrawn or given back, and its plan
        cancelled, meanwhile (_still_claimed). A look is not enough, its worker may
        pause right after it: the payment is inserted only while the claim admits it,
        checked by the insert itself (ChargeClaim). Refused, nothing is sent."""
        inst = plan.installment(installment_id)
        claim = None
        if plan.may_charge(installment_id):
            claim = await self._still_claimed(plan, installment_id, attempt)
        if claim is not None:
            result = await self._pay(plan, inst, claim)
        else:
            result = await self._started_only(plan, inst, attempt)
        if result.outcome is ChargeOutcome.UNRESOLVED:
            # Unknown or still running elsewhere: look again later, under the same attempt.
            await self._hold(inst.id, attempt)
        return result

    async def _still_claimed(
        self, plan: InstallmentPlan, installment_id: str, attempt: int
    ) -> ChargeClaim | None:
        """The claim under which this attempt may still make its charge (its lease as
        stored), or None when it may not. Its own claim while the lease holds: nobody
        else takes a claim over before, and a cancel then leaves a claimed installment
        to its worker (whether the charge is still admitted when its payment is
        inserted, the insert decides: InstallmentPlan.admits_charge). Past the lease
        the installment is read as stored: on a cancelled plan, or once the attempt was
        recorded or a later one started, no new charge is made (the one this attempt
        started, if any, is looked up).
        An attempt a breach gave back (the claim withdrawn) is claimed again, stored
        before anything is sent: a cancel from then on leaves it to this claim, and
        whoever takes the claim over if this worker dies mid-charge records the
        payment once it is settled (hold_given_back)."""
        inst = plan.installment(installment_id)
        now = self._clock.now()
        if inst.lease_until is None or now < inst.lease_until:
            return ChargeClaim(plan.id, installment_id, attempt, inst.lease_until)
        for _ in range(SAVE_TRIES):
            stored = await self._read(plan.id)
            now = self._clock.now()
            held = stored.installment(installment_id)
            if stored.status is PlanStatus.CANCELLED:
                return None
            if held.status is InstallmentStatus.PROCESSING:
                # Still this attempt's claim (this worker's, or taken over: the
                # payments gate makes one payment of one attempt), or a later one's.
                if held.attempts != attempt:
                    return None
                return ChargeClaim(plan.id, installment_id, attempt, held.lease_until)
            if held.status not in _GIVEN_BACK or held.attempts + 1 != attempt:
                return None
            # The claim carries the lease stored: the gate insert admits it only so.
            lease_until = now + self._lease
            stored.hold_given_back(
                installment_id, attempt, worker=inst.claimed_by, lease_until=lease_until, now=now
            )
            try:
                async with self._uow() as uow:
                    await uow.plans.save(stored)
                    await uow.commit()
            except ConcurrentUpdate:
                continue
            return ChargeClaim(plan.id, installment_id, attempt, lease_until)
        raise ConcurrentUpdate(plan.id)

    async def _hold(self, installment_id: str, attempt: int) -> None:
        """Leave the claim for a later look (the scheduler takes it up again)."""
        async with self._uow() as uow:
            await uow.plans.hold(installment_id, attempt, self._clock.now() + self._recheck)
            await uow.commit()

    async def _pay(
        self, plan: InstallmentPlan, inst: Installment, claim: ChargeClaim
    ) -> ChargeResult:
        try:
            request = self._request(plan, inst, claim.attempt)
        except ValueError as exc:  # RequestRejected: nothing a retry could fix
            return _rejected(ErrorCode.INVALID_REQUEST, exc)
        try:
            # The plan's customer was claimed for its merchant when the plan was made.
            created = await self._payments.create(
                request, deadline_s=None, own_customers=True, only_if=claim
            )
        except ClaimLost:
            # The plan was cancelled once the lease had run out (the worker paused after
            # its look), or the claim was taken over: nothing was sent.
            return await self._started_only(plan, inst, claim.attempt)
        except RequestInProgress:
            return ChargeResult(ChargeOutcome.UNRESOLVED, "")
        except PlanRejected as exc:
            # The merchant's config no longer covers this charge (a currency dropped, a
            # limit below the amount): no retry can succeed. PaymentService replays a
            # payment this attempt made before; the port does not promise it, so look.
            started = await self._started_payment(plan, request)
            if started is not None:
                return judge_charge(started)
            return _rejected(ErrorCode.INVALID_REQUEST, exc)
        except IdempotencyConflict as exc:
            # The request id holds a different payment: not this attempt's charge.
            return _rejected(ErrorCode.IDEMPOTENCY_CONFLICT, exc)
        return judge_charge(created.payment)

    async def _started_only(
        self, plan: InstallmentPlan, inst: Installment, attempt: int
    ) -> ChargeResult:
        """What this attempt came to when the plan charges no more: the charge it already
        started (replayed, never made anew), or WITHDRAWN when there is none."""
        try:
            request = self._request(plan, inst, attempt)
        except ValueError:
            return ChargeResult(ChargeOutcome.WITHDRAWN, "")  # no charge could be made of it
        started = await self._started_payment(plan, request)
        if started is None:
            log.info("installment %s not charged: the plan is %s", inst.id, plan.status.value)
            return ChargeResult(ChargeOutcome.WITHDRAWN, "")
        return judge_charge(started)

    async def release_waiting(
        self, plan: InstallmentPlan, installment_id: str, reason: str
    ) -> ChargeResult | None:
        """Cancel at the processor every payment of the installment's attempts that still
        waits for the customer, so that none takes money once the installment goes on
        without it. A cancel is atomic there: the payment is cancelled, or found paid
        (the customer completed it first); what such a payment came to (PAID) is
        returned, to be recorded as the installment's payment instead of a new charge.
        Raises EarlierPaymentOpen when the processor does not say which."""
        waiting = plan.installment(installment_id).awaiting_customer
        return await self._release(plan, installment_id, waiting, reason)

    async def given_back_charge(
        self, plan: InstallmentPlan, installment_id: str, reason: str
    ) -> ChargeResult | None:
        """The charge of the attempt number a breach gave back (its worker was paused
        past its lease, then charged), found by its request id when its worker never
        recorded it (stopped after charging). One waiting for the customer is cancelled
        at the processor first. What it came to, to be recorded: PAID, or FAILED (a
        decline, or the cancelled wait: the history shows every charge a processor
        saw); UNRESOLVED when it is not settled yet (still processing, or its outcome
        unknown), to be held for a later look: its worker may have died, and nothing
        else would record it; None when there is none."""
        inst = plan.installment(installment_id)
        if inst.status not in _GIVEN_BACK:
            return None
        try:
            request = self._request(plan, inst, inst.attempts + 1)
        except ValueError:
            return None  # no charge could be made of it
        payment = await self._started_payment(plan, request)
        if payment is None:
            return None
        result = judge_charge(payment)
        if waits_for_customer(result):
            return await self._release(plan, installment_id, [payment.id], reason) or result
        return result

    async def started_since(
        self, uow: InstallmentUnitOfWork, plan: InstallmentPlan, installment_ids: Sequence[str]
    ) -> bool:
        """Whether a charge of the given-back attempt of any of these installments (which
        given_back_charge found none of) is stored now, as `uow` reads it."""
        for installment_id in installment_ids:
            inst = plan.installment(installment_id)
            if await self._stored_charge(uow, plan, installment_id, inst.attempts + 1):
                return True
        return False

    async def _stored_charge(
        self, uow: InstallmentUnitOfWork, plan: InstallmentPlan, installment_id: str, attempt: int
    ) -> Payment | None:
        """The payment attempt `attempt` of the installment made, if any (what create
        would replay), as `uow` reads it."""
        try:
            request = self._request(plan, plan.installment(installment_id), attempt)
        except ValueError:
            return None  # no charge could be made of it
        return await _made(uow, plan, request)

    async def completed_waiting(
        self, plan: InstallmentPlan, installment_id: str
    ) -> ChargeResult | None:
        """A payment of the installment's attempts that waited for the customer and is
        stored as paid now (they completed it), without cancelling any at the processor."""
        for payment_id in plan.installment(installment_id).awaiting_customer:
            result = judge_charge(await self._payments.get(payment_id, plan.merchant_id))
            if result.outcome is ChargeOutcome.PAID:
                return result
        return None

    async def _release(
        self, plan: InstallmentPlan, installment_id: str, waiting: Sequence[str], reason: str
    ) -> ChargeResult | None:
        taken: ChargeResult | None = None
        for payment_id in waiting:
            try:
                payment = await self._payments.cancel(payment_id, plan.merchant_id, reason)
            except (InvalidState, ReleaseUndecided, PaymentChanging):
                # Paid, not settled yet, or undecided at the processor: as it is stored.
                payment = await self._payments.get(payment_id, plan.merchant_id)
            if payment.status in _NOTHING_TAKEN:
                continue
            result = judge_charge(payment)
            if result.outcome is not ChargeOutcome.PAID:
                raise EarlierPaymentOpen(payment_id)
            if taken is not None:
                log.warning(
                    "installment %s: payments %s and %s both went through; %s is recorded, "
                    "refund the other",
                    installment_id,
                    taken.payment_id,
                    payment_id,
                    taken.payment_id,
                )
            taken = taken or result
        return taken

    async def _started_payment(self, plan: InstallmentPlan, request: CoreRequest) -> Payment | None:
        """The payment this attempt's request made, if any (what create would replay)."""
        async with self._uow() as uow:
            return await _made(uow, plan, request)

    @staticmethod
    def _request(plan: InstallmentPlan, inst: Installment, attempt: int) -> CoreRequest:
        return _charge_request(
            plan.merchant_id,
            plan.order_id,
            plan.id,
            inst.id,
            attempt,
            Money(inst.amount_minor, plan.currency),
            plan.token,
            plan.customer_id,
            off_session=True,
        )

    async def record(
        self, plan: InstallmentPlan, installment_id: str, attempt: int, result: ChargeResult
    ) -> InstallmentPlan:
        """Apply the result to the plan; on a concurrent change read it again and retry.
        Applying twice is harmless: the second finds the attempt recorded already.

        WITHDRAWN (no charge started) is checked again once the plan's row is locked
        (_check_withdrawn): a charge stored since the look that found none is judged
        instead, and held for a later look while it is not settled."""
        for _ in range(SAVE_TRIES):
            settled = await self._released_on_cancel(plan, installment_id, attempt, result)
            if settled is None:
                return await self._read(plan.id)
            if not plan.record(installment_id, attempt, settled, self._clock.now()):
                return plan
            try:
                async with self._uow() as uow:
                    await uow.plans.save(plan)
                    await self._check_withdrawn(uow, [(plan, installment_id, attempt, settled)])
                    await uow.commit()
                return plan
            except _ChargeStarted as started:
                plan = await self._read(plan.id)
                result = judge_charge(started.payment)
                if result.outcome is ChargeOutcome.UNRESOLVED:
                    await self._hold(installment_id, attempt)
                    return await self._read(plan.id)
            except ConcurrentUpdate:
                plan = await self._read(plan.id)
        raise ConcurrentUpdate(plan.id)

    async def _check_withdrawn(
        self,
        uow: InstallmentUnitOfWork,
        recorded: Sequence[tuple[InstallmentPlan, str, int, ChargeResult]],
    ) -> None:
        """Raise _ChargeStarted if an attempt about to be recorded WITHDRAWN has a
        payment stored now, as `uow` reads it once the save locked the plans' rows.

        The look that found none may be older than a paused worker's gate insert,
        admitted under the lease it knew before a takeover (on PostgreSQL the insert's
        snapshot predates the takeover's commit, and it locks only the plan's row, FOR
        SHARE): the save waits for that insert's transaction, and this reads its
        payment. On SQLite the single writer orders them: the look finds it."""
        for plan, installment_id, attempt, result in recorded:
            if result.outcome is not ChargeOutcome.WITHDRAWN:
                continue
            payment = await self._stored_charge(uow, plan, installment_id, attempt)
            if payment is not None:
                raise _ChargeStarted(plan.id, payment)

    async def _read(self, plan_id: str) -> InstallmentPlan:
        async with self._uow() as uow:
            fresh = await uow.plans.get(plan_id, None)
        if fresh is None:  # pragma: no cover - plans are never deleted
            raise PlanNotFound(plan_id)
        return fresh

    async def _released_on_cancel(
        self, plan: InstallmentPlan, installment_id: str, attempt: int, result: ChargeResult
    ) -> ChargeResult | None:
        """What to record of an attempt on a cancelled plan whose payment waits for the
        customer (the charge was in flight at the cancel): that payment is cancelled at
        the processor first, so the customer cannot complete it later; one they
        completed first is recorded paid instead. None when the processor does not say
        which: the attempt is not recorded, its claim is held, and the scheduler's next
        look (which makes no new charge on a cancelled plan) cancels it again."""
        if (
            plan.status is not PlanStatus.CANCELLED
            or result.error_code != ErrorCode.AUTHENTICATION_REQUIRED.value
        ):
            return result  # the common case, with nothing to look up
        inst = plan.installment(installment_id)
        # This attempt is the installment's last, or one given back on a breach (its
        # worker paused past its lease) before the plan was cancelled.
        ours = inst.attempts == attempt or (
            inst.status is InstallmentStatus.CANCELLED and inst.attempts + 1 == attempt
        )
        if not ours or any(c.attempt == attempt for c in inst.charges):
            return result
        waiting = [*inst.awaiting_customer, result.payment_id]
        try:
            taken = await self._release(plan, installment_id, waiting, PLAN_CANCELLED)
        except EarlierPaymentOpen as exc:
            log.warning(
                "installment %s: its plan was cancelled and payment %s could not be cancelled; "
                "looked at again later",
                installment_id,
                exc.payment_id,
            )
            await self._hold(installment_id, attempt)
            return None
        return taken or result

    async def record_many(self, charges: Sequence[RecordCharge]) -> list[InstallmentPlan]:
        """record() for the charges of several plans (one each) in one transaction; if
        one plan changed meanwhile (ConcurrentUpdate: its version moved on, or its
        attempt was recorded already), each is read again and recorded alone. Any
        other error is raised: it is no conflict a second look at the plans resolves,
        and recording one by one would hide it. Returns the plans as now stored, in
        order."""
        plans = [c.plan for c in charges]
        if len({p.id for p in plans}) != len(plans):
            raise ValueError("record_many takes one charge per plan")
        results = [
            await self._released_on_cancel(c.plan, c.installment_id, c.attempt, c.result)
            for c in charges
        ]
        now = self._clock.now()
        changed = [
            r is not None and c.plan.record(c.installment_id, c.attempt, r, now)
            for c, r in zip(charges, results, strict=True)
        ]
        try:
            async with self._uow() as uow:
                await uow.plans.save_many([p for p, ch in zip(plans, changed, strict=True) if ch])
                await self._check_withdrawn(
                    uow,
                    [
                        (c.plan, c.installment_id, c.attempt, r)
                        for c, r, ch in zip(charges, results, changed, strict=True)
                        if ch and r is not None
                    ],
                )
                await uow.commit()
            # A held claim's row changed under its plan: as stored now.
            return [
                p if r is not None else await self._read(p.id)
                for p, r in zip(plans, results, strict=True)
            ]
        except ConcurrentUpdate:
            # The plans in memory hold unsaved changes now: start again from the stored ones.
            log.info("recording %d charges together failed; one by one", len(charges))
        return [
            await self.record(await self._read(c.plan.id), c.installment_id, c.attempt, c.result)
            for c in charges
        ]


class _ChargeStarted(ConcurrentUpdate):
    """An attempt about to be recorded WITHDRAWN has a payment stored since it was
    looked for: it started after all, and is judged instead. The save is rolled back."""

    def __init__(self, plan_id: str, payment: Payment) -> None:
        super().__init__(plan_id)
        self.payment = payment


async def _made(
    uow: InstallmentUnitOfWork, plan: InstallmentPlan, request: CoreRequest
) -> Payment | None:
    """The payment `request` made, if any, as `uow` reads it: the one under its request
    id, if it is that request's (another is no charge of it)."""
    payment = await uow.payments.get_by_request(plan.merchant_id, request.request_id)
    if payment is None or payment.fingerprint != request.fingerprint():
        return None
    return payment


def _rejected(code: ErrorCode, exc: Exception) -> ChargeResult:
    """A charge refused before any processor saw it, for a reason no retry can change."""
    return ChargeResult(ChargeOutcome.FAILED, "", error_code=code.value, message=str(exc)[:500])


@dataclass(frozen=True, slots=True)
class ManualRetry:
    """What a merchant's retry came to: the plan as stored after it, the attempt it made
    and the payment that attempt came to ("" when it made none)."""

    plan: InstallmentPlan
    attempt: int
    payment_id: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RecordCharge:
    """What one attempt came to, to be recorded on its plan."""

    plan: InstallmentPlan
    installment_id: str
    attempt: int
    result: ChargeResult


class InstallmentService:
    def __init__(
        self,
        uow: InstallmentUnitOfWorkFactory,
        payments: PaymentService,
        policies: InstallmentPolicies,
        charger: InstallmentCharger,
        clock: Clock,
        *,
        worker_id: str,
        lease_s: float = 120.0,
    ) -> None:
        self._uow = uow
        self._payments = payments
        self._policies = policies
        self._charger = charger
        self._clock = clock
        self._worker = worker_id
        self._lease = timedelta(seconds=lease_s)

    async def create(self, cmd: CreatePlan, *, deadline_s: float | None) -> PlanCreation:
        """Charge the first installment now (on-session: the customer is at checkout);
        only when it succeeded store the plan and its installments, in one transaction.

        Retrying with the same request id never charges twice: the first charge's
        request id is derived from it (through the plan id)."""
        problems = plan_request_problems(cmd.order_id, cmd.token, cmd.customer_id)
        if problems:
            raise InvalidPlanRequest(problems)
        order_id = cmd.order_id.strip()
        plan_id = plan_id_for(cmd.merchant_id, cmd.request_id)
        first_id = installment_id_for(plan_id, 1)

        def first_charge(amount: Money, *, with_total: bool = True) -> CoreRequest:
            return _charge_request(
                cmd.merchant_id,
                order_id,
                plan_id,
                first_id,
                1,
                amount,
                cmd.token,
                cmd.customer_id,
                off_session=False,
                plan_total=cmd.total if with_total else None,
                # The customer is at checkout: the card is saved on their customer now,
                # so the scheduler can charge it off-session later.
                save_for_off_session=True,
            )

        # The request's own fields first (RequestRejected): a malformed request is that,
        # whatever the policy would say of its total. The real first charge is one part.
        first_charge(cmd.total)
        fingerprint = plan_fingerprint(order_id, cmd.total, cmd.token, cmd.customer_id)
        replay, taken = await self._replay(plan_id, cmd.merchant_id, fingerprint)
        if replay is not None:
            return replay
        if taken is None:
            policy = await self._policies.for_merchant(cmd.merchant_id)
            policy.check_eligible(cmd.total)  # NotEligible
        else:
            # A retry after the process died between the first charge and the plan: the
            # plan is made under the policy that charge was taken under (the same count,
            # so the same first amount), whatever the merchant's config says now. Today's
            # policy could refuse it, or split it otherwise, with the money already taken.
            policy = await self._policies.at_version(cmd.merchant_id, taken.config_version)
        amounts = split_total(cmd.total, policy.count)
        # A first charge made before charges carried the total is asked for as it was
        # made: its retry replays it.
        with_total = taken is None or PLAN_TOTAL_KEY in taken.metadata
        request = first_charge(Money(amounts[0], cmd.total.currency), with_total=with_total)
        if taken is None and amounts[-1] != amounts[0]:
            # The last installment carries the remainder, one unit more than the first,
            # whose charge checks only its own amount: a method's maximum can admit the
            # first and refuse the last. Refused now, before anything is charged, not as
            # a breach when it falls due. The first is asked first, so that a refusal
            # of both names the first, as the charge would.
            await self._payments.check_plan(request)
            await self._check_installment(cmd, order_id, plan_id, len(amounts), amounts[-1])
        try:
            created = await self._payments.create(request, deadline_s=deadline_s)
        except IdempotencyConflict as exc:
            # The first charge of an earlier try with this request id (no plan stored:
            # declined, or its process died) was for another order, total or method.
            raise PlanConflict(_REUSED) from exc
        if created.payment.status in _REFUNDED:
            # Only a replay can find this: a first charge taken before its process died,
            # refunded since. A plan on it would schedule the rest of an order given back.
            raise FirstChargeRefunded(cmd.request_id, created.payment.id, created.payment.status)
        charge = judge_charge(created.payment)
        if charge.outcome is not ChargeOutcome.PAID:
            return PlanCreation(
                None,
                created.payment.id,
                created.payment.status,
                charge.error_code,
                charge.message,
                replayed=created.replayed,
            )
        plan = InstallmentPlan.start(
            merchant_id=cmd.merchant_id,
            request_id=cmd.request_id,
            order_id=order_id,
            fingerprint=fingerprint,
            total=cmd.total,
            token=cmd.token,
            customer_id=cmd.customer_id,
            policy=policy,
            first_payment_id=charge.payment_id,
            first_processor_payment_id=charge.processor_payment_id,
            now=self._clock.now(),
            # Due dates count from checkout, also when this is a retry that came later.
            charged_at=created.payment.created_at,
        )
        try:
            async with self._uow() as uow:
                await uow.plans.add(plan)
                await uow.commit()
        except DuplicatePlan:
            replay, _ = await self._replay(plan_id, cmd.merchant_id, fingerprint)
            if replay is None:  # pragma: no cover - the duplicate was just seen
                raise
            return replay
        return PlanCreation(plan, charge.payment_id, created.payment.status)

    async def _check_installment(
        self, cmd: CreatePlan, order_id: str, plan_id: str, sequence: int, amount_minor: int
    ) -> None:
        """Refuse (InstallmentRejected) an installment the merchant's config would refuse
        when the scheduler charges it, asked as the scheduler will ask."""
        request = _charge_request(
            cmd.merchant_id,
            order_id,
            plan_id,
            installment_id_for(plan_id, sequence),
            1,
            Money(amount_minor, cmd.total.currency),
            cmd.token,
            cmd.customer_id,
            off_session=True,
        )
        try:
            await self._payments.check_plan(request)
        except PlanRejected as exc:
            raise InstallmentRejected(sequence, exc) from exc

    async def _replay(
        self, plan_id: str, merchant_id: str, fingerprint: str
    ) -> tuple[PlanCreation | None, Payment | None]:
        """The stored plan as a replay, if there is one, and the first charge an earlier
        try of this create made (plan stored or not), read together."""
        first_request = charge_request_id(installment_id_for(plan_id, 1), 1)
        async with self._uow() as uow:
            existing = await uow.plans.get(plan_id, merchant_id)
            first = await uow.payments.get_by_request(merchant_id, first_request)
        if existing is None:
            return None, first
        if existing.fingerprint != fingerprint:
            raise PlanConflict(_REUSED)
        # The first charge as it is now: refunded since the plan was made, it says so.
        status = PaymentStatus.SUCCEEDED if first is None else first.status
        replay = PlanCreation(existing, existing.installments[0].payment_id, status, replayed=True)
        return replay, first

    async def get(self, plan_id: str, merchant_id: str | None) -> InstallmentPlan:
        async with self._uow() as uow:
            plan = await uow.plans.get(plan_id, merchant_id)
        if plan is None:
            raise PlanNotFound(plan_id)
        return plan

    async def list(
        self,
        merchant_id: str | None,
        *,
        status: PlanStatus | None,
        page_size: int,
        after: Cursor | None,
        order_id: str = "",
        customer_id: str = "",
    ) -> Sequence[InstallmentPlan]:
        """Newest first; only the plans of `order_id` and of `customer_id` when given
        (plan_filter_problems says whether they can be; their spaces are dropped)."""
        problems = plan_filter_problems(order_id, customer_id)
        if problems:
            raise InvalidPlanRequest(problems)
        async with self._uow() as uow:
            return await uow.plans.list(
                merchant_id,
                status=status,
                limit=page_size,
                after=after,
                order_id=order_id.strip() or None,
                customer_id=customer_id.strip() or None,
            )

    async def cancel(self, plan_id: str, merchant_id: str | None, reason: str) -> InstallmentPlan:
        # Cut before the scan, never through a number: a cut could leave a card number.
        reason = clip(reason.strip(), MAX_REASON_LEN)
        if contains_card_number(reason):
            raise InvalidPlanRequest([("reason", "looks like a card number")])
        for _ in range(SAVE_TRIES):
            async with self._uow() as uow:
                plan = await uow.plans.get(plan_id, merchant_id)
            if plan is None:
                raise PlanNotFound(plan_id)
            plan.check_cancellable()  # InvalidTransition, before the processor is called
            now = self._clock.now()
            # A cancelled plan takes no money later: a payment still waiting for the
            # customer is cancelled first; one they completed is recorded, as a retry would.
            # A given-back charge that took nothing is recorded once the plan is cancelled:
            # in the history, with no retry announced.
            failed_given_back: list[tuple[str, int, ChargeResult]] = []
            # Given back with no charge found: looked at again once the plan is locked.
            unseen: list[str] = []
            for inst in plan.installments:
                given_back = await self._charger.given_back_charge(plan, inst.id, PLAN_CANCELLED)
                if given_back is None and inst.status in _GIVEN_BACK:
                    unseen.append(inst.id)
                if given_back is not None and given_back.outcome is ChargeOutcome.FAILED:
                    failed_given_back.append((inst.id, inst.attempts + 1, given_back))
                elif given_back is not None and given_back.outcome is ChargeOutcome.UNRESOLVED:
                    # Not settled yet, its worker perhaps dead: held, so that the
                    # scheduler records it once the reconciler (or its worker) settles it.
                    plan.hold_given_back(
                        inst.id,
                        inst.attempts + 1,
                        worker=self._worker,
                        lease_until=now + self._lease,
                        now=now,
                    )
                elif given_back is not None:
                    # Recorded as the attempt it was (failed for good, if it waited).
                    plan.record(inst.id, inst.attempts + 1, given_back, now, cancelling=True)
                if inst.status is not InstallmentStatus.FAILED_FINAL:
                    continue  # the only state in which an attempt's payment is left waiting
                taken = await self._charger.release_waiting(plan, inst.id, PLAN_CANCELLED)
                if taken is not None:
                    attempt = plan.start_manual_retry(
                        inst.id, worker=self._worker, lease_until=now, now=now, charging=False
                    )
                    # Cancelled in this step: a breach this heals is not announced as
                    # reinstated (InstallmentPaid, then PlanCancelled).
                    plan.record(inst.id, attempt, taken, now, cancelling=True)
            completed = plan.status is PlanStatus.COMPLETED
            if not completed:
                plan.cancel(reason, now)
                for inst_id, attempt, failed in failed_given_back:
                    plan.record(inst_id, attempt, failed, now)
            try:
                async with self._uow() as uow:
                    await uow.plans.save(plan)
                    # The plan's row is locked now (SQLite: the write lock): a paused
                    # worker's charge of a given-back attempt, admitted while the plan
                    # was not cancelled and stored since the look above, is seen here,
                    # and the cancel starts over to record it. From the commit on, no
                    # charge is admitted (InstallmentPlan.admits_charge).
                    if await self._charger.started_since(uow, plan, unseen):
                        raise ConcurrentUpdate(plan.id)
                    await uow.commit()
            except ConcurrentUpdate:
                continue
            if completed:
                # The customer paid the last installment: the plan is paid in full,
                # recorded as such (money taken is never left unrecorded), not cancelled.
                raise InvalidTransition("a completed plan cannot be cancelled")
            return plan
        raise ConcurrentUpdate(plan_id)

    async def retry_now(self, installment_id: str, merchant_id: str | None) -> InstallmentPlan:
        """retry() without a request id: the plan after the attempt."""
        return (await self.retry(installment_id, merchant_id)).plan

    async def retry(
        self, installment_id: str, merchant_id: str | None, *, request_id: str = ""
    ) -> ManualRetry:
        """Charge a failed installment now, at the merchant's request. A payment of an
        earlier attempt still waiting for the customer is cancelled first; one they
        completed meanwhile is recorded as the installment's payment, and nothing is
        charged. When the processor cannot tell, nothing is charged or changed
        (EarlierPaymentOpen).

        Under a request id (unique per merchant, stored with the attempt's claim), the
        retry made again returns what its attempt came to, and charges nothing:
        RequestInProgress while that attempt is still charging, RetryRequestReused when
        the request id started a retry of another installment."""
        for _ in range(SAVE_TRIES):
            async with self._uow() as uow:
                plan = await uow.plans.get_by_installment(installment_id, merchant_id)
                earlier = None
                if plan is not None and request_id:
                    earlier = await uow.plans.get_retry_request(plan.merchant_id, request_id)
                    if earlier is not None:
                        # Read again after the request id, stored with its attempt's
                        # claim: the plan as that claim left it, or later. The first
                        # read may be older (no snapshot across the two reads).
                        plan = await uow.plans.get_by_installment(installment_id, merchant_id)
            if plan is None:
                raise PlanNotFound(installment_id)
            if earlier is not None:
                if earlier.installment_id != installment_id:
                    raise RetryRequestReused(request_id, earlier.installment_id)
                return await self._retried(plan, earlier, request_id)
            now = self._clock.now()
            lease_until = now + self._lease
            try:
                attempt = plan.start_manual_retry(
                    installment_id, worker=self._worker, lease_until=lease_until, now=now
                )  # InvalidTransition
                # Released before the claim is stored: the claim's version check then
                # proves no attempt started since this read, so none is left waiting.
                taken = await self._charger.release_waiting(plan, installment_id, RETRIED)
            except RetryLimitReached:
                # No new charge. A payment the customer completed (as stored: nothing is
                # cancelled, the customer may still complete one) is still recorded.
                taken = await self._charger.completed_waiting(plan, installment_id)
                if taken is None:
                    raise
                attempt = plan.start_manual_retry(
                    installment_id,
                    worker=self._worker,
                    lease_until=lease_until,
                    now=now,
                    charging=False,
                )
            try:
                async with self._uow() as uow:
                    await uow.plans.save(plan)
                    if request_id:
                        retry = RetryRequest(installment_id, attempt)
                        await uow.plans.add_retry_request(plan.merchant_id, request_id, retry, now)
                    await uow.commit()
            except (ConcurrentUpdate, DuplicateRetryRequest):
                continue  # read again: a retry under the same request id may have won
            break
        else:
            raise ConcurrentUpdate(installment_id)
        if taken is not None:
            plan = await self._charger.record(plan, installment_id, attempt, taken)
            return ManualRetry(plan, attempt, taken.payment_id)
        result, plan = await self._charger.charge(plan, installment_id, attempt)
        return ManualRetry(plan, attempt, result.payment_id)

    async def _retried(
        self, plan: InstallmentPlan, earlier: RetryRequest, request_id: str
    ) -> ManualRetry:
        """What the attempt an earlier retry under this request id started came to, as
        that retry answered it; RequestInProgress while it is still charging."""
        inst = plan.installment(earlier.installment_id)
        recorded = next((c for c in inst.charges if c.attempt == earlier.attempt), None)
        if recorded is not None:
            return ManualRetry(plan, earlier.attempt, recorded.payment_id, replayed=True)
        if inst.status is not InstallmentStatus.PROCESSING or inst.attempts != earlier.attempt:
            # Given up before it charged (the plan was cancelled meanwhile): it made none.
            return ManualRetry(plan, earlier.attempt, "", replayed=True)
        async with self._uow() as uow:
            payment = await uow.payments.get_by_request(
                plan.merchant_id, charge_request_id(inst.id, earlier.attempt)
            )
        if (
            payment is not None
            and payment.status is not PaymentStatus.PROCESSING
            and judge_charge(payment).outcome is ChargeOutcome.UNRESOLVED
        ):
            # Its outcome unknown, held for a later look: as the first retry answered.
            return ManualRetry(plan, earlier.attempt, payment.id, replayed=True)
        raise RequestInProgress(
            f"the retry under request_id {request_id!r} is still being charged; retry shortly"
        )
