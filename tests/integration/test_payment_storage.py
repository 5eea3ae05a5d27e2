"""Payments stored and read back through the real unit of work, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from payorch.adapters.clock import SystemClock
from payorch.adapters.persistence import tables
from payorch.adapters.persistence.tables import refunds
from payorch.app import payments
from payorch.app.payments import (
    IdempotencyConflict,
    InvalidState,
    ProcessorEvent,
    RefundRejected,
    TooManyRefunds,
)
from payorch.app.ports import ChargeRequest, ConcurrentUpdate
from payorch.domain.installments import judge_charge
from payorch.domain.money import MAX_AMOUNT_MINOR
from payorch.domain.payment import Owed, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse, ResponseKind
from tests.fakes.fake_stripe import FakeStripe
from tests.integration.helpers import core_request, make_container, make_stripe_container


@pytest.fixture
async def container(database_url, clock):
    c = await make_container(database_url, clock)
    yield c
    await c.close()


async def test_a_successful_payment_is_stored_with_its_step_attempt_and_events(container):
    result = await container.payments.create(core_request(), deadline_s=None)
    stored = await container.payments.get(result.payment.id, "m_1")

    assert stored.status is PaymentStatus.SUCCEEDED
    assert stored.amount_minor == 1999 and stored.currency.code == "USD"
    (step,) = stored.steps
    assert step.status is StepStatus.CAPTURED and step.captured_minor == 1999
    (attempt,) = step.attempts
    assert attempt.outcome is Outcome.SUCCESS and attempt.processor == "simulated"
    assert attempt.idempotency_key.endswith("_0_g0")
    assert attempt.started_at.tzinfo is not None
    async with container.engine.connect() as conn:
        names = [
            r[0]
            for r in await conn.exec_driver_sql(
                "SELECT name FROM events WHERE payment_id = :p ORDER BY sequence"
                if container.engine.dialect.name == "sqlite"
                else "SELECT name FROM events WHERE payment_id = $1 ORDER BY sequence",
                {"p": stored.id} if container.engine.dialect.name == "sqlite" else (stored.id,),
            )
        ]
    # PaymentProcessing with the PROCESSING row, before the charge; the rest after it.
    assert names == ["PaymentProcessing", "StepSucceeded", "PaymentCompleted"]


async def test_a_declined_payment_keeps_the_raw_processor_fields(container):
    result = await container.payments.create(
        core_request(token="pm_card_chargeDeclined"), deadline_s=None
    )
    stored = await container.payments.get(result.payment.id, None)
    assert stored.status is PaymentStatus.FAILED
    assert stored.final_error is ErrorCode.CARD_DECLINED
    raw = stored.steps[0].attempts[0].raw
    assert (raw.type, raw.code, raw.decline_code, raw.http_status) == (
        "card_error",
        "card_declined",
        "generic_decline",
        402,
    )
    assert raw.request_id.startswith("req_sim_")


async def test_an_issuers_advice_on_retrying_is_kept_with_the_decline(database_url, clock):
    """Stripe's advice_code is the issuer's word on trying the card again: the dunning
    ladder judges a stored payment by its raw fields, so it is stored with them."""
    async with FakeStripe() as fake:
        fake.register_declined_payment_method(
            "pm_live_declined",
            code="card_declined",
            decline_code="do_not_honor",
            advice_code="do_not_try_again",
        )
        c = await make_stripe_container(database_url, clock, fake)
        try:
            result = await c.payments.create(
                core_request(token="pm_live_declined"), deadline_s=None
            )
            stored = await c.payments.get(result.payment.id, None)
        finally:
            await c.close()
    raw = stored.steps[0].attempts[0].raw
    assert (raw.decline_code, raw.advice_code) == ("do_not_honor", "do_not_try_again")
    judged = judge_charge(stored)
    assert (judged.error_code, judged.retry_later) == ("do_not_honor", False)


async def test_another_merchant_cannot_read_the_payment(container):
    result = await container.payments.create(core_request(), deadline_s=None)
    with pytest.raises(LookupError):
        await container.payments.get(result.payment.id, "m_2")


async def test_replaying_a_request_id_returns_the_stored_payment_without_a_second_charge(
    container,
):
    first = await container.payments.create(core_request("same"), deadline_s=None)
    again = await container.payments.create(core_request("same"), deadline_s=None)
    assert again.replayed and again.payment.id == first.payment.id
    assert container.simulated["simulated"].ledger.charges_total == 1


async def test_request_ids_are_scoped_per_merchant(container):
    a = await container.payments.create(core_request("same", merchant="m_a"), deadline_s=None)
    b = await container.payments.create(core_request("same", merchant="m_b"), deadline_s=None)
    assert a.payment.id != b.payment.id and not b.replayed


async def test_concurrent_identical_requests_charge_once(database_url):
    # The duplicates wait for the first request in real time: on a ManualClock their
    # five seconds of polling pass in a hundred instant reads, which a loaded machine
    # can finish before the first request's two commits.
    container = await make_container(database_url, SystemClock())
    try:
        results = await asyncio.gather(
            *(container.payments.create(core_request("race"), deadline_s=None) for _ in range(5))
        )
        assert len({r.payment.id for r in results}) == 1
        assert sum(not r.replayed for r in results) == 1
        assert container.simulated["simulated"].ledger.charges_total == 1
    finally:
        await container.close()


async def test_a_stale_write_is_refused(container):
    result = await container.payments.create(core_request(), deadline_s=None)
    one = await container.payments.get(result.payment.id, None)
    two = await container.payments.get(result.payment.id, None)
    async with container.uow() as uow:
        await uow.payments.save(one)
        await uow.commit()
    with pytest.raises(ConcurrentUpdate):
        async with container.uow() as uow:
            await uow.payments.save(two)
            await uow.commit()


async def test_listing_pages_newest_first_without_gaps(container, clock):
    ids = []
    for i in range(5):
        ids.append(
            (await container.payments.create(core_request(f"r{i}"), deadline_s=None)).payment.id
        )
        clock.advance(1)
    page1 = await container.payments.list("m_1", page_size=2, after=None)
    from payorch.app.ports import PageCursor

    cursor = PageCursor(page1[-1].created_at, page1[-1].id)
    page2 = await container.payments.list("m_1", page_size=10, after=cursor)
    assert [p.id for p in [*page1, *page2]] == list(reversed(ids))
    assert await container.payments.list("m_other", page_size=10, after=None) == []


async def test_failed_and_succeeded_filters(container):
    await container.payments.create(core_request("ok"), deadline_s=None)
    await container.payments.create(
        core_request("no", token="pm_card_chargeDeclined"), deadline_s=None
    )
    failed = await container.payments.list(
        "m_1", page_size=10, after=None, status=PaymentStatus.FAILED
    )
    assert [p.request_id for p in failed] == ["no"]


def _split_request(
    request_id: str,
    *,
    authorize_only: bool = False,
    second: str = "pm_card_visa",
    methods: list[RawMethodInput] | None = None,
):
    return parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id=request_id,
            amount_minor=10000,
            currency="USD",
            methods=methods
            or [RawMethodInput("apple_pay", "pm_card_visa", 6000), RawMethodInput("card", second)],
            authorize_only=authorize_only,
        )
    )


async def test_a_capture_owed_after_a_failure_is_stored_found_by_the_reconciler_and_made(
    container, clock
):
    sim = container.simulated["simulated"]
    capture, failing = sim.capture, [True]

    async def flaky_capture(processor_payment_id, *args, **kwargs):
        if failing[0]:
            return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")
        return await capture(processor_payment_id, *args, **kwargs)

    sim.capture = flaky_capture
    created = (await container.payments.create(_split_request("r-owed"), deadline_s=None)).payment
    stored = await container.payments.get(created.id, "m_1")
    assert (stored.status, stored.owed) == (PaymentStatus.AUTHORIZED, Owed.CAPTURE)
    assert stored.next_reconcile_at == clock.now() + timedelta(minutes=1)

    failing[0] = False
    assert await container.payments.reconcile_due() == 0  # not due yet
    clock.advance(61)
    assert await container.payments.reconcile_due() == 1
    done = await container.payments.get(created.id, "m_1")
    assert (done.status, done.owed, done.next_reconcile_at) == (
        PaymentStatus.SUCCEEDED,
        Owed.NOTHING,
        None,
    )
    assert await container.payments.reconcile_due() == 0


async def test_a_split_left_waiting_for_the_customer_is_found_after_an_hour_and_released(
    container, clock
):
    request = _split_request("r-abandoned", second="pm_card_authenticationRequired")
    created = (await container.payments.create(request, deadline_s=None)).payment
    stored = await container.payments.get(created.id, "m_1")
    assert stored.status is PaymentStatus.REQUIRES_ACTION
    assert stored.next_reconcile_at == clock.now() + timedelta(hours=1)

    clock.advance(3599)
    assert await container.payments.reconcile_due() == 0  # not due yet
    clock.advance(1)
    assert await container.payments.reconcile_due() == 1
    done = await container.payments.get(created.id, "m_1")
    assert (done.status, done.next_reconcile_at) == (PaymentStatus.CANCELLED, None)
    assert [s.status for s in done.steps] == [StepStatus.VOIDED, StepStatus.VOIDED]
    assert await container.payments.reconcile_due() == 0


@pytest.mark.parametrize("off_session", [False, True], ids=["on-session", "off-session"])
async def test_a_single_step_paused_with_no_expiry_stored_is_given_up_an_hour_after_unless_off_session(
    container, clock, off_session
):
    """A payment paused for 3-D Secure before a single step's pause expired was stored
    with no expiry: on-session, it expires an hour after it paused, as one stored now;
    off-session (an installment's charge) it keeps waiting for the customer."""
    request = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="r-paused-long-ago",
            amount_minor=1999,
            currency="USD",
            payment_method="pm_card_authenticationRequired",
            customer_id="cus_1",
            off_session=off_session,
        )
    )
    created = (await container.payments.create(request, deadline_s=None)).payment
    assert created.status is PaymentStatus.REQUIRES_ACTION
    async with container.engine.begin() as conn:  # as older code stored it
        await conn.execute(
            update(tables.payments)
            .where(tables.payments.c.id == created.id)
            .values(next_reconcile_at=None)
        )
    stored = await container.payments.get(created.id, "m_1")
    assert stored.action_expires_at == (None if off_session else clock.now() + timedelta(hours=1))

    clock.advance(3599)
    assert await container.payments.reconcile_due() == 0  # not due yet
    clock.advance(1)
    assert await container.payments.reconcile_due() == (0 if off_session else 1)
    clock.advance(86_400)
    assert await container.payments.reconcile_due() == 0

    done = await container.payments.get(created.id, "m_1")
    if off_session:
        assert (done.status, done.next_reconcile_at) == (PaymentStatus.REQUIRES_ACTION, None)
    else:
        assert (done.status, done.next_reconcile_at) == (PaymentStatus.CANCELLED, None)
        assert [s.status for s in done.steps] == [StepStatus.VOIDED]


async def test_a_refund_keeps_its_parts_so_a_retry_repeats_only_the_part_that_failed(container):
    sim = container.simulated["simulated"]
    created = (await container.payments.create(_split_request("r-refund"), deadline_s=None)).payment
    apple_pay = created.steps[0].processor_payment_id
    refund, calls = sim.refund, []

    async def refund_failing_on_apple_pay(processor_payment_id, amount, key, *, currency):
        calls.append((processor_payment_id, amount, key))
        if processor_payment_id == apple_pay and len(calls) < 3:
            return ProcessorResponse(ResponseKind.ERROR, http_status=500, error_type="api_error")
        return await refund(processor_payment_id, amount, key, currency=currency)

    sim.refund = refund_failing_on_apple_pay
    first = await container.payments.refund(created.id, "m_1", amount_minor=7000, request_id="x")
    assert [s.refunded_minor for s in first.steps] == [0, 4000]
    retried = await container.payments.refund(created.id, "m_1", amount_minor=7000, request_id="x")
    assert [s.refunded_minor for s in retried.steps] == [3000, 4000]
    assert calls[1] == calls[2]  # the failed part again: same intent, amount and key
    assert len(calls) == 3


async def test_two_refunds_at_once_are_both_stored_with_their_events(container):
    sim = container.simulated["simulated"]
    created = (await container.payments.create(core_request(), deadline_s=None)).payment
    refund, keys = sim.refund, []
    both_in = asyncio.Event()

    async def refund_once_both_have_read_the_payment(
        processor_payment_id, amount, key, *, currency
    ):
        keys.append(key)
        if len(keys) == 2:
            both_in.set()
        await asyncio.wait_for(both_in.wait(), 10)
        return await refund(processor_payment_id, amount, key, currency=currency)

    sim.refund = refund_once_both_have_read_the_payment
    await asyncio.gather(
        container.payments.refund(created.id, "m_1", amount_minor=500, request_id="a"),
        container.payments.refund(created.id, "m_1", amount_minor=700, request_id="b"),
    )

    stored = await container.payments.get(created.id, "m_1")
    assert stored.steps[0].refunded_minor == 1200
    assert stored.status is PaymentStatus.PARTIALLY_REFUNDED
    events = await container.payments.events(created.id, "m_1")
    refunded = {
        e.payload["refund_request_id"]: e.payload["amount_minor"]
        for e in events
        if e.name == "PaymentRefunded"
    }
    assert refunded == {"a": 500, "b": 700}
    assert sim.ledger.by_id[created.steps[0].processor_payment_id].amount_refunded == 1200
    # Each refund's hold is stored before its call, so the one whose save lost (to the
    # other's hold or save, once or twice) is made again under its own key.
    assert len(keys) > 2 and set(keys[2:]) <= set(keys[:2])


def _first_two_loads_read_one_version(service) -> list[int]:
    """Make the service's first two reads of a payment wait for each other, so two calls
    at once both work from one version; the versions read, in order."""
    load, loads, both_read = service._load, [], asyncio.Event()

    async def load_once_both_have_read_it(payment_id, merchant_id):
        payment = await load(payment_id, merchant_id)
        loads.append(payment.version)
        if len(loads) == 2:
            both_read.set()
        if len(loads) <= 2:
            await asyncio.wait_for(both_read.wait(), 10)
        return payment

    service._load = load_once_both_have_read_it
    return loads


async def _two_refunds_at_once(service, payment_id: str, amount: int) -> list:
    """Refunds "a" and "b" of `amount` at once: what each answered, or raised."""
    return await asyncio.gather(
        service.refund(payment_id, "m_1", amount_minor=amount, request_id="a"),
        service.refund(payment_id, "m_1", amount_minor=amount, request_id="b"),
        return_exceptions=True,
    )


async def test_two_refunds_at_once_over_the_capture_one_is_refused_before_the_processor(
    container,
):
    sim = container.simulated["simulated"]
    created = (await container.payments.create(core_request(), deadline_s=None)).payment
    service, refund, keys = container.payments, sim.refund, []
    loads = _first_two_loads_read_one_version(service)

    async def counted_refund(processor_payment_id, amount, key, *, currency):
        keys.append(key)
        return await refund(processor_payment_id, amount, key, currency=currency)

    sim.refund = counted_refund
    answers = await _two_refunds_at_once(service, created.id, 1200)

    assert loads[0] == loads[1]  # both read one version of the payment
    (refused,) = [a for a in answers if isinstance(a, Exception)]
    (made,) = [a for a in answers if not isinstance(a, Exception)]
    assert isinstance(refused, RefundRejected)
    assert "1200 exceeds the 799 still refundable" in str(refused)
    assert (made.steps[0].refunded_minor, made.final_error_message) == (1200, "")
    assert len(keys) == 1  # nothing was sent for the refused one
    stored = await service.get(created.id, "m_1")
    assert (stored.steps[0].refunded_minor, stored.refundable_minor) == (1200, 799)
    events = await service.events(created.id, "m_1")
    assert [e.name for e in events].count("PaymentRefunded") == 1
    assert sim.ledger.by_id[created.steps[0].processor_payment_id].amount_refunded == 1200


async def test_two_refunds_at_once_on_a_split_with_a_step_refunded_never_pass_the_capture(
    container,
):
    sim = container.simulated["simulated"]
    created = (await container.payments.create(_split_request("r-gap"), deadline_s=None)).payment
    service = container.payments
    # The card's 4000 given back first: its step is refunded, only apple pay's 6000 left.
    first = await service.refund(created.id, "m_1", amount_minor=4000, request_id="card")
    assert [s.status for s in first.steps] == [StepStatus.CAPTURED, StepStatus.REFUNDED]
    loads = _first_two_loads_read_one_version(service)
    answers = await _two_refunds_at_once(service, created.id, 4000)

    assert loads[0] == loads[1]  # both read one version of the payment
    (refused,) = [a for a in answers if isinstance(a, Exception)]
    assert isinstance(refused, RefundRejected)
    assert "4000 exceeds the 2000 still refundable" in str(refused)
    stored = await service.get(created.id, "m_1")
    assert [s.refunded_minor for s in stored.steps] == [4000, 4000]
    assert (stored.refundable_minor, stored.status) == (2000, PaymentStatus.PARTIALLY_REFUNDED)
    given_back = [sim.ledger.by_id[s.processor_payment_id].amount_refunded for s in stored.steps]
    assert given_back == [4000, 4000]
    everything = await service.refund(created.id, "m_1", amount_minor=0, request_id="rest")
    assert [s.refunded_minor for s in everything.steps] == [6000, 4000]
    assert everything.status is PaymentStatus.REFUNDED
    with pytest.raises(RefundRejected, match="nothing captured is left"):
        await service.refund(created.id, "m_1", amount_minor=1, request_id="more")


@pytest.mark.parametrize("currency", ["JPY", "USD", "KWD", "CLF"])
async def test_the_largest_amount_is_stored_charged_and_refunded_to_the_minor_unit(
    container, currency
):
    # 10^15 minor units: under BIGINT's and SQLite INTEGER's 2^63 with room, in every
    # exponent; split, refunded in part, read back exactly.
    request = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id=f"r-max-{currency}",
            amount_minor=MAX_AMOUNT_MINOR,
            currency=currency,
            methods=[
                RawMethodInput("apple_pay", "pm_card_visa", MAX_AMOUNT_MINOR - 1),
                RawMethodInput("card", "pm_card_visa"),
            ],
        )
    )
    created = (await container.payments.create(request, deadline_s=None)).payment
    refunded = await container.payments.refund(
        created.id, "m_1", amount_minor=MAX_AMOUNT_MINOR - 2, request_id="most"
    )
    stored = await container.payments.get(created.id, "m_1")

    assert stored.amount_minor == MAX_AMOUNT_MINOR and stored.currency.code == currency
    assert [s.captured_minor for s in stored.steps] == [MAX_AMOUNT_MINOR - 1, 1]
    assert [s.refunded_minor for s in stored.steps] == [MAX_AMOUNT_MINOR - 3, 1]
    assert stored.refundable_minor == refunded.refundable_minor == 2


async def test_a_refund_under_the_longest_request_id_is_stored_and_replayed(container):
    sim = container.simulated["simulated"]
    created = (await container.payments.create(_split_request("r-long"), deadline_s=None)).payment
    request_id = "r" * 255  # the longest RefundPayment takes
    refunded = await container.payments.refund(
        created.id, "m_1", amount_minor=7000, request_id=request_id
    )
    assert [s.refunded_minor for s in refunded.steps] == [3000, 4000]
    keys = {
        a.idempotency_key for s in refunded.steps for a in s.attempts if a.operation == "refund"
    }
    assert len(keys) == 2 and all(len(k) <= 255 for k in keys)  # Stripe's limit, and the column's

    again = await container.payments.refund(
        created.id, "m_1", amount_minor=7000, request_id=request_id
    )
    assert [s.refunded_minor for s in again.steps] == [3000, 4000]
    assert sum(i.amount_refunded for i in sim.ledger.intents.values()) == 7000


async def test_a_refund_whose_answer_was_lost_is_found_from_its_stored_attempts_not_made_twice(
    container,
):
    sim = container.simulated["simulated"]
    created = (await container.payments.create(core_request(), deadline_s=None)).payment
    refund, find_refund, calls = sim.refund, sim.find_refund, []

    async def refunds_and_loses_the_first_answer(processor_payment_id, amount, key, *, currency):
        calls.append("refund")
        answer = await refund(processor_payment_id, amount, key, currency=currency)
        return answer if len(calls) > 1 else ProcessorResponse(ResponseKind.NO_RESPONSE)

    async def counted_find_refund(processor_payment_id, key):
        calls.append("find_refund")
        return await find_refund(processor_payment_id, key)

    sim.refund, sim.find_refund = refunds_and_loses_the_first_answer, counted_find_refund
    lost = await container.payments.refund(created.id, "m_1", amount_minor=0, request_id="x")
    assert lost.steps[0].refunded_minor == 0
    sim.ledger.stored.clear()  # a day later: the processor has forgotten the key

    found = await container.payments.refund(created.id, "m_1", amount_minor=0, request_id="x")
    again = await container.payments.refund(created.id, "m_1", amount_minor=0, request_id="x")

    assert calls == ["refund", "find_refund"]
    assert (found.status, again.status) == (PaymentStatus.REFUNDED, PaymentStatus.REFUNDED)
    stored = await container.payments.get(created.id, "m_1")
    assert [(a.operation, a.outcome) for a in stored.steps[0].attempts[1:]] == [
        ("refund", Outcome.UNKNOWN),
        ("lookup", Outcome.SUCCESS),
    ]
    assert sim.ledger.by_id[created.steps[0].processor_payment_id].amount_refunded == 1999


@pytest.mark.parametrize("customer", ["passes", "fails"])
async def test_a_stored_step_keeps_its_client_secret_only_while_it_waits_for_the_customer(
    container, customer
):
    """The stored row holds the client secret while the step is paused (GetPayment and a
    replayed CreatePayment hand it out); once ConfirmPayment resolves the step, charged
    or failed, the row holds none (docs/security.md)."""
    request = _split_request(
        f"r-secret-{customer}",
        methods=[RawMethodInput("card", "pm_card_authenticationRequired", None)],
    )
    paused = (await container.payments.create(request, deadline_s=None)).payment
    intent = paused.steps[0].processor_payment_id
    secret = paused.steps[0].client_secret
    assert secret.startswith(f"{intent}_secret_")

    async def stored_secret() -> str:
        async with container.engine.connect() as conn:
            rows = await conn.execute(
                select(tables.payment_steps.c.client_secret).where(
                    tables.payment_steps.c.payment_id == paused.id
                )
            )
            [(value,)] = rows.all()
        return str(value)

    assert await stored_secret() == secret
    assert (await container.payments.get(paused.id, "m_1")).steps[0].client_secret == secret
    sim = container.simulated["simulated"]
    sim.authenticate(intent, secret, passed=customer == "passes")

    resolved = await container.payments.confirm(paused.id, "m_1")

    assert resolved.status is (
        PaymentStatus.SUCCEEDED if customer == "passes" else PaymentStatus.FAILED
    )
    assert await stored_secret() == ""
    assert (await container.payments.get(paused.id, "m_1")).steps[0].client_secret == ""


async def test_a_cancel_while_a_confirm_charges_is_refused_and_every_step_is_stored(container):
    paused_first = [
        RawMethodInput("card", "pm_card_authenticationRequired", 3000),
        RawMethodInput("apple_pay", "pm_card_visa", None),
    ]
    request = _split_request("r-race", methods=paused_first)
    paused = (await container.payments.create(request, deadline_s=None)).payment
    sim = container.simulated["simulated"]
    sim.complete_action(paused.steps[0].processor_payment_id)
    # The cancel runs whole after the confirm charged both steps and before its last
    # save. The confirm stored the payment as processing before it charged step 1, so
    # the cancel is refused, as during CreatePayment, and decides nothing.
    uow = container.payments._uow
    plain = uow.update_payment
    saves = []

    async def cancel_before_the_last_save(payment):
        saves.append(payment.status)
        if len(saves) == 2:
            with pytest.raises(InvalidState, match="processing payment cannot be cancelled"):
                await container.payments.cancel(payment.id, "m_1", "abandoned")
        await plain(payment)

    uow.update_payment = cancel_before_the_last_save
    await container.payments.confirm(paused.id, "m_1")
    assert saves == [PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED]

    stored = await container.payments.get(paused.id, "m_1")
    charged = [sim.ledger.by_id[s.processor_payment_id].amount_captured for s in stored.steps]
    assert charged == [3000, 7000]
    assert [s.captured_minor for s in stored.steps] == [3000, 7000]
    assert stored.status is PaymentStatus.SUCCEEDED
    assert stored.steps[1].attempts, "the charge the lost try made is in the history"
    names = [e.name for e in await container.payments.events(paused.id, "m_1")]
    assert names.count("PaymentCompleted") == 1


async def test_a_webhook_whose_look_up_was_cancelled_is_acted_on_when_it_comes_again(container):
    paused_first = [
        RawMethodInput("card", "pm_card_authenticationRequired", 3000),
        RawMethodInput("apple_pay", "pm_card_visa", None),
    ]
    paused = (
        await container.payments.create(
            _split_request("r-cut", methods=paused_first), deadline_s=None
        )
    ).payment
    sim = container.simulated["simulated"]
    intent = paused.steps[0].processor_payment_id
    sim.complete_action(intent)
    # A hint (not final good news): the paused step is looked up.
    event = ProcessorEvent("evt_cut", "stripe", paused.id, 0, intent, False)
    real, asking = sim.lookup, asyncio.Event()

    async def unanswered(request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        asking.set()
        await asyncio.Event().wait()  # the server stops before the processor answers
        raise AssertionError("not reached")

    sim.lookup = unanswered
    handling = asyncio.create_task(container.processor_events.apply(event))
    await asking.wait()
    handling.cancel()  # the HTTP server's shutdown cancels the webhook's handler
    with pytest.raises(asyncio.CancelledError):
        await handling
    sim.lookup = real

    # Stripe had no 2xx and sends the event again: it is looked up, the plan goes on.
    assert await container.processor_events.apply(event) == "looked up"
    done = await container.payments.get(paused.id, "m_1")
    assert done.status is PaymentStatus.SUCCEEDED
    assert [s.captured_minor for s in done.steps] == [3000, 7000]


async def test_an_event_forgotten_is_taken_as_new_when_it_comes_again(container, clock):
    async def remember() -> bool:
        async with container.uow() as uow:
            fresh = await uow.inbound_events.remember("evt_1", "stripe", clock.now())
            await uow.commit()
        return fresh

    assert await remember()
    assert not await remember()  # seen: a duplicate
    async with container.uow() as uow:
        await uow.inbound_events.forget("evt_1")
        await uow.commit()
    assert await remember()  # acted on again
    assert not await remember()


async def test_a_payment_takes_no_refund_past_the_limit_but_replays_those_it_took(
    container, monkeypatch
):
    # The refunds a payment has taken are counted where they are stored, on both databases.
    monkeypatch.setattr(payments, "MAX_REFUNDS_PER_PAYMENT", 2)
    other = (await container.payments.create(core_request("r-other"), deadline_s=None)).payment
    await container.payments.refund(other.id, "m_1", amount_minor=1, request_id="o0")
    paid = (await container.payments.create(core_request("r-limit"), deadline_s=None)).payment
    for n in range(2):
        await container.payments.refund(paid.id, "m_1", amount_minor=1, request_id=f"x{n}")

    with pytest.raises(TooManyRefunds):
        await container.payments.refund(paid.id, "m_1", amount_minor=1, request_id="x2")
    again = await container.payments.refund(paid.id, "m_1", amount_minor=1, request_id="x1")

    assert again.steps[0].refunded_minor == 2
    stored = await container.payments.get(paid.id, "m_1")
    assert stored.steps[0].refunded_minor == 2


async def test_a_refund_key_that_named_an_amount_is_refused_asking_for_everything(container):
    sim = container.simulated["simulated"]
    created = (await container.payments.create(core_request(), deadline_s=None)).payment
    await container.payments.refund(created.id, "m_1", amount_minor=500, request_id="x")

    for other in (0, 600):  # everything left (1499 more), or another amount
        with pytest.raises(IdempotencyConflict, match="'x' was already used with a different"):
            await container.payments.refund(created.id, "m_1", amount_minor=other, request_id="x")
    again = await container.payments.refund(created.id, "m_1", amount_minor=500, request_id="x")

    assert (again.steps[0].refunded_minor, again.refundable_minor) == (500, 1499)
    assert sum(i.amount_refunded for i in sim.ledger.intents.values()) == 500


async def test_a_refund_of_everything_is_retried_asking_for_everything_or_the_amount_it_made(
    container,
):
    created = (await container.payments.create(core_request(), deadline_s=None)).payment
    first = await container.payments.refund(created.id, "m_1", amount_minor=0, request_id="x")
    assert first.status is PaymentStatus.REFUNDED

    for same in (0, 1999):
        again = await container.payments.refund(
            created.id, "m_1", amount_minor=same, request_id="x"
        )
        assert (again.status, again.steps[0].refunded_minor) == (PaymentStatus.REFUNDED, 1999)
    with pytest.raises(IdempotencyConflict, match="different amount"):
        await container.payments.refund(created.id, "m_1", amount_minor=1000, request_id="x")


async def test_a_refund_stored_before_its_ask_was_kept_is_replayed_as_before(container):
    created = (await container.payments.create(core_request(), deadline_s=None)).payment
    await container.payments.refund(created.id, "m_1", amount_minor=500, request_id="x")
    async with container.engine.begin() as conn:  # as 0010 leaves a refund stored before it
        await conn.execute(update(refunds).values(asked_minor=None))

    again = await container.payments.refund(created.id, "m_1", amount_minor=0, request_id="x")

    assert (again.steps[0].refunded_minor, again.refundable_minor) == (500, 1499)
    with pytest.raises(IdempotencyConflict, match="different amount"):
        await container.payments.refund(created.id, "m_1", amount_minor=600, request_id="x")
