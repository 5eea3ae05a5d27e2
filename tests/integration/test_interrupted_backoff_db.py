"""The reconciler's storage query backs off a payment left PROCESSING whose lookups
tell nothing, on SQLite and PostgreSQL (tests/unit/test_interrupted_backoff.py, in
memory): it is listed 5 minutes after it was left, then 5 minutes and an hour after each
lookup that could not tell, not at every pass 5 minutes after the last."""

from __future__ import annotations

from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.integration.helpers import left_processing, make_container


async def test_an_interrupted_payment_whose_lookups_tell_nothing_backs_off(database_url, clock):
    container = await make_container(database_url, clock)
    try:
        await left_processing(container)
        sim = container.simulated["simulated"]
        left_at = clock.monotonic()
        asked: list[int] = []

        async def unanswered(request, processor_payment_id):
            asked.append(round(clock.monotonic() - left_at))
            return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")

        sim.lookup = unanswered
        for _ in range(90):  # a pass a minute for an hour and a half
            clock.advance(60)
            await container.payments.reconcile_due()

        assert asked == [300, 600, 4200]
        (payment,) = await container.payments.list("m_1", page_size=10, after=None)
        assert payment.status is PaymentStatus.PROCESSING
        assert payment.steps[0].status is StepStatus.PENDING
        assert sim.ledger.charges_total == 0
    finally:
        await container.close()
