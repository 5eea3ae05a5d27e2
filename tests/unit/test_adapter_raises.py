"""A processor adapter that raises instead of answering (a bug, or an answer it could not
read): the call may have reached the processor, so its outcome is unknown.

Before, the exception went up through the router and the service: the caller got
INTERNAL, the payment was left PROCESSING for the reconciler's 5 minute rule with nothing
recorded, the processor's health heard nothing of it, and a lookup that raised ended the
reconciler's whole pass. Now the step is UNKNOWN with `unknown_outcome`, the payment is
answered as it is (UNKNOWN, reconciled), the exception is logged once with its type and
no card number, the call counts against the processor's health, no fallback is charged,
and a lookup that raises backs its payment off while the pass goes on with the others.
"""

from __future__ import annotations

import logging

import pytest

from payorch.app.ports import ChargeRequest
from payorch.domain.classification import ADAPTER_ERROR
from payorch.domain.payment import Owed, Payment, PaymentStatus, StepStatus
from payorch.domain.request import Severity
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse
from tests.unit.test_recovery_scenarios import World
from tests.unit.test_split_execution import DECLINE, OK
from tests.unit.test_split_execution import World as SplitWorld

CARD = "4242 4242 4242 4242"


def a_bug(where: str) -> RuntimeError:
    # A message that carries a card number: it must never reach the log.
    return RuntimeError(f"unexpected field in the {where} answer near {CARD}")


def raises_after_charging(sim) -> list[int]:
    """The adapter's authorize reaches the processor (it charges), then raises."""
    real = sim.authorize
    raised: list[int] = []

    async def authorize(request: ChargeRequest) -> ProcessorResponse:
        await real(request)
        raised.append(request.step_index)
        raise a_bug("confirm")

    sim.authorize = authorize
    return raised


def adapter_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "payorch.processors"]


async def test_an_authorize_that_raises_leaves_the_step_unknown_answered_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
):
    w = World()
    raised = raises_after_charging(w.sim)

    with caplog.at_level(logging.INFO):
        payment = await w.pay()

    assert raised == [0]  # not retried at once: the adapter would only raise again
    assert payment.status is PaymentStatus.UNKNOWN
    assert payment.final_error is ErrorCode.UNKNOWN_OUTCOME
    (step,) = payment.steps
    assert (step.status, step.error_code) == (StepStatus.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME)
    (attempt,) = step.attempts
    assert (attempt.outcome, attempt.raw.type) == (Outcome.UNKNOWN, ADAPTER_ERROR)
    assert "RuntimeError" in attempt.raw.message and CARD not in attempt.raw.message
    (logged,) = adapter_errors(caplog)  # once
    text = logged.getMessage()
    assert logged.levelno == logging.ERROR and logged.exc_info is None
    assert "RuntimeError" in text and "outcome is unknown" in text
    assert CARD not in caplog.text and "[card number removed]" in text
    stats = w.router.health.snapshot("simulated").stats
    assert (stats.requests, stats.infra_failures) == (1, 1)  # counted against it
    assert w.charges == 1

    w.sim.authorize = type(w.sim).authorize.__get__(w.sim)  # the adapter fixed
    w.clock.advance(61)
    await w.service.reconcile_due()
    settled = await w.service.get(payment.id, None)
    assert settled.status is PaymentStatus.SUCCEEDED and w.charges == 1


async def test_no_fallback_method_is_charged_while_the_first_may_have_charged():
    w = SplitWorld(fallback_on_failure=True)
    raised = raises_after_charging(w.sim)

    payment = await w.pay(("card", OK, None), ("google_pay", OK, None), total=5000)

    assert raised == [0]
    assert payment.status is PaymentStatus.UNKNOWN
    assert [s.status for s in payment.steps][:1] == [StepStatus.UNKNOWN]
    assert all(s.status is not StepStatus.CAPTURED for s in payment.steps)
    assert len(w.sim.ledger.intents) == 1  # the google_pay fallback never charged


async def test_a_fallback_is_still_charged_after_a_decline():
    """The guard changes nothing for an answer: a decline still falls back."""
    w = SplitWorld(fallback_on_failure=True)
    payment = await w.pay(("card", DECLINE, None), ("google_pay", OK, None), total=5000)
    assert payment.status is PaymentStatus.SUCCEEDED


async def test_a_capture_that_raises_is_looked_up_then_owed_and_made_by_the_reconciler(
    caplog: pytest.LogCaptureFixture,
):
    w = SplitWorld()
    real = w.sim.capture
    raised: list[str] = []

    async def capture(processor_payment_id: str, *args, **kwargs):
        raised.append(processor_payment_id)
        raise a_bug("capture")

    w.sim.capture = capture
    with caplog.at_level(logging.INFO):
        payment = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))

    assert raised  # tried, and it raised
    assert (payment.status, payment.owed) == (PaymentStatus.AUTHORIZED, Owed.CAPTURE)
    assert "still authorized" in payment.final_error_message
    operations = [a.operation for s in payment.steps for a in s.attempts]
    assert "capture" in operations and "lookup" in operations
    logged = adapter_errors(caplog)
    assert len(logged) == len(raised)  # each raise logged once
    assert all("raised on capture" in r.getMessage() for r in logged)
    assert CARD not in caplog.text

    w.sim.capture = real
    w.clock.advance(61)
    await w.service.reconcile_due()
    settled = await w.service.get(payment.id, None)
    assert (settled.status, settled.owed) == (PaymentStatus.SUCCEEDED, Owed.NOTHING)
    assert w.held() == 10000


async def unknown_payments(w: World, n: int) -> list[Payment]:
    """`n` payments whose adapter raised after charging: UNKNOWN, for the reconciler."""
    real = w.sim.authorize
    raises_after_charging(w.sim)
    made = [await w.pay(request_id=f"r{i}") for i in range(n)]
    w.sim.authorize = real
    assert [p.status for p in made] == [PaymentStatus.UNKNOWN] * n
    return made


async def test_a_lookup_that_raises_backs_its_payment_off_and_the_pass_goes_on():
    w = World()
    first, second = await unknown_payments(w, 2)
    real = w.sim.lookup
    asked: list[str] = []

    async def lookup(request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        asked.append(request.payment_id)
        if request.payment_id == first.id:
            raise a_bug("lookup")
        return await real(request, processor_payment_id)

    w.sim.lookup = lookup
    w.clock.advance(61)
    await w.service.reconcile_due()  # does not raise

    assert first.id in asked and second.id in asked
    assert (await w.service.get(second.id, None)).status is PaymentStatus.SUCCEEDED
    backed_off = await w.service.get(first.id, None)
    assert backed_off.status is PaymentStatus.UNKNOWN
    assert backed_off.next_reconcile_at is not None
    assert backed_off.next_reconcile_at > w.clock.now()  # the back-off: not due at once


async def test_an_adapter_that_raises_is_a_contract_violation_of_its_integration():
    """It broke the adapter's contract (answer, never raise): recorded once per call, the
    integration's to fix, with the exception's type and no card number."""
    w = World()
    raises_after_charging(w.sim)

    payment = await w.pay()

    (violation,) = w.violations.violations
    assert violation.contract_id == "processor/adapter_raised"
    assert (violation.severity, violation.owner) == (Severity.ERROR, "processor-integrations")
    assert violation.request_id == payment.request_id and violation.merchant_id == "m_1"
    assert "authorize on simulated, attempt 1" in violation.message
    assert "RuntimeError" in violation.message and CARD not in violation.message
