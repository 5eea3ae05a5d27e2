"""A payment takes at most MAX_REFUNDS_PER_PAYMENT refunds: each adds its attempts to
the payment every read returns, and unbounded, one-cent refunds made it too large for
a gRPC answer (refunded, yet answered RESOURCE_EXHAUSTED; then unreadable)."""

from __future__ import annotations

import pytest

from payorch.app import payments
from payorch.app.payments import TooManyRefunds
from payorch.domain.payment import Payment
from tests.unit.test_split_execution import OK, World


async def refunded(w: World, times: int, amount_minor: int) -> Payment:
    """A 1000-cent payment refunded `times` times (request ids r0, r1, ...)."""
    p = await w.pay(("card", OK, None), total=1000)
    for n in range(times):
        await w.service.refund(p.id, "m_1", amount_minor=amount_minor, request_id=f"r{n}")
    return p


async def test_a_refund_past_the_limit_is_refused_with_nothing_sent(monkeypatch):
    monkeypatch.setattr(payments, "MAX_REFUNDS_PER_PAYMENT", 3)
    w = World()
    p = await refunded(w, 3, 1)

    with pytest.raises(TooManyRefunds, match="3 refunds"):
        await w.service.refund(p.id, "m_1", amount_minor=1, request_id="r3")

    assert w.held() == 997, "the refused refund sent nothing"
    stored = await w.service.get(p.id, "m_1")
    assert sum(s.refunded_minor for s in stored.steps) == 3
    assert (p.id, "r3") not in w.uow.refunds


async def test_a_refund_made_before_the_limit_is_still_replayed(monkeypatch):
    monkeypatch.setattr(payments, "MAX_REFUNDS_PER_PAYMENT", 2)
    w = World()
    p = await refunded(w, 2, 5)

    again = await w.service.refund(p.id, "m_1", amount_minor=5, request_id="r1")

    assert sum(s.refunded_minor for s in again.steps) == 10
    assert w.held() == 990
