"""A capture, cancel or refund of money held at a processor this server no longer has.

The processor that authorized a step is the only one that can capture, void or refund
it. Taken out of the server's settings since, the call could not be made: it used to be
answered as if made (a capture owed and "retried" with nothing to retry it on, a cancel
announced with the hold still in place, a refund held and never sent). Now it is refused
FAILED_PRECONDITION naming the processor, and nothing is changed. Dropped from the
merchant's config only, the adapter is still there and the call is made as ever.
"""

from __future__ import annotations

import pytest

from payorch.app.payments import ProcessorNotConfigured
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.payment import MethodType, Owed, PaymentStatus, StepStatus
from tests.unit.test_split_execution import ACTION, OK, World


async def _held(w: World, **extra):
    return await w.pay(("card", OK, None), total=2500, **extra)


def _taken_out_of_the_settings(w: World) -> None:
    del w.service._router.processors["simulated"]  # type: ignore[attr-defined]


async def _unchanged(w: World, before) -> None:
    stored = await w.service.get(before.id, "m_1")
    assert stored.version == before.version and stored.status is before.status
    assert stored.owed is Owed.NOTHING and stored.final_error_message == ""
    assert [len(s.attempts) for s in stored.steps] == [len(s.attempts) for s in before.steps]
    assert [s.refund_holds for s in stored.steps] == [{} for _ in stored.steps]


async def test_a_capture_on_a_processor_not_configured_is_refused_naming_it():
    w = World()
    p = await _held(w, authorize_only=True)
    assert p.status is PaymentStatus.AUTHORIZED
    events = len(w.uow.events)
    _taken_out_of_the_settings(w)

    with pytest.raises(ProcessorNotConfigured, match="'simulated'"):
        await w.service.capture(p.id, "m_1")

    await _unchanged(w, p)
    assert len(w.uow.events) == events


async def test_a_cancel_on_a_processor_not_configured_is_refused_naming_it():
    w = World()
    p = await _held(w, authorize_only=True)
    events = len(w.uow.events)
    _taken_out_of_the_settings(w)

    with pytest.raises(ProcessorNotConfigured, match="'simulated'"):
        await w.service.cancel(p.id, "m_1", "order changed")

    await _unchanged(w, p)
    assert len(w.uow.events) == events  # no PaymentCancelled for a hold still in place


async def test_a_refund_on_a_processor_not_configured_is_refused_with_nothing_held():
    w = World()
    p = await _held(w)
    assert p.status is PaymentStatus.SUCCEEDED
    _taken_out_of_the_settings(w)

    with pytest.raises(ProcessorNotConfigured, match="'simulated'"):
        await w.service.refund(p.id, "m_1", amount_minor=1000, request_id="rf1")

    await _unchanged(w, p)


async def test_a_capture_still_works_once_the_merchant_config_drops_the_processor():
    w = World()
    p = await _held(w, authorize_only=True)
    # The merchant now routes cards elsewhere; the adapter is still on the server.
    w.configs.processors = ("simulated", "other")
    await w.configs.upsert(
        MerchantConfig("m_1", methods=(MethodRule(MethodType.CARD, processors=("other",)),))
    )

    done = await w.service.capture(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert done.steps[0].status is StepStatus.CAPTURED and w.held() == 2500


async def test_a_confirm_of_a_step_paused_at_a_processor_not_configured_is_refused_naming_it():
    w = World()
    p = await w.pay(("card", ACTION, None), total=2500)
    assert p.status is PaymentStatus.REQUIRES_ACTION
    w.sim.complete_action(p.steps[0].processor_payment_id)
    _taken_out_of_the_settings(w)

    with pytest.raises(ProcessorNotConfigured, match="'simulated'"):
        await w.service.confirm(p.id, "m_1")

    stored = await w.service.get(p.id, "m_1")
    assert stored.version == p.version and stored.status is PaymentStatus.REQUIRES_ACTION
