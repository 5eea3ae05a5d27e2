"""Calls that change one payment at once: a save that another call beat is made again
on what that call stored, and a capture and a cancel racing at the processor end as the
processor holds the payment."""

from __future__ import annotations

from typing import Any

import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payorch.app.auth import Principal, Scope
from payorch.app.payments import (
    CANCELED_AT_PROCESSOR,
    InvalidState,
    PaymentChanging,
    ProcessorEvent,
    ProcessorEvents,
    RefundRejected,
)
from payorch.domain.payment import Owed, Payment, PaymentStatus, StepStatus
from payorch.domain.results import ProcessorResponse, ResponseKind
from payorch.entrypoints.grpc.errors import RpcError
from payorch.entrypoints.grpc.handlers import Call
from payorch.entrypoints.grpc.orchestrator import PaymentOrchestratorServicer
from tests.fakes.dying import ServerDied
from tests.unit.test_split_execution import ACTION, OK, World
from tests.unit.test_split_follow_through import Outage, charged, names


async def authorized(w: World, total: int = 2500) -> Payment:
    return await w.pay(("card", OK, None), total=total, authorize_only=True)


async def captured_split(w: World) -> Payment:
    return await w.pay(("apple_pay", OK, 6000), ("card", OK, None))


async def paused_split(w: World) -> Payment:
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    w.sim.complete_action(p.steps[1].processor_payment_id)
    return p


async def nobody(payment_id: str) -> None:
    """No other writer saves the payment first (for a save that is not beaten)."""


def intent(w: World, p: Payment, index: int = 0) -> Any:
    return w.sim.ledger.by_id[p.steps[index].processor_payment_id]


# -- a save beaten by another call's is made again ---------------------------------


async def test_a_capture_beaten_to_the_save_is_made_again_and_captures_once():
    w = World()
    p = await authorized(w)
    w.uow.saved_first(None)

    done = await w.service.capture(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    assert intent(w, p).amount_captured == 2500
    assert names(w).count("PaymentCaptured") == 1


async def test_a_cancel_beaten_to_the_save_is_made_again_and_cancels_once():
    w = World()
    p = await authorized(w)
    w.uow.saved_first(None)

    done = await w.service.cancel(p.id, "m_1", "order withdrawn")

    assert done.status is PaymentStatus.CANCELLED
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.CANCELLED
    assert w.held() == 0 and names(w).count("PaymentCancelled") == 1


async def test_two_refunds_at_once_are_both_recorded():
    w = World()
    p = await captured_split(w)
    # Refund "a" runs whole between refund "b"'s load and its save.
    w.uow.saved_first(
        lambda payment_id: w.service.refund(payment_id, "m_1", amount_minor=1000, request_id="a")
    )

    await w.service.refund(p.id, "m_1", amount_minor=2000, request_id="b")

    stored = await w.service.get(p.id, "m_1")
    assert sum(s.refunded_minor for s in stored.steps) == 3000
    assert stored.status is PaymentStatus.PARTIALLY_REFUNDED
    refunded = [e.refund_request_id for e in w.uow.events if e.name == "PaymentRefunded"]
    assert refunded == ["a", "b"]
    assert w.held() == 7000


async def test_a_confirm_beaten_to_the_save_is_made_again_and_charges_each_step_once():
    w = World()
    p = await paused_split(w)
    w.uow.saved_first(None)

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    assert w.sim.ledger.charges_total == 2 and w.held() == 10000
    assert names(w).count("PaymentCompleted") == 1


async def test_a_confirm_beaten_by_the_webhook_returns_what_the_webhook_stored():
    w = World()
    p = await paused_split(w)
    events = ProcessorEvents(w.uow, w.service, w.clock)
    w.uow.saved_first(lambda payment_id: events.apply(charged(w, payment_id, 1)))

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert w.sim.ledger.charges_total == 2 and w.held() == 10000
    assert names(w).count("PaymentCompleted") == 1


async def test_a_refund_made_again_sends_its_parts_under_the_same_keys_and_refunds_once():
    w = World()
    p = await captured_split(w)
    refunds = Outage(w, "refund")  # counts the calls, fails none
    # Its hold is stored first; its save once the processor answered is the one beaten.
    w.uow.saved_first(nobody, None)

    done = await w.service.refund(p.id, "m_1", amount_minor=7000, request_id="rf1")

    assert [s.refunded_minor for s in done.steps] == [3000, 4000]
    first, again = refunds.calls[:2], refunds.calls[2:]
    assert first == again  # same intent, amount and idempotency key
    assert sum(i.amount_refunded for i in w.sim.ledger.intents.values()) == 7000
    assert names(w).count("PaymentRefunded") == 1


# -- refunds at once never promise more than was captured ---------------------------


SERVER_ERROR = ProcessorResponse(
    ResponseKind.ERROR, http_status=500, error_type="api_error", message="the processor failed"
)


class Died(ServerDied):
    """The server stopping mid-call: nothing after this point is stored."""


class RefundsAtProcessor:
    """The simulated processor's refund calls (`keys`) and lookups (`looked`) by key.
    `meanwhile` runs whole while a refund call is on its way to the processor; `die`
    stops the call there (the server dying), before or after (`die_after`) it refunds.
    A key in `fail` is answered 500 without a refund, every time; one in `refuse` is
    answered so once without a refund; one in `lose` is refunded once with its answer
    lost. With `lookups_fail`, every lookup is answered 500."""

    def __init__(self, w: World) -> None:
        self.keys: list[str] = []
        self.looked: list[str] = []
        self.meanwhile: Any = None
        self.die = self.die_after = False
        self.fail: set[str] = set()
        self.refuse: dict[str, ProcessorResponse] = {}
        self.lose: set[str] = set()
        self.lookups_fail = False
        real_refund, real_find = w.sim.refund, w.sim.find_refund

        async def refund(processor_payment_id: str, amount: int, key: str, **kw: Any) -> Any:
            self.keys.append(key)
            if self.meanwhile is not None:
                run, self.meanwhile = self.meanwhile, None
                await run()
            if self.die:
                raise Died("the server died")
            if key in self.fail:
                return SERVER_ERROR
            if key in self.refuse:
                return self.refuse.pop(key)
            made = await real_refund(processor_payment_id, amount, key, **kw)
            if self.die_after:
                raise Died("the server died")
            if key in self.lose:
                self.lose.discard(key)
                return ProcessorResponse(ResponseKind.NO_RESPONSE)
            return made

        async def find_refund(processor_payment_id: str, key: str) -> Any:
            self.looked.append(key)
            if self.lookups_fail:
                return SERVER_ERROR
            return await real_find(processor_payment_id, key)

        w.sim.refund = refund  # type: ignore[method-assign]
        w.sim.find_refund = find_refund  # type: ignore[method-assign]

    def sent(self, request_id: str) -> list[str]:
        return [k for k in self.keys if k.endswith(f"_refund_{request_id}")]


def refund_key(p: Payment, request_id: str, step: int = 0) -> str:
    """The idempotency key a refund's part on `step` is sent under."""
    return f"payorch_{p.id}_{step}_refund_{request_id}"


async def card_payment_refunds_watched(
    total: int = 10000,
) -> tuple[World, Payment, RefundsAtProcessor]:
    """A card payment of `total`, captured, and its refund calls at the processor."""
    w = World()
    p = await w.pay(("card", OK, None), total=total)
    return w, p, RefundsAtProcessor(w)


async def test_a_refund_beyond_what_a_refund_in_flight_leaves_is_refused_before_the_processor():
    w, p, refunds = await card_payment_refunds_watched()
    servicer, call = servicer_call(w)
    refused: list[RpcError] = []

    async def second_refund() -> None:
        request = orch.RefundPaymentRequest(payment_id=p.id, request_id="b", amount_minor=6000)
        with pytest.raises(RpcError) as exc:
            await servicer.RefundPayment(request, call)
        refused.append(exc.value)

    refunds.meanwhile = second_refund  # "b" comes while "a" is at the processor
    done = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")

    assert done.steps[0].refunded_minor == 6000 and done.final_error_message == ""
    (exc,) = refused
    code, message, reasons = refusal(exc)
    assert (code, reasons) == (code_pb2.FAILED_PRECONDITION, ["REFUND_EXCEEDS_CAPTURED"])
    assert "6000 exceeds the 4000 still refundable" in message
    assert refunds.sent("b") == []  # nothing sent for the refund refused
    assert intent(w, p).amount_refunded == 6000
    stored = await w.service.get(p.id, "m_1")
    assert (stored.refundable_minor, stored.final_error_message) == (4000, "")
    assert [e.refund_request_id for e in w.uow.events if e.name == "PaymentRefunded"] == ["a"]


async def test_refunds_in_flight_at_once_on_a_split_take_the_steps_from_the_last():
    w = World()
    p = await captured_split(w)  # apple_pay 6000, card 4000
    refunds = RefundsAtProcessor(w)
    second: list[Payment] = []

    async def second_refund() -> None:
        second.append(await w.service.refund(p.id, "m_1", amount_minor=5000, request_id="b"))

    refunds.meanwhile = second_refund
    first = await w.service.refund(p.id, "m_1", amount_minor=5000, request_id="a")

    # "a" holds the card's 4000 and 1000 of apple_pay; "b" what apple_pay has left.
    assert [s.refunded_minor for s in second[0].steps] == [5000, 0]
    assert [s.refunded_minor for s in first.steps] == [6000, 4000]
    assert first.status is PaymentStatus.REFUNDED and w.held() == 0
    assert all(w.uow.refunds[p.id, r].amount_minor == 5000 for r in ("a", "b"))
    assert [w.uow.refunds[p.id, r].parts for r in ("a", "b")] == [
        ((1, 4000), (0, 1000)),
        ((0, 5000),),
    ]
    with pytest.raises(RefundRejected, match="nothing captured is left"):
        await w.service.refund(p.id, "m_1", amount_minor=1, request_id="c")


async def test_a_refund_whose_answer_was_lost_holds_its_amount_until_its_retry_finds_it():
    w, p, refunds = await card_payment_refunds_watched()
    key = refund_key(p, "a")
    refunds.lose.add(key)

    lost = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert lost.steps[0].refunded_minor == 0 and "retry it" in lost.final_error_message
    with pytest.raises(RefundRejected, match="6000 exceeds the 4000 still refundable"):
        await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="b")
    found = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")

    assert refunds.sent("b") == [] and refunds.sent("a") == [key]  # found, not sent again
    assert (found.steps[0].refunded_minor, found.refundable_minor) == (6000, 4000)
    assert intent(w, p).amount_refunded == 6000


async def test_a_refund_refused_at_the_processor_gives_back_what_it_held():
    w, p, refunds = await card_payment_refunds_watched()
    refunds.refuse[refund_key(p, "a")] = ProcessorResponse(
        ResponseKind.ERROR, http_status=400, error_type="invalid_request_error", code="x"
    )

    refused = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert refused.steps[0].refunded_minor == 0
    assert "refused by the processor (x)" in refused.final_error_message
    # What "a" held is refundable again: all of it goes to "b".
    full = await w.service.refund(p.id, "m_1", amount_minor=0, request_id="b")
    assert full.steps[0].refunded_minor == 10000
    # Retried, "a" is over: its refusal is replayed, nothing sent or held.
    sent = len(refunds.keys)
    again = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")
    assert "refused by the processor (x)" in again.final_error_message
    assert again.steps[0].refund_holds == {}
    assert len(refunds.keys) == sent and intent(w, p).amount_refunded == 10000


async def test_a_refund_retried_while_it_is_in_flight_refunds_once_and_both_answers_agree():
    w, p, refunds = await card_payment_refunds_watched()
    retried: list[Payment] = []

    async def retry() -> None:
        retried.append(await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a"))

    refunds.meanwhile = retry  # the caller retries while the first call is at the processor
    first = await w.service.refund(p.id, "m_1", amount_minor=6000, request_id="a")

    for answer in (retried[0], first):
        assert (answer.steps[0].refunded_minor, answer.final_error_message) == (6000, "")
    assert intent(w, p).amount_refunded == 6000
    assert (await w.service.get(p.id, "m_1")).refundable_minor == 4000
    assert names(w).count("PaymentRefunded") == 1


async def test_a_change_beaten_three_times_gives_up_and_leaves_the_payment_as_stored():
    w = World()
    p = await authorized(w)
    w.uow.saved_first(None, None, None, None)

    with pytest.raises(PaymentChanging):
        await w.service.cancel(p.id, "m_1", "order withdrawn")

    assert len(w.uow.writers) == 1  # three tries, no fourth
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.AUTHORIZED


# -- what the caller is told -------------------------------------------------------


class _Context:
    def time_remaining(self) -> float | None:
        return None


def servicer_call(w: World) -> tuple[PaymentOrchestratorServicer, Call]:
    principal = Principal(Scope.MERCHANT, "m_1", "k_m1")
    return PaymentOrchestratorServicer(w.service, w.configs), Call(principal, _Context(), "rpc")  # type: ignore[arg-type]


def refusal(exc: RpcError) -> tuple[int, str, list[str]]:
    status = status_pb2.Status.FromString(
        next(v for k, v in exc.status.trailing_metadata if k == "grpc-status-details-bin")
    )
    reasons = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reasons.append(info.reason)
    return status.code, status.message, reasons


RPCS = {
    "CapturePayment": lambda pid: orch.CapturePaymentRequest(payment_id=pid),
    "CancelPayment": lambda pid: orch.CancelPaymentRequest(payment_id=pid, reason="withdrawn"),
    "RefundPayment": lambda pid: orch.RefundPaymentRequest(payment_id=pid, request_id="rf1"),
    "ConfirmPayment": lambda pid: orch.ConfirmPaymentRequest(payment_id=pid),
}


@pytest.mark.parametrize("rpc", sorted(RPCS))
async def test_a_payment_that_keeps_changing_is_aborted_with_payment_changing(rpc):
    w = World()
    p = await {
        "CapturePayment": authorized,
        "CancelPayment": authorized,
        "RefundPayment": lambda w: w.pay(("card", OK, None), total=2500),
        "ConfirmPayment": paused_split,
    }[rpc](w)
    w.uow.saved_first(None, None, None)
    servicer, call = servicer_call(w)

    with pytest.raises(RpcError) as refused:
        await getattr(servicer, rpc)(RPCS[rpc](p.id), call)

    code, message, reasons = refusal(refused.value)
    assert (code, reasons) == (code_pb2.ABORTED, ["PAYMENT_CHANGING"])
    assert "retry" in message


# -- a capture and a cancel racing at the processor --------------------------------


async def test_a_capture_that_lost_to_a_cancel_records_the_step_voided_and_is_refused():
    w = World()
    p = await authorized(w)
    await w.sim.cancel(p.steps[0].processor_payment_id, "the cancel's key")  # got there first
    servicer, call = servicer_call(w)

    with pytest.raises(RpcError) as refused:
        await servicer.CapturePayment(RPCS["CapturePayment"](p.id), call)

    code, message, reasons = refusal(refused.value)
    assert (code, reasons) == (code_pb2.FAILED_PRECONDITION, ["INVALID_STATE"])
    assert "holds step 0 (2500) canceled" in message
    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].status is StepStatus.VOIDED
    assert (stored.status, stored.owed, stored.next_reconcile_at) == (
        PaymentStatus.CANCELLED,
        Owed.NOTHING,
        None,
    )
    assert stored.steps[0].attempts[-1].retry_decision.startswith("canceled at the processor")
    # Cancelled, though by no cancel of ours: whoever listens is told, once.
    assert names(w)[-2:] == ["StepVoided", "PaymentCancelled"]
    assert w.uow.events[-1].reason == CANCELED_AT_PROCESSOR
    # The cancel goes on to find nothing left to release.
    assert (await w.service.cancel(p.id, "m_1", "withdrawn")).status is PaymentStatus.CANCELLED
    assert names(w).count("PaymentCancelled") == 1


async def test_a_cancel_that_lost_to_a_capture_records_the_step_captured_and_is_refused():
    w = World()
    p = await authorized(w)
    await w.sim.capture(p.steps[0].processor_payment_id, 2500, "the capture's key", currency="USD")
    servicer, call = servicer_call(w)

    with pytest.raises(RpcError) as refused:
        await servicer.CancelPayment(RPCS["CancelPayment"](p.id), call)

    code, message, _ = refusal(refused.value)
    assert code == code_pb2.FAILED_PRECONDITION
    assert "holds step 0 (2500) captured" in message and "refund it" in message
    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].status is StepStatus.CAPTURED and stored.captured_minor == 2500
    assert (stored.status, stored.owed) == (PaymentStatus.SUCCEEDED, Owed.NOTHING)
    assert names(w)[-1] == "PaymentCaptured" and "PaymentCancelled" not in names(w)
    assert w.held() == 2500


async def test_a_capture_asked_for_after_the_authorization_lapsed_records_it_voided():
    w = World()
    p = await authorized(w)
    intent(w, p).status = "canceled"  # the processor lets an authorization lapse (7 days)

    with pytest.raises(InvalidState, match="lapsed"):
        await w.service.capture(p.id, "m_1")

    stored = await w.service.get(p.id, "m_1")
    assert stored.steps[0].status is StepStatus.VOIDED and stored.owed is Owed.NOTHING


async def test_an_owed_capture_whose_authorization_lapsed_is_no_longer_retried():
    w = World()
    outage = Outage(w, "capture")
    outage.everywhere = True
    p = await captured_split(w)
    assert p.owed is Owed.CAPTURE
    outage.everywhere = False
    for i in range(2):
        intent(w, p, i).status = "canceled"

    w.clock.advance(61)
    assert await w.service.reconcile_due() == 1

    stored = await w.service.get(p.id, "m_1")
    assert [s.status for s in stored.steps] == [StepStatus.VOIDED, StepStatus.VOIDED]
    assert (stored.owed, stored.next_reconcile_at) == (Owed.NOTHING, None)
    assert stored.status is PaymentStatus.CANCELLED
    assert names(w).count("PaymentCancelled") == 1 and "PaymentCaptured" not in names(w)
    w.clock.advance(24 * 3600)
    assert await w.service.reconcile_due() == 0


async def test_a_webhook_whose_follow_through_is_beaten_to_the_save_makes_it_again():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    events = ProcessorEvents(w.uow, w.service, w.clock)
    w.sim.complete_action(p.steps[0].processor_payment_id)
    # The event's own write goes through; the save after the rest of the plan loses once.
    plain = w.uow.update_payment

    async def beaten_once(payment: Payment) -> None:
        w.uow.update_payment = plain  # type: ignore[method-assign]
        w.uow.saved_first(None)
        await plain(payment)

    w.uow.update_payment = beaten_once  # type: ignore[method-assign]

    assert await events.apply(charged(w, p.id, 0)) == "applied"

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.SUCCEEDED
    assert [s.status for s in stored.steps] == [StepStatus.CAPTURED, StepStatus.CAPTURED]
    assert w.sim.ledger.charges_total == 2, "the second step made again under its key, once"
    assert names(w).count("PaymentCompleted") == 1


async def test_a_confirm_whose_save_lost_after_its_charges_records_every_step_it_charged():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)

    # The save before step 1 is charged goes through; the one after the charges loses.
    w.uow.saved_first(nobody, None)
    await w.service.confirm(p.id, "m_1")

    # The confirm charged both steps before its save lost; made again, it records what
    # it charged, from the answers the processor gave it.
    stored = await w.service.get(p.id, "m_1")
    assert w.held() == 10000
    assert sum(s.captured_minor for s in stored.steps) == w.held()
    assert stored.status is PaymentStatus.SUCCEEDED
    assert stored.steps[1].processor_payment_id and stored.steps[1].attempts
    assert names(w).count("PaymentCompleted") == 1
    assert w.sim.ledger.charges_total == 2


async def test_a_cancel_saved_before_a_confirm_charges_the_rest_of_the_plan_stops_it():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None), authorize_only=True)
    w.sim.complete_action(p.steps[0].processor_payment_id)
    w.uow.saved_first(lambda payment_id: w.service.cancel(payment_id, "m_1", "abandoned"))

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.CANCELLED
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.SKIPPED]
    assert len(w.sim.ledger.intents) == 1 and w.held() == 0


async def test_a_cancel_while_a_confirm_charges_the_rest_of_the_plan_waits_for_it():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None), authorize_only=True)
    w.sim.complete_action(p.steps[0].processor_payment_id)
    real = w.sim.authorize

    async def authorize(request: Any) -> ProcessorResponse:
        # Stored as processing before step 1 is charged: refused, as during CreatePayment,
        # rather than deciding anything the charges under way would contradict.
        with pytest.raises(InvalidState, match="processing payment cannot be cancelled yet"):
            await w.service.cancel(p.id, "m_1", "abandoned")
        return await real(request)

    w.sim.authorize = authorize  # type: ignore[method-assign]
    done = await w.service.confirm(p.id, "m_1")
    assert done.status is PaymentStatus.AUTHORIZED and w.held() == 10000

    cancelled = await w.service.cancel(p.id, "m_1", "abandoned")
    assert cancelled.status is PaymentStatus.CANCELLED and w.held() == 0


async def test_a_cancel_that_found_the_customer_paid_meanwhile_completes_the_payment_once():
    w = World()
    p = await w.pay(("card", ACTION, None), total=2500)  # automatic capture
    w.sim.complete_action(p.steps[0].processor_payment_id)  # 3-D Secure done: captured

    with pytest.raises(InvalidState, match="captured"):
        await w.service.cancel(p.id, "m_1", "took too long")

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.SUCCEEDED and stored.captured_minor == 2500
    # Captured by the processor as the payment was made, not by a CapturePayment.
    assert names(w).count("PaymentCompleted") == 1
    assert "PaymentCaptured" not in names(w) and "PaymentCancelled" not in names(w)


# -- a cancel whose void fails: cancelled at once, released later -----------------


async def test_a_cancel_whose_void_fails_is_announced_once_and_released_by_the_reconciler():
    w = World()
    p = await authorized(w)
    voids = Outage(w, "cancel")
    voids.everywhere = True

    done = await w.service.cancel(p.id, "m_1", "order withdrawn")

    assert (done.owed, w.held()) == (Owed.VOID, 2500)
    assert names(w).count("PaymentCancelled") == 1
    assert w.uow.events[-1].reason == "order withdrawn"
    with pytest.raises(InvalidState, match="being released"):
        await w.service.capture(p.id, "m_1")
    await w.service.cancel(p.id, "m_1", "asked again")  # the void is tried again, still down
    assert names(w).count("PaymentCancelled") == 1

    voids.everywhere = False
    w.clock.advance((done.next_reconcile_at - w.clock.now()).total_seconds())
    await w.service.reconcile_due()

    released = await w.service.get(p.id, "m_1")
    assert (released.status, released.owed, w.held()) == (PaymentStatus.CANCELLED, Owed.NOTHING, 0)
    assert names(w).count("PaymentCancelled") == 1


async def test_a_cancel_that_cannot_release_a_payment_waiting_for_the_customer_is_refused():
    w = World()
    p = await w.pay(("card", ACTION, None), total=2500)
    voids = Outage(w, "cancel")  # a 500; the lookup after it finds it still waiting
    voids.everywhere = True
    servicer, call = servicer_call(w)

    with pytest.raises(RpcError) as refused:
        await servicer.CancelPayment(RPCS["CancelPayment"](p.id), call)

    # Not cancelled: the customer could still complete it, so nothing says it is.
    code, message, reasons = refusal(refused.value)
    assert (code, reasons) == (code_pb2.UNAVAILABLE, ["CANCEL_UNDECIDED"])
    assert "retry" in message
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.REQUIRES_ACTION
    assert "PaymentCancelled" not in names(w)
    assert intent(w, p).status == "requires_action"

    voids.everywhere = False
    done = await w.service.cancel(p.id, "m_1", "asked again")
    assert done.status is PaymentStatus.CANCELLED and intent(w, p).status == "canceled"
    assert names(w).count("PaymentCancelled") == 1


async def test_a_split_cancelled_while_a_void_fails_is_cancelled_not_failed():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None), authorize_only=True)
    voids = Outage(w, "cancel")
    voids.down.add(p.steps[1].processor_payment_id)

    done = await w.service.cancel(p.id, "m_1", "order withdrawn")

    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.AUTHORIZED]
    assert done.owed is Owed.VOID and w.held() == 4000
    assert names(w).count("PaymentCancelled") == 1 and "PaymentFailed" not in names(w)

    voids.down.clear()
    w.clock.advance((done.next_reconcile_at - w.clock.now()).total_seconds())
    await w.service.reconcile_due()

    released = await w.service.get(p.id, "m_1")
    assert released.status is PaymentStatus.CANCELLED and w.held() == 0
    assert names(w).count("PaymentCancelled") == 1 and "PaymentFailed" not in names(w)


async def test_a_split_given_up_while_a_void_fails_is_announced_cancelled_once():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", ACTION, None))
    voids = Outage(w, "cancel")
    voids.down.add(p.steps[0].processor_payment_id)

    w.clock.advance(3600)  # the customer never came back
    await w.service.reconcile_due()

    given_up = await w.service.get(p.id, "m_1")
    assert given_up.owed is Owed.VOID and w.held() == 6000
    assert names(w).count("PaymentCancelled") == 1 and "PaymentFailed" not in names(w)
    assert w.uow.events[-1].reason.startswith("abandoned")

    voids.down.clear()
    w.clock.advance((given_up.next_reconcile_at - w.clock.now()).total_seconds())
    await w.service.reconcile_due()

    released = await w.service.get(p.id, "m_1")
    assert released.status is PaymentStatus.CANCELLED and w.held() == 0
    assert names(w).count("PaymentCancelled") == 1


# -- a processor event whose follow-up failed is not lost --------------------------


async def test_an_event_whose_look_up_could_not_be_stored_is_acted_on_when_sent_again():
    w = World()
    p = await w.pay(("card", ACTION, None), total=2500)
    intent(w, p).status = "canceled"  # the customer gave up; the processor says so
    canceled = ProcessorEvent(
        "evt_canceled", "stripe", p.id, 0, p.steps[0].processor_payment_id, False
    )
    plain = w.uow.update_payment

    async def database_gone(payment: Payment) -> None:
        w.uow.update_payment = plain  # type: ignore[method-assign]
        raise ConnectionResetError(104, "reset by peer")

    w.uow.update_payment = database_gone  # type: ignore[method-assign]
    events = ProcessorEvents(w.uow, w.service, w.clock)

    with pytest.raises(ConnectionResetError):
        await events.apply(canceled)  # the webhook answers 500: the processor sends it again
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.REQUIRES_ACTION

    assert await events.apply(canceled) == "looked up"
    assert (await w.service.get(p.id, "m_1")).status is not PaymentStatus.REQUIRES_ACTION
    assert await events.apply(canceled) == "duplicate"  # acted on once


# -- the processor released a hold we keep -----------------------------------------


def hint(p: Payment, index: int = 0, event_id: str = "evt_hint") -> ProcessorEvent:
    return ProcessorEvent(
        event_id, "stripe", p.id, index, p.steps[index].processor_payment_id, False
    )


async def test_a_hold_canceled_at_the_processor_is_recorded_when_its_event_comes():
    w = World()
    p = await authorized(w)
    intent(w, p).status = "canceled"  # canceled from the processor's dashboard, or lapsed
    events = ProcessorEvents(w.uow, w.service, w.clock)

    assert await events.apply(hint(p)) == "looked up"

    stored = await w.service.get(p.id, "m_1")
    assert (stored.status, stored.steps[0].status) == (PaymentStatus.CANCELLED, StepStatus.VOIDED)
    assert stored.steps[0].attempts[-1].operation == "lookup"
    assert stored.steps[0].attempts[-1].retry_decision.startswith("canceled at the processor")
    assert names(w)[-2:] == ["StepVoided", "PaymentCancelled"]
    assert w.uow.events[-1].reason == CANCELED_AT_PROCESSOR
    with pytest.raises(InvalidState):
        await w.service.capture(p.id, "m_1")  # nothing left to capture, and it says so


async def test_an_event_about_a_hold_the_processor_still_keeps_changes_nothing():
    w = World()
    p = await authorized(w)  # a late payment_failed from an earlier try, say
    before = len(w.uow.events)

    assert await ProcessorEvents(w.uow, w.service, w.clock).apply(hint(p)) == (
        "looked up, still held"
    )

    stored = await w.service.get(p.id, "m_1")
    assert stored.status is PaymentStatus.AUTHORIZED and len(w.uow.events) == before
    assert (await w.service.capture(p.id, "m_1")).status is PaymentStatus.SUCCEEDED


async def test_a_split_whose_processor_released_one_hold_releases_the_other():
    w = World()
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None), authorize_only=True)
    intent(w, p, 1).status = "canceled"

    assert await ProcessorEvents(w.uow, w.service, w.clock).apply(hint(p, 1)) == "looked up"

    stored = await w.service.get(p.id, "m_1")
    assert [s.status for s in stored.steps] == [StepStatus.VOIDED, StepStatus.VOIDED]
    assert stored.status is PaymentStatus.CANCELLED and w.held() == 0  # all or nothing
    assert names(w).count("PaymentCancelled") == 1 and "PaymentFailed" not in names(w)


async def test_with_allow_partial_the_hold_left_can_still_be_captured():
    w = World(allow_partial=True)
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None), authorize_only=True)
    intent(w, p, 1).status = "canceled"

    await ProcessorEvents(w.uow, w.service, w.clock).apply(hint(p, 1))

    stored = await w.service.get(p.id, "m_1")
    assert [s.status for s in stored.steps] == [StepStatus.AUTHORIZED, StepStatus.VOIDED]
    assert stored.status is PaymentStatus.PARTIALLY_SUCCEEDED and "PaymentCancelled" not in names(w)
    assert (await w.service.capture(p.id, "m_1")).captured_minor == 6000


async def test_refund_payment_asking_for_everything_under_a_key_that_named_an_amount_is_refused():
    w, p, refunds = await card_payment_refunds_watched()
    servicer, call = servicer_call(w)
    ask = orch.RefundPaymentRequest(payment_id=p.id, request_id="a", amount_minor=4000)
    await servicer.RefundPayment(ask, call)

    with pytest.raises(RpcError) as exc:
        await servicer.RefundPayment(
            orch.RefundPaymentRequest(payment_id=p.id, request_id="a", amount_minor=0), call
        )
    code, message, reasons = refusal(exc.value)
    assert (code, reasons) == (code_pb2.ALREADY_EXISTS, ["IDEMPOTENCY_KEY_REUSED"])
    assert "'a' was already used with a different amount" in message
    await servicer.RefundPayment(ask, call)  # the same ask: replayed, nothing sent
    stored = await w.service.get(p.id, "m_1")
    assert (stored.status, stored.refundable_minor) == (PaymentStatus.PARTIALLY_REFUNDED, 6000)
    assert refunds.sent("a") == [refund_key(p, "a")]
    assert intent(w, p).amount_refunded == 4000
