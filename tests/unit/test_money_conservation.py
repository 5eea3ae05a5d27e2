"""No minor unit lost or made up, in any currency and at any size: a split's steps sum to
its total, a failed step's amount moves whole to its fallback, what is captured is what
the processor holds, and refunds, spread over the steps, never give back more than was
captured."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from payorch.app.payments import RefundRejected
from payorch.domain.money import EXPONENTS, MAX_AMOUNT_MINOR
from payorch.domain.payment import PaymentStatus, StepStatus
from tests.unit.test_split_execution import DECLINE, OK, STOLEN, World

currencies = st.sampled_from(sorted(EXPONENTS))
totals = st.one_of(st.integers(1, 10_000), st.integers(1, MAX_AMOUNT_MINOR))
# Each planned step's share of what is left, in thousandths; the last step takes the rest.
shares = st.lists(st.integers(1, 999), min_size=0, max_size=3)
outcomes = st.sampled_from([OK, OK, DECLINE, STOLEN])
# 0 refunds everything still refundable; a number past the total is refused.
refunds = st.lists(st.one_of(st.just(0), st.integers(1, 10**15 + 1)), max_size=4)


def planned_amounts(total: int, per_mille: list[int]) -> list[int]:
    amounts, left = [], total
    for share in per_mille:
        part = left * share // 1000
        if part == 0 or part == left:
            break
        amounts.append(part)
        left -= part
    return [*amounts, left]


@given(
    currency=currencies,
    total=totals,
    per_mille=shares,
    data=st.data(),
    spare=st.lists(outcomes, max_size=2),
    partial=st.booleans(),
    asked=refunds,
)
async def test_every_minor_unit_of_a_split_is_accounted_for_from_charge_to_refunds(
    currency, total, per_mille, data, spare, partial, asked
):
    amounts = planned_amounts(total, per_mille)
    tokens = data.draw(st.lists(outcomes, min_size=len(amounts), max_size=len(amounts)))
    w = World(fallback_on_failure=True, allow_partial=partial)
    w.currency = currency
    methods = [("card", t, a) for t, a in zip(tokens[:-1], amounts[:-1], strict=True)]
    p = await w.pay(
        *methods, ("card", tokens[-1], None), *[("card", t, None) for t in spare], total=total
    )

    planned = p.steps[: len(amounts)]
    assert [s.amount_minor for s in planned] == amounts and sum(amounts) == total
    moved = p.steps[len(amounts) :]
    failed = [s.amount_minor for s in planned if s.status is StepStatus.FAILED]
    assert all(s.amount_minor in failed for s in moved), "a fallback takes a failed amount whole"
    captured = p.captured_minor
    assert captured == w.held() <= total
    if partial:
        assert captured + p.remaining_minor == total
    else:
        assert captured in (0, total)

    refunded, seen = 0, set()
    for amount in asked:
        before = p.refundable_minor
        try:
            p = await w.service.refund(p.id, "m_1", amount_minor=amount, request_id=f"rf-{amount}")
        except RefundRejected:
            assert amount > before or before == 0
            continue
        was, refunded = refunded, sum(s.refunded_minor for s in p.steps)
        if f"rf-{amount}" not in seen:
            assert refunded - was == (amount or before), "refunded what was asked, no more"
        seen.add(f"rf-{amount}")
        assert refunded <= captured
        assert all(0 <= s.refunded_minor <= s.captured_minor for s in p.steps)
        assert p.refundable_minor == captured - refunded
        assert w.held() == captured - refunded, "the processor gave back what was recorded"
    if captured and refunded == captured:
        assert p.status is PaymentStatus.REFUNDED
