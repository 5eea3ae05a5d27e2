"""observability: merchant complaints by the time they were reported

A retrospective counts the complaints reported in its window (a complaint comes after
what it is about, often after that window's report was written): read by this index.

Revision ID: 0204
Revises: 0010
"""

from alembic import op

revision = "0204"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_merchant_complaints_reported_at"), "merchant_complaints", ["reported_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_merchant_complaints_reported_at"), table_name="merchant_complaints")
