"""Inbound Stripe webhooks on the real HTTP app and database (scenario 5: delayed webhooks)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.tables import events
from payorch.app.auth import Principal, Scope
from payorch.domain.merchant_config import MerchantConfig
from payorch.domain.payment import PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome
from payorch.domain.retry import RetryPolicy
from payorch.entrypoints.http.app import build_app
from tests.fakes.fake_stripe import FakeStripe, Fault
from tests.integration.helpers import (
    core_request,
    event_payloads,
    make_container,
    make_stripe_container,
)

SECRET = "whsec_test_" + "x" * 24
# The service's clock when a test starts; signatures are made at it unless told otherwise.
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def sign(payload: str, *, secret: str = SECRET, at: int | None = None) -> str:
    ts = int(START.timestamp()) if at is None else at
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def event(
    kind: str, payment_id: str, *, pi: str = "pi_x", event_id: str | None = None, step: int = 0
) -> str:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": kind,
            "created": int(START.timestamp()),
            "data": {
                "object": {
                    "id": pi,
                    "object": "payment_intent",
                    "status": "succeeded"
                    if kind.endswith("succeeded")
                    else "requires_payment_method",
                    "metadata": {"payorch_payment_id": payment_id, "payorch_step": str(step)},
                }
            },
        }
    )


@pytest.fixture
async def world(database_url, clock):
    container = await make_container(database_url, clock)
    await container.configs.upsert(MerchantConfig("m_1", retry_policy=RetryPolicy(max_retries=0)))
    app = build_app(
        stripe_events=container.processor_events, stripe_webhook_secret=SECRET, clock=clock
    )
    async with TestClient(TestServer(app)) as client:
        yield container, client
    await container.close()


@pytest.fixture
async def on_stripe(database_url, clock):
    """The service on the fake Stripe (the real SDK), its webhooks on the real HTTP app."""
    async with FakeStripe() as fake:
        container = await make_stripe_container(database_url, clock, fake)
        await container.configs.upsert(
            MerchantConfig("m_1", retry_policy=RetryPolicy(max_retries=0))
        )
        app = build_app(
            stripe_events=container.processor_events, stripe_webhook_secret=SECRET, clock=clock
        )
        async with TestClient(TestServer(app)) as client:
            yield fake, container, client
        await container.close()
        await fake.wait_idle()


def refund_event(kind: str, pi: str | None, *, event_id: str | None = None) -> str:
    """A charge's refund event as Stripe sends it: a Charge (charge.refunded) or a Refund,
    neither with payorch's metadata; only its PaymentIntent links it to a payment."""
    charge = kind == "charge.refunded"
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": kind,
            "data": {
                "object": {
                    "id": f"ch_{uuid.uuid4().hex[:24]}" if charge else "re_from_the_event",
                    "object": "charge" if charge else "refund",
                    # Not read: the amounts come from Stripe itself.
                    "amount_refunded" if charge else "amount": 999_999,
                    "payment_intent": pi,
                    "metadata": {},
                }
            },
        }
    )


async def post(client, payload: str, signature: str | None = None):
    return await client.post(
        "/webhooks/stripe",
        data=payload,
        headers={
            "Stripe-Signature": signature or sign(payload),
            "Content-Type": "application/json",
        },
    )


async def unknown_payment(container):
    container.simulated["simulated"].inject("lost_response")
    result = await container.payments.create(core_request(f"r-{uuid.uuid4()}"), deadline_s=None)
    assert result.payment.status is PaymentStatus.UNKNOWN
    return result.payment


async def test_a_delayed_success_webhook_resolves_an_unknown_payment(world):
    container, client = world
    payment = await unknown_payment(container)
    reply = await post(client, event("payment_intent.succeeded", payment.id))
    assert reply.status == 200 and (await reply.json())["result"] == "applied"
    stored = await container.payments.get(payment.id, None)
    assert stored.status is PaymentStatus.SUCCEEDED
    assert container.simulated["simulated"].ledger.charges_total == 1


async def test_a_redelivered_event_is_applied_once(world):
    container, client = world
    payment = await unknown_payment(container)
    body = event("payment_intent.succeeded", payment.id, event_id="evt_same")
    assert (await (await post(client, body)).json())["result"] == "applied"
    assert (await (await post(client, body)).json())["result"] == "duplicate"


async def test_a_late_failure_event_never_undoes_a_success(world):
    container, client = world
    payment = await unknown_payment(container)
    await post(client, event("payment_intent.succeeded", payment.id))
    reply = await post(client, event("payment_intent.payment_failed", payment.id))
    assert (await reply.json())["result"] == "ignored"
    assert (await container.payments.get(payment.id, None)).status is PaymentStatus.SUCCEEDED


async def test_a_failure_event_is_only_a_hint_to_look_the_payment_up(world):
    container, client = world
    payment = await unknown_payment(container)  # the processor did charge
    reply = await post(client, event("payment_intent.payment_failed", payment.id))
    assert (await reply.json())["result"] == "looked up"
    assert (await container.payments.get(payment.id, None)).status is PaymentStatus.SUCCEEDED


async def test_a_bad_signature_is_refused(world):
    container, client = world
    payment = await unknown_payment(container)
    body = event("payment_intent.succeeded", payment.id)
    assert (await post(client, body, sign(body, secret="whsec_wrong"))).status == 400
    assert (await post(client, body, "t=1,v1=deadbeef")).status == 400
    assert (await container.payments.get(payment.id, None)).status is PaymentStatus.UNKNOWN


@pytest.mark.parametrize(("skew_s", "status"), [(-301, 400), (-300, 200), (300, 200), (301, 400)])
async def test_a_signature_is_accepted_only_within_five_minutes_of_our_clock_either_side(
    world, clock, skew_s, status
):
    _container, client = world
    body = event("payment_intent.succeeded", "pay_x")
    at = int(clock.now().timestamp()) + skew_s
    assert (await post(client, body, sign(body, at=at))).status == status


async def test_a_signature_is_checked_against_our_clock_when_the_event_arrives(world, clock):
    _container, client = world
    body = event("payment_intent.succeeded", "pay_x")
    signature = sign(body)
    clock.advance(301)
    assert (await post(client, body, signature)).status == 400


async def test_one_matching_signature_among_several_is_enough(world):
    container, client = world
    payment = await unknown_payment(container)
    body = event("payment_intent.succeeded", payment.id)
    rolled_out = sign(body, secret="whsec_rolled_out").split(",v1=")[1]
    ours = sign(body).split(",v1=")[1]
    header = f"t={int(START.timestamp())},v1={rolled_out},v1={ours},v0={'0' * 64}"
    reply = await post(client, body, header)
    assert reply.status == 200 and (await reply.json())["result"] == "applied"


async def test_a_signature_in_another_scheme_is_not_ours_to_trust(world):
    _container, client = world
    body = event("payment_intent.succeeded", "pay_x")
    valid_mac = sign(body).split(",v1=")[1]
    assert (await post(client, body, f"t={int(START.timestamp())},v0={valid_mac}")).status == 400


@pytest.mark.parametrize(
    "signature",
    ["", "garbage", "t=,v1=00", "t=soon,v1=00", "v1=00", "t=1767225600", "t=1767225600,v1=\u00e9"],
)
async def test_a_malformed_signature_header_is_refused(world, signature):
    _container, client = world
    body = event("payment_intent.succeeded", "pay_x")
    reply = await client.post(
        "/webhooks/stripe", data=body, headers={"Stripe-Signature": signature} if signature else {}
    )
    assert reply.status == 400
    assert (await client.get("/healthz")).status == 200


def intent_event(intent: object) -> str:
    return json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": intent},
        }
    )


@pytest.mark.parametrize(
    "body",
    [
        "{}",
        "[]",
        "null",
        '"evt_1"',
        json.dumps({"id": 7, "type": "payment_intent.succeeded", "data": {"object": {}}}),
        json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}),
        intent_event("pi_1"),
        intent_event({"id": "pi_1", "metadata": "pay_1"}),
        intent_event(
            {"id": "pi_1", "metadata": {"payorch_payment_id": "pay_1", "payorch_step": None}}
        ),
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=[
        "empty",
        "list",
        "null",
        "string",
        "number id",
        "no data",
        "object not an object",
        "metadata not an object",
        "step not a string",
        "nested too deep",
    ],
)
async def test_a_signed_body_that_is_no_stripe_event_is_refused_and_the_server_goes_on(world, body):
    _container, client = world
    reply = await post(client, body)
    assert reply.status == 400 and "error" in await reply.json()
    assert (await client.get("/healthz")).status == 200


async def test_events_we_do_not_act_on_and_intents_not_ours_are_acknowledged(world):
    _container, client = world
    customer = json.dumps(
        {
            "id": "evt_customer",
            "object": "event",
            "type": "customer.created",
            "data": {"object": {"id": "cus_1", "object": "customer", "metadata": {}}},
        }
    )
    reply = await post(client, customer)
    assert reply.status == 200 and (await reply.json())["result"] == "ignored"
    # A charge made without a PaymentIntent was not made by us.
    refunded = refund_event("charge.refunded", None)
    reply = await post(client, refunded)
    assert reply.status == 200 and (await reply.json())["result"] == "not ours"
    foreign = intent_event({"id": "pi_1", "object": "payment_intent", "metadata": {"order": "7"}})
    reply = await post(client, foreign)
    assert reply.status == 200 and (await reply.json())["result"] == "not ours"


async def test_an_oversized_body_is_refused(world):
    _container, client = world
    body = json.dumps({"pad": "x" * 300_000})
    assert (await post(client, body)).status == 413


async def test_events_for_unknown_payments_are_acknowledged(world):
    _container, client = world
    reply = await post(client, event("payment_intent.succeeded", "pay_does_not_exist"))
    assert reply.status == 200 and (await reply.json())["result"] == "unknown payment"


async def single(container, token: str, amount_minor: int, **flags: bool):
    """A payment of one step on `token`, as CreatePayment made it."""
    request = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id=f"r-{uuid.uuid4()}",
            amount_minor=amount_minor,
            currency="USD",
            payment_method=token,
            **flags,
        )
    )
    return (await container.payments.create(request, deadline_s=None)).payment


async def held(container):
    """A payment authorized and held, waiting for the merchant's capture."""
    payment = await single(container, "pm_card_visa", 2500, authorize_only=True)
    assert payment.status is PaymentStatus.AUTHORIZED
    return payment, payment.steps[0].processor_payment_id


async def test_a_hold_canceled_at_the_processor_is_recorded_from_its_webhook(world):
    container, client = world
    payment, pi = await held(container)
    container.simulated["simulated"].ledger.by_id[pi].status = "canceled"  # its dashboard

    reply = await post(client, event("payment_intent.canceled", payment.id, pi=pi))

    assert reply.status == 200 and (await reply.json())["result"] == "looked up"
    stored = await container.payments.get(payment.id, None)
    assert stored.status is PaymentStatus.CANCELLED
    async with container.engine.connect() as conn:
        names = (
            (
                await conn.execute(
                    select(events.c.name)
                    .where(events.c.payment_id == payment.id)
                    .order_by(events.c.sequence)
                )
            )
            .scalars()
            .all()
        )
    assert names[-2:] == ["StepVoided", "PaymentCancelled"]


async def paused_split(container):
    """A split on Stripe paused for 3-D Secure on its card step; Apple Pay pays the rest."""
    raw = RawPaymentRequest(
        merchant_id="m_1",
        request_id=f"r-{uuid.uuid4()}",
        amount_minor=10000,
        currency="USD",
        methods=[
            RawMethodInput("card", "pm_card_authenticationRequired", 3000),
            RawMethodInput("apple_pay", "pm_card_visa", None),
        ],
    )
    payment = (await container.payments.create(parse_payment_request(raw), deadline_s=None)).payment
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    return payment


def failing_the_next_save(container):
    """The database goes away for one save of a payment (the follow-through's)."""
    real = container.uow.update_payment

    async def database_gone(payment):
        container.uow.update_payment = real
        raise ConnectionError("the database went away")

    container.uow.update_payment = database_gone


async def test_a_redelivered_event_resumes_a_split_whose_follow_through_failed(on_stripe):
    fake, container, client = on_stripe
    payment = await paused_split(container)
    pi = payment.steps[0].processor_payment_id
    fake.complete_action(pi)  # the customer passed 3-D Secure
    body = event("payment_intent.amount_capturable_updated", payment.id, pi=pi, event_id="evt_3ds")
    failing_the_next_save(container)

    first = await post(client, body)

    assert first.status == 500  # the step was committed, the rest of the plan was not
    stored = await container.payments.get(payment.id, None)
    assert [s.status for s in stored.steps] == [StepStatus.AUTHORIZED, StepStatus.PENDING]

    other = event("payment_intent.amount_capturable_updated", payment.id, pi=pi)
    assert (await (await post(client, other)).json())["result"] == "ignored"  # not that event

    again = await post(client, body)  # Stripe redelivers what got a 500

    assert again.status == 200 and (await again.json())["result"] == "applied"
    done = await container.payments.get(payment.id, None)
    assert done.status is PaymentStatus.SUCCEEDED
    assert [s.status for s in done.steps] == [StepStatus.CAPTURED, StepStatus.CAPTURED]
    assert [fake.charges_for(s.processor_payment_id) for s in done.steps] == [1, 1]
    assert [fake.payment_intent(s.processor_payment_id)["status"] for s in done.steps] == [
        "succeeded",
        "succeeded",
    ]


async def test_the_failure_event_of_an_off_session_authentication_decline_keeps_it_waiting(
    on_stripe,
):
    """Stripe follows its off-session 402 authentication_required with
    payment_intent.payment_failed: a hint, looked up, and the PaymentIntent is still the
    customer's to confirm. The payment keeps waiting with its client secret; once the
    customer confirmed on-session, Stripe's success event completes it."""
    fake, container, client = on_stripe
    payment = await single(container, "pm_card_authenticationRequired", 5000, off_session=True)
    pi = payment.steps[0].processor_payment_id
    secret = fake.payment_intent(pi)["client_secret"]

    await post(client, event("payment_intent.payment_failed", payment.id, pi=pi))

    waiting = await container.payments.get(payment.id, None)
    assert waiting.status is PaymentStatus.REQUIRES_ACTION
    assert waiting.steps[0].client_secret == secret
    assert fake.payment_intent(pi)["status"] == "requires_payment_method"  # not canceled

    fake.complete_action(pi)  # the customer, on-session, with the client secret
    await post(client, event("payment_intent.succeeded", payment.id, pi=pi))

    assert (await container.payments.get(payment.id, None)).status is PaymentStatus.SUCCEEDED
    assert fake.charges_total == 1


async def paid_on_stripe(container, amount: int = 5000, currency: str = "USD"):
    request = core_request(f"r-{uuid.uuid4()}", amount=amount, currency=currency)
    payment = (await container.payments.create(request, deadline_s=None)).payment
    assert payment.status is PaymentStatus.SUCCEEDED
    return payment, payment.steps[0].processor_payment_id


async def result_of(client, body: str) -> str:
    reply = await post(client, body)
    assert reply.status == 200
    return (await reply.json())["result"]


async def test_a_refund_made_in_stripes_dashboard_is_recorded_once_and_told_downstream(on_stripe):
    fake, container, client = on_stripe
    payment, pi = await paid_on_stripe(container)
    refund_id = fake.refund_from_dashboard(pi, 2000)
    body = refund_event("charge.refunded", pi, event_id="evt_dashboard")

    assert await result_of(client, body) == "recorded"

    stored = await container.payments.get(payment.id, None)
    assert stored.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (stored.refundable_minor, stored.steps[0].refunded_minor) == (3000, 2000)
    assert await result_of(client, body) == "duplicate"
    assert await result_of(client, refund_event("refund.created", pi)) == "nothing new"
    assert await event_payloads(container, payment.id, "PaymentRefunded") == [
        {"amount_minor": 2000, "refund_request_id": refund_id, "sequence": 4}
    ]

    # Refunding the rest through payorch asks Stripe for what is left, and its own
    # refund's event counts nothing a second time.
    done = await container.payments.refund(payment.id, "m_1", amount_minor=0, request_id="rest")
    assert done.status is PaymentStatus.REFUNDED and fake.refunded_for(pi) == 5000
    assert await result_of(client, refund_event("charge.refunded", pi)) == "nothing new"
    stored = await container.payments.get(payment.id, None)
    assert (stored.status, stored.steps[0].refunded_minor) == (PaymentStatus.REFUNDED, 5000)


async def test_a_dashboard_refund_is_read_in_the_units_stripe_counts_its_currency_in(on_stripe):
    # Stripe counts ISK in hundredths, ISO 4217 (and payorch) in whole kronur.
    fake, container, client = on_stripe
    payment, pi = await paid_on_stripe(container, amount=500, currency="ISK")
    fake.refund_from_dashboard(pi, 20000)

    assert await result_of(client, refund_event("charge.refunded", pi)) == "recorded"

    stored = await container.payments.get(payment.id, None)
    assert (stored.steps[0].refunded_minor, stored.refundable_minor) == (200, 300)
    assert [
        e["amount_minor"] for e in await event_payloads(container, payment.id, "PaymentRefunded")
    ] == [200]


async def test_a_refund_that_failed_at_stripe_is_no_longer_counted(on_stripe, clock):
    fake, container, client = on_stripe
    payment, pi = await paid_on_stripe(container)
    dashboard = fake.refund_from_dashboard(pi, 2000)
    assert await result_of(client, refund_event("charge.refunded", pi)) == "recorded"
    fake.fail_refund(dashboard)

    assert await result_of(client, refund_event("refund.failed", pi)) == "recorded"

    stored = await container.payments.get(payment.id, None)
    assert stored.status is PaymentStatus.SUCCEEDED
    assert (stored.refundable_minor, stored.steps[0].status) == (5000, StepStatus.CAPTURED)
    # Recorded as what it is: not "unmapped", an answer missing from the table.
    failed = stored.steps[0].attempts[-1]
    assert (failed.operation, failed.idempotency_key) == ("refund", dashboard)
    assert (failed.outcome, failed.error_code) == (Outcome.HARD, ErrorCode.REFUND_FAILED)
    assert await result_of(client, refund_event("charge.refund.updated", pi)) == "nothing new"

    # One that payorch made and counted, failing later, is no longer counted either.
    await container.payments.refund(payment.id, "m_1", amount_minor=1500, request_id="rf-1")
    (ours,) = [r["id"] for r in fake.refunds_for(pi) if r["metadata"]]
    fake.fail_refund(ours)
    assert await result_of(client, refund_event("refund.updated", pi)) == "recorded"

    stored = await container.payments.get(payment.id, None)
    assert (stored.status, stored.refundable_minor) == (PaymentStatus.SUCCEEDED, 5000)
    failed = await event_payloads(container, payment.id, "PaymentRefundFailed")
    assert [(e["amount_minor"], e["refund_id"]) for e in failed] == [
        (2000, dashboard),
        (1500, ours),
    ]
    assert (
        len(await event_payloads(container, payment.id, "PaymentCompleted")) == 1
    )  # completed once
    # That refund request is over: retried, it sends nothing; a new one refunds anew.
    await container.payments.refund(payment.id, "m_1", amount_minor=1500, request_id="rf-1")
    assert len(fake.refunds_for(pi)) == 2
    again = await container.payments.refund(payment.id, "m_1", amount_minor=0, request_id="rf-2")
    assert again.status is PaymentStatus.REFUNDED and fake.refunded_for(pi) == 5000
    stats = await container.observability.analytics.stats(
        Principal(Scope.OPS, None, "ops"),
        since=clock.now() - timedelta(hours=1),
        until=clock.now() + timedelta(hours=1),
    )
    # In the failure mix under their own code; out of the recovery share, as refunds are.
    assert stats.failures_by_error_code == {ErrorCode.REFUND_FAILED: 2}
    assert (stats.hit_infrastructure_failure, stats.recovered) == (0, 0)


async def answered_send_again(client, body: str, caplog) -> None:
    """Stripe could not be asked: a 500 (Stripe sends the event again) that says so in
    JSON, and one log line, no traceback: an outage at Stripe is not a bug here."""
    with caplog.at_level(logging.INFO):
        reply = await post(client, body)
    assert reply.status == 500
    assert "again" in (await reply.json())["error"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_a_refund_event_stripe_cannot_be_asked_about_is_taken_again(on_stripe, caplog):
    fake, container, client = on_stripe
    payment, pi = await paid_on_stripe(container)
    fake.refund_from_dashboard(pi, 5000)
    fake.inject(Fault.api_error(), endpoint="list_refunds")
    body = refund_event("charge.refunded", pi)

    await answered_send_again(client, body, caplog)
    assert (await container.payments.get(payment.id, None)).status is PaymentStatus.SUCCEEDED

    assert await result_of(client, body) == "recorded"  # Stripe's redelivery
    stored = await container.payments.get(payment.id, None)
    assert (stored.status, stored.refundable_minor) == (PaymentStatus.REFUNDED, 0)


async def test_a_canceled_hold_stripe_cannot_be_asked_about_is_taken_again(on_stripe, caplog):
    fake, container, client = on_stripe
    payment, pi = await held(container)
    fake.set_status(pi, "canceled")  # from its dashboard
    fake.inject(Fault.api_error(), endpoint="retrieve")  # the look-up gets no answer
    body = event("payment_intent.canceled", payment.id, pi=pi)

    await answered_send_again(client, body, caplog)
    assert (await container.payments.get(payment.id, None)).status is PaymentStatus.AUTHORIZED

    assert await result_of(client, body) == "looked up"  # Stripe's redelivery
    stored = await container.payments.get(payment.id, None)
    assert (stored.status, stored.steps[0].status) == (
        PaymentStatus.CANCELLED,
        StepStatus.VOIDED,
    )


async def test_an_event_about_a_payment_its_server_left_processing_is_sent_again_then_settles_it(
    on_stripe, clock
):
    fake, container, client = on_stripe
    failing_the_next_save(container)  # the server dies once Stripe charged, before storing it
    with pytest.raises(ConnectionError):
        await container.payments.create(core_request(f"r-{uuid.uuid4()}"), deadline_s=None)
    (pi,) = fake.payment_intents
    payment_id = fake.payment_intent(pi)["metadata"]["payorch_payment_id"]
    stored = await container.payments.get(payment_id, None)
    assert stored.status is PaymentStatus.PROCESSING and not stored.steps[0].processor_payment_id
    body = event("payment_intent.succeeded", payment_id, pi=pi, event_id="evt_killed")

    clock.advance(60)  # a live run could still own it: Stripe is told to send it again
    first = await post(client, body, sign(body, at=int(clock.now().timestamp())))
    assert first.status == 409 and "send the event again" in (await first.json())["error"]
    assert (await container.payments.get(payment_id, None)).status is PaymentStatus.PROCESSING

    clock.advance(300)  # no live run can own it now: Stripe's redelivery settles it
    again = await post(client, body, sign(body, at=int(clock.now().timestamp())))
    assert again.status == 200 and (await again.json())["result"] == "looked up"
    settled = await container.payments.get(payment_id, None)
    assert settled.status is PaymentStatus.SUCCEEDED
    assert settled.steps[0].processor_payment_id == pi and fake.charges_total == 1
    reconciled = await event_payloads(container, payment_id, "PaymentReconciled")
    assert [p["source"] for p in reconciled] == ["retrieve"]

    last = await post(client, body, sign(body, at=int(clock.now().timestamp())))
    assert (await last.json())["result"] == "duplicate"
