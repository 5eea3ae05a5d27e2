"""The installment plan aggregate: its transitions, the dunning ladder, its events."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from payorch.domain.installments import (
    AttemptKind,
    ChargeOutcome,
    ChargeResult,
    Installment,
    InstallmentCharge,
    InstallmentFailed,
    InstallmentFailedFinal,
    InstallmentPaid,
    InstallmentPlan,
    InstallmentPolicy,
    InstallmentStatus,
    InvalidTransition,
    PlanBreached,
    PlanCompleted,
    PlanCreated,
    PlanStatus,
    charge_request_id,
    judge_charge,
)
from payorch.domain.money import Currency, Money
from payorch.domain.payment import (
    Attempt,
    MethodType,
    Payment,
    PaymentStatus,
    RawError,
    Step,
    StepStatus,
)
from payorch.domain.results import ErrorCode, Outcome

D = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PAID = ChargeResult(ChargeOutcome.PAID, "pay_x", "pi_x")
SHORT = ChargeResult(
    ChargeOutcome.FAILED, "pay_f", "", "insufficient_funds", "no money", retry_later=True
)
STOLEN = ChargeResult(ChargeOutcome.FAILED, "pay_s", "", "stolen_card", "stolen", retry_later=False)
NO_PROCESSOR = ChargeResult(
    ChargeOutcome.FAILED,
    "pay_n",
    "",
    "no_processor_available",
    "no processor can take the step",
    retry_later=True,
)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def new_plan(policy: InstallmentPolicy | None = None) -> InstallmentPlan:
    return InstallmentPlan.start(
        merchant_id="m_1",
        request_id="r-1",
        order_id="o-1",
        fingerprint="f",
        total=Money(10_000, Currency("EUR")),
        token="pm_card_visa",
        customer_id="",
        policy=policy or InstallmentPolicy(),
        first_payment_id="pay_first",
        first_processor_payment_id="pi_first",
        now=D,
    )


def claim(plan: InstallmentPlan, seq: int) -> int:
    """What the scheduler's claim does to a due installment (the repository does it in SQL)."""
    inst = plan.installments[seq - 1]
    inst._move(InstallmentStatus.PROCESSING)
    inst.attempts += 1
    return inst.attempts


def charge(plan: InstallmentPlan, seq: int, result: ChargeResult, at: datetime) -> None:
    attempt = claim(plan, seq)
    assert plan.record(plan.installments[seq - 1].id, attempt, result, at)


def names(plan: InstallmentPlan) -> list[str]:
    return [e.name for e in plan.pending_events]


def test_a_new_plan_has_its_first_installment_paid_and_the_rest_pending():
    plan = new_plan()
    assert [i.amount_minor for i in plan.installments] == [3333, 3333, 3334]
    assert [i.status for i in plan.installments] == [
        InstallmentStatus.PAID,
        InstallmentStatus.PENDING,
        InstallmentStatus.PENDING,
    ]
    assert [i.next_attempt_at for i in plan.installments] == [None, D + 30 * DAY, D + 60 * DAY]
    assert plan.status is PlanStatus.ACTIVE and (plan.paid_count, plan.paid_minor) == (1, 3333)
    assert names(plan) == [PlanCreated.__name__, InstallmentPaid.__name__]
    assert plan.installments[0].charges[0].payment_id == "pay_first"


def test_charge_request_ids_are_derived_from_the_installment_and_its_attempt():
    plan = new_plan()
    first = plan.installments[0]
    assert charge_request_id(first.id, 1) == f"inst_{plan.id}_1_a1"
    assert new_plan().id == plan.id, "the same merchant and request id give the same plan"


def test_paying_the_last_installment_completes_the_plan():
    plan = new_plan()
    charge(plan, 2, PAID, D + 30 * DAY)
    assert plan.status is PlanStatus.ACTIVE
    charge(plan, 3, PAID, D + 60 * DAY)
    assert plan.status is PlanStatus.COMPLETED
    assert names(plan)[-2:] == [InstallmentPaid.__name__, PlanCompleted.__name__]
    assert plan.paid_minor == 10_000


def test_a_retry_later_failure_walks_the_ladder_from_the_first_failure_then_breaches():
    plan = new_plan()
    due = D + 30 * DAY
    inst = plan.installments[1]
    seen = []
    at = due
    for _ in range(4):
        charge(plan, 2, SHORT, at)
        seen.append((inst.status, inst.next_attempt_at))
        at = inst.next_attempt_at or at
    assert seen == [
        (InstallmentStatus.FAILED, due + 3 * DAY),
        (InstallmentStatus.FAILED, due + 7 * DAY),
        (InstallmentStatus.FAILED, due + 14 * DAY),
        (InstallmentStatus.FAILED_FINAL, None),
    ]
    assert plan.status is PlanStatus.BREACH
    assert names(plan)[-2:] == [InstallmentFailedFinal.__name__, PlanBreached.__name__]
    assert names(plan).count(InstallmentFailed.__name__) == 3
    assert inst.attempts == 4 and inst.last_error_code == "insufficient_funds"


def test_failure_events_name_the_attempts_payment():
    plan = new_plan()
    charge(plan, 2, SHORT, D + 30 * DAY)
    charge(plan, 3, STOLEN, D + 60 * DAY)
    failed = [e for e in plan.pending_events if isinstance(e, InstallmentFailed)]
    final = [e for e in plan.pending_events if isinstance(e, InstallmentFailedFinal)]
    assert [e.payment_id for e in failed + final] == ["pay_f", "pay_s"]


def test_a_hard_failure_skips_the_ladder():
    plan = new_plan()
    charge(plan, 2, STOLEN, D + 30 * DAY)
    assert plan.installments[1].status is InstallmentStatus.FAILED_FINAL
    assert plan.status is PlanStatus.BREACH
    assert InstallmentFailed.__name__ not in names(plan)


def test_a_merchants_ladder_replaces_the_default():
    plan = new_plan(InstallmentPolicy(dunning_days=(1,)))
    due = D + 30 * DAY
    charge(plan, 2, SHORT, due)
    assert plan.installments[1].next_attempt_at == due + DAY
    charge(plan, 2, SHORT, due + DAY)
    assert plan.installments[1].status is InstallmentStatus.FAILED_FINAL


def test_a_late_scheduler_keeps_every_ladder_step():
    plan = new_plan()
    due = D + 30 * DAY
    charge(plan, 2, SHORT, due)
    charge(plan, 2, SHORT, due + 20 * DAY)  # the scheduler was down for weeks
    inst = plan.installments[1]
    assert inst.status is InstallmentStatus.FAILED
    assert inst.next_attempt_at == due + 20 * DAY, "an overdue step is due at once, not skipped"


def test_recording_an_attempt_twice_changes_nothing():
    plan = new_plan()
    attempt = claim(plan, 2)
    inst_id = plan.installments[1].id
    assert plan.record(inst_id, attempt, PAID, D + 30 * DAY)
    events = list(plan.pending_events)
    assert not plan.record(inst_id, attempt, PAID, D + 30 * DAY)
    assert not plan.record(inst_id, attempt, SHORT, D + 30 * DAY)
    assert plan.pending_events == events
    assert len(plan.installments[1].charges) == 1


def test_a_stale_attempt_number_is_ignored():
    plan = new_plan()
    charge(plan, 2, SHORT, D + 30 * DAY)
    attempt = claim(plan, 2)
    assert not plan.record(plan.installments[1].id, attempt - 1, PAID, D + 33 * DAY)
    assert plan.installments[1].status is InstallmentStatus.PROCESSING


def test_an_unresolved_charge_leaves_the_installment_processing():
    plan = new_plan()
    attempt = claim(plan, 2)
    unresolved = ChargeResult(ChargeOutcome.UNRESOLVED, "pay_u")
    assert not plan.record(plan.installments[1].id, attempt, unresolved, D + 30 * DAY)
    assert plan.installments[1].status is InstallmentStatus.PROCESSING


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (InstallmentStatus.PENDING, InstallmentStatus.PAID),
        (InstallmentStatus.PAID, InstallmentStatus.PROCESSING),
        (InstallmentStatus.CANCELLED, InstallmentStatus.PROCESSING),
        (InstallmentStatus.FAILED_FINAL, InstallmentStatus.CANCELLED),
        (InstallmentStatus.CANCELLED, InstallmentStatus.FAILED),
    ],
)
def test_installment_transitions_outside_the_table_are_refused(start, to):
    inst = new_plan().installments[1]
    inst.status = start
    with pytest.raises(InvalidTransition):
        inst._move(to)


def test_a_charge_no_processor_could_take_stays_due_and_uses_no_dunning_step():
    plan = new_plan()
    due = D + 30 * DAY
    inst = plan.installments[1]
    plan.pending_events.clear()
    at, waits = due, []
    for _ in range(9):
        charge(plan, 2, NO_PROCESSOR, at)
        assert inst.status is InstallmentStatus.PENDING
        assert inst.next_attempt_at is not None
        waits.append(inst.next_attempt_at - at)
        at = inst.next_attempt_at
    # A pause doubling from a minute, capped at an hour.
    assert waits == [MINUTE * m for m in (1, 2, 4, 8, 16, 32, 60, 60, 60)]
    assert (inst.dunning_step, inst.first_failed_at) == (0, None)
    assert inst.last_error_code == "no_processor_available"
    # One charge for the run (one stored row), however long: its last try, its count.
    (run,) = inst.charges
    assert (run.error_code, run.attempt, run.times) == ("no_processor_available", 9, 9)
    assert (run.first_at, run.at) == (due, at - waits[-1])
    # Our outage is not the customer's failure: nothing is announced.
    assert names(plan) == [] and plan.status is PlanStatus.ACTIVE

    # Back up: it pays, having used no step of the ladder.
    charge(plan, 2, PAID, at)
    assert inst.status is InstallmentStatus.PAID
    assert [(c.attempt, c.times) for c in inst.charges] == [(9, 9), (10, 1)]


def test_only_an_outage_s_consecutive_scheduled_pauses_are_one_charge():
    """A decline between two outages ends the first run; a manual retry no processor
    could take is a charge of its own (the merchant asked for it)."""
    plan = new_plan()
    inst = plan.installments[1]
    due = D + 30 * DAY
    charge(plan, 2, NO_PROCESSOR, due)
    charge(plan, 2, NO_PROCESSOR, inst.next_attempt_at)
    charge(plan, 2, SHORT, inst.next_attempt_at)
    attempt = plan.start_manual_retry(inst.id, worker="w", lease_until=due, now=due)
    assert plan.record(inst.id, attempt, NO_PROCESSOR, due + DAY)
    inst.attempt_kind = AttemptKind.SCHEDULED  # as the scheduler's claim sets it (in SQL)
    charge(plan, 2, NO_PROCESSOR, inst.next_attempt_at)
    charge(plan, 2, NO_PROCESSOR, inst.next_attempt_at)
    assert [(c.attempt, c.kind.value, c.error_code, c.times) for c in inst.charges] == [
        (2, "scheduled", "no_processor_available", 2),
        (3, "scheduled", "insufficient_funds", 1),
        (4, "manual", "no_processor_available", 1),
        (6, "scheduled", "no_processor_available", 2),
    ]
    assert inst.charges[0].first_at == due and inst.charges[2].first_at is None


def test_a_failure_after_an_outage_starts_the_ladder_from_itself():
    plan = new_plan()
    due = D + 30 * DAY
    inst = plan.installments[1]
    charge(plan, 2, NO_PROCESSOR, due)
    charge(plan, 2, SHORT, due + MINUTE)
    assert inst.status is InstallmentStatus.FAILED
    assert inst.next_attempt_at == due + MINUTE + 3 * DAY and inst.dunning_step == 1
    # A later outage pauses again from its own start.
    charge(plan, 2, NO_PROCESSOR, inst.next_attempt_at)
    assert inst.status is InstallmentStatus.PENDING and inst.dunning_step == 1
    assert inst.next_attempt_at == due + MINUTE + 3 * DAY + MINUTE


def test_an_outage_that_outlasts_the_first_dunning_step_goes_on_the_ladder():
    plan = new_plan()
    due = D + 30 * DAY
    inst = plan.installments[1]
    charge(plan, 2, NO_PROCESSOR, due)
    charge(plan, 2, NO_PROCESSOR, due + 3 * DAY - MINUTE)
    assert inst.status is InstallmentStatus.PENDING
    charge(plan, 2, NO_PROCESSOR, due + 3 * DAY)
    assert inst.status is InstallmentStatus.FAILED and inst.dunning_step == 1
    assert InstallmentFailed.__name__ in names(plan)


def test_with_no_dunning_ladder_an_outage_pauses_for_the_default_first_step_then_fails():
    """A merchant with no retries on a decline still has its charges wait out our own
    outage, as long as the default ladder's first step (3 days), then fail for good."""
    plan = new_plan(InstallmentPolicy(dunning_days=()))
    due = D + 30 * DAY
    inst = plan.installments[1]
    charge(plan, 2, NO_PROCESSOR, due)
    charge(plan, 2, NO_PROCESSOR, due + 3 * DAY - MINUTE)
    assert inst.status is InstallmentStatus.PENDING
    charge(plan, 2, NO_PROCESSOR, due + 3 * DAY)
    assert inst.status is InstallmentStatus.FAILED_FINAL
    assert plan.status is PlanStatus.BREACH


def test_an_outage_lasts_from_its_first_charge_a_manual_retry_included():
    """The ladder's second step falls due in an outage a manual retry met four days
    before: the outage has outlasted the first step (3 days), so it is a failure."""
    plan = new_plan()
    due = D + 30 * DAY
    inst = plan.installments[1]
    charge(plan, 2, SHORT, due)
    charge(plan, 2, SHORT, inst.next_attempt_at)  # the first step, at due + 3 days
    retried = due + 3 * DAY + HOUR
    attempt = plan.start_manual_retry(inst.id, worker="w", lease_until=retried, now=retried)
    assert plan.record(inst.id, attempt, NO_PROCESSOR, retried)
    inst.attempt_kind = AttemptKind.SCHEDULED  # as the scheduler's claim sets it (in SQL)

    charge(plan, 2, NO_PROCESSOR, inst.next_attempt_at)  # the second step, at due + 7 days

    assert (inst.status, inst.dunning_step) == (InstallmentStatus.FAILED, 3)
    assert inst.next_attempt_at == due + 14 * DAY


def test_an_outage_stored_one_row_per_pause_lasts_from_its_first_row():
    """Rows stored before an outage's pauses were folded into one: the next pause folds
    into the last row, and the outage still began at the first."""
    plan = new_plan()
    due = D + 30 * DAY
    inst = plan.installments[1]
    for attempt, at in ((1, due), (2, due + 2 * DAY)):
        inst.charges.append(
            InstallmentCharge(
                attempt,
                AttemptKind.SCHEDULED,
                f"pay_n{attempt}",
                ChargeOutcome.FAILED,
                NO_PROCESSOR.error_code,
                NO_PROCESSOR.message,
                at,
            )
        )
    inst.attempts = inst.stored_charges = 2

    charge(plan, 2, NO_PROCESSOR, due + 3 * DAY)

    assert (inst.status, inst.dunning_step) == (InstallmentStatus.FAILED, 1)


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(NO_PROCESSOR, id="no-processor-could-take-it"),
        pytest.param(SHORT, id="declined-again"),
    ],
)
def test_a_manual_retry_that_fails_keeps_the_scheduled_ladder_step(result: ChargeResult):
    plan = new_plan()
    due = D + 30 * DAY
    charge(plan, 2, SHORT, due)
    inst = plan.installments[1]
    attempt = plan.start_manual_retry(inst.id, worker="w", lease_until=due + DAY, now=due + DAY)
    assert plan.record(inst.id, attempt, result, due + DAY)
    assert inst.status is InstallmentStatus.FAILED
    assert inst.next_attempt_at == due + 3 * DAY and inst.dunning_step == 1


def test_a_manual_retry_that_pays_heals_a_breach():
    plan = new_plan()
    charge(plan, 2, STOLEN, D + 30 * DAY)
    inst = plan.installments[1]
    attempt = plan.start_manual_retry(inst.id, worker="w", lease_until=D, now=D + 31 * DAY)
    plan.pending_events.clear()
    assert plan.record(inst.id, attempt, PAID, D + 31 * DAY)
    assert inst.status is InstallmentStatus.PAID and plan.status is PlanStatus.ACTIVE
    # Whoever suspended the order on PlanBreached is told the plan is active again.
    assert [e.name for e in plan.pending_events] == ["InstallmentPaid", "PlanReinstated"]
    healed = plan.pending_events[-1]
    assert (healed.plan_id, healed.order_id, healed.installment_id) == (
        plan.id,
        plan.order_id,
        inst.id,
    )


def test_a_manual_retry_that_pays_the_last_installment_of_a_breached_plan_completes_it():
    plan = new_plan()
    charge(plan, 2, PAID, D + 30 * DAY)
    charge(plan, 3, STOLEN, D + 60 * DAY)
    assert plan.status is PlanStatus.BREACH
    inst = plan.installments[2]
    attempt = plan.start_manual_retry(inst.id, worker="w", lease_until=D, now=D + 61 * DAY)
    plan.pending_events.clear()
    assert plan.record(inst.id, attempt, PAID, D + 61 * DAY)
    assert plan.status is PlanStatus.COMPLETED
    assert [e.name for e in plan.pending_events] == ["InstallmentPaid", "PlanCompleted"]


def test_only_a_failed_installment_can_be_retried_by_hand():
    plan = new_plan()
    with pytest.raises(InvalidTransition, match="only a failed installment"):
        plan.start_manual_retry(plan.installments[1].id, worker="w", lease_until=D, now=D)


def test_cancelling_stops_what_is_not_being_charged_and_a_charge_in_flight_finishes():
    plan = new_plan()
    attempt = claim(plan, 2)
    plan.cancel("customer returned the goods", D + 30 * DAY)
    assert [i.status for i in plan.installments] == [
        InstallmentStatus.PAID,
        InstallmentStatus.PROCESSING,
        InstallmentStatus.CANCELLED,
    ]
    assert plan.record(plan.installments[1].id, attempt, PAID, D + 30 * DAY)
    assert plan.status is PlanStatus.CANCELLED
    with pytest.raises(InvalidTransition):
        plan.cancel("again", D + 31 * DAY)


WITHDRAWN = ChargeResult(ChargeOutcome.WITHDRAWN, "")


def cancelled_while_claimed() -> tuple[InstallmentPlan, Installment, int]:
    """A plan cancelled while installment 2 is claimed; no event pending."""
    plan = new_plan()
    attempt = claim(plan, 2)
    plan.cancel("order returned", D + 30 * DAY)
    plan.pending_events.clear()
    return plan, plan.installments[1], attempt


def test_only_an_active_plan_or_a_manual_retry_of_a_breached_one_may_charge():
    plan = new_plan()
    claim(plan, 2)
    assert plan.may_charge(plan.installments[1].id)
    plan.cancel("returned", D + 30 * DAY)
    assert not plan.may_charge(plan.installments[1].id)

    breached = new_plan()
    charge(breached, 2, STOLEN, D + 30 * DAY)
    third = breached.installments[2]
    claim(breached, 3)
    assert breached.status is PlanStatus.BREACH
    assert not breached.may_charge(third.id), "the scheduler charges nothing on a breach"
    second = breached.installments[1]
    breached.start_manual_retry(second.id, worker="w", lease_until=D, now=D + 31 * DAY)
    assert breached.may_charge(second.id), "the merchant's retry may heal the breach"


def test_a_claim_whose_charge_never_started_on_a_cancelled_plan_is_cancelled_silently():
    plan, inst, attempt = cancelled_while_claimed()

    assert plan.record(inst.id, attempt, WITHDRAWN, D + 31 * DAY)

    assert inst.status is InstallmentStatus.CANCELLED
    assert (inst.next_attempt_at, inst.claimed_by, inst.lease_until) == (None, "", None)
    assert inst.charges == [] and inst.attempts == attempt
    assert names(plan) == [] and plan.status is PlanStatus.CANCELLED
    assert not plan.record(inst.id, attempt, WITHDRAWN, D + 31 * DAY), "recorded once"


def test_a_claim_whose_charge_never_started_on_a_breached_plan_is_due_again_as_it_was():
    plan = new_plan()
    due2, due3 = plan.installments[1].due_at, plan.installments[2].due_at
    charge(plan, 2, SHORT, due2)  # installment 2 on the ladder
    charge(plan, 3, NO_PROCESSOR, due3)  # installment 3 waiting out an outage
    second, third = plan.installments[1], plan.installments[2]
    for n in (2, 3):
        claim(plan, n)
    # Installment 2's charge fails for good: the plan is in breach; 3's never started.
    assert plan.record(second.id, second.attempts, STOLEN, due3)
    assert plan.status is PlanStatus.BREACH
    ladder_step, retry_at = third.dunning_step, third.next_attempt_at
    plan.pending_events.clear()

    assert plan.record(third.id, third.attempts, WITHDRAWN, due3)

    assert third.status is InstallmentStatus.PENDING and third.attempts == 1
    assert (third.next_attempt_at, third.dunning_step) == (retry_at, ladder_step)
    assert names(plan) == [] and plan.status is PlanStatus.BREACH

    ladder = new_plan()
    charge(ladder, 3, SHORT, due3)
    charge(ladder, 2, STOLEN, due3)
    attempt = claim(ladder, 3)
    assert ladder.record(ladder.installments[2].id, attempt, WITHDRAWN, due3)
    assert ladder.installments[2].status is InstallmentStatus.FAILED, "failed, as before its claim"
    assert ladder.installments[2].attempts == attempt - 1


def test_a_charge_failing_after_the_plan_was_cancelled_is_kept_but_never_retried():
    plan, inst, attempt = cancelled_while_claimed()

    assert plan.record(inst.id, attempt, SHORT, D + 30 * DAY)

    assert inst.status is InstallmentStatus.CANCELLED and inst.next_attempt_at is None
    assert (inst.dunning_step, inst.last_error_code) == (0, "insufficient_funds")
    assert [c.payment_id for c in inst.charges] == ["pay_f"]
    assert names(plan) == [], "no retry is announced on a cancelled plan"
    assert plan.status is PlanStatus.CANCELLED


def test_a_charge_no_processor_could_take_after_the_plan_was_cancelled_is_not_postponed():
    plan, inst, attempt = cancelled_while_claimed()
    assert plan.record(inst.id, attempt, NO_PROCESSOR, D + 30 * DAY)
    assert inst.status is InstallmentStatus.CANCELLED and inst.next_attempt_at is None


def test_a_charge_that_went_through_after_its_claim_was_withdrawn_is_recorded_as_paid():
    plan, inst, attempt = cancelled_while_claimed()
    assert plan.record(inst.id, attempt, WITHDRAWN, D + 31 * DAY)
    # The worker that claimed it was paused just as it started the charge, which went through.
    assert plan.record(inst.id, attempt, PAID, D + 31 * DAY)
    assert inst.status is InstallmentStatus.PAID and inst.payment_id == "pay_x"
    assert names(plan) == [InstallmentPaid.__name__] and plan.status is PlanStatus.CANCELLED
    assert not plan.record(inst.id, attempt, PAID, D + 31 * DAY)

    failed, inst, attempt = cancelled_while_claimed()
    assert failed.record(inst.id, attempt, SHORT, D + 30 * DAY)
    assert not failed.record(inst.id, attempt, PAID, D + 30 * DAY), (
        "an attempt whose charge was recorded stays as recorded"
    )
    assert not failed.record(failed.installments[2].id, 0, PAID, D + 30 * DAY)


def _failed_payment(decline_code: str, error: ErrorCode, raw_type: str = "card_error") -> Payment:
    attempt = Attempt(
        number=1,
        processor="simulated",
        idempotency_key="k",
        started_at=D,
        ended_at=D,
        latency_ms=1,
        outcome=Outcome.HARD,
        error_code=error,
        raw=RawError(raw_type, "card_declined", decline_code, 402, "req_1", "declined"),
    )
    step = Step(
        0, MethodType.CARD, "pm_x", 100, ["simulated"], status=StepStatus.FAILED, error_code=error
    )
    step.attempts.append(attempt)
    return Payment(
        id="pay_1",
        merchant_id="m_1",
        request_id="r",
        fingerprint="f",
        currency=Currency("EUR"),
        amount_minor=100,
        steps=[step],
        created_at=D,
        updated_at=D,
        status=PaymentStatus.FAILED,
        final_error=error,
    )


@pytest.mark.parametrize(
    ("decline_code", "error", "retry_later"),
    [
        ("insufficient_funds", ErrorCode.INSUFFICIENT_FUNDS, True),
        ("generic_decline", ErrorCode.CARD_DECLINED, True),
        ("do_not_honor", ErrorCode.DO_NOT_HONOR, True),
        ("stolen_card", ErrorCode.STOLEN_CARD, False),
        ("fraudulent", ErrorCode.FRAUDULENT, False),
        ("lost_card", ErrorCode.LOST_CARD, False),
        ("expired_card", ErrorCode.EXPIRED_CARD, False),
    ],
)
def test_the_ladder_follows_the_classification_tables_retry_later(decline_code, error, retry_later):
    judged = judge_charge(_failed_payment(decline_code, error))
    assert judged.outcome is ChargeOutcome.FAILED
    assert (judged.error_code, judged.retry_later) == (error.value, retry_later)


@pytest.mark.parametrize(
    ("decline_code", "error"),
    [
        ("insufficient_funds", ErrorCode.INSUFFICIENT_FUNDS),
        ("do_not_honor", ErrorCode.DO_NOT_HONOR),
    ],
)
def test_a_decline_the_issuer_advised_not_to_try_again_leaves_the_ladder(decline_code, error):
    payment = _failed_payment(decline_code, error)
    payment.steps[0].attempts[0].raw.advice_code = "do_not_try_again"
    judged = judge_charge(payment)
    assert (judged.error_code, judged.retry_later) == (error.value, False)


def test_a_soft_infrastructure_failure_that_exhausted_inline_retries_goes_on_the_ladder():
    payment = _failed_payment("", ErrorCode.PROCESSOR_ERROR, raw_type="api_error")
    payment.steps[0].attempts[0].raw.http_status = 500
    assert judge_charge(payment).retry_later


def test_a_charge_cut_by_payorchs_run_limit_goes_on_the_ladder():
    # Nothing sent for the step (no attempt): payorch's own limit, not the bank's answer.
    payment = _failed_payment("", ErrorCode.RUN_LIMIT_REACHED)
    payment.steps[0].attempts.clear()
    judged = judge_charge(payment)
    assert (judged.error_code, judged.retry_later) == ("run_limit_reached", True)


@pytest.mark.parametrize(
    ("error", "retry_later"),
    [
        (ErrorCode.NO_PROCESSOR_AVAILABLE, True),
        (ErrorCode.INTERRUPTED, True),
        (ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR, False),
    ],
)
def test_a_failure_no_processor_answered_goes_on_the_ladder_only_when_it_was_ours(
    error, retry_later
):
    """No processor's words to judge (every breaker open, an interrupted charge): the
    error code alone decides."""
    payment = _failed_payment("", error)
    payment.steps[0].attempts.clear()
    judged = judge_charge(payment)
    assert (judged.outcome, judged.error_code, judged.retry_later) == (
        ChargeOutcome.FAILED,
        error.value,
        retry_later,
    )


def test_only_a_succeeded_payment_pays_and_an_unknown_one_is_left_unresolved():
    payment = _failed_payment("", ErrorCode.NONE)
    payment.status = PaymentStatus.UNKNOWN
    assert judge_charge(payment).outcome is ChargeOutcome.UNRESOLVED
    payment.status = PaymentStatus.REQUIRES_ACTION
    assert not judge_charge(payment).retry_later
    payment.status = PaymentStatus.SUCCEEDED
    assert judge_charge(payment).outcome is ChargeOutcome.PAID


@pytest.mark.parametrize("status", [PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED])
def test_a_charge_refunded_before_it_was_recorded_is_judged_paid(status):
    payment = _failed_payment("", ErrorCode.NONE)
    payment.status = status
    assert judge_charge(payment).outcome is ChargeOutcome.PAID


def test_a_charge_cancelled_before_it_was_recorded_failed_for_good():
    payment = _failed_payment("", ErrorCode.NONE)
    payment.status = PaymentStatus.CANCELLED
    judged = judge_charge(payment)
    assert (judged.outcome, judged.retry_later) == (ChargeOutcome.FAILED, False)
    assert judged.message == "the payment was cancelled"
    # What happened, not "unmapped" (a processor's answer missing from the tables).
    assert judged.error_code == ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR.value


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(NO_PROCESSOR, id="no-processor-could-take-it"),
        pytest.param(
            ChargeResult(ChargeOutcome.FAILED, "", "", "invalid_request", "over the limit"),
            id="refused-before-any-payment",
        ),
    ],
)
def test_an_installments_processor_payment_id_is_its_latest_payments_even_when_it_has_none(
    result: ChargeResult,
):
    """The installment names its latest payment and the processor's id for it (the
    answer's `processor_payment_id`): never an earlier attempt's beside a later payment."""
    plan = new_plan()
    inst = plan.installments[1]
    charge(plan, 2, dataclasses.replace(SHORT, processor_payment_id="pi_f"), D + 30 * DAY)
    assert (inst.payment_id, inst.processor_payment_id) == ("pay_f", "pi_f")

    charge(plan, 2, result, D + 33 * DAY)

    assert (inst.payment_id, inst.processor_payment_id) == (result.payment_id, "")


def _completed(plan: InstallmentPlan) -> None:
    charge(plan, 2, PAID, D + 30 * DAY)
    charge(plan, 3, PAID, D + 60 * DAY)


def _breached(plan: InstallmentPlan) -> None:
    charge(plan, 2, STOLEN, D + 30 * DAY)


def _reinstated(plan: InstallmentPlan) -> None:
    _breached(plan)
    inst = plan.installments[1]
    at = D + 31 * DAY
    attempt = plan.start_manual_retry(inst.id, worker="w", lease_until=at + DAY, now=at)
    plan.status_changed = False  # saved in breach
    assert plan.record(inst.id, attempt, PAID, at)


def _cancelled(plan: InstallmentPlan) -> None:
    plan.cancel("order returned", D + 30 * DAY)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        pytest.param(_completed, PlanStatus.COMPLETED, id="completed"),
        pytest.param(_breached, PlanStatus.BREACH, id="breach"),
        pytest.param(_reinstated, PlanStatus.ACTIVE, id="reinstated"),
        pytest.param(_cancelled, PlanStatus.CANCELLED, id="cancelled"),
    ],
)
def test_every_change_of_a_plans_status_is_marked_for_the_repository(
    change: Callable[[InstallmentPlan], None], status: PlanStatus
):
    """The repository copies a plan's status onto its installments' rows (the claim's
    index reads it there) only when the plan says it changed: a change unmarked leaves
    those rows naming a status the plan no longer has."""
    plan = new_plan()
    plan.status_changed = False  # as the repository leaves a plan it saved

    change(plan)

    assert (plan.status, plan.status_changed) == (status, True)
