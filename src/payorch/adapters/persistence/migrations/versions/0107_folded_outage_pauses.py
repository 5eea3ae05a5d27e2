"""installments: an outage's pauses are one stored charge

Every scheduled charge no processor could take (every breaker open) was a row of
installment_charges, up to one an hour until the first dunning step, and every claim
of the plan loaded them all: a long outage made each claim load thousands. A run of
them is one row now, its last attempt and time, with how many (`times`) and when the
first was (`first_at`); runs stored before are folded here the same way.

Revision ID: 0107
Revises: 0106
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0107"
down_revision = "0106"
branch_labels = None
depends_on = None

_PAUSE = ("scheduled", "failed", "no_processor_available")


def upgrade() -> None:
    with op.batch_alter_table("installment_charges") as batch:
        batch.add_column(sa.Column("times", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("first_at", sa.DateTime(timezone=True), nullable=True))
    _fold_stored_runs()


def _fold_stored_runs() -> None:
    """Fold each run of consecutive pauses already stored into its last row."""
    conn = op.get_bind()
    charges = sa.table(
        "installment_charges",
        sa.column("installment_id", sa.String),
        sa.column("attempt", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("outcome", sa.String),
        sa.column("error_code", sa.String),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("times", sa.Integer),
        sa.column("first_at", sa.DateTime(timezone=True)),
    )
    with_pauses = (
        sa.select(charges.c.installment_id)
        .where(charges.c.error_code == _PAUSE[2], charges.c.kind == _PAUSE[0])
        .group_by(charges.c.installment_id)
        .having(sa.func.count() > 1)
    )
    rows = conn.execute(
        sa.select(
            charges.c.installment_id,
            charges.c.attempt,
            charges.c.kind,
            charges.c.outcome,
            charges.c.error_code,
            charges.c.at,
        )
        .where(charges.c.installment_id.in_(with_pauses))
        .order_by(charges.c.installment_id, charges.c.attempt)
    ).all()
    runs: list[list[Any]] = []
    for r in rows:
        pause = (r.kind, r.outcome, r.error_code) == _PAUSE
        last = runs[-1] if runs else None
        if pause and last and last[-1].installment_id == r.installment_id:
            last.append(r)
        elif pause:
            runs.append([r])
        else:
            runs.append([])  # a charge that is not a pause ends the run before it
    for run in runs:
        if len(run) < 2:
            continue
        key = charges.c.installment_id == run[0].installment_id
        first = charges.alias("first")
        # Copied in SQL, the time as stored (SQLite keeps it as text).
        first_at = (
            sa.select(first.c.at)
            .where(
                first.c.installment_id == run[0].installment_id,
                first.c.attempt == run[0].attempt,
            )
            .scalar_subquery()
        )
        conn.execute(
            charges.update()
            .where(key, charges.c.attempt == run[-1].attempt)
            .values(times=len(run), first_at=first_at)
        )
        conn.execute(
            charges.delete().where(key, charges.c.attempt.in_([r.attempt for r in run[:-1]]))
        )


def downgrade() -> None:
    # The pauses folded into a run are not restored: the run's last row stays.
    with op.batch_alter_table("installment_charges") as batch:
        batch.drop_column("first_at")
        batch.drop_column("times")
