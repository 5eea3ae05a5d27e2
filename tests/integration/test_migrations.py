"""The migrations build exactly the schema the code describes, on both databases."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, update

from payorch.adapters.clock import ManualClock
from payorch.adapters.persistence import engine as engine_module
from payorch.adapters.persistence.engine import (
    alembic_config,
    create_engine,
    migrate,
    migration_heads,
)
from payorch.adapters.persistence.tables import metadata, payment_steps, processor_customers
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.app.payments import CustomerNotOwned
from payorch.domain.payment import PaymentStatus, StepStatus
from tests.conftest import cipher_for_tests
from tests.integration.installment_helpers import installments_container
from tests.integration.test_payment_stats import payment as stats_payment
from tests.integration.test_processor_customers import pay, plan


async def test_migrations_match_the_table_definitions(database_url):
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        await migrate(engine)  # applying twice is harmless
        async with engine.connect() as conn:

            def diff(sync_conn):
                return compare_metadata(MigrationContext.configure(sync_conn), metadata)

            changes = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert changes == []


async def test_the_stats_indexes_cover_their_reads_on_postgresql(database_url):
    """GetPaymentStats by processor is answered from two attempts indexes alone on
    PostgreSQL (INCLUDE columns); SQLite keeps the same indexes without them."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                rows = await conn.exec_driver_sql(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'attempts'"
                )
            else:
                rows = await conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'attempts' "
                    "AND type = 'index' AND sql IS NOT NULL"
                )
            definitions = {name: sql for name, sql in rows}
            postgres = conn.dialect.name == "postgresql"
    finally:
        await engine.dispose()
    by_processor = definitions["ix_attempts_processor_started_at"]
    failures = definitions["ix_attempts_error_code_started_at_outcome_payment_id"]
    assert "(processor, started_at)" in by_processor
    assert "(error_code, started_at, outcome, payment_id)" in failures
    if postgres:
        assert by_processor.endswith("INCLUDE (payment_id, outcome, error_code, delay_before_ms)")
        assert failures.endswith("INCLUDE (merchant_id, processor, operation)")
    else:
        assert "INCLUDE" not in by_processor + failures


def test_the_heads_read_from_the_migration_headers_are_alembics():
    heads = migration_heads()
    assert heads is not None
    assert heads == set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def test_a_migration_header_in_another_form_leaves_the_heads_to_alembic(tmp_path, monkeypatch):
    versions = tmp_path / "versions"
    versions.mkdir()
    for path in (engine_module.MIGRATIONS / "versions").glob("[0-9]*.py"):
        (versions / path.name).write_text(path.read_text())
    monkeypatch.setattr(engine_module, "MIGRATIONS", tmp_path)
    assert migration_heads() == {"0013", "0112"}
    (versions / "9999_merge.py").write_text(
        'revision = "9999"\ndown_revision = ("0013", "0112")\n'
        "branch_labels = None\ndepends_on = None\n"
    )
    assert migration_heads() is None


_STARTS = """
import asyncio, sys
from payorch.adapters.persistence.engine import create_engine, migrate

async def main():
    engine = create_engine(sys.argv[1])
    await migrate(engine)
    await engine.dispose()

asyncio.run(main())
print("alembic" in sys.modules)
"""


def _start(url: str) -> bool:
    """Whether a start that migrates `url` loaded Alembic."""
    done = subprocess.run(
        [sys.executable, "-c", _STARTS, url], capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "True"


async def test_a_database_at_every_head_starts_without_alembic_and_one_behind_is_upgraded(
    database_url,
):
    _start(database_url)  # builds the database if it is new
    assert not _start(database_url)  # at every head: nothing to do, Alembic not loaded

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, "0202")
            assert not await conn.run_sync(_has_owed)
    finally:
        await engine.dispose()
    assert _start(database_url)  # one migration behind: Alembic applies it
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_has_owed)
    finally:
        await engine.dispose()


async def test_a_database_a_newer_version_migrated_is_refused_in_one_line(new_database_url):
    database_url = new_database_url
    """Code rolled back after a newer version migrated the database: refused (its
    schema may not be this version's), in one line naming the migration, exit code
    2. Before: Alembic's "Can't locate revision identified by '0013'" traceback."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                # A number no version has yet (one past the head would be the next one's).
                "UPDATE alembic_version SET version_num = '0999' WHERE version_num = '0013'"
            )
    finally:
        await engine.dispose()
    for cmd in ("migrate", "serve", "scheduler"):
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "payorch.entrypoints.cli", cmd),
            *("--database-url", database_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert (process.returncode, stderr.decode().splitlines()) == (
            2,
            [
                "payorch: the database is at migration 0999, which this version of payorch"
                " does not have: a newer version migrated it. Run that version (or a later"
                " one); payorch migrates forward only"
            ],
        ), cmd


def _downgrade(connection, revision: str) -> None:
    """For `run_sync`: Alembic's downgrade to `revision` on that connection."""
    cfg = alembic_config(connection.engine.url)
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


def _has_owed(connection) -> bool:
    return "owed" in {c["name"] for c in inspect(connection).get_columns("payments")}


async def test_processes_starting_on_a_new_database_at_once_all_start(new_database_url):
    """Replicas, or serve beside the scheduler, starting on a database no one has
    migrated yet: one migrates, the others wait for it and find every head applied.
    Before, a second upgrade ran beside the first and failed on its tables."""
    starts = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _STARTS,
            new_database_url,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    ended = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in starts)), 120)

    errors = [err.decode()[-300:] for _, err in ended]
    assert [p.returncode for p in starts] == [0, 0, 0, 0], errors
    engine = create_engine(new_database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(engine_module._at_heads)
    finally:
        await engine.dispose()


async def test_processor_customers_are_backfilled_to_the_merchant_that_used_them_first(
    database_url, caplog
):
    """Migration 0008 binds each customer of a stored payment or plan to its first user;
    a customer two merchants used already goes to the first and is logged for operators.
    Made with the service (at 0008), taken back to 0007 and shared there, as before."""
    clock = ManualClock()
    container = await installments_container(database_url, clock)
    try:
        await pay(container, "m_1", "r-1", "cus_X")  # first use of cus_X: m_1
        clock.advance(3600)
        later = await pay(container, "m_2", "r-2", "cus_Y")  # made cus_X below
        clock.advance(3600)
        await plan(container, "m_2", "plan-1", "cus_Z")  # first use of cus_Z: m_2's plan
        clock.advance(3600)
        latest = await pay(container, "m_1", "r-3", "cus_W")  # made cus_Z below
        async with container.engine.begin() as conn:
            await conn.run_sync(_downgrade, "0007")
            for payment, customer in ((later, "cus_X"), (latest, "cus_Z")):
                await conn.execute(
                    update(payment_steps)
                    .where(payment_steps.c.payment_id == payment.payment.id)
                    .values(customer_id=customer)
                )
        with caplog.at_level("WARNING", logger="payorch.migrations"):
            await migrate(container.engine)
        async with container.engine.connect() as conn:
            rows = (await conn.execute(select(processor_customers))).all()
        assert sorted((r.customer_id, r.merchant_id) for r in rows) == [
            ("cus_X", "m_1"),
            ("cus_Z", "m_2"),
        ]
        first = {r.customer_id: r.first_used_at for r in rows}
        assert first["cus_X"] < first["cus_Z"]
        warned = [r.getMessage() for r in caplog.records if r.name == "payorch.migrations"]
        assert len(warned) == 2
        assert "cus_X" in warned[0] and "besides m_1" in warned[0]
        assert "cus_Z" in warned[1] and "besides m_2" in warned[1]
        with pytest.raises(CustomerNotOwned):
            await pay(container, "m_2", "r-4", "cus_X")
        assert (await pay(container, "m_2", "r-5", "cus_Z")).payment.status.value == "succeeded"
    finally:
        await container.close()


async def test_payments_left_processing_with_0_ms_are_marked_not_measured(database_url):
    """Migration 0011: a PROCESSING payment stored with 0 ms has no measured time (the
    reconciler would settle it with 0 ms); a settled one with 0 ms is left as it was."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        uow = SqlAlchemyUnitOfWorkFactory(engine)
        async with uow() as u:
            for n, status in enumerate((PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED)):
                await u.payments.add(stats_payment(n, "m_1", "sim_a", [], status, 0))
            await u.commit()
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, "0204")
        await migrate(engine)
        async with uow() as u:
            processing = await u.payments.get("pay_0000", None)
            settled = await u.payments.get("pay_0001", None)
    finally:
        await engine.dispose()
    assert processing is not None and processing.orchestration_ms is None
    assert settled is not None and settled.orchestration_ms == 0


async def test_client_secrets_of_steps_no_longer_waiting_for_the_customer_are_cleared(
    database_url,
):
    """Migration 0013: a step stored with a client secret that left REQUIRES_ACTION
    before the code cleared it (charged, failed, voided, unknown) keeps none; a step
    still waiting for the customer keeps its own, for GetPayment to hand out."""
    statuses = [
        (StepStatus.REQUIRES_ACTION, PaymentStatus.REQUIRES_ACTION),
        (StepStatus.CAPTURED, PaymentStatus.SUCCEEDED),
        (StepStatus.AUTHORIZED, PaymentStatus.AUTHORIZED),
        (StepStatus.FAILED, PaymentStatus.FAILED),
        (StepStatus.VOIDED, PaymentStatus.CANCELLED),
        (StepStatus.UNKNOWN, PaymentStatus.UNKNOWN),
    ]
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        uow = SqlAlchemyUnitOfWorkFactory(engine)
        async with uow() as u:
            for n, (step_status, status) in enumerate(statuses):
                stored = stats_payment(n, "m_1", "stripe", [], status, 10)
                [step] = stored.steps
                step.status, step.next_action_type = step_status, "use_stripe_sdk"
                step.client_secret = f"pi_{n}_secret_abc"
                await u.payments.add(stored)
            await u.commit()
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, "0012")
        await migrate(engine)
        async with uow() as u:
            read = [(await u.payments.get(f"pay_{n:04d}", None)) for n in range(len(statuses))]
    finally:
        await engine.dispose()
    assert [
        (p.steps[0].status, p.steps[0].client_secret, p.steps[0].next_action_type)
        for p in read
        if p is not None
    ] == [
        (StepStatus.REQUIRES_ACTION, "pi_0_secret_abc", "use_stripe_sdk"),
        *[(step_status, "", "use_stripe_sdk") for step_status, _ in statuses[1:]],
    ]


async def test_an_outage_s_pauses_stored_one_row_each_are_folded_into_one(database_url):
    """Migration 0107: each run of consecutive scheduled charges no processor could take
    becomes its last row, with how many and when the first was; other rows stay."""
    from datetime import timedelta

    from payorch.adapters.persistence.installment_uow import (
        SqlAlchemyInstallmentUnitOfWorkFactory,
    )
    from payorch.adapters.persistence.tables import installment_charges
    from tests.unit.test_installment_plan import D, new_plan

    engine = create_engine(database_url)
    try:
        await migrate(engine)
        uow = SqlAlchemyInstallmentUnitOfWorkFactory(
            SqlAlchemyUnitOfWorkFactory(engine), cipher_for_tests()
        )
        plan = new_plan()
        async with uow() as u:
            await u.plans.add(plan)
            await u.commit()
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, "0105")
        second, third = plan.installments[1].id, plan.installments[2].id
        pause = ("no_processor_available", "no processor can take the step")
        decline = ("insufficient_funds", "declined")
        stored = [(second, n, *pause) for n in (1, 2, 3)] + [(second, 4, *decline)]
        stored += [(second, n, *pause) for n in (5, 6)] + [(third, 1, *pause)]
        async with engine.begin() as conn:
            await conn.execute(
                installment_charges.insert(),
                [
                    {
                        "installment_id": inst,
                        "attempt": n,
                        "kind": "scheduled",
                        "payment_id": f"pay_{inst[-1]}_{n}",
                        "outcome": "failed",
                        "error_code": code,
                        "message": message,
                        "at": D + timedelta(minutes=n),
                    }
                    for inst, n, code, message in stored
                ],
            )
        await migrate(engine)
        async with uow() as u:
            got = await u.plans.get(plan.id, None)
    finally:
        await engine.dispose()
    assert got is not None
    assert [
        (c.attempt, c.error_code, c.times, c.first_at, c.at) for c in got.installments[1].charges
    ] == [
        (3, pause[0], 3, D + timedelta(minutes=1), D + timedelta(minutes=3)),
        (4, decline[0], 1, None, D + timedelta(minutes=4)),
        (6, pause[0], 2, D + timedelta(minutes=5), D + timedelta(minutes=6)),
    ]
    assert [(c.attempt, c.times, c.first_at) for c in got.installments[2].charges] == [(1, 1, None)]
    assert [(c.attempt, c.times) for c in got.installments[0].charges] == [(1, 1)]
