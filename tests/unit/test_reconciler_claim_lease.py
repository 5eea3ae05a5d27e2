"""A payment whose outcome is unknown (UNKNOWN: due for a lookup, not PROCESSING) is held
by the reconciler's pass that claimed it until RECONCILE_LEASE from the claim: another
pass (another replica's, or `payorch reconcile`) running meanwhile does not list it, so
the processor is asked once and its answer recorded once.

Only the claim's next lookup keeps such a payment off the list (a PROCESSING one is also
kept off by the time it was touched): a lease that ended before the claim was taken left
it due at once for any other pass."""

from __future__ import annotations

from payorch.app.payments import RECONCILE_LEASE, STALE_PROCESSING
from payorch.app.ports import ChargeRequest
from payorch.domain.payment import PaymentStatus
from payorch.domain.results import ProcessorResponse
from tests.unit.test_adapter_raises import unknown_payments
from tests.unit.test_recovery_scenarios import World


async def test_a_second_pass_leaves_alone_an_unknown_payment_the_first_pass_is_looking_up():
    w = World()
    (payment,) = await unknown_payments(w, 1)
    real = w.sim.lookup
    asked: list[str] = []
    second_settled: list[int] = []
    listed_meanwhile: list[list[str]] = []

    async def lookup(request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        asked.append(request.payment_id)
        if len(asked) == 1:  # the first pass's call: the second pass runs while it waits
            now = w.clock.now()
            async with w.uow() as uow:
                due = await uow.payments.list_unresolved(
                    now=now, processing_before=now - STALE_PROCESSING, limit=10
                )
            listed_meanwhile.append([p.id for p in due])
            second_settled.append(await w.service.reconcile_due())
        return await real(request, processor_payment_id)

    w.sim.lookup = lookup
    w.clock.advance(61)
    settled = await w.service.reconcile_due()

    assert listed_meanwhile == [[]]
    assert second_settled == [0]
    assert asked == [payment.id]  # once: the first pass's lookup
    assert settled == 1
    done = await w.service.get(payment.id, None)
    assert done.status is PaymentStatus.SUCCEEDED
    assert [a.operation for a in done.steps[0].attempts].count("lookup") == 1
    assert w.charges == 1


async def test_an_unknown_payment_claimed_by_a_pass_that_died_is_due_again_when_its_lease_ends():
    w = World()
    (payment,) = await unknown_payments(w, 1)
    w.clock.advance(61)
    async with w.uow() as uow:
        (listed,) = await uow.payments.list_unresolved(
            now=w.clock.now(), processing_before=w.clock.now() - STALE_PROCESSING, limit=10
        )
    taken, _ = await w.service._take(listed)  # the pass dies before it saves anything
    assert taken

    def due() -> list[str]:
        return [
            p.id
            for p in w.uow.store.values()
            if p.next_reconcile_at is not None and p.next_reconcile_at <= w.clock.now()
        ]

    assert due() == []
    w.clock.advance(RECONCILE_LEASE.total_seconds() - 1)
    assert await w.service.reconcile_due() == 0
    w.clock.advance(1)
    assert due() == [payment.id]
    assert await w.service.reconcile_due() == 1
    assert (await w.service.get(payment.id, None)).status is PaymentStatus.SUCCEEDED
