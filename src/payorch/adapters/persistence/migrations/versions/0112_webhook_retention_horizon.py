"""installments: `payorch prune` keeps where it pruned delivered webhook deliveries

A delivered delivery pruned left its event looking never given to its endpoint: a bulk
redelivery (`payorch webhooks redeliver --since --until`) whose window reached back past
the retention sent it again. One row (id 1, made by the first prune that deletes one)
now keeps the newest horizon before which delivered deliveries were pruned
(`delivered_pruned_before`), and a window reaching before it is refused, naming it.

Revision ID: 0112
Revises: 0109
"""

import sqlalchemy as sa
from alembic import op

revision = "0112"
down_revision = "0109"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_retention",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("delivered_pruned_before", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("webhook_retention")
