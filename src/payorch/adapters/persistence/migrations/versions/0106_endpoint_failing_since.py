"""installments: webhook endpoints remember how long they have been failing

An endpoint answering anything but 410 (500s, timeouts, refused connections) was never
disabled: every event to it was tried eight times over some 42 hours and dead-lettered,
for ever. Each endpoint now keeps its first failure since its last success
(`failing_since`) and how many of its deliveries were dead-lettered since
(`dead_since_failing`); past three days of that, with three dead, it is disabled, and
`disabled_at` says when (for those disabled already, by a 410: their last update).

Revision ID: 0106
Revises: 0105
"""

import sqlalchemy as sa
from alembic import op

revision = "0106"
down_revision = "0105"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("dead_since_failing", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE webhook_endpoints SET disabled_at = updated_at WHERE status = 'disabled'")


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("dead_since_failing")
        batch.drop_column("failing_since")
        batch.drop_column("disabled_at")
