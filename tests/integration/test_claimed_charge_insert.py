"""An installment's charge is inserted only while its claim admits it, decided by the
payment's gate insert itself (repository.claimed_insert), on SQLite and PostgreSQL: a
plan cancelled once the claim's lease ran out refuses it, whatever its worker read
before; a duplicate request id is still a duplicate; and on PostgreSQL the insert and
a cancel's save of the plan wait for one another instead of crossing, and a takeover's
withdrawal, waiting for the insert, looks again and finds its charge."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import select

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.installment_uow import SqlAlchemyInstallmentUnitOfWorkFactory
from payorch.adapters.persistence.payment_writes import (
    AsyncpgPaymentWriter,
    PaymentStatements,
    insert_write,
)
from payorch.adapters.persistence.tables import payments
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.app.installments import InstallmentCharger, RecordCharge
from payorch.app.ports import ChargeClaim, DuplicateRequest
from payorch.domain.installments import (
    ChargeOutcome,
    InstallmentPlan,
    InstallmentStatus,
    PlanStatus,
    charge_request_id,
)
from tests.conftest import _truncate, cipher_for_tests
from tests.integration.test_payment_writes import count, new_payment
from tests.unit.test_installment_plan import new_plan

LEASE = timedelta(seconds=120)


@pytest.fixture
async def uow(database_url):
    engine = create_engine(database_url)
    await migrate(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    yield factory
    await factory.close()
    await engine.dispose()


async def claimed(uow) -> tuple[InstallmentPlan, ChargeClaim]:
    """A stored plan, its second installment claimed by the scheduler's query when due."""
    plans = SqlAlchemyInstallmentUnitOfWorkFactory(uow, cipher_for_tests())
    plan = new_plan()
    now = plan.installments[1].due_at
    async with plans() as tx:
        await tx.plans.add(plan)
        await tx.commit()
    async with plans() as tx:
        (claim,) = await tx.plans.claim_due(now=now, worker="w-1", lease_until=now + LEASE, limit=1)
        await tx.commit()
    return plan, ChargeClaim(plan.id, claim.installment_id, claim.attempt, now + LEASE)


async def cancel(uow, plan_id: str, at_s: float) -> None:
    """The plan cancelled `at_s` seconds after the claim, as the cancel saves it."""
    plans = SqlAlchemyInstallmentUnitOfWorkFactory(uow, cipher_for_tests())
    async with plans() as tx:
        plan = await tx.plans.get(plan_id, None)
        assert plan is not None
        plan.cancel("order returned", plan.installments[1].due_at + timedelta(seconds=at_s))
        await tx.plans.save(plan)
        await tx.commit()


def charge_of(claim: ChargeClaim, n: int = 1):
    return new_payment(n, request_id=charge_request_id(claim.installment_id, claim.attempt))


async def test_a_charge_whose_claim_holds_is_inserted(uow):
    _, claim = await claimed(uow)

    await uow.insert_payment(charge_of(claim), only_if=claim)

    assert await uow.payment_by_request("m_1", charge_of(claim).request_id) is not None


async def test_a_charge_is_refused_once_its_plan_was_cancelled_past_the_claims_lease(uow):
    plan, claim = await claimed(uow)
    await cancel(uow, plan.id, at_s=LEASE.total_seconds() + 1)

    with pytest.raises(DuplicateRequest):
        await uow.insert_payment(charge_of(claim), only_if=claim)

    assert await uow.payment_by_request("m_1", charge_of(claim).request_id) is None
    assert await count(uow, payments) == 0


async def test_a_cancel_inside_the_lease_leaves_the_claim_its_charge(uow):
    plan, claim = await claimed(uow)
    await cancel(uow, plan.id, at_s=10)

    await uow.insert_payment(charge_of(claim), only_if=claim)

    assert await count(uow, payments) == 1


async def test_a_claim_renewed_since_its_worker_read_it_admits_nothing_on_a_cancelled_plan(uow):
    """The claim taken over (its lease renewed) after a cancel inside the first lease:
    the first worker's charge is no longer admitted, the lease it knew is not the
    installment's."""
    plan, claim = await claimed(uow)
    await cancel(uow, plan.id, at_s=10)
    stale = ChargeClaim(claim.plan_id, claim.installment_id, claim.attempt, claim.lease_until)
    renewed = ChargeClaim(
        claim.plan_id, claim.installment_id, claim.attempt, claim.lease_until + LEASE
    )

    with pytest.raises(DuplicateRequest):
        await uow.insert_payment(charge_of(claim), only_if=renewed)
    await uow.insert_payment(charge_of(claim), only_if=stale)
    assert await count(uow, payments) == 1


async def test_a_taken_request_id_under_a_claim_is_still_a_duplicate_to_replay(uow):
    _, claim = await claimed(uow)
    first = charge_of(claim, 1)
    await uow.insert_payment(first, only_if=claim)

    with pytest.raises(DuplicateRequest):
        await uow.insert_payment(charge_of(claim, 2), only_if=claim)

    stored = await uow.payment_by_request("m_1", first.request_id)
    assert stored is not None and stored.id == first.id


async def test_a_refused_charge_among_concurrent_writes_fails_alone(uow):
    """In a batch (SQLite's group commit, PostgreSQL's shared transaction) the refused
    insert fails alone; the plain payments beside it land."""
    plan, claim = await claimed(uow)
    await cancel(uow, plan.id, at_s=LEASE.total_seconds() + 1)
    plain = [new_payment(n) for n in range(10, 30)]

    results = await asyncio.gather(
        *(uow.insert_payment(p) for p in plain[:10]),
        uow.insert_payment(charge_of(claim), only_if=claim),
        *(uow.insert_payment(p) for p in plain[10:]),
        return_exceptions=True,
    )

    assert [type(r).__name__ for r in results if r is not None] == ["DuplicateRequest"]
    assert await count(uow, payments) == len(plain)


def _as_stored(
    plan_status: PlanStatus,
    status: InstallmentStatus,
    attempts: int,
    lease_s: float | None,
    changed_s: float,
) -> InstallmentPlan:
    """A plan whose second installment is as given: its lease `lease_s` and the plan's
    last change `changed_s` seconds after the installment's due date."""
    plan = new_plan()
    inst = plan.installments[1]
    at = inst.due_at
    inst.status, inst.attempts = status, attempts
    inst.lease_until = None if lease_s is None else at + timedelta(seconds=lease_s)
    plan.status, plan.updated_at = plan_status, at + timedelta(seconds=changed_s)
    return plan


PS, IS = PlanStatus, InstallmentStatus
# (plan status, installment status, attempts, its lease, the plan's last change, the
# claim's lease; whether the charge is admitted).
CASES = [
    (PS.ACTIVE, IS.PROCESSING, 1, 120, 0, 120, True),
    (PS.ACTIVE, IS.PENDING, 0, None, 0, 120, True),  # given back on a breach: the charger's
    (PS.BREACH, IS.PROCESSING, 1, 120, 500, 120, True),
    (PS.CANCELLED, IS.PROCESSING, 1, 120, 10, 120, True),  # cancelled inside the lease
    (PS.CANCELLED, IS.PROCESSING, 1, 120, 120, 120, False),  # as the lease ran out
    (PS.CANCELLED, IS.PROCESSING, 1, 120, 121, 120, False),
    (PS.CANCELLED, IS.PROCESSING, 1, 300, 10, 120, False),  # taken over: lease renewed
    (PS.CANCELLED, IS.PROCESSING, 2, 120, 10, 120, False),  # a later attempt
    (PS.CANCELLED, IS.CANCELLED, 1, None, 10, 120, False),  # withdrawn
    (PS.CANCELLED, IS.PROCESSING, 1, None, 10, None, False),  # a claim without a lease
]


@pytest.mark.parametrize(
    ("plan_status", "status", "attempts", "lease", "changed", "known", "admitted"), CASES
)
async def test_the_insert_admits_a_charge_exactly_when_the_plan_says_it_does(
    uow, plan_status, status, attempts, lease, changed, known, admitted
):
    """The SQL guard and InstallmentPlan.admits_charge (which the in-memory fakes ask)
    agree, case by case."""
    plan = _as_stored(plan_status, status, attempts, lease, changed)
    async with SqlAlchemyInstallmentUnitOfWorkFactory(uow, cipher_for_tests())() as tx:
        await tx.plans.add(plan)
        await tx.commit()
    inst = plan.installments[1]
    knew = None if known is None else inst.due_at + timedelta(seconds=known)
    claim = ChargeClaim(plan.id, inst.id, 1, knew)

    try:
        await uow.insert_payment(charge_of(claim), only_if=claim)
        inserted = True
    except DuplicateRequest:
        inserted = False

    assert inserted is admitted
    assert plan.admits_charge(inst.id, 1, knew) is admitted


def test_a_plain_payments_guard_is_the_plain_gate_insert():
    """Only an installment's charge pays for the claim's look: any other payment's first
    statement is the gate insert as it was, VALUES and ON CONFLICT DO NOTHING."""
    engine = create_engine("sqlite:///:memory:")
    statements = PaymentStatements.for_dialect(engine.dialect)
    plain = insert_write(statements, new_payment(1))
    assert plain.guard[0] is statements.insert_payment
    assert " VALUES (" in plain.guard[0].sql and "EXISTS" not in plain.guard[0].sql
    claim = ChargeClaim("ip_1", "ip_1_2", 1, None)
    guarded = insert_write(statements, new_payment(1), claim)
    assert guarded.guard[0] is statements.insert_claimed
    assert guarded.guard[1][: len(plain.guard[1])] == plain.guard[1]


# -- PostgreSQL: the insert and a cancel in two transactions -----------------------------


@dataclass
class PgClaim:
    """A claimed installment on PostgreSQL, and a connection of its own to watch locks."""

    uow: SqlAlchemyUnitOfWorkFactory
    plans: SqlAlchemyInstallmentUnitOfWorkFactory
    watcher: asyncpg.Connection
    plan: InstallmentPlan
    claim: ChargeClaim


@pytest.fixture
async def pg(postgres_database):
    await _truncate(postgres_database)
    engine = create_engine(postgres_database)
    await migrate(engine)
    factory = SqlAlchemyUnitOfWorkFactory(engine)
    assert isinstance(factory.writer, AsyncpgPaymentWriter)
    watcher = await asyncpg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    plan, claim = await claimed(factory)
    yield PgClaim(
        factory,
        SqlAlchemyInstallmentUnitOfWorkFactory(factory, cipher_for_tests()),
        watcher,
        plan,
        claim,
    )
    await watcher.close()
    await factory.close()
    await engine.dispose()


async def waiting_on_a_lock(watcher: asyncpg.Connection) -> None:
    """Returns once another session of this database waits for a row lock."""
    for _ in range(100_000):
        waiting = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
    raise AssertionError("no session came to wait for the lock")


@pytest.mark.postgres
async def test_an_insert_behind_an_uncommitted_cancel_waits_and_then_is_refused(pg):
    async with pg.plans() as cancelling:
        stored = await cancelling.plans.get(pg.plan.id, None)
        assert stored is not None
        stored.cancel("order returned", pg.claim.lease_until + timedelta(seconds=1))
        await cancelling.plans.save(stored)  # the plan's row locked, not committed yet

        inserting = asyncio.ensure_future(
            pg.uow.insert_payment(charge_of(pg.claim), only_if=pg.claim)
        )
        await waiting_on_a_lock(pg.watcher)
        assert not inserting.done()
        await cancelling.commit()

    with pytest.raises(DuplicateRequest):
        await inserting
    assert await count(pg.uow, payments) == 0


@pytest.mark.postgres
async def test_a_cancel_behind_an_uncommitted_insert_waits_and_the_charge_stands(pg):
    async with pg.uow() as inserting:
        await inserting.payments.add(charge_of(pg.claim), only_if=pg.claim)  # FOR SHARE held

        cancelling = asyncio.ensure_future(
            cancel(pg.uow, pg.plan.id, at_s=LEASE.total_seconds() + 1)
        )
        await waiting_on_a_lock(pg.watcher)
        assert not cancelling.done()
        await inserting.commit()

    await cancelling
    async with pg.uow.engine.connect() as conn:
        found = (await conn.execute(select(payments.c.request_id))).scalars().all()
    assert found == [charge_of(pg.claim).request_id]
    async with pg.plans() as tx:
        after = await tx.plans.get(pg.plan.id, None)
    assert after is not None and after.status.value == "cancelled"


@pytest.mark.postgres
async def test_a_takeover_does_not_withdraw_a_claim_whose_charge_an_uncommitted_insert_started(pg):
    """Worker A's claim, left to it by a cancel inside its lease; A paused past the
    lease. A's gate insert is admitted under the lease it knew (its snapshot predates
    the takeover) and is not committed yet when the scheduler (B) takes the claim over
    and finds no payment of the attempt: WITHDRAWN. B's save waits for A's lock on the
    plan's row; once A commits, B looks again under that lock, finds A's charge, and
    does not record the installment cancelled uncharged: the claim is held, so the
    charge is recorded once it settles, also if A dies at the processor."""
    await cancel(pg.uow, pg.plan.id, at_s=10)
    lapsed = pg.claim.lease_until
    assert lapsed is not None
    clock = ManualClock(lapsed)
    # No payments service: on a cancelled plan the charger makes no charge.
    charger = InstallmentCharger(pg.plans, None, clock)  # type: ignore[arg-type]
    inst_id, attempt = pg.claim.installment_id, pg.claim.attempt
    request = InstallmentCharger._request(pg.plan, pg.plan.installment(inst_id), attempt)
    charge = dataclasses.replace(charge_of(pg.claim), fingerprint=request.fingerprint())

    async with pg.uow() as inserting:
        await inserting.payments.add(charge, only_if=pg.claim)  # admitted; FOR SHARE held

        async with pg.plans() as tx:  # B takes the claim over: A's lease ran out
            (taken,) = await tx.plans.claim_due(
                now=lapsed, worker="w-2", lease_until=lapsed + LEASE, limit=1
            )
            await tx.commit()
        assert (taken.installment_id, taken.attempt, taken.reclaimed) == (inst_id, attempt, True)
        async with pg.plans() as tx:
            seen = await tx.plans.get(pg.plan.id, None)
        assert seen is not None
        result = await charger.pay(seen, inst_id, attempt)
        assert result.outcome is ChargeOutcome.WITHDRAWN  # A's payment not committed yet

        recording = asyncio.ensure_future(
            charger.record_many([RecordCharge(seen, inst_id, attempt, result)])
        )
        await waiting_on_a_lock(pg.watcher)
        assert not recording.done()
        await inserting.commit()

    await recording
    async with pg.plans() as tx:
        after = await tx.plans.get(pg.plan.id, None)
    assert after is not None and after.status is PlanStatus.CANCELLED
    inst = after.installment(inst_id)
    stored = await pg.uow.payment_by_request("m_1", charge.request_id)
    assert stored is not None and stored.id == charge.id
    assert (inst.status, inst.attempts, inst.charges) == (
        InstallmentStatus.PROCESSING,
        attempt,
        [],
    ), "money taken by A's charge is never on an installment recorded withdrawn"
    assert inst.lease_until is not None and inst.lease_until > lapsed + LEASE, "held"
