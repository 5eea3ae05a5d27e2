"""reconciliation schedule: lookups of unknown outcomes back off

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(
            sa.Column("reconcile_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("next_reconcile_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_payments_status_next_reconcile_at", ["status", "next_reconcile_at"])


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_index("ix_payments_status_next_reconcile_at")
        batch.drop_column("next_reconcile_at")
        batch.drop_column("reconcile_attempts")
