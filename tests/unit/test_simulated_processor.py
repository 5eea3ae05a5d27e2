"""The simulated processor's settings and its memory: it remembers every PaymentIntent,
as Stripe does, unless told (`remember=N`) to keep only the last N, so that a soak
test's server does not grow without end."""

from __future__ import annotations

import dataclasses

import pytest

from payorch.adapters.processors.simulated import (
    InvalidSimulation,
    Ledger,
    SimulatedProcessor,
    Simulation,
)
from payorch.app.ports import ChargeRequest
from payorch.domain.classification import classify
from payorch.domain.results import ProcessorResponse, ResponseKind
from tests.fakes.fake_stripe import PAYMENT_METHODS


def _request(n: int, generation: int = 0) -> ChargeRequest:
    return ChargeRequest(
        payment_id=f"pay_{n}",
        step_index=0,
        idempotency_key=f"payorch_pay_{n}_0_g{generation}",
        intent_key=f"payorch_pay_{n}_0",
        amount_minor=1000 + n,
        currency="EUR",
        token="pm_card_visa",
        capture=True,
    )


async def _no_sleep(_: float) -> None:
    return None


def test_remember_is_read_as_a_whole_number_of_intents() -> None:
    sim = Simulation.parse("latency_ms=5,remember=20,seed=3")
    assert (sim.remember, sim.seed, sim.latency_ms) == (20, 3, 5.0)
    assert Simulation().remember == 0  # all of them, unless a soak test says otherwise
    assert Simulation.parse("remember=0").remember == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("remember=-5", "0: all"),
        ("remember=2.5", "remember needs a number"),
        ("remember=", "remember needs a number"),
        ("forget=3", "unknown simulation setting"),
    ],
)
def test_a_bad_remember_is_refused_with_what_was_wrong(spec: str, message: str) -> None:
    with pytest.raises(InvalidSimulation, match=message):
        Simulation.parse(spec)


async def test_by_default_every_intent_and_answer_is_remembered() -> None:
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    answers = [await sim.authorize(_request(n)) for n in range(300)]
    assert (len(sim.ledger.intents), len(sim.ledger.stored)) == (300, 300)
    found = await sim.lookup(_request(0), answers[0].processor_payment_id)
    assert found.kind is ResponseKind.SUCCEEDED


async def test_the_oldest_intents_are_forgotten_first_and_the_rest_still_answer() -> None:
    sim = SimulatedProcessor("sim", Simulation(remember=3), sleep=_no_sleep)
    answers = [await sim.authorize(_request(n)) for n in range(5)]
    assert all(a.kind is ResponseKind.SUCCEEDED for a in answers)

    assert list(sim.ledger.intents) == [f"payorch_pay_{n}_0" for n in (2, 3, 4)]
    assert set(sim.ledger.by_id) == {answers[n].processor_payment_id for n in (2, 3, 4)}
    for n in (0, 1):
        gone = await sim.lookup(_request(n), answers[n].processor_payment_id)
        assert gone.kind is ResponseKind.NOT_FOUND
    for n in (2, 3, 4):
        kept = await sim.lookup(_request(n), answers[n].processor_payment_id)
        assert (kept.kind, kept.processor_payment_id) == (
            ResponseKind.SUCCEEDED,
            answers[n].processor_payment_id,
        )


async def test_stored_answers_are_kept_for_twice_as_many_keys_and_replayed() -> None:
    sim = SimulatedProcessor("sim", Simulation(remember=2), sleep=_no_sleep)
    for n in range(6):
        await sim.authorize(_request(n))
    assert list(sim.ledger.stored) == [f"payorch_pay_{n}_0_g0" for n in (2, 3, 4, 5)]

    # A key still remembered replays its answer: no second charge.
    again = await sim.authorize(_request(5))
    assert again.kind is ResponseKind.SUCCEEDED
    assert sim.ledger.intents["payorch_pay_5_0"].charges == 1
    # Storing under a key already stored does not count it twice.
    sim.ledger.store("payorch_pay_5_0_g0", again)
    assert len(sim.ledger.stored) == 4


async def test_a_retry_after_its_intent_was_forgotten_is_charged_as_a_new_one() -> None:
    """What the docs warn of: past the limit the simulator no longer knows the payment."""
    sim = SimulatedProcessor("sim", Simulation(remember=1), sleep=_no_sleep)
    first = await sim.authorize(_request(0))
    await sim.authorize(_request(1))
    await sim.authorize(_request(2))  # pay_0's stored answer is forgotten too
    retried = await sim.authorize(_request(0, generation=1))
    assert retried.processor_payment_id == first.processor_payment_id
    assert sim.ledger.intents["payorch_pay_0_0"].charges == 1
    assert sim.ledger.charges_total == 1  # only what it still remembers


async def test_a_long_run_keeps_the_ledger_at_its_limit() -> None:
    sim = SimulatedProcessor("sim", Simulation(remember=50), sleep=_no_sleep)
    for n in range(2_000):
        await sim.authorize(_request(n))
        await sim.refund(
            f"pi_unknown_{n}", 1, f"refund_{n}", currency="EUR"
        )  # refused: nothing stored
    ledger = sim.ledger
    assert (len(ledger.intents), len(ledger.by_id), len(ledger.stored)) == (50, 50, 100)
    assert len(ledger._intent_order) == 50 and len(ledger._stored_order) == 100


async def test_changing_the_simulation_changes_the_limit_and_a_shared_ledger_keeps_its_own() -> (
    None
):
    sim = SimulatedProcessor("sim", Simulation(remember=10), sleep=_no_sleep)
    sim.set_simulation(Simulation(remember=2))
    for n in range(4):
        await sim.authorize(_request(n))
    assert len(sim.ledger.intents) == 2

    shared = Ledger()
    a = SimulatedProcessor("a", Simulation(remember=1), ledger=shared, sleep=_no_sleep)
    a.set_simulation(Simulation(remember=1))
    for n in range(3):
        await a.authorize(_request(n))
    assert len(shared.intents) == 3  # no limit: the owner of a shared ledger sets it


async def test_a_limit_set_later_forgets_the_oldest_already_remembered() -> None:
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    for n in range(5):
        await sim.authorize(_request(n))
    assert len(sim.ledger._intent_order) == 0  # no limit: no order kept beside the dicts
    sim.set_simulation(Simulation(remember=2))
    assert list(sim.ledger.intents) == ["payorch_pay_3_0", "payorch_pay_4_0"]
    assert list(sim.ledger.stored) == [f"payorch_pay_{n}_0_g0" for n in (1, 2, 3, 4)]
    await sim.authorize(_request(5))
    assert list(sim.ledger.intents) == ["payorch_pay_4_0", "payorch_pay_5_0"]


async def test_a_refund_is_found_under_its_key_after_the_answer_stored_under_it_is_gone() -> None:
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    pi = (await sim.authorize(_request(0))).processor_payment_id
    await sim.refund(pi, 400, "refund_a", currency="EUR")
    await sim.refund(pi, 10_000, "refund_too_much", currency="EUR")  # refused: nothing refunded
    sim.ledger.stored.clear()  # as Stripe prunes its keys after a day

    found = await sim.find_refund(pi, "refund_a")

    assert found.kind is ResponseKind.DONE and found.processor_payment_id == pi
    assert (await sim.find_refund(pi, "refund_too_much")).kind is ResponseKind.NOT_FOUND
    assert (await sim.find_refund(pi, "refund_b")).kind is ResponseKind.NOT_FOUND
    assert (await sim.find_refund("pi_unknown", "refund_a")).kind is ResponseKind.NOT_FOUND
    assert sim.ledger.by_id[pi].amount_refunded == 400  # looking refunds nothing


def _authorize_only(n: int) -> ChargeRequest:
    request = _request(n)
    return ChargeRequest(
        payment_id=request.payment_id,
        step_index=0,
        idempotency_key=request.idempotency_key,
        intent_key=request.intent_key,
        amount_minor=request.amount_minor,
        currency="EUR",
        token="pm_card_visa",
        capture=False,
    )


async def test_a_capture_made_again_under_its_key_gets_its_first_answer_as_stripe_replays_it() -> (
    None
):
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    pi = (await sim.authorize(_authorize_only(1))).processor_payment_id

    first = await sim.capture(pi, 1001, "cap_1", currency="EUR")
    again = await sim.capture(pi, 1001, "cap_1", currency="EUR")
    other_key = await sim.capture(pi, 1001, "cap_2", currency="EUR")

    assert first.kind is ResponseKind.DONE and first.amount_captured_minor == 1001
    assert again == first  # the same answer, request id included: nothing captured twice
    assert other_key.kind is ResponseKind.ERROR  # a new key meets a captured intent
    assert other_key.code == "payment_intent_unexpected_state"


async def test_a_cancel_that_lost_to_a_capture_answers_the_same_loss_under_its_key() -> None:
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    pi = (await sim.authorize(_authorize_only(2))).processor_payment_id
    won = await sim.capture(pi, 1002, "cap", currency="EUR")

    lost = await sim.cancel(pi, "void")
    again = await sim.cancel(pi, "void")

    assert won.kind is ResponseKind.DONE
    assert lost.kind is ResponseKind.ERROR and again == lost
    assert sim.ledger.by_id[pi].status == "succeeded"


async def test_a_cancel_made_again_under_its_key_is_replayed_after_the_intent_moved_on() -> None:
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    pi = (await sim.authorize(_authorize_only(3))).processor_payment_id

    first = await sim.cancel(pi, "void")
    sim.ledger.by_id[pi].status = "requires_capture"  # as if it could be held again
    again = await sim.cancel(pi, "void")

    assert first.kind is ResponseKind.DONE and again == first
    assert sim.ledger.by_id[pi].status == "requires_capture"  # the replay changed nothing


async def test_a_refused_refund_is_replayed_refused_under_its_key() -> None:
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    pi = (await sim.authorize(_request(4))).processor_payment_id

    refused = await sim.refund(pi, 10_000, "refund_too_much", currency="EUR")
    again = await sim.refund(pi, 10_000, "refund_too_much", currency="EUR")

    assert refused.kind is ResponseKind.ERROR and again == refused
    assert sim.ledger.by_id[pi].amount_refunded == 0


@pytest.mark.parametrize(
    "token", sorted(pm for pm, b in PAYMENT_METHODS.items() if not isinstance(b, str))
)
async def test_a_declining_stripe_test_card_is_declined_the_same_way_by_the_simulation(
    token: str,
) -> None:
    """One scenario suite runs against both: Stripe's declining test PaymentMethods (as
    the fake Stripe answers them) get the same classification from the simulation."""
    stripe_says = PAYMENT_METHODS[token]
    assert not isinstance(stripe_says, str)  # a decline, not a behaviour
    expected = classify(
        ProcessorResponse(
            ResponseKind.ERROR,
            http_status=402,
            error_type="card_error",
            code=stripe_says.code,
            decline_code=stripe_says.decline_code,
        )
    )
    sim = SimulatedProcessor("sim", sleep=_no_sleep)

    answer = await sim.authorize(dataclasses.replace(_request(1), token=token))

    assert answer.kind is ResponseKind.ERROR
    assert classify(answer) == expected


async def test_a_canceled_intent_keeps_no_decline_as_at_stripe() -> None:
    """Stripe clears last_payment_error when the PaymentIntent is updated for any reason,
    a cancel included: a lookup of a declined intent once canceled finds no decline."""
    sim = SimulatedProcessor("sim", sleep=_no_sleep)
    request = dataclasses.replace(_request(1), token="pm_card_chargeDeclinedInsufficientFunds")
    declined = await sim.authorize(request)
    before = await sim.lookup(request, declined.processor_payment_id)
    assert (before.kind, before.decline_code) == (ResponseKind.NOT_CHARGED, "insufficient_funds")

    canceled = await sim.cancel(declined.processor_payment_id, "payorch_pay_1_0_close1")
    after = await sim.lookup(request, declined.processor_payment_id)

    assert canceled.kind is ResponseKind.DONE
    assert (after.kind, after.closed) == (ResponseKind.NOT_CHARGED, True)
    assert (after.error_type, after.code, after.decline_code) == ("", "", "")
