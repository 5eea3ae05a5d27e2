"""What the payment use cases tell observers, the contract monitor and the tracer.

One object, so the use cases say "this happened" in a line and stay about payments.
Every method is safe to call: nothing here raises into a payment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from payorch.app.analytics import SUCCEEDED, TAKING_MONEY
from payorch.app.contract_monitor import ContractMonitor
from payorch.app.observability import AttributeValue, NullTracer, Observers, Span, Tracer, Via
from payorch.app.processor_errors import described
from payorch.domain.classification import INFRASTRUCTURE_CODES
from payorch.domain.contracts import attempt_violation
from payorch.domain.payment import Attempt, Payment, Step
from payorch.domain.request import CoreRequest
from payorch.domain.results import Outcome

log = logging.getLogger("payorch.reconciler")
# Payment ids named in one violation; the rest are counted.
NAMED_PAYMENTS = 10
_FAILURES = (Outcome.SOFT, Outcome.UNKNOWN)
# SUCCEEDED, for the look at every save: `in` a tuple compares by identity, where a
# frozenset hashes the status with Enum.__hash__ (a Python call).
_SUCCEEDED = tuple(SUCCEEDED)


def _recovered(attempts: Iterable[Attempt]) -> bool:
    """Whether one of the attempts to take the money failed on infrastructure (the
    payment's status is the caller's to check first)."""
    return any(
        a.outcome in _FAILURES
        and a.error_code in INFRASTRUCTURE_CODES
        and a.operation in TAKING_MONEY
        for a in attempts
    )


def recovered(payment: Payment) -> bool:
    """Took the money after a transient infrastructure failure on an attempt to take it:
    what GetPaymentStats counts as recovered (app/analytics.py), a partial split too,
    a void's failure or a lookup's not."""
    return payment.status in _SUCCEEDED and _recovered(a for s in payment.steps for a in s.attempts)


@dataclass(frozen=True, slots=True)
class Unstored:
    """What a save of a payment is about to store, for the observers to count once it
    is committed: a save that loses to another call's stores none of it, and the call
    that won counts what it stored itself."""

    attempts: list[tuple[Step, Attempt]]
    # Stored unsettled (open, or authorized owing its capture), saved settled.
    settles: bool
    # Recovered once saved, and not as stored.
    recovers: bool


def unstored(payment: Payment) -> Unstored:
    """Taken just before the save: the attempts made since the payment was read, whether
    this save settles it, and whether it makes it recovered."""
    return Unstored(unstored_attempts(payment), payment.settling, _recovers(payment))


def _recovers(payment: Payment) -> bool:
    """Recovered once saved, and not as stored: the stored attempts are looked at only
    for a payment recovered now whose stored status took the money."""
    if not recovered(payment):
        return False
    stored = payment.stored
    return (
        stored is None
        or stored.status not in _SUCCEEDED
        or not _recovered(a for s in payment.steps for a in s.attempts[: s.stored_attempts])
    )


class PaymentObservation:
    def __init__(
        self,
        observers: Observers | None = None,
        monitor: ContractMonitor | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._observers = observers or Observers()
        self._monitor = monitor
        self._tracer = tracer or NullTracer()

    def span(self, name: str, **attributes: AttributeValue) -> AbstractContextManager[Span]:
        return self._tracer.span(name, attributes)

    def _record(self, contract_id: str, message: str, merchant_id: str, request_id: str) -> None:
        if self._monitor is not None:
            self._monitor.record(
                contract_id, message, merchant_id=merchant_id, request_id=request_id
            )

    def request_accepted(self, request: CoreRequest) -> None:
        """Non-fatal input issues: the payment goes on, the issue is counted and kept."""
        for issue in request.issues:
            self._observers.validation_issue(issue.contract_id)
            if self._monitor is not None:
                self._monitor.record(
                    issue.contract_id,
                    f"{issue.field}: {issue.message}",
                    merchant_id=request.merchant_id,
                    request_id=request.request_id,
                    severity=issue.severity,
                )

    def plan_rejected(self, request: CoreRequest, contract_id: str, message: str) -> None:
        self._record(contract_id, message, request.merchant_id, request.request_id)

    def customer_refused(self, request: CoreRequest, fields: list[str]) -> None:
        """For operators only (the caller is told no more than that it has no such
        customer): a merchant named another merchant's processor customer."""
        for field in fields:
            message = f"{field}: a processor customer bound to another merchant"
            self._record("input/customer", message, request.merchant_id, request.request_id)

    def processor_not_configured(self, processor: str, payment_ids: list[str]) -> None:
        """A reconciler pass found payments held at a processor the server no longer has
        configured: they wait for it, named once a pass for operators to act on."""
        named = ", ".join(payment_ids[:NAMED_PAYMENTS])
        more = len(payment_ids) - NAMED_PAYMENTS
        message = (
            f"processor {processor!r} is not configured: {len(payment_ids)} due payment(s)"
            f" held there cannot be reconciled, captured or voided and wait for it ({named}"
            f"{f', and {more} more' if more > 0 else ''}); configure it again to settle them"
        )
        log.warning("reconciler: %s", message)
        self._record("processor/not_configured", message, "", "")

    def payment_unreadable(self, payment_id: str, exc: BaseException) -> None:
        """A reconciler pass listed a payment whose stored rows cannot be read: skipped,
        logged with its id and what could not be read (never the rows), and counted as
        a reconciler error. Left as it is: every pass names it until it is repaired."""
        log.error(
            "reconciler: payment %s cannot be read from the database: %s; skipped, the"
            " pass goes on (docs/recovery.md, A payment the reconciler cannot read)",
            payment_id,
            described(exc),
        )
        self._observers.reconcile_failed()

    def reconcile_failed(
        self, payment_id: str, exc: BaseException, next_look: datetime | None
    ) -> None:
        """A reconciler pass could not work on the payment (its work raised): logged once
        with the exception's type and where, its message clipped and without card
        numbers (no traceback, whose text could carry one), and counted."""
        when = f"next look at {next_look.isoformat()}" if next_look else "its back-off not stored"
        log.error(
            "reconciler: payment %s could not be reconciled: %s; the pass goes on, %s",
            payment_id,
            described(exc),
            when,
        )
        self._observers.reconcile_failed()

    def idempotency_conflict(self, request: CoreRequest, message: str) -> None:
        self._record("idempotency/conflict", message, request.merchant_id, request.request_id)

    def payment_finished(self, payment: Payment) -> None:
        """Metrics and the log line of a payment whose CreatePayment ended (settled, or
        still open: waiting for the customer, or its outcome unknown)."""
        self._observers.payment_finished(payment)

    def stored(self, payment: Payment, saved: Unstored, via: Via) -> None:
        """A save of `payment` committed what `saved` (taken by `unstored` before it)
        holds: each processor call is counted and checked once, the settling of the
        payment and its recovery too, whichever call made the save: creating,
        confirming, capturing, voiding, refunding or reconciling the payment, or a
        processor's event. A save that lost to another call's is never reported."""
        self.attempts_stored(payment, saved.attempts)
        if saved.attempts:
            self._observers.attempts_stored(payment, [a for _, a in saved.attempts])
        if saved.settles:
            self._observers.payment_settled(payment, via)
        if saved.recovers:
            self._observers.payment_recovered(payment)

    def attempts_stored(self, payment: Payment, stored: Sequence[tuple[Step, Attempt]]) -> None:
        """The contracts the processor calls just stored broke. Every save names the
        attempts it stored first (`unstored_attempts`), so each call is checked once,
        whichever use case made it: creating, confirming, capturing, voiding, refunding
        or reconciling the payment."""
        for step, attempt in stored:
            found = attempt_violation(attempt)
            if found is not None:
                self._record(
                    found[0],
                    f"payment {payment.id} step {step.index}: {found[1]}",
                    payment.merchant_id,
                    payment.request_id,
                )


def unstored_attempts(payment: Payment) -> list[tuple[Step, Attempt]]:
    """The attempts a save of `payment` is about to store (made since it was read)."""
    return [(s, a) for s in payment.steps for a in s.attempts[s.stored_attempts :]]
