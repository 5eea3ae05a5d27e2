"""installments: a webhook endpoint remembers the request_id it was created under

CreateWebhookEndpoint made again after its answer was lost made a second endpoint,
with a second signing secret. The optional request_id is unique per merchant (NULL
for none, and NULLs never clash), so the call made again finds the first.

Revision ID: 0103
Revises: 0102
"""

import sqlalchemy as sa
from alembic import op

revision = "0103"
down_revision = "0102"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=255), nullable=True))
    op.create_index(
        op.f("ix_webhook_endpoints_merchant_id_request_id"),
        "webhook_endpoints",
        ["merchant_id", "request_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_webhook_endpoints_merchant_id_request_id"), table_name="webhook_endpoints"
    )
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("request_id")
