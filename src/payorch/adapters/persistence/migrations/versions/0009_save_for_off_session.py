"""payments that ask the processor to keep their method for off-session charges

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite: ADD COLUMN, and DROP COLUMN since 3.35),
# not a batch copy: copying the table drops `payments`, which the foreign keys of its
# stored steps refuse.


def upgrade() -> None:
    # Payments stored before asked for nothing: false, as they were sent.
    op.add_column(
        "payments",
        sa.Column("save_for_off_session", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("payments", "save_for_off_session")
