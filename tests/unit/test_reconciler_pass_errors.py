"""A reconciler pass goes on past a payment whose work raises.

Before, an exception that was no processor's answer (a bug, stored data it could not
read, a write refused) ended `reconcile_due`: every payment listed after it waited for
the next pass, and a payment that always raised held them back every pass. Now it is
logged once, counted and backed off as a payment whose lookups could not tell, and the
others are settled. The database unreachable still ends the pass: every payment after
it would fail the same way.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from payorch.app.observability import NullObserver, Observers
from payorch.app.payment_observation import PaymentObservation
from payorch.app.ports import UnreadablePayment
from payorch.domain.payment import PaymentStatus
from tests.fakes.memory import FakePaymentRepository
from tests.unit.test_recovery_scenarios import World

CARD = "4242424242424242"


class StorageDown(ConnectionError):
    """Stands for the database unreachable (adapters/persistence/availability.py)."""


class Counted(NullObserver):
    def __init__(self) -> None:
        self.failed = 0

    def reconcile_failed(self) -> None:
        self.failed += 1


def world(counted: Counted, *, outage: bool = False) -> World:
    w = World(max_retries=0)
    # The service as bootstrap builds it: told which errors mean the database is gone.
    w.service._observe = PaymentObservation(Observers([counted]))
    w.service._storage_unreachable = lambda exc: isinstance(exc, StorageDown)
    return w


async def three_unknown(w: World) -> list[str]:
    """Three payments whose answers were lost, the first the oldest (listed first)."""
    w.sim.inject("lost_response", "lost_response", "lost_response")
    ids = []
    for n in range(3):
        payment = await w.pay(f"r{n}")
        assert payment.status is PaymentStatus.UNKNOWN
        ids.append(payment.id)
        w.clock.advance(1)
    w.clock.advance(60)  # all due
    return ids


def poisoned(w: World, payment_id: str, exc: Exception) -> None:
    real = w.router.reconcile

    async def reconcile(payment, step, **kwargs):
        if payment.id == payment_id:
            raise exc
        return await real(payment, step, **kwargs)

    w.router.reconcile = reconcile


def reconciler_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "payorch.reconciler" and r.levelno >= logging.ERROR
    ]


async def test_a_payment_whose_work_raises_is_backed_off_and_the_others_are_settled(
    caplog: pytest.LogCaptureFixture,
):
    counted = Counted()
    w = world(counted)
    poison, *good = await three_unknown(w)
    poisoned(w, poison, ValueError(f"corrupt step data near {CARD}"))

    with caplog.at_level(logging.INFO):
        stats = await w.service.reconcile_pass()

    assert (stats.settled, stats.errors) == (2, 1)
    for payment_id in good:
        assert (await w.service.get(payment_id, None)).status is PaymentStatus.SUCCEEDED
    kept = await w.service.get(poison, None)
    assert kept.status is PaymentStatus.UNKNOWN
    # Backed off as a lookup that could not tell: the next after 1 min is 5 min.
    assert kept.next_reconcile_at == w.clock.now() + timedelta(minutes=5)
    (logged,) = reconciler_errors(caplog)  # once, no traceback, no card number
    assert logged.exc_info is None
    assert poison in logged.getMessage() and "ValueError" in logged.getMessage()
    assert CARD not in caplog.text
    assert counted.failed == 1

    caplog.clear()
    w.clock.advance(60)
    assert (await w.service.reconcile_pass()).errors == 0  # not due again yet
    w.clock.advance(240)
    assert (await w.service.reconcile_pass()).errors == 1  # due on its back-off: again
    assert counted.failed == 2


async def test_a_storage_error_on_the_payments_save_backs_it_off_and_the_pass_goes_on():
    counted = Counted()
    w = world(counted)
    poison, *good = await three_unknown(w)

    async def refused(payment_id: str) -> None:
        assert payment_id == poison
        raise RuntimeError("value too long for type character varying(64)")

    w.uow.saved_first(refused)  # the pass's first save: the poison payment's

    stats = await w.service.reconcile_pass()

    assert (stats.settled, stats.errors) == (2, 1)
    for payment_id in good:
        assert (await w.service.get(payment_id, None)).status is PaymentStatus.SUCCEEDED
    kept = await w.service.get(poison, None)
    assert kept.status is PaymentStatus.UNKNOWN and kept.steps[0].attempts[-1].operation != (
        "lookup"
    )  # what its failed work found was not stored
    assert kept.next_reconcile_at == w.clock.now() + timedelta(minutes=5)


async def test_the_database_unreachable_ends_the_pass_at_once():
    counted = Counted()
    w = world(counted)
    first, *rest = await three_unknown(w)
    asked: list[str] = []
    real = w.router.reconcile

    async def reconcile(payment, step, **kwargs):
        asked.append(payment.id)
        if payment.id == first:
            raise StorageDown("connection refused")
        return await real(payment, step, **kwargs)

    w.router.reconcile = reconcile

    with pytest.raises(StorageDown):
        await w.service.reconcile_pass()

    assert asked == [first]  # the others were not worked on, to fail the same way
    assert counted.failed == 0
    for payment_id in rest:
        assert (await w.service.get(payment_id, None)).status is PaymentStatus.UNKNOWN


async def test_a_payment_the_listing_cannot_read_is_skipped_counted_and_the_others_settled(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    # The repository lists it in place of a payment (PaymentRepository.list_unresolved):
    # nothing is claimed, reconciled or written for it.
    counted = Counted()
    w = world(counted)
    unreadable, *good = await three_unknown(w)
    real = FakePaymentRepository.list_unresolved

    async def listed(self, **kwargs):
        return [
            UnreadablePayment(p.id, ValueError(f"{CARD!r} is not a valid StepStatus"))
            if p.id == unreadable
            else p
            for p in await real(self, **kwargs)
        ]

    monkeypatch.setattr(FakePaymentRepository, "list_unresolved", listed)
    before = await w.service.get(unreadable, None)

    with caplog.at_level(logging.INFO):
        stats = await w.service.reconcile_pass()

    assert (stats.settled, stats.errors) == (2, 1)
    for payment_id in good:
        assert (await w.service.get(payment_id, None)).status is PaymentStatus.SUCCEEDED
    after = await w.service.get(unreadable, None)
    assert (after.version, after.next_reconcile_at) == (before.version, before.next_reconcile_at)
    (logged,) = reconciler_errors(caplog)
    assert logged.exc_info is None
    assert unreadable in logged.getMessage() and "cannot be read" in logged.getMessage()
    assert CARD not in caplog.text
    assert counted.failed == 1
