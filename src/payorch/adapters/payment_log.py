"""One structured log line per finished CreatePayment, and one more when a payment it
left open settles later (the JSON formatter adds the ids)."""

from __future__ import annotations

import logging

from payorch.app.observability import NullObserver, Via
from payorch.domain.payment import Payment

log = logging.getLogger("payorch.payments")


class LoggingObserver(NullObserver):
    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def payment_finished(self, payment: Payment) -> None:
        attempts = sum(len(s.attempts) for s in payment.steps)
        self._log.info(
            "payment %s: %d step(s), %d attempt(s), %s ms%s",
            payment.status._value_,
            len(payment.steps),
            attempts,
            "?" if payment.orchestration_ms is None else payment.orchestration_ms,
            _error(payment),
            extra=_ids(payment),
        )

    def payment_settled(self, payment: Payment, via: Via) -> None:
        """Settled after its CreatePayment ended (one settled in it has its line)."""
        if via is Via.CREATE:
            return
        attempts = sum(len(s.attempts) for s in payment.steps)
        self._log.info(
            "payment settled %s by %s: %d step(s), %d attempt(s)%s",
            payment.status._value_,
            via._value_,
            len(payment.steps),
            attempts,
            _error(payment),
            extra=_ids(payment),
        )


def _error(payment: Payment) -> str:
    # `_value_` is what `.value` returns, without the property's two Python calls.
    code = payment.final_error._value_
    return "" if code == "none" else f", {code}"


def _ids(payment: Payment) -> dict[str, str]:
    return {
        "request_id": payment.request_id,
        "payment_id": payment.id,
        "merchant_id": payment.merchant_id,
    }
