"""Table definitions (SQLAlchemy Core). Alembic migrations create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# `payments.orchestration_ms` of a payment with no measured time (Payment.orchestration_ms
# None). Not NULL: the column stays NOT NULL (on SQLite making it nullable copies the
# table, which the foreign keys of the stored steps refuse), and the stats index over
# it is unchanged. No duration is negative, so it cannot be taken for one.
NOT_MEASURED = -1

payments = Table(
    "payments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("merchant_id", String(64), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("capture_mode", String(16), nullable=False),
    Column("allow_partial", Boolean, nullable=False, default=False),
    Column("config_version", BigInteger, nullable=False, default=0),
    Column("metadata", JSON, nullable=False),
    Column("off_session", Boolean, nullable=False, default=False),
    Column("status", String(32), nullable=False),
    Column("orchestration_ms", BigInteger, nullable=False, default=NOT_MEASURED),
    Column("final_error", String(48), nullable=False),
    Column("final_error_message", Text, nullable=False, default=""),
    Column("version", Integer, nullable=False),
    Column("event_sequence", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("reconcile_attempts", Integer, nullable=False, server_default="0"),
    Column("next_reconcile_at", UTCDateTime, nullable=True),
    Column("fallbacks", JSON, nullable=True),
    Column("authorize_only", Boolean, nullable=False, server_default=false()),
    # A capture or void still owed to the processor after one failed ("" when none).
    Column("owed", String(16), nullable=False, server_default=""),
    # Asks the processor to keep the method on the customer (an installment plan's first).
    Column("save_for_off_session", Boolean, nullable=False, server_default=false()),
    # Idempotency: one payment per (merchant, request_id), enforced by the database.
    UniqueConstraint("merchant_id", "request_id"),
    Index(None, "merchant_id", "created_at", "id"),
    Index(None, "status", "updated_at"),
    Index(None, "status", "next_reconcile_at"),
    Index(None, "created_at"),
)

payment_steps = Table(
    "payment_steps",
    metadata,
    Column("payment_id", String(64), ForeignKey("payments.id"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("method", String(16), nullable=False),
    Column("token", String(255), nullable=False),
    Column("customer_id", String(255), nullable=False, default=""),
    Column("amount_minor", BigInteger, nullable=False),
    Column("processors", JSON, nullable=False),
    Column("status", String(32), nullable=False),
    Column("outcome", String(32), nullable=True),
    Column("error_code", String(48), nullable=False),
    Column("processor", String(64), nullable=False, default=""),
    Column("processor_payment_id", String(255), nullable=False, default=""),
    Column("next_action_type", String(64), nullable=False, default=""),
    Column("client_secret", String(255), nullable=False, default=""),
    Column("captured_minor", BigInteger, nullable=False, default=0),
    Column("refunded_minor", BigInteger, nullable=False, default=0),
    Column("generation", Integer, nullable=False, default=0),
    # {request_id: amount}: refunds held on the step until the processor answers.
    Column("refund_holds", JSON, nullable=False, server_default="{}"),
)

attempts = Table(
    "attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("payment_id", String(64), ForeignKey("payments.id"), nullable=False),
    Column("merchant_id", String(64), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("operation", String(16), nullable=False),
    Column("processor", String(64), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("error_code", String(48), nullable=False),
    Column("raw_type", String(64), nullable=False, default=""),
    Column("raw_code", String(64), nullable=False, default=""),
    Column("raw_decline_code", String(64), nullable=False, default=""),
    Column("raw_advice_code", String(64), nullable=False, default=""),
    Column("raw_http_status", Integer, nullable=False, default=0),
    Column("raw_request_id", String(255), nullable=False, default=""),
    Column("raw_message", Text, nullable=False, default=""),
    Column("delay_before_ms", Integer, nullable=False, default=0),
    Column("routing_reason", Text, nullable=False, default=""),
    Column("retry_decision", Text, nullable=False, default=""),
    Column("processor_payment_id", String(255), nullable=False, default=""),
    UniqueConstraint("payment_id", "step_index", "number"),
    Index(None, "started_at"),
    # GetPaymentStats for one processor reads its attempts from here alone on
    # PostgreSQL (INCLUDE; SQLite has no such clause and reads the rows).
    Index(
        None,
        "processor",
        "started_at",
        postgresql_include=["payment_id", "outcome", "error_code", "delay_before_ms"],
    ),
)

# The outbox: events written in the same transaction as the state change.
events = Table(
    "events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("payment_id", String(64), nullable=False),
    Column("merchant_id", String(64), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("name", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    UniqueConstraint("payment_id", "sequence"),
    Index(None, "published_at", "occurred_at"),
    # A merchant's events in a window, in order: bulk webhook redelivery's pages
    # (webhooks.py redelivery_candidates; migration 0012).
    Index(None, "merchant_id", "occurred_at", "id"),
)

# Every version of every merchant's config; the highest version is current.
merchant_configs = Table(
    "merchant_configs",
    metadata,
    Column("merchant_id", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("body", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# One row per refund request: (payment, request_id) makes refunds idempotent.
refunds = Table(
    "refunds",
    metadata,
    Column("payment_id", String(64), ForeignKey("payments.id"), primary_key=True),
    Column("request_id", String(255), primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # [[step index, amount], ...]: what each step gives back, repeated as is on a retry.
    Column("parts", JSON, nullable=True),
    # The amount first asked, 0 for everything refundable; NULL when stored before 0010.
    Column("asked_minor", BigInteger, nullable=True),
)

# Processor events already applied (webhooks are delivered at least once).
inbound_events = Table(
    "inbound_events",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

# Which merchant a processor customer (`cus_...`) belongs to: the first to use it. One
# processor account serves every merchant, so nothing at the processor tells them apart;
# another merchant naming the customer is refused before any processor call
# (docs/security.md, migration 0007).
processor_customers = Table(
    "processor_customers",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("merchant_id", String(64), nullable=False),
    Column("first_used_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    # SHA-256 of the key: the key itself is shown once and never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("merchant_id", String(64), nullable=True),
    Column("scope", String(16), nullable=False),
    Column("label", String(128), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

contract_violations = Table(
    "contract_violations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("contract_id", String(64), nullable=False),
    Column("request_id", String(255), nullable=False, default=""),
    Column("merchant_id", String(64), nullable=False, default=""),
    Column("severity", String(16), nullable=False),
    Column("owner", String(64), nullable=False, default=""),
    Column("message", Text, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Index(None, "contract_id", "occurred_at"),
    Index(None, "occurred_at"),
)

# -- installments (migration 0101) -----------------------------------------------------
installment_plans = Table(
    "installment_plans",
    metadata,
    # Derived from (merchant_id, request_id): a retried create finds its plan.
    Column("id", String(64), primary_key=True),
    Column("merchant_id", String(64), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("order_id", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("token", String(255), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("interval_days", Integer, nullable=False),
    Column("dunning_days", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("cancel_reason", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_sequence", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("merchant_id", "request_id"),
    Index(None, "merchant_id", "created_at", "id"),
    Index(None, "status", "created_at"),
    # ListInstallmentPlans by order and by customer (migration 0108).
    Index(None, "merchant_id", "order_id", "created_at", "id"),
    Index(None, "merchant_id", "customer_id", "created_at", "id"),
)

installments = Table(
    "installments",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("plan_id", String(64), ForeignKey("installment_plans.id"), nullable=False),
    Column("merchant_id", String(64), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    # The attempt being (or last) charged: payments request id inst_<id>_a<attempts>.
    Column("attempts", Integer, nullable=False),
    Column("attempt_kind", String(16), nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("first_failed_at", UTCDateTime, nullable=True),
    Column("dunning_step", Integer, nullable=False),
    Column("last_error_code", String(48), nullable=False),
    Column("last_error", Text, nullable=False),
    Column("payment_id", String(64), nullable=False),
    Column("processor_payment_id", String(255), nullable=False),
    Column("paid_at", UTCDateTime, nullable=True),
    # The scheduler's claim: who charges it, and until when.
    Column("claimed_by", String(128), nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    # Its plan's status, kept here for the claim's partial index (migration 0105):
    # written with the plan's, in the same transaction.
    Column("plan_status", String(16), nullable=False, server_default="active"),
    UniqueConstraint("plan_id", "sequence"),
    Index(None, "status", "lease_until"),
)

# The scheduler's claim reads due installments oldest first from this index and stops
# at the batch size. Partial: paid and cancelled installments, the bulk of the table
# over time, are not in it, nor those of a plan that charges nothing (in breach: they
# stay pending or failed, due long ago, and a claim walked past every one of them to
# reach the active plans'). The claim query spells the same predicate.
CLAIMABLE_INSTALLMENTS = "status IN ('pending', 'failed') AND plan_status = 'active'"
Index(
    "ix_installments_claimable",
    installments.c.next_attempt_at,
    postgresql_where=text(CLAIMABLE_INSTALLMENTS),
    sqlite_where=text(CLAIMABLE_INSTALLMENTS),
)

# One row per attempt: the primary key allows one charge per (installment, attempt).
installment_charges = Table(
    "installment_charges",
    metadata,
    Column("installment_id", String(80), ForeignKey("installments.id"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("payment_id", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error_code", String(48), nullable=False),
    Column("message", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    # A run of an outage's pauses (scheduled charges no processor could take) is one
    # row (migration 0107): its last attempt and time, how many, and when the first was.
    Column("times", Integer, nullable=False, server_default="1"),
    Column("first_at", UTCDateTime, nullable=True),
)

# The request id a RetryInstallment was made under (migration 0104), one per merchant,
# and the attempt it started: made again after its answer was lost, the retry finds
# that attempt instead of charging again. Written with the attempt's claim.
installment_retries = Table(
    "installment_retries",
    metadata,
    Column("merchant_id", String(64), primary_key=True),
    Column("request_id", String(255), primary_key=True),
    Column("installment_id", String(80), ForeignKey("installments.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("merchant_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    # The signing key (base64; the secret is "whsec_" + it): needed to sign, shown once
    # at creation, never logged or returned again.
    Column("signing_key", String(128), nullable=False),
    Column("description", String(200), nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("disabled_reason", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The create's idempotency key: NULL for none (NULLs never clash).
    Column("request_id", String(255), nullable=True),
    # Migration 0106: when it was disabled, and how long it has been failing (its first
    # failure since its last success, NULL while it succeeds) with how many deliveries
    # dead-lettered since; updated in place by each delivery's outcome.
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("failing_since", UTCDateTime, nullable=True),
    Column("dead_since_failing", Integer, nullable=False, server_default="0"),
    # Migration 0109: the signing key a rotation replaced (base64, as signing_key), which
    # signs beside it until previous_key_until; NULL when none signs (the dispatcher
    # drops it once its overlap is over, by the index). Never returned.
    Column("previous_signing_key", String(128), nullable=True),
    Column("previous_key_until", UTCDateTime, nullable=True),
    Index(None, "merchant_id", "status"),
    Index(None, "previous_key_until"),
    Index(None, "merchant_id", "request_id", unique=True),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("endpoint_id", String(64), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("merchant_id", String(64), nullable=False),
    # The outbox event id, sent as webhook-id on every attempt.
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("claimed_by", String(128), nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    UniqueConstraint("endpoint_id", "event_id"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "merchant_id", "created_at", "id"),
)

# Migration 0112: one row (id 1, none until a prune deletes a delivered delivery), where
# `payorch prune` deleted delivered deliveries up to. A bulk redelivery's window may not reach before it: an event
# whose delivery was pruned would read as never given, and be sent again.
webhook_retention = Table(
    "webhook_retention",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("delivered_pruned_before", UTCDateTime, nullable=True),
)

# -- observability (migration 0201) ------------------------------------------------------
# What merchants tell us went wrong; the retrospective sets them against the violations.
merchant_complaints = Table(
    "merchant_complaints",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("merchant_id", String(64), nullable=False),
    # As reported: a contract id and/or a category (either may be empty).
    Column("contract_id", String(64), nullable=False),
    Column("category", String(64), nullable=False),
    # The contract it is counted against.
    Column("counted_as", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("reported_at", UTCDateTime, nullable=False),
    Index(None, "occurred_at"),
    Index(None, "merchant_id", "occurred_at"),
    # Retrospectives count the complaints reported in their window.
    Index(None, "reported_at"),
)

# A merchant's violations (ListContractViolations, GenerateContractReport by merchant).
Index(None, contract_violations.c.merchant_id, contract_violations.c.occurred_at)

# GetPaymentStats (docs/observability.md): a window's payments by status and time, and
# its attempts by outcome and code, read from the index alone; a merchant's attempts;
# the payments whose attempts to take the money failed on the infrastructure (a few
# codes): recovery share.
Index(None, payments.c.created_at, payments.c.status, payments.c.orchestration_ms)
Index(
    None,
    attempts.c.started_at,
    attempts.c.outcome,
    attempts.c.error_code,
    attempts.c.delay_before_ms,
)
Index(None, attempts.c.merchant_id, attempts.c.started_at)
Index(
    None,
    attempts.c.error_code,
    attempts.c.started_at,
    attempts.c.outcome,
    attempts.c.payment_id,
    postgresql_include=["merchant_id", "processor", "operation"],
)
