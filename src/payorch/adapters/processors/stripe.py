"""Stripe through its official SDK: PaymentIntents in two phases, answers as data.

authorize() first creates the PaymentIntent (no money moves; key ``<intent_key>:create``,
stable across generations) and only then confirms it under the generation's key. So
whenever a confirm's answer is lost, the PaymentIntent id is already known and the
charge can be looked up; and when the id is not known, no confirm was ever sent, and
replaying the create (Stripe answers a repeated key with the stored answer) finds it.

Stripe keeps a key (and the answer stored under it) for 24 hours, then prunes it: a
create replayed later makes a new PaymentIntent, not confirmed, while the step's own may
have been charged. So a step whose id was never kept (a server died during the confirm)
is looked up, once its payment is old enough for the keys to be gone, by searching its
PaymentIntents by metadata (payorch_payment_id, payorch_step); only when none is found
is the create replayed (Stripe's search can lag behind a fresh object, never a day).

A create that got a 500 (or a 424) has it stored under its key, replayed for a day: it
made no PaymentIntent anyone knows of (none was confirmed), so the next create runs
under ``<intent_key>:create:1`` (then ``:2``, ...). Replaying the creates in that order,
past the stored 500s (424s) only, always arrives at the one PaymentIntent of the step.

The adapter never raises for a decline or a processor failure: every answer, error,
timeout and dropped connection becomes a ProcessorResponse, classified elsewhere
(payorch.domain.classification). The API key never appears in a message or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import stripe

from payorch.adapters.clock import SystemClock
from payorch.app.ports import ChargeRequest, Clock
from payorch.app.processor_errors import raised_answer
from payorch.domain.money import EXPONENTS
from payorch.domain.request import processor_metadata
from payorch.domain.results import ChargeRefunds, ProcessorRefund, ProcessorResponse, ResponseKind

if TYPE_CHECKING:
    from stripe.params import (
        PaymentIntentCaptureParams,
        PaymentIntentConfirmParams,
        PaymentIntentCreateParams,
        PaymentIntentSearchParams,
        RefundCreateParams,
        RefundListParams,
    )

__all__ = ["StripeProcessor"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
# Stripe quotes (masked) keys in some messages, e.g. "Invalid API Key provided: sk_test_****".
_KEY_IN_TEXT = re.compile(r"\b[srp]k_(?:live|test)_[A-Za-z0-9_*]*")

# PaymentIntent statuses that mean: no money taken or held, by any confirm that has
# finished. A confirm still running may yet charge all but a canceled one: the router
# takes the others as proof only once the request under its key is over (a stored
# answer, never a 409), and the reconciler only once it has canceled the intent.
_NOT_CHARGED_STATUSES = frozenset({"requires_payment_method", "requires_confirmation", "canceled"})

# The metadata naming the idempotency key a refund was made under: Stripe forgets the
# key after 24 hours, the refund keeps its metadata, so a refund whose answer was lost
# can be found before it is sent again (the same key then makes a new refund).
_REFUND_KEY = "payorch_refund_key"
# Refund statuses that gave nothing back and never will. Any other (succeeded; pending,
# which succeeds asynchronously as a rule; requires_action) is a refund made or under way.
_REFUND_NOT_MADE = frozenset({"failed", "canceled"})
# Stripe's largest page of a list.
_PAGE_LIMIT = 100

# Stripe keeps an idempotency key at least 24 hours. Younger than this (an hour to spare
# for our clock against Stripe's), every key of a payment is surely kept, and replaying a
# create is the way to its PaymentIntent (search may not see a fresh one yet); older, a
# key may be gone and a replayed create makes a new intent: search finds the old one.
_KEYS_SURELY_KEPT = timedelta(hours=23)
# Statuses of a step's PaymentIntents, most telling first, when a search finds several
# (creates answered with a 500 may each have made one; only one was ever confirmed).
_FOUND_RANK = {
    ResponseKind.SUCCEEDED: 0,
    ResponseKind.AUTHORIZED: 0,
    ResponseKind.PENDING: 1,
    ResponseKind.REQUIRES_ACTION: 1,
    ResponseKind.NOT_CHARGED: 3,
}

# Stripe counts these currencies in other units than ISO-4217's minor units: ISK and UGX
# keep two decimals in its API (100 is 1 krona, 1 shilling: Stripe's "special cases",
# kept for backwards compatibility, though its list of zero-decimal currencies names
# UGX), MGA none (ISO gives it two). Our amounts are ISO minor units, so they are scaled
# on the way in and out. (HUF and TWD, its other special cases, are two-decimal as in
# ISO for charges; only their payouts are whole units, which payorch does not make.)
_STRIPE_EXPONENTS = {"ISK": 2, "UGX": 2, "MGA": 0}
# Three-decimal currencies Stripe takes only in tens of the minor unit (its partners
# need the last digit to be 0): rounding would charge another amount, so it refuses.
_TENS_ONLY = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
_NOT_CHARGEABLE = "amount_not_chargeable_in_currency"
# Our name for a confirm Stripe refused (payment_intent_unexpected_state) because the
# PaymentIntent is canceled: classified apart from a refusal of a request of ours.
_INTENT_CANCELED = "payment_intent_canceled"
# Stripe's answer to an off-session confirm the bank will not take without the customer
# (3-D Secure): a 402 card_error `authentication_required` that leaves the PaymentIntent
# in requires_payment_method, still confirmable. Stripe's way back is to bring the
# customer on-session and confirm that same PaymentIntent with Stripe.js (its client
# secret and the PaymentMethod): payorch pauses the step for them, as for requires_action.
_AUTHENTICATION_REQUIRED = "authentication_required"
# Stripe's code in last_payment_error once the customer failed (or abandoned) 3-D Secure.
_AUTHENTICATION_FAILURE = "payment_intent_authentication_failure"
# What the paused step tells the frontend: hand the client secret to Stripe's SDK.
_USE_STRIPE_SDK = "use_stripe_sdk"
# What a lookup of a PaymentIntent reads when a confirm under another key (or under
# the same key, earlier) charged or held it, is waiting for the customer, or is charging
# it: the step's answer, whatever became of the confirm that was refused.
_MOVED_ON = frozenset(
    {
        ResponseKind.SUCCEEDED,
        ResponseKind.AUTHORIZED,
        ResponseKind.REQUIRES_ACTION,
        ResponseKind.PENDING,
    }
)


# The deadline of the SDK call this task is making (the event loop's clock).
_CALL_DEADLINE: ContextVar[float | None] = ContextVar("payorch_stripe_call_deadline", default=None)


class _DeadlineHTTPClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp client, its connect timeout cut to end just before the
    deadline of the call being made: a connect that cannot finish in time then fails
    as a connect (nothing was sent: a connection error, safe to fail over) instead of
    running into the deadline (no answer: the request may have been processed)."""

    def __init__(self, connect_timeout_s: float) -> None:
        super().__init__(timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s))
        self._connect_timeout_s = connect_timeout_s

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> tuple[Any, dict[str, Any]]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        deadline = _CALL_DEADLINE.get()
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            # Time kept after a failed connect to report it before the deadline fires.
            connect = min(self._connect_timeout_s, left - min(0.05, left / 10))
            connect = max(connect, 0.001)
            kwargs["timeout"] = aiohttp.ClientTimeout(
                total=None, connect=connect, sock_connect=connect
            )
        return args, kwargs


class _Failed(Exception):
    """An SDK call ended without an object; carries the answer as data, and whether
    Stripe replayed it from its idempotency layer (``Idempotent-Replayed: true``)."""

    def __init__(self, response: ProcessorResponse, intent: Any = None) -> None:
        super().__init__(response.kind.value)
        self.response = response
        self.replayed = response.replayed
        # The PaymentIntent a card error's body carries (Stripe's `payment_intent`).
        self.intent = intent


def _silence_sdk_console_log() -> None:
    """Keep the SDK from printing every request and answer (client secrets, customers,
    cards' details) straight to stderr, past our JSON log and its scrubber.

    It prints when `stripe.log` is "debug" or "info", or else when STRIPE_LOG was in
    the environment at its import (read once, into `stripe._util.STRIPE_LOG`): so
    unsetting `stripe.log` alone leaves the environment in charge, and both are cleared.
    Its logger ("stripe") is held at WARNING, as payorch's log configuration does, so a
    debug log level does not pass the bodies to our handlers either."""
    stripe.log = None
    sdk_util = getattr(stripe, "_util", None)
    if sdk_util is not None and hasattr(sdk_util, "STRIPE_LOG"):
        sdk_util.STRIPE_LOG = None
    sdk_logger = logging.getLogger("stripe")
    if sdk_logger.getEffectiveLevel() < logging.WARNING:
        sdk_logger.setLevel(logging.WARNING)


class LiveKeyRefused(ValueError):
    """A live key given without allow_live."""


class StripeProcessor:
    """The Processor port on Stripe's PaymentIntents API (async SDK over aiohttp)."""

    def __init__(
        self,
        api_key: str,
        *,
        name: str = "stripe",
        api_base: str | None = None,
        timeout_s: float = 10.0,
        allow_live: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe API key is required")
        if api_key.startswith(_LIVE_KEY_PREFIXES) and not allow_live:
            # Never echo the key: the message names the kind of key only.
            raise LiveKeyRefused("refusing a live Stripe API key; pass allow_live=True to use one")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        _silence_sdk_console_log()
        self.name = name
        self._timeout_s = timeout_s
        # Wall time, to tell whether Stripe may have pruned a payment's keys.
        self._clock: Clock = clock or SystemClock()
        self._api_key = api_key
        # Whether a refused key was reported and no call has gone through since: a
        # revoked key fails every call, and one loud line says so, not one per payment.
        self._key_refused = False
        # Connect timeout only, cut to each call's deadline; the deadline itself is
        # enforced around the call, so a connect that cannot complete is told apart
        # (nothing sent) from a late answer.
        self._http = _DeadlineHTTPClient(timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            # Our router owns retries (same key after a lost answer, next generation only
            # after a lookup says nothing was charged): the SDK must not retry on its own.
            max_network_retries=0,
            http_client=self._http,
        )

    def __repr__(self) -> str:
        return f"StripeProcessor(name={self.name!r})"

    async def aclose(self) -> None:
        """Close the HTTP session (connections are pooled across calls)."""
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> StripeProcessor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the port --------------------------------------------------------------------

    async def authorize(self, request: ChargeRequest) -> ProcessorResponse:
        deadline = self._deadline(request.timeout_s)
        intents = self._client.v1.payment_intents
        try:
            pi_id = (await self._intent_for(request, deadline)).id
        except _Failed as failed:
            # No confirm went out, however the create failed (even with its answer lost,
            # or with a 500 stored under its key): nothing was charged by this call.
            answer = dataclasses.replace(failed.response, charge_not_sent=True, indeterminate=False)
            if _stored_failure(answer.http_status) and answer.should_retry is False:
                # Stripe-Should-Retry: false (sent with most 500s) says a retry under that
                # create key would only replay the stored failure. The next call replays it
                # and moves past it, to the next create key: a new request.
                answer = dataclasses.replace(answer, should_retry=None)
            return answer
        except Exception as exc:
            # Raised instead of answering (a bug, an answer it could not read), but before
            # any confirm went out: nothing was charged by this call.
            return raised_answer(self.name, "PaymentIntent create", exc, charge_not_sent=True)

        # The payment method again: after a decline Stripe detaches it from the intent,
        # and the next generation confirms the same PaymentIntent.
        confirm_params: PaymentIntentConfirmParams = {"payment_method": request.token}
        if request.off_session:
            confirm_params["off_session"] = True
        try:
            confirmed = await self._call(
                deadline,
                lambda: intents.confirm_async(
                    pi_id, confirm_params, {"idempotency_key": request.idempotency_key}
                ),
            )
        except _Failed as failed:
            answer = _with_id(failed.response, pi_id)
            waiting = _waiting_for_customer(answer, failed.intent, request.off_session)
            if waiting is not None:
                return waiting
            if answer.code == _AUTHENTICATION_FAILURE:
                # The customer's 3-D Secure failed within this confirm: the intent stays
                # open to another card, so it is closed as a failure found on it is.
                found = await self._close_failed(pi_id, answer, deadline, request)
                return _after_failed_authentication(answer, found)
            if answer.code == "payment_intent_unexpected_state":
                # Confirmed before under another key: say what the PaymentIntent holds.
                found = await self._lookup_by_id(pi_id, deadline, request.off_session)
                if _authentication_failed(found):
                    found = await self._close_failed(pi_id, found, deadline, request)
                return _after_unexpected_state(answer, found)
            if _key_reused(answer):
                # Confirmed before under this very key, with other parameters (a bug of
                # ours): that confirm ran, and what it did is the step's answer.
                found = await self._lookup_by_id(pi_id, deadline, request.off_session)
                _log.error(
                    "stripe %s: confirm key %s was used before with other parameters"
                    " (request_id=%s); PaymentIntent %s reads %s",
                    self.name,
                    request.idempotency_key,
                    answer.request_id,
                    pi_id,
                    found.kind.value,
                )
                return _after_key_reused(answer, found)
            return answer
        return self._from_intent(confirmed)

    async def lookup(self, request: ChargeRequest, processor_payment_id: str) -> ProcessorResponse:
        deadline = self._deadline(request.timeout_s)
        pi_id = processor_payment_id
        if not pi_id and self._keys_may_be_pruned(request):
            found = await self._search_intent(request, deadline)
            if found is not None:
                return found
        if not pi_id:
            # No id: replaying the creates under their keys returns the stored answers.
            try:
                pi_id = (await self._intent_for(request, deadline)).id
            except _Failed as failed:
                answer = failed.response
                if _create_refused(answer):
                    # Stripe refuses a create with these parameters: no PaymentIntent,
                    # so no confirm was ever sent and nothing charged.
                    return dataclasses.replace(answer, kind=ResponseKind.NOT_FOUND)
                # Anything else proves nothing, a fresh 500 included: the key may hold
                # an intent its earlier answer would have shown.
                return answer
        return await self._lookup_by_id(pi_id, deadline, request.off_session)

    async def capture(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse:
        params: PaymentIntentCaptureParams = {}
        if amount_minor > 0:
            amount = _stripe_amount(amount_minor, currency)
            if amount is None:
                return _with_id(_not_chargeable(amount_minor, currency), processor_payment_id)
            params["amount_to_capture"] = amount
        try:
            pi = await self._call(
                self._deadline(self._timeout_s),
                lambda: self._client.v1.payment_intents.capture_async(
                    processor_payment_id, params, {"idempotency_key": idempotency_key}
                ),
            )
        except _Failed as failed:
            return _with_id(failed.response, processor_payment_id)
        if pi.status == "succeeded":
            return ProcessorResponse(
                ResponseKind.DONE,
                processor_payment_id=pi.id,
                amount_captured_minor=_our_amount(pi.amount_received, pi.currency),
                request_id=_request_id(pi),
            )
        return self._from_intent(pi)

    async def cancel(self, processor_payment_id: str, idempotency_key: str) -> ProcessorResponse:
        try:
            pi = await self._call(
                self._deadline(self._timeout_s),
                lambda: self._client.v1.payment_intents.cancel_async(
                    processor_payment_id, None, {"idempotency_key": idempotency_key}
                ),
            )
        except _Failed as failed:
            return _with_id(failed.response, processor_payment_id)
        if pi.status == "canceled":
            return ProcessorResponse(
                ResponseKind.DONE, processor_payment_id=pi.id, request_id=_request_id(pi)
            )
        return self._from_intent(pi)

    async def refund(
        self, processor_payment_id: str, amount_minor: int, idempotency_key: str, *, currency: str
    ) -> ProcessorResponse:
        params: RefundCreateParams = {
            "payment_intent": processor_payment_id,
            "metadata": {_REFUND_KEY: idempotency_key},
        }
        if amount_minor > 0:
            amount = _stripe_amount(amount_minor, currency)
            if amount is None:
                return _with_id(_not_chargeable(amount_minor, currency), processor_payment_id)
            params["amount"] = amount
        try:
            refund = await self._call(
                self._deadline(self._timeout_s),
                lambda: self._client.v1.refunds.create_async(
                    params, {"idempotency_key": idempotency_key}
                ),
            )
        except _Failed as failed:
            return _with_id(failed.response, processor_payment_id)
        status = refund.status or ""
        if status in _REFUND_NOT_MADE:
            # Refunds fail asynchronously as a rule; an immediate failure is still an answer.
            return ProcessorResponse(
                ResponseKind.ERROR,
                processor_payment_id=processor_payment_id,
                code=f"refund_{status}",
                message=f"refund {refund.id} is {status}",
                request_id=_request_id(refund),
            )
        return ProcessorResponse(
            ResponseKind.DONE,
            processor_payment_id=processor_payment_id,
            request_id=_request_id(refund),
        )

    async def find_refund(
        self, processor_payment_id: str, idempotency_key: str
    ) -> ProcessorResponse:
        """The PaymentIntent's refunds, page by page, for one made under the key."""
        request_id = ""
        try:
            async for page, request_id in self._refund_pages(
                processor_payment_id, self._deadline(self._timeout_s)
            ):
                for refund in page:
                    status = refund.status or ""
                    made_under = _get(_get(refund, "metadata"), _REFUND_KEY)
                    if made_under == idempotency_key and status not in _REFUND_NOT_MADE:
                        return ProcessorResponse(
                            ResponseKind.DONE,
                            processor_payment_id=processor_payment_id,
                            message=f"refund {refund.id} is {status}",
                            request_id=request_id,
                        )
        except _Failed as failed:
            return _with_id(failed.response, processor_payment_id)
        return ProcessorResponse(
            ResponseKind.NOT_FOUND,
            processor_payment_id=processor_payment_id,
            message="no refund made under this key",
            request_id=request_id,
        )

    async def refunds(self, processor_payment_id: str) -> ChargeRefunds:
        """The PaymentIntent (its metadata names payorch's payment and step) and every
        refund of it, whoever made it: read from Stripe, not from an event's body."""
        deadline = self._deadline(self._timeout_s)
        try:
            pi = await self._call(
                deadline,
                lambda: self._client.v1.payment_intents.retrieve_async(processor_payment_id),
            )
            refunds: list[stripe.Refund] = []
            request_id = ""
            async for page, page_request_id in self._refund_pages(processor_payment_id, deadline):
                refunds.extend(page)
                request_id = page_request_id
        except _Failed as failed:
            return ChargeRefunds(_with_id(failed.response, processor_payment_id))
        metadata = _get(pi, "metadata")
        step = str(_get(metadata, "payorch_step") or "")
        return ChargeRefunds(
            ProcessorResponse(ResponseKind.DONE, processor_payment_id=pi.id, request_id=request_id),
            payment_id=str(_get(metadata, "payorch_payment_id") or ""),
            step_index=int(step) if step.isascii() and step.isdigit() else -1,
            refunds=tuple(
                ProcessorRefund(
                    refund.id,
                    _our_amount(refund.amount, refund.currency or pi.currency),
                    made=(refund.status or "") not in _REFUND_NOT_MADE,
                    payorch_key=str(_get(_get(refund, "metadata"), _REFUND_KEY) or ""),
                )
                for refund in reversed(refunds)  # Stripe lists the newest first
            ),
        )

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _deadline(timeout_s: float) -> float:
        return asyncio.get_running_loop().time() + timeout_s

    async def _intent_for(self, request: ChargeRequest, deadline: float) -> stripe.PaymentIntent:
        """The step's PaymentIntent, by (re)playing its creates in order: the first
        create key that is not holding a stored 500 made it, or makes it now. Raises
        _Failed with the first other answer (a 500 that was not a replay included: it
        says nothing about an intent made before, and is stored for the next call)."""
        amount = _stripe_amount(request.amount_minor, request.currency)
        if amount is None:
            # Refused before any call: no PaymentIntent is ever made for it.
            raise _Failed(_not_chargeable(request.amount_minor, request.currency))
        link = 0
        while True:
            try:
                key = _create_key(request.intent_key, link)
                return await self._create(request, amount, key, deadline)
            except _Failed as failed:
                if not (failed.replayed and _stored_failure(failed.response.http_status)):
                    raise
            # Stored 500 (or 424): that create made no intent anyone knows of, none was
            # confirmed.
            link += 1

    def _keys_may_be_pruned(self, request: ChargeRequest) -> bool:
        """Whether Stripe may have pruned the keys of the request's payment: it made
        them all after the payment was made. Not knowing when that was, they are kept."""
        made = request.created_at
        if made is None:
            return False
        if made.tzinfo is None:
            made = made.replace(tzinfo=UTC)  # stored as UTC without its zone
        return self._clock.now() - made >= _KEYS_SURELY_KEPT

    async def _search_intent(
        self, request: ChargeRequest, deadline: float
    ) -> ProcessorResponse | None:
        """The step's PaymentIntent found by its metadata, read afresh (a search result
        can lag behind the object); None when Stripe has none for the step. Any answer
        but a found intent or none (a search Stripe refuses or cannot answer) is an
        error, which proves nothing: the step stays to be looked up again."""
        query = " AND ".join(
            f"metadata['{name}']:'{_quoted(value)}'"
            for name, value in (
                ("payorch_payment_id", request.payment_id),
                ("payorch_step", str(request.step_index)),
            )
        )
        params: PaymentIntentSearchParams = {"query": query, "limit": _PAGE_LIMIT}
        try:
            page = await self._call(
                deadline, functools.partial(self._client.v1.payment_intents.search_async, params)
            )
        except _Failed as failed:
            # Proves nothing, not even a refusal of the query: never "not found".
            return failed.response
        if not page.data:
            return None
        answers = [
            await self._lookup_by_id(pi.id, deadline, request.off_session) for pi in page.data
        ]
        return min(answers, key=_found_rank)

    async def _create(
        self, request: ChargeRequest, amount: int, key: str, deadline: float
    ) -> stripe.PaymentIntent:
        return await self._call(
            deadline,
            lambda: self._client.v1.payment_intents.create_async(
                self._create_params(request, amount), {"idempotency_key": key}
            ),
        )

    @staticmethod
    def _create_params(request: ChargeRequest, amount: int) -> PaymentIntentCreateParams:
        """Identical on every call for one intent key: Stripe replays, never conflicts."""
        own = {"payorch_payment_id": request.payment_id, "payorch_step": str(request.step_index)}
        if request.merchant_id:
            own["payorch_merchant_id"] = request.merchant_id
        # The caller's metadata too, shown with the intent in Stripe's dashboard.
        metadata = processor_metadata(request.metadata, own)
        params: PaymentIntentCreateParams = {
            "amount": amount,
            "currency": request.currency.lower(),
            "payment_method": request.token,
            "capture_method": "automatic" if request.capture else "manual",
            # Confirmed server-side without a return_url: only methods that never redirect.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": metadata,
        }
        if request.customer_id:
            params["customer"] = request.customer_id
            if request.save_for_off_session:
                # Stripe attaches the method to the customer once the intent succeeds;
                # unattached, a PaymentMethod is used up by its first payment.
                params["setup_future_usage"] = "off_session"
        return params

    async def _refund_pages(
        self, pi_id: str, deadline: float
    ) -> AsyncIterator[tuple[list[stripe.Refund], str]]:
        """The PaymentIntent's refunds a page at a time, newest first, each page with its
        request id; raises _Failed when a page could not be read."""
        params: RefundListParams = {"payment_intent": pi_id, "limit": _PAGE_LIMIT}
        while True:
            page = await self._call(
                deadline, functools.partial(self._client.v1.refunds.list_async, params)
            )
            yield page.data, _request_id(page)
            if not (page.has_more and page.data):
                return
            params = {**params, "starting_after": page.data[-1].id}

    async def _lookup_by_id(
        self, pi_id: str, deadline: float, off_session: bool
    ) -> ProcessorResponse:
        try:
            pi = await self._call(
                deadline, lambda: self._client.v1.payment_intents.retrieve_async(pi_id)
            )
        except _Failed as failed:
            return _with_id(failed.response, pi_id)
        found = self._from_intent(pi)
        # Declined off-session for authentication, and the customer has not acted since:
        # the same pause the confirm's answer was (a lost 402, a webhook's hint).
        return _waiting_for_customer(found, pi, off_session) or found

    async def _close_failed(
        self, pi_id: str, failed: ProcessorResponse, deadline: float, request: ChargeRequest
    ) -> ProcessorResponse:
        """The customer's failed 3-D Secure, a confirm's answer or found on an intent
        still open: final, but whoever holds the intent's client secret may confirm it
        again with another card, which would charge a step failed. Canceled first, as
        the reconciler closes such an intent (docs/recovery.md): the failure once it is
        closed; what the intent holds when the cancel did not go through (charged, or
        open: pending, for the reconciler)."""
        with contextlib.suppress(_Failed):
            await self._call(
                deadline,
                lambda: self._client.v1.payment_intents.cancel_async(
                    pi_id, None, {"idempotency_key": f"{request.idempotency_key}_close"}
                ),
            )
        found = await self._lookup_by_id(pi_id, deadline, request.off_session)
        if found.kind is ResponseKind.NOT_CHARGED and found.closed:
            return dataclasses.replace(failed, closed=True)
        return found

    async def _call(self, deadline: float, call: Callable[[], Awaitable[_T]]) -> _T:
        """One SDK call within the deadline; anything but an object becomes _Failed."""
        bound = _CALL_DEADLINE.set(deadline)
        try:
            async with asyncio.timeout_at(deadline):
                answer = await call()
            self._key_refused = False
            return answer
        except stripe.StripeError as error:
            replayed = _header(error.headers or {}, "Idempotent-Replayed") == "true"
            raise _Failed(
                dataclasses.replace(self._from_error(error), replayed=replayed),
                _get(error.error, "payment_intent"),
            ) from None
        except TimeoutError as error:
            # Our deadline (or aiohttp's read timeout): the request may have been processed.
            raise _Failed(
                ProcessorResponse(
                    ResponseKind.NO_RESPONSE,
                    exception=type(error).__name__,
                    message="no answer from Stripe within the deadline",
                )
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            # Raised by the SDK's aiohttp client while reading a body it had started to get.
            raise _Failed(
                ProcessorResponse(
                    ResponseKind.NO_RESPONSE,
                    exception=type(error).__name__,
                    message="connection lost while reading Stripe's answer",
                )
            ) from None
        finally:
            _CALL_DEADLINE.reset(bound)

    def _from_intent(self, pi: stripe.PaymentIntent) -> ProcessorResponse:
        status = pi.status
        common: dict[str, Any] = {
            "processor_payment_id": pi.id,
            "request_id": _request_id(pi),
        }
        if status == "succeeded":
            return ProcessorResponse(
                ResponseKind.SUCCEEDED,
                amount_captured_minor=_our_amount(pi.amount_received, pi.currency),
                **common,
            )
        if status == "requires_capture":
            return ProcessorResponse(ResponseKind.AUTHORIZED, **common)
        if status == "requires_action":
            next_action = _get(pi, "next_action")
            return ProcessorResponse(
                ResponseKind.REQUIRES_ACTION,
                next_action_type=str(_get(next_action, "type") or ""),
                client_secret=str(_get(pi, "client_secret") or ""),
                **common,
            )
        if status in _NOT_CHARGED_STATUSES:
            last = _get(pi, "last_payment_error")
            return ProcessorResponse(
                ResponseKind.NOT_CHARGED,
                error_type=str(_get(last, "type") or ""),
                code=str(_get(last, "code") or ""),
                decline_code=str(_get(last, "decline_code") or ""),
                advice_code=str(_get(last, "advice_code") or ""),
                message=self._redact(str(_get(last, "message") or f"status {status}")),
                closed=status == "canceled",
                **common,
            )
        # processing, or a status this code does not know: not final, reconcile later.
        return ProcessorResponse(ResponseKind.PENDING, message=f"status {status}", **common)

    def _from_error(self, error: stripe.StripeError) -> ProcessorResponse:
        body = error.error
        headers = error.headers or {}
        status = error.http_status or 0
        exception = type(error).__name__
        should_retry = _should_retry(headers)
        retry_after = _retry_after(headers)
        request_id = error.request_id or ""

        if isinstance(error, stripe.APIConnectionError):
            kind = _connection_failure_kind(error)
            _log.info("stripe: %s (%s)", kind.value, _cause_name(error))
            return ProcessorResponse(
                kind,
                exception=exception,
                message=self._redact(f"{error.user_message or ''} [{_cause_name(error)}]"),
                should_retry=should_retry,
                retry_after_s=retry_after,
            )

        error_type = str(_get(body, "type") or "")
        code = str(_get(body, "code") or error.code or "")
        decline_code = str(_get(body, "decline_code") or "")
        param = str(_get(body, "param") or "")
        advice_code = str(_get(body, "advice_code") or "")
        message = self._redact(str(_get(body, "message") or error.user_message or ""))
        pi_id = str(_get(_get(body, "payment_intent"), "id") or "")
        indeterminate = False

        # The exception class says what the HTTP status said; the body's type can be
        # vaguer (Stripe answers a bad key with type invalid_request_error, status 401).
        if isinstance(error, stripe.CardError):
            error_type = error_type or "card_error"
        elif isinstance(error, stripe.AuthenticationError):
            error_type = "authentication_error"
            if not self._key_refused:
                self._key_refused = True
                _log.error(
                    "stripe %s: our API key was refused (HTTP 401, request_id=%s): every call"
                    " fails until the key is replaced; counted against its health, payments"
                    " fail over to other configured processors",
                    self.name,
                    request_id,
                )
        elif isinstance(error, stripe.PermissionError):
            error_type = "permission_error"
        elif isinstance(error, stripe.IdempotencyError):
            error_type = "idempotency_error"
        elif isinstance(error, stripe.RateLimitError):
            status = status or 429
            error_type = error_type or "invalid_request_error"
            code = code or "rate_limit"
        elif isinstance(error, stripe.InvalidRequestError):
            error_type = error_type or "invalid_request_error"
        elif isinstance(error, stripe.APIError):
            error_type = error_type or "api_error"
            # A 5xx or a 424 is stored under the key: the request is over, its outcome
            # unknown until looked up. So is an answer that could not be read at all. Not
            # a 409: the request under the key is still running, and a lookup would see
            # the intent before its confirm ("requires_confirmation"), which proves nothing.
            indeterminate = _stored_failure(status) or not 400 <= status < 500
        _log.log(
            logging.INFO if indeterminate or status == 429 else logging.DEBUG,
            "stripe: error status=%s type=%s code=%s decline_code=%s request_id=%s",
            status,
            error_type,
            code,
            decline_code,
            request_id,
        )
        return ProcessorResponse(
            ResponseKind.ERROR,
            processor_payment_id=pi_id,
            http_status=status,
            error_type=error_type,
            code=code,
            decline_code=decline_code,
            param=param,
            advice_code=advice_code,
            message=message,
            request_id=request_id,
            should_retry=should_retry,
            retry_after_s=retry_after,
            indeterminate=indeterminate,
            exception=exception,
        )

    def _redact(self, text: str) -> str:
        if self._api_key in text:
            text = text.replace(self._api_key, "[redacted]")
        return _KEY_IN_TEXT.sub("[redacted]", text)


def _with_id(response: ProcessorResponse, pi_id: str) -> ProcessorResponse:
    if response.processor_payment_id:
        return response
    return dataclasses.replace(response, processor_payment_id=pi_id)


def _after_unexpected_state(
    refused: ProcessorResponse, found: ProcessorResponse
) -> ProcessorResponse:
    """A confirm refused because the PaymentIntent moved on without this call: charged
    or held, being charged (`processing`), waiting for the customer, declined or
    canceled (by an earlier or raced request, the dashboard). The lookup's state is the
    answer; the refusal is never a bad request of ours. A charge under way is pending,
    and so is an intent the lookup could not read (reconciled, not failed: a failed step
    could let a fallback method be charged as well)."""
    if found.kind in _MOVED_ON:
        return found
    if found.closed and _authentication_failed(found):
        # The customer's failed 3-D Secure, the intent closed since (_close_failed): the
        # step's answer, as the reconciler would settle it, not a pending detour.
        return dataclasses.replace(found, kind=ResponseKind.ERROR)
    if found.kind is ResponseKind.NOT_CHARGED and found.closed:
        # Canceled: nothing was charged, and no confirm can charge it any more.
        return dataclasses.replace(refused, code=_INTENT_CANCELED, closed=True)
    if found.kind is ResponseKind.NOT_CHARGED and found.error_type == "card_error":
        # Declined since (the charge that was processing failed): the bank's answer.
        return dataclasses.replace(found, kind=ResponseKind.ERROR)
    # Open again without a decline, or unreadable: a request may still charge it.
    return dataclasses.replace(refused, kind=ResponseKind.PENDING)


def _after_failed_authentication(
    failed: ProcessorResponse, found: ProcessorResponse
) -> ProcessorResponse:
    """A confirm answered with the customer's failed 3-D Secure, its intent then
    canceled (_close_failed): the failure once the intent is closed. When the cancel did
    not go through, never that failure, which would free a fallback method while the
    intent can still be charged: what the intent holds if it moved on (charged by a
    confirm with its client secret, waiting for the customer, under way), else pending,
    for the reconciler to close it and fail the step then."""
    if found.closed or found.kind in _MOVED_ON:
        return found
    return dataclasses.replace(failed, kind=ResponseKind.PENDING)


def _authentication_failed(found: ProcessorResponse) -> bool:
    """A lookup found the customer's failed 3-D Secure (last_payment_error)."""
    return found.kind is ResponseKind.NOT_CHARGED and found.code == _AUTHENTICATION_FAILURE


def _waiting_for_customer(
    answer: ProcessorResponse, intent: Any, off_session: bool
) -> ProcessorResponse | None:
    """The step paused for the customer, when Stripe declined an off-session confirm
    for authentication (the 402's body, or a lookup's last_payment_error) and left the
    PaymentIntent open: its id and client secret let the customer confirm that same
    intent on-session, so no second PaymentIntent, and no second charge, can come of
    it. None for anything else: an on-session payment had its customer there (the
    bank's decline stands), and a failed 3-D Secure of theirs is another code."""
    if not off_session or answer.kind not in (ResponseKind.ERROR, ResponseKind.NOT_CHARGED):
        return None
    if answer.error_type != "card_error" or _AUTHENTICATION_REQUIRED not in (
        answer.code,
        answer.decline_code,
    ):
        return None
    secret = str(_get(intent, "client_secret") or "")
    if not secret or _get(intent, "status") != "requires_payment_method":
        return None
    return dataclasses.replace(
        answer,
        kind=ResponseKind.REQUIRES_ACTION,
        processor_payment_id=str(_get(intent, "id") or answer.processor_payment_id),
        next_action_type=_USE_STRIPE_SDK,
        client_secret=secret,
    )


def _key_reused(response: ProcessorResponse) -> bool:
    """Stripe's 400 idempotency_error: the key holds an earlier request, over, made with
    other parameters. (A 409 is one still running: never this.)"""
    return (
        response.kind is ResponseKind.ERROR
        and response.error_type == "idempotency_error"
        and response.http_status == 400
    )


def _after_key_reused(refused: ProcessorResponse, found: ProcessorResponse) -> ProcessorResponse:
    """A confirm refused because its key was used before with other parameters: the
    earlier confirm under it is over, and the PaymentIntent shows what it did. Charged,
    held, waiting for the customer or under way is the step's answer: a failed step
    would let a fallback method charge the customer again. Nothing charged: the refusal
    stands (our contract violation). An intent that could not be read: pending, for the
    reconciler, as nothing proves it uncharged."""
    if found.kind in _MOVED_ON:
        return found
    if found.kind is ResponseKind.NOT_CHARGED:
        return refused
    return dataclasses.replace(refused, kind=ResponseKind.PENDING)


def _found_rank(found: ProcessorResponse) -> tuple[int, int]:
    """Which of a step's PaymentIntents answers for it: one charged, held or on its way
    first; then one that could not be read (it may be charged); then one not charged,
    open before closed and with the bank's decline before without."""
    rank = _FOUND_RANK.get(found.kind, 2)
    return rank, int(found.closed) * 2 + int(found.error_type != "card_error")


def _quoted(value: str) -> str:
    """A value inside single quotes in Stripe's search query language."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _stripe_amount(amount_minor: int, currency: str) -> int | None:
    """Our ISO-4217 minor units as Stripe counts the currency; None when Stripe cannot
    charge that exact amount (half an ariary, a three-decimal amount not in tens)."""
    code = currency.upper()
    shift = _shift(code)
    if shift < 0:
        whole, rest = divmod(amount_minor, int(10**-shift))
        return None if rest else whole
    if code in _TENS_ONLY and amount_minor % 10:
        return None
    return amount_minor * int(10**shift)


def _our_amount(stripe_amount: int | None, currency: str | None) -> int:
    """An amount Stripe reports, in our ISO-4217 minor units."""
    shift = _shift((currency or "").upper())
    amount = stripe_amount or 0
    return amount * int(10**-shift) if shift < 0 else amount // int(10**shift)


def _shift(code: str) -> int:
    """Stripe's decimals for the currency less ISO-4217's."""
    iso = EXPONENTS.get(code, 2)
    return _STRIPE_EXPONENTS.get(code, iso) - iso


def _not_chargeable(amount_minor: int, currency: str) -> ProcessorResponse:
    """Stripe's refusal of an amount it cannot express, given without asking it."""
    code = currency.upper()
    unit = "tens of the minor unit" if code in _TENS_ONLY else "whole units"
    return ProcessorResponse(
        ResponseKind.ERROR,
        error_type="invalid_request_error",
        code=_NOT_CHARGEABLE,
        message=f"{amount_minor} minor units of {code}: Stripe charges {code} only in {unit}",
    )


def _create_key(intent_key: str, link: int) -> str:
    """The idempotency key of a step's PaymentIntent create; `link` counts the creates
    before it that got a 500 (stored under their keys, and so replayed for a day)."""
    return f"{intent_key}:create" if link == 0 else f"{intent_key}:create:{link}"


def _stored_failure(http_status: int) -> bool:
    """Stripe ran the request and it failed on Stripe's side (a 5xx) or on a dependency
    outside Stripe (424, External Dependency Failed: a card network or bank, say). Either
    answer is stored under the key and replayed; whether a confirm charged before the
    failure is not said: only a lookup tells."""
    return http_status >= 500 or http_status == 424


def _create_refused(response: ProcessorResponse) -> bool:
    """A create Stripe refused as it would refuse it again (a 4xx on its parameters):
    no PaymentIntent id was handed out under this key or any later one."""
    if response.kind is not ResponseKind.ERROR:
        return False
    if response.code == _NOT_CHARGEABLE:
        return True  # refused before any create was sent
    if response.http_status in (401, 403, 409, 429) or _stored_failure(response.http_status):
        return False
    if response.error_type == "idempotency_error":
        return False
    return 400 <= response.http_status < 500


def _connection_failure_kind(error: stripe.APIConnectionError) -> ResponseKind:
    """Refused, unresolvable or unreachable before sending: CONNECTION_ERROR. Anything
    after the request may have been written (reset, disconnect, read timeout): NO_RESPONSE."""
    cause: BaseException | None = error.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return ResponseKind.CONNECTION_ERROR
        cause = cause.__cause__
    return ResponseKind.NO_RESPONSE


def _cause_name(error: BaseException) -> str:
    cause = error.__cause__
    return type(cause).__name__ if cause is not None else "unknown cause"


def _get(obj: Any, name: str) -> Any:
    """A field of a StripeObject (or None): absent fields raise AttributeError there."""
    if obj is None:
        return None
    return getattr(obj, name, None)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    value = _header(headers, "Stripe-Should-Retry")
    if value is None:
        return None
    value = value.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = _header(headers, "Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: not something Stripe sends
    return max(seconds, 0.0)


def _request_id(obj: Any) -> str:
    response = getattr(obj, "last_response", None)
    return str(getattr(response, "request_id", None) or "")
