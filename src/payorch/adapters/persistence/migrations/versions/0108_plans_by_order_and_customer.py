"""installments: plans listed by order and by customer

ListInstallmentPlans filters a merchant's plans by order id and by processor customer
(the plan of an order a customer asks about): read by these indexes, newest first,
instead of walking every plan of the merchant.

Revision ID: 0108
Revises: 0107
"""

from alembic import op

revision = "0108"
down_revision = "0107"
branch_labels = None
depends_on = None

_INDEXES = (
    ["merchant_id", "order_id", "created_at", "id"],
    ["merchant_id", "customer_id", "created_at", "id"],
)


def _name(columns: list[str]) -> str:
    return op.f("ix_installment_plans_" + "_".join(columns))


def upgrade() -> None:
    for columns in _INDEXES:
        op.create_index(_name(columns), "installment_plans", columns)


def downgrade() -> None:
    for columns in _INDEXES:
        op.drop_index(_name(columns), table_name="installment_plans")
