"""Capture, void and refund calls on steps, each recorded as an attempt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from payorch.app.ports import Clock, Processor
from payorch.domain.classification import classify
from payorch.domain.payment import Attempt, Payment, RawError, Step
from payorch.domain.results import Outcome, ProcessorResponse


class Settlement:
    def __init__(self, processors: Mapping[str, Processor], clock: Clock) -> None:
        self._processors = processors
        self._clock = clock

    async def _run(
        self,
        payment: Payment,
        step: Step,
        operation: str,
        key: str,
        call: Callable[[Processor], Awaitable[ProcessorResponse]],
    ) -> bool:
        processor = self._processors.get(step.processor)
        if processor is None:
            return False
        started, t0 = self._clock.now(), self._clock.monotonic()
        response = await call(processor)
        c = classify(response)
        payment.add_attempt(
            step,
            Attempt(
                number=len(step.attempts) + 1,
                processor=step.processor,
                idempotency_key=key,
                started_at=started,
                ended_at=self._clock.now(),
                latency_ms=int((self._clock.monotonic() - t0) * 1000),
                outcome=c.outcome,
                error_code=c.error_code,
                raw=RawError.of(response),
                routing_reason=f"{operation} on the processor that authorized the step",
                retry_decision="" if c.outcome is Outcome.SUCCESS else f"{operation} failed",
                processor_payment_id=response.processor_payment_id or step.processor_payment_id,
                operation=operation,
            ),
        )
        return c.outcome is Outcome.SUCCESS

    async def capture(self, payment: Payment, step: Step) -> bool:
        key = f"payorch_{payment.id}_{step.index}_capture"
        done = await self._run(
            payment,
            step,
            "capture",
            key,
            lambda p: p.capture(step.processor_payment_id, step.amount_minor, key),
        )
        if done:
            payment.step_captured(step)
        return done

    async def void(self, payment: Payment, step: Step) -> bool:
        key = f"payorch_{payment.id}_{step.index}_void"
        done = await self._run(
            payment, step, "void", key, lambda p: p.cancel(step.processor_payment_id, key)
        )
        if done:
            payment.step_voided(step)
        return done

    @staticmethod
    def refund_key(payment: Payment, step: Step, request_id: str) -> str:
        return f"payorch_{payment.id}_{step.index}_refund_{request_id}"

    async def refund(self, payment: Payment, step: Step, amount: int, request_id: str) -> bool:
        key = self.refund_key(payment, step, request_id)
        done = await self._run(
            payment,
            step,
            "refund",
            key,
            lambda p: p.refund(step.processor_payment_id, amount, key),
        )
        if done:
            payment.step_refunded(step, amount)
        return done
