"""payments with no measured orchestration time say so (-1), instead of 0 ms

Revision ID: 0011
Revises: 0204
"""

from alembic import op

revision = "0011"
down_revision = "0204"
branch_labels = None
depends_on = None

# No schema change: `payments.orchestration_ms` stays NOT NULL and -1 (tables.NOT_MEASURED)
# stands for "not measured", so the stats index over it is unchanged.
#
# Backfilled: payments still PROCESSING with 0 ms. Either under way (their create sets the
# time as it finishes) or left by a server that stopped: the reconciler settles those, and
# they would keep 0 ms. (A payment the customer confirmed that is charging its later steps
# is PROCESSING too, with the time of its create: only one under 1 ms is taken for
# unmeasured, and it just leaves the percentiles.)
#
# Not backfilled: settled payments with 0 ms. A payment the reconciler settled after a
# crash cannot be told from one measured at 0 ms (under a millisecond, as the simulated
# processor can answer); both stay 0 ms. They count in the percentiles only of windows
# that hold them: the default window (seven days) no longer does a week after upgrading.


def upgrade() -> None:
    op.execute(
        "UPDATE payments SET orchestration_ms = -1"
        " WHERE status = 'processing' AND orchestration_ms = 0"
    )


def downgrade() -> None:
    op.execute("UPDATE payments SET orchestration_ms = 0 WHERE orchestration_ms = -1")
