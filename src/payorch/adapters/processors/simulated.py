"""A simulated processor that means what Stripe's test payment methods mean.

It keeps PaymentIntent-like objects keyed by the intent key and stores answers
under the idempotency key the way Stripe does (500s stored and replayed, 429s
not; a capture's, cancel's or refund's answer too, its errors included), so the
router's and settlement's recovery logic runs against the same semantics. Faults
are injected from a seeded random source.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import os
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields, replace

from payorch.app.ports import ChargeRequest
from payorch.domain.results import ChargeRefunds, ProcessorRefund, ProcessorResponse, ResponseKind

# Stripe test PaymentMethods -> (error code, decline code, message). Stripe names most
# declines card_declined, and three by their own error code (docs.stripe.com/testing:
# "declined with an expired_card code", incorrect_cvc, processing_error).
DECLINES: dict[str, tuple[str, str, str]] = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_visa_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_chargeDeclinedLostCard": ("card_declined", "lost_card", "Your card was declined."),
    "pm_card_chargeDeclinedStolenCard": ("card_declined", "stolen_card", "Your card was declined."),
    "pm_card_chargeDeclinedFraudulent": ("card_declined", "fraudulent", "Your card was declined."),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": (
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
    "pm_card_chargeDeclinedProcessingError": (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "pm_card_chargeDeclinedDoNotHonor": ("card_declined", "do_not_honor", "Your card was declined."),
    "pm_card_chargeDeclinedVelocityLimitExceeded": (
        "card_declined",
        "card_velocity_exceeded",
        "Your card was declined.",
    ),
}  # fmt: skip
# Cards 4000002760003184, 4000000000003063 and 4000000000003220: always ask for
# authentication (3-D Secure), on-session or off.
REQUIRES_AUTH = {
    "pm_card_authenticationRequired",
    "pm_card_threeDSecureRequired",
    "pm_card_threeDSecure2Required",
}
# Stripe's decline of an off-session charge the bank will not take without the customer
# (3-D Secure): a 402 card_error that leaves the intent open for them to confirm it
# on-session (docs/classification.md, Off-session authentication).
AUTHENTICATION_REQUIRED = (
    "authentication_required",
    "authentication_required",
    "Your card was declined. This transaction requires authentication.",
)
# Card 4000002500003155: asks on-session, succeeds off-session once set up.
AUTH_ON_SETUP = {"pm_card_authenticationRequiredOnSetup"}
# Ours, not Stripe's: a saved card that pays at checkout (on-session) and is declined
# off-session, e.g. pm_card_offSessionDeclinedInsufficientFunds behaves like
# pm_card_chargeDeclinedInsufficientFunds for every scheduled installment. Declining
# by session rather than by count keeps it the same in every process.
OFF_SESSION_DECLINED = "pm_card_offSessionDeclined"
# Ours too: ids the account does not have, refused as Stripe refuses them ("No such
# customer", "No such PaymentMethod"), as (param, Stripe's name, our prefix).
MISSING = (
    ("customer", "customer", "cus_missing"),
    ("payment_method", "PaymentMethod", "pm_missing"),
)


FAULTS = ("rate_limit", "connection_error", "timeout", "api_error", "lost_response")
# What a PaymentIntent's status says, as an answer; any other status charged nothing.
_INTENT_KINDS = {
    "succeeded": ResponseKind.SUCCEEDED,
    "requires_capture": ResponseKind.AUTHORIZED,
    "requires_action": ResponseKind.REQUIRES_ACTION,
    "canceled": ResponseKind.NOT_CHARGED,
}


class InvalidSimulation(ValueError):
    pass


class ChallengeRefused(LookupError):
    """The customer's side acted on an intent it may not act on: `reason` is
    `unknown_intent`, `wrong_secret` or `not_waiting` (no 3-D Secure to answer)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Stripe's last_payment_error once the customer failed 3-D Secure.
AUTHENTICATION_FAILED = ProcessorResponse(
    ResponseKind.ERROR,
    error_type="invalid_request_error",
    code="payment_intent_authentication_failure",
    message=(
        "The provided PaymentMethod has failed authentication. You can provide"
        " payment_method_data or a new PaymentMethod to attempt to fulfill this"
        " PaymentIntent again."
    ),
)


@dataclass(frozen=True, slots=True)
class Simulation:
    """Fault injection: rates are probabilities per authorize call."""

    latency_ms: float = 0.0
    # Uniform jitter added to the latency, 0..latency_jitter_ms.
    latency_jitter_ms: float = 0.0
    api_error: float = 0.0
    rate_limit: float = 0.0
    timeout: float = 0.0
    connection_error: float = 0.0
    # Processed and charged, but the answer never arrives.
    lost_response: float = 0.0
    seed: int | None = None
    # How many PaymentIntents the processor remembers, the oldest forgotten first, so
    # that a soak test's memory stays bounded (about 0.9 KB a payment otherwise).
    # 0: all of them, as Stripe does; then no lookup ever misses a charge it made.
    remember: int = 0

    @classmethod
    def parse(cls, text: str) -> Simulation:
        """Parse "api_error=0.3,latency_ms=200,seed=7"."""
        names = {f.name for f in fields(cls)}
        values: dict[str, float | int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise InvalidSimulation(
                    f"unknown simulation setting {key!r}; known: {', '.join(sorted(names))}"
                )
            try:
                values[key] = int(raw) if key in ("seed", "remember") else float(raw)
            except ValueError as exc:
                raise InvalidSimulation(f"{key} needs a number, got {raw!r}") from exc
        sim = cls(**values)  # type: ignore[arg-type]
        for name in ("api_error", "rate_limit", "timeout", "connection_error", "lost_response"):
            if not 0.0 <= getattr(sim, name) <= 1.0:
                raise InvalidSimulation(f"{name} is a probability: 0..1")
        if sim.latency_ms < 0 or sim.latency_jitter_ms < 0:
            raise InvalidSimulation("latencies cannot be negative")
        if sim.remember < 0:
            raise InvalidSimulation("remember is a number of intents (0: all)")
        return sim


@dataclass(slots=True)
class SimIntent:
    id: str
    amount_minor: int
    currency: str
    token: str
    capture: bool
    status: str = "requires_payment_method"
    amount_captured: int = 0
    amount_refunded: int = 0
    charges: int = 0
    # The bank's last decline, as Stripe keeps it in last_payment_error: lookups show it.
    last_error: ProcessorResponse | None = None
    # The refunds made, by the idempotency key each was made under (payorch's metadata
    # on Stripe's refunds): kept after the stored answer under the key is forgotten.
    refunds: dict[str, int] = field(default_factory=dict)
    # The payment and step it charges for (payorch's metadata on Stripe's intents).
    payment_id: str = ""
    step_index: int = -1
    # What the customer's side needs to act on the intent (3-D Secure), as Stripe's
    # client_secret: the id and a random part, so the id alone does not let anyone act.
    client_secret: str = ""

    def __post_init__(self) -> None:
        if not self.client_secret:
            self.client_secret = f"{self.id}_secret_{secrets.token_urlsafe(18)}"

    def cancel(self) -> None:
        """Canceled, by payorch or by anyone else: as Stripe clears last_payment_error
        when a PaymentIntent is updated for any reason, no decline stays on it."""
        self.status = "canceled"
        self.last_error = None


@dataclass(slots=True)
class Ledger:
    """What the simulated processor knows; shareable between adapter instances.

    With a limit it remembers that many intents, and twice as many stored answers,
    forgetting the oldest first: an intent forgotten is not found by a lookup, and a
    payment retried after its intent was forgotten is charged as a new one (as a
    request with an expired idempotency key would be at Stripe). 0: no limit.
    """

    intents: dict[str, SimIntent] = field(default_factory=dict)
    by_id: dict[str, SimIntent] = field(default_factory=dict)
    stored: dict[str, ProcessorResponse] = field(default_factory=dict)
    limit: int = 0
    # With a limit, the keys oldest first (a dict's own order would need a scan past
    # every deleted entry to find its first one). Without, nothing is kept.
    _intent_order: collections.deque[str] = field(default_factory=collections.deque)
    _stored_order: collections.deque[str] = field(default_factory=collections.deque)

    def __post_init__(self) -> None:
        self.set_limit(self.limit)

    @property
    def charges_total(self) -> int:
        return sum(i.charges for i in self.intents.values())

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._intent_order = collections.deque(self.intents if limit else ())
        self._stored_order = collections.deque(self.stored if limit else ())
        self._forget_oldest()

    def clear(self) -> None:
        self.intents.clear()
        self.by_id.clear()
        self.stored.clear()
        self.set_limit(self.limit)

    def add_intent(self, intent_key: str, intent: SimIntent) -> None:
        self.intents[intent_key] = intent
        self.by_id[intent.id] = intent
        if self.limit:
            self._intent_order.append(intent_key)
            self._forget_oldest()

    def store(self, idempotency_key: str, response: ProcessorResponse) -> None:
        if self.limit and idempotency_key not in self.stored:
            self._stored_order.append(idempotency_key)
        self.stored[idempotency_key] = response
        if self.limit:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        while self.limit and len(self._intent_order) > self.limit:
            forgotten = self.intents.pop(self._intent_order.popleft(), None)
            if forgotten is not None:
                self.by_id.pop(forgotten.id, None)
        while self.limit and len(self._stored_order) > 2 * self.limit:
            self.stored.pop(self._stored_order.popleft(), None)


Sleep = Callable[[float], Awaitable[None]]
# (intent id, client secret, passed) -> the intent's new status; ChallengeRefused.
AnswerChallenge = Callable[[str, str, bool], str]


class SimulatedProcessor:
    name: str

    def __init__(
        self,
        name: str = "simulated",
        simulation: Simulation | None = None,
        *,
        ledger: Ledger | None = None,
        sleep: Sleep = asyncio.sleep,
        charge_log: str = "",
    ) -> None:
        self.name = name
        self.charge_log = charge_log
        self.simulation = simulation or Simulation()
        # A ledger passed in is shared: whoever made it sets its limit.
        self._owns_ledger = ledger is None
        self.ledger = ledger or Ledger(limit=self.simulation.remember)
        self._rng = random.Random(self.simulation.seed)
        self._sleep = sleep
        self._counter = 0
        # Faults for the next authorize calls, in order, before random draws.
        self._script: collections.deque[str | None] = collections.deque()
        self.calls = 0

    def set_simulation(self, simulation: Simulation) -> None:
        self.simulation = simulation
        if self._owns_ledger:
            self.ledger.set_limit(simulation.remember)
        if simulation.seed is not None:
            self._rng = random.Random(simulation.seed)

    def _request_id(self) -> str:
        self._counter += 1
        return f"req_sim_{self.name}_{self._counter}"

    async def _latency(self) -> None:
        sim = self.simulation
        delay = sim.latency_ms + (self._rng.random() * sim.latency_jitter_ms)
        if delay > 0:
            await self._sleep(delay / 1000.0)

    def inject(self, *faults: str | None) -> None:
        """Script the next calls: "api_error", "rate_limit", "timeout", ... or None (no fault)."""
        known = {*FAULTS, "charged_api_error", None}
        unknown = [f for f in faults if f not in known]
        if unknown:
            raise InvalidSimulation(f"unknown faults {unknown}")
        self._script.extend(faults)

    def _draw(self) -> str | None:
        if self._script:
            return self._script.popleft()
        sim = self.simulation
        roll = self._rng.random()
        for fault in FAULTS:
            p: float = getattr(sim, fault)
            if roll < p:
                return fault
            roll -= p
        return None

    async def authorize(self, request: ChargeRequest) -> ProcessorResponse:
        self.calls += 1
        await self._latency()
        fault = self._draw()
        rid = self._request_id()
        if fault == "connection_error":
            return ProcessorResponse(ResponseKind.CONNECTION_ERROR, exception="APIConnectionError")
        if fault == "rate_limit":
            # 429s happen before the idempotency layer: nothing stored.
            return ProcessorResponse(
                ResponseKind.ERROR,
                http_status=429,
                error_type="invalid_request_error",
                code="rate_limit",
                message="Too many requests hit the API too quickly.",
                request_id=rid,
                should_retry=True,
                exception="RateLimitError",
            )
        if fault == "timeout":
            # The request never reached processing; the client gave up.
            return ProcessorResponse(ResponseKind.NO_RESPONSE, exception="Timeout")
        stored = self.ledger.stored.get(request.idempotency_key)
        if stored is not None:
            return replace(stored, request_id=rid)
        intent = self._intent_for(request)
        if fault == "api_error":
            # A 500 stored under the key before anything was processed: indeterminate.
            response = _unknown_error(intent.id, rid)
        else:
            response = self._process(intent, request, rid)
            if fault == "charged_api_error":
                # Processed and charged, then a 500 stored under the key: indeterminate.
                response = _unknown_error(intent.id, rid)
        self.ledger.store(request.idempotency_key, response)
        if fault == "lost_response":
            return ProcessorResponse(ResponseKind.NO_RESPONSE, exception="ReadTimeout")
        return response

    def _intent_for(self, request: ChargeRequest) -> SimIntent:
        intent = self.ledger.intents.get(request.intent_key)
        if intent is None:
            digest = hashlib.sha256(f"{self.name}:{request.intent_key}".encode()).hexdigest()
            intent = SimIntent(
                id=f"pi_sim_{digest[:24]}",
                amount_minor=request.amount_minor,
                currency=request.currency.lower(),
                token=request.token,
                capture=request.capture,
                payment_id=request.payment_id,
                step_index=request.step_index,
            )
            self.ledger.add_intent(request.intent_key, intent)
        return intent

    def _process(self, intent: SimIntent, request: ChargeRequest, rid: str) -> ProcessorResponse:
        if intent.status in ("succeeded", "requires_capture"):
            # Already charged under an earlier key: confirming again charges nothing.
            return self._intent_response(intent, rid)
        token = request.token
        if token.startswith(OFF_SESSION_DECLINED):
            declined_as = "pm_card_chargeDeclined" + token[len(OFF_SESSION_DECLINED) :]
            if request.off_session and declined_as in DECLINES:
                token = declined_as
        declined = DECLINES.get(token)
        if request.off_session and (
            token in REQUIRES_AUTH or (declined is not None and _asks_for_customer(declined))
        ):
            # As Stripe answers it: declined authentication_required, the intent left
            # open with its client secret for the customer to confirm it on-session (3-D
            # Secure), which is the pause payorch reads, whoever's card it is.
            code, decline, message = declined or AUTHENTICATION_REQUIRED
            intent.status = "requires_action"
            intent.last_error = _declined(intent, rid, code, decline, message)
            return replace(
                intent.last_error,
                kind=ResponseKind.REQUIRES_ACTION,
                next_action_type="use_stripe_sdk",
                client_secret=intent.client_secret,
            )
        if declined is not None:
            intent.last_error = _declined(intent, rid, *declined)
            return intent.last_error
        missing = _missing_resource(request.customer_id, token)
        if missing is not None:
            param, name, given = missing
            return ProcessorResponse(
                ResponseKind.ERROR,
                processor_payment_id=intent.id,
                http_status=400,
                error_type="invalid_request_error",
                code="resource_missing",
                param=param,
                message=f"No such {name}: '{given[:40]}'",
                request_id=rid,
            )
        if token in REQUIRES_AUTH or (token in AUTH_ON_SETUP and not request.off_session):
            intent.status = "requires_action"
            return self._intent_response(intent, rid)
        intent.status = "succeeded" if intent.capture else "requires_capture"
        intent.charges += 1
        intent.amount_captured = intent.amount_minor if intent.capture else 0
        intent.last_error = None
        self._log_charge(intent, request)
        return self._intent_response(intent, rid)

    def _log_charge(self, intent: SimIntent, request: ChargeRequest) -> None:
        """Shared counting mode: one line per charge appended to a file every process
        writes (O_APPEND lines are atomic), so tests count charges across processes."""
        if not self.charge_log:
            return
        line = f"{self.name} {intent.id} {request.payment_id} {request.amount_minor}\n"
        fd = os.open(self.charge_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def _intent_response(self, intent: SimIntent, rid: str) -> ProcessorResponse:
        kind = _INTENT_KINDS.get(intent.status, ResponseKind.NOT_CHARGED)
        action = kind is ResponseKind.REQUIRES_ACTION
        declined = intent.last_error if kind is ResponseKind.NOT_CHARGED else None
        return ProcessorResponse(
            kind,
            processor_payment_id=intent.id,
            request_id=rid,
            next_action_type="use_stripe_sdk" if action else "",
            client_secret=intent.client_secret if action else "",
            amount_captured_minor=intent.amount_captured,
            error_type=declined.error_type if declined else "",
            code=declined.code if declined else "",
            decline_code=declined.decline_code if declined else "",
            message=declined.message if declined else "",
            closed=intent.status == "canceled",
        )

    async def lookup(self, request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        await self._latency()
        intent = self.ledger.by_id.get(processor_payment_id) or self.ledger.intents.get(
            request.intent_key
        )
        if intent is None:
            return ProcessorResponse(ResponseKind.NOT_FOUND, request_id=self._request_id())
        return self._intent_response(intent, self._request_id())

    def complete_action(self, processor_payment_id: str) -> None:
        """The customer finished 3-D Secure (what Stripe's frontend would do)."""
        intent = self.ledger.by_id[processor_payment_id]
        if intent.status == "requires_action":
            self._answer_challenge(intent, passed=True)

    def authenticate(self, processor_payment_id: str, client_secret: str, *, passed: bool) -> str:
        """The customer's side answers the intent's 3-D Secure challenge, as Stripe.js
        does with the client secret: passed, the intent is charged as a confirm charges
        it (held, or captured); failed, it waits for another PaymentMethod with
        Stripe's `payment_intent_authentication_failure` in its last error. Returns the
        intent's new status; ChallengeRefused for an intent this processor does not
        have, a secret that is not the intent's (compared in constant time), or an
        intent not waiting for the customer (answered before, canceled, never paused)."""
        intent = self.ledger.by_id.get(processor_payment_id)
        if intent is None:
            raise ChallengeRefused(
                "unknown_intent", f"No such PaymentIntent: {processor_payment_id!r}"
            )
        if not hmac.compare_digest(
            client_secret.encode("utf-8", "surrogateescape"), intent.client_secret.encode()
        ):
            raise ChallengeRefused(
                "wrong_secret", f"the client secret is not {processor_payment_id!r}'s"
            )
        if intent.status != "requires_action":
            raise ChallengeRefused(
                "not_waiting",
                f"PaymentIntent {processor_payment_id!r} is {intent.status}: no 3-D Secure"
                " challenge to answer",
            )
        self._answer_challenge(intent, passed=passed)
        return intent.status

    def _answer_challenge(self, intent: SimIntent, *, passed: bool) -> None:
        if not passed:
            intent.status = "requires_payment_method"
            intent.last_error = replace(AUTHENTICATION_FAILED, processor_payment_id=intent.id)
            return
        intent.status = "succeeded" if intent.capture else "requires_capture"
        intent.charges += 1
        intent.amount_captured = intent.amount_minor if intent.capture else 0
        intent.last_error = None

    async def capture(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse:
        await self._latency()
        stored = self.ledger.stored.get(idempotency_key)
        if stored is not None:
            return stored
        intent = self.ledger.by_id.get(processor_payment_id)
        if intent is None or intent.status != "requires_capture":
            response = self._invalid_state(intent, "capture")
        else:
            intent.status = "succeeded"
            intent.amount_captured = min(amount_minor, intent.amount_minor)
            response = ProcessorResponse(
                ResponseKind.DONE,
                processor_payment_id=intent.id,
                request_id=self._request_id(),
                amount_captured_minor=intent.amount_captured,
            )
        self.ledger.store(idempotency_key, response)
        return response

    async def cancel(self, processor_payment_id: str, idempotency_key: str) -> ProcessorResponse:
        await self._latency()
        stored = self.ledger.stored.get(idempotency_key)
        if stored is not None:
            return stored
        intent = self.ledger.by_id.get(processor_payment_id)
        if intent is None or intent.status == "succeeded":
            response = self._invalid_state(intent, "cancel")
        else:
            intent.cancel()
            response = ProcessorResponse(
                ResponseKind.DONE, processor_payment_id=intent.id, request_id=self._request_id()
            )
        self.ledger.store(idempotency_key, response)
        return response

    async def refund(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse:
        await self._latency()
        stored = self.ledger.stored.get(idempotency_key)
        if stored is not None:
            return stored
        intent = self.ledger.by_id.get(processor_payment_id)
        if intent is None or intent.amount_captured - intent.amount_refunded < amount_minor:
            response = self._invalid_state(intent, "refund")
            self.ledger.store(idempotency_key, response)
            return response
        intent.amount_refunded += amount_minor
        intent.refunds[idempotency_key] = amount_minor
        response = ProcessorResponse(
            ResponseKind.DONE, processor_payment_id=intent.id, request_id=self._request_id()
        )
        self.ledger.store(idempotency_key, response)
        return response

    async def find_refund(
        self, processor_payment_id: str, idempotency_key: str
    ) -> ProcessorResponse:
        await self._latency()
        intent = self.ledger.by_id.get(processor_payment_id)
        made = intent is not None and idempotency_key in intent.refunds
        return ProcessorResponse(
            ResponseKind.DONE if made else ResponseKind.NOT_FOUND,
            processor_payment_id=processor_payment_id,
            request_id=self._request_id(),
        )

    async def refunds(self, processor_payment_id: str) -> ChargeRefunds:
        """The intent's refunds: only payorch's, as no one else refunds here."""
        await self._latency()
        intent = self.ledger.by_id.get(processor_payment_id)
        kind = ResponseKind.NOT_FOUND if intent is None else ResponseKind.DONE
        answer = ProcessorResponse(
            kind, processor_payment_id=processor_payment_id, request_id=self._request_id()
        )
        if intent is None:
            return ChargeRefunds(answer)
        return ChargeRefunds(
            answer,
            payment_id=intent.payment_id,
            step_index=intent.step_index,
            refunds=tuple(
                ProcessorRefund(
                    "re_sim_" + hashlib.sha256(key.encode()).hexdigest()[:24],
                    amount,
                    made=True,
                    payorch_key=key,
                )
                for key, amount in intent.refunds.items()
            ),
        )

    def _invalid_state(self, intent: SimIntent | None, action: str) -> ProcessorResponse:
        state = intent.status if intent else "missing"
        return ProcessorResponse(
            ResponseKind.ERROR,
            processor_payment_id=intent.id if intent else "",
            http_status=400,
            error_type="invalid_request_error",
            code="payment_intent_unexpected_state",
            message=f"cannot {action} a PaymentIntent in state {state}",
            request_id=self._request_id(),
        )


def _asks_for_customer(declined: tuple[str, str, str]) -> bool:
    """A decline the bank gives until the customer authenticates (3-D Secure)."""
    code, decline, _ = declined
    return AUTHENTICATION_REQUIRED[0] in (code, decline)


def _declined(
    intent: SimIntent, rid: str, code: str, decline: str, message: str
) -> ProcessorResponse:
    """The bank's decline, as Stripe's 402 card_error says it."""
    return ProcessorResponse(
        ResponseKind.ERROR,
        processor_payment_id=intent.id,
        http_status=402,
        error_type="card_error",
        code=code,
        decline_code=decline,
        message=message,
        request_id=rid,
    )


def _unknown_error(processor_payment_id: str, rid: str) -> ProcessorResponse:
    """Stripe's 500: whether the request was processed is unknown to the caller."""
    return ProcessorResponse(
        ResponseKind.ERROR,
        processor_payment_id=processor_payment_id,
        http_status=500,
        error_type="api_error",
        message="An unknown error occurred",
        request_id=rid,
        indeterminate=True,
    )


def _missing_resource(customer_id: str, token: str) -> tuple[str, str, str] | None:
    """The parameter, Stripe's name for it and the id given, for an id we simulate the
    account not having; None when both are there."""
    given = {"customer": customer_id, "payment_method": token}
    return next(
        (
            (param, name, given[param])
            for param, name, prefix in MISSING
            if given[param].startswith(prefix)
        ),
        None,
    )


def answer_challenge(
    processors: Iterable[SimulatedProcessor],
    processor_payment_id: str,
    client_secret: str,
    *,
    passed: bool,
) -> tuple[str, str]:
    """The customer's answer to a 3-D Secure challenge, given to whichever simulated
    processor holds the intent (each names its intents apart): that processor's name and
    the intent's new status. ChallengeRefused as `SimulatedProcessor.authenticate`
    refuses, `unknown_intent` when none holds it."""
    for processor in processors:
        if processor_payment_id in processor.ledger.by_id:
            return processor.name, processor.authenticate(
                processor_payment_id, client_secret, passed=passed
            )
    raise ChallengeRefused("unknown_intent", f"No such PaymentIntent: {processor_payment_id!r}")
