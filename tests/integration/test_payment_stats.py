"""GetPaymentStats' figures on a history with known answers, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence.engine import create_engine, migrate
from payorch.adapters.persistence.payment_stats import SqlAlchemyPaymentStatsReader
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.app.analytics import InvalidStatsQuery, PaymentAnalytics, nearest_rank
from payorch.app.auth import PermissionDenied, Principal, Scope
from payorch.domain.money import Currency
from payorch.domain.payment import (
    Attempt,
    CaptureMode,
    MethodType,
    Payment,
    PaymentStatus,
    RawError,
    Step,
    StepStatus,
)
from payorch.domain.results import ErrorCode, Outcome, ProcessorResponse, ResponseKind
from tests.integration.helpers import core_request, make_container

DAY = datetime(2026, 1, 1, tzinfo=UTC)
OPS = Principal(Scope.OPS, None, "ops")


def merchant(m: str) -> Principal:
    return Principal(Scope.MERCHANT, m, f"key_{m}")


@dataclass(frozen=True)
class A:
    """One attempt: outcome, error code, delay before it, and what it was for."""

    outcome: Outcome
    code: ErrorCode = ErrorCode.NONE
    delay_ms: int = 0
    operation: str = "authorize"


OK = A(Outcome.SUCCESS)


def payment(
    n: int,
    merchant_id: str,
    processor: str,
    attempts: list[A],
    status: PaymentStatus,
    ms: int,
    at: datetime | None = None,
) -> Payment:
    at = at or DAY + timedelta(minutes=n)
    step = Step(0, MethodType.CARD, "pm_card_visa", 1000, [processor], status=StepStatus.PENDING)
    step.attempts = [
        Attempt(
            number=i + 1,
            processor=processor,
            idempotency_key=f"k{n}",
            started_at=at,
            ended_at=at,
            latency_ms=10,
            outcome=a.outcome,
            error_code=a.code,
            raw=RawError(),
            delay_before_ms=a.delay_ms,
            operation=a.operation,
        )
        for i, a in enumerate(attempts)
    ]
    return Payment(
        id=f"pay_{n:04d}",
        merchant_id=merchant_id,
        request_id=f"r{n}",
        fingerprint="f" * 64,
        currency=Currency.parse("USD"),
        amount_minor=1000,
        steps=[step],
        created_at=at,
        updated_at=at,
        capture_mode=CaptureMode.AUTOMATIC,
        status=status,
        orchestration_ms=ms,
    )


def history() -> list[Payment]:
    """25 payments (and their attempts) in the window, one outside it. Expected figures
    are worked out by hand in the tests below (docs/observability.md has the definitions)."""
    soft_500 = A(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR)
    timeout = A(Outcome.UNKNOWN, ErrorCode.TIMEOUT)
    rate = A(Outcome.SOFT, ErrorCode.RATE_LIMITED)
    declined = A(Outcome.HARD, ErrorCode.CARD_DECLINED)
    network = A(Outcome.SOFT, ErrorCode.NETWORK_ERROR)
    auth = A(Outcome.REQUIRES_ACTION, ErrorCode.AUTHENTICATION_REQUIRED)
    ok, failed = PaymentStatus.SUCCEEDED, PaymentStatus.FAILED
    out: list[Payment] = []

    def add(m, proc, attempts, status, ms):
        out.append(payment(len(out), m, proc, attempts, status, ms))

    for i in range(10):  # clean successes, 10..100 ms
        add("m_1", "sim_a", [OK], ok, 10 * (i + 1))
    for _ in range(4):  # a 500, then success after 400 ms: recovered
        add("m_1", "sim_a", [soft_500, A(Outcome.SUCCESS, delay_ms=400)], ok, 500)
    for _ in range(2):  # a lost answer, then success after 200 ms: recovered
        add("m_1", "sim_a", [timeout, A(Outcome.SUCCESS, delay_ms=200)], ok, 300)
    for _ in range(2):  # 429 twice: not recovered
        add("m_1", "sim_a", [rate, A(Outcome.SOFT, ErrorCode.RATE_LIMITED, 1000)], failed, 1200)
    for _ in range(2):  # a decline is no infrastructure failure
        add("m_1", "sim_a", [declined], failed, 50)
    for _ in range(3):
        add("m_2", "sim_b", [OK], ok, 80)
    add("m_2", "sim_b", [network, A(Outcome.SUCCESS, delay_ms=600)], ok, 700)
    add("m_2", "sim_b", [auth], PaymentStatus.REQUIRES_ACTION, 90)
    late = payment(99, "m_1", "sim_a", [soft_500], failed, 9999, at=DAY + timedelta(days=2))
    return [*out, late]


@pytest.fixture
async def analytics(database_url):
    engine = create_engine(database_url)
    await migrate(engine)
    uow = SqlAlchemyUnitOfWorkFactory(engine)
    async with uow() as u:
        for p in history():
            await u.payments.add(p)
        await u.commit()
    try:
        yield PaymentAnalytics(SqlAlchemyPaymentStatsReader(engine), ManualClock(DAY))
    finally:
        await engine.dispose()


WINDOW = {"since": DAY, "until": DAY + timedelta(days=1)}


async def test_stats_over_every_merchant_match_the_known_history(analytics):
    s = await analytics.stats(OPS, **WINDOW)

    assert (s.payments, s.succeeded) == (25, 20)
    assert s.success_rate == pytest.approx(0.8)
    assert s.by_status == {
        PaymentStatus.SUCCEEDED: 20,
        PaymentStatus.FAILED: 4,
        PaymentStatus.REQUIRES_ACTION: 1,
    }
    # Infrastructure failures: 4 (500) + 2 (timeout) + 2 (429) + 1 (network); recovered 7.
    assert (s.hit_infrastructure_failure, s.recovered) == (9, 7)
    assert s.recovery_share == pytest.approx(7 / 9)
    assert s.attempts == 34
    # Delays: 4 x 400 + 2 x 200 + 2 x 1000 + 600 over 9 attempts.
    assert (s.retried_attempts, s.retry_delay_ms_total) == (9, 4600)
    assert s.average_retry_delay_ms == pytest.approx(4600 / 9)
    assert s.failures_by_outcome == {Outcome.SOFT: 9, Outcome.UNKNOWN: 2, Outcome.HARD: 2}
    assert s.failures_by_error_code == {
        ErrorCode.PROCESSOR_ERROR: 4,
        ErrorCode.RATE_LIMITED: 4,
        ErrorCode.NETWORK_ERROR: 1,
        ErrorCode.TIMEOUT: 2,
        ErrorCode.CARD_DECLINED: 2,
    }
    # Sorted times: 10 20 30 40 50 50 50 60 70 80 80 80 [80] ... 700 1200 1200 (25 values).
    assert s.orchestration_ms == {50: 80, 95: 1200, 99: 1200}


async def test_a_merchant_key_sees_its_own_stats_only(analytics):
    own = await analytics.stats(merchant("m_2"), **WINDOW)
    assert own.query.merchant_id == "m_2"
    assert (own.payments, own.succeeded, own.hit_infrastructure_failure, own.recovered) == (
        5,
        4,
        1,
        1,
    )
    named = await analytics.stats(merchant("m_2"), merchant_id="m_2", **WINDOW)
    assert named.payments == 5
    with pytest.raises(PermissionDenied):
        await analytics.stats(merchant("m_2"), merchant_id="m_1", **WINDOW)


async def test_ops_may_ask_for_one_merchant(analytics):
    s = await analytics.stats(OPS, merchant_id="m_1", **WINDOW)
    assert (s.payments, s.succeeded) == (20, 16)
    assert (s.hit_infrastructure_failure, s.recovered) == (8, 6)
    assert s.recovery_share == pytest.approx(0.75)
    assert s.failures_by_outcome == {Outcome.SOFT: 8, Outcome.UNKNOWN: 2, Outcome.HARD: 2}


async def test_a_processor_filter_keeps_its_payments_and_its_attempts(analytics):
    s = await analytics.stats(OPS, processor="sim_b", **WINDOW)
    assert (s.payments, s.attempts) == (5, 6)
    assert (s.hit_infrastructure_failure, s.recovered) == (1, 1)
    assert s.failures_by_error_code == {ErrorCode.NETWORK_ERROR: 1}
    assert s.orchestration_ms == {50: 80, 95: 700, 99: 700}


async def test_an_empty_window_has_zeros_not_errors(analytics):
    s = await analytics.stats(OPS, since=DAY - timedelta(days=9), until=DAY - timedelta(days=8))
    assert (s.payments, s.success_rate, s.recovery_share, s.average_retry_delay_ms) == (0, 0, 0, 0)
    assert s.orchestration_ms == {}


@pytest.fixture
async def store(database_url):
    """Stores the payments given, and answers with the analytics over them."""
    engines = []

    async def stored(made: list[Payment]) -> PaymentAnalytics:
        engine = create_engine(database_url)
        engines.append(engine)
        await migrate(engine)
        async with SqlAlchemyUnitOfWorkFactory(engine)() as u:
            for p in made:
                await u.payments.add(p)
            await u.commit()
        return PaymentAnalytics(SqlAlchemyPaymentStatsReader(engine), ManualClock(DAY))

    yield stored
    for engine in engines:
        await engine.dispose()


async def test_a_partially_succeeded_split_took_money_as_its_refunded_self_does(store):
    # allow_partial: one step captured, the other declined. Refunding part of it later
    # makes it PARTIALLY_REFUNDED; it took the money before the refund as well.
    partial, refunded = PaymentStatus.PARTIALLY_SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED
    declined = A(Outcome.HARD, ErrorCode.CARD_DECLINED)
    analytics = await store(
        [
            payment(1, "m_1", "sim_a", [OK], partial, 100),
            payment(2, "m_1", "sim_a", [OK], refunded, 100),
            payment(3, "m_1", "sim_a", [declined], PaymentStatus.FAILED, 100),
        ],
    )
    s = await analytics.stats(OPS, **WINDOW)
    assert (s.payments, s.succeeded) == (3, 2)


async def test_a_refund_or_a_void_that_failed_is_no_failure_to_take_the_money(store):
    """The recovery share is about taking the money: a refund or a cancel's void that
    hit a 500 and went through on a retry did not recover, nor fail, the payment."""
    soft = A(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR)
    refund_500 = A(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR, operation="refund")
    refund = A(Outcome.SUCCESS, operation="refund")
    void_failed = A(Outcome.SOFT, ErrorCode.NETWORK_ERROR, operation="void")
    void = A(Outcome.SUCCESS, operation="void")
    capture_500 = A(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR, operation="capture")
    analytics = await store(
        [
            # Charged at once; its refund hit a 500, then went through.
            payment(
                1,
                "m_1",
                "sim_a",
                [OK, refund_500, refund],
                PaymentStatus.REFUNDED,
                100,
            ),
            # Authorized at once; the cancel's void hit a 500, then went through.
            payment(
                2,
                "m_1",
                "sim_a",
                [OK, void_failed, void],
                PaymentStatus.CANCELLED,
                100,
            ),
            # Taking the money: a 500 on authorize, and on a capture, then both went through.
            payment(3, "m_1", "sim_a", [soft, OK], PaymentStatus.SUCCEEDED, 100),
            payment(
                4,
                "m_1",
                "sim_a",
                [OK, capture_500, A(Outcome.SUCCESS, operation="capture")],
                PaymentStatus.SUCCEEDED,
                100,
            ),
        ],
    )
    s = await analytics.stats(OPS, **WINDOW)
    assert (s.hit_infrastructure_failure, s.recovered) == (2, 2)
    # Still failed attempts in the failure mix: the definitions there are unchanged.
    assert s.failures_by_error_code == {ErrorCode.PROCESSOR_ERROR: 3, ErrorCode.NETWORK_ERROR: 1}
    on_processor = await analytics.stats(OPS, processor="sim_a", merchant_id="m_1", **WINDOW)
    assert (on_processor.hit_infrastructure_failure, on_processor.recovered) == (2, 2)


async def test_the_window_defaults_to_the_last_seven_days_and_must_be_ordered(analytics):
    s = await analytics.stats(OPS, until=DAY + timedelta(days=3))
    assert s.query.since == DAY - timedelta(days=4)
    assert s.payments == 26  # the late one too
    with pytest.raises(InvalidStatsQuery):
        await analytics.stats(OPS, since=DAY, until=DAY)


def test_percentiles_are_nearest_rank():
    assert [nearest_rank(p, 25) for p in (50, 95, 99)] == [13, 24, 25]
    assert [nearest_rank(p, 1) for p in (50, 95, 99)] == [1, 1, 1]
    assert nearest_rank(50, 100) == 50


async def test_stats_of_payments_made_through_the_service_with_scripted_faults(database_url, clock):
    container = await make_container(database_url, clock)
    sim = container.simulated["simulated"]
    try:
        sim.inject("rate_limit", None)  # 429, then success after a delay
        recovered = await container.payments.create(core_request("r-1"), deadline_s=None)
        await container.payments.create(core_request("r-2"), deadline_s=None)
        await container.payments.create(
            core_request("r-3", token="pm_card_chargeDeclined"), deadline_s=None
        )
        s = await container.observability.analytics.stats(
            OPS, since=clock.now() - timedelta(hours=1), until=clock.now() + timedelta(hours=1)
        )
    finally:
        await container.close()
    retry = recovered.payment.steps[0].attempts[1]
    assert (s.payments, s.succeeded, s.attempts) == (3, 2, 4)
    assert (s.hit_infrastructure_failure, s.recovered) == (1, 1)
    assert (s.retried_attempts, s.retry_delay_ms_total) == (1, retry.delay_before_ms)
    assert retry.delay_before_ms > 0
    assert s.failures_by_error_code == {ErrorCode.RATE_LIMITED: 1, ErrorCode.CARD_DECLINED: 1}
    # The manual clock moves only by the retry's sleep (ms truncated once more).
    assert s.orchestration_ms[99] == recovered.payment.orchestration_ms
    assert abs(recovered.payment.orchestration_ms - retry.delay_before_ms) <= 1


class Died(Exception):
    """The server died here."""


async def test_a_payment_the_reconciler_settled_after_a_crash_has_no_orchestration_time(
    database_url, clock
):
    container = await make_container(database_url, clock)
    sim = container.simulated["simulated"]
    uow = container.payments._uow
    try:
        sim.inject("rate_limit", None)  # a measured time above 0 on the manual clock
        measured = (await container.payments.create(core_request("r-1"), deadline_s=None)).payment

        async def die(payment):
            raise Died  # after the processor charged, before the answer was stored

        uow.update_payment = die
        with pytest.raises(Died):
            await container.payments.create(core_request("r-2"), deadline_s=None)
        del uow.update_payment
        clock.advance(600)  # the reconciler settles the payment the server left PROCESSING
        assert await container.payments.reconcile_due() == 1
        [settled] = [
            p
            for p in await container.payments.list("m_1", page_size=10, after=None)
            if p.request_id == "r-2"
        ]
        s = await container.observability.analytics.stats(
            OPS, since=clock.now() - timedelta(hours=1), until=clock.now() + timedelta(hours=1)
        )
    finally:
        await container.close()
    assert settled.status is PaymentStatus.SUCCEEDED
    # Nobody timed its orchestration: no time, rather than 0 ms.
    assert settled.orchestration_ms is None
    assert measured.orchestration_ms is not None and measured.orchestration_ms > 0
    assert (s.payments, s.succeeded) == (2, 2)
    # Only the measured payment makes the percentiles; 0 ms would have been its p50.
    ms = measured.orchestration_ms
    assert s.orchestration_ms == {50: ms, 95: ms, 99: ms}


async def test_a_lookup_that_answered_not_charged_is_no_failure_in_the_stats(database_url, clock):
    container = await make_container(database_url, clock)
    sim = container.simulated["simulated"]
    try:
        sim.inject("api_error", None)  # a 500, looked up ("not charged"), then charged
        made = await container.payments.create(core_request("r-1"), deadline_s=None)
        s = await container.observability.analytics.stats(
            OPS, since=clock.now() - timedelta(hours=1), until=clock.now() + timedelta(hours=1)
        )
    finally:
        await container.close()
    operations = [(a.operation, a.outcome) for a in made.payment.steps[0].attempts]
    assert operations == [
        ("authorize", Outcome.SOFT),
        ("lookup", Outcome.SUCCESS),
        ("authorize", Outcome.SUCCESS),
    ]
    assert s.failures_by_error_code == {ErrorCode.PROCESSOR_ERROR: 1}
    assert (s.attempts, s.hit_infrastructure_failure, s.recovered) == (3, 1, 1)


async def test_a_refund_whose_lookup_failed_in_an_outage_took_no_money_nor_recovered(
    database_url, clock
):
    """A cleanly charged payment refunded while the processor is down: the refund's
    answer is lost, and the lookup for it before sending it again gets a 500. That
    lookup was about the refund, not about taking the money."""
    container = await make_container(database_url, clock)
    sim = container.simulated["simulated"]
    try:
        made = await container.payments.create(core_request("r-1"), deadline_s=None)
        charged = made.payment
        real_refund, real_find = sim.refund, sim.find_refund

        async def lost(*args, **kwargs):
            return ProcessorResponse(ResponseKind.NO_RESPONSE)

        async def server_error(*args, **kwargs):
            return ProcessorResponse(
                ResponseKind.ERROR, http_status=500, error_type="api_error", indeterminate=True
            )

        sim.refund, sim.find_refund = lost, server_error
        await container.payments.refund(charged.id, "m_1", amount_minor=0, request_id="rf")
        await container.payments.refund(charged.id, "m_1", amount_minor=0, request_id="rf")
        sim.refund, sim.find_refund = real_refund, real_find
        refunded = await container.payments.refund(
            charged.id, "m_1", amount_minor=0, request_id="rf"
        )
        s = await container.observability.analytics.stats(
            OPS, since=clock.now() - timedelta(hours=1), until=clock.now() + timedelta(hours=1)
        )
    finally:
        await container.close()
    calls = [(a.operation, a.outcome) for a in refunded.steps[0].attempts]
    assert calls == [
        ("authorize", Outcome.SUCCESS),
        ("refund", Outcome.UNKNOWN),
        ("lookup", Outcome.SOFT),
        ("lookup", Outcome.SUCCESS),
        ("refund", Outcome.SUCCESS),
    ]
    assert refunded.status is PaymentStatus.REFUNDED
    assert (s.hit_infrastructure_failure, s.recovered) == (0, 0)
    # The failures are still failed attempts in the failure mix.
    assert s.failures_by_error_code == {ErrorCode.TIMEOUT: 1, ErrorCode.PROCESSOR_ERROR: 1}


async def test_the_lookup_after_a_cancels_failed_void_is_no_failure_to_take_the_money(store):
    """Settlement looks a step up after a void that failed: when the processor is down
    the lookup fails too. An authorization taken at once is no payment recovered by a
    retry because its cancel could not be made (it is still held, and owed a void);
    nor is a declined split's compensation."""
    void_500 = A(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR, operation="void")
    lookup_500 = A(Outcome.SOFT, ErrorCode.PROCESSOR_ERROR, operation="lookup")
    declined = A(Outcome.HARD, ErrorCode.CARD_DECLINED)
    analytics = await store(
        [
            payment(1, "m_1", "sim_a", [OK, void_500, lookup_500], PaymentStatus.AUTHORIZED, 100),
            payment(2, "m_1", "sim_a", [declined, void_500, lookup_500], PaymentStatus.FAILED, 100),
        ],
    )
    s = await analytics.stats(OPS, **WINDOW)
    assert (s.hit_infrastructure_failure, s.recovered) == (0, 0)
    on_processor = await analytics.stats(OPS, processor="sim_a", merchant_id="m_1", **WINDOW)
    assert (on_processor.hit_infrastructure_failure, on_processor.recovered) == (0, 0)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"merchant_id": "m_1"},
        {"processor": "sim_a"},
        {"merchant_id": "m_1", "processor": "sim_a"},
    ],
    ids=["all", "merchant", "processor", "merchant+processor"],
)
async def test_no_stats_statement_runs_a_subquery_per_payment_on_sqlite(tmp_path, filters):
    """The plan's shape, not its speed: a correlated subquery is one search per payment.
    The processor filter was a correlated EXISTS, which SQLite ran over all of that
    processor's attempts for every payment (27 s at 20,000 attempts)."""
    from sqlalchemy.dialects import sqlite

    from payorch.adapters.persistence.payment_stats import attempt_statement, payment_statement
    from payorch.app.analytics import StatsQuery

    engine = create_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    await migrate(engine)
    query = StatsQuery(since=DAY, until=DAY + timedelta(days=30), **filters)
    try:
        for statement in (payment_statement(query), attempt_statement(query)):
            sql = str(
                statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            )
            async with engine.connect() as conn:
                plan = [row[-1] for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
            assert plan, sql
            assert not [step for step in plan if "CORRELATED" in step], "\n".join(plan)
    finally:
        await engine.dispose()


async def test_payments_still_under_way_count_by_status_but_not_in_the_time_percentiles(
    database_url,
):
    engine = create_engine(database_url)
    await migrate(engine)
    uow = SqlAlchemyUnitOfWorkFactory(engine)
    under_way = [
        payment(200 + i, "m_1", "sim_a", [], PaymentStatus.PROCESSING, 0) for i in range(10)
    ]
    async with uow() as u:
        for p in [*history(), *under_way]:
            await u.payments.add(p)
        await u.commit()
    try:
        s = await PaymentAnalytics(SqlAlchemyPaymentStatsReader(engine), ManualClock(DAY)).stats(
            OPS, **WINDOW
        )
    finally:
        await engine.dispose()
    assert s.payments == 35 and s.by_status[PaymentStatus.PROCESSING] == 10
    # Their orchestration has no time yet (0 ms): counted, they would pull p50 to 60 ms.
    assert s.orchestration_ms == {50: 80, 95: 1200, 99: 1200}
