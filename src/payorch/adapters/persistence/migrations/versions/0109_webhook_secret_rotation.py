"""installments: webhook endpoints keep the secret a rotation replaced, for its overlap

RotateWebhookSecret gives an endpoint a new signing secret; the one it replaces signs
each attempt beside it (`webhook-signature: v1,<new> v1,<old>`) until
`previous_key_until`, so a receiver may switch to the new secret at any moment of the
overlap without refusing a webhook. Before, rotating meant a second endpoint on the
same URL. NULL for every endpoint not rotated; each dispatcher pass sets an expired
one back to NULL, found by the index on `previous_key_until`.

Revision ID: 0109
Revises: 0108
"""

import sqlalchemy as sa
from alembic import op

revision = "0109"
down_revision = "0108"
branch_labels = None
depends_on = None

_INDEX = "ix_webhook_endpoints_previous_key_until"


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("previous_signing_key", sa.String(128), nullable=True))
        batch.add_column(sa.Column("previous_key_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f(_INDEX), "webhook_endpoints", ["previous_key_until"])


def downgrade() -> None:
    op.drop_index(op.f(_INDEX), table_name="webhook_endpoints")
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("previous_key_until")
        batch.drop_column("previous_signing_key")
