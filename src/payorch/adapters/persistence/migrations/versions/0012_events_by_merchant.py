"""events: a merchant's events by time, for bulk webhook redelivery

`payorch webhooks redeliver` (RedeliverWebhooks) pages through one merchant's
published events in a window, ordered by (occurred_at, id). Without this index each
page read every event of every merchant and sorted them.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_events_merchant_id_occurred_at_id"),
        "events",
        ["merchant_id", "occurred_at", "id"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_events_merchant_id_occurred_at_id"), table_name="events")
