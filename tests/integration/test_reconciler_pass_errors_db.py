"""A payment whose reconciling raises is backed off through the real repositories on
SQLite and PostgreSQL while the pass settles the others (tests/unit/
test_reconciler_pass_errors.py, in memory), and the container tells the service which
errors mean the database is unreachable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from payorch.adapters.persistence.availability import storage_unreachable
from payorch.domain.payment import PaymentStatus
from tests.fakes.dying import ServerDied
from tests.integration.helpers import core_request, make_container


async def test_a_payment_whose_work_raises_is_backed_off_and_the_others_settle(database_url, clock):
    container = await make_container(database_url, clock)
    try:
        assert container.payments._storage_unreachable is storage_unreachable
        sim = container.simulated["simulated"]
        real_authorize = sim.authorize

        async def dies(request):
            raise ServerDied("the server died")

        sim.authorize = dies
        for n in range(3):  # left PROCESSING by a dying server, the first the oldest
            with pytest.raises(ServerDied):
                await container.payments.create(core_request(f"r-{n}"), deadline_s=None)
            clock.advance(1)
        sim.authorize = real_authorize
        listed = await container.payments.list("m_1", page_size=10, after=None)
        ids = [p.id for p in sorted(listed, key=lambda p: p.created_at)]
        poison = ids[0]
        router = container.payments._router
        real_reconcile = router.reconcile

        async def reconcile(payment, step, **kwargs):
            if payment.id == poison:
                raise ValueError("a bug in the plan's code")
            return await real_reconcile(payment, step, **kwargs)

        router.reconcile = reconcile
        clock.advance(300)

        stats = await container.payments.reconcile_pass()

        assert (stats.settled, stats.errors) == (2, 1)
        for payment_id in ids[1:]:
            settled = await container.payments.get(payment_id, None)
            assert settled.status is PaymentStatus.FAILED  # never charged: looked up
        kept = await container.payments.get(poison, None)
        assert kept.status is PaymentStatus.PROCESSING
        assert kept.next_reconcile_at == clock.now() + timedelta(minutes=5)
    finally:
        await container.close()
