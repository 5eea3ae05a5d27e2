"""A scheduler pass on in-memory fakes: what its stats count each claim as. The stats are
what `payorch scheduler --once` prints and each pass logs, so they must say what was
recorded on the plan, not what the charger first thought of the claim."""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import timedelta
from typing import Any

import pytest

from payorch.app.installment_scheduler import InstallmentScheduler, SchedulerStats
from payorch.domain.installments import (
    ChargeOutcome,
    InstallmentStatus,
    PlanStatus,
    charge_request_id,
)
from payorch.domain.payment import Payment, PaymentStatus
from tests.fakes.installments import FakeInstallmentUnitOfWork
from tests.fakes.outage import (
    FailingUnits,
    logged_as,
    one_line_then_traceback,
    outage_then_fault,
    pass_records,
    unreachable,
)
from tests.unit.test_installment_charger import LEASE, Setup

DAY = timedelta(days=1)


@pytest.fixture
def s() -> Setup:
    return Setup()


def scheduler(s: Setup) -> InstallmentScheduler:
    return InstallmentScheduler(
        s.uow, s.charger, s.clock, worker_id="w-2", lease_s=LEASE.total_seconds()
    )


def counted(stats: SchedulerStats) -> dict[str, int]:
    return {name: n for name, n in stats.as_dict().items() if n}


@pytest.mark.parametrize(
    ("status", "counted_as", "installment"),
    [
        (PaymentStatus.SUCCEEDED, ("paid",), InstallmentStatus.PAID),
        # A failure, and one that ran out of the ladder (the plan is in breach).
        (PaymentStatus.FAILED, ("failed", "failed_final"), InstallmentStatus.FAILED_FINAL),
    ],
)
async def test_a_pass_counts_a_due_installment_by_what_its_charge_came_to(
    s, status, counted_as, installment
):
    s.payments.status = status
    s.clock.advance(30 * DAY.total_seconds())  # installment 2 falls due

    stats = await scheduler(s).run_once()

    assert counted(stats) == {"claimed": 1, **dict.fromkeys(counted_as, 1)}
    inst = s.plans.plan.installments[1]
    assert inst.status is installment
    assert s.payments.created == [charge_request_id(inst.id, 1)]


async def _cancelled_while_claimed(s: Setup) -> tuple[str, int, Any]:
    """Worker A claims installment 2 and the plan is cancelled inside A's lease (the
    claim left to A); A is paused past its lease. Returns the installment, its attempt,
    and the plan as A read it before the cancel."""
    s.clock.advance(30 * DAY.total_seconds())
    inst_id, attempt = s.claim(2, LEASE)
    paused = copy.deepcopy(s.plan)
    await s.service.cancel(s.plan.id, "m_1", "order returned")
    return inst_id, attempt, paused


async def test_a_pass_counts_a_claim_taken_over_on_a_cancelled_plan_and_never_charged_withdrawn(
    s,
):
    inst_id, attempt, _ = await _cancelled_while_claimed(s)
    s.clock.advance(LEASE.total_seconds() + 1)  # A never comes back

    stats = await scheduler(s).run_once()

    assert counted(stats) == {"claimed": 1, "reclaimed": 1, "withdrawn": 1}
    inst = s.plans.plan.installment(inst_id)
    assert (inst.status, inst.attempts, inst.charges) == (
        InstallmentStatus.CANCELLED,
        attempt,
        [],
    )
    assert s.payments.created == [], "nothing sent to a processor"


@pytest.mark.parametrize(
    ("status", "counted_as", "installment"),
    [
        (PaymentStatus.SUCCEEDED, "paid", InstallmentStatus.PAID),
        (PaymentStatus.FAILED, "failed", InstallmentStatus.CANCELLED),
        # Not settled yet: held for a later look, under the same attempt.
        (PaymentStatus.PROCESSING, "unresolved", InstallmentStatus.PROCESSING),
    ],
)
async def test_a_pass_counts_a_withdrawal_whose_save_found_the_attempts_charge_as_that_charge(
    s, status, counted_as, installment
):
    """The scheduler takes A's claim over and finds no payment of the attempt: the
    charger says WITHDRAWN. A's gate insert, admitted under the lease A knew (on
    PostgreSQL its snapshot predates the takeover), commits right after that look; the
    save of the withdrawal finds it under the plan's row lock and records (or holds) it
    instead. The pass counts what was recorded, not a withdrawal that never happened."""
    inst_id, attempt, paused = await _cancelled_while_claimed(s)
    s.payments.status = status
    await s.charger.pay(paused, inst_id, attempt)  # A's charge, admitted under its claim
    key = ("m_1", charge_request_id(inst_id, attempt))
    # Not visible to anyone until it commits, after the scheduler's look.
    landing: Payment = s.payments.stored.pop(key)
    s.clock.advance(LEASE.total_seconds() + 1)  # A is paused past its lease
    look = s.charger.pay

    async def look_then_a_commits(plan: Any, installment_id: str, n: int) -> Any:
        result = await look(plan, installment_id, n)
        assert result.outcome is ChargeOutcome.WITHDRAWN  # the look found nothing
        s.payments.stored[key] = landing
        return result

    s.charger.pay = look_then_a_commits  # type: ignore[method-assign]

    stats = await scheduler(s).run_once()

    assert counted(stats) == {"claimed": 1, "reclaimed": 1, counted_as: 1}
    assert s.plans.plan.status is PlanStatus.CANCELLED
    inst = s.plans.plan.installment(inst_id)
    assert (inst.status, inst.attempts) == (installment, attempt)
    recorded = [(c.attempt, c.payment_id) for c in inst.charges]
    assert recorded == ([] if counted_as == "unresolved" else [(attempt, landing.id)])
    assert s.payments.created == [key[1]], "A's charge only: the scheduler made none"


def _units_noted(s: Setup, failing_read: bool = False) -> tuple[Any, list[list[str]]]:
    """A unit-of-work factory that notes the plan repository's claims and reads, per
    unit of work; with `failing_read`, reading the claimed plans raises."""
    units: list[list[str]] = []

    def uow() -> FakeInstallmentUnitOfWork:
        unit = s.uow()
        calls: list[str] = []
        units.append(calls)
        for name in ("claim_due", "get_many"):
            method = getattr(unit.plans, name)

            async def noted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
                calls.append(_name)
                if failing_read and _name == "get_many":
                    raise RuntimeError("a plan row this build cannot read")
                return await _method(*args, **kw)

            setattr(unit.plans, name, noted)
        return unit

    return uow, units


async def test_a_pass_reads_the_plans_it_claims_in_the_claims_unit_of_work(s):
    # One unit of work per claim, not two: each is a transaction, and on PostgreSQL a
    # pooled connection's checkout (SQLAlchemy's ping: three more round trips).
    s.clock.advance(30 * DAY.total_seconds())  # installment 2 falls due
    uow, units = _units_noted(s)

    stats = await InstallmentScheduler(uow, s.charger, s.clock, worker_id="w-2").run_once()

    assert counted(stats) == {"claimed": 1, "paid": 1}
    assert ["claim_due", "get_many"] in units
    assert ["get_many"] not in units


async def test_a_claim_whose_plans_cannot_be_read_stays_claimed_and_counts_as_errors(s):
    # As a charge that raised: the claim waits for its lease to run out, then is taken
    # up again under the same attempt; nothing was sent.
    s.clock.advance(30 * DAY.total_seconds())
    uow, _ = _units_noted(s, failing_read=True)

    stats = await InstallmentScheduler(uow, s.charger, s.clock, worker_id="w-2").run_once()

    assert counted(stats) == {"claimed": 1, "errors": 1}
    inst = s.plans.plan.installments[1]
    assert (inst.status, inst.attempts, inst.claimed_by) == (
        InstallmentStatus.PROCESSING,
        1,
        "w-2",
    )
    assert s.payments.created == []


async def test_a_pass_the_database_cannot_be_reached_for_is_one_line_and_a_fault_its_traceback(
    s, caplog
):
    # Every pass fails while the database is away: one warning line each, naming the
    # error's type (not its text, which may carry the URL), as the reconciler's. Before,
    # each was a full traceback.
    stop = asyncio.Event()
    worker = InstallmentScheduler(
        FailingUnits(stop, *outage_then_fault()),
        s.charger,
        s.clock,
        worker_id="w-2",
        storage_unreachable=unreachable,
    )

    with caplog.at_level(logging.INFO):
        await worker.run_forever(0, stop)

    assert pass_records(caplog.records, "payorch.scheduler") == one_line_then_traceback("scheduler")
    assert "hunter2" not in caplog.text


def _reads_failing(s: Setup, error: BaseException, *names: str) -> Any:
    """A unit-of-work factory for the scheduler whose plan reads `names` raise `error`
    (the charger keeps its own, which works)."""

    def uow() -> FakeInstallmentUnitOfWork:
        unit = s.uow()
        for name in names:

            async def failing(*args: Any, **kw: Any) -> Any:
                raise error

            setattr(unit.plans, name, failing)
        return unit

    return uow


async def _failures_logged(
    s: Setup,
    caplog: pytest.LogCaptureFixture,
    error: BaseException,
    *,
    reads: tuple[str, ...] = (),
    charges: bool = False,
    **options: Any,
) -> tuple[SchedulerStats, list[tuple[int, str, bool]]]:
    """One pass whose plan `reads` raise `error`, and each charge too with `charges`:
    its stats and the scheduler's warnings and errors (never the driver's text)."""
    if charges:

        async def raising(*args: Any) -> Any:
            raise error

        s.charger.pay = raising  # type: ignore[method-assign]
    worker = InstallmentScheduler(
        _reads_failing(s, error, *reads),
        s.charger,
        s.clock,
        worker_id="w-2",
        storage_unreachable=unreachable,
        **options,
    )
    with caplog.at_level(logging.INFO):
        stats = await worker.run_once()
    assert "hunter2" not in caplog.text
    records = pass_records(caplog.records, "payorch.scheduler")
    return stats, [r for r in records if r[0] >= logging.WARNING]


@pytest.fixture(params=[0, 1], ids=["outage", "fault"])
def error(request: pytest.FixtureRequest) -> BaseException:
    """The database not reached, or a fault: raised afresh for each test."""
    return outage_then_fault()[request.param]


async def test_a_charge_that_raises_in_a_database_outage_is_one_line_and_a_fault_its_traceback(
    s, caplog, error
):
    # An outage beginning mid-pass fails every charge of the pass: one warning line
    # each, as a failed pass's, not a traceback each.
    s.clock.advance(30 * DAY.total_seconds())

    stats, logged = await _failures_logged(s, caplog, error, charges=True)

    assert counted(stats) == {"claimed": 1, "errors": 1}
    assert logged == [logged_as(f"charging installment {s.plan.installments[1].id}", error)]


async def test_a_plan_read_again_after_a_failed_charge_in_an_outage_is_one_line(s, caplog, error):
    s.clock.advance(30 * DAY.total_seconds())

    _, logged = await _failures_logged(s, caplog, error, reads=("get",), charges=True)

    assert logged == [
        logged_as(f"charging installment {s.plan.installments[1].id}", error),
        logged_as(f"reading plan {s.plan.id} again", error),
    ]


async def test_claimed_plans_unread_in_an_outage_are_one_line(s, caplog, error):
    s.clock.advance(30 * DAY.total_seconds())

    stats, logged = await _failures_logged(s, caplog, error, reads=("get_many",))

    assert counted(stats) == {"claimed": 1, "errors": 1}
    assert logged == [logged_as("reading 1 claimed plans", error)]


async def test_a_plan_claimed_again_in_a_pass_unread_in_an_outage_is_one_line(s, caplog, error):
    # Claims of one installment each: the plan's second, claimed while its first is
    # charged, is read again after it (and that read fails).
    s.clock.advance(60 * DAY.total_seconds())

    stats, logged = await _failures_logged(
        s, caplog, error, reads=("get",), batch_size=1, concurrency=2
    )

    assert counted(stats) == {"claimed": 2, "paid": 1, "errors": 1}
    assert logged == [logged_as(f"reading claimed plan {s.plan.id}", error)]
