"""attempts keep the issuer's advice on retrying a decline

Stripe's advice_code (do_not_try_again, ...) decides whether a declined installment
goes on the dunning ladder, which judges a stored payment by its attempts' raw fields.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(
            sa.Column("raw_advice_code", sa.String(length=64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("raw_advice_code")
