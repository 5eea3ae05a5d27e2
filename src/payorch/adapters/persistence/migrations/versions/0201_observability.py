"""observability: merchant complaints; indexes for payment stats and violation reads

Revision ID: 0201
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0201"
down_revision = "0004"
branch_labels = ("observability",)
depends_on = None

# GetPaymentStats: covering indexes for a window's payments and attempts, a merchant's
# attempts, and the few error codes of infrastructure failures.
STATS_INDEXES = [
    ("payments", ["created_at", "status", "orchestration_ms"]),
    ("attempts", ["started_at", "outcome", "error_code", "delay_before_ms"]),
    ("attempts", ["merchant_id", "started_at"]),
    ("attempts", ["error_code", "started_at", "outcome", "payment_id"]),
]


def upgrade() -> None:
    op.create_table(
        "merchant_complaints",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("contract_id", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("counted_as", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_complaints")),
    )
    op.create_index(
        op.f("ix_merchant_complaints_occurred_at"), "merchant_complaints", ["occurred_at"]
    )
    op.create_index(
        op.f("ix_merchant_complaints_merchant_id_occurred_at"),
        "merchant_complaints",
        ["merchant_id", "occurred_at"],
    )
    op.create_index(
        op.f("ix_contract_violations_merchant_id_occurred_at"),
        "contract_violations",
        ["merchant_id", "occurred_at"],
    )
    for table, columns in STATS_INDEXES:
        op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, columns)


def downgrade() -> None:
    for table, columns in STATS_INDEXES:
        op.drop_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table_name=table)
    op.drop_index(
        op.f("ix_contract_violations_merchant_id_occurred_at"), table_name="contract_violations"
    )
    op.drop_index(
        op.f("ix_merchant_complaints_merchant_id_occurred_at"), table_name="merchant_complaints"
    )
    op.drop_index(op.f("ix_merchant_complaints_occurred_at"), table_name="merchant_complaints")
    op.drop_table("merchant_complaints")
