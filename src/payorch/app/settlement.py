"""Capture, void and refund calls on steps, each recorded as an attempt."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from payorch.app.health import HealthTracker
from payorch.app.ports import Clock, Processor
from payorch.app.processor_errors import raised_answer
from payorch.app.router import charge_request
from payorch.app.stalls import StallWatch
from payorch.domain.classification import classify, classify_lookup
from payorch.domain.payment import Attempt, Payment, RawError, Step, StepStatus
from payorch.domain.results import ChargeRefunds, Outcome, ProcessorResponse, ResponseKind

# What the processor holds once a capture or void went through.
_DONE = {"capture": ResponseKind.SUCCEEDED, "void": ResponseKind.NOT_CHARGED}
# A lookup after a failed capture or void: the call may have gone through after all
# (its answer lost, or an error stored under the key and replayed, as Stripe replays a
# 500 or a 424 for 24 hours), or the other one did: a capture and a cancel raced, or the
# authorization lapsed (the processor cancels it: Stripe after 7 days). Either way the
# step is recorded as the processor holds it, captured or voided, not left owing a
# call that can never go through.
_LOST_TO = {
    "capture": (
        ResponseKind.NOT_CHARGED,
        "canceled at the processor (voided by another call, or the authorization lapsed):"
        " recorded as voided",
    ),
    "void": (
        ResponseKind.SUCCEEDED,
        "captured at the processor (by another call): recorded as captured",
    ),
}
# What a lookup finds when the call could still go through: the intent is still open.
# After a failure stored under the key and replayed (Stripe stores a 500 or a 424 and
# replays it for 24 hours, to every try under that key), the call is made again under the next key: safe, as a
# PaymentIntent is captured or canceled once only, and Stripe refuses a second.
_OPEN = {
    "capture": frozenset({ResponseKind.AUTHORIZED}),
    "void": frozenset({ResponseKind.AUTHORIZED, ResponseKind.REQUIRES_ACTION}),
}
LOOKUP_TIMEOUT_S = 10.0
# The longest idempotency key Stripe takes, and what the attempts table stores.
MAX_KEY_LENGTH = 255
# How a refund call ends without saying whether it refunded: no answer (UNKNOWN), or a
# failure that proves nothing (SOFT: a 500, which Stripe may store after refunding; a
# 429 too, at the cost of one lookup). The processor replays the answer under the key
# for a while only (Stripe: 24 hours), then the same key makes a new refund: such a
# refund is looked for before it is sent again. A HARD failure refused it: none was made.
_REFUND_IN_DOUBT = frozenset({Outcome.UNKNOWN, Outcome.SOFT})
# A part is sent at most this many times under its key (its first try, then the repeats
# of a caller whose answers proved nothing): a caller retrying in a loop used to add a
# lookup and a send per repeat, without bound. Past that, a repeat calls no one and the
# reconciler looks the part up on its back-off.
MAX_REFUND_SENDS = 3
# A call under a refund's key this long over is over at the processor as well (the
# interval after which a payment left PROCESSING counts as interrupted): a lookup that
# finds no refund under the key then proves none was made, and none will be. Younger,
# the call may still be on its way or running (in flight from another server, say).
REFUND_SETTLED_AFTER = timedelta(minutes=5)
_REFUND_FOUND_DECISIONS = {
    ResponseKind.DONE: "the refund went through: not sent again",
    ResponseKind.NOT_FOUND: "no refund under the key: sent again",
}


@dataclass(frozen=True, slots=True)
class _Answer:
    response: ProcessorResponse
    started: datetime
    latency_ms: int


class Settlement:
    def __init__(
        self,
        processors: Mapping[str, Processor],
        clock: Clock,
        *,
        health: HealthTracker | None = None,
        stalls: StallWatch | None = None,
    ) -> None:
        self._processors = processors
        self._clock = clock
        # The router's: every call is judged as its calls are, and the reconciler's wait
        # for an open breaker. None: neither.
        self._health = health
        self._stalls = stalls

    async def _run(
        self,
        payment: Payment,
        step: Step,
        operation: str,
        key: str,
        call: Callable[[Processor], Awaitable[ProcessorResponse]],
        *,
        deferred: set[str] | None = None,
    ) -> tuple[Outcome, ProcessorResponse] | None:
        """Make the call, recorded as an attempt and in the processor's health; its
        outcome and the processor's answer (None: no such processor, or deferred: the
        reconciler's call at a processor whose breaker is open, see _admitted)."""
        processor = self._processors.get(step.processor)
        if processor is None:
            return None
        probe = self._admitted(step, deferred)
        if probe is None:
            return None
        answer = await self._timed(
            step, call(processor), lookup=False, probe=probe, operation=operation
        )
        return self._record(payment, step, operation, key, answer), answer.response

    def _admitted(self, step: Step, deferred: set[str] | None) -> bool | None:
        """Whether a call to the step's processor may go now, and as a half-open probe
        (True) or not (False). A caller's call (`deferred` None) always goes. The
        reconciler's (`deferred`: it comes back) waits while the breaker is open: None,
        the processor added to `deferred`, nothing sent or recorded."""
        if deferred is None or self._health is None:
            return False
        admitted = self._health.admit(step.processor)
        if admitted is None:
            deferred.add(step.processor)
            return None
        return admitted.probe

    async def _settle(
        self,
        payment: Payment,
        step: Step,
        operation: str,
        call: Callable[[str, Processor], Awaitable[ProcessorResponse]],
        deferred: set[str] | None,
    ) -> bool:
        """Make a capture or void call and record the step as the processor then holds
        it; True when this call went through. A failed one is looked up: it may have
        gone through after all, or the other one may have won, and the step is recorded
        as the processor holds it. A stored failure (500, 424) replayed over an intent
        still open is made again once, under the next key. Otherwise the step is left as it was
        (owed, to the caller). With `deferred` (the reconciler's pass), no call goes to a
        processor whose breaker is open (_admitted): the step is left as it was."""
        done = _DONE[operation]
        other, lost = _LOST_TO[operation]
        held: ResponseKind | None = None
        key = _settle_key(payment, step, operation)
        for _ in range(2):
            made = await self._run(
                payment, step, operation, key, functools.partial(call, key), deferred=deferred
            )
            if made is not None and made[0] is Outcome.SUCCESS:
                held = done
                break
            # A failure the processor stored under the key (indeterminate: Stripe's 500 or
            # 424), replayed: no later try under that key can go through.
            replayed_failure = made is not None and made[1].replayed and made[1].indeterminate
            status = made[1].http_status if made is not None else 0
            again = f"a {status} stored under the key: the {operation} is made under the next key"
            found = await self._look_up_step(
                payment,
                step,
                key,
                reason=f"lookup after a failed {operation}",
                decisions={
                    done: f"the {operation} went through",
                    other: lost,
                    **dict.fromkeys(_OPEN[operation] if replayed_failure else (), again),
                },
                otherwise=f"the {operation} is still owed",
                deferred=deferred,
            )
            held = found if found in (done, other) else None
            if not (replayed_failure and found in _OPEN[operation]):
                break
            key = _settle_key(payment, step, operation, next_generation=True)
        _record_held(payment, step, held)
        return held is done

    async def _look_up_step(
        self,
        payment: Payment,
        step: Step,
        key: str,
        *,
        reason: str,
        decisions: Mapping[ResponseKind, str],
        otherwise: str,
        deferred: set[str] | None = None,
    ) -> ResponseKind | None:
        """Look the step's PaymentIntent up (an attempt of its own); None when it cannot
        be (no processor for it, or no intent yet) or must wait (_admitted)."""
        processor = self._processors.get(step.processor)
        if processor is None or not step.processor_payment_id:
            return None
        probe = self._admitted(step, deferred)
        if probe is None:
            return None
        request = charge_request(payment, step, LOOKUP_TIMEOUT_S)
        return await self._lookup(
            payment,
            step,
            key,
            processor.lookup(request, step.processor_payment_id),
            reason=reason,
            decisions=decisions,
            otherwise=otherwise,
            probe=probe,
        )

    async def _lookup(
        self,
        payment: Payment,
        step: Step,
        key: str,
        call: Awaitable[ProcessorResponse],
        *,
        reason: str,
        decisions: Mapping[ResponseKind, str],
        otherwise: str,
        probe: bool = False,
    ) -> ResponseKind:
        """A lookup about the call under `key`, recorded as an attempt of its own and
        in the processor's health (`probe`: one of its half-open probes)."""
        found = await self._timed(step, call, lookup=True, probe=probe)
        kind = found.response.kind
        self._record(
            payment,
            step,
            "lookup",
            key,
            found,
            reason=reason,
            decision=decisions.get(kind, otherwise),
        )
        return kind

    async def _timed(
        self,
        step: Step,
        call: Awaitable[ProcessorResponse],
        *,
        lookup: bool,
        probe: bool,
        operation: str = "lookup",
    ) -> _Answer:
        """The call to the step's processor, timed and judged in its health as the
        router's calls are: an infrastructure failure (5xx, 429, timeout) counts against
        it, a refusal (4xx) and a lookup's answer are neutral, a capture, void or refund
        that went through is a success; its latency, less any stall, is the processor's.
        `probe`: one of its half-open probes."""
        started, t0 = self._clock.now(), self._clock.monotonic()
        try:
            response = await call
        except Exception as exc:
            # An adapter that raised instead of answering: its outcome is unknown.
            response = raised_answer(step.processor, operation, exc)
        except BaseException:  # cancelled: the server stopping, the caller gone
            if self._health is not None:
                self._health.abandon(step.processor, probe=probe, started=t0)
            raise
        t1 = self._clock.monotonic()
        if self._health is not None:
            self._health.record_answer(
                step.processor,
                response,
                classify(response),
                t1 - t0,
                started=t0,
                lookup=lookup,
                authorize=False,
                probe=probe,
                stalled_s=self._stalls.stalled_s(t0, t1) if self._stalls else 0.0,
            )
        return _Answer(response, started, int((t1 - t0) * 1000))

    def _record(
        self,
        payment: Payment,
        step: Step,
        operation: str,
        key: str,
        answer: _Answer,
        *,
        reason: str = "",
        decision: str = "",
    ) -> Outcome:
        c = (classify_lookup if operation == "lookup" else classify)(answer.response)
        payment.add_attempt(
            step,
            Attempt(
                number=len(step.attempts) + 1,
                processor=step.processor,
                idempotency_key=key,
                started_at=answer.started,
                ended_at=self._clock.now(),
                latency_ms=answer.latency_ms,
                outcome=c.outcome,
                error_code=c.error_code,
                raw=RawError.of(answer.response),
                routing_reason=reason or f"{operation} on the processor that authorized the step",
                retry_decision=decision
                or ("" if c.outcome is Outcome.SUCCESS else f"{operation} failed"),
                processor_payment_id=answer.response.processor_payment_id
                or step.processor_payment_id,
                operation=operation,
            ),
        )
        return c.outcome

    async def look_up_hold(self, payment: Payment, step: Step) -> ResponseKind | None:
        """The processor says something happened to a step we hold authorized: look it
        up, and record a hold it released (canceled: from its dashboard, or lapsed) as
        voided, one it captured (its dashboard, say) as captured. Returns what the
        look-up found (None: the step cannot be looked up)."""
        found = await self._look_up_step(
            payment,
            step,
            step.attempts[-1].idempotency_key if step.attempts else "",
            reason="lookup after the processor's event about a held step",
            decisions={
                ResponseKind.NOT_CHARGED: "canceled at the processor: recorded as voided",
                ResponseKind.SUCCEEDED: "captured at the processor: recorded as captured",
            },
            otherwise="still held: nothing to record",
        )
        _record_held(payment, step, found)
        return found

    async def capture(
        self, payment: Payment, step: Step, *, deferred: set[str] | None = None
    ) -> bool:
        """Capture the step (`deferred`: the reconciler's, see _settle)."""
        return await self._settle(
            payment,
            step,
            "capture",
            lambda key, p: p.capture(
                step.processor_payment_id, step.amount_minor, key, currency=payment.currency.code
            ),
            deferred,
        )

    async def void(self, payment: Payment, step: Step, *, deferred: set[str] | None = None) -> bool:
        """Void the step (`deferred`: the reconciler's, see _settle)."""
        return await self._settle(
            payment,
            step,
            "void",
            lambda key, p: p.cancel(step.processor_payment_id, key),
            deferred,
        )

    @staticmethod
    def refund_key(payment: Payment, step: Step, request_id: str) -> str:
        key = f"payorch_{payment.id}_{step.index}_refund_{request_id}"
        if len(key) <= MAX_KEY_LENGTH:
            return key
        # A request_id too long to fit stands in by its digest: the same id, the same key.
        digest = hashlib.sha256(request_id.encode()).hexdigest()
        return f"payorch_{payment.id}_{step.index}_refund_sha256_{digest}"

    @staticmethod
    def refund_made(step: Step, key: str) -> bool:
        """Whether the refund under `key` went through: the last attempt under the key
        succeeded, the refund itself or a lookup that found it. (A lookup that found
        nothing is followed by the refund it let through, so it is never the last.)"""
        last = _last_under(step, key)
        return last is not None and last.outcome is Outcome.SUCCESS

    @staticmethod
    def refund_refused(step: Step, key: str) -> Attempt | None:
        """The processor's refusal of the refund under `key` (HARD: a 4xx such as
        `charge_disputed`), when that was the last answer under the key: the refund is
        over. The processor stores a refusal under its key (Stripe, for a day) and would
        only replay it, and a repeat of the request sends nothing again (a refund made
        under another request_id may take the amount)."""
        last = _last_under(step, key)
        if last is not None and last.operation == "refund" and last.outcome is Outcome.HARD:
            return last
        return None

    async def refunds_at(self, processor_name: str, processor_payment_id: str) -> ChargeRefunds:
        """A charge's refunds as the processor holds them (NOT_FOUND: no such processor)."""
        processor = self._processors.get(processor_name)
        if processor is None:
            return ChargeRefunds(ProcessorResponse(ResponseKind.NOT_FOUND))
        try:
            return await processor.refunds(processor_payment_id)
        except Exception as exc:  # an adapter that raised: nothing known of the refunds
            return ChargeRefunds(raised_answer(processor_name, "refunds", exc))

    def record_refunds(self, payment: Payment, step: Step, found: ChargeRefunds) -> bool:
        """Record on the step what the processor holds about its refunds and payorch
        has not counted yet; True when anything changed.

        A refund made elsewhere (Stripe's dashboard) is counted once: it is recorded as
        an attempt of the step (operation refund) under the processor's refund id, and a
        refund with such a record is never counted again. Payorch's own refunds, under
        its keys, are counted by RefundPayment, not here. A counted refund that failed
        at the processor (the money stayed with the merchant) is no longer counted: a
        failed attempt under its id says so, once, and ends its story."""
        held_refunded = sum(r.amount_minor for r in found.refunds if r.made)
        changed = False
        for refund in found.refunds:
            last = _last_under(step, refund.refund_id)
            # Ours, made after all under a key recorded not made (by the reconciler, its
            # call running past REFUND_SETTLED_AFTER): counted as one made elsewhere.
            late = (
                bool(refund.payorch_key)
                and self.refund_refused(step, refund.payorch_key) is not None
            )
            if refund.made and (not refund.payorch_key or late) and last is None:
                # Never more refunded than the processor holds refunded, nor captured.
                room = min(step.captured_minor, held_refunded) - step.refunded_minor
                if not 0 < refund.amount_minor <= room:
                    continue
                self._record_refund(payment, step, refund.refund_id, made=True)
                payment.step_refunded(step, refund.amount_minor)
                payment.refunded(refund.amount_minor, refund.refund_id)
                changed = True
            elif not refund.made and 0 < refund.amount_minor <= step.refunded_minor:
                counted = last is not None and last.outcome is Outcome.SUCCESS
                ours = last is None and bool(refund.payorch_key)
                if counted or (ours and self.refund_made(step, refund.payorch_key)):
                    self._record_refund(payment, step, refund.refund_id, made=False)
                    payment.step_refund_failed(step, refund.amount_minor, refund.refund_id)
                    changed = True
        return changed

    def _record_refund(self, payment: Payment, step: Step, refund_id: str, *, made: bool) -> None:
        response = (
            ProcessorResponse(ResponseKind.DONE, message=f"refund {refund_id} made")
            if made
            else ProcessorResponse(
                ResponseKind.ERROR, code="refund_failed", message=f"refund {refund_id} failed"
            )
        )
        self._record(
            payment,
            step,
            "refund",
            refund_id,
            _Answer(response, self._clock.now(), 0),
            reason="a refund the processor told of (its event), read from it",
            decision=(
                "made at the processor, not through payorch: counted as refunded"
                if made
                else "failed at the processor: no longer counted as refunded"
            ),
        )

    @staticmethod
    def refund_sends_spent(step: Step, key: str) -> bool:
        """Whether the part under `key` was sent MAX_REFUND_SENDS times: no caller sends
        it again, the reconciler settles it."""
        sent = sum(a.operation == "refund" and a.idempotency_key == key for a in step.attempts)
        return sent >= MAX_REFUND_SENDS

    async def settle_held_refund(
        self,
        payment: Payment,
        step: Step,
        request_id: str,
        *,
        held_since: datetime | None,
        deferred: set[str] | None = None,
    ) -> bool | None:
        """The reconciler's look at a refund part held on the step whose outcome nobody
        learnt (no answer, a 500 or a 429, the server stopping before it was sent or its
        answer stored): True when the processor made it (refunded now), False when it
        made none under the key (recorded failed, its hold released: the amount is
        refundable again, under a new request_id), None when that is not known yet.

        Nothing is sent: the reconciler learns what happened, it does not refund. A part
        whose last call under its key (or, never sent, whose hold) is younger than
        REFUND_SETTLED_AFTER is not looked at yet: a lookup finding nothing then would
        prove nothing.

        With `deferred` (the reconciler's pass), a processor whose breaker is open is not
        asked: its name is added to `deferred` and nothing is recorded (None). So only a
        real answer is ever taken for "none made", however long the breaker stays open."""
        key = self.refund_key(payment, step, request_id)
        processor = self._processors.get(step.processor)
        if processor is None:
            return None
        last = _last_under(step, key)
        since = max(
            (t for t in (held_since, last.ended_at if last else None) if t is not None),
            default=None,
        )
        if since is not None and self._clock.now() - since < REFUND_SETTLED_AFTER:
            return None
        probe = self._admitted(step, deferred)
        if probe is None:
            return None
        found = await self._lookup(
            payment,
            step,
            key,
            processor.find_refund(step.processor_payment_id, key),
            reason="the reconciler's lookup of a refund whose outcome is unknown",
            decisions={
                ResponseKind.DONE: "the refund went through: recorded as refunded",
                ResponseKind.NOT_FOUND: "no refund under the key: it was not made",
            },
            otherwise="no answer: looked up again later",
            probe=probe,
        )
        if found is ResponseKind.DONE:
            payment.held_refund_made(step, request_id)
            return True
        if found is not ResponseKind.NOT_FOUND:
            return None
        # Recorded as a refusal is: the refund is over for its request_id, a repeat of the
        # caller sends nothing and is told so (refund_refused).
        self._record(
            payment,
            step,
            "refund",
            key,
            _Answer(
                ProcessorResponse(
                    ResponseKind.ERROR,
                    processor_payment_id=step.processor_payment_id,
                    code="refund_failed",
                    message="no refund was made under the key",
                ),
                self._clock.now(),
                0,
            ),
            reason="the reconciler's lookup found no refund under the key",
            decision="not made: its hold released; nothing more is sent under this request_id",
        )
        payment.held_refund_released(step, request_id)
        return False

    async def refund(
        self, payment: Payment, step: Step, amount: int, request_id: str, *, look_first: bool
    ) -> bool:
        """Send a part held on the step (Payment.refund_held); True when it went through.
        Made, it is refunded; refused (HARD), its hold is released; with no answer that
        says (UNKNOWN, SOFT) it stays held. Looked for first when `look_first` (another
        call held it: it may be in flight, or done with its answer lost) or when a try
        under its key went without an answer."""
        key = self.refund_key(payment, step, request_id)
        processor = self._processors.get(step.processor)
        if processor is None:
            return False
        in_doubt = any(
            a.operation == "refund" and a.idempotency_key == key and a.outcome in _REFUND_IN_DOUBT
            for a in step.attempts
        )
        if in_doubt and self.refund_sends_spent(step, key):
            return False  # the reconciler's now: it looks the part up on its back-off
        if in_doubt or look_first:
            found = await self._lookup(
                payment,
                step,
                key,
                processor.find_refund(step.processor_payment_id, key),
                reason="lookup before sending again a refund tried without an answer"
                if in_doubt
                else "lookup before sending a refund another call held (in flight, or stopped)",
                decisions=_REFUND_FOUND_DECISIONS,
                otherwise="no answer: the refund is not sent again",
            )
            if found is ResponseKind.DONE:
                payment.held_refund_made(step, request_id)
                return True
            if found is not ResponseKind.NOT_FOUND:
                return False  # the lookup did not answer: sent again, it could refund twice
        made = await self._run(
            payment,
            step,
            "refund",
            key,
            lambda p: p.refund(
                step.processor_payment_id, amount, key, currency=payment.currency.code
            ),
        )
        outcome = made[0] if made else None
        if outcome is Outcome.SUCCESS:
            payment.held_refund_made(step, request_id)
        elif outcome is Outcome.HARD:
            payment.held_refund_released(step, request_id)
        return outcome is Outcome.SUCCESS


def _settle_key(
    payment: Payment, step: Step, operation: str, *, next_generation: bool = False
) -> str:
    """The key of the step's capture (or void): the one it was last tried under, so a
    lost answer is replayed, never sent again under another key; the next generation
    only once a lookup proved the intent still open after a stored failure replayed. The
    keys tried are in the step's attempts: a try lost before it was recorded is made
    again under the same key."""
    tried = {a.idempotency_key for a in step.attempts if a.operation == operation}
    generation = max(len(tried) - 1, 0) + next_generation
    key = f"payorch_{payment.id}_{step.index}_{operation}"
    return f"{key}_g{generation}" if generation else key


def _last_under(step: Step, key: str) -> Attempt | None:
    """The step's last attempt under the key (a refund's: its key, or the processor's id)."""
    return next((a for a in reversed(step.attempts) if a.idempotency_key == key), None)


def _record_held(payment: Payment, step: Step, held: ResponseKind | None) -> None:
    """Record the step as the processor holds it: captured (once the customer acted,
    if it waited for them) or voided; anything else leaves it as it was."""
    if held is ResponseKind.SUCCEEDED:
        if step.status is StepStatus.REQUIRES_ACTION:  # the customer acted meanwhile
            payment.step_succeeded(step, processor=step.processor, latency_ms=0)
        if step.status is StepStatus.AUTHORIZED:
            payment.step_captured(step)
    elif held is ResponseKind.NOT_CHARGED:
        payment.step_voided(step)
