"""The charger on in-memory fakes: what it makes of a plan that no longer charges, and of
a charge the payments path refuses before any processor sees it."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from payorch.adapters.clock import ManualClock
from payorch.app.installments import (
    DefaultInstallmentPolicies,
    EarlierPaymentOpen,
    InstallmentCharger,
    InstallmentService,
    RecordCharge,
    RetryRequestReused,
)
from payorch.app.payments import (
    ClaimLost,
    CreateResult,
    HeldOtherwise,
    IdempotencyConflict,
    InvalidState,
    ReleaseUndecided,
    RequestInProgress,
)
from payorch.app.plan_builder import PlanRejected
from payorch.app.ports import ChargeClaim
from payorch.domain.installments import (
    MAX_MANUAL_RETRIES,
    ChargeOutcome,
    InstallmentPlan,
    InstallmentStatus,
    InvalidTransition,
    PlanStatus,
    RetryLimitReached,
    charge_request_id,
)
from payorch.domain.payment import Payment, PaymentStatus
from payorch.domain.request import CoreRequest
from tests.fakes.installments import FakeInstallmentUnitOfWork, FakePlanRepository, FakePlans
from tests.fakes.memory import claim_admits
from tests.unit.test_installment_plan import new_plan

START = ManualClock().now()
DAY = timedelta(days=1)
LEASE = timedelta(seconds=120)


@dataclass
class FakePayments:
    """PaymentService.create and its (merchant, request_id) gate; `refuse` raises instead.
    cancel as the processor answers it for a payment waiting for the customer: canceled,
    or found paid when the customer `completed` it first, or undecided while `cancels_fail`.
    `in_flight` runs while a new payment is at the processor (stored, its answer not back)."""

    stored: dict[tuple[str, str], Payment] = field(default_factory=dict)
    refuse: Exception | None = None
    status: PaymentStatus = PaymentStatus.SUCCEEDED
    created: list[str] = field(default_factory=list)
    completed: set[str] = field(default_factory=set)
    cancels_fail: bool = False
    calls: list[str] = field(default_factory=list)
    in_flight: Callable[[], Awaitable[object]] | None = None
    # Runs when create is called, before its gate insert: the worker paused after its
    # look at its claim (GC, a VM stall, SIGSTOP).
    before_gate: Callable[[], Awaitable[object]] | None = None
    # own_customers as each create was called.
    own_customers: list[bool] = field(default_factory=list)
    # The plans as committed, which a claimed charge's gate insert looks at (as in SQL).
    plans: FakePlans | None = None

    async def create(
        self,
        request: CoreRequest,
        *,
        deadline_s: float | None,
        own_customers: bool = False,
        only_if: ChargeClaim | None = None,
    ) -> CreateResult:
        self.own_customers.append(own_customers)
        if self.before_gate is not None:
            await self.before_gate()
        if self.refuse is not None:
            raise self.refuse
        key = (request.merchant_id, request.request_id)
        if key in self.stored:
            return CreateResult(self.stored[key], replayed=True)
        if only_if is not None and not claim_admits(
            None if self.plans is None else self.plans.plans, only_if
        ):
            raise ClaimLost(only_if)
        self.created.append(request.request_id)
        self.calls.append(f"create {request.request_id}")
        payment = Payment(
            id=f"pay_{len(self.stored) + 1}",
            merchant_id=request.merchant_id,
            request_id=request.request_id,
            fingerprint=request.fingerprint(),
            currency=request.amount.currency,
            amount_minor=request.amount.amount_minor,
            steps=[],
            created_at=START,
            updated_at=START,
            status=self.status,
        )
        self.stored[key] = payment
        if self.in_flight is not None:
            await self.in_flight()
        return CreateResult(payment, replayed=False)

    async def get_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        return self.stored.get((merchant_id, request_id))

    async def get(self, payment_id: str, merchant_id: str | None) -> Payment:
        return next(p for p in self.stored.values() if p.id == payment_id)

    async def cancel(self, payment_id: str, merchant_id: str | None, reason: str) -> Payment:
        payment = await self.get(payment_id, merchant_id)
        if payment.status is not PaymentStatus.REQUIRES_ACTION:
            if payment.status is PaymentStatus.SUCCEEDED:
                raise InvalidState("money was captured: refund it instead of cancelling")
            return payment
        self.calls.append(f"cancel {payment_id}")
        if self.cancels_fail:
            raise ReleaseUndecided(payment.steps)
        if payment_id in self.completed:
            payment.status = PaymentStatus.SUCCEEDED  # the lookup after the void found it
            raise HeldOtherwise(payment.steps, "captured", "refund it instead of cancelling")
        payment.status = PaymentStatus.CANCELLED
        return payment


class Setup:
    def __init__(self) -> None:
        self.clock = ManualClock()
        # The plan a test hands the charger, and the plan as committed (its first
        # installment paid on ManualClock's first day).
        self.plan = new_plan()
        self.plans = FakePlans(copy.deepcopy(self.plan))
        self.payments = FakePayments(plans=self.plans)
        self.uow = lambda: FakeInstallmentUnitOfWork(plans=self.plans, payments=self.payments)
        self.charger = InstallmentCharger(self.uow, self.payments, self.clock)
        self.service = InstallmentService(
            self.uow,
            self.payments,
            DefaultInstallmentPolicies(),
            self.charger,
            self.clock,
            worker_id="w-rpc",
        )

    def claim(self, seq: int, lease: timedelta | None = None) -> tuple[str, int]:
        """What the scheduler's claim does to installment `seq` (in SQL, there, and
        committed), on the stored plan and on the copy the test hands the charger;
        leased for `lease` from now when given."""
        for plan in (self.plans.plan, self.plan):
            inst = plan.installments[seq - 1]
            inst._move(InstallmentStatus.PROCESSING)
            inst.attempts += 1
            if lease is not None:
                inst.claimed_by, inst.lease_until = "w-1", self.clock.now() + lease
        return inst.id, inst.attempts

    async def paused_then_cancelled(self) -> None:
        """The worker paused past its lease (LEASE), and the plan cancelled meanwhile."""
        self.clock.advance(LEASE.total_seconds() + 1)
        await self.service.cancel(self.plan.id, "m_1", "order returned")

    async def stored_plan(self) -> InstallmentPlan:
        async with self.uow() as uow:
            plan = await uow.plans.get(self.plan.id, None)
        assert plan is not None
        return plan


@pytest.fixture
def s() -> Setup:
    return Setup()


async def test_a_charge_the_merchants_config_refuses_fails_for_good_with_its_reason(s):
    s.payments.refuse = PlanRejected(
        [("methods[0].amount", "3334 is above the card maximum 3333")], "policy/limits"
    )
    inst_id, attempt = s.claim(2)

    result, plan = await s.charger.charge(s.plan, inst_id, attempt)

    assert (result.outcome, result.retry_later) == (ChargeOutcome.FAILED, False)
    inst = plan.installment(inst_id)
    assert inst.status is InstallmentStatus.FAILED_FINAL and plan.status is PlanStatus.BREACH
    assert inst.last_error_code == "invalid_request"
    assert "above the card maximum" in inst.last_error
    assert s.plans.held == [], "not left to be looked at again"


async def test_a_request_id_holding_a_different_payment_fails_for_good(s):
    s.payments.refuse = IdempotencyConflict("inst_x_a1", "amount")
    inst_id, attempt = s.claim(2)

    result, plan = await s.charger.charge(s.plan, inst_id, attempt)

    assert (result.outcome, result.error_code) == (ChargeOutcome.FAILED, "idempotency_conflict")
    assert plan.installment(inst_id).status is InstallmentStatus.FAILED_FINAL


async def test_a_refused_attempt_whose_charge_was_made_before_is_judged_by_that_payment(s):
    inst_id, attempt = s.claim(2)
    await s.charger.pay(s.plan, inst_id, attempt)  # charged, then the worker died
    s.payments.refuse = PlanRejected([("currency", "EUR is not accepted by merchant m_1")])

    result, plan = await s.charger.charge(s.plan, inst_id, attempt)

    assert result.outcome is ChargeOutcome.PAID
    assert plan.installment(inst_id).status is InstallmentStatus.PAID


async def test_a_cancelled_plan_makes_no_new_charge_and_withdraws_a_claim_never_started(s):
    inst_id, attempt = s.claim(2)
    s.plan.cancel("order returned", s.clock.now())

    result, plan = await s.charger.charge(s.plan, inst_id, attempt)

    assert result.outcome is ChargeOutcome.WITHDRAWN
    assert s.payments.created == []
    assert plan.installment(inst_id).status is InstallmentStatus.CANCELLED


async def test_a_cancelled_plan_records_the_charge_its_attempt_had_started(s):
    inst_id, attempt = s.claim(2)
    s.payments.status = PaymentStatus.PROCESSING
    await s.charger.pay(s.plan, inst_id, attempt)  # started; its answer is not in yet
    s.plan.cancel("order returned", s.clock.now())
    created = list(s.payments.created)

    result, _ = await s.charger.charge(s.plan, inst_id, attempt)
    assert result.outcome is ChargeOutcome.UNRESOLVED, "still running: looked at again later"
    s.payments.stored[("m_1", created[0])].status = PaymentStatus.SUCCEEDED
    result, plan = await s.charger.charge(s.plan, inst_id, attempt)

    assert result.outcome is ChargeOutcome.PAID
    assert s.payments.created == created, "replayed, never made anew"
    assert plan.installment(inst_id).status is InstallmentStatus.PAID


async def test_a_breached_plan_charges_only_what_the_merchant_retries(s):
    s.payments.status = PaymentStatus.FAILED
    inst2, attempt2 = s.claim(2)
    await s.charger.charge(s.plan, inst2, attempt2)
    assert s.plan.status is PlanStatus.BREACH
    inst3, attempt3 = s.claim(3)

    result, _ = await s.charger.charge(s.plan, inst3, attempt3)
    assert result.outcome is ChargeOutcome.WITHDRAWN
    assert s.plan.installment(inst3).status is InstallmentStatus.PENDING

    s.payments.status = PaymentStatus.SUCCEEDED
    now = s.clock.now()
    attempt = s.plan.start_manual_retry(inst2, worker="w", lease_until=now + DAY, now=now)
    result, plan = await s.charger.charge(s.plan, inst2, attempt)
    assert result.outcome is ChargeOutcome.PAID and plan.status is PlanStatus.ACTIVE


async def test_a_manual_retry_records_an_authentication_the_customer_completed_instead_of_charging(
    s,
):
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    inst_id, attempt = s.claim(2)
    await s.charger.charge(s.plan, inst_id, attempt)
    assert s.plan.installment(inst_id).status is InstallmentStatus.FAILED_FINAL
    (first,) = s.payments.created
    # The merchant brought the customer back and the payment was confirmed: money taken.
    s.payments.stored[("m_1", first)].status = PaymentStatus.SUCCEEDED
    s.payments.status = PaymentStatus.SUCCEEDED

    plan = await s.service.retry_now(inst_id, "m_1")

    assert s.payments.created == [first], "never charged a second time"
    inst = plan.installment(inst_id)
    assert inst.status is InstallmentStatus.PAID and plan.status is PlanStatus.ACTIVE
    assert inst.payment_id == s.payments.stored[("m_1", first)].id


async def failed_waiting_for_the_customer(s: Setup) -> tuple[str, Payment]:
    """Installment 2 charged off-session, the bank wanting the customer: failed_final,
    its payment still open at the processor."""
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    inst_id, attempt = s.claim(2)
    await s.charger.charge(s.plan, inst_id, attempt)
    return inst_id, s.payments.stored[("m_1", charge_request_id(inst_id, attempt))]


async def test_a_manual_retry_cancels_the_payment_waiting_for_the_customer_before_charging(s):
    inst_id, waiting = await failed_waiting_for_the_customer(s)
    s.payments.status = PaymentStatus.SUCCEEDED

    plan = await s.service.retry_now(inst_id, "m_1")

    # Cancelled first: the customer can no longer complete it once the retry charged.
    assert s.payments.calls[-2:] == [
        f"cancel {waiting.id}",
        f"create {charge_request_id(inst_id, 2)}",
    ]
    assert waiting.status is PaymentStatus.CANCELLED
    assert plan.installment(inst_id).status is InstallmentStatus.PAID


async def test_a_manual_retry_records_a_payment_its_cancel_found_the_customer_completed(s):
    inst_id, waiting = await failed_waiting_for_the_customer(s)
    # Completed at the processor; no confirm or webhook has told us yet.
    s.payments.completed.add(waiting.id)

    plan = await s.service.retry_now(inst_id, "m_1")

    assert s.payments.created == [waiting.request_id], "never charged a second time"
    inst = plan.installment(inst_id)
    assert inst.status is InstallmentStatus.PAID and plan.status is PlanStatus.ACTIVE
    assert inst.payment_id == waiting.id


async def test_a_manual_retry_whose_cancel_is_undecided_charges_nothing_and_changes_nothing(s):
    inst_id, waiting = await failed_waiting_for_the_customer(s)
    s.payments.cancels_fail = True
    before = s.plan.installment(inst_id).attempts

    with pytest.raises(EarlierPaymentOpen, match=waiting.id):
        await s.service.retry_now(inst_id, "m_1")

    assert s.payments.created == [waiting.request_id]
    inst = s.plans.plan.installment(inst_id)
    assert (inst.status, inst.attempts) == (InstallmentStatus.FAILED_FINAL, before)
    assert inst.claimed_by == ""


async def test_cancelling_a_plan_cancels_the_payment_waiting_for_the_customer(s):
    inst_id, waiting = await failed_waiting_for_the_customer(s)

    plan = await s.service.cancel(s.plan.id, "m_1", "order returned")

    assert waiting.status is PaymentStatus.CANCELLED, "a cancelled plan takes no money later"
    assert plan.status is PlanStatus.CANCELLED
    assert plan.installment(inst_id).status is InstallmentStatus.FAILED_FINAL


async def test_cancelling_a_plan_records_a_payment_the_customer_completed_first(s):
    inst_id, waiting = await failed_waiting_for_the_customer(s)
    s.payments.completed.add(waiting.id)

    plan = await s.service.cancel(s.plan.id, "m_1", "order returned")

    inst = plan.installment(inst_id)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, waiting.id)
    assert plan.status is PlanStatus.CANCELLED
    assert s.payments.created == [waiting.request_id]
    # Breached, then paid and cancelled in one step: never "reinstated" on the way, an
    # order a consumer would resume only to be told at once it is cancelled.
    assert s.plans.events[-2:] == ["InstallmentPaid", "PlanCancelled"]
    assert "PlanReinstated" not in s.plans.events


async def test_cancelling_a_plan_whose_last_installment_the_customer_completed_records_it(s):
    inst2, attempt2 = s.claim(2)
    await s.charger.charge(s.plan, inst2, attempt2)
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    inst3, attempt3 = s.claim(3)
    await s.charger.charge(s.plan, inst3, attempt3)
    assert s.plan.status is PlanStatus.BREACH
    waiting = s.payments.stored[("m_1", charge_request_id(inst3, attempt3))]
    s.payments.completed.add(waiting.id)  # the customer paid the last installment

    with pytest.raises(InvalidTransition, match="completed"):
        await s.service.cancel(s.plan.id, "m_1", "order returned")

    # Paid in full: recorded and announced, not left in breach with the money unrecorded.
    stored = s.plans.plan
    assert stored.status is PlanStatus.COMPLETED
    inst = stored.installment(inst3)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, waiting.id)
    assert s.payments.created == [charge_request_id(inst2, 1), waiting.request_id]


async def test_cancelling_a_plan_whose_waiting_payment_is_undecided_changes_nothing(s):
    inst_id, waiting = await failed_waiting_for_the_customer(s)
    s.payments.cancels_fail = True

    with pytest.raises(EarlierPaymentOpen, match=waiting.id):
        await s.service.cancel(s.plan.id, "m_1", "order returned")

    assert s.plans.plan.status is PlanStatus.BREACH
    assert s.plans.plan.installment(inst_id).status is InstallmentStatus.FAILED_FINAL


def cancel_in_flight(s: Setup) -> None:
    """The merchant cancels the plan while the next charge is at the processor."""
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    s.payments.in_flight = lambda: s.service.cancel(s.plan.id, "m_1", "order returned")


async def test_a_charge_in_flight_at_the_cancel_that_waits_for_the_customer_is_cancelled(s):
    cancel_in_flight(s)
    inst_id, attempt = s.claim(2)

    _, plan = await s.charger.charge(s.plan, inst_id, attempt)

    waiting = s.payments.stored[("m_1", charge_request_id(inst_id, attempt))]
    assert waiting.status is PaymentStatus.CANCELLED, "a cancelled plan takes no money later"
    assert s.payments.calls[-1] == f"cancel {waiting.id}"
    assert plan.status is PlanStatus.CANCELLED
    inst = plan.installment(inst_id)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.CANCELLED, waiting.id)
    assert inst.last_error_code == "authentication_required"


async def test_a_charge_in_flight_at_the_cancel_the_customer_completed_is_recorded_paid(s):
    cancel_in_flight(s)
    inst_id, attempt = s.claim(2)
    waiting_id = f"pay_{len(s.payments.stored) + 1}"
    s.payments.completed.add(waiting_id)

    _, plan = await s.charger.charge(s.plan, inst_id, attempt)

    inst = plan.installment(inst_id)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, waiting_id)
    assert plan.status is PlanStatus.CANCELLED
    assert s.payments.created == [charge_request_id(inst_id, attempt)]


async def test_a_charge_in_flight_at_the_cancel_whose_cancel_is_undecided_is_looked_at_again(s):
    cancel_in_flight(s)
    s.payments.cancels_fail = True
    inst_id, attempt = s.claim(2)

    _, plan = await s.charger.charge(s.plan, inst_id, attempt)

    # Left claimed, held for a later look: that charges nothing new, cancels it again.
    inst = s.plans.plan.installment(inst_id)
    assert (inst.status, inst.attempts) == (InstallmentStatus.PROCESSING, attempt)
    assert s.plans.held == [(inst_id, attempt)]
    assert plan.installment(inst_id).status is InstallmentStatus.PROCESSING
    s.payments.cancels_fail = False
    s.payments.in_flight = None

    _, plan = await s.charger.charge(plan, inst_id, attempt)

    waiting = s.payments.stored[("m_1", charge_request_id(inst_id, attempt))]
    assert waiting.status is PaymentStatus.CANCELLED
    assert s.payments.created == [waiting.request_id], "never charged anew"
    assert plan.installment(inst_id).status is InstallmentStatus.CANCELLED


async def test_a_manual_retry_in_flight_at_the_cancel_leaves_no_payment_waiting(s):
    inst_id, first = await failed_waiting_for_the_customer(s)
    cancel_in_flight(s)

    plan = await s.service.retry_now(inst_id, "m_1")

    retried = s.payments.stored[("m_1", charge_request_id(inst_id, 2))]
    assert (first.status, retried.status) == (PaymentStatus.CANCELLED, PaymentStatus.CANCELLED)
    assert plan.status is PlanStatus.CANCELLED
    assert plan.installment(inst_id).status is InstallmentStatus.CANCELLED


async def test_a_reclaimed_charge_found_waiting_on_a_cancelled_plan_is_cancelled_when_recorded(s):
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    inst_id, attempt = s.claim(2)
    await s.charger.pay(s.plan, inst_id, attempt)  # charged, then the worker died
    await s.service.cancel(s.plan.id, "m_1", "order returned")
    plan = await s.stored_plan()

    result = await s.charger.pay(plan, inst_id, attempt)  # its claim taken over
    (recorded,) = await s.charger.record_many([RecordCharge(plan, inst_id, attempt, result)])

    waiting = s.payments.stored[("m_1", charge_request_id(inst_id, attempt))]
    assert waiting.status is PaymentStatus.CANCELLED
    assert recorded.installment(inst_id).status is InstallmentStatus.CANCELLED
    assert s.payments.created == [waiting.request_id]


async def test_a_scheduled_charge_vouches_for_its_plans_customer(s):
    """The plan's customer was claimed for its merchant by the plan's first charge (and
    by the migration for older plans): its later charges cost no claim, and are never
    refused for it."""
    inst_id, attempt = s.claim(2)
    await s.charger.charge(s.plan, inst_id, attempt)
    assert s.payments.own_customers == [True]


async def declined_for_good(s: Setup) -> str:
    """Installment 2 declined off-session: failed_final, the plan in breach."""
    s.payments.status = PaymentStatus.FAILED
    inst_id, attempt = s.claim(2)
    await s.charger.charge(s.plan, inst_id, attempt)
    assert s.plan.installment(inst_id).status is InstallmentStatus.FAILED_FINAL
    return inst_id


@pytest.mark.parametrize("status", [PaymentStatus.FAILED, PaymentStatus.SUCCEEDED])
async def test_a_retry_made_again_under_its_request_id_returns_its_attempt_and_charges_nothing(
    s, status
):
    inst_id = await declined_for_good(s)
    s.payments.status = status
    first = await s.service.retry(inst_id, "m_1", request_id="rt-1")
    charged = list(s.payments.created)

    again = await s.service.retry(inst_id, "m_1", request_id="rt-1")

    assert s.payments.created == charged, "no second charge"
    assert (again.attempt, again.payment_id, again.replayed) == (2, first.payment_id, True)
    assert first.replayed is False
    assert again.plan.installment(inst_id).charges[-1].payment_id == first.payment_id


async def test_a_retry_made_again_while_its_charge_is_at_the_processor_is_in_progress(s):
    inst_id = await declined_for_good(s)
    s.payments.status = PaymentStatus.SUCCEEDED
    refused: list[Exception] = []

    async def made_again() -> None:
        with pytest.raises(RequestInProgress) as err:
            await s.service.retry(inst_id, "m_1", request_id="rt-1")
        refused.append(err.value)

    s.payments.in_flight = made_again
    done = await s.service.retry(inst_id, "m_1", request_id="rt-1")

    assert len(refused) == 1 and "rt-1" in str(refused[0])
    assert s.payments.created == [charge_request_id(inst_id, 1), charge_request_id(inst_id, 2)]
    assert done.plan.installment(inst_id).status is InstallmentStatus.PAID


async def test_a_request_id_of_another_installments_retry_is_refused_before_anything_else(s):
    inst_id = await declined_for_good(s)
    await s.service.retry(inst_id, "m_1", request_id="rt-1")
    charged = list(s.payments.created)
    third = s.plan.installments[2].id

    with pytest.raises(RetryRequestReused, match=inst_id):
        await s.service.retry(third, "m_1", request_id="rt-1")

    assert s.payments.created == charged
    assert s.plans.plan.installment(third).attempts == 0


async def test_a_retry_without_a_request_id_is_a_new_attempt_every_time(s):
    inst_id = await declined_for_good(s)
    await s.service.retry(inst_id, "m_1")
    again = await s.service.retry(inst_id, "m_1")

    assert (again.attempt, again.replayed) == (3, False)
    assert s.payments.created == [charge_request_id(inst_id, n) for n in (1, 2, 3)]
    assert s.plans.retries == {}


async def test_a_retry_made_again_whose_outcome_is_unknown_answers_as_the_first_did(s):
    inst_id = await declined_for_good(s)
    s.payments.status = PaymentStatus.UNKNOWN  # the processor's answer never came
    first = await s.service.retry(inst_id, "m_1", request_id="rt-1")
    assert s.plans.held == [(inst_id, 2)], "held for a later look"

    again = await s.service.retry(inst_id, "m_1", request_id="rt-1")

    assert (again.replayed, again.attempt, again.payment_id) == (True, 2, first.payment_id)
    assert again.plan.installment(inst_id).status is InstallmentStatus.PROCESSING
    assert s.payments.created == [charge_request_id(inst_id, n) for n in (1, 2)]


async def test_a_retry_made_again_after_its_attempt_was_given_up_uncharged_makes_none(
    s, monkeypatch
):
    inst_id = await declined_for_good(s)

    async def dies(*args: object) -> None:
        raise RuntimeError("the process died after the claim")

    with monkeypatch.context() as patch:
        patch.setattr(s.charger, "charge", dies)
        with pytest.raises(RuntimeError):
            await s.service.retry(inst_id, "m_1", request_id="rt-1")
    await s.service.cancel(s.plan.id, "m_1", "order returned")
    plan = await s.stored_plan()
    await s.charger.charge(plan, inst_id, 2)  # its claim taken over: withdrawn

    again = await s.service.retry(inst_id, "m_1", request_id="rt-1")

    assert (again.replayed, again.attempt, again.payment_id) == (True, 2, "")
    assert again.plan.installment(inst_id).status is InstallmentStatus.CANCELLED
    assert s.payments.created == [charge_request_id(inst_id, 1)]


async def test_a_manual_retry_past_the_limit_is_refused_and_charges_nothing(s):
    inst_id = await declined_for_good(s)
    for _ in range(MAX_MANUAL_RETRIES):
        await s.service.retry(inst_id, "m_1", request_id=f"rt-{len(s.payments.created)}")
    charged = list(s.payments.created)
    assert len(charged) == 1 + MAX_MANUAL_RETRIES

    with pytest.raises(RetryLimitReached, match=f"{MAX_MANUAL_RETRIES} times"):
        await s.service.retry(inst_id, "m_1", request_id="rt-one-more")

    assert s.payments.created == charged, "no charge past the limit"
    inst = s.plans.plan.installment(inst_id)
    assert (inst.status, inst.attempts) == (InstallmentStatus.FAILED_FINAL, len(charged))
    assert inst.claimed_by == "" and ("m_1", "rt-one-more") not in s.plans.retries


async def test_a_payment_the_customer_completed_is_recorded_past_the_retry_limit(s):
    inst_id, _ = await failed_waiting_for_the_customer(s)
    for _ in range(MAX_MANUAL_RETRIES):  # each cancels the one before and waits again
        await s.service.retry(inst_id, "m_1")
    charged = list(s.payments.created)
    last = s.payments.stored[("m_1", charged[-1])]
    assert last.status is PaymentStatus.REQUIRES_ACTION
    last.status = PaymentStatus.SUCCEEDED  # the customer completed it (ConfirmPayment)

    done = await s.service.retry(inst_id, "m_1")

    assert s.payments.created == charged, "recorded, not charged"
    inst = done.plan.installment(inst_id)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, last.id)
    assert done.plan.status is PlanStatus.ACTIVE


async def test_a_payment_waiting_at_the_retry_limit_is_left_open_for_the_customer(s):
    inst_id, _ = await failed_waiting_for_the_customer(s)
    for _ in range(MAX_MANUAL_RETRIES):
        await s.service.retry(inst_id, "m_1")
    last = s.payments.stored[("m_1", s.payments.created[-1])]

    with pytest.raises(RetryLimitReached):
        await s.service.retry(inst_id, "m_1")

    # Refused without a new charge, so nothing replaces it: the customer may still pay.
    assert last.status is PaymentStatus.REQUIRES_ACTION
    # And the plan can still be cancelled: that cancels it at the processor.
    plan = await s.service.cancel(s.plan.id, "m_1", "order returned")
    assert plan.status is PlanStatus.CANCELLED and last.status is PaymentStatus.CANCELLED


async def _paused_on_a_breach(s: Any) -> tuple[str, int, InstallmentPlan]:
    """Worker A claims installment 2 and is paused past its lease before its charge;
    installment 3 fails for good (breach) and worker B withdraws A's stale claim (the
    attempt number given back). Returns the installment, A's attempt and A's plan."""
    inst2, attempt = s.claim(2)
    paused = copy.deepcopy(s.plans.plan)  # what A read after its claim: active
    s.payments.status = PaymentStatus.FAILED
    inst3, attempt3 = s.claim(3)
    await s.charger.charge(s.plan, inst3, attempt3)
    assert s.plans.plan.status is PlanStatus.BREACH
    await s.charger.charge(copy.deepcopy(s.plans.plan), inst2, attempt)  # B withdraws
    assert s.plans.plan.installment(inst2).attempts == attempt - 1
    return inst2, attempt, paused


async def test_a_paused_workers_charge_on_a_plan_breached_meanwhile_is_recorded_not_lost(s):
    """Worker A claims installment 2 and is paused (GC, SIGSTOP) past its lease, before
    its charge. Meanwhile installment 3 fails for good (breach) and worker B takes the
    stale claim over: no payment yet, so B withdraws it (the attempt number given back).
    A wakes up and charges, from the plan it read while the plan was active. The money
    is taken: it must be recorded, not left unrecorded on a plan that may never heal."""
    inst2, attempt, paused = await _paused_on_a_breach(s)
    assert s.plans.plan.installment(inst2).status is InstallmentStatus.PENDING

    s.payments.status = PaymentStatus.SUCCEEDED
    result, _ = await s.charger.charge(paused, inst2, attempt)  # A wakes up

    assert result.outcome is ChargeOutcome.PAID
    stored = s.plans.plan
    inst = stored.installment(inst2)
    assert (inst.status, inst.payment_id, inst.attempts) == (
        InstallmentStatus.PAID,
        result.payment_id,
        attempt,
    )
    assert stored.status is PlanStatus.BREACH, "installment 3 still failed for good"
    assert s.plans.events[-1] == "InstallmentPaid"
    # Cancelled later, the plan still shows the money taken; nothing is charged twice.
    plan = await s.service.cancel(stored.id, "m_1", "order returned")
    assert plan.installment(inst2).status is InstallmentStatus.PAID
    assert s.payments.created.count(charge_request_id(inst2, attempt)) == 1


async def test_a_paused_workers_result_never_overwrites_a_later_attempts(s):
    """A is paused past its lease on attempt 1; B takes it over (same attempt: its payment
    is made once, then replayed) and records the decline; a manual retry (attempt 2)
    pays. A wakes up and records attempt 1's outcome: the installment stays paid."""
    s.payments.status = PaymentStatus.FAILED
    inst2, attempt = s.claim(2)
    paused = copy.deepcopy(s.plans.plan)  # what A read after its claim
    await s.charger.charge(copy.deepcopy(s.plans.plan), inst2, attempt)  # B's take-over
    assert s.plans.plan.installment(inst2).status is InstallmentStatus.FAILED_FINAL
    s.payments.status = PaymentStatus.SUCCEEDED
    later = await s.service.retry(inst2, "m_1")
    assert later.plan.installment(inst2).status is InstallmentStatus.PAID

    result, _ = await s.charger.charge(paused, inst2, attempt)  # A wakes up

    assert result.outcome is ChargeOutcome.FAILED, "attempt 1's own payment, replayed"
    inst = s.plans.plan.installment(inst2)
    assert (inst.status, inst.payment_id, inst.attempts) == (
        InstallmentStatus.PAID,
        later.payment_id,
        2,
    )
    assert s.payments.created == [charge_request_id(inst2, 1), charge_request_id(inst2, 2)]
    assert s.plans.plan.status is PlanStatus.ACTIVE


async def test_a_paused_workers_charge_waiting_for_the_customer_is_cancelled_with_the_plan(s):
    """A's charge of the given-back attempt stops to wait for the customer (the bank asks
    for 3DS). The plan is cancelled next: that payment must be cancelled at the processor
    too, or the customer could still pay an installment of a cancelled plan."""
    inst2, attempt, paused = await _paused_on_a_breach(s)

    s.payments.status = PaymentStatus.REQUIRES_ACTION
    result, _ = await s.charger.charge(paused, inst2, attempt)  # A wakes up
    assert result.error_code == "authentication_required"
    inst = s.plans.plan.installment(inst2)
    assert result.payment_id in inst.awaiting_customer, "the waiting payment is in the history"
    assert (inst.status, inst.attempts) == (InstallmentStatus.FAILED_FINAL, attempt)

    plan = await s.service.cancel(s.plans.plan.id, "m_1", "order returned")

    waiting = await s.payments.get(result.payment_id, "m_1")
    assert waiting.status is PaymentStatus.CANCELLED, "a cancelled plan takes no money later"
    # Failed for good, as any installment whose charge waited for the customer.
    assert plan.installment(inst2).status is InstallmentStatus.FAILED_FINAL
    assert s.payments.created.count(charge_request_id(inst2, attempt)) == 1


async def test_a_paused_workers_charge_waiting_after_the_plan_was_cancelled_is_cancelled(s):
    """As above, but the breached plan is cancelled while A's charge is at the processor
    (its payment stored before the cancel), before it comes back waiting for the
    customer: recording it cancels that payment at the processor."""
    inst2, attempt, paused = await _paused_on_a_breach(s)

    async def cancelled_meanwhile() -> None:
        await s.service.cancel(s.plans.plan.id, "m_1", "order returned")
        assert s.plans.plan.installment(inst2).status is InstallmentStatus.CANCELLED

    s.payments.in_flight = cancelled_meanwhile
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    result, _ = await s.charger.charge(paused, inst2, attempt)  # A wakes up

    waiting = await s.payments.get(result.payment_id, "m_1")
    assert waiting.status is PaymentStatus.CANCELLED, "a cancelled plan takes no money later"
    inst = s.plans.plan.installment(inst2)
    assert inst.status is InstallmentStatus.CANCELLED
    assert [c.payment_id for c in inst.charges] == [result.payment_id], "shown in the history"


async def test_a_paused_workers_charge_the_customer_completed_before_the_cancel_is_recorded(s):
    """The customer completes A's waiting payment before the breached plan is cancelled:
    the cancel finds it paid and records it (money taken is never left unrecorded)."""
    inst2, attempt, paused = await _paused_on_a_breach(s)
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    result, _ = await s.charger.charge(paused, inst2, attempt)  # A wakes up
    s.payments.completed.add(result.payment_id)

    plan = await s.service.cancel(s.plans.plan.id, "m_1", "order returned")

    inst = plan.installment(inst2)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, result.payment_id)


async def test_a_paused_workers_charge_left_unrecorded_is_found_and_cancelled_by_the_plan_cancel(s):
    """A's charge of the given-back attempt waits for the customer, but A stops before
    recording it (killed, or its save failed): the cancel finds it by its request id."""
    inst2, attempt, paused = await _paused_on_a_breach(s)
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    result = await s.charger.pay(paused, inst2, attempt)  # A charges, then dies
    assert not s.plans.plan.installment(inst2).charges

    plan = await s.service.cancel(s.plans.plan.id, "m_1", "order returned")

    waiting = await s.payments.get(result.payment_id, "m_1")
    assert waiting.status is PaymentStatus.CANCELLED, "a cancelled plan takes no money later"
    assert [c.payment_id for c in plan.installment(inst2).charges] == [result.payment_id]


async def test_a_paused_workers_charge_left_unrecorded_and_paid_is_recorded_by_the_cancel(s):
    inst2, attempt, paused = await _paused_on_a_breach(s)
    s.payments.status = PaymentStatus.REQUIRES_ACTION
    result = await s.charger.pay(paused, inst2, attempt)  # A charges, then dies
    s.payments.completed.add(result.payment_id)  # the customer completes it

    plan = await s.service.cancel(s.plans.plan.id, "m_1", "order returned")

    inst = plan.installment(inst2)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, result.payment_id)
    assert plan.status is PlanStatus.CANCELLED


async def test_a_paused_workers_declined_charge_left_unrecorded_is_in_the_history_after_cancel(
    s,
):
    """A's charge of the given-back attempt is declined and A stops before recording it:
    the cancel puts it in the history (it reached the processor), announcing no retry."""
    inst2, attempt, paused = await _paused_on_a_breach(s)
    result = await s.charger.pay(paused, inst2, attempt)  # A charges (declined), then dies
    assert result.outcome is ChargeOutcome.FAILED and result.payment_id
    before = list(s.plans.events)

    plan = await s.service.cancel(s.plans.plan.id, "m_1", "order returned")

    inst = plan.installment(inst2)
    assert [(c.attempt, c.payment_id) for c in inst.charges] == [(attempt, result.payment_id)]
    assert (inst.status, inst.next_attempt_at) == (InstallmentStatus.CANCELLED, None)
    assert s.plans.events == [*before, "PlanCancelled"]


async def _charged_apart(s: Setup) -> RecordCharge:
    """Installment 2 claimed and paid, not yet recorded: the charge to record."""
    inst_id, attempt = s.claim(2)
    result = await s.charger.pay(s.plan, inst_id, attempt)
    return RecordCharge(s.plan, inst_id, attempt, result)


async def test_recording_together_falls_back_one_by_one_when_a_plan_changed_meanwhile(s):
    charge = await _charged_apart(s)
    # Someone else saves the plan meanwhile: the copy in the charge is a version behind.
    async with s.uow() as uow:
        await uow.plans.save(copy.deepcopy(s.plans.plan))
        await uow.commit()

    (recorded,) = await s.charger.record_many([charge])

    assert recorded.installment(charge.installment_id).status is InstallmentStatus.PAID
    assert s.plans.plan.installment(charge.installment_id).status is InstallmentStatus.PAID


async def test_recording_together_raises_an_error_that_is_no_conflict(s, monkeypatch):
    """Only a plan changed meanwhile is worth reading again and recording alone: any
    other error (a broken store, a bug) is raised, not hidden by a second way round."""
    charge = await _charged_apart(s)

    async def broken(self: object, plans: object) -> None:
        raise RuntimeError("save_many is broken")

    monkeypatch.setattr(FakePlanRepository, "save_many", broken)

    with pytest.raises(RuntimeError, match="save_many is broken"):
        await s.charger.record_many([charge])
    inst = s.plans.plan.installment(charge.installment_id)
    assert (inst.status, inst.charges) == (InstallmentStatus.PROCESSING, [])


async def test_a_worker_paused_past_its_lease_after_its_look_charges_nothing_once_cancelled(s):
    """The worker looks at its claim (the lease holds), then is paused past its lease
    before its payment is stored; the plan is cancelled meanwhile, the claim found run
    out and nothing started. Waking, the worker sends nothing: the payment's insert is
    refused, as its claim no longer admits a charge, and the claim is withdrawn."""
    inst_id, attempt = s.claim(2, LEASE)

    s.payments.before_gate = s.paused_then_cancelled
    result, _ = await s.charger.charge(s.plan, inst_id, attempt)

    assert (result.outcome, result.payment_id) == (ChargeOutcome.WITHDRAWN, "")
    assert s.payments.created == [], "nothing sent to a processor"
    stored = s.plans.plan
    assert stored.status is PlanStatus.CANCELLED
    inst = stored.installment(inst_id)
    assert (inst.status, inst.charges, inst.payment_id) == (InstallmentStatus.CANCELLED, [], "")
    assert s.plans.events[-1] == "PlanCancelled", "no charge announced after the cancel"


async def test_a_charge_stored_before_the_cancel_is_recorded_on_the_cancelled_plan(s):
    """The other order: the payment is stored (the charge started), then the worker is
    paused past its lease and the plan cancelled while the processor has the charge.
    The money taken is recorded on the cancelled plan, never lost."""
    inst_id, attempt = s.claim(2, LEASE)

    s.payments.in_flight = s.paused_then_cancelled
    result, _ = await s.charger.charge(s.plan, inst_id, attempt)

    assert result.outcome is ChargeOutcome.PAID
    assert s.payments.created == [charge_request_id(inst_id, attempt)]
    stored = s.plans.plan
    assert stored.status is PlanStatus.CANCELLED
    inst = stored.installment(inst_id)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, result.payment_id)
    assert [(c.attempt, c.payment_id) for c in inst.charges] == [(attempt, result.payment_id)]
    assert s.plans.events[-2:] == ["PlanCancelled", "InstallmentPaid"]


async def test_a_cancel_inside_the_lease_leaves_the_claim_to_its_worker_even_if_it_wakes_late(s):
    """Cancelled while the lease held, the claim is the worker's (the cancel's answer
    shows it processing): its charge is admitted, also if the worker then wakes past
    its lease before storing the payment, as long as nobody took the claim over."""
    inst_id, attempt = s.claim(2, LEASE)

    async def cancelled_then_paused() -> None:
        await s.service.cancel(s.plan.id, "m_1", "order returned")
        s.clock.advance(LEASE.total_seconds() + 1)

    s.payments.before_gate = cancelled_then_paused
    result, _ = await s.charger.charge(s.plan, inst_id, attempt)

    assert result.outcome is ChargeOutcome.PAID
    assert s.plans.plan.installment(inst_id).status is InstallmentStatus.PAID


async def test_a_given_back_charge_stored_while_the_plan_is_being_cancelled_is_recorded(s):
    """A's charge of the given-back attempt is stored just after the cancel looked for
    it (admitted: the plan was not cancelled yet), and A stops before recording it. The
    cancel looks again once it holds the plan's row, finds it, and starts over: the
    money taken is in the cancelled plan's history, not left unrecorded."""
    inst2, attempt, paused = await _paused_on_a_breach(s)
    s.payments.status = PaymentStatus.SUCCEEDED
    real_look = s.charger.given_back_charge
    charged: list[str] = []

    async def look_then_charged(plan: Any, installment_id: str, reason: str) -> Any:
        found = await real_look(plan, installment_id, reason)
        if installment_id == inst2 and not charged:
            result = await s.charger.pay(paused, inst2, attempt)  # A charges, then dies
            charged.append(result.payment_id)
        return found

    s.charger.given_back_charge = look_then_charged  # type: ignore[method-assign]
    plan = await s.service.cancel(s.plans.plan.id, "m_1", "order returned")

    assert plan.status is PlanStatus.CANCELLED
    inst = s.plans.plan.installment(inst2)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, charged[0])
    assert [(c.attempt, c.payment_id) for c in inst.charges] == [(attempt, charged[0])]


async def _withdrawn_then_charged(s: Setup, status: PaymentStatus) -> tuple[str, int, Any]:
    """Installment 2 claimed by worker A, the plan cancelled inside A's lease (the claim
    left to A). The scheduler's look (B) finds no payment of the attempt: WITHDRAWN. A's
    charge, admitted under its claim, is stored right after that look, before B records
    it, and A stops there. Returns the installment, its attempt and B's result."""
    inst_id, attempt = s.claim(2, LEASE)
    paused = copy.deepcopy(s.plan)  # what A read before the cancel
    await s.service.cancel(s.plan.id, "m_1", "order returned")
    result = await s.charger.pay(await s.stored_plan(), inst_id, attempt)
    assert result.outcome is ChargeOutcome.WITHDRAWN
    s.payments.status = status
    charged = await s.charger.pay(paused, inst_id, attempt)  # A's charge, not recorded
    assert s.payments.created == [charge_request_id(inst_id, attempt)], charged
    return inst_id, attempt, result


async def _record_as(s: Setup, how: str, inst_id: str, attempt: int, result: Any) -> None:
    plan = await s.stored_plan()
    if how == "record":
        await s.charger.record(plan, inst_id, attempt, result)
    else:  # the scheduler's group commit
        await s.charger.record_many([RecordCharge(plan, inst_id, attempt, result)])


@pytest.mark.parametrize("how", ["record", "record_many"])
async def test_a_withdrawal_finds_a_charge_stored_since_its_look_and_records_it_instead(s, how):
    """A withdrawal is looked at again once the plan's row is locked for its save: the
    charge a paused worker stored since the look that found none is recorded (money
    taken on a cancelled plan is paid and announced), not the installment cancelled
    uncharged with that money unrecorded."""
    inst_id, attempt, withdrawn = await _withdrawn_then_charged(s, PaymentStatus.SUCCEEDED)

    await _record_as(s, how, inst_id, attempt, withdrawn)

    paid = s.payments.stored[("m_1", charge_request_id(inst_id, attempt))]
    inst = s.plans.plan.installment(inst_id)
    assert (inst.status, inst.payment_id) == (InstallmentStatus.PAID, paid.id)
    assert [(c.attempt, c.outcome) for c in inst.charges] == [(attempt, ChargeOutcome.PAID)]
    assert s.plans.events[-2:] == ["PlanCancelled", "InstallmentPaid"]


@pytest.mark.parametrize("how", ["record", "record_many"])
async def test_a_withdrawal_finding_a_charge_still_at_the_processor_holds_the_claim(s, how):
    """The charge found is not settled yet (its worker is at the processor, or died
    there): the claim is held for a later look, as for any outcome not known yet, so
    whoever takes it up records that payment once it settles."""
    inst_id, attempt, withdrawn = await _withdrawn_then_charged(s, PaymentStatus.PROCESSING)
    held = len(s.plans.held)  # A's own hold of its charge's unknown outcome included

    await _record_as(s, how, inst_id, attempt, withdrawn)

    inst = s.plans.plan.installment(inst_id)
    assert (inst.status, inst.attempts, inst.charges) == (
        InstallmentStatus.PROCESSING,
        attempt,
        [],
    )
    assert s.plans.held[held:] == [(inst_id, attempt)]
