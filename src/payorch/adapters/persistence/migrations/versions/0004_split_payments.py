"""split payments: merchant configs, refunds, fallback methods, authorize-only

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("fallbacks", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("authorize_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "merchant_configs",
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "version", name=op.f("pk_merchant_configs")),
    )
    op.create_table(
        "refunds",
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("payment_id", "request_id", name=op.f("pk_refunds")),
    )


def downgrade() -> None:
    op.drop_table("refunds")
    op.drop_table("merchant_configs")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("authorize_only")
        batch.drop_column("fallbacks")
