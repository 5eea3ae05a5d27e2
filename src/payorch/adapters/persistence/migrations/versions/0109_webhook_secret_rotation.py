"""installments: webhook endpoints keep the secret a rotation replaced, for its overlap

RotateWebhookSecret gives an endpoint a new signing secret; the one it replaces signs
each attempt beside it (`webhook-signature: v1,<new> v1,<old>`) until
`previous_key_until`, so a receiver may switch to the new secret at any moment of the
overlap without refusing a webhook. Before, rotating meant a second endpoint on the
same URL. NULL for every endpoint not rotated.

Revision ID: 0109
Revises: 0108
"""

import sqlalchemy as sa
from alembic import op

revision = "0109"
down_revision = "0108"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("previous_signing_key", sa.String(128), nullable=True))
        batch.add_column(sa.Column("previous_key_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("previous_key_until")
        batch.drop_column("previous_signing_key")
