"""Two reconcilers (two replicas' passes, or a pass and `payorch reconcile`) never work
on one payment at once, on SQLite and PostgreSQL: each claims a payment before it asks
the processor about it (PaymentRepository.claim, a conditional update of its version and
next lookup), and the other's query no longer lists it, or its claim matches no row.

Before, both listed the payment and both asked the processor: a pass slower than 5
minutes on an interrupted payment, or two passes at once, looked it up twice, cancelled
its intent twice, and one of the two saves was lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from payorch.bootstrap import Container
from payorch.domain.payment import Payment, PaymentStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.conftest import _truncate
from tests.integration.helpers import left_processing, make_container
from tests.integration.test_claimed_charge_insert import waiting_on_a_lock


async def test_a_second_reconciler_leaves_alone_a_payment_the_first_is_working_on(
    database_url, clock
):
    first = await make_container(database_url, clock)
    second = await make_container(database_url, clock)
    try:
        await left_processing(first)
        clock.advance(301)
        asked_by_second: list[str] = []
        second_settled: list[int] = []

        async def second_asked(request, processor_payment_id):
            asked_by_second.append(request.payment_id)
            return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")

        async def first_asked(request, processor_payment_id):
            # While the first reconciler waits for the processor, as long as the call
            # may take, the second one runs its pass.
            clock.advance(request.timeout_s)
            second_settled.append(await second.payments.reconcile_due())
            return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")

        first.simulated["simulated"].lookup = first_asked
        second.simulated["simulated"].lookup = second_asked

        assert await first.payments.reconcile_due() == 0
        assert second_settled == [0]
        assert asked_by_second == []
        (stored,) = await first.payments.list("m_1", page_size=10, after=None)
        assert stored.status is PaymentStatus.PROCESSING
        assert [a.operation for a in stored.steps[0].attempts] == ["lookup"]  # one, the first's
    finally:
        await second.close()
        await first.close()


async def listed(container: Container, now) -> Payment:
    async with container.uow() as uow:
        (payment,) = await uow.payments.list_unresolved(
            now=now, processing_before=now - timedelta(minutes=5), limit=10
        )
    return payment


@pytest.mark.postgres
async def test_of_two_reconcilers_that_listed_a_payment_only_the_first_to_claim_it_takes_it(
    postgres_database, clock
):
    """Both listed it at once (the same version): the second's claim waits for the
    first's uncommitted one (a row lock), then matches no row."""
    await _truncate(postgres_database)
    first = await make_container(postgres_database, clock)
    second = await make_container(postgres_database, clock)
    watcher = await asyncpg.connect(postgres_database)
    try:
        await left_processing(first)
        clock.advance(301)
        now = clock.now()
        mine, theirs = await listed(first, now), await listed(second, now)
        until = now + timedelta(minutes=5)

        async with first.uow() as claiming:
            assert await claiming.payments.claim(mine, until)  # the row locked, not committed

            async def second_claims() -> bool:
                async with second.uow() as uow:
                    taken = await uow.payments.claim(theirs, until)
                    await uow.commit()
                return taken

            other = asyncio.ensure_future(second_claims())
            await waiting_on_a_lock(watcher)
            assert not other.done()
            await claiming.commit()

        assert await other is False
        async with second.uow() as uow:  # and no pass lists it while the claim holds
            assert (
                await uow.payments.list_unresolved(
                    now=now, processing_before=now - timedelta(minutes=5), limit=10
                )
                == []
            )
    finally:
        await watcher.close()
        await second.close()
        await first.close()
