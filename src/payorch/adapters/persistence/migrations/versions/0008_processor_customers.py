"""processor customers bound to the merchant that used them first

One processor account serves every merchant, so a customer id (`cus_...`) and its saved
cards are reachable by any merchant that names it. From now on a customer belongs to the
merchant that first used it, and another merchant's payment naming it is refused.

The binding is backfilled from what is stored: each customer of a payment step or an
installment plan goes to the merchant whose payment or plan used it first (the earlier
`created_at`; on a tie, the smaller merchant id). A customer that several merchants used
already is bound to the first of them only: the others' new payments naming it are
refused from now on, while their installment plans made before keep charging it (a
plan's charges are its merchant's own use). Each such customer is logged as a warning
for an operator to look into.

Revision ID: 0008
Revises: 0007
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

log = logging.getLogger("payorch.migrations")

# At most this many shared customers are named in the log; the rest are counted.
NAMED = 50


def _uses(has_plans: bool) -> str:
    """Every (customer, merchant, time) of a payment step or an installment plan."""
    steps = (
        "SELECT s.customer_id, p.merchant_id, p.created_at AS used_at "
        "FROM payment_steps s JOIN payments p ON p.id = s.payment_id "
        "WHERE s.customer_id <> ''"
    )
    if not has_plans:
        return steps
    return (
        f"{steps} UNION ALL SELECT customer_id, merchant_id, created_at "
        "FROM installment_plans WHERE customer_id <> ''"
    )


def upgrade() -> None:
    op.create_table(
        "processor_customers",
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_processor_customers")),
    )
    bind = op.get_bind()
    # The installments branch is applied beside this one: on a database being built it
    # may not be there yet (and then holds no plans).
    uses = _uses(sa.inspect(bind).has_table("installment_plans"))
    bind.execute(
        sa.text(
            "INSERT INTO processor_customers (customer_id, merchant_id, first_used_at) "
            "SELECT customer_id, merchant_id, used_at FROM ("
            " SELECT customer_id, merchant_id, used_at, ROW_NUMBER() OVER ("
            "  PARTITION BY customer_id ORDER BY used_at, merchant_id) AS n"
            f" FROM ({uses}) uses) ranked "
            "WHERE n = 1"
        )
    )
    shared = bind.execute(
        sa.text(
            "SELECT u.customer_id, c.merchant_id, COUNT(DISTINCT u.merchant_id) - 1 "
            f"FROM ({uses}) u JOIN processor_customers c ON c.customer_id = u.customer_id "
            "GROUP BY u.customer_id, c.merchant_id "
            "HAVING COUNT(DISTINCT u.merchant_id) > 1 ORDER BY u.customer_id"
        )
    ).all()
    for customer_id, owner, others in shared[:NAMED]:
        log.warning(
            "processor customer %s was used by %d merchant(s) besides %s, its first: "
            "their new payments naming it are refused",
            customer_id,
            others,
            owner,
        )
    if len(shared) > NAMED:
        log.warning(
            "and %d more processor customers used by several merchants", len(shared) - NAMED
        )


def downgrade() -> None:
    op.drop_table("processor_customers")
