"""The Stripe adapter, through the real SDK against the fake Stripe, when the SDK raises
something that is not a Stripe error (a bug, an answer it could not read): on the
PaymentIntent's create nothing able to charge went out, so the step fails, known not
charged; on the confirm the charge may have gone through, so the step is UNKNOWN and
the reconciler finds the charge. Before, both raised through the service (INTERNAL to
the caller) and left the payment PROCESSING."""

from __future__ import annotations

import logging

import pytest

from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.results import ErrorCode, Outcome
from tests.integration.test_recovery_with_stripe import pay, running


def intents_of(service):
    return service._router.processors["stripe"]._client.v1.payment_intents


async def test_a_create_that_raises_fails_the_step_known_not_charged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    async with running() as (fake, service, _clock):

        async def create_async(*args, **kwargs):
            raise RuntimeError("could not read the PaymentIntent")

        monkeypatch.setattr(intents_of(service), "create_async", create_async)
        with caplog.at_level(logging.INFO):
            payment = await pay(service)

        assert payment.status is PaymentStatus.FAILED
        (step,) = payment.steps
        assert (step.status, step.error_code) == (StepStatus.FAILED, ErrorCode.PROCESSOR_ERROR)
        assert [a.outcome for a in step.attempts] == [Outcome.SOFT]
        assert fake.charges_total == 0
        (logged,) = [r for r in caplog.records if r.name == "payorch.processors"]
        assert "PaymentIntent create" in logged.getMessage()
        assert "nothing was charged" in logged.getMessage()


async def test_a_confirm_that_raises_after_stripe_charged_leaves_the_step_unknown_for_the_reconciler(
    monkeypatch: pytest.MonkeyPatch,
):
    async with running() as (fake, service, clock):
        intents = intents_of(service)
        real = intents.confirm_async

        async def confirm_async(*args, **kwargs):
            await real(*args, **kwargs)  # Stripe charged
            raise RuntimeError("could not read the confirmed PaymentIntent")

        monkeypatch.setattr(intents, "confirm_async", confirm_async)
        payment = await pay(service)

        assert payment.status is PaymentStatus.UNKNOWN
        assert payment.final_error is ErrorCode.UNKNOWN_OUTCOME
        assert fake.charges_total == 1

        monkeypatch.setattr(intents, "confirm_async", real)
        clock.advance(61)
        await service.reconcile_due()
        settled = await service.get(payment.id, None)
        assert settled.status is PaymentStatus.SUCCEEDED
        assert fake.charges_total == 1
