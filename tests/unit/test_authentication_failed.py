"""A customer who failed (or abandoned) 3-D Secure: the step reads
`authentication_failed`, hard, and nothing is charged again without them.

It read `interrupted` (soft, "retry later: yes") until 2026-12-07, as if the charge had
been cut short by us, so an installment's charge was put back on the dunning ladder to
be charged off-session again, where the bank asks for the customer again.
"""

from __future__ import annotations

from payorch.app.analytics import RECOVERABLE_CODES
from payorch.domain.classification import INFRASTRUCTURE_CODES
from payorch.domain.events import PaymentFailed, StepFailed
from payorch.domain.installments import ChargeOutcome, judge_charge
from payorch.domain.payment import Payment, PaymentStatus, StepStatus
from payorch.domain.request import RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome
from tests.unit.test_recovery_scenarios import World


async def paused(w: World, *, off_session: bool) -> Payment:
    core = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="r-3ds",
            amount_minor=5000,
            currency="EUR",
            payment_method="pm_card_threeDSecureRequired",
            off_session=off_session,
        )
    )
    payment = (await w.service.create(core, deadline_s=None)).payment
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    return payment


async def failed_challenge(w: World, *, off_session: bool = True) -> Payment:
    payment = await paused(w, off_session=off_session)
    step = payment.steps[0]
    w.sim.authenticate(step.processor_payment_id, step.client_secret, passed=False)
    return await w.service.confirm(payment.id, "m_1")


async def test_a_failed_challenge_fails_the_step_hard_as_authentication_failed():
    w = World()

    failed = await failed_challenge(w)

    (step,) = failed.steps
    assert (failed.status, step.status, step.outcome, step.error_code) == (
        PaymentStatus.FAILED,
        StepStatus.FAILED,
        Outcome.HARD,
        ErrorCode.AUTHENTICATION_FAILED,
    )
    assert failed.final_error_message == "step 0 failed: authentication_failed"
    assert w.charges == 0
    # Nothing charged again: the pause's authorize, then the intent closed.
    assert [a.operation for a in step.attempts] == ["authorize", "lookup", "void", "lookup"]
    events = w.uow.events
    [step_failed] = [e for e in events if isinstance(e, StepFailed)]
    assert (step_failed.error_code, step_failed.retry_later) == (
        ErrorCode.AUTHENTICATION_FAILED,
        False,
    )
    assert [e.error_code for e in events if isinstance(e, PaymentFailed)] == [
        ErrorCode.AUTHENTICATION_FAILED
    ]


async def test_an_on_session_payment_whose_customer_failed_reads_the_same():
    w = World()

    failed = await failed_challenge(w, off_session=False)

    assert failed.steps[0].error_code is ErrorCode.AUTHENTICATION_FAILED
    assert failed.steps[0].outcome is Outcome.HARD


async def test_an_installment_charge_whose_customer_failed_is_not_put_back_on_the_ladder():
    """An off-session installment charge the bank wanted the customer for, then the
    customer brought back failed: charging the card off-session again would only be
    asked for the customer again. Failed for good; RetryInstallment is the merchant's."""
    w = World()

    judged = judge_charge(await failed_challenge(w))

    assert (judged.outcome, judged.error_code, judged.retry_later) == (
        ChargeOutcome.FAILED,
        ErrorCode.AUTHENTICATION_FAILED.value,
        False,
    )


def test_a_failed_authentication_is_no_infrastructure_failure_to_recover_from():
    assert ErrorCode.AUTHENTICATION_FAILED not in INFRASTRUCTURE_CODES
    assert ErrorCode.AUTHENTICATION_FAILED not in RECOVERABLE_CODES


async def test_a_paused_payment_canceled_at_the_processor_reads_canceled_not_interrupted():
    """Waiting for the customer, its intent canceled at the processor by someone else
    (its dashboard, another system): nothing interrupted its charge, and payorch did not
    cancel it. It reads `payment_canceled_at_processor`, as a confirm refused on a
    canceled intent does; it read `interrupted` before."""
    w = World()
    payment = await paused(w, off_session=False)
    w.sim.ledger.by_id[payment.steps[0].processor_payment_id].status = "canceled"

    failed = await w.service.confirm(payment.id, "m_1")

    (step,) = failed.steps
    assert (failed.status, step.outcome, step.error_code) == (
        PaymentStatus.FAILED,
        Outcome.HARD,
        ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR,
    )
    assert [a.operation for a in step.attempts] == ["authorize", "lookup"]
    assert w.charges == 0
