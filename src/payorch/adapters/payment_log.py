"""One structured log line per finished payment (the JSON formatter adds the ids)."""

from __future__ import annotations

import logging

from payorch.app.observability import NullObserver
from payorch.domain.payment import Payment

log = logging.getLogger("payorch.payments")


class LoggingObserver(NullObserver):
    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def payment_finished(self, payment: Payment) -> None:
        attempts = sum(len(s.attempts) for s in payment.steps)
        self._log.info(
            "payment %s: %d step(s), %d attempt(s), %s ms%s",
            payment.status.value,
            len(payment.steps),
            attempts,
            "?" if payment.orchestration_ms is None else payment.orchestration_ms,
            f", {payment.final_error.value}" if payment.final_error.value != "none" else "",
            extra={
                "request_id": payment.request_id,
                "payment_id": payment.id,
                "merchant_id": payment.merchant_id,
            },
        )
