"""What a unit of work writes lasts only if it commits: on SQLite, on PostgreSQL, and in
the in-memory fake the unit tests run on. A fake that kept what the database rolls back
would let a unit test pass on a write the service never makes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.installment_uow import SqlAlchemyInstallmentUnitOfWorkFactory
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.app.installment_ports import RetryRequest
from payorch.app.ports import RefundRequest, UnitOfWorkFactory
from payorch.domain.installments import InstallmentStatus
from tests.conftest import _truncate, cipher_for_tests
from tests.fakes.installments import FakeInstallmentUnitOfWork, FakePlans
from tests.fakes.memory import FakeUnitOfWorkFactory
from tests.integration.test_payment_writes import new_payment, settle
from tests.unit.test_installment_plan import PAID, claim, new_plan

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
REFUND = RefundRequest(500, ((0, 500),), asked_minor=500)


STORES = ["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def database(
    request: pytest.FixtureRequest, tmp_path
) -> AsyncIterator[SqlAlchemyUnitOfWorkFactory]:
    """The payments unit of work on a migrated, empty database of the fixture's kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'payorch.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
        await _truncate(url)
    engine = create_engine(url)
    await migrate(engine)
    real = SqlAlchemyUnitOfWorkFactory(engine)
    try:
        yield real
    finally:
        await real.close()
        await engine.dispose()


@pytest.fixture(params=STORES)
async def factory(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[UnitOfWorkFactory]:
    if request.param == "fake":
        yield FakeUnitOfWorkFactory()
        return
    async with database(request, tmp_path) as real:
        yield real


class Leave(Exception):
    pass


async def committed_payment(factory: UnitOfWorkFactory) -> str:
    """Payment 1 with its events, a refund, a seen event and a customer, all committed."""
    p = new_payment(1)
    async with factory() as uow:
        await uow.payments.add(p)
        settle(p)
        await uow.payments.save(p)
        assert await uow.payments.add_refund(p.id, "refund-0", REFUND, NOW)
        assert await uow.inbound_events.remember("evt_kept", "stripe", NOW)
        await uow.customers.claim("m_1", ["cus_kept"], NOW)
        await uow.commit()
    return p.id


async def write_everything(factory, uow, payment_id: str) -> None:
    """One write through every method that writes, none committed."""
    p = await uow.payments.get(payment_id, None)
    p.final_error_message = "changed"
    p.captured(1)  # an event
    await uow.payments.save(p)
    await uow.payments.add(new_payment(2))
    assert await uow.payments.add_refund(payment_id, "refund-1", REFUND, NOW)
    assert await uow.inbound_events.remember("evt_new", "stripe", NOW)
    await uow.inbound_events.forget("evt_kept")
    assert await uow.customers.claim("m_1", ["cus_new"], NOW) == {"cus_new": "m_1"}


async def assert_only_the_committed(factory, payment_id: str, events: list[str]) -> None:
    async with factory() as uow:
        p = await uow.payments.get(payment_id, None)
        assert p.version == 1 and p.final_error_message == "done"
        assert await uow.payments.get("pay_w00002", None) is None
        assert await uow.payments.get_by_request("m_1", "req-2") is None
        assert await uow.payments.refund_request(payment_id, "refund-1") is None
        assert (await uow.payments.refund_request(payment_id, "refund-0")).amount_minor == 500
        assert await uow.payments.refund_count(payment_id) == 1
        assert [e.name for e in await uow.payments.events_of(payment_id)] == events
        assert await uow.inbound_events.remember("evt_new", "stripe", NOW)
        assert not await uow.inbound_events.remember("evt_kept", "stripe", NOW)
        assert await uow.customers.claim("m_2", ["cus_new", "cus_kept"], NOW) == {
            "cus_new": "m_2",
            "cus_kept": "m_1",
        }


@pytest.mark.parametrize("leave", ["without committing", "by an exception"])
async def test_what_a_unit_of_work_did_not_commit_is_gone(factory, leave):
    payment_id = await committed_payment(factory)
    async with factory() as uow:
        events = [e.name for e in await uow.payments.events_of(payment_id)]
    assert events, "settle raised events"

    with pytest.raises(Leave) if leave == "by an exception" else contextlib.nullcontext():
        async with factory() as uow:
            await write_everything(factory, uow, payment_id)
            if leave == "by an exception":
                raise Leave

    await assert_only_the_committed(factory, payment_id, events)


async def test_what_a_unit_of_work_writes_after_its_commit_is_gone_without_another(factory):
    p = new_payment(1)
    async with factory() as uow:
        await uow.payments.add(p)
        await uow.commit()
        settle(p)
        await uow.payments.save(p)
        assert await uow.payments.add_refund(p.id, "refund-0", REFUND, NOW)
        assert await uow.inbound_events.remember("evt_kept", "stripe", NOW)
        await uow.customers.claim("m_1", ["cus_kept"], NOW)
        await uow.commit()
        events = [e.name for e in await uow.payments.events_of(p.id)]
        await write_everything(factory, uow, p.id)

    await assert_only_the_committed(factory, p.id, events)


@pytest.fixture(params=STORES)
async def plans(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[tuple[Any, str]]:
    """A unit of work factory of installments, and the id of a plan committed in it."""
    plan = new_plan()
    if request.param == "fake":
        tables = FakePlans(plan)
        yield (lambda: FakeInstallmentUnitOfWork(plans=tables)), plan.id
        return
    async with database(request, tmp_path) as payments_uow:
        real = SqlAlchemyInstallmentUnitOfWorkFactory(payments_uow, cipher_for_tests())
        async with real() as uow:
            await uow.plans.add(plan)
            await uow.commit()
        yield real, plan.id


async def pay_the_second(uow: Any, plan_id: str) -> None:
    """Installment 2 claimed and paid, saved (an event with it), and a retry request
    stored: none committed."""
    plan = await uow.plans.get(plan_id, None)
    attempt = claim(plan, 2)
    assert plan.record(plan.installments[1].id, attempt, PAID, NOW)
    await uow.plans.save(plan)
    retry = RetryRequest(plan.installments[1].id, attempt)
    await uow.plans.add_retry_request("m_1", "rt-1", retry, NOW)


async def assert_the_plan_as_committed(factory: Any, plan_id: str, version: int) -> None:
    async with factory() as uow:
        plan = await uow.plans.get(plan_id, None)
        assert plan.version == version
        second = plan.installments[1]
        assert (second.status, second.attempts, second.charges) == (
            InstallmentStatus.PENDING,
            0,
            [],
        )
        assert await uow.plans.get_retry_request("m_1", "rt-1") is None


@pytest.mark.parametrize("leave", ["without committing", "by an exception"])
async def test_what_a_unit_of_work_did_not_commit_on_a_plan_is_gone(plans, leave):
    factory, plan_id = plans

    with pytest.raises(Leave) if leave == "by an exception" else contextlib.nullcontext():
        async with factory() as uow:
            await pay_the_second(uow, plan_id)
            if leave == "by an exception":
                raise Leave

    await assert_the_plan_as_committed(factory, plan_id, 0)


async def test_what_a_unit_of_work_writes_on_a_plan_after_its_commit_is_gone_without_another(
    plans,
):
    factory, plan_id = plans
    async with factory() as uow:
        plan = await uow.plans.get(plan_id, None)
        plan.cancel_reason = "kept"
        await uow.plans.save(plan)
        await uow.commit()
        await pay_the_second(uow, plan_id)

    await assert_the_plan_as_committed(factory, plan_id, 1)
