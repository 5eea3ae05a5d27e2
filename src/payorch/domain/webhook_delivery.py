"""Outbound webhooks: endpoints, deliveries, the retry schedule and the message body.

Pure: the dispatcher (app) claims deliveries and a sender (adapter) does the HTTP.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from payorch.domain.card_data import redact_card_numbers

# Wait before attempt 1, 2, ... 8: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 24 h.
BACKOFF_S: tuple[int, ...] = (0, 5, 300, 1_800, 7_200, 18_000, 36_000, 86_400)
# Each wait is spread over [80 %, 120 %] so failed receivers are not hit in lockstep.
JITTER = 0.2
MAX_ERROR_LEN = 500
# An endpoint none of whose attempts has succeeded for this long, from its first failure
# after its last success (or its creation, or its enabling), is disabled automatically
# (PAYORCH_WEBHOOK_DISABLE_AFTER_S)...
DISABLE_AFTER = timedelta(days=3)
# ... once at least this many of its deliveries went to the dead-letter list meanwhile,
# each after its eight attempts over some 42 hours: a day's outage never disables it, and
# neither does one event, however long ago it began failing.
DISABLE_MIN_DEAD = 3
# A rotated-out secret still signs, beside the new one, this long by default
# (RotateWebhookSecret), and at most this long: the receiver switches at any moment of it.
DEFAULT_SECRET_OVERLAP = timedelta(hours=24)
MAX_SECRET_OVERLAP = timedelta(days=7)


class InvalidTransition(RuntimeError):
    pass


class EndpointStatus(enum.Enum):
    ENABLED = "enabled"
    # Nothing more is sent to it: the receiver answered 410 Gone, or every attempt
    # failed for days (FailingEndpoints).
    DISABLED = "disabled"
    DELETED = "deleted"


@dataclass(slots=True)
class WebhookEndpoint:
    id: str
    merchant_id: str
    url: str
    # The signing secret (whsec_...): stored to sign, shown once, never logged.
    secret: str = field(repr=False)
    description: str
    # Event types sent to it (e.g. "installment.paid"); empty means all.
    event_types: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    status: EndpointStatus = EndpointStatus.ENABLED
    disabled_reason: str = ""
    version: int = 0
    # The idempotency key it was created under, unique per merchant ("" for none).
    request_id: str = ""
    disabled_at: datetime | None = None
    # Its first failed attempt since its last success (or its creation, or its
    # enabling); None while its attempts succeed. And how many of its deliveries went to
    # the dead-letter list since. Kept by the repository with single updates
    # (note_success, note_failure), so concurrent deliveries never lose a count.
    failing_since: datetime | None = None
    dead_since_failing: int = 0
    # The secret the last rotation replaced: it signs too, after `secret`, until
    # `previous_secret_until` (excluded); "" when there is none.
    previous_secret: str = field(default="", repr=False)
    previous_secret_until: datetime | None = None

    def secrets_at(self, now: datetime) -> tuple[str, ...]:
        """The secrets an attempt made at `now` is signed with, the newest first."""
        return signing_secrets(self.secret, self.previous_secret, self.previous_secret_until, now)

    def rotate(self, new_secret: str, now: datetime, overlap: timedelta) -> None:
        """Sign with `new_secret` from now on, and with the current one beside it for
        `overlap` (none: it stops at once). At most two: a secret an earlier rotation
        kept signing is dropped at once."""
        if self.status is EndpointStatus.DELETED:
            raise InvalidTransition("the endpoint is deleted")
        if not timedelta(0) <= overlap <= MAX_SECRET_OVERLAP:
            raise ValueError(f"overlap must be within 0 and {MAX_SECRET_OVERLAP}")
        if overlap:
            self.previous_secret, self.previous_secret_until = self.secret, now + overlap
        else:
            self.previous_secret, self.previous_secret_until = "", None
        self.secret, self.updated_at = new_secret, now

    def wants(self, event_type: str) -> bool:
        return self.status is EndpointStatus.ENABLED and subscribes(self.event_types, event_type)

    def disable(self, reason: str, now: datetime) -> None:
        if self.status is not EndpointStatus.ENABLED:
            return
        self.status, self.disabled_reason, self.updated_at = EndpointStatus.DISABLED, reason, now
        self.disabled_at = now

    def enable(self, now: datetime) -> bool:
        """Send to it again (same URL, same secret); False when it already was enabled."""
        if self.status is EndpointStatus.DELETED:
            raise InvalidTransition("the endpoint is deleted")
        if self.status is EndpointStatus.ENABLED:
            return False
        self.status, self.disabled_reason, self.updated_at = EndpointStatus.ENABLED, "", now
        # Its failing time begins again: it gets DISABLE_AFTER anew to show it works.
        self.disabled_at, self.failing_since, self.dead_since_failing = None, None, 0
        return True

    def delete(self, now: datetime) -> None:
        self.status, self.updated_at = EndpointStatus.DELETED, now


def subscribes(event_types: Sequence[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to `event_types` (none: every type) takes it."""
    return not event_types or event_type in event_types


def signing_secrets(
    secret: str, previous: str, previous_until: datetime | None, now: datetime
) -> tuple[str, ...]:
    """The endpoint's secret, then the one a rotation replaced while its overlap lasts."""
    if previous and previous_until is not None and now < previous_until:
        return (secret, previous)
    return (secret,)


@dataclass(frozen=True, slots=True)
class FailingEndpoints:
    """When an endpoint that keeps failing is disabled: every attempt failed for `after`
    and at least `min_dead` deliveries went to the dead-letter list meanwhile. A success
    at any time starts the count again."""

    after: timedelta = DISABLE_AFTER
    min_dead: int = DISABLE_MIN_DEAD

    def to_disable(self, endpoint: WebhookEndpoint, now: datetime) -> bool:
        return (
            endpoint.status is EndpointStatus.ENABLED
            and endpoint.failing_since is not None
            and now - endpoint.failing_since >= self.after
            and endpoint.dead_since_failing >= self.min_dead
        )

    @staticmethod
    def reason(endpoint: WebhookEndpoint) -> str:
        since = endpoint.failing_since.isoformat() if endpoint.failing_since else "?"
        return (
            f"no successful delivery since {since}: every attempt failed,"
            f" {endpoint.dead_since_failing} deliveries went to the dead-letter list"
        )


class DeliveryStatus(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Out of attempts, or its endpoint is gone: the dead-letter list.
    DEAD = "dead"


def backoff(attempts_done: int, jitter: float) -> timedelta | None:
    """Wait before the next attempt after `attempts_done` attempts; None when out of them.

    `jitter` is a draw from [0, 1)."""
    if attempts_done >= len(BACKOFF_S):
        return None
    base = BACKOFF_S[attempts_done]
    return timedelta(seconds=base * (1 - JITTER + 2 * JITTER * jitter))


@dataclass(slots=True)
class WebhookDelivery:
    id: str
    endpoint_id: str
    merchant_id: str
    # The outbox event id: also the `webhook-id` header, the same on every retry.
    event_id: str
    event_type: str
    # The exact bytes signed and sent, fixed when the delivery is created.
    body: str
    created_at: datetime
    next_attempt_at: datetime | None
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_status_code: int = 0
    last_error: str = ""
    delivered_at: datetime | None = None
    claimed_by: str = ""
    lease_until: datetime | None = None
    version: int = 0

    @property
    def pending(self) -> bool:
        return self.status is DeliveryStatus.PENDING

    def _finish_attempt(self, status_code: int, error: str) -> None:
        if self.status is not DeliveryStatus.PENDING:
            raise InvalidTransition(f"delivery is {self.status.value}")
        self.attempts += 1
        self.last_status_code, self.last_error = status_code, error[:MAX_ERROR_LEN]
        self.claimed_by, self.lease_until = "", None

    def succeeded(self, status_code: int, now: datetime) -> None:
        self._finish_attempt(status_code, "")
        self.status, self.delivered_at, self.next_attempt_at = DeliveryStatus.DELIVERED, now, None

    def failed(self, status_code: int, error: str, now: datetime, jitter: float) -> None:
        self._finish_attempt(status_code, error)
        wait = backoff(self.attempts, jitter)
        if wait is None:
            self.status, self.next_attempt_at = DeliveryStatus.DEAD, None
        else:
            self.next_attempt_at = now + wait

    def gone(self, status_code: int, error: str) -> None:
        """The endpoint is gone (410) or refused: no retry."""
        self._finish_attempt(status_code, error)
        self.status, self.next_attempt_at = DeliveryStatus.DEAD, None

    def abandon(self, reason: str) -> None:
        if self.status is DeliveryStatus.PENDING:
            self.status, self.next_attempt_at = DeliveryStatus.DEAD, None
            self.last_error = reason[:MAX_ERROR_LEN]
            self.claimed_by, self.lease_until = "", None

    def redeliver(self, now: datetime) -> None:
        """Send again from the dead-letter list (or once more after a success), a fresh
        schedule of attempts; the webhook id stays the same so receivers can dedupe.

        It reads as not attempted yet: the last status and error belonged to the schedule
        before, and would read as the receiver's answer to a redelivery not sent yet."""
        if self.status is DeliveryStatus.PENDING:
            raise InvalidTransition("the delivery is already scheduled")
        self.status, self.attempts, self.next_attempt_at = DeliveryStatus.PENDING, 0, now
        self.last_status_code, self.last_error, self.delivered_at = 0, "", None


# -- what a receiver gets -------------------------------------------------------------
_FAMILIES = (
    ("Installment", "installment"),
    ("Plan", "installment_plan"),
    ("Payment", "payment"),
    ("Step", "payment.step"),
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def event_type(name: str) -> str:
    """Outbox event name -> webhook type: InstallmentFailedFinal -> installment.failed_final,
    PlanCompleted -> installment_plan.completed, StepSucceeded -> payment.step.succeeded."""
    for prefix, family in _FAMILIES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return f"{family}.{_snake(name[len(prefix) :])}"
    return _snake(name)


def webhook_body(
    *,
    event_id: str,
    name: str,
    aggregate_id: str,
    merchant_id: str,
    sequence: int,
    occurred_at: datetime,
    payload: dict[str, Any],
    currency: str = "",
) -> str:
    """The JSON body, Standard Webhooks shaped: type, timestamp, data. Canonical (sorted
    keys, no spaces) and stored as sent, so every retry carries the same bytes.
    `currency`: the ISO code of the payload's amounts when the payload does not say it
    (a payment's events; a plan's carry their own)."""
    data: dict[str, Any] = {**payload, "event_id": event_id, "sequence": sequence}
    if currency:
        data.setdefault("currency", currency)
    if name == "StepFailed":
        # `retryable` was retry_later's first name, and receivers may read it still:
        # both are sent, whichever the stored event has.
        data.setdefault("retry_later", data.get("retryable"))
        data.setdefault("retryable", data["retry_later"])
    data["merchant_id"] = merchant_id
    if "plan_id" not in data:
        data["payment_id"] = aggregate_id
    # It leaves for another party's server: a card number in a processor's `message`
    # (or any text an event was given) goes out redacted, whatever the event stored.
    data = {k: redact_card_numbers(v) if isinstance(v, str) else v for k, v in data.items()}
    return json.dumps(
        {"type": event_type(name), "timestamp": occurred_at.isoformat(), "data": data},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
