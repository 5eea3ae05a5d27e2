"""A run held to RUN_LIMIT_S is never taken by the reconciler's storage query, on SQLite
and PostgreSQL: the payment's row, stored PROCESSING at the insert, is not listed as
interrupted at any of the run's calls (tests/unit/test_run_limit.py, in memory)."""

from __future__ import annotations

import pytest

from payorch.domain.payment import Owed, PaymentStatus, StepStatus
from tests.integration.helpers import make_container
from tests.unit.test_run_limit import World


@pytest.mark.parametrize("deadline_s", [None, 86400.0], ids=["no deadline", "a day"])
async def test_a_long_split_is_not_listed_as_interrupted_while_its_run_goes_on(
    database_url, clock, deadline_s
):
    container = await make_container(database_url, clock)
    try:
        w = World(latency_s=29.0, call_timeout_s=30.0, clock=clock, uow=container.uow)
        payment = await w.pay_split(8, deadline_s)

        assert w.processor.taken == []
        stored = await w.service.get(payment.id, None)
        assert stored.status is PaymentStatus.FAILED and stored.owed is Owed.VOID
        assert [s.status for s in stored.steps][5] is StepStatus.FAILED

        for _ in range(3):  # two voids a pass, held to the run's limit too
            clock.advance(60)
            await w.service.reconcile_due()
        settled = await w.service.get(payment.id, None)
        assert [s.status for s in settled.steps][:5] == [StepStatus.VOIDED] * 5
    finally:
        await container.close()
