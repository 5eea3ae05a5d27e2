"""Failure classification: a processor's answer -> outcome, error code, retry flags.

Pure and table-driven. The tables are the documentation too: docs/classification.md
prints them. Declines are the bank speaking; timeouts, 5xx and 429 are the network.
"""

from __future__ import annotations

from payorch.domain.results import (
    Classification,
    ErrorCode,
    Outcome,
    ProcessorResponse,
    ResponseKind,
)

_SUCCESS = Classification(Outcome.SUCCESS, ErrorCode.NONE, retry_now=False, retry_later=False)


def _soft(code: ErrorCode, *, now: bool = True, later: bool = True) -> Classification:
    return Classification(Outcome.SOFT, code, retry_now=now, retry_later=later)


def _hard(code: ErrorCode, *, later: bool = False, ours: bool = False) -> Classification:
    return Classification(
        Outcome.HARD, code, retry_now=False, retry_later=later, contract_violation=ours
    )


# card_error decline codes (Stripe's `decline_code`, else its `code`).
DECLINE_CODES: dict[str, Classification] = {
    "generic_decline": _hard(ErrorCode.CARD_DECLINED, later=True),
    "card_declined": _hard(ErrorCode.CARD_DECLINED, later=True),
    "insufficient_funds": _soft(ErrorCode.INSUFFICIENT_FUNDS, now=False, later=True),
    "do_not_honor": _hard(ErrorCode.DO_NOT_HONOR, later=True),
    "lost_card": _hard(ErrorCode.LOST_CARD),
    "stolen_card": _hard(ErrorCode.STOLEN_CARD),
    "fraudulent": _hard(ErrorCode.FRAUDULENT),
    "pickup_card": _hard(ErrorCode.STOLEN_CARD),
    "expired_card": _hard(ErrorCode.EXPIRED_CARD),
    "incorrect_cvc": _hard(ErrorCode.INCORRECT_CVC),
    "processing_error": _soft(ErrorCode.PROCESSING_ERROR),
    # Stripe's next step for these: attempt the payment again, later (the issuer could
    # not be reached or asked to retry; the card is over its limit until it resets).
    # The dunning ladder's job: at once it would be declined the same way.
    "issuer_not_available": _soft(ErrorCode.CARD_DECLINED, now=False, later=True),
    "try_again_later": _soft(ErrorCode.CARD_DECLINED, now=False, later=True),
    "reenter_transaction": _soft(ErrorCode.CARD_DECLINED, now=False, later=True),
    "approve_with_id": _soft(ErrorCode.CARD_DECLINED, now=False, later=True),
    "card_velocity_exceeded": _soft(ErrorCode.CARD_DECLINED, now=False, later=True),
    # Over the card's count of withdrawals: a limit that resets, as the velocity limit.
    "withdrawal_count_limit_exceeded": _soft(ErrorCode.CARD_DECLINED, now=False, later=True),
    # Final refusals in Stripe's decline-code list (the customer must call the bank, use
    # another card or correct its details): never charged again as they are. The first
    # four are the "never again" codes Stripe retired for advice codes; some still come.
    **dict.fromkeys(
        (
            "do_not_try_again",
            "revocation_of_authorization",
            "revocation_of_all_authorizations",
            "stop_payment_order",
            "restricted_card",
            "security_violation",
            "invalid_account",
            "new_account_information_available",
            "transaction_not_allowed",
            "not_permitted",
            "service_not_allowed",
            "merchant_blacklist",
            "call_issuer",
            "no_action_taken",
            "card_not_supported",
            "currency_not_supported",
            "duplicate_transaction",
            "invalid_amount",
            "incorrect_number",
            "invalid_number",
            "invalid_expiry_month",
            "invalid_expiry_year",
            "invalid_cvc",
            "incorrect_zip",
            # A Stripe test card used in live mode: only a genuine card can pay.
            "testmode_decline",
            # Card-present PIN declines (a reader's): the card must be used at one again.
            "incorrect_pin",
            "invalid_pin",
            "pin_try_exceeded",
            "offline_pin_required",
            "online_or_offline_pin_required",
        ),
        _hard(ErrorCode.CARD_DECLINED),
    ),
    "authentication_required": Classification(
        Outcome.REQUIRES_ACTION,
        ErrorCode.AUTHENTICATION_REQUIRED,
        retry_now=False,
        retry_later=False,
    ),
}

# The issuer's advice (Stripe's advice_code) that charging the card again, the same
# card data, cannot succeed: the networks charge for such retries (Mastercard's merchant
# advice codes, Visa's reattempt rules). It overrides the decline code's retries. Its
# third value, try_again_later, never makes a decline retryable that is not.
NO_RETRY_ADVICE = frozenset({"do_not_try_again", "confirm_card_data"})

# Another request under the same key is still running at the processor (Stripe's 409
# idempotency_key_in_use): it may yet charge, so nothing is settled. Only the same key,
# a moment later, can learn its answer; failing, failing over or a new key could charge
# twice. Not the processor's ill health: the request before it was counted already.
_IN_FLIGHT = Classification(
    Outcome.UNKNOWN, ErrorCode.IDEMPOTENCY_CONFLICT, retry_now=True, retry_later=False
)

# Error `code`s that mean the same whatever the error type.
ERROR_CODES: dict[str, Classification] = {
    "lock_timeout": _soft(ErrorCode.LOCK_TIMEOUT),
    "rate_limit": _soft(ErrorCode.RATE_LIMITED),
    "idempotency_key_in_use": _IN_FLIGHT,
    # The payment method's state forbids the use (Stripe: used up by a payment that did
    # not save it on a customer, or detached): the caller's to correct, never retried.
    "payment_method_unexpected_state": _hard(ErrorCode.PAYMENT_METHOD_UNUSABLE),
    # A refund the processor holds as failed or canceled (the Stripe adapter's names for
    # those statuses): an answer, final for that refund; the money stayed with the merchant.
    "refund_failed": _hard(ErrorCode.REFUND_FAILED),
    "refund_canceled": _hard(ErrorCode.REFUND_FAILED),
    # A confirm refused because the payment was canceled meanwhile (the Stripe adapter's
    # name for Stripe's payment_intent_unexpected_state on a canceled PaymentIntent: the
    # dashboard or a raced request): nothing charged or chargeable there; not ours, not
    # the customer's, so a new payment may be tried later.
    "payment_intent_canceled": _hard(ErrorCode.PAYMENT_CANCELED_AT_PROCESSOR, later=True),
    # The customer failed (or abandoned) the 3-D Secure the bank asked for (Stripe: an
    # invalid_request_error on the PaymentIntent's last_payment_error, the intent back in
    # requires_payment_method): nothing charged. Not our bad request, nor the processor's
    # health. Never retried by us, now or later: without the customer the same card is
    # asked to authenticate again. The customer may try again themselves (docs/).
    "payment_intent_authentication_failure": _hard(ErrorCode.AUTHENTICATION_FAILED),
}

# The code under which a payment canceled at the processor is classified (the Stripe
# adapter's name for a confirm refused on a canceled PaymentIntent); the router reads a
# paused step whose intent it finds canceled by someone else the same way.
CANCELED_AT_PROCESSOR = "payment_intent_canceled"

# Failures a lookup may find on the processor's payment object (Stripe's
# last_payment_error) that are answers of their own, classified as if they had been the
# confirm's: the bank's declines (any card_error) and these codes.
FOUND_FAILURE_CODES = frozenset({"payment_intent_authentication_failure"})

# Invalid requests about a parameter the caller chose, keyed by (code, param): we passed
# it on as given, so the caller's error to correct, never a contract violation of ours.
# A parameter payorch builds itself (the amount, the intent's id) stays ours (below).
CALLER_ERRORS: dict[tuple[str, str], Classification] = {
    ("resource_missing", "payment_method"): _hard(ErrorCode.PAYMENT_METHOD_NOT_FOUND),
    ("resource_missing", "customer"): _hard(ErrorCode.CUSTOMER_NOT_FOUND),
    # Refused with no code, about the payment method (Stripe: "may not be used again",
    # "belongs to the Customer ...", "The customer does not have a payment method"):
    # one it has but will not use with this customer, or at all.
    ("", "payment_method"): _hard(ErrorCode.PAYMENT_METHOD_UNUSABLE),
    # An amount the processor will not charge in its currency (Stripe: below its minimum,
    # 0.50 USD or its equivalent in the account's settlement currency, so not knowable
    # beforehand; above its maximum, eight digits): the caller's amount, valid as ours.
    # The same amount is refused again, so not later either.
    ("amount_too_small", "amount"): _hard(ErrorCode.AMOUNT_OUT_OF_RANGE),
    ("amount_too_large", "amount"): _hard(ErrorCode.AMOUNT_OUT_OF_RANGE),
    # A currency the processor does not take (Stripe refuses it by name, with no code:
    # "Invalid currency: tnd. Stripe accounts in US do not support tnd."): the caller's,
    # an ISO-4217 code payorch takes, which Stripe's account may not. Refused again.
    ("", "currency"): _hard(ErrorCode.CURRENCY_NOT_SUPPORTED),
}

# A processor adapter that raised instead of answering (payorch.app.processor_errors):
# its request may have reached the processor, so the outcome is unknown. Not retried at
# once (the adapter would most likely raise again): the reconciler looks it up.
ADAPTER_ERROR = "adapter_error"

# Error `type`s, when neither the decline code nor the code decided.
ERROR_TYPES: dict[str, Classification] = {
    ADAPTER_ERROR: Classification(
        Outcome.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME, retry_now=False, retry_later=False
    ),
    "api_error": _soft(ErrorCode.PROCESSOR_ERROR),
    "invalid_request_error": _hard(ErrorCode.INVALID_REQUEST, ours=True),
    # Our API key refused (revoked, rolled): nothing was processed. The same key is
    # refused again, so never now on that processor; a later try, once it is replaced.
    "authentication_error": _hard(ErrorCode.PROCESSOR_AUTHENTICATION, later=True),
    # A restricted key without a permission: our set-up, not the customer's doing, so a
    # later try (once the key has it) is worth making; never now with the same key.
    "permission_error": _hard(ErrorCode.PROCESSOR_PERMISSION, later=True),
    "idempotency_error": _hard(ErrorCode.IDEMPOTENCY_CONFLICT, ours=True),
}

# Exception classes of the SDK, for answers with no body.
EXCEPTIONS: dict[str, Classification] = {
    "RateLimitError": _soft(ErrorCode.RATE_LIMITED),
    "APIConnectionError": _soft(ErrorCode.NETWORK_ERROR),
    "APIError": _soft(ErrorCode.PROCESSOR_ERROR),
    "AuthenticationError": _hard(ErrorCode.PROCESSOR_AUTHENTICATION, later=True),
    "PermissionError": _hard(ErrorCode.PROCESSOR_PERMISSION, later=True),
}

# Non-error answers.
KINDS: dict[ResponseKind, Classification] = {
    ResponseKind.SUCCEEDED: _SUCCESS,
    ResponseKind.AUTHORIZED: _SUCCESS,
    ResponseKind.DONE: _SUCCESS,
    ResponseKind.REQUIRES_ACTION: Classification(
        Outcome.REQUIRES_ACTION, ErrorCode.NONE, retry_now=False, retry_later=False
    ),
    ResponseKind.CONNECTION_ERROR: _soft(ErrorCode.NETWORK_ERROR),
    # Sent, no answer: may have been charged. Retried only with the same key.
    ResponseKind.NO_RESPONSE: Classification(
        Outcome.UNKNOWN, ErrorCode.TIMEOUT, retry_now=True, retry_later=False
    ),
    ResponseKind.PENDING: Classification(
        Outcome.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME, retry_now=False, retry_later=False
    ),
    ResponseKind.NOT_FOUND: _soft(ErrorCode.PROCESSOR_ERROR),
    ResponseKind.NOT_CHARGED: _soft(ErrorCode.PROCESSOR_ERROR),
}
# KINDS by each kind's value, for every answer classified: a str key keeps its hash,
# an enum key is hashed by Enum.__hash__, a Python call, on each lookup.
_KIND_OF = {k._value_: v for k, v in KINDS.items()}

# Codes that say the infrastructure (not the bank) failed: these count against health.
# A refused API key too: every payment sent there fails until it is replaced, so
# routing must steer away from that processor as from an outage.
INFRASTRUCTURE_CODES = frozenset(
    {
        ErrorCode.PROCESSOR_ERROR,
        ErrorCode.RATE_LIMITED,
        ErrorCode.LOCK_TIMEOUT,
        ErrorCode.NETWORK_ERROR,
        ErrorCode.TIMEOUT,
        ErrorCode.UNKNOWN_OUTCOME,
        ErrorCode.PROCESSOR_AUTHENTICATION,
    }
)

# Failures of the processor's set-up, not of one request: refused before anything was
# processed, and refused again however often the same processor is asked. The step
# moves to another configured processor (docs/health.md), never retries there. A key
# without a permission too (a 403), though only a refused key counts against health:
# a permission may be missing for one endpoint only.
PROCESSOR_REFUSED_US = frozenset(
    {ErrorCode.PROCESSOR_AUTHENTICATION, ErrorCode.PROCESSOR_PERMISSION}
)

_UNMAPPED = Classification(
    Outcome.HARD, ErrorCode.UNMAPPED, retry_now=False, retry_later=False, unmapped=True
)


def classify(response: ProcessorResponse) -> Classification:
    """Classify one processor answer. Total: every input gets a classification."""
    found = _classify(response)
    if found.outcome is Outcome.UNKNOWN and response.charge_not_sent:
        # Unknown is "may have charged": not so when nothing able to charge was sent.
        # (An adapter that raised before its charge went out: the processor's failure,
        # known, not an unknown outcome.)
        code = found.error_code
        if code is ErrorCode.UNKNOWN_OUTCOME:
            code = ErrorCode.PROCESSOR_ERROR
        return Classification(Outcome.SOFT, code, retry_now=found.retry_now, retry_later=True)
    return found


# A lookup that answered "nothing was charged" did its job: as an attempt it succeeded.
_LOOKUP_ANSWERED = frozenset({ResponseKind.NOT_FOUND, ResponseKind.NOT_CHARGED})


def classify_lookup(response: ProcessorResponse) -> Classification:
    """Classify a lookup as an attempt of its own: an answer, even "not charged", is a
    success (it is what the lookup was for); only a failure to answer is a failure.
    What the answer means for the step is the router's to judge, from the response."""
    if response.kind in _LOOKUP_ANSWERED:
        return _SUCCESS
    return classify(response)


def _classify(response: ProcessorResponse) -> Classification:
    if response.kind is not ResponseKind.ERROR:
        return _KIND_OF[response.kind._value_]
    found = _classify_error(response)
    if found.retry_now and response.should_retry is False:
        # The processor told us not to: Stripe-Should-Retry: false wins.
        return Classification(
            found.outcome,
            found.error_code,
            retry_now=False,
            retry_later=found.retry_later,
            contract_violation=found.contract_violation,
            unmapped=found.unmapped,
        )
    return found


def _classify_error(r: ProcessorResponse) -> Classification:
    if r.error_type == "card_error":
        # The bank spoke. The decline code is its reason; `code` only when there is none.
        key = r.decline_code or r.code
        found = DECLINE_CODES.get(key) or Classification(
            Outcome.HARD, ErrorCode.CARD_DECLINED, retry_now=False, retry_later=False, unmapped=True
        )
        if r.advice_code in NO_RETRY_ADVICE and found.outcome in (Outcome.SOFT, Outcome.HARD):
            return Classification(
                Outcome.HARD,
                found.error_code,
                retry_now=False,
                retry_later=False,
                unmapped=found.unmapped,
            )
        return found
    if r.code in ERROR_CODES:
        # Before the status: Stripe sends lock_timeout as a 429 too.
        return ERROR_CODES[r.code]
    if r.http_status == 429 or r.exception == "RateLimitError":
        return ERROR_CODES["rate_limit"]
    if r.http_status == 409 and r.error_type == "idempotency_error":
        # Another request with the same key is in flight: same key, a moment later.
        return _IN_FLIGHT
    if r.error_type == "invalid_request_error" and (r.code, r.param) in CALLER_ERRORS:
        return CALLER_ERRORS[(r.code, r.param)]
    if r.error_type in ERROR_TYPES:
        return ERROR_TYPES[r.error_type]
    if r.http_status >= 500:
        return ERROR_TYPES["api_error"]
    if r.exception in EXCEPTIONS:
        return EXCEPTIONS[r.exception]
    return _UNMAPPED


def is_infrastructure_failure(c: Classification) -> bool:
    """True when the failure says something about the processor's health."""
    return c.error_code in INFRASTRUCTURE_CODES


def refused_us(c: Classification) -> bool:
    """True when the processor refused our credentials or their permissions: nothing
    was processed, and nothing will be there until they are replaced or granted."""
    return c.error_code in PROCESSOR_REFUSED_US
