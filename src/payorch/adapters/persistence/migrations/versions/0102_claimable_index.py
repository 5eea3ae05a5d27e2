"""installments: the scheduler claims from a partial index of claimable installments

The claim used to sort every due installment on each call (the old index on
(status, next_attempt_at) cannot give one order across two statuses), so each claim
cost more as the backlog grew. The partial index is read in order and left at the
batch size.

Revision ID: 0102
Revises: 0101
"""

import sqlalchemy as sa
from alembic import op

revision = "0102"
down_revision = "0101"
branch_labels = None
depends_on = None

CLAIMABLE = "status IN ('pending', 'failed')"


def upgrade() -> None:
    op.drop_index(op.f("ix_installments_status_next_attempt_at"), table_name="installments")
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
        op.f("ix_installments_status_next_attempt_at"),
        "installments",
        ["status", "next_attempt_at"],
    )
