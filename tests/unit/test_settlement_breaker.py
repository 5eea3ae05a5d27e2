"""Captures, voids and refunds count in the processor's health; owed ones wait for it.

A capture, void or refund that failed on infrastructure (a 5xx, a timeout) said nothing
to the processor's breaker: a processor failing every capture stayed healthy. They are
now judged as the router's calls are: an infrastructure failure counts against the
processor, a refusal (4xx) is neutral, a success is a success, the time taken is its
latency.

The reconciler made the captures and voids a payment owes at a processor whose breaker
was open, every pass. They now wait as its lookups do: nothing is sent or recorded, the
payment is due again when the cool-down ends, and half-open one goes as a probe. A
caller's own CapturePayment or CancelPayment still goes at once.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from payorch.domain.health import BreakerState
from payorch.domain.payment import Owed, Payment, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.integration.helpers import core_request
from tests.unit.test_reconciler_breaker import POLICY, SERVER_ERROR, SIM, World

TIMEOUT = ProcessorResponse(ResponseKind.NO_RESPONSE, exception="Timeout")
REFUSED = ProcessorResponse(
    ResponseKind.ERROR,
    http_status=400,
    error_type="invalid_request_error",
    code="payment_intent_unexpected_state",
)
_held = itertools.count(1)
INFRA_FAILURES = pytest.mark.parametrize("failure", [SERVER_ERROR, TIMEOUT], ids=["5xx", "timeout"])
# The caller's RPC, by the processor call it makes: CapturePayment, CancelPayment, RefundPayment.
CALLS = ("capture", "cancel", "refund")


class Calls:
    """The processor's captures, cancels and refunds: counted, each answered by the
    next scripted answer (`fail`) while there is one, else made; each takes `took_s`."""

    def __init__(self, w: World) -> None:
        self.made: dict[str, int] = dict.fromkeys(CALLS, 0)
        self.fail: dict[str, list[ProcessorResponse]] = {name: [] for name in CALLS}
        self.took_s = 0.0
        for name in CALLS:
            setattr(w.sim, name, self._wrap(w, name, getattr(w.sim, name)))

    def _wrap(self, w: World, name: str, real: Any) -> Any:
        async def call(*args: Any, **kw: Any) -> ProcessorResponse:
            self.made[name] += 1
            await w.clock.sleep(self.took_s)
            if self.fail[name]:
                return self.fail[name].pop(0)
            return await real(*args, **kw)

        return call


async def held(w: World, *, authorize_only: bool = True) -> Payment:
    """A payment authorized (or, not `authorize_only`, captured) at the processor."""
    core = dataclasses.replace(
        core_request(f"h-{next(_held)}", amount=10000), authorize_only=authorize_only
    )
    payment = (await w.service.create(core, deadline_s=None)).payment
    expected = PaymentStatus.AUTHORIZED if authorize_only else PaymentStatus.SUCCEEDED
    assert payment.status is expected
    return payment


async def rpc(w: World, call: str, payment: Payment) -> None:
    """The caller's CapturePayment, CancelPayment or RefundPayment (a failed one is
    answered with the payment as it stands: owing the capture or void, refund held)."""
    if call == "capture":
        await w.service.capture(payment.id, "m_1")
    elif call == "cancel":
        await w.service.cancel(payment.id, "m_1", "order changed")
    else:
        await w.service.refund(payment.id, "m_1", amount_minor=1000, request_id="rf")


async def clean_window(w: World, call: str) -> list[Payment]:
    """Payments to make `call` on, made and then left out of the health window."""
    payments = [await held(w, authorize_only=call != "refund") for _ in range(POLICY.min_requests)]
    w.clock.advance(POLICY.window_s + 1)
    assert w.health.snapshot(SIM).stats.requests == 0
    return payments


async def run_of(call: str, answer: ProcessorResponse) -> tuple[World, Calls]:
    """The caller's `call` made on `min_requests` payments, each answered `answer`,
    from a clean window."""
    w = World()
    calls = Calls(w)
    payments = await clean_window(w, call)
    calls.fail[call] = [answer] * len(payments)
    for p in payments:
        await rpc(w, call, p)
    return w, calls


# -- every capture, void and refund counts in the processor's health -------------------


@INFRA_FAILURES
@pytest.mark.parametrize("call", CALLS)
async def test_a_run_of_infrastructure_failures_opens_the_breaker(call, failure):
    w, calls = await run_of(call, failure)

    assert calls.made[call] == POLICY.min_requests
    assert w.health.snapshot(SIM).stats.infra_failures == POLICY.min_requests
    assert w.health.breaker(SIM) is BreakerState.OPEN


@pytest.mark.parametrize("call", CALLS)
async def test_a_run_of_refusals_is_counted_but_neutral(call):
    w, _ = await run_of(call, REFUSED)

    stats = w.health.snapshot(SIM).stats
    # Captures and voids refused are looked up after (answered: neutral too).
    lookups = 0 if call == "refund" else POLICY.min_requests
    assert (stats.requests, stats.other) == (POLICY.min_requests + lookups,) * 2
    assert stats.infra_failures == 0
    assert w.health.breaker(SIM) is BreakerState.CLOSED


@pytest.mark.parametrize("call", CALLS)
async def test_a_call_that_goes_through_is_a_success_with_its_latency(call):
    w = World()
    calls = Calls(w)
    (p, *_) = await clean_window(w, call)
    calls.took_s = 0.3

    await rpc(w, call, p)

    stats = w.health.snapshot(SIM).stats
    assert (stats.requests, stats.successes) == (1, 1)
    assert stats.average_latency_ms == pytest.approx(300.0)


# -- the reconciler's owed captures and voids wait for an open breaker -----------------


async def owing(w: World, calls: Calls, call: str) -> Payment:
    """A payment owing a capture (or a void): the caller's call failed on a 500."""
    p = await held(w)
    calls.fail[call] = [SERVER_ERROR]
    await rpc(w, call, p)
    stored = await w.get(p)
    assert stored.owed is (Owed.CAPTURE if call == "capture" else Owed.VOID)
    return stored


OWED = pytest.mark.parametrize("call", ["capture", "cancel"])


@OWED
async def test_an_owed_call_is_not_made_while_the_breaker_is_open(call):
    w = World()
    calls = Calls(w)
    payment = await owing(w, calls, call)
    w.trip()
    probes_from = w.health.snapshot(SIM).probes_from
    made, lookups = calls.made[call], w.sim.lookups

    assert await w.later(120) == 0  # due (1 min), deferred
    assert await w.later(600) == 0  # not due again before the breaker lets a call through
    assert (calls.made[call], w.sim.lookups) == (made, lookups)
    stored = await w.get(payment)
    assert stored.owed is payment.owed
    assert [len(s.attempts) for s in stored.steps] == [len(s.attempts) for s in payment.steps]
    # Its back-off is kept: no call was made, so none failed.
    assert stored.reconcile_attempts == payment.reconcile_attempts
    assert stored.next_reconcile_at == probes_from


@OWED
async def test_half_open_owed_calls_go_as_probes_and_close_the_breaker(call):
    w = World()
    calls = Calls(w)
    payments = [await owing(w, calls, call) for _ in range(POLICY.half_open_probes)]
    w.trip()
    assert await w.later(120) == 0

    w.clock.advance(POLICY.cooldown_s)
    assert await w.service.reconcile_due() == len(payments)
    done = StepStatus.CAPTURED if call == "capture" else StepStatus.VOIDED
    for p in payments:
        stored = await w.get(p)
        assert stored.owed is Owed.NOTHING and stored.steps[0].status is done
    # A capture or void that went through proves the processor works: it closes.
    assert w.health.breaker(SIM) is BreakerState.CLOSED


@OWED
async def test_half_open_an_owed_call_that_fails_reopens_the_breaker_and_the_rest_wait(call):
    w = World()
    calls = Calls(w)
    first, second = await owing(w, calls, call), await owing(w, calls, call)
    w.trip()
    made, lookups = calls.made[call], w.sim.lookups
    calls.fail[call] = [SERVER_ERROR]

    assert await w.later(POLICY.cooldown_s) == 0  # half-open: one probe, failed
    assert calls.made[call] == made + 1
    assert w.health.breaker(SIM) is BreakerState.OPEN
    assert w.sim.lookups == lookups  # no lookup after it: the breaker is open again
    stored = await w.get(second)
    assert [len(s.attempts) for s in stored.steps] == [len(s.attempts) for s in second.steps]
    assert (await w.get(first)).reconcile_attempts == first.reconcile_attempts + 1


@OWED
async def test_the_callers_own_call_goes_at_once_while_the_breaker_is_open(call):
    w = World()
    calls = Calls(w)
    p = await held(w)
    w.trip()

    await rpc(w, call, p)

    assert calls.made[call] == 1
    stored = await w.get(p)
    expected = PaymentStatus.SUCCEEDED if call == "capture" else PaymentStatus.CANCELLED
    assert stored.status is expected and stored.owed is Owed.NOTHING


async def reconciled_split_whose_breaker_opens_meanwhile(w: World, fault: str) -> Payment:
    """A split of 6000 + 4000 whose second step ended unknown (`fault`), reconciled: it
    is looked up, and while it is the processor's breaker opens (its other calls
    failing), so the pass holds back what it then owes. Found charged (a lost answer),
    both steps are to be captured; found not charged (a timeout before it reached the
    processor), the first is to be voided."""
    core = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id=f"split-{fault}",
            amount_minor=10000,
            currency="USD",
            methods=[
                RawMethodInput("apple_pay", "pm_card_visa", 6000),
                RawMethodInput("card", "pm_card_visa", None),
            ],
        )
    )
    w.sim.inject(None, fault)
    payment = (await w.service.create(core, deadline_s=None)).payment
    assert [s.status for s in payment.steps] == [StepStatus.AUTHORIZED, StepStatus.UNKNOWN]
    looked_up = w.sim.lookup

    async def lookup(*args: Any, **kw: Any) -> ProcessorResponse:
        answer = await looked_up(*args, **kw)
        w.trip()
        return answer

    w.sim.lookup = lookup  # type: ignore[method-assign]
    assert await w.later(120) == 1
    w.sim.lookup = looked_up  # type: ignore[method-assign]
    return await w.get(payment)


async def test_a_capture_held_back_at_an_open_breaker_says_it_waits_not_that_it_failed():
    w = World()
    calls = Calls(w)

    stored = await reconciled_split_whose_breaker_opens_meanwhile(w, "lost_response")

    assert calls.made["capture"] == 0
    assert stored.owed is Owed.CAPTURE
    assert stored.final_error_message == (
        "10000 still authorized: the capture waits for simulated to recover (its breaker is open)"
    )
    assert stored.final_error.value == "no_processor_available"


async def test_a_void_held_back_at_an_open_breaker_says_it_waits_not_that_it_failed():
    w = World()
    calls = Calls(w)

    stored = await reconciled_split_whose_breaker_opens_meanwhile(w, "timeout")

    assert calls.made["cancel"] == 0
    assert stored.status is PaymentStatus.FAILED and stored.owed is Owed.VOID
    assert stored.final_error_message == (
        "step 1 failed: timeout;"
        " 6000 still authorized: the void waits for simulated to recover (its breaker is open)"
    )


async def test_a_held_back_capture_that_then_fails_says_it_failed_and_one_made_clears_it():
    w = World()
    calls = Calls(w)
    payment = await reconciled_split_whose_breaker_opens_meanwhile(w, "lost_response")
    calls.fail["capture"] = [SERVER_ERROR]

    # Half-open: the first capture goes as a probe and fails; the breaker opens again.
    assert await w.later(POLICY.cooldown_s) == 0
    assert calls.made["capture"] == 1
    stored = await w.get(payment)
    assert stored.owed is Owed.CAPTURE
    assert stored.final_error_message == "10000 still authorized: the capture failed and is retried"
    assert stored.final_error.value == "processor_error"

    assert await w.later(POLICY.cooldown_s) == 1
    stored = await w.get(payment)
    assert stored.owed is Owed.NOTHING and stored.final_error_message == ""
    assert [s.status for s in stored.steps] == [StepStatus.CAPTURED] * 2
