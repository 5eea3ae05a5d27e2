"""The simulated processor's 3-D Secure page (POST /simulated/3ds/{intent_id}) on the
real container and HTTP app: the customer passes or fails the challenge with the
client secret the paused payment returned, then ConfirmPayment finishes the payment as
it would at Stripe (docs/classification.md, "3-D Secure on the simulated processor").
Test mode only: a server with Stripe configured has no such page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from payorch.bootstrap import Container
from payorch.domain.merchant_config import MerchantConfig, MethodRule
from payorch.domain.payment import MethodType, Payment, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome
from payorch.entrypoints.http.app import build_app
from tests.integration.helpers import make_container


@pytest.fixture
async def container(database_url, clock) -> AsyncIterator[Container]:
    c = await make_container(database_url, clock)
    yield c
    await c.close()


@pytest.fixture
async def page(container: Container) -> AsyncIterator[TestClient]:
    app = build_app(simulated_challenges=container.simulated_challenges())
    async with TestClient(TestServer(app)) as client:
        yield client


async def _paused(container: Container, request_id: str = "r-3ds", **raw) -> Payment:
    fields = {"payment_method": "pm_card_threeDSecureRequired", "amount_minor": 4200, **raw}
    request = parse_payment_request(
        RawPaymentRequest(merchant_id="m_1", request_id=request_id, currency="EUR", **fields)
    )
    payment = (await container.payments.create(request, deadline_s=None)).payment
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    return payment


def _challenge(payment: Payment) -> tuple[str, str]:
    step = next(s for s in payment.steps if s.status is StepStatus.REQUIRES_ACTION)
    return step.processor_payment_id, step.client_secret


async def _answer(page: TestClient, intent: str, secret: str, outcome: str = "complete"):
    return await page.post(
        f"/simulated/3ds/{intent}", data={"client_secret": secret, "outcome": outcome}
    )


async def test_a_passed_challenge_lets_confirm_capture_the_payment(container, page):
    paused = await _paused(container)
    intent, secret = _challenge(paused)
    assert (await container.payments.confirm(paused.id, "m_1")).status is (
        PaymentStatus.REQUIRES_ACTION
    )

    answered = await _answer(page, intent, secret)

    assert answered.status == 200
    assert await answered.json() == {"id": intent, "outcome": "complete", "status": "succeeded"}
    done = await container.payments.confirm(paused.id, "m_1")
    assert (done.status, done.steps[0].status, done.steps[0].captured_minor) == (
        PaymentStatus.SUCCEEDED,
        StepStatus.CAPTURED,
        4200,
    )
    assert container.simulated["simulated"].ledger.charges_total == 1


async def test_a_passed_challenge_on_an_authorization_holds_it_for_capture(container, page):
    paused = await _paused(container, authorize_only=True)

    answered = await _answer(page, *_challenge(paused))

    assert (await answered.json())["status"] == "requires_capture"
    held = await container.payments.confirm(paused.id, "m_1")
    assert (held.status, held.steps[0].status) == (PaymentStatus.AUTHORIZED, StepStatus.AUTHORIZED)
    captured = await container.payments.capture(paused.id, "m_1")
    assert (captured.status, captured.steps[0].captured_minor) == (PaymentStatus.SUCCEEDED, 4200)


async def test_a_failed_challenge_fails_the_payment_uncharged_and_closes_the_intent(
    container, page
):
    paused = await _paused(container, off_session=True)
    intent, secret = _challenge(paused)

    answered = await _answer(page, intent, secret, "fail")

    assert answered.status == 200
    assert (await answered.json())["status"] == "requires_payment_method"
    failed = await container.payments.confirm(paused.id, "m_1")
    assert (failed.status, failed.steps[0].status, failed.final_error) == (
        PaymentStatus.FAILED,
        StepStatus.FAILED,
        ErrorCode.AUTHENTICATION_FAILED,
    )
    assert failed.steps[0].outcome is Outcome.HARD
    # Not charged again: the pause's authorize, then the intent looked up and closed.
    assert [a.operation for a in failed.steps[0].attempts] == [
        "authorize",
        "lookup",
        "void",
        "lookup",
    ]
    assert container.simulated["simulated"].ledger.by_id[intent].status == "canceled"
    assert container.simulated["simulated"].ledger.charges_total == 0
    # Closed before it was recorded failed: the challenge cannot be answered again.
    again = await _answer(page, intent, secret)
    assert again.status == 409
    assert (await again.json())["error"]["reason"] == "not_waiting"


async def test_a_failed_challenge_in_a_split_moves_its_amount_to_the_fallback_method(
    container, page
):
    """docs/split-payments.md: a failed step's amount goes to the next fallback method
    (here Google Pay, listed after Apple Pay took the rest)."""
    methods = tuple(
        MethodRule(m) for m in (MethodType.CARD, MethodType.APPLE_PAY, MethodType.GOOGLE_PAY)
    )
    await container.configs.upsert(MerchantConfig("m_1", methods=methods, fallback_on_failure=True))
    paused = await _paused(
        container,
        payment_method="",
        amount_minor=10000,
        methods=[
            RawMethodInput("card", "pm_card_threeDSecureRequired", 3000),
            RawMethodInput("apple_pay", "pm_card_visa", None),
            RawMethodInput("google_pay", "pm_card_mastercard", None),
        ],
    )

    await _answer(page, *_challenge(paused), "fail")
    done = await container.payments.confirm(paused.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert [(s.method, s.status, s.amount_minor) for s in done.steps] == [
        (MethodType.CARD, StepStatus.FAILED, 3000),
        (MethodType.APPLE_PAY, StepStatus.CAPTURED, 7000),
        (MethodType.GOOGLE_PAY, StepStatus.CAPTURED, 3000),
    ]
    assert container.simulated["simulated"].ledger.charges_total == 2


@pytest.mark.parametrize("answer_twice", ["complete", "fail"])
async def test_a_challenge_passed_once_is_not_answered_again(container, page, answer_twice):
    paused = await _paused(container)
    intent, secret = _challenge(paused)
    assert (await _answer(page, intent, secret)).status == 200

    again = await _answer(page, intent, secret, answer_twice)

    assert again.status == 409
    assert (await again.json())["error"]["reason"] == "not_waiting"
    done = await container.payments.confirm(paused.id, "m_1")
    assert done.status is PaymentStatus.SUCCEEDED
    assert container.simulated["simulated"].ledger.charges_total == 1


async def test_refusals_change_nothing(container, page):
    paused = await _paused(container)
    intent, secret = _challenge(paused)
    other_intent, other_secret = _challenge(await _paused(container, "r-other"))
    refusals = [
        (await _answer(page, intent, other_secret), 403, "wrong_secret"),
        (await _answer(page, intent, ""), 400, "invalid_request"),
        (await _answer(page, intent, secret, "maybe"), 400, "invalid_request"),
        (await _answer(page, "pi_sim_unknown", secret), 404, "unknown_intent"),
        (
            await page.post(
                f"/simulated/3ds/{intent}?client_secret={secret}", data={"outcome": "complete"}
            ),
            400,
            "secret_in_url",
        ),
    ]
    for answered, status, reason in refusals:
        assert answered.status == status
        body = await answered.json()
        assert body["error"]["reason"] == reason
        assert secret not in str(body) and other_secret not in str(body)
    still = await container.payments.confirm(paused.id, "m_1")
    assert still.status is PaymentStatus.REQUIRES_ACTION
    assert container.simulated["simulated"].ledger.by_id[other_intent].status == "requires_action"
    assert container.simulated["simulated"].ledger.charges_total == 0


async def test_a_server_with_stripe_configured_has_no_simulated_challenge_page(database_url, clock):
    both = await make_container(
        database_url,
        clock,
        processors="simulated",
        stripe_api_key="sk_test_" + "x" * 24,
        stripe_api_base="http://127.0.0.1:9",
    )
    try:
        assert set(both.processors) == {"stripe", "simulated"}
        assert both.simulated_challenges() is None
        app = build_app(simulated_challenges=both.simulated_challenges())
        async with TestClient(TestServer(app)) as client:
            answered = await client.post(
                "/simulated/3ds/pi_sim_x", data={"client_secret": "s", "outcome": "complete"}
            )
            assert answered.status == 404
    finally:
        await both.close()
