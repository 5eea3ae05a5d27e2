"""A refund the processor refused is over for its request_id.

Repeated under the same request_id (a caller's retry loop), it used to be sent again
each time, and each refusal added an attempt to the payment without bound (Stripe
stores a 4xx under its idempotency key and replays it for a day anyway). Now the
repeat replays the refusal and calls no one; the amount is refundable under a new
request_id.
"""

from __future__ import annotations

from payorch.domain.payment import PaymentStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.unit.test_split_execution import OK, World

DISPUTED = ProcessorResponse(
    ResponseKind.ERROR,
    http_status=400,
    error_type="invalid_request_error",
    code="charge_disputed",
    message="Charge ch_1 has been charged back; cannot issue a refund.",
)


class Refusing:
    """The simulated processor's refunds, refused while `refusing`."""

    def __init__(self, w: World) -> None:
        self.refusing = True
        self.calls: list[str] = []
        real = w.sim.refund

        async def refund(processor_payment_id, amount_minor, key, **kw):
            self.calls.append(key)
            if self.refusing:
                return DISPUTED
            return await real(processor_payment_id, amount_minor, key, **kw)

        w.sim.refund = refund


REFUSED = (
    "1000 of refund 'rf1' was refused by the processor (charge_disputed): nothing more is"
    " sent under this request_id; refund under a new one"
)


async def test_a_refused_refund_repeated_under_its_request_id_replays_the_refusal():
    w = World()
    p = await w.pay(("card", OK, None), total=2500)
    refunds = Refusing(w)

    first = await w.service.refund(p.id, "m_1", amount_minor=1000, request_id="rf1")
    assert first.final_error_message == REFUSED
    attempts = len(first.steps[0].attempts)

    for _ in range(3):
        again = await w.service.refund(p.id, "m_1", amount_minor=1000, request_id="rf1")
        assert again.final_error_message == REFUSED
        assert again.steps[0].refunded_minor == 0 and again.steps[0].refund_holds == {}

    assert len(refunds.calls) == 1
    stored = await w.service.get(p.id, "m_1")
    assert len(stored.steps[0].attempts) == attempts and stored.version == first.version

    # The amount was never held past the refusal: a new request_id may take it.
    refunds.refusing = False
    other = await w.service.refund(p.id, "m_1", amount_minor=2500, request_id="rf2")
    assert other.status is PaymentStatus.REFUNDED and other.final_error_message == ""
    assert len(refunds.calls) == 2
