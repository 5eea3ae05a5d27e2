"""initial schema: payments, steps, attempts, outbox, api keys, violations

Revision ID: 0001
Revises:
Create Date: 2026-11-21 21:12:13.890371
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=True),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "contract_violations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("contract_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contract_violations")),
    )
    with op.batch_alter_table("contract_violations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contract_violations_contract_id_occurred_at"),
            ["contract_id", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_contract_violations_occurred_at"), ["occurred_at"], unique=False
        )

    op.create_table(
        "events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("payment_id", "sequence", name=op.f("uq_events_payment_id_sequence")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_published_at_occurred_at"),
            ["published_at", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("capture_mode", sa.String(length=16), nullable=False),
        sa.Column("allow_partial", sa.Boolean(), nullable=False),
        sa.Column("config_version", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("off_session", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("orchestration_ms", sa.BigInteger(), nullable=False),
        sa.Column("final_error", sa.String(length=48), nullable=False),
        sa.Column("final_error_message", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_sequence", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint(
            "merchant_id", "request_id", name=op.f("uq_payments_merchant_id_request_id")
        ),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payments_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_payments_merchant_id_created_at_id"),
            ["merchant_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_payments_status_updated_at"), ["status", "updated_at"], unique=False
        )

    op.create_table(
        "attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("processor", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=48), nullable=False),
        sa.Column("raw_type", sa.String(length=64), nullable=False),
        sa.Column("raw_code", sa.String(length=64), nullable=False),
        sa.Column("raw_decline_code", sa.String(length=64), nullable=False),
        sa.Column("raw_http_status", sa.Integer(), nullable=False),
        sa.Column("raw_request_id", sa.String(length=255), nullable=False),
        sa.Column("raw_message", sa.Text(), nullable=False),
        sa.Column("delay_before_ms", sa.Integer(), nullable=False),
        sa.Column("routing_reason", sa.Text(), nullable=False),
        sa.Column("retry_decision", sa.Text(), nullable=False),
        sa.Column("processor_payment_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_attempts_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint(
            "payment_id",
            "step_index",
            "number",
            name=op.f("uq_attempts_payment_id_step_index_number"),
        ),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attempts_processor_started_at"),
            ["processor", "started_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_attempts_started_at"), ["started_at"], unique=False)

    op.create_table(
        "payment_steps",
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("processors", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("error_code", sa.String(length=48), nullable=False),
        sa.Column("processor", sa.String(length=64), nullable=False),
        sa.Column("processor_payment_id", sa.String(length=255), nullable=False),
        sa.Column("next_action_type", sa.String(length=64), nullable=False),
        sa.Column("client_secret", sa.String(length=255), nullable=False),
        sa.Column("captured_minor", sa.BigInteger(), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_payment_steps_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("payment_id", "idx", name=op.f("pk_payment_steps")),
    )


def downgrade() -> None:

    op.drop_table("payment_steps")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attempts_started_at"))
        batch_op.drop_index(batch_op.f("ix_attempts_processor_started_at"))

    op.drop_table("attempts")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_status_updated_at"))
        batch_op.drop_index(batch_op.f("ix_payments_merchant_id_created_at_id"))
        batch_op.drop_index(batch_op.f("ix_payments_created_at"))

    op.drop_table("payments")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_published_at_occurred_at"))

    op.drop_table("events")
    with op.batch_alter_table("contract_violations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contract_violations_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_contract_violations_contract_id_occurred_at"))

    op.drop_table("contract_violations")
    op.drop_table("api_keys")
