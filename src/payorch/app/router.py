"""Runs one plan step against processors: attempt, classify, retry, reconcile unknowns.

Never charges twice: a retry reuses the idempotency key unless the processor has
been asked (lookup) and said it did not charge under it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from payorch.app.ports import ChargeRequest, Clock, Processor
from payorch.domain.classification import classify, is_infrastructure_failure
from payorch.domain.payment import Attempt, CaptureMode, Payment, RawError, Step
from payorch.domain.results import (
    Classification,
    ErrorCode,
    Outcome,
    ProcessorResponse,
    ResponseKind,
)
from payorch.domain.retry import RetryPolicy, decide_retry

# Time kept back from the caller's deadline to store the result.
DEADLINE_RESERVE_S = 0.05


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the clock's monotonic scale; None means no deadline."""

    at: float | None

    def remaining_ms(self, clock: Clock) -> float | None:
        if self.at is None:
            return None
        return max(0.0, (self.at - clock.monotonic()) * 1000.0)


def intent_key(payment: Payment, step: Step) -> str:
    return f"payorch_{payment.id}_{step.index}"


def idempotency_key(payment: Payment, step: Step) -> str:
    return f"payorch_{payment.id}_{step.index}_g{step.generation}"


class Router:
    def __init__(
        self,
        processors: Mapping[str, Processor],
        clock: Clock,
        *,
        call_timeout_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.processors = processors
        self.clock = clock
        self.call_timeout_s = call_timeout_s
        self._rng = rng or random.Random()

    def charge_request(self, payment: Payment, step: Step, timeout_s: float) -> ChargeRequest:
        return ChargeRequest(
            payment_id=payment.id,
            step_index=step.index,
            idempotency_key=idempotency_key(payment, step),
            intent_key=intent_key(payment, step),
            amount_minor=step.amount_minor,
            currency=payment.currency.code,
            token=step.token,
            capture=payment.capture_mode is CaptureMode.AUTOMATIC,
            customer_id=step.customer_id,
            off_session=payment.off_session,
            merchant_id=payment.merchant_id,
            timeout_s=timeout_s,
        )

    def _pick(self, step: Step) -> tuple[str, str] | None:
        for name in step.processors:
            if name in self.processors:
                return name, f"first configured processor for {step.method.value}"
        return None

    async def authorize(
        self, payment: Payment, step: Step, *, policy: RetryPolicy, deadline: Deadline
    ) -> None:
        """Drive `step` to a settled state (success, failure, action or unknown)."""
        picked = self._pick(step)
        if picked is None:
            payment.step_failed(
                step,
                Classification(Outcome.HARD, ErrorCode.NO_PROCESSOR_AVAILABLE, False, False),
                processor="",
                latency_ms=0,
            )
            return
        name, reason = picked
        processor = self.processors[name]
        delay_before = 0
        retries_done = 0
        # An answer under the current key was lost: until the processor answers for
        # that key, "it failed" is not known, only "we could not reach it".
        uncertain = False
        while True:
            generation = step.generation
            timeout = self._call_timeout(deadline)
            request = self.charge_request(payment, step, timeout)
            response, attempt = await self._call(payment, step, processor, request, reason)
            attempt.delay_before_ms = delay_before
            c = classify(response)
            if c.outcome is Outcome.SOFT and response.indeterminate:
                # A 500 is stored under its key: ask before daring a new key.
                response, c = await self._resolve_indeterminate(
                    payment, step, processor, request, attempt, response, c
                )
            decision = decide_retry(
                c,
                attempt_number=retries_done + 1,
                policy=policy,
                jitter=self._rng.random(),
                remaining_ms=deadline.remaining_ms(self.clock),
                expected_call_ms=min(attempt.latency_ms, timeout * 1000.0),
                retry_after_ms=(response.retry_after_s or 0) * 1000.0 or None,
            )
            attempt.retry_decision = decision.reason
            if c.outcome is Outcome.SUCCESS:
                payment.step_succeeded(step, processor=name, latency_ms=attempt.latency_ms)
                return
            if (
                c.outcome is Outcome.REQUIRES_ACTION
                and response.kind is ResponseKind.REQUIRES_ACTION
            ):
                payment.step_requires_action(
                    step,
                    processor=name,
                    next_action=response.next_action_type,
                    client_secret=response.client_secret,
                )
                return
            if step.generation != generation:
                uncertain = False  # a lookup proved the old key charged nothing
            elif c.outcome is Outcome.UNKNOWN:
                uncertain = True
            if not decision.retry:
                if c.outcome is Outcome.UNKNOWN:
                    payment.step_unknown(step, processor=name, error_code=c.error_code)
                elif uncertain and is_infrastructure_failure(c):
                    attempt.retry_decision += "; an earlier answer was lost: reconcile"
                    payment.step_unknown(step, processor=name, error_code=ErrorCode.UNKNOWN_OUTCOME)
                else:
                    payment.step_failed(step, c, processor=name, latency_ms=attempt.latency_ms)
                return
            retries_done += 1
            delay_before = decision.delay_ms
            await self.clock.sleep(decision.delay_ms / 1000.0)

    def _call_timeout(self, deadline: Deadline) -> float:
        remaining = deadline.remaining_ms(self.clock)
        if remaining is None:
            return self.call_timeout_s
        return max(0.001, min(self.call_timeout_s, remaining / 1000.0 - DEADLINE_RESERVE_S))

    async def _call(
        self,
        payment: Payment,
        step: Step,
        processor: Processor,
        request: ChargeRequest,
        reason: str,
        *,
        operation: str = "authorize",
    ) -> tuple[ProcessorResponse, Attempt]:
        started_at, t0 = self.clock.now(), self.clock.monotonic()
        if operation == "lookup":
            response = await processor.lookup(request, step.processor_payment_id)
        else:
            response = await processor.authorize(request)
        latency_ms = int((self.clock.monotonic() - t0) * 1000)
        c = classify(response)
        attempt = Attempt(
            number=len(step.attempts) + 1,
            processor=processor.name,
            idempotency_key=request.idempotency_key,
            started_at=started_at,
            ended_at=self.clock.now(),
            latency_ms=latency_ms,
            outcome=c.outcome,
            error_code=c.error_code,
            raw=RawError.of(response),
            routing_reason=reason,
            processor_payment_id=response.processor_payment_id,
            operation=operation,
        )
        payment.add_attempt(step, attempt)
        return response, attempt

    async def _resolve_indeterminate(
        self,
        payment: Payment,
        step: Step,
        processor: Processor,
        request: ChargeRequest,
        attempt: Attempt,
        response: ProcessorResponse,
        c: Classification,
    ) -> tuple[ProcessorResponse, Classification]:
        looked, look_attempt = await self._call(
            payment, step, processor, request, "look up before a new key", operation="lookup"
        )
        attempt.retry_decision = f"indeterminate {response.http_status}: looked up"
        if looked.kind in (ResponseKind.SUCCEEDED, ResponseKind.AUTHORIZED):
            look_attempt.retry_decision = "the processor had charged: no retry needed"
            return looked, classify(looked)
        if looked.kind in (ResponseKind.NOT_CHARGED, ResponseKind.NOT_FOUND):
            # Known not charged: the next generation's key is safe to use.
            step.generation += 1
            look_attempt.retry_decision = f"not charged: next key generation g{step.generation}"
            return response, c
        if looked.kind is ResponseKind.REQUIRES_ACTION:
            return looked, classify(looked)
        # Could not tell: keep the same key (a replay can only return the stored answer).
        look_attempt.retry_decision = "lookup inconclusive: the same key is kept"
        return response, Classification(
            Outcome.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME, retry_now=False, retry_later=False
        )

    async def reconcile(self, payment: Payment, step: Step) -> bool:
        """Learn what became of an unknown step. True when it settled."""
        name = step.processor or (step.processors[0] if step.processors else "")
        processor = self.processors.get(name)
        if processor is None:
            return False
        request = self.charge_request(payment, step, self.call_timeout_s)
        looked, attempt = await self._call(
            payment, step, processor, request, "reconcile unknown outcome", operation="lookup"
        )
        if looked.kind in (ResponseKind.SUCCEEDED, ResponseKind.AUTHORIZED):
            attempt.retry_decision = "reconciled: charged"
            payment.step_succeeded(step, processor=name, latency_ms=attempt.latency_ms)
        elif looked.kind is ResponseKind.REQUIRES_ACTION:
            attempt.retry_decision = "reconciled: waiting for the customer"
            payment.step_requires_action(
                step,
                processor=name,
                next_action=looked.next_action_type,
                client_secret=looked.client_secret,
            )
        elif looked.kind in (ResponseKind.NOT_CHARGED, ResponseKind.NOT_FOUND):
            attempt.retry_decision = "reconciled: never charged"
            payment.step_failed(
                step,
                Classification(
                    Outcome.SOFT,
                    step.error_code
                    if step.error_code is not ErrorCode.NONE
                    else ErrorCode.UNKNOWN_OUTCOME,
                    False,
                    True,
                ),
                processor=name,
                latency_ms=attempt.latency_ms,
            )
        else:
            attempt.retry_decision = "still unknown: will look again later"
            return False
        payment.step_reconciled(step, source="retrieve")
        return True
