"""What a consumer of a payment's events reads: the events a payment raises through the
app (in memory), as ListPaymentEvents maps them and as a webhook body carries them."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime

import pytest

from payments.events.v1 import events_pb2
from payments.result.v1 import result_pb2
from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.repository import _event_payload
from payorch.adapters.processors.simulated import SimulatedProcessor
from payorch.app.merchant_configs import MerchantConfigs
from payorch.app.payments import PaymentService
from payorch.app.ports import ChargeRequest, StoredEvent
from payorch.app.router import Router
from payorch.app.settlement import Settlement
from payorch.app.webhook_delivery import EVENT_NAMES
from payorch.domain.events import DomainEvent
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.money import Currency
from payorch.domain.payment import PaymentStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ProcessorResponse
from payorch.domain.webhook_delivery import webhook_body
from payorch.entrypoints.grpc import mappers
from tests.fakes.memory import FakeMerchantConfigStore, FakeUnitOfWorkFactory

T0 = datetime(2027, 1, 5, tzinfo=UTC)


class RecordingProcessor(SimulatedProcessor):
    """The simulated processor, noting the events stored when each charge is sent."""

    def __init__(self, stored: list[DomainEvent], sleep) -> None:
        super().__init__("simulated", sleep=sleep)
        self._stored = stored
        self.stored_at_charge: list[list[str]] = []

    async def authorize(self, request: ChargeRequest) -> ProcessorResponse:
        self.stored_at_charge.append([e.name for e in self._stored])
        return await super().authorize(request)


class World:
    def __init__(self, **config) -> None:
        self.clock = ManualClock()
        self.uow = FakeUnitOfWorkFactory()
        self.sim = RecordingProcessor(self.uow.events, self.clock.sleep)
        router = Router({"simulated": self.sim}, self.clock, rng=random.Random(1))
        configs = MerchantConfigs(
            FakeMerchantConfigStore(),
            self.clock,
            ["simulated"],
            defaults=MerchantConfig("", **config),
        )
        self.service = PaymentService(
            self.uow, router, self.clock, configs, Settlement(router.processors, self.clock)
        )

    async def pay(self, token: str, *, request_id: str = "", total: int = 10000, split=(), **extra):
        methods = [RawMethodInput(m, t, a) for m, t, a in split] or [
            RawMethodInput("card", token, None)
        ]
        core = parse_payment_request(
            RawPaymentRequest(
                merchant_id="m_1",
                request_id=request_id or f"r-{uuid.uuid4()}",
                amount_minor=total,
                currency="EUR",
                methods=methods,
                **extra,
            )
        )
        return await self.service.create(core, deadline_s=None)


def stored(e: DomainEvent, payment_id: str = "pay_1") -> StoredEvent:
    """The event as the outbox stores it and ListPaymentEvents reads it back."""
    return StoredEvent("evt_1", payment_id, "m_1", e.sequence, e.name, _event_payload(e), T0)


def body(e: StoredEvent) -> dict:
    return json.loads(
        webhook_body(
            event_id=e.event_id,
            name=e.name,
            aggregate_id=e.payment_id,
            merchant_id=e.merchant_id,
            sequence=e.sequence,
            occurred_at=e.occurred_at,
            payload=e.payload,
        )
    )


# -- a payment in flight ---------------------------------------------------------------


async def test_a_payment_says_it_is_processing_before_its_charge_is_sent():
    w = World()
    made = await w.pay("pm_card_visa")

    assert made.payment.status is PaymentStatus.SUCCEEDED
    # Stored with the PROCESSING row, so it is out even if the server dies mid-charge.
    assert w.sim.stored_at_charge == [["PaymentProcessing"]]
    assert [(e.name, e.sequence) for e in w.uow.events] == [
        ("PaymentProcessing", 1),
        ("StepSucceeded", 2),
        ("PaymentCompleted", 3),
    ]
    env = mappers.event_envelope(stored(w.uow.events[0], made.payment.id), Currency("EUR"))
    assert env.WhichOneof("event") == "payment_processing"
    assert env.payment_processing.total.amount_minor == 10000
    assert env.payment_processing.request_id == made.payment.request_id
    sent = body(stored(w.uow.events[0], made.payment.id))
    assert sent["type"] == "payment.processing"
    assert sent["data"]["payment_id"] == made.payment.id


async def test_a_replayed_create_raises_no_second_event():
    w = World()
    first = await w.pay("pm_card_visa", request_id="order-1")
    again = await w.pay("pm_card_visa", request_id="order-1")

    assert again.replayed and again.payment.id == first.payment.id
    assert [e.name for e in w.uow.events] == [
        "PaymentProcessing",
        "StepSucceeded",
        "PaymentCompleted",
    ]


# -- how a payment ended -----------------------------------------------------------------

ENDINGS = {"PaymentCompleted", "PaymentFailed", "PaymentCancelled", "PaymentPartiallySucceeded"}


async def test_a_partial_payment_says_it_ended_partly_paid_once():
    w = World(allow_partial=True)
    split = (("apple_pay", "pm_card_visa", 6000), ("card", "pm_card_chargeDeclined", None))
    made = (await w.pay("", split=split)).payment

    assert made.status is PaymentStatus.PARTIALLY_SUCCEEDED
    ended = [e for e in w.uow.events if e.name in ENDINGS]
    assert [e.name for e in ended] == ["PaymentPartiallySucceeded"]
    assert w.uow.events[-1] is ended[0]  # after the capture of what was held
    env = mappers.event_envelope(stored(ended[0], made.id), Currency("EUR"))
    partial = env.payment_partially_succeeded
    assert (partial.processed.amount_minor, partial.remaining.amount_minor) == (6000, 4000)
    assert partial.request_id == made.request_id
    assert body(stored(ended[0], made.id))["type"] == "payment.partially_succeeded"


async def test_a_partial_authorization_captured_later_ends_once():
    w = World(allow_partial=True)
    split = (("apple_pay", "pm_card_visa", 6000), ("card", "pm_card_chargeDeclined", None))
    held = (await w.pay("", split=split, authorize_only=True)).payment
    assert held.status is PaymentStatus.PARTIALLY_SUCCEEDED

    await w.service.capture(held.id, "m_1")
    names = [e.name for e in w.uow.events]
    assert names.count("PaymentPartiallySucceeded") == 1
    assert names[-1] == "PaymentCaptured"


# -- a failed step, as its consumer reads it ---------------------------------------------


@pytest.mark.parametrize(
    ("token", "outcome", "retry_later"),
    [
        # The bank may say yes later, never at once.
        ("pm_card_chargeDeclinedInsufficientFunds", result_pb2.OUTCOME_SOFT, True),
        # A hard decline the dunning ladder may still try again.
        ("pm_card_chargeDeclinedDoNotHonor", result_pb2.OUTCOME_HARD, True),
        # Never again.
        ("pm_card_chargeDeclinedStolenCard", result_pb2.OUTCOME_HARD, False),
    ],
)
async def test_a_failed_step_says_its_class_and_whether_to_charge_again_later(
    token, outcome, retry_later
):
    w = World()
    made = await w.pay(token)
    (failed,) = [e for e in w.uow.events if e.name == "StepFailed"]

    step = mappers.event_envelope(stored(failed), Currency("EUR")).step_failed
    assert (step.outcome, step.retry_later) == (outcome, retry_later)
    # Kept as it always read for receivers that still read it.
    assert step.retryable is retry_later
    data = body(stored(failed))["data"]
    assert data["outcome"] == result_pb2.Outcome.Name(outcome).removeprefix("OUTCOME_").lower()
    assert (data["retry_later"], data["retryable"]) == (retry_later, retry_later)
    assert made.payment.status is PaymentStatus.FAILED


def test_a_step_failure_stored_before_it_said_retry_later_reads_as_it_was_stored():
    old = StoredEvent(
        "evt_1",
        "pay_1",
        "m_1",
        1,
        "StepFailed",
        {
            "step_index": 0,
            "processor": "stripe",
            "error_code": "insufficient_funds",
            "retryable": True,
            "latency_ms": 80,
        },
        T0,
    )

    step = mappers.event_envelope(old, Currency("EUR")).step_failed
    assert (step.retry_later, step.retryable) == (True, True)
    assert step.outcome == result_pb2.OUTCOME_UNSPECIFIED  # not known then
    data = body(old)["data"]
    assert (data["retry_later"], data["retryable"]) == (True, True)
    assert "outcome" not in data


def test_every_payment_event_has_an_envelope_case_and_a_webhook_type():
    raised = {
        c.__name__ for c in DomainEvent.__subclasses__() if c.__module__ == DomainEvent.__module__
    }
    oneof = events_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["event"]
    assert raised <= {f.message_type.name for f in oneof.fields}
    assert raised <= set(EVENT_NAMES)
    assert "PaymentProcessing" in raised
