"""A split whose failed step moved to a fallback method that then paused for the
customer: going on after the customer acted charges each amount once."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from payorch.app.payments import ProcessorEvents
from payorch.app.ports import ChargeRequest
from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.results import ProcessorResponse
from tests.unit.test_split_execution import ACTION, DECLINE, OK, STOLEN, World
from tests.unit.test_split_follow_through import charged


async def _fallback_paused_for_the_customer(w: World, *extra: tuple[str, str, None]):
    """$60 Apple Pay, the card's $40 declined and moved to Google Pay, which asks for
    3-D Secure; `extra` fallbacks are left unused."""
    p = await w.pay(
        ("apple_pay", OK, 6000), ("card", DECLINE, None), ("google_pay", ACTION, None), *extra
    )
    assert p.status is PaymentStatus.REQUIRES_ACTION
    assert [(s.amount_minor, s.status) for s in p.steps] == [
        (6000, StepStatus.AUTHORIZED),
        (4000, StepStatus.FAILED),
        (4000, StepStatus.REQUIRES_ACTION),
    ]
    w.sim.complete_action(p.steps[2].processor_payment_id)
    return p


async def test_confirming_a_fallback_step_does_not_move_the_failed_amount_again():
    w = World(fallback_on_failure=True)
    p = await _fallback_paused_for_the_customer(w, ("card", OK, None))

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert [(s.amount_minor, s.status) for s in done.steps] == [
        (6000, StepStatus.CAPTURED),
        (4000, StepStatus.FAILED),
        (4000, StepStatus.CAPTURED),
    ]
    assert w.held() == 10000


async def test_confirming_a_fallback_step_with_partial_allowed_never_captures_beyond_the_total():
    w = World(fallback_on_failure=True, allow_partial=True)
    p = await _fallback_paused_for_the_customer(w, ("card", OK, None))

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert (done.captured_minor, done.remaining_minor) == (10000, 0)
    assert w.held() == 10000


async def test_confirming_a_fallback_step_with_no_fallback_left_captures_the_plan():
    w = World(fallback_on_failure=True)
    p = await _fallback_paused_for_the_customer(w)

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED and w.held() == 10000


async def test_a_webhook_for_a_fallback_step_does_not_move_the_failed_amount_again():
    w = World(fallback_on_failure=True)
    p = await _fallback_paused_for_the_customer(w, ("card", OK, None))

    await ProcessorEvents(w.uow, w.service, w.clock).apply(charged(w, p.id, 2))

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.SUCCEEDED
    assert len(stored.steps) == 3 and w.held() == 10000


async def test_confirming_a_later_step_charges_a_fallback_step_still_to_come():
    w = World(fallback_on_failure=True)
    p = await w.pay(
        ("apple_pay", OK, 3000),
        ("card", DECLINE, 3000),
        ("google_pay", ACTION, None),
        ("card", OK, None),
    )
    # The card's 3000 moved to the fallback card (step 3), after Google Pay, which paused.
    assert [s.status for s in p.steps] == [
        StepStatus.AUTHORIZED,
        StepStatus.FAILED,
        StepStatus.REQUIRES_ACTION,
        StepStatus.PENDING,
    ]
    w.sim.complete_action(p.steps[2].processor_payment_id)

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert [s.status for s in done.steps] == [
        StepStatus.CAPTURED,
        StepStatus.FAILED,
        StepStatus.CAPTURED,
        StepStatus.CAPTURED,
    ]
    assert w.held() == 10000


async def test_a_fallback_step_is_charged_for_the_requests_customer_like_the_planned_ones():
    w = World(fallback_on_failure=True)
    customers: list[tuple[int, str]] = []
    real = w.sim.authorize

    async def authorize(request: ChargeRequest) -> ProcessorResponse:
        customers.append((request.step_index, request.customer_id))
        return await real(request)

    w.sim.authorize = authorize  # type: ignore[method-assign]
    p = await w.pay(
        ("apple_pay", OK, 6000),
        ("card", DECLINE, None),
        ("google_pay", OK, None),
        customer_id="cus_123",
    )

    assert p.status is PaymentStatus.SUCCEEDED and len(p.steps) == 3
    # A saved PaymentMethod is charged with its customer, or Stripe refuses it.
    assert customers == [(0, "cus_123"), (1, "cus_123"), (2, "cus_123")]


tokens = st.sampled_from([OK, OK, DECLINE, STOLEN, ACTION])


# The one that took 14000 of 10000: a declined card's share moved to a card that asked
# for 3-D Secure, then again to the spare card when the plan went on.
@example(planned=[OK, DECLINE], spare=[ACTION, OK], partial=True)
@given(
    planned=st.lists(tokens, min_size=2, max_size=3),
    spare=st.lists(tokens, min_size=0, max_size=2),
    partial=st.booleans(),
)
async def test_any_outcomes_with_fallbacks_and_confirms_never_take_more_than_the_total(
    planned, spare, partial
):
    w = World(fallback_on_failure=True, allow_partial=partial)
    share = 10000 // len(planned)
    methods = [("card", t, share) for t in planned[:-1]] + [("card", planned[-1], None)]
    p = await w.pay(*methods, *[("card", t, None) for t in spare])
    while p.status is PaymentStatus.REQUIRES_ACTION:  # the customer acts each time
        (paused,) = [s for s in p.steps if s.status is StepStatus.REQUIRES_ACTION]
        w.sim.complete_action(paused.processor_payment_id)
        p = await w.service.confirm(p.id, "m_1")

    captured = sum(s.captured_minor for s in p.steps)
    assert captured == w.held() <= 10000
    assert not any(s.status is StepStatus.AUTHORIZED for s in p.steps)
    if partial:
        assert captured + p.remaining_minor == 10000
    else:
        assert captured in (0, 10000)
        assert (p.status is PaymentStatus.SUCCEEDED) == (captured == 10000)
