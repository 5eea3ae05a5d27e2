"""refunds remember the amount first asked (0: everything), so that a repeat asking
otherwise under the same request_id is refused

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases, as 0009.


def upgrade() -> None:
    # Refunds stored before are left NULL: what they asked is unknown, and a repeat of
    # one is accepted as it was (0, or the amount it refunded).
    op.add_column("refunds", sa.Column("asked_minor", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("refunds", "asked_minor")
