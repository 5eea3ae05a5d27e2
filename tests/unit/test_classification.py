"""classify(): a processor's answer -> outcome, error code and retry flags.

Responses are shaped the way Stripe sends them (HTTP status, error type, code,
decline code) so the tests read like the Stripe error table in the seed.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payorch.domain import classification
from payorch.domain.classification import (
    DECLINE_CODES,
    ERROR_CODES,
    ERROR_TYPES,
    EXCEPTIONS,
    KINDS,
    classify,
    is_infrastructure_failure,
)
from payorch.domain.results import (
    Classification,
    ErrorCode,
    Outcome,
    ProcessorResponse,
    ResponseKind,
)


def error(**fields: Any) -> ProcessorResponse:
    return ProcessorResponse(ResponseKind.ERROR, **fields)


def card_error(
    decline_code: str = "", code: str = "card_declined", **fields: Any
) -> Classification:
    return classify(
        error(
            http_status=402,
            error_type="card_error",
            code=code,
            decline_code=decline_code,
            **fields,
        )
    )


def soft(code: ErrorCode, *, now: bool = True, later: bool = True) -> Classification:
    return Classification(Outcome.SOFT, code, retry_now=now, retry_later=later)


def hard(code: ErrorCode, *, later: bool = False, ours: bool = False) -> Classification:
    return Classification(
        Outcome.HARD, code, retry_now=False, retry_later=later, contract_violation=ours
    )


# -- infrastructure failures: soft, retried now, count against health ---------


def test_stripe_api_error_500_is_soft_and_retried_now() -> None:
    c = classify(error(http_status=500, error_type="api_error", indeterminate=True))
    assert c == soft(ErrorCode.PROCESSOR_ERROR)
    assert is_infrastructure_failure(c)


def test_http_429_rate_limit_is_soft_and_retried_now() -> None:
    c = classify(error(http_status=429, error_type="invalid_request_error", code="rate_limit"))
    assert c == soft(ErrorCode.RATE_LIMITED)
    assert is_infrastructure_failure(c)


def test_http_429_is_rate_limited_even_without_a_body() -> None:
    assert classify(error(http_status=429)) == soft(ErrorCode.RATE_LIMITED)


def test_rate_limit_error_exception_without_a_status_is_rate_limited() -> None:
    c = classify(error(exception="RateLimitError"))
    assert c == soft(ErrorCode.RATE_LIMITED)


def test_rate_limit_error_exception_wins_over_its_invalid_request_body() -> None:
    # Stripe's 429 bodies say invalid_request_error; without the status the class decides.
    c = classify(error(error_type="invalid_request_error", exception="RateLimitError"))
    assert c == soft(ErrorCode.RATE_LIMITED)


def test_lock_timeout_code_is_soft_and_retried_now() -> None:
    c = classify(error(error_type="invalid_request_error", code="lock_timeout"))
    assert c == soft(ErrorCode.LOCK_TIMEOUT)
    assert is_infrastructure_failure(c)


def test_stripe_lock_timeout_429_is_at_least_retried_now_and_counted_against_health() -> None:
    c = classify(error(http_status=429, error_type="invalid_request_error", code="lock_timeout"))
    assert c.outcome is Outcome.SOFT
    assert c.retry_now
    assert is_infrastructure_failure(c)


def test_stripe_lock_timeout_429_is_labelled_lock_timeout_not_rate_limited() -> None:
    c = classify(error(http_status=429, error_type="invalid_request_error", code="lock_timeout"))
    assert c.error_code is ErrorCode.LOCK_TIMEOUT


def test_connection_error_is_soft_network_error_retried_now() -> None:
    c = classify(ProcessorResponse(ResponseKind.CONNECTION_ERROR, exception="APIConnectionError"))
    assert c == soft(ErrorCode.NETWORK_ERROR)
    assert is_infrastructure_failure(c)


def test_no_response_is_unknown_timeout_retried_only_now_with_the_same_key() -> None:
    c = classify(ProcessorResponse(ResponseKind.NO_RESPONSE, exception="ReadTimeout"))
    assert c.outcome is Outcome.UNKNOWN
    assert c.error_code is ErrorCode.TIMEOUT
    assert c.retry_now
    assert not c.retry_later
    assert is_infrastructure_failure(c)


def test_a_lost_answer_when_nothing_able_to_charge_was_sent_is_soft_not_unknown() -> None:
    # Stripe: the PaymentIntent create's answer was lost; no confirm went out.
    c = classify(ProcessorResponse(ResponseKind.NO_RESPONSE, charge_not_sent=True))
    assert c == soft(ErrorCode.TIMEOUT)
    assert is_infrastructure_failure(c)


def test_a_key_in_flight_when_nothing_able_to_charge_was_sent_is_soft_not_unknown() -> None:
    c = classify(
        error(
            http_status=409,
            error_type="idempotency_error",
            code="idempotency_key_in_use",
            charge_not_sent=True,
        )
    )
    assert c == soft(ErrorCode.IDEMPOTENCY_CONFLICT)


def test_pending_payment_is_unknown_and_not_retried() -> None:
    c = classify(ProcessorResponse(ResponseKind.PENDING))
    assert c == Classification(
        Outcome.UNKNOWN, ErrorCode.UNKNOWN_OUTCOME, retry_now=False, retry_later=False
    )


@pytest.mark.parametrize("kind", [ResponseKind.NOT_FOUND, ResponseKind.NOT_CHARGED])
def test_nothing_charged_lookup_is_soft_and_retried_now(kind: ResponseKind) -> None:
    assert classify(ProcessorResponse(kind)) == soft(ErrorCode.PROCESSOR_ERROR)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_unknown_error_type_with_a_5xx_status_is_treated_as_api_error(status: int) -> None:
    c = classify(error(http_status=status, error_type="brand_new_error"))
    assert c == soft(ErrorCode.PROCESSOR_ERROR)


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        ("APIConnectionError", soft(ErrorCode.NETWORK_ERROR)),
        ("APIError", soft(ErrorCode.PROCESSOR_ERROR)),
        ("AuthenticationError", hard(ErrorCode.PROCESSOR_AUTHENTICATION, later=True)),
        ("PermissionError", hard(ErrorCode.PROCESSOR_PERMISSION, later=True)),
    ],
)
def test_sdk_exception_without_a_body_is_classified_by_its_class(
    exception: str, expected: Classification
) -> None:
    assert classify(error(exception=exception)) == expected


# -- idempotency --------------------------------------------------------------


IN_FLIGHT = Classification(
    Outcome.UNKNOWN, ErrorCode.IDEMPOTENCY_CONFLICT, retry_now=True, retry_later=False
)


def test_idempotency_error_409_is_a_request_in_flight_unknown_and_retried_with_its_key() -> None:
    # The first request under the key is still running and may yet charge.
    c = classify(error(http_status=409, error_type="idempotency_error"))
    assert c == IN_FLIGHT
    assert not c.contract_violation
    assert not is_infrastructure_failure(c)


@pytest.mark.parametrize("error_type", ["idempotency_error", "invalid_request_error", ""])
def test_idempotency_key_in_use_is_a_request_in_flight_whatever_the_error_type(
    error_type: str,
) -> None:
    c = classify(error(http_status=409, error_type=error_type, code="idempotency_key_in_use"))
    assert c == IN_FLIGHT


def test_idempotency_error_400_is_our_bug_reusing_a_key_with_other_parameters() -> None:
    c = classify(error(http_status=400, error_type="idempotency_error"))
    assert c == hard(ErrorCode.IDEMPOTENCY_CONFLICT, ours=True)
    assert c.contract_violation
    assert not c.retry_now


# -- declines: the bank speaking ----------------------------------------------


@pytest.mark.parametrize(
    ("decline_code", "expected"),
    [
        ("generic_decline", hard(ErrorCode.CARD_DECLINED, later=True)),
        ("insufficient_funds", soft(ErrorCode.INSUFFICIENT_FUNDS, now=False, later=True)),
        ("lost_card", hard(ErrorCode.LOST_CARD)),
        ("stolen_card", hard(ErrorCode.STOLEN_CARD)),
        ("pickup_card", hard(ErrorCode.STOLEN_CARD)),
        ("fraudulent", hard(ErrorCode.FRAUDULENT)),
        ("do_not_honor", hard(ErrorCode.DO_NOT_HONOR, later=True)),
        ("expired_card", hard(ErrorCode.EXPIRED_CARD)),
        ("incorrect_cvc", hard(ErrorCode.INCORRECT_CVC)),
        ("processing_error", soft(ErrorCode.PROCESSING_ERROR)),
        (
            "authentication_required",
            Classification(
                Outcome.REQUIRES_ACTION,
                ErrorCode.AUTHENTICATION_REQUIRED,
                retry_now=False,
                retry_later=False,
            ),
        ),
    ],
)
def test_card_error_decline_code_maps_to_its_row(
    decline_code: str, expected: Classification
) -> None:
    c = card_error(decline_code)
    assert c == expected
    assert not c.unmapped


def test_insufficient_funds_is_retried_later_not_now() -> None:
    c = card_error("insufficient_funds")
    assert c.outcome is Outcome.SOFT
    assert not c.retry_now
    assert c.retry_later


@pytest.mark.parametrize(
    "decline_code",
    [
        "issuer_not_available",
        "try_again_later",
        "reenter_transaction",
        "approve_with_id",
        "card_velocity_exceeded",
    ],
)
def test_a_bank_asking_to_try_again_later_is_retried_later_not_now(decline_code: str) -> None:
    # Stripe's next step for these is to attempt the payment again (or, over the card's
    # limit, once the limit resets): the dunning ladder's job, not an immediate retry.
    c = card_error(decline_code)
    assert c == soft(ErrorCode.CARD_DECLINED, now=False, later=True)
    assert not c.unmapped


def test_generic_decline_is_hard_and_never_retried_now() -> None:
    c = card_error("generic_decline")
    assert c.outcome is Outcome.HARD
    assert not c.retry_now


@pytest.mark.parametrize("decline_code", ["lost_card", "stolen_card", "fraudulent"])
def test_lost_stolen_or_fraudulent_card_is_never_charged_again(decline_code: str) -> None:
    c = card_error(decline_code)
    assert c.outcome is Outcome.HARD
    assert not c.retry_now
    assert not c.retry_later


@pytest.mark.parametrize(
    "decline_code",
    [
        "pickup_card",
        # Stripe's retired "never again" codes (now advice codes): still sent by some.
        "do_not_try_again",
        "revocation_of_authorization",
        "revocation_of_all_authorizations",
        "stop_payment_order",
        "restricted_card",
        "security_violation",
        "invalid_account",
        "transaction_not_allowed",
        "duplicate_transaction",
    ],
)
def test_a_decline_the_issuer_will_never_approve_is_known_and_never_charged_again(
    decline_code: str,
) -> None:
    c = card_error(decline_code)
    assert (c.outcome, c.retry_now, c.retry_later) == (Outcome.HARD, False, False)
    assert not c.unmapped  # known: not an alert about a gap in the table


def test_authentication_required_decline_asks_for_customer_action() -> None:
    c = card_error("authentication_required")
    assert c.outcome is Outcome.REQUIRES_ACTION
    assert not c.retry_now


def test_card_declined_code_without_a_decline_code_is_a_generic_decline() -> None:
    assert card_error("", code="card_declined") == hard(ErrorCode.CARD_DECLINED, later=True)


def test_card_error_code_alone_is_looked_up_when_there_is_no_decline_code() -> None:
    assert card_error("", code="expired_card") == hard(ErrorCode.EXPIRED_CARD)


def test_decline_code_wins_over_the_generic_card_declined_code() -> None:
    assert card_error("insufficient_funds", code="card_declined").error_code is (
        ErrorCode.INSUFFICIENT_FUNDS
    )


def test_card_error_with_unknown_decline_code_and_code_is_a_hard_decline_flagged_unmapped() -> None:
    c = card_error("brand_new_bank_reason", code="incorrect_number")
    assert c.outcome is Outcome.HARD
    assert c.error_code is ErrorCode.CARD_DECLINED
    assert c.unmapped
    assert not c.retry_now
    assert not c.retry_later


def test_unknown_decline_code_as_stripe_sends_it_is_a_hard_decline_flagged_unmapped() -> None:
    c = card_error("brand_new_bank_reason", code="card_declined")
    assert c.outcome is Outcome.HARD
    assert c.unmapped
    assert not c.retry_later


@pytest.mark.parametrize("decline_code", sorted(DECLINE_CODES))
def test_declines_never_count_against_processor_health(decline_code: str) -> None:
    assert not is_infrastructure_failure(card_error(decline_code))


# -- our bugs and the processor's configuration -------------------------------


def test_invalid_request_error_is_hard_and_our_contract_violation() -> None:
    c = classify(
        error(http_status=400, error_type="invalid_request_error", code="parameter_missing")
    )
    assert c == hard(ErrorCode.INVALID_REQUEST, ours=True)
    assert not is_infrastructure_failure(c)


@pytest.mark.parametrize(
    ("param", "code"),
    [
        ("payment_method", ErrorCode.PAYMENT_METHOD_NOT_FOUND),  # "No such PaymentMethod"
        ("customer", ErrorCode.CUSTOMER_NOT_FOUND),  # "No such customer"
    ],
)
def test_an_id_the_caller_chose_that_the_processor_does_not_have_is_the_callers_error(
    param: str, code: ErrorCode
) -> None:
    # The caller chose that id; we passed it on as given.
    c = classify(
        error(
            http_status=400,
            error_type="invalid_request_error",
            code="resource_missing",
            param=param,
        )
    )
    assert c == hard(code)
    assert not is_infrastructure_failure(c)


@pytest.mark.parametrize(
    ("code", "param"),
    [
        # "It may not be used again": used up by a payment that did not save it.
        ("payment_method_unexpected_state", "payment_method"),
        ("payment_method_unexpected_state", ""),
        # No code: saved on another customer, or used without its customer.
        ("", "payment_method"),
    ],
)
def test_a_payment_method_the_processor_will_not_use_is_the_callers_to_replace(
    code: str, param: str
) -> None:
    c = classify(error(http_status=400, error_type="invalid_request_error", code=code, param=param))
    assert c == hard(ErrorCode.PAYMENT_METHOD_UNUSABLE)
    assert not is_infrastructure_failure(c)


@pytest.mark.parametrize("param", ["amount", "metadata", ""])
def test_an_invalid_request_with_no_code_about_our_parameters_is_still_ours(param: str) -> None:
    c = classify(error(http_status=400, error_type="invalid_request_error", param=param))
    assert c == hard(ErrorCode.INVALID_REQUEST, ours=True)


def test_a_currency_stripe_refuses_by_name_is_the_callers_not_ours() -> None:
    # Stripe's "Invalid currency: tnd. Stripe accounts in US do not support tnd.": no
    # code, param currency. A malformed currency of ours carries a code (below, rule 6).
    c = classify(error(http_status=400, error_type="invalid_request_error", param="currency"))
    assert c == hard(ErrorCode.CURRENCY_NOT_SUPPORTED)
    malformed = classify(
        error(
            http_status=400,
            error_type="invalid_request_error",
            code="parameter_invalid_empty",
            param="currency",
        )
    )
    assert malformed == hard(ErrorCode.INVALID_REQUEST, ours=True)


@pytest.mark.parametrize("param", ["intent", "starting_after", "amount", ""])
def test_a_missing_resource_we_named_is_still_our_contract_violation(param: str) -> None:
    c = classify(
        error(
            http_status=400,
            error_type="invalid_request_error",
            code="resource_missing",
            param=param,
        )
    )
    assert c == hard(ErrorCode.INVALID_REQUEST, ours=True)


def test_a_refused_api_key_is_the_processors_failure_hard_there_but_worth_a_later_try() -> None:
    """A revoked or rolled key: refused before anything was processed. Never again on
    that processor now (the same key is refused again), counted against its health so
    routing steers away, and tried again later: nothing the customer did is wrong."""
    for answer in (
        error(http_status=401, error_type="authentication_error"),
        error(exception="AuthenticationError"),
    ):
        c = classify(answer)
        assert c == hard(ErrorCode.PROCESSOR_AUTHENTICATION, later=True)
        assert is_infrastructure_failure(c)


def test_a_permission_error_is_hard_for_later_and_not_the_processors_health() -> None:
    c = classify(error(http_status=403, error_type="permission_error"))
    assert c == hard(ErrorCode.PROCESSOR_PERMISSION, later=True)
    assert not c.retry_now and not is_infrastructure_failure(c)


@pytest.mark.parametrize("status", [0, 400])
def test_a_customer_who_failed_authentication_is_a_hard_failure_never_retried(status) -> None:
    """Stripe's payment_intent_authentication_failure (the customer failed or abandoned
    3-D Secure; an invalid_request_error on the intent's last_payment_error, or a 400):
    not our bad request, not the processor's ill health, and not worth a retry without
    the customer, now or on the dunning ladder."""
    c = classify(
        error(
            http_status=status,
            error_type="invalid_request_error",
            code="payment_intent_authentication_failure",
        )
    )
    assert c == hard(ErrorCode.AUTHENTICATION_FAILED)
    assert not c.contract_violation and not c.unmapped
    assert not is_infrastructure_failure(c)


# 499: the last status below the 5xx that are retried.
@pytest.mark.parametrize("status", [400, 404, 418, 422, 499])
def test_unknown_error_type_with_a_4xx_status_is_hard_and_flagged_unmapped(status: int) -> None:
    c = classify(error(http_status=status, error_type="brand_new_error", code="brand_new_code"))
    assert c == Classification(
        Outcome.HARD, ErrorCode.UNMAPPED, retry_now=False, retry_later=False, unmapped=True
    )


# -- answers that are not failures --------------------------------------------


@pytest.mark.parametrize(
    "kind", [ResponseKind.SUCCEEDED, ResponseKind.AUTHORIZED, ResponseKind.DONE]
)
def test_taken_or_held_money_is_a_success(kind: ResponseKind) -> None:
    c = classify(ProcessorResponse(kind, processor_payment_id="pi_1"))
    assert c == Classification(Outcome.SUCCESS, ErrorCode.NONE, retry_now=False, retry_later=False)


def test_payment_intent_requires_action_is_not_a_failure() -> None:
    c = classify(
        ProcessorResponse(
            ResponseKind.REQUIRES_ACTION,
            processor_payment_id="pi_1",
            next_action_type="use_stripe_sdk",
            client_secret="pi_1_secret_x",
        )
    )
    assert c.outcome is Outcome.REQUIRES_ACTION
    assert c.error_code is ErrorCode.NONE
    assert not c.retry_now
    assert not c.retry_later
    assert not is_infrastructure_failure(c)


# -- Stripe-Should-Retry ------------------------------------------------------


def test_stripe_should_retry_false_vetoes_retry_now_and_keeps_the_rest() -> None:
    c = classify(error(http_status=500, error_type="api_error", should_retry=False))
    assert c == soft(ErrorCode.PROCESSOR_ERROR, now=False, later=True)


def test_stripe_should_retry_false_vetoes_a_rate_limit_retry() -> None:
    c = classify(error(http_status=429, code="rate_limit", should_retry=False))
    assert c.error_code is ErrorCode.RATE_LIMITED
    assert not c.retry_now


def test_stripe_should_retry_true_does_not_make_a_hard_decline_retryable() -> None:
    assert not card_error("generic_decline", should_retry=True).retry_now


def test_stripe_should_retry_absent_leaves_retry_now_alone() -> None:
    assert classify(error(http_status=500, error_type="api_error", should_retry=None)).retry_now


# -- properties ---------------------------------------------------------------

_TYPES = [*ERROR_TYPES, "card_error", "rate_limit_error", ""]
_CODES = [*ERROR_CODES, *DECLINE_CODES, "resource_missing", ""]
_EXCEPTIONS = [*EXCEPTIONS, "CardError", "Timeout", ""]


def _pick(known: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(known) | st.text(max_size=20)


_STATUS = st.sampled_from([0, 200, 400, 401, 402, 403, 404, 409, 429, 500, 503]) | st.integers(
    -1, 1000
)

_ANY_RESPONSE = st.builds(
    ProcessorResponse,
    kind=st.sampled_from(ResponseKind),
    processor_payment_id=st.text(max_size=10),
    http_status=_STATUS,
    error_type=_pick(_TYPES),
    code=_pick(_CODES),
    decline_code=_pick(_CODES),
    param=_pick(["payment_method", "intent", ""]),
    message=st.text(max_size=20),
    should_retry=st.none() | st.booleans(),
    retry_after_s=st.none() | st.floats(allow_nan=True),
    indeterminate=st.booleans(),
    exception=_pick(_EXCEPTIONS),
)


@settings(max_examples=300, deadline=None)
@given(response=_ANY_RESPONSE)
def test_classify_is_total_over_arbitrary_responses(response: ProcessorResponse) -> None:
    c = classify(response)
    assert isinstance(c, Classification)
    assert isinstance(c.outcome, Outcome)
    assert isinstance(c.error_code, ErrorCode)


@settings(max_examples=300, deadline=None)
@given(response=_ANY_RESPONSE)
def test_retry_now_implies_a_soft_or_unknown_outcome(response: ProcessorResponse) -> None:
    c = classify(response)
    if c.retry_now:
        assert c.outcome in (Outcome.SOFT, Outcome.UNKNOWN)


@settings(max_examples=300, deadline=None)
@given(response=_ANY_RESPONSE)
def test_an_error_with_stripe_should_retry_false_is_never_retried_now(
    response: ProcessorResponse,
) -> None:
    if response.kind is ResponseKind.ERROR and response.should_retry is False:
        assert not classify(response).retry_now


@settings(max_examples=300, deadline=None)
@given(
    # 429 is the rate limiter answering, not the bank: it is checked before the body.
    status=st.integers(0, 599).filter(lambda s: s != 429),
    code=_pick(_CODES),
    decline_code=_pick(_CODES),
    should_retry=st.none() | st.booleans(),
    exception=st.sampled_from(["", "CardError"]),
)
def test_card_errors_never_count_against_processor_health(
    status: int, code: str, decline_code: str, should_retry: bool | None, exception: str
) -> None:
    c = classify(
        error(
            http_status=status,
            error_type="card_error",
            code=code,
            decline_code=decline_code,
            should_retry=should_retry,
            exception=exception,
        )
    )
    assert not is_infrastructure_failure(c)


def test_answers_are_classified_by_kind_value_as_kinds_maps_them() -> None:
    """An answer's kind is looked up by its value (a str's hash, not Enum.__hash__):
    the same classification for each kind KINDS maps, and no other kind."""
    assert len(classification._KIND_OF) == len(KINDS)
    assert {k.value: c for k, c in KINDS.items()} == classification._KIND_OF
