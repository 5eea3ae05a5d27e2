"""observability: the infrastructure failures index covers the attempt's operation

GetPaymentStats counts a payment as hit by an infrastructure failure only on an
attempt to take the money (not on a refund's or a void's): the read needs the
operation, which PostgreSQL now takes from the index like the merchant and the
processor instead of visiting the table. SQLite has no INCLUDE: nothing changes there.

Revision ID: 0203
Revises: 0005
"""

from alembic import op

revision = "0203"
down_revision = "0005"
branch_labels = None
depends_on = None

NAME = "ix_attempts_error_code_started_at_outcome_payment_id"
COLUMNS = ["error_code", "started_at", "outcome", "payment_id"]


def _recreate(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(NAME, table_name="attempts")
    op.create_index(NAME, "attempts", COLUMNS, postgresql_include=include)


def upgrade() -> None:
    _recreate(["merchant_id", "processor", "operation"])


def downgrade() -> None:
    _recreate(["merchant_id", "processor"])
