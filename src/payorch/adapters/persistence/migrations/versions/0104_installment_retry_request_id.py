"""installments: a RetryInstallment remembers the request_id it was made under

RetryInstallment made again after its answer was lost charged the card again when the
first attempt was declined. The optional request_id is unique per merchant and names
the attempt it started, so the call made again finds that attempt and its payment.

Revision ID: 0104
Revises: 0103
"""

import sqlalchemy as sa
from alembic import op

revision = "0104"
down_revision = "0103"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installment_retries",
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("installment_id", sa.String(length=80), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["installment_id"],
            ["installments.id"],
            name=op.f("fk_installment_retries_installment_id_installments"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "request_id", name=op.f("pk_installment_retries")),
    )


def downgrade() -> None:
    op.drop_table("installment_retries")
