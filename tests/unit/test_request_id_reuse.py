"""A request_id reused for another payment is refused ALREADY_EXISTS, and the message
names what the request asks otherwise, as the caller sends it."""

from __future__ import annotations

from typing import Any

import pytest

from payorch.app.payments import IdempotencyConflict
from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from tests.unit.test_split_execution import DECLINE, OK, World

# Apple Pay 60.00, the card the rest; Google Pay left over as a fallback.
SPLIT = [("apple_pay", OK, 6000), ("card", OK, None), ("google_pay", OK, None)]


def _request(methods: list[tuple[str, str, int | None]] = SPLIT, **fields: Any):
    raw: dict[str, Any] = {"amount_minor": 10000, "currency": "USD", **fields}
    return parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="r-reused",
            methods=[RawMethodInput(m, t, a) for m, t, a in methods],
            **raw,
        )
    )


async def _mismatch_of(w: World, first: Any, again: Any) -> str:
    await w.service.create(first, deadline_s=None)
    with pytest.raises(IdempotencyConflict) as refused:
        await w.service.create(again, deadline_s=None)
    return refused.value.mismatch


@pytest.mark.parametrize(
    ("again", "named"),
    [
        # Each read "payment method": the split's fallback is no planned step.
        ({"authorize_only": True}, "authorize_only"),
        ({"customer_id": "cus_1"}, "customer_id"),
        ({"methods": [("apple_pay", OK, 5000), *SPLIT[1:]]}, "split amounts"),
        ({"metadata": {"order": "1"}}, "metadata"),
        ({"off_session": True, "customer_id": "cus_1"}, "customer_id, off_session"),
        ({"amount_minor": 9000}, "amount"),
        ({"methods": [*SPLIT[:2], ("google_pay", DECLINE, None)]}, "payment method"),
        ({"methods": SPLIT[:2]}, "payment method"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_a_reused_request_id_names_only_what_the_request_asks_otherwise(again, named):
    w = World()
    fields = dict(again)
    methods = fields.pop("methods", SPLIT)
    assert await _mismatch_of(w, _request(), _request(methods, **fields)) == named


async def test_a_fallback_used_by_the_payment_is_still_the_method_the_request_listed():
    w = World(fallback_on_failure=True)
    methods = [("apple_pay", OK, 6000), ("card", DECLINE, None), ("google_pay", OK, None)]
    first = _request(methods)
    payment = (await w.service.create(first, deadline_s=None)).payment
    assert payment.status is PaymentStatus.SUCCEEDED
    assert [s.status for s in payment.steps][-1] is StepStatus.CAPTURED  # Google Pay's
    assert await _mismatch_of(w, first, _request(methods, authorize_only=True)) == (
        "authorize_only"
    )


async def test_a_single_method_payment_reused_with_another_customer_names_the_customer():
    w = World()
    one = [("card", OK, None)]
    mismatch = await _mismatch_of(
        w, _request(one, customer_id="cus_a"), _request(one, customer_id="cus_b")
    )
    assert mismatch == "customer_id"


async def test_the_same_request_made_again_gets_the_first_payment_replayed_and_charges_nothing():
    w = World()
    first = await w.service.create(_request(), deadline_s=None)
    calls = w.sim.calls

    again = await w.service.create(_request(), deadline_s=None)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.payment.id == first.payment.id
    assert again.payment.status is PaymentStatus.SUCCEEDED
    assert w.sim.calls == calls, "no processor call for a replay"
    assert w.held() == 10000
