"""installments: the claim's index leaves out installments of plans that charge nothing

A plan in breach keeps its later installments pending (and a failed one failed), due
long ago: they stayed in the partial index of claimable installments, oldest first,
and every claim walked past all of them before reaching an active plan's (about 3 s a
claim on PostgreSQL with 400,000 of them). Each installment now carries its plan's
status (`plan_status`, written with the plan's), and the index keeps the active
plans' only.

Revision ID: 0105
Revises: 0104
"""

import sqlalchemy as sa
from alembic import op

revision = "0105"
down_revision = "0104"
branch_labels = None
depends_on = None

BEFORE = "status IN ('pending', 'failed')"
CLAIMABLE = "status IN ('pending', 'failed') AND plan_status = 'active'"


def upgrade() -> None:
    with op.batch_alter_table("installments") as batch:
        batch.add_column(
            sa.Column("plan_status", sa.String(length=16), nullable=False, server_default="active")
        )
    op.execute(
        "UPDATE installments SET plan_status = (SELECT installment_plans.status "
        "FROM installment_plans WHERE installment_plans.id = installments.plan_id) "
        "WHERE plan_id IN (SELECT id FROM installment_plans WHERE status <> 'active')"
    )
    op.drop_index("ix_installments_claimable", table_name="installments")
    op.create_index(
        "ix_installments_claimable",
        "installments",
        ["next_attempt_at"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )


def downgrade() -> None:
    op.drop_index("ix_installments_claimable", table_name="installments")
    op.create_index(
        "ix_installments_claimable",
        "installments",
        ["next_attempt_at"],
        postgresql_where=sa.text(BEFORE),
        sqlite_where=sa.text(BEFORE),
    )
    with op.batch_alter_table("installments") as batch:
        batch.drop_column("plan_status")
