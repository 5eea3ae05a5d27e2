"""a capture or void owed after one failed; the parts of each refund

Revision ID: 0005
Revises: 0202
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0202"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("owed", sa.String(length=16), nullable=False, server_default=""))
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("parts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("parts")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("owed")
