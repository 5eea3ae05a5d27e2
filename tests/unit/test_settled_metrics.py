"""A payment's final status is counted once, by the call that settled it: CreatePayment,
ConfirmPayment after 3-D Secure, a processor's webhook, the reconciler after a lost
answer or a crash, or its giving up a payment the customer left paused. A call whose
save lost to another's counts nothing; a replayed call or event counts nothing."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from payorch.adapters.payment_log import LoggingObserver
from payorch.adapters.payment_metrics import PaymentMetrics, PrometheusObserver
from payorch.app.analytics import SUCCEEDED
from payorch.app.observability import Observers
from payorch.app.payment_observation import PaymentObservation, unstored
from payorch.app.payments import ProcessorEvent, ProcessorEvents
from payorch.domain.payment import (
    ACTION_TIMEOUT,
    OPEN,
    Attempt,
    Owed,
    Payment,
    PaymentStatus,
    RawError,
    StepStatus,
    Stored,
)
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome
from payorch.domain.retry import RetryPolicy
from tests.integration.test_payment_writes import new_payment
from tests.unit.test_split_execution import World as PaymentsWorld
from tests.unit.test_split_follow_through import Outage

OK, ACTION = "pm_card_visa", "pm_card_authenticationRequired"


class World(PaymentsWorld):
    """Payments in EUR, heard by the Prometheus metrics and the payment log."""

    currency = "EUR"

    def __init__(self, *, max_retries: int = 1) -> None:
        self.registry = CollectorRegistry()
        self.log = logging.getLogger(f"payorch.test.settled.{uuid.uuid4().hex}")
        self.log.setLevel(logging.INFO)
        observers = Observers(
            [PrometheusObserver(PaymentMetrics(self.registry)), LoggingObserver(self.log)]
        )
        super().__init__(
            PaymentObservation(observers), retry_policy=RetryPolicy(max_retries=max_retries)
        )
        self.events = ProcessorEvents(self.uow, self.service, self.clock)

    def lines(self, caplog, starting: str) -> list[str]:
        """This world's payment log lines that start so."""
        messages = (r.getMessage() for r in caplog.records if r.name == self.log.name)
        return [m for m in messages if m.startswith(starting)]

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def settled(self) -> dict[tuple[str, str], float]:
        """payorch_payments_settled_total by (status, via), the ones counted."""
        return {
            (s.labels["status"], s.labels["via"]): s.value
            for metric in self.registry.collect()
            if metric.name == "payorch_payments_settled"
            for s in metric.samples
            if s.name == "payorch_payments_settled_total" and s.value
        }

    def ended(self) -> dict[str, float]:
        """payorch_payments_total by status: how CreatePayment ended."""
        return {
            s.labels["status"]: s.value
            for metric in self.registry.collect()
            if metric.name == "payorch_payments"
            for s in metric.samples
            if s.name == "payorch_payments_total" and s.value
        }

    def charged(self, payment: Payment, index: int = 0, event_id: str = "") -> ProcessorEvent:
        pid = self.uow.store[payment.id].steps[index].processor_payment_id
        return ProcessorEvent(
            event_id or f"evt_{payment.id}_{index}", "stripe", payment.id, index, pid, True
        )


async def test_a_payment_settled_in_its_create_payment_is_counted_once_in_each_metric():
    w = World()
    await w.pay(("card", OK, None))

    assert w.ended() == {"succeeded": 1}
    assert w.settled() == {("succeeded", "create"): 1}


async def test_a_payment_confirmed_after_3ds_is_counted_settled_once_by_the_confirm(caplog):
    w = World()
    p = await w.pay(("card", ACTION, None))
    assert p.status is PaymentStatus.REQUIRES_ACTION
    assert w.ended() == {"requires_action": 1} and w.settled() == {}

    w.sim.complete_action(p.steps[0].processor_payment_id)
    done = await w.service.confirm(p.id, "m_1")
    again = await w.service.confirm(p.id, "m_1")  # the client's retry: nothing new

    assert done.status is again.status is PaymentStatus.SUCCEEDED
    (line,) = w.lines(caplog, "payment settled")
    assert line.startswith("payment settled succeeded by confirm: 1 step(s)")
    # And the line of the CreatePayment, as it ended the call.
    assert w.lines(caplog, "payment requires_action: 1 step(s)")
    assert w.settled() == {("succeeded", "confirm"): 1}
    # How the call ended is not rewritten: the 3-D Secure wait stays counted as such.
    assert w.ended() == {"requires_action": 1}


async def test_a_step_retried_after_a_confirm_is_counted_as_a_retry():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)
    w.sim.inject("rate_limit", None)  # the second step, charged by the confirm

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert w.value("payorch_retries_total", processor="simulated") == 1
    assert w.settled() == {("succeeded", "confirm"): 1}


async def test_a_lost_answer_settled_by_the_reconciler_is_counted_settled_and_recovered_once():
    w = World(max_retries=0)
    w.sim.inject("lost_response")  # charged, its answer lost
    p = await w.pay(("card", OK, None))
    assert p.status is PaymentStatus.UNKNOWN
    assert w.ended() == {"unknown": 1} and w.settled() == {}
    assert w.value("payorch_recoveries_total") == 0

    w.clock.advance(120)
    assert await w.service.reconcile_due() == 1
    w.clock.advance(24 * 3600)
    assert await w.service.reconcile_due() == 0  # settled: never looked at again

    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    # Took the money after a timeout: as GetPaymentStats counts it, once.
    assert w.value("payorch_recoveries_total") == 1
    assert w.settled() == {("succeeded", "reconciler"): 1}


async def test_a_payment_interrupted_by_a_crash_is_counted_settled_by_the_reconciler():
    w = World()
    p = await w.pay(("card", OK, None))
    # The server died after the charge, before its result was stored (and counted).
    stored = w.uow.store[p.id]
    stored.status = PaymentStatus.PROCESSING
    stored.steps[0].status = StepStatus.PENDING
    stored.steps[0].attempts.clear()
    stored.steps[0].stored_attempts = 0
    w.registry = CollectorRegistry()  # a new process: its counters start at 0
    w.service._observe = PaymentObservation(
        Observers([PrometheusObserver(PaymentMetrics(w.registry))])
    )

    w.clock.advance(600)
    assert await w.service.reconcile_due() == 1

    assert w.settled() == {("succeeded", "reconciler"): 1}


async def test_a_payment_settled_by_a_webhook_is_counted_once_however_often_the_event_comes():
    w = World()
    p = await w.pay(("card", ACTION, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)

    assert await w.events.apply(w.charged(p)) == "applied"
    assert await w.events.apply(w.charged(p)) == "duplicate"
    # Another event about the same charge (Stripe sends several), and the confirm the
    # customer's browser still sends: the payment is settled already.
    assert await w.events.apply(w.charged(p, event_id="evt_other")) == "ignored"
    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert w.settled() == {("succeeded", "webhook"): 1}


async def test_a_split_settled_by_a_webhook_counts_the_status_its_captures_left():
    w = World()
    p = await w.pay(("card", ACTION, 3000), ("apple_pay", OK, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)

    assert await w.events.apply(w.charged(p)) == "applied"

    # Not "authorized": the event's own write holds the steps authorized for a moment,
    # and the captures that follow it settle the payment.
    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    assert w.settled() == {("succeeded", "webhook"): 1}


async def test_a_confirm_beaten_by_the_webhook_leaves_the_count_to_the_webhook():
    w = World()
    p = await w.pay(("card", ACTION, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)
    # The webhook saves between the confirm's read and its save: the confirm's save loses,
    # and made again it finds the payment settled.
    w.uow.saved_first(lambda payment_id: w.events.apply(w.charged(p)))

    done = await w.service.confirm(p.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert w.settled() == {("succeeded", "webhook"): 1}


async def test_a_reconciler_beaten_by_a_confirm_leaves_the_count_to_the_confirm():
    w = World()
    p = await w.pay(("card", ACTION, None))
    w.sim.complete_action(p.steps[0].processor_payment_id)
    w.clock.advance(ACTION_TIMEOUT.total_seconds() + 1)
    # Another replica's ConfirmPayment saves between this reconciler's read and save.
    w.uow.saved_first(lambda payment_id: w.service.confirm(payment_id, "m_1"))

    assert await w.service.reconcile_due() == 0

    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    assert w.settled() == {("succeeded", "confirm"): 1}


async def test_a_payment_given_up_after_the_customer_left_is_counted_settled_by_the_expiry(caplog):
    w = World()
    p = await w.pay(("card", ACTION, None))
    assert p.status is PaymentStatus.REQUIRES_ACTION

    w.clock.advance(ACTION_TIMEOUT.total_seconds() + 1)
    assert await w.service.reconcile_due() == 1
    w.clock.advance(24 * 3600)
    assert await w.service.reconcile_due() == 0

    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.CANCELLED
    (line,) = w.lines(caplog, "payment settled")
    assert line.startswith("payment settled cancelled by expiry")
    assert w.settled() == {("cancelled", "expiry"): 1}


async def test_an_authorize_only_payment_settles_authorized_and_its_capture_counts_nothing_new():
    w = World()
    p = await w.pay(("card", OK, None), authorize_only=True)

    await w.service.capture(p.id, "m_1")
    await w.service.refund(p.id, "m_1", amount_minor=0, request_id="rf-1")

    assert w.ended() == {"authorized": 1}
    assert w.settled() == {("authorized", "create"): 1}


async def test_a_replayed_create_payment_counts_nothing():
    w = World()
    core = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="same",
            amount_minor=1000,
            currency="EUR",
            methods=[RawMethodInput("card", OK, None)],
        )
    )
    await w.service.create(core, deadline_s=None)
    replay = await w.service.create(core, deadline_s=None)

    assert replay.replayed
    assert w.ended() == {"succeeded": 1}
    assert w.settled() == {("succeeded", "create"): 1}


async def test_a_split_whose_capture_failed_settles_when_the_reconciler_captures_it():
    w = World()
    outage = Outage(w, "capture")  # type: ignore[arg-type]  # any world with a .sim
    outage.everywhere = True
    p = await w.pay(("apple_pay", OK, 6000), ("card", OK, None))
    # Authorized, its capture owed: CreatePayment ended so, and it is not settled yet.
    assert p.status is PaymentStatus.AUTHORIZED and p.owed is Owed.CAPTURE
    assert w.ended() == {"authorized": 1} and w.settled() == {}

    outage.everywhere = False
    w.clock.advance(61)
    assert await w.service.reconcile_due() == 1

    assert (await w.service.get(p.id, "m_1")).status is PaymentStatus.SUCCEEDED
    assert w.settled() == {("succeeded", "reconciler"): 1}


def _attempts(payment: Payment) -> None:
    """A processor error on the first authorize, then the success: recovered, once
    the payment took the money."""
    t = datetime(2026, 3, 1, tzinfo=UTC)
    step = payment.steps[0]
    for number, (outcome, code) in enumerate(
        [(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR), (Outcome.SUCCESS, ErrorCode.NONE)], 1
    ):
        raw = RawError("api_error", "", "", 500 if number == 1 else 200, "", "")
        step.attempts.append(
            Attempt(number, "simulated", f"k{number}", t, t, 5, outcome, code, raw)
        )


@pytest.mark.parametrize("failure_stored", [False, True], ids=["failure-new", "failure-stored"])
@pytest.mark.parametrize("before", [None, *PaymentStatus], ids=lambda s: getattr(s, "value", "new"))
@pytest.mark.parametrize("now", list(PaymentStatus), ids=lambda s: s.value)
def test_a_save_makes_a_payment_recovered_only_over_a_stored_state_that_was_not(
    now, before, failure_stored
):
    """What a save reports as recovered is read from what storage holds first only when
    it must be: the rule stays "recovered now, and not as stored"."""
    payment = new_payment(1)
    _attempts(payment)
    payment.steps[0].stored_attempts = 2 if failure_stored else 0
    payment.status = now
    payment.stored = None if before is None else Stored(before, settled=False)
    as_stored = before in SUCCEEDED and failure_stored
    assert unstored(payment).recovers is (now in SUCCEEDED and not as_stored)


@pytest.mark.parametrize("owed", list(Owed), ids=lambda o: o.value)
@pytest.mark.parametrize("authorize_only", [False, True])
@pytest.mark.parametrize("status", list(PaymentStatus), ids=lambda s: s.value)
def test_storage_marks_each_state_as_it_is(status, authorize_only, owed):
    """The marks storage leaves on a payment are shared, one for each (status,
    settled): each says the state it marks."""
    payment = new_payment(1)
    payment.status, payment.authorize_only, payment.owed = status, authorize_only, owed
    payment.mark_stored()
    assert payment.stored == Stored(status, payment.settled)
    assert payment.settled is (
        status not in OPEN
        and (status is not PaymentStatus.AUTHORIZED or authorize_only or owed is Owed.VOID)
    )
