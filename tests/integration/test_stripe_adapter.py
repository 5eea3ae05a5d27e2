"""The Stripe adapter, through the real `stripe` SDK, against a fake Stripe over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from payorch.adapters.clock import ManualClock
from payorch.adapters.processors.stripe import StripeProcessor
from payorch.app.ports import ChargeRequest
from payorch.domain.classification import classify
from payorch.domain.results import Classification, ErrorCode, Outcome, ResponseKind
from tests.fakes.fake_stripe import FakeStripe, Fault

SECRET_TAIL = "Zq81TopSecretDoNotLeak"


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe() as server:
        yield server


@pytest.fixture
async def processor(fake: FakeStripe) -> AsyncIterator[StripeProcessor]:
    async with StripeProcessor(fake.api_key, api_base=fake.url, timeout_s=2.0) as adapter:
        yield adapter


def charge(
    token: str = "pm_card_visa",
    *,
    generation: int = 0,
    payment_id: str = "pay_1",
    amount_minor: int = 1999,
    currency: str = "EUR",
    capture: bool = True,
    off_session: bool = True,
    timeout_s: float = 2.0,
    **extra: Any,
) -> ChargeRequest:
    return ChargeRequest(
        payment_id=payment_id,
        step_index=0,
        idempotency_key=f"{payment_id}:0:g{generation}",
        intent_key=f"{payment_id}:0",
        amount_minor=amount_minor,
        currency=currency,
        token=token,
        capture=capture,
        off_session=off_session,
        merchant_id="merchant_7",
        metadata={"order": "o-42"},
        timeout_s=timeout_s,
        **extra,
    )


# -- answers ---------------------------------------------------------------------------


async def test_a_visa_card_is_charged_once_with_our_keys_and_metadata(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge())

    assert answer.kind is ResponseKind.SUCCEEDED
    assert answer.processor_payment_id.startswith("pi_")
    assert answer.amount_captured_minor == 1999
    assert answer.request_id.startswith("req_")
    assert classify(answer).outcome is Outcome.SUCCESS
    assert fake.charges_for(answer.processor_payment_id) == 1
    assert fake.charges_total == 1

    pi = fake.payment_intent(answer.processor_payment_id)
    assert pi["currency"] == "eur"
    assert pi["capture_method"] == "automatic"
    assert pi["metadata"] == {
        "order": "o-42",
        "payorch_payment_id": "pay_1",
        "payorch_step": "0",
        "payorch_merchant_id": "merchant_7",
    }
    create, confirm = fake.requests
    assert (create.endpoint, create.idempotency_key) == ("create", "pay_1:0:create")
    assert (confirm.endpoint, confirm.idempotency_key) == ("confirm", "pay_1:0:g0")
    assert "confirm" not in create.params  # money moves only in phase two
    assert confirm.params["off_session"] == "true"


async def test_a_card_used_once_without_saving_it_on_a_customer_is_refused_the_next_time(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """A PaymentMethod is single use at Stripe unless attached to a customer: a charge
    naming a customer but not saving the card uses it up all the same."""
    fake.register_customer("cus_a")
    pm = fake.create_payment_method()
    first = await processor.authorize(charge(pm, customer_id="cus_a", off_session=False))
    assert first.kind is ResponseKind.SUCCEEDED
    assert "setup_future_usage" not in fake.requests_to("create")[0].params

    again = await processor.authorize(charge(pm, payment_id="pay_2", customer_id="cus_a"))

    assert (again.kind, again.http_status, again.error_type) == (
        ResponseKind.ERROR,
        400,
        "invalid_request_error",
    )
    assert "may not be used again" in again.message
    assert again.charge_not_sent  # refused at the create: no confirm went out
    # The caller's card to replace (collect it again), not our integration's fault.
    verdict = classify(again)
    assert (verdict.outcome, verdict.error_code, verdict.contract_violation) == (
        Outcome.HARD,
        ErrorCode.PAYMENT_METHOD_UNUSABLE,
        False,
    )
    assert not (verdict.retry_now or verdict.retry_later)
    assert fake.charges_total == 1 and fake.used_up(pm) and fake.customer_of(pm) is None


async def test_a_card_saved_for_off_session_is_attached_to_the_customer_and_charged_again(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    for customer in ("cus_a", "cus_b"):
        fake.register_customer(customer)
    pm = fake.create_payment_method()
    first = await processor.authorize(
        charge(pm, customer_id="cus_a", off_session=False, save_for_off_session=True)
    )
    assert first.kind is ResponseKind.SUCCEEDED
    create = fake.requests_to("create")[0]
    assert (create.params["customer"], create.params["setup_future_usage"]) == (
        "cus_a",
        "off_session",
    )
    assert fake.customer_of(pm) == "cus_a"

    later = [
        await processor.authorize(charge(pm, payment_id=f"pay_{n}", customer_id="cus_a"))
        for n in (2, 3)
    ]
    assert [a.kind for a in later] == [ResponseKind.SUCCEEDED] * 2
    assert all("setup_future_usage" not in r.params for r in fake.requests_to("create")[1:])
    # Saved on cus_a, it is cus_a's: without it, or with another customer, Stripe refuses.
    for other in ("", "cus_b"):
        refused = await processor.authorize(charge(pm, payment_id="pay_x", customer_id=other))
        assert (refused.kind, refused.http_status) == (ResponseKind.ERROR, 400)
        verdict = classify(refused)
        assert (verdict.error_code, verdict.contract_violation) == (
            ErrorCode.PAYMENT_METHOD_UNUSABLE,
            False,
        )
    assert fake.charges_total == 3


async def test_saving_a_card_takes_a_customer_to_save_it_on(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge(off_session=False, save_for_off_session=True))
    assert answer.kind is ResponseKind.SUCCEEDED
    assert "setup_future_usage" not in fake.requests_to("create")[0].params


async def test_a_generic_decline_is_a_card_error_with_status_codes_and_request_id(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge("pm_card_chargeDeclined"))

    assert answer.kind is ResponseKind.ERROR
    assert answer.error_type == "card_error"
    assert answer.code == "card_declined"
    assert answer.decline_code == "generic_decline"
    assert answer.http_status == 402
    assert answer.request_id == fake.requests[-1].request_id
    assert answer.request_id.startswith("req_")
    assert answer.message == "Your card was declined."
    assert answer.exception == "CardError"
    assert answer.processor_payment_id == fake.requests[-1].path.split("/")[3]
    assert not answer.indeterminate
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code) == (Outcome.HARD, ErrorCode.CARD_DECLINED)
    assert fake.charges_total == 0


async def test_insufficient_funds_is_a_soft_decline_for_later_not_now(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge("pm_card_chargeDeclinedInsufficientFunds"))

    assert (answer.error_type, answer.code, answer.decline_code) == (
        "card_error",
        "card_declined",
        "insufficient_funds",
    )
    verdict = classify(answer)
    assert verdict.outcome is Outcome.SOFT
    assert verdict.error_code is ErrorCode.INSUFFICIENT_FUNDS
    assert (verdict.retry_now, verdict.retry_later) == (False, True)
    assert fake.charges_total == 0


async def test_an_issuers_advice_not_to_try_again_is_read_from_the_decline_and_the_lookup(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.register_declined_payment_method(
        "pm_live_declined",
        code="card_declined",
        decline_code="do_not_honor",
        advice_code="do_not_try_again",
    )
    answer = await processor.authorize(charge("pm_live_declined"))

    assert (answer.decline_code, answer.advice_code) == ("do_not_honor", "do_not_try_again")
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code) == (Outcome.HARD, ErrorCode.DO_NOT_HONOR)
    assert (verdict.retry_now, verdict.retry_later) == (False, False)
    # A lookup (after a lost answer or a 500) reads it from last_payment_error too.
    looked = await processor.lookup(charge("pm_live_declined"), answer.processor_payment_id)
    assert looked.kind is ResponseKind.NOT_CHARGED
    assert (looked.decline_code, looked.advice_code) == ("do_not_honor", "do_not_try_again")
    assert fake.charges_total == 0


async def test_a_card_over_its_velocity_limit_is_declined_for_later_not_now(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge("pm_card_chargeDeclinedVelocityLimitExceeded"))

    assert (answer.error_type, answer.decline_code) == ("card_error", "card_velocity_exceeded")
    verdict = classify(answer)
    assert (verdict.outcome, verdict.retry_now, verdict.retry_later) == (Outcome.SOFT, False, True)
    assert not verdict.unmapped
    assert fake.charges_total == 0


@pytest.mark.parametrize(
    ("decline_code", "outcome", "retry_later"),
    [
        # Over the card's count of withdrawals until the limit resets, as a velocity limit.
        ("withdrawal_count_limit_exceeded", Outcome.SOFT, True),
        # A Stripe test card in live mode: a genuine card must be used.
        ("testmode_decline", Outcome.HARD, False),
        # Card-present PIN declines: the customer must use the card at a reader.
        ("incorrect_pin", Outcome.HARD, False),
        ("invalid_pin", Outcome.HARD, False),
        ("pin_try_exceeded", Outcome.HARD, False),
        ("offline_pin_required", Outcome.HARD, False),
        ("online_or_offline_pin_required", Outcome.HARD, False),
    ],
)
async def test_stripes_rarer_decline_codes_have_rows_not_unmapped_failures(
    fake: FakeStripe,
    processor: StripeProcessor,
    decline_code: str,
    outcome: Outcome,
    retry_later: bool,
) -> None:
    fake.register_declined_payment_method(
        "pm_issuer_says", code="card_declined", decline_code=decline_code
    )

    answer = await processor.authorize(charge("pm_issuer_says"))

    assert (answer.error_type, answer.decline_code) == ("card_error", decline_code)
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code, verdict.retry_now, verdict.retry_later) == (
        outcome,
        ErrorCode.CARD_DECLINED,
        False,
        retry_later,
    )
    assert not verdict.unmapped
    assert fake.charges_total == 0


@pytest.mark.parametrize(
    ("token", "code", "decline_code", "error_code"),
    [
        ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card", ErrorCode.STOLEN_CARD),
        ("pm_card_chargeDeclinedFraudulent", "card_declined", "fraudulent", ErrorCode.FRAUDULENT),
        ("pm_card_chargeDeclinedLostCard", "card_declined", "lost_card", ErrorCode.LOST_CARD),
        (
            "pm_card_chargeDeclinedExpiredCard",
            "expired_card",
            "expired_card",
            ErrorCode.EXPIRED_CARD,
        ),
        (
            "pm_card_chargeDeclinedIncorrectCvc",
            "incorrect_cvc",
            "incorrect_cvc",
            ErrorCode.INCORRECT_CVC,
        ),
    ],
)
async def test_each_declining_test_card_answers_with_stripes_codes(
    processor: StripeProcessor, token: str, code: str, decline_code: str, error_code: ErrorCode
) -> None:
    answer = await processor.authorize(charge(token))

    assert (answer.kind, answer.http_status) == (ResponseKind.ERROR, 402)
    assert (answer.code, answer.decline_code) == (code, decline_code)
    assert classify(answer).error_code is error_code


async def test_authentication_on_session_returns_the_client_secret_and_next_action(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge("pm_card_authenticationRequired", off_session=False))

    assert answer.kind is ResponseKind.REQUIRES_ACTION
    assert answer.next_action_type == "use_stripe_sdk"
    assert answer.client_secret.startswith(f"{answer.processor_payment_id}_secret_")
    assert classify(answer).outcome is Outcome.REQUIRES_ACTION
    assert "off_session" not in fake.requests[-1].params
    assert fake.charges_total == 0


# Stripe's test cards that ask for 3-D Secure on every payment: off-session, Stripe
# declines the confirm (402 authentication_required) and leaves the PaymentIntent open.
THREE_DS_CARDS = (
    "pm_card_authenticationRequired",
    "pm_card_threeDSecureRequired",
    "pm_card_threeDSecure2Required",
)


@pytest.mark.parametrize("token", THREE_DS_CARDS)
async def test_authentication_off_session_waits_for_the_customer_with_the_intents_client_secret(
    fake: FakeStripe, processor: StripeProcessor, token: str
) -> None:
    answer = await processor.authorize(charge(token))

    pi = fake.payment_intent(answer.processor_payment_id)
    # Stripe's answer: 402, authentication_required, the intent waiting for a method.
    assert fake.requests_to("confirm")[-1].status == 402
    assert pi["status"] == "requires_payment_method"
    assert pi["last_payment_error"]["code"] == "authentication_required"
    # payorch's: the customer is to confirm this same PaymentIntent on-session.
    assert answer.kind is ResponseKind.REQUIRES_ACTION
    assert answer.client_secret == pi["client_secret"]
    assert answer.next_action_type == "use_stripe_sdk"
    assert classify(answer).outcome is Outcome.REQUIRES_ACTION
    # Stripe's own words are kept for the attempt's record.
    assert (answer.http_status, answer.error_type, answer.code, answer.decline_code) == (
        402,
        "card_error",
        "authentication_required",
        "authentication_required",
    )
    assert fake.charges_total == 0


async def test_authentication_off_session_reads_as_waiting_on_a_lookup_and_a_replay(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    request = charge("pm_card_authenticationRequired")
    first = await processor.authorize(request)

    looked = await processor.lookup(request, first.processor_payment_id)
    replayed = await processor.authorize(request)  # the same key: Stripe's stored 402

    for answer in (looked, replayed):
        assert answer.kind is ResponseKind.REQUIRES_ACTION
        assert answer.processor_payment_id == first.processor_payment_id
        assert answer.client_secret == first.client_secret
        assert answer.next_action_type == "use_stripe_sdk"
    assert fake.requests_to("confirm")[-1].replayed
    assert fake.charges_total == 0

    # The customer came back and confirmed it on-session: the same intent, charged once.
    fake.complete_action(first.processor_payment_id)
    done = await processor.lookup(request, first.processor_payment_id)
    assert done.kind is ResponseKind.SUCCEEDED
    assert fake.charges_total == 1


async def test_authentication_off_session_whose_answer_was_lost_is_found_waiting(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    request = charge("pm_card_authenticationRequired")
    fake.inject(Fault.drop_after_processing())
    lost = await processor.authorize(request)
    assert lost.kind is ResponseKind.NO_RESPONSE

    looked = await processor.lookup(request, lost.processor_payment_id)

    assert looked.kind is ResponseKind.REQUIRES_ACTION
    assert looked.client_secret == fake.payment_intent(lost.processor_payment_id)["client_secret"]
    assert fake.charges_total == 0


async def test_a_customer_who_failed_authentication_is_not_waited_for_again(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """Only the bank's off-session authentication_required waits: once the customer's
    own attempt failed, the intent reads as not charged (the step's 3-D Secure failed)."""
    request = charge("pm_card_authenticationRequired")
    first = await processor.authorize(request)
    fake.fail_action(first.processor_payment_id)

    looked = await processor.lookup(request, first.processor_payment_id)

    assert looked.kind is ResponseKind.NOT_CHARGED
    assert looked.code == "payment_intent_authentication_failure"
    assert looked.error_type == "invalid_request_error"


async def test_a_confirm_refused_for_a_failed_authentication_reads_authentication_failed(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """Stripe's 400 payment_intent_authentication_failure on a confirm: the customer's
    3-D Secure failed. Not our bad request (no contract violation), not the processor's
    health, and never retried, now or later."""
    fake.inject(
        Fault.invalid_request(
            code="payment_intent_authentication_failure",
            message="The provided PaymentMethod has failed authentication.",
        )
    )

    answer = await processor.authorize(charge("pm_card_threeDSecureRequired"))

    assert (answer.kind, answer.http_status, answer.code) == (
        ResponseKind.ERROR,
        400,
        "payment_intent_authentication_failure",
    )
    verdict = classify(answer)
    assert verdict == Classification(
        Outcome.HARD, ErrorCode.AUTHENTICATION_FAILED, retry_now=False, retry_later=False
    )
    assert fake.charges_total == 0


FAILS_AUTHENTICATION = "pm_live_failsAuthentication"


async def test_a_confirm_answered_with_a_failed_authentication_cancels_the_intent_first(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """The customer's 3-D Secure failed within the confirm (Stripe's 400
    payment_intent_authentication_failure, the intent left requires_payment_method):
    the intent is canceled before the step fails, as when a lookup finds that failure,
    so no confirm with its client secret (another card) can charge a step failed. The
    cancel has its own key, so a replay of the confirm (its 400 stored under its key)
    cancels under the same one."""
    fake.register_failing_authentication(FAILS_AUTHENTICATION)

    answers = [
        await processor.authorize(charge(FAILS_AUTHENTICATION, off_session=False)) for _ in range(2)
    ]

    for answer in answers:
        assert (answer.kind, answer.http_status, answer.code, answer.closed) == (
            ResponseKind.ERROR,
            400,
            "payment_intent_authentication_failure",
            True,
        )
        assert classify(answer) == Classification(
            Outcome.HARD, ErrorCode.AUTHENTICATION_FAILED, retry_now=False, retry_later=False
        )
    pi_id = answers[0].processor_payment_id
    assert fake.payment_intent(pi_id)["status"] == "canceled"
    assert {r.idempotency_key for r in fake.requests_to("cancel")} == {"pay_1:0:g0_close"}
    assert fake.charges_total == 0


async def test_a_failed_authentication_whose_cancel_fails_is_pending_never_failed(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """The cancel after the customer's failed 3-D Secure got a 500: the intent is still
    open to another card, so the step is not failed (a fallback method could be charged
    beside it), nor charged: pending, for the reconciler to close it."""
    fake.register_failing_authentication(FAILS_AUTHENTICATION)
    fake.inject(Fault.api_error(), endpoint="cancel")

    answer = await processor.authorize(charge(FAILS_AUTHENTICATION, off_session=False))

    assert (answer.kind, answer.code) == (
        ResponseKind.PENDING,
        "payment_intent_authentication_failure",
    )
    assert classify(answer).outcome is Outcome.UNKNOWN
    assert fake.payment_intent(answer.processor_payment_id)["status"] == "requires_payment_method"
    assert fake.charges_total == 0


async def test_a_failed_authentication_charged_with_its_client_secret_before_the_cancel_is_charged(
    fake: FakeStripe, processor: StripeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the confirm's failed 3-D Secure and payorch's cancel, the customer's
    browser confirmed the intent with its client secret and another card: the cancel is
    refused, and the charge is the step's answer (one charge, recorded), never the
    failure (which would let a fallback method charge the customer again)."""
    fake.register_failing_authentication(FAILS_AUTHENTICATION)
    cancel = fake._do_cancel

    def charged_before_the_cancel(pi: str, params: dict[str, Any]) -> dict[str, Any]:
        fake.complete_action(pi)
        return cancel(pi, params)

    monkeypatch.setattr(fake, "_do_cancel", charged_before_the_cancel)

    answer = await processor.authorize(charge(FAILS_AUTHENTICATION, off_session=False))

    assert answer.kind is ResponseKind.SUCCEEDED
    assert classify(answer).outcome is Outcome.SUCCESS
    assert fake.requests_to("cancel")[-1].status == 400
    assert fake.charges_total == 1


async def test_an_on_session_lookup_of_an_intent_declined_for_authentication_is_not_charged(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """An on-session payment had its customer there to authenticate: a decline asking
    for authentication then is the bank's answer, not a pause."""
    first = await processor.authorize(charge("pm_card_authenticationRequired"))

    looked = await processor.lookup(
        charge("pm_card_authenticationRequired", off_session=False), first.processor_payment_id
    )

    assert looked.kind is ResponseKind.NOT_CHARGED
    assert looked.decline_code == "authentication_required"


async def test_a_card_set_up_for_later_is_charged_off_session_without_authentication(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge("pm_card_authenticationRequiredOnSetup"))

    assert answer.kind is ResponseKind.SUCCEEDED
    assert fake.charges_total == 1


# -- manual capture, cancel, refund ---------------------------------------------------


async def test_a_manual_capture_intent_is_authorized_then_partly_captured(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    held = await processor.authorize(charge(capture=False))
    assert held.kind is ResponseKind.AUTHORIZED
    assert fake.payment_intent(held.processor_payment_id)["capture_method"] == "manual"

    done = await processor.capture(
        held.processor_payment_id, 1500, "pay_1:capture:g0", currency="EUR"
    )

    assert done.kind is ResponseKind.DONE
    assert done.amount_captured_minor == 1500
    assert done.processor_payment_id == held.processor_payment_id
    assert fake.payment_intent(held.processor_payment_id)["status"] == "succeeded"
    assert fake.charges_total == 1


async def test_a_krona_capture_is_sent_and_read_back_in_stripes_hundredths(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    held = await processor.authorize(charge(capture=False, amount_minor=700, currency="ISK"))

    done = await processor.capture(
        held.processor_payment_id, 700, "pay_1:capture:g0", currency="ISK"
    )

    assert done.kind is ResponseKind.DONE
    assert done.amount_captured_minor == 700  # kronur, as we count them
    pi = fake.payment_intent(held.processor_payment_id)
    assert (pi["amount"], pi["amount_received"]) == (70_000, 70_000)


async def test_capturing_twice_is_an_error_not_a_second_capture(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    held = await processor.authorize(charge(capture=False))
    await processor.capture(held.processor_payment_id, 0, "pay_1:capture:g0", currency="EUR")

    again = await processor.capture(
        held.processor_payment_id, 0, "pay_1:capture:g1", currency="EUR"
    )

    assert again.kind is ResponseKind.ERROR
    assert (again.error_type, again.code) == (
        "invalid_request_error",
        "payment_intent_unexpected_state",
    )
    assert again.processor_payment_id == held.processor_payment_id


async def test_cancel_releases_an_authorization(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    held = await processor.authorize(charge(capture=False))

    done = await processor.cancel(held.processor_payment_id, "pay_1:cancel:g0")

    assert done.kind is ResponseKind.DONE
    assert fake.payment_intent(held.processor_payment_id)["status"] == "canceled"
    looked = await processor.lookup(charge(capture=False), held.processor_payment_id)
    assert looked.kind is ResponseKind.NOT_CHARGED


async def test_refunds_give_money_back_up_to_what_was_captured(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    paid = await processor.authorize(charge())
    ppid = paid.processor_payment_id

    first = await processor.refund(ppid, 999, "pay_1:refund:1", currency="EUR")
    replayed = await processor.refund(ppid, 999, "pay_1:refund:1", currency="EUR")
    second = await processor.refund(ppid, 1000, "pay_1:refund:2", currency="EUR")
    too_much = await processor.refund(ppid, 1, "pay_1:refund:3", currency="EUR")

    assert (first.kind, replayed.kind, second.kind) == (ResponseKind.DONE,) * 3
    assert fake.refunded_for(ppid) == 1999
    assert too_much.kind is ResponseKind.ERROR
    assert too_much.code == "charge_already_refunded"
    assert too_much.processor_payment_id == ppid


async def test_a_refund_is_found_by_its_key_in_every_page_of_the_intents_refunds(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    ppid = (await processor.authorize(charge())).processor_payment_id
    for n in range(101):  # one more than a page: the oldest is on the second
        await processor.refund(ppid, 1, f"pay_1:refund:{n}", currency="EUR")

    oldest = await processor.find_refund(ppid, "pay_1:refund:0")
    newest = await processor.find_refund(ppid, "pay_1:refund:100")
    never = await processor.find_refund(ppid, "pay_1:refund:101")

    assert (oldest.kind, newest.kind, never.kind) == (
        ResponseKind.DONE,
        ResponseKind.DONE,
        ResponseKind.NOT_FOUND,
    )
    assert oldest.processor_payment_id == ppid and oldest.request_id.startswith("req_")
    pages = [r.params for r in fake.requests_to("list_refunds")]
    assert len(pages) == 5  # two, one, two
    assert {p["payment_intent"] for p in pages} == {ppid}
    assert {p["limit"] for p in pages} == {"100"}
    assert "starting_after" not in pages[0] and pages[1]["starting_after"].startswith("re_")
    assert len(fake.refunds_for(ppid)) == 101  # looking made none


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("succeeded", ResponseKind.DONE),
        ("pending", ResponseKind.DONE),
        ("requires_action", ResponseKind.DONE),
        ("failed", ResponseKind.NOT_FOUND),
        ("canceled", ResponseKind.NOT_FOUND),
    ],
)
async def test_a_refund_found_under_its_key_counts_as_made_unless_it_failed_or_was_canceled(
    fake: FakeStripe, processor: StripeProcessor, status: str, kind: ResponseKind
) -> None:
    ppid = (await processor.authorize(charge())).processor_payment_id
    await processor.refund(ppid, 999, "pay_1:refund:1", currency="EUR")
    [made] = fake.refunds_for(ppid)
    fake.set_refund_status(made["id"], status)

    found = await processor.find_refund(ppid, "pay_1:refund:1")

    assert found.kind is kind


async def test_a_refund_lookup_stripe_cannot_answer_is_no_answer(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    ppid = (await processor.authorize(charge())).processor_payment_id
    fake.inject(Fault.api_error(), endpoint="list_refunds")

    found = await processor.find_refund(ppid, "pay_1:refund:1")

    assert found.kind is ResponseKind.ERROR and found.http_status == 500
    assert found.processor_payment_id == ppid


# -- failures on the way: 5xx, 429, dropped connections, timeouts ---------------------


async def test_a_500_is_indeterminate_and_once_lookup_finds_nothing_a_new_generation_charges(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.api_error())

    failed = await processor.authorize(charge())

    assert failed.kind is ResponseKind.ERROR
    assert (failed.error_type, failed.http_status) == ("api_error", 500)
    assert failed.indeterminate
    assert failed.request_id.startswith("req_")
    assert failed.processor_payment_id.startswith("pi_")
    assert classify(failed).error_code is ErrorCode.PROCESSOR_ERROR

    # Stripe stored the 500 under the key: the same key only replays it.
    replayed = await processor.authorize(charge())
    assert (replayed.kind, replayed.http_status) == (ResponseKind.ERROR, 500)
    assert fake.requests[-1].replayed

    looked = await processor.lookup(charge(), failed.processor_payment_id)
    assert looked.kind is ResponseKind.NOT_CHARGED
    assert classify(looked).outcome is Outcome.SOFT

    retried = await processor.authorize(charge(generation=1))

    assert retried.kind is ResponseKind.SUCCEEDED
    assert retried.processor_payment_id == failed.processor_payment_id
    assert fake.charges_for(failed.processor_payment_id) == 1
    assert fake.charges_total == 1


async def test_a_500_after_the_charge_went_through_is_found_by_lookup_and_never_charged_again(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.api_error(charged=True, should_retry=False))

    failed = await processor.authorize(charge())
    assert failed.should_retry is False
    assert classify(failed).retry_now is False

    looked = await processor.lookup(charge(), failed.processor_payment_id)
    assert looked.kind is ResponseKind.SUCCEEDED

    # Even a careless new generation reports the existing charge instead of charging.
    again = await processor.authorize(charge(generation=1))
    assert again.kind is ResponseKind.SUCCEEDED
    assert fake.charges_total == 1


@pytest.mark.parametrize("charged", [False, True], ids=["not-charged", "charged"])
async def test_a_424_from_a_failed_dependency_is_indeterminate_and_looked_up_like_a_500(
    fake: FakeStripe, processor: StripeProcessor, charged: bool
) -> None:
    fake.inject(Fault.dependency_failed(charged=charged))

    failed = await processor.authorize(charge())

    assert (failed.kind, failed.error_type, failed.http_status) == (
        ResponseKind.ERROR,
        "api_error",
        424,
    )
    # Stripe ran the confirm and stored its 424 under the key: whether the bank was
    # reached before the dependency failed is not said, so the intent is looked up.
    assert failed.indeterminate and not failed.charge_not_sent
    assert classify(failed).error_code is ErrorCode.PROCESSOR_ERROR

    looked = await processor.lookup(charge(), failed.processor_payment_id)
    assert looked.kind is (ResponseKind.SUCCEEDED if charged else ResponseKind.NOT_CHARGED)
    assert fake.charges_total == int(charged)


async def test_a_create_that_got_a_stored_424_is_made_again_under_the_next_create_key(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.dependency_failed(), endpoint="create")

    failed = await processor.authorize(charge())
    assert (failed.http_status, failed.charge_not_sent) == (424, True)

    # Replayed under `:create` like a stored 500: the retry moves on to `:create:1`.
    paid = await processor.authorize(charge())

    assert paid.kind is ResponseKind.SUCCEEDED
    assert [(r.idempotency_key, r.replayed) for r in fake.requests_to("create")] == [
        ("pay_1:0:create", False),
        ("pay_1:0:create", True),
        ("pay_1:0:create:1", False),
    ]
    assert fake.charges_total == 1


async def test_a_lookup_is_inconclusive_when_a_create_key_answers_a_424_first_hand(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.dependency_failed(), endpoint="create")

    looked = await processor.lookup(charge(), "")

    # Not a refusal of the create's parameters: it says nothing about an intent.
    assert (looked.kind, looked.http_status) == (ResponseKind.ERROR, 424)


@pytest.mark.parametrize(
    ("fault", "code"), [(Fault.rate_limit(), "rate_limit"), (Fault.lock_timeout(), "lock_timeout")]
)
async def test_a_429_is_retried_with_the_same_key_and_charges_once(
    fake: FakeStripe, processor: StripeProcessor, fault: Fault, code: str
) -> None:
    fake.inject(fault)

    limited = await processor.authorize(charge())

    assert limited.kind is ResponseKind.ERROR
    assert (limited.http_status, limited.code) == (429, code)
    assert limited.exception == "RateLimitError"
    assert limited.should_retry is True
    assert limited.request_id.startswith("req_")
    assert limited.processor_payment_id.startswith("pi_")
    verdict = classify(limited)
    assert (verdict.outcome, verdict.retry_now) == (Outcome.SOFT, True)
    assert fake.charges_total == 0

    retried = await processor.authorize(charge())

    assert retried.kind is ResponseKind.SUCCEEDED
    assert not fake.requests[-1].replayed  # the 429 was never stored
    assert fake.charges_total == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.api_error(should_retry=True),
        Fault.rate_limit(retry_after_s=0),
        Fault.drop_after_processing(),
    ],
    ids=["500 Stripe says to retry", "429", "answer lost"],
)
async def test_the_sdk_never_retries_on_its_own_so_only_the_router_decides_the_key(
    fake: FakeStripe, processor: StripeProcessor, fault: Fault
) -> None:
    fake.inject(fault)

    await processor.authorize(charge())

    # One confirm per call: the SDK's retries would multiply the router's, and Stripe's
    # stored 500 under the key would be replayed to each of them.
    assert len(fake.requests_to("confirm")) == 1
    # Every request under the API version this SDK release is pinned to.
    assert {r.stripe_version for r in fake.requests} == {stripe.api_version}


async def test_a_429_says_when_to_retry(fake: FakeStripe, processor: StripeProcessor) -> None:
    fake.inject(Fault.rate_limit(retry_after_s=2.5))

    limited = await processor.authorize(charge())

    assert limited.retry_after_s == 2.5
    assert classify(limited).error_code is ErrorCode.RATE_LIMITED


async def test_a_connection_dropped_after_processing_is_no_response_and_lookup_finds_one_charge(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.drop_after_processing())

    lost = await processor.authorize(charge())

    assert lost.kind is ResponseKind.NO_RESPONSE
    assert lost.exception == "APIConnectionError"
    assert lost.processor_payment_id.startswith("pi_")
    assert classify(lost).outcome is Outcome.UNKNOWN
    assert fake.charges_total == 1

    looked = await processor.lookup(charge(), lost.processor_payment_id)
    assert looked.kind is ResponseKind.SUCCEEDED
    assert looked.processor_payment_id == lost.processor_payment_id

    # Retrying with the same key replays the stored success: still one charge.
    retried = await processor.authorize(charge())
    assert retried.kind is ResponseKind.SUCCEEDED
    assert fake.requests[-1].replayed
    assert fake.charges_for(lost.processor_payment_id) == 1


async def test_a_lookup_without_an_id_replays_the_create_and_finds_the_charge(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.drop_after_processing())
    lost = await processor.authorize(charge())

    looked = await processor.lookup(charge(), "")

    assert looked.kind is ResponseKind.SUCCEEDED
    assert looked.processor_payment_id == lost.processor_payment_id
    assert len(fake.payment_intents) == 1
    assert fake.charges_total == 1


# -- a day later: Stripe has pruned the keys --------------------------------------------

DAY = 24 * 3600


@contextlib.asynccontextmanager
async def on_one_clock() -> AsyncIterator[tuple[FakeStripe, StripeProcessor, ManualClock]]:
    """The fake and the adapter on one manual wall clock (key expiry, search's lag)."""
    clock = ManualClock()
    async with (
        FakeStripe(clock=clock) as server,
        StripeProcessor(server.api_key, api_base=server.url, clock=clock) as adapter,
    ):
        yield server, adapter, clock


async def test_a_lookup_without_an_id_a_day_later_finds_the_charge_by_search_not_a_new_create() -> (
    None
):
    async with on_one_clock() as (fake, processor, clock):
        made = clock.now()
        fake.inject(Fault.drop_after_processing())
        lost = await processor.authorize(charge(created_at=made))
        clock.advance(DAY + 60)

        looked = await processor.lookup(charge(created_at=made), "")

        assert looked.kind is ResponseKind.SUCCEEDED
        assert looked.processor_payment_id == lost.processor_payment_id
        assert len(fake.requests_to("create")) == 1 and len(fake.payment_intents) == 1
        [search] = fake.requests_to("search")
        assert search.params["query"] == (
            "metadata['payorch_payment_id']:'pay_1' AND metadata['payorch_step']:'0'"
        )
        assert fake.charges_total == 1


async def test_a_single_use_card_charged_a_day_ago_is_found_not_taken_for_a_refused_create() -> (
    None
):
    async with on_one_clock() as (fake, processor, clock):
        made = clock.now()
        card = fake.create_payment_method()
        fake.inject(Fault.drop_after_processing())
        lost = await processor.authorize(charge(card, created_at=made))
        clock.advance(DAY + 60)

        looked = await processor.lookup(charge(card, created_at=made), "")

        # Replayed a day later, the create is refused for the spent card ("No such
        # intent, nothing charged"): the search finds the charge instead.
        assert looked.kind is ResponseKind.SUCCEEDED
        assert looked.processor_payment_id == lost.processor_payment_id
        assert fake.used_up(card) and fake.charges_total == 1


async def test_replaying_a_create_a_day_later_would_make_a_second_intent() -> None:
    # What the search is for: Stripe forgets the key, and the same create is new again.
    async with on_one_clock() as (fake, processor, clock):
        paid = await processor.authorize(charge())
        clock.advance(DAY - 1)
        kept = await processor.lookup(charge(), "")  # no created_at: the create replayed
        assert (kept.kind, kept.processor_payment_id) == (
            ResponseKind.SUCCEEDED,
            paid.processor_payment_id,
        )
        clock.advance(1)

        looked = await processor.lookup(charge(), "")

        assert looked.kind is ResponseKind.NOT_CHARGED
        assert len(fake.payment_intents) == 2 and fake.charges_total == 1


async def test_a_step_first_charged_a_day_after_its_payment_is_found_by_its_create_key() -> None:
    async with on_one_clock() as (fake, processor, clock):
        made = clock.now()
        clock.advance(DAY + 60)  # the step runs a day after the payment was made
        fake.inject(Fault.drop_after_processing())
        lost = await processor.authorize(charge(created_at=made))

        # Search does not see the intent yet (Stripe indexes within a minute or so):
        # the create's key, a minute old, replays it.
        looked = await processor.lookup(charge(created_at=made), "")

        assert looked.kind is ResponseKind.SUCCEEDED
        assert looked.processor_payment_id == lost.processor_payment_id
        assert fake.requests_to("create")[-1].replayed
        assert len(fake.payment_intents) == 1 and fake.charges_total == 1


async def test_of_a_steps_intents_found_a_day_later_the_charged_one_answers() -> None:
    async with on_one_clock() as (fake, processor, clock):
        made = clock.now()
        fake.inject(Fault.api_error(charged=True), endpoint="create")  # made one, said 500
        await processor.authorize(charge(created_at=made))
        paid = await processor.authorize(charge(created_at=made))  # under `:create:1`
        clock.advance(DAY + 60)

        looked = await processor.lookup(charge(created_at=made), "")

        assert len(fake.payment_intents) == 2
        assert looked.kind is ResponseKind.SUCCEEDED
        assert looked.processor_payment_id == paid.processor_payment_id
        assert fake.charges_total == 1


async def test_a_search_stripe_refuses_a_day_later_is_inconclusive_and_creates_nothing() -> None:
    async with on_one_clock() as (fake, processor, clock):
        made = clock.now()
        fake.inject(Fault.drop_after_processing())
        await processor.authorize(charge(created_at=made))
        clock.advance(DAY + 60)
        # As Stripe answers an account search is not available to (India, say).
        fake.inject(
            Fault.invalid_request(code="", message="Search is unavailable"), endpoint="search"
        )

        looked = await processor.lookup(charge(created_at=made), "")

        assert (looked.kind, looked.http_status) == (ResponseKind.ERROR, 400)
        assert len(fake.requests_to("create")) == 1 and len(fake.payment_intents) == 1


async def test_a_day_later_a_step_stripe_never_saw_is_not_found_by_search_then_made_unconfirmed() -> (
    None
):
    async with on_one_clock() as (fake, processor, clock):
        made = clock.now()
        clock.advance(DAY + 60)

        looked = await processor.lookup(charge(created_at=made), "")

        assert looked.kind is ResponseKind.NOT_CHARGED and not looked.closed
        assert len(fake.requests_to("search")) == 1
        assert fake.charges_total == 0


async def test_a_connection_dropped_before_processing_is_no_response_and_the_same_key_charges_once(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.drop_before_processing())

    lost = await processor.authorize(charge())

    assert lost.kind is ResponseKind.NO_RESPONSE
    assert fake.charges_total == 0
    retried = await processor.authorize(charge())
    assert retried.kind is ResponseKind.SUCCEEDED
    assert fake.charges_total == 1


async def test_an_answer_slower_than_the_timeout_is_no_response(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.slow(2.0))

    started = time.monotonic()
    late = await processor.authorize(charge(timeout_s=0.3))
    elapsed = time.monotonic() - started

    assert late.kind is ResponseKind.NO_RESPONSE
    assert elapsed < 1.0
    assert late.processor_payment_id.startswith("pi_")
    assert classify(late).error_code is ErrorCode.TIMEOUT
    # Stripe did the work; only the answer was late.
    looked = await processor.lookup(charge(), late.processor_payment_id)
    assert looked.kind is ResponseKind.SUCCEEDED
    assert fake.charges_total == 1


async def test_a_create_that_never_answered_leaves_nothing_charged_and_one_intent(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.slow(2.0, process=False), endpoint="create")

    late = await processor.authorize(charge(timeout_s=0.3))

    assert late.kind is ResponseKind.NO_RESPONSE
    assert late.processor_payment_id == ""
    looked = await processor.lookup(charge(), "")
    assert looked.kind is ResponseKind.NOT_CHARGED
    paid = await processor.authorize(charge())
    assert paid.kind is ResponseKind.SUCCEEDED
    assert paid.processor_payment_id == looked.processor_payment_id
    assert len(fake.payment_intents) == 1
    assert fake.charges_total == 1


async def test_a_create_that_got_a_stored_500_is_made_again_under_the_next_create_key(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.api_error(), endpoint="create")

    failed = await processor.authorize(charge())

    assert (failed.kind, failed.http_status) == (ResponseKind.ERROR, 500)
    # No confirm went out: nothing can have been charged, nothing needs looking up.
    assert failed.charge_not_sent and not failed.indeterminate
    assert classify(failed).outcome is Outcome.SOFT and classify(failed).retry_now

    # Stripe replays the 500 under `:create` for a day: the retry moves past it.
    paid = await processor.authorize(charge())

    assert paid.kind is ResponseKind.SUCCEEDED
    creates = fake.requests_to("create")
    assert [(r.idempotency_key, r.replayed) for r in creates] == [
        ("pay_1:0:create", False),
        ("pay_1:0:create", True),
        ("pay_1:0:create:1", False),
    ]
    assert len(fake.payment_intents) == 1 and fake.charges_total == 1


async def test_an_intent_made_behind_a_stored_500_is_never_confirmed_beside_the_next_one(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    # Stripe made the PaymentIntent, then answered 500: nobody knows its id.
    fake.inject(Fault.api_error(charged=True), endpoint="create")
    await processor.authorize(charge())

    paid = await processor.authorize(charge())

    assert paid.kind is ResponseKind.SUCCEEDED
    [orphan] = [pi for pi in fake.payment_intents.values() if pi["id"] != paid.processor_payment_id]
    assert orphan["status"] == "requires_confirmation"  # no money moves on create
    confirmed = {r.path.split("/")[3] for r in fake.requests_to("confirm")}
    assert confirmed == {paid.processor_payment_id}
    assert fake.charges_total == 1


async def test_a_lookup_without_an_id_walks_past_a_stored_500_to_the_intent_that_was_charged(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.api_error(), endpoint="create")
    await processor.authorize(charge())
    paid = await processor.authorize(charge())  # created under `:create:1` and charged

    # As after a server died before storing the id: found by the create keys alone.
    looked = await processor.lookup(charge(generation=1), "")

    assert looked.kind is ResponseKind.SUCCEEDED
    assert looked.processor_payment_id == paid.processor_payment_id
    assert len(fake.payment_intents) == 1 and fake.charges_total == 1


async def test_a_lookup_is_inconclusive_when_a_create_key_answers_a_500_it_did_not_store_before(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.api_error(), endpoint="create")

    looked = await processor.lookup(charge(), "")

    # A 500 the lookup got first-hand says nothing about an intent made before (the key
    # would have replayed it): inconclusive, never "not found".
    assert (looked.kind, looked.http_status) == (ResponseKind.ERROR, 500)
    assert classify(looked).outcome is Outcome.SOFT


async def test_a_create_whose_answer_was_lost_says_no_charge_was_sent(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.slow(2.0, process=False), endpoint="create")

    late = await processor.authorize(charge(timeout_s=0.3))

    assert late.kind is ResponseKind.NO_RESPONSE and late.charge_not_sent
    verdict = classify(late)
    assert (verdict.outcome, verdict.error_code, verdict.retry_now) == (
        Outcome.SOFT,
        ErrorCode.TIMEOUT,
        True,
    )
    assert fake.requests_to("confirm") == []


async def test_a_lost_confirm_answer_is_still_possibly_charged(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.slow(2.0))

    late = await processor.authorize(charge(timeout_s=0.3))

    assert late.kind is ResponseKind.NO_RESPONSE and not late.charge_not_sent
    assert classify(late).outcome is Outcome.UNKNOWN


async def test_a_retry_while_stripe_still_works_on_the_key_is_a_409_then_the_stored_answer(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.stall(0.4))

    late = await processor.authorize(charge(timeout_s=0.2))
    busy = await processor.authorize(charge())

    assert late.kind is ResponseKind.NO_RESPONSE
    assert (busy.kind, busy.http_status, busy.error_type) == (
        ResponseKind.ERROR,
        409,
        "idempotency_error",
    )
    assert busy.code == "idempotency_key_in_use"
    # Not "finished, outcome unknown" (a stored 500) but "still running": a lookup now
    # could only see the intent before the confirm, which proves nothing.
    assert not busy.indeterminate
    verdict = classify(busy)
    assert (verdict.outcome, verdict.error_code, verdict.retry_now) == (
        Outcome.UNKNOWN,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        True,
    )

    await fake.wait_idle()
    done = await processor.authorize(charge())
    assert done.kind is ResponseKind.SUCCEEDED
    assert fake.charges_total == 1


async def test_an_intent_a_confirm_still_works_on_cannot_be_canceled_until_it_is_done(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.stall(0.4))
    late = await processor.authorize(charge(timeout_s=0.2))
    pi_id = late.processor_payment_id

    refused = await processor.cancel(pi_id, "pay_1:0:close")
    looked = await processor.lookup(charge(), pi_id)

    # Stripe locks an object a request works on: the cancel is a 429 lock_timeout.
    assert (refused.http_status, refused.code) == (429, "lock_timeout")
    assert (looked.kind, looked.closed) == (ResponseKind.NOT_CHARGED, False)
    await fake.wait_idle()
    assert fake.charges_for(pi_id) == 1


async def test_only_a_canceled_intent_reads_as_closed(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.drop_before_processing())
    lost = await processor.authorize(charge())
    before = await processor.lookup(charge(), lost.processor_payment_id)

    await processor.cancel(lost.processor_payment_id, "pay_1:0:close")
    after = await processor.lookup(charge(), lost.processor_payment_id)

    assert (before.kind, before.closed) == (ResponseKind.NOT_CHARGED, False)
    assert (after.kind, after.closed) == (ResponseKind.NOT_CHARGED, True)


@pytest.mark.parametrize("where", ["cancel endpoint", "dashboard"])
async def test_a_canceled_intent_keeps_no_decline(
    fake: FakeStripe, processor: StripeProcessor, where
) -> None:
    """Stripe clears last_payment_error when the PaymentIntent is updated for any reason,
    a cancel included, whoever makes it: payorch's cancel call or the merchant's
    dashboard (the fake's set_status). A lookup of a canceled intent never finds the
    decline it had before (payorch keeps what it saw before it closed it itself)."""
    declined = await processor.authorize(charge("pm_card_chargeDeclinedInsufficientFunds"))
    pi_id = declined.processor_payment_id
    before = await processor.lookup(charge(), pi_id)
    assert (before.kind, before.decline_code) == (ResponseKind.NOT_CHARGED, "insufficient_funds")

    if where == "dashboard":
        fake.set_status(pi_id, "canceled")
    else:
        await processor.cancel(pi_id, "pay_1:0:close")
    after = await processor.lookup(charge(), pi_id)

    assert (after.kind, after.closed) == (ResponseKind.NOT_CHARGED, True)
    assert (after.error_type, after.code, after.decline_code) == ("", "", "")
    assert fake.payment_intent(pi_id)["canceled_at"] is not None


async def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    async with StripeProcessor("sk_test_x", api_base=f"http://127.0.0.1:{port}") as adapter:
        answer = await adapter.authorize(charge())

    assert answer.kind is ResponseKind.CONNECTION_ERROR
    assert answer.processor_payment_id == ""
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code) == (Outcome.SOFT, ErrorCode.NETWORK_ERROR)


async def test_a_connect_that_cannot_finish_within_the_calls_deadline_is_a_connection_error() -> (
    None
):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        # Fill the accept queue: the kernel drops further SYNs, so a connect hangs.
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        try:
            # The adapter's own timeout is long; the call's deadline is not.
            async with StripeProcessor(
                "sk_test_x", api_base=f"http://127.0.0.1:{port}", timeout_s=10.0
            ) as adapter:
                started = time.monotonic()
                answer = await adapter.lookup(charge(timeout_s=0.5), "pi_123")
                elapsed = time.monotonic() - started
        finally:
            for filler in fillers:
                filler.close()

    # Nothing was sent: a connection error (safe to fail over), not a lost answer.
    assert answer.kind is ResponseKind.CONNECTION_ERROR
    assert elapsed < 0.6


async def test_a_processing_intent_is_pending_on_lookup(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    paid = await processor.authorize(charge())
    fake.set_status(paid.processor_payment_id, "processing")

    looked = await processor.lookup(charge(), paid.processor_payment_id)

    assert looked.kind is ResponseKind.PENDING
    assert classify(looked).outcome is Outcome.UNKNOWN


async def refused_confirm_on(fake: FakeStripe, processor: StripeProcessor, status: str) -> str:
    """A PaymentIntent left confirmable by a 500, then moved on to `status` by Stripe."""
    fake.inject(Fault.api_error())
    failed = await processor.authorize(charge())
    fake.set_status(failed.processor_payment_id, status)
    return failed.processor_payment_id


async def test_a_confirm_refused_while_the_intent_is_processing_is_pending_not_a_failure(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    pi_id = await refused_confirm_on(fake, processor, "processing")

    answer = await processor.authorize(charge(generation=1))

    assert fake.requests_to("confirm")[-1].status == 400
    assert (answer.kind, answer.processor_payment_id) == (ResponseKind.PENDING, pi_id)
    assert classify(answer).outcome is Outcome.UNKNOWN


async def test_a_confirm_refused_while_the_intent_moves_on_to_authentication_asks_for_action(
    fake: FakeStripe, processor: StripeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pi_id = await refused_confirm_on(fake, processor, "processing")
    refuse = fake._do_confirm

    def refuse_then_ask_the_customer(pi: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return refuse(pi, params)
        finally:
            fake.payment_intent(pi)["status"] = "requires_action"
            fake.payment_intent(pi)["next_action"] = {"type": "use_stripe_sdk"}

    monkeypatch.setattr(fake, "_do_confirm", refuse_then_ask_the_customer)

    answer = await processor.authorize(charge(generation=1))

    assert (answer.kind, answer.processor_payment_id) == (ResponseKind.REQUIRES_ACTION, pi_id)
    assert answer.next_action_type == "use_stripe_sdk" and answer.client_secret


async def test_a_confirm_refused_whose_lookup_fails_is_an_unknown_outcome_not_a_failure(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    pi_id = await refused_confirm_on(fake, processor, "processing")
    fake.inject(Fault.api_error(), endpoint="retrieve")

    answer = await processor.authorize(charge(generation=1))

    assert (answer.kind, answer.processor_payment_id) == (ResponseKind.PENDING, pi_id)
    assert (answer.http_status, answer.code) == (400, "payment_intent_unexpected_state")
    assert classify(answer).outcome is Outcome.UNKNOWN


async def test_a_confirm_refused_on_an_intent_canceled_meanwhile_fails_uncharged_not_as_ours(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """Canceled at Stripe (the dashboard, a raced request) after our last look: nothing
    was charged and nothing can be, and the refusal is no bad request of ours."""
    pi_id = await refused_confirm_on(fake, processor, "canceled")

    answer = await processor.authorize(charge(generation=1))

    assert fake.requests_to("confirm")[-1].status == 400  # payment_intent_unexpected_state
    assert (answer.kind, answer.http_status, answer.processor_payment_id) == (
        ResponseKind.ERROR,
        400,
        pi_id,
    )
    assert (answer.code, answer.closed) == ("payment_intent_canceled", True)
    assert "status of canceled" in answer.message
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code) == (
        Outcome.HARD,
        ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR,
    )
    assert not verdict.contract_violation and not verdict.retry_now
    assert fake.charges_total == 0


async def test_a_confirm_refused_on_an_intent_open_again_without_a_decline_is_pending(
    fake: FakeStripe, processor: StripeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused while `processing`, the intent is open again with no decline on it: a
    request that moved it may still charge it, so the reconciler settles it (it
    cancels the intent first); it is no invalid request of ours."""
    pi_id = await refused_confirm_on(fake, processor, "processing")
    refuse = fake._do_confirm

    def refuse_then_reopen(pi: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return refuse(pi, params)
        finally:
            fake.payment_intent(pi)["status"] = "requires_confirmation"

    monkeypatch.setattr(fake, "_do_confirm", refuse_then_reopen)

    answer = await processor.authorize(charge(generation=1))

    assert (answer.kind, answer.processor_payment_id) == (ResponseKind.PENDING, pi_id)
    verdict = classify(answer)
    assert verdict.outcome is Outcome.UNKNOWN and not verdict.contract_violation
    assert fake.charges_total == 0


async def test_a_confirm_refused_while_the_customer_failed_authentication_answers_that_failure(
    fake: FakeStripe, processor: StripeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused while `processing`, the intent then came back with the customer's failed
    3-D Secure (`payment_intent_authentication_failure`): that is the step's final
    answer, as the reconciler would settle it (`authentication_failed`, never retried),
    not a pending step for the reconciler to settle later."""
    pi_id = await refused_confirm_on(fake, processor, "processing")
    refuse = fake._do_confirm

    def refuse_then_fail_authentication(pi: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return refuse(pi, params)
        finally:
            fake.fail_action(pi)

    monkeypatch.setattr(fake, "_do_confirm", refuse_then_fail_authentication)

    answer = await processor.authorize(charge(generation=1))

    assert fake.requests_to("confirm")[-1].status == 400  # payment_intent_unexpected_state
    assert (answer.kind, answer.processor_payment_id) == (ResponseKind.ERROR, pi_id)
    assert (answer.error_type, answer.code) == (
        "invalid_request_error",
        "payment_intent_authentication_failure",
    )
    verdict = classify(answer)
    assert verdict == Classification(
        Outcome.HARD, ErrorCode.AUTHENTICATION_FAILED, retry_now=False, retry_later=False
    )
    # Closed first: no confirm with its client secret can charge a step failed.
    assert fake.payment_intent(pi_id)["status"] == "canceled"
    assert fake.charges_total == 0


async def test_a_confirm_refused_while_an_earlier_one_was_declined_answers_with_that_decline(
    fake: FakeStripe, processor: StripeProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused while `processing`, the intent then came back declined: the bank's answer
    is the step's answer (a stolen card stays stolen), not an invalid request of ours."""
    pi_id = await refused_confirm_on(fake, processor, "processing")
    refuse = fake._do_confirm

    def refuse_then_decline(pi: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return refuse(pi, params)
        finally:
            intent = fake.payment_intent(pi)
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "stolen_card",
                "message": "Your card was declined.",
            }

    monkeypatch.setattr(fake, "_do_confirm", refuse_then_decline)

    answer = await processor.authorize(charge(generation=1))

    assert (answer.kind, answer.processor_payment_id) == (ResponseKind.ERROR, pi_id)
    assert (answer.error_type, answer.decline_code) == ("card_error", "stolen_card")
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code) == (Outcome.HARD, ErrorCode.STOLEN_CARD)
    assert not verdict.contract_violation


# -- idempotency -----------------------------------------------------------------------


async def test_the_same_idempotency_key_replays_the_same_answer_without_a_second_charge(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    first = await processor.authorize(charge())
    second = await processor.authorize(charge())

    assert dataclasses.replace(second, request_id=first.request_id) == first
    assert [r.replayed for r in fake.requests] == [False, False, True, True]
    assert fake.charges_total == 1


async def test_a_decline_replays_under_its_key_and_a_new_card_under_a_new_key_is_charged(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    declined = await processor.authorize(charge("pm_card_chargeDeclined"))
    again = await processor.authorize(charge("pm_card_chargeDeclined"))
    assert (again.kind, again.decline_code) == (ResponseKind.ERROR, "generic_decline")
    assert fake.requests[-1].replayed

    looked = await processor.lookup(charge("pm_card_chargeDeclined"), "")
    assert looked.kind is ResponseKind.NOT_CHARGED
    assert looked.decline_code == "generic_decline"
    assert looked.processor_payment_id == declined.processor_payment_id
    assert fake.charges_total == 0


async def test_reusing_a_key_with_other_parameters_is_an_idempotency_error(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    await processor.authorize(charge())

    clash = await processor.authorize(charge(amount_minor=5000, generation=1))

    assert clash.kind is ResponseKind.ERROR
    assert (clash.http_status, clash.error_type) == (400, "idempotency_error")
    assert clash.exception == "IdempotencyError"
    verdict = classify(clash)
    assert (verdict.error_code, verdict.contract_violation) == (
        ErrorCode.IDEMPOTENCY_CONFLICT,
        True,
    )
    assert fake.charges_total == 1


async def test_a_confirm_key_reused_with_other_parameters_answers_with_what_its_confirm_did(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    """Stripe refuses a key reused with other parameters (400 idempotency_error): a bug
    of ours, but the key's first confirm ran, and may have charged. A failed step would
    let a fallback method charge the customer again: the intent says what it did."""
    fake.inject(Fault.drop_after_processing())
    lost = await processor.authorize(charge(off_session=True))
    assert (lost.kind, fake.charges_total) == (ResponseKind.NO_RESPONSE, 1)

    clash = await processor.authorize(charge(off_session=False))

    assert fake.requests_to("confirm")[-1].status == 400  # idempotency_error
    assert clash.kind is ResponseKind.SUCCEEDED
    assert clash.processor_payment_id == lost.processor_payment_id
    assert fake.charges_total == 1


async def test_a_confirm_key_reused_on_an_intent_that_cannot_be_read_is_pending_not_failed(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.drop_after_processing())
    await processor.authorize(charge(off_session=True))
    fake.inject(Fault.api_error(), endpoint="retrieve")

    clash = await processor.authorize(charge(off_session=False))

    assert clash.kind is ResponseKind.PENDING
    assert classify(clash).outcome is Outcome.UNKNOWN
    assert fake.charges_total == 1


async def test_a_confirm_key_reused_whose_confirm_charged_nothing_is_our_violation(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    declined = await processor.authorize(charge("pm_card_chargeDeclined", off_session=True))
    assert declined.decline_code == "generic_decline"

    clash = await processor.authorize(charge("pm_card_chargeDeclined", off_session=False))

    assert (clash.kind, clash.http_status, clash.error_type) == (
        ResponseKind.ERROR,
        400,
        "idempotency_error",
    )
    verdict = classify(clash)
    assert (verdict.error_code, verdict.contract_violation) == (
        ErrorCode.IDEMPOTENCY_CONFLICT,
        True,
    )
    assert fake.charges_total == 0


# -- keys, auth and bad requests -------------------------------------------------------


# Run in a process of its own: the SDK reads STRIPE_LOG once, when it is imported.
_CHARGE_WITH_STRIPE_LOG = """
import asyncio, logging
from payorch.adapters.processors.stripe import StripeProcessor
from payorch.app.ports import ChargeRequest
from payorch.entrypoints.logs import configure
from tests.fakes.fake_stripe import FakeStripe

async def main():
    configure("DEBUG")  # as `payorch serve --log-level debug`
    async with FakeStripe() as fake:
        async with StripeProcessor(fake.api_key, api_base=fake.url, timeout_s=5.0) as adapter:
            answer = await adapter.authorize(ChargeRequest(
                payment_id="pay_1", step_index=0, idempotency_key="pay_1:0:g0",
                intent_key="pay_1:0", amount_minor=1999, currency="EUR",
                token="pm_card_authenticationRequired", capture=True, off_session=False,
                merchant_id="m_1", metadata={}, timeout_s=5.0,
            ))
    logging.getLogger("payorch").debug("charged")
    print(answer.kind.value, answer.client_secret)

asyncio.run(main())
"""


@pytest.mark.parametrize("level", ["debug", "info"])
def test_stripe_log_in_the_environment_prints_no_request_or_answer_to_stderr(level: str) -> None:
    """STRIPE_LOG=debug made the SDK print every request and answer (client secrets,
    customer and card details) to stderr, past our JSON log and its scrubber."""
    done = subprocess.run(
        [sys.executable, "-c", _CHARGE_WITH_STRIPE_LOG],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "STRIPE_LOG": level},
        timeout=60,
    )

    kind, client_secret = done.stdout.split()
    assert kind == "requires_action" and "_secret_" in client_secret
    assert client_secret not in done.stderr and "_secret_" not in done.stderr
    assert "Stripe API response" not in done.stderr and "Post details" not in done.stderr
    # Our own log still reaches stderr, as JSON lines only.
    lines = done.stderr.splitlines()
    assert any('"msg": "charged"' in line for line in lines)
    assert all(line.startswith("{") for line in lines), done.stderr


@pytest.mark.parametrize("prefix", ["sk_live_", "rk_live_"])
async def test_a_live_key_is_refused_without_appearing_in_the_error(prefix: str) -> None:
    with pytest.raises(ValueError) as refused:
        StripeProcessor(prefix + SECRET_TAIL)

    assert SECRET_TAIL not in str(refused.value)
    assert SECRET_TAIL not in repr(refused.value)


async def test_a_live_key_is_accepted_when_allowed_and_never_shown() -> None:
    adapter = StripeProcessor("sk_live_" + SECRET_TAIL, allow_live=True)
    try:
        assert SECRET_TAIL not in repr(adapter)
        assert adapter.name == "stripe"
    finally:
        await adapter.aclose()


async def test_an_authentication_error_is_hard_and_never_shows_the_key(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.auth_error(), endpoint="create")

    answer = await processor.authorize(charge())

    assert answer.kind is ResponseKind.ERROR
    assert (answer.http_status, answer.error_type) == (401, "authentication_error")
    assert answer.exception == "AuthenticationError"
    assert answer.request_id.startswith("req_")
    assert fake.api_key not in answer.message
    assert "sk_test_" not in answer.message
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code) == (
        Outcome.HARD,
        ErrorCode.PROCESSOR_AUTHENTICATION,
    )


async def test_a_wrong_key_is_an_authentication_error() -> None:
    async with (
        FakeStripe(api_key="sk_test_the_right_one_0000") as server,
        StripeProcessor("sk_test_" + SECRET_TAIL, api_base=server.url) as adapter,
    ):
        answer = await adapter.authorize(charge())

    assert (answer.http_status, answer.error_type) == (401, "authentication_error")
    assert SECRET_TAIL[-4:] not in answer.message
    assert classify(answer).outcome is Outcome.HARD


async def test_a_refused_key_is_logged_as_an_error_once_until_a_call_goes_through_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A revoked or rolled key fails every call: one loud line says so, not one per
    payment; once a call is taken again, the next refusal is news again."""
    async with (
        FakeStripe() as server,
        StripeProcessor("sk_test_" + SECRET_TAIL, api_base=server.url) as adapter,
    ):
        caplog.set_level(logging.DEBUG, logger="payorch.adapters.processors.stripe")
        server.inject(*[Fault.auth_error()] * 3, endpoint="create")
        for n in range(3):
            refused = await adapter.authorize(charge(payment_id=f"pay_{n}"))
            assert refused.http_status == 401
        assert (await adapter.authorize(charge(payment_id="pay_ok"))).kind is (
            ResponseKind.SUCCEEDED
        )
        server.inject(Fault.auth_error(), endpoint="create")
        await adapter.authorize(charge(payment_id="pay_after"))

    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(loud) == 2
    assert "401" in loud[0].getMessage() and "API key" in loud[0].getMessage()
    assert all(SECRET_TAIL[-4:] not in r.getMessage() for r in caplog.records)


async def test_an_invalid_request_is_our_contract_violation(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(
        Fault.invalid_request(code="parameter_unknown", message="Received unknown parameter")
    )

    answer = await processor.authorize(charge())

    assert (answer.kind, answer.http_status) == (ResponseKind.ERROR, 400)
    assert (answer.error_type, answer.code) == ("invalid_request_error", "parameter_unknown")
    assert answer.exception == "InvalidRequestError"
    verdict = classify(answer)
    assert (verdict.outcome, verdict.contract_violation) == (Outcome.HARD, True)


async def test_an_unknown_payment_method_fails_the_create_and_lookup_finds_nothing(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    answer = await processor.authorize(charge("pm_does_not_exist"))

    assert (answer.kind, answer.http_status, answer.code) == (
        ResponseKind.ERROR,
        400,
        "resource_missing",
    )
    assert answer.processor_payment_id == ""
    # The caller's payment method, not a parameter of ours: no contract violation.
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code.value, verdict.contract_violation) == (
        Outcome.HARD,
        "payment_method_not_found",
        False,
    )
    looked = await processor.lookup(charge("pm_does_not_exist"), "")
    assert looked.kind is ResponseKind.NOT_FOUND
    assert fake.payment_intents == {}


async def test_a_customer_stripe_does_not_have_fails_the_create_as_the_callers_error(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.register_customer("cus_Known")
    assert (await processor.authorize(charge(customer_id="cus_Known"))).kind is not (
        ResponseKind.ERROR
    )

    answer = await processor.authorize(charge(payment_id="pay_2", customer_id="cus_Unknown"))

    assert (answer.kind, answer.http_status, answer.code, answer.param) == (
        ResponseKind.ERROR,
        400,
        "resource_missing",
        "customer",
    )
    # The caller's customer, not a parameter of ours: no contract violation.
    verdict = classify(answer)
    assert (verdict.outcome, verdict.error_code.value, verdict.contract_violation) == (
        Outcome.HARD,
        "customer_not_found",
        False,
    )


@pytest.mark.parametrize(
    ("amount_minor", "currency", "code", "param", "error_code"),
    [
        # Stripe's minimum: 0.50 USD (or its equivalent), 0.30 GBP, 50 yen; yen are sent
        # as they are (zero-decimal).
        (49, "USD", "amount_too_small", "amount", ErrorCode.AMOUNT_OUT_OF_RANGE),
        (49, "JPY", "amount_too_small", "amount", ErrorCode.AMOUNT_OUT_OF_RANGE),
        (29, "GBP", "amount_too_small", "amount", ErrorCode.AMOUNT_OUT_OF_RANGE),
        # Eight digits at most.
        (100_000_000, "EUR", "amount_too_large", "amount", ErrorCode.AMOUNT_OUT_OF_RANGE),
        # ISO-4217 currencies payorch takes, which Stripe (or the account's country) does
        # not: refused by name, with no code.
        (5000, "IQD", "", "currency", ErrorCode.CURRENCY_NOT_SUPPORTED),
        (5000, "IRR", "", "currency", ErrorCode.CURRENCY_NOT_SUPPORTED),
    ],
)
async def test_an_amount_or_currency_stripe_will_not_charge_is_the_callers_not_our_violation(
    fake: FakeStripe,
    processor: StripeProcessor,
    amount_minor: int,
    currency: str,
    code: str,
    param: str,
    error_code: ErrorCode,
) -> None:
    request = charge(amount_minor=amount_minor, currency=currency)

    answer = await processor.authorize(request)

    assert (answer.kind, answer.http_status, answer.code, answer.param) == (
        ResponseKind.ERROR,
        400,
        code,
        param,
    )
    assert fake.requests_to("create")[0].params["amount"] == str(amount_minor)
    assert answer.charge_not_sent
    # The caller's amount or currency, valid as payorch takes them: no contract
    # violation, and the same payment is refused again, so not retried later either.
    verdict = classify(answer)
    assert (
        verdict.outcome,
        verdict.error_code,
        verdict.retry_now,
        verdict.retry_later,
        verdict.contract_violation,
    ) == (Outcome.HARD, error_code, False, False, False)
    assert (await processor.lookup(request, "")).kind is ResponseKind.NOT_FOUND
    assert fake.payment_intents == {}
    assert fake.requests_to("confirm") == []


async def test_the_adapter_never_raises_under_a_burst_of_faults(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(
        Fault.api_error(),
        Fault.rate_limit(),
        Fault.drop_after_processing(),
        Fault.invalid_request(),
    )
    answers = await asyncio.gather(
        *(processor.authorize(charge(payment_id=f"pay_{n}")) for n in range(6))
    )

    assert {a.kind for a in answers} <= {
        ResponseKind.ERROR,
        ResponseKind.NO_RESPONSE,
        ResponseKind.SUCCEEDED,
    }
    assert all(a.processor_payment_id.startswith("pi_") for a in answers)


async def test_an_answer_cut_off_mid_body_is_no_response_and_lookup_finds_the_charge(
    fake: FakeStripe, processor: StripeProcessor
) -> None:
    fake.inject(Fault.drop_mid_answer())

    cut = await processor.authorize(charge())

    assert cut.kind is ResponseKind.NO_RESPONSE
    assert cut.processor_payment_id.startswith("pi_")
    looked = await processor.lookup(charge(), cut.processor_payment_id)
    assert looked.kind is ResponseKind.SUCCEEDED
    assert fake.charges_total == 1
