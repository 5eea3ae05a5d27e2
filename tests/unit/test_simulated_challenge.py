"""The customer's side of a simulated 3-D Secure challenge: what Stripe.js does with
the client secret at Stripe, the simulated processor takes through `authenticate`.
Passed, the intent is charged as a confirm charges it; failed, it waits for another
PaymentMethod with Stripe's `payment_intent_authentication_failure`. Anything else
(an intent it does not have, another intent's secret, one not waiting) is refused and
changes nothing."""

from __future__ import annotations

import pytest

from payorch.adapters.processors.simulated import (
    ChallengeRefused,
    SimulatedProcessor,
    answer_challenge,
)
from payorch.app.ports import ChargeRequest
from payorch.domain.results import ResponseKind


async def _no_sleep(_: float) -> None:
    return None


def _request(token: str = "pm_card_threeDSecureRequired", *, capture: bool = True, n: int = 1):
    return ChargeRequest(
        payment_id=f"pay_{n}",
        step_index=0,
        idempotency_key=f"payorch_pay_{n}_0_g0",
        intent_key=f"payorch_pay_{n}_0",
        amount_minor=2500,
        currency="EUR",
        token=token,
        capture=capture,
    )


async def _paused(sim: SimulatedProcessor, *, capture: bool = True, n: int = 1):
    request = _request(capture=capture, n=n)
    answer = await sim.authorize(request)
    assert answer.kind is ResponseKind.REQUIRES_ACTION
    return request, answer


@pytest.fixture
def sim() -> SimulatedProcessor:
    return SimulatedProcessor("simulated", sleep=_no_sleep)


async def test_the_client_secret_is_the_intents_id_and_a_random_part_not_derived_from_it(sim):
    _, first = await _paused(sim, n=1)
    _, second = await _paused(sim, n=2)
    for answer in (first, second):
        assert answer.client_secret.startswith(answer.processor_payment_id + "_secret_")
        assert len(answer.client_secret) > len(answer.processor_payment_id + "_secret_") + 20
    suffix = first.client_secret.removeprefix(first.processor_payment_id)
    assert suffix != second.client_secret.removeprefix(second.processor_payment_id)


async def test_a_passed_challenge_charges_the_intent_as_a_confirm_would(sim):
    request, paused = await _paused(sim)

    status = sim.authenticate(paused.processor_payment_id, paused.client_secret, passed=True)

    looked = await sim.lookup(request, paused.processor_payment_id)
    assert (status, looked.kind, looked.amount_captured_minor) == (
        "succeeded",
        ResponseKind.SUCCEEDED,
        2500,
    )
    assert (looked.client_secret, looked.code) == ("", "")
    assert sim.ledger.charges_total == 1


async def test_a_passed_challenge_on_an_authorization_holds_the_money(sim):
    request, paused = await _paused(sim, capture=False)

    status = sim.authenticate(paused.processor_payment_id, paused.client_secret, passed=True)

    looked = await sim.lookup(request, paused.processor_payment_id)
    assert (status, looked.kind, looked.amount_captured_minor) == (
        "requires_capture",
        ResponseKind.AUTHORIZED,
        0,
    )


async def test_a_failed_challenge_leaves_the_intent_uncharged_with_stripes_authentication_failure(
    sim,
):
    request, paused = await _paused(sim)

    status = sim.authenticate(paused.processor_payment_id, paused.client_secret, passed=False)

    looked = await sim.lookup(request, paused.processor_payment_id)
    assert status == "requires_payment_method"
    assert (looked.kind, looked.closed, looked.error_type, looked.code) == (
        ResponseKind.NOT_CHARGED,
        False,
        "invalid_request_error",
        "payment_intent_authentication_failure",
    )
    assert looked.client_secret == ""
    assert sim.ledger.charges_total == 0


async def test_another_intents_secret_is_refused_and_changes_nothing(sim):
    request, paused = await _paused(sim, n=1)
    _, other = await _paused(sim, n=2)

    for wrong in (other.client_secret, "", paused.client_secret + "x", "é"):
        with pytest.raises(ChallengeRefused) as refused:
            sim.authenticate(paused.processor_payment_id, wrong, passed=True)
        assert refused.value.reason == "wrong_secret"
        assert paused.client_secret not in str(refused.value)

    looked = await sim.lookup(request, paused.processor_payment_id)
    assert looked.kind is ResponseKind.REQUIRES_ACTION
    assert sim.ledger.charges_total == 0


async def test_an_intent_the_processor_does_not_have_is_refused(sim):
    _, paused = await _paused(sim)

    with pytest.raises(ChallengeRefused) as refused:
        sim.authenticate("pi_sim_nope", paused.client_secret, passed=True)

    assert refused.value.reason == "unknown_intent"


async def test_an_intent_never_paused_has_no_challenge_to_answer(sim):
    answer = await sim.authorize(_request("pm_card_visa"))
    secret = sim.ledger.by_id[answer.processor_payment_id].client_secret

    with pytest.raises(ChallengeRefused) as refused:
        sim.authenticate(answer.processor_payment_id, secret, passed=True)

    assert refused.value.reason == "not_waiting"
    assert sim.ledger.charges_total == 1


@pytest.mark.parametrize("first", [True, False], ids=["passed", "failed"])
@pytest.mark.parametrize("second", [True, False], ids=["then passed", "then failed"])
async def test_a_challenge_is_answered_once(sim, first, second):
    request, paused = await _paused(sim)
    sim.authenticate(paused.processor_payment_id, paused.client_secret, passed=first)
    before = await sim.lookup(request, paused.processor_payment_id)

    with pytest.raises(ChallengeRefused) as refused:
        sim.authenticate(paused.processor_payment_id, paused.client_secret, passed=second)

    assert refused.value.reason == "not_waiting"
    after = await sim.lookup(request, paused.processor_payment_id)
    assert (after.kind, after.code) == (before.kind, before.code)
    assert sim.ledger.charges_total == int(first)


async def test_a_canceled_intent_cannot_be_authenticated(sim):
    _, paused = await _paused(sim)
    await sim.cancel(paused.processor_payment_id, "payorch_pay_1_0_void")

    with pytest.raises(ChallengeRefused) as refused:
        sim.authenticate(paused.processor_payment_id, paused.client_secret, passed=True)

    assert refused.value.reason == "not_waiting"
    assert sim.ledger.charges_total == 0


async def test_the_answer_reaches_whichever_simulated_processor_holds_the_intent():
    sim_a = SimulatedProcessor("sim_a", sleep=_no_sleep)
    sim_b = SimulatedProcessor("sim_b", sleep=_no_sleep)
    _, paused = await _paused(sim_b)

    name, status = answer_challenge(
        [sim_a, sim_b], paused.processor_payment_id, paused.client_secret, passed=True
    )

    assert (name, status) == ("sim_b", "succeeded")
    with pytest.raises(ChallengeRefused) as refused:
        answer_challenge([sim_a], paused.processor_payment_id, paused.client_secret, passed=True)
    assert refused.value.reason == "unknown_intent"
