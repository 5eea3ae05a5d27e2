"""A fake Stripe API over real HTTP, for driving the real `stripe` SDK in tests.

It speaks the parts of Stripe's v1 API that payorch uses, the way Stripe does:
form-encoded requests (``metadata[key]=value``), JSON objects shaped like Stripe's,
Stripe's error bodies and status codes, a ``Request-Id`` on every answer, and the
idempotency layer (same key + same parameters -> the stored answer, 500s included;
same key + other parameters -> 400 ``idempotency_error``; 429s are never stored).
Stripe keeps a key 24 hours: on the fake's clock (``FakeStripe(clock=...)``, any object
with ``now()`` giving an aware datetime, such as ``ManualClock``), a key stored 24 hours
ago or more is pruned, and a request under it is a new request again.
``expire_idempotency_keys()`` prunes every key at once. PaymentIntents can also be found
by ``GET /v1/payment_intents/search`` (``metadata['key']:'value'`` clauses joined by
``AND``), which sees an object only once Stripe has indexed it (``search_lag_s`` after it
was made, a minute by default: Stripe's search is not read-after-write).
Stripe's test PaymentMethods (``pm_card_visa``, ``pm_card_chargeDeclined``, ...)
behave as they do in test mode: each use makes a new PaymentMethod, so they can be used
any number of times. Any other PaymentMethod (``create_payment_method()``, as Stripe.js
makes one at checkout, or ``register_payment_method()``) is one object, and single use
as Stripe has it: once a payment with it went through without saving it on a customer,
or was declined while it was saved on none, it is used up, and refused with Stripe's
error (400 ``invalid_request_error``, code ``payment_method_unexpected_state``, param
``payment_method``). A PaymentIntent with ``customer`` and ``setup_future_usage``
attaches it to that customer when it goes through; from then on it may be used with
that customer (any number of times), and is refused without it or with another.
A PaymentIntent's amount is held to Stripe's limits: below its minimum charge
(``MINIMUM_CHARGE``: 50 for usd or eur, 30 for gbp, 50 for jpy, ...) it is refused with
400 ``amount_too_small``, above eight digits with ``amount_too_large`` (``param``
``amount``, not stored under the key); a currency Stripe does not take
(``UNSUPPORTED_CURRENCIES``) is refused by name, on ``param`` ``currency``, no code.

Tests program faults, consumed one per request, per endpoint (``confirm`` by
default), and count charges to prove there was exactly one::

    async with FakeStripe() as fake:
        processor = StripeProcessor(fake.api_key, api_base=fake.url)
        fake.inject(Fault.api_error())                    # next confirm answers 500
        fake.inject(Fault.rate_limit(), endpoint="create")
        ...
        assert fake.charges_for(pi_id) == 1

or through the ``fake_stripe`` fixture defined at the end of this module (import it
into a test module or a conftest).

Where a fault acts, relative to Stripe's layers:

* before idempotency (nothing stored, nothing processed): ``rate_limit`` and
  ``lock_timeout`` (429), ``auth_error`` (401), ``permission_error`` (403: a restricted
  key without the permission the endpoint needs), ``invalid_request`` (400),
  ``drop_before_processing`` and ``slow(process=False)`` (held, then the
  connection is closed, nothing happened);
* inside it (the answer is stored under the key): ``api_error`` (500, with
  ``Stripe-Should-Retry: false`` unless told otherwise, as Stripe sends most) and
  ``dependency_failed`` (424, a dependency external to Stripe failed; its body is an
  ``api_error`` too), the request having taken effect or not, as asked; on a key that
  already has a stored answer the stored answer wins and the fault is spent;
* after it (the stored answer is lost or late on the wire): ``drop_after_processing``
  (processed and stored, then the connection is closed without an answer),
  ``drop_mid_answer`` (the headers and half the body arrive, then the connection closes),
  ``slow(process=True)`` (processed and stored, the answer is held back);
* ``stall``: the key is held in flight (other requests with it get 409
  ``idempotency_key_in_use``) for a while, then the request is processed. Meanwhile
  the PaymentIntent it works on is locked, as Stripe locks an object a request is
  working on: a write to it under another key (confirm, capture, cancel) gets 429
  ``lock_timeout``, not stored; reads go through.

``slow`` and ``stall`` can wait on a ``Hold`` instead of a delay (``until=hold``): the
request waits there until the test releases it, and ``hold.reached`` says it got there.
A test holds its client (a server process) at a known point of a payment that way, with
no schedule to sleep for: ``stall(until=...)`` keeps the request in flight unprocessed,
``slow(until=...)`` keeps a processed request's answer, and ``slow(process=False,
until=...)`` keeps a request that is then dropped, never processed. ``Fault.none()``
lets one request through as is, so that a fault queued after it meets a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import string
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import pytest
from aiohttp import web

Endpoint = Literal[
    "create", "confirm", "retrieve", "search", "capture", "cancel", "refund", "list_refunds"
]
ENDPOINTS: tuple[Endpoint, ...] = (
    "create",
    "confirm",
    "retrieve",
    "search",
    "capture",
    "cancel",
    "refund",
    "list_refunds",
)

FaultKind = Literal[
    "none",
    "api_error",
    "dependency_failed",
    "rate_limit",
    "lock_timeout",
    "drop_before_processing",
    "drop_after_processing",
    "drop_mid_answer",
    "slow",
    "stall",
    "auth_error",
    "permission_error",
    "invalid_request",
]

DEFAULT_API_KEY = "sk_test_payorch_fake_4242"

# How long Stripe keeps an idempotency key (its docs: keys can be pruned once they are
# at least 24 hours old).
KEY_LIFETIME = timedelta(hours=24)
# Stripe's minimum charge amounts (docs.stripe.com/currencies, minimum and maximum
# charge amounts), in its units, for an account settling in the charge's currency (the
# fake's: Stripe converts a charge in another currency and holds it to the minimum of
# the settlement currency; the fake checks only these). A smaller amount is refused
# with 400 amount_too_small, a validation failure: nothing is stored under the key.
MINIMUM_CHARGE: dict[str, int] = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50,
    "czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50,
    "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200,
    "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip
# The largest amount Stripe takes: eight digits (99999999 is $999,999.99).
MAXIMUM_CHARGE = 99_999_999
# ISO-4217 currencies Stripe does not take (none of its accounts can charge them);
# Stripe refuses them by name, on param currency, with no error code.
UNSUPPORTED_CURRENCIES = frozenset({"cup", "iqd", "irr", "kpw", "lyd", "syp"})

# A search query clause the fake understands: metadata['key']:'value'.
_SEARCH_CLAUSE = re.compile(r"^metadata\['([^']+)'\]:'([^']*)'$")


class WallClock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time."""
        ...


class _SystemWallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


_API_ERROR_MESSAGE = (
    "Sorry, something went wrong. We've already been notified of the problem, but if you "
    "need any help, you can reach out to support: https://support.stripe.com/contact"
)
_DEPENDENCY_FAILED_MESSAGE = (
    "The request couldn't be completed due to a failure in a dependency external to Stripe."
)
# The faults answered inside the idempotency layer, stored under the key: their status
# and message (the body's type is api_error for both).
_STORED_FAILURES: dict[str, tuple[int, str]] = {
    "api_error": (500, _API_ERROR_MESSAGE),
    "dependency_failed": (424, _DEPENDENCY_FAILED_MESSAGE),
}
_RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. Learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
_LOCK_TIMEOUT_MESSAGE = (
    "This object cannot be accessed right now because another API request or Stripe "
    "process is currently accessing it. If you see this error intermittently, retry the "
    "request. If you see this error frequently and are making multiple concurrent requests "
    "to a single object, make your requests serially or at a lower rate."
)


class Hold:
    """A point a request waits at until the test releases it (``Fault.stall`` and
    ``Fault.slow`` with ``until=``). ``reached`` is set once a request waits there. Its
    events belong to the fake's event loop: from another thread, set them through it."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.released = asyncio.Event()

    def release(self) -> None:
        self.released.set()


@dataclass(frozen=True, slots=True)
class Fault:
    """One programmed misbehaviour for one upcoming request. Build with the classmethods."""

    kind: FaultKind
    # api_error, dependency_failed: did the request take effect before the 500 (424)?
    # slow: is it processed at all?
    process: bool = True
    delay_s: float = 0.0
    # Stripe-Should-Retry header: None leaves it out.
    should_retry: bool | None = None
    # Retry-After header (seconds): None leaves it out.
    retry_after_s: float | None = None
    code: str = ""
    message: str = ""
    # slow, stall: wait for this hold's release instead of delay_s.
    until: Hold | None = None

    @classmethod
    def none(cls) -> Fault:
        """No misbehaviour: the request is served as is (a fault queued after it meets
        the next request)."""
        return cls("none")

    @classmethod
    def api_error(cls, *, charged: bool = False, should_retry: bool | None = False) -> Fault:
        """500 api_error, stored under the key. ``charged``: the confirm went through.
        Sent with ``Stripe-Should-Retry: false`` as Stripe sends most 500s (a retry under
        the same key would only replay it); ``should_retry=None`` leaves the header out."""
        return cls("api_error", process=charged, should_retry=should_retry)

    @classmethod
    def dependency_failed(cls, *, charged: bool = False) -> Fault:
        """424 api_error (a dependency external to Stripe failed), stored under the key.
        ``charged``: the confirm went through all the same."""
        return cls("dependency_failed", process=charged)

    @classmethod
    def rate_limit(
        cls, *, retry_after_s: float | None = 1.0, should_retry: bool | None = True
    ) -> Fault:
        """429 code rate_limit, before the idempotency layer: not stored, not processed."""
        return cls("rate_limit", retry_after_s=retry_after_s, should_retry=should_retry)

    @classmethod
    def lock_timeout(cls, *, should_retry: bool | None = True) -> Fault:
        """429 code lock_timeout: not stored, not processed."""
        return cls("lock_timeout", should_retry=should_retry)

    @classmethod
    def drop_before_processing(cls) -> Fault:
        """The connection is closed without an answer; nothing happened."""
        return cls("drop_before_processing", process=False)

    @classmethod
    def drop_after_processing(cls) -> Fault:
        """Processed and stored under the key, then the connection closes without an answer."""
        return cls("drop_after_processing")

    @classmethod
    def drop_mid_answer(cls) -> Fault:
        """Processed and stored; the status line, headers and half the body are sent,
        then the connection closes."""
        return cls("drop_mid_answer")

    @classmethod
    def slow(
        cls, delay_s: float = 0.0, *, process: bool = True, until: Hold | None = None
    ) -> Fault:
        """The answer comes ``delay_s`` late (processed at once), or, with
        ``process=False``, the request is held ``delay_s`` and dropped unprocessed.
        ``until``: held until that hold is released rather than for ``delay_s``."""
        return cls("slow", process=process, delay_s=delay_s, until=until)

    @classmethod
    def stall(cls, delay_s: float = 0.0, *, until: Hold | None = None) -> Fault:
        """Stripe is slow: the key is in flight for ``delay_s`` (or until the hold
        ``until`` is released), then processed."""
        return cls("stall", delay_s=delay_s, until=until)

    @classmethod
    def auth_error(cls) -> Fault:
        """401, as for a revoked or wrong API key."""
        return cls("auth_error")

    @classmethod
    def permission_error(cls) -> Fault:
        """403, as for a restricted key without the permission the endpoint needs."""
        return cls("permission_error")

    @classmethod
    def invalid_request(
        cls, *, code: str = "parameter_invalid_empty", message: str = "Invalid request."
    ) -> Fault:
        """400 invalid_request_error (a validation failure: not stored under the key)."""
        return cls("invalid_request", code=code, message=message)


@dataclass(frozen=True, slots=True)
class _Decline:
    code: str
    decline_code: str
    message: str
    # The issuer's advice on retrying (Stripe's `advice_code`), "" when it gave none.
    advice_code: str = ""


_SUCCEEDS = "succeeds"
_AUTH_ALWAYS = "authentication_always"
_AUTH_ON_SESSION = "authentication_on_session"
_AUTH_FAILS = "authentication_fails"

_DECLINED = "Your card was declined."

# Stripe's test PaymentMethods, as test mode treats them.
PAYMENT_METHODS: dict[str, str | _Decline] = {
    **{
        pm: _SUCCEEDS
        for pm in (
            "pm_card_visa",
            "pm_card_visa_debit",
            "pm_card_mastercard",
            "pm_card_mastercard_debit",
            "pm_card_mastercard_prepaid",
            "pm_card_amex",
            "pm_card_discover",
            "pm_card_diners",
            "pm_card_jcb",
            "pm_card_unionpay",
            "pm_card_us",
            "pm_card_gb",
            "pm_card_de",
            "pm_card_fr",
            "pm_card_br",
        )
    },
    "pm_card_chargeDeclined": _Decline("card_declined", "generic_decline", _DECLINED),
    "pm_card_chargeDeclinedInsufficientFunds": _Decline(
        "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_chargeDeclinedLostCard": _Decline("card_declined", "lost_card", _DECLINED),
    "pm_card_chargeDeclinedStolenCard": _Decline("card_declined", "stolen_card", _DECLINED),
    "pm_card_chargeDeclinedFraudulent": _Decline("card_declined", "fraudulent", _DECLINED),
    "pm_card_chargeDeclinedVelocityLimitExceeded": _Decline(
        "card_declined", "card_velocity_exceeded", _DECLINED
    ),
    "pm_card_chargeDeclinedExpiredCard": _Decline(
        "expired_card", "expired_card", "Your card has expired."
    ),
    "pm_card_chargeDeclinedIncorrectCvc": _Decline(
        "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."
    ),
    "pm_card_chargeDeclinedProcessingError": _Decline(
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "pm_card_authenticationRequired": _AUTH_ALWAYS,
    "pm_card_threeDSecureRequired": _AUTH_ALWAYS,
    "pm_card_threeDSecure2Required": _AUTH_ALWAYS,
    "pm_card_authenticationRequiredOnSetup": _AUTH_ON_SESSION,
}

_AUTH_REQUIRED = _Decline(
    "authentication_required",
    "authentication_required",
    "Your card was declined. This transaction requires authentication.",
)

_AUTHENTICATION_FAILED = (
    "The provided PaymentMethod has failed authentication. You can provide "
    "payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again."
)

# Stripe's answers for a PaymentMethod that cannot be used as asked (with another
# customer, or none: no error code; used up: payment_method_unexpected_state).
_USED_UP = (
    "The provided PaymentMethod was previously used with a PaymentIntent without Customer "
    "attachment, shared with a connected account without Customer attachment, or was "
    "detached from a Customer. It may not be used again. To use a PaymentMethod multiple "
    "times, you must attach it to a Customer first."
)
_FUTURE_USAGES = ("on_session", "off_session")

_CONFIRMABLE = ("requires_confirmation", "requires_payment_method", "requires_action")
_CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)


@dataclass(slots=True)
class RecordedRequest:
    """What the fake saw, for assertions (the Authorization header is not kept)."""

    endpoint: str
    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, Any]
    status: int | None = None  # None: the connection was dropped without an answer
    replayed: bool = False
    fault: FaultKind | None = None
    request_id: str = ""
    stripe_version: str = ""


@dataclass(frozen=True, slots=True)
class _Stored:
    fingerprint: tuple[Any, ...]
    stored_at: datetime
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class _Failure(Exception):
    """A Stripe error answer; ``store``: whether the idempotency layer keeps it."""

    def __init__(self, status: int, error: dict[str, Any], *, store: bool = True) -> None:
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error
        self.store = store


def _rand(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _invalid(message: str, *, code: str = "", param: str = "", store: bool = False) -> _Failure:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        error["param"] = param
    return _Failure(400, error, store=store)


def _check_metadata(metadata: dict[str, Any]) -> None:
    """Stripe's limits on metadata (docs.stripe.com/metadata): 50 keys, keys of at most
    40 characters without `[` or `]`, string values of at most 500 characters. (A key
    with brackets arrives form-encoded as a nested object: refused as a value.)"""
    if len(metadata) > 50:
        raise _invalid(
            f"Invalid metadata: metadata can have up to 50 keys, but you passed in"
            f" {len(metadata)} keys.",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > 40 or "[" in key or "]" in key:
            raise _invalid(
                f"Invalid metadata: key {key[:50]!r} must be at most 40 characters,"
                " without square brackets.",
                param="metadata",
            )
        if not isinstance(value, str) or len(value) > 500:
            raise _invalid(
                f"Invalid metadata: the value of {key!r} must be a string of at most 500"
                " characters.",
                param=f"metadata[{key}]",
            )


def _check_charge_amount(amount: int, currency: str) -> None:
    """Stripe's limits on a charge's amount: its minimum (MINIMUM_CHARGE) and maximum."""
    minimum = MINIMUM_CHARGE.get(currency, 1)
    if amount < minimum:
        raise _invalid(
            f"Amount must be at least {minimum} {currency} in the currency's smallest unit",
            code="amount_too_small",
            param="amount",
        )
    if amount > MAXIMUM_CHARGE:
        raise _invalid(
            f"Amount must be no more than {MAXIMUM_CHARGE} {currency} in the currency's"
            " smallest unit",
            code="amount_too_large",
            param="amount",
        )


def _unexpected_state(message: str, pi: dict[str, Any]) -> _Failure:
    # The endpoint ran: Stripe keeps this answer under the key, and shows the intent.
    failure = _invalid(message, code="payment_intent_unexpected_state", store=True)
    failure.error["payment_intent"] = json.loads(json.dumps(pi))
    return failure


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``metadata[a]=1&items[0][x]=2`` -> ``{"metadata": {"a": "1"}, "items": [{"x": "2"}]}``."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        head, _, rest = raw_key.partition("[")
        parts = [head] + ([p.rstrip("]") for p in ("[" + rest).split("[")[1:]] if rest else [])
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return {k: _listify(v) for k, v in root.items()}


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def _bool(value: Any) -> bool:
    return str(value).lower() in ("true", "1", "one_off", "recurring")


class FakeStripe:
    """Fake Stripe on 127.0.0.1 (a free port). ``async with FakeStripe() as fake: ...``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: WallClock | None = None,
        search_lag_s: float = 60.0,
    ) -> None:
        # Stripe's wall time: key expiry, `created`, what search has indexed.
        self._clock: WallClock = clock or _SystemWallClock()
        self._search_lag = timedelta(seconds=search_lag_s)
        # With an explicit key only that key is accepted; otherwise any test secret key.
        self.api_key = api_key or DEFAULT_API_KEY
        self._only_key = api_key
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self._payment_methods: dict[str, str | _Decline] = dict(PAYMENT_METHODS)
        # Single-use PaymentMethods (not Stripe's test ones): the customer each is
        # attached to, and those used up by a payment that did not attach them.
        self._attached: dict[str, str] = {}
        self._used_up: set[str] = set()
        # Customers the account has (Stripe has no test customers: a test makes them).
        self._customers: set[str] = set()
        self._faults: dict[str, deque[Fault]] = {e: deque() for e in ENDPOINTS}
        self._idempotency: dict[str, _Stored] = {}
        self._in_flight: set[str] = set()
        # PaymentIntents a stalled request is working on: other writes get lock_timeout.
        self._locked: set[str] = set()
        self._charges: dict[str, int] = {}
        self._refunded: dict[str, int] = {}
        self._closing = asyncio.Event()
        self._active = 0
        self._idle = asyncio.Condition()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakeStripe:
        app = web.Application()
        app.router.add_post("/v1/payment_intents", self._create)
        # Before the {id} route: "search" is not a PaymentIntent id.
        app.router.add_get("/v1/payment_intents/search", self._search)
        app.router.add_get("/v1/payment_intents/{id}", self._retrieve)
        app.router.add_post("/v1/payment_intents/{id}/confirm", self._confirm)
        app.router.add_post("/v1/payment_intents/{id}/capture", self._capture)
        app.router.add_post("/v1/payment_intents/{id}/cancel", self._cancel)
        app.router.add_post("/v1/refunds", self._refund)
        app.router.add_get("/v1/refunds", self._list_refunds)
        app.router.add_route("*", "/{tail:.*}", self._unrecognized)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeStripe:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- programming and inspecting --------------------------------------------------

    def inject(self, *faults: Fault, endpoint: Endpoint = "confirm") -> None:
        """Queue faults for the next requests to ``endpoint``, one fault per request."""
        if endpoint not in self._faults:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        self._faults[endpoint].extend(faults)

    def pending_faults(self, endpoint: Endpoint = "confirm") -> int:
        return len(self._faults[endpoint])

    def clear_faults(self) -> None:
        """Forget the faults no request has met yet, on every endpoint."""
        for queue in self._faults.values():
            queue.clear()

    def register_payment_method(self, pm_id: str, *, like: str) -> None:
        """Make ``pm_id`` behave as the test PaymentMethod ``like`` (e.g. ``pm_card_visa``)."""
        self._payment_methods[pm_id] = self._payment_methods[like]

    def create_payment_method(self, *, like: str = "pm_card_visa") -> str:
        """A new PaymentMethod (``pm_1...``) behaving as the test PaymentMethod ``like``,
        as Stripe.js makes one from the card a customer typed: single use until it is
        attached to a customer."""
        pm_id = "pm_1" + _rand(23)
        self.register_payment_method(pm_id, like=like)
        return pm_id

    def customer_of(self, pm_id: str) -> str | None:
        """The customer the PaymentMethod is attached to, if any."""
        return self._attached.get(pm_id)

    def used_up(self, pm_id: str) -> bool:
        """The PaymentMethod went through a payment unattached: it cannot be used again."""
        return pm_id in self._used_up

    def register_customer(self, customer_id: str) -> None:
        """Make ``customer_id`` a customer of the account, as a created one is."""
        self._customers.add(customer_id)

    def register_declined_payment_method(
        self, pm_id: str, *, code: str, decline_code: str, advice_code: str = ""
    ) -> None:
        """Make ``pm_id`` declined as a live issuer can decline it, with an advice code
        (Stripe has no test PaymentMethod that gives one)."""
        self._payment_methods[pm_id] = _Decline(code, decline_code, _DECLINED, advice_code)

    def register_failing_authentication(self, pm_id: str) -> None:
        """Make ``pm_id`` fail 3-D Secure within the confirm itself (the issuer refuses
        the frictionless check): Stripe answers the confirm with a 400
        ``payment_intent_authentication_failure`` whose body carries the PaymentIntent,
        left in ``requires_payment_method`` with the failure in ``last_payment_error``:
        open, so whoever holds its client secret may confirm it with another card."""
        self._payment_methods[pm_id] = _AUTH_FAILS

    @property
    def charges_total(self) -> int:
        """Successful charges (authorizations and captures-on-confirm), all PaymentIntents."""
        return sum(self._charges.values())

    def charges_for(self, pi_id: str) -> int:
        return self._charges.get(pi_id, 0)

    def payment_intent(self, pi_id: str) -> dict[str, Any]:
        return self.payment_intents[pi_id]

    def complete_action(self, pi_id: str) -> None:
        """The customer passed 3-D Secure: the PaymentIntent is charged as a confirm
        charges it (held with manual capture, captured otherwise). One declined
        off-session for authentication (``requires_payment_method``) is what Stripe.js
        confirms on-session with its client secret and the PaymentMethod the decline
        names (``last_payment_error.payment_method``)."""
        pi = self.payment_intents[pi_id]
        if pi["payment_method"] is None and pi["last_payment_error"]:
            pi["payment_method"] = pi["last_payment_error"]["payment_method"]["id"]
        pi["last_payment_error"] = None
        pi["next_action"], pi["latest_charge"] = None, "ch_" + _rand(24)
        self._charges[pi_id] = self._charges.get(pi_id, 0) + 1
        self._used(pi)
        if pi["capture_method"] == "manual":
            pi["status"], pi["amount_capturable"] = "requires_capture", pi["amount"]
        else:
            pi["status"], pi["amount_received"] = "succeeded", pi["amount"]

    def fail_action(self, pi_id: str) -> None:
        """The customer failed 3-D Secure: Stripe leaves the PaymentIntent waiting for
        another PaymentMethod, the failure in ``last_payment_error``."""
        pi = self.payment_intents[pi_id]
        pm = pi["payment_method"] or (pi["last_payment_error"] or {}).get("payment_method", {})
        pm_id = pm.get("id") if isinstance(pm, dict) else pm
        pi["status"], pi["next_action"], pi["payment_method"] = (
            "requires_payment_method",
            None,
            None,
        )
        pi["last_payment_error"] = {
            "type": "invalid_request_error",
            "code": "payment_intent_authentication_failure",
            "message": _AUTHENTICATION_FAILED,
            "doc_url": "https://stripe.com/docs/error-codes/payment-intent-authentication-failure",
            "payment_method": {"id": pm_id, "object": "payment_method", "type": "card"},
        }

    def set_status(self, pi_id: str, status: str) -> None:
        """Force a PaymentIntent's status (e.g. ``processing``), as Stripe's side might.
        ``canceled`` is a cancel made outside payorch (the dashboard, another system):
        it changes the intent as the cancel endpoint does, ``last_payment_error`` cleared."""
        pi = self.payment_intents[pi_id]
        if status == "canceled":
            self._canceled(pi, reason=None)
        else:
            pi["status"] = status

    def requests_to(self, endpoint: Endpoint) -> list[RecordedRequest]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def expire_idempotency_keys(self) -> None:
        """A day has passed: Stripe has pruned every key, and a request under one of them
        is a new request again. The objects the requests made stay."""
        self._idempotency.clear()

    def _prune_keys(self) -> None:
        """Forget the keys stored KEY_LIFETIME ago or more, as Stripe prunes them."""
        now = self._clock.now()
        for key in [k for k, s in self._idempotency.items() if now - s.stored_at >= KEY_LIFETIME]:
            del self._idempotency[key]

    def _epoch(self) -> int:
        return int(self._clock.now().timestamp())

    def refunds_for(self, pi_id: str) -> list[dict[str, Any]]:
        """The PaymentIntent's refunds, oldest first."""
        return [r for r in self.refunds.values() if r["payment_intent"] == pi_id]

    def refund_from_dashboard(self, pi_id: str, amount: int) -> str:
        """Someone refunds ``amount`` in Stripe's dashboard (no key, no metadata of
        ours); the refund's id."""
        return str(self._do_refund({"payment_intent": pi_id, "amount": str(amount)})["id"])

    def fail_refund(self, refund_id: str) -> None:
        """The refund fails (the card was closed, say): the money goes back to the
        merchant's balance, and the charge is refundable by that much again."""
        refund = self.refunds[refund_id]
        refund["status"], refund["failure_reason"] = "failed", "expired_or_canceled_card"
        self._refunded[refund["payment_intent"]] -= refund["amount"]

    def set_refund_status(self, refund_id: str, status: str) -> None:
        """Force a refund's status (``pending``, ``failed``, ...), as Stripe's side might."""
        self.refunds[refund_id]["status"] = status

    async def wait_idle(self) -> None:
        """Wait until no request is being handled (stalled and slow ones included)."""
        async with self._idle:
            await self._idle.wait_for(lambda: self._active == 0)

    # -- the pipeline: auth, faults, idempotency, processing, delivery --------------

    async def _serve(
        self,
        request: web.Request,
        endpoint: Endpoint,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> web.StreamResponse:
        self._active += 1
        try:
            return await self._serve_inner(request, endpoint, handler)
        finally:
            self._active -= 1
            async with self._idle:
                self._idle.notify_all()

    async def _serve_inner(
        self,
        request: web.Request,
        endpoint: Endpoint,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> web.StreamResponse:
        if request.method == "POST":
            form = await request.post()
            pairs = [(k, str(v)) for k, v in form.items()]
        else:
            pairs = [(k, v) for k, v in request.query.items()]
        key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        record = RecordedRequest(endpoint, request.method, request.path, key, _nest(pairs))
        record.stripe_version = request.headers.get("Stripe-Version", "")
        self.requests.append(record)

        auth = self._check_auth(request)
        if auth is not None:
            return self._answer(record, auth.status, {"error": auth.error})

        queue = self._faults[endpoint]
        fault = queue.popleft() if queue else None
        if fault is not None and fault.kind == "none":
            fault = None
        record.fault = fault.kind if fault else None

        # Before the idempotency layer: nothing is stored or processed.
        if fault is not None:
            early = await self._early_fault(request, record, fault)
            if early is not None:
                return early

        fingerprint = (request.method, request.path, tuple(sorted(pairs)))
        self._prune_keys()
        stored = self._idempotency.get(key) if key else None
        if key and stored is not None:
            if stored.fingerprint != fingerprint:
                failure = self._idempotency_mismatch(key, stored, fingerprint)
                return self._answer(record, failure.status, {"error": failure.error})
            status, body, headers = stored.status, stored.body, dict(stored.headers)
            headers["Idempotent-Replayed"] = "true"
            record.replayed = True
        elif key and key in self._in_flight:
            error = {
                "type": "idempotency_error",
                "code": "idempotency_key_in_use",
                "message": (
                    "There is currently another in-progress request using this "
                    "Idempotent Key (that probably means you submitted twice, and the "
                    "other request is still going through): "
                    f"{key}. Please try again later."
                ),
            }
            return self._answer(record, 409, {"error": error})
        else:
            target = request.match_info.get("id") if request.method == "POST" else None
            if target is not None and target in self._locked:
                # Past the idempotency layer, before the endpoint ran: nothing is stored.
                error = {
                    "type": "invalid_request_error",
                    "code": "lock_timeout",
                    "message": _LOCK_TIMEOUT_MESSAGE,
                }
                return self._answer(record, 429, {"error": error})
            stall = fault is not None and fault.kind == "stall"
            if key:
                self._in_flight.add(key)
            if stall and target is not None:
                self._locked.add(target)
            try:
                if fault is not None and stall:
                    await self._hold(fault)
                status, body, headers, store = self._process(handler, record.params, fault)
                if key and store:
                    self._idempotency[key] = _Stored(
                        fingerprint, self._clock.now(), status, body, dict(headers)
                    )
            finally:
                if key:
                    self._in_flight.discard(key)
                if stall and target is not None:
                    self._locked.discard(target)

        # After it: the answer is stored, but may be lost or late on the wire.
        if fault is not None and fault.kind == "drop_after_processing":
            return await self._drop(request, record)
        if fault is not None and fault.kind == "drop_mid_answer":
            return await self._drop_mid_answer(request, record, status, body)
        if fault is not None and fault.kind == "slow":
            await self._hold(fault)
        return self._answer(record, status, body, headers)

    async def _early_fault(
        self, request: web.Request, record: RecordedRequest, fault: Fault
    ) -> web.StreamResponse | None:
        headers = self._retry_headers(fault)
        if fault.kind == "rate_limit":
            error = {"type": "invalid_request_error", "code": "rate_limit"}
            error["message"] = fault.message or _RATE_LIMIT_MESSAGE
            return self._answer(record, 429, {"error": error}, headers)
        if fault.kind == "lock_timeout":
            error = {"type": "invalid_request_error", "code": "lock_timeout"}
            error["message"] = fault.message or _LOCK_TIMEOUT_MESSAGE
            return self._answer(record, 429, {"error": error}, headers)
        if fault.kind == "auth_error":
            failure = self._bad_key(self.api_key)
            return self._answer(record, failure.status, {"error": failure.error}, headers)
        if fault.kind == "permission_error":
            # Stripe's body says invalid_request_error; the status (403) says the rest.
            error = {
                "type": "invalid_request_error",
                "message": (
                    "The provided key 'rk_test_****' does not have the required permissions"
                    " for this endpoint on account 'acct_1Fake'. Having the"
                    " 'rak_payment_intent_write' permission would allow this request to"
                    " continue."
                ),
            }
            return self._answer(record, 403, {"error": error}, headers)
        if fault.kind == "invalid_request":
            failure = _invalid(fault.message, code=fault.code)
            return self._answer(record, failure.status, {"error": failure.error}, headers)
        if fault.kind == "drop_before_processing":
            return await self._drop(request, record)
        if fault.kind == "slow" and not fault.process:
            await self._hold(fault)
            return await self._drop(request, record)
        return None

    def _process(
        self,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
        params: dict[str, Any],
        fault: Fault | None,
    ) -> tuple[int, dict[str, Any], dict[str, str], bool]:
        if fault is not None and fault.kind in _STORED_FAILURES:
            if fault.process:
                with contextlib.suppress(_Failure):
                    handler(params)
            status, message = _STORED_FAILURES[fault.kind]
            body = {"error": {"type": "api_error", "message": message}}
            return status, body, self._retry_headers(fault), True
        try:
            return 200, handler(params), {}, True
        except _Failure as failure:
            return failure.status, {"error": failure.error}, {}, failure.store

    def _answer(
        self,
        record: RecordedRequest,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        headers = dict(headers or {})
        headers.setdefault("Request-Id", "req_" + _rand(14))
        if record.stripe_version:
            headers["Stripe-Version"] = record.stripe_version
        record.status = status
        record.request_id = headers["Request-Id"]
        return web.Response(
            status=status,
            body=json.dumps(body).encode(),
            headers=headers,
            content_type="application/json",
        )

    async def _drop(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        record.status = None
        transport = request.transport
        if transport is not None:
            transport.close()
        # Writing to the closed transport fails; aiohttp treats that as a client that left.
        return web.Response(status=204)

    async def _drop_mid_answer(
        self, request: web.Request, record: RecordedRequest, status: int, body: dict[str, Any]
    ) -> web.StreamResponse:
        payload = json.dumps(body).encode()
        response = web.StreamResponse(status=status, headers={"Request-Id": "req_" + _rand(14)})
        response.content_type = "application/json"
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        record.status = None
        if request.transport is not None:
            request.transport.close()
        return response

    async def _hold(self, fault: Fault) -> None:
        """Wait as the fault says: its delay, or until its hold is released."""
        if fault.until is None:
            await self._sleep(fault.delay_s)
            return
        fault.until.reached.set()
        waits = [asyncio.ensure_future(e.wait()) for e in (fault.until.released, self._closing)]
        try:
            # Woken early by stop() too: the server never waits for a hold on shutdown.
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _sleep(self, seconds: float) -> None:
        # Woken early by stop(), so the server never waits out a long delay on shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    @staticmethod
    def _retry_headers(fault: Fault) -> dict[str, str]:
        headers: dict[str, str] = {}
        if fault.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
        if fault.retry_after_s is not None:
            headers["Retry-After"] = f"{fault.retry_after_s:g}"
        return headers

    def _check_auth(self, request: web.Request) -> _Failure | None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != "Bearer" or not key:
            return _Failure(
                401,
                {
                    "type": "invalid_request_error",
                    "message": (
                        "You did not provide an API key. You need to provide your API key "
                        "in the Authorization header, using Bearer auth (e.g. "
                        "'Authorization: Bearer YOUR_SECRET_KEY')."
                    ),
                },
            )
        ok = key == self._only_key if self._only_key else key.startswith(("sk_test_", "rk_test_"))
        return None if ok else self._bad_key(key)

    @staticmethod
    def _bad_key(key: str) -> _Failure:
        # Stripe's own answer: type invalid_request_error, the key masked but for its tail.
        masked = key[:8] + "*" * max(len(key) - 12, 0) + key[-4:] if len(key) > 12 else "****"
        return _Failure(
            401, {"type": "invalid_request_error", "message": f"Invalid API Key provided: {masked}"}
        )

    @staticmethod
    def _idempotency_mismatch(key: str, stored: _Stored, fingerprint: tuple[Any, ...]) -> _Failure:
        if stored.fingerprint[:2] != fingerprint[:2]:
            message = (
                "Keys for idempotent requests can only be used for the same endpoint they were "
                f"first used for ('{stored.fingerprint[0]} {stored.fingerprint[1]}' vs "
                f"'{fingerprint[0]} {fingerprint[1]}'). Try using a key other than '{key}' if "
                "you meant to execute a different request."
            )
            return _Failure(400, {"type": "idempotency_error", "message": message}, store=False)
        message = (
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{key}' if you meant to execute a "
            "different request."
        )
        return _Failure(400, {"type": "idempotency_error", "message": message}, store=False)

    # -- endpoints -------------------------------------------------------------------

    async def _unrecognized(self, request: web.Request) -> web.StreamResponse:
        error = {
            "type": "invalid_request_error",
            "message": (
                f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/."
            ),
        }
        return web.Response(
            status=404,
            body=json.dumps({"error": error}).encode(),
            headers={"Request-Id": "req_" + _rand(14)},
            content_type="application/json",
        )

    async def _create(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "create", self._do_create)

    async def _search(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "search", self._do_search)

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        pi_id = request.match_info["id"]
        return await self._serve(request, "retrieve", lambda _p: self._get_pi(pi_id))

    async def _confirm(self, request: web.Request) -> web.StreamResponse:
        pi_id = request.match_info["id"]
        return await self._serve(request, "confirm", lambda p: self._do_confirm(pi_id, p))

    async def _capture(self, request: web.Request) -> web.StreamResponse:
        pi_id = request.match_info["id"]
        return await self._serve(request, "capture", lambda p: self._do_capture(pi_id, p))

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        pi_id = request.match_info["id"]
        return await self._serve(request, "cancel", lambda p: self._do_cancel(pi_id, p))

    async def _refund(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "refund", self._do_refund)

    async def _list_refunds(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "list_refunds", self._do_list_refunds)

    # -- Stripe's behaviour ------------------------------------------------------------

    def _get_pi(self, pi_id: str) -> dict[str, Any]:
        pi = self.payment_intents.get(pi_id)
        if pi is None:
            raise _invalid(
                f"No such payment_intent: '{pi_id}'", code="resource_missing", param="intent"
            )
        return pi

    def _check_pm(self, pm_id: Any, customer: Any) -> str:
        """The PaymentMethod, if it may be used for a PaymentIntent of ``customer``."""
        if not isinstance(pm_id, str) or pm_id not in self._payment_methods:
            raise _invalid(
                f"No such PaymentMethod: '{pm_id}'",
                code="resource_missing",
                param="payment_method",
            )
        owner = self._attached.get(pm_id)
        if owner is not None and not customer:
            raise _invalid(
                f"The `payment_method` parameter supplied {pm_id} belongs to the Customer "
                f"{owner}. Please include the Customer in the `customer` parameter on the "
                "PaymentIntent.",
                param="payment_method",
            )
        if owner is not None and owner != customer:
            raise _invalid(
                f"The customer does not have a payment method with the ID {pm_id}. The "
                "payment method must be attached to the customer.",
                param="payment_method",
            )
        if pm_id in self._used_up:
            raise _invalid(_USED_UP, code="payment_method_unexpected_state", param="payment_method")
        return pm_id

    def _used(self, pi: dict[str, Any]) -> None:
        """A payment with the PaymentIntent's PaymentMethod went through: it is attached
        to the intent's customer if the intent saves it, else a single-use one is used up.
        Stripe's test PaymentMethods make a new one each time: nothing to keep."""
        pm = pi["payment_method"]
        if pm is None or pm in PAYMENT_METHODS or pm in self._attached:
            return
        if pi["customer"] and pi["setup_future_usage"] in _FUTURE_USAGES:
            self._attached[pm] = pi["customer"]
        else:
            self._used_up.add(pm)

    def _do_create(self, params: dict[str, Any]) -> dict[str, Any]:
        amount_raw = params.get("amount")
        if amount_raw is None:
            raise _invalid(
                "Missing required param: amount.", code="parameter_missing", param="amount"
            )
        if not str(amount_raw).isdigit() or int(amount_raw) < 1:
            raise _invalid(
                "Invalid positive integer", code="parameter_invalid_integer", param="amount"
            )
        currency = str(params.get("currency", "")).lower()
        if len(currency) != 3 or not currency.isalpha():
            raise _invalid(
                f"Invalid currency: {currency}.", code="parameter_invalid_empty", param="currency"
            )
        if currency in UNSUPPORTED_CURRENCIES:
            raise _invalid(
                f"Invalid currency: {currency}. Stripe accounts in US do not support {currency}.",
                param="currency",
            )
        _check_charge_amount(int(amount_raw), currency)
        capture_method = params.get("capture_method", "automatic")
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise _invalid(
                "Invalid capture_method: must be one of automatic, automatic_async, or manual",
                param="capture_method",
            )
        future_usage = params.get("setup_future_usage")
        if future_usage is not None and future_usage not in _FUTURE_USAGES:
            raise _invalid(
                f"Invalid setup_future_usage: must be one of {', '.join(_FUTURE_USAGES)}",
                param="setup_future_usage",
            )
        customer = params.get("customer")
        if customer is not None and customer not in self._customers:
            raise _invalid(
                f"No such customer: '{customer}'", code="resource_missing", param="customer"
            )
        pm = params.get("payment_method")
        if pm is not None:
            self._check_pm(pm, params.get("customer"))
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise _invalid("Invalid object", code="parameter_invalid_empty", param="metadata")
        _check_metadata(metadata)
        pi_id = "pi_" + _rand(24)
        pi: dict[str, Any] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": int(amount_raw),
            "amount_capturable": 0,
            "amount_received": 0,
            "capture_method": capture_method,
            "client_secret": f"{pi_id}_secret_{_rand(25)}",
            "confirmation_method": params.get("confirmation_method", "automatic"),
            "created": self._epoch(),
            "currency": currency,
            "customer": params.get("customer"),
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "payment_method": pm,
            "payment_method_types": ["card"],
            "setup_future_usage": future_usage,
            "status": "requires_confirmation" if pm else "requires_payment_method",
            "canceled_at": None,
            "cancellation_reason": None,
        }
        self.payment_intents[pi_id] = pi
        if _bool(params.get("confirm", "false")):
            return self._do_confirm(pi_id, params)
        return pi

    def _do_confirm(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        pi = self._get_pi(pi_id)
        if pi["status"] not in _CONFIRMABLE:
            raise _unexpected_state(
                f"You cannot confirm this PaymentIntent because it has a status of "
                f"{pi['status']}. Only a PaymentIntent with one of the following statuses may "
                "be confirmed: requires_confirmation, requires_action, requires_payment_method.",
                pi,
            )
        if "payment_method" in params:
            pi["payment_method"] = self._check_pm(params["payment_method"], pi["customer"])
        pm = pi["payment_method"]
        if pm is None:
            raise _unexpected_state(
                "You cannot confirm this PaymentIntent because it's missing a payment method. "
                "To confirm the PaymentIntent with a payment method, pass `payment_method`.",
                pi,
            )
        off_session = _bool(params.get("off_session", "false"))
        behaviour = self._payment_methods[pm]
        pi["next_action"] = None
        if behaviour == _AUTH_ALWAYS or (behaviour == _AUTH_ON_SESSION and not off_session):
            if off_session:
                self._decline(pi, _AUTH_REQUIRED)
            pi["status"] = "requires_action"
            pi["next_action"] = {
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {
                    "type": "three_d_secure_redirect",
                    "stripe_js": f"https://hooks.stripe.com/redirect/authenticate/src_{_rand(24)}",
                    "source": "src_" + _rand(24),
                },
            }
            return pi
        if behaviour == _AUTH_FAILS:
            self.fail_action(pi_id)
            failure = _invalid(
                _AUTHENTICATION_FAILED, code="payment_intent_authentication_failure", store=True
            )
            failure.error["payment_intent"] = json.loads(json.dumps(pi))
            raise failure
        if isinstance(behaviour, _Decline):
            self._decline(pi, behaviour)
        charge_id = "ch_" + _rand(24)
        pi["latest_charge"] = charge_id
        pi["last_payment_error"] = None
        self._charges[pi_id] = self._charges.get(pi_id, 0) + 1
        self._used(pi)
        if pi["capture_method"] == "manual":
            pi["status"] = "requires_capture"
            pi["amount_capturable"] = pi["amount"]
        else:
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
        return pi

    def _decline(self, pi: dict[str, Any], decline: _Decline) -> None:
        charge_id = "ch_" + _rand(24)
        pm = pi["payment_method"]
        error: dict[str, Any] = {
            "type": "card_error",
            "code": decline.code,
            "decline_code": decline.decline_code,
            "message": decline.message,
            **({"advice_code": decline.advice_code} if decline.advice_code else {}),
            "charge": charge_id,
            "doc_url": f"https://stripe.com/docs/error-codes/{decline.code.replace('_', '-')}",
            "payment_method": {"id": pm, "object": "payment_method", "type": "card"},
            "request_log_url": f"https://dashboard.stripe.com/test/logs/req_{_rand(14)}",
        }
        if pm not in PAYMENT_METHODS and pm not in self._attached:
            # A single-use PaymentMethod is spent by a declined payment too.
            self._used_up.add(pm)
        pi["status"] = "requires_payment_method"
        pi["latest_charge"] = charge_id
        pi["payment_method"] = None
        pi["last_payment_error"] = {k: v for k, v in error.items() if k != "request_log_url"}
        raise _Failure(402, {**error, "payment_intent": json.loads(json.dumps(pi))})

    def _do_capture(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        pi = self._get_pi(pi_id)
        if pi["status"] != "requires_capture":
            raise _unexpected_state(
                f"This PaymentIntent could not be captured because it has a status of "
                f"{pi['status']}. Only a PaymentIntent with one of the following statuses may "
                "be captured: requires_capture.",
                pi,
            )
        amount = int(params.get("amount_to_capture", pi["amount_capturable"]))
        if amount > pi["amount_capturable"] or amount < 1:
            raise _invalid(
                "The amount to capture must be less than or equal to the amount capturable.",
                code="amount_too_large",
                param="amount_to_capture",
                store=True,
            )
        pi["status"] = "succeeded"
        pi["amount_received"] = amount
        pi["amount_capturable"] = 0
        return pi

    def _do_cancel(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        pi = self._get_pi(pi_id)
        if pi["status"] not in _CANCELABLE:
            raise _unexpected_state(
                f"You cannot cancel this PaymentIntent because it has a status of "
                f"{pi['status']}. Only a PaymentIntent with one of the following statuses may "
                f"be canceled: {', '.join(_CANCELABLE)}.",
                pi,
            )
        self._canceled(pi, reason=params.get("cancellation_reason"))
        return pi

    def _canceled(self, pi: dict[str, Any], *, reason: str | None) -> None:
        pi["status"] = "canceled"
        pi["amount_capturable"] = 0
        pi["next_action"] = None
        # Stripe's API reference: last_payment_error is cleared when the PaymentIntent
        # is later updated for any reason.
        pi["last_payment_error"] = None
        pi["canceled_at"] = self._epoch()
        pi["cancellation_reason"] = reason

    def _do_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        pi_id = params.get("payment_intent")
        if not pi_id:
            raise _invalid(
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                code="parameter_missing",
                param="payment_intent",
            )
        pi = self._get_pi(str(pi_id))
        if pi["status"] != "succeeded":
            raise _invalid(
                f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                code="charge_not_refundable",
                store=True,
            )
        remaining = pi["amount_received"] - self._refunded.get(pi["id"], 0)
        if remaining <= 0:
            raise _invalid(
                f"Charge {pi['latest_charge']} has already been refunded.",
                code="charge_already_refunded",
                store=True,
            )
        amount = int(params.get("amount", remaining))
        if amount > remaining or amount < 1:
            raise _invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                code="amount_too_large",
                param="amount",
                store=True,
            )
        self._refunded[pi["id"]] = self._refunded.get(pi["id"], 0) + amount
        refund = {
            "id": "re_" + _rand(24),
            "object": "refund",
            "amount": amount,
            "charge": pi["latest_charge"],
            "created": self._epoch(),
            "currency": pi["currency"],
            "metadata": params.get("metadata") or {},
            "payment_intent": pi["id"],
            "reason": params.get("reason"),
            "status": "succeeded",
        }
        self.refunds[refund["id"]] = refund
        return refund

    def _do_search(self, params: dict[str, Any]) -> dict[str, Any]:
        """PaymentIntents matching every ``metadata['key']:'value'`` clause, newest first,
        among those indexed (made ``search_lag_s`` ago or more). One page: the fake's
        tests never have more than a page of matches."""
        query = str(params.get("query", "")).strip()
        clauses = [c.strip() for c in query.split(" AND ")] if query else []
        wanted: list[tuple[str, str]] = []
        for clause in clauses:
            match = _SEARCH_CLAUSE.match(clause)
            if match is None:
                raise _invalid(
                    f"We were unable to parse your search query. Try using the format "
                    f"`metadata['key']:'value'` to query for metadata. ({clause!r})",
                    code="parameter_invalid_empty",
                    param="query",
                )
            wanted.append((match.group(1), match.group(2)))
        if not wanted:
            raise _invalid(
                "Missing required param: query.", code="parameter_missing", param="query"
            )
        indexed_before = self._epoch() - self._search_lag.total_seconds()
        found = [
            pi
            for pi in reversed(self.payment_intents.values())
            if pi["created"] <= indexed_before
            and all(pi["metadata"].get(k) == v for k, v in wanted)
        ]
        return {
            "object": "search_result",
            "data": found,
            "has_more": False,
            "next_page": None,
            "url": "/v1/payment_intents/search",
        }

    def _do_list_refunds(self, params: dict[str, Any]) -> dict[str, Any]:
        raw_limit = str(params.get("limit", "10"))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise _invalid(
                "Invalid integer: limit must be between 1 and 100",
                code="parameter_invalid_integer",
                param="limit",
            )
        # Newest first, as Stripe lists.
        found = list(reversed(self.refunds.values()))
        if "payment_intent" in params:
            found = [r for r in found if r["payment_intent"] == params["payment_intent"]]
        after = params.get("starting_after")
        if after is not None:
            ids = [r["id"] for r in found]
            if after not in ids:
                raise _invalid(
                    f"No such refund: '{after}'", code="resource_missing", param="starting_after"
                )
            found = found[ids.index(after) + 1 :]
        limit = int(raw_limit)
        return {
            "object": "list",
            "data": found[:limit],
            "has_more": len(found) > limit,
            "url": "/v1/refunds",
        }

    def refunded_for(self, pi_id: str) -> int:
        return self._refunded.get(pi_id, 0)


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    """A running FakeStripe per test: ``from tests.fakes.fake_stripe import fake_stripe``."""
    async with FakeStripe() as server:
        yield server
