"""What the payment use cases tell observers, the contract monitor and the tracer.

One object, so the use cases say "this happened" in a line and stay about payments.
Every method is safe to call: nothing here raises into a payment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager

from payorch.app.contract_monitor import ContractMonitor
from payorch.app.observability import AttributeValue, NullTracer, Observers, Span, Tracer
from payorch.domain.contracts import attempt_violation
from payorch.domain.payment import Attempt, Payment, Step
from payorch.domain.request import CoreRequest

log = logging.getLogger("payorch.reconciler")
# Payment ids named in one violation; the rest are counted.
NAMED_PAYMENTS = 10


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

    def idempotency_conflict(self, request: CoreRequest, message: str) -> None:
        self._record("idempotency/conflict", message, request.merchant_id, request.request_id)

    def payment_finished(self, payment: Payment) -> None:
        """Metrics and the log line of a payment whose creation ended."""
        self._observers.payment_finished(payment)

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
