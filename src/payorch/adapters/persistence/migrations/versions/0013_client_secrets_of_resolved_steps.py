"""payment_steps: no client secret kept on a step no longer waiting for the customer

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# No schema change: `payment_steps.client_secret` stays NOT NULL, "" for none (as every
# step that never paused has it). A step leaving REQUIRES_ACTION now clears its secret
# (domain/payment.py); this clears the secrets stored before, on every step charged,
# failed, voided or unknown since, so a resolved payment keeps none (docs/security.md).
# A step still REQUIRES_ACTION keeps its own: GetPayment hands it to the caller.
#
# One statement over the table, touching only the rows that hold a secret (steps that
# paused once). Not undone by the downgrade: a cleared secret cannot be restored, and
# the older code reads "" as none.


def upgrade() -> None:
    op.execute(
        "UPDATE payment_steps SET client_secret = ''"
        " WHERE status <> 'requires_action' AND client_secret <> ''"
    )


def downgrade() -> None:
    pass
