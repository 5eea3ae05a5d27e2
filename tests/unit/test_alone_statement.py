"""A PostgreSQL write sent alone as one statement (payment_writes.AloneStatements): the
SQL is built from the compiled statements, so its placeholders must line up with the
arguments the write carries, child by child."""

from __future__ import annotations

import re

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from payorch.adapters.persistence.payment_writes import (
    AloneStatements,
    PaymentStatements,
    Write,
    insert_write,
    update_write,
)
from payorch.app.ports import ChargeClaim
from tests.integration.test_payment_writes import new_payment, settle

STATEMENTS = PaymentStatements.for_dialect(asyncpg_dialect())


def _placeholders(sql: str) -> list[int]:
    return [int(n) for n in re.findall(r"\$(\d+)", sql)]


def _lined_up(sql: str, args: list[object]) -> None:
    # Every argument has its placeholder, once, and there is none beyond them.
    assert sorted(_placeholders(sql)) == list(range(1, len(args) + 1))


def test_a_new_payment_is_its_gate_and_its_steps_from_one_cte() -> None:
    write = insert_write(STATEMENTS, new_payment(1, steps=2))
    sql, *args = AloneStatements(STATEMENTS).statement(write)
    _lined_up(sql, args)
    assert sql.startswith("WITH g AS (INSERT INTO payments ")
    assert "ON CONFLICT (merchant_id, request_id) DO NOTHING RETURNING id)" in sql
    assert sql.count("INSERT INTO payment_steps ") == 2
    assert sql.endswith(" SELECT id FROM g")
    # Every child row is inserted from the guard's result, so none lands without it.
    assert sql.count(" FROM g") == 1 + len(write.rows)


def test_a_settled_payment_puts_each_child_row_under_its_own_columns() -> None:
    payment = new_payment(1)
    settle(payment)  # an attempt, two events, a fallback step
    write = update_write(STATEMENTS, payment)
    sql, *args = AloneStatements(STATEMENTS).statement(write)
    _lined_up(sql, args)
    assert sql.startswith("WITH g AS (UPDATE payments SET ")
    assert "RETURNING attempts.id" not in sql  # nothing reads a child's ids
    # Each child CTE names as many columns as it selects placeholders, and its first
    # placeholder follows the last of the one before it.
    expected = len(write.guard[1]) + 1
    for columns, values in re.findall(r"INSERT INTO \w+ \(([^)]*)\) SELECT (.*?) FROM g", sql):
        numbers = _placeholders(values)
        assert len(columns.split(", ")) == len(numbers)
        assert numbers == list(range(expected, expected + len(numbers)))
        expected += len(numbers)
    assert expected == len(args) + 1
    # The upserted steps keep their ON CONFLICT clause after the FROM.
    assert sql.count("FROM g ON CONFLICT (payment_id, idx) DO UPDATE SET") == 2


def test_writes_of_one_shape_share_one_statement_and_other_shapes_get_their_own() -> None:
    alone = AloneStatements(STATEMENTS)
    one = alone.statement(insert_write(STATEMENTS, new_payment(1)))[0]
    again = alone.statement(insert_write(STATEMENTS, new_payment(2)))[0]
    split = alone.statement(insert_write(STATEMENTS, new_payment(3, steps=2)))[0]
    assert one is again
    assert split != one


def _claimed(n: int, plan: str) -> Write:
    return insert_write(STATEMENTS, new_payment(n), ChargeClaim(plan, f"ins_{n}", 1, None))


def test_a_batch_is_one_group_per_shape_in_first_seen_order() -> None:
    alone = AloneStatements(STATEMENTS)
    saved = new_payment(2)
    settle(saved)
    batch = [
        insert_write(STATEMENTS, new_payment(1)),
        update_write(STATEMENTS, saved),
        insert_write(STATEMENTS, new_payment(3)),
        insert_write(STATEMENTS, new_payment(4, steps=2)),
    ]
    groups = alone.grouped(batch)
    assert [[w.payment_id for w in writes] for _, writes, _ in groups] == [
        ["pay_w00001", "pay_w00003"],
        ["pay_w00002"],
        ["pay_w00004"],
    ]
    for sql, writes, rows in groups:
        # Each row is the write's arguments as it would go alone, under its shape's SQL.
        assert [[sql, *args] for args in rows] == [alone.statement(w) for w in writes]


def test_claimed_charges_lock_their_plans_in_id_order_across_groups() -> None:
    alone = AloneStatements(STATEMENTS)
    two_steps = insert_write(
        STATEMENTS, new_payment(5, steps=2), ChargeClaim("plan_b", "ins_5", 1, None)
    )
    batch = [_claimed(1, "plan_c"), two_steps, _claimed(3, "plan_a"), _claimed(4, "plan_d")]
    batch.insert(2, insert_write(STATEMENTS, new_payment(9)))
    groups = alone.grouped(batch)
    locked = [w.locks for _, writes, _ in groups for w in writes if w.locks]
    assert locked == ["plan_a", "plan_b", "plan_c", "plan_d"]
    # plan_b's charge has another shape: plan_c's and plan_d's cannot share plan_a's
    # group without locking plan_c before plan_b.
    assert [len(writes) for _, writes, _ in groups] == [1, 1, 1, 2]
    assert groups[0][1][0].payment_id == "pay_w00009"  # no lock: first
