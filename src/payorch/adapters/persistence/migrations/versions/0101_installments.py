"""installments: plans, installments, charges per attempt, webhook endpoints and deliveries

Revision ID: 0101
Revises: 0003
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0101"
down_revision = "0003"
branch_labels = ("installments",)
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "installment_plans",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("token", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("interval_days", sa.Integer(), nullable=False),
        sa.Column("dunning_days", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_sequence", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installment_plans")),
        sa.UniqueConstraint(
            "merchant_id", "request_id", name=op.f("uq_installment_plans_merchant_id_request_id")
        ),
    )
    op.create_index(
        op.f("ix_installment_plans_merchant_id_created_at_id"),
        "installment_plans",
        ["merchant_id", "created_at", "id"],
    )
    op.create_index(
        op.f("ix_installment_plans_status_created_at"),
        "installment_plans",
        ["status", "created_at"],
    )

    op.create_table(
        "installments",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        _ts("due_at"),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_kind", sa.String(length=16), nullable=False),
        _ts("next_attempt_at", nullable=True),
        _ts("first_failed_at", nullable=True),
        sa.Column("dunning_step", sa.Integer(), nullable=False),
        sa.Column("last_error_code", sa.String(length=48), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("processor_payment_id", sa.String(length=255), nullable=False),
        _ts("paid_at", nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        _ts("lease_until", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["installment_plans.id"],
            name=op.f("fk_installments_plan_id_installment_plans"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installments")),
        sa.UniqueConstraint("plan_id", "sequence", name=op.f("uq_installments_plan_id_sequence")),
    )
    op.create_index(
        op.f("ix_installments_status_next_attempt_at"),
        "installments",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        op.f("ix_installments_status_lease_until"), "installments", ["status", "lease_until"]
    )

    op.create_table(
        "installment_charges",
        sa.Column("installment_id", sa.String(length=80), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=48), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _ts("at"),
        sa.ForeignKeyConstraint(
            ["installment_id"],
            ["installments.id"],
            name=op.f("fk_installment_charges_installment_id_installments"),
        ),
        sa.PrimaryKeyConstraint("installment_id", "attempt", name=op.f("pk_installment_charges")),
    )

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("signing_key", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        op.f("ix_webhook_endpoints_merchant_id_status"),
        "webhook_endpoints",
        ["merchant_id", "status"],
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        _ts("lease_until", nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("delivered_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "endpoint_id", "event_id", name=op.f("uq_webhook_deliveries_endpoint_id_event_id")
        ),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_status_next_attempt_at"),
        "webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        op.f("ix_webhook_deliveries_merchant_id_created_at_id"),
        "webhook_deliveries",
        ["merchant_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("installment_charges")
    op.drop_table("installments")
    op.drop_table("installment_plans")
