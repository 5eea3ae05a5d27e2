"""What a processor said, and what we make of it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    SUCCESS = "success"
    SOFT = "soft"
    HARD = "hard"
    REQUIRES_ACTION = "requires_action"
    # No answer: the processor may have charged. Reconciled, never guessed.
    UNKNOWN = "unknown"


class ErrorCode(enum.Enum):
    NONE = "none"
    PROCESSOR_ERROR = "processor_error"
    RATE_LIMITED = "rate_limited"
    LOCK_TIMEOUT = "lock_timeout"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    NETWORK_ERROR = "network_error"
    TIMEOUT = "timeout"
    CARD_DECLINED = "card_declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    LOST_CARD = "lost_card"
    STOLEN_CARD = "stolen_card"
    FRAUDULENT = "fraudulent"
    DO_NOT_HONOR = "do_not_honor"
    EXPIRED_CARD = "expired_card"
    INCORRECT_CVC = "incorrect_cvc"
    PROCESSING_ERROR = "processing_error"
    AUTHENTICATION_REQUIRED = "authentication_required"
    INVALID_REQUEST = "invalid_request"
    PROCESSOR_AUTHENTICATION = "processor_authentication"
    PROCESSOR_PERMISSION = "processor_permission"
    UNMAPPED = "unmapped"
    NO_PROCESSOR_AVAILABLE = "no_processor_available"
    # The caller's deadline left no time to charge the step: nothing sent.
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNKNOWN_OUTCOME = "unknown_outcome"
    # A refund the processor says failed or was canceled: the money stayed with the merchant.
    REFUND_FAILED = "refund_failed"
    # The processor has no payment method by the id the caller gave (Stripe's "No such
    # PaymentMethod"): the caller's to correct, not a fault of ours or of the processor.
    PAYMENT_METHOD_NOT_FOUND = "payment_method_not_found"
    # The processor has no customer by the id the caller gave (Stripe's "No such
    # customer"): the caller's to correct, as a payment method it does not have.
    CUSTOMER_NOT_FOUND = "customer_not_found"
    # The processor has the payment method but will not use it as asked (Stripe: one
    # used up by an earlier payment without being saved on a customer, detached, or
    # saved on another customer): the caller's to correct, never retried as it is.
    PAYMENT_METHOD_UNUSABLE = "payment_method_unusable"
    # The processor's payment object was canceled before this attempt could charge it
    # (Stripe: a PaymentIntent canceled from the dashboard or by a raced request, also
    # while it waited for the customer; an installment's charge the merchant canceled):
    # nothing was charged there, and nothing can be; a new payment may be tried later.
    PAYMENT_CANCELED_AT_PROCESSOR = "payment_canceled_at_processor"
    # The processor will not charge the amount in its currency (Stripe: amount_too_small,
    # below its minimum charge; amount_too_large, above its maximum): the caller's amount
    # to change, not a fault of ours, never retried as it is.
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    # The processor will not charge in the currency (Stripe: one it, or the account's
    # country, does not take): the caller's currency, never retried as it is.
    CURRENCY_NOT_SUPPORTED = "currency_not_supported"
    # The step's charge was interrupted before its outcome was known (its server stopped
    # or died mid-payment, its answer lost or still pending), and the processor, asked
    # afterwards, proved nothing was charged (the reconciler's lookup, a canceled or
    # never made payment object). Not `unknown_outcome`: the outcome is known.
    INTERRUPTED = "interrupted"
    # The customer failed (or abandoned) the 3-D Secure the bank asked of them (Stripe's
    # payment_intent_authentication_failure): nothing charged. Hard and never retried by
    # us, now or later: without the customer the same card is asked to authenticate
    # again. The customer may try again (a new confirmation, another method).
    AUTHENTICATION_FAILED = "authentication_failed"
    # payorch's own limit on a run of the plan (RUN_LIMIT_S) left no time to charge the
    # step: nothing sent. Not DEADLINE_EXCEEDED, which is the caller's deadline.
    RUN_LIMIT_REACHED = "run_limit_reached"


class ResponseKind(enum.Enum):
    """The shape of a processor's answer, before any judgement."""

    # The money is taken (captured) or held (authorized, awaiting capture).
    SUCCEEDED = "succeeded"
    AUTHORIZED = "authorized"
    REQUIRES_ACTION = "requires_action"
    # The processor answered with an error (HTTP status and error body).
    ERROR = "error"
    # The connection failed before the request reached the processor.
    CONNECTION_ERROR = "connection_error"
    # The request was sent and no answer came in time: it may have been processed.
    NO_RESPONSE = "no_response"
    # The processor has the payment but has not finished it (e.g. `processing`).
    PENDING = "pending"
    # A lookup found no payment for the idempotency key: nothing was charged.
    NOT_FOUND = "not_found"
    # The payment exists and was not charged (e.g. back to requires_payment_method).
    NOT_CHARGED = "not_charged"
    # Capture/void/refund done.
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ProcessorResponse:
    """A processor's answer in its own words: adapters fill it, never raise for a decline."""

    kind: ResponseKind
    processor_payment_id: str = ""
    http_status: int = 0
    error_type: str = ""
    code: str = ""
    decline_code: str = ""
    # The request parameter an error is about (Stripe's `param`), when it names one.
    param: str = ""
    # The issuer's advice on charging the card again, beside a decline (Stripe's
    # advice_code: do_not_try_again, confirm_card_data, try_again_later).
    advice_code: str = ""
    message: str = ""
    request_id: str = ""
    # Stripe-Should-Retry header, when present.
    should_retry: bool | None = None
    retry_after_s: float | None = None
    next_action_type: str = ""
    client_secret: str = ""
    # For an error: Stripe stores 500s and 424s under the idempotency key, so the request
    # is over but its outcome indeterminate: it must be looked up before a new key is
    # used. Never set for a request still running under the key (a 409).
    indeterminate: bool = False
    # Nothing able to charge was sent: the call failed on a step before its charge
    # (Stripe: the PaymentIntent create before the confirm), however it failed, even
    # with its answer lost. Proof that this call charged nothing.
    charge_not_sent: bool = False
    # The processor's object is closed: nothing can charge it any more, not even a
    # request still running under an old key (Stripe: a canceled PaymentIntent).
    closed: bool = False
    # The answer was replayed from the processor's idempotency layer, not made now
    # (Stripe: Idempotent-Replayed): a stored 500 replayed says the call under the key
    # is over, and no later try under that key can go through.
    replayed: bool = False
    amount_captured_minor: int = 0
    # Exception class name for connection-level errors (e.g. RateLimitError).
    exception: str = ""


@dataclass(frozen=True, slots=True)
class Classification:
    outcome: Outcome
    error_code: ErrorCode
    # Worth repeating the same request now (same or another processor).
    retry_now: bool
    # Worth charging again later (dunning), not now.
    retry_later: bool
    # Our own bug rather than the processor's or the customer's.
    contract_violation: bool = False
    # Say so when the table had no row for what the processor said.
    unmapped: bool = False


@dataclass(frozen=True, slots=True)
class ProcessorRefund:
    """One refund of a charge as the processor holds it, whoever made it."""

    refund_id: str
    amount_minor: int
    # Gave the money back or is doing so (Stripe: succeeded, pending, requires_action);
    # False: it never will (failed, canceled), and the money stays with the merchant.
    made: bool
    # The idempotency key payorch made it under (its metadata); "" when made elsewhere.
    payorch_key: str = ""


@dataclass(frozen=True, slots=True)
class ChargeRefunds:
    """What a processor holds about a charge's refunds, and which payment step the
    charge was made for (as payorch named it on the processor's object)."""

    # DONE when read; any other answer: nothing could be read, nothing is known.
    answer: ProcessorResponse
    payment_id: str = ""
    step_index: int = -1
    # Oldest first.
    refunds: tuple[ProcessorRefund, ...] = ()
