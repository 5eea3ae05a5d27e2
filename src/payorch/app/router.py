"""Runs one plan step against processors: pick (health-aware), attempt, classify,
retry or fail over, reconcile unknowns.

Never charges twice: a retry reuses the idempotency key unless the processor has
been asked (lookup) and said it did not charge under it, or declined it (a decline
is stored under its key: a retry of processing_error needs a new one), and a step moves to another
processor only when the first one certainly did not charge (a 429, a connection that
failed before sending, or a lookup that found nothing). A lookup is proof only once
the request under the key is over: while it still runs (a 409) it could charge after
the lookup, so the same key is retried and the step otherwise stays unknown. After a
lost answer the step stays with its processor until reconciled.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from payorch.app.health import Choice, HealthTracker
from payorch.app.ports import ChargeRequest, Clock, Processor
from payorch.app.processor_errors import raised_answer
from payorch.app.stalls import StallWatch
from payorch.domain.classification import (
    CANCELED_AT_PROCESSOR,
    ERROR_CODES,
    FOUND_FAILURE_CODES,
    classify,
    classify_lookup,
    is_infrastructure_failure,
    refused_us,
)
from payorch.domain.health import BreakerState, HealthPolicy, HealthState
from payorch.domain.payment import Attempt, CaptureMode, Payment, RawError, Step, StepStatus
from payorch.domain.results import (
    Classification,
    ErrorCode,
    Outcome,
    ProcessorResponse,
    ResponseKind,
)
from payorch.domain.retry import DEADLINE_RESERVE_MS, MIN_CALL_MS, RetryPolicy, decide_retry

# Time kept back from the caller's deadline to store the result.
DEADLINE_RESERVE_S = DEADLINE_RESERVE_MS / 1000.0
# Steps the processor still has to answer for: looked up, captured or voided there.
_OPEN_AT_PROCESSOR = frozenset(
    {StepStatus.PENDING, StepStatus.UNKNOWN, StepStatus.REQUIRES_ACTION, StepStatus.AUTHORIZED}
)


# The longest one run of a payment's plan may take, whatever the caller's deadline (none,
# or the CLI's day): CreatePayment, ConfirmPayment, a processor event's follow-through,
# the reconciler going on with a paused plan. No processor call starts past it and each
# ends before it, captures and voids included (PaymentService._settle_fits). It is well
# inside STALE_PROCESSING (payorch.app.payments, 5 minutes), after which the reconciler
# takes a payment stored PROCESSING as interrupted: no live run can then own it. The
# rest covers the database's writes and clocks apart between replicas.
RUN_LIMIT_S = 120.0


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the clock's monotonic scale; None means no deadline.
    `run_ends`: where the run's own limit (RUN_LIMIT_S) ends, None for no limit."""

    at: float | None
    run_ends: float | None = None

    @classmethod
    def for_run(cls, clock: Clock, deadline_s: float | None) -> Deadline:
        """A run starting now: the caller's deadline (`deadline_s` from now, None for
        none), but never past RUN_LIMIT_S from now."""
        now = clock.monotonic()
        ends = now + RUN_LIMIT_S
        return cls(ends if deadline_s is None else min(now + deadline_s, ends), ends)

    @property
    def run_limit_first(self) -> bool:
        """Whether the run's own limit ends it, not the caller's deadline: the caller gave
        none, or one no nearer (a step cut then is `run_limit_reached`, not
        `deadline_exceeded`: more time from the caller would not have helped)."""
        return self.run_ends is not None and self.at == self.run_ends

    def leaves_run_time(self, clock: Clock, seconds: float) -> bool:
        """Whether `seconds` from now still end inside the run's limit (a capture or a
        void, which the caller's own deadline never cut short)."""
        return self.run_ends is None or self.run_ends - clock.monotonic() >= seconds

    def remaining_ms(self, clock: Clock) -> float | None:
        if self.at is None:
            return None
        return max(0.0, (self.at - clock.monotonic()) * 1000.0)

    def leaves_time_for_a_call(self, clock: Clock, calls: int = 1) -> bool:
        """Whether a processor call started now (`calls` one after the other) can be
        answered before the deadline, with the time to store its result kept back
        (MIN_CALL_MS, DEADLINE_RESERVE_MS)."""
        remaining = self.remaining_ms(clock)
        return remaining is None or remaining >= calls * (MIN_CALL_MS + DEADLINE_RESERVE_MS)


def intent_key(payment: Payment, step: Step) -> str:
    return f"payorch_{payment.id}_{step.index}"


def idempotency_key(payment: Payment, step: Step) -> str:
    return f"payorch_{payment.id}_{step.index}_g{step.generation}"


def charge_request(payment: Payment, step: Step, timeout_s: float) -> ChargeRequest:
    """The request that authorizes `step`, or looks it up, under its current key."""
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
        save_for_off_session=payment.save_for_off_session,
        merchant_id=payment.merchant_id,
        metadata=dict(payment.metadata),
        timeout_s=timeout_s,
        created_at=payment.created_at,
    )


def _not_charged_proof(
    response: ProcessorResponse, c: Classification, *, looked_up_clean: bool
) -> str | None:
    """Why the processor certainly did not charge under this key, or None when it may have.
    Only then may the step move to another processor (which would charge again)."""
    if looked_up_clean:
        return "a lookup found nothing charged"
    if response.charge_not_sent:
        return "the call failed before sending anything that could charge"
    if response.kind is ResponseKind.CONNECTION_ERROR:
        return "the connection failed before the request was sent"
    if c.error_code is ErrorCode.RATE_LIMITED:
        return "a 429 is refused before any processing"
    if refused_us(c):
        return "a refused API key (or permission) is refused before any processing"
    return None


def _declined(response: ProcessorResponse) -> bool:
    """The bank declined: the processor stores the answer under its key, and no money
    moved. Retrying it (processing_error) needs the next key generation."""
    return response.kind is ResponseKind.ERROR and response.error_type == "card_error"


def _decline_found(looked: ProcessorResponse) -> ProcessorResponse | None:
    """The bank's decline a lookup found on the processor's object (Stripe's
    last_payment_error), as the answer it would have been; None when there is none."""
    if looked.kind is ResponseKind.NOT_CHARGED and looked.error_type == "card_error":
        return dataclasses.replace(looked, kind=ResponseKind.ERROR)
    return None


def _failure_found(looked: ProcessorResponse) -> ProcessorResponse | None:
    """What a lookup of a step being settled found failed on the processor's object: the
    bank's decline, or the customer's failed 3-D Secure (Stripe's
    payment_intent_authentication_failure), as the answer it would have been."""
    if looked.kind is ResponseKind.NOT_CHARGED and looked.code in FOUND_FAILURE_CODES:
        return dataclasses.replace(looked, kind=ResponseKind.ERROR)
    return _decline_found(looked)


def _closed_by_payorch(step: Step, name: str) -> bool:
    """Whether payorch asked processor `name` to cancel the step's intent there: the
    router's own close (a void attempt: the reconciler's `_close`, a void of the step) or
    the processor adapter's, which cancels an intent whose answer was the customer's
    failed 3-D Secure before it answers (the Stripe adapter's `_close` key). Any other
    cancel was someone else's (the merchant's dashboard, another system, the processor),
    a cancel at another of the step's processors included: each holds its own intent."""
    return any(
        a.processor == name
        and (
            a.operation == "void"
            or (a.operation == "authorize" and a.raw.code in FOUND_FAILURE_CODES)
        )
        for a in step.attempts
    )


def _close_key(payment: Payment, step: Step) -> str:
    """The start of the keys the router closes the step's intent under (`_close`)."""
    return f"{intent_key(payment, step)}_close"


def _voided_by_payorch(payment: Payment, step: Step, name: str) -> bool:
    """Whether payorch asked processor `name` to void the step, to release it (a cancel,
    giving up a payment paused too long: Settlement.void), not only to prove it was
    never charged (the router's close, under its own key)."""
    closing = _close_key(payment, step)
    return any(
        a.processor == name and a.operation == "void" and not a.idempotency_key.startswith(closing)
        for a in step.attempts
    )


def _failure_recorded(step: Step, name: str) -> ProcessorResponse | None:
    """The failure the step's latest charge at processor `name` was seen with (the bank's
    decline, the customer's failed 3-D Secure), as the answer it would have been: a
    lookup's before payorch closed the intent, or the answer that made the adapter close
    it. A processor clears it from the intent once canceled (Stripe's last_payment_error)."""
    for attempt in reversed(step.attempts):
        if attempt.processor != name:
            continue
        failure = _failure_found(attempt.raw.answer(ResponseKind.NOT_CHARGED))
        if failure is not None or attempt.operation == "authorize":
            return failure
    return None


# An intent canceled at the processor by someone else (the merchant in Stripe's
# dashboard, another system): hard, and never to be charged again automatically, now
# or later; the merchant meant it.
_CANCELED_ELSEWHERE = dataclasses.replace(ERROR_CODES[CANCELED_AT_PROCESSOR], retry_later=False)


class Router:
    """Health-aware: tries a step's processors in configured order, skipping open
    breakers and preferring healthy ones; records every call in the tracker."""

    def __init__(
        self,
        processors: Mapping[str, Processor],
        clock: Clock,
        *,
        call_timeout_s: float = 10.0,
        rng: random.Random | None = None,
        health: HealthTracker | None = None,
        stalls: StallWatch | None = None,
    ) -> None:
        self.processors = processors
        self.clock = clock
        self.call_timeout_s = call_timeout_s
        self._rng = rng or random.Random()
        self.health = health or HealthTracker(HealthPolicy(), clock, processors=processors)
        self.stalls = stalls

    def unconfigured(self, payment: Payment) -> set[str]:
        """The processors holding what the payment still has open that are not configured
        (taken out of the settings since): nothing there can be looked up, captured or
        voided until they are configured again."""
        return {
            name
            for step in payment.steps
            if step.status in _OPEN_AT_PROCESSOR
            for name in _holding(step)
            if name not in self.processors
        }

    def admits_from(self, names: Iterable[str]) -> datetime | None:
        """When the first of `names` (deferred: their breakers open) can be asked again."""
        return self.health.admits_from(names)

    def charge_request(self, payment: Payment, step: Step, timeout_s: float) -> ChargeRequest:
        return charge_request(payment, step, timeout_s)

    def _choose(self, step: Step, tried: Sequence[str]) -> Choice | None:
        candidates = [n for n in step.processors if n in self.processors and n not in tried]
        return self.health.choose(candidates)

    async def authorize(
        self, payment: Payment, step: Step, *, policy: RetryPolicy, deadline: Deadline
    ) -> None:
        """Drive `step` to a settled state (success, failure, action or unknown)."""
        if not deadline.leaves_time_for_a_call(self.clock):
            # A call cut off by the deadline may charge with its answer lost: send nothing,
            # and say so, naming what ran out: the caller's deadline, or the run's own
            # limit. (Retries and failovers are held to the same MIN_CALL_MS.)
            code = (
                ErrorCode.RUN_LIMIT_REACHED
                if deadline.run_limit_first
                else ErrorCode.DEADLINE_EXCEEDED
            )
            payment.step_failed(
                step,
                Classification(Outcome.SOFT, code, False, True),
                processor="",
                latency_ms=0,
            )
            return
        choice = self._choose(step, ())
        if choice is None:
            # Every breaker is open (or nothing is configured): fail fast, call no one.
            # Our outage, not the customer's: worth charging again later (installments
            # do), so retry_later, as StepFailed tells receivers.
            payment.step_failed(
                step,
                Classification(Outcome.HARD, ErrorCode.NO_PROCESSOR_AVAILABLE, False, True),
                processor="",
                latency_ms=0,
            )
            return
        tried: list[str] = []
        name, reason, probe = choice.processor, choice.reason, choice.probe
        processor = self.processors[name]
        delay_before = 0
        retries_here = 0
        # An answer under the current key was lost: until the processor answers for
        # that key, "it failed" is not known, only "we could not reach it".
        uncertain = False
        while True:
            generation = step.generation
            timeout = self._call_timeout(deadline)
            request = self.charge_request(payment, step, timeout)
            response, attempt = await self._call(
                payment, step, name, processor, request, reason, probe=probe
            )
            probe = False
            attempt.delay_before_ms = delay_before
            c = classify(response)
            if c.outcome is Outcome.SOFT and response.indeterminate:
                # A 500 (or 424) is stored under its key: the request is over, so ask before
                # daring a new key. (A request still running, a 409, is UNKNOWN: never asked.)
                response, c = await self._resolve_indeterminate(
                    payment, step, name, processor, request, attempt, response, c, deadline
                )
            decision = decide_retry(
                c,
                attempt_number=retries_here + 1,
                policy=policy,
                jitter=self._rng.random(),
                remaining_ms=deadline.remaining_ms(self.clock),
                expected_call_ms=self._expected_call_ms(name, attempt.latency_ms, timeout),
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
            looked_up_clean = step.generation != generation
            if looked_up_clean:
                uncertain = False  # a lookup proved the old key charged nothing
            elif c.outcome is Outcome.UNKNOWN:
                uncertain = True

            why = decision.reason
            retry_here = decision.retry
            if retry_here:
                retry_here, why = self._may_retry_here(name, c, decision.reason)
            waited_ms = 0
            if retry_here:
                attempt.retry_decision = f"{decision.reason} on {name}"
                # Counted before the wait: payments backing off together share the budget.
                self.health.record_retry(name)
                await self.clock.sleep(decision.delay_ms / 1000.0)
                waited_ms = decision.delay_ms
                # Other payments' answers came in meanwhile: a breaker that opened (or
                # went half-open, its probes taken) while this one waited gets no retry.
                refused = self._health_refuses_retry(name, c)
                if refused is not None:
                    why = f"{decision.reason} withheld: {refused}"
                    attempt.retry_decision = why
                    retry_here = False
            if retry_here:
                if _declined(response):
                    # The same key would only replay the stored decline; and a decline
                    # settles the key (even one whose answer was lost): nothing charged.
                    step.generation += 1
                    uncertain = False
                    attempt.retry_decision += (
                        f" under the next key generation g{step.generation}: a decline"
                        " is stored under its key"
                    )
                retries_here += 1
                delay_before = decision.delay_ms
                reason = f"{name}: retry {retries_here} on the same processor"
                continue

            proof = _not_charged_proof(response, c, looked_up_clean=looked_up_clean)
            nxt, why_not = self._failover(
                step,
                [*tried, name],
                name,
                c,
                proof=None if uncertain else proof,
                remaining_ms=deadline.remaining_ms(self.clock),
                expected_call_ms=self._expected_call_ms(name, attempt.latency_ms, timeout),
            )
            if nxt is not None:
                attempt.retry_decision = f"{why}; failing over to {nxt.processor}: {proof}"
                tried.append(name)
                name, probe = nxt.processor, nxt.probe
                reason = f"failover from {tried[-1]}; {nxt.reason}"
                processor = self.processors[name]
                retries_here, delay_before, uncertain = 0, waited_ms, False
                # The old processor's object is not this one's: never look it up here.
                step.processor_payment_id = ""
                continue

            attempt.retry_decision = f"{why}; {why_not}" if why_not else why
            if c.outcome is Outcome.UNKNOWN:
                payment.step_unknown(step, processor=name, error_code=c.error_code)
            elif uncertain and is_infrastructure_failure(c):
                attempt.retry_decision += "; an earlier answer was lost: reconcile"
                payment.step_unknown(step, processor=name, error_code=ErrorCode.UNKNOWN_OUTCOME)
            else:
                payment.step_failed(step, c, processor=name, latency_ms=attempt.latency_ms)
            return

    def _may_retry_here(self, name: str, c: Classification, reason: str) -> tuple[bool, str]:
        """Retry on the same processor only while its health and retry budget allow."""
        refused = self._health_refuses_retry(name, c)
        if refused is not None:
            return False, refused
        allowed, why_not = self.health.may_retry(name)
        if not allowed:
            return False, why_not
        return True, reason

    def _health_refuses_retry(self, name: str, c: Classification) -> str | None:
        """Why the processor's health (not its budget) allows no retry of `c` there now."""
        state = self.health.state(name)
        if (
            c.outcome is Outcome.SOFT
            and is_infrastructure_failure(c)
            and state is not HealthState.HEALTHY
        ):
            return f"{name} is {state.value}: no retry on it"
        breaker = self.health.breaker(name)
        if breaker is not BreakerState.CLOSED:
            return f"{name}'s breaker is {breaker.value}: no retry on it"
        return None

    def _failover(
        self,
        step: Step,
        tried: Sequence[str],
        name: str,
        c: Classification,
        *,
        proof: str | None,
        remaining_ms: float | None,
        expected_call_ms: float,
    ) -> tuple[Choice | None, str]:
        """Another processor for the step, only when `name` is known not to have charged:
        after a retryable infrastructure failure, or a processor refusing our key (which
        it would refuse again: nothing there can take the step until it is replaced)."""
        transient = c.outcome is Outcome.SOFT and c.retry_now and is_infrastructure_failure(c)
        if not (transient or refused_us(c)):
            return None, ""
        others = [n for n in step.processors if n in self.processors and n not in tried]
        if not others:
            return None, ""
        if proof is None:
            return None, f"no failover: {name} may have charged under this key"
        nxt = self._choose(step, tried)
        if nxt is None:
            return None, "no failover: no other processor can take the step"
        if remaining_ms is not None:
            # The call goes to the next processor: its usual time is what must fit (the
            # failed one's stands in while the next has no calls to judge by).
            usual = self._usual_call_ms(nxt.processor)
            expected = expected_call_ms if usual is None else usual
            if expected + DEADLINE_RESERVE_S * 1000 > remaining_ms:
                self.health.abandon(nxt.processor, probe=nxt.probe)
                return None, f"no failover: {int(remaining_ms)} ms left before the deadline"
        return nxt, ""

    def _usual_call_ms(self, name: str) -> float | None:
        """The processor's recent p95 (up to the call timeout); None without calls."""
        health = self.health.snapshot(name)
        if health is None or not health.stats.requests:
            return None
        return min(health.stats.p95_latency_ms, self.call_timeout_s * 1000.0)

    def _expected_call_ms(self, name: str, latency_ms: int, timeout_s: float) -> float:
        """How long the next call is likely to take: this one's latency, or the
        processor's recent p95 when longer. A 429 or a refused connection answers at
        once, a charge in its usual time: a retry timed by the failure alone would be
        cut off by the deadline, its outcome unknown, and may charge all the same."""
        health = self.health.snapshot(name)
        usual = health.stats.p95_latency_ms if health is not None else 0.0
        return max(float(MIN_CALL_MS), min(max(float(latency_ms), usual), timeout_s * 1000.0))

    def _call_timeout(self, deadline: Deadline) -> float:
        remaining = deadline.remaining_ms(self.clock)
        if remaining is None:
            return self.call_timeout_s
        return max(0.001, min(self.call_timeout_s, remaining / 1000.0 - DEADLINE_RESERVE_S))

    async def _call(
        self,
        payment: Payment,
        step: Step,
        name: str,
        processor: Processor,
        request: ChargeRequest,
        reason: str,
        *,
        operation: str = "authorize",
        probe: bool = False,
        key: str = "",
    ) -> tuple[ProcessorResponse, Attempt]:
        """One call, recorded as an attempt: authorize, lookup, or void (under `key`)."""
        started_at, t0 = self.clock.now(), self.clock.monotonic()
        try:
            if operation == "lookup":
                response = await processor.lookup(request, step.processor_payment_id)
            elif operation == "void":
                response = await processor.cancel(step.processor_payment_id, key)
            else:
                response = await processor.authorize(request)
        except Exception as exc:
            # An adapter that raised instead of answering: its outcome is unknown.
            response = raised_answer(name, operation, exc)
        except BaseException:  # cancelled: the server stopping, the caller gone
            self.health.abandon(name, probe=probe, started=t0)
            raise
        t1 = self.clock.monotonic()
        latency_s = t1 - t0
        latency_ms = int(latency_s * 1000)
        c = classify(response)
        self.health.record_answer(
            name,
            response,
            c,
            latency_s,
            started=t0,
            lookup=operation != "authorize",
            probe=probe,
            # Time this process was stalled is not the processor's: left out.
            stalled_s=self.stalls.stalled_s(t0, t1) if self.stalls is not None else 0.0,
            cut_short=request.timeout_s < self.call_timeout_s,
        )
        # A lookup is stored as an attempt of its own: its answer, even "not charged", is
        # what it was for. The step's verdict is the caller's, from the response.
        stored = classify_lookup(response) if operation == "lookup" else c
        attempt = Attempt(
            number=len(step.attempts) + 1,
            processor=processor.name,
            idempotency_key=key or request.idempotency_key,
            started_at=started_at,
            ended_at=self.clock.now(),
            latency_ms=latency_ms,
            outcome=stored.outcome,
            error_code=stored.error_code,
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
        name: str,
        processor: Processor,
        request: ChargeRequest,
        attempt: Attempt,
        response: ProcessorResponse,
        c: Classification,
        deadline: Deadline,
    ) -> tuple[ProcessorResponse, Classification]:
        if not deadline.leaves_time_for_a_call(self.clock):
            # The 500 took the time a lookup needs: cut off, it would learn nothing.
            attempt.retry_decision = (
                f"indeterminate {response.http_status}: no time left to look it up; reconcile"
            )
            return response, Classification(
                Outcome.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME, retry_now=False, retry_later=False
            )
        # Only the time left before the caller's deadline: the 500 took some of it.
        request = dataclasses.replace(request, timeout_s=self._call_timeout(deadline))
        looked, look_attempt = await self._call(
            payment, step, name, processor, request, "look up before a new key", operation="lookup"
        )
        attempt.retry_decision = f"indeterminate {response.http_status}: looked up"
        if looked.kind in (ResponseKind.SUCCEEDED, ResponseKind.AUTHORIZED):
            look_attempt.retry_decision = "the processor had charged: no retry needed"
            return looked, classify(looked)
        declined = _decline_found(looked)
        if declined is not None:
            # The bank declined under this key before the 500: that is its answer (a
            # stolen card is not tried again; processing_error moves to the next key).
            look_attempt.retry_decision = "declined: the bank's answer stands"
            return declined, classify(declined)
        if looked.kind in (ResponseKind.NOT_CHARGED, ResponseKind.NOT_FOUND):
            # Known not charged: the next generation's key is safe to use.
            step.generation += 1
            look_attempt.retry_decision = f"not charged: next key generation g{step.generation}"
            if response.should_retry is False:
                # Stripe-Should-Retry: false (Stripe sends it with most 500s) spoke of the
                # key just retired, whose retry would only replay the stored failure. The
                # next key is a new request the header said nothing about.
                response = dataclasses.replace(response, should_retry=None)
                return response, classify(response)
            return response, c
        if looked.kind is ResponseKind.REQUIRES_ACTION:
            return looked, classify(looked)
        # Could not tell: keep the same key (a replay can only return the stored answer).
        look_attempt.retry_decision = "lookup inconclusive: the same key is kept"
        return response, Classification(
            Outcome.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME, retry_now=False, retry_later=False
        )

    def _timed(self, request: ChargeRequest, run: Deadline | None) -> ChargeRequest:
        """`request` with no more time than `run` leaves (none: the calls' timeout)."""
        if run is None:
            return request
        return dataclasses.replace(request, timeout_s=self._call_timeout(run))

    async def _close(
        self,
        payment: Payment,
        step: Step,
        name: str,
        request: ChargeRequest,
        run: Deadline | None = None,
    ) -> tuple[ProcessorResponse, Attempt]:
        """Cancel the step's intent at `name`, then look it up: what it holds now."""
        processor = self.processors[name]
        # A key of its own per try: a cancel is idempotent on the intent anyway, and a
        # 500 stored under one key must not be replayed to every later try.
        key = f"{_close_key(payment, step)}{len(step.attempts) + 1}"
        _, void = await self._call(
            payment,
            step,
            name,
            processor,
            self._timed(request, run),
            "close the intent: only a canceled one proves nothing was charged",
            operation="void",
            key=key,
        )
        void.retry_decision = "looked up again"
        return await self._call(
            payment,
            step,
            name,
            processor,
            self._timed(request, run),
            "look the intent up after closing it",
            operation="lookup",
        )

    async def reconcile(
        self,
        payment: Payment,
        step: Step,
        *,
        deferred: set[str] | None = None,
        run: Deadline | None = None,
    ) -> bool:
        """Learn what became of an unknown step. True when it settled.

        With `deferred` (the reconciler's pass: it comes back), a processor whose breaker
        is open is not asked: its name is added to `deferred`, nothing is recorded, and
        the step cannot be failed by this pass. Half-open, it is asked as one of its
        probes, while one is free.

        A step that went unknown stays with its processor: only that one is asked.
        A step left pending by a server that died may have failed over before it
        died: every configured processor is asked, and it fails only if none charged.

        Such a step's last answer was lost, so a request under its key may still be
        running at the processor: an intent that reads "not charged" (before a confirm,
        or after an earlier decline) could be charged a moment later. Only a closed
        (canceled) intent proves it: the reconciler cancels it and looks again, and
        while the cancel does not go through (the confirm holds the intent) it waits.
        The same holds for a step paused for the customer whose authentication failed:
        the client holds the intent's secret and may confirm it again (another card).

        With `run` (the reconciler's work on the payment, held to RUN_LIMIT_S), no call
        starts that could not be answered inside it and each is cut to it: a processor
        left unasked for want of time leaves the step as it was, for the next pass.
        """
        names = _holding(step)
        if not names or any(n not in self.processors for n in names):
            return False  # PaymentService.reconcile_due names the missing processor
        request = self.charge_request(payment, step, self.call_timeout_s)
        inconclusive = False
        attempt: Attempt | None = None
        # Not charged: by default soft, for later; the bank's decline when a lookup saw it.
        # A step with no answer at all (a server died on it) or one whose outcome was
        # unknown was interrupted: now known, it is no longer `unknown_outcome`. A lost
        # answer's own code (`timeout`, `network_error`) still says what happened.
        verdict = Classification(
            Outcome.SOFT,
            ErrorCode.INTERRUPTED
            if step.error_code in (ErrorCode.NONE, ErrorCode.UNKNOWN_OUTCOME)
            else step.error_code,
            False,
            True,
        )
        # An intent found canceled that payorch never asked to cancel was canceled at the
        # processor by someone else: a step paused for the customer, or one whose answer
        # was lost, was not interrupted, and is not to be charged again.
        canceled_there = False
        for name in names:
            closed_by_payorch = _closed_by_payorch(step, name)
            if run is not None and not run.leaves_time_for_a_call(self.clock):
                inconclusive = True  # asked on a later pass: nothing recorded
                continue
            probe = False
            if deferred is not None:
                admitted = self.health.admit(name)
                if admitted is None:  # asked on a later pass, once its breaker lets it
                    deferred.add(name)
                    inconclusive = True
                    continue
                probe = admitted.probe
            if len(names) > 1:
                step.processor_payment_id = ""  # each processor has its own object
            looked, attempt = await self._call(
                payment,
                step,
                name,
                self.processors[name],
                self._timed(request, run),
                "reconcile unknown outcome",
                operation="lookup",
                probe=probe,
            )
            canceled_there = (
                looked.kind is ResponseKind.NOT_CHARGED and looked.closed and not closed_by_payorch
            )
            if looked.kind is ResponseKind.NOT_CHARGED and not looked.closed:
                if run is not None and not run.leaves_time_for_a_call(self.clock, calls=2):
                    attempt.retry_decision = (
                        "not closed: no time left in this run to close it; will look again later"
                    )
                    inconclusive = True
                    continue
                looked, attempt = await self._close(payment, step, name, request, run)
                closed_by_payorch = True
                if looked.kind is ResponseKind.NOT_CHARGED and not looked.closed:
                    attempt.retry_decision = (
                        "not closed: a request still running may charge it; will look again later"
                    )
                    inconclusive = True
                    continue
            if looked.kind in (ResponseKind.SUCCEEDED, ResponseKind.AUTHORIZED):
                attempt.retry_decision = "reconciled: charged"
                payment.step_succeeded(step, processor=name, latency_ms=attempt.latency_ms)
                payment.step_reconciled(step, source="retrieve")
                return True
            if looked.kind is ResponseKind.REQUIRES_ACTION:
                if step.status is StepStatus.REQUIRES_ACTION:
                    # Paused for the customer before and still: nothing was learned.
                    attempt.retry_decision = "still waiting for the customer"
                    return False
                attempt.retry_decision = "reconciled: waiting for the customer"
                payment.step_requires_action(
                    step,
                    processor=name,
                    next_action=looked.next_action_type,
                    client_secret=looked.client_secret,
                )
                payment.step_reconciled(step, source="retrieve")
                return True
            if (
                looked.kind is ResponseKind.NOT_CHARGED
                and looked.closed
                and step.status is StepStatus.REQUIRES_ACTION
                and _voided_by_payorch(payment, step, name)
            ):
                # payorch voided the paused step itself and the answer was lost: it reads
                # as that void answered would have left it, voided; not failed.
                attempt.retry_decision = "reconciled: voided by payorch, its answer lost"
                payment.step_voided(step)
                return True
            if looked.kind in (ResponseKind.NOT_CHARGED, ResponseKind.NOT_FOUND):
                attempt.retry_decision = "reconciled: never charged"
                declined = _failure_found(looked)
                if declined is None and looked.closed and closed_by_payorch:
                    # Closed by payorch, in this pass or an earlier one (or by the adapter
                    # after a failed 3-D Secure): the processor cleared from the intent
                    # the failure it was seen with, which is what happened.
                    declined = _failure_recorded(step, name)
                found = classify(declined) if declined is not None else None
                how = "declined" if declined is not None and _declined(declined) else "failed"
                if found is not None and not (
                    found.outcome is Outcome.REQUIRES_ACTION
                    and payment.off_session
                    and canceled_there
                ):
                    # As if the decline had been the answer: a hard one stays hard. So
                    # does the customer's failed 3-D Secure (authentication_failed), and
                    # authentication_required: on-session the customer was there, and
                    # off-session the lookup found no intent open for them (closed, or
                    # not waiting): both fail as the confirm's answer fails them when it
                    # leaves nothing to resume. Not the off-session decline that paused
                    # the step, its intent canceled by someone else since: that asked for
                    # the customer, and the cancel is what happened (below).
                    verdict = found
                    attempt.retry_decision += f", {how} ({verdict.error_code.value})"
                elif canceled_there:
                    # As a confirm refused on a canceled intent reads (the dashboard's
                    # cancel, or another system's): not interrupted, and not by us; and
                    # never charged again, now or on the dunning ladder.
                    verdict = _CANCELED_ELSEWHERE
                    attempt.retry_decision += ", canceled at the processor"
            else:
                attempt.retry_decision = "still unknown: will look again later"
                inconclusive = True
        if inconclusive or attempt is None:
            return False
        payment.step_failed(step, verdict, processor=names[-1], latency_ms=attempt.latency_ms)
        payment.step_reconciled(step, source="retrieve")
        return True


def _holding(step: Step) -> list[str]:
    """The processors that may hold the step's money: its own, or, for a step a server
    died on before it was answered, every one it was to try."""
    return [step.processor] if step.processor else list(step.processors)
