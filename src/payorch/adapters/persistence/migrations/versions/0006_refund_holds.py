"""refunds held on their steps until the processor answers

Revision ID: 0006
Revises: 0203
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0203"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payment_steps") as batch:
        batch.add_column(sa.Column("refund_holds", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("payment_steps") as batch:
        batch.drop_column("refund_holds")
