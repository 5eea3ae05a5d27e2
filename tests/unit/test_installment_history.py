"""What a plan answer carries of an installment's charges: bounded through an outage."""

from __future__ import annotations

from payorch.domain.installments import InstallmentPolicy, InstallmentStatus
from payorch.entrypoints.grpc.installment_mappers import plan_pb
from tests.unit.test_installment_plan import DAY, MINUTE, NO_PROCESSOR, SHORT, D, charge, new_plan


def wait_out_outage(plan, seq: int, days: int) -> int:
    """The scheduler's charges of an installment while no processor can take one, for
    `days`: paused between tries (a minute doubling to an hour). Returns how many."""
    inst = plan.installments[seq - 1]
    start = at = inst.next_attempt_at or inst.due_at
    tries = 0
    while at - start < days * DAY:
        charge(plan, seq, NO_PROCESSOR, at)
        tries += 1
        assert inst.status is InstallmentStatus.PENDING
        at = inst.next_attempt_at
    return tries


def test_an_outage_s_pauses_are_one_entry_of_the_plan_answer_with_their_count():
    # A long first dunning step: the pauses go on for up to a year before the ladder.
    plan = new_plan(InstallmentPolicy(dunning_days=(60, 90)))
    inst = plan.installments[1]
    first = wait_out_outage(plan, 2, 30)
    charge(plan, 2, SHORT, inst.next_attempt_at)  # back up: the card is declined
    assert inst.status is InstallmentStatus.FAILED
    failed_at = inst.charges[-1].at
    second = wait_out_outage(plan, 2, 20)  # another outage before the ladder's next step
    # One charge (one stored row) per run, each with its count.
    assert [c.times for c in inst.charges] == [first, 1, second] and first + second > 1000

    answer = plan_pb(plan).installments[1]
    assert [(c.error_code, c.times) for c in answer.charges] == [
        ("no_processor_available", first),
        ("insufficient_funds", 1),
        ("no_processor_available", second),
    ]
    outage = answer.charges[0]
    # The last of them (its attempt, payment, time), and when the first was.
    assert outage.attempt == first and outage.at.ToDatetime().replace(tzinfo=D.tzinfo) == (
        inst.charges[0].at
    )
    assert outage.first_at.ToDatetime().replace(tzinfo=D.tzinfo) == D + 30 * DAY
    assert answer.charges[1].attempt == first + 1
    assert answer.charges[1].at.ToDatetime().replace(tzinfo=D.tzinfo) == failed_at
    assert not answer.charges[1].HasField("first_at")
    assert answer.charges[2].attempt == first + 1 + second
    # A few hundred bytes, not one entry per pause.
    assert plan_pb(plan).ByteSize() < 4000


def test_charges_that_are_not_outage_pauses_stay_one_entry_each():
    plan = new_plan()
    inst = plan.installments[1]
    charge(plan, 2, SHORT, D + 30 * DAY)
    charge(plan, 2, SHORT, inst.next_attempt_at)
    answer = plan_pb(plan).installments[1]
    assert [(c.attempt, c.times) for c in answer.charges] == [(1, 1), (2, 1)]
    assert MINUTE  # the helpers' units, imported with them
